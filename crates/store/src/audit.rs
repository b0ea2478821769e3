//! Storage for the audit trail: an append-only log of sealed entries, the
//! Merkle tree's tiles and signed checkpoints, and keyed search terms.
//!
//! Architecture Invariant: there is no update or delete path for audit data.
//! Entries are appended under the log's single-writer lock (SQLite's one
//! writer connection; on PostgreSQL a row lock on the log head taken with
//! `SELECT … FOR UPDATE`), so indexes are gap-free and in commit order
//! across every node. The store never sees plaintext or keys: entry bytes are
//! sealed by the app, terms are keyed tokens, and the tree's state is opaque
//! bytes the app's `integrate` callback computes inside the transaction.

use async_trait::async_trait;
use model::Timestamp;

use crate::Result;

/// One entry to append: the sealed bytes the Merkle tree covers, when it was
/// recorded, and its search terms (keyed tokens, as for records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub bytes: Vec<u8>,
    pub recorded: Timestamp,
    /// `(parameter, token)` pairs, e.g. `("patient", hmac(…))`.
    pub terms: Vec<(String, Vec<u8>)>,
}

/// The end of the log: what a writer needs to extend the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditHead {
    /// Number of entries (the next entry's index).
    pub size: u64,
    /// The app's tree state (frontier and partial tiles); empty for an empty log.
    pub state: Vec<u8>,
    /// The latest signed checkpoint (covers `size`), if any.
    pub checkpoint: Option<String>,
}

impl AuditHead {
    /// The log's size once `count` more entries follow this head.
    pub fn size_after(&self, count: usize) -> crate::Result<u64> {
        u64::try_from(count)
            .ok()
            .and_then(|n| self.size.checked_add(n))
            .ok_or_else(|| crate::StoreError::Audit("log size overflow".to_owned()))
    }
}

/// A tile of the tree (C2SP tlog-tiles): `width` hashes at `level`, `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditTile {
    pub level: u8,
    pub index: u64,
    pub width: u16,
    pub data: Vec<u8>,
}

/// What integrating a batch produced; stored in the append's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrated {
    pub state: Vec<u8>,
    /// New tiles and wider versions of partial ones (replacing them).
    pub tiles: Vec<AuditTile>,
    /// The checkpoint for the new size.
    pub checkpoint: String,
    /// Also keep it in the checkpoint history (at least every 1,000 entries
    /// or every second; the head always holds the latest).
    pub persist_checkpoint: bool,
}

/// Computes the new tree state for a batch, inside the append transaction.
/// CPU only (hashing and signing); an `Err` aborts the append.
pub type Integrate<'a> = &'a (
        dyn Fn(&AuditHead, &[AuditRecord]) -> std::result::Result<Integrated, String> + Send + Sync
    );

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditAppended {
    /// Index of the batch's first entry.
    pub first_index: u64,
    /// The log's size after the batch.
    pub size: u64,
    /// The checkpoint covering the batch.
    pub checkpoint: String,
}

/// A search over audit entries by their terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Every clause must hold; a clause holds when the entry has the
    /// parameter with any of the tokens.
    pub clauses: Vec<(String, Vec<Vec<u8>>)>,
    pub recorded_from: Option<Timestamp>,
    /// Exclusive.
    pub recorded_to: Option<Timestamp>,
    /// Only entries with a smaller index (paging newest first).
    pub before: Option<u64>,
    pub limit: usize,
}

#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `records` at the end of the log in one durable transaction:
    /// under the single-writer lock, reads the head, calls `integrate`,
    /// stores the entries at consecutive indexes from the old size with their
    /// terms, the tiles (replacing same `(level, index)`), the checkpoint
    /// (in the history when `persist_checkpoint`) and the new head. Nothing
    /// is stored when anything fails; an `integrate` error is
    /// [`crate::StoreError::Audit`].
    async fn append_audit(
        &self,
        records: Vec<AuditRecord>,
        integrate: Integrate<'_>,
    ) -> Result<AuditAppended>;
    async fn audit_head(&self) -> Result<AuditHead>;
    /// Entries with index ≥ `from`, ascending, at most `limit`.
    async fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>>;
    /// The stored tile at `(level, index)` (its latest, widest version).
    async fn audit_tile(&self, level: u8, index: u64) -> Result<Option<AuditTile>>;
    /// Checkpoints in the history with size ≥ `from_size`, ascending.
    async fn audit_checkpoints(&self, from_size: u64, limit: usize) -> Result<Vec<(u64, String)>>;
    /// Indexes of matching entries, newest first, at most `query.limit`.
    async fn find_audit(&self, query: &AuditQuery) -> Result<Vec<u64>>;
}
