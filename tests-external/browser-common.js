'use strict';
// Shared helpers of the Chromium scripts (browser.js, identity-browser.js, audit-browser.js, policy-browser.js, consult-browser.js):
// launching a fresh profile, running a flow with its checks, watching pages for errors, TOTP codes (RFC 6238),
// and the sign-in pages (password step, TOTP enrolment).

const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { Reporter, short } = require('./common');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const WAIT = 30000;

// ---- Chromium ----

// Opens a persistent context on a fresh profile (launchPersistentContext is how Playwright
// takes --user-data-dir). `profiles` collects the directories for removeProfiles. `args` are
// Chromium flags besides CHROMIUM_ARGS; the other options are Playwright's (viewport, isMobile…).
async function openContext(profiles, prefix = 'vigil-browser-profile-', { args = [], ...options } = {}) {
  const { chromium } = require('playwright-core');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  profiles.push(profile);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, ...args], viewport: { width: 1280, height: 900 }, ...options,
  });
  context.setDefaultTimeout(WAIT);
  return context;
}

function removeProfiles(profiles) {
  for (const p of profiles) fs.rmSync(p, { recursive: true, force: true });
}

// ---- TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps) ----

function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const clean = text.replace(/[\s-]/g, '').replace(/=+$/, '').toUpperCase();
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of clean) {
    const v = alphabet.indexOf(ch);
    if (v < 0) throw new Error(`not base32: ${JSON.stringify(ch)} in the TOTP secret`);
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac('sha1', base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const bin = ((mac[offset] & 0x7f) << 24) | (mac[offset + 1] << 16) | (mac[offset + 2] << 8) | mac[offset + 3];
  return String(bin % 1000000).padStart(6, '0');
}

const stepNow = () => Math.floor(Date.now() / 30000);

// A code no earlier sign-in used: a TOTP code is accepted once, so wait for the next step
// when this secret's last code was of the current one.
const lastStep = new Map();
async function freshCode(secret, what) {
  const last = lastStep.get(secret);
  if (last !== undefined && stepNow() <= last) {
    const ms = (last + 1) * 30000 - Date.now() + 1500;
    console.log(`(${what}: waiting ${(ms / 1000).toFixed(1)}s for the next TOTP step)`);
    await new Promise((res) => setTimeout(res, ms));
  }
  const step = stepNow();
  lastStep.set(secret, step);
  return { code: totp(secret, step), step };
}

// Waits until a fresh TOTP step is at least `margin` seconds from ending, so a code computed
// now is still current when the server checks it.
async function roomInStep(secret, margin = 5) {
  const last = lastStep.get(secret);
  const left = 30 - ((Date.now() / 1000) % 30);
  const reused = last !== undefined && stepNow() <= last;
  if (reused || left < margin) {
    const until = reused ? (last + 1) * 30000 : (stepNow() + 1) * 30000;
    const ms = until - Date.now() + 1500;
    console.log(`(waiting ${(ms / 1000).toFixed(1)}s for a fresh TOTP step)`);
    await new Promise((res) => setTimeout(res, ms));
  }
}

// ---- timing ----

class Timer {
  constructor() { this.last = Date.now(); }
  lap(what) { const now = Date.now(); console.log(`time: ${what}: ${((now - this.last) / 1000).toFixed(2)}s`); this.last = now; }
}

// ---- the sign-in pages ----

const pathOf = (page) => new URL(page.url()).pathname;

// Runs `act` (a click or key press that submits a form) and waits for the page it loads.
// A page that answers without navigating is tolerated: the caller checks where it is.
async function navigating(page, act) {
  await Promise.all([
    page.waitForNavigation({ waitUntil: 'load', timeout: WAIT }).catch(() => {}),
    act(),
  ]);
}

async function errorsOn(page) {
  return (await page.locator('p.error').allTextContents()).map((t) => t.trim()).filter(Boolean);
}

// Signs in with the password on `signinPath` (default /signin); returns the path the server
// sent the browser to.
async function passwordStep(page, base, user, signinPath = '/signin') {
  await page.goto(base + signinPath);
  await page.fill('#username', user.username);
  await page.fill('#password', user.password);
  await navigating(page, () => page.click('#signin-submit'));
  return pathOf(page);
}

// From /signin/enrol: enrol TOTP, keep the recovery codes, continue to `landing` (/account
// unless the sign-in carried another `next`). Returns the secret and the recovery codes.
async function enrolTotp(page, r, who, { landing = '/account' } = {}) {
  await page.waitForSelector('#totp-secret');
  const secret = (await page.textContent('#totp-secret')).trim();
  const uri = (await page.textContent('#totp-uri')).trim();
  r.check(/^[A-Z2-7 ]{16,}=*$/i.test(secret), `${who}: the enrolment page shows a base32 secret`, secret.replace(/\S/g, '*'));
  r.check(uri.startsWith('otpauth://totp/') && uri.replace(/%20/g, '').toUpperCase().includes(secret.replace(/\s/g, '').toUpperCase()),
    `${who}: the otpauth:// URI carries the same secret`, short(uri.replace(/secret=[^&]+/i, 'secret=…')));
  await roomInStep(secret);
  const { code } = await freshCode(secret, `${who} enrolment`);
  await page.fill('#enrol-code', code);
  await navigating(page, () => page.click('#enrol-totp-submit'));
  await page.waitForSelector('#recovery-codes li, p.error');
  const codes = (await page.locator('#recovery-codes li').allTextContents()).map((c) => c.trim());
  if (!r.check(codes.length >= 5 && codes.every((c) => c.length >= 8), `${who}: enrolment shows recovery codes`,
    `${codes.length} codes; errors ${short(await errorsOn(page))}`)) return { secret, codes };
  r.check(new Set(codes).size === codes.length, `${who}: the recovery codes differ`);
  await navigating(page, () => page.click('#enrol-continue'));
  const landed = await page.waitForURL((u) => u.pathname === landing).then(() => true).catch(() => false);
  if (landing === '/account') {
    const shown = landed ? (await page.textContent('#account-username')).trim() : page.url();
    r.check(shown === who, `${who}: continue lands on /account naming the user`, shown);
  } else {
    r.check(landed, `${who}: continue lands on ${landing}`, `${page.url()} ${short(await errorsOn(page))}`);
  }
  return { secret, codes };
}

// ---- running a flow ----

// Checks what a flow needs (its environment, a localhost URL for the __Host- cookies, Chromium),
// runs `run(cfg, r, open)` where `open(options)` gives a fresh browser context (options as for
// openContext), and always closes the
// contexts and removes their profiles. `cfg.missing` lists the variables not set.
async function runFlow(name, cfg, run) {
  const r = new Reporter(`${name} browser`);
  if (cfg.missing.length) {
    r.fail(`not provisioned: set ${cfg.missing.join(', ')} (cargo xtask ext does)`);
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
  const contexts = [];
  const open = async (options) => { const c = await openContext(profiles, `vigil-${name}-profile-`, options); contexts.push(c); return c; };
  try {
    await run(cfg, r, open);
  } catch (e) {
    r.fail(`${name} flow: ${e && e.stack ? e.stack : e}`);
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    removeProfiles(profiles);
  }
  return r.finish();
}

// Console errors, CSP violations (also from a securitypolicyviolation listener), uncaught
// exceptions and failed requests are collected per phase; `phase.expect` names status codes a
// phase causes on purpose (Chromium logs a refused page as a console error), and
// `phase.downloads` the paths whose navigation becomes a download on purpose (Chromium reports
// it as an aborted request).
function watch(context, page, label, problems, phase) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error' && msg.type() !== 'warning') return;
    const text = msg.text();
    if (/Content.Security.Policy/i.test(text)) { problems.push(`[${label} ${phase.name}] CSP: ${text}`); return; }
    if (msg.type() !== 'error') return;
    if (phase.expect.some((code) => text.includes(`status of ${code}`))) {
      console.log(`(expected console error on ${label} ${phase.name}: ${short(text, 160)})`);
      return;
    }
    problems.push(`[${label} ${phase.name}] console error: ${text}`);
  });
  page.on('pageerror', (err) => problems.push(`[${label} ${phase.name}] uncaught: ${err.message}`));
  page.on('requestfailed', (req) => {
    const error = req.failure() && req.failure().errorText;
    if (error === 'net::ERR_ABORTED' && req.isNavigationRequest() && (phase.downloads || []).includes(new URL(req.url()).pathname)) {
      console.log(`(expected on ${label} ${phase.name}: ${req.url()} became a download)`);
      return;
    }
    problems.push(`[${label} ${phase.name}] request failed: ${req.method()} ${req.url()} ${error}`);
  });
  return context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`Content-Security-Policy violation: ${e.violatedDirective} blocked ${e.blockedURI}`);
    });
  });
}

module.exports = {
  CHROMIUM, CHROMIUM_ARGS, WAIT, openContext, removeProfiles, runFlow, watch,
  totp, stepNow, freshCode, roomInStep, Timer,
  pathOf, navigating, errorsOn, passwordStep, enrolTotp,
};
