//! Storage for telehealth consults: one room per Appointment, and the
//! invites that let a patient (or a companion) into it.
//!
//! [`ConsultStore`] is a separate trait, like [`crate::MonitorStore`], so the
//! record-store contract in [`crate::Store`] stays as it was; `Store`
//! requires it, so every backend implements it and callers holding an
//! `Arc<dyn Store>` reach these methods too.
//!
//! Architecture Invariant: a room's state and an invite's secret arrive
//! sealed by the app (opaque bytes here); only what lists and the access
//! policy need is in clear (ids, status, times, counters). Rooms change only
//! by compare-and-set on their version, and an identity check only by
//! compare-and-set on the invite's failure count. Rooms and invites name a
//! patient, so erasing that patient deletes them (the audit trail keeps
//! only ids); they are kept in backups.

use async_trait::async_trait;
use model::{ResourceId, Timestamp};

use crate::{AccountId, Result};

/// A consult room: one per Appointment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsultRoom {
    /// A random id chosen by the app (32 lowercase hex); unique.
    pub id: String,
    /// The Appointment id; unique: at most one room per appointment.
    pub appointment: ResourceId,
    /// The Patient id.
    pub patient: ResourceId,
    /// The clinician's account (it must exist).
    pub clinician: AccountId,
    /// The clinician's Practitioner id.
    pub practitioner: Option<String>,
    pub created: Timestamp,
    /// 1 on insert, one more on every update (compare-and-set).
    pub version: u64,
    /// `open`, `locked` or `ended`, in clear for lists (chosen by the app).
    pub status: String,
    /// The app's sealed room (the JSON of `consult::room::Room`).
    pub state: Vec<u8>,
    /// The patient's first admission: the clinician's consult relationship
    /// with the patient starts here.
    pub consult_start: Option<Timestamp>,
    /// When that relationship ends (the window's end, grace included).
    pub consult_end: Option<Timestamp>,
}

/// An invite into a consult room, behind an identity check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsultInvite {
    /// A random id chosen by the app (32 lowercase hex); unique.
    pub id: String,
    /// The room's id (the room must exist).
    pub room: String,
    pub created: Timestamp,
    pub expires: Timestamp,
    /// `dob` or `code` (chosen by the app).
    pub method: String,
    /// Failed identity checks so far.
    pub failures: u32,
    /// Too many failures: no further check is recorded.
    pub locked: bool,
    /// When the identity check last succeeded.
    pub verified_at: Option<Timestamp>,
    /// Revoked invites refuse further checks.
    pub revoked: bool,
    /// Sealed by the app (a one-time code, the expected proof).
    pub secret: Vec<u8>,
}

/// Consult rooms and their invites.
#[async_trait]
pub trait ConsultStore: Send + Sync + 'static {
    /// Stores a new room, whose `version` must be 1 (else
    /// [`crate::StoreError::ConsultRoom`]). Fails with
    /// [`crate::StoreError::RoomExists`] (and stores nothing) when the id is
    /// taken or the appointment already has a room.
    async fn insert_room(&self, room: &ConsultRoom) -> Result<()>;
    async fn room(&self, id: &str) -> Result<Option<ConsultRoom>>;
    async fn room_for_appointment(&self, appointment: &ResourceId) -> Result<Option<ConsultRoom>>;
    /// Stores `room` if the stored room with its id has version `expected`;
    /// `false` (and nothing changes) when it does not (a lost race) or there
    /// is no such room. `room.version` must be `expected + 1` (else
    /// [`crate::StoreError::ConsultRoom`]). Only `version`, `status`,
    /// `state`, `practitioner`, `consult_start` and `consult_end` change: a
    /// room's appointment, patient, clinician and creation time are fixed at
    /// insert.
    async fn update_room(&self, room: &ConsultRoom, expected: u64) -> Result<bool>;
    /// The clinician's rooms, newest `created` first, at most `limit`.
    async fn rooms_of_clinician(
        &self,
        clinician: &AccountId,
        limit: usize,
    ) -> Result<Vec<ConsultRoom>>;
    /// The patient's rooms whose consult started (`consult_start` set), for
    /// the access policy's consultation relationships; newest
    /// `consult_start` first.
    async fn consultations_of_patient(&self, patient: &ResourceId) -> Result<Vec<ConsultRoom>>;
    /// Stores a new invite. Fails with [`crate::StoreError::InviteExists`]
    /// (and stores nothing) when the id is taken; with a database error when
    /// the room does not exist.
    async fn insert_invite(&self, invite: &ConsultInvite) -> Result<()>;
    async fn invite(&self, id: &str) -> Result<Option<ConsultInvite>>;
    /// The room's invites, newest `created` first.
    async fn invites_of_room(&self, room: &str) -> Result<Vec<ConsultInvite>>;
    /// Records an identity check: sets `failures`, `locked` and
    /// `verified_at` only if the stored `failures` is `expected_failures`
    /// and the invite is neither locked nor revoked; `false` otherwise (and
    /// nothing changes), also when there is no such invite. Of two
    /// concurrent checks that both move `failures`, exactly one wins. A
    /// check that leaves `failures` as it is (a success) does not move what
    /// is compared: two concurrent successes both win.
    async fn record_invite_check(
        &self,
        id: &str,
        expected_failures: u32,
        failures: u32,
        locked: bool,
        verified_at: Option<Timestamp>,
    ) -> Result<bool>;
    /// Revokes every unrevoked invite of the room; returns how many.
    async fn revoke_invites(&self, room: &str) -> Result<u64>;
}
