"""Shared helpers for the Python scripts: where the server is, how to call it, how to report."""

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent

SERVED_TYPES = [
    "Organization", "Practitioner", "PractitionerRole", "Patient", "RelatedPerson", "CareTeam",
    "Encounter", "Appointment", "ServiceRequest", "Condition", "Observation", "MedicationRequest",
    "DocumentReference", "Communication", "Consent",
]


def config():
    base = os.environ.get("VIGIL_URL")
    token = os.environ.get("VIGIL_TOKEN")
    if not base or not token:
        print("FAIL: set VIGIL_URL (e.g. http://localhost:8080) and VIGIL_TOKEN (an access token: vigil token issue)")
        sys.exit(2)
    base = base.rstrip("/")
    return {"base": base, "fhir": base + "/fhir", "token": token}


def http(cfg, method, path, body=None, auth=True):
    """One exchange; returns (status, parsed JSON or None, text). Never raises on a status."""
    headers = {"Accept": "application/fhir+json"}
    if auth:
        headers["Authorization"] = "Bearer " + cfg["token"]
    data = None
    if body is not None:
        headers["Content-Type"] = "application/fhir+json"
        data = json.dumps(body).encode()
    req = urllib.request.Request(cfg["fhir"] + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            status, raw = res.status, res.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    text = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    return status, parsed, text


def examples_dir():
    pkg = HERE / "node_modules" / "hl7.fhir.r4.examples"
    nested = pkg / "package"
    return nested if (nested / "Patient-example.json").exists() else pkg


def short(value, n=300):
    s = value if isinstance(value, str) else json.dumps(value)
    return s if len(s) <= n else s[:n] + "…"


class Reporter:
    def __init__(self, name):
        self.name, self.passed, self.failed = name, 0, 0

    def ok(self, what):
        self.passed += 1
        print(f"PASS {what}", flush=True)

    def fail(self, what):
        self.failed += 1
        print(f"FAIL {what}", flush=True)

    def check(self, cond, what, detail=None):
        if cond:
            self.ok(what)
        else:
            self.fail(f"{what}: {detail}" if detail is not None else what)
        return cond

    def finish(self):
        print(f"{self.name}: {self.passed} passed, {self.failed} failed")
        sys.exit(0 if self.failed == 0 else 1)


def minimal_resources(patient_id, practitioner_id, organization_id):
    """One small, valid R4 resource of each served type that points at the given ones."""
    pat = {"reference": f"Patient/{patient_id}"}
    prac = {"reference": f"Practitioner/{practitioner_id}"}
    org = {"reference": f"Organization/{organization_id}"}
    loinc = "http://loinc.org"
    return [
        {"resourceType": "RelatedPerson", "active": True, "patient": pat,
         "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH"}]}],
         "name": [{"family": "Doe", "given": ["Mary"]}]},
        {"resourceType": "PractitionerRole", "active": True, "practitioner": prac, "organization": org,
         "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role", "code": "doctor"}]}]},
        {"resourceType": "CareTeam", "status": "active", "subject": pat, "participant": [{"member": prac}]},
        {"resourceType": "Encounter", "status": "finished",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR", "display": "virtual"},
         "subject": pat, "participant": [{"individual": prac}],
         "period": {"start": "2024-01-02T10:00:00Z", "end": "2024-01-02T10:30:00Z"}},
        {"resourceType": "Appointment", "status": "booked", "start": "2024-03-01T09:00:00Z", "end": "2024-03-01T09:20:00Z",
         "participant": [{"actor": pat, "status": "accepted"}, {"actor": prac, "status": "accepted"}]},
        {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": pat, "requester": prac,
         "code": {"coding": [{"system": loinc, "code": "2345-7", "display": "Glucose"}]}},
        {"resourceType": "Observation", "status": "final",
         "code": {"coding": [{"system": loinc, "code": "8867-4", "display": "Heart rate"}]},
         "subject": pat, "effectiveDateTime": "2024-01-02T10:05:00Z",
         "valueQuantity": {"value": 72.5, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}},
        {"resourceType": "Condition", "subject": pat,
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"}]},
         "onsetDateTime": "2020-05-01"},
        {"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": pat, "requester": prac,
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "314076"}]},
         "dosageInstruction": [{"text": "10 mg once daily"}]},
        {"resourceType": "DocumentReference", "status": "current", "subject": pat,
         "content": [{"attachment": {"contentType": "text/plain", "data": "SGVsbG8gVmlnaWw=", "title": "note.txt"}}]},
        {"resourceType": "Communication", "status": "completed", "subject": pat, "sender": prac,
         "payload": [{"contentString": "Your results are ready."}]},
        {"resourceType": "Consent", "status": "active",
         "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
         "category": [{"coding": [{"system": loinc, "code": "59284-0"}]}], "patient": pat,
         "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
         "provision": {"type": "permit"}},
    ]
