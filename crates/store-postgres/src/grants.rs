//! [`GrantStore`] and [`PolicyStore`] for PostgreSQL (migration 5): break-the-glass
//! grants and the access policy's versions. "Revoke once" and "review once"
//! are single conditional `UPDATE`s (row locks give them one winner); policy
//! numbers are assigned under a table lock, so they stay gap-free across nodes.
//!
//! Architecture Invariant: no statement here deletes a grant or a policy
//! version.

use async_trait::async_trait;
use model::{ResourceId, Timestamp};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use store::{
    AccountId, BackupRecord, EmergencyGrant, GrantReview, GrantStore, PolicyStore, PolicyVersion,
    Result, StoreError,
};

use crate::{DUMP_PAGE, PgStore, db, limit_i64, parse_id, to_i64};

/// [`DUMP_PAGE`] as a length, to tell a full page from the last one.
const PAGE_LEN: usize = DUMP_PAGE.unsigned_abs() as usize;

const GRANT_COLUMNS: &str = "id, account, patient, start, expires, revoked, reason, \
     justification, review_due, review_reviewer, review_at, review_outcome, review_note";

const POLICY_COLUMNS: &str = "version, policy_text, author, created, comment";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("invalid stored {what}"))
}

fn parse_account_id(s: String) -> Result<AccountId> {
    AccountId::new(s).ok_or_else(|| corrupt("account id"))
}

fn grant_from_row(row: &PgRow) -> Result<EmergencyGrant> {
    let reviewer: Option<String> = row.try_get(9).map_err(db)?;
    let at: Option<i64> = row.try_get(10).map_err(db)?;
    let outcome: Option<String> = row.try_get(11).map_err(db)?;
    let note: Option<Vec<u8>> = row.try_get(12).map_err(db)?;
    let review = match (reviewer, at, outcome, note) {
        (Some(reviewer), Some(at), Some(outcome), Some(note)) => Some(GrantReview {
            reviewer: parse_account_id(reviewer)?,
            at: Timestamp(at),
            outcome,
            note,
        }),
        (None, None, None, None) => None,
        _ => return Err(corrupt("grant review")),
    };
    Ok(EmergencyGrant {
        id: row.try_get(0).map_err(db)?,
        account: parse_account_id(row.try_get(1).map_err(db)?)?,
        patient: parse_id(row.try_get(2).map_err(db)?)?,
        start: Timestamp(row.try_get(3).map_err(db)?),
        expires: Timestamp(row.try_get(4).map_err(db)?),
        revoked: row.try_get::<Option<i64>, _>(5).map_err(db)?.map(Timestamp),
        reason: row.try_get(6).map_err(db)?,
        justification: row.try_get(7).map_err(db)?,
        review_due: Timestamp(row.try_get(8).map_err(db)?),
        review,
    })
}

fn policy_from_row(row: &PgRow) -> Result<PolicyVersion> {
    let version: i64 = row.try_get(0).map_err(db)?;
    Ok(PolicyVersion {
        version: u64::try_from(version).map_err(|_| corrupt("policy version"))?,
        text: row.try_get(1).map_err(db)?,
        author: row
            .try_get::<Option<String>, _>(2)
            .map_err(db)?
            .map(parse_account_id)
            .transpose()?,
        created: Timestamp(row.try_get(3).map_err(db)?),
        comment: row.try_get(4).map_err(db)?,
    })
}

/// `INSERT` of a whole grant, `ON CONFLICT` clause appended by the caller.
fn insert_grant_sql(tail: &str) -> String {
    format!(
        "INSERT INTO emergency_grants ({GRANT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13){tail}"
    )
}

fn bind_grant<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    g: &'q EmergencyGrant,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let r = g.review.as_ref();
    q.bind(g.id.as_str())
        .bind(g.account.as_str())
        .bind(g.patient.as_str())
        .bind(g.start.0)
        .bind(g.expires.0)
        .bind(g.revoked.map(|t| t.0))
        .bind(g.reason.as_str())
        .bind(g.justification.as_slice())
        .bind(g.review_due.0)
        .bind(r.map(|r| r.reviewer.as_str()))
        .bind(r.map(|r| r.at.0))
        .bind(r.map(|r| r.outcome.as_str()))
        .bind(r.map(|r| r.note.as_slice()))
}

#[async_trait]
impl GrantStore for PgStore {
    async fn insert_grant(&self, grant: &EmergencyGrant) -> Result<()> {
        let sql = insert_grant_sql(" ON CONFLICT (id) DO NOTHING");
        let n = bind_grant(sqlx::query(&sql), grant)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::GrantExists)
        }
    }

    async fn grant(&self, id: &str) -> Result<Option<EmergencyGrant>> {
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM emergency_grants WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn grants_for_patient(&self, patient: &ResourceId) -> Result<Vec<EmergencyGrant>> {
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM emergency_grants WHERE patient = $1 \
             ORDER BY start DESC, id DESC"
        ))
        .bind(patient.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(grant_from_row).collect()
    }

    async fn grants_for_account(
        &self,
        account: &AccountId,
        live_at: Option<Timestamp>,
    ) -> Result<Vec<EmergencyGrant>> {
        let live = if live_at.is_some() {
            " AND revoked IS NULL AND start <= $2 AND expires >= $2"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {GRANT_COLUMNS} FROM emergency_grants WHERE account = $1{live} \
             ORDER BY start DESC, id DESC"
        );
        let mut q = sqlx::query(&sql).bind(account.as_str());
        if let Some(t) = live_at {
            q = q.bind(t.0);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(grant_from_row).collect()
    }

    async fn revoke_grant(&self, id: &str, at: Timestamp) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE emergency_grants SET revoked = $2 WHERE id = $1 AND revoked IS NULL",
        )
        .bind(id)
        .bind(at.0)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn grants_to_review(&self, limit: usize) -> Result<Vec<EmergencyGrant>> {
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM emergency_grants WHERE review_at IS NULL \
             ORDER BY review_due, id LIMIT $1"
        ))
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(grant_from_row).collect()
    }

    async fn review_grant(&self, id: &str, review: &GrantReview) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE emergency_grants SET review_reviewer = $2, review_at = $3, \
             review_outcome = $4, review_note = $5 WHERE id = $1 AND review_at IS NULL",
        )
        .bind(id)
        .bind(review.reviewer.as_str())
        .bind(review.at.0)
        .bind(&review.outcome)
        .bind(&review.note)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n == 1)
    }
}

#[async_trait]
impl PolicyStore for PgStore {
    async fn add_policy_version(
        &self,
        text: &str,
        author: Option<&AccountId>,
        created: Timestamp,
        comment: &str,
    ) -> Result<u64> {
        let mut tx = self.begin().await?;
        // Concurrent appends (from any node) queue on this lock, so each
        // reads the newest number only after the previous one committed.
        // Readers are not blocked.
        sqlx::query("LOCK TABLE policy_versions IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let version: i64 = sqlx::query(
            "INSERT INTO policy_versions (version, policy_text, author, created, comment) \
             SELECT COALESCE(MAX(version), 0) + 1, $1, $2, $3, $4 FROM policy_versions \
             RETURNING version",
        )
        .bind(text)
        .bind(author.map(AccountId::as_str))
        .bind(created.0)
        .bind(comment)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        u64::try_from(version).map_err(|_| corrupt("policy version"))
    }

    async fn current_policy(&self) -> Result<Option<PolicyVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM policy_versions ORDER BY version DESC LIMIT 1"
        ))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(policy_from_row).transpose()
    }

    async fn policy_version(&self, version: u64) -> Result<Option<PolicyVersion>> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM policy_versions WHERE version = $1"
        ))
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(policy_from_row).transpose()
    }

    async fn policy_versions(&self) -> Result<Vec<PolicyVersion>> {
        let rows = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM policy_versions ORDER BY version DESC"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(policy_from_row).collect()
    }
}

// ---- backup ----

/// Dumps policy versions (by version) then grants (by id) in the snapshot of
/// `tx`, each paged by its primary key.
pub(crate) async fn dump(
    tx: &mut Transaction<'static, Postgres>,
    sink: &mut (dyn FnMut(BackupRecord) -> Result<()> + Send),
) -> Result<()> {
    let mut after = 0_i64;
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM policy_versions WHERE version > $1 \
             ORDER BY version LIMIT $2"
        ))
        .bind(after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            after = r.try_get(0).map_err(db)?;
            sink(BackupRecord::PolicyVersion(policy_from_row(r)?))?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }

    let mut after = String::new();
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM emergency_grants WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(&after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let grant = grant_from_row(r)?;
            after.clone_from(&grant.id);
            sink(BackupRecord::Grant(grant))?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }
    Ok(())
}

/// Whether any grant or policy version is stored (a load refuses a
/// non-empty store).
pub(crate) async fn has_any(tx: &mut Transaction<'static, Postgres>) -> Result<bool> {
    sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM emergency_grants) OR EXISTS (SELECT 1 FROM policy_versions)",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(db)?
    .try_get(0)
    .map_err(db)
}

/// Inserts one grant or policy version during a restore; other records are
/// not this module's and are ignored. Policy versions must arrive in order
/// from 1 (the numbering stays gap-free).
pub(crate) async fn load(
    tx: &mut Transaction<'static, Postgres>,
    record: &BackupRecord,
) -> Result<()> {
    match record {
        BackupRecord::Grant(g) => {
            let sql = insert_grant_sql("");
            bind_grant(sqlx::query(&sql), g)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        BackupRecord::PolicyVersion(p) => {
            let newest: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM policy_versions")
                .fetch_one(&mut **tx)
                .await
                .map_err(db)?
                .try_get(0)
                .map_err(db)?;
            let version = to_i64(p.version, "policy version")?;
            if Some(version) != newest.checked_add(1) {
                return Err(StoreError::Backup(format!(
                    "policy version {} out of order (expected {})",
                    p.version,
                    newest.saturating_add(1)
                )));
            }
            sqlx::query(&format!(
                "INSERT INTO policy_versions ({POLICY_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
            ))
            .bind(version)
            .bind(&p.text)
            .bind(p.author.as_ref().map(AccountId::as_str))
            .bind(p.created.0)
            .bind(&p.comment)
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
        | BackupRecord::AuditEntry { .. }
        | BackupRecord::AuditTile(_)
        | BackupRecord::AuditCheckpoint { .. }
        | BackupRecord::AuditHead(_)
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
