//! Telehealth consultations: a room per appointment, invites through the
//! outbox, the patient's identity check, the live room (each participant's
//! message channel), TURN credentials after admission, chat under
//! consult-aware data-loss prevention (stored as FHIR `Communication` under
//! the patient's key), and the clinician's consult-scoped relationship.
//!
//! The pure rules live in the `consult` crate; this module stores what they
//! return, records every step in the audit trail and pushes messages.
//!
//! Participants inside a room are named by role (`clinician`, `patient`,
//! `companion-…`); the room row maps them to the account and the Patient.
//! The live room (who is connected, on which channel) is in this process:
//! a room's WebSockets must reach the node that holds them (route by room).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, RwLock};

use consult::dlp::{self, IdentifierIndex, IndexKey, PatientIdentifiers, PersonName, Side};
use consult::invite::{self, CheckOutcome, CheckState, IdentityProof, Invite};
use consult::room::{CompanionKind, Room, RoomConfig, RoomEvent, RoomState};
use consult::signal::{self, ClientMsg, ServerMsg};
use consult::turn;
use model::{KeyOwner, PatientId, ResourceId, ResourceType, Timestamp, VersionId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{AccountId, ConsultInvite, ConsultRoom, Precondition};
use tokio::sync::mpsc;

use crate::audited::WriteAudit;
use crate::identity::{Caller, Via};
use crate::trail::{Action, Category, Event};
use crate::{AppError, Principal, Vigil};

/// The clinician's participant id in every room.
pub const CLINICIAN: &str = "clinician";
/// The appointment's patient's participant id in every room.
pub const PATIENT: &str = "patient";
/// Messages queued for one participant before the connection is dropped as
/// too slow.
pub const CHANNEL_DEPTH: usize = 256;
/// The longest invite address (e-mail or phone).
const MAX_ADDRESS_LEN: usize = 254;
/// Retries of a room command that lost a compare-and-set race.
const CAS_RETRIES: usize = 8;
/// How long before an appointment its room may open.
const OPEN_BEFORE_SECS: i64 = 3600;
/// Appointment statuses a room may be opened for.
const ROOM_STATUSES: [&str; 4] = ["booked", "arrived", "checked-in", "pending"];

/// The `[consult]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsultConfig {
    /// `stun:` URLs given to every admitted participant.
    pub stun_urls: Vec<String>,
    /// `turn:`/`turns:` URLs; credentials are minted per participant.
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret` (`use-auth-secret`).
    pub turn_secret: Option<String>,
    /// How long minted TURN credentials are valid.
    pub turn_ttl_secs: i64,
    /// How long an invite link is valid.
    pub invite_ttl_secs: i64,
    /// How long an admitted participant may drop and come back admitted.
    pub reconnect_grace_secs: i64,
    /// How long the clinician's consult relationship outlives the visit.
    pub consult_grace_secs: i64,
    /// Origins allowed to open the signaling WebSocket (empty: the public
    /// URL's origin, set by the binary).
    pub allowed_origins: Vec<String>,
    /// Largest file shared in a consultation.
    pub max_file_bytes: usize,
}

impl Default for ConsultConfig {
    fn default() -> Self {
        ConsultConfig {
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_ttl_secs: turn::DEFAULT_TTL_SECS,
            invite_ttl_secs: 24 * 3600,
            reconnect_grace_secs: consult::room::DEFAULT_RECONNECT_GRACE_SECS,
            consult_grace_secs: consult::room::DEFAULT_CONSULT_GRACE_SECS,
            allowed_origins: Vec::new(),
            max_file_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Who a connection or a request in a room is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// The room's clinician, signed in.
    Clinician { account: AccountId },
    /// A patient or companion who passed the identity check of an invite.
    Guest(GuestPass),
}

/// What a passed identity check gives: a participant in one room, until
/// `expires` (Unix seconds). Carried in a signed cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPass {
    pub room: String,
    pub invite: String,
    pub expires: i64,
}

/// What the invite is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invitee {
    Patient,
    Interpreter,
    Family,
}

impl Invitee {
    pub fn parse(s: &str) -> Option<Invitee> {
        match s {
            "patient" => Some(Invitee::Patient),
            "interpreter" => Some(Invitee::Interpreter),
            "family" => Some(Invitee::Family),
            _ => None,
        }
    }
}

/// The sealed part of an invite.
#[derive(Serialize, Deserialize)]
struct InviteSecret {
    invitee: Invitee,
    participant: String,
    /// The one-time code, for `method = "code"`.
    code: Option<String>,
}

/// The sealed part of a room: the state machine and what the app adds.
#[derive(Serialize, Deserialize)]
struct RoomBody {
    room: Room,
    /// The virtual Encounter the consultation's chat and files attach to.
    encounter: Option<String>,
}

/// A clinician's invite request.
#[derive(Debug, Clone)]
pub struct InviteRequest {
    /// `dob` (date of birth) or `code` (a one-time code the clinician reads
    /// out).
    pub method: String,
    /// `email` or `sms`.
    pub channel: String,
    pub to: String,
    pub invitee: Invitee,
}

/// What the clinician sees of an invite.
#[derive(Debug, Clone)]
pub struct InviteView {
    pub id: String,
    pub created: Timestamp,
    pub expires: Timestamp,
    pub method: String,
    pub invitee: Invitee,
    pub failures: u32,
    pub locked: bool,
    pub verified: bool,
    pub revoked: bool,
    /// The one-time code, for the clinician to read out.
    pub code: Option<String>,
}

/// A room as its clinician sees it.
#[derive(Debug, Clone)]
pub struct RoomView {
    pub id: String,
    pub appointment: String,
    pub patient: String,
    pub status: String,
    pub created: Timestamp,
    pub consult_start: Option<Timestamp>,
    pub consult_end: Option<Timestamp>,
    pub invites: Vec<InviteView>,
}

/// One line of the clinician's consultation list.
#[derive(Debug, Clone)]
pub struct ConsultItem {
    pub appointment: String,
    pub patient: Option<String>,
    pub patient_name: Option<String>,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub status: String,
    pub room: Option<String>,
}

/// What the join page may show: nothing identifying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinState {
    /// The link works; the identity check asks for this (`dob` or `code`).
    Ready {
        method: String,
    },
    Expired,
    Locked,
    Ended,
    Invalid,
}

/// The outcome of an identity check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    Passed(GuestPass),
    Mismatch { attempts_left: u8 },
    Locked,
    Expired,
    Invalid,
}

/// A file a participant uploads.
#[derive(Debug, Clone, Copy)]
pub struct FileUpload<'a> {
    pub name: &'a str,
    /// The declared media type (checked against the content).
    pub mime: &'a str,
    pub bytes: &'a [u8],
    /// The clinician sends a blocked file anyway, saying why.
    pub override_reason: Option<&'a str>,
}

/// What became of a shared file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Stored and offered; `flagged` names structural findings (never values).
    Shared { id: String, flagged: Vec<String> },
    /// Another patient's identifier on the clinician side: not stored.
    Blocked { kinds: Vec<String> },
}

/// A live connection: its participant id and the channel of what to send.
pub struct Connection {
    pub room: String,
    pub participant: String,
    pub conn: u64,
    pub rx: mpsc::Receiver<ServerMsg>,
}

impl Connection {
    /// A connection that never carried messages (its upgrade failed), for
    /// [`Vigil::consult_disconnected`].
    pub fn closed(room: String, participant: String, conn: u64) -> Connection {
        let (_, rx) = mpsc::channel(1);
        Connection {
            room,
            participant,
            conn,
            rx,
        }
    }
}

struct LiveRoom {
    /// participant → (connection number, channel)
    senders: HashMap<String, (u64, mpsc::Sender<ServerMsg>)>,
    /// The room as this process last stored it, for routing signaling
    /// without reading the store per message (a room's connections are on
    /// one node, so its changes go through this process's [`Vigil::save_room`]).
    room: Option<Room>,
}

/// The process's consultation state.
pub(crate) struct ConsultState {
    cfg: RwLock<ConsultConfig>,
    invite_key: [u8; 32],
    pass_key: [u8; 32],
    dlp: RwLock<IdentifierIndex>,
    live: Mutex<HashMap<String, LiveRoom>>,
    next_conn: std::sync::atomic::AtomicU64,
    /// Room commands in this process run one at a time (the store's
    /// compare-and-set orders them across processes).
    commands: tokio::sync::Mutex<()>,
}

fn derive_key(ring: &crypto::KeyRing, purpose: &str) -> [u8; 32] {
    let a = ring.keyed_term("consult-key", &format!("{purpose}/a"));
    let b = ring.keyed_term("consult-key", &format!("{purpose}/b"));
    let mut out = [0u8; 32];
    for (dst, src) in out.iter_mut().zip(a.iter().chain(b.iter())) {
        *dst = *src;
    }
    out
}

impl ConsultState {
    pub(crate) fn new(ring: &crypto::KeyRing) -> ConsultState {
        ConsultState {
            cfg: RwLock::new(ConsultConfig::default()),
            invite_key: derive_key(ring, "invite"),
            pass_key: derive_key(ring, "pass"),
            dlp: RwLock::new(IdentifierIndex::new(&IndexKey::new(derive_key(
                ring, "dlp",
            )))),
            live: Mutex::new(HashMap::new()),
            next_conn: std::sync::atomic::AtomicU64::new(1),
            commands: tokio::sync::Mutex::new(()),
        }
    }

    fn cfg(&self) -> ConsultConfig {
        match self.cfg.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Keeps the DLP index current with a Patient version (`None`: gone).
    pub(crate) fn index_patient(&self, id: &ResourceId, resource: Option<&Value>) {
        let mut idx = match self.dlp.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        idx.remove(id.as_str());
        if let Some(r) = resource
            && let Err(e) = idx.add(&identifiers_of(id, r))
        {
            tracing::warn!(patient = %id, error = %e, "DLP index: patient not indexed");
        }
    }

    /// Keeps a live room's copy current after a store.
    fn remember(&self, id: &str, room: &Room) {
        let mut live = match self.live.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(r) = live.get_mut(id) {
            r.room = Some(room.clone());
        }
    }

    /// The live room's copy, if this process holds the room's connections.
    fn live_room(&self, id: &str) -> Option<Room> {
        let live = match self.live.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        live.get(id).and_then(|r| r.room.clone())
    }

    fn send(&self, room: &str, to: &str, msg: ServerMsg) {
        let live = match self.live.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((_, tx)) = live.get(room).and_then(|r| r.senders.get(to)) {
            // A full channel means a stalled client: it misses this message
            // and its socket is closed by the web layer's keep-alive.
            let _ = tx.try_send(msg);
        }
    }
}

/// A Patient's identifiers for the DLP index (values stay in memory as keyed
/// hashes only).
pub(crate) fn identifiers_of(id: &ResourceId, r: &Value) -> PatientIdentifiers {
    let mut out = PatientIdentifiers {
        patient_id: id.to_string(),
        ..PatientIdentifiers::default()
    };
    let arr = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
    for ident in arr(r.get("identifier")) {
        let Some(value) = ident.get("value").and_then(Value::as_str) else {
            continue;
        };
        let system = ident.get("system").and_then(Value::as_str).unwrap_or("");
        if system == "http://hl7.org/fhir/sid/us-ssn" || system == "urn:oid:2.16.840.1.113883.4.1" {
            out.ssns.push(value.to_owned());
        } else {
            out.mrns.push(value.to_owned());
        }
    }
    for t in arr(r.get("telecom")) {
        let Some(value) = t.get("value").and_then(Value::as_str) else {
            continue;
        };
        match t.get("system").and_then(Value::as_str) {
            Some("phone" | "sms") => out.phones.push(value.to_owned()),
            Some("email") => out.emails.push(value.to_owned()),
            _ => {}
        }
    }
    for n in arr(r.get("name")) {
        let family = n.get("family").and_then(Value::as_str).unwrap_or("");
        let given: Vec<String> = arr(n.get("given"))
            .iter()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect();
        if !family.is_empty() || !given.is_empty() {
            out.names.push(PersonName {
                family: family.to_owned(),
                given,
            });
        }
    }
    out.birth_date = r
        .get("birthDate")
        .and_then(Value::as_str)
        .map(str::to_owned);
    out
}

fn secs(t: Timestamp) -> i64 {
    t.0.div_euclid(1_000_000)
}

fn at(secs: i64) -> Timestamp {
    Timestamp(secs.saturating_mul(1_000_000))
}

fn room_aad(id: &str) -> String {
    format!("consult-room|{id}")
}

fn invite_aad(id: &str) -> String {
    format!("consult-invite|{id}")
}

fn status_of(room: &Room) -> &'static str {
    match room.state {
        RoomState::Open => "open",
        RoomState::Locked => "locked",
        RoomState::Ended => "ended",
    }
}

fn room_error(e: consult::room::RoomError) -> AppError {
    use consult::room::RoomError as E;
    match e {
        E::NotClinician => AppError::Forbidden(e.to_string()),
        E::UnknownParticipant => AppError::NotFound(e.to_string()),
        E::InvalidId => AppError::bad_request(fhir::IssueCode::Invalid, e.to_string()),
        _ => AppError::Conflict(e.to_string()),
    }
}

fn consult_event(subtype: &'static str, action: Action, row: &ConsultRoom) -> Event {
    let mut ev = Event::new(Category::Rest, subtype, action);
    ev.patients = vec![row.patient.to_string()];
    ev.resources = vec![
        format!("Appointment/{}", row.appointment),
        format!("consult-room/{}", row.id),
    ];
    ev
}

/// The audit identity of a room's clinician on the WebSocket (their session
/// was checked when it opened).
fn clinician_principal(a: &store::Account) -> Principal {
    Principal::User(Caller {
        account: Some(a.id.clone()),
        role: Some(a.role),
        username: Some(a.username.clone()),
        client_id: None,
        scopes: auth::scope::ScopeSet::default(),
        patient: None,
        via: Via::Session,
        practitioner: a.practitioner.clone(),
        own_patient: None,
        mfa: true,
    })
}

/// The audit identity of an invite's guest: role patient, no account, the
/// invite as the client.
fn guest_principal(row: &ConsultRoom, pass: &GuestPass) -> Principal {
    Principal::User(Caller {
        account: None,
        role: Some(store::Role::Patient),
        username: None,
        client_id: Some(format!("consult-invite/{}", pass.invite)),
        scopes: auth::scope::ScopeSet::default(),
        patient: Some(row.patient.clone()),
        via: Via::Session,
        practitioner: None,
        own_patient: None,
        mfa: false,
    })
}

impl Vigil {
    /// Applies the `[consult]` settings.
    pub fn configure_consult(&self, cfg: ConsultConfig) {
        match self.consult.cfg.write() {
            Ok(mut g) => *g = cfg,
            Err(p) => *p.into_inner() = cfg,
        }
    }

    pub fn consult_config(&self) -> ConsultConfig {
        self.consult.cfg()
    }

    fn room_config(&self) -> RoomConfig {
        let c = self.consult.cfg();
        RoomConfig {
            reconnect_grace_secs: c.reconnect_grace_secs,
            consult_grace_secs: c.consult_grace_secs,
        }
    }

    fn consult_clinician(who: &Principal) -> Result<(AccountId, Option<ResourceId>), AppError> {
        match who {
            Principal::User(c) => match (&c.account, c.role) {
                (
                    Some(a),
                    Some(store::Role::Physician | store::Role::Nurse | store::Role::OtherClinical),
                ) => Ok((a.clone(), c.practitioner.clone())),
                _ => Err(AppError::Forbidden(
                    "consultations are held by clinicians".into(),
                )),
            },
            Principal::Operator => Err(AppError::Forbidden(
                "consultations are held by a signed-in clinician".into(),
            )),
        }
    }

    async fn load_room(&self, id: &str) -> Result<(ConsultRoom, RoomBody), AppError> {
        let row = self
            .store
            .room(id)
            .await?
            .ok_or_else(|| AppError::NotFound("no such consultation room".into()))?;
        let body: RoomBody = self.open_json(&room_aad(&row.id), &row.state).await?;
        Ok((row, body))
    }

    /// The clinician's own room (anyone else: not found, so room ids are not
    /// confirmed to others).
    async fn own_room(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<(AccountId, ConsultRoom, RoomBody), AppError> {
        let (account, _) = Self::consult_clinician(who)?;
        let (row, body) = self.load_room(id).await?;
        if row.clinician != account {
            return Err(AppError::NotFound("no such consultation room".into()));
        }
        Ok((account, row, body))
    }

    /// Stores the room's next state (compare-and-set), then drops the
    /// patient's cached facts when the consult window moved.
    async fn save_room(
        &self,
        row: &ConsultRoom,
        body: &RoomBody,
    ) -> Result<Option<ConsultRoom>, AppError> {
        let window = body.room.consult_window();
        let next = ConsultRoom {
            version: row.version + 1,
            status: status_of(&body.room).to_owned(),
            state: self.seal_json(&room_aad(&row.id), body).await?,
            consult_start: window.map(|(s, _)| at(s)),
            consult_end: window.map(|(_, e)| at(e)),
            ..row.clone()
        };
        if !self.store.update_room(&next, row.version).await? {
            return Ok(None);
        }
        self.consult.remember(&row.id, &body.room);
        if (next.consult_start, next.consult_end) != (row.consult_start, row.consult_end) {
            self.policy
                .invalidate(&KeyOwner::Patient(PatientId(row.patient.clone())));
        }
        Ok(Some(next))
    }

    // ---- the clinician's list and rooms ----

    /// The clinician's appointments from yesterday on (an audited search)
    /// with their rooms.
    pub async fn consult_list(&self, who: &Principal) -> Result<Vec<ConsultItem>, AppError> {
        let (account, practitioner) = Self::consult_clinician(who)?;
        let Some(practitioner) = practitioner else {
            return Ok(Vec::new());
        };
        let since = crate::identity::plus_secs(Timestamp(self.now().0 - 86_400_000_000), 0);
        let date = since.to_fhir_instant();
        let pairs = vec![
            (
                "practitioner".to_owned(),
                format!("Practitioner/{practitioner}"),
            ),
            (
                "date".to_owned(),
                format!("ge{}", date.get(..10).unwrap_or(&date)),
            ),
            ("_include".to_owned(), "Appointment:patient".to_owned()),
            ("_count".to_owned(), "100".to_owned()),
        ];
        let page = self.search(who, ResourceType::Appointment, &pairs).await?;
        let names: HashMap<String, String> = page
            .included
            .iter()
            .filter(|v| v.rtype == ResourceType::Patient)
            .filter_map(|v| Some((v.id.to_string(), fhir::human_name(v.resource.as_ref()?)?)))
            .collect();
        let rooms: HashMap<String, String> = self
            .store
            .rooms_of_clinician(&account, 500)
            .await?
            .into_iter()
            .map(|r| (r.appointment.to_string(), r.id))
            .collect();
        let mut out = Vec::new();
        for v in &page.matches {
            let Some(r) = &v.resource else { continue };
            let fact = crate::facts::appointment(v.id.as_str(), r);
            let patient = appointment_patient(r);
            out.push(ConsultItem {
                appointment: v.id.to_string(),
                patient_name: patient
                    .as_ref()
                    .and_then(|p| names.get(p.as_str()).cloned()),
                patient: patient.map(|p| p.to_string()),
                start: fact.as_ref().and_then(|f| f.start),
                end: fact.as_ref().and_then(|f| f.end),
                status: fact.map(|f| f.status).unwrap_or_default(),
                room: rooms.get(v.id.as_str()).cloned(),
            });
        }
        out.sort_by_key(|i| i.start);
        Ok(out)
    }

    /// Opens (or returns) the room of an appointment. Refused — and recorded
    /// as a refused access to the patient, which monitoring raises — when the
    /// clinician scheduled the appointment themself and had no relationship
    /// with the patient before it.
    pub async fn consult_open(
        &self,
        who: &Principal,
        appointment: &ResourceId,
    ) -> Result<RoomView, AppError> {
        let mut ev = Event::new(Category::Rest, "consult-open", Action::C);
        ev.resources = vec![format!("Appointment/{appointment}")];
        match self.consult_open_inner(who, appointment, &mut ev).await {
            Ok((row, created)) => {
                if created {
                    ev.resources.push(format!("consult-room/{}", row.id));
                    self.audit(who, ev).await?;
                }
                self.room_view(row).await
            }
            Err(e) => {
                self.audit(who, ev.failed(&e)).await?;
                Err(e)
            }
        }
    }

    async fn consult_open_inner(
        &self,
        who: &Principal,
        appointment: &ResourceId,
        ev: &mut Event,
    ) -> Result<(ConsultRoom, bool), AppError> {
        let (account, practitioner) = Self::consult_clinician(who)?;
        let practitioner = practitioner.ok_or_else(|| {
            AppError::Forbidden("your account is not linked to a Practitioner".into())
        })?;
        let sv = self
            .store
            .current(ResourceType::Appointment, appointment)
            .await?
            .filter(|sv| !sv.deleted)
            .ok_or_else(|| AppError::NotFound(format!("Appointment/{appointment}")))?;
        let v = self.open_version(&sv).await?;
        let r = v
            .resource
            .ok_or_else(|| AppError::NotFound(format!("Appointment/{appointment}")))?;
        let patient = appointment_patient(&r).ok_or_else(|| {
            AppError::bad_request(
                fhir::IssueCode::BusinessRule,
                "a consultation needs an appointment with exactly one patient",
            )
        })?;
        ev.patients = vec![patient.to_string()];
        let fact = crate::facts::appointment(appointment.as_str(), &r).ok_or_else(|| {
            AppError::bad_request(
                fhir::IssueCode::BusinessRule,
                "the appointment has no times",
            )
        })?;
        if !fact.participants.iter().any(|p| p == practitioner.as_str()) {
            return Err(AppError::Forbidden(
                "consult.not-participant: you are not a participant of this appointment".into(),
            ));
        }
        // A room opens from an hour before the visit until its end, so the
        // consultation's relationship cannot be started days early.
        let now = self.now();
        let (Some(start), Some(end)) = (fact.start, fact.end) else {
            return Err(AppError::bad_request(
                fhir::IssueCode::BusinessRule,
                "the appointment has no start and end",
            ));
        };
        if now < Timestamp(start.0.saturating_sub(OPEN_BEFORE_SECS * 1_000_000)) || now > end {
            return Err(AppError::Conflict(
                "a room opens from an hour before the appointment until its end".into(),
            ));
        }
        if !ROOM_STATUSES.contains(&fact.status.as_str()) {
            return Err(AppError::Conflict(format!(
                "the appointment is {}; a room opens only for a booked appointment",
                fact.status
            )));
        }
        if let Some(existing) = self.store.room_for_appointment(appointment).await? {
            if existing.clinician != account {
                return Err(AppError::Conflict(
                    "another clinician holds this appointment's room".into(),
                ));
            }
            return Ok((existing, false));
        }
        // Who scheduled it: the account that wrote its first version.
        let scheduler = self.appointment_scheduler(appointment, &patient).await?;
        let someone_else = scheduler.as_deref().is_some_and(|s| s != account.as_str());
        if !someone_else && !self.prior_relationship(who, &patient, appointment).await? {
            return Err(AppError::Forbidden(
                "consult.self-scheduled: a room opens for an appointment someone else scheduled, or \
                 for a patient you already care for; scheduling a visit yourself does not give \
                 access to a chart"
                    .into(),
            ));
        }
        let id = crate::identity::random_hex();
        let end = secs(end);
        let (room, _) = Room::open(&id, CLINICIAN, PATIENT, end, self.room_config(), secs(now))
            .map_err(room_error)?;
        let body = RoomBody {
            room,
            encounter: None,
        };
        let row = ConsultRoom {
            id: id.clone(),
            appointment: appointment.clone(),
            patient: patient.clone(),
            clinician: account,
            practitioner: Some(practitioner.to_string()),
            created: now,
            version: 1,
            status: "open".into(),
            state: self.seal_json(&room_aad(&id), &body).await?,
            consult_start: None,
            consult_end: None,
        };
        match self.store.insert_room(&row).await {
            Ok(()) => Ok((row, true)),
            Err(e) => match self.store.room_for_appointment(appointment).await? {
                // Opened concurrently by the same clinician: that room.
                Some(r) if r.clinician == row.clinician => Ok((r, false)),
                _ => Err(e.into()),
            },
        }
    }

    /// The account that created the appointment, from the audit trail: the
    /// successful create (or update creating it) of its first version.
    async fn appointment_scheduler(
        &self,
        appointment: &ResourceId,
        patient: &ResourceId,
    ) -> Result<Option<String>, AppError> {
        let Some(first) = self
            .store
            .version(ResourceType::Appointment, appointment, VersionId(1))
            .await?
        else {
            return Ok(None);
        };
        let window = 60_000_000;
        let q = store::AuditQuery {
            clauses: vec![(
                "patient".to_owned(),
                vec![self.audit_term("patient", patient.as_str())],
            )],
            recorded_from: Some(Timestamp(first.last_updated.0 - window)),
            recorded_to: Some(Timestamp(first.last_updated.0 + window)),
            before: None,
            limit: 500,
        };
        let reference = format!("Appointment/{appointment}");
        for i in self.store.find_audit(&q).await? {
            for (_, bytes) in self.store.audit_entries(i, 1).await? {
                let e = self.audit.open(&bytes)?;
                if e.outcome == 0
                    && matches!(
                        e.subtype.as_str(),
                        "create" | "update" | "transaction" | "batch"
                    )
                    && e.resources.iter().any(|r| r == &reference)
                {
                    return Ok(Some(e.agent.account.unwrap_or_else(|| e.agent.via.clone())));
                }
            }
        }
        Ok(None)
    }

    /// Whether the clinician has a relationship with the patient that does
    /// not come from this appointment (or from break-the-glass).
    async fn prior_relationship(
        &self,
        who: &Principal,
        patient: &ResourceId,
        appointment: &ResourceId,
    ) -> Result<bool, AppError> {
        let Principal::User(c) = who else {
            return Ok(false);
        };
        let Some(principal) = crate::decide::policy_principal(c, true) else {
            return Ok(false);
        };
        let mut facts = self.load_facts(&PatientId(patient.clone())).await?.facts;
        facts.appointments.retain(|a| a.id != appointment.as_str());
        facts.grants.clear();
        let engine = self.policy.engine()?;
        let (rels, _) = engine.relationships(&principal, patient.as_str(), &facts, self.now());
        use policy::Relationship as R;
        Ok(rels.iter().any(|r| {
            matches!(
                r,
                R::CareTeam | R::Encounter | R::Consultation | R::Appointment
            )
        }))
    }

    async fn room_view(&self, row: ConsultRoom) -> Result<RoomView, AppError> {
        let mut invites = Vec::new();
        for i in self.store.invites_of_room(&row.id).await? {
            let secret: InviteSecret = self.open_json(&invite_aad(&i.id), &i.secret).await?;
            invites.push(InviteView {
                id: i.id,
                created: i.created,
                expires: i.expires,
                method: i.method,
                invitee: secret.invitee,
                failures: i.failures,
                locked: i.locked,
                verified: i.verified_at.is_some(),
                revoked: i.revoked,
                code: secret.code,
            });
        }
        Ok(RoomView {
            id: row.id,
            appointment: row.appointment.to_string(),
            patient: row.patient.to_string(),
            status: row.status,
            created: row.created,
            consult_start: row.consult_start,
            consult_end: row.consult_end,
            invites,
        })
    }

    /// The clinician's room.
    pub async fn consult_room(&self, who: &Principal, id: &str) -> Result<RoomView, AppError> {
        let (_, row, _) = self.own_room(who, id).await?;
        self.room_view(row).await
    }

    // ---- invites ----

    /// Sends an invite link through the outbox. Returns the link's token (for
    /// the API's caller, which is the clinician: never shown to anyone else).
    pub async fn consult_invite(
        &self,
        who: &Principal,
        room: &str,
        req: &InviteRequest,
        base_url: &str,
    ) -> Result<InviteView, AppError> {
        let (_, row, _) = self.own_room(who, room).await?;
        let mut ev = consult_event("consult-invite", Action::C, &row);
        let result = self.consult_invite_inner(&row, req, base_url).await;
        match result {
            Ok(v) => {
                ev.resources.push(format!("consult-invite/{}", v.id));
                self.audit(who, ev).await?;
                Ok(v)
            }
            Err(e) => {
                self.audit(who, ev.failed(&e)).await?;
                Err(e)
            }
        }
    }

    async fn consult_invite_inner(
        &self,
        row: &ConsultRoom,
        req: &InviteRequest,
        base_url: &str,
    ) -> Result<InviteView, AppError> {
        let bad = |m: &str| AppError::bad_request(fhir::IssueCode::Invalid, m.to_owned());
        if !matches!(req.method.as_str(), "dob" | "code") {
            return Err(bad("the identity check is `dob` or `code`"));
        }
        let to = req.to.trim();
        if to.is_empty() || to.len() > MAX_ADDRESS_LEN || to.chars().any(char::is_control) {
            return Err(bad("give the address to send the invite to"));
        }
        match req.channel.as_str() {
            "email" if to.contains('@') && !to.contains(char::is_whitespace) => {}
            "sms"
                if to.chars().filter(char::is_ascii_digit).count() >= 7
                    && to
                        .chars()
                        .all(|c| c.is_ascii_digit() || " +-().".contains(c)) => {}
            "email" | "sms" => return Err(bad("the address does not fit the channel")),
            _ => return Err(bad("the channel is `email` or `sms`")),
        }
        if req.invitee != Invitee::Patient && req.method == "dob" {
            return Err(bad(
                "a companion checks in with a one-time code, not the patient's birth date",
            ));
        }
        let (row, mut body) = self.load_room(&row.id).await?;
        if body.room.state == RoomState::Ended {
            return Err(AppError::Conflict("the consultation has ended".into()));
        }
        let now = self.now();
        let id = crate::identity::random_hex();
        let participant = match req.invitee {
            Invitee::Patient => PATIENT.to_owned(),
            Invitee::Interpreter | Invitee::Family => {
                let p = format!("companion-{}", id.get(..12).unwrap_or(&id));
                let kind = if req.invitee == Invitee::Interpreter {
                    CompanionKind::Interpreter
                } else {
                    CompanionKind::Family
                };
                let _guard = self.consult.commands.lock().await;
                let (room, _) = body
                    .room
                    .approve_companion(CLINICIAN, &p, kind, secs(now))
                    .map_err(room_error)?;
                body.room = room;
                if self.save_room(&row, &body).await?.is_none() {
                    return Err(AppError::Conflict(
                        "the room changed meanwhile; try again".into(),
                    ));
                }
                p
            }
        };
        let code = (req.method == "code")
            .then(|| {
                IdentityProof::generate_code(&mut rand::rngs::OsRng)
                    .code()
                    .map(str::to_owned)
            })
            .flatten();
        let cfg = self.consult.cfg();
        let expires = secs(now).saturating_add(cfg.invite_ttl_secs.max(60));
        let secret = InviteSecret {
            invitee: req.invitee,
            participant,
            code: code.clone(),
        };
        let invite = ConsultInvite {
            id: id.clone(),
            room: row.id.clone(),
            created: now,
            expires: at(expires),
            method: req.method.clone(),
            failures: 0,
            locked: false,
            verified_at: None,
            revoked: false,
            secret: self.seal_json(&invite_aad(&id), &secret).await?,
        };
        let token = Invite::issue(&self.consult.invite_key, &row.id, &id, expires, secs(now))
            .map_err(|e| AppError::Integrity(format!("invite: {e}")))?;
        self.store.insert_invite(&invite).await?;
        let link = format!("{}/join/{token}", base_url.trim_end_matches('/'));
        let org = self
            .identity_config()
            .map(|c| c.organisation.clone())
            .unwrap_or_default();
        let who = if org.is_empty() {
            "Your clinic".to_owned()
        } else {
            org
        };
        let check = if req.method == "dob" {
            "You will be asked for your date of birth."
        } else {
            "You will be asked for the code your clinician gives you."
        };
        let text = format!(
            "{who} invites you to a video visit.\n\nJoin here: {link}\n\n{check} Nothing to install; \
             use a recent browser on your phone or computer. The link works until {}.",
            at(expires)
                .to_fhir_instant()
                .get(..16)
                .unwrap_or_default()
                .replace('T', " ")
        );
        let kind = if req.channel == "sms" {
            "consult-invite-sms"
        } else {
            "consult-invite"
        };
        self.enqueue(None, kind, to, "Your video visit", &text)
            .await?;
        tracing::info!(room = %row.id, invite = %id, "consult invite queued");
        Ok(InviteView {
            id,
            created: now,
            expires: at(expires),
            method: req.method.clone(),
            invitee: req.invitee,
            failures: 0,
            locked: false,
            verified: false,
            revoked: false,
            code,
        })
    }

    /// What the join page shows for a link: never uses it up, never names
    /// anyone.
    pub async fn consult_join_state(&self, token: &str) -> Result<JoinState, AppError> {
        let now = secs(self.now());
        let claims = match invite::parse(&self.consult.invite_key, token, now) {
            Ok(c) => c,
            Err(invite::InviteError::Expired) => return Ok(JoinState::Expired),
            Err(_) => return Ok(JoinState::Invalid),
        };
        let Some(inv) = self.store.invite(&claims.invite_id).await? else {
            return Ok(JoinState::Invalid);
        };
        if inv.room != claims.room_id {
            return Ok(JoinState::Invalid);
        }
        if inv.locked || inv.revoked {
            return Ok(JoinState::Locked);
        }
        match self.store.room(&inv.room).await? {
            Some(r) if r.status == "ended" => Ok(JoinState::Ended),
            Some(_) => Ok(JoinState::Ready { method: inv.method }),
            None => Ok(JoinState::Invalid),
        }
    }

    /// The identity check (POST): the birth date or the one-time code. Five
    /// failures lock the invite; the clinician can send a new one.
    pub async fn consult_check(&self, token: &str, answer: &str) -> Result<CheckResult, AppError> {
        // A concurrent answer to the same invite moves its counter first:
        // this one is then judged again against the counter as it is now.
        for _ in 0..CAS_RETRIES {
            if let Some(r) = self.consult_check_once(token, answer).await? {
                return Ok(r);
            }
        }
        Err(AppError::Conflict(
            "too many answers at once for this invite; try again".into(),
        ))
    }

    /// One identity check; `None` when a concurrent check won the race.
    async fn consult_check_once(
        &self,
        token: &str,
        answer: &str,
    ) -> Result<Option<CheckResult>, AppError> {
        let now = self.now();
        let claims = match invite::parse(&self.consult.invite_key, token, secs(now)) {
            Ok(c) => c,
            Err(invite::InviteError::Expired) => return Ok(Some(CheckResult::Expired)),
            Err(_) => return Ok(Some(CheckResult::Invalid)),
        };
        let Some(inv) = self.store.invite(&claims.invite_id).await? else {
            return Ok(Some(CheckResult::Invalid));
        };
        if inv.room != claims.room_id {
            return Ok(Some(CheckResult::Invalid));
        }
        let (row, _) = self.load_room(&inv.room).await?;
        let secret: InviteSecret = self.open_json(&invite_aad(&inv.id), &inv.secret).await?;
        let expected = match (&*inv.method, &secret.code) {
            ("code", Some(code)) => IdentityProof::one_time_code(code)
                .map_err(|_| AppError::Integrity("stored one-time code".into()))?,
            ("dob", _) => {
                let dob = self.patient_birth_date(&row.patient).await?;
                match dob.as_deref().map(IdentityProof::date_of_birth) {
                    Some(Ok(p)) => p,
                    // No usable birth date on record: the check cannot pass.
                    _ => IdentityProof::OneTimeCode(crate::identity::random_hex()),
                }
            }
            _ => return Ok(Some(CheckResult::Invalid)),
        };
        let given = if inv.method == "dob" {
            IdentityProof::date_of_birth(answer)
        } else {
            IdentityProof::one_time_code(answer)
        };
        let state = CheckState {
            failures: u8::try_from(inv.failures).unwrap_or(u8::MAX),
            locked: inv.locked || inv.revoked,
        };
        // An answer that is not even a date counts as a wrong answer.
        let given = given.unwrap_or_else(|_| IdentityProof::OneTimeCode(String::new()));
        let (next, outcome) = invite::check(state, &expected, &given);
        let guest = GuestPass {
            room: row.id.clone(),
            invite: inv.id.clone(),
            expires: secs(inv.expires),
        };
        let mut ev = consult_event("consult-check", Action::E, &row);
        ev.resources.push(format!("consult-invite/{}", inv.id));
        let result = match outcome {
            CheckOutcome::Locked => CheckResult::Locked,
            CheckOutcome::Verified => CheckResult::Passed(guest.clone()),
            CheckOutcome::Mismatch { attempts_left } => CheckResult::Mismatch { attempts_left },
            CheckOutcome::LockedNow => CheckResult::Locked,
        };
        if outcome != CheckOutcome::Locked {
            let verified = (outcome == CheckOutcome::Verified).then_some(now);
            let won = self
                .store
                .record_invite_check(
                    &inv.id,
                    inv.failures,
                    u32::from(next.failures),
                    next.locked,
                    verified.or(inv.verified_at),
                )
                .await?;
            if !won {
                return Ok(None);
            }
        }
        let who = guest_principal(&row, &guest);
        match &result {
            CheckResult::Passed(_) => {
                self.audit(&who, ev).await?;
            }
            _ => {
                let e =
                    AppError::Forbidden("consult.identity-check: the answer did not match".into());
                self.audit(&who, ev.failed(&e)).await?;
            }
        }
        Ok(Some(result))
    }

    async fn patient_birth_date(&self, patient: &ResourceId) -> Result<Option<String>, AppError> {
        let Some(sv) = self.store.current(ResourceType::Patient, patient).await? else {
            return Ok(None);
        };
        if sv.deleted {
            return Ok(None);
        }
        let v = self.open_version(&sv).await?;
        Ok(v.resource
            .as_ref()
            .and_then(|r| r.get("birthDate"))
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    /// A guest pass as a cookie value (signed, tied to one room).
    pub fn consult_pass_token(&self, pass: &GuestPass) -> Result<String, AppError> {
        Invite::issue(
            &self.consult.pass_key,
            &pass.room,
            &pass.invite,
            pass.expires,
            secs(self.now()),
        )
        .map_err(|e| AppError::Integrity(format!("guest pass: {e}")))
    }

    /// Reads a guest pass cookie; `None` when forged, expired or revoked.
    pub async fn consult_pass(&self, token: &str) -> Result<Option<GuestPass>, AppError> {
        let Ok(c) = invite::parse(&self.consult.pass_key, token, secs(self.now())) else {
            return Ok(None);
        };
        let Some(inv) = self.store.invite(&c.invite_id).await? else {
            return Ok(None);
        };
        if inv.revoked || inv.verified_at.is_none() || inv.room != c.room_id {
            return Ok(None);
        }
        Ok(Some(GuestPass {
            room: c.room_id,
            invite: c.invite_id,
            expires: c.expires,
        }))
    }

    async fn guest_participant(&self, pass: &GuestPass) -> Result<String, AppError> {
        let inv = self
            .store
            .invite(&pass.invite)
            .await?
            .ok_or_else(|| AppError::Forbidden("the invite is no longer valid".into()))?;
        let secret: InviteSecret = self.open_json(&invite_aad(&inv.id), &inv.secret).await?;
        Ok(secret.participant)
    }

    // ---- the live room ----

    /// Runs a room command as `actor` (a participant id), stores the result,
    /// records each event and pushes the notifications. Retries lost races.
    async fn command(
        &self,
        who: &Principal,
        room_id: &str,
        subtype: &'static str,
        apply: impl Fn(&Room, i64) -> Result<(Room, Vec<RoomEvent>), consult::room::RoomError>,
    ) -> Result<(ConsultRoom, Room, Vec<RoomEvent>), AppError> {
        let _guard = self.consult.commands.lock().await;
        for _ in 0..CAS_RETRIES {
            let (row, mut body) = self.load_room(room_id).await?;
            let now = self.now();
            let (next, events) = match apply(&body.room, secs(now)) {
                Ok(x) => x,
                Err(e) => {
                    let err = room_error(e);
                    let ev = consult_event(subtype, Action::E, &row);
                    self.audit(who, ev.failed(&err)).await?;
                    return Err(err);
                }
            };
            let started = events
                .iter()
                .any(|e| matches!(e, RoomEvent::ConsultStarted { .. }));
            body.room = next.clone();
            if started && body.encounter.is_none() {
                body.encounter = Some(self.consult_encounter(&row, now).await?);
            }
            let Some(saved) = self.save_room(&row, &body).await? else {
                continue;
            };
            for e in &events {
                let (sub, action) = event_subtype(e);
                let mut ev = consult_event(sub, action, &saved);
                if let RoomEvent::ConsultStarted { .. } = e {
                    ev.policy = Some(crate::trail::PolicyNote {
                        policies: vec!["consultation".into()],
                        purpose: Some("TREAT".into()),
                        grants: vec![format!("consult-room/{}", saved.id)],
                    });
                }
                self.audit(who, ev).await?;
            }
            for (to, msg) in signal::notify(&next, &events) {
                self.consult.send(&saved.id, &to, msg);
            }
            self.consult
                .send(&saved.id, CLINICIAN, signal::roster(&next));
            // The admitted get their ICE servers (fresh TURN credentials).
            for e in &events {
                if let RoomEvent::Admitted { participant, .. } = e {
                    self.push_ice(&saved.id, participant);
                }
            }
            return Ok((saved, next, events));
        }
        Err(AppError::Conflict("the room is busy; try again".into()))
    }

    /// The consultation's virtual Encounter (class VR), which chat and files
    /// attach to. It names no practitioner, so it grants no relationship of
    /// its own: the consult window is the clinician's access.
    async fn consult_encounter(
        &self,
        row: &ConsultRoom,
        now: Timestamp,
    ) -> Result<String, AppError> {
        let id = crate::records::new_id();
        let body = json!({
            "resourceType": "Encounter",
            "id": id.as_str(),
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR", "display": "virtual"},
            "subject": {"reference": format!("Patient/{}", row.patient)},
            "appointment": [{"reference": format!("Appointment/{}", row.appointment)}],
            "period": {"start": now.to_fhir_instant()},
        });
        self.system_write(
            ResourceType::Encounter,
            id.clone(),
            body,
            "consult-encounter",
        )
        .await?;
        Ok(id.to_string())
    }

    /// Writes a resource the consultation produces, with its audit entry in
    /// the same commit (the room's admission is the authority, not a
    /// person's relationship).
    async fn system_write(
        &self,
        rtype: ResourceType,
        id: ResourceId,
        body: Value,
        subtype: &'static str,
    ) -> Result<(), AppError> {
        self.check_body(rtype, &body)?;
        let mut unit = crate::keys::NewKeys::default();
        let p = self
            .prepare(
                rtype,
                id,
                VersionId(1),
                Precondition::MustNotExist,
                body,
                self.now(),
                &mut unit,
            )
            .await?;
        self.commit_prepared(
            WriteAudit::each(&Principal::Operator, subtype),
            vec![p],
            unit,
        )
        .await?;
        Ok(())
    }

    fn push_ice(&self, room: &str, participant: &str) {
        match self.ice_servers(room, participant) {
            Ok(ice_servers) => {
                self.consult
                    .send(room, participant, ServerMsg::IceServers { ice_servers })
            }
            Err(e) => tracing::warn!(room, error = %e, "TURN credentials not minted"),
        }
    }

    /// STUN and TURN servers with fresh credentials for one admitted
    /// participant.
    pub fn ice_servers(
        &self,
        room: &str,
        participant: &str,
    ) -> Result<Vec<turn::IceServer>, AppError> {
        let cfg = self.consult.cfg();
        let ice = turn::IceConfig {
            stun_urls: cfg.stun_urls.clone(),
            turn_urls: cfg.turn_urls.clone(),
        };
        let Some(secret) = cfg.turn_secret.as_deref().filter(|s| !s.is_empty()) else {
            // No TURN configured: STUN only.
            return Ok(if ice.stun_urls.is_empty() {
                Vec::new()
            } else {
                vec![turn::IceServer {
                    urls: ice.stun_urls,
                    username: None,
                    credential: None,
                }]
            });
        };
        let who = format!("{}-{participant}", room.get(..8).unwrap_or(room));
        let cred = turn::mint(secret.as_bytes(), &who, secs(self.now()), cfg.turn_ttl_secs)
            .map_err(|e| AppError::Integrity(format!("TURN: {e}")))?;
        Ok(turn::ice_servers(&ice, &cred))
    }

    /// A participant's WebSocket opens: the clinician (re)joins; a guest
    /// checks in to the waiting room, or reconnects.
    pub async fn consult_connect(
        &self,
        member: &Member,
        room_id: &str,
    ) -> Result<Connection, AppError> {
        let (row, body) = self.load_room(room_id).await?;
        let (who, participant) = match member {
            Member::Clinician { account } => {
                if &row.clinician != account {
                    return Err(AppError::NotFound("no such consultation room".into()));
                }
                (None, CLINICIAN.to_owned())
            }
            Member::Guest(pass) => {
                if pass.room != row.id {
                    return Err(AppError::Forbidden("the pass is for another room".into()));
                }
                let p = self.guest_participant(pass).await?;
                (Some(guest_principal(&row, pass)), p)
            }
        };
        let who = match who {
            Some(w) => w,
            None => self.member_principal(member, &row.id).await,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let conn = self
            .consult
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let existing = body.room.participant(&participant).cloned();
        // Register first, so the pushes of the command reach this channel;
        // but never beside a live connection of the same participant (a
        // forwarded link must not take over the patient's place).
        let taken = {
            let mut live = match self.consult.live.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let entry = live.entry(row.id.clone()).or_insert_with(|| LiveRoom {
                senders: HashMap::new(),
                room: Some(body.room.clone()),
            });
            let taken = entry
                .senders
                .get(&participant)
                .is_some_and(|(_, old)| !old.is_closed());
            if !taken {
                entry
                    .senders
                    .insert(participant.clone(), (conn, tx.clone()));
            }
            taken
        };
        if taken {
            let err = room_error(consult::room::RoomError::AlreadyPresent);
            let ev = consult_event("consult-checkin", Action::E, &row);
            self.audit(&who, ev.failed(&err)).await?;
            return Err(err);
        }
        let p2 = participant.clone();
        let outcome = match existing {
            Some(p) if p.connected && p.is_present() => {
                // Marked connected, but no live connection here (a restart
                // or another node): the same place, nothing to record.
                Ok(None)
            }
            Some(p) if p.is_present() || p.role == consult::room::Role::Clinician => self
                .command(&who, &row.id, "consult-reconnect", move |r, now| {
                    r.reconnect(&p2, now)
                })
                .await
                .map(Some),
            _ => self
                .command(&who, &row.id, "consult-checkin", move |r, now| {
                    r.check_in(&p2, now)
                })
                .await
                .map(Some),
        };
        let mut told_waiting = false;
        let room = match outcome {
            Ok(Some((_, room, events))) => {
                told_waiting = events.iter().any(|e| {
                    matches!(
                        e,
                        RoomEvent::CheckedIn { .. } | RoomEvent::ReturnedToWaiting { .. }
                    )
                });
                room
            }
            Ok(None) => body.room,
            Err(e) => {
                self.unregister(&row.id, &participant, conn);
                return Err(e);
            }
        };
        // The newcomer's own view.
        let me = room.participant(&participant).cloned();
        if participant == CLINICIAN {
            let _ = tx.try_send(ServerMsg::Admitted);
            let _ = tx.try_send(signal::roster(&room));
            self.push_ice(&row.id, &participant);
            for p in room
                .participants
                .iter()
                .filter(|p| p.id != CLINICIAN && p.is_admitted())
            {
                let _ = tx.try_send(ServerMsg::PeerJoined {
                    participant: p.id.clone(),
                });
            }
        } else if me
            .as_ref()
            .is_some_and(consult::room::Participant::is_admitted)
        {
            let _ = tx.try_send(ServerMsg::Admitted);
            self.push_ice(&row.id, &participant);
            self.consult.send(
                &row.id,
                CLINICIAN,
                ServerMsg::PeerJoined {
                    participant: participant.clone(),
                },
            );
        } else if !told_waiting {
            let _ = tx.try_send(ServerMsg::Waiting);
        }
        Ok(Connection {
            room: row.id,
            participant,
            conn,
            rx,
        })
    }

    fn unregister(&self, room: &str, participant: &str, conn: u64) -> bool {
        let mut live = match self.consult.live.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Some(r) = live.get_mut(room) else {
            return false;
        };
        let mine = r.senders.get(participant).is_some_and(|(c, _)| *c == conn);
        if mine {
            r.senders.remove(participant);
        }
        if r.senders.is_empty() {
            live.remove(room);
        }
        mine
    }

    /// The connection closed without a `leave`: the participant keeps their
    /// place for the reconnect grace period.
    pub async fn consult_disconnected(&self, c: &Connection, member: &Member) {
        if !self.unregister(&c.room, &c.participant, c.conn) {
            return;
        }
        let who = self.member_principal(member, &c.room).await;
        let p = c.participant.clone();
        if let Err(e) = self
            .command(&who, &c.room, "consult-disconnect", move |r, now| {
                r.disconnect(&p, now)
            })
            .await
        {
            tracing::debug!(room = %c.room, error = %e, "disconnect not recorded");
        }
    }

    /// The connection closed after a deliberate leave (already recorded).
    pub fn consult_closed(&self, c: &Connection) {
        self.unregister(&c.room, &c.participant, c.conn);
    }

    async fn member_principal(&self, member: &Member, room: &str) -> Principal {
        match member {
            Member::Clinician { account } => match self.store.account(account).await {
                Ok(Some(a)) => clinician_principal(&a),
                _ => Principal::Operator,
            },
            Member::Guest(pass) => match self.store.room(room).await {
                Ok(Some(row)) => guest_principal(&row, pass),
                _ => Principal::Operator,
            },
        }
    }

    /// One message from a participant's WebSocket.
    pub async fn consult_message(
        &self,
        who: &Principal,
        c: &Connection,
        msg: ClientMsg,
    ) -> Result<(), AppError> {
        let room = c.room.as_str();
        let me = c.participant.clone();
        match msg {
            ClientMsg::Admit { participant } => {
                self.command(who, room, "consult-admit", move |r, now| {
                    r.admit(&me, &participant, now)
                })
                .await?;
            }
            ClientMsg::Deny { participant } => {
                self.command(who, room, "consult-deny", move |r, now| {
                    r.deny(&me, &participant, now)
                })
                .await?;
            }
            ClientMsg::Lock => {
                self.command(who, room, "consult-lock", move |r, now| r.lock(&me, now))
                    .await?;
            }
            ClientMsg::Unlock => {
                self.command(who, room, "consult-unlock", move |r, now| {
                    r.unlock(&me, now)
                })
                .await?;
            }
            ClientMsg::End => {
                let (row, _, _) = self
                    .command(who, room, "consult-end", move |r, now| r.end(&me, now))
                    .await?;
                self.store.revoke_invites(&row.id).await?;
                self.finish_encounter(&row).await?;
            }
            ClientMsg::Leave => {
                self.command(who, room, "consult-leave", move |r, now| r.leave(&me, now))
                    .await?;
            }
            ClientMsg::Chat {
                text,
                override_reason,
            } => self.consult_chat(who, c, text, override_reason).await?,
            other => {
                let current = match self.consult.live_room(room) {
                    Some(r) => r,
                    None => self.load_room(room).await?.1.room,
                };
                for (to, m) in signal::route(&current, &c.participant, other) {
                    self.consult.send(room, &to, m);
                }
            }
        }
        Ok(())
    }

    async fn finish_encounter(&self, row: &ConsultRoom) -> Result<(), AppError> {
        let (_, body) = self.load_room(&row.id).await?;
        let Some(enc) = body.encounter else {
            return Ok(());
        };
        let Ok(id) = ResourceId::new(&enc) else {
            return Ok(());
        };
        let Some(sv) = self.store.current(ResourceType::Encounter, &id).await? else {
            return Ok(());
        };
        let v = self.open_version(&sv).await?;
        let Some(mut r) = v.resource else {
            return Ok(());
        };
        set(&mut r, "status", json!("finished"));
        let end = json!(self.now().to_fhir_instant());
        match r.get_mut("period").and_then(Value::as_object_mut) {
            Some(period) => {
                period.insert("end".into(), end);
            }
            None => set(&mut r, "period", json!({ "end": end })),
        }
        self.check_body(ResourceType::Encounter, &r)?;
        let mut unit = crate::keys::NewKeys::default();
        let p = self
            .prepare(
                ResourceType::Encounter,
                id,
                VersionId(v.version.0 + 1),
                Precondition::CurrentVersion(v.version),
                r,
                self.now(),
                &mut unit,
            )
            .await?;
        self.commit_prepared(
            WriteAudit::each(&Principal::Operator, "consult-encounter"),
            vec![p],
            unit,
        )
        .await?;
        Ok(())
    }

    /// A chat message: DLP first (the clinician side is blocked on another
    /// patient's identifiers unless overridden with a reason; the patient
    /// side never consults the index), then stored as a `Communication`
    /// under the patient's key and delivered.
    async fn consult_chat(
        &self,
        who: &Principal,
        c: &Connection,
        text: String,
        override_reason: Option<String>,
    ) -> Result<(), AppError> {
        let (row, body) = self.load_room(&c.room).await?;
        let room = &body.room;
        if !room.is_admitted(&c.participant) {
            for (to, m) in signal::route(room, &c.participant, ClientMsg::Ping) {
                if to == c.participant && m != ServerMsg::Pong {
                    self.consult.send(&c.room, &to, m);
                }
            }
            self.consult
                .send(&c.room, &c.participant, ServerMsg::Waiting);
            return Ok(());
        }
        let text = text.trim().to_owned();
        if text.is_empty() {
            return Ok(());
        }
        let gate = self
            .dlp_gate(
                who,
                &row,
                &c.participant,
                "message",
                &text,
                override_reason.as_deref(),
            )
            .await?;
        if let DlpGate::Blocked(kinds) = gate {
            self.consult.send(
                &c.room,
                &c.participant,
                ServerMsg::ChatBlocked {
                    lesson: dlp::LESSON_OTHER_PATIENT.to_owned(),
                    kinds,
                },
            );
            return Ok(());
        }
        self.store_chat(&row, &body, &c.participant, &text).await?;
        for (to, m) in signal::route(
            room,
            &c.participant,
            ClientMsg::Chat {
                text: text.clone(),
                override_reason: None,
            },
        ) {
            self.consult.send(&c.room, &to, m);
        }
        self.consult
            .send(&c.room, &c.participant, ServerMsg::ChatSent { text });
        Ok(())
    }

    async fn store_chat(
        &self,
        row: &ConsultRoom,
        body: &RoomBody,
        from: &str,
        text: &str,
    ) -> Result<(), AppError> {
        let id = crate::records::new_id();
        let patient = format!("Patient/{}", row.patient);
        let clinician = row
            .practitioner
            .as_ref()
            .map(|p| format!("Practitioner/{p}"));
        let (sender, recipient) = if from == CLINICIAN {
            (clinician.clone(), Some(patient.clone()))
        } else if from == PATIENT {
            (Some(patient.clone()), clinician.clone())
        } else {
            (None, clinician.clone())
        };
        let mut r = json!({
            "resourceType": "Communication",
            "id": id.as_str(),
            "status": "completed",
            "subject": {"reference": patient},
            "sent": self.now().to_fhir_instant(),
            "payload": [{"contentString": text}],
            "category": [{"text": "consultation chat"}],
        });
        if let Some(s) = sender {
            set(&mut r, "sender", json!({"reference": s}));
        }
        if let Some(s) = recipient {
            set(&mut r, "recipient", json!([{"reference": s}]));
        }
        if let Some(e) = &body.encounter {
            set(
                &mut r,
                "encounter",
                json!({"reference": format!("Encounter/{e}")}),
            );
        }
        self.system_write(ResourceType::Communication, id, r, "consult-chat")
            .await
    }

    /// The DLP on what `participant` sends (`what`: a message or a file),
    /// recorded: a block names the kinds found and the other patients by id
    /// (never the value); the clinician may override it with a reason of at
    /// least five characters; structural findings are flagged.
    async fn dlp_gate(
        &self,
        who: &Principal,
        row: &ConsultRoom,
        participant: &str,
        what: &str,
        text: &str,
        override_reason: Option<&str>,
    ) -> Result<DlpGate, AppError> {
        let side = if participant == CLINICIAN {
            Side::Clinician
        } else {
            Side::Patient
        };
        let scan = {
            let idx = match self.consult.dlp.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            scan_long(&idx, text, side, row.patient.as_str())
        };
        let findings = format!("{what}; findings={}", scan.kinds.join(","));
        if !scan.blocked {
            if !scan.kinds.is_empty() {
                let mut ev = consult_event("consult-dlp-flag", Action::E, row);
                ev.query = Some(findings);
                self.audit(who, ev).await?;
            }
            return Ok(DlpGate::Pass(scan.kinds));
        }
        let mut ev = consult_event("consult-dlp-block", Action::E, row);
        ev.patients.extend(scan.others.iter().cloned());
        let reason = override_reason
            .map(str::trim)
            .filter(|r| r.chars().count() >= 5);
        match reason {
            None => {
                ev.query = Some(findings);
                let e = AppError::Forbidden(format!(
                    "consult.dlp: another patient's identifier in a consultation {what}"
                ));
                self.audit(who, ev.failed(&e)).await?;
                Ok(DlpGate::Blocked(scan.kinds))
            }
            Some(r) => {
                ev.subtype = "consult-dlp-override";
                ev.query = Some(format!("{findings}; reason={r}"));
                self.audit(who, ev).await?;
                Ok(DlpGate::Pass(scan.kinds))
            }
        }
    }

    /// The participant a member is in a room, if admitted there now.
    async fn admitted_participant(
        &self,
        member: &Member,
        room: &str,
    ) -> Result<(ConsultRoom, RoomBody, String), AppError> {
        let (row, body) = self.load_room(room).await?;
        let participant = match member {
            Member::Clinician { account } if *account == row.clinician => CLINICIAN.to_owned(),
            Member::Guest(pass) if pass.room == row.id => self.guest_participant(pass).await?,
            _ => return Err(AppError::NotFound("no such consultation room".into())),
        };
        if !body.room.is_admitted(&participant) {
            return Err(AppError::Forbidden(
                "only participants admitted to the consultation share files".into(),
            ));
        }
        Ok((row, body, participant))
    }

    /// A file shared in the consultation: checked (name, size, the content
    /// really being the declared PDF, PNG, JPEG or text), its text scanned
    /// like chat (the clinician side is blocked on another patient's
    /// identifiers unless overridden), stored as a `DocumentReference` under
    /// the patient's key on the consultation's encounter, then offered to
    /// the other participants.
    pub async fn consult_file(
        &self,
        who: &Principal,
        member: &Member,
        room: &str,
        upload: FileUpload<'_>,
    ) -> Result<FileOutcome, AppError> {
        let (row, body, participant) = self.admitted_participant(member, room).await?;
        let max = self.consult.cfg().max_file_bytes;
        let mut ev = consult_event("consult-file", Action::C, &row);
        let kind = match consult::files::check(upload.name, upload.mime, upload.bytes, max) {
            Ok(k) => k,
            Err(e) => {
                let err = match e {
                    consult::files::FileError::TooLarge { .. } => AppError::TooLarge(e.to_string()),
                    _ => AppError::bad_request(fhir::IssueCode::Invalid, e.to_string()),
                };
                self.audit(who, ev.failed(&err)).await?;
                return Err(err);
            }
        };
        let text = match consult::files::text_of(kind, upload.bytes) {
            Ok(t) => t,
            Err(e) => {
                let err = AppError::bad_request(fhir::IssueCode::Invalid, e.to_string());
                self.audit(who, ev.failed(&err)).await?;
                return Err(err);
            }
        };
        let kinds = match self
            .dlp_gate(
                who,
                &row,
                &participant,
                "file",
                &text,
                upload.override_reason,
            )
            .await?
        {
            DlpGate::Pass(kinds) => kinds,
            DlpGate::Blocked(kinds) => return Ok(FileOutcome::Blocked { kinds }),
        };
        let id = crate::records::new_id();
        let name: String = upload
            .name
            .chars()
            .take(consult::files::MAX_NAME_LEN)
            .collect();
        let mut doc = json!({
            "resourceType": "DocumentReference",
            "id": id.as_str(),
            "status": "current",
            "type": {"text": "file shared in a video consultation"},
            "subject": {"reference": format!("Patient/{}", row.patient)},
            "date": self.now().to_fhir_instant(),
            "content": [{"attachment": {
                "contentType": kind.mime(),
                "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, upload.bytes),
                "title": name,
                "size": upload.bytes.len(),
            }}],
        });
        if let Some(e) = &body.encounter {
            set(
                &mut doc,
                "context",
                json!({"encounter": [{"reference": format!("Encounter/{e}")}]}),
            );
        }
        self.system_write(
            ResourceType::DocumentReference,
            id.clone(),
            doc,
            "consult-file",
        )
        .await?;
        ev.resources.push(format!("DocumentReference/{id}"));
        let offer = ServerMsg::FileOffer {
            from: participant.clone(),
            id: id.to_string(),
            name: name.clone(),
            size: u64::try_from(upload.bytes.len()).unwrap_or(u64::MAX),
            mime: kind.mime().to_owned(),
        };
        for p in body.room.participants.iter().filter(|p| p.is_admitted()) {
            self.consult.send(&row.id, &p.id, offer.clone());
        }
        Ok(FileOutcome::Shared {
            id: id.to_string(),
            flagged: kinds,
        })
    }

    /// A file of this consultation, for one of its admitted participants
    /// (recorded as a read of the patient's data).
    pub async fn consult_file_read(
        &self,
        who: &Principal,
        member: &Member,
        room: &str,
        doc: &str,
    ) -> Result<(String, String, Vec<u8>), AppError> {
        let (row, body, _) = self.admitted_participant(member, room).await?;
        let mut ev = consult_event("consult-file-read", Action::R, &row);
        ev.resources.push(format!("DocumentReference/{doc}"));
        let result = async {
            let missing = || AppError::NotFound("no such file in this consultation".into());
            let id = ResourceId::new(doc).map_err(|_| missing())?;
            let sv = self
                .store
                .current(ResourceType::DocumentReference, &id)
                .await?
                .filter(|sv| !sv.deleted)
                .ok_or_else(missing)?;
            let r = self.open_version(&sv).await?.resource.ok_or_else(missing)?;
            let enc = body.encounter.as_deref().ok_or_else(missing)?;
            let here = r
                .pointer("/context/encounter/0/reference")
                .and_then(Value::as_str)
                == Some(format!("Encounter/{enc}").as_str());
            if !here {
                return Err(missing());
            }
            let att = r.pointer("/content/0/attachment").ok_or_else(missing)?;
            let mime = att
                .get("contentType")
                .and_then(Value::as_str)
                .unwrap_or("application/octet-stream")
                .to_owned();
            let name = att
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("file")
                .to_owned();
            let data = att.get("data").and_then(Value::as_str).unwrap_or("");
            let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data)
                .map_err(|_| AppError::Integrity("stored attachment".into()))?;
            Ok((name, mime, bytes))
        }
        .await;
        self.record_outcome(who, ev, result).await
    }

    /// The patients whose consult windows concern `p`, as policy facts.
    pub(crate) async fn consultations_for_patient(
        &self,
        p: &PatientId,
    ) -> Result<Vec<policy::ConsultationFact>, AppError> {
        Ok(self
            .store
            .consultations_of_patient(&p.0)
            .await?
            .into_iter()
            .filter_map(|r| {
                Some(policy::ConsultationFact {
                    id: r.id,
                    practitioner: r.practitioner?,
                    period: policy::Period {
                        start: r.consult_start,
                        end: r.consult_end,
                    },
                })
            })
            .collect())
    }

    /// Sends participants whose connection dropped longer ago than the
    /// grace period back to the waiting room (every few seconds in `serve`).
    pub async fn consult_sweep(&self) -> Result<(), AppError> {
        let rooms: Vec<String> = match self.consult.live.lock() {
            Ok(g) => g.keys().cloned().collect(),
            Err(p) => p.into_inner().keys().cloned().collect(),
        };
        for id in rooms {
            let (_, body) = self.load_room(&id).await?;
            if body.room.expire_disconnections(secs(self.now())).is_some() {
                let _ = self
                    .command(
                        &Principal::Operator,
                        &id,
                        "consult-reconnect-expired",
                        |r, now| {
                            r.expire_disconnections(now)
                                .ok_or(consult::room::RoomError::WrongStatus)
                        },
                    )
                    .await;
            }
        }
        Ok(())
    }

    /// The origins allowed to open the signaling WebSocket (empty: the
    /// public URL's origin, which the web layer then uses).
    pub fn consult_allowed_origins(&self) -> Vec<String> {
        self.consult.cfg().allowed_origins
    }

    /// The audit principal of a member (for web-layer audit of messages).
    pub async fn consult_principal(&self, member: &Member, room: &str) -> Principal {
        self.member_principal(member, room).await
    }
}

/// What the DLP lets through.
enum DlpGate {
    /// It may go; the kinds flagged (structural findings, or an overridden block).
    Pass(Vec<String>),
    /// Blocked: another patient's identifiers, of these kinds.
    Blocked(Vec<String>),
}

/// What a scan of a text of any length found.
struct LongScan {
    blocked: bool,
    kinds: Vec<String>,
    others: BTreeSet<String>,
}

/// Scans `text` in windows the DLP accepts, overlapping so that nothing
/// straddling a boundary is missed (identifiers and a name with its birth
/// date fit well inside the overlap).
fn scan_long(idx: &IdentifierIndex, text: &str, side: Side, patient: &str) -> LongScan {
    const WINDOW: usize = 256 * 1024;
    const OVERLAP: usize = 1024;
    let mut out = LongScan {
        blocked: false,
        kinds: Vec::new(),
        others: BTreeSet::new(),
    };
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + WINDOW).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let chunk = text.get(start..end).unwrap_or("");
        if let Ok(scan) = dlp::scan(idx, chunk, side, patient) {
            out.blocked |= scan.verdict().is_block();
            for f in scan.verdict().findings() {
                let k = finding_name(f.kind);
                if !out.kinds.contains(&k) {
                    out.kinds.push(k);
                }
            }
            out.others
                .extend(scan.other_patients_for_audit().iter().cloned());
        }
        if end == text.len() {
            break;
        }
        let mut next = end.saturating_sub(OVERLAP).max(start + 1);
        while !text.is_char_boundary(next) {
            next += 1;
        }
        start = next;
    }
    out
}

/// Sets a member of a JSON object (anything else is left alone).
fn set(r: &mut Value, key: &str, v: Value) {
    if let Some(o) = r.as_object_mut() {
        o.insert(key.to_owned(), v);
    }
}

fn finding_name(k: dlp::FindingKind) -> String {
    use dlp::{FindingKind as F, IdentifierKind as I, StructuralKind as S};
    match k {
        F::OtherPatient(I::Mrn) => "other-patient-mrn",
        F::OtherPatient(I::Ssn) => "other-patient-ssn",
        F::OtherPatient(I::Phone) => "other-patient-phone",
        F::OtherPatient(I::Email) => "other-patient-email",
        F::OtherPatient(I::NameBirthDate) => "other-patient-name-birth-date",
        F::Structural(S::Ssn) => "ssn-pattern",
        F::Structural(S::Npi) => "npi",
        F::Structural(S::Dea) => "dea",
        F::Structural(S::PaymentCard) => "payment-card",
    }
    .to_owned()
}

fn event_subtype(e: &RoomEvent) -> (&'static str, Action) {
    match e {
        RoomEvent::Opened { .. } => ("consult-open", Action::C),
        RoomEvent::CompanionApproved { .. } => ("consult-companion", Action::U),
        RoomEvent::CheckedIn { .. } => ("consult-checkin", Action::E),
        RoomEvent::Admitted { .. } => ("consult-join", Action::E),
        RoomEvent::ConsultStarted { .. } => ("consult-start", Action::E),
        RoomEvent::Denied { .. } => ("consult-deny", Action::E),
        RoomEvent::Locked { .. } => ("consult-lock", Action::U),
        RoomEvent::Unlocked { .. } => ("consult-unlock", Action::U),
        RoomEvent::Left { .. } => ("consult-leave", Action::E),
        RoomEvent::Disconnected { .. } => ("consult-disconnect", Action::E),
        RoomEvent::Reconnected { .. } => ("consult-reconnect", Action::E),
        RoomEvent::ReturnedToWaiting { .. } => ("consult-return-waiting", Action::E),
        RoomEvent::Ended { .. } => ("consult-end", Action::U),
    }
}

/// The one patient of an appointment.
fn appointment_patient(r: &Value) -> Option<ResourceId> {
    let mut found: BTreeSet<String> = BTreeSet::new();
    for p in r
        .get("participant")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(id) = p
            .get("actor")
            .and_then(|a| a.get("reference"))
            .and_then(Value::as_str)
            .and_then(|s| s.strip_prefix("Patient/"))
        {
            found.insert(id.to_owned());
        }
    }
    if found.len() != 1 {
        return None;
    }
    found
        .into_iter()
        .next()
        .and_then(|s| ResourceId::new(&s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_come_from_the_patient_resource() {
        let id = ResourceId::new("p1").unwrap();
        let r = json!({
            "resourceType": "Patient",
            "identifier": [
                {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"},
                {"system": "urn:oid:1.2.3", "value": "MRN-1"}
            ],
            "telecom": [{"system": "phone", "value": "+1 617 555 0142"}, {"system": "email", "value": "a@b.org"}],
            "name": [{"family": "Delgado", "given": ["Rosa"]}],
            "birthDate": "1961-03-14"
        });
        let ids = identifiers_of(&id, &r);
        assert_eq!(ids.ssns, vec!["123-45-6789"]);
        assert_eq!(ids.mrns, vec!["MRN-1"]);
        assert_eq!(ids.phones, vec!["+1 617 555 0142"]);
        assert_eq!(ids.emails, vec!["a@b.org"]);
        assert_eq!(ids.names.len(), 1);
        assert_eq!(ids.birth_date.as_deref(), Some("1961-03-14"));
    }

    #[test]
    fn an_appointment_has_one_patient_or_none() {
        let one = json!({"participant": [
            {"actor": {"reference": "Patient/a"}},
            {"actor": {"reference": "Practitioner/d"}}
        ]});
        assert_eq!(appointment_patient(&one).unwrap().as_str(), "a");
        let two = json!({"participant": [
            {"actor": {"reference": "Patient/a"}},
            {"actor": {"reference": "Patient/b"}}
        ]});
        assert!(appointment_patient(&two).is_none());
        assert!(appointment_patient(&json!({})).is_none());
    }
}
