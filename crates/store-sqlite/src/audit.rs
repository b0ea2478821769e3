//! The audit log on SQLite: append under the one writer connection and
//! `BEGIN IMMEDIATE` (the log's single-writer lock), reads from the readers.
//!
//! Architecture Invariant: no statement here deletes audit rows; the only
//! updates are the head row and widening a partial tile, inside an append.

use std::collections::BTreeMap;

use async_trait::async_trait;
use model::Timestamp;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};
use store::{
    AuditAppended, AuditHead, AuditQuery, AuditRecord, AuditStore, AuditTile, BackupRecord,
    Integrate, Result, StoreError,
};

use crate::{DUMP_PAGE, SqliteStore, db, limit_i64, to_i64, tokens_json};

/// Every write of an append, as one multi-statement query of fixed text (so
/// one cached list of prepared statements): the batch's bytes (entries,
/// term tokens, tiles) travel as one blob cut with `substr`, and its rows
/// as JSON arrays of numbers (`json_each`) saying where each piece lies.
/// (Hex in JSON, the first version, spent a quarter of the CPU of
/// `vigil bench audit` encoding and decoding.) The head goes first and is
/// guarded: when the log is no longer at the size the batch was integrated
/// against, the size becomes -1 and its `CHECK (size >= 0)` aborts the whole
/// append before any entry is written.
///
/// Parameters are anonymous and bound in the order they appear (sqlx binds
/// a statement list that way; numbered ones that skip a number in one
/// statement are not bound right): see [`Prepared::query`].
macro_rules! append_sql {
    () => {
        "\
UPDATE audit_head SET size = CASE WHEN size = ? THEN ? ELSE -1 END, state = ?, checkpoint = ? \
 WHERE id = 1;
INSERT INTO audit_entries (idx, recorded, bytes) \
 SELECT ? + key, value ->> 0, substr(?, value ->> 1, value ->> 2) FROM json_each(?);
INSERT INTO audit_terms (param, token, idx) \
 SELECT value ->> 0, substr(?, value ->> 1, value ->> 2), value ->> 3 FROM json_each(?) WHERE true \
 ON CONFLICT DO NOTHING;
INSERT INTO audit_tiles (level, idx, width, data) \
 SELECT value ->> 0, value ->> 1, value ->> 2, substr(?, value ->> 3, value ->> 4) \
 FROM json_each(?) WHERE true \
 ON CONFLICT (level, idx) DO UPDATE SET width = excluded.width, data = excluded.data \
 WHERE excluded.width > audit_tiles.width;
INSERT INTO audit_checkpoints (size, note) SELECT ?, ? WHERE ? \
 ON CONFLICT (size) DO NOTHING"
    };
}
const APPEND_SQL: &str = append_sql!();

fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative audit {what}")))
}

async fn read_head(conn: &mut SqliteConnection) -> Result<AuditHead> {
    let row = sqlx::query("SELECT size, state, checkpoint FROM audit_head WHERE id = 1")
        .fetch_optional(conn)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::Corrupt("audit head row missing".to_owned()))?;
    Ok(AuditHead {
        size: to_u64(row.try_get(0).map_err(db)?, "size")?,
        state: row.try_get(1).map_err(db)?,
        checkpoint: row.try_get(2).map_err(db)?,
    })
}

fn json(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Database(e.to_string()))
}

/// A batch integrated against a head, ready to be written by [`APPEND_SQL`].
struct Prepared {
    old_size: i64,
    new_size: i64,
    state: Vec<u8>,
    checkpoint: String,
    persist: bool,
    /// Every piece of bytes of the batch, one after another.
    bytes: Vec<u8>,
    entries: String,
    terms: String,
    tiles: String,
    appended: AuditAppended,
}

impl Prepared {
    /// Integrates `records` against `head` and lays out the rows.
    fn new(
        head: &AuditHead,
        records: &[AuditRecord],
        integrate: Integrate<'_>,
    ) -> Result<Prepared> {
        let integrated = integrate(head, records).map_err(StoreError::Audit)?;
        let first = head.size;
        let size = head.size_after(records.len())?;
        let first_i = to_i64(first, "audit index")?;
        let mut bytes = Vec::with_capacity(records.iter().map(|r| r.bytes.len() + 64).sum());
        // Where a piece lands in `bytes`: (1-based offset, length).
        let mut put = |b: &[u8]| {
            let at = (bytes.len() + 1, b.len());
            bytes.extend_from_slice(b);
            at
        };
        let entries: Vec<(i64, usize, usize)> = records
            .iter()
            .map(|r| {
                let (at, len) = put(&r.bytes);
                (r.recorded.0, at, len)
            })
            .collect();
        let mut terms: Vec<(&str, usize, usize, i64)> = Vec::new();
        for (i, r) in (first_i..).zip(records) {
            for (p, t) in &r.terms {
                let (at, len) = put(t);
                terms.push((p.as_str(), at, len, i));
            }
        }
        // The widest version of each tile the batch produced.
        let mut widest: BTreeMap<(u8, u64), &AuditTile> = BTreeMap::new();
        for t in &integrated.tiles {
            let slot = widest.entry((t.level, t.index)).or_insert(t);
            if t.width > slot.width {
                *slot = t;
            }
        }
        let tiles = widest
            .into_values()
            .map(|t| {
                let (at, len) = put(&t.data);
                Ok((t.level, to_i64(t.index, "tile index")?, t.width, at, len))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Prepared {
            old_size: first_i,
            new_size: to_i64(size, "audit size")?,
            state: integrated.state,
            checkpoint: integrated.checkpoint.clone(),
            persist: integrated.persist_checkpoint,
            bytes,
            entries: json(&entries)?,
            terms: json(&terms)?,
            tiles: json(&tiles)?,
            appended: AuditAppended {
                first_index: first,
                size,
                checkpoint: integrated.checkpoint,
            },
        })
    }

    /// [`APPEND_SQL`] (optionally wrapped in more statements) with this
    /// batch's parameters.
    fn query<'q>(&'q self, sql: &'q str) -> sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>> {
        sqlx::query(sql)
            // The head.
            .bind(self.old_size)
            .bind(self.new_size)
            .bind(self.state.as_slice())
            .bind(self.checkpoint.as_str())
            // Entries, terms, tiles.
            .bind(self.old_size)
            .bind(self.bytes.as_slice())
            .bind(self.entries.as_str())
            .bind(self.bytes.as_slice())
            .bind(self.terms.as_str())
            .bind(self.bytes.as_slice())
            .bind(self.tiles.as_str())
            // The checkpoint history.
            .bind(self.new_size)
            .bind(self.checkpoint.as_str())
            .bind(self.persist)
    }

    /// Where the batch landed, and the head the log has once it is committed.
    fn finish(self) -> (AuditAppended, AuditHead) {
        let head = AuditHead {
            size: self.appended.size,
            state: self.state,
            checkpoint: Some(self.checkpoint),
        };
        (self.appended, head)
    }
}

/// Appends `records` inside `tx`, a write transaction (so this connection
/// already holds SQLite's write lock), against the head read there. The
/// caller commits; on error, dropping `tx` rolls back everything, the
/// entries included. Returns where the batch landed and the head after it.
pub(crate) async fn append(
    tx: &mut Transaction<'static, Sqlite>,
    records: &[AuditRecord],
    integrate: Integrate<'_>,
) -> Result<(AuditAppended, AuditHead)> {
    let head = read_head(tx).await?;
    let prepared = Prepared::new(&head, records, integrate)?;
    prepared
        .query(APPEND_SQL)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(prepared.finish())
}

/// The group commit's append in a single round trip to the writer
/// connection's thread: `BEGIN IMMEDIATE`, [`APPEND_SQL`] and `COMMIT` as one
/// query, against the head this process last committed. Any failure rolls
/// back (the statement list stops at its first error with the transaction
/// open). A stale head (a `CHECK` failure: the head's guard, or any other
/// `CHECK`, which then fails again) sends the caller the slow way, which
/// reads the head inside the transaction; any other error fails the batch.
async fn append_fast(store: &SqliteStore, prepared: &Prepared) -> std::result::Result<(), Fast> {
    const SQL: &str = concat!("BEGIN IMMEDIATE;\n", append_sql!(), ";\nCOMMIT");
    let mut conn = store
        .writer
        .acquire()
        .await
        .map_err(|e| Fast::Failed(db(e)))?;
    let Err(e) = prepared.query(SQL).execute(&mut *conn).await else {
        return Ok(());
    };
    match sqlx::query("ROLLBACK").execute(&mut *conn).await {
        Ok(_) => {}
        Err(r) if r.to_string().contains("no transaction is active") => {}
        Err(r) => {
            // The connection's transaction state is unknown: never hand it
            // back to other writers.
            tracing::error!(error = %r, "audit append could not roll back; dropping the writer connection");
            conn.detach();
        }
    }
    let stale = e
        .as_database_error()
        .is_some_and(|d| d.kind() == sqlx::error::ErrorKind::CheckViolation);
    Err(if stale {
        Fast::Stale
    } else {
        Fast::Failed(db(e))
    })
}

/// Why a single-round-trip append did not happen.
enum Fast {
    /// The log is not at the size the batch was integrated against.
    Stale,
    Failed(StoreError),
}

/// How many entries [`entry_chunk`] reads in one query (about 1.2 MB).
const ENTRY_CHUNK: usize = 4096;

/// Up to `limit` entries from index `from`, read as one row: the entries'
/// bytes concatenated (blobs pass through `group_concat` byte for byte in a
/// UTF-8 database, and `CAST` makes the result a blob again) beside an
/// `index:length` list made in the same pass, so the two agree row for row.
/// One row instead of thousands: a row costs sqlx far more than its bytes
/// do, and `vigil audit verify` reads every entry of the log. (An `ORDER BY`
/// inside the aggregates would sort 1.2 MB per chunk, more than doubling the
/// time; the rows come in the subquery's index order, and are put in order
/// here should they ever not.)
async fn entry_chunk(
    readers: &sqlx::SqlitePool,
    from: i64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let row = sqlx::query(
        "SELECT CAST(group_concat(bytes, '') AS BLOB), \
                group_concat(idx || ':' || length(bytes), ',') \
         FROM (SELECT idx, bytes FROM audit_entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2)",
    )
    .bind(from)
    .bind(limit_i64(limit))
    .fetch_one(readers)
    .await
    .map_err(db)?;
    let bytes: Option<Vec<u8>> = row.try_get(0).map_err(db)?;
    let layout: Option<String> = row.try_get(1).map_err(db)?;
    let (Some(bytes), Some(layout)) = (bytes, layout) else {
        return Ok(Vec::new());
    };
    let corrupt = || StoreError::Corrupt("audit entry chunk does not add up".to_owned());
    let mut out = Vec::with_capacity(limit.min(ENTRY_CHUNK));
    let mut at = 0usize;
    for item in layout.split(',') {
        let (idx, len) = item.split_once(':').ok_or_else(corrupt)?;
        let idx: u64 = idx.parse().map_err(|_| corrupt())?;
        let len: usize = len.parse().map_err(|_| corrupt())?;
        let end = at.checked_add(len).ok_or_else(corrupt)?;
        out.push((idx, bytes.get(at..end).ok_or_else(corrupt)?.to_vec()));
        at = end;
    }
    if at != bytes.len() {
        return Err(corrupt());
    }
    if !out.is_sorted_by_key(|(idx, _)| *idx) {
        out.sort_unstable_by_key(|(idx, _)| *idx);
    }
    Ok(out)
}

fn tile_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<AuditTile> {
    let level: i64 = row.try_get(0).map_err(db)?;
    let width: i64 = row.try_get(2).map_err(db)?;
    Ok(AuditTile {
        level: u8::try_from(level)
            .map_err(|_| StoreError::Corrupt(format!("audit tile level {level}")))?,
        index: to_u64(row.try_get(1).map_err(db)?, "tile index")?,
        width: u16::try_from(width)
            .map_err(|_| StoreError::Corrupt(format!("audit tile width {width}")))?,
        data: row.try_get(3).map_err(db)?,
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(
        &self,
        records: Vec<AuditRecord>,
        integrate: Integrate<'_>,
    ) -> Result<AuditAppended> {
        // The head this process last committed, if no other append has
        // happened here since; `APPEND_SQL`'s guard catches any other writer.
        let cached = self.audit_head_cache().take();
        if let Some(head) = cached {
            let prepared = Prepared::new(&head, &records, integrate)?;
            match append_fast(self, &prepared).await {
                Ok(()) => {
                    self.audit_committed();
                    let (appended, head) = prepared.finish();
                    *self.audit_head_cache() = Some(head);
                    return Ok(appended);
                }
                // Another append moved the log on: integrate again against
                // the head read inside the transaction.
                Err(Fast::Stale) => {}
                Err(Fast::Failed(e)) => return Err(e),
            }
        }
        let mut tx = self.begin_write().await?;
        let (appended, head) = append(&mut tx, &records, integrate).await?;
        tx.commit().await.map_err(db)?;
        self.audit_committed();
        *self.audit_head_cache() = Some(head);
        Ok(appended)
    }

    async fn audit_head(&self) -> Result<AuditHead> {
        let mut conn = self.readers.acquire().await.map_err(db)?;
        read_head(&mut conn).await
    }

    async fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let Ok(mut from) = i64::try_from(from) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut left = limit;
        while left > 0 {
            let want = left.min(ENTRY_CHUNK);
            let chunk = entry_chunk(&self.readers, from, want).await?;
            let got = chunk.len();
            let Some(&(last, _)) = chunk.last() else {
                break;
            };
            out.extend(chunk);
            if got < want {
                break;
            }
            left -= got;
            from = to_i64(last, "audit index")?.saturating_add(1);
        }
        Ok(out)
    }

    async fn audit_tile(&self, level: u8, index: u64) -> Result<Option<AuditTile>> {
        let Ok(index) = i64::try_from(index) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT level, idx, width, data FROM audit_tiles WHERE level = ?1 AND idx = ?2",
        )
        .bind(i64::from(level))
        .bind(index)
        .fetch_optional(&self.readers)
        .await
        .map_err(db)?;
        row.as_ref().map(tile_from_row).transpose()
    }

    async fn audit_checkpoints(&self, from_size: u64, limit: usize) -> Result<Vec<(u64, String)>> {
        let Ok(from) = i64::try_from(from_size) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT size, note FROM audit_checkpoints WHERE size >= ?1 ORDER BY size LIMIT ?2",
        )
        .bind(from)
        .bind(limit_i64(limit))
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    to_u64(r.try_get(0).map_err(db)?, "checkpoint size")?,
                    r.try_get(1).map_err(db)?,
                ))
            })
            .collect()
    }

    async fn find_audit(&self, query: &AuditQuery) -> Result<Vec<u64>> {
        if query.limit == 0 || query.clauses.iter().any(|(_, t)| t.is_empty()) {
            return Ok(Vec::new());
        }
        let before = match query.before.map(i64::try_from) {
            None | Some(Err(_)) => None,
            Some(Ok(0)) => return Ok(Vec::new()),
            Some(Ok(b)) => Some(b),
        };
        // Clauses drive the search through the (param, token, idx) index;
        // the statement's size depends only on how many clauses there are.
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        let mut sql = if query.clauses.is_empty() {
            String::from("SELECT e.idx FROM audit_entries e WHERE 1 = 1")
        } else {
            let parts: Vec<String> = query
                .clauses
                .iter()
                .map(|_| {
                    let (p, t) = (next(), next());
                    format!(
                        "SELECT idx FROM audit_terms WHERE param = ?{p} \
                         AND token IN (SELECT unhex(value) FROM json_each(?{t}))"
                    )
                })
                .collect();
            format!(
                "SELECT e.idx FROM ({}) m JOIN audit_entries e ON e.idx = m.idx WHERE 1 = 1",
                parts.join(" INTERSECT ")
            )
        };
        if before.is_some() {
            sql.push_str(&format!(" AND e.idx < ?{}", next()));
        }
        if query.recorded_from.is_some() {
            sql.push_str(&format!(" AND e.recorded >= ?{}", next()));
        }
        if query.recorded_to.is_some() {
            sql.push_str(&format!(" AND e.recorded < ?{}", next()));
        }
        sql.push_str(&format!(" ORDER BY e.idx DESC LIMIT ?{}", next()));
        let mut q = sqlx::query(&sql);
        for (param, tokens) in &query.clauses {
            q = q.bind(param.as_str()).bind(tokens_json(tokens)?);
        }
        if let Some(b) = before {
            q = q.bind(b);
        }
        if let Some(Timestamp(from)) = query.recorded_from {
            q = q.bind(from);
        }
        if let Some(Timestamp(to)) = query.recorded_to {
            q = q.bind(to);
        }
        let rows = q
            .bind(limit_i64(query.limit))
            .fetch_all(&self.readers)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| to_u64(r.try_get(0).map_err(db)?, "index"))
            .collect()
    }
}

// ---- backups ----

/// Sends the audit log to `sink` in the dump's snapshot: entries with their
/// terms, tiles, checkpoints, and the head unless the log is empty.
pub(crate) async fn dump(
    tx: &mut Transaction<'static, Sqlite>,
    sink: &mut (dyn FnMut(BackupRecord) -> Result<()> + Send),
) -> Result<()> {
    let mut after = -1_i64;
    loop {
        let rows = sqlx::query(
            "SELECT idx, recorded, bytes FROM audit_entries WHERE idx > ?1 ORDER BY idx LIMIT ?2",
        )
        .bind(after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        let Some(last) = rows.last() else { break };
        let last: i64 = last.try_get(0).map_err(db)?;
        let term_rows = sqlx::query(
            "SELECT idx, param, token FROM audit_terms WHERE idx > ?1 AND idx <= ?2 \
             ORDER BY idx, param, token",
        )
        .bind(after)
        .bind(last)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        let mut terms: BTreeMap<i64, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        for r in &term_rows {
            terms
                .entry(r.try_get(0).map_err(db)?)
                .or_default()
                .push((r.try_get(1).map_err(db)?, r.try_get(2).map_err(db)?));
        }
        for r in &rows {
            let idx: i64 = r.try_get(0).map_err(db)?;
            sink(BackupRecord::AuditEntry {
                index: to_u64(idx, "index")?,
                recorded: Timestamp(r.try_get(1).map_err(db)?),
                bytes: r.try_get(2).map_err(db)?,
                terms: terms.remove(&idx).unwrap_or_default(),
            })?;
        }
        after = last;
        if rows.len() < DUMP_PAGE as usize {
            break;
        }
    }

    let mut after = (-1_i64, -1_i64);
    loop {
        let rows = sqlx::query(
            "SELECT level, idx, width, data FROM audit_tiles WHERE (level, idx) > (?1, ?2) \
             ORDER BY level, idx LIMIT ?3",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            after = (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?);
            sink(BackupRecord::AuditTile(tile_from_row(r)?))?;
        }
        if rows.len() < DUMP_PAGE as usize {
            break;
        }
    }

    let mut after = -1_i64;
    loop {
        let rows = sqlx::query(
            "SELECT size, note FROM audit_checkpoints WHERE size > ?1 ORDER BY size LIMIT ?2",
        )
        .bind(after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            after = r.try_get(0).map_err(db)?;
            sink(BackupRecord::AuditCheckpoint {
                size: to_u64(after, "checkpoint size")?,
                note: r.try_get(1).map_err(db)?,
            })?;
        }
        if rows.len() < DUMP_PAGE as usize {
            break;
        }
    }

    let head = read_head(tx).await?;
    if head != AuditHead::default() {
        sink(BackupRecord::AuditHead(head))?;
    }
    Ok(())
}

/// Whether the log holds anything (a load refuses a non-empty store).
pub(crate) async fn has_audit(tx: &mut Transaction<'static, Sqlite>) -> Result<bool> {
    sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM audit_entries) OR EXISTS (SELECT 1 FROM audit_checkpoints) \
         OR EXISTS (SELECT 1 FROM audit_tiles) OR (SELECT size FROM audit_head WHERE id = 1) <> 0",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(db)?
    .try_get(0)
    .map_err(db)
}

/// Loads one audit record (other records are not this module's and are
/// ignored); `entries` counts the entries loaded so far, which
/// must arrive in index order from 0 (the log stays gap-free).
pub(crate) async fn load(
    tx: &mut Transaction<'static, Sqlite>,
    record: &BackupRecord,
    entries: &mut u64,
) -> Result<()> {
    match record {
        BackupRecord::AuditEntry {
            index,
            recorded,
            bytes,
            terms,
        } => {
            if *index != *entries {
                return Err(StoreError::Backup(format!(
                    "audit entry {index} out of order (expected {entries})"
                )));
            }
            let idx = to_i64(*index, "audit index")?;
            sqlx::query("INSERT INTO audit_entries (idx, recorded, bytes) VALUES (?1, ?2, ?3)")
                .bind(idx)
                .bind(recorded.0)
                .bind(bytes)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
            for (param, token) in terms {
                sqlx::query(
                    "INSERT INTO audit_terms (param, token, idx) VALUES (?1, ?2, ?3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(param)
                .bind(token)
                .bind(idx)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
            }
            *entries += 1;
        }
        BackupRecord::AuditTile(t) => {
            sqlx::query(
                "INSERT INTO audit_tiles (level, idx, width, data) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(i64::from(t.level))
            .bind(to_i64(t.index, "tile index")?)
            .bind(i64::from(t.width))
            .bind(&t.data)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        BackupRecord::AuditCheckpoint { size, note } => {
            sqlx::query("INSERT INTO audit_checkpoints (size, note) VALUES (?1, ?2)")
                .bind(to_i64(*size, "checkpoint size")?)
                .bind(note)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        BackupRecord::AuditHead(h) => {
            if h.size != *entries {
                return Err(StoreError::Backup(format!(
                    "audit head size {} but {entries} entries",
                    h.size
                )));
            }
            sqlx::query(
                "UPDATE audit_head SET size = ?1, state = ?2, checkpoint = ?3 WHERE id = 1",
            )
            .bind(to_i64(h.size, "audit size")?)
            .bind(&h.state)
            .bind(&h.checkpoint)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        BackupRecord::Setting { .. }
        | BackupRecord::Key(_)
        | BackupRecord::Version(_)
        | BackupRecord::Index { .. }
        | BackupRecord::Account(_)
        | BackupRecord::Credentials { .. }
        | BackupRecord::RecoveryCode { .. }
        | BackupRecord::Passkey(_)
        | BackupRecord::FactorFailures { .. }
        | BackupRecord::Client(_)
        | BackupRecord::PolicyVersion(_)
        | BackupRecord::Grant(_)
        | BackupRecord::MonitorCursor(_)
        | BackupRecord::AccessExplanation(_)
        | BackupRecord::MonitorCase(_)
        | BackupRecord::MonitorAlert(_)
        | BackupRecord::CaseNote(_)
        | BackupRecord::Suppression(_)
        | BackupRecord::ConsultRoom(_)
        | BackupRecord::ConsultInvite(_) => {}
    }
    Ok(())
}

/// Checks, after the last record, that the head covers every loaded entry.
pub(crate) async fn finish_load(tx: &mut Transaction<'static, Sqlite>, entries: u64) -> Result<()> {
    let head = read_head(tx).await?;
    if head.size != entries {
        return Err(StoreError::Backup(format!(
            "audit head size {} but {entries} entries",
            head.size
        )));
    }
    Ok(())
}
