//! OpenID Connect id_tokens for the SMART `openid fhirUser` scopes, signed ES256.
//!
//! Unlike access tokens (HS256, verified only by Vigil), an id_token is verified by the
//! client, so it is signed with a P-256 key whose public half Vigil publishes as a JWK Set.
//! The key id is the RFC 7638 thumbprint of that public key, so a rotated key gets a new
//! `kid` by construction.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::SecretKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand::{CryptoRng, RngCore};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The id_token signing key (P-256); redacted in `Debug`, wiped on drop.
#[derive(Clone)]
pub struct IdTokenKey(SecretKey);

impl std::fmt::Debug for IdTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdTokenKey(<redacted>)")
    }
}

/// Why a key was not loaded or a token not signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("invalid id_token key")]
    InvalidKey,
    #[error("id_token lifetime must be positive")]
    BadLifetime,
    #[error("id_token signing failed")]
    Signing,
}

impl IdTokenKey {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> IdTokenKey {
        IdTokenKey(SecretKey::random(rng))
    }

    /// The key whose scalar is `seed` (32 secret bytes from the key file, so
    /// every node signs with the same key). A seed that is zero or not below
    /// the curve order (probability about 2^-128) is refused.
    pub fn from_seed(seed: &[u8; 32]) -> Result<IdTokenKey, IdTokenError> {
        SecretKey::from_slice(seed)
            .map(IdTokenKey)
            .map_err(|_| IdTokenError::InvalidKey)
    }

    pub fn from_pkcs8_der(der: &[u8]) -> Result<IdTokenKey, IdTokenError> {
        SecretKey::from_pkcs8_der(der)
            .map(IdTokenKey)
            .map_err(|_| IdTokenError::InvalidKey)
    }

    /// The key as PKCS#8 DER, for the key file.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        // Encoding a valid `SecretKey` only fails if allocation does; an empty result would
        // then be refused by `from_pkcs8_der` rather than silently accepted.
        Zeroizing::new(
            self.0
                .to_pkcs8_der()
                .map(|document| document.as_bytes().to_vec())
                .unwrap_or_default(),
        )
    }

    /// The public point's affine coordinates, base64url.
    fn coordinates(&self) -> (String, String) {
        let point = self.0.public_key().to_encoded_point(false);
        let encode =
            |c: Option<&p256::FieldBytes>| c.map(|c| URL_SAFE_NO_PAD.encode(c)).unwrap_or_default();
        (encode(point.x()), encode(point.y()))
    }

    /// The RFC 7638 JWK thumbprint (SHA-256), base64url.
    pub fn kid(&self) -> String {
        let (x, y) = self.coordinates();
        // RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The public JWK Set to publish: `{"keys":[{kty,crv,x,y,use,alg,kid}]}`.
    pub fn jwks(&self) -> Value {
        let (x, y) = self.coordinates();
        json!({
            "keys": [{
                "kty": "EC",
                "crv": "P-256",
                "x": x,
                "y": y,
                "use": "sig",
                "alg": "ES256",
                "kid": self.kid(),
            }]
        })
    }
}

/// What an id_token says. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdTokenClaims {
    /// Our issuer URL.
    pub iss: String,
    /// The account id.
    pub sub: String,
    /// The client id.
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    /// The absolute URL of the user's FHIR resource (`Practitioner/…`, `Patient/…`).
    #[serde(rename = "fhirUser")]
    pub fhir_user: String,
    /// Echoed from the authorization request when the client sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// Signs `claims` with ES256; the header carries `kid` so clients pick the key.
pub fn sign_id_token(claims: &IdTokenClaims, key: &IdTokenKey) -> Result<String, IdTokenError> {
    if claims.exp <= claims.iat {
        return Err(IdTokenError::BadLifetime);
    }
    let der = key.to_pkcs8_der();
    let encoding = EncodingKey::from_ec_der(&der);
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid());
    jsonwebtoken::encode(&header, claims, &encoding).map_err(|_| IdTokenError::Signing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn debug_is_redacted_and_der_round_trips() {
        let key = IdTokenKey::generate(&mut StdRng::seed_from_u64(7));
        assert_eq!(format!("{key:?}"), "IdTokenKey(<redacted>)");
        let again = IdTokenKey::from_pkcs8_der(&key.to_pkcs8_der()).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert_eq!(
            IdTokenKey::from_pkcs8_der(b"nonsense").unwrap_err(),
            IdTokenError::InvalidKey
        );
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // jsonwebtoken computes thumbprints independently; the two must agree.
        let key = IdTokenKey::generate(&mut StdRng::seed_from_u64(8));
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(key.jwks()).unwrap();
        let jwk = set.keys.first().unwrap();
        assert_eq!(
            jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256),
            key.kid()
        );
    }
}
