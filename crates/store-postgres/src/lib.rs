//! The PostgreSQL adapter for [`store::Store`], Vigil's production backend.
//!
//! Writes run in READ COMMITTED transactions that lock the resource's
//! `resource_current` row (`SELECT … FOR UPDATE`) before checking the
//! precondition; a first write to an id races on the primary key of
//! `resource_versions` instead, and the loser gets a conflict.
//!
//! Architecture Invariant: this crate only ever sees ciphertext, wrapped keys
//! and blind-index tokens; it knows nothing about FHIR or keys in clear.

mod accounts;
mod audit;
mod consult;
mod grants;
mod migrations;
mod monitor;

use std::str::FromStr;

use async_trait::async_trait;
use model::{KeyOwner, ResourceId, ResourceType, Timestamp, VersionId};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use store::{
    AuditAppended, AuditRecord, BackupRecord, ConflictReason, EraseReport, IndexQuery, IndexRow,
    Integrate, Precondition, Result, Stats, Store, StoreError, StoredVersion, WrappedKey, WriteOp,
};

use crate::migrations::MIGRATIONS;

/// How to connect to PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Return a store even when [`Store::check_durability`] fails. Only for
    /// tests that need a misconfigured server; by default `connect` refuses.
    pub allow_unsafe_durability: bool,
    /// Size of the connection pool.
    pub max_connections: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            allow_unsafe_durability: false,
            max_connections: 16,
        }
    }
}

/// A Vigil store in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// Most rows one dump query reads before the next page.
const DUMP_PAGE: i64 = 500;

/// An arbitrary, fixed key for the advisory lock that serialises migrations
/// run by several nodes at once.
const MIGRATION_LOCK: i64 = 0x5649_4749_4c00_0001;

const VERSION_COLUMNS: &str =
    "v.rtype, v.id, v.version, v.last_updated, v.deleted, v.key_owner, v.ciphertext";

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl PgStore {
    /// Connects a pool to `url` (`postgres://user@host:port/db?options[...]=...`).
    /// Unless `opts.allow_unsafe_durability`, fails with
    /// [`StoreError::Durability`] when the server is not durable.
    /// Does not migrate: call [`Store::migrate`] next.
    pub async fn connect(url: &str, opts: PgOptions) -> Result<PgStore> {
        let connect = PgConnectOptions::from_str(url).map_err(db)?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .connect_with(connect)
            .await
            .map_err(db)?;
        let store = PgStore { pool };
        if !opts.allow_unsafe_durability {
            store.check_durability().await?;
        }
        Ok(store)
    }

    /// Every (table, column) of the schema, sorted, for the test that keeps
    /// the two backends' schemas in step.
    pub async fn schema_columns(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema()",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut cols = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0).map_err(db)?,
                    r.try_get::<String, _>(1).map_err(db)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        cols.sort();
        Ok(cols)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db)
    }
}

/// Runs a multi-statement script (no parameters) inside a transaction.
/// `Executor::execute` on a bare `&str` rather than `raw_sql`, whose future
/// does not satisfy `async_trait`'s `Send` bound.
async fn exec_script(conn: &mut sqlx::PgConnection, sql: &'static str) -> Result<()> {
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

fn version_from_row(row: &PgRow) -> Result<StoredVersion> {
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

fn key_from_row(row: &PgRow) -> Result<WrappedKey> {
    Ok(WrappedKey {
        owner: parse_owner(&row.try_get::<String, _>(0).map_err(db)?)?,
        kek_id: row.try_get::<String, _>(1).map_err(db)?,
        wrapped: row.try_get::<Vec<u8>, _>(2).map_err(db)?,
    })
}

fn id_strings(ids: &[ResourceId]) -> Vec<String> {
    ids.iter().map(|i| i.as_str().to_owned()).collect()
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Deadlock (40P01) or serialization failure (40001): two batches locked the
/// same resources in different orders and PostgreSQL aborted this one.
fn is_lock_conflict(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40P01" || c == "40001")
}

// ---- the write path ----

/// The newest version of an id as seen inside the write transaction.
struct Head {
    /// The newest version number of any stored version, if any.
    last: Option<i64>,
    /// The current version if the id currently exists (not a delete marker).
    live: Option<i64>,
}

async fn head(
    tx: &mut Transaction<'static, Postgres>,
    rtype: &str,
    id: &str,
    lock_conflict: impl FnOnce() -> StoreError,
) -> Result<Head> {
    // The row lock makes a concurrent writer of the same id wait here, then
    // read the version this transaction wrote.
    let row = sqlx::query(
        "SELECT version, deleted FROM resource_current WHERE rtype = $1 AND id = $2 FOR UPDATE",
    )
    .bind(rtype)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(|e| {
        if is_lock_conflict(&e) {
            lock_conflict()
        } else {
            db(e)
        }
    })?;
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
        sqlx::query("SELECT MAX(version) FROM resource_versions WHERE rtype = $1 AND id = $2")
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

/// What a unique violation while writing `op` means: a concurrent writer
/// created the same id first.
fn race_reason(op: &WriteOp) -> ConflictReason {
    match op.precondition {
        Precondition::MustNotExist => ConflictReason::AlreadyExists,
        Precondition::CurrentVersion(_) | Precondition::CurrentIs(_) => {
            ConflictReason::VersionMismatch
        }
    }
}

async fn apply(tx: &mut Transaction<'static, Postgres>, op: &WriteOp) -> Result<()> {
    let v = &op.version;
    let rtype = v.rtype.as_str();
    let id = v.id.as_str();
    let conflict = |reason| StoreError::Conflict {
        rtype: v.rtype,
        id: v.id.clone(),
        reason,
    };
    let head = head(tx, rtype, id, || conflict(ConflictReason::VersionMismatch)).await?;
    check(op, &head).map_err(conflict)?;
    let version = to_i64(v.version.0, "version")?;
    let owner = v.key_owner.storage_key();
    sqlx::query(
        "INSERT INTO resource_versions (rtype, id, version, last_updated, deleted, key_owner, ciphertext) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
    .map_err(|e| {
        if is_unique_violation(&e) {
            conflict(race_reason(op))
        } else if is_lock_conflict(&e) {
            conflict(ConflictReason::VersionMismatch)
        } else {
            db(e)
        }
    })?;
    sqlx::query("DELETE FROM search_index WHERE rtype = $1 AND id = $2")
        .bind(rtype)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    upsert_current(tx, v, version, &owner).await?;
    if !v.deleted && !op.index.is_empty() {
        insert_index(tx, rtype, id, &op.index).await?;
    }
    Ok(())
}

async fn upsert_current(
    tx: &mut Transaction<'static, Postgres>,
    v: &StoredVersion,
    version: i64,
    owner: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO resource_current (rtype, id, version, last_updated, deleted, key_owner) \
         VALUES ($1, $2, $3, $4, $5, $6) \
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

/// Inserts index rows in one round trip, whatever their number.
async fn insert_index(
    tx: &mut Transaction<'static, Postgres>,
    rtype: &str,
    id: &str,
    rows: &[IndexRow],
) -> Result<()> {
    let params: Vec<&str> = rows.iter().map(|r| r.param.as_str()).collect();
    let tokens: Vec<&[u8]> = rows.iter().map(|r| r.token.as_slice()).collect();
    sqlx::query(
        "INSERT INTO search_index (rtype, id, param, token) \
         SELECT $1, $2, p, t FROM unnest($3::text[], $4::bytea[]) AS u(p, t) ON CONFLICT DO NOTHING",
    )
    .bind(rtype)
    .bind(id)
    .bind(params)
    .bind(tokens)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// The work of [`Store::commit_with_keys`] inside an open transaction
/// (shared with [`Store::commit_audited`]); the caller commits.
async fn write_batch(
    tx: &mut Transaction<'static, Postgres>,
    mut keys: Vec<WrappedKey>,
    ops: &[WriteOp],
) -> Result<()> {
    // Owner order, as in put_keys_if_absent, so racing batches cannot deadlock.
    keys.sort_by(|x, y| x.owner.cmp(&y.owner));
    for key in &keys {
        let done = sqlx::query(
            "INSERT INTO data_keys (owner, kek_id, wrapped) VALUES ($1, $2, $3) \
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

async fn count(pool: &PgPool, sql: &str) -> Result<u64> {
    let n: i64 = sqlx::query(sql)
        .fetch_one(pool)
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    u64::try_from(n).map_err(|_| StoreError::Corrupt("negative count".to_owned()))
}

async fn setting(pool: &PgPool, name: &str) -> Result<String> {
    sqlx::query("SELECT current_setting($1)")
        .bind(name)
        .fetch_one(pool)
        .await
        .map_err(db)?
        .try_get::<String, _>(0)
        .map_err(db)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        exec_script(&mut tx,
            "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, name text NOT NULL)",
        ).await?;
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
            sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
                .bind(m.version)
                .bind(m.name)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn check_durability(&self) -> Result<()> {
        let sync = setting(&self.pool, "synchronous_commit").await?;
        if !matches!(sync.as_str(), "on" | "remote_apply" | "remote_write") {
            return Err(StoreError::Durability(format!(
                "postgres synchronous_commit is {sync}, expected on"
            )));
        }
        let fsync = setting(&self.pool, "fsync").await?;
        if fsync != "on" {
            return Err(StoreError::Durability(format!(
                "postgres fsync is {fsync}, expected on"
            )));
        }
        let fpw = setting(&self.pool, "full_page_writes").await?;
        if fpw != "on" {
            return Err(StoreError::Durability(format!(
                "postgres full_page_writes is {fpw}, expected on"
            )));
        }
        Ok(())
    }

    async fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| r.try_get::<Vec<u8>, _>(0).map_err(db))
            .transpose()
    }

    async fn put_setting_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        // ON CONFLICT waits for a concurrent inserter to finish, so the
        // following read (a new snapshot under READ COMMITTED) sees the winner.
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.get_setting(name).await?.ok_or_else(|| {
            StoreError::Database("setting vanished right after it was stored".to_owned())
        })
    }

    async fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn get_key(&self, owner: &KeyOwner) -> Result<Option<WrappedKey>> {
        let row = sqlx::query("SELECT owner, kek_id, wrapped FROM data_keys WHERE owner = $1")
            .bind(owner.storage_key())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn put_key_if_absent(&self, key: &WrappedKey) -> Result<WrappedKey> {
        sqlx::query("INSERT INTO data_keys (owner, kek_id, wrapped) VALUES ($1, $2, $3) ON CONFLICT (owner) DO NOTHING")
            .bind(key.owner.storage_key())
            .bind(&key.kek_id)
            .bind(&key.wrapped)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        self.get_key(&key.owner).await?.ok_or_else(|| {
            StoreError::Database("data key vanished right after it was stored".to_owned())
        })
    }

    async fn put_keys_if_absent(&self, keys: &[WrappedKey]) -> Result<Vec<WrappedKey>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // Insert in owner order so that two racing batches lock rows in the
        // same order and cannot deadlock; answer in the caller's order.
        let mut order: Vec<&WrappedKey> = keys.iter().collect();
        order.sort_by(|x, y| x.owner.cmp(&y.owner));
        let mut tx = self.begin().await?;
        for key in order {
            sqlx::query(
                "INSERT INTO data_keys (owner, kek_id, wrapped) VALUES ($1, $2, $3) \
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
            let row = sqlx::query("SELECT owner, kek_id, wrapped FROM data_keys WHERE owner = $1")
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
        let rows = sqlx::query("SELECT owner, kek_id, wrapped FROM data_keys WHERE kek_id <> $1 ORDER BY owner LIMIT $2")
            .bind(kek_id)
            .bind(limit_i64(limit))
            .fetch_all(&self.pool)
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
            "UPDATE data_keys SET kek_id = $1, wrapped = $2 WHERE owner = $3 AND kek_id = $4 AND wrapped = $5",
        )
        .bind(&new.kek_id)
        .bind(&new.wrapped)
        .bind(old.owner.storage_key())
        .bind(&old.kek_id)
        .bind(&old.wrapped)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn commit_with_keys(&self, keys: Vec<WrappedKey>, ops: Vec<WriteOp>) -> Result<()> {
        if ops.is_empty() && keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
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
        let mut tx = self.begin().await?;
        // Dropping `tx` on any error rolls back the data and the entries.
        // The data's row locks come first and the log's head lock last, so
        // the head is held only for the append itself, and a transaction
        // holding it never waits for a resource row.
        write_batch(&mut tx, keys, &ops).await?;
        let appended = audit::append(&mut tx, &records, integrate).await?;
        tx.commit().await.map_err(db)?;
        Ok(appended)
    }

    async fn current(&self, rtype: ResourceType, id: &ResourceId) -> Result<Option<StoredVersion>> {
        let row = sqlx::query(
            "SELECT v.rtype, v.id, v.version, v.last_updated, v.deleted, v.key_owner, v.ciphertext \
             FROM resource_current c JOIN resource_versions v \
             ON v.rtype = c.rtype AND v.id = c.id AND v.version = c.version \
             WHERE c.rtype = $1 AND c.id = $2",
        )
        .bind(rtype.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
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
             FROM resource_versions v WHERE v.rtype = $1 AND v.id = $2 AND v.version = $3",
        )
        .bind(rtype.as_str())
        .bind(id.as_str())
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn history(&self, rtype: ResourceType, id: &ResourceId) -> Result<Vec<StoredVersion>> {
        let rows = sqlx::query(
            "SELECT v.rtype, v.id, v.version, v.last_updated, v.deleted, v.key_owner, v.ciphertext \
             FROM resource_versions v WHERE v.rtype = $1 AND v.id = $2 ORDER BY v.version DESC",
        )
        .bind(rtype.as_str())
        .bind(id.as_str())
        .fetch_all(&self.pool)
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
             WHERE c.rtype = $1 AND NOT c.deleted AND c.id = ANY($2::text[]) ORDER BY c.id",
        )
        .bind(rtype.as_str())
        .bind(id_strings(ids))
        .fetch_all(&self.pool)
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
        // ids and tokens travel as one array parameter each.
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        // With index clauses, the matching ids are computed first (MATERIALIZED
        // forces that order): otherwise the planner may walk the whole type in
        // id order to satisfy ORDER BY … LIMIT and test each row, which is
        // slow on large types and with generic plans of prepared statements.
        let mut sql = String::new();
        if !query.clauses.is_empty() {
            let parts: Vec<String> = query
                .clauses
                .iter()
                .map(|_| {
                    let (p, t) = (next(), next());
                    format!(
                        "SELECT s.id FROM search_index s WHERE s.rtype = $1 AND s.param = ${p} \
                         AND s.token = ANY(${t}::bytea[])"
                    )
                })
                .collect();
            sql.push_str(&format!(
                "WITH m AS MATERIALIZED ({}) SELECT c.id FROM m JOIN resource_current c \
                 ON c.rtype = $1 AND c.id = m.id WHERE NOT c.deleted",
                parts.join(" INTERSECT ")
            ));
        } else {
            sql.push_str(
                "SELECT c.id FROM resource_current c WHERE c.rtype = $1 AND NOT c.deleted",
            );
        }
        if query.ids.is_some() {
            sql.push_str(&format!(" AND c.id = ANY(${}::text[])", next()));
        }
        if query.owners.is_some() {
            sql.push_str(&format!(" AND c.key_owner = ANY(${}::text[])", next()));
        }
        if query.last_updated_from.is_some() {
            sql.push_str(&format!(" AND c.last_updated >= ${}", next()));
        }
        if query.last_updated_to.is_some() {
            sql.push_str(&format!(" AND c.last_updated <= ${}", next()));
        }
        sql.push_str(&format!(" ORDER BY c.id LIMIT ${}", next()));

        let mut q = sqlx::query(&sql).bind(rtype.as_str());
        for clause in &query.clauses {
            q = q.bind(clause.param.as_str()).bind(clause.tokens.as_slice());
        }
        if let Some(ids) = &query.ids {
            q = q.bind(id_strings(ids));
        }
        if let Some(owners) = &query.owners {
            q = q.bind(
                owners
                    .iter()
                    .map(KeyOwner::storage_key)
                    .collect::<Vec<String>>(),
            );
        }
        if let Some(from) = query.last_updated_from {
            q = q.bind(from.0);
        }
        if let Some(to) = query.last_updated_to {
            q = q.bind(to.0);
        }
        let rows = q
            .bind(limit_i64(query.limit))
            .fetch_all(&self.pool)
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
             WHERE c.rtype = $1 AND NOT c.deleted AND c.id > $2 ORDER BY c.id LIMIT $3",
        )
        .bind(rtype.as_str())
        .bind(after.map_or("", ResourceId::as_str))
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
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
             WHERE c.rtype = $1 AND NOT c.deleted AND c.id = ANY($2::text[])",
        )
        .bind(rtype.as_str())
        .bind(id_strings(ids))
        .fetch_all(&self.pool)
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
        let types: Vec<String> = rtypes.iter().map(|t| t.as_str().to_owned()).collect();
        let rows = sqlx::query(
            "SELECT v.rtype, v.id, v.version, v.last_updated, v.deleted, v.key_owner, v.ciphertext \
             FROM resource_current c JOIN resource_versions v \
             ON v.rtype = c.rtype AND v.id = c.id AND v.version = c.version \
             WHERE c.key_owner = $1 AND NOT c.deleted AND c.rtype = ANY($2::text[])",
        )
        .bind(owner.storage_key())
        .bind(types)
        .fetch_all(&self.pool)
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
        let mut tx = self.begin().await?;
        // Lock the pointers first so a concurrent write to one of these
        // resources waits for the erase instead of re-creating index rows.
        sqlx::query("SELECT 1 FROM resource_current WHERE key_owner = $1 FOR UPDATE")
            .bind(&owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let index = sqlx::query(
            "DELETE FROM search_index s USING resource_current c \
             WHERE c.key_owner = $1 AND s.rtype = c.rtype AND s.id = c.id",
        )
        .bind(&owner)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM resource_current WHERE key_owner = $1")
            .bind(&owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let versions = sqlx::query("DELETE FROM resource_versions WHERE key_owner = $1")
            .bind(&owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let key = sqlx::query("DELETE FROM data_keys WHERE owner = $1")
            .bind(&owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        // The patient's consult rooms and invites name them: they go in the
        // same transaction as the records.
        consult::erase(&mut tx, patient.as_str()).await?;
        tx.commit().await.map_err(db)?;
        // VACUUM cannot run inside a transaction block; it removes the dead
        // tuples that still hold the erased ciphertext.
        sqlx::raw_sql(
            "VACUUM search_index, resource_current, resource_versions, data_keys, \
             consult_invites, consult_rooms",
        )
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(EraseReport {
            versions_deleted: versions.rows_affected(),
            index_rows_deleted: index.rows_affected(),
            key_destroyed: key.rows_affected() > 0,
        })
    }

    async fn refresh_statistics(&self) -> Result<()> {
        sqlx::query("ANALYZE resource_current, resource_versions, search_index, data_keys")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn stats(&self) -> Result<Stats> {
        Ok(Stats {
            keys: count(&self.pool, "SELECT COUNT(*) FROM data_keys").await?,
            current_resources: count(
                &self.pool,
                "SELECT COUNT(*) FROM resource_current WHERE NOT deleted",
            )
            .await?,
            versions: count(&self.pool, "SELECT COUNT(*) FROM resource_versions").await?,
            index_rows: count(&self.pool, "SELECT COUNT(*) FROM search_index").await?,
        })
    }

    async fn dump(&self, sink: &mut (dyn FnMut(BackupRecord) -> Result<()> + Send)) -> Result<()> {
        // REPEATABLE READ: every page below sees the snapshot of the first query.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(db)?;

        let mut after = String::new();
        loop {
            let rows = sqlx::query(
                "SELECT name, value FROM settings WHERE name > $1 ORDER BY name LIMIT $2",
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
            let rows = sqlx::query("SELECT owner, kek_id, wrapped FROM data_keys WHERE owner > $1 ORDER BY owner LIMIT $2")
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
                "SELECT {VERSION_COLUMNS} FROM resource_versions v WHERE (v.rtype, v.id, v.version) > ($1, $2, $3) \
                 ORDER BY v.rtype, v.id, v.version LIMIT $4"
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
                "SELECT rtype, id, param, token FROM search_index WHERE (rtype, id, param, token) > ($1, $2, $3, $4) \
                 ORDER BY rtype, id, param, token LIMIT $5",
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
        let mut tx = self.begin().await?;
        // Nobody may write while we check emptiness and fill the store.
        exec_script(
            &mut tx,
            "LOCK TABLE settings, data_keys, resource_versions, resource_current, search_index, \
             accounts, credentials, recovery_codes, passkeys, factor_failures, \
             audit_entries, audit_terms, audit_tiles, audit_checkpoints, audit_head, \
             emergency_grants, policy_versions, \
             monitor_state, monitor_explanations, monitor_cases, monitor_alerts, \
             monitor_case_notes, monitor_suppressions, consult_rooms, consult_invites \
             IN SHARE ROW EXCLUSIVE MODE",
        )
        .await?;
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
                    sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2)")
                        .bind(name)
                        .bind(value)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                BackupRecord::Key(k) => {
                    sqlx::query(
                        "INSERT INTO data_keys (owner, kek_id, wrapped) VALUES ($1, $2, $3)",
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
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
                        "SELECT NOT deleted FROM resource_current WHERE rtype = $1 AND id = $2",
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
                    insert_index(
                        &mut tx,
                        rtype.as_str(),
                        id.as_str(),
                        std::slice::from_ref(row),
                    )
                    .await?;
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
