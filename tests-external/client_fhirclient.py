"""A real third-party FHIR client (SMART on FHIR's `fhirclient`) talking to Vigil.

Env: VIGIL_URL, VIGIL_TOKEN.
fhirclient sends every request through `FHIRServer.session`, a requests.Session; its own
`auth` only signs headers after a SMART OAuth2 dance, so a static bearer token goes on the
session's default headers.
"""

import random
import sys
import time
from importlib.metadata import version

from fhirclient import server as fhir_server
from fhirclient.models.fhirdate import FHIRDate
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient

from vigil_common import Reporter, config, short


def main():
    cfg = config()
    r = Reporter("fhirclient")
    print(f"client: fhirclient {version('fhirclient')} against {cfg['fhir']}")
    srv = fhir_server.FHIRServer(None, base_uri=cfg["fhir"])
    srv.session.headers["Authorization"] = "Bearer " + cfg["token"]

    tag = f"{int(time.time()):x}{random.randrange(1 << 20):x}"
    family = f"Smart{tag}"
    system = "urn:oid:2.16.840.1.113883.4.1"
    patient = Patient({
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": f"fc-{tag}"}],
        "name": [{"use": "official", "family": family, "given": ["Client"]}],
        "gender": "other",
        "birthDate": "1990-10-11",
    })
    created = patient.create(srv)
    pid = created.get("id") if isinstance(created, dict) else None
    r.check(bool(pid), "Patient(...).create(server) returns the stored resource with an id", short(created))
    if not pid:
        r.finish()

    read = Patient.read(pid, srv)
    r.check(read.id == pid and read.name[0].family == family and read.birthDate.isostring == "1990-10-11",
            "Patient.read(id, server) returns what was created", short(read.as_json()))

    found = list(Patient.where(struct={"family": family}).perform_resources_iter(srv))
    r.check([p.id for p in found] == [pid], "Patient.where(family=...) finds exactly the created Patient",
            [p.id for p in found])
    found = list(Patient.where(struct={"identifier": f"{system}|fc-{tag}"}).perform_resources_iter(srv))
    r.check([p.id for p in found] == [pid], "Patient.where(identifier=system|value) finds it", [p.id for p in found])

    read.birthDate = FHIRDate("1991-12-13")
    updated = read.update(srv)
    r.check(isinstance(updated, dict) and updated.get("birthDate") == "1991-12-13", "update(server) returns the new content",
            short(updated))
    again = Patient.read(pid, srv)
    r.check(again.birthDate.isostring == "1991-12-13", "read after update sees the change", again.birthDate.isostring)

    obs = Observation({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": 70.25, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    })
    created_obs = obs.create(srv)
    oid = created_obs.get("id") if isinstance(created_obs, dict) else None
    r.check(bool(oid), "Observation(...).create(server)", short(created_obs))
    found = list(Observation.where(struct={"patient": pid}).perform_resources_iter(srv))
    r.check([o.id for o in found] == [oid], "Observation.where(patient=id) finds it", [o.id for o in found])
    if found:
        r.check(found[0].valueQuantity.value == 70.25, "Observation value survives the round trip",
                found[0].valueQuantity.value)

    try:
        Patient.read(f"missing-{tag}", srv)
        r.fail("reading a missing Patient raises")
    except fhir_server.FHIRNotFoundException as err:
        body = err.response.json() if err.response is not None else None
        r.check(isinstance(body, dict) and body.get("resourceType") == "OperationOutcome",
                "reading a missing Patient raises FHIRNotFoundException with an OperationOutcome", short(body))

    anonymous = fhir_server.FHIRServer(None, base_uri=cfg["fhir"])
    try:
        Patient.read(pid, anonymous)
        r.fail("reading without a token is refused")
    except fhir_server.FHIRUnauthorizedException as err:
        r.ok(f"reading without a token raises FHIRUnauthorizedException ({err.response.status_code})")
    r.finish()


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as err:
        resp = getattr(err, "response", None)
        detail = f" (HTTP {resp.status_code}: {short(resp.text)})" if resp is not None else ""
        print(f"FAIL fhirclient: {type(err).__name__}: {err}{detail}")
        print("fhirclient: 0 passed, 1 failed")
        sys.exit(1)
