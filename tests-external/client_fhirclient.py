"""A real third-party FHIR client (SMART on FHIR's `fhirclient`) talking to Vigil.

Env: VIGIL_URL (http://localhost:PORT), VIGIL_TOKEN (an administrator's access token); for the
SMART launch also VIGIL_PATIENT_USER, VIGIL_PATIENT_PASSWORD, VIGIL_PATIENT_ID (a patient
account on that Patient), VIGIL_SMART_CLIENT and VIGIL_SMART_REDIRECT (a registered public app).

The first part uses a static bearer token: fhirclient sends every request through
`FHIRServer.session`, a requests.Session, and its own `auth` only signs headers after a SMART
OAuth2 dance, so the token goes on the session's default headers.

The second part is that dance: a standalone SMART App Launch with the authorisation-code grant
and PKCE (S256), which fhirclient 4.x does on its own (`_authorize_params` sends
`code_challenge`; `handle_callback` sends the `code_verifier`). We play the browser with
`requests`: sign in as the patient, approve the consent form, and hand the redirect to
`FHIRClient.handle_callback`.
"""

import html.parser
import http.cookiejar
import os
import random
import sys
import time
import urllib.parse
from importlib.metadata import version

import requests
from fhirclient import client as fhir_client
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

    try:
        smart_launch(cfg, r)
    except Exception as err:  # the first part's results still count
        resp = getattr(err, "response", None)
        detail = f" (HTTP {resp.status_code}: {short(resp.text)})" if resp is not None else ""
        r.fail(f"SMART launch: {type(err).__name__}: {err}{detail}")
    r.finish()


SMART_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"
TIMEOUT = 60


class Forms(html.parser.HTMLParser):
    """The forms of a page: id, action, method, and their inputs in order."""

    def __init__(self):
        super().__init__()
        self.forms = []
        self.errors = []
        self._in_error = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"id": a.get("id"), "action": a.get("action") or "", "method": (a.get("method") or "get").lower(),
                               "inputs": []})
        elif tag in ("input", "button", "select", "textarea") and self.forms:
            self.forms[-1]["inputs"].append({"tag": tag, **a})
        if tag == "p" and "error" in (a.get("class") or "").split():
            self._in_error = True
            self.errors.append("")

    def handle_endtag(self, tag):
        if tag == "p":
            self._in_error = False

    def handle_data(self, data):
        if self._in_error and self.errors:
            self.errors[-1] += data

    def form(self, form_id):
        return next((f for f in self.forms if f["id"] == form_id), None)


def parse_forms(text):
    p = Forms()
    p.feed(text)
    return p


_return_ok_secure = http.cookiejar.DefaultCookiePolicy.return_ok_secure


def _secure_ok_on_localhost(self, cookie, request):
    """Browsers send `Secure` cookies to http://localhost (a potentially trustworthy origin)."""
    if urllib.parse.urlsplit(request.get_full_url()).hostname == "localhost":
        return True
    return _return_ok_secure(self, cookie, request)


def browser_session():
    """A requests.Session that keeps cookies like a browser on http://localhost.

    Vigil's cookies are `__Host-…; Secure`, and Python's cookie jar sends Secure cookies only
    over https. A policy set on the session's jar would not help: requests merges cookies into
    a fresh jar with the default policy for every request, so the default policy is patched.
    """
    http.cookiejar.DefaultCookiePolicy.return_ok_secure = _secure_ok_on_localhost
    s = requests.Session()
    s.headers["User-Agent"] = "vigil-tests-external (fhirclient SMART launch)"
    return s


def form_fields(form, extra=None, checked_only=True):
    """What a browser would submit: hidden and text inputs, checked boxes, then `extra`."""
    fields = []
    for i in form["inputs"]:
        name = i.get("name")
        kind = (i.get("type") or "text").lower()
        if not name or i["tag"] == "button" or kind in ("submit", "button", "image", "reset"):
            continue
        if kind in ("checkbox", "radio") and checked_only and "checked" not in i:
            continue
        fields.append((name, i.get("value") if i.get("value") is not None else ("on" if kind == "checkbox" else "")))
    fields.extend(extra or [])
    return fields


def smart_launch(cfg, r):
    env = {k: os.environ.get(k) for k in ("VIGIL_PATIENT_USER", "VIGIL_PATIENT_PASSWORD", "VIGIL_PATIENT_ID",
                                          "VIGIL_SMART_CLIENT", "VIGIL_SMART_REDIRECT")}
    missing = [k for k, v in env.items() if not v]
    if missing:
        r.fail(f"SMART launch: not provisioned by the harness (missing {', '.join(missing)})")
        return
    started = time.monotonic()

    def lap(what):
        nonlocal started
        now = time.monotonic()
        print(f"time: {what}: {now - started:.2f}s", flush=True)
        started = now

    # What SMART App Launch 2.x servers publish; fhirclient itself reads only the
    # CapabilityStatement's oauth-uris extension.
    res = requests.get(cfg["fhir"] + "/.well-known/smart-configuration", headers={"Accept": "application/json"}, timeout=TIMEOUT)
    conf = res.json() if res.status_code == 200 else {}
    r.check(res.status_code == 200 and conf.get("authorization_endpoint") and conf.get("token_endpoint"),
            "GET [FHIR base]/.well-known/smart-configuration (where SMART apps look) names the endpoints",
            f"{res.status_code} {short(res.text)}")
    if not conf:
        res = requests.get(cfg["base"] + "/.well-known/smart-configuration", headers={"Accept": "application/json"}, timeout=TIMEOUT)
        conf = res.json() if res.status_code == 200 else {}
        print(f"(carrying on with {cfg['base']}/.well-known/smart-configuration: {res.status_code})")
    r.check("S256" in (conf.get("code_challenge_methods_supported") or []), "smart-configuration offers PKCE S256",
            conf.get("code_challenge_methods_supported"))
    r.check("plain" not in (conf.get("code_challenge_methods_supported") or []), "smart-configuration does not offer PKCE plain",
            conf.get("code_challenge_methods_supported"))

    settings = {
        "app_id": env["VIGIL_SMART_CLIENT"],
        "api_base": cfg["fhir"],
        "redirect_uri": env["VIGIL_SMART_REDIRECT"],
        "scope": SMART_SCOPE,
    }
    smart = fhir_client.FHIRClient(settings=settings)
    authorize_url = smart.authorize_url
    if not r.check(bool(authorize_url), "fhirclient finds the authorize endpoint in the CapabilityStatement (oauth-uris extension)",
                   "rest[0].security has no http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris extension"):
        if not conf.get("authorization_endpoint"):
            return
        # Carry on with the endpoints of smart-configuration, given to fhirclient as its saved state.
        smart = fhir_client.FHIRClient(state={
            "app_id": settings["app_id"], "scope": SMART_SCOPE, "redirect": settings["redirect_uri"],
            "server": {"base_uri": cfg["fhir"] + "/", "auth_type": "oauth2", "auth": {
                "app_id": settings["app_id"], "aud": cfg["fhir"], "redirect_uri": settings["redirect_uri"],
                "authorize_uri": conf["authorization_endpoint"], "token_uri": conf["token_endpoint"]}},
        })
        authorize_url = smart.authorize_url
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorize_url).query))
    r.check(query.get("code_challenge_method") == "S256" and len(query.get("code_challenge", "")) == 43,
            "fhirclient's authorize URL carries a PKCE S256 challenge", short(query))
    r.check(query.get("aud") == cfg["fhir"], "fhirclient's authorize URL names the FHIR base as aud", query.get("aud"))
    print(f"authorize URL: {authorize_url}")
    lap("discovery")

    # We are the browser.
    browser = browser_session()
    res = browser.get(authorize_url, timeout=TIMEOUT)
    if "/signin" in urllib.parse.urlsplit(res.url).path:
        r.ok(f"an unsigned visitor is sent to sign in ({urllib.parse.urlsplit(res.url).path})")
    else:
        r.fail(f"an unsigned visitor is sent to sign in: landed on {res.url} ({res.status_code})")
    forms = parse_forms(res.text)
    signin = forms.form("signin-form")
    if not r.check(signin is not None, "the sign-in page has form#signin-form", short(res.text)):
        return
    fields = [(k, v) for k, v in form_fields(signin) if k not in ("username", "password")]
    fields += [("username", env["VIGIL_PATIENT_USER"]), ("password", env["VIGIL_PATIENT_PASSWORD"])]
    action = urllib.parse.urljoin(res.url, signin["action"] or res.url)
    res = browser.post(action, data=fields, timeout=TIMEOUT)
    lap("patient sign-in")
    consent_page = res
    if parse_forms(res.text).form("consent-form") is None:
        # Some sign-in pages land on the account page: go back to the authorisation request.
        print(f"after sign-in: {res.status_code} {res.url}; asking /oauth/authorize again")
        consent_page = browser.get(authorize_url, timeout=TIMEOUT)
    forms = parse_forms(consent_page.text)
    consent = forms.form("consent-form")
    if not r.check(consent is not None, "signed in, /oauth/authorize shows form#consent-form",
                   f"{consent_page.status_code} {consent_page.url} errors={forms.errors} {short(consent_page.text)}"):
        return
    boxes = [i for i in consent["inputs"] if (i.get("type") or "").lower() == "checkbox"]
    offered = [i.get("value") for i in boxes]
    r.check("patient/*.rs" in offered or any((v or "").startswith("patient/") for v in offered),
            "the consent form offers the patient/ scopes", offered)
    # Approve everything offered (as a user ticking every box would).
    fields = [(k, v) for k, v in form_fields(consent, checked_only=False) if k != "decision"]
    fields.append(("decision", "approve"))
    action = urllib.parse.urljoin(consent_page.url, consent["action"] or consent_page.url)
    res = browser.post(action, data=fields, allow_redirects=False, timeout=TIMEOUT)
    location = res.headers.get("Location", "")
    callback = urllib.parse.urljoin(action, location)
    r.check(res.status_code == 303 and callback.startswith(env["VIGIL_SMART_REDIRECT"] + "?"),
            "approving answers 303 to the redirect URI", f"{res.status_code} Location={location} {short(res.text)}")
    cb = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))
    r.check(cb.get("code") and cb.get("state") == query.get("state"), "the redirect carries a code and our state", short(cb))
    lap("consent")

    # fhirclient exchanges the code with its code_verifier.
    smart.handle_callback(callback)
    r.check(smart.ready, "fhirclient.handle_callback exchanges the code for a token (PKCE verifier)", smart.launch_context)
    r.check(smart.patient_id == env["VIGIL_PATIENT_ID"], "the token response names the patient in context",
            f"{smart.patient_id} (launch context {short(smart.launch_context or {})})")
    r.check(bool(smart.server.auth.refresh_token), "offline_access brings a refresh token")
    granted = str((smart.launch_context or {}).get("scope", "")).split()
    r.check("patient/*.rs" in granted or any(s.startswith("patient/") for s in granted), "the granted scope has patient/ scopes",
            granted)
    lap("code exchange")

    me = Patient.read(env["VIGIL_PATIENT_ID"], smart.server)
    r.check(me.id == env["VIGIL_PATIENT_ID"], "Patient.read(id, client.server) with the launch token reads the patient", me.id)
    r.check(smart.patient is not None and smart.patient.id == env["VIGIL_PATIENT_ID"], "client.patient is that Patient")
    try:
        Patient.read("ext-not-this-patient", smart.server)
        r.fail("reading another patient with the patient's token is refused")
    except (fhir_server.FHIRPermissionDeniedException, fhir_server.FHIRNotFoundException) as err:
        r.ok(f"reading another patient with the patient's token is refused ({err.response.status_code})")
    lap("FHIR with the launch token")

    # The same code again: refused (single use).
    code_again = smart.server.session.post(conf.get("token_endpoint") or smart.server.auth._token_uri, data={
        "grant_type": "authorization_code", "code": cb.get("code"), "redirect_uri": env["VIGIL_SMART_REDIRECT"],
        "client_id": env["VIGIL_SMART_CLIENT"], "code_verifier": smart.server.auth.code_verifier or "x" * 43,
    }, timeout=TIMEOUT)
    r.check(code_again.status_code == 400 and "invalid_grant" in code_again.text, "the code cannot be exchanged twice",
            f"{code_again.status_code} {short(code_again.text)}")

    # A refresh gives a new access token that still reads the patient.
    old = smart.server.auth.access_token
    if smart.reauthorize():
        r.check(smart.server.auth.access_token != old, "fhirclient.reauthorize() rotates the access token with the refresh token")
        again = Patient.read(env["VIGIL_PATIENT_ID"], smart.server)
        r.check(again.id == env["VIGIL_PATIENT_ID"], "the refreshed token reads the patient")
    else:
        r.fail("fhirclient.reauthorize() with the refresh token")
    lap("refresh")


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
