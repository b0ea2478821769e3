//! Storage for privacy monitoring: how far monitoring has read the audit
//! log, the explanation of each access, alerts grouped into cases, the
//! privacy officer's notes on a case, and the suppressions an officer
//! confirmed.
//!
//! [`MonitorStore`] is a separate trait, like [`crate::GrantStore`], so the
//! record-store contract in [`crate::Store`] stays as it was; `Store`
//! requires it, so every backend implements it and callers holding an
//! `Arc<dyn Store>` reach these methods too.
//!
//! Architecture Invariant: everything that names a person or says why
//! (explanations, alert and case contents, notes, suppression patterns)
//! arrives sealed by the app with its audit key; adapters see only opaque
//! bytes, ids, scores, statuses and times. There is no delete path: notes
//! are append only, and alerts, explanations and suppressions are kept for
//! good (backups included). Erasing a patient leaves these tables alone
//! (their contents are sealed with the audit key, not the patient's).

use async_trait::async_trait;
use model::Timestamp;

use crate::{AccountId, Result, StoreError};

/// At most this many indexes are looked up per statement by
/// [`MonitorStore::explanations`]; adapters split longer requests.
pub const EXPLANATIONS_PER_QUERY: usize = 10_000;

/// The case statuses [`MonitorStore::open_case_for`] treats as still open:
/// a new alert about the same subject joins such a case.
pub const OPEN_CASE_STATUSES: [&str; 2] = ["open", "follow_up"];

/// Why one audited access was normal (or that nothing explained it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessExplanation {
    /// The audit entry's index.
    pub index: u64,
    /// Sealed by the app.
    pub sealed: Vec<u8>,
}

/// One detector's finding, part of exactly one case.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorAlert {
    /// Chosen by the app; unique.
    pub id: String,
    /// The case it belongs to (stored already, or in the same batch).
    pub case_id: String,
    /// The detector, e.g. `family` (not PHI).
    pub kind: String,
    /// Higher is riskier; finite.
    pub score: f64,
    pub created: Timestamp,
    /// The reason, the accesses and the people involved, sealed by the app.
    pub sealed: Vec<u8>,
}

/// Alerts about one monitored user, grouped for a privacy officer's review.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorCase {
    /// Chosen by the app; unique.
    pub id: String,
    /// A keyed token of the monitored user, chosen by the app; never
    /// changed by an upsert.
    pub subject: Vec<u8>,
    /// Chosen by the app: `open`, `appropriate`, `inappropriate`,
    /// `follow_up`, … (see [`OPEN_CASE_STATUSES`]).
    pub status: String,
    /// Higher is riskier; finite.
    pub score: f64,
    /// The officer the case is assigned to (the account must exist).
    pub assignee: Option<AccountId>,
    /// When the case was opened; never changed by an upsert.
    pub opened: Timestamp,
    /// When the case last changed; the token of optimistic concurrency in
    /// [`MonitorStore::update_case`].
    pub updated: Timestamp,
    /// How many alerts the case holds (counted by the app).
    pub alerts: u32,
    /// The case's summary, sealed by the app.
    pub sealed: Vec<u8>,
}

/// An officer's note on a case. Notes are append only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseNote {
    pub case_id: String,
    /// 1, 2, 3, … per case, assigned by the store, gap-free.
    pub seq: u64,
    /// The writing account (must exist).
    pub author: AccountId,
    pub at: Timestamp,
    /// Sealed by the app.
    pub sealed: Vec<u8>,
}

/// A legitimate pattern an officer confirmed, so that monitoring stops
/// alerting on it. Revoked at most once, never deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    /// Chosen by the app; unique.
    pub id: String,
    /// The confirming officer (must exist).
    pub author: AccountId,
    pub created: Timestamp,
    pub revoked: Option<Timestamp>,
    /// The pattern and the officer's reason, sealed by the app.
    pub sealed: Vec<u8>,
}

/// What one monitoring pass over audit indexes `from..to` produced, stored
/// together with the cursor's move from `from` to `to`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MonitorBatch {
    /// The cursor the pass started from ([`MonitorStore::monitor_cursor`]).
    pub from: u64,
    /// The cursor after the pass; not below `from`.
    pub to: u64,
    /// Replace any stored explanation of the same index.
    pub explanations: Vec<AccessExplanation>,
    /// New alerts (ids not stored yet); their cases are stored already or
    /// are among `cases`.
    pub alerts: Vec<MonitorAlert>,
    /// Upserts by id, applied before the alerts (the last of equal ids wins).
    pub cases: Vec<MonitorCase>,
}

impl MonitorBatch {
    /// Checks what a backend cannot check by itself the same way on every
    /// database: the cursor does not move back, scores are finite (SQLite
    /// stores NaN as NULL, PostgreSQL as a value above every number), and
    /// alert ids are distinct within the batch. Adapters call this before
    /// they touch the database.
    pub fn check(&self) -> Result<()> {
        if self.to < self.from {
            return Err(StoreError::MonitorBatch(format!(
                "the cursor would move back from {} to {}",
                self.from, self.to
            )));
        }
        if !self.alerts.iter().all(|a| a.score.is_finite())
            || !self.cases.iter().all(|c| c.score.is_finite())
        {
            return Err(StoreError::MonitorBatch("a score is not finite".to_owned()));
        }
        let mut ids: Vec<&str> = self.alerts.iter().map(|a| a.id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w.first() == w.get(1)) {
            return Err(StoreError::MonitorBatch(
                "an alert id appears twice".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Which cases [`MonitorStore::monitor_cases`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseQuery {
    /// Only cases with exactly this status.
    pub status: Option<String>,
    /// Only cases assigned to this account.
    pub assignee: Option<AccountId>,
    /// At most this many cases (0 lists none).
    pub limit: u32,
}

/// Privacy monitoring's storage.
#[async_trait]
pub trait MonitorStore: Send + Sync + 'static {
    /// The audit index up to which monitoring has processed the log (0 at
    /// first).
    async fn monitor_cursor(&self) -> Result<u64>;

    /// Stores the batch and moves the cursor from `batch.from` to `batch.to`
    /// atomically, iff the cursor is still `batch.from`; otherwise fails
    /// with [`StoreError::MonitorCursor`] (another node got there first)
    /// and stores nothing. Case upserts overwrite the status, score,
    /// assignee, `updated`, alert count and sealed summary of an existing
    /// id but keep its `opened` and `subject`. An explanation of an index
    /// already explained replaces it. A batch that fails
    /// [`MonitorBatch::check`], or holds an alert id already stored, fails
    /// with [`StoreError::MonitorBatch`]; an alert whose case does not
    /// exist, or an unknown assignee, fails with [`StoreError::Database`];
    /// either way nothing is stored.
    async fn commit_monitor_batch(&self, batch: MonitorBatch) -> Result<()>;

    /// The stored explanations of these indexes, in index order; indexes
    /// not explained are left out. Any number of indexes (looked up
    /// [`EXPLANATIONS_PER_QUERY`] at a time).
    async fn explanations(&self, indexes: &[u64]) -> Result<Vec<AccessExplanation>>;

    /// Cases matching every filter of `q`, riskiest first: by score
    /// descending, then `updated` descending, then id.
    async fn monitor_cases(&self, q: &CaseQuery) -> Result<Vec<MonitorCase>>;

    async fn monitor_case(&self, id: &str) -> Result<Option<MonitorCase>>;

    /// The newest (by `opened`, then id) case about `subject` whose status
    /// is one of [`OPEN_CASE_STATUSES`].
    async fn open_case_for(&self, subject: &[u8]) -> Result<Option<MonitorCase>>;

    /// The case's alerts, by score descending, then `created`, then id.
    async fn case_alerts(&self, case_id: &str) -> Result<Vec<MonitorAlert>>;

    /// An officer's change of status and assignee, with an optional note
    /// `(author, sealed)`, in one transaction. `expected_updated` is
    /// optimistic concurrency: if the case's `updated` differs, fails with
    /// [`StoreError::MonitorCaseChanged`] and nothing changes; an unknown
    /// case fails with [`StoreError::MonitorCaseNotFound`]. On success the
    /// case's `updated` becomes `updated` (score, alert count and summary
    /// are left alone), the note gets the next `seq` of the case and the
    /// time `updated`, and that `seq` is returned.
    async fn update_case(
        &self,
        id: &str,
        expected_updated: Timestamp,
        status: &str,
        assignee: Option<&AccountId>,
        updated: Timestamp,
        note: Option<(AccountId, Vec<u8>)>,
    ) -> Result<Option<u64>>;

    /// The case's notes, by `seq`.
    async fn case_notes(&self, case_id: &str) -> Result<Vec<CaseNote>>;

    /// Stores a new suppression. Fails with
    /// [`StoreError::SuppressionExists`] (and stores nothing) when the id is
    /// taken.
    async fn add_suppression(&self, s: &Suppression) -> Result<()>;

    /// Ends a suppression. `false` (and nothing changes) if there is no
    /// such suppression or it was already revoked.
    async fn revoke_suppression(&self, id: &str, at: Timestamp) -> Result<bool>;

    /// Every suppression, revoked ones included, oldest (`created`, then id)
    /// first.
    async fn suppressions(&self) -> Result<Vec<Suppression>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str, score: f64) -> MonitorAlert {
        MonitorAlert {
            id: id.to_owned(),
            case_id: "c".to_owned(),
            kind: "family".to_owned(),
            score,
            created: Timestamp(1),
            sealed: Vec::new(),
        }
    }

    #[test]
    fn check_refuses_what_backends_would_store_differently() {
        let ok = MonitorBatch {
            from: 3,
            to: 3,
            alerts: vec![alert("a", 1.0), alert("b", -0.5)],
            ..MonitorBatch::default()
        };
        assert!(ok.check().is_ok());
        let back = MonitorBatch {
            from: 3,
            to: 2,
            ..MonitorBatch::default()
        };
        let twice = MonitorBatch {
            alerts: vec![alert("a", 1.0), alert("b", 1.0), alert("a", 2.0)],
            ..MonitorBatch::default()
        };
        for bad in [
            back,
            twice,
            MonitorBatch {
                alerts: vec![alert("a", f64::NAN)],
                ..MonitorBatch::default()
            },
            MonitorBatch {
                alerts: vec![alert("a", f64::INFINITY)],
                ..MonitorBatch::default()
            },
        ] {
            assert!(matches!(bad.check(), Err(StoreError::MonitorBatch(_))));
        }
    }
}
