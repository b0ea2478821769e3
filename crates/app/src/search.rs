//! Search over encrypted data.
//!
//! 1. Each clause picks its index (see ARCHITECTURE.md, "Search on encrypted data"):
//!    keyed blind tokens in the store, day buckets for dates, the in-memory name
//!    index, or none (filtered after decryption).
//! 2. The store returns the candidate ids (bounded by the search window).
//! 3. Candidates are decrypted and every clause is checked exactly, then sorted
//!    and paged. Totals and links are computed from that exact list.

use std::collections::{BTreeMap, BTreeSet};

use fhir::IssueCode;
use fhir::search::{Clause, Lookup, SearchRequest, Strategy};
use model::{ResourceId, ResourceType};
use serde_json::Value;
use store::{IndexClause, IndexQuery};

use crate::access::Access;
use crate::decide::Gate;
use crate::{AppError, Principal, Versioned, Vigil};

/// One page of search results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub rtype: ResourceType,
    /// The page's matches (search mode `match`).
    pub matches: Vec<Versioned>,
    /// Resources added by `_include` / `_revinclude` (search mode `include`).
    pub included: Vec<Versioned>,
    /// The number of matches, when `_total=accurate` (or `_summary=count`).
    pub total: Option<usize>,
    pub offset: usize,
    pub count: usize,
    /// Offset of the next page, if there is one.
    pub next_offset: Option<usize>,
    pub summary_count: bool,
}

/// Candidates fetched and decrypted per round trip.
const FETCH_CHUNK: usize = 500;

impl Vigil {
    /// `GET /Type?params`.
    pub(crate) async fn search_unaudited(
        &self,
        who: &Principal,
        gate: &mut Gate,
        rtype: ResourceType,
        pairs: &[(String, String)],
    ) -> Result<SearchPage, AppError> {
        let req = fhir::search::parse_query(rtype, pairs).map_err(AppError::BadRequest)?;
        self.run_search(who, gate, rtype, &req).await
    }

    /// Searches in three steps that never let a hidden resource show: the
    /// candidates are narrowed to the compartments the caller has
    /// relationships with (`reach`), every match (and every resource a chain
    /// or `_has` looks through) is decided by the policy, and only then are
    /// totals, pages, links and includes computed — includes being decided
    /// one by one too.
    async fn run_search(
        &self,
        who: &Principal,
        gate: &mut Gate,
        rtype: ResourceType,
        req: &SearchRequest,
    ) -> Result<SearchPage, AppError> {
        let access = self.permit(who, rtype, auth::scope::Interaction::Search)?;
        let limits = &self.config.limits;
        let count = req
            .count
            .unwrap_or(limits.default_count)
            .min(limits.max_count);
        if req.clauses.is_empty()
            && req.sort.is_empty()
            && access == Access::All
            && gate.is_unrestricted()
        {
            return self.list_by_id(rtype, req, count).await;
        }
        let owners = self.reach(gate, rtype).await?;
        let mut matched = self
            .matching(rtype, &req.clauses, &access, gate, owners)
            .await?;
        sort(&mut matched, req);
        let total = matched.len();
        let offset = req.offset.min(total);
        let end = offset.saturating_add(count).min(total);
        let page: Vec<Versioned> = if req.summary_count {
            Vec::new()
        } else {
            matched.get(offset..end).unwrap_or_default().to_vec()
        };
        let included = if req.summary_count {
            Vec::new()
        } else {
            let mut kept = Vec::new();
            for mut v in self.includes(rtype, req, &page).await? {
                if access.allows_versioned(&v)
                    && self.allowed(gate, policy::Action::Search, &mut v).await?
                {
                    kept.push(v);
                }
            }
            kept
        };
        let wants_total =
            req.summary_count || matches!(req.total, fhir::search::TotalMode::Accurate);
        Ok(SearchPage {
            rtype,
            matches: page,
            included,
            total: wants_total.then_some(total),
            offset,
            count,
            next_offset: (!req.summary_count && end < total).then_some(end),
            summary_count: req.summary_count,
        })
    }

    /// A search without criteria or sort: pages through the type in id order,
    /// decrypting only the page (so listing a large type is not refused).
    async fn list_by_id(
        &self,
        rtype: ResourceType,
        req: &SearchRequest,
        count: usize,
    ) -> Result<SearchPage, AppError> {
        let end = req.offset.saturating_add(count);
        let query = IndexQuery {
            limit: end.saturating_add(1),
            ..IndexQuery::default()
        };
        let ids = self.store.find(rtype, &query).await?;
        let page_ids = ids
            .get(req.offset.min(ids.len())..end.min(ids.len()))
            .unwrap_or_default();
        let mut page = Vec::with_capacity(page_ids.len());
        if !req.summary_count {
            let mut stored = self.store.current_many(rtype, page_ids).await?;
            stored.sort_by(|a, b| a.id.cmp(&b.id));
            for sv in &stored {
                page.push(self.open_version(sv).await?);
            }
        }
        let wants_total =
            req.summary_count || matches!(req.total, fhir::search::TotalMode::Accurate);
        let total = if wants_total {
            // Ids only: counting does not decrypt anything.
            let all = IndexQuery {
                limit: usize::MAX,
                ..IndexQuery::default()
            };
            Some(self.store.find(rtype, &all).await?.len())
        } else {
            None
        };
        let included = if req.summary_count {
            Vec::new()
        } else {
            self.includes(rtype, req, &page).await?
        };
        Ok(SearchPage {
            rtype,
            matches: page,
            included,
            total,
            offset: req.offset.min(ids.len()),
            count,
            next_offset: (!req.summary_count && ids.len() > end).then_some(end),
            summary_count: req.summary_count,
        })
    }

    /// Every resource of `rtype` matching all clauses that the gate allows,
    /// decrypted (and masked), in id order. `owners` narrows the candidates
    /// to the key owners the caller may reach (`None`: all).
    pub(crate) async fn matching(
        &self,
        rtype: ResourceType,
        clauses: &[Clause],
        access: &Access,
        gate: &mut Gate,
        owners: Option<Vec<model::KeyOwner>>,
    ) -> Result<Vec<Versioned>, AppError> {
        let ids = Box::pin(self.candidates(rtype, clauses, gate, owners)).await?;
        let mut out = Vec::new();
        for chunk in ids.chunks(FETCH_CHUNK) {
            let mut stored = self.store.current_many(rtype, chunk).await?;
            stored.sort_by(|a, b| a.id.cmp(&b.id));
            for sv in &stored {
                if access.allows(&sv.key_owner).is_err() {
                    continue;
                }
                let mut v = self.open_version(sv).await?;
                if v.resource.is_none() {
                    continue;
                }
                // The policy decides (and masks) first, and the clauses are
                // checked on what the caller may see: a masked element cannot
                // be searched on by someone it is hidden from.
                if !self.allowed(gate, policy::Action::Search, &mut v).await? {
                    continue;
                }
                let Some(res) = &v.resource else { continue };
                if clauses.iter().all(|c| clause_holds(rtype, c, res, &v)) {
                    out.push(v);
                }
            }
        }
        Ok(out)
    }

    /// Candidate ids from the indexes; a superset of the matches, at most the window.
    async fn candidates(
        &self,
        rtype: ResourceType,
        clauses: &[Clause],
        gate: &mut Gate,
        owners: Option<Vec<model::KeyOwner>>,
    ) -> Result<Vec<ResourceId>, AppError> {
        let window = self.config.limits.search_window;
        let ring = self.keys.ring();
        let mut query = IndexQuery {
            limit: window.saturating_add(1),
            owners,
            ..IndexQuery::default()
        };
        let mut restrict: Option<BTreeSet<ResourceId>> = None;
        let narrow = |set: BTreeSet<ResourceId>, restrict: &mut Option<BTreeSet<ResourceId>>| {
            *restrict = Some(match restrict.take() {
                None => set,
                Some(r) => r.intersection(&set).cloned().collect(),
            });
        };
        for clause in clauses {
            match clause {
                Clause::Id(ids) => narrow(ids.iter().cloned().collect(), &mut restrict),
                Clause::LastUpdated(_) => {}
                Clause::Chain { def, target, inner } => {
                    // The chained resources are searched as the caller: a
                    // hidden one can never make an outer resource match.
                    let reach = self.reach(gate, *target).await?;
                    let inner_ids = Box::pin(self.matching(
                        *target,
                        std::slice::from_ref(inner.as_ref()),
                        &Access::All,
                        gate,
                        reach,
                    ))
                    .await?;
                    let tokens = inner_ids
                        .iter()
                        .map(|v| ring.blind_token(rtype, def.name, &format!("{}/{}", target, v.id)))
                        .collect();
                    query.clauses.push(IndexClause {
                        param: def.name.to_owned(),
                        tokens,
                    });
                }
                Clause::Has {
                    source,
                    ref_param,
                    inner,
                } => {
                    let reach = self.reach(gate, *source).await?;
                    let sources = Box::pin(self.matching(
                        *source,
                        std::slice::from_ref(inner.as_ref()),
                        &Access::All,
                        gate,
                        reach,
                    ))
                    .await?;
                    let mut ids = BTreeSet::new();
                    for v in &sources {
                        if let Some(res) = &v.resource {
                            for (t, id) in
                                fhir::search::reference_values(*source, ref_param.name, res)
                            {
                                if t == rtype {
                                    ids.insert(id);
                                }
                            }
                        }
                    }
                    narrow(ids, &mut restrict);
                }
                Clause::Param { .. } => match fhir::search::lookup(rtype, clause) {
                    Lookup::Terms {
                        param,
                        strategy: Strategy::Memory,
                        values,
                        prefix,
                    } => {
                        let ids = self
                            .mem
                            .lookup(rtype, param, &values, prefix, window)
                            .ok_or_else(too_costly)?;
                        narrow(ids, &mut restrict);
                    }
                    Lookup::Terms {
                        param,
                        strategy: Strategy::Blind | Strategy::DayBucket,
                        values,
                        ..
                    } => {
                        let tokens = values
                            .iter()
                            .map(|v| ring.blind_token(rtype, param, v))
                            .collect();
                        query.clauses.push(IndexClause {
                            param: param.to_owned(),
                            tokens,
                        });
                    }
                    Lookup::Terms {
                        strategy: Strategy::FilterOnly,
                        ..
                    }
                    | Lookup::Unindexed => {}
                },
            }
        }
        if let Some(r) = restrict {
            if r.is_empty() {
                return Ok(Vec::new());
            }
            query.ids = Some(r.into_iter().collect());
        }
        let ids = self.store.find(rtype, &query).await?;
        if ids.len() > window {
            return Err(too_costly());
        }
        Ok(ids)
    }

    async fn includes(
        &self,
        rtype: ResourceType,
        req: &SearchRequest,
        page: &[Versioned],
    ) -> Result<Vec<Versioned>, AppError> {
        let max = self.config.limits.max_included;
        let mut seen: BTreeSet<(ResourceType, ResourceId)> =
            page.iter().map(|v| (v.rtype, v.id.clone())).collect();
        let mut out = Vec::new();
        for inc in &req.include {
            if inc.source != rtype {
                continue;
            }
            let mut wanted: BTreeMap<ResourceType, Vec<ResourceId>> = BTreeMap::new();
            for v in page {
                let Some(res) = &v.resource else { continue };
                for (t, id) in fhir::search::reference_values(rtype, inc.param.name, res) {
                    if inc.target.is_none_or(|want| want == t) && seen.insert((t, id.clone())) {
                        wanted.entry(t).or_default().push(id);
                    }
                }
            }
            for (t, ids) in wanted {
                for chunk in ids.chunks(FETCH_CHUNK) {
                    for sv in self.store.current_many(t, chunk).await? {
                        out.push(self.open_version(&sv).await?);
                        if out.len() > max {
                            return Err(too_costly());
                        }
                    }
                }
            }
        }
        let ring = self.keys.ring();
        for rev in &req.revinclude {
            let targets: Vec<String> = page
                .iter()
                .filter(|v| rev.target.is_none_or(|t| t == v.rtype))
                .map(|v| format!("{}/{}", v.rtype, v.id))
                .collect();
            if targets.is_empty() {
                continue;
            }
            let query = IndexQuery {
                clauses: vec![IndexClause {
                    param: rev.param.name.to_owned(),
                    tokens: targets
                        .iter()
                        .map(|t| ring.blind_token(rev.source, rev.param.name, t))
                        .collect(),
                }],
                limit: max.saturating_add(1),
                ..IndexQuery::default()
            };
            let ids = self.store.find(rev.source, &query).await?;
            if ids.len() > max {
                return Err(too_costly());
            }
            for chunk in ids.chunks(FETCH_CHUNK) {
                for sv in self.store.current_many(rev.source, chunk).await? {
                    let v = self.open_version(&sv).await?;
                    let Some(res) = &v.resource else { continue };
                    // Exactness: the token matched; confirm the reference after decryption.
                    let refers = fhir::search::reference_values(rev.source, rev.param.name, res)
                        .into_iter()
                        .any(|(t, id)| page.iter().any(|p| p.rtype == t && p.id == id));
                    if refers && seen.insert((v.rtype, v.id.clone())) {
                        out.push(v);
                    }
                }
            }
            if out.len() > max {
                return Err(too_costly());
            }
        }
        Ok(out)
    }
}

fn too_costly() -> AppError {
    AppError::bad_request(
        IssueCode::TooCostly,
        "the search matches more resources than this server examines at once; add a more selective parameter",
    )
}

fn clause_holds(rtype: ResourceType, clause: &Clause, res: &Value, v: &Versioned) -> bool {
    match clause {
        Clause::Param { .. } => fhir::search::matches(rtype, clause, res),
        Clause::LastUpdated(_) => fhir::search::matches(rtype, clause, res),
        // Resolved exactly while finding candidates.
        Clause::Id(ids) => ids.contains(&v.id),
        Clause::Chain { .. } | Clause::Has { .. } => true,
    }
}

fn sort(matched: &mut [Versioned], req: &SearchRequest) {
    if req.sort.is_empty() {
        return;
    }
    matched.sort_by(|a, b| {
        for key in &req.sort {
            let ka = sort_key(a, key.param);
            let kb = sort_key(b, key.param);
            // Resources without a value sort last in either direction.
            let ord = match (ka, kb) {
                (Some(x), Some(y)) if key.descending => y.cmp(&x),
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        a.id.cmp(&b.id)
    });
}

fn sort_key(v: &Versioned, param: &str) -> Option<i64> {
    if param == "_lastUpdated" {
        return Some(v.last_updated.0);
    }
    v.resource
        .as_ref()
        .and_then(|r| fhir::search::sort_value(v.rtype, param, r))
}
