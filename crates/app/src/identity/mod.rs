//! Identity: accounts, sign-in with passwords and second factors, sessions,
//! access tokens, OAuth clients and the outbox.
//!
//! Architecture Invariant: the pure rules (password policy, hashing, TOTP,
//! throttling, tokens, scopes) live in the `auth` crate; this module only
//! orders them, keeps their state in the store and seals what is private.
//! No answer here tells an unknown user name from a wrong password: both are
//! [`SignInError::Refused`] after the same Argon2 work.

mod accounts;
mod oauth;
mod outbox;
pub(crate) mod signin;
mod tokens;

use std::sync::{Arc, Mutex};

use auth::hash::{HashConfig, Pepper};
use auth::password::PasswordPolicy;
use auth::scope::ScopeSet;
use auth::session::{CsrfKey, SessionPolicy};
use auth::throttle::ThrottlePolicy;
use auth::token::TokenKey;
use model::{KeyOwner, ResourceId};
use serde::{Deserialize, Serialize};
use store::{AccountId, Role};

use crate::{AppError, Vigil};

pub use accounts::{AccountSummary, AccountView, NewAccount, PasskeyView};
pub use oauth::{
    AuthorizeRequest, ClientSummary, ConsentView, Endpoints, NewClient, OAuthError, TokenRequest,
};
pub use outbox::{Mailer, OutboxView};
pub use signin::{NewSession, SessionProblem, SessionView, SignInError, SignInStep};
pub use tokens::OPERATOR_CLIENT;

/// The `[identity]` settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Shortest password for an account without a second factor (NIST floor 15).
    pub password_min_length: usize,
    /// Shortest password for an account with a second factor (NIST floor 8).
    pub password_min_length_with_mfa: usize,
    /// Longest accepted password, in code points (at least 64).
    pub password_max_length: usize,
    /// Workforce accounts (everyone but patients) must have a second factor.
    pub workforce_mfa: bool,
    /// Roles that must sign in with a passkey (phishing-resistant), e.g.
    /// `["administrator", "privacy-officer"]`.
    pub passkey_required_roles: Vec<String>,
    /// Workforce sessions end after this many seconds without a request.
    pub session_idle_seconds: u64,
    /// Every session ends this many seconds after sign-in.
    pub session_absolute_seconds: u64,
    pub patient_session_idle_seconds: u64,
    /// Lifetime of OAuth access tokens (at most 60).
    pub access_token_minutes: u64,
    /// Lifetime of refresh tokens with `offline_access`.
    pub refresh_token_days: u64,
    /// `vigil token issue` works; switch off in production if unused.
    pub operator_tokens: bool,
    /// The organisation's name: shown on pages, refused inside passwords.
    pub organisation: String,
    /// Argon2id memory in KiB (at least 19456), iterations (at least 2), lanes.
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_lanes: u32,
}

impl Default for IdentityConfig {
    fn default() -> IdentityConfig {
        IdentityConfig {
            password_min_length: 15,
            password_min_length_with_mfa: 12,
            password_max_length: 128,
            workforce_mfa: true,
            passkey_required_roles: Vec::new(),
            session_idle_seconds: 15 * 60,
            session_absolute_seconds: 12 * 3600,
            patient_session_idle_seconds: 30 * 60,
            access_token_minutes: 15,
            refresh_token_days: 30,
            operator_tokens: true,
            organisation: String::new(),
            argon2_memory_kib: auth::hash::OWASP_M_KIB,
            argon2_iterations: auth::hash::OWASP_T,
            argon2_lanes: auth::hash::OWASP_P,
        }
    }
}

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A first-party browser session.
    Session,
    /// An OAuth access token (`jti` identifies it for revocation).
    Token { jti: String },
    /// A token an operator issued with `vigil token issue`.
    OperatorToken { jti: String },
}

/// An authenticated user or backend service.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None` for a backend service (client credentials).
    pub account: Option<AccountId>,
    pub role: Option<Role>,
    pub username: Option<String>,
    /// The OAuth client acting, `None` for the first-party web pages.
    pub client_id: Option<String>,
    /// The ceiling on what the caller may do (the access policy decides within it).
    pub scopes: ScopeSet,
    /// The patient in context (`patient/` scopes): a patient's own record, or
    /// the patient chosen at an app launch.
    pub patient: Option<ResourceId>,
    pub via: Via,
    /// The Practitioner a workforce account is linked to (its relationships
    /// with patients come from the records that name this Practitioner).
    pub practitioner: Option<ResourceId>,
    /// The Patient a patient account is (its own record).
    pub own_patient: Option<ResourceId>,
    /// The person signed in with a second factor (workforce sign-in requires
    /// one; tokens carry the sign-in's assurance).
    pub mfa: bool,
}

/// The secrets and rules of identity, built once from the key file.
pub(crate) struct Identity {
    pub(crate) cfg: IdentityConfig,
    pub(crate) policy: PasswordPolicy,
    pub(crate) hash: HashConfig,
    pub(crate) pepper: Pepper,
    pub(crate) csrf: CsrfKey,
    pub(crate) token_key: TokenKey,
    pub(crate) id_token_key: auth::idtoken::IdTokenKey,
    pub(crate) factor_throttle: ThrottlePolicy,
    pub(crate) address_throttle: ThrottlePolicy,
    pub(crate) workforce_sessions: SessionPolicy,
    pub(crate) patient_sessions: SessionPolicy,
    pub(crate) passkey_required: Vec<Role>,
    /// Relying parties by origin (`http://localhost:8080`), built on demand.
    passkeys: Mutex<Vec<(String, Arc<passkey::Passkeys>)>>,
}

/// Most relying-party origins kept built at once.
const PASSKEY_ORIGINS: usize = 8;

fn config_err(e: impl std::fmt::Display) -> AppError {
    AppError::Keys(format!("identity configuration: {e}"))
}

impl Identity {
    pub(crate) fn new(kf: &crypto::KeyFile, cfg: IdentityConfig) -> Result<Identity, AppError> {
        let keys = kf.identity().ok_or_else(|| {
            AppError::Keys(
                "the key file has no [identity] table; load it from a path once to add one".into(),
            )
        })?;
        let policy = PasswordPolicy::new(
            cfg.password_min_length,
            cfg.password_min_length_with_mfa,
            cfg.password_max_length,
        )
        .map_err(config_err)?;
        let hash = HashConfig::new(
            cfg.argon2_memory_kib,
            cfg.argon2_iterations,
            cfg.argon2_lanes,
        )
        .map_err(config_err)?;
        let secs = std::time::Duration::from_secs;
        let workforce_sessions = SessionPolicy::new(
            secs(cfg.session_idle_seconds),
            secs(cfg.session_absolute_seconds),
        )
        .map_err(config_err)?;
        let patient_sessions = SessionPolicy::new(
            secs(cfg.patient_session_idle_seconds),
            secs(cfg.session_absolute_seconds),
        )
        .map_err(config_err)?;
        if cfg.access_token_minutes == 0 || cfg.access_token_minutes > 60 {
            return Err(config_err("access_token_minutes must be 1 to 60"));
        }
        let passkey_required = cfg
            .passkey_required_roles
            .iter()
            .map(|r| Role::parse(r).ok_or_else(|| config_err(format!("unknown role {r}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let id_token_key = auth::idtoken::IdTokenKey::from_seed(keys.signing.expose())
            .map_err(|e| AppError::Keys(format!("id_token key: {e}")))?;
        Ok(Identity {
            policy,
            hash,
            pepper: Pepper::from_bytes(*keys.pepper.expose()),
            csrf: CsrfKey::from_bytes(*keys.session.expose()),
            token_key: TokenKey::from_bytes(*keys.token.expose()),
            id_token_key,
            factor_throttle: ThrottlePolicy::default(),
            // Addresses get more room (a clinic's users share one NAT address)
            // but are never disabled: that would let one attacker lock out a
            // whole site.
            address_throttle: ThrottlePolicy::new(20, 1, 5 * 60, auth::throttle::NIST_MAX_FAILURES)
                .map_err(config_err)?,
            workforce_sessions,
            patient_sessions,
            passkey_required,
            passkeys: Mutex::new(Vec::new()),
            cfg,
        })
    }

    /// The WebAuthn relying party for `origin` (the page's scheme, host and port).
    pub(crate) fn passkeys(&self, origin: &str) -> Result<Arc<passkey::Passkeys>, AppError> {
        let mut cache = self
            .passkeys
            .lock()
            .map_err(|_| AppError::Keys("passkey cache poisoned".into()))?;
        if let Some((_, p)) = cache.iter().find(|(o, _)| o == origin) {
            return Ok(Arc::clone(p));
        }
        let rp_id = rp_id_of(origin)
            .ok_or_else(|| AppError::bad_request(fhir::IssueCode::Invalid, "bad origin"))?;
        let built = Arc::new(
            passkey::Passkeys::new(&rp_id, origin, "Vigil")
                .map_err(|e| AppError::bad_request(fhir::IssueCode::Invalid, e.to_string()))?,
        );
        if cache.len() >= PASSKEY_ORIGINS {
            cache.remove(0);
        }
        cache.push((origin.to_owned(), Arc::clone(&built)));
        Ok(built)
    }

    pub(crate) fn session_policy(&self, role: Role) -> SessionPolicy {
        if role == Role::Patient {
            self.patient_sessions
        } else {
            self.workforce_sessions
        }
    }

    pub(crate) fn needs_mfa(&self, role: Role) -> bool {
        self.cfg.workforce_mfa && role != Role::Patient
    }

    pub(crate) fn needs_passkey(&self, role: Role) -> bool {
        self.passkey_required.contains(&role)
    }
}

/// The host of an origin (`http://localhost:8080` → `localhost`).
fn rp_id_of(origin: &str) -> Option<String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))?;
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        rest.split(':').next()?
    };
    (!host.is_empty() && !rest.contains('/')).then(|| host.to_ascii_lowercase())
}

/// 32 random lowercase hex digits.
pub(crate) fn random_hex() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex(&b)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A random secret for a link or a pending step, and the hash it is stored under.
pub(crate) fn new_secret() -> (String, [u8; 32]) {
    let token = crypto::random_token();
    let hash = crypto::token_hash(&token);
    (token, hash)
}

/// Unix seconds of a timestamp (never negative).
pub(crate) fn unix(t: model::Timestamp) -> u64 {
    u64::try_from(t.0 / 1_000_000).unwrap_or(0)
}

pub(crate) fn from_unix(secs: u64) -> model::Timestamp {
    model::Timestamp(i64::try_from(secs).unwrap_or(i64::MAX / 1_000_000) * 1_000_000)
}

pub(crate) fn plus_secs(t: model::Timestamp, secs: u64) -> model::Timestamp {
    model::Timestamp(
        t.0.saturating_add(
            i64::try_from(secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000),
        ),
    )
}

impl Vigil {
    pub(crate) fn identity(&self) -> Result<&Identity, AppError> {
        self.identity.as_ref().ok_or_else(|| {
            AppError::Keys("identity is not configured (the key file has no [identity])".into())
        })
    }

    /// Seals identity data (profiles, pending steps, outbox messages) with the
    /// organisation's data key, bound to `aad`.
    pub(crate) async fn seal_private(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, AppError> {
        let dek = self.keys.ensure(&KeyOwner::Organisation).await?;
        Ok(dek.seal(aad.as_bytes(), plain))
    }

    pub(crate) async fn open_private(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, AppError> {
        let dek = self
            .keys
            .for_read(&KeyOwner::Organisation)
            .await?
            .ok_or_else(|| AppError::Integrity("the organisation key is missing".into()))?;
        dek.open(aad.as_bytes(), sealed)
            .map_err(|_| AppError::Integrity(format!("sealed identity data ({aad})")))
    }

    /// Seals a JSON value; see [`Vigil::seal_private`].
    pub(crate) async fn seal_json<T: Serialize>(
        &self,
        aad: &str,
        value: &T,
    ) -> Result<Vec<u8>, AppError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| AppError::Integrity(format!("serialising {aad}: {e}")))?;
        self.seal_private(aad, &bytes).await
    }

    pub(crate) async fn open_json<T: for<'de> Deserialize<'de>>(
        &self,
        aad: &str,
        sealed: &[u8],
    ) -> Result<T, AppError> {
        let bytes = self.open_private(aad, sealed).await?;
        serde_json::from_slice(&bytes)
            .map_err(|_| AppError::Integrity(format!("sealed identity data ({aad})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relying_party_ids_come_from_origins() {
        assert_eq!(
            rp_id_of("http://localhost:8080").as_deref(),
            Some("localhost")
        );
        assert_eq!(
            rp_id_of("https://Vigil.Example").as_deref(),
            Some("vigil.example")
        );
        assert_eq!(rp_id_of("https://[::1]:9").as_deref(), Some("::1"));
        assert_eq!(rp_id_of("ftp://x"), None);
        assert_eq!(rp_id_of("https://x/path"), None);
        assert_eq!(rp_id_of("https://"), None);
    }
}
