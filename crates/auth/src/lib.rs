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
