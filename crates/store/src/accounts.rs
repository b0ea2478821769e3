//! Storage for the identity capability: accounts, credentials, failure
//! counters and sessions.
//!
//! [`AccountStore`] is a separate trait so that the record-store contract in
//! [`crate::Store`] stays as it was; `Store` requires it, so every backend
//! implements both and callers holding an `Arc<dyn Store>` reach these
//! methods too.
//!
//! Architecture Invariant: secrets arrive here already protected. Password
//! hashes are PHC strings, TOTP secrets and profiles are sealed by the app,
//! recovery codes are hashes, and a session is stored only as the SHA-256 of
//! its cookie value. Nothing here can sign anyone in.

use std::fmt;

use async_trait::async_trait;
use model::{ResourceId, Timestamp};

use crate::Result;

/// An account id: 32 lowercase hex digits (128 random bits chosen by the app).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    /// Accepts exactly 32 lowercase hex digits.
    pub fn new(s: impl Into<String>) -> Option<AccountId> {
        let s = s.into();
        let ok = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then_some(AccountId(s))
    }

    /// The id for 16 random bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> AccountId {
        use fmt::Write as _;
        let mut s = String::with_capacity(32);
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        AccountId(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an account is for; the access-policy capability decides what each may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Physician,
    Nurse,
    OtherClinical,
    FrontDesk,
    Billing,
    PrivacyOfficer,
    Administrator,
    Patient,
}

impl Role {
    pub const ALL: [Role; 8] = [
        Role::Physician,
        Role::Nurse,
        Role::OtherClinical,
        Role::FrontDesk,
        Role::Billing,
        Role::PrivacyOfficer,
        Role::Administrator,
        Role::Patient,
    ];

    /// The stored and command-line form, e.g. `privacy-officer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Physician => "physician",
            Role::Nurse => "nurse",
            Role::OtherClinical => "other-clinical",
            Role::FrontDesk => "front-desk",
            Role::Billing => "billing",
            Role::PrivacyOfficer => "privacy-officer",
            Role::Administrator => "administrator",
            Role::Patient => "patient",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key that makes usernames unique regardless of case. The app
/// normalises Unicode (NFKC) before it reaches the store; this only folds case.
pub fn username_key(username: &str) -> String {
    username.to_lowercase()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    /// As the user typed it; unique by [`username_key`].
    pub username: String,
    pub role: Role,
    pub practitioner: Option<ResourceId>,
    pub patient: Option<ResourceId>,
    pub active: bool,
    pub created: Timestamp,
    pub deactivated: Option<Timestamp>,
    /// Opaque sealed bytes (real name, e-mail): sealed by the app.
    pub profile: Vec<u8>,
}

/// The secrets of an account, all opaque to the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A PHC string (Argon2id), as bytes.
    pub password_hash: Option<Vec<u8>>,
    /// The TOTP secret, sealed by the app.
    pub totp_secret: Option<Vec<u8>>,
    /// The last TOTP time step accepted (each code is accepted once).
    pub totp_last_step: Option<u64>,
}

/// A throttling counter, per (account, factor) or per client address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureCounter {
    pub failures: u32,
    pub next_allowed_at: Option<Timestamp>,
    pub disabled: bool,
}

/// A server-side session. The cookie value itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the cookie value.
    pub id_hash: [u8; 32],
    pub account: AccountId,
    pub created: Timestamp,
    pub last_seen: Timestamp,
    pub absolute_expiry: Timestamp,
    pub idle_timeout_secs: u32,
    /// Hash of the session's CSRF token, when one is bound to it.
    pub csrf_hash: Option<Vec<u8>>,
    pub revoked: bool,
}

impl Session {
    /// Whether the session may be used at `now` (not revoked, not past its
    /// absolute expiry, not idle for longer than its idle timeout).
    pub fn is_live(&self, now: Timestamp) -> bool {
        let idle_end = self
            .last_seen
            .0
            .saturating_add(i64::from(self.idle_timeout_secs).saturating_mul(1_000_000));
        !self.revoked && now < self.absolute_expiry && now.0 < idle_end
    }
}

/// Accounts, credentials, throttling counters and sessions.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    // ---- accounts ----
    /// Creates an account; fails with [`crate::StoreError::UsernameTaken`]
    /// when another account has the same [`username_key`], and
    /// [`crate::StoreError::AccountExists`] when the id is taken.
    async fn create_account(&self, account: &Account) -> Result<()>;
    async fn account(&self, id: &AccountId) -> Result<Option<Account>>;
    /// Looks an account up by username, case-insensitively.
    async fn account_by_username(&self, username: &str) -> Result<Option<Account>>;
    /// Accounts with id greater than `after`, ordered by id.
    async fn accounts(&self, after: Option<&AccountId>, limit: usize) -> Result<Vec<Account>>;
    /// Marks the account inactive and revokes all its sessions, in one
    /// transaction. Returns `false` if there is no such active account.
    async fn deactivate_account(&self, id: &AccountId, at: Timestamp) -> Result<bool>;

    // ---- credentials ----
    /// The account's credentials (all `None` when none were ever set).
    async fn credentials(&self, id: &AccountId) -> Result<Credentials>;
    async fn set_password_hash(&self, id: &AccountId, phc: &[u8]) -> Result<()>;
    /// Sets (or with `None` removes) the TOTP secret; resets the last step.
    async fn set_totp_secret(&self, id: &AccountId, sealed: Option<&[u8]>) -> Result<()>;
    /// Records `new` as the last accepted TOTP step if the stored last step
    /// is still `expected_last` and `new` is greater. Exactly one of several
    /// concurrent callers with the same `expected_last` wins.
    async fn advance_totp_step(
        &self,
        id: &AccountId,
        expected_last: Option<u64>,
        new: u64,
    ) -> Result<bool>;
    /// Replaces all recovery code hashes of the account.
    async fn set_recovery_codes(&self, id: &AccountId, hashes: &[Vec<u8>]) -> Result<()>;
    async fn recovery_codes(&self, id: &AccountId) -> Result<Vec<Vec<u8>>>;
    /// Deletes one recovery code hash; `true` only for the one caller that
    /// removed it.
    async fn consume_recovery_code(&self, id: &AccountId, hash: &[u8]) -> Result<bool>;

    // ---- throttling ----
    async fn factor_failures(&self, id: &AccountId, factor: &str) -> Result<FailureCounter>;
    async fn put_factor_failures(
        &self,
        id: &AccountId,
        factor: &str,
        counter: &FailureCounter,
    ) -> Result<()>;
    async fn address_failures(&self, address: &str) -> Result<FailureCounter>;
    async fn put_address_failures(&self, address: &str, counter: &FailureCounter) -> Result<()>;

    // ---- sessions ----
    /// Stores a new session if its account exists and is active (checked in
    /// the same transaction, so it cannot slip past a deactivation).
    /// Returns `false` otherwise.
    async fn create_session(&self, session: &Session) -> Result<bool>;
    async fn session(&self, id_hash: &[u8; 32]) -> Result<Option<Session>>;
    /// Updates `last_seen` of a session that is not revoked.
    async fn touch_session(&self, id_hash: &[u8; 32], at: Timestamp) -> Result<bool>;
    async fn revoke_session(&self, id_hash: &[u8; 32]) -> Result<bool>;
    /// Revokes every session of an account; returns how many were live.
    async fn revoke_sessions_of(&self, id: &AccountId) -> Result<u64>;
    /// Deletes sessions that are revoked, past their absolute expiry or idle
    /// for longer than their timeout at `now`. Returns how many.
    async fn delete_expired_sessions(&self, now: Timestamp) -> Result<u64>;
}
