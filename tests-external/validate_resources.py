"""Independent validation: what Vigil returns must parse as FHIR R4 with the fhir.resources models.

Env: VIGIL_URL, VIGIL_TOKEN. Run after examples.js on the same server, so that the stored
official examples are there to read back.
"""

import json
import sys

import fhir.resources
import pydantic
from fhir.resources import get_fhir_model_class

from vigil_common import (SERVED_TYPES, HERE, Reporter, config, examples_dir, http, minimal_resources, short)

SAMPLES_PER_TYPE = 3


def validate(r, what, resource_type, body):
    """Parse body with the R4 model of resource_type; a PASS/FAIL line either way."""
    if not isinstance(body, dict):
        r.fail(f"{what}: no JSON body")
        return False
    if body.get("resourceType") != resource_type:
        r.fail(f"{what}: expected a {resource_type}, got {short(body, 200)}")
        return False
    try:
        get_fhir_model_class(resource_type).parse_obj(body)
    except (pydantic.ValidationError, ValueError, TypeError) as err:
        r.fail(f"{what}: invalid {resource_type}: {short(str(err), 600)}")
        return False
    r.ok(f"{what}: valid R4 {resource_type}")
    return True


def locally_valid(resource):
    try:
        get_fhir_model_class(resource["resourceType"]).parse_obj(resource)
        return True
    except (pydantic.ValidationError, ValueError, TypeError):
        return False


def main():
    cfg = config()
    r = Reporter("validate")
    print(f"validator: fhir.resources {fhir.resources.__version__} (FHIR {fhir.resources.__fhir_version__}), "
          f"pydantic {pydantic.VERSION}")
    if fhir.resources.__fhir_version__ != "4.0.1":
        r.fail(f"fhir.resources default models are FHIR {fhir.resources.__fhir_version__}, not R4 4.0.1")

    status, cap, text = http(cfg, "GET", "/metadata", auth=False)
    r.check(status == 200, "GET /metadata without a token is 200", f"{status} {short(text)}")
    if validate(r, "CapabilityStatement", "CapabilityStatement", cap):
        r.check(cap.get("fhirVersion") == "4.0.1", "CapabilityStatement.fhirVersion is 4.0.1", cap.get("fhirVersion"))
        listed = {res.get("type") for rest in cap.get("rest", []) for res in rest.get("resource", [])}
        missing = [t for t in SERVED_TYPES if t not in listed]
        r.check(not missing, "CapabilityStatement lists every served type", f"missing {missing}")

    # A sample of the stored official examples, read back from Vigil.
    refusals = json.loads((HERE / "expected-refusals.json").read_text()) if (HERE / "expected-refusals.json").exists() else {}
    directory = examples_dir()
    for rtype in SERVED_TYPES:
        picked = 0
        for path in sorted(directory.glob(f"{rtype}-*.json")):
            if picked >= SAMPLES_PER_TYPE:
                break
            if path.name in refusals:
                continue
            original = json.loads(path.read_text())
            if original.get("resourceType") != rtype or not locally_valid(original):
                continue  # the validator itself rejects this example as published: no verdict on Vigil
            picked += 1
            status, body, text = http(cfg, "GET", f"/{rtype}/{original['id']}")
            if not r.check(status == 200, f"GET {rtype}/{original['id']} ({path.name})", f"{status} {short(text)}"):
                continue
            validate(r, f"example {path.name} as returned", rtype, body)
        if picked == 0:
            print(f"note {rtype}: no stored example to sample (all refused or invalid as published)")

    # Resources this test creates, of every served type.
    ids = {}
    for rtype, body in [
        ("Organization", {"resourceType": "Organization", "active": True, "name": "Vigil Validation Clinic"}),
        ("Practitioner", {"resourceType": "Practitioner", "active": True, "name": [{"family": "Valid", "given": ["Ada"]}]}),
        ("Patient", {"resourceType": "Patient", "active": True, "gender": "male", "birthDate": "1980-07-08",
                     "name": [{"family": "Validation", "given": ["Pat"]}],
                     "identifier": [{"system": "urn:vigil:test", "value": "validate-1"}]}),
    ]:
        ids[rtype] = create_and_check(r, cfg, rtype, body)
    for body in minimal_resources(ids["Patient"], ids["Practitioner"], ids["Organization"]):
        create_and_check(r, cfg, body["resourceType"], body)

    status, bundle, text = http(cfg, "GET", f"/Observation?patient={ids['Patient']}")
    if r.check(status == 200, "GET Observation?patient= is 200", f"{status} {short(text)}"):
        if validate(r, "searchset Bundle", "Bundle", bundle):
            r.check(bundle.get("type") == "searchset", "Bundle.type is searchset", bundle.get("type"))
            r.check(len(bundle.get("entry", [])) >= 1, "searchset has the created Observation", short(bundle))
    status, bundle, text = http(cfg, "GET", "/Patient?_count=5")
    if r.check(status == 200, "GET Patient?_count=5 is 200", f"{status} {short(text)}"):
        validate(r, "searchset Bundle of Patients", "Bundle", bundle)

    status, outcome, text = http(cfg, "GET", "/Patient/no-such-patient-xyz")
    r.check(status == 404, "read of a missing Patient is 404", f"{status} {short(text)}")
    validate(r, "404 body", "OperationOutcome", outcome)
    status, outcome, text = http(cfg, "POST", "/Patient", {"resourceType": "Patient", "birthDate": "not-a-date"})
    r.check(400 <= status < 500, "create with an invalid birthDate is refused 4xx", f"{status} {short(text)}")
    validate(r, "refusal body", "OperationOutcome", outcome)
    status, outcome, text = http(cfg, "GET", f"/Patient/{ids['Patient']}", auth=False)
    r.check(status == 401, "read without a token is 401", f"{status} {short(text)}")
    validate(r, "401 body", "OperationOutcome", outcome)
    r.finish()


def create_and_check(r, cfg, rtype, body):
    status, created, text = http(cfg, "POST", f"/{rtype}", body)
    if not r.check(status == 201 and isinstance(created, dict) and created.get("id"),
                   f"POST {rtype} is 201 with the stored resource", f"{status} {short(text)}"):
        return "missing"
    rid = created["id"]
    status, got, text = http(cfg, "GET", f"/{rtype}/{rid}")
    if r.check(status == 200, f"GET created {rtype}/{rid}", f"{status} {short(text)}"):
        validate(r, f"created {rtype} as returned", rtype, got)
    return rid


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as err:  # report, never hang or pass silently
        print(f"FAIL validate: {type(err).__name__}: {err}")
        print("validate: 0 passed, 1 failed")
        sys.exit(1)
