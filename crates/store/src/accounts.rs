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

/// A WebAuthn credential. `data` is the sealed credential (public key,
/// counter) as the app serialised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    /// The credential id the authenticator chose (unique across accounts).
    pub credential_id: Vec<u8>,
    pub account: AccountId,
    /// A label the user gave it (not PHI: "work laptop").
    pub name: String,
    pub created: Timestamp,
    pub last_used: Option<Timestamp>,
    pub data: Vec<u8>,
}

/// A short-lived, single-use secret the app hands out: a pending sign-in
/// (password checked, second factor due), a WebAuthn challenge, an
/// authorisation code, an enrolment or password-reset link, a client
/// assertion's `jti` (kept to refuse replays). Stored by the SHA-256 of the
/// secret; `payload` is sealed by the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// What it is for (`signin`, `authcode`, `reset`, …); a lookup names the
    /// purpose it expects, so a secret for one thing never passes for another.
    pub purpose: String,
    pub account: Option<AccountId>,
    pub payload: Vec<u8>,
    pub expires: Timestamp,
}

/// An OAuth client (a SMART app or a backend service). `data` is the app's
/// JSON description (redirect URIs, allowed scopes, public key); it holds no
/// secret, since Vigil's clients are public (PKCE) or sign assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    /// Chosen by the app: `[A-Za-z0-9._-]{1,64}`.
    pub client_id: String,
    pub name: String,
    pub active: bool,
    pub created: Timestamp,
    pub revoked: Option<Timestamp>,
    pub data: Vec<u8>,
}

/// A refresh token, stored by the SHA-256 of its value. Tokens descending
/// from one authorisation share a `family`; presenting a used token again
/// revokes the whole family (RFC 9700 §4.14.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub hash: [u8; 32],
    /// 32 lowercase hex digits.
    pub family: String,
    pub account: AccountId,
    pub client_id: String,
    /// The sealed grant (scopes, launch context).
    pub payload: Vec<u8>,
    pub created: Timestamp,
    pub expires: Timestamp,
}

/// What presenting a refresh token for rotation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was live: it is now used and the new one stored. Carries the old token.
    Rotated(RefreshToken),
    /// The token had been used (or its family revoked): the family is now revoked.
    Reused,
    /// Unknown, expired, or its account or client is no longer active.
    Invalid,
}

/// A message waiting in (or sent from) the outbox. `payload` (recipient
/// address, subject, body with its links) is sealed by the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// 32 lowercase hex digits.
    pub id: String,
    pub created: Timestamp,
    pub account: Option<AccountId>,
    /// `enrolment`, `password-reset`, `one-time-code`, …
    pub kind: String,
    pub payload: Vec<u8>,
    pub sent_at: Option<Timestamp>,
    pub attempts: u32,
    /// The last delivery error (from the relay; never message content).
    pub last_error: Option<String>,
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
    /// Marks the account inactive and revokes all its sessions and refresh
    /// tokens, in one transaction (its access tokens fail
    /// [`AccountStore::access_token_live`] from then on). Returns `false` if there is no such active account.
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

    // ---- second factors ----
    /// Removes every second factor of an account (TOTP secret, passkeys,
    /// recovery codes), clears its factor failure counters and revokes its
    /// sessions and refresh tokens, in one transaction. Administrators use it
    /// when a user lost their devices.
    async fn reset_second_factors(&self, id: &AccountId) -> Result<()>;
    /// Stores a passkey; `false` when its credential id is already registered.
    async fn add_passkey(&self, passkey: &StoredPasskey) -> Result<bool>;
    /// The account's passkeys, oldest first.
    async fn passkeys(&self, id: &AccountId) -> Result<Vec<StoredPasskey>>;
    /// Replaces a passkey's sealed data (its signature counter moved) and
    /// records when it was used.
    async fn update_passkey(
        &self,
        credential_id: &[u8],
        data: &[u8],
        used: Timestamp,
    ) -> Result<bool>;
    async fn delete_passkey(&self, id: &AccountId, credential_id: &[u8]) -> Result<bool>;

    // ---- challenges ----
    /// Stores a challenge under `key_hash`; `false` (and nothing changes)
    /// when that key is already present, which is how replays are caught.
    async fn put_challenge(&self, key_hash: &[u8; 32], challenge: &Challenge) -> Result<bool>;
    /// The challenge, if present, of that purpose and not expired at `now`.
    async fn challenge(
        &self,
        key_hash: &[u8; 32],
        purpose: &str,
        now: Timestamp,
    ) -> Result<Option<Challenge>>;
    /// Removes and returns the challenge if it is of that purpose and not
    /// expired at `now`. Of concurrent callers exactly one gets it.
    async fn take_challenge(
        &self,
        key_hash: &[u8; 32],
        purpose: &str,
        now: Timestamp,
    ) -> Result<Option<Challenge>>;
    /// Removes the account's challenges of one purpose (a new reset link
    /// voids older ones). Returns how many.
    async fn delete_challenges_of(&self, id: &AccountId, purpose: &str) -> Result<u64>;
    async fn delete_expired_challenges(&self, now: Timestamp) -> Result<u64>;

    // ---- OAuth clients ----
    /// `false` when the client id is taken.
    async fn create_client(&self, client: &OAuthClient) -> Result<bool>;
    async fn client(&self, client_id: &str) -> Result<Option<OAuthClient>>;
    /// Every client, ordered by id.
    async fn clients(&self) -> Result<Vec<OAuthClient>>;
    /// Marks the client inactive and revokes its refresh tokens, in one
    /// transaction. `false` if there is no such active client.
    async fn revoke_client(&self, client_id: &str, at: Timestamp) -> Result<bool>;

    // ---- tokens ----
    /// Stores a new refresh token if its account and client are active
    /// (checked in the same transaction). Returns `false` otherwise.
    async fn put_refresh_token(&self, token: &RefreshToken) -> Result<bool>;
    /// Rotation: if `old_hash` is live (not used, not revoked, not expired at
    /// `now`, account and client active), marks it used and stores `new` in
    /// the same family, atomically. A used token revokes its family.
    async fn rotate_refresh_token(
        &self,
        old_hash: &[u8; 32],
        new: &RefreshToken,
        now: Timestamp,
    ) -> Result<RefreshOutcome>;
    /// The token if it is live at `now` (for introspection).
    async fn live_refresh_token(
        &self,
        hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<RefreshToken>>;
    /// Revokes the token's whole family. `false` if unknown.
    async fn revoke_refresh_token(&self, hash: &[u8; 32]) -> Result<bool>;
    /// Records an access token's `jti` as revoked until `expires`.
    async fn revoke_access_token(&self, jti: &str, expires: Timestamp) -> Result<()>;
    /// The per-request check of a signature-verified access token, in one
    /// query: the account (if any) exists and is active, the client (if any)
    /// exists and is active, and the `jti` was not revoked.
    async fn access_token_live(
        &self,
        account: Option<&AccountId>,
        client_id: Option<&str>,
        jti: &str,
    ) -> Result<bool>;
    /// [`access_token_live`](Self::access_token_live) for a person's token,
    /// returning the account as it is now, in the same single query: `None`
    /// when the account is missing or inactive, the client (if any) missing
    /// or inactive, or the `jti` revoked.
    async fn live_token_account(
        &self,
        account: &AccountId,
        client_id: Option<&str>,
        jti: &str,
    ) -> Result<Option<Account>>;
    /// Deletes expired refresh tokens and revoked-`jti` records.
    async fn delete_expired_tokens(&self, now: Timestamp) -> Result<u64>;

    // ---- outbox ----
    async fn enqueue_message(&self, message: &OutboxMessage) -> Result<()>;
    /// Unsent messages with fewer than `max_attempts` attempts, oldest first.
    async fn unsent_messages(&self, max_attempts: u32, limit: usize) -> Result<Vec<OutboxMessage>>;
    async fn mark_message_sent(&self, id: &str, at: Timestamp) -> Result<()>;
    /// Counts a failed delivery attempt and keeps its error.
    async fn mark_message_failed(&self, id: &str, error: &str) -> Result<()>;
    /// Messages newest first, created before `before` when given.
    async fn messages(&self, before: Option<Timestamp>, limit: usize)
    -> Result<Vec<OutboxMessage>>;
}
