//! Invite links and the identity check behind them.
//!
//! An invite token is `base64url(payload) "." base64url(tag)`, where the
//! payload names one room, one invite and an expiry, and the tag is
//! HMAC-SHA-256 under a 32-byte key. The payload holds opaque ids only, no
//! name, date of birth or appointment details, because links travel through
//! e-mail and SMS and are opened by scanners and link previews.
//!
//! **Parsing never consumes an invite.** [`parse`] is a pure function of
//! the key, the token and the time: a GET of the link (by a person, a mail
//! scanner or a chat app's preview bot) may parse it any number of times and
//! the link still works afterwards. Only the identity check, a POST, changes
//! state, and only the [`CheckState`] the caller stores for that invite.
//!
//! The identity check is a date of birth or a one-time code. After
//! [`MAX_FAILURES`] failures the invite is locked: further attempts fail
//! without comparing anything, so a locked invite cannot be brute-forced and
//! the clinician issues a new one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use rand::{CryptoRng, Rng as _, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// Failures after which an invite is locked.
pub const MAX_FAILURES: u8 = 5;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 512;

/// The longest room or invite id accepted.
pub const MAX_ID_LEN: usize = 64;

/// Domain separation: a tag made for anything else under the same key never
/// verifies as an invite.
const TAG_CONTEXT: &[u8] = b"vigil/consult/invite/v1\0";

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteClaims {
    pub room_id: String,
    pub invite_id: String,
    /// Unix seconds; the token is refused from this instant on.
    pub expires: i64,
}

/// The signed payload. Field names are short because the token is a URL.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    v: u8,
    r: String,
    i: String,
    e: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    #[error("room and invite ids must be 1 to 64 characters of [A-Za-z0-9_-]")]
    InvalidId,
    #[error("invite expiry must be in the future")]
    InvalidExpiry,
    #[error("malformed invite token")]
    Malformed,
    #[error("invite token signature does not verify")]
    BadSignature,
    #[error("invite expired")]
    Expired,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn mac(key: &[u8; 32], payload_b64: &str) -> Result<Hmac<Sha256>, InviteError> {
    // HMAC accepts keys of any length, so this never fails; the error arm
    // keeps non-test code free of `expect`.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| InviteError::Malformed)?;
    mac.update(TAG_CONTEXT);
    mac.update(payload_b64.as_bytes());
    Ok(mac)
}

/// Issuing and reading invite tokens.
pub struct Invite;

impl Invite {
    /// Issues a URL-safe token for `invite_id` into `room_id`, valid until
    /// `expires` (Unix seconds, after `now`).
    pub fn issue(
        key: &[u8; 32],
        room_id: &str,
        invite_id: &str,
        expires: i64,
        now: i64,
    ) -> Result<String, InviteError> {
        if !valid_id(room_id) || !valid_id(invite_id) {
            return Err(InviteError::InvalidId);
        }
        if expires <= now {
            return Err(InviteError::InvalidExpiry);
        }
        let payload = Payload {
            v: 1,
            r: room_id.to_owned(),
            i: invite_id.to_owned(),
            e: expires,
        };
        let json = serde_json::to_vec(&payload).map_err(|_| InviteError::Malformed)?;
        let payload_b64 = URL_SAFE_NO_PAD.encode(json);
        let tag = mac(key, &payload_b64)?.finalize().into_bytes();
        Ok(format!("{payload_b64}.{}", URL_SAFE_NO_PAD.encode(tag)))
    }
}

/// Verifies `token` under `key` and returns its claims. Pure: calling it
/// any number of times (a GET, a preview bot) uses nothing up.
///
/// The tag is checked (in constant time) before the payload is decoded, so
/// a tampered or foreign token is refused without its content being read.
pub fn parse(key: &[u8; 32], token: &str, now: i64) -> Result<InviteClaims, InviteError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(InviteError::Malformed);
    }
    let (payload_b64, tag_b64) = token.split_once('.').ok_or(InviteError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag_b64)
        .map_err(|_| InviteError::Malformed)?;
    mac(key, payload_b64)?
        .verify_slice(&tag)
        .map_err(|_| InviteError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| InviteError::Malformed)?;
    let payload: Payload = serde_json::from_slice(&json).map_err(|_| InviteError::Malformed)?;
    if payload.v != 1 || !valid_id(&payload.r) || !valid_id(&payload.i) {
        return Err(InviteError::Malformed);
    }
    if now >= payload.e {
        return Err(InviteError::Expired);
    }
    Ok(InviteClaims {
        room_id: payload.r,
        invite_id: payload.i,
        expires: payload.e,
    })
}

/// A calendar date, as a date of birth is entered and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BirthDate {
    year: u16,
    month: u8,
    day: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("not a recognised date (use YYYY-MM-DD)")]
    BadDate,
    #[error("one-time code must be 4 to 16 letters or digits")]
    BadCode,
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

fn number<T: std::str::FromStr>(s: &str, min_len: usize, max_len: usize) -> Option<T> {
    if s.len() < min_len || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl BirthDate {
    pub fn new(year: u16, month: u8, day: u8) -> Result<Self, ProofError> {
        if !(1800..=9999).contains(&year) || day == 0 || day > days_in_month(year, month) {
            return Err(ProofError::BadDate);
        }
        Ok(Self { year, month, day })
    }

    /// Reads the forms people type: `YYYY-MM-DD`, `YYYY/MM/DD`,
    /// `YYYY.MM.DD`, `YYYYMMDD`, `MM/DD/YYYY` and `MM-DD-YYYY` (the US
    /// form), and `DD.MM.YYYY` (the European dotted form). Months and days
    /// may have one digit; surrounding whitespace is ignored. A slash or
    /// dash with the year last is always read month first, a dot with the
    /// year last always day first, so no input has two readings.
    pub fn parse(input: &str) -> Result<Self, ProofError> {
        let s = input.trim();
        let bad = ProofError::BadDate;
        if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
            let (y, md) = s.split_at(4);
            let (m, d) = md.split_at(2);
            return Self::from_parts(y, m, d);
        }
        let sep = s
            .chars()
            .find(|c| matches!(c, '-' | '/' | '.'))
            .ok_or(bad)?;
        let parts: Vec<&str> = s.split(sep).collect();
        let [a, b, c] = parts.as_slice() else {
            return Err(bad);
        };
        if a.len() == 4 {
            Self::from_parts(a, b, c)
        } else if c.len() == 4 && sep == '.' {
            Self::from_parts(c, b, a)
        } else if c.len() == 4 {
            Self::from_parts(c, a, b)
        } else {
            Err(bad)
        }
    }

    fn from_parts(y: &str, m: &str, d: &str) -> Result<Self, ProofError> {
        let bad = ProofError::BadDate;
        let year = number(y, 4, 4).ok_or(bad)?;
        let month = number(m, 1, 2).ok_or(bad)?;
        let day = number(d, 1, 2).ok_or(bad)?;
        Self::new(year, month, day)
    }

    /// The normalised `YYYY-MM-DD` form.
    pub fn iso(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl std::fmt::Display for BirthDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.iso())
    }
}

/// What the person at the link proves, or what the record says they should.
#[derive(Clone, PartialEq, Eq)]
pub enum IdentityProof {
    DateOfBirth(BirthDate),
    /// Normalised: ASCII letters upper-cased, spaces and dashes removed.
    OneTimeCode(String),
}

impl std::fmt::Debug for IdentityProof {
    // A date of birth and a code are secrets of the check: never logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DateOfBirth(_) => f.write_str("DateOfBirth(<redacted>)"),
            Self::OneTimeCode(_) => f.write_str("OneTimeCode(<redacted>)"),
        }
    }
}

impl IdentityProof {
    /// A date of birth as typed (see [`BirthDate::parse`]).
    pub fn date_of_birth(input: &str) -> Result<Self, ProofError> {
        BirthDate::parse(input).map(Self::DateOfBirth)
    }

    /// A one-time code as typed: spaces and dashes are ignored, letters are
    /// compared case-insensitively.
    pub fn one_time_code(input: &str) -> Result<Self, ProofError> {
        let code: String = input
            .chars()
            .filter(|c| !matches!(c, ' ' | '-'))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if !(4..=16).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ProofError::BadCode);
        }
        Ok(Self::OneTimeCode(code))
    }

    /// A fresh 8-digit one-time code to send to the patient.
    pub fn generate_code<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self::OneTimeCode(format!("{:08}", rng.gen_range(0..100_000_000u32)))
    }

    /// The code's text, to put in the message to the patient; `None` for a
    /// date of birth.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::OneTimeCode(c) => Some(c),
            Self::DateOfBirth(_) => None,
        }
    }

    fn matches(&self, given: &Self) -> bool {
        match (self, given) {
            (Self::DateOfBirth(a), Self::DateOfBirth(b)) => {
                bool::from(a.iso().as_bytes().ct_eq(b.iso().as_bytes()))
            }
            (Self::OneTimeCode(a), Self::OneTimeCode(b)) => {
                bool::from(a.as_bytes().ct_eq(b.as_bytes()))
            }
            _ => false,
        }
    }
}

/// The identity check's state for one invite; the caller stores it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckState {
    pub failures: u8,
    pub locked: bool,
}

impl CheckState {
    /// Locked, also when a stored state says `failures >= MAX_FAILURES` but
    /// not `locked` (fail closed on an inconsistent record).
    pub fn is_locked(&self) -> bool {
        self.locked || self.failures >= MAX_FAILURES
    }
}

/// The result of one identity check attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CheckOutcome {
    /// The proof matches: the person may check in.
    Verified,
    /// Wrong; this many attempts remain before the invite locks.
    Mismatch { attempts_left: u8 },
    /// This attempt was the last allowed failure: the invite is now locked
    /// (record it; the clinician may issue a new invite).
    LockedNow,
    /// The invite was already locked; nothing was compared.
    Locked,
}

/// One identity check attempt. A locked invite refuses without comparing;
/// a mismatch (including a proof of the other kind) counts as a failure; a
/// success does not reset the count, so interleaved guesses between the
/// patient's own attempts still run out.
pub fn check(
    state: CheckState,
    expected: &IdentityProof,
    given: &IdentityProof,
) -> (CheckState, CheckOutcome) {
    if state.is_locked() {
        let locked = CheckState {
            failures: state.failures,
            locked: true,
        };
        return (locked, CheckOutcome::Locked);
    }
    if expected.matches(given) {
        return (state, CheckOutcome::Verified);
    }
    let failures = state.failures.saturating_add(1);
    if failures >= MAX_FAILURES {
        let next = CheckState {
            failures,
            locked: true,
        };
        (next, CheckOutcome::LockedNow)
    } else {
        let next = CheckState {
            failures,
            locked: false,
        };
        let attempts_left = MAX_FAILURES.saturating_sub(failures);
        (next, CheckOutcome::Mismatch { attempts_left })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn issue_parse_round_trip_and_get_is_side_effect_free() {
        let t = Invite::issue(&KEY, "room-1", "inv-1", 2000, 1000).unwrap();
        let claims = parse(&KEY, &t, 1000).unwrap();
        assert_eq!(
            claims,
            InviteClaims {
                room_id: "room-1".into(),
                invite_id: "inv-1".into(),
                expires: 2000
            }
        );
        // A preview bot's GET, then the person's: both valid.
        assert_eq!(parse(&KEY, &t, 1001).unwrap(), claims);
        assert_eq!(parse(&KEY, &t, 1002).unwrap(), claims);
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
    }

    #[test]
    fn refusals() {
        let t = Invite::issue(&KEY, "room-1", "inv-1", 2000, 1000).unwrap();
        assert_eq!(parse(&KEY, &t, 2000), Err(InviteError::Expired));
        assert_eq!(parse(&[8; 32], &t, 1000), Err(InviteError::BadSignature));
        assert_eq!(parse(&KEY, "nodot", 1000), Err(InviteError::Malformed));
        assert_eq!(
            parse(&KEY, &"a".repeat(600), 1000),
            Err(InviteError::Malformed)
        );
        assert_eq!(
            Invite::issue(&KEY, "room 1", "inv", 2000, 1000),
            Err(InviteError::InvalidId)
        );
        assert_eq!(
            Invite::issue(&KEY, "room", "inv", 1000, 1000),
            Err(InviteError::InvalidExpiry)
        );
    }

    #[test]
    fn dates() {
        for (input, iso) in [
            ("1984-03-07", "1984-03-07"),
            (" 1984/3/7 ", "1984-03-07"),
            ("1984.03.07", "1984-03-07"),
            ("19840307", "1984-03-07"),
            ("03/07/1984", "1984-03-07"),
            ("3-7-1984", "1984-03-07"),
            ("07.03.1984", "1984-03-07"),
            ("2000-02-29", "2000-02-29"),
        ] {
            assert_eq!(BirthDate::parse(input).unwrap().iso(), iso, "{input}");
        }
        for bad in [
            "",
            "1984",
            "1984-13-01",
            "1900-02-29",
            "1984-04-31",
            "84-03-07",
            "1984-03-07-1",
            "1984-3/7",
            "abcd-ef-gh",
            "1984-+3-07",
            "0000-01-01",
        ] {
            assert_eq!(BirthDate::parse(bad), Err(ProofError::BadDate), "{bad}");
        }
    }

    #[test]
    fn codes_and_debug_redaction() {
        let a = IdentityProof::one_time_code("ab12-cd34").unwrap();
        let b = IdentityProof::one_time_code("AB12 CD34").unwrap();
        assert!(a.matches(&b));
        assert!(IdentityProof::one_time_code("12").is_err());
        assert!(IdentityProof::one_time_code("12345é").is_err());
        let dob = IdentityProof::date_of_birth("1984-03-07").unwrap();
        assert!(!dob.matches(&a));
        assert!(!format!("{dob:?}").contains("1984"));
        let mut rng = rand::thread_rng();
        let code = IdentityProof::generate_code(&mut rng);
        assert_eq!(code.code().unwrap().len(), 8);
    }
}
