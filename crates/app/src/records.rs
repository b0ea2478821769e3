//! Create, read, update, delete and history of single resources.

use std::collections::{BTreeMap, BTreeSet};

use fhir::{IssueCode, RefTarget};
use model::{KeyOwner, PatientId, ResourceId, ResourceType, Timestamp, VersionId};
use serde_json::{Map, Value};
use store::{IndexRow, Precondition, StoreError, StoredVersion, WriteOp};

use crate::audited::WriteAudit;
use crate::decide::Gate;
use crate::error::issue;
use crate::keys::NewKeys;
use crate::{AppError, Principal, Versioned, Vigil, Written};
use auth::scope::Interaction;

/// A resource about to be written, checked and stamped.
pub(crate) struct Prepared {
    pub op: WriteOp,
    pub versioned: Versioned,
    pub memory_terms: Vec<(&'static str, String)>,
    pub created: bool,
}

impl Vigil {
    /// Checks a resource body against R4 and against the URL's type.
    pub(crate) fn check_body(&self, rtype: ResourceType, body: &Value) -> Result<(), AppError> {
        let Some(obj) = body.as_object() else {
            return Err(AppError::bad_request(
                IssueCode::Structure,
                "the body must be a JSON object (a FHIR resource)",
            ));
        };
        match obj.get("resourceType").and_then(Value::as_str) {
            None => {
                return Err(AppError::bad_request(
                    IssueCode::Required,
                    "resourceType is missing",
                ));
            }
            Some(t) if t != rtype.as_str() => {
                return Err(AppError::BadRequest(vec![fhir::Issue {
                    expression: vec!["resourceType".into()],
                    ..issue(
                        IssueCode::Invalid,
                        format!("resourceType does not match the URL: expected {rtype}"),
                    )
                }]));
            }
            Some(_) => {}
        }
        let limits = fhir::Limits {
            max_string_len: self.config.limits.max_string_len,
            ..fhir::Limits::default()
        };
        fhir::validate(body, &limits).map_err(AppError::BadRequest)
    }

    /// Checks that references to served types resolve, counting ids that the
    /// same transaction creates as present.
    pub(crate) async fn check_references(
        &self,
        resource: &Value,
        pending: &BTreeSet<(ResourceType, ResourceId)>,
    ) -> Result<(), AppError> {
        if !self.config.referential_integrity {
            return Ok(());
        }
        let mut wanted: BTreeMap<ResourceType, Vec<(ResourceId, String)>> = BTreeMap::new();
        let mut issues = Vec::new();
        for r in fhir::references(resource) {
            if let RefTarget::Local { rtype, id, .. } = &r.target {
                let Some(t) = ResourceType::parse(rtype) else {
                    continue;
                };
                match ResourceId::new(id.clone()) {
                    Ok(id) if pending.contains(&(t, id.clone())) => {}
                    Ok(id) => wanted.entry(t).or_default().push((id, r.path.clone())),
                    Err(_) => issues.push(fhir::Issue {
                        expression: vec![r.path.clone()],
                        ..issue(IssueCode::Invalid, "reference id is not a valid FHIR id")
                    }),
                }
            }
        }
        for (t, refs) in wanted {
            let ids: Vec<ResourceId> = refs.iter().map(|(i, _)| i.clone()).collect();
            let existing: BTreeSet<ResourceId> =
                self.store.existing(t, &ids).await?.into_iter().collect();
            for (id, path) in refs {
                if !existing.contains(&id) {
                    issues.push(fhir::Issue {
                        expression: vec![path],
                        ..issue(
                            IssueCode::NotFound,
                            format!("reference to {t}/{id} does not resolve on this server"),
                        )
                    });
                }
            }
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(AppError::Unprocessable(issues))
        }
    }

    /// Stamps `meta`, seals and indexes a resource version.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call per write path; each argument is a distinct part of the version"
    )]
    pub(crate) async fn prepare(
        &self,
        rtype: ResourceType,
        id: ResourceId,
        version: VersionId,
        precondition: Precondition,
        mut body: Value,
        now: Timestamp,
        unit: &mut NewKeys,
    ) -> Result<Prepared, AppError> {
        let obj = body.as_object_mut().ok_or_else(|| {
            AppError::bad_request(IssueCode::Structure, "the body must be a JSON object")
        })?;
        obj.insert("id".into(), Value::String(id.to_string()));
        let meta = obj
            .entry("meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = meta.as_object_mut() {
            m.insert("versionId".into(), Value::String(version.to_string()));
            m.insert("lastUpdated".into(), Value::String(now.to_fhir_instant()));
        }
        let owner = key_owner(rtype, &id, &body);
        let dek = self.keys.for_write(&owner, unit).await?;
        let plaintext = serde_json::to_vec(&body).map_err(|_| {
            AppError::bad_request(IssueCode::Structure, "the resource cannot be serialised")
        })?;
        let ciphertext = dek.seal(&crypto::resource_aad(rtype, &id, version), &plaintext);
        let ring = self.keys.ring();
        let mut index = BTreeSet::new();
        let mut memory_terms = Vec::new();
        for term in fhir::search::index_terms(rtype, &body) {
            match term.strategy {
                fhir::search::Strategy::Blind | fhir::search::Strategy::DayBucket => {
                    index.insert(IndexRow {
                        param: term.param.to_owned(),
                        token: ring.blind_token(rtype, term.param, &term.value),
                    });
                }
                fhir::search::Strategy::Memory => memory_terms.push((term.param, term.value)),
                fhir::search::Strategy::FilterOnly => {}
            }
        }
        let stored = StoredVersion {
            rtype,
            id: id.clone(),
            version,
            last_updated: now,
            deleted: false,
            key_owner: owner,
            ciphertext,
        };
        Ok(Prepared {
            op: WriteOp {
                precondition,
                version: stored,
                index: index.into_iter().collect(),
            },
            versioned: Versioned {
                rtype,
                id,
                version,
                last_updated: now,
                resource: Some(body),
            },
            memory_terms,
            created: version == VersionId(1),
        })
    }

    /// Applies prepared writes atomically, then updates the in-memory index.
    pub(crate) async fn commit_prepared(
        &self,
        audit: WriteAudit<'_>,
        prepared: Vec<Prepared>,
        unit: NewKeys,
    ) -> Result<Vec<Prepared>, AppError> {
        self.commit_unit(audit, Vec::new(), &prepared, unit).await?;
        Ok(prepared)
    }

    /// The one commit path for writes: delete markers and prepared versions
    /// (with the data keys they need) and their audit entries commit
    /// atomically; then the new keys are cached and the in-memory name index
    /// follows the change.
    pub(crate) async fn commit_unit(
        &self,
        audit: WriteAudit<'_>,
        deletes: Vec<WriteOp>,
        prepared: &[Prepared],
        unit: NewKeys,
    ) -> Result<(), AppError> {
        let removed: Vec<(ResourceType, ResourceId)> = deletes
            .iter()
            .map(|op| (op.version.rtype, op.version.id.clone()))
            .collect();
        let mut ops = deletes;
        ops.extend(prepared.iter().map(|p| p.op.clone()));
        // Relationship facts come from these writes: the patients' cached
        // facts are dropped once the commit lands.
        let ops_owners: Vec<KeyOwner> = ops
            .iter()
            .filter(|op| crate::decide::shapes_facts(op.version.rtype))
            .map(|op| op.version.key_owner.clone())
            .collect();
        let records = self.write_records(&audit, &ops, prepared)?;
        let core = std::sync::Arc::clone(&self.audit);
        let integrate = move |h: &store::AuditHead, r: &[store::AuditRecord]| core.integrate(h, r);
        let appended = self
            .store
            .commit_audited(unit.wrapped(), ops, records, &integrate)
            .await
            .map_err(|e| match e {
                StoreError::Conflict { rtype, id, reason } => AppError::Conflict(format!(
                    "{rtype}/{id} was changed concurrently ({reason}); nothing was written; retry"
                )),
                other => AppError::Store(other),
            })?;
        crate::trail::remember(&crate::trail::Receipt {
            index: appended.first_index,
            size: appended.size,
            checkpoint: appended.checkpoint,
        });
        self.keys.committed(unit);
        for op in &ops_owners {
            self.policy.invalidate(op);
        }
        for (rtype, id) in removed {
            if has_memory_params(rtype) {
                self.mem.set(rtype, &id, Vec::new());
            }
            if rtype == ResourceType::Patient {
                self.consult.index_patient(&id, None);
            }
        }
        for p in prepared {
            let rtype = p.versioned.rtype;
            if has_memory_params(rtype) {
                self.mem.set(rtype, &p.versioned.id, p.memory_terms.clone());
            }
            if rtype == ResourceType::Patient {
                self.consult
                    .index_patient(&p.versioned.id, p.versioned.resource.as_ref());
            }
        }
        Ok(())
    }

    /// `POST /Type`: create with a server-assigned id.
    pub(crate) async fn create_unaudited(
        &self,
        who: &Principal,
        gate: &mut Gate,
        rtype: ResourceType,
        body: Value,
    ) -> Result<Written, AppError> {
        let access = self.permit(who, rtype, Interaction::Create)?;
        self.check_body(rtype, &body)?;
        let id = new_id();
        let owner = key_owner(rtype, &id, &body);
        access.allows(&owner)?;
        self.decide_body(
            gate,
            policy::Action::Create,
            rtype,
            Some(&id),
            &owner,
            &body,
        )
        .await?;
        self.check_references(&body, &BTreeSet::new()).await?;
        let subtype = "create";
        let note = gate.policy_note();
        retry_key_race(|| async {
            let mut unit = NewKeys::default();
            let p = self
                .prepare(
                    rtype,
                    id.clone(),
                    VersionId(1),
                    Precondition::MustNotExist,
                    body.clone(),
                    self.now(),
                    &mut unit,
                )
                .await?;
            let mut done = self
                .commit_prepared(
                    WriteAudit::each(who, subtype).with_policy(note.clone()),
                    vec![p],
                    unit,
                )
                .await?;
            let p = done
                .pop()
                .ok_or_else(|| AppError::Keys("empty commit".into()))?;
            Ok(Written {
                created: true,
                current: p.versioned,
            })
        })
        .await
    }

    /// `PUT /Type/id`: update, or create with the given id. `if_match` is the
    /// version from an `If-Match` header.
    pub(crate) async fn update_unaudited(
        &self,
        who: &Principal,
        gate: &mut Gate,
        rtype: ResourceType,
        id: &ResourceId,
        body: Value,
        if_match: Option<VersionId>,
    ) -> Result<Written, AppError> {
        let access = self.permit(who, rtype, Interaction::Update)?;
        self.check_body(rtype, &body)?;
        let owner = key_owner(rtype, id, &body);
        access.allows(&owner)?;
        let old = self.store.current(rtype, id).await?;
        if let Some(old) = &old {
            access.allows(&old.key_owner)?;
        }
        // The change must be allowed on what is there now (a caller cannot
        // rewrite a record they may not touch) and on what it becomes (nor
        // move it out of reach, e.g. by relabelling it).
        if !gate.is_unrestricted()
            && let Some(old) = old.filter(|o| !o.deleted)
        {
            let current = self.open_version(&old).await?;
            self.decide_version(gate, policy::Action::Update, &current)
                .await?;
        }
        self.decide_body(gate, policy::Action::Update, rtype, Some(id), &owner, &body)
            .await?;
        let note = gate.policy_note();
        match body.get("id").and_then(Value::as_str) {
            Some(b) if b == id.as_str() => {}
            Some(_) => {
                return Err(AppError::bad_request(
                    IssueCode::Invalid,
                    "the id in the body does not match the URL",
                ));
            }
            None => {
                return Err(AppError::bad_request(
                    IssueCode::Required,
                    "the body of an update must carry the id",
                ));
            }
        }
        self.check_references(&body, &BTreeSet::new()).await?;
        retry_key_race(|| async {
            let (version, precondition, created) = self.next_version(rtype, id, if_match).await?;
            let subtype = if created { "create" } else { "update" };
            let note = note.clone();
            let mut unit = NewKeys::default();
            let p = self
                .prepare(
                    rtype,
                    id.clone(),
                    version,
                    precondition,
                    body.clone(),
                    self.now(),
                    &mut unit,
                )
                .await?;
            let mut done = self
                .commit_prepared(
                    WriteAudit::each(who, subtype).with_policy(note),
                    vec![p],
                    unit,
                )
                .await?;
            let p = done
                .pop()
                .ok_or_else(|| AppError::Keys("empty commit".into()))?;
            Ok(Written {
                created,
                current: p.versioned,
            })
        })
        .await
    }

    /// The version a write to `id` gets, its precondition and whether it creates.
    pub(crate) async fn next_version(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        if_match: Option<VersionId>,
    ) -> Result<(VersionId, Precondition, bool), AppError> {
        let current = self.store.current(rtype, id).await?;
        match (current, if_match) {
            (Some(c), Some(m)) if c.version == m && !c.deleted => Ok((
                VersionId(c.version.0 + 1),
                Precondition::CurrentVersion(c.version),
                false,
            )),
            (Some(c), Some(_)) if !c.deleted => Err(AppError::PreconditionFailed(format!(
                "If-Match does not match the current version ({})",
                c.version
            ))),
            (_, Some(_)) => Err(AppError::PreconditionFailed(
                "If-Match given but the resource does not exist".into(),
            )),
            (Some(c), None) => Ok((
                VersionId(c.version.0 + 1),
                Precondition::CurrentIs(if c.deleted { None } else { Some(c.version) }),
                c.deleted,
            )),
            (None, None) => Ok((VersionId(1), Precondition::CurrentIs(None), true)),
        }
    }

    /// `DELETE /Type/id`: writes a delete marker; history is kept. Deleting
    /// something absent or already deleted succeeds (idempotent, as the spec allows).
    pub(crate) async fn delete_unaudited(
        &self,
        who: &Principal,
        gate: &mut Gate,
        rtype: ResourceType,
        id: &ResourceId,
    ) -> Result<Option<VersionId>, AppError> {
        let access = self.permit(who, rtype, Interaction::Delete)?;
        let old = self.store.current(rtype, id).await?;
        if let Some(old) = &old {
            access.allows(&old.key_owner)?;
        }
        if !gate.is_unrestricted()
            && let Some(old) = old.filter(|o| !o.deleted)
        {
            let current = self.open_version(&old).await?;
            self.decide_version(gate, policy::Action::Delete, &current)
                .await?;
        }
        let Some(op) = self.delete_op(rtype, id, self.now()).await? else {
            return Ok(None);
        };
        let version = op.version.version;
        self.commit_unit(
            WriteAudit::each(who, "delete").with_policy(gate.policy_note()),
            vec![op],
            &[],
            NewKeys::default(),
        )
        .await?;
        Ok(Some(version))
    }

    pub(crate) async fn delete_op(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        now: Timestamp,
    ) -> Result<Option<WriteOp>, AppError> {
        let Some(current) = self.store.current(rtype, id).await? else {
            return Ok(None);
        };
        if current.deleted {
            return Ok(None);
        }
        let version = VersionId(current.version.0 + 1);
        Ok(Some(WriteOp {
            precondition: Precondition::CurrentVersion(current.version),
            version: StoredVersion {
                rtype,
                id: id.clone(),
                version,
                last_updated: now,
                deleted: true,
                key_owner: current.key_owner,
                ciphertext: Vec::new(),
            },
            index: Vec::new(),
        }))
    }

    /// Decrypts one stored version. A delete marker gives `resource: None`.
    /// Decrypts one stored version to its JSON bytes (`None` for a delete marker).
    async fn open_bytes(&self, sv: &StoredVersion) -> Result<Option<Vec<u8>>, AppError> {
        if sv.deleted {
            return Ok(None);
        }
        let Some(dek) = self.keys.for_read(&sv.key_owner).await? else {
            return Err(AppError::Gone(format!("{}/{} was erased", sv.rtype, sv.id)));
        };
        let aad = crypto::resource_aad(sv.rtype, &sv.id, sv.version);
        let plain = dek.open(&aad, &sv.ciphertext).map_err(|_| {
            tracing::error!(rtype = %sv.rtype, id = %sv.id, version = sv.version.0, "ciphertext failed its integrity check");
            AppError::Integrity(format!("{}/{}/_history/{}", sv.rtype, sv.id, sv.version))
        })?;
        Ok(Some(plain))
    }

    /// Decrypts one stored version. A delete marker gives `resource: None`.
    pub(crate) async fn open_version(&self, sv: &StoredVersion) -> Result<Versioned, AppError> {
        let resource = match self.open_bytes(sv).await? {
            None => None,
            Some(plain) => Some(serde_json::from_slice::<Value>(&plain).map_err(|_| {
                tracing::error!(rtype = %sv.rtype, id = %sv.id, "decrypted resource is not JSON");
                AppError::Integrity(format!("{}/{}", sv.rtype, sv.id))
            })?),
        };
        Ok(Versioned {
            rtype: sv.rtype,
            id: sv.id.clone(),
            version: sv.version,
            last_updated: sv.last_updated,
            resource,
        })
    }

    /// `GET /Type/id` returning the stored JSON bytes as they are (no re-encoding):
    /// the fast path for reads by id.
    pub(crate) async fn read_raw_unaudited(
        &self,
        who: &Principal,
        gate: &mut Gate,
        rtype: ResourceType,
        id: &ResourceId,
    ) -> Result<(Versioned, Vec<u8>, KeyOwner), AppError> {
        let access = self.permit(who, rtype, Interaction::Read)?;
        let sv = self
            .store
            .current(rtype, id)
            .await?
            .ok_or_else(|| not_found(rtype, id))?;
        access.allows(&sv.key_owner)?;
        if sv.deleted {
            return Err(AppError::Gone(format!("{rtype}/{id} is deleted")));
        }
        let bytes = self
            .open_bytes(&sv)
            .await?
            .ok_or_else(|| AppError::Gone(format!("{rtype}/{id} is deleted")))?;
        // The bytes were written by this server from a validated resource; a
        // cheap shape check still guards against returning something else.
        if bytes.first() != Some(&b'{') {
            return Err(AppError::Integrity(format!("{rtype}/{id}")));
        }
        let bytes = if gate.is_unrestricted() {
            bytes
        } else {
            let mut body: Value = serde_json::from_slice(&bytes)
                .map_err(|_| AppError::Integrity(format!("{rtype}/{id}")))?;
            let masks = self
                .decide_body(
                    gate,
                    policy::Action::Read,
                    rtype,
                    Some(id),
                    &sv.key_owner,
                    &body,
                )
                .await?;
            if masks.is_empty() {
                bytes
            } else {
                crate::facts::mask(&mut body, &masks);
                serde_json::to_vec(&body).map_err(|e| AppError::Keys(format!("encode: {e}")))?
            }
        };
        let meta = Versioned {
            rtype,
            id: id.clone(),
            version: sv.version,
            last_updated: sv.last_updated,
            resource: None,
        };
        Ok((meta, bytes, sv.key_owner))
    }

    /// `GET /Type/id`.
    pub(crate) async fn read_unaudited(
        &self,
        who: &Principal,
        gate: &mut Gate,
        rtype: ResourceType,
        id: &ResourceId,
    ) -> Result<Versioned, AppError> {
        let access = self.permit(who, rtype, Interaction::Read)?;
        let sv = self
            .store
            .current(rtype, id)
            .await?
            .ok_or_else(|| not_found(rtype, id))?;
        access.allows(&sv.key_owner)?;
        if sv.deleted {
            return Err(AppError::Gone(format!("{rtype}/{id} is deleted")));
        }
        let mut v = self.open_version(&sv).await?;
        self.read_decided(gate, &mut v).await?;
        Ok(v)
    }

    /// Decides a read of one version and applies the masks it comes with.
    pub(crate) async fn read_decided(
        &self,
        gate: &mut Gate,
        v: &mut Versioned,
    ) -> Result<(), AppError> {
        let masks = self.decide_version(gate, policy::Action::Read, v).await?;
        if let Some(r) = v.resource.as_mut() {
            crate::facts::mask(r, &masks);
        }
        Ok(())
    }

    /// `GET /Type/id/_history/vid`.
    pub(crate) async fn vread_unaudited(
        &self,
        who: &Principal,
        gate: &mut Gate,
        rtype: ResourceType,
        id: &ResourceId,
        version: VersionId,
    ) -> Result<Versioned, AppError> {
        let access = self.permit(who, rtype, Interaction::Read)?;
        let sv = self
            .store
            .version(rtype, id, version)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("{rtype}/{id} has no version {version}")))?;
        access.allows(&sv.key_owner)?;
        if sv.deleted {
            return Err(AppError::Gone(format!(
                "{rtype}/{id} version {version} is a deletion"
            )));
        }
        let mut v = self.open_version(&sv).await?;
        self.read_decided(gate, &mut v).await?;
        Ok(v)
    }

    /// `GET /Type/id/_history`: every version, newest first.
    pub(crate) async fn history_unaudited(
        &self,
        who: &Principal,
        gate: &mut Gate,
        rtype: ResourceType,
        id: &ResourceId,
    ) -> Result<Vec<Versioned>, AppError> {
        let access = self.permit(who, rtype, Interaction::Read)?;
        let versions = self.store.history(rtype, id).await?;
        if versions.is_empty() {
            return Err(not_found(rtype, id));
        }
        for sv in &versions {
            access.allows(&sv.key_owner)?;
        }
        let mut out = Vec::with_capacity(versions.len());
        for sv in &versions {
            // Every version is decided: one the caller may not read fails
            // the whole history (a partial history would mislead).
            let mut v = self.open_version(sv).await?;
            self.read_decided(gate, &mut v).await?;
            out.push(v);
        }
        Ok(out)
    }
}

/// Runs a unit of work again when another writer created the same patient's
/// first data key at the same moment (the retry then uses the stored key).
pub(crate) async fn retry_key_race<T, F, Fut>(mut f: F) -> Result<T, AppError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AppError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(AppError::Store(StoreError::KeyExists)) if attempt < 3 => attempt += 1,
            other => return other,
        }
    }
}

pub(crate) fn not_found(rtype: ResourceType, id: &ResourceId) -> AppError {
    AppError::NotFound(format!("{rtype}/{id} is not known"))
}

pub(crate) fn has_memory_params(rtype: ResourceType) -> bool {
    fhir::search::params_for(rtype)
        .iter()
        .any(|p| matches!(p.strategy, fhir::search::Strategy::Memory))
}

/// A new server-assigned id: 128 random bits as hex (not guessable, carries no PHI).
pub(crate) fn new_id() -> ResourceId {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let s: String = b.iter().map(|x| format!("{x:02x}")).collect();
    // 32 hex characters always satisfy the id rule.
    ResourceId::new(s).unwrap_or_else(|_| fallback_id())
}

fn fallback_id() -> ResourceId {
    ResourceId::new("x").unwrap_or_else(|_| fallback_id())
}

/// Which data key seals a resource: the patient's own key when the resource is
/// in exactly one patient compartment, the organisation's key otherwise.
pub(crate) fn key_owner(rtype: ResourceType, id: &ResourceId, body: &Value) -> KeyOwner {
    if rtype == ResourceType::Patient {
        return KeyOwner::Patient(PatientId(id.clone()));
    }
    let mut patients = fhir::patient_compartment(rtype, body);
    patients.sort();
    patients.dedup();
    match patients.as_slice() {
        [only] => KeyOwner::Patient(PatientId(only.clone())),
        _ => KeyOwner::Organisation,
    }
}
