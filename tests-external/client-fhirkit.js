'use strict';
// A real third-party FHIR client (fhir-kit-client) talking to Vigil.
// Env: VIGIL_URL, VIGIL_TOKEN.

const { config, outcomeText, packageVersion, Reporter, short } = require('./common');

async function main() {
  const cfg = config();
  const r = new Reporter('fhir-kit-client');
  const { Client } = await import('fhir-kit-client'); // ESM-only package
  const version = packageVersion('fhir-kit-client');
  console.log(`client: fhir-kit-client ${version} against ${cfg.fhir}`);
  const client = new Client({ baseUrl: cfg.fhir, bearerToken: cfg.token });

  const cap = await client.capabilityStatement();
  r.check(cap && cap.resourceType === 'CapabilityStatement', 'capabilityStatement() returns a CapabilityStatement', short(cap));
  r.check(cap && cap.fhirVersion === '4.0.1', 'CapabilityStatement.fhirVersion is 4.0.1', cap && cap.fhirVersion);

  const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  const family = `Fhirkit${tag}`;
  const system = 'urn:oid:2.16.840.1.113883.4.1';
  const patient = {
    resourceType: 'Patient',
    identifier: [{ system, value: `fk-${tag}` }],
    name: [{ use: 'official', family, given: ['Kit'] }],
    gender: 'female',
    birthDate: '1970-02-03',
  };
  const created = await client.create({ resourceType: 'Patient', body: patient });
  const id = created && created.id;
  r.check(typeof id === 'string' && id.length > 0, 'create Patient returns the stored resource with an id', short(created));
  r.check(created && created.name && created.name[0].family === family, 'created Patient keeps its name');
  const v1 = created && created.meta && created.meta.versionId;
  r.check(typeof v1 === 'string', 'created Patient has meta.versionId', short(created && created.meta));

  const read = await client.read({ resourceType: 'Patient', id });
  r.check(read.id === id && read.name[0].family === family && read.birthDate === '1970-02-03', 'read Patient returns what was created', short(read));

  const byFamily = await client.search({ resourceType: 'Patient', searchParams: { family } });
  r.check(byFamily.resourceType === 'Bundle' && byFamily.type === 'searchset', 'search returns a searchset Bundle', short(byFamily));
  const famIds = (byFamily.entry || []).map((e) => e.resource && e.resource.id);
  r.check(famIds.length === 1 && famIds[0] === id, 'search Patient?family= finds exactly the created Patient', JSON.stringify(famIds));

  const byIdent = await client.search({ resourceType: 'Patient', searchParams: { identifier: `${system}|fk-${tag}` } });
  const identIds = (byIdent.entry || []).map((e) => e.resource && e.resource.id);
  r.check(identIds.length === 1 && identIds[0] === id, 'search Patient?identifier=system|value finds it', JSON.stringify(identIds));

  const changed = { ...read, birthDate: '1971-04-05', telecom: [{ system: 'phone', value: '+1 555 0100', use: 'home' }] };
  const updated = await client.update({ resourceType: 'Patient', id, body: changed });
  const v2 = updated && updated.meta && updated.meta.versionId;
  r.check(updated && updated.birthDate === '1971-04-05', 'update Patient returns the new content', short(updated));
  r.check(v2 && v2 !== v1, 'update bumps meta.versionId', `${v1} -> ${v2}`);
  const reread = await client.read({ resourceType: 'Patient', id });
  r.check(reread.birthDate === '1971-04-05' && reread.telecom && reread.telecom[0].value === '+1 555 0100', 'read after update sees the change');
  if (v1) {
    const old = await client.vread({ resourceType: 'Patient', id, version: v1 });
    r.check(old.birthDate === '1970-02-03', 'vread of the first version returns the old content', short(old));
  }

  const obs = await client.create({
    resourceType: 'Observation',
    body: {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
      subject: { reference: `Patient/${id}` },
      effectiveDateTime: '2024-01-02T10:00:00Z',
      valueQuantity: { value: 72, unit: 'beats/minute', system: 'http://unitsofmeasure.org', code: '/min' },
    },
  });
  r.check(obs && typeof obs.id === 'string', 'create Observation for the Patient', short(obs));
  const obsByPatient = await client.search({ resourceType: 'Observation', searchParams: { patient: id } });
  const obsIds = (obsByPatient.entry || []).map((e) => e.resource && e.resource.id);
  r.check(obsIds.length === 1 && obsIds[0] === obs.id, 'search Observation?patient= finds it', JSON.stringify(obsIds));
  const obsBySubject = await client.search({ resourceType: 'Observation', searchParams: { subject: `Patient/${id}` } });
  const subjIds = (obsBySubject.entry || []).map((e) => e.resource && e.resource.id);
  r.check(subjIds.length === 1 && subjIds[0] === obs.id, 'search Observation?subject=Patient/id finds it', JSON.stringify(subjIds));

  const hist = await client.history({ resourceType: 'Patient', id });
  const versions = (hist.entry || []).map((e) => e.resource && e.resource.meta && e.resource.meta.versionId);
  r.check(hist.type === 'history' && versions.length === 2 && versions.includes(v1) && versions.includes(v2),
    'history of the Patient is a history Bundle with both versions', JSON.stringify(versions));

  const tx = await client.transaction({
    body: {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          fullUrl: 'urn:uuid:3f4c1c52-8a7e-4f67-9d7b-2c1f0b6a9e01',
          resource: { resourceType: 'Patient', name: [{ family: `${family}Tx` }] },
          request: { method: 'POST', url: 'Patient' },
        },
        {
          resource: {
            resourceType: 'Condition',
            subject: { reference: 'urn:uuid:3f4c1c52-8a7e-4f67-9d7b-2c1f0b6a9e01' },
            code: { text: 'Hypertension' },
          },
          request: { method: 'POST', url: 'Condition' },
        },
      ],
    },
  });
  const txStatuses = (tx.entry || []).map((e) => e.response && e.response.status);
  r.check(tx.type === 'transaction-response' && txStatuses.length === 2 && txStatuses.every((st) => String(st).startsWith('201')),
    'transaction with a urn:uuid reference creates both entries', JSON.stringify(txStatuses));
  const txPatient = (tx.entry || [])[0] && tx.entry[0].resource;
  const txCondition = (tx.entry || [])[1] && tx.entry[1].resource;
  r.check(txPatient && txCondition && txCondition.subject && txCondition.subject.reference === `Patient/${txPatient.id}`,
    'transaction rewrites the urn:uuid reference to the new Patient', short(txCondition));

  await client.delete({ resourceType: 'Observation', id: obs.id });
  try {
    await client.read({ resourceType: 'Observation', id: obs.id });
    r.fail('read after delete fails');
  } catch (e) {
    const status = e.response && e.response.status;
    r.check(status === 410 || status === 404, 'read after delete is 410 Gone (or 404)', String(status));
  }
  const afterDelete = await client.search({ resourceType: 'Observation', searchParams: { patient: id } });
  r.check((afterDelete.entry || []).length === 0, 'a deleted Observation is no longer found by search', short(afterDelete));

  try {
    await client.read({ resourceType: 'Patient', id: `missing-${tag}` });
    r.fail('read of a missing Patient fails');
  } catch (e) {
    const status = e.response && e.response.status;
    const data = e.response && e.response.data;
    r.check(status === 404 && data && data.resourceType === 'OperationOutcome',
      'read of a missing Patient is a 404 OperationOutcome', `${status} ${short(data)}`);
  }

  const anonymous = new Client({ baseUrl: cfg.fhir });
  try {
    await anonymous.read({ resourceType: 'Patient', id });
    r.fail('read without a bearer token is refused');
  } catch (e) {
    const status = e.response && e.response.status;
    r.check(status === 401, 'read without a bearer token is refused with 401', `${status} ${outcomeText(e.response && e.response.data)}`);
  }
  r.finish();
}

main().catch((e) => {
  const resp = e && e.response;
  const detail = resp ? ` (HTTP ${resp.status}: ${short(resp.data)})` : '';
  console.log(`FAIL fhir-kit-client: ${e && e.message}${detail}\n${e && e.stack}`);
  console.log('fhir-kit-client: 0 passed, 1 failed');
  process.exit(1);
});
