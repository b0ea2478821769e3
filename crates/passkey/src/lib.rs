//! Passkeys (WebAuthn) as a thin, typed wrapper over `webauthn-rs`: the two halves of a
//! registration or sign-in ceremony, with the state in between as opaque bytes the caller
//! keeps server-side (sealed, single-use, short-lived) and the stored passkeys as opaque bytes.
//!
//! Architecture Invariant: no IO, no clock, no HTTP. Everything crossing this API is bytes or
//! `serde_json::Value`, so no `webauthn-rs` type leaks to callers.
//!
//! User verification is required for every ceremony (a passkey is a whole sign-in, not a
//! second factor); discoverable credentials are preferred, not required.

use serde_json::Value;
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, WebauthnError,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

/// The relying party: one site, one origin.
pub struct Passkeys {
    webauthn: Webauthn,
}

impl std::fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passkeys")
            .field("origins", &self.webauthn.get_allowed_origins())
            .finish()
    }
}

/// Why a ceremony failed. Messages carry no user data.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error("invalid relying party: {0}")]
    Config(String),
    #[error("the passkey response was refused: {0}")]
    Refused(String),
    #[error("stored passkey data is corrupt")]
    Corrupt,
    #[error("user verification is required")]
    UserVerificationRequired,
}

/// A freshly registered passkey, to store with the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPasskey {
    /// The credential id: must be unique across all accounts (the caller checks).
    pub credential_id: Vec<u8>,
    /// The serialised `webauthn_rs` `Passkey` (JSON bytes): public key, counter, flags.
    pub data: Vec<u8>,
}

/// A successful sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Which of the account's passkeys was used.
    pub credential_id: Vec<u8>,
    /// Some(new data) when the stored passkey must be updated (counter/backup state).
    pub updated: Option<Vec<u8>>,
}

impl Passkeys {
    /// `rp_id` e.g. `"localhost"` or `"vigil.example"`; `origin` e.g.
    /// `"https://vigil.example"` or `"http://localhost:8080"`; `rp_name` is shown by the
    /// authenticator.
    ///
    /// The origin must be `https`, or `http` on `localhost` (which browsers treat as secure),
    /// with no path, query, fragment or credentials, and its host must be `rp_id` or a
    /// subdomain of it. Ports are matched exactly, except that `http://localhost` written
    /// without a port accepts any port (for tests and local development).
    pub fn new(rp_id: &str, origin: &str, rp_name: &str) -> Result<Passkeys, PasskeyError> {
        let config = |reason: &str| PasskeyError::Config(reason.to_owned());
        let url = Url::parse(origin).map_err(|_| config("origin is not a URL"))?;
        let host = url.host_str().ok_or_else(|| config("origin has no host"))?;
        let localhost = host == "localhost";
        match url.scheme() {
            "https" => {}
            "http" if localhost => {}
            _ => return Err(config("origin must be https (or http on localhost)")),
        }
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
            || !matches!(url.path(), "" | "/")
            || origin.ends_with('/')
        {
            return Err(config("origin must be scheme://host[:port] only"));
        }
        if rp_id.is_empty() || rp_name.trim().is_empty() {
            return Err(config("relying party id and name must not be empty"));
        }
        let any_port = localhost && url.port().is_none();
        let webauthn = WebauthnBuilder::new(rp_id, &url)
            .map_err(|_| config("origin is not within the relying party id"))?
            .rp_name(rp_name)
            .allow_any_port(any_port)
            .build()
            .map_err(|error| PasskeyError::Config(error.to_string()))?;
        Ok(Passkeys { webauthn })
    }

    /// Starts registering a passkey for the account whose id is `user_handle`.
    /// `exclude`: credential ids the account already has, so an authenticator is not
    /// registered twice. Returns the options for the browser (`{"publicKey": …}` with binary
    /// fields base64url-encoded) and the state to keep server-side for
    /// [`Passkeys::finish_registration`].
    pub fn start_registration(
        &self,
        user_handle: [u8; 16],
        username: &str,
        display_name: &str,
        exclude: &[Vec<u8>],
    ) -> Result<(Value, Vec<u8>), PasskeyError> {
        let exclude = (!exclude.is_empty()).then(|| exclude.to_vec());
        let (options, state) = self
            .webauthn
            .start_passkey_registration(
                Uuid::from_bytes(user_handle),
                username,
                display_name,
                exclude,
            )
            .map_err(refused)?;
        let mut options = serde_json::to_value(options).map_err(|_| PasskeyError::Corrupt)?;
        // webauthn-rs asks for a non-discoverable credential; we prefer a discoverable one
        // (username-less sign-in later) without requiring it, since many security keys have
        // little room. The server-side check does not depend on this setting.
        if let Some(selection) = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(Value::as_object_mut)
        {
            selection.insert("residentKey".to_owned(), Value::from("preferred"));
            selection.insert("requireResidentKey".to_owned(), Value::from(false));
        }
        let state = serde_json::to_vec(&state).map_err(|_| PasskeyError::Corrupt)?;
        Ok((options, state))
    }

    /// Checks the browser's `RegisterPublicKeyCredential` against the state from
    /// [`Passkeys::start_registration`].
    pub fn finish_registration(
        &self,
        state: &[u8],
        response: &Value,
    ) -> Result<NewPasskey, PasskeyError> {
        let state: PasskeyRegistration =
            serde_json::from_slice(state).map_err(|_| PasskeyError::Corrupt)?;
        let response: RegisterPublicKeyCredential = serde_json::from_value(response.clone())
            .map_err(|_| PasskeyError::Refused("malformed credential".to_owned()))?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(&response, &state)
            .map_err(refused)?;
        Ok(NewPasskey {
            credential_id: passkey.cred_id().clone(),
            data: serde_json::to_vec(&passkey).map_err(|_| PasskeyError::Corrupt)?,
        })
    }

    /// Starts a sign-in with the account's passkeys (`stored`: their `data`). Returns the
    /// options for the browser (`{"publicKey": …}`) and the state to keep server-side.
    /// With no passkeys the options have an empty `allowCredentials` and no answer can
    /// succeed, so a caller can answer alike for accounts with and without passkeys.
    pub fn start_authentication(
        &self,
        stored: &[Vec<u8>],
    ) -> Result<(Value, Vec<u8>), PasskeyError> {
        let passkeys = parse_stored(stored)?;
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(refused)?;
        let options = serde_json::to_value(options).map_err(|_| PasskeyError::Corrupt)?;
        let state = serde_json::to_vec(&state).map_err(|_| PasskeyError::Corrupt)?;
        Ok((options, state))
    }

    /// Checks the browser's `PublicKeyCredential` against the state from
    /// [`Passkeys::start_authentication`]; `stored` is the same account's passkeys, used to
    /// report which one signed and whether its stored data must be updated.
    pub fn finish_authentication(
        &self,
        state: &[u8],
        response: &Value,
        stored: &[Vec<u8>],
    ) -> Result<Authenticated, PasskeyError> {
        let state: PasskeyAuthentication =
            serde_json::from_slice(state).map_err(|_| PasskeyError::Corrupt)?;
        let passkeys = parse_stored(stored)?;
        let response: PublicKeyCredential = serde_json::from_value(response.clone())
            .map_err(|_| PasskeyError::Refused("malformed credential".to_owned()))?;
        let result = self
            .webauthn
            .finish_passkey_authentication(&response, &state)
            .map_err(refused)?;
        // The state only allows the passkeys it was started with; the one used must still be
        // among the stored ones (it may have been removed in between).
        let mut passkey = passkeys
            .into_iter()
            .find(|passkey| passkey.cred_id() == result.cred_id())
            .ok_or_else(|| PasskeyError::Refused("unknown credential".to_owned()))?;
        let updated = match passkey.update_credential(&result) {
            Some(true) => Some(serde_json::to_vec(&passkey).map_err(|_| PasskeyError::Corrupt)?),
            _ => None,
        };
        Ok(Authenticated {
            credential_id: result.cred_id().clone(),
            updated,
        })
    }
}

fn parse_stored(stored: &[Vec<u8>]) -> Result<Vec<Passkey>, PasskeyError> {
    stored
        .iter()
        .map(|data| serde_json::from_slice(data).map_err(|_| PasskeyError::Corrupt))
        .collect()
}

/// webauthn-rs errors name the failed check (no user data); they become `Refused`, except a
/// missing user verification, which callers report differently.
fn refused(error: WebauthnError) -> PasskeyError {
    match error {
        WebauthnError::UserNotVerified => PasskeyError::UserVerificationRequired,
        other => PasskeyError::Refused(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn localhost() -> Passkeys {
        Passkeys::new("localhost", "http://localhost:8080", "Vigil").unwrap()
    }

    #[test]
    fn origins() {
        for (rp_id, origin) in [
            ("localhost", "http://localhost:8080"),
            ("localhost", "http://localhost:39211"),
            ("localhost", "http://localhost"),
            ("localhost", "https://localhost:8443"),
            ("vigil.example", "https://vigil.example"),
            ("vigil.example", "https://app.vigil.example"),
            ("vigil.example", "https://vigil.example:8443"),
        ] {
            Passkeys::new(rp_id, origin, "Vigil").unwrap_or_else(|e| panic!("{origin}: {e}"));
        }
        for (rp_id, origin) in [
            ("vigil.example", "http://vigil.example"),
            ("vigil.example", "https://evil.example"),
            ("vigil.example", "https://notvigil.example"),
            ("app.vigil.example", "https://vigil.example"),
            ("vigil.example", "https://vigil.example/login"),
            ("vigil.example", "https://vigil.example/"),
            ("vigil.example", "https://vigil.example?x=1"),
            ("vigil.example", "https://user@vigil.example"),
            ("vigil.example", "ftp://vigil.example"),
            ("vigil.example", "vigil.example"),
            ("127.0.0.1", "http://127.0.0.1:8080"),
            ("localhost", "http://127.0.0.1:8080"),
            ("", "https://vigil.example"),
        ] {
            assert!(
                matches!(
                    Passkeys::new(rp_id, origin, "Vigil"),
                    Err(PasskeyError::Config(_))
                ),
                "{rp_id} {origin}"
            );
        }
        assert!(Passkeys::new("localhost", "http://localhost", " ").is_err());
    }

    #[test]
    fn registration_options() {
        let handle = [7u8; 16];
        let (options, state) = localhost()
            .start_registration(handle, "kim", "Soo-ah Kim", &[vec![1, 2, 3]])
            .unwrap();
        let public_key = &options["publicKey"];
        assert_eq!(public_key["rp"]["id"], "localhost");
        assert_eq!(public_key["rp"]["name"], "Vigil");
        assert_eq!(public_key["user"]["name"], "kim");
        assert_eq!(public_key["user"]["displayName"], "Soo-ah Kim");
        // user.id is the handle, base64url without padding.
        assert_eq!(public_key["user"]["id"], "BwcHBwcHBwcHBwcHBwcHBw");
        let selection = &public_key["authenticatorSelection"];
        assert_eq!(selection["userVerification"], "required");
        assert_eq!(selection["residentKey"], "preferred");
        assert_eq!(selection["requireResidentKey"], false);
        assert_eq!(public_key["excludeCredentials"][0]["id"], "AQID");
        assert!(public_key["challenge"].as_str().unwrap().len() >= 43);
        assert!(!state.is_empty());

        let (again, _) = localhost()
            .start_registration(handle, "kim", "Soo-ah Kim", &[])
            .unwrap();
        assert_ne!(again["publicKey"]["challenge"], public_key["challenge"]);
    }

    #[test]
    fn corrupt_state_and_garbage_responses_are_refused() {
        let passkeys = localhost();
        let (_, state) = passkeys
            .start_registration([1; 16], "kim", "Kim", &[])
            .unwrap();
        assert!(matches!(
            passkeys.finish_registration(b"not json", &json!({})),
            Err(PasskeyError::Corrupt)
        ));
        assert!(matches!(
            passkeys.finish_registration(&state[1..], &json!({})),
            Err(PasskeyError::Corrupt)
        ));
        assert!(matches!(
            passkeys.finish_registration(&state, &json!({"id": "x"})),
            Err(PasskeyError::Refused(_))
        ));
        let fake = json!({
            "id": "AQID",
            "rawId": "AQID",
            "type": "public-key",
            "response": {
                "attestationObject": "o2NmbXRkbm9uZQ",
                "clientDataJSON": "e30",
            },
            "extensions": {},
        });
        assert!(matches!(
            passkeys.finish_registration(&state, &fake),
            Err(PasskeyError::Refused(_))
        ));

        // No passkeys: options still come back (callers may want to hide that the
        // account has none), but no answer can succeed.
        let (_, empty) = passkeys.start_authentication(&[]).unwrap();
        assert!(matches!(
            passkeys.finish_authentication(&empty, &json!({"id": "AQID"}), &[]),
            Err(PasskeyError::Refused(_))
        ));
        assert!(matches!(
            passkeys.start_authentication(&[b"{}".to_vec()]),
            Err(PasskeyError::Corrupt)
        ));
        assert!(matches!(
            passkeys.finish_authentication(b"[]", &json!({}), &[]),
            Err(PasskeyError::Corrupt)
        ));
    }
}
