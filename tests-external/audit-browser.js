'use strict';
// The access log pages in a real headless Chromium, driven by playwright-core: a patient's
// "Who accessed my record" (/account/access-log) and the privacy officer's audit trail
// (/admin/audit).
//
// The physician dr.audit (on the patient's care team, so the access policy allows treatment)
// reads the patient's record with an operator token (the Patient with purpose TREAT, a search of
// their Observations without a purpose) and is refused two reads: one Observation with ETREAT
// but no break-the-glass grant (403), and another patient's record, with whom there is no
// relationship (403). Refusals are recorded too. Each response's vigil-audit-receipt header names
// the audit entries it made. The patient pat.audit signs in (no second factor), follows the
// access-log link from /account and must see the three entries of the physician on this record
// (name, role, time, purpose; the refused one listed as refused and not as emergency access) and
// not the other patient's. Break-the-glass marking is tested in policy-browser.js. A physician session is refused the page, and no session is sent to sign in.
// The privacy officer po.audit enrols TOTP, filters /admin/audit by each patient and must see
// exactly the entries of that patient.
//
// Env: VIGIL_URL (http://localhost:PORT), VIGIL_AUDIT_PATIENT_ID, VIGIL_AUDIT_OTHER_ID,
// VIGIL_AUDIT_OBSERVATIONS (ids of the patient's Observations, comma separated),
// VIGIL_PAT_USER / VIGIL_PAT_PASSWORD (the patient account), VIGIL_DR_USER / VIGIL_DR_PASSWORD /
// VIGIL_DR_TOKEN (the physician and an operator token with user/*.rs), VIGIL_PO_USER /
// VIGIL_PO_PASSWORD (a privacy officer without a second factor); CHROMIUM (default
// /usr/bin/chromium). cargo xtask ext creates them all.
// Prints how long each step took; never asserts on time.

const { short } = require('./common');
const {
  runFlow, watch, Timer, pathOf, navigating, errorsOn, passwordStep, enrolTotp,
} = require('./browser-common');

const NEED = [
  'VIGIL_URL', 'VIGIL_AUDIT_PATIENT_ID', 'VIGIL_AUDIT_OTHER_ID', 'VIGIL_AUDIT_OBSERVATIONS',
  'VIGIL_PAT_USER', 'VIGIL_PAT_PASSWORD', 'VIGIL_DR_USER', 'VIGIL_DR_PASSWORD', 'VIGIL_DR_TOKEN',
  'VIGIL_PO_USER', 'VIGIL_PO_PASSWORD',
];
const DR_NAME = 'Dr Audit';
const PAT_NAME = 'Pat Audit';
// The other patient's names, as the harness PUTs them: none may show on pat.audit's page.
const OTHER_WORDS = ['Otherton', 'Olive'];

function env() {
  const e = process.env;
  return {
    base: (e.VIGIL_URL || '').replace(/\/+$/, ''),
    missing: NEED.filter((k) => !e[k]),
    patient: e.VIGIL_AUDIT_PATIENT_ID,
    other: e.VIGIL_AUDIT_OTHER_ID,
    observations: (e.VIGIL_AUDIT_OBSERVATIONS || '').split(',').filter(Boolean),
    pat: { username: e.VIGIL_PAT_USER, password: e.VIGIL_PAT_PASSWORD },
    dr: { username: e.VIGIL_DR_USER, password: e.VIGIL_DR_PASSWORD, token: e.VIGIL_DR_TOKEN },
    po: { username: e.VIGIL_PO_USER, password: e.VIGIL_PO_PASSWORD },
  };
}

async function main() {
  await runFlow('audit', env(), run);
}

// ---- the physician's accesses, through the API ----

// The entry indexes of a vigil-audit-receipt header (`index=3,4; size=5; checkpoint=…`).
function receiptIndexes(value) {
  const m = /(?:^|;)\s*index=([0-9,]+)/.exec(value || '');
  return m ? m[1].split(',').filter(Boolean).map(Number) : [];
}

// One FHIR GET with the physician's token; returns the status, the body and the receipt.
async function drGet(cfg, urlPath, purpose) {
  const headers = { Accept: 'application/fhir+json', Authorization: `Bearer ${cfg.dr.token}` };
  if (purpose) headers['X-Purpose-Of-Use'] = purpose;
  const started = Date.now();
  const res = await fetch(`${cfg.base}/fhir/${urlPath}`, { headers, signal: AbortSignal.timeout(30000) });
  const text = await res.text();
  let body;
  try { body = JSON.parse(text); } catch { body = undefined; }
  const receipt = res.headers.get('vigil-audit-receipt');
  console.log(`time: GET /fhir/${urlPath}${purpose ? ` (${purpose})` : ''}: ${((Date.now() - started) / 1000).toFixed(2)}s, receipt ${short(receipt || '(none)', 40)}`);
  return { status: res.status, body, text, receipt, indexes: receiptIndexes(receipt) };
}

// Reads the patient's record three ways and the other patient's once; returns the accesses
// ({ what, indexes, purpose }) or null when one failed.
async function physicianAccesses(cfg, r) {
  const out = { mine: [], other: null };
  const read = await drGet(cfg, `Patient/${cfg.patient}`, 'TREAT');
  r.check(read.status === 200 && read.body && read.body.id === cfg.patient, `${cfg.dr.username} reads Patient/${cfg.patient} with the operator token`,
    `${read.status} ${short(read.text)}`);
  r.check(read.indexes.length === 1, 'the read answers with a vigil-audit-receipt naming one entry', read.receipt);
  out.mine.push({ what: 'read Patient', purpose: 'TREAT', indexes: read.indexes, resource: 'Patient', action: 'R' });

  const search = await drGet(cfg, `Observation?patient=${encodeURIComponent(cfg.patient)}`);
  const found = search.body && search.body.resourceType === 'Bundle' ? (search.body.entry || []).map((e) => e.resource && e.resource.id) : [];
  r.check(search.status === 200 && cfg.observations.every((id) => found.includes(id)),
    `${cfg.dr.username} searches Observation?patient=${cfg.patient} and finds ${cfg.observations.join(', ')}`, `${search.status} ${short(found)} ${short(search.text)}`);
  r.check(search.indexes.length >= 1, 'the search answers with a vigil-audit-receipt', search.receipt);
  // A search is an execute (E) in FHIR's AuditEvent action codes.
  out.mine.push({ what: 'search Observation', purpose: null, indexes: search.indexes, resource: 'Observation', action: 'E' });

  // ETREAT without a break-the-glass grant: the policy refuses it, and the refusal is recorded.
  const obs = cfg.observations[0];
  const glass = await drGet(cfg, `Observation/${obs}`, 'ETREAT');
  r.check(glass.status === 403 && glass.body && glass.body.resourceType === 'OperationOutcome' && !glass.text.includes('"valueQuantity"'),
    `${cfg.dr.username} is refused Observation/${obs} with purpose ETREAT and no grant (403 OperationOutcome, no data)`, `${glass.status} ${short(glass.text)}`);
  r.check(glass.indexes.length === 1, 'the refused read answers with a receipt naming one entry', glass.receipt);
  out.mine.push({ what: 'refused ETREAT read of Observation', purpose: 'ETREAT', indexes: glass.indexes, resource: 'Observation', action: 'R', refused: true });

  // No relationship with the other patient: refused (403), and recorded.
  const other = await drGet(cfg, `Patient/${cfg.other}`, 'TREAT');
  const diagnostics = ((other.body && other.body.issue) || []).map((i) => i.diagnostics || '').join(' | ');
  r.check(other.status === 403 && /default-deny/.test(diagnostics) && !other.text.includes('Otherton'),
    `${cfg.dr.username} is refused the other patient Patient/${cfg.other} (403 naming default-deny, no data)`, `${other.status} ${short(other.text)}`);
  r.check(other.indexes.length === 1, 'the refused read answers with a receipt naming one entry', other.receipt);
  out.other = { what: 'read the other Patient', indexes: other.indexes };
  const all = [...out.mine.flatMap((a) => a.indexes), ...other.indexes];
  r.check(new Set(all).size === all.length, 'every access has its own audit entry', short(all));
  return out;
}

// ---- page watchers ----

// ---- the patient's access log ----

// The rows of table#access-log: index, time, who (and role), what, why, break-glass marks.
async function accessRows(page) {
  return page.$$eval('table#access-log tbody tr', (trs) => trs.map((tr) => {
    const cell = (c) => { const td = tr.querySelector(`td.${c}`); return td ? td.textContent.trim() : null; };
    const time = tr.querySelector('td.when time');
    const role = tr.querySelector('td.who .role');
    return {
      index: Number(tr.getAttribute('data-index')),
      datetime: time ? time.getAttribute('datetime') : null,
      when: cell('when'),
      who: cell('who'),
      role: role ? role.textContent.trim() : null,
      what: cell('what'),
      why: cell('why'),
      breakGlass: tr.classList.contains('break-glass'),
      label: (tr.querySelector('.break-glass-label') || { textContent: '' }).textContent.trim(),
    };
  }));
}

async function patientPage(cfg, r, page, t, accesses, startedAt) {
  const base = cfg.base;
  const where = await passwordStep(page, base, cfg.pat);
  if (!r.check(where === '/account', `${cfg.pat.username} signs in with the password alone and lands on /account`,
    `${page.url()} ${short(await errorsOn(page))}`)) return;
  t.lap('patient sign-in');
  const link = page.locator('a#access-log-link');
  if (!r.check(await link.count() === 1, '/account has a#access-log-link for a patient')) return;
  await navigating(page, () => link.click());
  r.check(pathOf(page) === '/account/access-log', 'the link opens /account/access-log', page.url());
  const title = (await page.textContent('h2#access-log-title').catch(() => null)) || '';
  r.check(/who accessed my record/i.test(title), 'h2#access-log-title reads "Who accessed my record"', title);
  r.check(await page.locator('table#access-log').count() === 1, 'the page has table#access-log');
  const headers = (await page.locator('table#access-log thead th').allTextContents()).map((h) => h.trim());
  r.check(JSON.stringify(headers) === JSON.stringify(['When', 'Who', 'What', 'Why']), 'its columns are When, Who, What, Why', short(headers));
  t.lap('access log opened');

  const rows = await accessRows(page);
  console.log(`(${rows.length} rows on ${cfg.pat.username}'s access log)`);
  for (const row of rows) console.log(`  #${row.index} ${row.when} | ${row.who} | ${row.what} | ${row.why}${row.breakGlass ? ' | break-glass' : ''}`);
  const byIndex = new Map(rows.map((row) => [row.index, row]));
  const now = Date.now();
  for (const a of accesses.mine) {
    for (const i of a.indexes) {
      const row = byIndex.get(i);
      if (!r.check(row !== undefined, `the physician's ${a.what} (entry ${i}) is listed`, short(rows.map((x) => x.index)))) continue;
      r.check(row.who.includes(DR_NAME) && row.role === '(physician)', `entry ${i}: who is "${DR_NAME} (physician)"`, row.who);
      const at = Date.parse(row.datetime || '');
      // A sanity check of the value (the entry was made during this run), not of speed.
      r.check(Number.isFinite(at) && at >= startedAt - 120000 && at <= now + 120000 && /\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}/.test(row.when),
        `entry ${i}: a time (time[datetime] from this run, shown as a date and time)`, `${row.datetime} "${row.when}"`);
      if (a.refused) {
        r.check(row.what.includes(a.resource) && /refused/i.test(row.what), `entry ${i}: what names ${a.resource}, refused`, row.what);
      } else {
        r.check(row.what.includes(a.resource) && !/refused|failed/i.test(row.what), `entry ${i}: what names ${a.resource}`, row.what);
        // A search declares no purpose: the entry has the purpose it was decided under (the
        // physician's usual one, treatment).
        const why = a.purpose === 'TREAT' || a.purpose === null ? ['treatment'] : ['emergency treatment'];
        if (a.purpose === null) why.push('not stated');
        r.check(why.includes(row.why), `entry ${i}: why is "${why.join('" or "')}"`, row.why);
      }
      r.check(!row.breakGlass && !row.label, `entry ${i}: not marked as emergency access`, `${row.breakGlass} "${row.label}"`);
    }
  }
  const drRows = rows.filter((row) => row.who.includes(DR_NAME));
  const drMine = accesses.mine.flatMap((a) => a.indexes);
  r.check(drRows.length === drMine.length && drRows.every((row) => drMine.includes(row.index)),
    `exactly the physician's ${drMine.length} accesses to this record are attributed to ${DR_NAME}`, short(drRows.map((x) => x.index)));
  for (const i of accesses.other.indexes) {
    r.check(!byIndex.has(i), `the physician's read of the other patient (entry ${i}) is not listed`, short(byIndex.get(i)));
  }
  const text = await page.textContent('main, body');
  const leaked = [cfg.other, ...OTHER_WORDS].filter((w) => text.includes(w));
  r.check(leaked.length === 0, 'the page names nothing of the other patient', short(leaked));
  // Whatever else is listed (the patient's own sign-in and views, the harness's writes) is
  // by the patient, the physician, or the server's operators (the harness's PUTs with the
  // backend-service token of the app vigil-cli, the CLI's read of the Patient when it links the
  // account): nobody else's activity.
  const strangers = rows.filter((row) => !(row.who.includes(DR_NAME) || row.who.includes(PAT_NAME) || /ext-admin|operator|the app vigil-cli/i.test(row.who)));
  r.check(strangers.length === 0, 'every row is by the physician, the patient or an operator', short(strangers));
  const own = rows.filter((row) => row.who.includes(PAT_NAME));
  r.check(own.every((row) => row.role === '(patient)'), "the patient's own rows show the role patient", short(own));
  t.lap('access log checked');

  // A reload after more own page views: still no one else's entries.
  await page.goto(base + '/account');
  await page.goto(base + '/account/access-log');
  const again = await accessRows(page);
  r.check(accesses.other.indexes.every((i) => !again.some((row) => row.index === i))
    && again.every((row) => row.who.includes(DR_NAME) || row.who.includes(PAT_NAME) || /ext-admin|operator|the app vigil-cli/i.test(row.who)),
  'after more page views of the patient the log still lists only this record\'s accesses', short(again.map((x) => `${x.index} ${x.who}`)));
  t.lap('access log reloaded');
}

// ---- refusals ----

async function noSession(cfg, r) {
  const res = await fetch(`${cfg.base}/account/access-log`, { redirect: 'manual', signal: AbortSignal.timeout(30000) });
  const location = res.headers.get('location') || '';
  const body = await res.text();
  const toSignin = [302, 303, 307].includes(res.status) && /^(https?:\/\/[^/]+)?\/signin(\?|$)/.test(location);
  r.check(toSignin || res.status === 401 || res.status === 403, 'without a session /account/access-log is refused or sent to /signin',
    `${res.status} ${location}`);
  r.check(!body.includes('table id="access-log"'), 'without a session no access log is shown');
}

async function physicianRefused(cfg, r, page, phase) {
  const where = await passwordStep(page, cfg.base, cfg.dr);
  if (!r.check(where === '/signin/enrol', `${cfg.dr.username} (physician) is sent to enrol a second factor`, `${page.url()} ${short(await errorsOn(page))}`)) return;
  await enrolTotp(page, r, cfg.dr.username);
  r.check(await page.locator('a#access-log-link').count() === 0, "a physician's /account has no access-log link");
  phase.name = 'refused'; phase.expect = [403];
  const res = await page.goto(cfg.base + '/account/access-log');
  const status = res && res.status();
  const shown = await page.locator('table#access-log').count();
  r.check((status === 403 || pathOf(page) === '/signin') && shown === 0, 'a physician session gets 403 for /account/access-log, with no table',
    `${status} ${page.url()} tables ${shown}`);
  phase.name = 'after'; phase.expect = [];
}

// ---- the privacy officer's audit trail ----

async function auditRows(page) {
  return page.$$eval('table#audit-entries tbody tr', (trs) => trs.map((tr) => {
    const cell = (c) => { const td = tr.querySelector(`td.${c}`); return td ? td.textContent.trim() : ''; };
    return {
      index: Number(tr.getAttribute('data-index')), agent: cell('agent'), role: cell('role'), action: cell('action'),
      subtype: cell('subtype'), outcome: cell('outcome'), patients: cell('patients'), datetime: (tr.querySelector('td.time time') || { getAttribute: () => null }).getAttribute('datetime'),
    };
  }));
}

async function filterBy(page, patient) {
  await page.fill('#audit-patient', patient);
  await navigating(page, () => page.click('#audit-submit'));
  return auditRows(page);
}

async function privacyOfficer(cfg, r, page, t, accesses) {
  const where = await passwordStep(page, cfg.base, cfg.po);
  if (!r.check(where === '/signin/enrol', `${cfg.po.username} (privacy officer) is sent to enrol a second factor`, `${page.url()} ${short(await errorsOn(page))}`)) return;
  await enrolTotp(page, r, cfg.po.username);
  t.lap('privacy officer TOTP enrolment');
  const res = await page.goto(cfg.base + '/admin/audit');
  r.check(res && res.status() === 200 && await page.locator('table#audit-entries').count() === 1, '/admin/audit answers 200 with table#audit-entries',
    `${res && res.status()} ${page.url()}`);
  if (await page.locator('#audit-patient').count() !== 1) { r.fail('/admin/audit has the #audit-patient filter'); return; }

  const rows = await filterBy(page, cfg.patient);
  const q = new URL(page.url()).searchParams;
  r.check(pathOf(page) === '/admin/audit' && q.get('patient') === cfg.patient, 'the filter form reloads /admin/audit?patient=…', page.url());
  console.log(`(${rows.length} rows for patient ${cfg.patient} on /admin/audit)`);
  for (const row of rows) console.log(`  #${row.index} ${row.agent} | ${row.role} | ${row.action} ${row.subtype} | ${row.outcome} | ${row.patients}`);
  const byIndex = new Map(rows.map((row) => [row.index, row]));
  for (const a of accesses.mine) {
    for (const i of a.indexes) {
      const row = byIndex.get(i);
      if (!r.check(row !== undefined, `/admin/audit filtered by ${cfg.patient} lists the physician's ${a.what} (entry ${i})`)) continue;
      const outcome = a.refused ? !/success/.test(row.outcome) : /success/.test(row.outcome);
      r.check(row.role === 'physician' && row.action === a.action && outcome && row.patients.split(', ').includes(cfg.patient),
        `entry ${i}: role physician, action ${a.action}, ${a.refused ? 'a failure' : 'success'}, patient ${cfg.patient}`, short(row));
    }
  }
  for (const i of accesses.other.indexes) {
    r.check(!byIndex.has(i), `the filter by ${cfg.patient} leaves out the other patient's read (entry ${i})`);
  }
  r.check(rows.every((row) => row.patients.split(', ').includes(cfg.patient)), `every row filtered by ${cfg.patient} names that patient`,
    short(rows.filter((row) => !row.patients.split(', ').includes(cfg.patient))));
  const agents = new Set(accesses.mine.flatMap((a) => a.indexes).map((i) => byIndex.get(i) && byIndex.get(i).agent));
  r.check(agents.size === 1 && !agents.has(undefined) && !agents.has(''), 'the physician\'s entries name one agent account', short([...agents]));
  t.lap('audit trail filtered by the patient');

  const others = await filterBy(page, cfg.other);
  const otherIdx = new Set(others.map((row) => row.index));
  r.check(accesses.other.indexes.every((i) => otherIdx.has(i)), `filtered by ${cfg.other} it lists the physician's read of that patient`,
    short(others.map((x) => x.index)));
  r.check(accesses.mine.flatMap((a) => a.indexes).every((i) => !otherIdx.has(i)), `filtered by ${cfg.other} it lists none of ${cfg.patient}'s accesses`);
  t.lap('audit trail filtered by the other patient');
}

// ---- the run ----

async function run(cfg, r, open) {
  const t = new Timer();
  const startedAt = Date.now();
  const problems = [];

  const accesses = await physicianAccesses(cfg, r);
  t.lap('physician API accesses');
  await noSession(cfg, r);
  t.lap('no-session refusal');

  const patCtx = await open();
  const patPhase = { name: 'patient', expect: [] };
  const pat = patCtx.pages()[0] || (await patCtx.newPage());
  await watch(patCtx, pat, 'patient', problems, patPhase);
  await patientPage(cfg, r, pat, t, accesses, startedAt);

  const drCtx = await open();
  const drPhase = { name: 'sign-in', expect: [] };
  const dr = drCtx.pages()[0] || (await drCtx.newPage());
  await watch(drCtx, dr, 'physician', problems, drPhase);
  await physicianRefused(cfg, r, dr, drPhase);
  t.lap('physician session refused');

  const poCtx = await open();
  const poPhase = { name: 'audit', expect: [] };
  const po = poCtx.pages()[0] || (await poCtx.newPage());
  await watch(poCtx, po, 'privacy officer', problems, poPhase);
  await privacyOfficer(cfg, r, po, t, accesses);

  r.check(problems.length === 0, 'no console errors, CSP violations, uncaught exceptions or failed requests', problems.join('\n'));
}

main().catch((e) => { console.log(`FAIL audit browser: ${e && e.stack ? e.stack : e}`); process.exitCode = 1; });
