//! Self-contained access tokens in the JWT compact form, signed with HS256.
//!
//! `base64url(header).base64url(claims).base64url(HMAC-SHA-256)`, under a 32-byte server key
//! from the key file. HS256 rather than a signature scheme because only Vigil itself issues
//! and verifies these tokens (no `ed25519-dalek` in the lock file either).
//!
//! [`verify`] accepts exactly the header we write — `{"alg":"HS256","typ":"JWT"}`, any other
//! `alg` (above all `none`) or any extra header field (`kid`, `jku`, `crit`…) is refused —
//! then checks the signature in constant time before looking at the claims. Tokens live at
//! most [`MAX_TTL_SECS`]; revocation (deactivated users) is the caller's job via `jti`/`sub`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::scope::{ScopeError, ScopeSet};

/// Access tokens live at most one hour (issue 3).
pub const MAX_TTL_SECS: u64 = 60 * 60;
/// The largest clock leeway [`Leeway::new`] accepts.
pub const MAX_LEEWAY_SECS: u64 = 60;
/// Longer inputs are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

const ALG: &str = "HS256";
const TYP: &str = "JWT";

/// The signing key; redacted in `Debug`, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn from_bytes(bytes: [u8; 32]) -> TokenKey {
        TokenKey(bytes)
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// An issued token: a bearer secret, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// What a token says. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Our issuer URL.
    pub iss: String,
    /// The account id.
    pub sub: String,
    /// The FHIR base URL the token is for.
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    /// Unique token id, for revocation and audit; see [`new_jti`].
    pub jti: String,
    /// Granted scopes, space-separated, in the v2 form.
    pub scope: String,
    pub client_id: String,
    /// The patient in context, for `patient/` scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
}

impl Claims {
    /// The granted scopes, parsed.
    pub fn scopes(&self) -> Result<ScopeSet, ScopeError> {
        ScopeSet::parse(&self.scope)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    typ: String,
}

/// Why a token was not issued or not accepted. Deliberately not `#[non_exhaustive]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token lifetime must be positive and at most one hour")]
    BadLifetime,
    #[error("clock leeway is at most 60 seconds")]
    LeewayTooLong,
    #[error("invalid scope claim")]
    Scope(#[from] ScopeError),
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token header")]
    UnsupportedHeader,
    #[error("bad token signature")]
    BadSignature,
    #[error("token is for another audience")]
    WrongAudience,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
}

/// Tolerated clock difference between issuer and verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leeway(u64);

impl Leeway {
    /// Vigil issues and verifies on the same clock, so a few seconds suffice.
    pub const DEFAULT: Leeway = Leeway(5);

    pub fn new(leeway: Duration) -> Result<Leeway, TokenError> {
        let secs = leeway.as_secs();
        if secs > MAX_LEEWAY_SECS {
            return Err(TokenError::LeewayTooLong);
        }
        Ok(Leeway(secs))
    }
}

impl Default for Leeway {
    fn default() -> Leeway {
        Leeway::DEFAULT
    }
}

/// A fresh token id: 128 random bits, URL-safe base64.
pub fn new_jti(rng: &mut (impl RngCore + CryptoRng)) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn mac(key: &TokenKey, signing_input: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; the fallback is unreachable but keeps us panic-free.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0)
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
    mac.update(signing_input);
    mac
}

fn lifetime_ok(claims: &Claims) -> bool {
    claims.exp > claims.iat && claims.exp - claims.iat <= MAX_TTL_SECS
}

/// Signs `claims`, refusing lifetimes over an hour and ill-formed scopes.
pub fn issue(claims: &Claims, key: &TokenKey) -> Result<AccessToken, TokenError> {
    if !lifetime_ok(claims) {
        return Err(TokenError::BadLifetime);
    }
    claims.scopes()?;
    let header = Header {
        alg: ALG.to_owned(),
        typ: TYP.to_owned(),
    };
    let header = serde_json::to_vec(&header).map_err(|_| TokenError::Malformed)?;
    let payload = serde_json::to_vec(claims).map_err(|_| TokenError::Malformed)?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = mac(key, token.as_bytes()).finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(AccessToken(token))
}

/// [`verify_with`] at the default leeway.
pub fn verify(
    token: &str,
    key: &TokenKey,
    expected_aud: &str,
    now: u64,
) -> Result<Claims, TokenError> {
    verify_with(token, key, expected_aud, now, Leeway::DEFAULT)
}

/// Checks a token presented at `now` (Unix seconds) to the FHIR base `expected_aud`.
///
/// The token is expired from `exp + leeway` on, and not yet valid while `now + leeway < iat`.
pub fn verify_with(
    token: &str,
    key: &TokenKey,
    expected_aud: &str,
    now: u64,
    leeway: Leeway,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|_| TokenError::UnsupportedHeader)?;
    if header.alg != ALG || header.typ != TYP {
        return Err(TokenError::UnsupportedHeader);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    // INVARIANT: nothing in the payload is read before the signature is checked.
    let signed_len = token.len().saturating_sub(signature_len(token));
    let signing_input = token.get(..signed_len).ok_or(TokenError::Malformed)?;
    mac(key, signing_input.as_bytes())
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if claims.aud != expected_aud {
        return Err(TokenError::WrongAudience);
    }
    if !lifetime_ok(&claims) {
        return Err(TokenError::Malformed);
    }
    if now >= claims.exp.saturating_add(leeway.0) {
        return Err(TokenError::Expired);
    }
    if now.saturating_add(leeway.0) < claims.iat {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// Bytes of the signature part plus its leading dot.
fn signature_len(token: &str) -> usize {
    token
        .rfind('.')
        .map_or(token.len(), |dot| token.len() - dot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const AUD: &str = "https://vigil.example/fhir";
    const T0: u64 = 1_700_000_000;

    fn key() -> TokenKey {
        TokenKey::from_bytes([5; 32])
    }

    fn claims() -> Claims {
        Claims {
            iss: "https://vigil.example".into(),
            sub: "acct-42".into(),
            aud: AUD.into(),
            exp: T0 + 900,
            iat: T0,
            jti: new_jti(&mut StdRng::seed_from_u64(1)),
            scope: "openid fhirUser patient/Observation.rs".into(),
            client_id: "growth-chart".into(),
            patient: Some("pat-7".into()),
        }
    }

    fn token() -> String {
        issue(&claims(), &key())
            .map(AccessToken::into_string)
            .unwrap_or_default()
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    /// Re-signs arbitrary header and payload JSON with the right key.
    fn forge(header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let sig = mac(&key(), input.as_bytes()).finalize().into_bytes();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn payload_json() -> String {
        serde_json::to_string(&claims()).unwrap_or_default()
    }

    #[test]
    fn issue_and_verify() {
        let t = token();
        assert!(
            t.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."),
            "{t}"
        );
        assert_eq!(verify(&t, &key(), AUD, T0 + 10), Ok(claims()));
        let c = verify(&t, &key(), AUD, T0 + 10).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.scopes().is_ok_and(|s| s.iter().count() == 3));
        let issued = issue(&claims(), &key());
        assert!(issued.is_ok_and(|t| format!("{t:?}") == "AccessToken(<redacted>)"));
        // The same forge helper reproduces our own tokens, so the refusals below are real.
        assert_eq!(forge(r#"{"alg":"HS256","typ":"JWT"}"#, &payload_json()), t);
    }

    #[test]
    fn expired_and_not_yet_valid_at_the_edges() {
        let t = token();
        let exp = T0 + 900;
        assert!(verify(&t, &key(), AUD, exp + 4).is_ok());
        assert_eq!(verify(&t, &key(), AUD, exp + 5), Err(TokenError::Expired));
        let strict = Leeway(0);
        assert!(verify_with(&t, &key(), AUD, exp - 1, strict).is_ok());
        assert_eq!(
            verify_with(&t, &key(), AUD, exp, strict),
            Err(TokenError::Expired)
        );
        assert!(verify_with(&t, &key(), AUD, T0, strict).is_ok());
        assert_eq!(
            verify_with(&t, &key(), AUD, T0 - 1, strict),
            Err(TokenError::NotYetValid)
        );
        assert!(verify(&t, &key(), AUD, T0 - 5).is_ok());
        assert_eq!(
            verify(&t, &key(), AUD, T0 - 6),
            Err(TokenError::NotYetValid)
        );
        assert!(Leeway::new(Duration::from_secs(60)).is_ok());
        assert_eq!(
            Leeway::new(Duration::from_secs(61)),
            Err(TokenError::LeewayTooLong)
        );
    }

    #[test]
    fn lifetime_enforced_at_issue() {
        let hour = Claims {
            exp: T0 + 3600,
            ..claims()
        };
        assert!(issue(&hour, &key()).is_ok());
        for exp in [T0 + 3601, T0, T0 - 1] {
            let c = Claims { exp, ..claims() };
            assert_eq!(issue(&c, &key()), Err(TokenError::BadLifetime), "{exp}");
        }
        let bad_scope = Claims {
            scope: "patient/Observation.sr".into(),
            ..claims()
        };
        assert!(matches!(
            issue(&bad_scope, &key()),
            Err(TokenError::Scope(ScopeError::IllFormed { .. }))
        ));
        // A too-long token forged with our key (a leaked key, a bug) is still refused.
        let long = payload_json().replace(&format!("\"exp\":{}", T0 + 900), "\"exp\":1800000000");
        assert_eq!(
            verify(
                &forge(r#"{"alg":"HS256","typ":"JWT"}"#, &long),
                &key(),
                AUD,
                T0
            ),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn tampering_refused() {
        let t = token();
        assert_eq!(
            verify(&t, &TokenKey::from_bytes([6; 32]), AUD, T0),
            Err(TokenError::BadSignature)
        );
        // Another patient spliced into the payload, signature kept.
        let mut parts: Vec<&str> = t.split('.').collect();
        let evil = b64(&payload_json().replace("pat-7", "pat-8"));
        parts[1] = &evil;
        assert_eq!(
            verify(&parts.join("."), &key(), AUD, T0),
            Err(TokenError::BadSignature)
        );
        // Each character of the signature flipped.
        let dot = t.rfind('.').unwrap_or(0);
        for i in dot + 1..t.len() {
            let mut bytes = t.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap_or_default();
            assert!(verify(&tampered, &key(), AUD, T0).is_err(), "{i}");
        }
    }

    #[test]
    fn only_our_header_is_accepted() {
        let p = payload_json();
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
            r#"{"alg":"hs256","typ":"JWT"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"HS256","typ":"JWT","kid":"x"}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#,
            r#"[]"#,
        ] {
            assert_eq!(
                verify(&forge(header, &p), &key(), AUD, T0),
                Err(TokenError::UnsupportedHeader),
                "{header}"
            );
        }
        // `alg: none` with an empty signature.
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&p));
        assert_eq!(
            verify(&none, &key(), AUD, T0),
            Err(TokenError::UnsupportedHeader)
        );
    }

    #[test]
    fn wrong_audience_refused() {
        let t = token();
        for aud in [
            "https://other.example/fhir",
            "https://vigil.example/fhir/",
            "",
        ] {
            assert_eq!(
                verify(&t, &key(), aud, T0),
                Err(TokenError::WrongAudience),
                "{aud}"
            );
        }
    }

    #[test]
    fn malformed_refused() {
        let t = token();
        for bad in [
            String::new(),
            "a.b".into(),
            format!("{t}.x"),
            format!("{t}="),
            "!!!.!!!.!!!".into(),
            "x".repeat(MAX_TOKEN_LEN + 1),
            t.replacen('.', "=.", 1),
        ] {
            assert!(
                matches!(
                    verify(&bad, &key(), AUD, T0),
                    Err(TokenError::Malformed | TokenError::UnsupportedHeader)
                ),
                "{bad}"
            );
        }
        for payload in ["not json", "{}", r#"{"exp":1.5}"#, "[]"] {
            assert_eq!(
                verify(
                    &forge(r#"{"alg":"HS256","typ":"JWT"}"#, payload),
                    &key(),
                    AUD,
                    T0
                ),
                Err(TokenError::Malformed),
                "{payload}"
            );
        }
    }

    proptest! {
        #[test]
        fn round_trip(
            sub in "[a-z0-9-]{1,20}",
            ttl in 1u64..=MAX_TTL_SECS,
            age in 0u64..MAX_TTL_SECS,
            patient in proptest::option::of("[A-Za-z0-9.-]{1,64}"),
            client_id in "\\PC{1,20}",
        ) {
            let c = Claims { sub, exp: T0 + ttl, patient, client_id, ..claims() };
            let t = issue(&c, &key());
            prop_assert!(t.is_ok());
            let t = t.map(AccessToken::into_string).unwrap_or_default();
            let now = T0 + age % ttl;
            prop_assert_eq!(verify_with(&t, &key(), AUD, now, Leeway(0)), Ok(c));
        }

        #[test]
        fn verify_never_panics(s in "\\PC{0,200}") {
            let _ = verify(&s, &key(), AUD, T0);
        }
    }
}
