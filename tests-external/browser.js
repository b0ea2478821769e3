'use strict';
// The record browser page (/) in a real headless Chromium, driven by playwright-core.
// Needs a server started with --demo (the seeded clinic: Smiths, MRN1000001, 35 families starting with M).
// Env: VIGIL_URL, VIGIL_TOKEN; CHROMIUM (default /usr/bin/chromium).
// Leaves one screenshot of an open record in a fresh temp directory and prints its path.

const fs = require('fs');
const os = require('os');
const path = require('path');
const { config, http, Reporter, short } = require('./common');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// Every section the record view shows, by its title and the FHIR type in its table's data-section.
const SECTIONS = [
  ['Encounters', 'Encounter'], ['Appointments', 'Appointment'], ['Conditions', 'Condition'],
  ['Observations', 'Observation'], ['Medication requests', 'MedicationRequest'],
  ['Clinical notes', 'DocumentReference'], ['Care teams', 'CareTeam'],
];
const WAIT = 20000;

async function main() {
  const cfg = config();
  const r = new Reporter('browser');
  const { chromium } = require('playwright-core');
  if (!fs.existsSync(CHROMIUM)) {
    r.fail(`Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM)`);
    return r.finish();
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'vigil-browser-profile-'));
  const shots = fs.mkdtempSync(path.join(os.tmpdir(), 'vigil-browser-shots-'));
  // launchPersistentContext is how Playwright takes --user-data-dir: a fresh profile per run.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
  });
  try {
    await run(cfg, r, context, shots);
  } catch (e) {
    r.fail(`browser flow: ${e && e.stack ? e.stack : e}`);
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
  r.finish();
}

async function run(cfg, r, context, shots) {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(WAIT);

  // Console errors, uncaught exceptions and failed requests fail the run, except the one
  // 401 the wrong-token attempt causes on purpose (Chromium logs it as a console error).
  let phase = 'load';
  const problems = [];
  const expected401 = [];
  page.on('console', (msg) => {
    if (msg.type() !== 'error' && msg.type() !== 'warning') return;
    const text = msg.text();
    if (phase === 'wrong-token' && /status of 401/.test(text)) { expected401.push(text); return; }
    const where = msg.location() && msg.location().url ? ` (${msg.location().url})` : '';
    if (msg.type() === 'error' || /Content.Security.Policy/i.test(text)) problems.push(`[${phase}] console ${msg.type()}: ${text}${where}`);
  });
  page.on('pageerror', (err) => problems.push(`[${phase}] uncaught: ${err.message}`));
  page.on('requestfailed', (req) => problems.push(`[${phase}] request failed: ${req.method()} ${new URL(req.url()).pathname} ${req.failure() && req.failure().errorText}`));
  const fhirRequests = [];
  page.on('request', (req) => { if (new URL(req.url()).pathname.startsWith('/fhir')) fhirRequests.push({ phase, url: req.url() }); });

  // Before sign-in: the sign-in card only, and not one FHIR request.
  const resp = await page.goto(cfg.base + '/', { waitUntil: 'load' });
  r.check(resp && resp.status() === 200, 'GET / answers 200', resp && resp.status());
  const csp = resp && resp.headers()['content-security-policy'];
  r.check(csp && /script-src 'self'/.test(csp), 'the page is served with a Content-Security-Policy', csp);
  await page.waitForLoadState('networkidle');
  r.check(await page.isVisible('#signin'), 'before sign-in: the sign-in form shows');
  r.check(!(await page.isVisible('#browser')) && !(await page.isVisible('#record')), 'before sign-in: search and record are hidden');
  r.check(await page.locator('#results tbody tr').count() === 0, 'before sign-in: no patient rows in the page');
  r.check(fhirRequests.length === 0, 'before sign-in: the page made no FHIR request', short(fhirRequests));

  // A wrong token is refused with a message, and the data stays hidden.
  phase = 'wrong-token';
  await page.fill('#token', 'not-the-right-token-0000');
  await page.click('#signin-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('signin-error').textContent.trim() !== '');
  const refusal = (await page.textContent('#signin-error')).trim();
  r.check(/not accepted/i.test(refusal), 'wrong token: the refusal message shows', refusal);
  r.check(!(await page.isVisible('#browser')), 'wrong token: search stays hidden');
  r.check(await page.evaluate(() => sessionStorage.length) === 0, 'wrong token: nothing kept in sessionStorage');
  r.check(expected401.length <= 1, 'wrong token: at most one 401 logged', short(expected401));

  // The right token.
  phase = 'sign-in';
  await page.fill('#token', cfg.token);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#browser', { state: 'visible' });
  r.pass('right token: the search form shows');
  r.check(!(await page.isVisible('#signin')), 'right token: the sign-in card hides');
  r.check((await page.textContent('#signin-error')).trim() === '', 'right token: the refusal message is cleared');
  r.check(await page.inputValue('#token') === '', 'right token: the token field is emptied');
  r.check(/signed in/i.test(await page.textContent('#who')), 'right token: the header says who is signed in');

  // Family prefix search.
  phase = 'search-family';
  const smi = await search(page, { family: 'smi' });
  r.check(smi.rows.length > 0, 'family "smi": results show', smi.status);
  r.check(smi.rows.every((row) => /smith/i.test(row[0])), 'family "smi": every row is a Smith', short(smi.rows.map((x) => x[0])));
  const smiTotal = totalOf(smi.status);
  r.check(smiTotal === smi.rows.length, 'family "smi": the status shows the total', smi.status);

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

  // Identifier (MRN) search.
  phase = 'search-identifier';
  const mrn = await search(page, { identifier: 'MRN1000001' });
  r.check(mrn.rows.length === 1 && mrn.rows[0][3] === 'MRN1000001', 'identifier MRN1000001: exactly that patient', short(mrn.rows));
  r.check(await page.locator('#pager button').count() === 0, 'identifier MRN1000001: no pager');

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

  // Sign out: back to the sign-in card, token and PHI gone from the page.
  phase = 'sign-out';
  await page.click('#signout');
  await page.waitForSelector('#signin', { state: 'visible' });
  r.pass('sign out: the sign-in form shows');
  r.check(!(await page.isVisible('#browser')) && !(await page.isVisible('#record')), 'sign out: search and record hide');
  r.check(await page.evaluate(() => sessionStorage.length) === 0, 'sign out: the token is gone from sessionStorage');
  const leftover = await page.evaluate(() => ({
    rows: document.querySelectorAll('#results tbody tr').length,
    record: document.getElementById('record-body').textContent,
    title: document.getElementById('record-title').textContent,
    inputs: [document.getElementById('q-family').value, document.getElementById('q-identifier').value],
    who: document.getElementById('who').textContent,
  }));
  r.check(leftover.rows === 0 && leftover.record === '' && !/Xss|born/.test(leftover.title) && leftover.inputs.join('') === '' && leftover.who === '',
    'sign out: no patient data or search left in the page', short(leftover));
  await page.reload({ waitUntil: 'networkidle' });
  r.check(await page.isVisible('#signin') && !(await page.isVisible('#browser')), 'sign out: a reload stays signed out');

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
