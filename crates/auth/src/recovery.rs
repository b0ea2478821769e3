//! Single-use recovery codes.
//!
//! A code is 12 symbols of Crockford base32 (60 random bits) shown as `XXXX-XXXX-XXXX`.
//! Only a keyed hash is stored: HMAC-SHA-256 under the pepper. A slow hash is not needed
//! because the codes are high-entropy. Typing is forgiving: case, spaces and dashes are
//! ignored, and `O`, `I`, `L` are read as `0`, `1`, `1`.

use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use sha2::Sha256;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use crate::hash::Pepper;

/// How many codes a set has by default.
pub const DEFAULT_COUNT: usize = 10;
/// Symbols per code; each carries 5 bits.
pub const SYMBOLS: usize = 12;

// INVARIANT: a code carries at least 50 random bits.
const _: () = assert!(SYMBOLS * 5 >= 50);

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A code in clear, to show the user once; redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode(Zeroizing<String>);

impl RecoveryCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCode(<redacted>)")
    }
}

/// The stored form of a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryCodeHash([u8; 32]);

impl RecoveryCodeHash {
    pub fn from_bytes(bytes: [u8; 32]) -> RecoveryCodeHash {
        RecoveryCodeHash(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Why a recovery code was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    #[error("a recovery code has 12 letters and digits")]
    Malformed,
    #[error("wrong or already used recovery code")]
    NoMatch,
}

/// Generates `count` codes and their hashes, in the same order.
pub fn generate(
    count: usize,
    pepper: &Pepper,
    rng: &mut (impl RngCore + CryptoRng),
) -> Vec<(RecoveryCode, RecoveryCodeHash)> {
    (0..count)
        .map(|_| {
            let mut bytes = Zeroizing::new([0u8; SYMBOLS]);
            rng.fill_bytes(bytes.as_mut());
            // 32 divides 256, so masking keeps the symbols uniform.
            let canonical: Zeroizing<String> = Zeroizing::new(
                bytes
                    .iter()
                    .filter_map(|b| ALPHABET.get(usize::from(b & 0x1f)).map(|&c| char::from(c)))
                    .collect(),
            );
            let mut shown = Zeroizing::new(String::with_capacity(SYMBOLS + 2));
            for (i, c) in canonical.chars().enumerate() {
                if i > 0 && i % 4 == 0 {
                    shown.push('-');
                }
                shown.push(c);
            }
            let hash = keyed_hash(&canonical, pepper);
            (RecoveryCode(shown), hash)
        })
        .collect()
}

/// Finds which stored code `input` is, comparing against all of them in constant time.
/// The caller deletes that hash so the code cannot be used again.
pub fn verify(
    input: &str,
    stored: &[RecoveryCodeHash],
    pepper: &Pepper,
) -> Result<usize, RecoveryError> {
    let canonical = canonicalise(input).ok_or(RecoveryError::Malformed)?;
    let candidate = keyed_hash(&canonical, pepper);
    let mut found = subtle::Choice::from(0);
    let mut index = 0u64;
    for (i, hash) in (0u64..).zip(stored) {
        let hit = hash.0.ct_eq(&candidate.0);
        index.conditional_assign(&i, hit);
        found |= hit;
    }
    if bool::from(found) {
        usize::try_from(index).map_err(|_| RecoveryError::NoMatch)
    } else {
        Err(RecoveryError::NoMatch)
    }
}

fn canonicalise(input: &str) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(SYMBOLS));
    for c in input.chars() {
        let c = match c.to_ascii_uppercase() {
            ' ' | '-' | '\t' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !u8::try_from(c).is_ok_and(|b| ALPHABET.contains(&b)) {
            return None;
        }
        out.push(c);
    }
    (out.len() == SYMBOLS).then_some(out)
}

fn keyed_hash(canonical: &str, pepper: &Pepper) -> RecoveryCodeHash {
    let mut hash = [0u8; 32];
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(pepper.expose()) {
        mac.update(b"vigil recovery code v1\0");
        mac.update(canonical.as_bytes());
        hash.copy_from_slice(&mac.finalize().into_bytes());
    }
    RecoveryCodeHash(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn pepper() -> Pepper {
        Pepper::from_bytes([3; 32])
    }

    #[test]
    fn generate_ten_distinct_grouped_codes() {
        let set = generate(DEFAULT_COUNT, &pepper(), &mut StdRng::seed_from_u64(1));
        assert_eq!(set.len(), 10);
        for (code, _) in &set {
            let s = code.as_str();
            assert_eq!(s.len(), 14, "{s}");
            assert_eq!(s.split('-').map(str::len).collect::<Vec<_>>(), [4, 4, 4]);
        }
        let mut hashes: Vec<_> = set.iter().map(|(_, h)| *h.as_bytes()).collect();
        hashes.sort();
        hashes.dedup();
        assert_eq!(hashes.len(), 10);
    }

    #[test]
    fn verify_finds_the_code_used() {
        let set = generate(DEFAULT_COUNT, &pepper(), &mut StdRng::seed_from_u64(2));
        let stored: Vec<_> = set.iter().map(|(_, h)| *h).collect();
        for (i, (code, _)) in set.iter().enumerate() {
            assert_eq!(verify(code.as_str(), &stored, &pepper()), Ok(i));
        }
        // Forgiving input: lower case, spaces, no dashes.
        let code = set[7].0.as_str().to_lowercase().replace('-', " ");
        assert_eq!(verify(&code, &stored, &pepper()), Ok(7));
        // Once removed by the caller, the code is refused.
        let mut remaining = stored.clone();
        remaining.remove(7);
        assert_eq!(
            verify(set[7].0.as_str(), &remaining, &pepper()),
            Err(RecoveryError::NoMatch)
        );
        // Another pepper never matches.
        let other = Pepper::from_bytes([4; 32]);
        assert_eq!(
            verify(set[0].0.as_str(), &stored, &other),
            Err(RecoveryError::NoMatch)
        );
    }

    #[test]
    fn confusable_letters_and_malformed_input() {
        assert_eq!(
            canonicalise("o1il-OOOO-2222")
                .as_deref()
                .map(String::as_str),
            Some("011100002222")
        );
        for bad in [
            "",
            "ABCD-EFGH",
            "ABCD-EFGH-JKMN-P",
            "ABCD-EFGH-JKMU",
            "ABCD-EFGH-JKÉ1",
        ] {
            assert_eq!(
                verify(bad, &[], &pepper()),
                Err(RecoveryError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            format!(
                "{:?}",
                generate(1, &pepper(), &mut StdRng::seed_from_u64(3))[0].0
            ),
            "RecoveryCode(<redacted>)"
        );
    }

    proptest! {
        #[test]
        fn round_trip(seed in any::<u64>(), pick in 0usize..DEFAULT_COUNT) {
            let set = generate(DEFAULT_COUNT, &pepper(), &mut StdRng::seed_from_u64(seed));
            let stored: Vec<_> = set.iter().map(|(_, h)| *h).collect();
            prop_assert_eq!(verify(set[pick].0.as_str(), &stored, &pepper()), Ok(pick));
        }
    }
}
