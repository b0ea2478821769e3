//! A consult room as a state machine: who is waiting, who is admitted, and
//! what each command changes.
//!
//! Every command takes the current [`Room`] by reference and returns either
//! the next room with the [`RoomEvent`]s the caller must record in the audit
//! trail and push to participants, or a [`RoomError`] (which the caller also
//! records). Nothing here does IO: time is a Unix-seconds parameter and the
//! caller stores the returned room.
//!
//! Rules kept by every command:
//! - only the room's clinician admits, denies, approves companions, locks,
//!   unlocks and ends;
//! - an ended room refuses everything;
//! - a locked room refuses check-ins;
//! - besides the clinician, the room holds the appointment's patient and at
//!   most one companion (interpreter or family), and a companion only when
//!   the clinician approved that person first;
//! - a network drop keeps admission for [`RoomConfig::reconnect_grace_secs`];
//!   a later reconnect goes back to the waiting room;
//! - the patient's first admission starts the clinician's consult window.

use serde::{Deserialize, Serialize};

/// How long an admitted participant may be disconnected and come back
/// without being admitted again.
pub const DEFAULT_RECONNECT_GRACE_SECS: i64 = 120;

/// How long the clinician's consult relationship outlives the consultation.
pub const DEFAULT_CONSULT_GRACE_SECS: i64 = 30 * 60;

/// The longest participant or room id accepted.
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    pub reconnect_grace_secs: i64,
    pub consult_grace_secs: i64,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            reconnect_grace_secs: DEFAULT_RECONNECT_GRACE_SECS,
            consult_grace_secs: DEFAULT_CONSULT_GRACE_SECS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomState {
    Open,
    Locked,
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompanionKind {
    Interpreter,
    Family,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Clinician,
    Patient,
    Companion(CompanionKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Waiting,
    Admitted,
    Left,
    /// Denied or removed by the clinician; may not check in again.
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub id: String,
    pub role: Role,
    pub status: Status,
    pub connected: bool,
    /// For companions: the clinician approved this person before check-in.
    pub approved_companion: bool,
    /// When the connection dropped, while it is down.
    pub disconnected_at: Option<i64>,
}

impl Participant {
    /// Waiting or admitted: occupies a place in the room.
    pub fn is_present(&self) -> bool {
        matches!(self.status, Status::Waiting | Status::Admitted)
    }

    pub fn is_admitted(&self) -> bool {
        self.status == Status::Admitted
    }
}

/// What happened, for the audit trail and for participants. Ids only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RoomEvent {
    Opened {
        room: String,
        clinician: String,
    },
    CompanionApproved {
        by: String,
        participant: String,
        kind: CompanionKind,
    },
    CheckedIn {
        participant: String,
        role: Role,
    },
    Admitted {
        by: String,
        participant: String,
    },
    /// The patient's first admission: the clinician's consult relationship
    /// with the patient starts at `start`.
    ConsultStarted {
        clinician: String,
        patient: String,
        start: i64,
    },
    Denied {
        by: String,
        participant: String,
    },
    Locked {
        by: String,
    },
    Unlocked {
        by: String,
    },
    Left {
        participant: String,
    },
    Disconnected {
        participant: String,
    },
    Reconnected {
        participant: String,
    },
    /// Reconnected after the grace period: back in the waiting room.
    ReturnedToWaiting {
        participant: String,
    },
    Ended {
        by: String,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error(
        "ids must be 1 to 64 characters of [A-Za-z0-9_-], and the clinician is not the patient"
    )]
    InvalidId,
    #[error("the room has ended")]
    Ended,
    #[error("only the room's clinician may do this")]
    NotClinician,
    #[error("the room is locked")]
    Locked,
    #[error("not invited to this room")]
    NotInvited,
    #[error("the room is full")]
    Full,
    #[error("no such participant in this room")]
    UnknownParticipant,
    #[error("participant is already in the room")]
    AlreadyPresent,
    #[error("participant was removed from this room")]
    Removed,
    #[error("participant is not in a state that allows this")]
    WrongStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    pub id: String,
    pub state: RoomState,
    pub clinician: String,
    /// The appointment's patient: the only one who may check in as patient.
    pub patient: String,
    pub participants: Vec<Participant>,
    /// Companions the clinician approved, by id, before they check in.
    pub approved_companions: Vec<(String, CompanionKind)>,
    /// Most people present besides the clinician: the patient and one
    /// companion.
    pub limit: usize,
    pub config: RoomConfig,
    /// The appointment's scheduled end (Unix seconds).
    pub scheduled_end: i64,
    /// The patient's first admission.
    pub consult_start: Option<i64>,
    /// The latest command's time, so an overrunning call keeps its window.
    pub last_activity: i64,
    pub ended_at: Option<i64>,
}

type Step = Result<(Room, Vec<RoomEvent>), RoomError>;

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Room {
    /// Opens the room for one appointment. Whether this clinician may open
    /// it (who scheduled the appointment, any prior relationship) is decided
    /// by policy before this is called. The clinician is admitted from the
    /// start and not counted in `limit`.
    pub fn open(
        id: &str,
        clinician: &str,
        patient: &str,
        scheduled_end: i64,
        config: RoomConfig,
        now: i64,
    ) -> Step {
        if !valid_id(id) || !valid_id(clinician) || !valid_id(patient) || clinician == patient {
            return Err(RoomError::InvalidId);
        }
        let room = Room {
            id: id.to_owned(),
            state: RoomState::Open,
            clinician: clinician.to_owned(),
            patient: patient.to_owned(),
            participants: vec![Participant {
                id: clinician.to_owned(),
                role: Role::Clinician,
                status: Status::Admitted,
                connected: false,
                approved_companion: false,
                disconnected_at: None,
            }],
            approved_companions: Vec::new(),
            limit: 2,
            config,
            scheduled_end,
            consult_start: None,
            last_activity: now,
            ended_at: None,
        };
        let events = vec![RoomEvent::Opened {
            room: room.id.clone(),
            clinician: room.clinician.clone(),
        }];
        Ok((room, events))
    }

    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.id == id)
    }

    /// Admitted and not known to be disconnected beyond the grace period.
    pub fn is_admitted(&self, id: &str) -> bool {
        self.participant(id).is_some_and(Participant::is_admitted)
    }

    /// People present besides the clinician.
    pub fn present_count(&self) -> usize {
        self.participants
            .iter()
            .filter(|p| p.role != Role::Clinician && p.is_present())
            .count()
    }

    /// The clinician's consult-scoped relationship with the patient: from
    /// the patient's first admission until the consultation's end (when it
    /// ended, else the later of the scheduled end and the latest activity)
    /// plus the consult grace.
    pub fn consult_window(&self) -> Option<(i64, i64)> {
        let start = self.consult_start?;
        let end = self
            .ended_at
            .unwrap_or_else(|| self.scheduled_end.max(self.last_activity));
        Some((start, end.saturating_add(self.config.consult_grace_secs)))
    }

    fn live(&self, now: i64) -> Result<Room, RoomError> {
        if self.state == RoomState::Ended {
            return Err(RoomError::Ended);
        }
        let mut next = self.clone();
        next.last_activity = next.last_activity.max(now);
        Ok(next)
    }

    fn by_clinician(&self, by: &str, now: i64) -> Result<Room, RoomError> {
        let next = self.live(now)?;
        if by != self.clinician {
            return Err(RoomError::NotClinician);
        }
        Ok(next)
    }

    fn find_mut(&mut self, id: &str) -> Result<&mut Participant, RoomError> {
        self.participants
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or(RoomError::UnknownParticipant)
    }

    /// The clinician approves `participant` as a companion (an interpreter
    /// or a family member) before they check in. At most one companion may
    /// be approved at a time unless the previous one has left.
    pub fn approve_companion(
        &self,
        by: &str,
        participant: &str,
        kind: CompanionKind,
        now: i64,
    ) -> Step {
        let mut next = self.by_clinician(by, now)?;
        if !valid_id(participant) || participant == self.clinician || participant == self.patient {
            return Err(RoomError::InvalidId);
        }
        if self
            .participant(participant)
            .is_some_and(|p| p.status == Status::Removed)
        {
            return Err(RoomError::Removed);
        }
        let other_companion_present = self
            .participants
            .iter()
            .any(|p| matches!(p.role, Role::Companion(_)) && p.is_present() && p.id != participant);
        if other_companion_present {
            return Err(RoomError::Full);
        }
        next.approved_companions = vec![(participant.to_owned(), kind)];
        let events = vec![RoomEvent::CompanionApproved {
            by: by.to_owned(),
            participant: participant.to_owned(),
            kind,
        }];
        Ok((next, events))
    }

    /// The patient (after the identity check) or an approved companion
    /// enters the waiting room. The role is decided here from the room's
    /// facts, not taken from the caller: the appointment's patient is the
    /// patient, an approved companion is a companion, anyone else is
    /// refused.
    pub fn check_in(&self, participant: &str, now: i64) -> Step {
        let mut next = self.live(now)?;
        if self.state == RoomState::Locked {
            return Err(RoomError::Locked);
        }
        let role = if participant == self.patient {
            Role::Patient
        } else if let Some((_, kind)) = self
            .approved_companions
            .iter()
            .find(|(id, _)| id == participant)
        {
            Role::Companion(*kind)
        } else {
            return Err(RoomError::NotInvited);
        };
        let existing = self.participant(participant).map(|p| p.status);
        match existing {
            Some(Status::Waiting | Status::Admitted) => return Err(RoomError::AlreadyPresent),
            Some(Status::Removed) => return Err(RoomError::Removed),
            Some(Status::Left) | None => {}
        }
        if self.present_count() >= self.limit {
            return Err(RoomError::Full);
        }
        let fresh = Participant {
            id: participant.to_owned(),
            role,
            status: Status::Waiting,
            connected: true,
            approved_companion: matches!(role, Role::Companion(_)),
            disconnected_at: None,
        };
        match next.participants.iter_mut().find(|p| p.id == participant) {
            Some(p) => *p = fresh,
            None => next.participants.push(fresh),
        }
        let events = vec![RoomEvent::CheckedIn {
            participant: participant.to_owned(),
            role,
        }];
        Ok((next, events))
    }

    /// The clinician admits a waiting participant. The patient's first
    /// admission starts the consult window.
    pub fn admit(&self, by: &str, participant: &str, now: i64) -> Step {
        let mut next = self.by_clinician(by, now)?;
        let target = next.find_mut(participant)?;
        if target.status != Status::Waiting {
            return Err(RoomError::WrongStatus);
        }
        if matches!(target.role, Role::Companion(_)) && !target.approved_companion {
            return Err(RoomError::NotInvited);
        }
        target.status = Status::Admitted;
        let role = target.role;
        let mut events = vec![RoomEvent::Admitted {
            by: by.to_owned(),
            participant: participant.to_owned(),
        }];
        if role == Role::Patient && next.consult_start.is_none() {
            next.consult_start = Some(now);
            events.push(RoomEvent::ConsultStarted {
                clinician: next.clinician.clone(),
                patient: participant.to_owned(),
                start: now,
            });
        }
        Ok((next, events))
    }

    /// The clinician refuses a waiting participant or removes an admitted
    /// one; they may not check in again.
    pub fn deny(&self, by: &str, participant: &str, now: i64) -> Step {
        let mut next = self.by_clinician(by, now)?;
        if participant == self.clinician {
            return Err(RoomError::WrongStatus);
        }
        let target = next.find_mut(participant)?;
        if !target.is_present() {
            return Err(RoomError::WrongStatus);
        }
        target.status = Status::Removed;
        target.connected = false;
        target.disconnected_at = None;
        let events = vec![RoomEvent::Denied {
            by: by.to_owned(),
            participant: participant.to_owned(),
        }];
        Ok((next, events))
    }

    pub fn lock(&self, by: &str, now: i64) -> Step {
        let mut next = self.by_clinician(by, now)?;
        next.state = RoomState::Locked;
        Ok((next, vec![RoomEvent::Locked { by: by.to_owned() }]))
    }

    pub fn unlock(&self, by: &str, now: i64) -> Step {
        let mut next = self.by_clinician(by, now)?;
        next.state = RoomState::Open;
        Ok((next, vec![RoomEvent::Unlocked { by: by.to_owned() }]))
    }

    /// A participant leaves on purpose. The clinician leaving does not end
    /// the room (they may come back); [`Room::end`] does.
    pub fn leave(&self, participant: &str, now: i64) -> Step {
        let mut next = self.live(now)?;
        let target = next.find_mut(participant)?;
        if target.role == Role::Clinician {
            target.connected = false;
            target.disconnected_at = None;
        } else {
            if !target.is_present() {
                return Err(RoomError::WrongStatus);
            }
            target.status = Status::Left;
            target.connected = false;
            target.disconnected_at = None;
        }
        let events = vec![RoomEvent::Left {
            participant: participant.to_owned(),
        }];
        Ok((next, events))
    }

    /// The clinician ends the consultation: everyone leaves, the consult
    /// window's end is fixed, and the room refuses everything afterwards.
    pub fn end(&self, by: &str, now: i64) -> Step {
        let mut next = self.by_clinician(by, now)?;
        next.state = RoomState::Ended;
        next.ended_at = Some(now);
        for p in &mut next.participants {
            p.connected = false;
            p.disconnected_at = None;
            if p.role != Role::Clinician && p.is_present() {
                p.status = Status::Left;
            }
        }
        Ok((next, vec![RoomEvent::Ended { by: by.to_owned() }]))
    }

    /// The participant's connection dropped (not a deliberate leave).
    pub fn disconnect(&self, participant: &str, now: i64) -> Step {
        let mut next = self.live(now)?;
        let target = next.find_mut(participant)?;
        if !target.connected {
            return Err(RoomError::WrongStatus);
        }
        target.connected = false;
        target.disconnected_at = Some(now);
        let events = vec![RoomEvent::Disconnected {
            participant: participant.to_owned(),
        }];
        Ok((next, events))
    }

    /// The participant's connection is back. An admitted participant who
    /// dropped no more than the grace period ago stays admitted; later, a
    /// non-clinician goes back to the waiting room. The caller mints fresh
    /// TURN credentials for an admitted reconnect.
    pub fn reconnect(&self, participant: &str, now: i64) -> Step {
        let grace = self.config.reconnect_grace_secs;
        let mut next = self.live(now)?;
        let target = next.find_mut(participant)?;
        if target.connected {
            return Err(RoomError::WrongStatus);
        }
        let within_grace = target
            .disconnected_at
            .is_some_and(|at| now.saturating_sub(at) <= grace);
        let event = match (target.role, target.status) {
            (Role::Clinician, _) => RoomEvent::Reconnected {
                participant: participant.to_owned(),
            },
            (_, Status::Admitted) if within_grace => RoomEvent::Reconnected {
                participant: participant.to_owned(),
            },
            (_, Status::Admitted) => {
                target.status = Status::Waiting;
                RoomEvent::ReturnedToWaiting {
                    participant: participant.to_owned(),
                }
            }
            (_, Status::Waiting) => RoomEvent::Reconnected {
                participant: participant.to_owned(),
            },
            (_, Status::Left | Status::Removed) => return Err(RoomError::WrongStatus),
        };
        target.connected = true;
        target.disconnected_at = None;
        Ok((next, vec![event]))
    }

    /// Sends admitted participants whose connection has been down longer
    /// than the grace period back to the waiting room; the caller runs it
    /// periodically so a long drop loses admission even before a reconnect.
    /// Returns `None` when nothing changed.
    pub fn expire_disconnections(&self, now: i64) -> Option<(Room, Vec<RoomEvent>)> {
        let mut next = self.live(now).ok()?;
        let grace = self.config.reconnect_grace_secs;
        let mut events = Vec::new();
        for p in &mut next.participants {
            let expired = p
                .disconnected_at
                .is_some_and(|at| now.saturating_sub(at) > grace);
            if p.role != Role::Clinician && p.status == Status::Admitted && expired {
                p.status = Status::Waiting;
                events.push(RoomEvent::ReturnedToWaiting {
                    participant: p.id.clone(),
                });
            }
        }
        if events.is_empty() {
            None
        } else {
            Some((next, events))
        }
    }
}
