'use strict';
// The identity pages in a real headless Chromium, driven by playwright-core: sign-in with a
// password and TOTP (enrolment, recovery codes, a code accepted once), passkeys through a
// virtual WebAuthn authenticator, the idle timeout, CSRF refusals, the password meter, and a
// password reset whose link is read from the administrator's outbox page.
//
// Env: VIGIL_URL (http://localhost:PORT: cookies are __Host- and WebAuthn needs that origin),
// VIGIL_ADA_USER / VIGIL_ADA_PASSWORD (a physician without a second factor, with an e-mail),
// VIGIL_ADMIN_USER / VIGIL_ADMIN_PASSWORD (an administrator without a second factor);
// CHROMIUM (default /usr/bin/chromium). The server must run with
// [identity] session_idle_seconds = 8.
// Prints how long each step took; never asserts on time.

const crypto = require('crypto');
const fs = require('fs');
const { Reporter, short } = require('./common');
const {
  CHROMIUM, WAIT, openContext, removeProfiles, freshCode, roomInStep, Timer,
  pathOf, navigating, errorsOn, passwordStep, enrolTotp,
} = require('./browser-common');

// The server's idle timeout is 8 s; waiting this long without a request must end the session.
const IDLE_WAIT_MS = 10500;
const COMMON_PASSWORD = 'password1234567';

// ---- the run ----

function env() {
  const base = (process.env.VIGIL_URL || '').replace(/\/+$/, '');
  const need = ['VIGIL_URL', 'VIGIL_ADA_USER', 'VIGIL_ADA_PASSWORD', 'VIGIL_ADMIN_USER', 'VIGIL_ADMIN_PASSWORD'];
  const missing = need.filter((k) => !process.env[k]);
  return {
    base,
    missing,
    ada: { username: process.env.VIGIL_ADA_USER, password: process.env.VIGIL_ADA_PASSWORD },
    admin: { username: process.env.VIGIL_ADMIN_USER, password: process.env.VIGIL_ADMIN_PASSWORD },
  };
}

async function main() {
  const cfg = env();
  const r = new Reporter('identity browser');
  if (cfg.missing.length) {
    r.fail(`not provisioned: set ${cfg.missing.join(', ')} (cargo xtask ext does)`);
    return r.finish();
  }
  if (!/^http:\/\/localhost:\d+$/.test(cfg.base)) {
    r.fail(`VIGIL_URL must be http://localhost:PORT (cookies and WebAuthn are bound to that origin), not ${cfg.base}`);
    return r.finish();
  }
  if (!fs.existsSync(CHROMIUM)) {
    r.fail(`Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM)`);
    return r.finish();
  }
  const profiles = [];
  const open = () => openContext(profiles, 'vigil-identity-profile-');
  const contexts = [];
  try {
    const ada = await open();
    contexts.push(ada);
    await run(cfg, r, ada, async () => { const c = await open(); contexts.push(c); return c; });
  } catch (e) {
    r.fail(`identity flow: ${e && e.stack ? e.stack : e}`);
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    removeProfiles(profiles);
  }
  r.finish();
}

// Page watchers: uncaught exceptions and CSP violations fail the run; other console errors are
// printed (the CSRF checks cause 403s on purpose).
function watch(page, label, problems) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error' && msg.type() !== 'warning') return;
    const text = msg.text();
    if (/Content.Security.Policy/i.test(text)) problems.push(`[${label}] CSP: ${text}`);
    else if (msg.type() === 'error') console.log(`(console error on ${label}: ${short(text, 200)})`);
  });
  page.on('pageerror', (err) => problems.push(`[${label}] uncaught: ${err.message}`));
}

async function signOut(page, r, who) {
  const button = page.locator('button#signout');
  if (!r.check(await button.count() === 1, `${who}: the nav has button#signout`, pathOf(page))) return;
  await navigating(page, () => button.click());
  await page.waitForLoadState('load');
  const res = await page.goto(page.url().replace(/^(https?:\/\/[^/]+).*$/, '$1') + '/account');
  r.check(pathOf(page) === '/signin', `${who}: after sign-out /account sends to /signin`, `${res && res.status()} ${page.url()}`);
}

async function run(cfg, r, context, newContext) {
  const t = new Timer();
  const problems = [];
  const page = context.pages()[0] || (await context.newPage());
  watch(page, 'ada', problems);
  const base = cfg.base;
  const ada = { ...cfg.ada };

  // The sign-in page.
  let res = await page.goto(base + '/signin');
  r.check(res && res.status() === 200, 'GET /signin answers 200', res && res.status());
  for (const sel of ['form#signin-form', '#username', '#password', '#show-password', '#signin-submit', '#passkey-signin', '#forgot-link']) {
    r.check(await page.locator(sel).count() === 1, `/signin has ${sel}`);
  }
  r.check(await page.getAttribute('#password', 'type') === 'password', '/signin: the password is hidden at first');
  await page.click('#show-password');
  r.check(await page.getAttribute('#password', 'type') === 'text', '/signin: #show-password shows it');
  await page.click('#show-password');
  r.check(await page.getAttribute('#password', 'type') === 'password', '/signin: #show-password hides it again');
  res = await page.goto(base + '/signin?expired=1');
  r.check(await page.isVisible('p#expired'), '/signin?expired=1 shows p#expired');
  t.lap('sign-in page');

  // A wrong password: refused, with the same message as an unknown user.
  await passwordStep(page, base, { username: ada.username, password: ada.password + 'x' });
  const wrong = await errorsOn(page);
  r.check(pathOf(page) === '/signin' && wrong.length > 0 && !/expired/i.test(wrong.join(' ')),
    'a wrong password is refused with a message (not a refused form)', `${page.url()} ${short(wrong)}`);
  await passwordStep(page, base, { username: 'no.such.user', password: ada.password });
  const unknown = await errorsOn(page);
  r.check(JSON.stringify(unknown) === JSON.stringify(wrong), 'an unknown user gets the same message as a wrong password', `${short(unknown)} vs ${short(wrong)}`);
  t.lap('wrong password');

  // (a) TOTP: enrolment, sign-out, sign-in with password and code, a used code refused.
  let where = await passwordStep(page, base, ada);
  if (!r.check(where === '/signin/enrol', 'a physician without a second factor is sent to /signin/enrol', `${page.url()} ${short(await errorsOn(page))}`)) {
    r.check(problems.length === 0, 'no uncaught exceptions or CSP violations', problems.join('\n'));
    return;
  }
  const { secret } = await enrolTotp(page, r, ada.username);
  t.lap('(a) TOTP enrolment');
  await signOut(page, r, ada.username);
  await roomInStep(secret);
  where = await passwordStep(page, base, ada);
  r.check(where === '/signin/factor', 'with TOTP enrolled, the password leads to /signin/factor', page.url());
  for (const sel of ['form#totp-form', '#code', '#totp-submit']) r.check(await page.locator(sel).count() === 1, `/signin/factor has ${sel}`);
  const first = await freshCode(secret, 'second sign-in');
  await page.fill('#code', first.code);
  await navigating(page, () => page.click('#totp-submit'));
  await page.waitForURL((u) => u.pathname === '/account').catch(() => {});
  r.check(pathOf(page) === '/account', 'password + TOTP code signs in to /account', `${page.url()} ${short(await errorsOn(page))}`);
  t.lap('(a) sign-in with TOTP');
  await signOut(page, r, ada.username);
  where = await passwordStep(page, base, ada);
  if (r.check(where === '/signin/factor', 'signing in again reaches /signin/factor', page.url())) {
    await page.fill('#code', first.code);
    await navigating(page, () => page.click('#totp-submit'));
    const errs = await errorsOn(page);
    r.check(pathOf(page) !== '/account' && errs.length > 0, 'the already used TOTP code is refused with p.error', `${page.url()} ${short(errs)}`);
    if (pathOf(page) !== '/signin/factor') await passwordStep(page, base, ada);
    const next = await freshCode(secret, 'after the refused code');
    await page.fill('#code', next.code);
    await navigating(page, () => page.click('#totp-submit'));
    await page.waitForURL((u) => u.pathname === '/account').catch(() => {});
    r.check(pathOf(page) === '/account', 'the next step\'s code signs in', `${page.url()} ${short(await errorsOn(page))}`);
  }
  t.lap('(a) used code refused, next one accepted');

  // (e) The password page: the server's reason for a common password, and show-password.
  // (d) CSRF on the same signed-in session. Both stay well inside the 8-second idle timeout.
  if (pathOf(page) === '/account') {
    await page.goto(base + '/account/password');
    if (r.check(await page.locator('#new-password').count() === 1, '/account/password has #new-password', page.url())) {
      await page.fill('#new-password', '');
      await page.type('#new-password', COMMON_PASSWORD, { delay: 5 });
      const feedback = await page.waitForFunction(() => {
        const f = document.getElementById('password-feedback');
        return f && f.textContent.trim() !== '' ? f.textContent.trim() : null;
      }, null, { timeout: WAIT }).then((h) => h.jsonValue()).catch(() => null);
      r.check(feedback && /common|guess|known|breach|list|used|weak|predictable/i.test(feedback),
        '#password-feedback gives the server\'s reason for a common password', feedback);
      // The contract names #show-password on /signin; here any show button for #new-password will do.
      const toggle = page.locator('#show-password, button[data-show-for="new-password"]').first();
      if (await toggle.count() === 1) {
        await toggle.click();
        r.check(await page.getAttribute('#new-password', 'type') === 'text', '/account/password: show-password shows the new password');
        await toggle.click();
        r.check(await page.getAttribute('#new-password', 'type') === 'password', '/account/password: show-password hides it again');
      } else {
        r.fail('/account/password has a show-password button (#show-password or data-show-for="new-password")');
      }
    }
    t.lap('(e) password page');

    await page.goto(base + '/account');
    const csrf = await page.evaluate(async () => {
      const post = async (url, body, headers) => {
        const res = await fetch(url, { method: 'POST', body, headers, credentials: 'same-origin', redirect: 'manual' });
        return res.status;
      };
      return {
        signout: await post('/signout', new URLSearchParams()),
        password: await post('/account/password', new URLSearchParams({ current: 'x', new: 'y' })),
        fhir: await post('/fhir/Patient', JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Csrf' }] }),
          { 'Content-Type': 'application/fhir+json' }),
      };
    });
    r.check(csrf.signout === 403, 'POST /signout without the CSRF field is refused 403', csrf.signout);
    r.check(csrf.password === 403, 'POST /account/password without the CSRF field is refused 403', csrf.password);
    r.check(csrf.fhir === 403, 'POST /fhir/Patient with the session cookie but no X-CSRF-Token is refused 403', csrf.fhir);
    const via = await page.request.post(base + '/signout', { form: {}, maxRedirects: 0, failOnStatusCode: false });
    r.check(via.status() === 403, 'page.request POST /signout without the CSRF field is refused 403', via.status());
    res = await page.goto(base + '/account');
    r.check(pathOf(page) === '/account' && (await page.textContent('#account-username')).trim() === ada.username,
      'after the refused posts the session still works', `${res && res.status()} ${page.url()}`);
    t.lap('(d) CSRF');
  }

  // (b) Passkeys: a virtual authenticator, registration, sign-out, sign-in with the passkey.
  let passkeyOk = false;
  if (pathOf(page) !== '/account') {
    await roomInStep(secret);
    await passwordStep(page, base, ada);
    await page.fill('#code', (await freshCode(secret, 'passkey setup')).code);
    await navigating(page, () => page.click('#totp-submit'));
  }
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true },
  });
  await page.goto(base + '/account/passkeys');
  if (r.check(await page.locator('#passkey-name').count() === 1 && await page.locator('#passkey-add').count() === 1,
    '/account/passkeys has #passkey-name and #passkey-add', page.url())) {
    await page.fill('#passkey-name', 'Test laptop');
    await page.click('#passkey-add');
    const added = await page.waitForSelector('table#passkeys tbody tr', { timeout: WAIT }).then(() => true).catch(() => false);
    const rows = await page.locator('table#passkeys tbody tr').allTextContents();
    r.check(added && rows.some((row) => row.includes('Test laptop')), 'the passkey is registered and listed by name',
      `${short(rows)} ${short(await errorsOn(page))}`);
    const creds = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    r.check(creds.credentials.length === 1 && creds.credentials[0].isResidentCredential, 'the authenticator holds one discoverable credential',
      creds.credentials.length);
    t.lap('(b) passkey registration');
    await signOut(page, r, ada.username);
    await page.goto(base + '/signin');
    await page.fill('#username', ada.username);
    await page.click('#passkey-signin');
    passkeyOk = await page.waitForURL((u) => u.pathname === '/account', { timeout: WAIT }).then(() => true).catch(() => false);
    r.check(passkeyOk, 'signing in with the passkey lands on /account', `${page.url()} ${short(await errorsOn(page))}`);
    t.lap('(b) passkey sign-in');
  }

  // (c) The idle timeout: no request for longer than 8 s ends the session.
  if (pathOf(page) !== '/account') {
    await roomInStep(secret);
    await passwordStep(page, base, ada);
    await page.fill('#code', (await freshCode(secret, 'idle test')).code);
    await navigating(page, () => page.click('#totp-submit'));
  }
  if (r.check(pathOf(page) === '/account', 'signed in before the idle wait', page.url())) {
    await page.goto('about:blank');
    await page.waitForTimeout(IDLE_WAIT_MS);
    await page.goto(base + '/account');
    r.check(pathOf(page) === '/signin', 'after 10 s idle /account sends to /signin', page.url());
    r.check(await page.isVisible('p#expired'), 'the sign-in page says the session expired (p#expired)');
  }
  t.lap('(c) idle timeout');

  // (f) A password reset through the outbox: ada asks for a link, the administrator (who
  // enrols TOTP on first sign-in) reads it on /admin/outbox, ada opens it.
  await page.goto(base + '/signin');
  await navigating(page, () => page.click('#forgot-link'));
  const forgotPath = pathOf(page);
  const userField = page.locator('form input[name=username]');
  if (!r.check(await userField.count() >= 1, `the forgot-password page (${forgotPath}) asks for the user name`, page.url())) {
    r.check(problems.length === 0, 'no uncaught exceptions or CSP violations', problems.join('\n'));
    return;
  }
  await userField.first().fill(ada.username);
  await navigating(page, () => userField.first().press('Enter'));
  const askedAt = Date.now();
  r.pass(`a reset link is asked for on ${forgotPath} (now ${pathOf(page)})`);
  t.lap('(f) reset asked');

  const adminContext = await newContext();
  const admin = adminContext.pages()[0] || (await adminContext.newPage());
  watch(admin, 'admin', problems);
  where = await passwordStep(admin, base, cfg.admin);
  let link = null;
  if (r.check(where === '/signin/enrol', 'the administrator is sent to enrol a second factor', `${admin.url()} ${short(await errorsOn(admin))}`)) {
    await enrolTotp(admin, r, cfg.admin.username);
    // The outbox may be filled a moment after the request: look a few times.
    for (let i = 0; i < 10 && !link; i += 1) {
      res = await admin.goto(base + '/admin/outbox');
      const bodies = await admin.locator('article.message pre.body').allTextContents();
      const mine = bodies.filter((b) => b.includes(ada.username) && /\/reset\//.test(b));
      const m = mine.length ? /(https?:\/\/[^\s<>"]+\/reset\/[A-Za-z0-9_\-.~%]+)/.exec(mine[mine.length - 1]) : null;
      if (m) link = m[1];
      else await admin.waitForTimeout(1000);
    }
    r.check(link !== null, '/admin/outbox shows the reset message with its link', `${res && res.status()} ${admin.url()}`);
  }
  t.lap('(f) outbox read');

  if (link) {
    r.check(link.startsWith(base + '/reset/'), 'the reset link points at this server', link.replace(/\/reset\/.*/, '/reset/…'));
    await roomInStep(secret);
    await page.goto(link);
    const newPassword = `${crypto.randomBytes(6).toString('hex')} lantern quartz ${crypto.randomBytes(3).toString('hex')}`;
    if (r.check(await page.locator('#code').count() === 1 && await page.locator('#new-password').count() === 1,
      'the reset page asks for the TOTP code and the new password', `${page.url()} ${short(await errorsOn(page))}`)) {
      await page.fill('#code', (await freshCode(secret, 'reset')).code);
      await page.fill('#new-password', newPassword);
      await navigating(page, () => page.click('#reset-submit'));
      const done = await page.waitForSelector('p#reset-done', { timeout: WAIT }).then(() => true).catch(() => false);
      if (r.check(done, 'the reset is confirmed (p#reset-done)', `${page.url()} ${short(await errorsOn(page))}`)) {
        res = await page.goto(link);
        r.check(!(await page.locator('#reset-submit').isVisible().catch(() => false)) || (await errorsOn(page)).length > 0,
          'the reset link works only once', `${res && res.status()} ${short(await errorsOn(page))}`);
        await passwordStep(page, base, ada);
        r.check(pathOf(page) === '/signin' && (await errorsOn(page)).length > 0, 'the old password is refused after the reset', page.url());
        await roomInStep(secret);
        where = await passwordStep(page, base, { username: ada.username, password: newPassword });
        r.check(where === '/signin/factor', 'the new password is accepted (on to the second factor)', `${page.url()} ${short(await errorsOn(page))}`);
        if (where === '/signin/factor') {
          await page.fill('#code', (await freshCode(secret, 'sign-in after reset')).code);
          await navigating(page, () => page.click('#totp-submit'));
          await page.waitForURL((u) => u.pathname === '/account').catch(() => {});
          r.check(pathOf(page) === '/account', 'the new password with TOTP signs in', `${page.url()} ${short(await errorsOn(page))}`);
        }
      }
    }
    console.log(`(reset finished ${((Date.now() - askedAt) / 1000).toFixed(1)}s after it was asked for)`);
  }
  t.lap('(f) reset completed');

  r.check(problems.length === 0, 'no uncaught exceptions or CSP violations', problems.join('\n'));
  void passkeyOk;
}

main().catch((e) => { console.log(`FAIL identity browser: ${e && e.stack ? e.stack : e}`); process.exitCode = 1; });
