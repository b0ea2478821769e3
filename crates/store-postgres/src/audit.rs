//! The audit log on PostgreSQL: appends lock the head row (`SELECT … FOR
//! UPDATE`), which serialises appenders across every node sharing the
//! database, so indexes are gap-free and in commit order.
//!
//! Architecture Invariant: no statement here deletes audit rows; the only
//! updates are the head row and widening a partial tile, inside an append.

use std::collections::BTreeMap;

use async_trait::async_trait;
use model::Timestamp;
use sqlx::{PgConnection, Postgres, Row, Transaction};
use store::{
    AuditAppended, AuditHead, AuditQuery, AuditRecord, AuditStore, AuditTile, BackupRecord,
    Integrate, Result, StoreError,
};

use crate::{DUMP_PAGE, PgStore, db, limit_i64, to_i64};

fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative audit {what}")))
}

async fn read_head(conn: &mut PgConnection, lock: bool) -> Result<AuditHead> {
    let sql = if lock {
        "SELECT size, state, checkpoint FROM audit_head WHERE id = 1 FOR UPDATE"
    } else {
        "SELECT size, state, checkpoint FROM audit_head WHERE id = 1"
    };
    let row = sqlx::query(sql)
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

/// Appends `records` inside `tx`. Taking the head row's lock first thing
/// is the single-writer lock: a second appender (on any node) waits here
/// until this transaction ends, then reads the head it wrote. The caller
/// commits; on error, dropping `tx` rolls back everything.
pub(crate) async fn append(
    tx: &mut Transaction<'static, Postgres>,
    records: &[AuditRecord],
    integrate: Integrate<'_>,
) -> Result<AuditAppended> {
    let head = read_head(tx, true).await?;
    let integrated = integrate(&head, records).map_err(StoreError::Audit)?;
    let first = head.size;
    let size = head.size_after(records.len())?;
    let first_i = to_i64(first, "audit index")?;
    let size_i = to_i64(size, "audit size")?;

    // One statement per table whatever the batch size: arrays unnested.
    if !records.is_empty() {
        let idxs: Vec<i64> = (first_i..size_i).collect();
        let recorded: Vec<i64> = records.iter().map(|r| r.recorded.0).collect();
        let bytes: Vec<&[u8]> = records.iter().map(|r| r.bytes.as_slice()).collect();
        sqlx::query(
            "INSERT INTO audit_entries (idx, recorded, bytes) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])",
        )
        .bind(idxs)
        .bind(recorded)
        .bind(bytes)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }

    let mut params: Vec<&str> = Vec::new();
    let mut tokens: Vec<&[u8]> = Vec::new();
    let mut term_idxs: Vec<i64> = Vec::new();
    for (i, r) in (first_i..).zip(records) {
        for (p, t) in &r.terms {
            params.push(p);
            tokens.push(t);
            term_idxs.push(i);
        }
    }
    if !params.is_empty() {
        sqlx::query(
            "INSERT INTO audit_terms (param, token, idx) \
             SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[]) ON CONFLICT DO NOTHING",
        )
        .bind(params)
        .bind(tokens)
        .bind(term_idxs)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }

    // The widest version of each tile the batch produced (one statement may
    // not update a row twice).
    let mut tiles: BTreeMap<(u8, u64), &AuditTile> = BTreeMap::new();
    for t in &integrated.tiles {
        let slot = tiles.entry((t.level, t.index)).or_insert(t);
        if t.width > slot.width {
            *slot = t;
        }
    }
    if !tiles.is_empty() {
        let levels: Vec<i32> = tiles.values().map(|t| i32::from(t.level)).collect();
        let idxs = tiles
            .values()
            .map(|t| to_i64(t.index, "tile index"))
            .collect::<Result<Vec<i64>>>()?;
        let widths: Vec<i32> = tiles.values().map(|t| i32::from(t.width)).collect();
        let data: Vec<&[u8]> = tiles.values().map(|t| t.data.as_slice()).collect();
        sqlx::query(
            "INSERT INTO audit_tiles (level, idx, width, data) \
             SELECT * FROM unnest($1::integer[], $2::bigint[], $3::integer[], $4::bytea[]) \
             ON CONFLICT (level, idx) DO UPDATE SET width = EXCLUDED.width, data = EXCLUDED.data \
             WHERE EXCLUDED.width > audit_tiles.width",
        )
        .bind(levels)
        .bind(idxs)
        .bind(widths)
        .bind(data)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }

    if integrated.persist_checkpoint {
        // An empty batch can repeat a size already in the history.
        sqlx::query(
            "INSERT INTO audit_checkpoints (size, note) VALUES ($1, $2) ON CONFLICT (size) DO NOTHING",
        )
        .bind(size_i)
        .bind(&integrated.checkpoint)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    sqlx::query("UPDATE audit_head SET size = $1, state = $2, checkpoint = $3 WHERE id = 1")
        .bind(size_i)
        .bind(&integrated.state)
        .bind(&integrated.checkpoint)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(AuditAppended {
        first_index: first,
        size,
        checkpoint: integrated.checkpoint,
    })
}

fn tile_from_row(row: &sqlx::postgres::PgRow) -> Result<AuditTile> {
    let level: i32 = row.try_get(0).map_err(db)?;
    let width: i32 = row.try_get(2).map_err(db)?;
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
impl AuditStore for PgStore {
    async fn append_audit(
        &self,
        records: Vec<AuditRecord>,
        integrate: Integrate<'_>,
    ) -> Result<AuditAppended> {
        let mut tx = self.begin().await?;
        let appended = append(&mut tx, &records, integrate).await?;
        tx.commit().await.map_err(db)?;
        Ok(appended)
    }

    async fn audit_head(&self) -> Result<AuditHead> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        read_head(&mut conn, false).await
    }

    async fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let Ok(from) = i64::try_from(from) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT idx, bytes FROM audit_entries WHERE idx >= $1 ORDER BY idx LIMIT $2",
        )
        .bind(from)
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    to_u64(r.try_get(0).map_err(db)?, "index")?,
                    r.try_get(1).map_err(db)?,
                ))
            })
            .collect()
    }

    async fn audit_tile(&self, level: u8, index: u64) -> Result<Option<AuditTile>> {
        let Ok(index) = i64::try_from(index) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT level, idx, width, data FROM audit_tiles WHERE level = $1 AND idx = $2",
        )
        .bind(i32::from(level))
        .bind(index)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(tile_from_row).transpose()
    }

    async fn audit_checkpoints(&self, from_size: u64, limit: usize) -> Result<Vec<(u64, String)>> {
        let Ok(from) = i64::try_from(from_size) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT size, note FROM audit_checkpoints WHERE size >= $1 ORDER BY size LIMIT $2",
        )
        .bind(from)
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
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
                        "SELECT idx FROM audit_terms WHERE param = ${p} AND token = ANY(${t}::bytea[])"
                    )
                })
                .collect();
            format!(
                "SELECT e.idx FROM ({}) m JOIN audit_entries e ON e.idx = m.idx WHERE 1 = 1",
                parts.join(" INTERSECT ")
            )
        };
        if before.is_some() {
            sql.push_str(&format!(" AND e.idx < ${}", next()));
        }
        if query.recorded_from.is_some() {
            sql.push_str(&format!(" AND e.recorded >= ${}", next()));
        }
        if query.recorded_to.is_some() {
            sql.push_str(&format!(" AND e.recorded < ${}", next()));
        }
        sql.push_str(&format!(" ORDER BY e.idx DESC LIMIT ${}", next()));
        let mut q = sqlx::query(&sql);
        for (param, tokens) in &query.clauses {
            q = q.bind(param.as_str()).bind(tokens.as_slice());
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
            .fetch_all(&self.pool)
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
    tx: &mut Transaction<'static, Postgres>,
    sink: &mut (dyn FnMut(BackupRecord) -> Result<()> + Send),
) -> Result<()> {
    let mut after = -1_i64;
    loop {
        let rows = sqlx::query(
            "SELECT idx, recorded, bytes FROM audit_entries WHERE idx > $1 ORDER BY idx LIMIT $2",
        )
        .bind(after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        let Some(last) = rows.last() else { break };
        let last: i64 = last.try_get(0).map_err(db)?;
        let term_rows = sqlx::query(
            "SELECT idx, param, token FROM audit_terms WHERE idx > $1 AND idx <= $2 \
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

    let mut after = (-1_i32, -1_i64);
    loop {
        let rows = sqlx::query(
            "SELECT level, idx, width, data FROM audit_tiles WHERE (level, idx) > ($1, $2) \
             ORDER BY level, idx LIMIT $3",
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
            "SELECT size, note FROM audit_checkpoints WHERE size > $1 ORDER BY size LIMIT $2",
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

    let head = read_head(tx, false).await?;
    if head != AuditHead::default() {
        sink(BackupRecord::AuditHead(head))?;
    }
    Ok(())
}

/// Whether the log holds anything (a load refuses a non-empty store).
pub(crate) async fn has_audit(tx: &mut Transaction<'static, Postgres>) -> Result<bool> {
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
    tx: &mut Transaction<'static, Postgres>,
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
            sqlx::query("INSERT INTO audit_entries (idx, recorded, bytes) VALUES ($1, $2, $3)")
                .bind(idx)
                .bind(recorded.0)
                .bind(bytes)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
            for (param, token) in terms {
                sqlx::query(
                    "INSERT INTO audit_terms (param, token, idx) VALUES ($1, $2, $3) \
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
                "INSERT INTO audit_tiles (level, idx, width, data) VALUES ($1, $2, $3, $4)",
            )
            .bind(i32::from(t.level))
            .bind(to_i64(t.index, "tile index")?)
            .bind(i32::from(t.width))
            .bind(&t.data)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        BackupRecord::AuditCheckpoint { size, note } => {
            sqlx::query("INSERT INTO audit_checkpoints (size, note) VALUES ($1, $2)")
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
                "UPDATE audit_head SET size = $1, state = $2, checkpoint = $3 WHERE id = 1",
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
pub(crate) async fn finish_load(
    tx: &mut Transaction<'static, Postgres>,
    entries: u64,
) -> Result<()> {
    let head = read_head(tx, false).await?;
    if head.size != entries {
        return Err(StoreError::Backup(format!(
            "audit head size {} but {entries} entries",
            head.size
        )));
    }
    Ok(())
}
