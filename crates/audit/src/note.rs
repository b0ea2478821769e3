//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys, and the standard
//! key strings: verifier keys `<name>+<hex key id>+<base64(0x01 ‖ public key)>` and signer
//! keys `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 ‖ seed)>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signer as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The signature type byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;

/// The most signature lines a note may carry (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// A key string or name that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Key names are non-empty and hold no spaces, no control characters and no `+`.
    #[error("invalid key name")]
    BadName,
    /// The key string does not have the expected fields.
    #[error("malformed key string")]
    Malformed,
    /// The key is not an Ed25519 key.
    #[error("unsupported key algorithm")]
    UnsupportedAlgorithm,
    /// The public key is not a valid Ed25519 point.
    #[error("invalid public key")]
    BadPublicKey,
    /// The key id in the string is not the one the name and key give.
    #[error("key id does not match the name and key")]
    KeyIdMismatch,
}

/// Why a signed note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note is not in signed-note form; the message says which rule it breaks.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("too many signatures")]
    TooManySignatures,
    /// A signature by a known key did not verify: the whole note is refused.
    #[error("invalid signature by known key {key_name}")]
    InvalidSignature {
        /// The known key's name.
        key_name: String,
    },
    /// No signature by a known key.
    #[error("no signature by a known key")]
    NoKnownSignature,
    /// The text to sign is not a valid note text.
    #[error("text cannot be signed: {0}")]
    BadText(&'static str),
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
    {
        return Err(KeyError::BadName);
    }
    Ok(())
}

/// The RECOMMENDED key id: the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key).
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(public_key);
    let digest: [u8; 32] = h.finalize().into();
    let (id, _) = digest.split_first_chunk::<4>().unwrap_or((&[0; 4], &[]));
    *id
}

/// An Ed25519 note-signing key. `Debug` shows only the name; the seed is wiped on drop.
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// The key of `name` derived from a 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(seed),
        })
    }

    /// Parses a signer key string `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 ‖ seed)>`.
    pub fn parse(skey: &str) -> Result<Self, KeyError> {
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(KeyError::Malformed)?;
        let (name, id, material) = split_key(rest)?;
        let material = Zeroizing::new(B64.decode(material).map_err(|_| KeyError::Malformed)?);
        let (alg, seed) = material.split_first().ok_or(KeyError::Malformed)?;
        if *alg != ED25519 {
            return Err(KeyError::UnsupportedAlgorithm);
        }
        let seed: &[u8; 32] = seed.try_into().map_err(|_| KeyError::Malformed)?;
        let key = Self::from_seed(name, seed)?;
        if key.key_id() != id {
            return Err(KeyError::KeyIdMismatch);
        }
        Ok(key)
    }

    /// The signer key string, for a key file.
    pub fn to_skey(&self) -> Zeroizing<String> {
        let mut material = Zeroizing::new(Vec::with_capacity(33));
        material.push(ED25519);
        material.extend_from_slice(self.key.as_bytes());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex_id(self.key_id()),
            B64.encode(material.as_slice())
        ))
    }

    /// The key's name, as it appears on signature lines.
    pub fn key_name(&self) -> &str {
        &self.name
    }

    /// The key id that prefixes this key's signatures.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, self.key.verifying_key().as_bytes())
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        let public = self.key.verifying_key();
        VerifierKey {
            name: self.name.clone(),
            id: self.key_id(),
            key: public,
        }
    }

    /// The signature line `— <name> <base64(key id ‖ signature)>\n` over `text`.
    fn signature_line(&self, text: &str) -> String {
        let signature = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.key_id());
        blob.extend_from_slice(&signature.to_bytes());
        format!("\u{2014} {} {}\n", self.name, B64.encode(blob))
    }
}

/// An Ed25519 note-verifier key, written `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: ed25519_dalek::VerifyingKey,
}

impl VerifierKey {
    /// Parses a verifier key string, checking the key id against the name and key.
    pub fn parse(vkey: &str) -> Result<Self, KeyError> {
        let (name, id, material) = split_key(vkey)?;
        let material = B64.decode(material).map_err(|_| KeyError::Malformed)?;
        let (alg, public) = material.split_first().ok_or(KeyError::Malformed)?;
        if *alg != ED25519 {
            return Err(KeyError::UnsupportedAlgorithm);
        }
        let public: &[u8; 32] = public.try_into().map_err(|_| KeyError::Malformed)?;
        let key = Self::from_public_key(name, public)?;
        if key.id != id {
            return Err(KeyError::KeyIdMismatch);
        }
        Ok(key)
    }

    /// The verifier of `name` for a raw 32-byte Ed25519 public key.
    pub fn from_public_key(name: &str, public_key: &[u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(public_key)
            .map_err(|_| KeyError::BadPublicKey)?;
        if key.is_weak() {
            return Err(KeyError::BadPublicKey);
        }
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, public_key),
            key,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> [u8; 4] {
        self.id
    }

    /// The raw public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The verifier key string.
    pub fn to_vkey(&self) -> String {
        let mut material = Vec::with_capacity(33);
        material.push(ED25519);
        material.extend_from_slice(self.key.as_bytes());
        format!("{}+{}+{}", self.name, hex_id(self.id), B64.encode(material))
    }

    fn verify(&self, text: &str, signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(text.as_bytes(), &signature).is_ok()
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

impl std::str::FromStr for VerifierKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::parse(s)
    }
}

fn hex_id(id: [u8; 4]) -> String {
    format!("{:08x}", u32::from_be_bytes(id))
}

/// Splits `<name>+<8 lowercase hex digits>+<base64>` (the base64 may itself hold `+`).
fn split_key(s: &str) -> Result<(&str, [u8; 4], &str), KeyError> {
    let (name, rest) = s.split_once('+').ok_or(KeyError::Malformed)?;
    let (id, material) = rest.split_once('+').ok_or(KeyError::Malformed)?;
    check_name(name)?;
    if id.len() != 8 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(KeyError::Malformed);
    }
    let id = u32::from_str_radix(id, 16).map_err(|_| KeyError::Malformed)?;
    Ok((name, id.to_be_bytes(), material))
}

fn check_text(text: &str) -> Result<(), &'static str> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err("text must end with a newline");
    }
    if text.chars().any(|c| c.is_ascii_control() && c != '\n') {
        return Err("control character");
    }
    Ok(())
}

/// Signs a note text (which must end with a newline) with each of `keys`.
pub fn sign_note(text: &str, keys: &[&SigningKey]) -> Result<String, NoteError> {
    check_text(text).map_err(NoteError::BadText)?;
    if text.starts_with('\n') || text.contains("\n\n") {
        // A blank line inside the text would be taken for the separator by readers that
        // split at the first one; we never produce such notes.
        return Err(NoteError::BadText("blank line in text"));
    }
    if keys.is_empty() {
        return Err(NoteError::BadText("no signing key"));
    }
    let mut out = String::with_capacity(text.len() + 1 + keys.len() * 120);
    out.push_str(text);
    out.push('\n');
    for key in keys {
        out.push_str(&key.signature_line(text));
    }
    Ok(out)
}

/// A note whose signatures were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote<'a> {
    /// The signed text, including its final newline.
    pub text: &'a str,
    /// The names of the known keys whose signatures verified.
    pub verified_by: Vec<String>,
}

/// Checks a signed note against known verifier keys.
///
/// Signatures by unknown keys (name and id not both matching a known key) are ignored;
/// a signature by a known key that fails refuses the whole note; at least one known key
/// must have signed.
pub fn open_note<'a>(
    note: &'a str,
    verifiers: &[VerifierKey],
) -> Result<OpenedNote<'a>, NoteError> {
    if note.chars().any(|c| c.is_ascii_control() && c != '\n') {
        return Err(NoteError::Malformed("control character"));
    }
    // The text is separated from the signatures by the last blank line.
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let (text, rest) = note.split_at(split + 1);
    let signatures = rest
        .strip_prefix('\n')
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    if signatures.is_empty() {
        return Err(NoteError::Malformed("no signatures"));
    }
    if !signatures.ends_with('\n') {
        return Err(NoteError::Malformed("signatures must end with a newline"));
    }
    let mut verified_by = Vec::new();
    for (count, line) in signatures.lines().enumerate() {
        if count >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        let (name, id, signature) = parse_signature_line(line)?;
        let Some(key) = verifiers.iter().find(|v| v.name == name && v.id == id) else {
            continue;
        };
        if !key.verify(text, signature.get(4..).unwrap_or_default()) {
            return Err(NoteError::InvalidSignature {
                key_name: key.name.clone(),
            });
        }
        if !verified_by.iter().any(|n| n == name) {
            verified_by.push(name.to_owned());
        }
    }
    if verified_by.is_empty() {
        return Err(NoteError::NoKnownSignature);
    }
    Ok(OpenedNote { text, verified_by })
}

fn parse_signature_line(line: &str) -> Result<(&str, [u8; 4], Vec<u8>), NoteError> {
    let bad = NoteError::Malformed("bad signature line");
    let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| bad.clone())?;
    let (name, blob) = rest.split_once(' ').ok_or_else(|| bad.clone())?;
    check_name(name).map_err(|_| bad.clone())?;
    let signature = B64.decode(blob).map_err(|_| bad.clone())?;
    if signature.len() < 5 {
        return Err(bad);
    }
    let (id, _) = signature
        .split_first_chunk::<4>()
        .ok_or_else(|| bad.clone())?;
    Ok((name, *id, signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let key = SigningKey::from_seed("log.example", &[7; 32]).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("log.example") && shown.contains("redacted"));
        assert!(!shown.contains("7, 7"));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "a b", "a+b", "a\tb", "a\u{a0}b"] {
            assert_eq!(
                SigningKey::from_seed(bad, &[1; 32]).err(),
                Some(KeyError::BadName),
                "{bad:?}"
            );
        }
    }
}
