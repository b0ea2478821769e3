//! Client authentication with a signed JWT (`private_key_jwt`, RFC 7523 §2.2), as SMART Backend
//! Services use it: the client signs a short-lived assertion with a key from the JWK Set it
//! registered, and the token endpoint verifies it here.
//!
//! Only RS384 and ES384 are accepted (SMART App Launch 2.2 §"Backend Services"); the header
//! is read before anything else and any other `alg` (above all `none` and the HMAC family,
//! whose "key" would be a public key) is refused. The JWK Set is checked again on every use
//! with [`check_jwks`], so a set that slipped past registration cannot weaken verification.
//!
//! Replay: the caller must remember each accepted `jti` until its `exp` (plus leeway) and
//! refuse a second use; this crate has no storage.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// An assertion may live at most five minutes (SMART Backend Services).
pub const MAX_ASSERTION_LIFETIME_SECS: u64 = 300;
/// The largest clock leeway honoured; larger values are clamped to it.
pub const MAX_LEEWAY_SECS: u64 = 60;
/// Longer assertions are refused before any decoding.
pub const MAX_ASSERTION_LEN: usize = 16 * 1024;
/// A registered set holds at most this many keys (rotation needs two or three).
pub const MAX_KEYS: usize = 16;
/// RSA moduli below this are refused (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;
/// RSA moduli above this are refused: verification cost grows with the size.
pub const MAX_RSA_BITS: usize = 8192;

/// JWK members that only a private key has; a registered set holding any is refused.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// What a verified assertion says. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionClaims {
    pub iss: String,
    pub sub: String,
    /// The caller must refuse a `jti` it has already accepted before `exp`.
    pub jti: String,
    pub exp: u64,
}

/// Why an assertion or a JWK Set was refused. Deliberately not `#[non_exhaustive]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("malformed client assertion")]
    Malformed,
    #[error("client assertion algorithm must be RS384 or ES384")]
    UnsupportedAlgorithm,
    #[error("no registered key matches the client assertion")]
    NoMatchingKey,
    #[error("bad client assertion signature")]
    BadSignature,
    #[error("client assertion expired or not yet valid")]
    Expired,
    #[error("client assertion lives longer than five minutes")]
    TooLongLived,
    #[error("client assertion is for another audience")]
    WrongAudience,
    #[error("client assertion issuer and subject must both be the client id")]
    IssuerMismatch,
    #[error("client assertion has no jti")]
    MissingJti,
    #[error("invalid JWK Set")]
    BadJwks,
}

/// The two algorithms we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs384,
    Es384,
}

impl Alg {
    fn parse(alg: &str) -> Option<Alg> {
        match alg {
            "RS384" => Some(Alg::Rs384),
            "ES384" => Some(Alg::Es384),
            _ => None,
        }
    }

    fn jsonwebtoken(self) -> Algorithm {
        match self {
            Alg::Rs384 => Algorithm::RS384,
            Alg::Es384 => Algorithm::ES384,
        }
    }
}

/// One checked public key of a registered set.
struct Key<'a> {
    kid: Option<&'a str>,
    alg: Alg,
    decoding: DecodingKey,
}

/// Verifies a client assertion against the client's registered JWK Set.
///
/// `aud` must equal `token_url` exactly (a string, or an array holding it); `iss` and `sub`
/// must both equal `client_id`; `exp` must be in the future and at most
/// [`MAX_ASSERTION_LIFETIME_SECS`] ahead; an `nbf` in the future is refused as
/// [`AssertionError::Expired`]. `leeway` (clamped to [`MAX_LEEWAY_SECS`]) absorbs clock skew.
/// When the header names a `kid`, only that key is tried; otherwise every key of the
/// algorithm's type is.
pub fn verify_assertion(
    jwt: &str,
    jwks: &Value,
    client_id: &str,
    token_url: &str,
    now: u64,
    leeway: u64,
) -> Result<AssertionClaims, AssertionError> {
    let leeway = leeway.min(MAX_LEEWAY_SECS);
    if jwt.len() > MAX_ASSERTION_LEN {
        return Err(AssertionError::Malformed);
    }
    let (alg, kid) = read_header(jwt)?;
    let keys = parse_jwks(jwks)?;

    let candidates: Vec<&Key<'_>> = keys
        .iter()
        .filter(|key| key.alg == alg)
        .filter(|key| kid.as_deref().is_none_or(|kid| key.kid == Some(kid)))
        .collect();
    if candidates.is_empty() {
        return Err(AssertionError::NoMatchingKey);
    }

    let mut validation = Validation::new(alg.jsonwebtoken());
    // Time is our parameter, not the system clock: every claim is checked below.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;

    let mut payload = None;
    for key in candidates {
        match jsonwebtoken::decode::<Value>(jwt, &key.decoding, &validation) {
            Ok(data) => {
                payload = Some(data.claims);
                break;
            }
            Err(error) => match error.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature
                | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
                | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_)
                | jsonwebtoken::errors::ErrorKind::Provider(_) => {}
                _ => return Err(AssertionError::Malformed),
            },
        }
    }
    let payload = payload.ok_or(AssertionError::BadSignature)?;
    check_claims(&payload, client_id, token_url, now, leeway)
}

fn check_claims(
    payload: &Value,
    client_id: &str,
    token_url: &str,
    now: u64,
    leeway: u64,
) -> Result<AssertionClaims, AssertionError> {
    let payload = payload.as_object().ok_or(AssertionError::Malformed)?;
    let string = |name: &str| -> Result<Option<String>, AssertionError> {
        match payload.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(AssertionError::Malformed),
        }
    };
    let seconds = |name: &str| -> Result<Option<u64>, AssertionError> {
        match payload.get(name) {
            None => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or(AssertionError::Malformed),
        }
    };

    let iss = string("iss")?.ok_or(AssertionError::IssuerMismatch)?;
    let sub = string("sub")?.ok_or(AssertionError::IssuerMismatch)?;
    if iss != client_id || sub != client_id {
        return Err(AssertionError::IssuerMismatch);
    }

    let aud_ok = match payload.get("aud") {
        Some(Value::String(aud)) => aud == token_url,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(token_url)),
        _ => false,
    };
    if !aud_ok {
        return Err(AssertionError::WrongAudience);
    }

    let exp = seconds("exp")?.ok_or(AssertionError::Malformed)?;
    if now >= exp.saturating_add(leeway) {
        return Err(AssertionError::Expired);
    }
    if exp > now.saturating_add(MAX_ASSERTION_LIFETIME_SECS + leeway) {
        return Err(AssertionError::TooLongLived);
    }
    if let Some(nbf) = seconds("nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(AssertionError::Expired);
    }

    let jti = string("jti")?
        .filter(|jti| !jti.is_empty())
        .ok_or(AssertionError::MissingJti)?;
    Ok(AssertionClaims { iss, sub, jti, exp })
}

/// Reads `alg` and `kid` from the protected header, refusing `crit` (we understand no
/// extensions) and any algorithm but ours.
fn read_header(jwt: &str) -> Result<(Alg, Option<String>), AssertionError> {
    let mut parts = jwt.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AssertionError::Malformed);
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AssertionError::Malformed)?;
    let header: Value = serde_json::from_slice(&header).map_err(|_| AssertionError::Malformed)?;
    let header = header.as_object().ok_or(AssertionError::Malformed)?;
    if header.contains_key("crit") {
        return Err(AssertionError::Malformed);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AssertionError::Malformed)?;
    let alg = Alg::parse(alg).ok_or(AssertionError::UnsupportedAlgorithm)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AssertionError::Malformed),
    };
    Ok((alg, kid))
}

/// Validates a JWK Set a client registers: at least one key and at most [`MAX_KEYS`], each
/// an RSA public key of [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`] bits or an EC P-384 public key
/// on the curve, none with private members, each usable for RS384 or ES384 (`alg` absent or
/// matching, `use` absent or `sig`, `key_ops` absent or holding `verify`), `kid`s unique.
pub fn check_jwks(jwks: &Value) -> Result<(), AssertionError> {
    parse_jwks(jwks).map(|_| ())
}

fn parse_jwks(jwks: &Value) -> Result<Vec<Key<'_>>, AssertionError> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(AssertionError::BadJwks)?;
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(AssertionError::BadJwks);
    }
    let keys = keys.iter().map(parse_jwk).collect::<Result<Vec<_>, _>>()?;
    let mut kids: Vec<&str> = keys.iter().filter_map(|key| key.kid).collect();
    kids.sort_unstable();
    if kids.windows(2).any(|pair| pair.first() == pair.last()) {
        return Err(AssertionError::BadJwks);
    }
    Ok(keys)
}

fn parse_jwk(jwk: &Value) -> Result<Key<'_>, AssertionError> {
    let jwk = jwk.as_object().ok_or(AssertionError::BadJwks)?;
    if PRIVATE_MEMBERS
        .iter()
        .any(|member| jwk.contains_key(*member))
    {
        return Err(AssertionError::BadJwks);
    }
    let member = |name: &str| -> Result<Option<&str>, AssertionError> {
        match jwk.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(AssertionError::BadJwks),
        }
    };
    let required = |name: &str| member(name)?.ok_or(AssertionError::BadJwks);
    let base64 = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(required(name)?)
            .map_err(|_| AssertionError::BadJwks)
    };

    if member("use")?.is_some_and(|usage| usage != "sig") {
        return Err(AssertionError::BadJwks);
    }
    match jwk.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if ops.iter().any(|op| op.as_str() == Some("verify")) => {}
        Some(_) => return Err(AssertionError::BadJwks),
    }
    let kid = member("kid")?;

    let (alg, decoding) = match required("kty")? {
        "RSA" => {
            let n = base64("n")?;
            let e = base64("e")?;
            check_rsa(&n, &e)?;
            let decoding = DecodingKey::from_rsa_components(required("n")?, required("e")?)
                .map_err(|_| AssertionError::BadJwks)?;
            (Alg::Rs384, decoding)
        }
        "EC" => {
            if required("crv")? != "P-384" {
                return Err(AssertionError::BadJwks);
            }
            let x = base64("x")?;
            let y = base64("y")?;
            if x.len() != 48 || y.len() != 48 {
                return Err(AssertionError::BadJwks);
            }
            let mut point = Vec::with_capacity(97);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            // Refuses points off the curve and the identity.
            p384::PublicKey::from_sec1_bytes(&point).map_err(|_| AssertionError::BadJwks)?;
            let decoding = DecodingKey::from_ec_components(required("x")?, required("y")?)
                .map_err(|_| AssertionError::BadJwks)?;
            (Alg::Es384, decoding)
        }
        _ => return Err(AssertionError::BadJwks),
    };
    if let Some(declared) = member("alg")?
        && Alg::parse(declared) != Some(alg)
    {
        return Err(AssertionError::BadJwks);
    }
    Ok(Key { kid, alg, decoding })
}

/// Modulus size within bounds; public exponent odd, above 1 and at most 32 bits.
fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), AssertionError> {
    let n = strip_leading_zeros(n);
    let bits = match n.first() {
        Some(first) => n.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    };
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) || n.last().is_some_and(|b| b % 2 == 0) {
        return Err(AssertionError::BadJwks);
    }
    let e = strip_leading_zeros(e);
    if e.is_empty() || e.len() > 4 {
        return Err(AssertionError::BadJwks);
    }
    let e = e
        .iter()
        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
    if e < 3 || e % 2 == 0 {
        return Err(AssertionError::BadJwks);
    }
    Ok(())
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_bounds() {
        let mut n = vec![0u8; 256];
        n[0] = 0x80;
        n[255] = 1;
        assert_eq!(check_rsa(&n, &[1, 0, 1]), Ok(()));
        // 2047 bits.
        n[0] = 0x40;
        assert_eq!(check_rsa(&n, &[1, 0, 1]), Err(AssertionError::BadJwks));
        n[0] = 0x80;
        assert_eq!(check_rsa(&n, &[1]), Err(AssertionError::BadJwks));
        assert_eq!(check_rsa(&n, &[2]), Err(AssertionError::BadJwks));
        assert_eq!(
            check_rsa(&n, &[1, 0, 0, 0, 1]),
            Err(AssertionError::BadJwks)
        );
        let mut padded = vec![0u8; 3];
        padded.extend_from_slice(&n);
        assert_eq!(check_rsa(&padded, &[0, 3]), Ok(()));
    }

    #[test]
    fn header_is_read_first() {
        let header = |json: &str| format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(json));
        assert_eq!(
            read_header(&header(r#"{"alg":"none"}"#)),
            Err(AssertionError::UnsupportedAlgorithm)
        );
        assert_eq!(
            read_header(&header(r#"{"alg":"ES384","crit":["b64"]}"#)),
            Err(AssertionError::Malformed)
        );
        assert_eq!(
            read_header(&header(r#"{"alg":"ES384","kid":"k"}"#)),
            Ok((Alg::Es384, Some("k".to_owned())))
        );
        assert_eq!(read_header("a.b"), Err(AssertionError::Malformed));
        assert_eq!(read_header("a.b.c.d"), Err(AssertionError::Malformed));
    }
}
