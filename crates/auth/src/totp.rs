//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP), HMAC-SHA1.
//!
//! Vigil's codes are 6 digits over 30-second steps with a 160-bit secret, which is what
//! authenticator apps expect. A code is accepted for the current step ±1, and each step at
//! most once: the caller stores the accepted step and passes it back as `last_used_step`.

use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of a TOTP secret: 160 bits, as RFC 4226 §4 recommends.
pub const SECRET_LEN: usize = 20;

/// A TOTP shared secret; redacted in `Debug`, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TotpSecret([u8; SECRET_LEN]);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

impl TotpSecret {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> TotpSecret {
        let mut bytes = [0u8; SECRET_LEN];
        rng.fill_bytes(&mut bytes);
        TotpSecret(bytes)
    }

    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> TotpSecret {
        TotpSecret(bytes)
    }

    /// The raw bytes, for storing (encrypted) by the caller.
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// RFC 4648 base32 without padding, as authenticator apps read it.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32(&self.0))
    }
}

/// Digits and step length; [`TotpConfig::default`] is Vigil's (6 digits, 30 s, ±1 step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpConfig {
    digits: u32,
    period: u64,
    skew_steps: u64,
}

impl Default for TotpConfig {
    fn default() -> TotpConfig {
        TotpConfig {
            digits: 6,
            period: 30,
            skew_steps: 1,
        }
    }
}

/// Why a TOTP code was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("the code must be {digits} digits")]
    Malformed { digits: u32 },
    #[error("wrong code")]
    Invalid,
    #[error("this code was already used")]
    Replayed,
    #[error("invalid TOTP configuration")]
    InvalidConfig,
}

impl TotpConfig {
    /// `digits` in 6..=8 (RFC 4226 §5.3), `period` at least one second, `skew_steps` at most 2.
    pub fn new(digits: u32, period: u64, skew_steps: u64) -> Result<TotpConfig, TotpError> {
        if !(6..=8).contains(&digits) || period == 0 || skew_steps > 2 {
            return Err(TotpError::InvalidConfig);
        }
        Ok(TotpConfig {
            digits,
            period,
            skew_steps,
        })
    }

    pub fn digits(&self) -> u32 {
        self.digits
    }

    pub fn period(&self) -> u64 {
        self.period
    }

    /// The time step containing `now_unix`.
    pub fn step(&self, now_unix: u64) -> u64 {
        now_unix / self.period
    }

    /// The code for a time step.
    pub fn code_at_step(
        &self,
        secret: &TotpSecret,
        step: u64,
    ) -> Result<Zeroizing<String>, TotpError> {
        hotp(&secret.0, step, self.digits)
    }

    /// The code for the step containing `now_unix`.
    pub fn code(&self, secret: &TotpSecret, now_unix: u64) -> Result<Zeroizing<String>, TotpError> {
        self.code_at_step(secret, self.step(now_unix))
    }

    /// Verifies a code typed at `now_unix`; spaces are ignored. Returns the accepted step,
    /// which the caller stores and passes back as `last_used_step` next time: any step at or
    /// before it is refused, so each code is accepted once.
    pub fn verify(
        &self,
        code: &str,
        secret: &TotpSecret,
        now_unix: u64,
        last_used_step: Option<u64>,
    ) -> Result<u64, TotpError> {
        let code: Zeroizing<String> =
            Zeroizing::new(code.chars().filter(|c| !c.is_whitespace()).collect());
        let digits = usize::try_from(self.digits).map_err(|_| TotpError::InvalidConfig)?;
        if code.len() != digits || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TotpError::Malformed {
                digits: self.digits,
            });
        }
        let now = self.step(now_unix);
        let (mut fresh, mut replayed) = (None, false);
        // Every candidate is computed and compared, so timing does not reveal which matched.
        for step in now.saturating_sub(self.skew_steps)..=now.saturating_add(self.skew_steps) {
            let expected = self.code_at_step(secret, step)?;
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                if last_used_step.is_some_and(|last| step <= last) {
                    replayed = true;
                } else {
                    fresh = Some(step);
                }
            }
        }
        match (fresh, replayed) {
            (Some(step), _) => Ok(step),
            (None, true) => Err(TotpError::Replayed),
            (None, false) => Err(TotpError::Invalid),
        }
    }

    /// The `otpauth://` URI an authenticator app scans, for `account` (the user name).
    pub fn otpauth_uri(&self, secret: &TotpSecret, account: &str) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "otpauth://totp/Vigil:{}?secret={}&issuer=Vigil&algorithm=SHA1&digits={}&period={}",
            crate::percent_encode(account),
            secret.to_base32().as_str(),
            self.digits,
            self.period
        ))
    }
}

/// Verifies a code with Vigil's defaults; see [`TotpConfig::verify`].
pub fn verify(
    code: &str,
    secret: &TotpSecret,
    now_unix: u64,
    last_used_step: Option<u64>,
) -> Result<u64, TotpError> {
    TotpConfig::default().verify(code, secret, now_unix, last_used_step)
}

/// RFC 4226 HOTP with dynamic truncation.
fn hotp(key: &[u8], counter: u64, digits: u32) -> Result<Zeroizing<String>, TotpError> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).map_err(|_| TotpError::InvalidConfig)?;
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash.get(19).copied().unwrap_or(0) & 0x0f);
    let word: [u8; 4] = hash
        .get(offset..offset + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or(TotpError::InvalidConfig)?;
    let binary = u32::from_be_bytes(word) & 0x7fff_ffff;
    let modulus = 10u32.checked_pow(digits).ok_or(TotpError::InvalidConfig)?;
    let width = usize::try_from(digits).map_err(|_| TotpError::InvalidConfig)?;
    Ok(Zeroizing::new(format!("{:0width$}", binary % modulus)))
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            push_base32(&mut out, (buffer >> bits) & 0x1f);
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        push_base32(&mut out, (buffer << (5 - bits)) & 0x1f);
    }
    out
}

fn push_base32(out: &mut String, index: u32) {
    if let Some(&c) = usize::try_from(index).ok().and_then(|i| BASE32.get(i)) {
        out.push(char::from(c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(*b"12345678901234567890")
    }

    #[test]
    fn rfc6238_appendix_b_sha1() {
        let config = TotpConfig::new(8, 30, 1).unwrap();
        for (time, expected) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(
                config.code(&rfc_secret(), time).unwrap().as_str(),
                expected,
                "T={time}"
            );
            assert_eq!(
                config.verify(expected, &rfc_secret(), time, None),
                Ok(time / 30)
            );
        }
    }

    #[test]
    fn rfc4226_appendix_d_hotp() {
        let expected = ["755224", "287082", "359152", "969429", "338314"];
        for (counter, code) in (0u64..).zip(expected) {
            assert_eq!(
                hotp(b"12345678901234567890", counter, 6).unwrap().as_str(),
                code
            );
        }
    }

    #[test]
    fn window_is_plus_minus_one_step() {
        let s = rfc_secret();
        let c = TotpConfig::default();
        let now = 1_000_000_020;
        let step = c.step(now);
        for delta in [-1i64, 0, 1] {
            let at = step.checked_add_signed(delta).unwrap();
            let code = c.code_at_step(&s, at).unwrap();
            assert_eq!(verify(&code, &s, now, None), Ok(at));
        }
        for at in [step - 2, step + 2] {
            let code = c.code_at_step(&s, at).unwrap();
            assert_eq!(verify(&code, &s, now, None), Err(TotpError::Invalid));
        }
    }

    #[test]
    fn replay_refused() {
        let s = rfc_secret();
        let now = 1_700_000_000;
        let code = TotpConfig::default().code(&s, now).unwrap();
        let step = verify(&code, &s, now, None).unwrap();
        assert_eq!(verify(&code, &s, now, Some(step)), Err(TotpError::Replayed));
        assert_eq!(
            verify(&code, &s, now + 29, Some(step)),
            Err(TotpError::Replayed)
        );
        // An older code still inside the window is refused once a later step was used.
        let previous = TotpConfig::default().code_at_step(&s, step - 1).unwrap();
        assert_eq!(
            verify(&previous, &s, now, Some(step)),
            Err(TotpError::Replayed)
        );
        // The next step's code is fresh.
        let next = TotpConfig::default().code_at_step(&s, step + 1).unwrap();
        assert_eq!(verify(&next, &s, now + 30, Some(step)), Ok(step + 1));
    }

    #[test]
    fn malformed_codes() {
        let s = rfc_secret();
        for code in ["", "12345", "1234567", "12a456", "١٢٣٤٥٦"] {
            assert_eq!(
                verify(code, &s, 59, None),
                Err(TotpError::Malformed { digits: 6 }),
                "{code}"
            );
        }
        let code = TotpConfig::default().code(&s, 59).unwrap();
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(verify(&spaced, &s, 59, None), Ok(1));
    }

    #[test]
    fn config_limits() {
        assert_eq!(TotpConfig::new(5, 30, 1), Err(TotpError::InvalidConfig));
        assert_eq!(TotpConfig::new(9, 30, 1), Err(TotpError::InvalidConfig));
        assert_eq!(TotpConfig::new(6, 0, 1), Err(TotpError::InvalidConfig));
        assert_eq!(TotpConfig::new(6, 30, 1), Ok(TotpConfig::default()));
    }

    #[test]
    fn base32_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()), expected);
        }
        assert_eq!(
            rfc_secret().to_base32().as_str(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn otpauth_uri_and_redaction() {
        let uri = TotpConfig::default().otpauth_uri(&rfc_secret(), "j doe@example");
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/Vigil:j%20doe%40example?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Vigil&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(format!("{:?}", rfc_secret()), "TotpSecret(<redacted>)");
    }

    proptest! {
        #[test]
        fn round_trip(seed in any::<u64>(), now in 0u64..=u64::MAX / 2) {
            let s = TotpSecret::generate(&mut StdRng::seed_from_u64(seed));
            let c = TotpConfig::default();
            let code = c.code(&s, now).unwrap();
            prop_assert_eq!(code.len(), 6);
            prop_assert_eq!(c.verify(&code, &s, now, None), Ok(c.step(now)));
            prop_assert_eq!(c.verify(&code, &s, now, Some(c.step(now))), Err(TotpError::Replayed));
        }
    }
}
