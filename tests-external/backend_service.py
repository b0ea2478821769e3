"""A SMART backend service against Vigil: client credentials with a signed ES384 assertion.

Env: VIGIL_URL (http://localhost:PORT), VIGIL_TOKEN, and VIGIL_BIN with the server's own
VIGIL_* settings (data directory, public URL) to register the client with `vigil client add`.

The script makes an EC P-384 key (PyPI `cryptography`), registers its public JWK Set as client
`ext-backend` with scope `system/*.rs`, signs client assertions with PyJWT (RFC 7523:
iss = sub = client_id, aud = the token URL, a random jti, a short exp), and checks the token
endpoint, the FHIR API, introspection (RFC 7662) and revocation (RFC 7009).
"""

import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from vigil_common import Reporter, config, short

CLIENT_ID = "ext-backend"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TIMEOUT = 60


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def public_jwk(key, kid):
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC", "crv": "P-384", "kid": kid, "alg": "ES384", "use": "sig",
        "x": b64url(numbers.x.to_bytes(48, "big")),
        "y": b64url(numbers.y.to_bytes(48, "big")),
    }


def assertion(key, kid, token_url, lifetime=240, client_id=CLIENT_ID):
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "jti": secrets.token_hex(16),
              "iat": now, "exp": now + lifetime}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": kid, "typ": "JWT"})


def describe(res):
    return f"{res.status_code} {short(res.text)}"


def json_of(res):
    try:
        return res.json()
    except ValueError:
        return None


class Timer:
    """Prints how long each step took (never asserted on)."""

    def __init__(self):
        self.last = time.monotonic()

    def lap(self, what):
        now = time.monotonic()
        print(f"time: {what}: {now - self.last:.2f}s", flush=True)
        self.last = now


def discover(cfg, r):
    """The token, introspection and revocation URLs from .well-known/smart-configuration."""
    tried = []
    for url in (cfg["fhir"] + "/.well-known/smart-configuration", cfg["base"] + "/.well-known/smart-configuration"):
        res = requests.get(url, headers={"Accept": "application/json"}, timeout=TIMEOUT)
        tried.append(f"{url}: {describe(res)}")
        body = json_of(res)
        if res.status_code == 200 and isinstance(body, dict) and body.get("token_endpoint"):
            r.ok(f"GET {url} names the token endpoint {body['token_endpoint']}")
            methods = body.get("token_endpoint_auth_methods_supported") or []
            r.check("private_key_jwt" in methods, "smart-configuration offers private_key_jwt", methods)
            algs = body.get("token_endpoint_auth_signing_alg_values_supported") or []
            r.check("ES384" in algs, "smart-configuration offers ES384 assertions", algs)
            caps = body.get("capabilities") or []
            r.check("client-confidential-asymmetric" in caps, "smart-configuration lists client-confidential-asymmetric", caps)
            base = cfg["base"]
            return (body["token_endpoint"],
                    body.get("introspection_endpoint") or base + "/oauth/introspect",
                    body.get("revocation_endpoint") or base + "/oauth/revoke")
    r.fail("smart-configuration with a token_endpoint: " + "; ".join(tried))
    return None


def register(cfg, r, jwks_path):
    """`vigil client add` with the public JWK Set, run with the server's settings."""
    bin_path = os.environ.get("VIGIL_BIN")
    if not bin_path:
        r.fail("register the backend client: VIGIL_BIN is not set (run through `cargo xtask ext`)")
        return False
    cmd = [bin_path, "client", "add", "--client-id", CLIENT_ID, "--name", "Backend",
           "--scope", "system/*.rs", "--jwks-file", jwks_path]
    print("$ " + " ".join(cmd), flush=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=os.environ.copy())
    except (OSError, subprocess.TimeoutExpired) as err:
        r.fail(f"vigil client add: {err}")
        return False
    return r.check(done.returncode == 0, "vigil client add --jwks-file registers the backend client",
                   f"exit {done.returncode}; stdout {short(done.stdout)}; stderr {short(done.stderr)}")


def token_request(token_url, client_assertion, scope="system/Patient.rs"):
    return requests.post(token_url, data={
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion,
    }, headers={"Accept": "application/json"}, timeout=TIMEOUT)


def fhir_get(cfg, path, token):
    return requests.get(cfg["fhir"] + path, headers={"Authorization": f"Bearer {token}",
                                                       "Accept": "application/fhir+json"}, timeout=TIMEOUT)


def main():
    cfg = config()
    r = Reporter("backend service")
    t = Timer()
    print(f"client: requests {version('requests')}, PyJWT {version('PyJWT')}, cryptography {version('cryptography')} against {cfg['base']}")

    key = ec.generate_private_key(ec.SECP384R1())
    kid = "ext-" + secrets.token_hex(4)
    workdir = tempfile.mkdtemp(prefix="vigil-backend-")
    jwks_path = os.path.join(workdir, "jwks.json")
    with open(jwks_path, "w", encoding="utf-8") as f:
        json.dump({"keys": [public_jwk(key, kid)]}, f)
    print(f"public JWK Set: {jwks_path}")

    endpoints = discover(cfg, r)
    t.lap("discovery")
    if not endpoints or not register(cfg, r, jwks_path):
        r.finish()
    token_url, introspect_url, revoke_url = endpoints
    t.lap("registration")

    # The grant.
    first = assertion(key, kid, token_url)
    res = token_request(token_url, first)
    body = json_of(res) or {}
    if not r.check(res.status_code == 200 and body.get("access_token"), "client_credentials with a signed assertion returns a token",
                   describe(res)):
        r.finish()
    token = body["access_token"]
    r.check(str(body.get("token_type", "")).lower() == "bearer", "token_type is Bearer", body.get("token_type"))
    r.check("system/Patient.rs" in str(body.get("scope", "")).split(), "the granted scope is system/Patient.rs", body.get("scope"))
    r.check(isinstance(body.get("expires_in"), int) and 0 < body["expires_in"] <= 3600, "expires_in is at most an hour",
            body.get("expires_in"))
    r.check("refresh_token" not in body, "no refresh token for a backend service", short(body))
    t.lap("token")

    res = fhir_get(cfg, "/Patient?_count=5", token)
    bundle = json_of(res) or {}
    r.check(res.status_code == 200 and bundle.get("resourceType") == "Bundle", "GET /fhir/Patient with the token: 200 Bundle",
            describe(res))
    write = requests.post(cfg["fhir"] + "/Patient", json={"resourceType": "Patient", "name": [{"family": "Backend"}]},
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}, timeout=TIMEOUT)
    r.check(write.status_code == 403, "POST /fhir/Patient with a read-only system scope is refused 403", describe(write))
    t.lap("FHIR with the token")

    # Refusals at the token endpoint.
    res = token_request(token_url, first)
    r.check(res.status_code == 401 and (json_of(res) or {}).get("error") == "invalid_client",
            "replaying the same assertion is refused 401 invalid_client", describe(res))
    res = token_request(token_url, assertion(key, kid, token_url, lifetime=3600))
    r.check(res.status_code in (400, 401) and (json_of(res) or {}).get("error") == "invalid_client",
            "an assertion expiring in an hour (over the 5-minute limit) is refused", describe(res))
    other = ec.generate_private_key(ec.SECP384R1())
    res = token_request(token_url, assertion(other, kid, token_url))
    r.check(res.status_code == 401 and (json_of(res) or {}).get("error") == "invalid_client",
            "an assertion signed by an unregistered key is refused 401", describe(res))
    res = token_request(token_url, assertion(key, kid, cfg["base"] + "/somewhere-else"))
    r.check(res.status_code == 401, "an assertion for another audience is refused 401", describe(res))
    res = token_request(token_url, assertion(key, kid, token_url), scope="system/Patient.cruds")
    r.check(res.status_code == 400 and (json_of(res) or {}).get("error") == "invalid_scope",
            "a scope beyond the registration is refused 400 invalid_scope", describe(res))
    t.lap("token refusals")

    # A tampered token: one character of the signature changed.
    head, payload, sig = token.split(".")
    i = len(sig) // 2
    sig2 = sig[:i] + ("A" if sig[i] != "A" else "B") + sig[i + 1:]
    res = fhir_get(cfg, "/Patient?_count=1", f"{head}.{payload}.{sig2}")
    r.check(res.status_code == 401, "a token with a tampered signature is refused 401", describe(res))
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "system/*.cruds"
    forged = b64url(json.dumps(claims).encode())
    res = fhir_get(cfg, "/Patient?_count=1", f"{head}.{forged}.{sig}")
    r.check(res.status_code == 401, "a token with a widened scope in its payload is refused 401", describe(res))

    # Introspection with a fresh assertion.
    res = requests.post(introspect_url, data={
        "token": token, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(key, kid, token_url),
    }, headers={"Accept": "application/json"}, timeout=TIMEOUT)
    info = json_of(res) or {}
    r.check(res.status_code == 200 and info.get("active") is True, "introspection says active: true", describe(res))
    r.check(info.get("client_id") == CLIENT_ID and "system/Patient.rs" in str(info.get("scope", "")).split(),
            "introspection names the client and the scope", short(info))
    res = requests.post(introspect_url, data={"token": token}, headers={"Accept": "application/json"}, timeout=TIMEOUT)
    r.check(res.status_code == 401, "introspection without client authentication is refused 401", describe(res))
    t.lap("introspection")

    # Revocation, then the token no longer works.
    res = requests.post(revoke_url, data={
        "token": token, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(key, kid, token_url),
    }, timeout=TIMEOUT)
    r.check(res.status_code == 200, "revocation answers 200", describe(res))
    res = fhir_get(cfg, "/Patient?_count=1", token)
    r.check(res.status_code == 401, "after revocation GET /fhir/Patient is refused 401", describe(res))
    res = requests.post(introspect_url, data={
        "token": token, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(key, kid, token_url),
    }, headers={"Accept": "application/json"}, timeout=TIMEOUT)
    r.check(res.status_code == 200 and (json_of(res) or {}).get("active") is False,
            "after revocation introspection says active: false", describe(res))
    t.lap("revocation")
    r.finish()


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as err:  # report, never hide, what broke
        print(f"FAIL backend service: {type(err).__name__}: {err}")
        print("backend service: 0 passed, 1 failed")
        sys.exit(1)
