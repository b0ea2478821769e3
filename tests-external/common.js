'use strict';
// Shared helpers for the Node scripts: where the server is, how to call it, how to report.

const fs = require('fs');
const path = require('path');

const SERVED_TYPES = [
  'Organization', 'Practitioner', 'PractitionerRole', 'Patient', 'RelatedPerson', 'CareTeam',
  'Encounter', 'Appointment', 'ServiceRequest', 'Condition', 'Observation', 'MedicationRequest',
  'DocumentReference', 'Communication', 'Consent',
];

function config() {
  const base = process.env.VIGIL_URL;
  const token = process.env.VIGIL_TOKEN;
  if (!base || !token) {
    console.error('FAIL: set VIGIL_URL (e.g. http://localhost:8080) and VIGIL_TOKEN (an access token: vigil token issue)');
    process.exit(2);
  }
  return { base: base.replace(/\/+$/, ''), fhir: base.replace(/\/+$/, '') + '/fhir', token };
}

// One HTTP exchange; never throws on a status, returns { status, headers, body, text }.
async function http(cfg, method, urlPath, body, { auth = true } = {}) {
  const headers = { Accept: 'application/fhir+json' };
  if (auth) headers.Authorization = `Bearer ${cfg.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/fhir+json';
  const res = await fetch(cfg.fhir + urlPath, {
    method,
    headers,
    // A string goes as written (keeps decimal precision, which JSON.stringify would lose).
    body: body === undefined || typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(30000),
  });
  const text = await res.text();
  let parsed;
  try { parsed = text ? JSON.parse(text) : undefined; } catch { parsed = undefined; }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

// The directory holding the official R4 example files (<Type>-<id>.json).
function examplesDir() {
  const pkg = path.dirname(require.resolve('hl7.fhir.r4.examples/package.json'));
  const nested = path.join(pkg, 'package');
  return fs.existsSync(path.join(nested, 'Patient-example.json')) ? nested : pkg;
}

// The OperationOutcome's human text, for reports.
function outcomeText(body) {
  if (!body || body.resourceType !== 'OperationOutcome') return '(not an OperationOutcome)';
  return (body.issue || [])
    .map((i) => [i.severity, i.code, i.diagnostics || (i.details && i.details.text), (i.expression || []).join(',')]
      .filter(Boolean).join(' '))
    .join('; ');
}

class Reporter {
  constructor(name) { this.name = name; this.passed = 0; this.failed = 0; }
  pass(what) { this.passed += 1; console.log(`PASS ${what}`); }
  fail(what) { this.failed += 1; console.log(`FAIL ${what}`); }
  check(ok, what, detail) { if (ok) this.pass(what); else this.fail(detail ? `${what}: ${detail}` : what); return ok; }
  finish() {
    console.log(`${this.name}: ${this.passed} passed, ${this.failed} failed`);
    process.exitCode = this.failed === 0 ? 0 : 1;
  }
}

// The version of an installed package (their `exports` often hide package.json from require).
function packageVersion(name) {
  return JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules', name, 'package.json'), 'utf8')).version;
}

function short(v, n = 300) {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s && s.length > n ? s.slice(0, n) + '…' : s;
}

module.exports = { SERVED_TYPES, config, http, examplesDir, outcomeText, packageVersion, Reporter, short };
