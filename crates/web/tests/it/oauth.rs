//! OAuth 2 / SMART App Launch through the router: discovery, the
//! authorisation-code grant with PKCE and the consent screen, refresh-token
//! rotation, client credentials with an ES384 assertion, introspection,
//! revocation, and what `/fhir` does with good and bad credentials.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use app::{NewAccount, NewClient, Principal, SignInStep};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use model::{Clock, ResourceType, Timestamp};
use p384::pkcs8::EncodePrivateKey;
use serde_json::{Value, json};
use store::Role;

use crate::{Resp, T, patient, setup, setup_clocked};

const PW: &str = "correct horse battery staple 42";
const FHIR: &str = "http://vigil.test/fhir";
const TOKEN_URL: &str = "http://vigil.test/oauth/token";
const APP: &str = "demo-app";
const REDIRECT: &str = "https://app.example/callback";
const APP_SCOPE: &str = "launch/patient openid fhirUser offline_access patient/*.rs";
const VERIFIER: &str = "a-verifier-of-enough-entropy-0123456789-abcdefghijkl";

/// A clock that stands still until the test moves it.
struct ManualClock(AtomicI64);

impl ManualClock {
    fn advance_secs(&self, s: i64) {
        self.0.fetch_add(s * 1_000_000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

fn enc(s: &str) -> String {
    use std::fmt::Write as _;
    s.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    app::parse_query_string(q)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn location(r: &Resp) -> String {
    r.headers
        .get("location")
        .unwrap_or_else(|| panic!("no Location ({}): {}", r.status, r.body))
        .to_str()
        .unwrap()
        .to_owned()
}

fn html(r: &Resp) -> &str {
    r.body.as_str().unwrap_or("")
}

/// A signed-in patient (no second factor needed) and their Patient id.
struct User {
    cookie: String,
    csrf: String,
    patient: String,
}

impl User {
    fn cookie_header(&self) -> String {
        format!("{}={}", auth::session::COOKIE_NAME, self.cookie)
    }
}

async fn patient_user(t: &T, username: &str) -> User {
    let w = t
        .vigil
        .create(
            &Principal::Operator,
            ResourceType::Patient,
            patient("Okafor"),
        )
        .await
        .unwrap();
    let pid = w.current.id.to_string();
    t.vigil
        .create_account(
            &Principal::Operator,
            NewAccount {
                username: username.into(),
                role: Role::Patient,
                practitioner: None,
                patient: Some(model::ResourceId::new(pid.clone()).unwrap()),
                display_name: Some("Ada Okafor".into()),
                email: Some(format!("{username}@example.org")),
            },
            Some(PW),
        )
        .await
        .unwrap();
    let SignInStep::Done(s) = t
        .vigil
        .sign_in_password(username, PW, "10.0.0.9")
        .await
        .unwrap()
    else {
        panic!("a patient without a factor signs in with the password alone");
    };
    User {
        cookie: s.cookie,
        csrf: s.csrf,
        patient: pid,
    }
}

async fn public_app(t: &T) {
    t.vigil
        .add_client(
            &Principal::Operator,
            NewClient {
                client_id: APP.into(),
                name: "Demo <App>".into(),
                redirect_uris: vec![REDIRECT.into()],
                scope: APP_SCOPE.into(),
                jwks: None,
            },
        )
        .await
        .unwrap();
}

fn authorize_query(overrides: &[(&str, &str)]) -> String {
    let challenge = auth::pkce::challenge_s256(VERIFIER).unwrap();
    let mut fields = vec![
        ("response_type", "code".to_owned()),
        ("client_id", APP.to_owned()),
        ("redirect_uri", REDIRECT.to_owned()),
        ("scope", APP_SCOPE.to_owned()),
        ("state", "st-123".to_owned()),
        ("aud", FHIR.to_owned()),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256".to_owned()),
    ];
    for (k, v) in overrides {
        fields.retain(|(f, _)| f != k);
        if !v.is_empty() {
            fields.push((k, (*v).to_owned()));
        }
    }
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl T {
    async fn get_as(&self, uri: &str, cookie: &str) -> Resp {
        self.call("GET", uri, None, &[("cookie", cookie)], false)
            .await
    }

    async fn post_form(
        &self,
        uri: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
        h.extend_from_slice(headers);
        self.call("POST", uri, Some(form(fields)), &h, false).await
    }

    async fn fhir_as(&self, uri: &str, bearer: &str) -> Resp {
        let auth = format!("Bearer {bearer}");
        self.call("GET", uri, None, &[("authorization", &auth)], false)
            .await
    }
}

/// Walks the consent screen: returns the redirect with the code.
async fn consent(t: &T, user: &User, query: &str, decision: &str) -> Resp {
    let page = t
        .get_as(&format!("/oauth/authorize?{query}"), &user.cookie_header())
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let text = html(&page);
    assert!(text.contains("id=\"consent-title\""), "{text}");
    assert!(
        text.contains("Demo &lt;App&gt;"),
        "the app's name is escaped"
    );
    assert!(text.contains("id=\"consent-form\""));
    assert!(text.contains("name=\"scope\" value=\"patient/*.rs\" checked"));
    assert!(
        !text.contains("id=\"patient\""),
        "a patient is their own context"
    );
    let mut fields: Vec<(String, String)> = app::parse_query_string(query)
        .into_iter()
        .map(|(k, v)| {
            if k == "scope" {
                ("oauth_scope".into(), v)
            } else {
                (k, v)
            }
        })
        .collect();
    for s in APP_SCOPE.split(' ') {
        fields.push(("scope".into(), s.into()));
    }
    fields.push(("csrf".into(), user.csrf.clone()));
    fields.push(("decision".into(), decision.into()));
    let borrowed: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let cookie = user.cookie_header();
    t.post_form("/oauth/authorize", &borrowed, &[("cookie", &cookie)])
        .await
}

async fn code_for(t: &T, user: &User) -> String {
    let r = consent(t, user, &authorize_query(&[]), "approve").await;
    assert_eq!(r.status, 303, "{}", r.body);
    let to = location(&r);
    assert!(to.starts_with(REDIRECT), "{to}");
    assert_eq!(query_param(&to, "state").as_deref(), Some("st-123"));
    query_param(&to, "code").expect("a code")
}

async fn exchange(t: &T, code: &str, verifier: &str) -> Resp {
    t.post_form(
        "/oauth/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("client_id", APP),
        ],
        &[],
    )
    .await
}

#[tokio::test]
async fn discovery_and_metadata_name_the_oauth_endpoints() {
    let t = setup().await;
    let r = t
        .call("GET", "/.well-known/smart-configuration", None, &[], false)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(r.body["issuer"], "http://vigil.test");
    assert_eq!(r.body["token_endpoint"], TOKEN_URL);
    assert_eq!(
        r.body["authorization_endpoint"],
        "http://vigil.test/oauth/authorize"
    );
    assert_eq!(
        r.body["jwks_uri"],
        "http://vigil.test/.well-known/jwks.json"
    );
    assert_eq!(r.body["code_challenge_methods_supported"], json!(["S256"]));
    let caps = r.body["capabilities"].as_array().unwrap();
    assert!(caps.contains(&json!("launch-standalone")));
    assert!(caps.contains(&json!("client-confidential-asymmetric")));
    let at_base = t
        .call(
            "GET",
            "/fhir/.well-known/smart-configuration",
            None,
            &[],
            false,
        )
        .await;
    assert_eq!(at_base.status, 200, "discovery works at the FHIR base too");
    assert_eq!(at_base.body, r.body);
    let r = t
        .call("GET", "/.well-known/jwks.json", None, &[], false)
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.body["keys"].as_array().unwrap().is_empty());

    let r = t.call("GET", "/fhir/metadata", None, &[], false).await;
    assert_eq!(r.status, 200);
    let sec = &r.body["rest"][0]["security"];
    assert_eq!(sec["cors"], true);
    assert_eq!(sec["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let uris = &sec["extension"][0];
    assert_eq!(
        uris["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    let uri = |name: &str| {
        uris["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == name)
            .map(|e| e["valueUri"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        uri("authorize").as_deref(),
        Some("http://vigil.test/oauth/authorize")
    );
    assert_eq!(uri("token").as_deref(), Some(TOKEN_URL));
    assert_eq!(
        uri("introspect").as_deref(),
        Some("http://vigil.test/oauth/introspect")
    );
    assert_eq!(
        uri("revoke").as_deref(),
        Some("http://vigil.test/oauth/revoke")
    );
}

#[tokio::test]
async fn authorization_code_with_pkce_reads_the_record_once() {
    let t = setup().await;
    public_app(&t).await;
    let user = patient_user(&t, "ada.okafor").await;

    // Without a session, sign-in comes first and brings the user back.
    let q = authorize_query(&[]);
    let r = t
        .call("GET", &format!("/oauth/authorize?{q}"), None, &[], false)
        .await;
    assert_eq!(r.status, 303);
    let to = location(&r);
    assert!(
        to.starts_with("/signin?next=%2Foauth%2Fauthorize%3F"),
        "{to}"
    );
    assert_eq!(
        query_param(&to, "next").as_deref(),
        Some(format!("/oauth/authorize?{q}").as_str())
    );

    let code = code_for(&t, &user).await;
    let r = exchange(&t, &code, VERIFIER).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["pragma"], "no-cache");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["patient"], user.patient.as_str());
    assert!(r.body["refresh_token"].is_string());
    assert!(r.body["id_token"].is_string());
    let access = r.body["access_token"].as_str().unwrap().to_owned();

    let r = t
        .fhir_as(&format!("/fhir/Patient/{}", user.patient), &access)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], user.patient.as_str());

    // A code works once.
    let r = exchange(&t, &code, VERIFIER).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"], "invalid_grant");

    // The wrong verifier is refused (and the code is spent).
    let code = code_for(&t, &user).await;
    let r = exchange(
        &t,
        &code,
        "another-verifier-of-enough-entropy-0123456789-xyz",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"], "invalid_grant");
    let r = exchange(&t, &code, VERIFIER).await;
    assert_eq!(r.body["error"], "invalid_grant");

    // Repeated parameters and other content types are refused.
    let r = t
        .call(
            "POST",
            "/oauth/token",
            Some(b"grant_type=authorization_code&code=a&code=b".to_vec()),
            &[("content-type", "application/x-www-form-urlencoded")],
            false,
        )
        .await;
    assert_eq!(r.body["error"], "invalid_request");
    let r = t
        .call(
            "POST",
            "/oauth/token",
            Some(b"{\"grant_type\":\"client_credentials\"}".to_vec()),
            &[("content-type", "application/json")],
            false,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"], "invalid_request");
}

#[tokio::test]
async fn the_consent_screen_refuses_what_it_must() {
    let t = setup().await;
    public_app(&t).await;
    let user = patient_user(&t, "ada.okafor").await;
    let cookie = user.cookie_header();

    // Plain PKCE: the redirect URI is registered, so the app hears why.
    let r = t
        .get_as(
            &format!(
                "/oauth/authorize?{}",
                authorize_query(&[("code_challenge_method", "plain")])
            ),
            &cookie,
        )
        .await;
    assert_eq!(r.status, 303);
    let to = location(&r);
    assert!(to.starts_with(REDIRECT), "{to}");
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(query_param(&to, "state").as_deref(), Some("st-123"));
    // No PKCE at all: the same.
    let r = t
        .get_as(
            &format!(
                "/oauth/authorize?{}",
                authorize_query(&[("code_challenge_method", ""), ("code_challenge", "")])
            ),
            &cookie,
        )
        .await;
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("invalid_request")
    );

    // An unregistered redirect URI (or client) is never redirected to.
    for q in [
        authorize_query(&[("redirect_uri", "https://evil.example/cb")]),
        authorize_query(&[("client_id", "no-such-app")]),
    ] {
        let r = t.get_as(&format!("/oauth/authorize?{q}"), &cookie).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.headers.get("location").is_none());
        assert!(
            !html(&r).contains("evil.example"),
            "the page does not link there"
        );
    }

    // Deny: the app is told access_denied, with its state.
    let r = consent(&t, &user, &authorize_query(&[]), "deny").await;
    assert_eq!(r.status, 303);
    let to = location(&r);
    assert!(to.starts_with(REDIRECT));
    assert_eq!(query_param(&to, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(&to, "state").as_deref(), Some("st-123"));
    assert!(query_param(&to, "code").is_none());

    // A consent post without the CSRF token is refused.
    let q = authorize_query(&[]);
    let mut fields: Vec<(String, String)> = app::parse_query_string(&q);
    fields.push(("scope".into(), "patient/*.rs".into()));
    fields.push(("decision".into(), "approve".into()));
    let borrowed: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = t
        .post_form("/oauth/authorize", &borrowed, &[("cookie", &cookie)])
        .await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("location").is_none());
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_kills_the_family() {
    let t = setup().await;
    public_app(&t).await;
    let user = patient_user(&t, "ada.okafor").await;
    let code = code_for(&t, &user).await;
    let r = exchange(&t, &code, VERIFIER).await;
    let first = r.body["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: String| {
        let t = &t;
        async move {
            t.post_form(
                "/oauth/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("client_id", APP),
                ],
                &[],
            )
            .await
        }
    };
    let r = refresh(first.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let second = r.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let access = r.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        t.fhir_as(&format!("/fhir/Patient/{}", user.patient), &access)
            .await
            .status,
        200
    );
    // The old token again: refused, and the whole family with it.
    let r = refresh(first).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"], "invalid_grant");
    let r = refresh(second).await;
    assert_eq!(r.status, 400, "the newer token died with its family");
    assert_eq!(r.body["error"], "invalid_grant");
}

struct Service {
    der: Vec<u8>,
    jwks: Value,
}

fn service_key() -> Service {
    use rand::SeedableRng;
    let secret = p384::SecretKey::random(&mut rand::rngs::StdRng::seed_from_u64(7));
    let point =
        p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
    Service {
        der: secret.to_pkcs8_der().unwrap().as_bytes().to_vec(),
        jwks: json!({"keys": [{
            "kty": "EC",
            "crv": "P-384",
            "kid": "svc-1",
            "alg": "ES384",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }]}),
    }
}

fn assertion(t: &T, key: &Service, client: &str, jti: &str) -> String {
    let now = u64::try_from(t.vigil.now().0 / 1_000_000).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some("svc-1".into());
    jsonwebtoken::encode(
        &header,
        &json!({"iss": client, "sub": client, "aud": TOKEN_URL, "exp": now + 240, "jti": jti}),
        &jsonwebtoken::EncodingKey::from_ec_der(&key.der),
    )
    .unwrap()
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

async fn service_token(t: &T, key: &Service, jti: &str) -> Resp {
    let a = assertion(t, key, "backend", jti);
    t.post_form(
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a),
        ],
        &[],
    )
    .await
}

async fn introspect(t: &T, key: &Service, jti: &str, token: &str) -> Resp {
    let a = assertion(t, key, "backend", jti);
    t.post_form(
        "/oauth/introspect",
        &[
            ("token", token),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a),
        ],
        &[],
    )
    .await
}

#[tokio::test]
async fn backend_services_introspection_and_revocation() {
    let t = setup().await;
    public_app(&t).await;
    let user = patient_user(&t, "ada.okafor").await;
    let key = service_key();
    t.vigil
        .add_client(
            &Principal::Operator,
            NewClient {
                client_id: "backend".into(),
                name: "Nightly export".into(),
                redirect_uris: vec![],
                scope: "system/*.rs".into(),
                jwks: Some(key.jwks.clone()),
            },
        )
        .await
        .unwrap();

    let r = service_token(&t, &key, "jti-1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["scope"], "system/*.rs");
    assert!(r.body.get("refresh_token").is_none());
    let system = r.body["access_token"].as_str().unwrap().to_owned();
    let r = t
        .fhir_as(&format!("/fhir/Patient/{}", user.patient), &system)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The same assertion twice: replay.
    let r = service_token(&t, &key, "jti-1").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "invalid_client");
    // A public client cannot ask for client credentials.
    let r = t
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("scope", "system/*.rs"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.body["error"], "invalid_client");

    // Introspection: a live user token, then nonsense.
    let code = code_for(&t, &user).await;
    let tokens = exchange(&t, &code, VERIFIER).await;
    let access = tokens.body["access_token"].as_str().unwrap().to_owned();
    let r = introspect(&t, &key, "jti-2", &access).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["client_id"], APP);
    assert_eq!(r.body["patient"], user.patient.as_str());
    let r = introspect(&t, &key, "jti-3", "not-a-token").await;
    assert_eq!(r.body, json!({"active": false}));

    // Revocation by the app that holds the token: 200, then the token is dead.
    let r = t
        .post_form(
            "/oauth/revoke",
            &[("token", &access), ("client_id", APP)],
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.is_null(), "an empty body");
    let r = t
        .fhir_as(&format!("/fhir/Patient/{}", user.patient), &access)
        .await;
    assert_eq!(r.status, 401);
    let r = introspect(&t, &key, "jti-4", &access).await;
    assert_eq!(r.body["active"], false);
}

#[tokio::test]
async fn fhir_refuses_expired_tampered_and_foreign_tokens() {
    let start = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(start)));
    let t = setup_clocked(app::Config::default(), clock.clone()).await;
    let user = patient_user(&t, "ada.okafor").await;
    let read = format!("/fhir/Patient/{}", user.patient);
    let token = t
        .vigil
        .issue_operator_token("ada.okafor", "patient/*.rs", 300, "http://vigil.test", FHIR)
        .await
        .unwrap();
    assert_eq!(t.fhir_as(&read, &token).await.status, 200);

    // Tampered: one character of the payload changed.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
    parts[1].pop();
    parts[1].push(flipped);
    let r = t.fhir_as(&read, &parts.join(".")).await;
    assert_eq!(r.status, 401);
    assert!(r.headers.contains_key("www-authenticate"));

    // Another server's audience.
    let foreign = t
        .vigil
        .issue_operator_token(
            "ada.okafor",
            "patient/*.rs",
            300,
            "http://other.test",
            "http://other.test/fhir",
        )
        .await
        .unwrap();
    assert_eq!(t.fhir_as(&read, &foreign).await.status, 401);

    // No credentials at all.
    assert_eq!(t.call("GET", &read, None, &[], false).await.status, 401);

    // The session cookie works only with its CSRF token in X-CSRF-Token.
    let cookie = user.cookie_header();
    let r = t
        .call("GET", &read, None, &[("cookie", &cookie)], false)
        .await;
    assert_eq!(r.status, 403);
    let r = t
        .call(
            "GET",
            &read,
            None,
            &[("cookie", &cookie), ("x-csrf-token", "wrong")],
            false,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = t
        .call(
            "GET",
            &read,
            None,
            &[("cookie", &cookie), ("x-csrf-token", &user.csrf)],
            false,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Expired: past its lifetime and any leeway.
    clock.advance_secs(300 + 120);
    assert_eq!(t.fhir_as(&read, &token).await.status, 401);
}

#[tokio::test]
async fn the_record_browser_needs_a_session_and_carries_its_csrf_token() {
    let t = setup().await;
    let r = t.call("GET", "/", None, &[], false).await;
    assert_eq!(r.status, 303);
    assert_eq!(location(&r), "/signin?next=%2F");
    let user = patient_user(&t, "ada.okafor").await;
    let r = t.get_as("/", &user.cookie_header()).await;
    assert_eq!(r.status, 200);
    let page = html(&r);
    assert!(page.contains(&format!(
        "<meta name=\"csrf-token\" content=\"{}\">",
        user.csrf
    )));
    assert!(page.contains("id=\"search-form\""));
    assert!(
        page.contains("id=\"signout\""),
        "the navigation bar signs out"
    );
    assert!(page.contains("Signed in as ada.okafor"));
    assert!(!page.contains("{{"), "no placeholder is left");
    // Not an administrator: the admin pages are closed.
    let r = t.get_as("/admin/users", &user.cookie_header()).await;
    assert_eq!(r.status, 403);
    let r = t.call("GET", "/admin/users", None, &[], false).await;
    assert_eq!(r.status, 303);
    assert_eq!(location(&r), "/signin?next=%2Fadmin%2Fusers");
}

/// An administrator with TOTP enrolled through the façade, signed in.
async fn admin_session(t: &T) -> (String, String) {
    t.vigil
        .create_account(
            &Principal::Operator,
            NewAccount {
                username: "web-admin".into(),
                role: Role::Administrator,
                practitioner: None,
                patient: None,
                display_name: None,
                email: Some("web-admin@example.org".into()),
            },
            Some(PW),
        )
        .await
        .unwrap();
    let SignInStep::Enrol { pending, .. } = t
        .vigil
        .sign_in_password("web-admin", PW, "10.0.0.8")
        .await
        .unwrap()
    else {
        panic!("an administrator without a factor must enrol one");
    };
    let a = t.vigil.enrolling_account(&pending).await.unwrap();
    let (b32, _, ceremony) = t.vigil.totp_enrol_start(&a).await.unwrap();
    let (mut buf, mut bits, mut secret) = (0u32, 0u32, Vec::new());
    for c in b32.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
            .iter()
            .position(|a| *a == c)
            .unwrap() as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            secret.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    let secret = auth::totp::TotpSecret::from_bytes(secret.try_into().unwrap());
    let cfg = auth::totp::TotpConfig::default();
    let now = u64::try_from(t.vigil.now().0 / 1_000_000).unwrap();
    let code = cfg
        .code_at_step(&secret, cfg.step(now))
        .unwrap()
        .to_string();
    t.vigil
        .totp_enrol_finish(&a, &ceremony, &code)
        .await
        .unwrap();
    let s = t.vigil.finish_enrolment_sign_in(&pending).await.unwrap();
    (
        format!("{}={}", auth::session::COOKIE_NAME, s.cookie),
        s.csrf,
    )
}

#[tokio::test]
async fn administrators_manage_users_apps_and_read_the_outbox() {
    let t = setup().await;
    let (cookie, csrf) = admin_session(&t).await;
    let h = [("cookie", cookie.as_str())];

    let r = t.get_as("/admin/users", &cookie).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let page = html(&r);
    assert!(page.contains("id=\"users\""));
    assert!(page.contains("web-admin"));
    assert!(page.contains("TOTP: yes"));
    for role in Role::ALL {
        assert!(page.contains(&format!("<option value=\"{}\">", role.as_str())));
    }

    // Add a nurse: an enrolment link goes to the outbox.
    let add = [
        ("csrf", csrf.as_str()),
        ("username", "nurse.<b>"),
        ("role", "nurse"),
        ("practitioner", ""),
        ("patient", ""),
        ("display_name", "Nina"),
        ("email", "nina@example.org"),
    ];
    let r = t.post_form("/admin/users", &add, &h).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(location(&r), "/admin/users?added=1");
    let r = t.get_as("/admin/users?added=1", &cookie).await;
    let page = html(&r);
    assert!(page.contains("id=\"flash\""));
    assert!(page.contains("nurse.&lt;b&gt;"), "user names are escaped");
    assert!(!page.contains("nurse.<b>"));
    // The same name again: refused on the page, not a server error.
    let r = t.post_form("/admin/users", &add, &h).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(html(&r).contains("already taken"));
    // Without the CSRF token: 403, nothing added.
    let r = t
        .post_form(
            "/admin/users",
            &[
                ("username", "someone"),
                ("role", "nurse"),
                ("email", "s@example.org"),
            ],
            &h,
        )
        .await;
    assert_eq!(r.status, 403);

    let r = t.get_as("/admin/outbox", &cookie).await;
    assert_eq!(r.status, 200);
    let page = html(&r);
    assert!(page.contains("class=\"message card\""));
    assert!(page.contains("<span class=\"to\">nina@example.org</span>"));
    assert!(
        page.contains("http://vigil.test/enrol/"),
        "the link names the site"
    );

    // Deactivate the nurse through the row's form.
    let nurse = t.vigil.account_by_username("nurse.<b>").await.unwrap();
    let r = t
        .post_form(
            &format!("/admin/users/{}/deactivate", nurse.id),
            &[("csrf", &csrf)],
            &h,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        !t.vigil
            .account_by_username("nurse.<b>")
            .await
            .unwrap()
            .active
    );

    // Apps: register, list, revoke.
    let r = t
        .post_form(
            "/admin/clients",
            &[
                ("csrf", &csrf),
                ("client_id", "growth-charts"),
                ("name", "Growth charts"),
                (
                    "redirect_uris",
                    "https://charts.example/cb\r\nhttp://localhost:9000/cb\r\n",
                ),
                ("scope", "launch/patient openid fhirUser patient/*.rs"),
                ("jwks", ""),
            ],
            &h,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let r = t.get_as("/admin/clients", &cookie).await;
    let page = html(&r);
    assert!(page.contains("id=\"clients\""));
    assert!(page.contains("growth-charts"));
    assert!(page.contains("http://localhost:9000/cb"));
    let r = t
        .post_form(
            "/admin/clients",
            &[
                ("csrf", &csrf),
                ("client_id", "bad"),
                ("name", "Bad"),
                ("redirect_uris", "http://evil.example/cb"),
                ("scope", "patient/*.rs"),
            ],
            &h,
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(html(&r).contains("redirect URIs must be https"));
    let r = t
        .post_form(
            "/admin/clients/growth-charts/revoke",
            &[("csrf", &csrf)],
            &h,
        )
        .await;
    assert_eq!(r.status, 303);
    let listed = t.vigil.list_clients(&Principal::Operator).await.unwrap();
    assert!(
        !listed
            .iter()
            .find(|c| c.client_id == "growth-charts")
            .unwrap()
            .active
    );
}

#[tokio::test]
async fn managing_users_needs_a_recent_sign_in() {
    let start = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(start)));
    let t = setup_clocked(app::Config::default(), clock.clone()).await;
    let (cookie, csrf) = admin_session(&t).await;
    let h = [("cookie", cookie.as_str())];
    let add = |name: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("username", name.to_owned()),
            ("role", "nurse".to_owned()),
            ("email", format!("{name}@example.org")),
        ]
    };
    let form = add("nurse.one");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(t.post_form("/admin/users", &form, &h).await.status, 303);
    // Still active (under the 15-minute idle timeout), but the sign-in is 16 minutes old.
    for _ in 0..4 {
        clock.advance_secs(4 * 60);
        assert_eq!(t.get_as("/admin/users", &cookie).await.status, 200);
    }
    let form = add("nurse.two");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = t.post_form("/admin/users", &form, &h).await;
    assert_eq!(r.status, 303);
    assert!(
        location(&r).starts_with("/signin?reauth=1&next="),
        "{}",
        location(&r)
    );
    assert!(
        t.vigil.account_by_username("nurse.two").await.is_err(),
        "nothing done"
    );
    // The sign-in page shows the form (not a redirect to the account page).
    let r = t.get_as(&location(&r), &cookie).await;
    assert_eq!(r.status, 200);
    assert!(html(&r).contains("id=\"reauth\""));
}
