//! Reading the audit trail: the privacy officer's search, a patient's "who
//! accessed my record", checkpoints, tiles and proofs, and the export feed.
//! Reading the log is not itself an access to patient data, but the
//! privacy officer's searches are recorded (they reveal who looked at whom).

use std::collections::HashMap;

use audit::tiles::{TileError, TileId};
use audit::{Hash, ProveError, TileHashes};
use model::Timestamp;
use store::{AccountId, AuditQuery, Role};

use crate::trail::{Action, Category, Entry, Event};
use crate::{AppError, Principal, Vigil};

/// Most entries one audit search returns.
pub const MAX_AUDIT_PAGE: usize = 500;

/// The privacy officer's filter.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub patient: Option<String>,
    /// An account id.
    pub agent: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub subtype: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub before: Option<u64>,
    pub limit: usize,
}

/// One line of a patient's access log.
#[derive(Debug, Clone)]
pub struct AccessLine {
    pub index: u64,
    pub when: Timestamp,
    /// The user name (and role) of who accessed, or the app or operator.
    pub who: String,
    pub role: Option<String>,
    pub what: String,
    pub action: Action,
    pub purpose: Option<String>,
    pub succeeded: bool,
    /// An access made under a break-the-glass grant (and allowed).
    pub break_glass: bool,
    /// The break-the-glass grants it was made under.
    pub grants: Vec<String>,
    /// Why it happened, as privacy monitoring explains it (once a pass has
    /// seen it).
    pub explanation: Option<crate::monitoring::Explained>,
}

/// Tiles read on demand for one proof.
struct Fetched(HashMap<TileId, Vec<u8>>);

impl Vigil {
    fn require_privacy_officer(&self, who: &Principal) -> Result<(), AppError> {
        match who {
            Principal::Operator => Ok(()),
            Principal::User(c)
                if matches!(c.role, Some(Role::PrivacyOfficer))
                    || c.scopes.permits(
                        auth::scope::Context::System,
                        "AuditEvent",
                        auth::scope::Interaction::Search,
                    ) =>
            {
                Ok(())
            }
            _ => Err(AppError::Forbidden(
                "the audit trail is for privacy officers".into(),
            )),
        }
    }

    async fn entries_by_index(&self, indexes: &[u64]) -> Result<Vec<(u64, Entry)>, AppError> {
        let mut out = Vec::with_capacity(indexes.len());
        for &i in indexes {
            let rows = self.store.audit_entries(i, 1).await?;
            let Some((idx, bytes)) = rows.into_iter().next().filter(|(idx, _)| *idx == i) else {
                return Err(AppError::Integrity(format!("audit entry {i} is missing")));
            };
            out.push((idx, self.audit.open(&bytes)?));
        }
        Ok(out)
    }

    /// Searches the trail (privacy officers; the search itself is recorded).
    pub async fn audit_search(
        &self,
        who: &Principal,
        f: &AuditFilter,
    ) -> Result<Vec<(u64, Entry)>, AppError> {
        self.require_privacy_officer(who)?;
        let mut clauses = Vec::new();
        let mut add = |param: &str, v: &Option<String>| {
            if let Some(v) = v {
                clauses.push((param.to_owned(), vec![self.audit_term(param, v)]));
            }
        };
        add("patient", &f.patient);
        add("agent", &f.agent);
        let limit = f.limit.clamp(1, MAX_AUDIT_PAGE);
        // Action, outcome and subtype are checked after decryption (they
        // are not indexed): read pages until the page is full.
        let keep = |e: &Entry| {
            f.action.as_deref().is_none_or(|a| e.action.as_str() == a)
                && f.outcome
                    .as_deref()
                    .is_none_or(|o| e.outcome.to_string() == o)
                && f.subtype.as_deref().is_none_or(|s| e.subtype == s)
        };
        let mut found = Vec::new();
        let mut before = f.before;
        for _ in 0..20 {
            let q = AuditQuery {
                clauses: clauses.clone(),
                recorded_from: f.from,
                recorded_to: f.to,
                before,
                limit: MAX_AUDIT_PAGE,
            };
            let indexes = self.store.find_audit(&q).await?;
            let Some(&last) = indexes.last() else { break };
            before = Some(last);
            for (i, e) in self.entries_by_index(&indexes).await? {
                if keep(&e) && found.len() < limit {
                    found.push((i, e));
                }
            }
            if found.len() >= limit || indexes.len() < MAX_AUDIT_PAGE {
                break;
            }
        }
        let mut ev = Event::new(Category::Administration, "audit-search", Action::E);
        ev.patients = f.patient.iter().cloned().collect();
        ev.account = f.agent.clone();
        self.audit(who, ev).await?;
        Ok(found)
    }

    /// "Who accessed my record": the accesses to the signed-in patient's
    /// data, newest first (their own included). Names come from accounts;
    /// nothing else about other patients is shown.
    pub async fn my_access_log(
        &self,
        who: &Principal,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AccessLine>, AppError> {
        let Principal::User(c) = who else {
            return Err(AppError::Forbidden("for patients".into()));
        };
        let (Some(Role::Patient), Some(patient)) = (c.role, c.patient.as_ref()) else {
            return Err(AppError::Forbidden(
                "the access log is for patient accounts".into(),
            ));
        };
        let q = AuditQuery {
            clauses: vec![(
                "patient".into(),
                vec![self.audit_term("patient", patient.as_str())],
            )],
            before,
            limit: limit.clamp(1, MAX_AUDIT_PAGE),
            ..AuditQuery::default()
        };
        let indexes = self.store.find_audit(&q).await?;
        let explained = self.access_explanations(&indexes).await?;
        let mut names: HashMap<String, (String, Option<String>)> = HashMap::new();
        let mut out = Vec::new();
        for (index, e) in self.entries_by_index(&indexes).await? {
            let who = match (&e.agent.account, &e.agent.client) {
                (Some(a), _) => {
                    if !names.contains_key(a) {
                        let shown = match AccountId::new(a.clone()) {
                            Some(id) => match self.store.account(&id).await? {
                                Some(acc) => {
                                    let name = self.display_name(&acc).await?;
                                    (
                                        name.unwrap_or(acc.username),
                                        Some(acc.role.as_str().to_owned()),
                                    )
                                }
                                None => ("a former account".to_owned(), None),
                            },
                            None => ("an unknown account".to_owned(), None),
                        };
                        names.insert(a.clone(), shown);
                    }
                    names.get(a).cloned().unwrap_or_default()
                }
                (None, Some(client)) => (format!("the app {client}"), None),
                (None, None) => ("an operator of this server".to_owned(), None),
            };
            out.push(AccessLine {
                index,
                when: Timestamp(e.recorded),
                who: who.0,
                role: who.1.or(e.agent.role.clone()),
                what: describe(&e),
                action: e.action,
                purpose: e.agent.purpose.clone(),
                succeeded: e.outcome == 0,
                break_glass: e.outcome == 0
                    && e.policy.as_ref().is_some_and(|n| !n.grants.is_empty()),
                grants: e
                    .policy
                    .as_ref()
                    .map(|n| n.grants.clone())
                    .unwrap_or_default(),
                explanation: explained
                    .get(&index)
                    .and_then(|l| l.iter().find(|x| x.patient == patient.as_str()).cloned()),
            });
        }
        Ok(out)
    }

    /// The latest signed checkpoint (empty log: none yet).
    pub async fn audit_checkpoint(&self) -> Result<Option<String>, AppError> {
        Ok(self.store.audit_head().await?.checkpoint)
    }

    /// The public keys that verify the log's checkpoints (C2SP vkey strings).
    pub fn audit_verifier_keys(&self) -> Vec<String> {
        self.audit.verifiers().iter().map(|v| v.to_vkey()).collect()
    }

    /// A stored tile, cut to `width` hashes (a partial tile of an older size).
    pub async fn audit_tile(
        &self,
        level: u8,
        index: u64,
        width: u16,
    ) -> Result<Option<Vec<u8>>, AppError> {
        let Some(t) = self.store.audit_tile(level, index).await? else {
            return Ok(None);
        };
        if t.width < width {
            return Ok(None);
        }
        Ok(t.data.get(..usize::from(width) * 32).map(<[u8]>::to_vec))
    }

    /// The entries `[from, from + count)`, as stored (sealed): what a
    /// verifier hashes.
    pub async fn audit_raw_entries(
        &self,
        from: u64,
        count: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, AppError> {
        Ok(self.store.audit_entries(from, count.min(10_000)).await?)
    }

    /// Opens stored entry bytes (operators' export and tools).
    pub fn audit_open(&self, bytes: &[u8]) -> Result<Entry, AppError> {
        self.audit.open(bytes)
    }

    /// Persisted checkpoints from `from_size` on.
    pub async fn audit_checkpoints(
        &self,
        from_size: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, AppError> {
        Ok(self.store.audit_checkpoints(from_size, limit).await?)
    }

    /// Runs `prove` over tiles fetched on demand (a proof touches O(log n)
    /// tiles): from the process's tile cache when there, else from the store
    /// (and then kept).
    async fn with_tiles<T>(
        &self,
        size: u64,
        prove: impl Fn(
            &TileHashes<'_, HashMap<TileId, Vec<u8>>>,
        ) -> Result<T, ProveError<TileError<audit::tiles::MissingTile>>>,
    ) -> Result<T, AppError> {
        let cache = self.audit_tile_cache();
        let mut fetched = Fetched(HashMap::new());
        let mut pyramids = HashMap::new();
        for _ in 0..64 {
            let source = TileHashes::with_pyramids(&fetched.0, size, std::mem::take(&mut pyramids));
            let proved = prove(&source);
            pyramids = source.into_pyramids();
            match proved {
                Ok(v) => {
                    for ((level, index), p) in pyramids {
                        cache.put_built(level, index, p);
                    }
                    return Ok(v);
                }
                Err(ProveError::Source(TileError::Read { tile, .. })) => {
                    if let Some(p) = cache.get(tile.level, tile.index, tile.width) {
                        pyramids.insert((tile.level, tile.index), p);
                        continue;
                    }
                    let t = self
                        .store
                        .audit_tile(tile.level, tile.index)
                        .await?
                        .ok_or_else(|| {
                            AppError::Integrity(format!("audit tile {tile:?} is missing"))
                        })?;
                    fetched.0.insert(
                        TileId {
                            level: t.level,
                            index: t.index,
                            width: t.width,
                        },
                        t.data,
                    );
                }
                Err(ProveError::IndexOutOfRange { .. } | ProveError::SizesOutOfOrder { .. }) => {
                    return Err(AppError::bad_request(
                        fhir::IssueCode::Invalid,
                        "no such index or sizes in this log",
                    ));
                }
                Err(e) => return Err(AppError::Integrity(format!("audit proof: {e}"))),
            }
        }
        Err(AppError::Integrity(
            "audit proof needed too many tiles".into(),
        ))
    }

    /// An inclusion proof of entry `index` in the tree of `size` entries.
    pub async fn audit_inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, AppError> {
        self.check_size(size).await?;
        self.with_tiles(size, |s| audit::inclusion_proof(s, index, size))
            .await
    }

    /// A consistency proof between the trees of `old` and `new` entries.
    pub async fn audit_consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AppError> {
        self.check_size(new).await?;
        self.with_tiles(new, |s| audit::consistency_proof(s, old, new))
            .await
    }

    async fn check_size(&self, size: u64) -> Result<(), AppError> {
        // A size this process has seen committed needs no read of the head.
        if size == 0
            || (size > self.audit_committed() && size > self.store.audit_head().await?.size)
        {
            return Err(AppError::bad_request(
                fhir::IssueCode::Invalid,
                "the log has no tree of that size",
            ));
        }
        Ok(())
    }
}

/// What an entry did, in plain words (ids only).
pub(crate) fn describe(e: &Entry) -> String {
    let verb = match (e.category, e.subtype.as_str()) {
        (Category::Rest, "read" | "vread") => "viewed",
        (Category::Rest, "history-instance") => "viewed the history of",
        (Category::Rest, "search-type") => "searched and saw",
        (Category::Rest, "create") => "added",
        (Category::Rest, "update") => "changed",
        (Category::Rest, "delete") => "deleted",
        (Category::Rest, "transaction") => "changed",
        (Category::Rest, "import") => "imported",
        (Category::Rest, "export") => "exported",
        (Category::Administration, "patient-erase") => "erased",
        (Category::Administration, "audit-search") => "searched the access log for",
        _ => "accessed",
    };
    let what: Vec<&str> = e
        .resources
        .iter()
        .map(|r| r.split('/').next().unwrap_or(""))
        .collect();
    let mut kinds: Vec<&str> = what.clone();
    kinds.sort_unstable();
    kinds.dedup();
    if kinds.is_empty() {
        format!("{verb} your record")
    } else {
        format!("{verb} {}", kinds.join(", "))
    }
}
