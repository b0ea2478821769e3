//! The SQLite adapter for [`store::Store`], Vigil's default backend.
//!
//! One file, WAL journal, `synchronous=FULL`, `secure_delete=ON`. Writes go
//! through a pool of exactly one connection and `BEGIN IMMEDIATE`, so writers
//! queue in the process instead of meeting `SQLITE_BUSY`; reads use a separate
//! pool of connections that see WAL snapshots and never block the writer.
//!
//! Architecture Invariant: this crate only ever sees ciphertext, wrapped keys
//! and blind-index tokens; it knows nothing about FHIR or keys in clear.

mod accounts;
mod audit;
mod consult;
mod grants;
mod migrations;
mod monitor;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use model::{KeyOwner, ResourceId, ResourceType, Timestamp, VersionId};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use store::{
    AuditAppended, AuditRecord, BackupRecord, ConflictReason, EraseReport, IndexQuery, IndexRow,
    Integrate, Precondition, Result, Stats, Store, StoreError, StoredVersion, WrappedKey, WriteOp,
};

use crate::migrations::MIGRATIONS;

/// How to open a SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Skip forcing WAL, `synchronous=FULL` and `secure_delete=ON` at open.
    /// Only for tests that need a misconfigured database; production code
    /// leaves this `false` and calls [`Store::check_durability`].
    pub allow_unsafe_durability: bool,
    /// Size of the reader pool.
    pub max_readers: u32,
    /// How long a connection waits on a lock held by another process.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            allow_unsafe_durability: false,
            max_readers: 8,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// A Vigil store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// INVARIANT: exactly one connection, so writes are serialised here.
    writer: SqlitePool,
    readers: SqlitePool,
    /// The audit head as of this process's last group commit, taken (left
    /// empty) while an append is under way and by any other append, so
    /// the next group commit can skip reading it. Only an optimisation: the
    /// append's own guard refuses a stale head.
    audit_head: std::sync::Arc<std::sync::Mutex<Option<store::AuditHead>>>,
    /// Audit appends committed by this store: the background checkpointer
    /// keeps up with them. Held while the store lives; the checkpointer
    /// stops when it can no longer upgrade its weak copy.
    audit_commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// How often the background checkpointer copies the WAL into the database:
/// often, so each copy (and the database file's sync) is small and does not
/// hold up commits (`vigil bench policy`, 100k patients: p99 of reads with
/// their audit entries 27–31 ms at 200 ms–1 s, 20.5 ms at 50 ms).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// …and while audit appends are coming in, this often: a copy's sync of the
/// database file holds up the WAL syncs of the commits under way, by as
/// long as the copy is big. `vigil bench audit`, open loop at 50,000
/// appends/s, p99 of an append over three runs each: 5.5–9.0 ms with a
/// copy every 50 ms, 2.8–3.9 ms every 5 ms (every 2 ms was no better).
const CHECKPOINT_BUSY_EVERY: std::time::Duration = std::time::Duration::from_millis(5);
/// The writer's own automatic checkpoint, a backstop only (pages, ~40 MB).
const WRITER_AUTOCHECKPOINT_PAGES: &str = "10000";

/// Most rows one dump query reads before the next page (keyset paging
/// inside the one read transaction keeps memory bounded).
const DUMP_PAGE: i64 = 500;

const VERSION_COLUMNS: &str =
    "v.rtype, v.id, v.version, v.last_updated, v.deleted, v.key_owner, v.ciphertext";

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`. Unless
    /// `opts.allow_unsafe_durability`, forces the durability pragmas and fails
    /// with [`StoreError::Durability`] if one does not hold.
    /// Does not migrate: call [`Store::migrate`] next.
    pub async fn open(path: &Path, opts: SqliteOptions) -> Result<SqliteStore> {
        let base = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(opts.busy_timeout);
        let writer_opts = if opts.allow_unsafe_durability {
            base.clone().create_if_missing(true)
        } else {
            base.clone()
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .pragma("secure_delete", "ON")
                // Checkpoints run on a reader connection in the background
                // (below), so the writer's commits do not stall on copying
                // the WAL and syncing the database file.
                .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
        };
        // The writer connection lives as long as the store: it keeps the WAL
        // and its index open for the readers.
        // No ping before each use: an embedded connection cannot go stale
        // as a network one can, and a failing one fails its query anyway.
        // The ping is a round trip to the connection's thread per query.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_opts)
            .await
            .map_err(db)?;
        // Readers never change the journal mode (that needs an exclusive
        // lock) and refuse to write at all.
        let reader_opts = if opts.allow_unsafe_durability {
            base
        } else {
            base.synchronous(SqliteSynchronous::Full)
                .pragma("secure_delete", "ON")
        }
        .pragma("query_only", "ON");
        let readers = SqlitePoolOptions::new()
            .max_connections(opts.max_readers.max(1))
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(reader_opts)
            .await
            .map_err(db)?;
        let audit_commits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        spawn_checkpointer(readers.clone(), std::sync::Arc::downgrade(&audit_commits));
        let store = SqliteStore {
            writer,
            readers,
            audit_head: std::sync::Arc::new(std::sync::Mutex::new(None)),
            audit_commits,
        };
        if !opts.allow_unsafe_durability {
            // The pragmas were just forced; if one did not take (WAL needs
            // shared memory, for instance), refuse to run rather than hope.
            store.check_durability().await?;
        }
        Ok(store)
    }
}

/// Copies committed WAL frames into the database file from a reader
/// connection (`PASSIVE`: it never blocks the writer or readers), so commits
/// only append to the WAL: every [`CHECKPOINT_BUSY_EVERY`] while audit
/// appends have been committed since the last copy, else every
/// [`CHECKPOINT_EVERY`].
fn spawn_checkpointer(readers: SqlitePool, commits: std::sync::Weak<std::sync::atomic::AtomicU64>) {
    tokio::spawn(async move {
        let mut seen = 0u64;
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(CHECKPOINT_BUSY_EVERY).await;
            let Some(now) = commits
                .upgrade()
                .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            else {
                break;
            };
            if now == seen && last.elapsed() < CHECKPOINT_EVERY {
                continue;
            }
            seen = now;
            last = tokio::time::Instant::now();
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_optional(&readers)
                .await
            {
                tracing::warn!(error = %e, "background WAL checkpoint failed");
            }
        }
    });
}

impl SqliteStore {
    /// Copies the WAL into the database file and truncates the WAL to zero
    /// bytes (`PRAGMA wal_checkpoint(TRUNCATE)`). Fails if readers kept the
    /// checkpoint from completing.
    pub async fn checkpoint(&self) -> Result<()> {
        let mut last_busy = 0;
        // A reader holding an old snapshot can make the checkpoint give up;
        // readers are short, so try a few times.
        for _ in 0..20 {
            let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&self.writer)
                .await
                .map_err(db)?;
            last_busy = row.try_get::<i64, _>(0).map_err(db)?;
            if last_busy == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(StoreError::Database(format!(
            "wal checkpoint did not complete (busy={last_busy})"
        )))
    }

    /// Every (table, column) of the schema, sorted, for the test that keeps
    /// the two backends' schemas in step.
    pub async fn schema_columns(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT m.name, p.name FROM sqlite_schema m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.name",
        )
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0).map_err(db)?,
                    r.try_get::<String, _>(1).map_err(db)?,
                ))
            })
            .collect()
    }

    /// Closes both pools, waiting for connections to finish.
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    /// Counts a committed audit append (for the background checkpointer).
    fn audit_committed(&self) {
        self.audit_commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The cached audit head (see the field); a poisoned lock still holds a
    /// value that is only ever an optimisation.
    fn audit_head_cache(&self) -> std::sync::MutexGuard<'_, Option<store::AuditHead>> {
        self.audit_head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }
}

/// Runs a multi-statement script (no parameters) inside a transaction.
/// `Executor::execute` on a bare `&str` rather than `raw_sql`, whose future
/// does not satisfy `async_trait`'s `Send` bound.
async fn exec_script(conn: &mut sqlx::SqliteConnection, sql: &'static str) -> Result<()> {
    sqlx::Executor::execute(conn, sql).await.map_err(db)?;
    Ok(())
}

// ---- row conversions ----

fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Database(format!("{what} out of range")))
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn parse_rtype(s: &str) -> Result<ResourceType> {
    ResourceType::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown resource type {s:?}")))
}

fn parse_id(s: String) -> Result<ResourceId> {
    ResourceId::new(s).map_err(|_| StoreError::Corrupt("invalid resource id".to_owned()))
}

fn parse_owner(s: &str) -> Result<KeyOwner> {
    KeyOwner::from_storage_key(s).ok_or_else(|| StoreError::Corrupt("invalid key owner".to_owned()))
}

fn parse_version(v: i64) -> Result<VersionId> {
    u64::try_from(v)
        .map(VersionId)
        .map_err(|_| StoreError::Corrupt(format!("invalid version {v}")))
}

fn version_from_row(row: &SqliteRow) -> Result<StoredVersion> {
    Ok(StoredVersion {
        rtype: parse_rtype(&row.try_get::<String, _>(0).map_err(db)?)?,
        id: parse_id(row.try_get::<String, _>(1).map_err(db)?)?,
        version: parse_version(row.try_get::<i64, _>(2).map_err(db)?)?,
        last_updated: Timestamp(row.try_get::<i64, _>(3).map_err(db)?),
        deleted: row.try_get::<bool, _>(4).map_err(db)?,
        key_owner: parse_owner(&row.try_get::<String, _>(5).map_err(db)?)?,
        ciphertext: row.try_get::<Vec<u8>, _>(6).map_err(db)?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<WrappedKey> {
    Ok(WrappedKey {
        owner: parse_owner(&row.try_get::<String, _>(0).map_err(db)?)?,
        kek_id: row.try_get::<String, _>(1).map_err(db)?,
        wrapped: row.try_get::<Vec<u8>, _>(2).map_err(db)?,
    })
}

/// A JSON array of ids, bound as one parameter and unpacked with `json_each`
/// so the statement stays the same size however many ids there are.
fn ids_json(ids: &[ResourceId]) -> Result<String> {
    let v: Vec<&str> = ids.iter().map(ResourceId::as_str).collect();
    serde_json::to_string(&v).map_err(|e| StoreError::Database(e.to_string()))
}

fn owners_json(owners: &[KeyOwner]) -> Result<String> {
    let v: Vec<String> = owners.iter().map(KeyOwner::storage_key).collect();
    serde_json::to_string(&v).map_err(|e| StoreError::Database(e.to_string()))
}

/// A JSON array of hex tokens, unpacked with `json_each` and `unhex`.
fn tokens_json(tokens: &[Vec<u8>]) -> Result<String> {
    let v: Vec<String> = tokens.iter().map(hex::encode).collect();
    serde_json::to_string(&v).map_err(|e| StoreError::Database(e.to_string()))
}

// ---- the write path ----

/// The newest version of an id as seen inside the write transaction.
struct Head {
    /// The newest version number of any stored version, if any.
    last: Option<i64>,
    /// Whether the id currently exists (newest version is not a delete marker).
    live: Option<i64>,
}

async fn head(tx: &mut Transaction<'static, Sqlite>, rtype: &str, id: &str) -> Result<Head> {
    let row =
        sqlx::query("SELECT version, deleted FROM resource_current WHERE rtype = ?1 AND id = ?2")
            .bind(rtype)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?;
    if let Some(row) = row {
        let version: i64 = row.try_get(0).map_err(db)?;
        let deleted: bool = row.try_get(1).map_err(db)?;
        return Ok(Head {
            last: Some(version),
            live: (!deleted).then_some(version),
        });
    }
    // No current pointer, but an erase of another owner may have left older
    // versions behind: never reuse their numbers.
    let last: Option<i64> =
        sqlx::query("SELECT MAX(version) FROM resource_versions WHERE rtype = ?1 AND id = ?2")
            .bind(rtype)
            .bind(id)
            .fetch_one(&mut **tx)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
    Ok(Head { last, live: None })
}

/// Checks `op` against the stored head. Kept identical in both adapters.
fn check(op: &WriteOp, head: &Head) -> Result<(), ConflictReason> {
    match op.precondition {
        Precondition::MustNotExist if head.last.is_some() => {
            return Err(ConflictReason::AlreadyExists);
        }
        Precondition::MustNotExist => {}
        Precondition::CurrentVersion(v) | Precondition::CurrentIs(Some(v)) => {
            if head.live.and_then(|l| u64::try_from(l).ok()) != Some(v.0) {
                return Err(ConflictReason::VersionMismatch);
            }
        }
        Precondition::CurrentIs(None) if head.live.is_some() => {
            return Err(ConflictReason::VersionMismatch);
        }
        Precondition::CurrentIs(None) => {}
    }
    // History stays gap-free: the new version is exactly the next number.
    let expected = head.last.map_or(Some(1), |l| l.checked_add(1));
    if expected.and_then(|e| u64::try_from(e).ok()) != Some(op.version.version.0) {
        return Err(ConflictReason::VersionMismatch);
    }
    Ok(())
}

async fn apply(tx: &mut Transaction<'static, Sqlite>, op: &WriteOp) -> Result<()> {
    let v = &op.version;
    let rtype = v.rtype.as_str();
    let id = v.id.as_str();
    let head = head(tx, rtype, id).await?;
    check(op, &head).map_err(|reason| StoreError::Conflict {
        rtype: v.rtype,
        id: v.id.clone(),
        reason,
    })?;
    let version = to_i64(v.version.0, "version")?;
    let owner = v.key_owner.storage_key();
    sqlx::query(
        "INSERT INTO resource_versions (rtype, id, version, last_updated, deleted, key_owner, ciphertext) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(rtype)
    .bind(id)
    .bind(version)
    .bind(v.last_updated.0)
    .bind(v.deleted)
    .bind(&owner)
    .bind(&v.ciphertext)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    sqlx::query("DELETE FROM search_index WHERE rtype = ?1 AND id = ?2")
        .bind(rtype)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    upsert_current(tx, v, version, &owner).await?;
    if !v.deleted {
        for row in &op.index {
            insert_index(tx, rtype, id, row).await?;
        }
    }
    Ok(())
}

async fn upsert_current(
    tx: &mut Transaction<'static, Sqlite>,
    v: &StoredVersion,
    version: i64,
    owner: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO resource_current (rtype, id, version, last_updated, deleted, key_owner) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (rtype, id) DO UPDATE SET version = excluded.version, \
         last_updated = excluded.last_updated, deleted = excluded.deleted, key_owner = excluded.key_owner \
         WHERE excluded.version > resource_current.version",
    )
    .bind(v.rtype.as_str())
    .bind(v.id.as_str())
    .bind(version)
    .bind(v.last_updated.0)
    .bind(v.deleted)
    .bind(owner)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

async fn insert_index(
    tx: &mut Transaction<'static, Sqlite>,
    rtype: &str,
    id: &str,
    row: &IndexRow,
) -> Result<()> {
    sqlx::query(
        "INSERT OR IGNORE INTO search_index (rtype, id, param, token) VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(rtype)
    .bind(id)
    .bind(&row.param)
    .bind(&row.token)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// The work of [`Store::commit_with_keys`] inside an open write transaction
/// (shared with [`Store::commit_audited`]); the caller commits.
async fn write_batch(
    tx: &mut Transaction<'static, Sqlite>,
    mut keys: Vec<WrappedKey>,
    ops: &[WriteOp],
) -> Result<()> {
    // Owner order, as in put_keys_if_absent, so racing batches cannot deadlock.
    keys.sort_by(|x, y| x.owner.cmp(&y.owner));
    for key in &keys {
        let done = sqlx::query(
            "INSERT INTO data_keys (owner, kek_id, wrapped) VALUES (?1, ?2, ?3) \
             ON CONFLICT (owner) DO NOTHING",
        )
        .bind(key.owner.storage_key())
        .bind(&key.kek_id)
        .bind(&key.wrapped)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        if done.rows_affected() != 1 {
            // The caller drops the transaction, which rolls everything back.
            return Err(StoreError::KeyExists);
        }
    }
    for op in ops {
        apply(tx, op).await?;
    }
    Ok(())
}

async fn count(pool: &SqlitePool, sql: &str) -> Result<u64> {
    let n: i64 = sqlx::query(sql)
        .fetch_one(pool)
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    u64::try_from(n).map_err(|_| StoreError::Corrupt("negative count".to_owned()))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin_write().await?;
        exec_script(
            &mut tx,
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL) STRICT",
        )
        .await?;
        let applied = sqlx::query("SELECT version, name FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let mut known = MIGRATIONS.iter();
        for row in &applied {
            let version: i64 = row.try_get(0).map_err(db)?;
            let name: String = row.try_get(1).map_err(db)?;
            match known.next() {
                Some(m) if m.version == version && m.name == name => {}
                // A newer build (or a different lineage) wrote this schema: refuse to guess.
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "schema migration {version} ({name}) is not one this build knows"
                    )));
                }
            }
        }
        for m in known {
            exec_script(&mut tx, m.sql).await?;
            sqlx::query("INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)")
                .bind(m.version)
                .bind(m.name)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn check_durability(&self) -> Result<()> {
        let mut conn = self.writer.acquire().await.map_err(db)?;
        let journal: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        if !journal.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Durability(format!(
                "sqlite journal_mode is {journal}, expected wal"
            )));
        }
        let sync: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        // 2 is FULL, 3 is EXTRA: both sync the WAL on every commit.
        if sync < 2 {
            return Err(StoreError::Durability(format!(
                "sqlite synchronous is {sync}, expected 2 (FULL)"
            )));
        }
        let secure: i64 = sqlx::query("PRAGMA secure_delete")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        if secure != 1 {
            return Err(StoreError::Durability(format!(
                "sqlite secure_delete is {secure}, expected 1 (ON)"
            )));
        }
        let fk: i64 = sqlx::query("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        if fk != 1 {
            return Err(StoreError::Durability(format!(
                "sqlite foreign_keys is {fk}, expected 1 (ON)"
            )));
        }
        Ok(())
    }

    async fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.readers)
            .await
            .map_err(db)?;
        row.map(|r| r.try_get::<Vec<u8>, _>(0).map_err(db))
            .transpose()
    }

    async fn put_setting_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let stored: Vec<u8> = sqlx::query("SELECT value FROM settings WHERE name = ?1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
            .bind(name)
            .bind(value)
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn get_key(&self, owner: &KeyOwner) -> Result<Option<WrappedKey>> {
        let row = sqlx::query("SELECT owner, kek_id, wrapped FROM data_keys WHERE owner = ?1")
            .bind(owner.storage_key())
            .fetch_optional(&self.readers)
            .await
            .map_err(db)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn put_key_if_absent(&self, key: &WrappedKey) -> Result<WrappedKey> {
        let owner = key.owner.storage_key();
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO data_keys (owner, kek_id, wrapped) VALUES (?1, ?2, ?3) ON CONFLICT (owner) DO NOTHING")
            .bind(&owner)
            .bind(&key.kek_id)
            .bind(&key.wrapped)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let row = sqlx::query("SELECT owner, kek_id, wrapped FROM data_keys WHERE owner = ?1")
            .bind(&owner)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let stored = key_from_row(&row)?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn put_keys_if_absent(&self, keys: &[WrappedKey]) -> Result<Vec<WrappedKey>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // Insert in owner order so that two racing batches lock rows in the
        // same order and cannot deadlock; answer in the caller's order.
        let mut order: Vec<&WrappedKey> = keys.iter().collect();
        order.sort_by(|x, y| x.owner.cmp(&y.owner));
        let mut tx = self.begin_write().await?;
        for key in order {
            sqlx::query(
                "INSERT INTO data_keys (owner, kek_id, wrapped) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (owner) DO NOTHING",
            )
            .bind(key.owner.storage_key())
            .bind(&key.kek_id)
            .bind(&key.wrapped)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let mut stored = Vec::with_capacity(keys.len());
        for key in keys {
            let row = sqlx::query("SELECT owner, kek_id, wrapped FROM data_keys WHERE owner = ?1")
                .bind(key.owner.storage_key())
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
            stored.push(key_from_row(&row)?);
        }
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn keys_not_wrapped_by(&self, kek_id: &str, limit: usize) -> Result<Vec<WrappedKey>> {
        let rows = sqlx::query("SELECT owner, kek_id, wrapped FROM data_keys WHERE kek_id <> ?1 ORDER BY owner LIMIT ?2")
            .bind(kek_id)
            .bind(limit_i64(limit))
            .fetch_all(&self.readers)
            .await
            .map_err(db)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn replace_key(&self, old: &WrappedKey, new: &WrappedKey) -> Result<bool> {
        if old.owner != new.owner {
            return Err(StoreError::Database(
                "replace_key: old and new keys have different owners".to_owned(),
            ));
        }
        let done = sqlx::query(
            "UPDATE data_keys SET kek_id = ?1, wrapped = ?2 WHERE owner = ?3 AND kek_id = ?4 AND wrapped = ?5",
        )
        .bind(&new.kek_id)
        .bind(&new.wrapped)
        .bind(old.owner.storage_key())
        .bind(&old.kek_id)
        .bind(&old.wrapped)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn commit_with_keys(&self, keys: Vec<WrappedKey>, ops: Vec<WriteOp>) -> Result<()> {
        if ops.is_empty() && keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        write_batch(&mut tx, keys, &ops).await?;
        tx.commit().await.map_err(db)
    }

    async fn commit_audited(
        &self,
        keys: Vec<WrappedKey>,
        ops: Vec<WriteOp>,
        records: Vec<AuditRecord>,
        integrate: Integrate<'_>,
    ) -> Result<AuditAppended> {
        self.audit_head_cache().take();
        let mut tx = self.begin_write().await?;
        // Dropping `tx` on any error rolls back the data and the entries.
        write_batch(&mut tx, keys, &ops).await?;
        let (appended, _) = audit::append(&mut tx, &records, integrate).await?;
        tx.commit().await.map_err(db)?;
        self.audit_committed();
        Ok(appended)
    }

    async fn current(&self, rtype: ResourceType, id: &ResourceId) -> Result<Option<StoredVersion>> {
        let row = sqlx::query(
            "SELECT v.rtype, v.id, v.version, v.last_updated, v.deleted, v.key_owner, v.ciphertext \
             FROM resource_current c JOIN resource_versions v \
             ON v.rtype = c.rtype AND v.id = c.id AND v.version = c.version \
             WHERE c.rtype = ?1 AND c.id = ?2",
        )
        .bind(rtype.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.readers)
        .await
        .map_err(db)?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn version(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        version: VersionId,
    ) -> Result<Option<StoredVersion>> {
        let Ok(version) = i64::try_from(version.0) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT v.rtype, v.id, v.version, v.last_updated, v.deleted, v.key_owner, v.ciphertext \
             FROM resource_versions v WHERE v.rtype = ?1 AND v.id = ?2 AND v.version = ?3",
        )
        .bind(rtype.as_str())
        .bind(id.as_str())
        .bind(version)
        .fetch_optional(&self.readers)
        .await
        .map_err(db)?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn history(&self, rtype: ResourceType, id: &ResourceId) -> Result<Vec<StoredVersion>> {
        let rows = sqlx::query(
            "SELECT v.rtype, v.id, v.version, v.last_updated, v.deleted, v.key_owner, v.ciphertext \
             FROM resource_versions v WHERE v.rtype = ?1 AND v.id = ?2 ORDER BY v.version DESC",
        )
        .bind(rtype.as_str())
        .bind(id.as_str())
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter().map(version_from_row).collect()
    }

    async fn existing(&self, rtype: ResourceType, ids: &[ResourceId]) -> Result<Vec<ResourceId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT c.id FROM resource_current c \
             WHERE c.rtype = ?1 AND c.deleted = 0 AND c.id IN (SELECT value FROM json_each(?2)) ORDER BY c.id",
        )
        .bind(rtype.as_str())
        .bind(ids_json(ids)?)
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| parse_id(r.try_get::<String, _>(0).map_err(db)?))
            .collect()
    }

    async fn find(&self, rtype: ResourceType, query: &IndexQuery) -> Result<Vec<ResourceId>> {
        if query.limit == 0
            || query.ids.as_ref().is_some_and(Vec::is_empty)
            || query.owners.as_ref().is_some_and(Vec::is_empty)
            || query.clauses.iter().any(|c| c.tokens.is_empty())
        {
            return Ok(Vec::new());
        }
        // The statement's size depends only on how many clauses there are;
        // ids, owners and tokens travel as one JSON parameter each.
        // When only owners narrow the query (a patient's compartment, the
        // relationship facts), the unary `+` keeps SQLite on the key-owner
        // index instead of walking every resource of the type.
        let by_owner = query.owners.is_some() && query.ids.is_none() && query.clauses.is_empty();
        let mut sql = String::from(if by_owner {
            "SELECT c.id FROM resource_current c WHERE +c.rtype = ?1 AND c.deleted = 0"
        } else {
            "SELECT c.id FROM resource_current c WHERE c.rtype = ?1 AND c.deleted = 0"
        });
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        if query.ids.is_some() {
            sql.push_str(&format!(
                " AND c.id IN (SELECT value FROM json_each(?{}))",
                next()
            ));
        }
        if query.owners.is_some() {
            sql.push_str(&format!(
                " AND c.key_owner IN (SELECT value FROM json_each(?{}))",
                next()
            ));
        }
        // Without statistics SQLite would drive a bounded query from the
        // last_updated index and test every resource in the time range; when
        // ids or tokens narrow the result, the unary `+` keeps it on those.
        let updated = if query.ids.is_some() || !query.clauses.is_empty() {
            "+c.last_updated"
        } else {
            "c.last_updated"
        };
        if query.last_updated_from.is_some() {
            sql.push_str(&format!(" AND {updated} >= ?{}", next()));
        }
        if query.last_updated_to.is_some() {
            sql.push_str(&format!(" AND {updated} <= ?{}", next()));
        }
        if !query.clauses.is_empty() {
            let parts: Vec<String> = query
                .clauses
                .iter()
                .map(|_| {
                    let (p, t) = (next(), next());
                    format!(
                        "SELECT s.id FROM search_index s WHERE s.rtype = ?1 AND s.param = ?{p} \
                         AND s.token IN (SELECT unhex(value) FROM json_each(?{t}))"
                    )
                })
                .collect();
            sql.push_str(&format!(" AND c.id IN ({})", parts.join(" INTERSECT ")));
        }
        sql.push_str(&format!(" ORDER BY c.id LIMIT ?{}", next()));

        let mut q = sqlx::query(&sql).bind(rtype.as_str());
        if let Some(ids) = &query.ids {
            q = q.bind(ids_json(ids)?);
        }
        if let Some(owners) = &query.owners {
            q = q.bind(owners_json(owners)?);
        }
        if let Some(from) = query.last_updated_from {
            q = q.bind(from.0);
        }
        if let Some(to) = query.last_updated_to {
            q = q.bind(to.0);
        }
        for clause in &query.clauses {
            q = q
                .bind(clause.param.as_str())
                .bind(tokens_json(&clause.tokens)?);
        }
        let rows = q
            .bind(limit_i64(query.limit))
            .fetch_all(&self.readers)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| parse_id(r.try_get::<String, _>(0).map_err(db)?))
            .collect()
    }

    async fn scan(
        &self,
        rtype: ResourceType,
        after: Option<&ResourceId>,
        limit: usize,
    ) -> Result<Vec<StoredVersion>> {
        let rows = sqlx::query(
            "SELECT v.rtype, v.id, v.version, v.last_updated, v.deleted, v.key_owner, v.ciphertext \
             FROM resource_current c JOIN resource_versions v \
             ON v.rtype = c.rtype AND v.id = c.id AND v.version = c.version \
             WHERE c.rtype = ?1 AND c.deleted = 0 AND c.id > ?2 ORDER BY c.id LIMIT ?3",
        )
        .bind(rtype.as_str())
        .bind(after.map_or("", ResourceId::as_str))
        .bind(limit_i64(limit))
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter().map(version_from_row).collect()
    }

    async fn current_many(
        &self,
        rtype: ResourceType,
        ids: &[ResourceId],
    ) -> Result<Vec<StoredVersion>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT v.rtype, v.id, v.version, v.last_updated, v.deleted, v.key_owner, v.ciphertext \
             FROM resource_current c JOIN resource_versions v \
             ON v.rtype = c.rtype AND v.id = c.id AND v.version = c.version \
             WHERE c.rtype = ?1 AND c.deleted = 0 AND c.id IN (SELECT value FROM json_each(?2))",
        )
        .bind(rtype.as_str())
        .bind(ids_json(ids)?)
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter().map(version_from_row).collect()
    }

    async fn current_of_owner(
        &self,
        owner: &KeyOwner,
        rtypes: &[ResourceType],
    ) -> Result<Vec<StoredVersion>> {
        if rtypes.is_empty() {
            return Ok(Vec::new());
        }
        let types: Vec<&str> = rtypes.iter().map(|t| t.as_str()).collect();
        let types =
            serde_json::to_string(&types).map_err(|e| StoreError::Database(e.to_string()))?;
        // The unary `+` keeps SQLite on the key-owner index.
        let rows = sqlx::query(
            "SELECT v.rtype, v.id, v.version, v.last_updated, v.deleted, v.key_owner, v.ciphertext \
             FROM resource_current c JOIN resource_versions v \
             ON v.rtype = c.rtype AND v.id = c.id AND v.version = c.version \
             WHERE c.key_owner = ?1 AND c.deleted = 0 \
             AND +c.rtype IN (SELECT value FROM json_each(?2))",
        )
        .bind(owner.storage_key())
        .bind(types)
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter().map(version_from_row).collect()
    }

    async fn erase_patient(&self, owner: &KeyOwner) -> Result<EraseReport> {
        let KeyOwner::Patient(patient) = owner else {
            // Shredding the organisation key would destroy every shared record.
            return Err(StoreError::Database(
                "refusing to erase the organisation key".to_owned(),
            ));
        };
        let owner = owner.storage_key();
        let mut tx = self.begin_write().await?;
        let index = sqlx::query(
            "DELETE FROM search_index WHERE (rtype, id) IN \
             (SELECT rtype, id FROM resource_current WHERE key_owner = ?1)",
        )
        .bind(&owner)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM resource_current WHERE key_owner = ?1")
            .bind(&owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let versions = sqlx::query("DELETE FROM resource_versions WHERE key_owner = ?1")
            .bind(&owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let key = sqlx::query("DELETE FROM data_keys WHERE owner = ?1")
            .bind(&owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        // The patient's consult rooms and invites name them: they go in the
        // same transaction as the records.
        consult::erase(&mut tx, patient.as_str()).await?;
        tx.commit().await.map_err(db)?;
        // secure_delete zeroed the freed pages in the WAL frames just written;
        // the checkpoint moves them into the file and truncates the WAL so the
        // old frames holding the ciphertext are gone too.
        self.checkpoint().await?;
        Ok(EraseReport {
            versions_deleted: versions.rows_affected(),
            index_rows_deleted: index.rows_affected(),
            key_destroyed: key.rows_affected() > 0,
        })
    }

    async fn refresh_statistics(&self) -> Result<()> {
        // Deliberately nothing: measured with `vigil bench fhir`, SQLite's
        // planner without statistics already drives searches from the
        // search-index primary key, and `ANALYZE` made it choose worse plans
        // (search throughput fell by a quarter).
        Ok(())
    }

    async fn stats(&self) -> Result<Stats> {
        Ok(Stats {
            keys: count(&self.readers, "SELECT COUNT(*) FROM data_keys").await?,
            current_resources: count(
                &self.readers,
                "SELECT COUNT(*) FROM resource_current WHERE deleted = 0",
            )
            .await?,
            versions: count(&self.readers, "SELECT COUNT(*) FROM resource_versions").await?,
            index_rows: count(&self.readers, "SELECT COUNT(*) FROM search_index").await?,
        })
    }

    async fn dump(&self, sink: &mut (dyn FnMut(BackupRecord) -> Result<()> + Send)) -> Result<()> {
        // One read transaction: in WAL mode its first read fixes the snapshot
        // that every later page sees.
        let mut tx = self.readers.begin().await.map_err(db)?;

        let mut after = String::new();
        loop {
            let rows = sqlx::query(
                "SELECT name, value FROM settings WHERE name > ?1 ORDER BY name LIMIT ?2",
            )
            .bind(&after)
            .bind(DUMP_PAGE)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            for r in &rows {
                let name: String = r.try_get(0).map_err(db)?;
                let value: Vec<u8> = r.try_get(1).map_err(db)?;
                after.clone_from(&name);
                sink(BackupRecord::Setting { name, value })?;
            }
            if rows.len() < DUMP_PAGE as usize {
                break;
            }
        }

        let mut after = String::new();
        loop {
            let rows = sqlx::query("SELECT owner, kek_id, wrapped FROM data_keys WHERE owner > ?1 ORDER BY owner LIMIT ?2")
                .bind(&after)
                .bind(DUMP_PAGE)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            for r in &rows {
                after = r.try_get(0).map_err(db)?;
                sink(BackupRecord::Key(key_from_row(r)?))?;
            }
            if rows.len() < DUMP_PAGE as usize {
                break;
            }
        }

        let mut after = (String::new(), String::new(), 0_i64);
        loop {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM resource_versions v WHERE (v.rtype, v.id, v.version) > (?1, ?2, ?3) \
                 ORDER BY v.rtype, v.id, v.version LIMIT ?4"
            );
            let rows = sqlx::query(&sql)
                .bind(&after.0)
                .bind(&after.1)
                .bind(after.2)
                .bind(DUMP_PAGE)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            for r in &rows {
                after = (
                    r.try_get(0).map_err(db)?,
                    r.try_get(1).map_err(db)?,
                    r.try_get(2).map_err(db)?,
                );
                sink(BackupRecord::Version(version_from_row(r)?))?;
            }
            if rows.len() < DUMP_PAGE as usize {
                break;
            }
        }

        let mut after = (
            String::new(),
            String::new(),
            String::new(),
            Vec::<u8>::new(),
        );
        loop {
            let rows = sqlx::query(
                "SELECT rtype, id, param, token FROM search_index WHERE (rtype, id, param, token) > (?1, ?2, ?3, ?4) \
                 ORDER BY rtype, id, param, token LIMIT ?5",
            )
            .bind(&after.0)
            .bind(&after.1)
            .bind(&after.2)
            .bind(&after.3)
            .bind(DUMP_PAGE)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            for r in &rows {
                let rtype: String = r.try_get(0).map_err(db)?;
                let id: String = r.try_get(1).map_err(db)?;
                let param: String = r.try_get(2).map_err(db)?;
                let token: Vec<u8> = r.try_get(3).map_err(db)?;
                let record = BackupRecord::Index {
                    rtype: parse_rtype(&rtype)?,
                    id: parse_id(id.clone())?,
                    row: IndexRow {
                        param: param.clone(),
                        token: token.clone(),
                    },
                };
                after = (rtype, id, param, token);
                sink(record)?;
            }
            if rows.len() < DUMP_PAGE as usize {
                break;
            }
        }
        accounts::dump_identity(&mut tx, sink).await?;
        audit::dump(&mut tx, sink).await?;
        grants::dump(&mut tx, sink).await?;
        monitor::dump(&mut tx, sink).await?;
        consult::dump(&mut tx, sink).await?;
        tx.rollback().await.map_err(db)
    }

    async fn load(&self, records: Vec<BackupRecord>) -> Result<()> {
        self.audit_head_cache().take();
        let mut tx = self.begin_write().await?;
        let non_empty: bool = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM settings) OR EXISTS (SELECT 1 FROM data_keys) \
             OR EXISTS (SELECT 1 FROM resource_versions)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
        if non_empty
            || accounts::has_identity(&mut tx).await?
            || audit::has_audit(&mut tx).await?
            || grants::has_any(&mut tx).await?
            || monitor::has_any(&mut tx).await?
            || consult::has_any(&mut tx).await?
        {
            return Err(StoreError::Backup(
                "refusing to load into a store that is not empty".to_owned(),
            ));
        }
        let mut audit_entries = 0_u64;
        for record in &records {
            match record {
                BackupRecord::Setting { name, value } => {
                    sqlx::query("INSERT INTO settings (name, value) VALUES (?1, ?2)")
                        .bind(name)
                        .bind(value)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                BackupRecord::Key(k) => {
                    sqlx::query(
                        "INSERT INTO data_keys (owner, kek_id, wrapped) VALUES (?1, ?2, ?3)",
                    )
                    .bind(k.owner.storage_key())
                    .bind(&k.kek_id)
                    .bind(&k.wrapped)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                BackupRecord::Version(v) => {
                    let version = to_i64(v.version.0, "version")?;
                    let owner = v.key_owner.storage_key();
                    sqlx::query(
                        "INSERT INTO resource_versions (rtype, id, version, last_updated, deleted, key_owner, ciphertext) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .bind(v.rtype.as_str())
                    .bind(v.id.as_str())
                    .bind(version)
                    .bind(v.last_updated.0)
                    .bind(v.deleted)
                    .bind(&owner)
                    .bind(&v.ciphertext)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                    upsert_current(&mut tx, v, version, &owner).await?;
                }
                BackupRecord::Index { rtype, id, row } => {
                    let live: Option<bool> = sqlx::query(
                        "SELECT deleted = 0 FROM resource_current WHERE rtype = ?1 AND id = ?2",
                    )
                    .bind(rtype.as_str())
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?
                    .map(|r| r.try_get::<bool, _>(0))
                    .transpose()
                    .map_err(db)?;
                    if live != Some(true) {
                        return Err(StoreError::Backup(format!(
                            "index row for {rtype}/{id} which has no current version in the backup"
                        )));
                    }
                    insert_index(&mut tx, rtype.as_str(), id.as_str(), row).await?;
                }
                BackupRecord::Account(_)
                | BackupRecord::Credentials { .. }
                | BackupRecord::RecoveryCode { .. }
                | BackupRecord::Passkey(_)
                | BackupRecord::FactorFailures { .. }
                | BackupRecord::Client(_) => {
                    accounts::load_identity(&mut tx, record).await?;
                }
                BackupRecord::AuditEntry { .. }
                | BackupRecord::AuditTile(_)
                | BackupRecord::AuditCheckpoint { .. }
                | BackupRecord::AuditHead(_) => {
                    audit::load(&mut tx, record, &mut audit_entries).await?;
                }
                BackupRecord::PolicyVersion(_) | BackupRecord::Grant(_) => {
                    grants::load(&mut tx, record).await?;
                }
                BackupRecord::MonitorCursor(_)
                | BackupRecord::AccessExplanation(_)
                | BackupRecord::MonitorCase(_)
                | BackupRecord::MonitorAlert(_)
                | BackupRecord::CaseNote(_)
                | BackupRecord::Suppression(_) => {
                    monitor::load(&mut tx, record).await?;
                }
                BackupRecord::ConsultRoom(_) | BackupRecord::ConsultInvite(_) => {
                    consult::load(&mut tx, record).await?;
                }
            }
        }
        audit::finish_load(&mut tx, audit_entries).await?;
        tx.commit().await.map_err(db)
    }
}
