//! Offline verification of a whole log: recompute the tree over the stored entries and check
//! every signed checkpoint against it.
//!
//! The entries are streamed once into a [`Frontier`]; when its size reaches a checkpoint's,
//! its root must equal the signed root. Since every checkpoint is then the root of a prefix
//! of one sequence of entries, all of them are consistent with each other: no consistency
//! proofs are needed.
//!
//! Locating the first bad entry when a root differs:
//! - the checkpoints narrow it down: the first bad entry lies between the largest checkpoint
//!   that matched (`last_good_size`) and the first that did not (`checkpoint_size`);
//!   with only roots, that is as precise as the evidence allows, unless the range holds one
//!   entry;
//! - with tiles ([`verify_log_with_tiles`]), the level-0 tile hashes of the failing
//!   checkpoint's tree are first authenticated (their root must equal the signed root), then
//!   compared with the recomputed leaf hashes of that range: the first difference is the first
//!   entry that is not what was signed. If the tiles do not match the signed root either,
//!   they are no evidence and the range is reported alone.

use crate::checkpoint::{CheckpointError, open_checkpoint};
use crate::frontier::Frontier;
use crate::hash::{Hash, leaf_hash};
use crate::note::VerifierKey;
use crate::proof::root_from;
use crate::tiles::{TileHashes, TileReader};

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The entries read.
    pub entries: u64,
    /// The checkpoints verified.
    pub checkpoints: usize,
    /// The size of the largest checkpoint (0 without checkpoints).
    pub signed_size: u64,
    /// The root over all the entries read, signed or not.
    pub root: Hash,
}

impl VerifyReport {
    /// Entries after the largest checkpoint, which no signature covers yet.
    pub fn unsigned_entries(&self) -> u64 {
        self.entries - self.signed_size
    }
}

/// Why a log failed verification. The first problem found, in order of tree size, is named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A checkpoint's signature or text was refused.
    #[error("checkpoint at size {checkpoint_size}: {error}")]
    Checkpoint {
        /// The size stored beside the checkpoint.
        checkpoint_size: u64,
        /// Why it was refused.
        error: CheckpointError,
    },
    /// The size stored beside a checkpoint is not the size it signs.
    #[error("checkpoint stored at size {stored} signs size {signed}")]
    SizeMismatch {
        /// The size stored beside it.
        stored: u64,
        /// The size in its signed text.
        signed: u64,
    },
    /// Checkpoints of different logs.
    #[error("checkpoint at size {checkpoint_size} has another origin")]
    OriginMismatch {
        /// The checkpoint with the other origin.
        checkpoint_size: u64,
    },
    /// A checkpoint covers more entries than are stored.
    #[error("checkpoint at size {checkpoint_size} but only {entries} entries")]
    MissingEntries {
        /// The checkpoint's size.
        checkpoint_size: u64,
        /// The entries stored.
        entries: u64,
    },
    /// The stored entries do not give the signed root.
    #[error(
        "root mismatch at checkpoint size {checkpoint_size}; first bad entry at or after {last_good_size}{}",
        first_bad_index.map(|i| format!(", at {i}")).unwrap_or_default()
    )]
    RootMismatch {
        /// The first checkpoint whose root differs.
        checkpoint_size: u64,
        /// The largest checkpoint size below it whose root matched (0 if none).
        last_good_size: u64,
        /// The first entry that differs, when the evidence pins it down.
        first_bad_index: Option<u64>,
    },
}

/// Verifies a log from its entries and its checkpoints (`(size, signed note)` pairs, in any
/// order) against the log's verifier keys. See the module documentation for the method.
pub fn verify_log<'a>(
    entries: impl IntoIterator<Item = &'a [u8]>,
    checkpoints: &[(u64, String)],
    verifiers: &[VerifierKey],
) -> Result<VerifyReport, VerifyError> {
    verify(entries, checkpoints, verifiers, None::<&NoReader>)
}

/// [`verify_log`], using the log's tiles to name the first bad entry when a root differs.
/// The tiles are read only then.
pub fn verify_log_with_tiles<'a, R: TileReader + ?Sized>(
    entries: impl IntoIterator<Item = &'a [u8]>,
    checkpoints: &[(u64, String)],
    verifiers: &[VerifierKey],
    tiles: &R,
) -> Result<VerifyReport, VerifyError> {
    verify(entries, checkpoints, verifiers, Some(tiles))
}

struct NoReader;

impl TileReader for NoReader {
    type Error = ();

    fn tile(&self, _: u8, _: u64, _: u16) -> Result<Vec<u8>, ()> {
        Err(())
    }
}

fn verify<'a, R: TileReader + ?Sized>(
    entries: impl IntoIterator<Item = &'a [u8]>,
    checkpoints: &[(u64, String)],
    verifiers: &[VerifierKey],
    tiles: Option<&R>,
) -> Result<VerifyReport, VerifyError> {
    // Signatures first, in order of size, so that the smallest bad checkpoint is named.
    let mut sorted: Vec<&(u64, String)> = checkpoints.iter().collect();
    sorted.sort_by_key(|(size, _)| *size);
    let mut opened = Vec::with_capacity(sorted.len());
    for (stored, note) in sorted {
        let checkpoint =
            open_checkpoint(note, verifiers).map_err(|error| VerifyError::Checkpoint {
                checkpoint_size: *stored,
                error,
            })?;
        if checkpoint.size != *stored {
            return Err(VerifyError::SizeMismatch {
                stored: *stored,
                signed: checkpoint.size,
            });
        }
        if opened
            .first()
            .is_some_and(|first: &crate::checkpoint::Checkpoint| first.origin != checkpoint.origin)
        {
            return Err(VerifyError::OriginMismatch {
                checkpoint_size: checkpoint.size,
            });
        }
        opened.push(checkpoint);
    }

    let mut frontier = Frontier::new();
    let mut pending = opened.iter().peekable();
    let mut last_good_size = 0u64;
    // Leaf hashes since the last good checkpoint, kept only when tiles can use them.
    let mut since_good: Vec<Hash> = Vec::new();
    let mut check = |frontier: &Frontier, since_good: &mut Vec<Hash>, last_good_size: &mut u64| {
        while let Some(checkpoint) = pending.next_if(|c| c.size == frontier.size()) {
            if frontier.root() != checkpoint.root {
                return Err(locate(
                    checkpoint.size,
                    checkpoint.root,
                    *last_good_size,
                    since_good,
                    tiles,
                ));
            }
            *last_good_size = checkpoint.size;
            since_good.clear();
        }
        Ok(())
    };
    check(&frontier, &mut since_good, &mut last_good_size)?;
    for entry in entries {
        let leaf = leaf_hash(entry);
        frontier.push(leaf);
        if tiles.is_some() {
            since_good.push(leaf);
        }
        check(&frontier, &mut since_good, &mut last_good_size)?;
    }
    if let Some(checkpoint) = pending.next() {
        return Err(VerifyError::MissingEntries {
            checkpoint_size: checkpoint.size,
            entries: frontier.size(),
        });
    }
    Ok(VerifyReport {
        entries: frontier.size(),
        checkpoints: opened.len(),
        signed_size: last_good_size,
        root: frontier.root(),
    })
}

fn locate<R: TileReader + ?Sized>(
    checkpoint_size: u64,
    signed_root: Hash,
    last_good_size: u64,
    since_good: &[Hash],
    tiles: Option<&R>,
) -> VerifyError {
    let mut first_bad_index = (checkpoint_size - last_good_size == 1).then_some(last_good_size);
    if let Some(index) = tiles.and_then(|reader| {
        first_difference(
            reader,
            checkpoint_size,
            signed_root,
            last_good_size,
            since_good,
        )
    }) {
        first_bad_index = Some(index);
    }
    VerifyError::RootMismatch {
        checkpoint_size,
        last_good_size,
        first_bad_index,
    }
}

/// The first leaf in `[last_good_size, size)` whose recomputed hash differs from the level-0
/// tiles, provided the tiles give the signed root.
fn first_difference<R: TileReader + ?Sized>(
    reader: &R,
    size: u64,
    signed_root: Hash,
    last_good_size: u64,
    since_good: &[Hash],
) -> Option<u64> {
    let source = TileHashes::new(reader, size);
    if root_from(&source, size).ok()? != signed_root {
        return None;
    }
    for (index, ours) in (last_good_size..size).zip(since_good) {
        let tile = source.tile_hashes(0, index / 256).ok()?;
        let signed = tile.get(usize::try_from(index % 256).ok()?)?;
        if signed != ours {
            return Some(index);
        }
    }
    None
}
