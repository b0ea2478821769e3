//! PKCE (RFC 7636) for the authorisation-code flow, S256 only.
//!
//! `plain` is refused: it protects nothing once the authorisation request leaks, and SMART
//! App Launch 2.2 requires S256.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// RFC 7636 §4.1 bounds on the verifier length.
pub const VERIFIER_MIN_LEN: usize = 43;
pub const VERIFIER_MAX_LEN: usize = 128;

/// The only `code_challenge_method` we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeMethod {
    S256,
}

impl ChallengeMethod {
    /// Parses the `code_challenge_method` parameter; a missing one means `plain`, refused.
    pub fn parse(method: Option<&str>) -> Result<ChallengeMethod, PkceError> {
        match method {
            Some("S256") => Ok(ChallengeMethod::S256),
            _ => Err(PkceError::UnsupportedMethod),
        }
    }
}

/// Why a PKCE check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    #[error("only the S256 code challenge method is supported")]
    UnsupportedMethod,
    #[error("code verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~")]
    MalformedVerifier,
    #[error("code challenge must be 43 characters of base64url")]
    MalformedChallenge,
    #[error("code verifier does not match the challenge")]
    Mismatch,
}

/// Checks the shape of a `code_challenge` when the authorisation request arrives.
pub fn check_challenge(challenge: &str) -> Result<(), PkceError> {
    match URL_SAFE_NO_PAD.decode(challenge) {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        _ => Err(PkceError::MalformedChallenge),
    }
}

/// The S256 challenge for `verifier`: `BASE64URL(SHA256(ASCII(verifier)))`.
pub fn challenge_s256(verifier: &str) -> Result<String, PkceError> {
    check_verifier(verifier)?;
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())))
}

/// Verifies the `code_verifier` of a token request against the stored S256 challenge,
/// comparing in constant time.
pub fn verify_pkce(verifier: &str, challenge: &str) -> Result<(), PkceError> {
    check_challenge(challenge)?;
    let expected = challenge_s256(verifier)?;
    if bool::from(expected.as_bytes().ct_eq(challenge.as_bytes())) {
        Ok(())
    } else {
        Err(PkceError::Mismatch)
    }
}

fn check_verifier(verifier: &str) -> Result<(), PkceError> {
    let ok = (VERIFIER_MIN_LEN..=VERIFIER_MAX_LEN).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(PkceError::MalformedVerifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b() {
        assert_eq!(challenge_s256(VERIFIER).as_deref(), Ok(CHALLENGE));
        assert_eq!(verify_pkce(VERIFIER, CHALLENGE), Ok(()));
    }

    #[test]
    fn refusals() {
        let other = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK";
        assert_eq!(verify_pkce(other, CHALLENGE), Err(PkceError::Mismatch));
        // `plain`: the verifier presented as its own challenge.
        assert_eq!(verify_pkce(VERIFIER, VERIFIER), Err(PkceError::Mismatch));
        assert_eq!(
            ChallengeMethod::parse(Some("S256")),
            Ok(ChallengeMethod::S256)
        );
        for method in [None, Some("plain"), Some("s256"), Some("")] {
            assert_eq!(
                ChallengeMethod::parse(method),
                Err(PkceError::UnsupportedMethod)
            );
        }
        for verifier in [
            &VERIFIER[..42],
            &"a".repeat(129),
            "dBjftJeZ4CVP+mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            "dBjftJeZ4CVP mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            "dBjftJeZ4CVP=mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        ] {
            assert_eq!(
                verify_pkce(verifier, CHALLENGE),
                Err(PkceError::MalformedVerifier),
                "{verifier}"
            );
        }
        assert!(
            verify_pkce(
                &"a".repeat(43),
                &challenge_s256(&"a".repeat(43)).unwrap_or_default()
            )
            .is_ok()
        );
        assert!(
            verify_pkce(
                &"~".repeat(128),
                &challenge_s256(&"~".repeat(128)).unwrap_or_default()
            )
            .is_ok()
        );
        for challenge in [
            "",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM=",
            "abc",
            &CHALLENGE.replace('-', "+"),
        ] {
            assert_eq!(
                verify_pkce(VERIFIER, challenge),
                Err(PkceError::MalformedChallenge),
                "{challenge}"
            );
        }
    }

    proptest! {
        #[test]
        fn generated_verifiers_match_their_challenge(v in "[A-Za-z0-9._~-]{43,128}") {
            let c = challenge_s256(&v);
            prop_assert!(c.is_ok());
            let c = c.unwrap_or_default();
            prop_assert_eq!(verify_pkce(&v, &c), Ok(()));
        }
    }
}
