//! The public record operations: each is its unaudited body plus exactly one
//! audit entry, whatever the outcome. Reads are recorded (durably) before
//! their data is returned; writes commit their entries with the change; a
//! refused or failed operation is recorded with its outcome.

use std::collections::BTreeSet;

use model::{KeyOwner, ResourceId, ResourceType, VersionId};
use serde_json::Value;
use store::{AuditRecord, WriteOp};

use crate::records::{Prepared, key_owner};
use crate::search::SearchPage;
use crate::trail::{Action, Category, Event, PolicyNote};
use crate::{AppError, Principal, Versioned, Vigil, Written};

/// Who writes and why, for the entries a commit carries.
pub(crate) struct WriteAudit<'a> {
    pub who: &'a Principal,
    pub subtype: &'static str,
    /// One entry for the whole batch (a bulk import) instead of one per resource.
    pub per_batch: bool,
    /// What the access policy decided for the write.
    pub policy: Option<PolicyNote>,
}

impl<'a> WriteAudit<'a> {
    pub(crate) fn each(who: &'a Principal, subtype: &'static str) -> WriteAudit<'a> {
        WriteAudit {
            who,
            subtype,
            per_batch: false,
            policy: None,
        }
    }

    pub(crate) fn with_policy(mut self, policy: Option<PolicyNote>) -> WriteAudit<'a> {
        self.policy = policy;
        self
    }
}

fn patient_of(owner: &KeyOwner) -> Option<String> {
    match owner {
        KeyOwner::Patient(p) => Some(p.0.to_string()),
        KeyOwner::Organisation => None,
    }
}

pub(crate) fn reference(rtype: ResourceType, id: &ResourceId) -> String {
    format!("{rtype}/{id}")
}

/// The search as `k=v&k=v` (percent-encoded), for the sealed entry.
pub(crate) fn query_string(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", auth::percent_encode(k), auth::percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn rest(subtype: &'static str, action: Action) -> Event {
    Event::new(Category::Rest, subtype, action)
}

/// The patients whose data a set of versions holds.
fn patients_in<'a>(versions: impl Iterator<Item = &'a Versioned>) -> Vec<String> {
    let set: BTreeSet<String> = versions
        .filter_map(|v| {
            v.resource
                .as_ref()
                .and_then(|r| patient_of(&key_owner(v.rtype, &v.id, r)))
        })
        .collect();
    set.into_iter().collect()
}

impl Vigil {
    /// The entries of a commit: one per written resource (or one per batch).
    pub(crate) fn write_records(
        &self,
        audit: &WriteAudit<'_>,
        ops: &[WriteOp],
        prepared: &[Prepared],
    ) -> Result<Vec<AuditRecord>, AppError> {
        let _ = prepared;
        let action_of = |op: &WriteOp| {
            if op.version.deleted {
                Action::D
            } else if op.version.version == VersionId(1) {
                Action::C
            } else {
                Action::U
            }
        };
        if audit.per_batch {
            let patients: BTreeSet<String> = ops
                .iter()
                .filter_map(|op| patient_of(&op.version.key_owner))
                .collect();
            let mut ev = rest(audit.subtype, Action::C);
            ev.policy = audit.policy.clone();
            ev.patients = patients.into_iter().collect();
            ev.resources = ops
                .iter()
                .map(|op| reference(op.version.rtype, &op.version.id))
                .collect();
            return Ok(vec![self.audit_record(audit.who, ev)?]);
        }
        ops.iter()
            .map(|op| {
                let mut ev = rest(audit.subtype, action_of(op));
                ev.policy = audit.policy.clone();
                ev.patients = patient_of(&op.version.key_owner).into_iter().collect();
                ev.resources = vec![reference(op.version.rtype, &op.version.id)];
                self.audit_record(audit.who, ev)
            })
            .collect()
    }

    /// Records a failed operation, then returns its error (or the audit
    /// failure, if even that cannot be written).
    pub(crate) async fn audit_failure<T>(
        &self,
        who: &Principal,
        ev: Event,
        e: AppError,
    ) -> Result<T, AppError> {
        self.audit(who, ev.failed(&e)).await?;
        Err(e)
    }

    /// Records a failed or refused operation: a refusal names the patients
    /// whose data it was about.
    pub(crate) async fn audit_refusal<T>(
        &self,
        who: &Principal,
        mut ev: Event,
        gate: &crate::decide::Gate,
        e: AppError,
    ) -> Result<T, AppError> {
        if ev.patients.is_empty() {
            ev.patients = gate.note.refused_patients.iter().cloned().collect();
        }
        self.audit_failure(who, ev, e).await
    }

    /// `POST /Type`: create with a server-assigned id.
    pub async fn create(
        &self,
        who: &Principal,
        rtype: ResourceType,
        body: Value,
    ) -> Result<Written, AppError> {
        let mut ev = rest("create", Action::C);
        ev.resources = vec![rtype.to_string()];
        let mut gate = match self.policy_gate(who) {
            Ok(g) => g,
            Err(e) => return self.audit_failure(who, ev, e).await,
        };
        match self.create_unaudited(who, &mut gate, rtype, body).await {
            Ok(w) => Ok(w),
            Err(e) => self.audit_refusal(who, ev, &gate, e).await,
        }
    }

    /// `PUT /Type/id`: update, or create with the given id.
    pub async fn update(
        &self,
        who: &Principal,
        rtype: ResourceType,
        id: &ResourceId,
        body: Value,
        if_match: Option<VersionId>,
    ) -> Result<Written, AppError> {
        let mut ev = rest("update", Action::U);
        ev.resources = vec![reference(rtype, id)];
        let mut gate = match self.policy_gate(who) {
            Ok(g) => g,
            Err(e) => return self.audit_failure(who, ev, e).await,
        };
        match self
            .update_unaudited(who, &mut gate, rtype, id, body, if_match)
            .await
        {
            Ok(w) => Ok(w),
            Err(e) => self.audit_refusal(who, ev, &gate, e).await,
        }
    }

    /// `DELETE /Type/id`: writes a delete marker; history is kept. Deleting
    /// something absent or already deleted succeeds (and is recorded).
    pub async fn delete(
        &self,
        who: &Principal,
        rtype: ResourceType,
        id: &ResourceId,
    ) -> Result<Option<VersionId>, AppError> {
        let mut ev = rest("delete", Action::D);
        ev.resources = vec![reference(rtype, id)];
        let mut gate = match self.policy_gate(who) {
            Ok(g) => g,
            Err(e) => return self.audit_failure(who, ev, e).await,
        };
        match self.delete_unaudited(who, &mut gate, rtype, id).await {
            Ok(Some(v)) => Ok(Some(v)),
            // Nothing was written, so no entry went with a commit.
            Ok(None) => {
                ev.policy = gate.policy_note();
                self.audit(who, ev).await?;
                Ok(None)
            }
            Err(e) => self.audit_refusal(who, ev, &gate, e).await,
        }
    }

    /// `GET /Type/id` returning the stored JSON bytes as they are.
    pub async fn read_raw(
        &self,
        who: &Principal,
        rtype: ResourceType,
        id: &ResourceId,
    ) -> Result<(Versioned, Vec<u8>), AppError> {
        let mut ev = rest("read", Action::R);
        ev.resources = vec![reference(rtype, id)];
        let mut gate = match self.policy_gate(who) {
            Ok(g) => g,
            Err(e) => return self.audit_failure(who, ev, e).await,
        };
        match self.read_raw_unaudited(who, &mut gate, rtype, id).await {
            Ok((v, bytes, owner)) => {
                ev.patients = patient_of(&owner).into_iter().collect();
                ev.policy = gate.policy_note();
                self.audit(who, ev).await?;
                Ok((v, bytes))
            }
            Err(e) => self.audit_refusal(who, ev, &gate, e).await,
        }
    }

    /// `GET /Type/id`.
    pub async fn read(
        &self,
        who: &Principal,
        rtype: ResourceType,
        id: &ResourceId,
    ) -> Result<Versioned, AppError> {
        let mut ev = rest("read", Action::R);
        ev.resources = vec![reference(rtype, id)];
        let mut gate = match self.policy_gate(who) {
            Ok(g) => g,
            Err(e) => return self.audit_failure(who, ev, e).await,
        };
        match self.read_unaudited(who, &mut gate, rtype, id).await {
            Ok(v) => {
                ev.patients = patients_in(std::iter::once(&v));
                ev.policy = gate.policy_note();
                self.audit(who, ev).await?;
                Ok(v)
            }
            Err(e) => self.audit_refusal(who, ev, &gate, e).await,
        }
    }

    /// `GET /Type/id/_history/vid`.
    pub async fn vread(
        &self,
        who: &Principal,
        rtype: ResourceType,
        id: &ResourceId,
        version: VersionId,
    ) -> Result<Versioned, AppError> {
        let mut ev = rest("vread", Action::R);
        ev.resources = vec![format!("{rtype}/{id}/_history/{version}")];
        let mut gate = match self.policy_gate(who) {
            Ok(g) => g,
            Err(e) => return self.audit_failure(who, ev, e).await,
        };
        match self
            .vread_unaudited(who, &mut gate, rtype, id, version)
            .await
        {
            Ok(v) => {
                ev.patients = patients_in(std::iter::once(&v));
                ev.policy = gate.policy_note();
                self.audit(who, ev).await?;
                Ok(v)
            }
            Err(e) => self.audit_refusal(who, ev, &gate, e).await,
        }
    }

    /// `GET /Type/id/_history`: every version, newest first.
    pub async fn history(
        &self,
        who: &Principal,
        rtype: ResourceType,
        id: &ResourceId,
    ) -> Result<Vec<Versioned>, AppError> {
        let mut ev = rest("history-instance", Action::R);
        ev.resources = vec![reference(rtype, id)];
        let mut gate = match self.policy_gate(who) {
            Ok(g) => g,
            Err(e) => return self.audit_failure(who, ev, e).await,
        };
        match self.history_unaudited(who, &mut gate, rtype, id).await {
            Ok(vs) => {
                ev.patients = patients_in(vs.iter());
                ev.policy = gate.policy_note();
                self.audit(who, ev).await?;
                Ok(vs)
            }
            Err(e) => self.audit_refusal(who, ev, &gate, e).await,
        }
    }

    /// `GET /Type?params`: one entry naming every patient whose data was returned.
    pub async fn search(
        &self,
        who: &Principal,
        rtype: ResourceType,
        pairs: &[(String, String)],
    ) -> Result<SearchPage, AppError> {
        let mut ev = rest("search-type", Action::E);
        ev.query = Some(query_string(pairs));
        let mut gate = match self.policy_gate(who) {
            Ok(g) => g,
            Err(e) => return self.audit_failure(who, ev, e).await,
        };
        match self.search_unaudited(who, &mut gate, rtype, pairs).await {
            Ok(page) => {
                ev.patients = patients_in(page.matches.iter().chain(page.included.iter()));
                ev.resources = page
                    .matches
                    .iter()
                    .chain(page.included.iter())
                    .map(|v| reference(v.rtype, &v.id))
                    .collect();
                if ev.resources.is_empty() {
                    ev.resources = vec![rtype.to_string()];
                }
                ev.policy = gate.policy_note();
                self.audit(who, ev).await?;
                Ok(page)
            }
            Err(e) => {
                ev.resources = vec![rtype.to_string()];
                self.audit_refusal(who, ev, &gate, e).await
            }
        }
    }

    /// Records an event outside the record operations (sign-in, tokens,
    /// factors, accounts, clients, keys, erasure). Fails closed.
    pub async fn audit_event(
        &self,
        who: &Principal,
        category: Category,
        subtype: &'static str,
        action: Action,
        account: Option<&store::AccountId>,
        failure: Option<&AppError>,
    ) -> Result<(), AppError> {
        let mut ev = Event::new(category, subtype, action);
        ev.account = account.map(ToString::to_string);
        if let Some(e) = failure {
            ev = ev.failed(e);
        }
        self.audit(who, ev).await.map(|_| ())
    }
}
