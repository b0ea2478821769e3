//! [`ConsultStore`] for PostgreSQL (migration 7): telehealth consult rooms
//! and their invites. A room's update is `UPDATE … WHERE version =
//! $expected` and an identity check `UPDATE … WHERE failures = $expected`:
//! a concurrent updater on any node waits on the row lock, then re-checks
//! the condition against the row the winner wrote, finds it moved and
//! updates nothing, so each has exactly one winner. `ON CONFLICT DO NOTHING`
//! (which waits for a concurrent insert of the same key to finish) makes a
//! second room for an appointment (or a taken id) a typed refusal.
//!
//! Rooms and invites name a patient: [`erase`] deletes them with the rest of
//! the patient's data, in the erasure's transaction, locking the rooms
//! first so an invite being added to one of them waits and then fails.

use async_trait::async_trait;
use model::{ResourceId, Timestamp};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use store::{
    AccountId, BackupRecord, ConsultInvite, ConsultRoom, ConsultStore, Result, StoreError,
};

use crate::{DUMP_PAGE, PgStore, db, limit_i64, parse_id, to_i64};

/// [`DUMP_PAGE`] as a length, to tell a full page from the last one.
const PAGE_LEN: usize = DUMP_PAGE.unsigned_abs() as usize;

const ROOM_COLUMNS: &str = "id, appointment, patient, clinician, practitioner, created, version, \
     status, state, consult_start, consult_end";

const INVITE_COLUMNS: &str =
    "id, room, created, expires, method, failures, locked, verified_at, revoked, secret";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("invalid stored {what}"))
}

fn parse_account_id(s: String) -> Result<AccountId> {
    AccountId::new(s).ok_or_else(|| corrupt("account id"))
}

fn room_from_row(row: &PgRow) -> Result<ConsultRoom> {
    let version: i64 = row.try_get(6).map_err(db)?;
    Ok(ConsultRoom {
        id: row.try_get(0).map_err(db)?,
        appointment: parse_id(row.try_get(1).map_err(db)?)?,
        patient: parse_id(row.try_get(2).map_err(db)?)?,
        clinician: parse_account_id(row.try_get(3).map_err(db)?)?,
        practitioner: row.try_get(4).map_err(db)?,
        created: Timestamp(row.try_get(5).map_err(db)?),
        version: u64::try_from(version).map_err(|_| corrupt("room version"))?,
        status: row.try_get(7).map_err(db)?,
        state: row.try_get(8).map_err(db)?,
        consult_start: row.try_get::<Option<i64>, _>(9).map_err(db)?.map(Timestamp),
        consult_end: row
            .try_get::<Option<i64>, _>(10)
            .map_err(db)?
            .map(Timestamp),
    })
}

fn invite_from_row(row: &PgRow) -> Result<ConsultInvite> {
    let failures: i64 = row.try_get(5).map_err(db)?;
    Ok(ConsultInvite {
        id: row.try_get(0).map_err(db)?,
        room: row.try_get(1).map_err(db)?,
        created: Timestamp(row.try_get(2).map_err(db)?),
        expires: Timestamp(row.try_get(3).map_err(db)?),
        method: row.try_get(4).map_err(db)?,
        failures: u32::try_from(failures).map_err(|_| corrupt("invite failure count"))?,
        locked: row.try_get(6).map_err(db)?,
        verified_at: row.try_get::<Option<i64>, _>(7).map_err(db)?.map(Timestamp),
        revoked: row.try_get(8).map_err(db)?,
        secret: row.try_get(9).map_err(db)?,
    })
}

/// `INSERT` of a whole room, `ON CONFLICT` clause appended by the caller.
fn insert_room_sql(tail: &str) -> String {
    format!(
        "INSERT INTO consult_rooms ({ROOM_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11){tail}"
    )
}

fn bind_room<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    r: &'q ConsultRoom,
    version: i64,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    q.bind(r.id.as_str())
        .bind(r.appointment.as_str())
        .bind(r.patient.as_str())
        .bind(r.clinician.as_str())
        .bind(r.practitioner.as_deref())
        .bind(r.created.0)
        .bind(version)
        .bind(r.status.as_str())
        .bind(r.state.as_slice())
        .bind(r.consult_start.map(|t| t.0))
        .bind(r.consult_end.map(|t| t.0))
}

/// `INSERT` of a whole invite, `ON CONFLICT` clause appended by the caller.
fn insert_invite_sql(tail: &str) -> String {
    format!(
        "INSERT INTO consult_invites ({INVITE_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10){tail}"
    )
}

fn bind_invite<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    i: &'q ConsultInvite,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    q.bind(i.id.as_str())
        .bind(i.room.as_str())
        .bind(i.created.0)
        .bind(i.expires.0)
        .bind(i.method.as_str())
        .bind(i64::from(i.failures))
        .bind(i.locked)
        .bind(i.verified_at.map(|t| t.0))
        .bind(i.revoked)
        .bind(i.secret.as_slice())
}

#[async_trait]
impl ConsultStore for PgStore {
    async fn insert_room(&self, room: &ConsultRoom) -> Result<()> {
        if room.version != 1 {
            return Err(StoreError::ConsultRoom(
                "a new room's version must be 1".to_owned(),
            ));
        }
        // No conflict target: a taken id and a second room for the
        // appointment are both refusals.
        let sql = insert_room_sql(" ON CONFLICT DO NOTHING");
        let n = bind_room(sqlx::query(&sql), room, 1)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::RoomExists)
        }
    }

    async fn room(&self, id: &str) -> Result<Option<ConsultRoom>> {
        let row = sqlx::query(&format!(
            "SELECT {ROOM_COLUMNS} FROM consult_rooms WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(room_from_row).transpose()
    }

    async fn room_for_appointment(&self, appointment: &ResourceId) -> Result<Option<ConsultRoom>> {
        let row = sqlx::query(&format!(
            "SELECT {ROOM_COLUMNS} FROM consult_rooms WHERE appointment = $1"
        ))
        .bind(appointment.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(room_from_row).transpose()
    }

    async fn update_room(&self, room: &ConsultRoom, expected: u64) -> Result<bool> {
        if expected.checked_add(1) != Some(room.version) {
            return Err(StoreError::ConsultRoom(
                "an update's version must be one more than the expected one".to_owned(),
            ));
        }
        let n = sqlx::query(
            "UPDATE consult_rooms SET version = $2, status = $3, state = $4, \
             practitioner = $5, consult_start = $6, consult_end = $7 \
             WHERE id = $1 AND version = $8",
        )
        .bind(room.id.as_str())
        .bind(to_i64(room.version, "room version")?)
        .bind(room.status.as_str())
        .bind(room.state.as_slice())
        .bind(room.practitioner.as_deref())
        .bind(room.consult_start.map(|t| t.0))
        .bind(room.consult_end.map(|t| t.0))
        .bind(to_i64(expected, "room version")?)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn rooms_of_clinician(
        &self,
        clinician: &AccountId,
        limit: usize,
    ) -> Result<Vec<ConsultRoom>> {
        let rows = sqlx::query(&format!(
            "SELECT {ROOM_COLUMNS} FROM consult_rooms WHERE clinician = $1 \
             ORDER BY created DESC, id DESC LIMIT $2"
        ))
        .bind(clinician.as_str())
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(room_from_row).collect()
    }

    async fn consultations_of_patient(&self, patient: &ResourceId) -> Result<Vec<ConsultRoom>> {
        let rows = sqlx::query(&format!(
            "SELECT {ROOM_COLUMNS} FROM consult_rooms \
             WHERE patient = $1 AND consult_start IS NOT NULL \
             ORDER BY consult_start DESC, id DESC"
        ))
        .bind(patient.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(room_from_row).collect()
    }

    async fn insert_invite(&self, invite: &ConsultInvite) -> Result<()> {
        let sql = insert_invite_sql(" ON CONFLICT (id) DO NOTHING");
        let n = bind_invite(sqlx::query(&sql), invite)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::InviteExists)
        }
    }

    async fn invite(&self, id: &str) -> Result<Option<ConsultInvite>> {
        let row = sqlx::query(&format!(
            "SELECT {INVITE_COLUMNS} FROM consult_invites WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(invite_from_row).transpose()
    }

    async fn invites_of_room(&self, room: &str) -> Result<Vec<ConsultInvite>> {
        let rows = sqlx::query(&format!(
            "SELECT {INVITE_COLUMNS} FROM consult_invites WHERE room = $1 \
             ORDER BY created DESC, id DESC"
        ))
        .bind(room)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(invite_from_row).collect()
    }

    async fn record_invite_check(
        &self,
        id: &str,
        expected_failures: u32,
        failures: u32,
        locked: bool,
        verified_at: Option<Timestamp>,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE consult_invites SET failures = $2, locked = $3, verified_at = $4 \
             WHERE id = $1 AND failures = $5 AND NOT locked AND NOT revoked",
        )
        .bind(id)
        .bind(i64::from(failures))
        .bind(locked)
        .bind(verified_at.map(|t| t.0))
        .bind(i64::from(expected_failures))
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn revoke_invites(&self, room: &str) -> Result<u64> {
        let n = sqlx::query(
            "UPDATE consult_invites SET revoked = true WHERE room = $1 AND NOT revoked",
        )
        .bind(room)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n)
    }
}

// ---- erasure ----

/// Deletes the patient's rooms and their invites inside the erasure's
/// transaction `tx`.
pub(crate) async fn erase(tx: &mut Transaction<'static, Postgres>, patient: &str) -> Result<()> {
    sqlx::query("SELECT 1 FROM consult_rooms WHERE patient = $1 FOR UPDATE")
        .bind(patient)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    sqlx::query(
        "DELETE FROM consult_invites WHERE room IN \
         (SELECT id FROM consult_rooms WHERE patient = $1)",
    )
    .bind(patient)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    sqlx::query("DELETE FROM consult_rooms WHERE patient = $1")
        .bind(patient)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

// ---- backup ----

/// Dumps rooms then invites, each by id, in the snapshot of `tx`, paged by
/// their primary keys.
pub(crate) async fn dump(
    tx: &mut Transaction<'static, Postgres>,
    sink: &mut (dyn FnMut(BackupRecord) -> Result<()> + Send),
) -> Result<()> {
    let mut after = String::new();
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {ROOM_COLUMNS} FROM consult_rooms WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(&after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let room = room_from_row(r)?;
            after.clone_from(&room.id);
            sink(BackupRecord::ConsultRoom(room))?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }

    let mut after = String::new();
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {INVITE_COLUMNS} FROM consult_invites WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(&after)
        .bind(DUMP_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for r in &rows {
            let invite = invite_from_row(r)?;
            after.clone_from(&invite.id);
            sink(BackupRecord::ConsultInvite(invite))?;
        }
        if rows.len() < PAGE_LEN {
            break;
        }
    }
    Ok(())
}

/// Whether any room is stored (an invite needs its room), so a load refuses
/// a non-empty store.
pub(crate) async fn has_any(tx: &mut Transaction<'static, Postgres>) -> Result<bool> {
    sqlx::query("SELECT EXISTS (SELECT 1 FROM consult_rooms)")
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)
}

/// Inserts one room or invite during a restore; other records are not this
/// module's and are ignored. A room must come before its invites, and its
/// clinician's account before it.
pub(crate) async fn load(
    tx: &mut Transaction<'static, Postgres>,
    record: &BackupRecord,
) -> Result<()> {
    match record {
        BackupRecord::ConsultRoom(r) => {
            let sql = insert_room_sql("");
            bind_room(sqlx::query(&sql), r, to_i64(r.version, "room version")?)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        BackupRecord::ConsultInvite(i) => {
            let sql = insert_invite_sql("");
            bind_invite(sqlx::query(&sql), i)
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
        | BackupRecord::PolicyVersion(_)
        | BackupRecord::Grant(_)
        | BackupRecord::MonitorCursor(_)
        | BackupRecord::AccessExplanation(_)
        | BackupRecord::MonitorCase(_)
        | BackupRecord::MonitorAlert(_)
        | BackupRecord::CaseNote(_)
        | BackupRecord::Suppression(_) => {}
    }
    Ok(())
}
