//! Storage for the access-policy capability: break-the-glass grants and the
//! versioned policy text.
//!
//! [`GrantStore`] and [`PolicyStore`] are separate traits, like
//! [`crate::AccountStore`], so the record-store contract in [`crate::Store`]
//! stays as it was; `Store` requires them, so every backend implements them
//! and callers holding an `Arc<dyn Store>` reach these methods too.
//!
//! Architecture Invariant: there is no delete path. A grant is an
//! accountability record: it can be ended early (revoked) and reviewed, each
//! exactly once, and is kept for good (backups included; erasing a patient
//! leaves it alone). Policy versions are append only, numbered gap-free by
//! the store. Justifications and review notes arrive sealed by the app.

use async_trait::async_trait;
use model::{ResourceId, Timestamp};

use crate::{AccountId, Result};

/// A break-the-glass grant: a clinician's time-boxed access to one patient,
/// outside the usual relationships, subject to review afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyGrant {
    /// A random id chosen by the app; unique.
    pub id: String,
    /// The clinician (the account must exist).
    pub account: AccountId,
    /// The Patient id.
    pub patient: ResourceId,
    pub start: Timestamp,
    pub expires: Timestamp,
    /// When it was ended early, by the clinician or an officer.
    pub revoked: Option<Timestamp>,
    /// Purpose code, e.g. `ETREAT` (not PHI).
    pub reason: String,
    /// Free text, sealed by the app.
    pub justification: Vec<u8>,
    pub review_due: Timestamp,
    pub review: Option<GrantReview>,
}

impl EmergencyGrant {
    /// Whether the grant gives access at `at`: not revoked, and
    /// `start <= at <= expires` (both ends inclusive, as
    /// [`GrantStore::grants_for_account`] selects).
    pub fn is_live(&self, at: Timestamp) -> bool {
        self.revoked.is_none() && self.start <= at && at <= self.expires
    }
}

/// An officer's review of a grant, recorded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantReview {
    /// The reviewing account (must exist).
    pub reviewer: AccountId,
    pub at: Timestamp,
    /// Chosen by the app: `appropriate`, `inappropriate`, …
    pub outcome: String,
    /// Sealed by the app.
    pub note: Vec<u8>,
}

/// One version of the access policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    /// 1, 2, 3, … assigned by the store, gap-free.
    pub version: u64,
    /// Cedar policy text (not PHI).
    pub text: String,
    /// Who wrote it (`None` for the built-in default).
    pub author: Option<AccountId>,
    pub created: Timestamp,
    pub comment: String,
}

/// Break-the-glass grants.
#[async_trait]
pub trait GrantStore: Send + Sync + 'static {
    /// Stores a new grant. Fails with [`crate::StoreError::GrantExists`]
    /// (and stores nothing) when the id is taken.
    async fn insert_grant(&self, grant: &EmergencyGrant) -> Result<()>;
    async fn grant(&self, id: &str) -> Result<Option<EmergencyGrant>>;
    /// Every grant for the patient, newest `start` first.
    async fn grants_for_patient(&self, patient: &ResourceId) -> Result<Vec<EmergencyGrant>>;
    /// The account's grants, newest `start` first. With `live_at: Some(t)`,
    /// only those live at `t` ([`EmergencyGrant::is_live`]: not revoked,
    /// `start <= t <= expires`).
    async fn grants_for_account(
        &self,
        account: &AccountId,
        live_at: Option<Timestamp>,
    ) -> Result<Vec<EmergencyGrant>>;
    /// Ends a grant early. `false` (and nothing changes) if there is no such
    /// grant or it was already revoked: a revocation is never undone or moved.
    async fn revoke_grant(&self, id: &str, at: Timestamp) -> Result<bool>;
    /// Grants not yet reviewed, earliest `review_due` first, at most `limit`.
    async fn grants_to_review(&self, limit: usize) -> Result<Vec<EmergencyGrant>>;
    /// Records the review of a grant. `false` (and nothing changes) if there
    /// is no such grant or it was already reviewed.
    async fn review_grant(&self, id: &str, review: &GrantReview) -> Result<bool>;
}

/// The versioned access policy.
#[async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// Appends a version numbered one more than the newest (1 for the first)
    /// and returns its number. Concurrent callers get distinct, gap-free numbers.
    async fn add_policy_version(
        &self,
        text: &str,
        author: Option<&AccountId>,
        created: Timestamp,
        comment: &str,
    ) -> Result<u64>;
    /// The highest version, if any.
    async fn current_policy(&self) -> Result<Option<PolicyVersion>>;
    async fn policy_version(&self, version: u64) -> Result<Option<PolicyVersion>>;
    /// Every version, newest first.
    async fn policy_versions(&self) -> Result<Vec<PolicyVersion>>;
}
