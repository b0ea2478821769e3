//! Behavioural tests of the FHIR API through the router (no sockets), on a
//! real SQLite store in a temporary directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test support code: a panic is a test failure with a message"
)]

mod api;
mod audit;
mod bundle;
mod consult;
mod identity;
mod monitor;
mod oauth;
mod policy;
mod policy_break_glass;
mod policy_consent;
mod policy_export;
mod policy_leaks;
mod registry;
mod search;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub struct T {
    pub router: Router,
    pub vigil: Arc<app::Vigil>,
    pub store: Arc<store_sqlite::SqliteStore>,
    pub dir: PathBuf,
    pub token: String,
}

impl Drop for T {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The diagnostics of an OperationOutcome, joined.
    pub fn diagnostics(&self) -> String {
        assert_eq!(
            self.body["resourceType"], "OperationOutcome",
            "expected an OperationOutcome: {}",
            self.body
        );
        self.body["issue"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["diagnostics"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

pub async fn setup() -> T {
    setup_with(app::Config::default()).await
}

pub async fn setup_with(config: app::Config) -> T {
    setup_clocked(config, Arc::new(model::SystemClock)).await
}

/// A server whose clock the test chooses (token lifetimes, expiry).
pub async fn setup_clocked(config: app::Config, clock: Arc<dyn model::Clock>) -> T {
    setup_full(config, clock, None).await
}

/// A server whose workforce signs in with a password alone (sessions for
/// the tests without second-factor ceremonies; the access policy still
/// counts workforce sign-ins as second-factor ones, as in production).
pub async fn setup_without_mfa() -> T {
    setup_full(
        app::Config::default(),
        Arc::new(model::SystemClock),
        Some(app::IdentityConfig {
            workforce_mfa: false,
            ..app::IdentityConfig::default()
        }),
    )
    .await
}

/// The one test server: SQLite in a fresh directory, a fresh key file, an
/// administrator account, and a backend-service token in `T::token`.
pub async fn setup_full(
    config: app::Config,
    clock: Arc<dyn model::Clock>,
    identity: Option<app::IdentityConfig>,
) -> T {
    let dir = std::env::temp_dir().join(format!(
        "vigil-web-it-{}",
        crypto::random_token()
            .replace(['-', '_'], "")
            .get(..12)
            .unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(
        store_sqlite::SqliteStore::open(
            &dir.join("vigil.db"),
            store_sqlite::SqliteOptions::default(),
        )
        .await
        .unwrap(),
    );
    store::Store::migrate(store.as_ref()).await.unwrap();
    let kf = crypto::KeyFile::generate();
    let source = crypto::KeyFileSource::Inline(kf.to_toml().unwrap());
    let dyn_store: Arc<dyn store::Store> = store.clone();
    let mut vigil = app::Vigil::open(dyn_store, &kf, source, clock, config)
        .await
        .unwrap();
    if let Some(identity) = identity {
        vigil.configure_identity(&kf, identity).unwrap();
    }
    let vigil = Arc::new(vigil);
    // An administrator account (some tests act as one).
    vigil
        .create_account(
            &app::Principal::Operator,
            app::NewAccount {
                username: "it-admin".into(),
                role: store::Role::Administrator,
                practitioner: None,
                patient: None,
                display_name: None,
                email: None,
            },
            None,
        )
        .await
        .unwrap();
    // The record-mechanics tests act as a backend service (system scopes, no
    // person, not decided by the relationship rules); the access-policy tests
    // sign people in with their own tokens.
    let token = vigil
        .issue_service_token(
            "system/*.cruds",
            3600,
            "http://vigil.test",
            "http://vigil.test/fhir",
        )
        .await
        .unwrap();
    let router = web::router(web::WebState {
        vigil: vigil.clone(),
        public_base: Some("http://vigil.test/fhir".into()),
        proxies: Default::default(),
    });
    T {
        router,
        vigil,
        store,
        dir,
        token,
    }
}

impl T {
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
        auth: bool,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if auth {
            b = b.header("authorization", format!("Bearer {}", self.token));
        }
        let has_ctype = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !has_ctype {
            b = b.header("content-type", "application/fhir+json");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_server_error() {
            eprintln!("5xx from {method} {uri}: {body}");
        }
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.call("GET", uri, None, &[], true).await
    }
    pub async fn post(&self, uri: &str, body: &Value) -> Resp {
        self.call(
            "POST",
            uri,
            Some(serde_json::to_vec(body).unwrap()),
            &[],
            true,
        )
        .await
    }
    pub async fn put(&self, uri: &str, body: &Value) -> Resp {
        self.call(
            "PUT",
            uri,
            Some(serde_json::to_vec(body).unwrap()),
            &[],
            true,
        )
        .await
    }
    pub async fn delete(&self, uri: &str) -> Resp {
        self.call("DELETE", uri, None, &[], true).await
    }

    /// Everything stored, for "nothing changed" checks.
    /// Everything stored but the audit trail (refused requests are
    /// recorded there by design; they must change nothing else).
    pub async fn snapshot(&self) -> Vec<String> {
        let mut out = Vec::new();
        store::Store::dump(self.store.as_ref(), &mut |r| {
            if !matches!(
                r,
                store::BackupRecord::AuditEntry { .. }
                    | store::BackupRecord::AuditTile(_)
                    | store::BackupRecord::AuditCheckpoint { .. }
                    | store::BackupRecord::AuditHead(_)
            ) {
                out.push(format!("{r:?}"));
            }
            Ok(())
        })
        .await
        .unwrap();
        out.sort();
        out
    }
}

pub fn patient(family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": format!("MRN-{family}")}],
        "name": [{"family": family, "given": ["Alex"]}],
        "gender": "female",
        "birthDate": "1980-05-17"
    })
}
