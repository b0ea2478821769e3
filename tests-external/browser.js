'use strict';
// The record browser page (/) in a real headless Chromium, driven by playwright-core.
// Needs a server started with --demo (the seeded clinic: Smiths, MRN1000001, 35 families starting with M).
// The page needs a session: the script signs in on /signin?next=%2F as a workforce account without
// a second factor, enrols TOTP on /signin/enrol, lands back on /, browses, and signs out.
// Env: VIGIL_URL (http://localhost:PORT), VIGIL_TOKEN (the API, for the counts the page must match
// and the markup-named Patient), VIGIL_REC_PRACTITIONER (the Practitioner on every demo patient's care
// team), VIGIL_REC_USER / VIGIL_REC_PASSWORD (a physician without a second
// factor: cargo xtask ext creates rec.viewer); CHROMIUM (default /usr/bin/chromium).
// Leaves one screenshot of an open record in a fresh temp directory and prints its path.
// Prints how long each step took; never asserts on time.

const fs = require('fs');
const os = require('os');
const path = require('path');
const { config, http, Reporter, short } = require('./common');
const {
  CHROMIUM, openContext, removeProfiles, Timer, pathOf, navigating, errorsOn, passwordStep, enrolTotp,
} = require('./browser-common');

// Every section the record view shows, by its title and the FHIR type in its table's data-section.
const SECTIONS = [
  ['Encounters', 'Encounter'], ['Appointments', 'Appointment'], ['Conditions', 'Condition'],
  ['Observations', 'Observation'], ['Medication requests', 'MedicationRequest'],
  ['Clinical notes', 'DocumentReference'], ['Care teams', 'CareTeam'],
];
// Where an unauthenticated GET / is sent.
const SIGNIN_NEXT = '/signin?next=%2F';

async function main() {
  const cfg = config();
  const r = new Reporter('browser');
  cfg.user = { username: process.env.VIGIL_REC_USER, password: process.env.VIGIL_REC_PASSWORD };
  if (!cfg.user.username || !cfg.user.password) {
    r.fail('not provisioned: set VIGIL_REC_USER and VIGIL_REC_PASSWORD (a physician without a second factor; cargo xtask ext does)');
    return r.finish();
  }
  if (!/^http:\/\/localhost:\d+$/.test(cfg.base)) {
    r.fail(`VIGIL_URL must be http://localhost:PORT (the session cookies are __Host- and bound to that origin), not ${cfg.base}`);
    return r.finish();
  }
  if (!fs.existsSync(CHROMIUM)) {
    r.fail(`Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM)`);
    return r.finish();
  }
  const profiles = [];
  const shots = fs.mkdtempSync(path.join(os.tmpdir(), 'vigil-browser-shots-'));
  let context;
  try {
    context = await openContext(profiles, 'vigil-browser-profile-');
    await run(cfg, r, context, shots);
  } catch (e) {
    r.fail(`browser flow: ${e && e.stack ? e.stack : e}`);
  } finally {
    if (context) await context.close().catch(() => {});
    removeProfiles(profiles);
  }
  r.finish();
}

async function run(cfg, r, context, shots) {
  const t = new Timer();
  const page = context.pages()[0] || (await context.newPage());
  const base = cfg.base;
  const user = cfg.user;

  // Console errors, uncaught exceptions and failed requests fail the run, except the 401 the
  // wrong password answers with on purpose (Chromium may log it as a console error).
  let phase = 'load';
  const problems = [];
  const expected401 = [];
  const consoleText = [];
  page.on('console', (msg) => {
    const text = msg.text();
    consoleText.push(text);
    if (msg.type() !== 'error' && msg.type() !== 'warning') return;
    if (phase === 'wrong-password' && /status of 40[13]/.test(text)) { expected401.push(text); return; }
    const where = msg.location() && msg.location().url ? ` (${msg.location().url})` : '';
    if (msg.type() === 'error' || /Content.Security.Policy/i.test(text)) problems.push(`[${phase}] console ${msg.type()}: ${text}${where}`);
  });
  page.on('pageerror', (err) => problems.push(`[${phase}] uncaught: ${err.message}`));
  page.on('requestfailed', (req) => problems.push(`[${phase}] request failed: ${req.method()} ${new URL(req.url()).pathname} ${req.failure() && req.failure().errorText}`));
  const fhirRequests = [];
  const visited = [];
  page.on('request', (req) => {
    const u = new URL(req.url());
    if (u.pathname.startsWith('/fhir')) fhirRequests.push({ phase, url: req.url(), req });
    if (req.isNavigationRequest() && req.frame() === page.mainFrame()) visited.push(req.url());
  });

  // Before sign-in: / answers with a redirect to the sign-in page, which shows no data.
  const raw = await page.request.get(base + '/', { maxRedirects: 0, failOnStatusCode: false });
  r.check([302, 303, 307].includes(raw.status()) && raw.headers().location === SIGNIN_NEXT,
    `GET / without a session redirects to ${SIGNIN_NEXT}`, `${raw.status()} ${raw.headers().location}`);
  let resp = await page.goto(base + '/', { waitUntil: 'load' });
  r.check(pathOf(page) === '/signin' && new URL(page.url()).searchParams.get('next') === '/',
    'the browser opening / lands on /signin?next=%2F', `${resp && resp.status()} ${page.url()}`);
  await page.waitForLoadState('networkidle');
  r.check(await page.locator('#signin-form').count() === 1, 'before sign-in: the sign-in form shows');
  r.check(await page.locator('#browser, #record, #results').count() === 0, 'before sign-in: no search or record in the page');
  r.check(fhirRequests.length === 0, 'before sign-in: the page made no FHIR request', short(fhirRequests.map((x) => x.url)));
  t.lap('before sign-in');

  // A wrong password is refused with a message, and no session starts.
  phase = 'wrong-password';
  await passwordStep(page, base, { username: user.username, password: user.password + 'x' }, SIGNIN_NEXT);
  const refusal = await errorsOn(page);
  r.check(pathOf(page) === '/signin' && refusal.length > 0, 'wrong password: refused with a message on /signin', `${page.url()} ${short(refusal)}`);
  const after = await page.goto(base + '/');
  r.check(pathOf(page) === '/signin', 'wrong password: / still sends to /signin', `${after && after.status()} ${page.url()}`);
  r.check(await page.evaluate(() => sessionStorage.length + localStorage.length) === 0, 'wrong password: nothing kept in web storage');
  r.check(expected401.length <= 1, 'wrong password: at most one refusal logged', short(expected401));
  t.lap('wrong password');

  // Sign in: password, TOTP enrolment (a first sign-in of a workforce account), back to /.
  phase = 'sign-in';
  const where = await passwordStep(page, base, user, SIGNIN_NEXT);
  if (!r.check(where === '/signin/enrol', 'right password: a physician without a second factor is sent to /signin/enrol',
    `${page.url()} ${short(await errorsOn(page))}`)) {
    r.check(problems.length === 0, 'no console errors, CSP violations, uncaught exceptions or failed requests', problems.join('\n'));
    return;
  }
  await enrolTotp(page, r, user.username, { landing: '/' });
  t.lap('sign-in with TOTP enrolment');
  if (!r.check(pathOf(page) === '/' && new URL(page.url()).search === '', 'signed in: the browser is back on / (the next of the sign-in)', page.url())) {
    r.check(problems.length === 0, 'no console errors, CSP violations, uncaught exceptions or failed requests', problems.join('\n'));
    return;
  }
  resp = await page.goto(base + '/', { waitUntil: 'load' });
  r.check(resp && resp.status() === 200, 'signed in: GET / answers 200', resp && resp.status());
  const csp = resp && resp.headers()['content-security-policy'];
  r.check(csp && /script-src 'self'/.test(csp), 'the page is served with a Content-Security-Policy', csp);
  await page.waitForLoadState('networkidle');
  r.check(await page.isVisible('#browser'), 'signed in: the search form shows');
  r.check(!(await page.isVisible('#record')), 'signed in: the record is hidden until a patient is opened');
  r.check(fhirRequests.length === 0, 'signed in: the page fetched nothing before a search', short(fhirRequests.map((x) => x.url)));
  const who = (await page.textContent('#who')).trim();
  r.check(who === `Signed in as ${user.username} (physician)`, 'signed in: #who names the user and the role', who);
  const navAccount = page.locator('#nav-account');
  r.check(await navAccount.count() === 1 && (await navAccount.textContent()).trim() === user.username
    && await navAccount.getAttribute('href') === '/account', 'signed in: #nav-account links /account with the user name',
  await navAccount.count() ? await navAccount.textContent() : '(missing)');
  const signoutForm = await page.evaluate(() => {
    const b = document.getElementById('signout');
    return b && b.form ? { method: b.form.method, action: new URL(b.form.action).pathname, csrf: !!b.form.querySelector('input[name=csrf]') } : null;
  });
  r.check(signoutForm && signoutForm.method === 'post' && signoutForm.action === '/signout' && signoutForm.csrf,
    'signed in: #signout is a button of a POST /signout form with the CSRF field', short(signoutForm));
  const meta = await page.getAttribute('meta[name="csrf-token"]', 'content').catch(() => null);
  r.check(meta && meta.length >= 16, 'signed in: the page carries the session\'s CSRF token in a meta', meta ? `${meta.length} chars` : '(missing)');
  const cookies = await context.cookies(base);
  const session = cookies.filter((c) => c.name.startsWith('__Host-'));
  r.check(session.length > 0 && session.every((c) => c.httpOnly && c.secure && c.path === '/'),
    'signed in: the session cookies are __Host-, HttpOnly and Secure', short(cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, secure: c.secure, sameSite: c.sameSite }))));
  t.lap('signed-in page');

  // Family prefix search.
  phase = 'search-family';
  const smi = await search(page, { family: 'smi' });
  r.check(smi.rows.length > 0, 'family "smi": results show', smi.status);
  r.check(smi.rows.every((row) => /smith/i.test(row[0])), 'family "smi": every row is a Smith', short(smi.rows.map((x) => x[0])));
  const smiTotal = totalOf(smi.status);
  r.check(smiTotal === smi.rows.length, 'family "smi": the status shows the total', smi.status);
  t.lap('search by family');

  // Open the first patient: every section, with rows where the demo clinic has them.
  phase = 'record';
  const first = smi.rows[0];
  await page.locator('#results tbody tr').first().locator('button').click();
  await waitRecord(page);
  const title = (await page.textContent('#record-title')).trim();
  r.check(title.startsWith(first[0]) && title.includes(first[1]), 'record: title names the patient and birth date', title);
  const sectionTitles = await page.locator('#record-body .section-title').allTextContents();
  for (const [label] of SECTIONS) {
    r.check(sectionTitles.some((t) => t.startsWith(label + ' (')), `record: section "${label}" shows`, short(sectionTitles));
  }
  for (const type of ['Encounter', 'Observation', 'DocumentReference', 'CareTeam']) {
    const rows = await page.locator(`#record-body table[data-section="${type}"] tbody tr`).count();
    r.check(rows > 0, `record: ${type} rows show`, `${rows} rows`);
  }
  // The counts in the titles match the server's own answer.
  const pid = first[4];
  for (const [label, type] of SECTIONS) {
    const b = await http(cfg, 'GET', `/${type}?patient=${encodeURIComponent(pid)}&_count=50`);
    const n = ((b.body && b.body.entry) || []).length;
    const shown = sectionTitles.find((t) => t.startsWith(label + ' ('));
    if (!r.check(shown === `${label} (${n})`, `record: "${label}" count matches the server (${n})`, shown)) break;
  }
  const obsCells = await page.locator('#record-body table[data-section="Observation"] tbody tr').first().locator('td').allTextContents();
  r.check(obsCells.length >= 3 && obsCells.every((c) => c.trim() !== '' && !/undefined|null|NaN|\[object/.test(c)),
    'record: an Observation row has date, code and value', short(obsCells));
  await page.locator('#record').scrollIntoViewIfNeeded();
  const shot = path.join(shots, 'record.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
  t.lap('open a record');

  // Paging: "m" matches more than one page of the demo clinic.
  phase = 'paging';
  const m1 = await search(page, { family: 'm' });
  const mTotal = totalOf(m1.status);
  r.check(m1.rows.length === 20 && mTotal > 20, 'family "m": a full first page of more than 20', m1.status);
  const next = page.locator('#pager button', { hasText: 'Next page' });
  if (r.check(await next.count() === 1, 'family "m": a "Next page" button shows')) {
    const before = new Set(m1.rows.map((row) => row[4]));
    await next.click();
    const m2 = await settled(page);
    r.check(m2.rows.length > 0 && m2.rows.every((row) => !before.has(row[4])), 'next page: new patients, none from page one', short(m2.rows.map((x) => x[4])));
    r.check(m2.rows.length === mTotal - 20 || m2.rows.length === 20, 'next page: as many rows as the total leaves', `${m2.rows.length} of ${mTotal}`);
    r.check(totalOf(m2.status) === mTotal, 'next page: the total stays', m2.status);
    r.check(m2.rows.every((row) => /^m/i.test(row[0].split(' ').pop())), 'next page: still families starting with M', short(m2.rows.map((x) => x[0])));
    const prev = page.locator('#pager button', { hasText: 'Previous page' });
    if (r.check(await prev.count() === 1, 'next page: a "Previous page" button shows')) {
      await prev.click();
      const back = await settled(page);
      r.check(JSON.stringify(back.rows.map((x) => x[4])) === JSON.stringify(m1.rows.map((x) => x[4])), 'previous page: page one again', short(back.rows.map((x) => x[4])));
    }
  }
  t.lap('paging');

  // Identifier (MRN) search.
  phase = 'search-identifier';
  const mrn = await search(page, { identifier: 'MRN1000001' });
  r.check(mrn.rows.length === 1 && mrn.rows[0][3] === 'MRN1000001', 'identifier MRN1000001: exactly that patient', short(mrn.rows));
  r.check(await page.locator('#pager button').count() === 0, 'identifier MRN1000001: no pager');
  t.lap('search by MRN');

  // XSS: a name that is markup must show as text and never run.
  phase = 'xss';
  const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  const evil = '<img src=x onerror="window.__xss=1">Xss';
  const evilGiven = '<script>window.__xss=2</script>';
  const created = await http(cfg, 'POST', '/Patient', {
    resourceType: 'Patient',
    identifier: [{ system: 'urn:vigil:browser-test', value: `XSS-${tag}` }],
    name: [{ family: evil, given: [evilGiven] }],
    gender: 'other',
    birthDate: '1999-09-09',
  });
  if (r.check(created.status === 201 && created.body && created.body.id, 'xss: the API stores a Patient with a markup name', `${created.status} ${short(created.text)}`)) {
    // The viewer sees a patient it cares for: put it on the new patient's care team.
    const team = await http(cfg, 'POST', '/CareTeam', {
      resourceType: 'CareTeam',
      status: 'active',
      subject: { reference: `Patient/${created.body.id}` },
      participant: [{ member: { reference: `Practitioner/${process.env.VIGIL_REC_PRACTITIONER}` } }],
    });
    r.check(team.status === 201, 'xss: the viewer joins the new patient\'s care team', `${team.status} ${short(team.text)}`);
    const found = await search(page, { identifier: `XSS-${tag}` });
    r.check(found.rows.length === 1 && found.rows[0][0] === `${evilGiven} ${evil}`, 'xss: the name shows as literal text', short(found.rows));
    r.check(await page.locator('#results img, #results script').count() === 0, 'xss: no element was made from the name');
    await page.locator('#results tbody tr').first().locator('button').click();
    await waitRecord(page);
    const evilTitle = (await page.textContent('#record-title')).trim();
    r.check(evilTitle.startsWith(`${evilGiven} ${evil}`), 'xss: the record title shows the name as text', evilTitle);
    r.check(await page.locator('#record img, #record script').count() === 0, 'xss: no element was made in the record');
    await page.waitForTimeout(300); // an onerror would have fired by now
    r.check(await page.evaluate(() => window.__xss) === undefined, 'xss: window.__xss stays undefined');
  }
  t.lap('markup-named patient');

  // What records.js sent: the session cookie and the CSRF token, never a bearer token.
  phase = 'requests';
  const pageRequests = fhirRequests;
  if (r.check(pageRequests.length > 0, 'the page read the API', `${pageRequests.length} FHIR requests`)) {
    const heads = await Promise.all(pageRequests.map((x) => x.req.allHeaders()));
    const bad = heads.map((h, i) => ({ h, url: pageRequests[i].url }))
      .filter(({ h }) => h['x-csrf-token'] !== meta || !/__Host-/.test(h.cookie || '') || h.authorization);
    r.check(bad.length === 0, 'every FHIR request of the page carries the session cookie and X-CSRF-Token, and no Authorization',
      short(bad.map(({ h, url }) => ({ url: new URL(url).pathname, csrf: !!h['x-csrf-token'], cookie: !!h.cookie, authorization: !!h.authorization }))));
  }
  // No PHI in the address bar, the history, the console or web storage.
  const phi = ['Smith', 'MRN1000001', 'Xss', '1999-09-09'];
  r.check(pathOf(page) === '/' && new URL(page.url()).search === '' && new URL(page.url()).hash === '',
    'no search term or patient in the page\'s URL', page.url());
  const leakedVisit = visited.filter((u) => phi.some((w) => u.includes(w)) || /family=|identifier=/.test(u));
  r.check(leakedVisit.length === 0, 'no page load carried a search term or patient in its URL', short(leakedVisit));
  const leakedConsole = consoleText.filter((m) => phi.some((w) => m.includes(w)));
  r.check(leakedConsole.length === 0, 'nothing from a record was written to the console', short(leakedConsole));
  const storage = await page.evaluate(() => ({ session: sessionStorage.length, local: localStorage.length, cookie: document.cookie }));
  r.check(storage.session === 0 && storage.local === 0 && storage.cookie === '',
    'nothing kept in sessionStorage, localStorage or script-readable cookies', short(storage));
  t.lap('requests and storage');

  // Sign out: the POST lands on /signin, and / sends there again.
  phase = 'sign-out';
  await navigating(page, () => page.click('#signout'));
  r.check(pathOf(page) === '/signin', 'sign out: #signout lands on /signin', page.url());
  r.check(await page.locator('#signin-form').count() === 1 && await page.locator('#browser, #record, #results').count() === 0,
    'sign out: the sign-in form shows, no search or record');
  const bodyText = await page.textContent('body');
  r.check(!phi.some((w) => bodyText.includes(w)), 'sign out: no patient data in the sign-in page');
  const afterCookies = (await context.cookies(base)).filter((c) => c.name.startsWith('__Host-vigil_session'));
  r.check(afterCookies.length === 0, 'sign out: the session cookie is cleared', short(afterCookies.map((c) => c.name)));
  // Going back must not show the record again (the page is not kept, or was wiped before leaving).
  await page.goBack({ waitUntil: 'load' }).catch(() => null);
  if (pathOf(page) === '/') {
    const leftover = await page.evaluate(() => ({
      rows: document.querySelectorAll('#results tbody tr').length,
      record: (document.getElementById('record-body') || {}).textContent || '',
      title: (document.getElementById('record-title') || {}).textContent || '',
      inputs: [(document.getElementById('q-family') || {}).value || '', (document.getElementById('q-identifier') || {}).value || ''],
    }));
    r.check(leftover.rows === 0 && leftover.record === '' && !/Xss|born/.test(leftover.title) && leftover.inputs.join('') === '',
      'sign out: going back shows no patient data or search', short(leftover));
  } else {
    r.check(pathOf(page) === '/signin', 'sign out: going back lands on /signin', page.url());
  }
  const fhirBefore = fhirRequests.length;
  resp = await page.goto(base + '/', { waitUntil: 'load' });
  r.check(pathOf(page) === '/signin' && new URL(page.url()).searchParams.get('next') === '/',
    'sign out: / redirects to /signin?next=%2F again', `${resp && resp.status()} ${page.url()}`);
  await page.reload({ waitUntil: 'networkidle' });
  r.check(pathOf(page) === '/signin' && await page.locator('#browser').count() === 0, 'sign out: a reload stays signed out');
  r.check(fhirRequests.length === fhirBefore, 'sign out: no FHIR request after signing out',
    short(fhirRequests.slice(fhirBefore).map((x) => x.url)));
  // The signed-out session's cookie, replayed with its CSRF token, no longer reads the API.
  const old = session.find((c) => c.name === '__Host-vigil_session');
  if (r.check(old, 'sign out: the session cookie was __Host-vigil_session', short(session.map((c) => c.name)))) {
    const api = await fetch(cfg.fhir + '/Patient?_count=1', {
      headers: { Cookie: `${old.name}=${old.value}`, 'X-CSRF-Token': meta || '', Accept: 'application/fhir+json' },
      redirect: 'manual', signal: AbortSignal.timeout(30000),
    });
    r.check(api.status === 401, 'sign out: the old session cookie no longer reads the API', api.status);
  }
  t.lap('sign out');

  r.check(problems.length === 0, 'no console errors, CSP violations, uncaught exceptions or failed requests', problems.join('\n'));
}

// Fills the search form, submits, and returns the settled results.
async function search(page, { family = '', identifier = '' }) {
  await page.fill('#q-family', family);
  await page.fill('#q-identifier', identifier);
  await page.click('#search-form button[type=submit]');
  return settled(page);
}

// Waits for the search status to leave "Searching…", then reads the rows' cells.
async function settled(page) {
  await page.waitForFunction(() => {
    const s = document.getElementById('search-status').textContent;
    return s !== '' && !/Searching/.test(s);
  });
  const status = (await page.textContent('#search-status')).trim();
  const rows = await page.$$eval('#results:not([hidden]) tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
  return { status, rows };
}

// Waits until the record view has finished loading (every section, or an error).
async function waitRecord(page) {
  await page.waitForSelector('#record', { state: 'visible' });
  await page.waitForFunction((n) => {
    const title = document.getElementById('record-title').textContent;
    if (/^Could not/.test(title)) return true;
    return !/Loading/.test(title) && document.querySelectorAll('#record-body .section-title').length === n
      && document.getElementById('record').getAttribute('aria-busy') !== 'true';
  }, SECTIONS.length);
}

// The number in "N patient(s) found" (or "… of N"), or NaN.
function totalOf(status) {
  const m = /(\d+) patient/.exec(status) || /of (\d+)/.exec(status);
  return m ? Number(m[1]) : NaN;
}

main().catch((e) => { console.log(`FAIL browser: ${e && e.stack ? e.stack : e}`); process.exitCode = 1; });
