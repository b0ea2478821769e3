//! Password hashing: Argon2id with a pepper, stored as a PHC string.
//!
//! The pepper (32 bytes from the key file, never stored beside the hashes) is Argon2's
//! secret input `K` (RFC 9106 §3.1), so a stolen database alone cannot be brute-forced.
//! Passwords are normalised to NFKC (see [`crate::password::normalise`]) before hashing, so
//! equivalent Unicode spellings verify.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::password::normalise;

/// The server-wide pepper; redacted in `Debug`, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Pepper([u8; 32]);

impl Pepper {
    pub fn from_bytes(bytes: [u8; 32]) -> Pepper {
        Pepper(bytes)
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

/// OWASP's Argon2id floor: 19 MiB of memory.
pub const OWASP_M_KIB: u32 = 19_456;
/// OWASP's Argon2id floor: two passes.
pub const OWASP_T: u32 = 2;
/// OWASP's Argon2id parallelism.
pub const OWASP_P: u32 = 1;

/// Argon2id cost; [`HashConfig::new`] refuses anything cheaper than OWASP's floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashConfig {
    m_kib: u32,
    t: u32,
    p: u32,
}

impl Default for HashConfig {
    fn default() -> HashConfig {
        HashConfig {
            m_kib: OWASP_M_KIB,
            t: OWASP_T,
            p: OWASP_P,
        }
    }
}

/// Why a password could not be hashed or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("argon2 parameters below the OWASP floor (m=19456 KiB, t=2, p=1)")]
    BelowFloor,
    #[error("invalid argon2 parameters")]
    InvalidParams,
    #[error("the stored password hash is not a valid argon2 PHC string")]
    MalformedHash,
    #[error("argon2 failed")]
    Argon2,
}

/// Why a password did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("wrong password")]
    Mismatch,
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// A password that verified; `needs_rehash` asks the caller to store a new hash made
/// with the current config (the stored one used other parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub needs_rehash: bool,
}

impl HashConfig {
    pub fn new(m_kib: u32, t: u32, p: u32) -> Result<HashConfig, HashError> {
        if m_kib < OWASP_M_KIB || t < OWASP_T || p < OWASP_P {
            return Err(HashError::BelowFloor);
        }
        Ok(HashConfig { m_kib, t, p })
    }

    /// Cheap parameters for tests only: hashing with the real ones takes ~50 ms each.
    #[cfg(test)]
    pub(crate) fn cheap_for_tests() -> HashConfig {
        HashConfig {
            m_kib: 64,
            t: 1,
            p: 1,
        }
    }

    pub fn m_kib(&self) -> u32 {
        self.m_kib
    }

    pub fn t(&self) -> u32 {
        self.t
    }

    pub fn p(&self) -> u32 {
        self.p
    }

    fn params(&self) -> Result<Params, HashError> {
        Params::new(self.m_kib, self.t, self.p, None).map_err(|_| HashError::InvalidParams)
    }

    /// Hashes a password to a PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
    pub fn hash(
        &self,
        password: &str,
        pepper: &Pepper,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<String, HashError> {
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|_| HashError::Argon2)?;
        let argon2 = argon2(pepper, self.params()?)?;
        let normalised = zeroize::Zeroizing::new(normalise(password));
        argon2
            .hash_password(normalised.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| HashError::Argon2)
    }

    /// Verifies a password against a stored PHC string, with the stored parameters.
    pub fn verify(
        &self,
        password: &str,
        phc: &str,
        pepper: &Pepper,
    ) -> Result<Verified, VerifyError> {
        let stored = PasswordHash::new(phc).map_err(|_| HashError::MalformedHash)?;
        if stored.algorithm != Algorithm::Argon2id.ident() {
            return Err(HashError::MalformedHash.into());
        }
        let stored_params = Params::try_from(&stored).map_err(|_| HashError::MalformedHash)?;
        // The stored parameters are used by `verify_password`; the pepper comes from us.
        let argon2 = argon2(pepper, self.params()?)?;
        let normalised = zeroize::Zeroizing::new(normalise(password));
        match argon2.verify_password(normalised.as_bytes(), &stored) {
            Ok(()) => Ok(Verified {
                needs_rehash: stored_params.m_cost() != self.m_kib
                    || stored_params.t_cost() != self.t
                    || stored_params.p_cost() != self.p
                    || stored.version != Some(Version::V0x13.into()),
            }),
            Err(argon2::password_hash::Error::Password) => Err(VerifyError::Mismatch),
            Err(_) => Err(HashError::MalformedHash.into()),
        }
    }
}

impl HashConfig {
    /// Spends the same work as [`HashConfig::verify`] and always answers `Mismatch`, for a
    /// sign-in to an unknown account: the answer and its timing do not reveal who exists.
    pub fn verify_unknown_account(&self, password: &str, pepper: &Pepper) -> VerifyError {
        // A fixed salt: nothing is stored, only the cost matters.
        let salt = [0x5a_u8; 16];
        let work = SaltString::encode_b64(&salt)
            .map_err(|_| HashError::Argon2)
            .and_then(|salt| {
                let normalised = zeroize::Zeroizing::new(normalise(password));
                argon2(pepper, self.params()?)?
                    .hash_password(normalised.as_bytes(), &salt)
                    .map(|_| ())
                    .map_err(|_| HashError::Argon2)
            });
        match work {
            Ok(()) => VerifyError::Mismatch,
            Err(err) => VerifyError::Hash(err),
        }
    }
}

fn argon2(pepper: &Pepper, params: Params) -> Result<Argon2<'_>, HashError> {
    Argon2::new_with_secret(pepper.expose(), Algorithm::Argon2id, Version::V0x13, params)
        .map_err(|_| HashError::InvalidParams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn pepper() -> Pepper {
        Pepper::from_bytes([7; 32])
    }

    #[test]
    fn defaults_are_owasp_and_floor_enforced() {
        let d = HashConfig::default();
        assert_eq!((d.m_kib(), d.t(), d.p()), (19_456, 2, 1));
        assert_eq!(HashConfig::new(19_455, 2, 1), Err(HashError::BelowFloor));
        assert_eq!(HashConfig::new(19_456, 1, 1), Err(HashError::BelowFloor));
        assert_eq!(HashConfig::new(19_456, 2, 0), Err(HashError::BelowFloor));
        assert_eq!(HashConfig::new(65_536, 3, 1).map(|c| c.m_kib()), Ok(65_536));
    }

    #[test]
    fn hash_verify_and_wrong_inputs() {
        let config = HashConfig::cheap_for_tests();
        let mut rng = StdRng::seed_from_u64(1);
        let phc = config
            .hash("correct horse battery", &pepper(), &mut rng)
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert_eq!(
            config.verify("correct horse battery", &phc, &pepper()),
            Ok(Verified {
                needs_rehash: false
            })
        );
        assert_eq!(
            config.verify("correct horse batterY", &phc, &pepper()),
            Err(VerifyError::Mismatch)
        );
        let other = Pepper::from_bytes([8; 32]);
        assert_eq!(
            config.verify("correct horse battery", &phc, &other),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            config.verify("x", "not a phc", &pepper()),
            Err(VerifyError::Hash(HashError::MalformedHash))
        );
    }

    #[test]
    fn needs_rehash_when_params_change() {
        let old = HashConfig::cheap_for_tests();
        let new = HashConfig { t: 2, ..old };
        let mut rng = StdRng::seed_from_u64(2);
        let phc = old
            .hash("correct horse battery", &pepper(), &mut rng)
            .unwrap();
        assert_eq!(
            new.verify("correct horse battery", &phc, &pepper()),
            Ok(Verified { needs_rehash: true })
        );
        assert_eq!(
            new.verify("wrong horse battery", &phc, &pepper()),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn nfc_equivalent_passwords_verify() {
        let config = HashConfig::cheap_for_tests();
        let mut rng = StdRng::seed_from_u64(3);
        let phc = config
            .hash("caf\u{e9} on the hill", &pepper(), &mut rng)
            .unwrap();
        assert!(
            config
                .verify("cafe\u{301} on the hill", &phc, &pepper())
                .is_ok()
        );
    }

    #[test]
    fn default_params_hash_and_verify() {
        // One real-cost round trip; Argon2 is built with opt-level 2 (dev profile).
        let config = HashConfig::default();
        let mut rng = StdRng::seed_from_u64(4);
        let phc = config
            .hash("correct horse battery", &pepper(), &mut rng)
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(
            config.verify("correct horse battery", &phc, &pepper()),
            Ok(Verified {
                needs_rehash: false
            })
        );
        // A hash made with cheaper, older parameters still verifies and asks for a re-hash.
        let old = HashConfig::cheap_for_tests()
            .hash("correct horse battery", &pepper(), &mut rng)
            .unwrap();
        assert_eq!(
            config.verify("correct horse battery", &old, &pepper()),
            Ok(Verified { needs_rehash: true })
        );
    }

    #[test]
    fn unknown_account_answers_like_a_wrong_password() {
        let config = HashConfig::cheap_for_tests();
        assert_eq!(
            config.verify_unknown_account("anything at all", &pepper()),
            VerifyError::Mismatch
        );
    }

    #[test]
    fn pepper_is_redacted() {
        assert_eq!(format!("{:?}", pepper()), "Pepper(<redacted>)");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn phc_round_trip(password in "\\PC{0,32}", seed in any::<u64>()) {
            let config = HashConfig::cheap_for_tests();
            let mut rng = StdRng::seed_from_u64(seed);
            let phc = config.hash(&password, &pepper(), &mut rng).unwrap();
            let parsed = PasswordHash::new(&phc).unwrap();
            prop_assert_eq!(parsed.to_string(), phc.clone());
            prop_assert_eq!(config.verify(&password, &phc, &pepper()), Ok(Verified { needs_rehash: false }));
        }
    }
}
