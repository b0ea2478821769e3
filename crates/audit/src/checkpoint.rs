//! Checkpoints: signed tree heads in the C2SP `tlog-checkpoint` format
//! (<https://c2sp.org/tlog-checkpoint>), a signed note whose text is
//!
//! ```text
//! <origin>
//! <tree size in decimal>
//! <base64 root hash>
//! ```
//!
//! Vigil writes no extension lines and refuses checkpoints that carry any.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::hash::Hash;
use crate::note::{NoteError, SigningKey, VerifierKey, open_note, sign_note};

/// A verified tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `vigil.example/audit`.
    pub origin: String,
    /// The number of entries.
    pub size: u64,
    /// The Merkle Tree Hash of those entries.
    pub root: Hash,
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The signed note was refused.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The origin is empty or holds a character a note line cannot.
    #[error("invalid origin")]
    BadOrigin,
    /// The text does not have exactly three lines (Vigil writes no extension lines).
    #[error("checkpoint text must have exactly three lines")]
    WrongLineCount,
    /// The size is not a decimal number without leading zeros that fits 64 bits.
    #[error("invalid tree size")]
    BadSize,
    /// The root is not the canonical base64 of 32 bytes.
    #[error("invalid root hash")]
    BadRoot,
}

fn check_origin(origin: &str) -> Result<(), CheckpointError> {
    if origin.is_empty() || origin.chars().any(char::is_control) {
        return Err(CheckpointError::BadOrigin);
    }
    Ok(())
}

/// The note text of a checkpoint (three lines, each ending with a newline).
pub fn checkpoint_text(origin: &str, size: u64, root: &Hash) -> Result<String, CheckpointError> {
    check_origin(origin)?;
    Ok(format!("{origin}\n{size}\n{}\n", B64.encode(root)))
}

/// Signs the checkpoint `(origin, size, root)` with `key`, as a signed note.
pub fn sign_checkpoint(
    origin: &str,
    size: u64,
    root: &Hash,
    key: &SigningKey,
) -> Result<String, CheckpointError> {
    let text = checkpoint_text(origin, size, root)?;
    Ok(sign_note(&text, &[key])?)
}

/// Checks a checkpoint's signatures (see [`open_note`]) and parses its text strictly.
pub fn open_checkpoint(
    note: &str,
    verifiers: &[VerifierKey],
) -> Result<Checkpoint, CheckpointError> {
    let opened = open_note(note, verifiers)?;
    parse_checkpoint_text(opened.text)
}

/// Parses checkpoint text without checking any signature: only for text that
/// [`open_note`] returned.
fn parse_checkpoint_text(text: &str) -> Result<Checkpoint, CheckpointError> {
    let body = text
        .strip_suffix('\n')
        .ok_or(CheckpointError::WrongLineCount)?;
    let mut lines = body.split('\n');
    let (Some(origin), Some(size), Some(root), None) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return Err(CheckpointError::WrongLineCount);
    };
    check_origin(origin)?;
    let size = parse_size(size)?;
    let decoded = B64.decode(root).map_err(|_| CheckpointError::BadRoot)?;
    let root: Hash = decoded
        .as_slice()
        .try_into()
        .map_err(|_| CheckpointError::BadRoot)?;
    Ok(Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
    })
}

fn parse_size(s: &str) -> Result<u64, CheckpointError> {
    let digits_only = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (s.len() > 1 && s.starts_with('0')) {
        return Err(CheckpointError::BadSize);
    }
    s.parse().map_err(|_| CheckpointError::BadSize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("20852163"), Ok(20_852_163));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        for bad in [
            "",
            "00",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "18446744073709551616",
            "1e3",
        ] {
            assert_eq!(parse_size(bad), Err(CheckpointError::BadSize), "{bad:?}");
        }
    }

    #[test]
    fn text_shapes() {
        let root = B64.encode([0u8; 32]);
        assert!(parse_checkpoint_text(&format!("o\n1\n{root}\n")).is_ok());
        assert_eq!(
            parse_checkpoint_text(&format!("o\n1\n{root}\next\n")),
            Err(CheckpointError::WrongLineCount)
        );
        assert_eq!(
            parse_checkpoint_text("o\n1\n"),
            Err(CheckpointError::WrongLineCount)
        );
        assert_eq!(
            parse_checkpoint_text(&format!("\n1\n{root}\n")),
            Err(CheckpointError::BadOrigin)
        );
        assert_eq!(
            parse_checkpoint_text("o\n1\nAAAA\n"),
            Err(CheckpointError::BadRoot)
        );
    }
}
