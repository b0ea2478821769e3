//! Vigil's tamper-evident audit log, the pure part: RFC 6962 / RFC 9162 Merkle tree hashing,
//! an incremental frontier for the writer, inclusion and consistency proofs, C2SP signed
//! checkpoints, C2SP tiles, and offline verification of a whole log.
//!
//! Architecture Invariant: no IO, no clock, no storage. Bytes come in and bytes go out;
//! the caller stores entries, tiles, frontiers and checkpoints, and reads them back through
//! the [`HashSource`] and [`tiles::TileReader`] traits.

pub mod checkpoint;
pub mod frontier;
pub mod hash;
pub mod note;
pub mod proof;
pub mod tiles;
pub mod verify;

pub use checkpoint::{
    Checkpoint, CheckpointError, checkpoint_text, open_checkpoint, sign_checkpoint,
};
pub use frontier::{Frontier, FrontierError};
pub use hash::{EMPTY_ROOT, Hash, leaf_hash, node_hash, root};
pub use note::{KeyError, NoteError, OpenedNote, SigningKey, VerifierKey, open_note, sign_note};
pub use proof::{
    HashSource, MissingHash, ProofError, ProveError, consistency_proof, inclusion_proof, root_from,
    root_from_inclusion_proof, verify_consistency, verify_inclusion,
};
pub use tiles::{Pyramid, TileHashes, TileId, TileReader};
pub use verify::{VerifyError, VerifyReport, verify_log, verify_log_with_tiles};
