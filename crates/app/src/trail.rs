//! The audit trail at the choke point: one entry per access to patient data
//! and per security event, durable before a read's data leaves and in the
//! same transaction as a write, in a Merkle log with signed checkpoints.
//!
//! Architecture Invariant: an operation whose entry cannot be written fails
//! and returns nothing (fail closed). Entries hold ids, never names or free
//! text from records; the whole entry is sealed with the audit key, and the
//! tree covers the sealed bytes, so anyone can verify the log without keys.
//!
//! Reads append through a group-commit writer: concurrent requests' entries
//! go to storage in one durable transaction. Writes append in their own
//! commit (`Store::commit_audited`). The store serialises every append under
//! the log's single-writer lock, so indexes are gap-free across processes
//! and nodes.

use std::sync::Arc;

use audit::tiles::{TileId, TileReader};
use serde::{Deserialize, Serialize};
use store::{AuditHead, AuditRecord, Integrated, Store};
use tokio::sync::{mpsc, oneshot};

use crate::{AppError, Caller, Principal, Via};

/// Entries a group commit takes at most.
const MAX_BATCH: usize = 2048;
/// Keep a checkpoint in the history at least every this many entries…
const PERSIST_EVERY_ENTRIES: u64 = 1000;
/// …or this many microseconds.
const PERSIST_EVERY_MICROS: i64 = 1_000_000;

/// What kind of event an entry records (FHIR AuditEvent.type, DICOM/HL7 codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// A RESTful operation on records (`rest`).
    Rest,
    /// Sign-in, sign-out, factors, tokens (`110114` User Authentication).
    Security,
    /// Accounts, clients, keys, erasure (`110136`/`110137` security alerts, admin).
    Administration,
}

/// AuditEvent.action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    C,
    R,
    U,
    D,
    E,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::C => "C",
            Action::R => "R",
            Action::U => "U",
            Action::D => "D",
            Action::E => "E",
        }
    }
}

/// One thing that happened, before the agent and context are added.
#[derive(Debug, Clone)]
pub struct Event {
    pub category: Category,
    /// e.g. `read`, `search-type`, `create`, `login`, `token-issue`.
    pub subtype: &'static str,
    pub action: Action,
    /// `None` on success; otherwise the outcome code (4 minor, 8 serious, 12 major) and why.
    pub failure: Option<(u8, String)>,
    /// Patient ids whose data was touched or returned.
    pub patients: Vec<String>,
    /// `Type/id` references.
    pub resources: Vec<String>,
    /// A search's query string (may hold names: sealed, shown to privacy officers only).
    pub query: Option<String>,
    /// The account an administrative or security event is about.
    pub account: Option<String>,
    /// What the access policy decided, for accesses it decided.
    pub policy: Option<PolicyNote>,
}

/// The access policy's part of an entry: the deciding policy ids (the
/// permits that allowed, or the rule that denied), the purpose the access
/// was decided under, and the break-the-glass grants it used.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyNote {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<String>,
}

impl Event {
    pub fn new(category: Category, subtype: &'static str, action: Action) -> Event {
        Event {
            category,
            subtype,
            action,
            failure: None,
            patients: Vec::new(),
            resources: Vec::new(),
            query: None,
            account: None,
            policy: None,
        }
    }

    pub fn failed(mut self, e: &AppError) -> Event {
        if let AppError::Denied(d) = e {
            self.policy = Some(PolicyNote {
                policies: d.policies.clone(),
                purpose: Some(d.purpose.as_str().to_owned()),
                grants: d.grant.iter().cloned().collect(),
            });
        }
        let code = if e.status() >= 500 { 8 } else { 4 };
        self.failure = Some((code, failure_text(e)));
        self
    }
}

/// Why an operation failed, without PHI (status and the error kind).
fn failure_text(e: &AppError) -> String {
    format!("{} {}", e.status(), e)
}

/// Who acted, from where, through what.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Agent {
    pub account: Option<String>,
    pub role: Option<String>,
    pub client: Option<String>,
    /// `session`, `token`, `operator-token`, `operator`, `anonymous`.
    pub via: String,
    pub address: Option<String>,
    pub purpose: Option<String>,
}

/// A stored entry, as sealed under the audit key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub v: u8,
    /// Microseconds since the Unix epoch.
    pub recorded: i64,
    pub category: Category,
    pub subtype: String,
    pub action: Action,
    /// 0 success, 4 minor failure, 8 serious failure, 12 major failure.
    pub outcome: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_desc: Option<String>,
    pub agent: Agent,
    /// The server (the log's origin).
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyNote>,
}

/// Where an entry landed: its index and the signed checkpoint covering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub index: u64,
    pub size: u64,
    pub checkpoint: String,
}

/// What the web layer knows about the request an operation serves.
#[derive(Debug, Default)]
pub struct RequestContext {
    pub request_id: String,
    pub address: Option<String>,
    pub purpose: Option<String>,
    /// Receipts of the entries written for this request.
    pub receipts: std::sync::Mutex<Vec<Receipt>>,
}

tokio::task_local! {
    static REQUEST: Arc<RequestContext>;
}

/// Runs `f` with `ctx` as the request context (the web layer wraps every
/// request in this), so entries name the address and request id and the
/// receipts come back to the response.
pub async fn with_request<F: std::future::Future>(ctx: Arc<RequestContext>, f: F) -> F::Output {
    REQUEST.scope(ctx, f).await
}

fn context() -> Option<Arc<RequestContext>> {
    REQUEST.try_with(Arc::clone).ok()
}

/// A context for work that outlives the request that started it (a
/// WebSocket session): a new request id, the same client address.
pub fn detached_context() -> Arc<RequestContext> {
    let address = context().and_then(|c| c.address.clone());
    Arc::new(RequestContext {
        request_id: new_request_id(),
        address,
        purpose: None,
        receipts: std::sync::Mutex::new(Vec::new()),
    })
}

/// The purpose of use the current request declared, if any.
pub(crate) fn declared_purpose() -> Option<String> {
    context().and_then(|c| c.purpose.clone())
}

fn agent_of(who: &Principal) -> Agent {
    let ctx = context();
    let address = ctx.as_ref().and_then(|c| c.address.clone());
    let purpose = ctx.as_ref().and_then(|c| c.purpose.clone());
    match who {
        Principal::Operator => Agent {
            via: "operator".into(),
            address,
            purpose,
            ..Agent::default()
        },
        Principal::User(c) => caller_agent(c, address, purpose),
    }
}

fn caller_agent(c: &Caller, address: Option<String>, purpose: Option<String>) -> Agent {
    Agent {
        account: c.account.as_ref().map(ToString::to_string),
        role: c.role.map(|r| r.as_str().to_owned()),
        client: c.client_id.clone(),
        via: match c.via {
            Via::Session => "session",
            Via::Token { .. } => "token",
            Via::OperatorToken { .. } => "operator-token",
        }
        .into(),
        address,
        purpose,
    }
}

/// The tree state kept in the log head: the frontier and the partial tiles.
#[derive(Default)]
struct TreeState {
    frontier: audit::Frontier,
    partial: std::collections::HashMap<TileId, Vec<u8>>,
    /// When the last checkpoint went into the history, and at what size.
    persisted_at: i64,
    persisted_size: u64,
}

impl TreeState {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let f = self.frontier.to_bytes();
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(&f);
        out.extend_from_slice(&self.persisted_at.to_be_bytes());
        out.extend_from_slice(&self.persisted_size.to_be_bytes());
        out.extend_from_slice(&(self.partial.len() as u32).to_be_bytes());
        for (id, bytes) in &self.partial {
            out.push(id.level);
            out.extend_from_slice(&id.index.to_be_bytes());
            out.extend_from_slice(&id.width.to_be_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    fn from_bytes(b: &[u8]) -> Result<TreeState, String> {
        if b.is_empty() {
            return Ok(TreeState::default());
        }
        let mut r = Reader(b);
        let n = r.u32()? as usize;
        let frontier = audit::Frontier::from_bytes(r.take(n)?).map_err(|e| e.to_string())?;
        let persisted_at = i64::from_be_bytes(r.array()?);
        let persisted_size = u64::from_be_bytes(r.array()?);
        let count = r.u32()?;
        let mut partial = std::collections::HashMap::new();
        for _ in 0..count {
            let level = r.take(1)?.first().copied().unwrap_or(0);
            let index = u64::from_be_bytes(r.array()?);
            let width = u16::from_be_bytes(r.array()?);
            let len = r.u32()? as usize;
            partial.insert(
                TileId {
                    level,
                    index,
                    width,
                },
                r.take(len)?.to_vec(),
            );
        }
        Ok(TreeState {
            frontier,
            partial,
            persisted_at,
            persisted_size,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the audit tree state is truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?
            .try_into()
            .map_err(|_| "the audit tree state is truncated".to_owned())
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }
}

/// The audit log's keys and identity.
pub struct AuditCore {
    /// The checkpoint origin line, e.g. `vigil.local/audit/3f9c…`.
    pub origin: String,
    /// `(tag, key)`: the tag (4 bytes) prefixes each sealed entry.
    seal: Vec<([u8; 4], crypto::Dek)>,
    signer: audit::SigningKey,
    verifiers: Vec<audit::VerifierKey>,
}

fn tag_of(id: &str) -> [u8; 4] {
    let h = crypto::token_hash(id);
    [h[0], h[1], h[2], h[3]]
}

impl AuditCore {
    pub(crate) fn new(kf: &crypto::KeyFile, origin: String) -> Result<AuditCore, AppError> {
        let keys = kf.audit();
        let current = keys
            .last()
            .ok_or_else(|| AppError::Keys("the key file has no [[audit]] keys".into()))?;
        let name = |id: &str| format!("vigil-audit-{id}");
        let signer = audit::SigningKey::from_seed(&name(&current.id), current.signing.expose())
            .map_err(|e| AppError::Keys(format!("audit signing key: {e}")))?;
        let mut verifiers = Vec::new();
        for k in keys {
            let s = audit::SigningKey::from_seed(&name(&k.id), k.signing.expose())
                .map_err(|e| AppError::Keys(format!("audit signing key: {e}")))?;
            verifiers.push(s.verifier());
        }
        Ok(AuditCore {
            origin,
            seal: keys
                .iter()
                .map(|k| (tag_of(&k.id), crypto::Dek::from_secret(&k.key)))
                .collect(),
            signer,
            verifiers,
        })
    }

    pub fn verifiers(&self) -> &[audit::VerifierKey] {
        &self.verifiers
    }

    /// The stored bytes of an entry: the current key's tag, then the sealed JSON.
    fn seal(&self, entry: &Entry) -> Result<Vec<u8>, AppError> {
        let (tag, dek) = self
            .seal
            .last()
            .ok_or_else(|| AppError::Keys("no audit key".into()))?;
        let json = serde_json::to_vec(entry).map_err(|e| AppError::Integrity(e.to_string()))?;
        let mut out = tag.to_vec();
        out.extend(dek.seal(b"vigil-audit-entry", &json));
        Ok(out)
    }

    /// Seals other audit-key data (monitoring's explanations, alerts, cases
    /// and notes) the same way, bound to `aad` (its purpose and id).
    pub(crate) fn seal_blob(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, AppError> {
        let (tag, dek) = self
            .seal
            .last()
            .ok_or_else(|| AppError::Keys("no audit key".into()))?;
        let mut out = tag.to_vec();
        out.extend(dek.seal(aad.as_bytes(), plain));
        Ok(out)
    }

    /// Opens what [`AuditCore::seal_blob`] sealed under the same `aad`.
    pub(crate) fn open_blob(&self, aad: &str, bytes: &[u8]) -> Result<Vec<u8>, AppError> {
        let (tag, sealed) = bytes
            .split_at_checked(4)
            .ok_or_else(|| AppError::Integrity("sealed audit data".into()))?;
        let (_, dek) =
            self.seal.iter().find(|(t, _)| t == tag).ok_or_else(|| {
                AppError::Integrity("sealed audit data under an unknown key".into())
            })?;
        dek.open(aad.as_bytes(), sealed)
            .map_err(|_| AppError::Integrity("sealed audit data".into()))
    }

    /// Opens stored entry bytes.
    pub fn open(&self, bytes: &[u8]) -> Result<Entry, AppError> {
        let (tag, sealed) = bytes
            .split_at_checked(4)
            .ok_or_else(|| AppError::Integrity("audit entry".into()))?;
        let (_, dek) = self
            .seal
            .iter()
            .find(|(t, _)| t == tag)
            .ok_or_else(|| AppError::Integrity("audit entry under an unknown key".into()))?;
        let json = dek
            .open(b"vigil-audit-entry", sealed)
            .map_err(|_| AppError::Integrity("audit entry".into()))?;
        serde_json::from_slice(&json).map_err(|_| AppError::Integrity("audit entry".into()))
    }

    /// The integration step, inside the append transaction: hash the new
    /// entries into the tree, write the tiles they complete, sign the new size.
    pub(crate) fn integrate(
        &self,
        head: &AuditHead,
        records: &[AuditRecord],
    ) -> Result<Integrated, String> {
        let mut state = TreeState::from_bytes(&head.state)?;
        if state.frontier.size() != head.size {
            return Err(format!(
                "the audit tree state covers {} entries but the log has {}",
                state.frontier.size(),
                head.size
            ));
        }
        let leaves: Vec<audit::Hash> = records.iter().map(|r| audit::leaf_hash(&r.bytes)).collect();
        let tiles = audit::tiles::append_tiles(&PartialTiles(&state.partial), head.size, &leaves)
            .map_err(|e| format!("audit tiles: {e}"))?;
        for l in &leaves {
            state.frontier.push(*l);
        }
        let size = state.frontier.size();
        let root = state.frontier.root();
        let checkpoint = audit::sign_checkpoint(&self.origin, size, &root, &self.signer)
            .map_err(|e| format!("audit checkpoint: {e}"))?;
        // A batch rewrites the tiles it touched; the partial tiles of levels
        // it did not reach stay as they were.
        for (id, b) in &tiles {
            state
                .partial
                .retain(|old, _| (old.level, old.index) != (id.level, id.index));
            if !id.is_full() {
                state.partial.insert(*id, b.clone());
            }
        }
        let now = records.last().map_or(0, |r| r.recorded.0);
        let persist = size.saturating_sub(state.persisted_size) >= PERSIST_EVERY_ENTRIES
            || now.saturating_sub(state.persisted_at) >= PERSIST_EVERY_MICROS;
        if persist {
            state.persisted_at = now;
            state.persisted_size = size;
        }
        Ok(Integrated {
            state: state.to_bytes(),
            tiles: tiles
                .into_iter()
                .map(|(id, data)| store::AuditTile {
                    level: id.level,
                    index: id.index,
                    width: id.width,
                    data,
                })
                .collect(),
            checkpoint,
            persist_checkpoint: persist,
        })
    }
}

/// The partial tiles kept in the head, as a tile reader for `append_tiles`.
struct PartialTiles<'a>(&'a std::collections::HashMap<TileId, Vec<u8>>);

impl TileReader for PartialTiles<'_> {
    type Error = String;
    fn tile(&self, level: u8, index: u64, width: u16) -> Result<Vec<u8>, String> {
        self.0
            .get(&TileId {
                level,
                index,
                width,
            })
            .cloned()
            .ok_or_else(|| format!("the partial audit tile {level}/{index} is missing"))
    }
}

struct Job {
    record: AuditRecord,
    reply: oneshot::Sender<Result<Receipt, String>>,
}

/// Group commits kept for [`crate::Vigil::audit_batches`] at most (the
/// oldest are dropped past this): 1.5 MB in a server nobody asks, and more
/// than a benchmark run of several seconds makes.
const BATCH_SAMPLES: usize = 1 << 16;

/// One group commit as the writer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Entries it appended (or failed to).
    pub entries: usize,
    /// From handing the batch to the store to its answer.
    pub took: std::time::Duration,
}

/// Tiles kept for proofs at most: 16 KiB each once built, so 128 MiB for
/// the tiles of the latest two million entries or so (the oldest go first).
const TILE_CACHE_TILES: usize = 8192;

/// Tiles between proofs, by `(level, index)`, at the widest width seen. A
/// tile's first `w` hashes never change once written and are the same on
/// every node of one log, so nothing here goes stale: a proof takes a tile
/// from here when it is at least as wide as the tree it proves about needs.
/// The writer adds every tile its batches write (bytes only: the pyramid is
/// built by the first proof that wants it), and proofs add what they read.
#[derive(Default)]
pub(crate) struct TileCache(std::sync::Mutex<TileCacheInner>);

#[derive(Default)]
struct TileCacheInner {
    map: std::collections::HashMap<(u8, u64), CachedTile>,
    order: std::collections::VecDeque<(u8, u64)>,
}

enum CachedTile {
    Bytes(u16, Vec<u8>),
    Built(Arc<audit::Pyramid>),
}

impl CachedTile {
    fn width(&self) -> usize {
        match self {
            CachedTile::Bytes(w, _) => usize::from(*w),
            CachedTile::Built(p) => p.width(),
        }
    }
}

impl TileCache {
    /// The pyramid of tile `(level, index)` if one of at least `width`
    /// hashes is known.
    pub(crate) fn get(&self, level: u8, index: u64, width: u16) -> Option<Arc<audit::Pyramid>> {
        let mut c = self.0.lock().ok()?;
        let slot = c.map.get_mut(&(level, index))?;
        if slot.width() < usize::from(width) {
            return None;
        }
        let built = match slot {
            CachedTile::Built(p) => Arc::clone(p),
            CachedTile::Bytes(w, data) => {
                let hashes = audit::tiles::parse_tile(data, *w).ok()?;
                let p = Arc::new(audit::Pyramid::new(hashes));
                *slot = CachedTile::Built(Arc::clone(&p));
                p
            }
        };
        Some(built)
    }

    /// Keeps `tile` unless a version at least as wide is here.
    fn put(&self, level: u8, index: u64, tile: CachedTile) {
        let Ok(mut c) = self.0.lock() else { return };
        match c.map.get_mut(&(level, index)) {
            Some(old) if old.width() >= tile.width() => {}
            Some(old) => *old = tile,
            None => {
                c.map.insert((level, index), tile);
                c.order.push_back((level, index));
                while c.order.len() > TILE_CACHE_TILES {
                    if let Some(gone) = c.order.pop_front() {
                        c.map.remove(&gone);
                    }
                }
            }
        }
    }

    /// Keeps a tile's bytes (its pyramid is built when first wanted).
    pub(crate) fn put_bytes(&self, level: u8, index: u64, width: u16, data: Vec<u8>) {
        self.put(level, index, CachedTile::Bytes(width, data));
    }

    /// Keeps a pyramid a proof built.
    pub(crate) fn put_built(&self, level: u8, index: u64, pyramid: Arc<audit::Pyramid>) {
        self.put(level, index, CachedTile::Built(pyramid));
    }
}

/// The group-commit writer: one task takes every waiting entry and appends
/// them in one durable transaction.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
    batches: Arc<std::sync::Mutex<std::collections::VecDeque<Batch>>>,
    /// Tiles for proofs.
    pub(crate) tiles: Arc<TileCache>,
    /// The largest log size this process has seen committed.
    committed: Arc<std::sync::atomic::AtomicU64>,
}

impl Writer {
    pub(crate) fn start(store: Arc<dyn Store>, core: Arc<AuditCore>) -> Writer {
        let (tx, mut rx) = mpsc::channel::<Job>(16 * 1024);
        let batches = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let seen = Arc::clone(&batches);
        let tiles = Arc::new(TileCache::default());
        let committed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (cache, size_seen) = (Arc::clone(&tiles), Arc::clone(&committed));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let records: Vec<AuditRecord> = jobs.iter().map(|j| j.record.clone()).collect();
                // The tiles of the integration that was committed (the store
                // may integrate twice when another writer moved on).
                let written = std::sync::Mutex::new(Vec::new());
                let integrate = |h: &AuditHead, r: &[AuditRecord]| {
                    let out = core.integrate(h, r)?;
                    if let Ok(mut w) = written.lock() {
                        *w = out.tiles.clone();
                    }
                    Ok(out)
                };
                let began = std::time::Instant::now();
                let entries = records.len();
                let appended = store.append_audit(records, &integrate).await;
                if let Ok(mut b) = seen.lock() {
                    if b.len() >= BATCH_SAMPLES {
                        b.pop_front();
                    }
                    b.push_back(Batch {
                        entries,
                        took: began.elapsed(),
                    });
                }
                match appended {
                    Ok(done) => {
                        size_seen.fetch_max(done.size, std::sync::atomic::Ordering::SeqCst);
                        for (i, j) in (0u64..).zip(jobs) {
                            let _ = j.reply.send(Ok(Receipt {
                                index: done.first_index + i,
                                size: done.size,
                                checkpoint: done.checkpoint.clone(),
                            }));
                        }
                        for t in written.into_inner().unwrap_or_default() {
                            cache.put_bytes(t.level, t.index, t.width, t.data);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "audit append failed");
                        for j in jobs {
                            let _ = j.reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        Writer {
            tx,
            batches,
            tiles,
            committed,
        }
    }

    /// The largest log size this process has seen committed (0 before the
    /// first append): a tree of at most this size surely exists.
    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The group commits since the last call, oldest first.
    fn take_batches(&self) -> Vec<Batch> {
        self.batches
            .lock()
            .map(|mut b| b.drain(..).collect())
            .unwrap_or_default()
    }

    async fn append(&self, record: AuditRecord) -> Result<Receipt, AppError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { record, reply })
            .await
            .map_err(|_| AppError::Audit("the audit writer stopped".into()))?;
        rx.await
            .map_err(|_| AppError::Audit("the audit writer stopped".into()))?
            .map_err(AppError::Audit)
    }
}

impl crate::Vigil {
    /// Builds the stored record of an event by `who` (sealed, with its terms).
    pub(crate) fn audit_record(
        &self,
        who: &Principal,
        event: Event,
    ) -> Result<AuditRecord, AppError> {
        let core = &self.audit;
        let recorded = self.now();
        let mut agent = agent_of(who);
        // The purpose the access was decided under (declared, the role's
        // usual one, or ETREAT under a break-the-glass grant).
        if let Some(p) = event.policy.as_ref().and_then(|n| n.purpose.clone()) {
            agent.purpose = Some(p);
        }
        let request = context()
            .map(|c| c.request_id.clone())
            .filter(|r| !r.is_empty());
        let (outcome, outcome_desc) = match event.failure {
            None => (0, None),
            Some((c, d)) => (c, Some(d)),
        };
        let ring = self.keys.ring();
        let mut terms: Vec<(String, Vec<u8>)> = Vec::new();
        let mut term = |param: &str, value: &str| {
            terms.push((
                param.to_owned(),
                ring.keyed_term(&format!("audit-{param}"), value),
            ));
        };
        for p in &event.patients {
            term("patient", p);
        }
        if let Some(a) = &agent.account {
            term("agent", a);
        }
        if let Some(c) = &agent.client {
            term("client", c);
        }
        if let Some(a) = &event.account {
            term("account", a);
        }
        // Action, outcome and subtype have a handful of values each: they
        // are filtered after decryption (`audit_search`), not indexed, which
        // keeps the append path to a few index rows per entry.
        let entry = Entry {
            v: 1,
            recorded: recorded.0,
            category: event.category,
            subtype: event.subtype.to_owned(),
            action: event.action,
            outcome,
            outcome_desc,
            agent,
            source: core.origin.clone(),
            patients: event.patients,
            resources: event.resources,
            query: event.query,
            account: event.account,
            request,
            policy: event.policy,
        };
        Ok(AuditRecord {
            bytes: core.seal(&entry)?,
            recorded,
            terms,
        })
    }

    /// Records an event durably (group commit) before the caller goes on.
    /// Fails closed: an error here must fail the operation.
    pub(crate) async fn audit(&self, who: &Principal, event: Event) -> Result<Receipt, AppError> {
        let record = self.audit_record(who, event)?;
        let receipt = self.audit_writer.append(record).await?;
        remember(&receipt);
        Ok(receipt)
    }

    /// The group commits of the audit writer since the last call (entries
    /// and time in the store each), for `vigil bench audit`.
    pub fn audit_batches(&self) -> Vec<Batch> {
        self.audit_writer.take_batches()
    }

    /// The keyed token of an audit search term.
    pub(crate) fn audit_term(&self, param: &str, value: &str) -> Vec<u8> {
        self.keys
            .ring()
            .keyed_term(&format!("audit-{param}"), value)
    }

    /// Tiles kept between proofs.
    pub(crate) fn audit_tile_cache(&self) -> &TileCache {
        &self.audit_writer.tiles
    }

    /// The largest log size this process has seen committed.
    pub(crate) fn audit_committed(&self) -> u64 {
        self.audit_writer.committed()
    }

    /// The audit log's identity and keys.
    pub fn audit_core(&self) -> &AuditCore {
        &self.audit
    }
}

/// Hands a receipt to the request it was written for.
pub(crate) fn remember(receipt: &Receipt) {
    if let Some(ctx) = context()
        && let Ok(mut r) = ctx.receipts.lock()
    {
        r.push(receipt.clone());
    }
}

/// The log's origin: chosen once per store and kept in its settings.
pub(crate) async fn origin(store: &dyn Store) -> Result<String, AppError> {
    let fresh = format!("vigil.local/audit/{}", crate::identity::random_hex());
    let stored = store
        .put_setting_if_absent("audit_origin", fresh.as_bytes())
        .await?;
    String::from_utf8(stored).map_err(|_| AppError::Integrity("audit origin".into()))
}

/// A fresh request id (128 random bits, hex).
pub fn new_request_id() -> String {
    crate::identity::random_hex()
}

impl crate::Vigil {
    /// Records a request refused before anyone was identified (no, expired,
    /// tampered or foreign credentials; a missing CSRF token).
    pub async fn audit_refused(&self, e: &AppError) -> Result<(), AppError> {
        let who = Principal::User(Caller {
            account: None,
            role: None,
            username: None,
            client_id: None,
            scopes: auth::scope::ScopeSet::default(),
            patient: None,
            via: Via::Token { jti: String::new() },
            practitioner: None,
            own_patient: None,
            mfa: false,
        });
        let ev = Event::new(Category::Security, "authenticate", Action::E).failed(e);
        self.audit(&who, ev).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use std::collections::HashMap;

    use super::*;

    /// Batches of every size across tile boundaries (levels 0, 1 and 2):
    /// the head state plus stored tiles always give the true root and
    /// proofs that verify.
    #[test]
    fn integration_keeps_tiles_and_state_right_across_levels() {
        let kf = crypto::KeyFile::generate();
        let core = AuditCore::new(&kf, "vigil.test/audit".into()).unwrap();
        let mut head = AuditHead::default();
        let mut stored: HashMap<TileId, Vec<u8>> = HashMap::new();
        let mut leaves = Vec::new();
        let mut n = 0u64;
        let sizes = [1usize, 255, 1, 300, 256, 7, 65_536, 3, 1000];
        for (k, &batch) in sizes.iter().enumerate() {
            let records: Vec<AuditRecord> = (0..batch)
                .map(|i| AuditRecord {
                    bytes: format!("entry {k}/{i}").into_bytes(),
                    recorded: model::Timestamp(i64::try_from(n).unwrap()),
                    terms: Vec::new(),
                })
                .collect();
            n += batch as u64;
            leaves.extend(records.iter().map(|r| audit::leaf_hash(&r.bytes)));
            let out = core.integrate(&head, &records).unwrap();
            for t in out.tiles {
                stored.retain(|id, _| (id.level, id.index) != (t.level, t.index));
                stored.insert(
                    TileId {
                        level: t.level,
                        index: t.index,
                        width: t.width,
                    },
                    t.data,
                );
            }
            head = AuditHead {
                size: n,
                state: out.state,
                checkpoint: Some(out.checkpoint.clone()),
            };
            let cp = audit::open_checkpoint(&out.checkpoint, core.verifiers()).unwrap();
            assert_eq!(cp.size, n);
            assert_eq!(cp.root, audit::root(&leaves), "after batch {k}");
            let source = audit::TileHashes::new(&stored, n);
            for i in [0, n / 2, n - 1] {
                let proof = audit::inclusion_proof(&source, i, n).unwrap();
                audit::verify_inclusion(&leaves[i as usize], i, n, &proof, &cp.root).unwrap();
            }
        }
    }
}
