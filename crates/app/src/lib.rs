//! The façade every operation on patient data goes through:
//! authenticate → (decide, audit: later capabilities) → encrypt/decrypt → store.
//!
//! Architecture Invariant: no other crate reads or writes resources in the
//! store. Whatever the web layer, the CLI, the demo seeder or the benchmark
//! does with records, it does through [`Vigil`], so every later protection
//! (policy, audit) sits on this one choke point.
//!
//! Architecture Invariant: plaintext exists only in memory. Everything handed to
//! the store is ciphertext, a wrapped key or a keyed token.

mod access;
mod audited;
mod bundle;
mod decide;
pub mod demo;
pub mod emergency;
mod error;
pub mod export;
mod facts;
pub mod identity;
pub mod json;
pub mod keys;
mod memindex;
pub mod monitoring;
pub mod policy_admin;
mod records;
mod search;
pub mod telehealth;
pub mod trail;
pub mod trail_fhir;
pub mod trail_views;

use std::sync::Arc;

use crypto::{KeyFile, KeyFileSource};
use model::{Clock, ResourceId, ResourceType, Timestamp, VersionId};
use serde_json::Value;
use store::Store;

/// The pure audit-log crate, for the web layer and the CLI (tiles, proofs, verification).
pub use audit;
pub use bundle::parse_query_string;
pub use decide::{DecisionSlice, PolicyConfig};
pub use error::AppError;
pub use identity::{
    AccountSummary, AccountView, AuthorizeRequest, Caller, ClientSummary, ConsentView, Endpoints,
    IdentityConfig, Mailer, NewAccount, NewClient, NewSession, OAuthError, OutboxView, PasskeyView,
    SessionProblem, SessionView, SignInError, SignInStep, TokenRequest, Via,
};
pub use keys::RotateReport;
pub use search::SearchPage;

/// Limits on what a request may ask for. All configurable.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most entries in a Bundle transaction or batch.
    pub max_bundle_entries: usize,
    /// Longest accepted string element, in bytes.
    pub max_string_len: usize,
    /// Most matches a search may consider (and page through).
    pub search_window: usize,
    /// Largest `_count`.
    pub max_count: usize,
    /// `_count` when none is given.
    pub default_count: usize,
    /// Most resources added by `_include` / `_revinclude` to one page.
    pub max_included: usize,
    /// Most resources one `Patient/[id]/$everything` export returns; an
    /// export that would return more is refused (never truncated).
    pub max_export: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_bundle_entries: 1000,
            max_string_len: 1024 * 1024,
            search_window: 10_000,
            max_count: 1000,
            default_count: 20,
            max_included: 1000,
            max_export: 10_000,
        }
    }
}

/// Behaviour of the record store.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// References to served types must resolve on write (422 otherwise).
    pub referential_integrity: bool,
    pub limits: Limits,
    /// The access policy's settings: the binary reads them from `[policy]`
    /// (never from inside `[fhir]`).
    #[serde(skip)]
    pub policy: PolicyConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            referential_integrity: true,
            limits: Limits::default(),
            policy: PolicyConfig::default(),
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "built once per request and passed by reference; boxing would only add an allocation"
)]
pub enum Principal {
    /// An operator running a CLI verb on the server's machine with the key file.
    Operator,
    /// A signed-in user (session or access token) or a backend service.
    User(Caller),
}

/// One version of a resource as returned to callers.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub rtype: ResourceType,
    pub id: ResourceId,
    pub version: VersionId,
    pub last_updated: Timestamp,
    /// `None` for a delete marker in history.
    pub resource: Option<Value>,
}

/// The result of a create or update.
#[derive(Debug, Clone)]
pub struct Written {
    pub created: bool,
    pub current: Versioned,
}

const BOOTSTRAP_SETTING: &str = "bootstrap_token_sha256";

pub struct Vigil {
    store: Arc<dyn Store>,
    keys: keys::Keys,
    clock: Arc<dyn Clock>,
    config: Config,
    mem: memindex::MemIndex,
    /// SHA-256 of the bootstrap token (from the environment or the database).
    bootstrap_hash: std::sync::RwLock<Option<Vec<u8>>>,
    /// `None` only for a key file without identity secrets.
    identity: Option<identity::Identity>,
    audit: Arc<trail::AuditCore>,
    audit_writer: trail::Writer,
    policy: decide::PolicyState,
    /// Privacy monitoring's memory in this process (one pass at a time).
    monitor: tokio::sync::Mutex<monitoring::Live>,
    /// Telehealth consultations: live rooms, invite keys, the DLP index.
    consult: telehealth::ConsultState,
}

impl Vigil {
    /// Opens Vigil over a migrated store and builds the in-memory name index
    /// from decrypted data.
    pub async fn open(
        store: Arc<dyn Store>,
        key_file: &KeyFile,
        key_source: KeyFileSource,
        clock: Arc<dyn Clock>,
        config: Config,
    ) -> Result<Vigil, AppError> {
        let keys = keys::Keys::new(key_file, key_source, Arc::clone(&store))?;
        let identity = match key_file.identity() {
            Some(_) => Some(identity::Identity::new(
                key_file,
                IdentityConfig::default(),
            )?),
            None => None,
        };
        let audit_core = Arc::new(trail::AuditCore::new(
            key_file,
            trail::origin(store.as_ref()).await?,
        )?);
        let audit_writer = trail::Writer::start(Arc::clone(&store), Arc::clone(&audit_core));
        let policy = decide::PolicyState::new(config.policy.clone(), store.backend())?;
        let consult = telehealth::ConsultState::new(&keys.ring());
        let v = Vigil {
            consult,
            monitor: tokio::sync::Mutex::new(monitoring::Live::default()),
            policy,
            audit: audit_core,
            audit_writer,
            store,
            keys,
            clock,
            config,
            mem: memindex::MemIndex::default(),
            bootstrap_hash: std::sync::RwLock::new(None),
            identity,
        };
        v.rebuild_memory_index(&|_, _| {}).await?;
        Ok(v)
    }

    /// Applies the `[identity]` settings (before the server starts).
    pub fn configure_identity(
        &mut self,
        key_file: &KeyFile,
        cfg: IdentityConfig,
    ) -> Result<(), AppError> {
        self.identity = Some(identity::Identity::new(key_file, cfg)?);
        Ok(())
    }

    pub fn identity_config(&self) -> Option<&IdentityConfig> {
        self.identity.as_ref().map(|i| &i.cfg)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Sets up the bootstrap admin token. With `from_env`, that token is used
    /// (and nothing is stored). Otherwise a token is created on first start and
    /// returned once for printing; only its hash is stored.
    pub async fn init_bootstrap_token(
        &self,
        from_env: Option<&str>,
    ) -> Result<Option<String>, AppError> {
        if let Some(t) = from_env {
            if t.len() < 16 {
                return Err(AppError::Keys(
                    "VIGIL_BOOTSTRAP_TOKEN must be at least 16 characters".into(),
                ));
            }
            self.set_bootstrap_hash(crypto::token_hash(t).to_vec());
            return Ok(None);
        }
        if let Some(h) = self.store.get_setting(BOOTSTRAP_SETTING).await? {
            self.set_bootstrap_hash(h);
            return Ok(None);
        }
        let token = crypto::random_token();
        let stored = self
            .store
            .put_setting_if_absent(BOOTSTRAP_SETTING, &crypto::token_hash(&token))
            .await?;
        let fresh = crypto::token_matches(&token, &stored);
        self.set_bootstrap_hash(stored);
        Ok(fresh.then_some(token))
    }

    fn set_bootstrap_hash(&self, h: Vec<u8>) {
        if let Ok(mut g) = self.bootstrap_hash.write() {
            *g = Some(h);
        }
    }

    /// Whether `token` is the bootstrap token (constant time). It serves
    /// only to set up the first administrator.
    pub fn bootstrap_matches(&self, token: &str) -> bool {
        let Ok(g) = self.bootstrap_hash.read() else {
            return false;
        };
        g.as_deref()
            .is_some_and(|h| crypto::token_matches(token, h))
    }

    /// Re-reads every resource with memory-indexed parameters and rebuilds the
    /// name index. `progress(done, total)` reports progress.
    pub async fn rebuild_memory_index(
        &self,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<(), AppError> {
        let mut done = 0u64;
        for rtype in ResourceType::ALL {
            if !records::has_memory_params(rtype) {
                continue;
            }
            let mut after: Option<ResourceId> = None;
            loop {
                let batch = self.store.scan(rtype, after.as_ref(), 1000).await?;
                let Some(last) = batch.last() else { break };
                after = Some(last.id.clone());
                for sv in &batch {
                    self.index_names(sv).await?;
                    done += 1;
                }
                progress(done, 0);
            }
        }
        Ok(())
    }

    /// Crypto-shreds a patient: destroys their data key and deletes everything
    /// sealed under it. Returns what was removed.
    pub async fn erase_patient(
        &self,
        who: &Principal,
        id: &ResourceId,
    ) -> Result<store::EraseReport, AppError> {
        let owner = model::KeyOwner::Patient(model::PatientId(id.clone()));
        let report = self.store.erase_patient(&owner).await?;
        self.keys.forget(&owner);
        self.policy.invalidate(&owner);
        self.prune_memory_index().await?;
        // Tell other Vigil processes (a running server, other nodes) to drop
        // what they derived from the erased data.
        let generation = crate::records::new_id();
        self.store
            .put_setting(ERASE_GENERATION, generation.as_str().as_bytes())
            .await?;
        let mut ev = trail::Event::new(
            trail::Category::Administration,
            "patient-erase",
            trail::Action::D,
        );
        ev.patients = vec![id.to_string()];
        self.audit(who, ev).await?;
        tracing::info!(patient = %id, versions = report.versions_deleted, "patient erased");
        Ok(report)
    }
}

impl Vigil {
    /// Drops in-memory index entries of resources that no longer exist.
    async fn prune_memory_index(&self) -> Result<(), AppError> {
        for rtype in ResourceType::ALL {
            let known = self.mem.ids(rtype);
            for chunk in known.chunks(500) {
                let alive = self.store.existing(rtype, chunk).await?;
                let alive: std::collections::HashSet<_> = alive.into_iter().collect();
                for gone in chunk.iter().filter(|i| !alive.contains(*i)) {
                    self.mem.set(rtype, gone, Vec::new());
                    if rtype == ResourceType::Patient {
                        self.consult.index_patient(gone, None);
                    }
                }
            }
        }
        Ok(())
    }

    /// Called periodically by a running server: if another process erased a
    /// patient since `seen`, forget cached data keys and relationship facts
    /// and prune the name index.
    /// Returns the generation now seen.
    pub async fn sync_erasures(&self, seen: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, AppError> {
        let now = self.store.get_setting(ERASE_GENERATION).await?;
        if now != seen {
            self.keys.forget_all();
            self.policy.invalidate_all();
            self.prune_memory_index().await?;
            tracing::info!("erasure by another process: key cache cleared, name index pruned");
        }
        Ok(now)
    }
}

const ERASE_GENERATION: &str = "erase_generation";

/// How far back a name-index sync looks before its watermark, to tolerate
/// clock differences between nodes and commits that finish out of order.
const SYNC_OVERLAP_MICROS: i64 = 10_000_000;

impl Vigil {
    /// Called periodically by a running server: re-indexes in memory the
    /// names of resources written since `since` by any process or node (the
    /// in-memory name index is per process). Returns the new watermark.
    pub async fn sync_names(&self, since: Timestamp) -> Result<Timestamp, AppError> {
        let now = self.clock.now();
        let from = Timestamp(since.0.saturating_sub(SYNC_OVERLAP_MICROS));
        for rtype in ResourceType::ALL {
            if !records::has_memory_params(rtype) {
                continue;
            }
            // No limit: a bulk load on another node must not leave names out
            // (ids only here; decryption goes in chunks below).
            let query = store::IndexQuery {
                last_updated_from: Some(from),
                limit: usize::MAX,
                ..store::IndexQuery::default()
            };
            let ids = self.store.find(rtype, &query).await?;
            for chunk in ids.chunks(500) {
                for sv in self.store.current_many(rtype, chunk).await? {
                    self.index_names(&sv).await?;
                }
            }
        }
        Ok(now)
    }
}

impl Vigil {
    /// Decrypts a stored version and puts its name terms into the in-memory index.
    async fn index_names(&self, sv: &store::StoredVersion) -> Result<(), AppError> {
        let opened = self.open_version(sv).await?;
        if let Some(res) = &opened.resource {
            self.mem.set(sv.rtype, &sv.id, memory_terms(sv.rtype, res));
        }
        if sv.rtype == ResourceType::Patient {
            self.consult.index_patient(&sv.id, opened.resource.as_ref());
        }
        Ok(())
    }
}

/// The terms of memory-indexed parameters (names) of a resource.
fn memory_terms(rtype: ResourceType, resource: &Value) -> Vec<(&'static str, String)> {
    fhir::search::index_terms(rtype, resource)
        .into_iter()
        .filter(|t| matches!(t.strategy, fhir::search::Strategy::Memory))
        .map(|t| (t.param, t.value))
        .collect()
}
