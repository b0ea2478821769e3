//! Short-lived TURN credentials in the TURN REST API form that coturn's
//! `use-auth-secret` mode checks: the username is `expiry:participant-id`
//! and the password is `base64(HMAC-SHA1(shared-secret, username))`.
//!
//! Vigil mints these per participant, only after admission, and again on
//! reconnect; coturn verifies them with the same shared secret and refuses
//! them once `expiry` has passed. `verify` is the same check in Rust, for
//! tests and for any relay Vigil fronts itself.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use subtle::ConstantTimeEq as _;

/// How long a credential lives unless the caller says otherwise: about ten
/// minutes, enough to set up a call; a reconnect mints a fresh one.
pub const DEFAULT_TTL_SECS: i64 = 600;

/// The longest participant id accepted, so usernames stay small.
pub const MAX_PARTICIPANT_ID_LEN: usize = 128;

/// A TURN username and password for one participant, valid until `expires`
/// (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnCredential {
    /// `"{expires}:{participant_id}"`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub credential: String,
    /// Lifetime in seconds from minting.
    pub ttl: i64,
    /// Unix seconds after which the relay refuses the credential.
    pub expires: i64,
}

/// Why a credential could not be minted or was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    #[error("the TURN shared secret is empty")]
    EmptySecret,
    #[error("participant id must be 1 to 128 printable ASCII characters without ':'")]
    InvalidParticipantId,
    #[error("credential lifetime must be positive")]
    InvalidTtl,
    #[error("malformed TURN username")]
    Malformed,
    #[error("TURN credential does not match")]
    BadCredential,
    #[error("TURN credential expired")]
    Expired,
}

fn valid_participant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_PARTICIPANT_ID_LEN
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

fn sign(secret: &[u8], username: &str) -> Result<String, TurnError> {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).map_err(|_| TurnError::EmptySecret)?;
    mac.update(username.as_bytes());
    Ok(STANDARD.encode(mac.finalize().into_bytes()))
}

/// Mints a credential for `participant_id` valid for `ttl_secs` from `now`
/// (use [`DEFAULT_TTL_SECS`] unless there is a reason not to).
pub fn mint(
    secret: &[u8],
    participant_id: &str,
    now: i64,
    ttl_secs: i64,
) -> Result<TurnCredential, TurnError> {
    if secret.is_empty() {
        return Err(TurnError::EmptySecret);
    }
    if !valid_participant_id(participant_id) {
        return Err(TurnError::InvalidParticipantId);
    }
    if ttl_secs <= 0 {
        return Err(TurnError::InvalidTtl);
    }
    let expires = now.checked_add(ttl_secs).ok_or(TurnError::InvalidTtl)?;
    let username = format!("{expires}:{participant_id}");
    let credential = sign(secret, &username)?;
    Ok(TurnCredential {
        username,
        credential,
        ttl: ttl_secs,
        expires,
    })
}

/// Checks a username and password as coturn does: well formed, signed with
/// `secret` (compared in constant time), and `now` before the expiry.
///
/// The signature is checked before the expiry so an unsigned username learns
/// nothing about which check it failed beyond "malformed".
pub fn verify(secret: &[u8], username: &str, credential: &str, now: i64) -> Result<(), TurnError> {
    if secret.is_empty() {
        return Err(TurnError::EmptySecret);
    }
    let (expiry, participant) = username.split_once(':').ok_or(TurnError::Malformed)?;
    let expiry_ok = !expiry.is_empty() && expiry.bytes().all(|b| b.is_ascii_digit());
    let expires: i64 = if expiry_ok {
        expiry.parse().map_err(|_| TurnError::Malformed)?
    } else {
        return Err(TurnError::Malformed);
    };
    if !valid_participant_id(participant) {
        return Err(TurnError::Malformed);
    }
    let expected = sign(secret, username)?;
    if !bool::from(expected.as_bytes().ct_eq(credential.as_bytes())) {
        return Err(TurnError::BadCredential);
    }
    if now >= expires {
        return Err(TurnError::Expired);
    }
    Ok(())
}

/// The STUN and TURN servers configured for the deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceConfig {
    /// `stun:` / `stuns:` URLs, given to everyone without credentials.
    pub stun_urls: Vec<String>,
    /// `turn:` / `turns:` URLs, given with the participant's credential.
    pub turn_urls: Vec<String>,
}

/// One entry of `RTCConfiguration.iceServers`, serialised exactly as the
/// browser's `RTCPeerConnection` expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The `iceServers` list for one participant: the STUN servers, then the
/// TURN servers with `credential`. Empty URL lists produce no entry, and
/// URLs whose scheme does not fit their list are dropped, so a
/// misconfiguration never hands a TURN password to a STUN entry or the
/// reverse.
pub fn ice_servers(config: &IceConfig, credential: &TurnCredential) -> Vec<IceServer> {
    let stun: Vec<String> = config
        .stun_urls
        .iter()
        .filter(|u| u.starts_with("stun:") || u.starts_with("stuns:"))
        .cloned()
        .collect();
    let turn: Vec<String> = config
        .turn_urls
        .iter()
        .filter(|u| u.starts_with("turn:") || u.starts_with("turns:"))
        .cloned()
        .collect();
    let mut servers = Vec::new();
    if !stun.is_empty() {
        servers.push(IceServer {
            urls: stun,
            username: None,
            credential: None,
        });
    }
    if !turn.is_empty() {
        servers.push(IceServer {
            urls: turn,
            username: Some(credential.username.clone()),
            credential: Some(credential.credential.clone()),
        });
    }
    servers
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"north-star-secret";

    #[test]
    fn known_vector() {
        // Computed independently with Python's standard library:
        // python3 -c 'import hmac,hashlib,base64;u="1700000600:p-123";
        //   print(base64.b64encode(hmac.new(b"north-star-secret",u.encode(),hashlib.sha1).digest()).decode())'
        let c = mint(SECRET, "p-123", 1_700_000_000, DEFAULT_TTL_SECS).unwrap();
        assert_eq!(c.username, "1700000600:p-123");
        assert_eq!(c.credential, "5vbbxIZVGyZMxMKCErKrQuST3fc=");
        assert_eq!(c.ttl, 600);
        assert_eq!(c.expires, 1_700_000_600);
    }

    #[test]
    fn round_trip_and_expiry() {
        let c = mint(SECRET, "p-1", 1000, 600).unwrap();
        assert_eq!(verify(SECRET, &c.username, &c.credential, 1000), Ok(()));
        assert_eq!(verify(SECRET, &c.username, &c.credential, 1599), Ok(()));
        assert_eq!(
            verify(SECRET, &c.username, &c.credential, 1600),
            Err(TurnError::Expired)
        );
        assert_eq!(
            verify(b"other", &c.username, &c.credential, 1000),
            Err(TurnError::BadCredential)
        );
        // Extending the expiry without re-signing is refused.
        assert_eq!(
            verify(SECRET, "9999999999:p-1", &c.credential, 1000),
            Err(TurnError::BadCredential)
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            mint(SECRET, "a:b", 0, 600),
            Err(TurnError::InvalidParticipantId)
        );
        assert_eq!(
            mint(SECRET, "", 0, 600),
            Err(TurnError::InvalidParticipantId)
        );
        assert_eq!(
            mint(SECRET, "a b", 0, 600),
            Err(TurnError::InvalidParticipantId)
        );
        assert_eq!(mint(SECRET, "p", 0, 0), Err(TurnError::InvalidTtl));
        assert_eq!(mint(SECRET, "p", i64::MAX, 1), Err(TurnError::InvalidTtl));
        assert_eq!(mint(b"", "p", 0, 600), Err(TurnError::EmptySecret));
        for bad in ["", "p", ":p", "12:", "-5:p", "1x:p", "12:a:b", "+1:p"] {
            assert_eq!(
                verify(SECRET, bad, "x", 0),
                Err(TurnError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn ice_servers_json_shape() {
        let c = mint(SECRET, "p-123", 1_700_000_000, 600).unwrap();
        let config = IceConfig {
            stun_urls: vec!["stun:turn.example.org:3478".into(), "turn:wrong".into()],
            turn_urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
        };
        let json = serde_json::to_string(&ice_servers(&config, &c)).unwrap();
        assert_eq!(
            json,
            r#"[{"urls":["stun:turn.example.org:3478"]},{"urls":["turn:turn.example.org:3478?transport=udp"],"username":"1700000600:p-123","credential":"5vbbxIZVGyZMxMKCErKrQuST3fc="}]"#
        );
        assert!(ice_servers(&IceConfig::default(), &c).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn mint_then_verify(id in "[a-zA-Z0-9_-]{1,40}", now in 0i64..4_000_000_000, ttl in 1i64..100_000) {
            let c = mint(SECRET, &id, now, ttl).unwrap();
            proptest::prop_assert_eq!(verify(SECRET, &c.username, &c.credential, now), Ok(()));
            proptest::prop_assert_eq!(verify(SECRET, &c.username, &c.credential, now + ttl), Err(TurnError::Expired));
        }
    }
}
