//! Storage traits shaped by Vigil's use cases.
//!
//! Architecture Invariant: nothing here knows SQL, FHIR JSON or keys in clear.
//! Adapters (`store-sqlite`, `store-postgres`) only ever see ciphertext,
//! wrapped keys and keyed blind-index tokens. Errors are never turned into
//! "not found": a failed query is a [`StoreError`], and callers fail closed.

mod accounts;
mod audit;
mod consult;
mod grants;
mod monitor;

pub use accounts::{
    Account, AccountId, AccountStore, Challenge, Credentials, FailureCounter, OAuthClient,
    OutboxMessage, RefreshOutcome, RefreshToken, Role, Session, StoredPasskey, username_key,
};

pub use audit::{
    AuditAppended, AuditHead, AuditQuery, AuditRecord, AuditStore, AuditTile, Integrate, Integrated,
};

pub use consult::{ConsultInvite, ConsultRoom, ConsultStore};

pub use grants::{EmergencyGrant, GrantReview, GrantStore, PolicyStore, PolicyVersion};

pub use monitor::{
    AccessExplanation, CaseNote, CaseQuery, EXPLANATIONS_PER_QUERY, MonitorAlert, MonitorBatch,
    MonitorCase, MonitorStore, OPEN_CASE_STATUSES, Suppression,
};

use async_trait::async_trait;
use model::{KeyOwner, ResourceId, ResourceType, Timestamp, VersionId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write precondition did not hold (optimistic concurrency or create-only).
    #[error("write conflict on {rtype}/{id}: {reason}")]
    Conflict {
        rtype: ResourceType,
        id: ResourceId,
        reason: ConflictReason,
    },
    /// The database is configured in a way Vigil refuses to run on.
    #[error("durability check failed: {0}")]
    Durability(String),
    /// Stored bytes that do not have the shape this code wrote.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A new data key was to be inserted but the owner already has one
    /// (two writers created a first key for the same patient at once).
    #[error("a data key already exists for this owner")]
    KeyExists,
    /// Another account already has this username (compared case-insensitively).
    #[error("username already taken")]
    UsernameTaken,
    /// An account with this id already exists.
    #[error("account id already exists")]
    AccountExists,
    /// An emergency grant with this id already exists.
    #[error("emergency grant id already exists")]
    GrantExists,
    /// The monitoring cursor was not where a batch started from: another
    /// node (or task) committed monitoring results first. Nothing was stored.
    #[error("the monitoring cursor has moved")]
    MonitorCursor,
    /// A monitoring batch that cannot be stored as given (the cursor moving
    /// back, a score that is not finite, an alert id used twice or already
    /// stored). Nothing was stored.
    #[error("monitoring batch: {0}")]
    MonitorBatch(String),
    /// A monitoring case changed since the caller read it (optimistic
    /// concurrency in `update_case`). Nothing was changed.
    #[error("the monitoring case changed since it was read")]
    MonitorCaseChanged,
    /// There is no monitoring case with this id.
    #[error("no such monitoring case")]
    MonitorCaseNotFound,
    /// A suppression with this id already exists.
    #[error("suppression id already exists")]
    SuppressionExists,
    /// A consult room with this id, or for this appointment, already exists
    /// (at most one room per appointment). Nothing was stored.
    #[error("a consult room already exists for this id or appointment")]
    RoomExists,
    /// A consult invite with this id already exists.
    #[error("consult invite id already exists")]
    InviteExists,
    /// A consult room that cannot be stored as given (a new room whose
    /// version is not 1, an update whose version is not one more than the
    /// expected one). Nothing was stored.
    #[error("consult room: {0}")]
    ConsultRoom(String),
    /// A backup file that cannot be read.
    #[error("backup: {0}")]
    Backup(String),
    /// Appending to the audit log failed in the app's integration step.
    #[error("audit log: {0}")]
    Audit(String),
    /// Anything the database driver reported; the message never contains PHI
    /// because adapters only handle ciphertext and tokens.
    #[error("database: {0}")]
    Database(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictReason {
    /// `MustNotExist` but a version exists (or existed: deleted ids are not reused by create).
    AlreadyExists,
    /// `CurrentVersion(v)` but the current version differs or the resource is absent.
    VersionMismatch,
}

impl std::fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConflictReason::AlreadyExists => "already exists",
            ConflictReason::VersionMismatch => "version mismatch",
        })
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A data key wrapped by a key-encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub owner: KeyOwner,
    /// Id of the KEK that wrapped it (from the key file).
    pub kek_id: String,
    pub wrapped: Vec<u8>,
}

/// One stored version of a resource. `ciphertext` is empty for a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    pub rtype: ResourceType,
    pub id: ResourceId,
    pub version: VersionId,
    pub last_updated: Timestamp,
    pub deleted: bool,
    /// Whose data key sealed `ciphertext`.
    pub key_owner: KeyOwner,
    pub ciphertext: Vec<u8>,
}

/// A keyed blind-index entry for the current version of a resource.
/// `param` is a search parameter name such as `identifier` or `date-day`;
/// `token` is an HMAC output, never a value in clear.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexRow {
    pub param: String,
    pub token: Vec<u8>,
}

/// Besides the precondition, every write must carry the next version number
/// (the newest stored version + 1, or 1), else [`ConflictReason::VersionMismatch`].
/// A delete marker is not a current version: `CurrentVersion(_)` and
/// `CurrentIs(Some(_))` fail on a deleted id, `CurrentIs(None)` accepts it
/// (recreate by PUT, version numbers continue) and fails with
/// [`ConflictReason::VersionMismatch`] on an id that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No version of this id may exist (server-assigned create).
    MustNotExist,
    /// The current version must be exactly this (If-Match, or update of a read version).
    CurrentVersion(VersionId),
    /// The current version must be this one, or the resource must not exist when `None`
    /// (PUT with no If-Match: the app read the current version first).
    CurrentIs(Option<VersionId>),
}

/// One write in an atomic batch: a new version (or delete marker) and the
/// index rows that replace the resource's previous index rows.
#[derive(Debug, Clone)]
pub struct WriteOp {
    pub precondition: Precondition,
    pub version: StoredVersion,
    /// Replaces all index rows of (rtype, id). Empty for a delete.
    pub index: Vec<IndexRow>,
}

/// A search over blind indexes. Every clause must match (AND); within a
/// clause any token may match (OR).
#[derive(Debug, Clone, Default)]
pub struct IndexQuery {
    pub clauses: Vec<IndexClause>,
    /// Restrict to these ids (from `_id` or a previous stage).
    pub ids: Option<Vec<ResourceId>>,
    /// Restrict to resources sealed under these owners' keys (the patient
    /// compartments the caller may reach, and `Organisation` for directory
    /// data). Owners are stored in clear, like the key they name.
    pub owners: Option<Vec<KeyOwner>>,
    /// `_lastUpdated` bounds, inclusive, in clear (write times are not PHI; see ARCHITECTURE.md).
    pub last_updated_from: Option<Timestamp>,
    pub last_updated_to: Option<Timestamp>,
    /// At most this many ids are returned; callers ask for one more than the
    /// window to detect "too many".
    pub limit: usize,
}

#[derive(Debug, Clone)]
pub struct IndexClause {
    pub param: String,
    pub tokens: Vec<Vec<u8>>,
}

/// What an erase removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EraseReport {
    pub versions_deleted: u64,
    pub index_rows_deleted: u64,
    pub key_destroyed: bool,
}

/// Counts for `vigil keys rotate` and for progress bars.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub keys: u64,
    pub current_resources: u64,
    pub versions: u64,
    pub index_rows: u64,
}

/// A backup record: the backup format is the same for both backends, so a
/// SQLite backup can be restored into PostgreSQL and back.
/// (Not `Eq`: monitoring scores are `f64`.)
#[derive(Debug, Clone, PartialEq)]
pub enum BackupRecord {
    Setting {
        name: String,
        value: Vec<u8>,
    },
    Key(WrappedKey),
    Version(StoredVersion),
    Index {
        rtype: ResourceType,
        id: ResourceId,
        row: IndexRow,
    },
    /// Identity records follow the index rows, accounts before what refers
    /// to them, then OAuth clients. What is ephemeral or only meaningful
    /// while the node runs is never backed up: sessions, per-address
    /// counters, challenges (pending sign-ins, links, codes), refresh tokens,
    /// revoked access-token `jti`s and the outbox. A restore therefore signs
    /// everyone out, voids outstanding links and drops undelivered mail.
    Account(Account),
    Credentials {
        account: AccountId,
        credentials: Credentials,
    },
    RecoveryCode {
        account: AccountId,
        hash: Vec<u8>,
    },
    Passkey(StoredPasskey),
    FactorFailures {
        account: AccountId,
        factor: String,
        counter: FailureCounter,
    },
    Client(OAuthClient),
    /// The audit log follows everything else: entries in index order with
    /// their terms, then tiles, the checkpoint history and the head. A store
    /// whose log is empty dumps none of these.
    AuditEntry {
        index: u64,
        recorded: Timestamp,
        bytes: Vec<u8>,
        terms: Vec<(String, Vec<u8>)>,
    },
    AuditTile(AuditTile),
    AuditCheckpoint {
        size: u64,
        note: String,
    },
    AuditHead(AuditHead),
    /// The access policy's records come last: policy versions in order from
    /// 1, then break-the-glass grants by id (accountability records, so a
    /// restore keeps them, reviews and revocations included). Backups
    /// written before they existed simply have none.
    PolicyVersion(PolicyVersion),
    Grant(EmergencyGrant),
    /// Privacy monitoring's records follow: the cursor (only when it has
    /// moved from 0), explanations by index, cases by id, alerts by id,
    /// notes by case and `seq` (gap-free from 1 per case), then
    /// suppressions by id. Everything is sealed by the app as it was
    /// stored. Backups written before monitoring existed have none.
    MonitorCursor(u64),
    AccessExplanation(AccessExplanation),
    MonitorCase(MonitorCase),
    MonitorAlert(MonitorAlert),
    CaseNote(CaseNote),
    Suppression(Suppression),
    /// Telehealth consults close the file: rooms by id, then invites by id,
    /// with the rooms' states and the invites' secrets sealed by the app as
    /// they were stored. Backups written before consults existed have none.
    ConsultRoom(ConsultRoom),
    ConsultInvite(ConsultInvite),
}

/// The storage a Vigil node uses. It includes [`AccountStore`] (identity),
/// [`AuditStore`], [`GrantStore`] and [`PolicyStore`] (access policy),
/// [`MonitorStore`] (privacy monitoring) and [`ConsultStore`] (telehealth
/// consults).
#[async_trait]
pub trait Store:
    AccountStore
    + AuditStore
    + GrantStore
    + PolicyStore
    + MonitorStore
    + ConsultStore
    + Send
    + Sync
    + 'static
{
    /// Which backend this is, for logs and the CapabilityStatement (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Creates or upgrades the schema.
    async fn migrate(&self) -> Result<()>;

    /// Verifies the durability settings Vigil relies on. Returns
    /// [`StoreError::Durability`] naming the setting when one is wrong.
    async fn check_durability(&self) -> Result<()>;

    // ---- small settings (bootstrap token hash, node id) ----
    async fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Sets a value only if absent; returns the value now stored.
    async fn put_setting_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>>;
    async fn put_setting(&self, name: &str, value: &[u8]) -> Result<()>;

    // ---- data keys ----
    async fn get_key(&self, owner: &KeyOwner) -> Result<Option<WrappedKey>>;
    /// Stores `key` unless one exists for its owner; returns the key now stored
    /// (so two racing creators agree on one key).
    async fn put_key_if_absent(&self, key: &WrappedKey) -> Result<WrappedKey>;
    /// Stores many keys at once (each only if absent), returning the keys now
    /// stored in the same order. Adapters override this to use one transaction.
    async fn put_keys_if_absent(&self, keys: &[WrappedKey]) -> Result<Vec<WrappedKey>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.put_key_if_absent(k).await?);
        }
        Ok(out)
    }
    /// Keys wrapped by any KEK other than `kek_id`, at most `limit`.
    async fn keys_not_wrapped_by(&self, kek_id: &str, limit: usize) -> Result<Vec<WrappedKey>>;
    /// Replaces a wrapped key if it is still wrapped as `old` says (compare-and-swap).
    async fn replace_key(&self, old: &WrappedKey, new: &WrappedKey) -> Result<bool>;

    // ---- resources ----
    /// Applies every op or none. Checks every precondition inside the transaction.
    async fn commit(&self, ops: Vec<WriteOp>) -> Result<()> {
        self.commit_with_keys(Vec::new(), ops).await
    }
    /// Inserts new data keys and applies every op, all in one transaction, or
    /// nothing. A key whose owner already has one fails the whole commit with
    /// [`StoreError::KeyExists`] (so data is never sealed under a key that is
    /// not stored).
    async fn commit_with_keys(&self, keys: Vec<WrappedKey>, ops: Vec<WriteOp>) -> Result<()>;
    /// [`Store::commit_with_keys`] and [`AuditStore::append_audit`] in one
    /// transaction: the change and its audit entries commit together or not
    /// at all.
    async fn commit_audited(
        &self,
        keys: Vec<WrappedKey>,
        ops: Vec<WriteOp>,
        records: Vec<AuditRecord>,
        integrate: Integrate<'_>,
    ) -> Result<AuditAppended>;
    /// The current version (possibly a delete marker), if the id was ever written.
    async fn current(&self, rtype: ResourceType, id: &ResourceId) -> Result<Option<StoredVersion>>;
    async fn version(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        version: VersionId,
    ) -> Result<Option<StoredVersion>>;
    /// All versions, newest first.
    async fn history(&self, rtype: ResourceType, id: &ResourceId) -> Result<Vec<StoredVersion>>;
    /// Which of these ids exist now (current version not deleted).
    async fn existing(&self, rtype: ResourceType, ids: &[ResourceId]) -> Result<Vec<ResourceId>>;
    /// Ids of current, non-deleted resources matching the query, ordered by id.
    async fn find(&self, rtype: ResourceType, query: &IndexQuery) -> Result<Vec<ResourceId>>;
    /// Current, non-deleted resources of a type with id greater than `after`, ordered by id.
    async fn scan(
        &self,
        rtype: ResourceType,
        after: Option<&ResourceId>,
        limit: usize,
    ) -> Result<Vec<StoredVersion>>;
    /// Current versions of these ids (deleted ones left out), in no particular order.
    async fn current_many(
        &self,
        rtype: ResourceType,
        ids: &[ResourceId],
    ) -> Result<Vec<StoredVersion>>;
    /// The current versions of the given types sealed under `owner` (one
    /// patient's compartment), deleted ones left out, in no particular
    /// order: one query for the access policy's relationship facts.
    async fn current_of_owner(
        &self,
        owner: &KeyOwner,
        rtypes: &[ResourceType],
    ) -> Result<Vec<StoredVersion>>;

    // ---- erase, maintenance, backup ----
    /// Crypto-shreds a patient: destroys their data key and deletes every
    /// version and index row sealed under it, then scrubs freed pages
    /// (SQLite `secure_delete` + WAL checkpoint; PostgreSQL `VACUUM`).
    /// The patient's consult rooms and their invites are deleted in the same
    /// transaction (they name the patient; the audit trail keeps their ids).
    /// Refuses [`KeyOwner::Organisation`] with an error.
    async fn erase_patient(&self, owner: &KeyOwner) -> Result<EraseReport>;
    async fn stats(&self) -> Result<Stats>;
    /// Refreshes the query planner's statistics (after bulk loads: a restore,
    /// demo or benchmark seeding). Without them, plans chosen on freshly
    /// loaded tables can scan instead of using the search index.
    async fn refresh_statistics(&self) -> Result<()>;
    /// Every record, read in one consistent snapshot, in dependency order
    /// (settings, keys, versions, index rows, then accounts, credentials,
    /// recovery codes, passkeys, factor failure counters, OAuth clients, then
    /// the audit log: entries, tiles, checkpoints, head; then policy versions
    /// and emergency grants; then monitoring: the cursor, explanations,
    /// cases, alerts, case notes and suppressions; then consult rooms and
    /// their invites).
    /// Sent in chunks to `sink`. What [`BackupRecord`] leaves out (sessions,
    /// per-address counters, challenges, tokens, the outbox) is not included.
    async fn dump(&self, sink: &mut (dyn FnMut(BackupRecord) -> Result<()> + Send)) -> Result<()>;
    /// Loads records into an empty store, in one transaction.
    /// Fails with [`StoreError::Backup`] if the store already holds resources,
    /// keys, settings, accounts, OAuth clients, audit entries, policy
    /// versions, emergency grants, any monitoring record (a cursor moved
    /// from 0 included) or consult rooms.
    async fn load(&self, records: Vec<BackupRecord>) -> Result<()>;
}
