//! [`MonitorStore`] for SQLite (migration 6): privacy monitoring's cursor,
//! explanations, cases, alerts, case notes and suppressions. Every write
//! goes through the one writer connection (`BEGIN IMMEDIATE` where a write
//! has several statements), so the cursor's compare-and-set, a case's
//! optimistic update and note numbering each have exactly one winner.
//!
//! Architecture Invariant: no statement here deletes a monitoring record;
//! the only updates are case upserts and officer updates, explanation
//! replacement, the cursor, and a suppression's revocation (once).

use async_trait::async_trait;
use model::Timestamp;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};
use store::{
    AccessExplanation, AccountId, BackupRecord, CaseNote, CaseQuery, EXPLANATIONS_PER_QUERY,
    MonitorAlert, MonitorBatch, MonitorCase, MonitorStore, OPEN_CASE_STATUSES, Result, StoreError,
    Suppression,
};

use crate::{DUMP_PAGE, SqliteStore, db, to_i64};

/// [`DUMP_PAGE`] as a length, to tell a full page from the last one.
const PAGE_LEN: usize = DUMP_PAGE.unsigned_abs() as usize;

const CASE_COLUMNS: &str = "id, subject, status, score, assignee, opened, updated, alerts, sealed";
const ALERT_COLUMNS: &str = "id, case_id, kind, score, created, sealed";
const NOTE_COLUMNS: &str = "case_id, seq, author, at, sealed";
const SUPPRESSION_COLUMNS: &str = "id, author, created, revoked, sealed";

/// Ranks cases for the queue (see [`MonitorStore::monitor_cases`]).
const CASE_ORDER: &str = "ORDER BY score DESC, updated DESC, id";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("invalid stored {what}"))
}

fn parse_account_id(s: String) -> Result<AccountId> {
    AccountId::new(s).ok_or_else(|| corrupt("account id"))
}

fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(what))
}

fn case_from_row(row: &SqliteRow) -> Result<MonitorCase> {
    let alerts: i64 = row.try_get(7).map_err(db)?;
    Ok(MonitorCase {
        id: row.try_get(0).map_err(db)?,
        subject: row.try_get(1).map_err(db)?,
        status: row.try_get(2).map_err(db)?,
        score: row.try_get(3).map_err(db)?,
        assignee: row
            .try_get::<Option<String>, _>(4)
            .map_err(db)?
            .map(parse_account_id)
            .transpose()?,
        opened: Timestamp(row.try_get(5).map_err(db)?),
        updated: Timestamp(row.try_get(6).map_err(db)?),
        alerts: u32::try_from(alerts).map_err(|_| corrupt("alert count"))?,
        sealed: row.try_get(8).map_err(db)?,
    })
}

fn alert_from_row(row: &SqliteRow) -> Result<MonitorAlert> {
    Ok(MonitorAlert {
        id: row.try_get(0).map_err(db)?,
        case_id: row.try_get(1).map_err(db)?,
        kind: row.try_get(2).map_err(db)?,
        score: row.try_get(3).map_err(db)?,
        created: Timestamp(row.try_get(4).map_err(db)?),
        sealed: row.try_get(5).map_err(db)?,
    })
}

fn note_from_row(row: &SqliteRow) -> Result<CaseNote> {
    Ok(CaseNote {
        case_id: row.try_get(0).map_err(db)?,
        seq: to_u64(row.try_get(1).map_err(db)?, "note seq")?,
        author: parse_account_id(row.try_get(2).map_err(db)?)?,
        at: Timestamp(row.try_get(3).map_err(db)?),
        sealed: row.try_get(4).map_err(db)?,
    })
}

fn suppression_from_row(row: &SqliteRow) -> Result<Suppression> {
    Ok(Suppression {
        id: row.try_get(0).map_err(db)?,
        author: parse_account_id(row.try_get(1).map_err(db)?)?,
        created: Timestamp(row.try_get(2).map_err(db)?),
        revoked: row.try_get::<Option<i64>, _>(3).map_err(db)?.map(Timestamp),
        sealed: row.try_get(4).map_err(db)?,
    })
}

fn explanation_from_row(row: &SqliteRow) -> Result<AccessExplanation> {
    Ok(AccessExplanation {
        index: to_u64(row.try_get(0).map_err(db)?, "explanation index")?,
        sealed: row.try_get(1).map_err(db)?,
    })
}

/// Inserts a whole case; `tail` is the `ON CONFLICT` clause, if any.
async fn insert_case(
    tx: &mut Transaction<'static, Sqlite>,
    c: &MonitorCase,
    tail: &str,
) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO monitor_cases ({CASE_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9){tail}"
    ))
    .bind(&c.id)
    .bind(&c.subject)
    .bind(&c.status)
    .bind(c.score)
    .bind(c.assignee.as_ref().map(AccountId::as_str))
    .bind(c.opened.0)
    .bind(c.updated.0)
    .bind(i64::from(c.alerts))
    .bind(&c.sealed)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// Inserts an alert; `false` if its id is stored already.
async fn insert_alert(tx: &mut Transaction<'static, Sqlite>, a: &MonitorAlert) -> Result<bool> {
    let n = sqlx::query(&format!(
        "INSERT INTO monitor_alerts ({ALERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (id) DO NOTHING"
    ))
    .bind(&a.id)
    .bind(&a.case_id)
    .bind(&a.kind)
    .bind(a.score)
    .bind(a.created.0)
    .bind(&a.sealed)
    .execute(&mut **tx)
    .await
    .map_err(db)?
    .rows_affected();
    Ok(n == 1)
}

async fn put_explanation(
    tx: &mut Transaction<'static, Sqlite>,
    e: &AccessExplanation,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO monitor_explanations (idx, sealed) VALUES (?1, ?2) \
         ON CONFLICT (idx) DO UPDATE SET sealed = excluded.sealed",
    )
    .bind(to_i64(e.index, "explanation index")?)
    .bind(&e.sealed)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

async fn insert_suppression(
    exec: impl sqlx::SqliteExecutor<'_>,
    s: &Suppression,
    tail: &str,
) -> Result<u64> {
    Ok(sqlx::query(&format!(
        "INSERT INTO monitor_suppressions ({SUPPRESSION_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5){tail}"
    ))
    .bind(&s.id)
    .bind(s.author.as_str())
    .bind(s.created.0)
    .bind(s.revoked.map(|t| t.0))
    .bind(&s.sealed)
    .execute(exec)
    .await
    .map_err(db)?
    .rows_affected())
}

/// The JSON array `[1,2,3]` for `json_each`: one parameter whatever the
/// number of indexes.
fn indexes_json(indexes: &[u64]) -> Result<String> {
    let v = indexes
        .iter()
        .map(|&i| to_i64(i, "explanation index"))
        .collect::<Result<Vec<i64>>>()?;
    serde_json::to_string(&v).map_err(|e| StoreError::Database(e.to_string()))
}

#[async_trait]
impl MonitorStore for SqliteStore {
    async fn monitor_cursor(&self) -> Result<u64> {
        let processed: i64 = sqlx::query("SELECT processed FROM monitor_state WHERE id = 1")
            .fetch_one(&self.readers)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        to_u64(processed, "monitoring cursor")
    }

    async fn commit_monitor_batch(&self, batch: MonitorBatch) -> Result<()> {
        batch.check()?;
        let (from, to) = (
            to_i64(batch.from, "monitoring cursor")?,
            to_i64(batch.to, "monitoring cursor")?,
        );
        // Any error below drops `tx`, which rolls everything back.
        let mut tx = self.begin_write().await?;
        let moved =
            sqlx::query("UPDATE monitor_state SET processed = ?2 WHERE id = 1 AND processed = ?1")
                .bind(from)
                .bind(to)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
        if moved != 1 {
            return Err(StoreError::MonitorCursor);
        }
        // Cases first: the batch's alerts may belong to new ones.
        for c in &batch.cases {
            insert_case(
                &mut tx,
                c,
                " ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
                 score = excluded.score, assignee = excluded.assignee, \
                 updated = excluded.updated, alerts = excluded.alerts, \
                 sealed = excluded.sealed",
            )
            .await?;
        }
        for a in &batch.alerts {
            if !insert_alert(&mut tx, a).await? {
                return Err(StoreError::MonitorBatch(
                    "an alert id is stored already".to_owned(),
                ));
            }
        }
        for e in &batch.explanations {
            put_explanation(&mut tx, e).await?;
        }
        tx.commit().await.map_err(db)
    }

    async fn explanations(&self, indexes: &[u64]) -> Result<Vec<AccessExplanation>> {
        let mut out = Vec::new();
        for chunk in indexes.chunks(EXPLANATIONS_PER_QUERY) {
            let rows = sqlx::query(
                "SELECT idx, sealed FROM monitor_explanations \
                 WHERE idx IN (SELECT value FROM json_each(?1))",
            )
            .bind(indexes_json(chunk)?)
            .fetch_all(&self.readers)
            .await
            .map_err(db)?;
            for r in &rows {
                out.push(explanation_from_row(r)?);
            }
        }
        out.sort_by_key(|e| e.index);
        // Chunks of a request that repeats an index can find it twice.
        out.dedup_by_key(|e| e.index);
        Ok(out)
    }

    async fn monitor_cases(&self, q: &CaseQuery) -> Result<Vec<MonitorCase>> {
        let mut sql = format!("SELECT {CASE_COLUMNS} FROM monitor_cases WHERE 1 = 1");
        if q.status.is_some() {
            sql.push_str(" AND status = ?1");
        }
        if q.assignee.is_some() {
            sql.push_str(" AND assignee = ?2");
        }
        sql.push_str(&format!(" {CASE_ORDER} LIMIT ?3"));
        // Numbered parameters: an unused one is simply not referenced.
        let rows = sqlx::query(&sql)
            .bind(q.status.as_deref())
            .bind(q.assignee.as_ref().map(AccountId::as_str))
            .bind(i64::from(q.limit))
            .fetch_all(&self.readers)
            .await
            .map_err(db)?;
        rows.iter().map(case_from_row).collect()
    }

    async fn monitor_case(&self, id: &str) -> Result<Option<MonitorCase>> {
        let row = sqlx::query(&format!(
            "SELECT {CASE_COLUMNS} FROM monitor_cases WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.readers)
        .await
        .map_err(db)?;
        row.as_ref().map(case_from_row).transpose()
    }

    async fn open_case_for(&self, subject: &[u8]) -> Result<Option<MonitorCase>> {
        let [open, follow_up] = OPEN_CASE_STATUSES;
        let row = sqlx::query(&format!(
            "SELECT {CASE_COLUMNS} FROM monitor_cases \
             WHERE subject = ?1 AND status IN (?2, ?3) \
             ORDER BY opened DESC, id DESC LIMIT 1"
        ))
        .bind(subject)
        .bind(open)
        .bind(follow_up)
        .fetch_optional(&self.readers)
        .await
        .map_err(db)?;
        row.as_ref().map(case_from_row).transpose()
    }

    async fn case_alerts(&self, case_id: &str) -> Result<Vec<MonitorAlert>> {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM monitor_alerts WHERE case_id = ?1 \
             ORDER BY score DESC, created, id"
        ))
        .bind(case_id)
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter().map(alert_from_row).collect()
    }

    async fn update_case(
        &self,
        id: &str,
        expected_updated: Timestamp,
        status: &str,
        assignee: Option<&AccountId>,
        updated: Timestamp,
        note: Option<(AccountId, Vec<u8>)>,
    ) -> Result<Option<u64>> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE monitor_cases SET status = ?3, assignee = ?4, updated = ?5 \
             WHERE id = ?1 AND updated = ?2",
        )
        .bind(id)
        .bind(expected_updated.0)
        .bind(status)
        .bind(assignee.map(AccountId::as_str))
        .bind(updated.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if n != 1 {
            let exists = sqlx::query("SELECT 1 FROM monitor_cases WHERE id = ?1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .is_some();
            return Err(if exists {
                StoreError::MonitorCaseChanged
            } else {
                StoreError::MonitorCaseNotFound
            });
        }
        let seq = match note {
            None => None,
            Some((author, sealed)) => {
                // One statement on the one writer connection: the number it
                // reads is the one it inserts.
                let seq: i64 = sqlx::query(
                    "INSERT INTO monitor_case_notes (case_id, seq, author, at, sealed) \
                     SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4 \
                     FROM monitor_case_notes WHERE case_id = ?1 RETURNING seq",
                )
                .bind(id)
                .bind(author.as_str())
                .bind(updated.0)
                .bind(&sealed)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?
                .try_get(0)
                .map_err(db)?;
                Some(to_u64(seq, "note seq")?)
            }
        };
        tx.commit().await.map_err(db)?;
        Ok(seq)
    }

    async fn case_notes(&self, case_id: &str) -> Result<Vec<CaseNote>> {
        let rows = sqlx::query(&format!(
            "SELECT {NOTE_COLUMNS} FROM monitor_case_notes WHERE case_id = ?1 ORDER BY seq"
        ))
        .bind(case_id)
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter().map(note_from_row).collect()
    }

    async fn add_suppression(&self, s: &Suppression) -> Result<()> {
        let n = insert_suppression(&self.writer, s, " ON CONFLICT (id) DO NOTHING").await?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::SuppressionExists)
        }
    }

    async fn revoke_suppression(&self, id: &str, at: Timestamp) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE monitor_suppressions SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL",
        )
        .bind(id)
        .bind(at.0)
        .execute(&self.writer)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn suppressions(&self) -> Result<Vec<Suppression>> {
        let rows = sqlx::query(&format!(
            "SELECT {SUPPRESSION_COLUMNS} FROM monitor_suppressions ORDER BY created, id"
        ))
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter().map(suppression_from_row).collect()
    }
}

// ---- backup ----

/// Dumps the cursor (if it moved from 0), then explanations, cases, alerts,
/// notes and suppressions in the snapshot of `tx`, each paged by its
/// primary key.
pub(crate) async fn dump(
    tx: &mut Transaction<'static, Sqlite>,
    sink: &mut (dyn FnMut(BackupRecord) -> Result<()> + Send),
) -> Result<()> {
    let processed: i64 = sqlx::query("SELECT processed FROM monitor_state WHERE id = 1")
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    if processed != 0 {
        sink(BackupRecord::MonitorCursor(to_u64(
            processed,
            "monitoring cursor",
        )?))?;
    }

    let mut after = -1_i64;
    loop {
        let rows = sqlx::query(
            "SELECT idx, sealed FROM monitor_explanations WHERE idx > ?1 ORDER BY idx LIMIT ?2",
        )
        .bind(after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            after = r.try_get(0).map_err(db)?;
            sink(BackupRecord::AccessExplanation(explanation_from_row(r)?))?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }

    let mut after = String::new();
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {CASE_COLUMNS} FROM monitor_cases WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))
        .bind(&after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let c = case_from_row(r)?;
            after.clone_from(&c.id);
            sink(BackupRecord::MonitorCase(c))?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }

    let mut after = String::new();
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM monitor_alerts WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))
        .bind(&after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let a = alert_from_row(r)?;
            after.clone_from(&a.id);
            sink(BackupRecord::MonitorAlert(a))?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }

    let mut after = (String::new(), 0_i64);
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {NOTE_COLUMNS} FROM monitor_case_notes WHERE (case_id, seq) > (?1, ?2) \
             ORDER BY case_id, seq LIMIT ?3"
        ))
        .bind(&after.0)
        .bind(after.1)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            after = (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?);
            sink(BackupRecord::CaseNote(note_from_row(r)?))?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }

    let mut after = String::new();
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {SUPPRESSION_COLUMNS} FROM monitor_suppressions WHERE id > ?1 \
             ORDER BY id LIMIT ?2"
        ))
        .bind(&after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let s = suppression_from_row(r)?;
            after.clone_from(&s.id);
            sink(BackupRecord::Suppression(s))?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }
    Ok(())
}

/// Whether any monitoring record is stored, or the cursor has moved (a load
/// refuses a non-empty store).
pub(crate) async fn has_any(tx: &mut Transaction<'static, Sqlite>) -> Result<bool> {
    sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM monitor_state WHERE processed <> 0) \
         OR EXISTS (SELECT 1 FROM monitor_explanations) \
         OR EXISTS (SELECT 1 FROM monitor_cases) \
         OR EXISTS (SELECT 1 FROM monitor_suppressions)",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(db)?
    .try_get(0)
    .map_err(db)
}

/// Inserts one monitoring record during a restore; other records are not
/// this module's and are ignored. Cases must come before their alerts and
/// notes, and a case's notes in order from 1 (the numbering stays gap-free).
pub(crate) async fn load(
    tx: &mut Transaction<'static, Sqlite>,
    record: &BackupRecord,
) -> Result<()> {
    match record {
        BackupRecord::MonitorCursor(n) => {
            sqlx::query("UPDATE monitor_state SET processed = ?1 WHERE id = 1")
                .bind(to_i64(*n, "monitoring cursor")?)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        BackupRecord::AccessExplanation(e) => put_explanation(tx, e).await?,
        BackupRecord::MonitorCase(c) => insert_case(tx, c, "").await?,
        BackupRecord::MonitorAlert(a) => {
            if !insert_alert(tx, a).await? {
                return Err(StoreError::Backup(format!(
                    "monitoring alert {:?} appears twice",
                    a.id
                )));
            }
        }
        BackupRecord::CaseNote(n) => {
            let newest: i64 = sqlx::query(
                "SELECT COALESCE(MAX(seq), 0) FROM monitor_case_notes WHERE case_id = ?1",
            )
            .bind(&n.case_id)
            .fetch_one(&mut **tx)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
            let seq = to_i64(n.seq, "note seq")?;
            if Some(seq) != newest.checked_add(1) {
                return Err(StoreError::Backup(format!(
                    "case note {} out of order (expected {})",
                    n.seq,
                    newest.saturating_add(1)
                )));
            }
            sqlx::query(&format!(
                "INSERT INTO monitor_case_notes ({NOTE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"
            ))
            .bind(&n.case_id)
            .bind(seq)
            .bind(n.author.as_str())
            .bind(n.at.0)
            .bind(&n.sealed)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        BackupRecord::Suppression(s) => {
            insert_suppression(&mut **tx, s, "").await?;
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
        | BackupRecord::AuditEntry { .. }
        | BackupRecord::AuditTile(_)
        | BackupRecord::AuditCheckpoint { .. }
        | BackupRecord::AuditHead(_)
        | BackupRecord::PolicyVersion(_)
        | BackupRecord::Grant(_)
        | BackupRecord::ConsultRoom(_)
        | BackupRecord::ConsultInvite(_) => {}
    }
    Ok(())
}
