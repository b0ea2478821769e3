//! `POST /` with a Bundle: `transaction` (all or nothing) and `batch` (each on its own).

use std::collections::{BTreeMap, BTreeSet};

use auth::scope::Interaction;
use fhir::IssueCode;
use model::{ResourceId, ResourceType, VersionId};
use serde_json::{Value, json};
use store::Precondition;

use crate::error::issue;
use crate::records::new_id;
use crate::{AppError, Principal, Versioned, Vigil};

/// What one entry asks for.
enum Action {
    Create {
        rtype: ResourceType,
        resource: Value,
    },
    Update {
        rtype: ResourceType,
        id: ResourceId,
        resource: Value,
        if_match: Option<VersionId>,
    },
    Delete {
        rtype: ResourceType,
        id: ResourceId,
    },
    Read {
        url: String,
    },
}

struct Entry {
    index: usize,
    full_url: Option<String>,
    action: Action,
}

fn at(index: usize, err: AppError) -> AppError {
    let prefix = format!("Bundle.entry[{index}]");
    let rewrite = |issues: Vec<fhir::Issue>| {
        issues
            .into_iter()
            .map(|mut i| {
                i.diagnostics = format!("entry {index}: {}", i.diagnostics);
                if i.expression.is_empty() {
                    i.expression.push(prefix.clone());
                } else {
                    i.expression = i
                        .expression
                        .iter()
                        .map(|e| format!("{prefix}.resource.{e}"))
                        .collect();
                }
                i
            })
            .collect()
    };
    match err {
        AppError::BadRequest(i) => AppError::BadRequest(rewrite(i)),
        AppError::Unprocessable(i) => AppError::Unprocessable(rewrite(i)),
        AppError::NotFound(m) => AppError::NotFound(format!("entry {index}: {m}")),
        AppError::Conflict(m) => AppError::Conflict(format!("entry {index}: {m}")),
        AppError::PreconditionFailed(m) => {
            AppError::PreconditionFailed(format!("entry {index}: {m}"))
        }
        AppError::Gone(m) => AppError::Gone(format!("entry {index}: {m}")),
        other => other,
    }
}

fn bad(index: usize, msg: &str) -> AppError {
    at(
        index,
        AppError::bad_request(IssueCode::Invalid, msg.to_owned()),
    )
}

fn parse_if_match(s: &str) -> Option<VersionId> {
    let t = s.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    let t = t.trim_matches('"');
    t.parse::<u64>().ok().map(VersionId)
}

fn parse_entry(index: usize, e: &Value) -> Result<Entry, AppError> {
    let request = e
        .get("request")
        .ok_or_else(|| bad(index, "entry.request is required in a transaction or batch"))?;
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(index, "entry.request.method is required"))?;
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(index, "entry.request.url is required"))?;
    for unsupported in ["ifNoneMatch", "ifModifiedSince", "ifNoneExist"] {
        if request.get(unsupported).is_some() {
            return Err(at(
                index,
                AppError::bad_request(
                    IssueCode::NotSupported,
                    format!(
                        "entry.request.{unsupported} (conditional operations) is not supported"
                    ),
                ),
            ));
        }
    }
    let if_match = match request.get("ifMatch").and_then(Value::as_str) {
        Some(s) => Some(
            parse_if_match(s)
                .ok_or_else(|| bad(index, "entry.request.ifMatch must be a version ETag"))?,
        ),
        None => None,
    };
    let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_owned);
    let resource = e.get("resource").cloned();
    let path = url.trim_start_matches('/');
    if path.contains('?') && method != "GET" {
        return Err(at(
            index,
            AppError::bad_request(
                IssueCode::NotSupported,
                "conditional update and delete are not supported",
            ),
        ));
    }
    let parts: Vec<&str> = path.split('/').collect();
    let rtype_of = |s: &str| {
        ResourceType::parse(s).ok_or_else(|| {
            at(
                index,
                AppError::bad_request(
                    IssueCode::NotSupported,
                    "entry.request.url names a resource type this server does not serve",
                ),
            )
        })
    };
    let id_of =
        |s: &str| ResourceId::new(s).map_err(|_| bad(index, "entry.request.url has an invalid id"));
    let action = match (method, parts.as_slice()) {
        ("POST", [t]) => Action::Create {
            rtype: rtype_of(t)?,
            resource: resource.ok_or_else(|| bad(index, "entry.resource is required for POST"))?,
        },
        ("PUT", [t, id]) => Action::Update {
            rtype: rtype_of(t)?,
            id: id_of(id)?,
            resource: resource.ok_or_else(|| bad(index, "entry.resource is required for PUT"))?,
            if_match,
        },
        ("DELETE", [t, id]) => Action::Delete {
            rtype: rtype_of(t)?,
            id: id_of(id)?,
        },
        ("GET", _) => Action::Read {
            url: path.to_owned(),
        },
        ("PATCH", _) => {
            return Err(at(
                index,
                AppError::bad_request(IssueCode::NotSupported, "PATCH is not supported"),
            ));
        }
        _ => {
            return Err(bad(
                index,
                "entry.request method and url do not form a supported interaction",
            ));
        }
    };
    Ok(Entry {
        index,
        full_url,
        action,
    })
}

fn response_for(v: &Versioned, status: &str) -> Value {
    let mut e = json!({
        "response": {
            "status": status,
            "location": format!("{}/{}/_history/{}", v.rtype, v.id, v.version),
            "etag": crate::json::etag(v),
            "lastModified": v.last_updated.to_fhir_instant(),
        }
    });
    if let (Some(obj), Some(r)) = (e.as_object_mut(), &v.resource) {
        obj.insert("resource".into(), r.clone());
    }
    e
}

fn outcome_entry(err: &AppError) -> Value {
    json!({"response": {"status": err.status().to_string(), "outcome": fhir::operation_outcome(&err.issues())}})
}

impl Vigil {
    /// Processes a `transaction` or `batch` Bundle and returns the response Bundle.
    pub async fn bundle(
        &self,
        who: &Principal,
        bundle: Value,
        base: &str,
    ) -> Result<Value, AppError> {
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(AppError::bad_request(
                IssueCode::Invalid,
                "POST to the base URL takes a Bundle",
            ));
        }
        let limits = fhir::Limits {
            max_string_len: self.config.limits.max_string_len,
            ..fhir::Limits::default()
        };
        // The Bundle itself must be valid R4 (its entries' resources are checked one by one).
        let kind = bundle
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if kind != "transaction" && kind != "batch" {
            return Err(AppError::bad_request(
                IssueCode::NotSupported,
                "only transaction and batch Bundles can be posted",
            ));
        }
        let entries = match bundle.get("entry") {
            None => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => {
                return Err(AppError::bad_request(
                    IssueCode::Structure,
                    "Bundle.entry must be an array",
                ));
            }
        };
        if entries.len() > self.config.limits.max_bundle_entries {
            return Err(AppError::TooLarge(format!(
                "the Bundle has more than {} entries",
                self.config.limits.max_bundle_entries
            )));
        }
        let mut shell = bundle.clone();
        if let Some(obj) = shell.as_object_mut() {
            obj.remove("entry");
        }
        fhir::validate(&shell, &limits).map_err(AppError::BadRequest)?;
        if kind == "transaction" {
            match self.transaction(who, &entries, base).await {
                Ok(v) => Ok(v),
                // A refused or failed transaction wrote nothing, so no entry
                // went with a commit: it is recorded here, with its outcome.
                Err(e) => {
                    let ev = crate::trail::Event::new(
                        crate::trail::Category::Rest,
                        "transaction",
                        crate::trail::Action::E,
                    );
                    self.audit(who, ev.failed(&e)).await?;
                    Err(e)
                }
            }
        } else {
            Ok(self.batch(who, &entries, base).await)
        }
    }

    async fn transaction(
        &self,
        who: &Principal,
        raw: &[Value],
        base: &str,
    ) -> Result<Value, AppError> {
        let mut entries = Vec::with_capacity(raw.len());
        for (i, e) in raw.iter().enumerate() {
            entries.push(parse_entry(i, e)?);
        }
        // Assign ids to creates and map their fullUrls to local references.
        let mut ids: BTreeMap<usize, ResourceId> = BTreeMap::new();
        let mut rewrite: BTreeMap<String, String> = BTreeMap::new();
        let mut pending: BTreeSet<(ResourceType, ResourceId)> = BTreeSet::new();
        for e in &entries {
            match &e.action {
                Action::Create { rtype, .. } => {
                    let id = new_id();
                    if let Some(f) = &e.full_url {
                        rewrite.insert(f.clone(), format!("{rtype}/{id}"));
                    }
                    pending.insert((*rtype, id.clone()));
                    ids.insert(e.index, id);
                }
                Action::Update { rtype, id, .. } => {
                    if !pending.insert((*rtype, id.clone())) {
                        return Err(bad(
                            e.index,
                            "the same resource appears twice in the transaction",
                        ));
                    }
                    if let Some(f) = &e.full_url {
                        rewrite.insert(f.clone(), format!("{rtype}/{id}"));
                    }
                }
                Action::Delete { rtype, id } => {
                    if pending.contains(&(*rtype, id.clone())) {
                        return Err(bad(
                            e.index,
                            "the same resource is written and deleted in one transaction",
                        ));
                    }
                }
                Action::Read { .. } => {}
            }
        }
        let now = self.now();
        let mut unit = crate::keys::NewKeys::default();
        let mut prepared = Vec::new();
        let mut deletes = Vec::new();
        // Every entry passes the scope ceiling and the access policy, as the
        // same interaction would on its own.
        let mut gate = self.policy_gate(who)?;
        // FHIR's processing order: DELETE, POST, PUT, then GET.
        for e in entries.iter_mut() {
            let Action::Delete { rtype, id } = &e.action else {
                continue;
            };
            self.entry_allowed(who, &mut gate, *rtype, Some(id), None, Interaction::Delete)
                .await
                .map_err(|err| at(e.index, err))?;
            let op = self
                .delete_op(*rtype, id, now)
                .await
                .map_err(|err| at(e.index, err))?;
            if let Some(op) = op {
                deletes.push((e.index, op));
            }
        }
        for pass in 0..2 {
            for e in entries.iter_mut() {
                let index = e.index;
                match &mut e.action {
                    Action::Create { rtype, resource } if pass == 0 => {
                        fhir::rewrite_references(resource, &mut |r| rewrite.get(r).cloned());
                        self.check_body(*rtype, resource)
                            .map_err(|err| at(index, err))?;
                        self.check_references(resource, &pending)
                            .await
                            .map_err(|err| at(index, err))?;
                        let id = ids
                            .get(&index)
                            .cloned()
                            .ok_or_else(|| bad(index, "internal id assignment"))?;
                        self.entry_allowed(
                            who,
                            &mut gate,
                            *rtype,
                            Some(&id),
                            Some(resource),
                            Interaction::Create,
                        )
                        .await
                        .map_err(|err| at(index, err))?;
                        let p = self
                            .prepare(
                                *rtype,
                                id,
                                VersionId(1),
                                Precondition::MustNotExist,
                                resource.clone(),
                                now,
                                &mut unit,
                            )
                            .await
                            .map_err(|err| at(index, err))?;
                        prepared.push((index, p));
                    }
                    Action::Update {
                        rtype,
                        id,
                        resource,
                        if_match,
                    } if pass == 1 => {
                        fhir::rewrite_references(resource, &mut |r| rewrite.get(r).cloned());
                        self.check_body(*rtype, resource)
                            .map_err(|err| at(index, err))?;
                        if resource.get("id").and_then(Value::as_str) != Some(id.as_str()) {
                            return Err(bad(
                                index,
                                "the resource id does not match entry.request.url",
                            ));
                        }
                        self.check_references(resource, &pending)
                            .await
                            .map_err(|err| at(index, err))?;
                        self.entry_allowed(
                            who,
                            &mut gate,
                            *rtype,
                            Some(id),
                            Some(resource),
                            Interaction::Update,
                        )
                        .await
                        .map_err(|err| at(index, err))?;
                        let (version, pre, _) = self
                            .next_version(*rtype, id, *if_match)
                            .await
                            .map_err(|err| at(index, err))?;
                        let p = self
                            .prepare(
                                *rtype,
                                id.clone(),
                                version,
                                pre,
                                resource.clone(),
                                now,
                                &mut unit,
                            )
                            .await
                            .map_err(|err| at(index, err))?;
                        prepared.push((index, p));
                    }
                    _ => {}
                }
            }
        }
        let delete_ops = deletes.iter().map(|(_, op)| op.clone()).collect();
        let (indexes, written): (Vec<usize>, Vec<_>) = prepared.into_iter().unzip();
        self.commit_unit(
            crate::audited::WriteAudit::each(who, "transaction").with_policy(gate.policy_note()),
            delete_ops,
            &written,
            unit,
        )
        .await?;
        let mut responses: BTreeMap<usize, Value> = BTreeMap::new();
        for (index, p) in indexes.into_iter().zip(written) {
            let status = if p.created { "201 Created" } else { "200 OK" };
            responses.insert(index, response_for(&p.versioned, status));
        }
        for (index, op) in deletes {
            responses.insert(index, json!({"response": {"status": "204 No Content", "etag": format!("W/\"{}\"", op.version.version)}}));
        }
        for e in &entries {
            match &e.action {
                Action::Read { url } => {
                    // Reads run after the writes committed (FHIR's order), so a
                    // failed read is reported in its entry, not by undoing the
                    // transaction's writes.
                    let entry = match self.get_url(who, url, base).await {
                        Ok(v) => json!({"resource": v, "response": {"status": "200 OK"}}),
                        Err(err) => outcome_entry(&at(e.index, err)),
                    };
                    responses.insert(e.index, entry);
                }
                Action::Delete { .. } => {
                    responses
                        .entry(e.index)
                        .or_insert_with(|| json!({"response": {"status": "204 No Content"}}));
                }
                _ => {}
            }
        }
        Ok(json!({
            "resourceType": "Bundle",
            "id": new_id().to_string(),
            "type": "transaction-response",
            "entry": responses.into_values().collect::<Vec<_>>(),
        }))
    }

    /// The ceiling and the policy for one transaction entry: on the stored
    /// version (update, delete) and on the new body (create, update).
    async fn entry_allowed(
        &self,
        who: &Principal,
        gate: &mut crate::decide::Gate,
        rtype: ResourceType,
        id: Option<&ResourceId>,
        body: Option<&Value>,
        interaction: Interaction,
    ) -> Result<(), AppError> {
        let access = self.permit(who, rtype, interaction)?;
        let action = match interaction {
            Interaction::Create => policy::Action::Create,
            Interaction::Update => policy::Action::Update,
            Interaction::Delete => policy::Action::Delete,
            Interaction::Read => policy::Action::Read,
            Interaction::Search => policy::Action::Search,
        };
        if let Some(id) = id
            && interaction != Interaction::Create
            && let Some(old) = self.store.current(rtype, id).await?
        {
            access.allows(&old.key_owner)?;
            if !old.deleted && !gate.is_unrestricted() {
                let current = self.open_version(&old).await?;
                self.decide_version(gate, action, &current).await?;
            }
        }
        if let (Some(body), Some(id)) = (body, id) {
            let owner = crate::records::key_owner(rtype, id, body);
            access.allows(&owner)?;
            self.decide_body(gate, action, rtype, Some(id), &owner, body)
                .await?;
        }
        Ok(())
    }

    async fn batch(&self, who: &Principal, raw: &[Value], base: &str) -> Value {
        let mut out = Vec::with_capacity(raw.len());
        for (i, e) in raw.iter().enumerate() {
            let result = match parse_entry(i, e) {
                Err(err) => Err(err),
                Ok(entry) => match entry.action {
                    Action::Create { rtype, resource } => self
                        .create(who, rtype, resource)
                        .await
                        .map(|w| response_for(&w.current, "201 Created")),
                    Action::Update {
                        rtype,
                        id,
                        resource,
                        if_match,
                    } => self
                        .update(who, rtype, &id, resource, if_match)
                        .await
                        .map(|w| {
                            response_for(
                                &w.current,
                                if w.created { "201 Created" } else { "200 OK" },
                            )
                        }),
                    Action::Delete { rtype, id } => self
                        .delete(who, rtype, &id)
                        .await
                        .map(|_| json!({"response": {"status": "204 No Content"}})),
                    Action::Read { url } => self
                        .get_url(who, &url, base)
                        .await
                        .map(|v| json!({"resource": v, "response": {"status": "200 OK"}})),
                },
            };
            out.push(match result {
                Ok(v) => v,
                Err(err) => {
                    if err.status() >= 500 {
                        tracing::error!(entry = i, error = %err, "batch entry failed");
                    }
                    outcome_entry(&err)
                }
            });
        }
        json!({"resourceType": "Bundle", "id": new_id().to_string(), "type": "batch-response", "entry": out})
    }

    /// A GET inside a Bundle: read, vread or search, by relative URL.
    async fn get_url(&self, who: &Principal, url: &str, base: &str) -> Result<Value, AppError> {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let unsupported = || {
            AppError::BadRequest(vec![issue(
                IssueCode::NotSupported,
                "this GET is not supported inside a Bundle",
            )])
        };
        let rtype = parts
            .first()
            .and_then(|t| ResourceType::parse(t))
            .ok_or_else(unsupported)?;
        let id = |s: &str| {
            ResourceId::new(s).map_err(|_| AppError::bad_request(IssueCode::Invalid, "invalid id"))
        };
        match parts.as_slice() {
            [_] => {
                let pairs = parse_query_string(query);
                let page = self.search(who, rtype, &pairs).await?;
                Ok(crate::json::searchset(
                    base,
                    &page,
                    &pairs,
                    &self.now().to_fhir_instant(),
                ))
            }
            [_, i] => self
                .read(who, rtype, &id(i)?)
                .await
                .map(|v| v.resource.unwrap_or(Value::Null)),
            [_, i, "_history"] => {
                let versions = self.history(who, rtype, &id(i)?).await?;
                Ok(crate::json::history(
                    base,
                    &versions,
                    &self.now().to_fhir_instant(),
                ))
            }
            [_, i, "_history", v] => {
                let v = v
                    .parse::<u64>()
                    .map_err(|_| AppError::bad_request(IssueCode::Invalid, "invalid version"))?;
                self.vread(who, rtype, &id(i)?, VersionId(v))
                    .await
                    .map(|v| v.resource.unwrap_or(Value::Null))
            }
            _ => Err(unsupported()),
        }
    }
}

/// Splits and percent-decodes `a=1&b=2`.
pub fn parse_query_string(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(x) = hex {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
