//! Browser sessions: random ids, timeouts, CSRF tokens and the cookie.
//!
//! A session id is 256 random bits, sent to the browser as URL-safe base64 without padding.
//! Only its SHA-256 ([`SessionId::hash`]) is stored, so a copy of the sessions table cannot
//! be replayed as cookies. Whether a session is still good is a pure function of its
//! record, the [`SessionPolicy`] and `now` (Unix seconds): see [`check`].
//!
//! CSRF tokens are bound to the session: HMAC-SHA-256 of the session id under a server key,
//! so nothing extra is stored and a token for one session is refused for any other.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Random bytes in a session id.
pub const SESSION_ID_BYTES: usize = 32;
/// Length of a session id in the cookie (unpadded base64 of 32 bytes).
pub const COOKIE_VALUE_LEN: usize = 43;
/// The cookie's name; the `__Host-` prefix makes browsers insist on `Secure`, `Path=/` and
/// no `Domain`, so a sibling subdomain cannot plant a session (fixation).
pub const COOKIE_NAME: &str = "__Host-vigil_session";

// INVARIANT: session ids carry at least 128 random bits (OWASP, issue 3).
const _: () = assert!(SESSION_ID_BYTES * 8 >= 128);

/// A session id in clear: the browser's bearer secret. Redacted in `Debug`, wiped on drop,
/// compared in constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionId([u8; SESSION_ID_BYTES]);

impl SessionId {
    /// A fresh id; call at sign-in and at every privilege change (no fixation).
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> SessionId {
        let mut bytes = [0u8; SESSION_ID_BYTES];
        rng.fill_bytes(&mut bytes);
        let id = SessionId(bytes);
        bytes.zeroize();
        id
    }

    /// Parses the cookie value back into an id.
    pub fn from_cookie_value(value: &str) -> Result<SessionId, SessionError> {
        if value.len() != COOKIE_VALUE_LEN {
            return Err(SessionError::MalformedId);
        }
        let decoded = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|_| SessionError::MalformedId)?,
        );
        let bytes: [u8; SESSION_ID_BYTES] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| SessionError::MalformedId)?;
        Ok(SessionId(bytes))
    }

    /// The value to put in the cookie.
    pub fn to_cookie_value(&self) -> Zeroizing<String> {
        Zeroizing::new(URL_SAFE_NO_PAD.encode(self.0))
    }

    /// The form kept in storage and used to look a session up.
    pub fn hash(&self) -> SessionIdHash {
        SessionIdHash(Sha256::digest(self.0).into())
    }
}

impl PartialEq for SessionId {
    fn eq(&self, other: &SessionId) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SessionId {}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// SHA-256 of a session id: what the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionIdHash([u8; 32]);

impl SessionIdHash {
    pub fn from_bytes(bytes: [u8; 32]) -> SessionIdHash {
        SessionIdHash(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Why a session id or CSRF token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("malformed session id")]
    MalformedId,
    #[error("malformed csrf token")]
    MalformedCsrfToken,
    #[error("csrf token does not belong to this session")]
    CsrfMismatch,
    #[error("idle timeout must be positive and not longer than the absolute timeout")]
    InvalidPolicy,
}

/// How long a session may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    idle_timeout: Duration,
    absolute_timeout: Duration,
}

impl SessionPolicy {
    /// Workforce default: 15 minutes idle, 12 hours absolute (issue 3).
    pub const WORKFORCE: SessionPolicy = SessionPolicy {
        idle_timeout: Duration::from_secs(15 * 60),
        absolute_timeout: Duration::from_secs(12 * 60 * 60),
    };

    pub fn new(idle_timeout: Duration, absolute_timeout: Duration) -> Result<Self, SessionError> {
        if idle_timeout.as_secs() == 0 || idle_timeout > absolute_timeout {
            return Err(SessionError::InvalidPolicy);
        }
        Ok(SessionPolicy {
            idle_timeout,
            absolute_timeout,
        })
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub fn absolute_timeout(&self) -> Duration {
        self.absolute_timeout
    }
}

impl Default for SessionPolicy {
    fn default() -> SessionPolicy {
        SessionPolicy::WORKFORCE
    }
}

/// The parts of a stored session that decide whether it is still good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    /// Unix seconds at sign-in.
    pub created_at: u64,
    /// Unix seconds of the last request that used the session.
    pub last_seen_at: u64,
    /// Set by sign-out, deactivation or an administrator.
    pub revoked: bool,
}

/// What [`check`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Active,
    IdleExpired,
    AbsoluteExpired,
    Revoked,
}

/// Decides whether a session may serve a request at `now` (Unix seconds).
///
/// A session expires at the exact second its timeout is reached: with a 15-minute idle
/// timeout, a request 899 s after the last one is served and one 900 s after is not.
/// Revocation wins over expiry, and absolute expiry over idle expiry, so the reason shown
/// is the one that cannot be cured by simply being quicker.
pub fn check(policy: &SessionPolicy, session: &SessionTimes, now: u64) -> SessionState {
    if session.revoked {
        return SessionState::Revoked;
    }
    if now.saturating_sub(session.created_at) >= policy.absolute_timeout.as_secs() {
        return SessionState::AbsoluteExpired;
    }
    if now.saturating_sub(session.last_seen_at) >= policy.idle_timeout.as_secs() {
        return SessionState::IdleExpired;
    }
    SessionState::Active
}

/// The server key CSRF tokens are made with; redacted in `Debug`, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct CsrfKey([u8; 32]);

impl CsrfKey {
    pub fn from_bytes(bytes: [u8; 32]) -> CsrfKey {
        CsrfKey(bytes)
    }
}

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(<redacted>)")
    }
}

/// A CSRF token for one session, to embed in forms; redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct CsrfToken(String);

impl CsrfToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfToken(<redacted>)")
    }
}

const CSRF_CONTEXT: &[u8] = b"vigil csrf v1\0";

fn csrf_mac(key: &CsrfKey, session: &SessionId) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; the fallback is unreachable but keeps us panic-free.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0)
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
    mac.update(CSRF_CONTEXT);
    mac.update(&session.0);
    mac
}

/// HMAC-SHA-256 under the session key of `data`, separated by `label`: a
/// keyed digest for values that must not be stored in a guessable form
/// (e.g. the throttling counter of a user name that has no account).
pub fn keyed_digest(key: &CsrfKey, label: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).unwrap_or_else(|_| {
        // HMAC takes keys of any length; this branch cannot run.
        <Hmac<Sha256> as Mac>::new(&Default::default())
    });
    mac.update(&(label.len() as u64).to_be_bytes());
    mac.update(label);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The CSRF token for `session`.
pub fn csrf_token(key: &CsrfKey, session: &SessionId) -> CsrfToken {
    CsrfToken(URL_SAFE_NO_PAD.encode(csrf_mac(key, session).finalize().into_bytes()))
}

/// Checks a token presented with a state-changing request, in constant time.
pub fn verify_csrf(
    key: &CsrfKey,
    session: &SessionId,
    presented: &str,
) -> Result<(), SessionError> {
    let tag = URL_SAFE_NO_PAD
        .decode(presented)
        .map_err(|_| SessionError::MalformedCsrfToken)?;
    if tag.len() != 32 {
        return Err(SessionError::MalformedCsrfToken);
    }
    csrf_mac(key, session)
        .verify_slice(&tag)
        .map_err(|_| SessionError::CsrfMismatch)
}

/// The `Set-Cookie` value that installs `session` in the browser. No `Max-Age`: the cookie
/// dies with the browser, and the server enforces the timeouts anyway.
pub fn set_cookie(session: &SessionId) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{COOKIE_NAME}={}; Path=/; Secure; HttpOnly; SameSite=Strict",
        session.to_cookie_value().as_str()
    ))
}

/// The `Set-Cookie` value that removes the session cookie (sign-out).
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn id(seed: u64) -> SessionId {
        SessionId::generate(&mut StdRng::seed_from_u64(seed))
    }

    fn key() -> CsrfKey {
        CsrfKey::from_bytes([7; 32])
    }

    #[test]
    fn ids_are_random_and_round_trip_through_the_cookie() {
        let a = id(1);
        let b = id(2);
        assert_ne!(a, b);
        let value = a.to_cookie_value();
        assert_eq!(value.len(), COOKIE_VALUE_LEN);
        assert!(
            value
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(SessionId::from_cookie_value(&value), Ok(a.clone()));
        assert_eq!(a.hash(), a.clone().hash());
        assert_ne!(a.hash(), b.hash());
        assert_eq!(format!("{a:?}"), "SessionId(<redacted>)");
    }

    #[test]
    fn hash_is_sha256_of_the_raw_id() {
        let a = SessionId([0; 32]);
        assert_eq!(
            hex(a.hash().as_bytes()),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn malformed_cookie_values_refused() {
        for bad in [
            "",
            "short",
            &"A".repeat(44),
            &"+".repeat(43),
            &"/".repeat(43),
            &"=".repeat(43),
        ] {
            assert_eq!(
                SessionId::from_cookie_value(bad),
                Err(SessionError::MalformedId),
                "{bad}"
            );
        }
    }

    #[test]
    fn timeouts_at_exact_edges() {
        let p = SessionPolicy::default();
        assert_eq!(p.idle_timeout(), Duration::from_secs(900));
        assert_eq!(p.absolute_timeout(), Duration::from_secs(43_200));
        let t0 = 1_700_000_000;
        let s = SessionTimes {
            created_at: t0,
            last_seen_at: t0,
            revoked: false,
        };
        assert_eq!(check(&p, &s, t0), SessionState::Active);
        assert_eq!(check(&p, &s, t0 + 899), SessionState::Active);
        assert_eq!(check(&p, &s, t0 + 900), SessionState::IdleExpired);
        // Kept busy, the session still ends at the absolute timeout.
        let busy = SessionTimes {
            last_seen_at: t0 + 43_199,
            ..s
        };
        assert_eq!(check(&p, &busy, t0 + 43_199), SessionState::Active);
        assert_eq!(check(&p, &busy, t0 + 43_200), SessionState::AbsoluteExpired);
        // Absolute beats idle when both apply.
        assert_eq!(check(&p, &s, t0 + 43_200), SessionState::AbsoluteExpired);
        // Revoked beats everything, even a fresh session.
        let revoked = SessionTimes { revoked: true, ..s };
        assert_eq!(check(&p, &revoked, t0), SessionState::Revoked);
        // A clock that went backwards does not expire or panic.
        assert_eq!(check(&p, &s, t0 - 10), SessionState::Active);
    }

    #[test]
    fn policy_validation() {
        let m = Duration::from_secs(60);
        assert!(SessionPolicy::new(m, m).is_ok());
        assert_eq!(
            SessionPolicy::new(Duration::ZERO, m),
            Err(SessionError::InvalidPolicy)
        );
        assert_eq!(
            SessionPolicy::new(m * 2, m),
            Err(SessionError::InvalidPolicy)
        );
    }

    #[test]
    fn csrf_bound_to_the_session() {
        let a = id(1);
        let b = id(2);
        let token = csrf_token(&key(), &a);
        assert_eq!(verify_csrf(&key(), &a, token.as_str()), Ok(()));
        assert_eq!(
            verify_csrf(&key(), &b, token.as_str()),
            Err(SessionError::CsrfMismatch)
        );
        assert_eq!(
            verify_csrf(&CsrfKey::from_bytes([8; 32]), &a, token.as_str()),
            Err(SessionError::CsrfMismatch)
        );
        assert_eq!(format!("{token:?}"), "CsrfToken(<redacted>)");
    }

    #[test]
    fn tampered_csrf_refused() {
        let a = id(1);
        let token = csrf_token(&key(), &a);
        let s = token.as_str();
        // Flip one symbol at each position.
        for i in 0..s.len() {
            let mut bytes = s.as_bytes().to_vec();
            if let Some(c) = bytes.get_mut(i) {
                *c = if *c == b'A' { b'B' } else { b'A' };
            }
            let tampered = String::from_utf8(bytes).unwrap_or_default();
            assert!(verify_csrf(&key(), &a, &tampered).is_err(), "{i}");
        }
        assert_eq!(
            verify_csrf(&key(), &a, ""),
            Err(SessionError::MalformedCsrfToken)
        );
        assert_eq!(
            verify_csrf(&key(), &a, &s[..s.len() - 2]),
            Err(SessionError::MalformedCsrfToken)
        );
        assert_eq!(
            verify_csrf(&key(), &a, "not base64!"),
            Err(SessionError::MalformedCsrfToken)
        );
    }

    #[test]
    fn cookie_attributes() {
        let a = id(3);
        let cookie = set_cookie(&a);
        assert_eq!(
            cookie.as_str(),
            format!(
                "__Host-vigil_session={}; Path=/; Secure; HttpOnly; SameSite=Strict",
                a.to_cookie_value().as_str()
            )
        );
        assert_eq!(
            clear_cookie(),
            "__Host-vigil_session=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict"
        );
    }

    proptest! {
        #[test]
        fn cookie_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let a = SessionId(bytes);
            prop_assert_eq!(SessionId::from_cookie_value(&a.to_cookie_value()), Ok(a));
        }
    }
}
