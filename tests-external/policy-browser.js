'use strict';
// The access policy's pages in a real headless Chromium, driven by playwright-core.
//
// The physician dr.policy is on the care team of patient A only. They enrol TOTP, search /chart
// and open A's chart (demographics, observations, problems) and download its "Export record"
// (a FHIR Bundle of A's record, as the export action of the policy allows); B's chart is the denial page (the
// rule, the reason, the missing relationship, the way forward, the lesson and the break-the-glass
// link). They follow the link (signing in again if asked), justify, and land on B's chart under an
// emergency banner, where "Export record" is refused (break-the-glass never exports). The privacy officer po.policy enrols TOTP, finds the grant in
// /admin/break-glass and reviews it, opens /admin/policy (the rules) and asks "what if" the
// physician reads Patient/B for treatment. Patient B (pat.policy) signs in and sees the
// physician's accesses under the grant marked "Emergency access" on "Who accessed my record", and
// downloads their own record from there.
//
// Env: VIGIL_URL (http://localhost:PORT), VIGIL_POLICY_A, VIGIL_POLICY_B (Patient ids),
// VIGIL_DR_USER / VIGIL_DR_PASSWORD, VIGIL_PO_USER / VIGIL_PO_PASSWORD, VIGIL_PAT_USER /
// VIGIL_PAT_PASSWORD; CHROMIUM (default /usr/bin/chromium). cargo xtask ext creates them all.
// Prints how long each step took; never asserts on time.

const fs = require('fs');
const { short } = require('./common');
const {
  runFlow, watch, Timer, pathOf, navigating, errorsOn, passwordStep, enrolTotp, freshCode, roomInStep,
} = require('./browser-common');

const NEED = [
  'VIGIL_URL', 'VIGIL_POLICY_A', 'VIGIL_POLICY_B', 'VIGIL_DR_USER', 'VIGIL_DR_PASSWORD',
  'VIGIL_PO_USER', 'VIGIL_PO_PASSWORD', 'VIGIL_PAT_USER', 'VIGIL_PAT_PASSWORD',
];
// As the harness PUTs them.
const A_FAMILY = 'Careford';
const B_FAMILY = 'Glassby';
const DR_NAME = 'Dr Policy';
const JUSTIFICATION = 'Brought in unconscious; no treating physician reachable.';

function env() {
  const e = process.env;
  return {
    base: (e.VIGIL_URL || '').replace(/\/+$/, ''),
    missing: NEED.filter((k) => !e[k]),
    a: e.VIGIL_POLICY_A,
    b: e.VIGIL_POLICY_B,
    dr: { username: e.VIGIL_DR_USER, password: e.VIGIL_DR_PASSWORD },
    po: { username: e.VIGIL_PO_USER, password: e.VIGIL_PO_PASSWORD },
    pat: { username: e.VIGIL_PAT_USER, password: e.VIGIL_PAT_PASSWORD },
  };
}

async function main() {
  await runFlow('policy', env(), run);
}

const textOf = async (page, sel) => ((await page.textContent(sel).catch(() => null)) || '').trim();

// Signs in again (password, then the TOTP code) when a sensitive action asks for it; returns
// whether the browser is back on `want`.
async function reauthenticate(cfg, r, page, user, secret, want) {
  if (pathOf(page) !== '/signin') return pathOf(page) === want;
  r.check(await page.locator('#reauth').count() === 1, `${user.username}: the sign-in page says the action needs a recent sign-in`);
  await page.fill('#username', user.username);
  await page.fill('#password', user.password);
  await navigating(page, () => page.click('#signin-submit'));
  if (pathOf(page) === '/signin/factor') {
    await roomInStep(secret);
    await page.fill('#code', (await freshCode(secret, `${user.username} re-authentication`)).code);
    await navigating(page, () => page.click('#totp-submit'));
  }
  return r.check(pathOf(page) === want, `${user.username}: after signing in again the browser is back on ${want}`, `${page.url()} ${short(await errorsOn(page))}`);
}

// ---- the physician ----

async function physician(cfg, r, page, t, phase) {
  const base = cfg.base;
  const where = await passwordStep(page, base, cfg.dr);
  if (!r.check(where === '/signin/enrol', `${cfg.dr.username} (physician) is sent to enrol a second factor`, `${page.url()} ${short(await errorsOn(page))}`)) return null;
  const { secret } = await enrolTotp(page, r, cfg.dr.username);
  t.lap('physician sign-in and TOTP enrolment');

  // The chart search, from the navigation.
  const nav = page.locator('a#nav-chart');
  if (!r.check(await nav.count() === 1, "a clinician's navigation links the charts (a#nav-chart)")) return null;
  await navigating(page, () => nav.click());
  r.check(pathOf(page) === '/chart' && await page.locator('form#chart-search').count() === 1, 'a#nav-chart opens /chart with form#chart-search', page.url());
  await page.fill('#chart-name', A_FAMILY);
  await navigating(page, () => page.click('#chart-search-submit'));
  const found = await page.$$eval('table#chart-results tbody tr', (trs) => trs.map((tr) => tr.getAttribute('data-id')));
  r.check(found.length === 1 && found[0] === cfg.a, `searching "${A_FAMILY}" lists patient ${cfg.a}`, short(found));
  t.lap('chart search');
  await page.fill('#chart-name', B_FAMILY);
  await navigating(page, () => page.click('#chart-search-submit'));
  r.check(await page.locator('table#chart-results tbody tr').count() === 0 && await page.locator('#chart-none').count() === 1,
    `searching "${B_FAMILY}" (no relationship) lists nobody`, short(await textOf(page, 'main')));
  r.check(!(await textOf(page, 'main')).includes(cfg.b), `the search page names nothing of ${cfg.b}`);

  await page.fill('#chart-name', A_FAMILY);
  await navigating(page, () => page.click('#chart-search-submit'));
  await navigating(page, () => page.click(`table#chart-results a[href="/chart/${cfg.a}"]`));
  r.check(pathOf(page) === `/chart/${cfg.a}`, `the result opens /chart/${cfg.a}`, page.url());
  r.check((await textOf(page, '#chart-patient-name')).includes(A_FAMILY), `A's chart shows the name ${A_FAMILY}`, await textOf(page, '#chart-patient-name'));
  const obs = await page.$$eval('#chart-observations tbody tr', (trs) => trs.map((tr) => tr.getAttribute('data-id')));
  r.check(obs.includes(`${cfg.a}-hr`), `A's chart lists Observation ${cfg.a}-hr`, short(obs));
  r.check((await textOf(page, '#chart-problems')).includes('Asthma'), "A's chart lists the problem Asthma", await textOf(page, '#chart-problems'));
  for (const s of ['encounters', 'medications', 'notes']) {
    r.check(await page.locator(`#chart-${s}`).count() === 1, `A's chart has the section #chart-${s}`);
  }
  t.lap("A's chart");

  // "Export record": the chart's link downloads A's record as a FHIR Bundle (the export action).
  const exportLink = page.locator('a#chart-export');
  if (r.check(await exportLink.count() === 1 && await exportLink.getAttribute('href') === `/chart/${cfg.a}/export`,
    `A's chart links a#chart-export to /chart/${cfg.a}/export`)) {
    phase.downloads = [`/chart/${cfg.a}/export`];
    const [download] = await Promise.all([page.waitForEvent('download'), exportLink.click()]);
    r.check(download.suggestedFilename() === `patient-${cfg.a}-export.json`,
      `the export downloads as patient-${cfg.a}-export.json`, download.suggestedFilename());
    const file = await download.path();
    let bundle = null;
    try { bundle = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { r.fail(`the downloaded export is JSON: ${e}`); }
    if (bundle) {
      const refs = (bundle.entry || []).map((e) => `${e.resource.resourceType}/${e.resource.id}`);
      console.log(`(export of ${cfg.a}: ${refs.length} resources: ${short(refs)})`);
      r.check(bundle.resourceType === 'Bundle' && bundle.type === 'searchset' && bundle.total === refs.length,
        'the export is a searchset Bundle whose total is its number of entries', short({ type: bundle.type, total: bundle.total }));
      r.check(refs[0] === `Patient/${cfg.a}` && refs.includes(`Observation/${cfg.a}-hr`) && refs.includes(`Condition/${cfg.a}-asthma`),
        `it holds Patient/${cfg.a} (first), its Observation and its Condition`, short(refs));
      r.check((bundle.entry || []).every((e) => e.search && e.search.mode === 'match' && e.fullUrl.endsWith(`/fhir/${e.resource.resourceType}/${e.resource.id}`)),
        'every entry is a match with its fullUrl');
      r.check(!JSON.stringify(bundle).includes(cfg.b) && !JSON.stringify(bundle).includes(B_FAMILY), "it holds nothing of B's record");
    }
    r.check(pathOf(page) === `/chart/${cfg.a}`, 'downloading leaves the browser on the chart', page.url());
  }
  t.lap('export download');

  // B's chart: the denial page.
  phase.name = 'denial'; phase.expect = [403];
  const res = await page.goto(`${base}/chart/${cfg.b}`);
  r.check(res && res.status() === 403, `/chart/${cfg.b} answers 403`, `${res && res.status()}`);
  r.check(await textOf(page, '#denial h2') === 'Access denied', 'the denial page is headed "Access denied"', await textOf(page, '#denial h2'));
  const denial = {
    rule: await textOf(page, '#denial-rule'),
    reason: await textOf(page, '#denial-reason'),
    missing: await textOf(page, '#denial-missing'),
    way: await textOf(page, '#denial-way-forward'),
    lesson: await textOf(page, '#denial-lesson'),
    lessonHref: await page.getAttribute('#denial-lesson', 'href').catch(() => null),
  };
  console.log(`(denial: ${JSON.stringify(denial)})`);
  r.check(denial.rule.includes('default-deny'), 'it names the rule default-deny', denial.rule);
  r.check(denial.reason.length > 10, 'it gives the reason in words', denial.reason);
  r.check(/care.team|encounter|consultation|relationship/i.test(denial.missing), 'it says the missing relationship', denial.missing);
  r.check(denial.way.length > 10, 'it gives the way forward', denial.way);
  r.check(denial.lesson === 'L-RELATIONSHIP' && denial.lessonHref === '/learn/L-RELATIONSHIP', 'it links the lesson L-RELATIONSHIP', `${denial.lesson} ${denial.lessonHref}`);
  r.check(!(await textOf(page, 'main')).includes(B_FAMILY), "the denial page shows nothing of B's record");
  const link = page.locator('a#break-glass-link');
  if (!r.check(await link.count() === 1 && await link.getAttribute('href') === `/break-glass/${cfg.b}`, `it offers a#break-glass-link to /break-glass/${cfg.b}`)) return null;
  phase.name = 'break-glass'; phase.expect = [];
  t.lap('denial page');

  // Break the glass.
  await navigating(page, () => link.click());
  if (!await reauthenticate(cfg, r, page, cfg.dr, secret, `/break-glass/${cfg.b}`)) return null;
  r.check(pathOf(page) === `/break-glass/${cfg.b}` && await page.locator('form#break-glass-form').count() === 1, 'the link opens the break-the-glass form', page.url());
  r.check(/Emergency treatment/.test(await textOf(page, '#break-glass-reason')), 'the reason shown is "Emergency treatment"');
  r.check(/privacy officer/i.test(await textOf(page, '#break-glass-accountability')) && /patient/i.test(await textOf(page, '#break-glass-accountability')),
    'the page explains the accountability (recorded, reviewed, shown to the patient)');
  r.check(await page.inputValue('#break-glass-minutes') === '60', 'the duration defaults to 60 minutes', await page.inputValue('#break-glass-minutes'));
  await page.fill('#break-glass-justification', JUSTIFICATION);
  await page.selectOption('#break-glass-minutes', '30');
  await navigating(page, () => page.click('#break-glass-submit'));
  if (pathOf(page) === '/signin') await reauthenticate(cfg, r, page, cfg.dr, secret, `/break-glass/${cfg.b}`);
  r.check(pathOf(page) === `/chart/${cfg.b}`, `breaking the glass lands on /chart/${cfg.b}`, `${page.url()} ${short(await errorsOn(page))}`);
  const banner = await textOf(page, '#emergency-banner');
  r.check(/Emergency access until \d{2}:\d{2}/.test(banner) && /grant/.test(banner), 'the chart shows the emergency banner "Emergency access until HH:MM (grant …)"', banner);
  r.check((await textOf(page, '#chart-patient-name')).includes(B_FAMILY), `B's chart shows the name ${B_FAMILY}`);
  const bObs = await page.$$eval('#chart-observations tbody tr', (trs) => trs.map((tr) => tr.getAttribute('data-id')));
  r.check(bObs.includes(`${cfg.b}-hr`), `B's chart lists Observation ${cfg.b}-hr`, short(bObs));
  t.lap('break the glass');

  // The grant opens reads, never an export (P8): B's "Export record" is the denial page, no file.
  phase.name = 'export under the grant'; phase.expect = [403];
  let downloaded = false;
  page.once('download', () => { downloaded = true; });
  await navigating(page, () => page.click('a#chart-export'));
  r.check(pathOf(page) === `/chart/${cfg.b}/export` && await textOf(page, '#denial h2') === 'Access denied' && (await textOf(page, '#denial-rule')).length > 0,
    `under the grant, B's "Export record" is the denial page naming its rule`, `${page.url()} ${await textOf(page, '#denial-rule')}`);
  r.check(!downloaded && !(await textOf(page, 'main')).includes(B_FAMILY), "and nothing of B's record is downloaded or shown");
  phase.name = 'break-glass'; phase.expect = [];
  t.lap('export refused under the grant');

  // The physician's own grants.
  await page.goto(`${base}/break-glass`);
  const grants = await page.$$eval('table#grants tbody tr', (trs) => trs.map((tr) => ({
    id: tr.getAttribute('data-grant'), patient: (tr.querySelector('td.patient') || {}).textContent, state: (tr.querySelector('td.state') || {}).textContent,
  })));
  const live = grants.find((g) => g.patient === cfg.b && g.state === 'live');
  r.check(live !== undefined && await page.locator('button.end-grant').count() === 1, '/break-glass lists the live grant with an "End now" button', short(grants));
  return live ? live.id : null;
}

// ---- the privacy officer ----

async function privacyOfficer(cfg, r, page, t, grant) {
  const base = cfg.base;
  const where = await passwordStep(page, base, cfg.po);
  if (!r.check(where === '/signin/enrol', `${cfg.po.username} (privacy officer) is sent to enrol a second factor`, `${page.url()} ${short(await errorsOn(page))}`)) return;
  await enrolTotp(page, r, cfg.po.username);
  t.lap('privacy officer sign-in and TOTP enrolment');

  const nav = page.locator('a#nav-break-glass-reviews');
  if (!r.check(await nav.count() === 1 && await page.locator('a#nav-policy').count() === 1, "the privacy officer's navigation links the reviews and the policy")) return;
  await navigating(page, () => nav.click());
  r.check(pathOf(page) === '/admin/break-glass', 'the link opens /admin/break-glass', page.url());
  const row = page.locator(`table#review-queue tr[data-grant="${grant}"]`);
  if (!r.check(await row.count() === 1, `the review queue lists the physician's grant ${short(grant, 12)}`)) return;
  const cells = {
    patient: (await row.locator('td.patient').textContent()).trim(),
    justification: (await row.locator('td.justification').textContent()).trim(),
    who: (await row.locator('td.who').textContent()).trim(),
    due: await row.locator('td.due time').getAttribute('datetime'),
  };
  console.log(`(review queue row: ${JSON.stringify(cells)})`);
  r.check(cells.patient === cfg.b && cells.justification === JUSTIFICATION && cells.who.length > 0 && Number.isFinite(Date.parse(cells.due)),
    'the row shows who, the patient, the justification and the review deadline', short(cells));
  await row.locator('select.review-outcome').selectOption('appropriate');
  await row.locator('textarea.review-note').fill('Confirmed with the emergency department.');
  await navigating(page, () => row.locator('button.review-submit').click());
  r.check(pathOf(page) === '/admin/break-glass' && await page.locator('#flash').count() === 1, 'the review is recorded (flash message)', `${page.url()} ${short(await errorsOn(page))}`);
  r.check(await page.locator(`table#review-queue tr[data-grant="${grant}"]`).count() === 0, 'the reviewed grant leaves the queue');
  t.lap('grant reviewed');

  // The policy page and a what-if.
  await navigating(page, () => page.click('a#nav-policy'));
  r.check(pathOf(page) === '/admin/policy', 'a#nav-policy opens /admin/policy', page.url());
  const rules = await page.$$eval('table#policy-rules tbody tr', (trs) => trs.map((tr) => tr.getAttribute('data-rule')));
  r.check(rules.length >= 5, 'the rules table lists the policy rules', short(rules));
  r.check((await page.inputValue('#policy-text')).length > 100, 'the Cedar text is in the editor');
  await page.fill('#wi-username', cfg.dr.username);
  await page.selectOption('#wi-action', 'read');
  await page.fill('#wi-resource', `Patient/${cfg.b}`);
  await page.selectOption('#wi-purpose', 'TREAT');
  await navigating(page, () => page.click('#wi-submit'));
  const answer = {
    decision: await textOf(page, '#wi-decision'),
    rules: await textOf(page, '#wi-rules'),
    reason: await textOf(page, '#wi-reason'),
    missing: await textOf(page, '#wi-missing'),
    way: await textOf(page, '#wi-way-forward'),
    masks: await textOf(page, '#wi-masks'),
  };
  console.log(`(what if ${cfg.dr.username} reads Patient/${cfg.b} for TREAT: ${JSON.stringify(answer)})`);
  r.check(['Allow', 'Deny'].includes(answer.decision) && answer.rules.length > 0 && answer.reason.length > 0 && answer.masks.length > 0,
    'the what-if answer shows the decision, the rules, the reason and the masks', short(answer));
  r.check(answer.decision === 'Allow' || answer.missing.length > 0 || answer.way.length > 0 || answer.rules.length > 0,
    'a denial explains what is missing or the way forward', short(answer));
  t.lap('policy page and what-if');
}

// ---- the patient ----

async function patient(cfg, r, page, t) {
  const where = await passwordStep(page, cfg.base, cfg.pat);
  if (!r.check(where === '/account', `${cfg.pat.username} signs in and lands on /account`, `${page.url()} ${short(await errorsOn(page))}`)) return;
  await navigating(page, () => page.click('a#access-log-link'));
  r.check(pathOf(page) === '/account/access-log', 'the access-log link opens /account/access-log', page.url());
  const rows = await page.$$eval('table#access-log tbody tr', (trs) => trs.map((tr) => {
    const cell = (c) => { const td = tr.querySelector(`td.${c}`); return td ? td.textContent.trim() : ''; };
    return {
      index: Number(tr.getAttribute('data-index')), who: cell('who'), what: cell('what'), why: cell('why'),
      breakGlass: tr.classList.contains('break-glass'),
      label: (tr.querySelector('.break-glass-label') || { textContent: '' }).textContent.trim(),
    };
  }));
  const dr = rows.filter((row) => row.who.includes(DR_NAME));
  console.log(`(${rows.length} rows on ${cfg.pat.username}'s access log, ${dr.length} by ${DR_NAME})`);
  for (const row of dr) console.log(`  #${row.index} ${row.who} | ${row.what} | ${row.why}${row.breakGlass ? ' | EMERGENCY' : ''}`);
  const marked = dr.filter((row) => row.breakGlass);
  r.check(marked.length >= 2 && marked.every((row) => row.label === 'Emergency access'),
    `the physician's accesses under the grant are marked tr.break-glass "Emergency access" (${marked.length})`, short(marked));
  r.check(dr.filter((row) => row.why === 'emergency treatment' && !/refused|failed/.test(row.what)).every((row) => row.breakGlass),
    'every emergency-treatment access of the physician is marked');
  r.check(dr.filter((row) => row.breakGlass).every((row) => row.why === 'emergency treatment' && !/refused|failed/.test(row.what)),
    'only accesses under the grant are marked (not the refusal before it)', short(dr.filter((row) => row.breakGlass && row.why !== 'emergency treatment')));
  r.check(dr.some((row) => /refused/.test(row.what) && !row.breakGlass), 'the refused read before the grant is listed as refused, unmarked', short(dr.map((x) => x.what)));
  t.lap('patient access log');

  // "Download my record": B's own record, all of it (rule P3), as a file.
  const mine = page.locator('a#download-my-record');
  if (r.check(await mine.count() === 1 && await mine.getAttribute('href') === '/account/my-record', 'the access log links a#download-my-record')) {
    const [download] = await Promise.all([page.waitForEvent('download'), mine.click()]);
    r.check(download.suggestedFilename() === `patient-${cfg.b}-export.json`, `it downloads as patient-${cfg.b}-export.json`, download.suggestedFilename());
    let bundle = null;
    try { bundle = JSON.parse(fs.readFileSync(await download.path(), 'utf8')); } catch (e) { r.fail(`the downloaded record is JSON: ${e}`); }
    if (bundle) {
      const refs = (bundle.entry || []).map((e) => `${e.resource.resourceType}/${e.resource.id}`);
      r.check(bundle.type === 'searchset' && refs[0] === `Patient/${cfg.b}` && refs.includes(`Observation/${cfg.b}-hr`) && refs.includes(`Condition/${cfg.b}-asthma`),
        `it holds Patient/${cfg.b}, its Observation and its Condition`, short(refs));
      r.check(!JSON.stringify(bundle).includes(cfg.a) && !JSON.stringify(bundle).includes(A_FAMILY), "it holds nothing of A's record");
    }
    await page.reload();
    r.check((await textOf(page, 'table#access-log tbody tr:first-child td.what')).startsWith('exported'),
      'the download is the newest line of the access log ("exported …")', await textOf(page, 'table#access-log tbody tr:first-child td.what'));
  }
  t.lap('patient download');
}

// ---- the run ----

async function run(cfg, r, open) {
  const t = new Timer();
  const problems = [];

  const drCtx = await open();
  const drPhase = { name: 'physician', expect: [] };
  const dr = drCtx.pages()[0] || (await drCtx.newPage());
  await watch(drCtx, dr, 'physician', problems, drPhase);
  const grant = await physician(cfg, r, dr, t, drPhase);

  if (grant) {
    const poCtx = await open();
    const po = poCtx.pages()[0] || (await poCtx.newPage());
    await watch(poCtx, po, 'privacy officer', problems, { name: 'review', expect: [] });
    await privacyOfficer(cfg, r, po, t, grant);
  } else {
    r.fail('no grant to review: the break-the-glass step failed');
  }

  const patCtx = await open();
  const pat = patCtx.pages()[0] || (await patCtx.newPage());
  await watch(patCtx, pat, 'patient', problems, { name: 'access log', expect: [], downloads: ['/account/my-record'] });
  await patient(cfg, r, pat, t);

  r.check(problems.length === 0, 'no console errors, CSP violations, uncaught exceptions or failed requests', problems.join('\n'));
}

main().catch((e) => { console.log(`FAIL policy browser: ${e && e.stack ? e.stack : e}`); process.exitCode = 1; });
