//! Identity, the pure part: password policy, password hashing, TOTP, recovery codes,
//! failure throttling, sessions, SMART scopes, access tokens, PKCE, client assertions
//! (`private_key_jwt`) and OpenID Connect id_tokens.
//!
//! Architecture Invariant: no IO, no clock, no HTTP or SQL. Time comes in as a parameter
//! (Unix seconds) and randomness as an RNG argument; secrets redact themselves in `Debug`
//! and are compared in constant time.

pub mod assertion;
pub mod hash;
pub mod idtoken;
pub mod password;
pub mod pkce;
pub mod recovery;
pub mod scope;
pub mod session;
pub mod throttle;
pub mod token;
pub mod totp;

/// Percent-encodes everything but RFC 3986's unreserved characters: for a
/// query parameter's value (OAuth redirects, `otpauth://` labels, `next`).
pub fn percent_encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        assert_eq!(super::percent_encode("a-b._~Z9"), "a-b._~Z9");
        assert_eq!(
            super::percent_encode("/x?y=1&z é"),
            "%2Fx%3Fy%3D1%26z%20%C3%A9"
        );
    }
}
