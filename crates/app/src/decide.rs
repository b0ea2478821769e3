//! The decision point at the choke point: every record operation asks the
//! access policy (`crates/policy`) about each resource before its data
//! leaves or a change commits.
//!
//! A [`Gate`] lives for one operation. It knows who asks and for what
//! purpose, keeps the relationship facts of the patients it has looked at,
//! and remembers the deciding policy ids, purpose and break-the-glass grants
//! for the operation's audit entry.
//!
//! Architecture Invariant: nothing reaches a caller that a person's decision
//! did not allow. Operators (CLI verbs with the key file) and backend
//! services (OAuth client credentials, no person) are not decided by the
//! relationship rules: a service reaches what its registered system scopes
//! allow (the ceiling in `access.rs`), an operator everything.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use model::{KeyOwner, PatientId, ResourceId, ResourceType, Timestamp};
use policy::{Engine, Facts, Purpose};
use serde_json::Value;
use store::IndexQuery;

use crate::{AppError, Caller, Principal, Versioned, Via, Vigil};

/// `[policy]` settings.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Relationship windows (seconds).
    pub windows: policy::Windows,
    /// Whether workforce privacy training counts as current. The training
    /// capability will maintain this per account; until then it is one switch.
    pub training_current: bool,
    /// How long relationship facts stay cached in memory. Writes on this node
    /// invalidate at once; on a multi-node deployment a change made on
    /// another node takes effect within this many seconds. Unset: 300 s on
    /// embedded SQLite (one process writes, so every change invalidates
    /// here), 5 s on PostgreSQL (other nodes may write).
    pub facts_ttl_secs: Option<u64>,
    /// Break-the-glass grant length when none is asked for, in minutes.
    pub grant_minutes: u32,
    /// The longest grant, in minutes.
    pub grant_max_minutes: u32,
}

impl Default for PolicyConfig {
    fn default() -> PolicyConfig {
        PolicyConfig {
            windows: policy::Windows::default(),
            training_current: true,
            facts_ttl_secs: None,
            grant_minutes: 60,
            grant_max_minutes: 240,
        }
    }
}

/// What the policy needs to know about one patient.
#[derive(Debug, Default)]
pub(crate) struct PatientFacts {
    pub(crate) facts: Facts,
    /// The Patient resource carries the VIP label.
    pub(crate) vip: bool,
}

/// The types whose content relationship facts come from: a write to one of
/// them invalidates the patient's cached facts.
pub(crate) fn shapes_facts(t: ResourceType) -> bool {
    matches!(
        t,
        ResourceType::Patient
            | ResourceType::CareTeam
            | ResourceType::Encounter
            | ResourceType::Appointment
            | ResourceType::Consent
    )
}

/// The policy engine (replaceable when the privacy officer edits the
/// policies) and the cache of patients' facts.
pub(crate) struct PolicyState {
    pub(crate) engine: RwLock<Arc<Engine>>,
    pub(crate) config: PolicyConfig,
    /// The facts' lifetime in the cache, in microseconds.
    ttl: i64,
    /// Read-mostly: lookups share the lock.
    cache: RwLock<HashMap<PatientId, Cached>>,
    /// Counts invalidations: facts loaded while one happened are not
    /// cached (they may predate the write that caused it).
    epoch: AtomicU64,
}

/// A patient's facts, when they were loaded and until when they are used.
type Cached = (Timestamp, Timestamp, Arc<PatientFacts>);

impl PolicyState {
    /// `backend` is the store's ([`store::Store::backend`]): it sets the
    /// facts' lifetime when the configuration does not.
    pub(crate) fn new(config: PolicyConfig, backend: &str) -> Result<PolicyState, AppError> {
        let engine = Engine::shipped(config.windows)
            .map_err(|e| AppError::Policy(format!("the shipped policies: {e}")))?;
        let secs = config
            .facts_ttl_secs
            .unwrap_or(if backend == "sqlite" { 300 } else { 5 });
        Ok(PolicyState {
            engine: RwLock::new(Arc::new(engine)),
            config,
            ttl: i64::try_from(secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000),
            cache: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        })
    }

    pub(crate) fn engine(&self) -> Result<Arc<Engine>, AppError> {
        self.engine
            .read()
            .map(|e| Arc::clone(&e))
            .map_err(|_| AppError::Policy("policy engine lock poisoned".into()))
    }

    pub(crate) fn replace_engine(&self, engine: Engine) -> Result<(), AppError> {
        let mut g = self
            .engine
            .write()
            .map_err(|_| AppError::Policy("policy engine lock poisoned".into()))?;
        *g = Arc::new(engine);
        Ok(())
    }

    pub(crate) fn invalidate(&self, owner: &KeyOwner) {
        if let KeyOwner::Patient(p) = owner {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut c) = self.cache.write() {
                c.remove(p);
            }
        }
    }

    pub(crate) fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut c) = self.cache.write() {
            c.clear();
        }
    }

    /// The invalidation count, taken before facts are loaded.
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn cached(&self, p: &PatientId, now: Timestamp) -> Option<Arc<PatientFacts>> {
        let c = self.cache.read().ok()?;
        let (at, until, f) = c.get(p)?;
        (now.0 >= at.0 && now.0 < until.0).then(|| Arc::clone(f))
    }

    /// Caches facts loaded since `epoch`, unless an invalidation happened
    /// meanwhile (the load may have read what a write then changed).
    fn remember(&self, p: PatientId, at: Timestamp, f: Arc<PatientFacts>, epoch: u64) {
        use rand::Rng as _;
        let ttl = self.ttl;
        // Between half the lifetime and all of it, so that facts loaded
        // together (a clinician opening a list of charts) are not all
        // reloaded in the same instant.
        let life = ttl / 2 + rand::thread_rng().gen_range(0..=ttl / 2);
        if let Ok(mut c) = self.cache.write() {
            // Checked under the lock: an invalidation after this point
            // removes the entry inserted here.
            if self.epoch() != epoch {
                return;
            }
            // A bound on memory: the cache is an optimisation, never the truth.
            if c.len() >= 100_000 {
                c.clear();
            }
            c.insert(p, (at, Timestamp(at.0.saturating_add(life)), f));
        }
    }
}

/// Who a gate decides for.
#[derive(Debug, Clone)]
enum Subject {
    /// Everything: operators and backend services (see the module invariant).
    Unrestricted,
    Person(policy::Principal),
}

/// What the audit entry of an operation says about its decisions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Note {
    pub(crate) policies: BTreeSet<String>,
    pub(crate) purpose: Option<Purpose>,
    pub(crate) grants: BTreeSet<String>,
    /// Patients whose data a refused decision was about (a refusal's entry
    /// names them, so monitoring and the patient see the attempt).
    pub(crate) refused_patients: BTreeSet<String>,
}

/// The decision point for one operation.
pub(crate) struct Gate {
    subject: Subject,
    declared: Option<Purpose>,
    engine: Arc<Engine>,
    facts: HashMap<PatientId, Arc<PatientFacts>>,
    pub(crate) note: Note,
}

/// The policy's view of a caller.
pub(crate) fn policy_principal(c: &Caller, training_current: bool) -> Option<policy::Principal> {
    let account = c.account.as_ref()?;
    let role = match c.role? {
        store::Role::Physician => policy::Role::Physician,
        store::Role::Nurse => policy::Role::Nurse,
        store::Role::OtherClinical => policy::Role::OtherClinical,
        store::Role::FrontDesk => policy::Role::FrontDesk,
        store::Role::Billing => policy::Role::Billing,
        store::Role::PrivacyOfficer => policy::Role::PrivacyOfficer,
        store::Role::Administrator => policy::Role::Administrator,
        store::Role::Patient => policy::Role::Patient,
    };
    Some(policy::Principal {
        id: account.to_string(),
        role,
        practitioner: c.practitioner.as_ref().map(ToString::to_string),
        patient: if role == policy::Role::Patient {
            c.own_patient.as_ref().map(ToString::to_string)
        } else {
            None
        },
        organization: None,
        department: None,
        // Workforce sign-in requires a second factor (identity); operator
        // tokens are an operator's deliberate, audited act.
        mfa: match c.via {
            Via::Session | Via::Token { .. } | Via::OperatorToken { .. } => c.mfa,
        },
        training_current,
    })
}

/// The policy's view of one resource.
pub(crate) fn policy_resource(
    rtype: ResourceType,
    id: Option<&ResourceId>,
    owner: &KeyOwner,
    body: &Value,
    vip: bool,
) -> policy::Resource {
    let mut labels = crate::facts::labels(body);
    if vip {
        labels.insert(policy::Label::Vip);
    }
    policy::Resource {
        rtype,
        id: id.map(ToString::to_string),
        patient: match owner {
            KeyOwner::Patient(p) => Some(p.0.to_string()),
            KeyOwner::Organisation => None,
        },
        labels,
        date: crate::facts::clinical_date(rtype, body),
    }
}

impl Note {
    /// What an allowed decision adds beyond its rules and purpose: the grant
    /// it was made under.
    fn allowed(&mut self, d: &policy::Decision) {
        if let Some(g) = &d.grant {
            self.grants.insert(g.clone());
        }
    }
}

impl Gate {
    /// The audit entry's policy part (`None` for unrestricted callers).
    pub(crate) fn policy_note(&self) -> Option<crate::trail::PolicyNote> {
        if self.is_unrestricted() {
            return None;
        }
        Some(crate::trail::PolicyNote {
            policies: self.note.policies.iter().cloned().collect(),
            purpose: self.note.purpose.map(|p| p.as_str().to_owned()),
            grants: self.note.grants.iter().cloned().collect(),
        })
    }

    pub(crate) fn is_unrestricted(&self) -> bool {
        matches!(self.subject, Subject::Unrestricted)
    }
}

impl Vigil {
    /// A gate for one operation of `who`, with the purpose the request declared.
    pub(crate) fn policy_gate(&self, who: &Principal) -> Result<Gate, AppError> {
        let engine = self.policy.engine()?;
        let subject = match who {
            Principal::Operator => Subject::Unrestricted,
            Principal::User(c) if c.account.is_none() && c.client_id.is_some() => {
                Subject::Unrestricted
            }
            Principal::User(c) => match policy_principal(c, self.policy.config.training_current) {
                Some(p) => Subject::Person(p),
                // Not signed in: nobody to decide for.
                None => return Err(AppError::Unauthenticated),
            },
        };
        let declared = match crate::trail::declared_purpose() {
            None => None,
            Some(code) => Some(Purpose::parse(&code).ok_or_else(|| {
                AppError::bad_request(
                    fhir::IssueCode::Invalid,
                    "unknown purpose of use (X-Purpose-Of-Use takes TREAT, ETREAT, HPAYMT, HOPERAT or PATRQT)",
                )
            })?),
        };
        Ok(Gate {
            subject,
            declared,
            engine,
            facts: HashMap::new(),
            note: Note::default(),
        })
    }

    /// Decides `action` on one decrypted version. Allowed: the masks to apply.
    /// Denied: [`AppError::Denied`] with the decision.
    pub(crate) async fn decide_version(
        &self,
        gate: &mut Gate,
        action: policy::Action,
        v: &Versioned,
    ) -> Result<Vec<String>, AppError> {
        let Some(body) = &v.resource else {
            return Ok(Vec::new());
        };
        let owner = crate::records::key_owner(v.rtype, &v.id, body);
        self.decide_body(gate, action, v.rtype, Some(&v.id), &owner, body)
            .await
    }

    /// Decides `action` on a resource body (a new one for create and update).
    pub(crate) async fn decide_body(
        &self,
        gate: &mut Gate,
        action: policy::Action,
        rtype: ResourceType,
        id: Option<&ResourceId>,
        owner: &KeyOwner,
        body: &Value,
    ) -> Result<Vec<String>, AppError> {
        let Some((d, patient)) = self.decision(gate, action, rtype, id, owner, body).await? else {
            return Ok(Vec::new());
        };
        gate.note.policies.extend(d.policies.iter().cloned());
        if gate.note.purpose.is_none() || d.allow {
            gate.note.purpose = Some(d.purpose);
        }
        if d.allow {
            gate.note.allowed(&d);
            Ok(d.masks)
        } else {
            if let Some(p) = patient {
                gate.note.refused_patients.insert(p);
            }
            Err(AppError::Denied(Box::new(d)))
        }
    }

    /// The engine's decision about a resource body and the patient it
    /// concerns; `None` for unrestricted callers. Records nothing.
    async fn decision(
        &self,
        gate: &mut Gate,
        action: policy::Action,
        rtype: ResourceType,
        id: Option<&ResourceId>,
        owner: &KeyOwner,
        body: &Value,
    ) -> Result<Option<(policy::Decision, Option<String>)>, AppError> {
        let Subject::Person(principal) = &gate.subject else {
            return Ok(None);
        };
        let principal = principal.clone();
        let pf = match owner {
            KeyOwner::Patient(p) => self.patient_facts(gate, p).await?,
            KeyOwner::Organisation => Arc::new(PatientFacts::default()),
        };
        let resource = policy_resource(rtype, id, owner, body, pf.vip);
        let req = policy::Request {
            principal: &principal,
            action,
            resource: &resource,
            purpose: gate.declared,
            now: self.now(),
            facts: &pf.facts,
        };
        Ok(Some((gate.engine.decide(&req), resource.patient)))
    }

    /// Whether `action` on this version is allowed (for filtering search
    /// results: a hidden resource is left out, never reported, and does not
    /// shape the entry's policy list); an allowed one is masked.
    pub(crate) async fn allowed(
        &self,
        gate: &mut Gate,
        action: policy::Action,
        v: &mut Versioned,
    ) -> Result<bool, AppError> {
        if gate.is_unrestricted() {
            return Ok(true);
        }
        let Some(body) = &v.resource else {
            return Ok(true);
        };
        let owner = crate::records::key_owner(v.rtype, &v.id, body);
        let Some((d, _)) = self
            .decision(gate, action, v.rtype, Some(&v.id), &owner, body)
            .await?
        else {
            return Ok(true);
        };
        if !d.allow {
            return Ok(false);
        }
        gate.note.policies.extend(d.policies.iter().cloned());
        gate.note.purpose = Some(d.purpose);
        gate.note.allowed(&d);
        if let Some(r) = v.resource.as_mut() {
            crate::facts::mask(r, &d.masks);
        }
        Ok(true)
    }

    /// The key owners whose resources a search of `rtype` may look at:
    /// `None` for everything (unrestricted callers), else the patients the
    /// caller has relationship candidates with, plus the organisation's
    /// directory data. Each result is still decided one by one.
    pub(crate) async fn reach(
        &self,
        gate: &mut Gate,
        rtype: ResourceType,
    ) -> Result<Option<Vec<KeyOwner>>, AppError> {
        let Subject::Person(p) = &gate.subject else {
            return Ok(None);
        };
        let p = p.clone();
        if policy::Category::of(rtype) == policy::Category::Directory {
            return Ok(Some(vec![KeyOwner::Organisation]));
        }
        let now = self.now();
        let mut patients: BTreeSet<PatientId> = BTreeSet::new();
        match p.role {
            policy::Role::Patient => {
                if let Some(own) = p.patient.as_deref().and_then(|s| ResourceId::new(s).ok()) {
                    patients.insert(PatientId(own));
                }
            }
            r if r.is_clinician() => {
                if let Some(pr) = &p.practitioner {
                    let reference = format!("Practitioner/{pr}");
                    for (t, param) in [
                        (ResourceType::CareTeam, "participant"),
                        (ResourceType::Encounter, "participant"),
                        (ResourceType::Appointment, "actor"),
                    ] {
                        patients.extend(self.owners_by_reference(t, param, &reference).await?);
                    }
                }
                patients.extend(self.granted_patients(&p.id, now).await?);
            }
            policy::Role::FrontDesk => {
                let w = &self.policy.config.windows;
                patients.extend(
                    self.owners_in_window(
                        ResourceType::Appointment,
                        now.0
                            .saturating_sub(w.scheduled_visit_after.saturating_mul(1_000_000)),
                        now.0
                            .saturating_add(w.scheduled_visit_before.saturating_mul(1_000_000)),
                    )
                    .await?,
                );
            }
            policy::Role::Billing => {
                let w = &self.policy.config.windows;
                patients.extend(
                    self.owners_in_window(
                        ResourceType::Encounter,
                        now.0
                            .saturating_sub(w.recent_encounter.saturating_mul(1_000_000)),
                        now.0,
                    )
                    .await?,
                );
            }
            policy::Role::PrivacyOfficer
                if matches!(rtype, ResourceType::Consent | ResourceType::Patient) =>
            {
                return Ok(None);
            }
            _ => {}
        }
        Ok(Some(patients.into_iter().map(KeyOwner::Patient).collect()))
    }

    /// The patients whose `rtype` resources refer to `reference` through `param`.
    async fn owners_by_reference(
        &self,
        rtype: ResourceType,
        param: &str,
        reference: &str,
    ) -> Result<BTreeSet<PatientId>, AppError> {
        let ring = self.keys.ring();
        let query = IndexQuery {
            clauses: vec![store::IndexClause {
                param: param.to_owned(),
                tokens: vec![ring.blind_token(rtype, param, reference)],
            }],
            limit: usize::MAX,
            ..IndexQuery::default()
        };
        let ids = self.store.find(rtype, &query).await?;
        let mut out = BTreeSet::new();
        for chunk in ids.chunks(500) {
            for sv in self.store.current_many(rtype, chunk).await? {
                if let KeyOwner::Patient(p) = sv.key_owner {
                    out.insert(p);
                }
            }
        }
        Ok(out)
    }

    /// The patients with a `rtype` resource whose date overlaps [from, to]
    /// (microseconds): candidates only, each is decided with its facts.
    async fn owners_in_window(
        &self,
        rtype: ResourceType,
        from: i64,
        to: i64,
    ) -> Result<BTreeSet<PatientId>, AppError> {
        let day = |t: i64| {
            let d = Timestamp(t).to_offset_datetime().date();
            format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        };
        let pairs = vec![
            ("date".to_owned(), format!("ge{}", day(from))),
            ("date".to_owned(), format!("le{}", day(to))),
        ];
        let req = fhir::search::parse_query(rtype, &pairs).map_err(AppError::BadRequest)?;
        let mut unrestricted = Gate {
            subject: Subject::Unrestricted,
            declared: None,
            engine: self.policy.engine()?,
            facts: HashMap::new(),
            note: Note::default(),
        };
        let found = self
            .matching(
                rtype,
                &req.clauses,
                &crate::access::Access::All,
                &mut unrestricted,
                None,
            )
            .await?;
        Ok(found
            .iter()
            .filter_map(|v| {
                let r = v.resource.as_ref()?;
                match crate::records::key_owner(v.rtype, &v.id, r) {
                    KeyOwner::Patient(p) => Some(p),
                    KeyOwner::Organisation => None,
                }
            })
            .collect())
    }

    /// The facts about one patient: from the gate, the cache, or the records.
    pub(crate) async fn patient_facts(
        &self,
        gate: &mut Gate,
        p: &PatientId,
    ) -> Result<Arc<PatientFacts>, AppError> {
        if let Some(f) = gate.facts.get(p) {
            return Ok(Arc::clone(f));
        }
        let now = self.now();
        let f = match self.policy.cached(p, now) {
            Some(f) => f,
            None => {
                let epoch = self.policy.epoch();
                let f = Arc::new(self.load_facts(p).await?);
                self.policy.remember(p.clone(), now, Arc::clone(&f), epoch);
                f
            }
        };
        gate.facts.insert(p.clone(), Arc::clone(&f));
        Ok(f)
    }

    /// Reads the patient's care teams, encounters, appointments, consents
    /// and Patient resource, and the break-the-glass grants for them.
    pub(crate) async fn load_facts(&self, p: &PatientId) -> Result<PatientFacts, AppError> {
        let owner = KeyOwner::Patient(p.clone());
        let mut out = PatientFacts::default();
        let stored = self
            .store
            .current_of_owner(
                &owner,
                &[
                    ResourceType::CareTeam,
                    ResourceType::Encounter,
                    ResourceType::Appointment,
                    ResourceType::Consent,
                    ResourceType::Patient,
                ],
            )
            .await?;
        for sv in stored {
            let rtype = sv.rtype;
            let v = self.open_version(&sv).await?;
            let Some(r) = &v.resource else { continue };
            let id = v.id.as_str();
            match rtype {
                ResourceType::CareTeam => {
                    out.facts.care_teams.extend(crate::facts::care_team(id, r));
                }
                ResourceType::Encounter => {
                    out.facts.encounters.extend(crate::facts::encounter(id, r));
                }
                ResourceType::Appointment => {
                    out.facts
                        .appointments
                        .extend(crate::facts::appointment(id, r));
                }
                ResourceType::Consent => {
                    out.facts.consents.extend(crate::facts::consent(id, r));
                }
                _ => {
                    if v.id == p.0 {
                        out.vip = crate::facts::labels(r).contains(&policy::Label::Vip);
                    }
                }
            }
        }
        out.facts.grants = self.grants_for_patient(p).await?;
        out.facts.consultations = self.consultations_for_patient(p).await?;
        Ok(out)
    }
}

impl Vigil {
    /// The break-the-glass grants given for a patient, as policy facts.
    pub(crate) async fn grants_for_patient(
        &self,
        p: &PatientId,
    ) -> Result<Vec<policy::GrantFact>, AppError> {
        Ok(self
            .store
            .grants_for_patient(&p.0)
            .await?
            .into_iter()
            .map(|g| policy::GrantFact {
                id: g.id,
                account: g.account.to_string(),
                patient: g.patient.to_string(),
                start: g.start,
                expires: g.expires,
                // Ended early: from the instant it was ended, it opens nothing
                // (revocation is always "now", so a stored end is in the past).
                revoked: g.revoked.is_some(),
            })
            .collect())
    }

    /// The patients an account holds a live grant for.
    async fn granted_patients(
        &self,
        account: &str,
        now: Timestamp,
    ) -> Result<BTreeSet<PatientId>, AppError> {
        let Some(id) = store::AccountId::new(account.to_owned()) else {
            return Ok(BTreeSet::new());
        };
        Ok(self
            .store
            .grants_for_account(&id, Some(now))
            .await?
            .into_iter()
            .map(|g| PatientId(g.patient))
            .collect())
    }
}

/// What one decision is made over, for the benchmark and diagnostics: the
/// resource as the policy sees it and the facts about its patient.
#[derive(Debug)]
pub struct DecisionSlice {
    pub resource: policy::Resource,
    pub facts: Facts,
}

impl Vigil {
    /// The current policy engine (shared; replaced when the policy changes).
    pub fn policy_engine(&self) -> Result<Arc<Engine>, AppError> {
        self.policy.engine()
    }

    /// Builds the slice a decision about `rtype/id` is made over, reading
    /// the resource and the patient's relationship facts from the records
    /// (never from the cache): the relationship lookup the benchmark times.
    /// Operators only (it reads records without an audit entry, like the
    /// other operator tasks with the key file).
    pub async fn decision_slice(
        &self,
        who: &Principal,
        rtype: ResourceType,
        id: &ResourceId,
    ) -> Result<DecisionSlice, AppError> {
        if !matches!(who, Principal::Operator) {
            return Err(AppError::Forbidden(
                "decision slices are an operator's diagnostic".into(),
            ));
        }
        let sv = self
            .store
            .current(rtype, id)
            .await?
            .filter(|s| !s.deleted)
            .ok_or_else(|| AppError::NotFound(format!("{rtype}/{id}")))?;
        let v = self.open_version(&sv).await?;
        let body = v
            .resource
            .as_ref()
            .ok_or_else(|| AppError::NotFound(format!("{rtype}/{id}")))?;
        let owner = crate::records::key_owner(rtype, id, body);
        let pf = match &owner {
            KeyOwner::Patient(p) => self.load_facts(p).await?,
            KeyOwner::Organisation => PatientFacts::default(),
        };
        Ok(DecisionSlice {
            resource: policy_resource(rtype, Some(id), &owner, body, pf.vip),
            facts: pf.facts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Arc<PatientFacts> {
        Arc::new(PatientFacts::default())
    }

    fn patient(id: &str) -> PatientId {
        let Some(id) = ResourceId::new(id.to_owned()).ok() else {
            unreachable!("a valid id");
        };
        PatientId(id)
    }

    #[test]
    fn facts_loaded_across_an_invalidation_are_not_cached() {
        let Ok(state) = PolicyState::new(PolicyConfig::default(), "sqlite") else {
            unreachable!("the shipped policies load");
        };
        let (p, q) = (patient("p1"), patient("p2"));
        let now = Timestamp(1_000_000);
        // A load that saw no write is cached.
        let epoch = state.epoch();
        state.remember(p.clone(), now, facts(), epoch);
        assert!(state.cached(&p, now).is_some());
        // A write to any patient while a load is under way: not cached.
        let epoch = state.epoch();
        state.invalidate(&KeyOwner::Patient(q.clone()));
        state.remember(q.clone(), now, facts(), epoch);
        assert!(state.cached(&q, now).is_none());
        // Invalidation drops what is cached; the organisation key shapes
        // nobody's facts.
        let epoch = state.epoch();
        state.invalidate(&KeyOwner::Organisation);
        assert_eq!(state.epoch(), epoch);
        state.invalidate(&KeyOwner::Patient(p.clone()));
        assert!(state.cached(&p, now).is_none());
        state.remember(p.clone(), now, facts(), state.epoch());
        state.invalidate_all();
        assert!(state.cached(&p, now).is_none());
    }

    #[test]
    fn the_facts_lifetime_follows_the_backend_unless_configured() {
        let ttl = |secs: Option<u64>, backend: &str| {
            let config = PolicyConfig {
                facts_ttl_secs: secs,
                ..PolicyConfig::default()
            };
            PolicyState::new(config, backend).map(|s| s.ttl).ok()
        };
        assert_eq!(ttl(None, "sqlite"), Some(300_000_000));
        assert_eq!(ttl(None, "postgres"), Some(5_000_000));
        assert_eq!(ttl(Some(1), "sqlite"), Some(1_000_000));
        // Cached facts expire with their lifetime (at most, jittered).
        let Ok(state) = PolicyState::new(
            PolicyConfig {
                facts_ttl_secs: Some(1),
                ..PolicyConfig::default()
            },
            "postgres",
        ) else {
            unreachable!("the shipped policies load");
        };
        let p = patient("p1");
        state.remember(p.clone(), Timestamp(0), facts(), state.epoch());
        assert!(state.cached(&p, Timestamp(0)).is_some());
        assert!(state.cached(&p, Timestamp(1_000_000)).is_none());
    }
}
