//! Sign-in (password, then TOTP, a recovery code or a passkey; or a passkey
//! alone), throttling, and browser sessions.

use auth::recovery::RecoveryCodeHash;
use auth::scope::ScopeSet;
use auth::session::SessionId;
use auth::totp::{TotpError, TotpSecret};
use model::{ResourceId, Timestamp};
use serde_json::Value;
use store::{Account, AccountId, Challenge, FailureCounter, Role, Session};

use super::{Caller, Via, new_secret, plus_secs, unix};
use crate::trail::{Action, Category, Event};
use crate::{AppError, Principal, Vigil};

/// How long the step between the password and the second factor may take.
const PENDING_SECS: u64 = 5 * 60;
/// How long a user who must enrol a second factor has to do it.
const ENROL_SECS: u64 = 15 * 60;
/// Sensitive actions need a sign-in at most this old.
pub const REAUTH_SECS: u64 = 15 * 60;
/// A WebAuthn ceremony's lifetime.
const CEREMONY_SECS: u64 = 5 * 60;

pub(crate) const PURPOSE_SECOND_FACTOR: &str = "signin";
pub(crate) const PURPOSE_ENROL_FACTOR: &str = "enrol-factor";
const PURPOSE_PASSKEY_SIGNIN: &str = "passkey-signin";

/// A session just created: the cookie value (for `__Host-vigil_session`)
/// and the CSRF token its forms carry.
#[derive(Clone)]
pub struct NewSession {
    pub cookie: String,
    pub csrf: String,
    pub account: AccountId,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// What comes after a correct password.
#[derive(Debug, Clone)]
pub enum SignInStep {
    Done(NewSession),
    /// A second factor is due. `pending` goes in a short-lived cookie.
    SecondFactor {
        pending: String,
        totp: bool,
        passkey: bool,
        recovery: bool,
        /// The account's role must use its passkey.
        passkey_only: bool,
    },
    /// The account must enrol a second factor before it gets a session.
    Enrol {
        pending: String,
        passkey_only: bool,
    },
}

/// Why a sign-in step failed. The messages are what the page shows.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Wrong user name or password (deliberately the same answer for both).
    #[error("the user name or password is not right")]
    Refused,
    #[error("that code is not right")]
    WrongCode,
    #[error("that code was already used; wait for the next one")]
    CodeReplayed,
    #[error("too many failed attempts; try again in {retry_after_secs} seconds")]
    Throttled { retry_after_secs: u64 },
    #[error(
        "this sign-in method is locked after too many failures; use another factor, a recovery code, or ask an administrator"
    )]
    FactorDisabled,
    #[error("this account has been deactivated")]
    Deactivated,
    #[error("this sign-in has expired; start again")]
    Expired,
    #[error("your role must sign in with a passkey")]
    UsePasskey,
    #[error("the passkey was not accepted")]
    PasskeyRefused,
    #[error("password refused: {0}")]
    Password(auth::password::PasswordRefusal),
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<store::StoreError> for SignInError {
    fn from(e: store::StoreError) -> SignInError {
        SignInError::App(AppError::Store(e))
    }
}

/// A live session, as a request sees it.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub caller: Caller,
    pub account: Account,
    /// When the user proved who they are for this session (its sign-in).
    pub signed_in_at: Timestamp,
    /// The CSRF token this session's forms must carry.
    pub csrf: String,
}

/// Why a session cookie does not sign anyone in.
#[derive(Debug)]
pub enum SessionProblem {
    /// No cookie, a malformed one, or an unknown session.
    Missing,
    /// Idle or absolute timeout, or signed out.
    Expired,
    /// The account was deactivated.
    Deactivated,
    Failed(AppError),
}

impl From<store::StoreError> for SessionProblem {
    fn from(e: store::StoreError) -> SessionProblem {
        SessionProblem::Failed(AppError::Store(e))
    }
}

impl From<AppError> for SessionProblem {
    fn from(e: AppError) -> SessionProblem {
        SessionProblem::Failed(e)
    }
}

/// The second factors an account has.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Factors {
    pub totp: bool,
    pub passkey: bool,
    pub recovery: bool,
}

impl Factors {
    pub(crate) fn any(self) -> bool {
        self.totp || self.passkey
    }
}

/// The scopes a first-party session carries: everything for the workforce
/// (the access policy narrows it), the patient's own compartment for a patient.
pub(crate) fn session_scopes(role: Role) -> ScopeSet {
    let s = if role == Role::Patient {
        "patient/*.rs"
    } else {
        "user/*.cruds"
    };
    ScopeSet::parse(s).unwrap_or_default()
}

impl Vigil {
    pub(crate) async fn factors_of(&self, id: &AccountId) -> Result<Factors, AppError> {
        let creds = self.store.credentials(id).await?;
        Ok(Factors {
            totp: creds.totp_secret.is_some(),
            passkey: !self.store.passkeys(id).await?.is_empty(),
            recovery: !self.store.recovery_codes(id).await?.is_empty(),
        })
    }

    /// Refuses while a counter says wait or disabled.
    fn gate(counter: &FailureCounter, now: Timestamp) -> Result<(), SignInError> {
        if counter.disabled {
            return Err(SignInError::FactorDisabled);
        }
        match counter.next_allowed_at {
            Some(t) if now < t => Err(SignInError::Throttled {
                retry_after_secs: unix(t).saturating_sub(unix(now)).max(1),
            }),
            _ => Ok(()),
        }
    }

    fn failed(
        policy: &auth::throttle::ThrottlePolicy,
        counter: &FailureCounter,
        now: Timestamp,
    ) -> FailureCounter {
        let failures = counter.failures.saturating_add(1);
        let delay = policy.delay_after(failures);
        FailureCounter {
            failures,
            next_allowed_at: (delay > 0).then(|| plus_secs(now, delay)),
            disabled: policy.check(
                &auth::throttle::FailureState {
                    consecutive_failures: failures,
                    last_failure_unix: None,
                },
                unix(now),
            ) == auth::throttle::Attempt::Disabled,
        }
    }

    async fn address_gate(&self, addr: &str, now: Timestamp) -> Result<(), SignInError> {
        let c = self.store.address_failures(&address_key(addr)).await?;
        // Addresses are throttled, never locked out.
        Self::gate(
            &FailureCounter {
                disabled: false,
                ..c
            },
            now,
        )
    }

    async fn address_failed(&self, addr: &str, now: Timestamp) -> Result<(), AppError> {
        let id = self.identity()?;
        let key = address_key(addr);
        let mut c = self.store.address_failures(&key).await?;
        // An hour without failures forgives an address.
        if c.next_allowed_at
            .is_some_and(|t| now.0 > t.0.saturating_add(3_600_000_000))
        {
            c = FailureCounter::default();
        }
        let mut next = Self::failed(&id.address_throttle, &c, now);
        next.disabled = false;
        self.store.put_address_failures(&key, &next).await?;
        Ok(())
    }

    /// Counts a failure of `factor` for an account (or, for an unknown user
    /// name, under a keyed hash of that name, so both throttle alike).
    async fn factor_failed(
        &self,
        subject: &FactorSubject,
        factor: &str,
        now: Timestamp,
    ) -> Result<(), AppError> {
        let id = self.identity()?;
        match subject {
            FactorSubject::Account(a) => {
                let c = self.store.factor_failures(a, factor).await?;
                let next = Self::failed(&id.factor_throttle, &c, now);
                if next.disabled && !c.disabled {
                    tracing::warn!(account = %a, factor, "factor disabled after repeated failures");
                }
                self.store.put_factor_failures(a, factor, &next).await?;
            }
            FactorSubject::Unknown(key) => {
                let c = self.store.address_failures(key).await?;
                let next = Self::failed(&id.factor_throttle, &c, now);
                self.store.put_address_failures(key, &next).await?;
            }
        }
        Ok(())
    }

    async fn factor_counter(
        &self,
        subject: &FactorSubject,
        factor: &str,
    ) -> Result<FailureCounter, AppError> {
        Ok(match subject {
            FactorSubject::Account(a) => self.store.factor_failures(a, factor).await?,
            FactorSubject::Unknown(key) => self.store.address_failures(key).await?,
        })
    }

    pub(crate) async fn factor_succeeded(
        &self,
        account: &AccountId,
        factors: &[&str],
    ) -> Result<(), AppError> {
        for f in factors {
            let c = self.store.factor_failures(account, f).await?;
            if c != FailureCounter::default() {
                self.store
                    .put_factor_failures(account, f, &FailureCounter::default())
                    .await?;
            }
        }
        Ok(())
    }

    fn unknown_user_key(&self, username: &str) -> Result<String, AppError> {
        let id = self.identity()?;
        let mac = auth::session::keyed_digest(&id.csrf, b"unknown-user", username.as_bytes());
        Ok(format!("user:{}", super::hex(&mac)))
    }

    /// Step one: user name and password, from client address `addr`.
    async fn sign_in_password_unaudited(
        &self,
        username: &str,
        password: &str,
        addr: &str,
    ) -> Result<SignInStep, SignInError> {
        let id = self.identity()?;
        let now = self.now();
        self.address_gate(addr, now).await?;
        let username = auth::password::normalise(username);
        if username.is_empty() || username.len() > 200 || password.len() > 4096 {
            return Err(SignInError::Refused);
        }
        let account = self.store.account_by_username(&username).await?;
        let subject = match &account {
            Some(a) => FactorSubject::Account(a.id.clone()),
            None => FactorSubject::Unknown(self.unknown_user_key(&store::username_key(&username))?),
        };
        Self::gate(&self.factor_counter(&subject, "password").await?, now)?;
        let phc = match &account {
            Some(a) => self.store.credentials(&a.id).await?.password_hash,
            None => None,
        };
        let verified = match phc.as_deref().and_then(|p| std::str::from_utf8(p).ok()) {
            Some(phc) => id.hash.verify(password, phc, &id.pepper).ok(),
            None => {
                // The same Argon2 work as a real check: timing reveals nothing.
                let _ = id.hash.verify_unknown_account(password, &id.pepper);
                None
            }
        };
        let (Some(account), Some(verified)) = (account, verified) else {
            self.factor_failed(&subject, "password", now).await?;
            self.address_failed(addr, now).await?;
            return Err(SignInError::Refused);
        };
        if !account.active {
            return Err(SignInError::Deactivated);
        }
        self.factor_succeeded(&account.id, &["password"]).await?;
        if verified.needs_rehash {
            let phc = id
                .hash
                .hash(password, &id.pepper, &mut rand::rngs::OsRng)
                .map_err(|e| AppError::Keys(format!("password hash: {e}")))?;
            self.store
                .set_password_hash(&account.id, phc.as_bytes())
                .await?;
            tracing::info!(account = %account.id, "password re-hashed with current parameters");
        }
        self.after_password(&account).await
    }

    /// What an account needs once its password was accepted.
    pub(crate) async fn after_password(
        &self,
        account: &Account,
    ) -> Result<SignInStep, SignInError> {
        let id = self.identity()?;
        let factors = self.factors_of(&account.id).await?;
        let passkey_only = id.needs_passkey(account.role);
        if factors.any() {
            let pending = self
                .pending(account, PURPOSE_SECOND_FACTOR, PENDING_SECS)
                .await?;
            return Ok(SignInStep::SecondFactor {
                pending,
                totp: factors.totp && !passkey_only,
                passkey: factors.passkey,
                recovery: factors.recovery,
                passkey_only: passkey_only && factors.passkey,
            });
        }
        if id.needs_mfa(account.role) || passkey_only {
            let pending = self
                .pending(account, PURPOSE_ENROL_FACTOR, ENROL_SECS)
                .await?;
            return Ok(SignInStep::Enrol {
                pending,
                passkey_only,
            });
        }
        Ok(SignInStep::Done(self.start_session(account).await?))
    }

    async fn pending(
        &self,
        account: &Account,
        purpose: &str,
        secs: u64,
    ) -> Result<String, AppError> {
        let (secret, hash) = new_secret();
        self.store
            .put_challenge(
                &hash,
                &Challenge {
                    purpose: purpose.to_owned(),
                    account: Some(account.id.clone()),
                    payload: Vec::new(),
                    expires: plus_secs(self.now(), secs),
                },
            )
            .await?;
        Ok(secret)
    }

    /// The account behind a pending step, if it is still valid and active.
    pub(crate) async fn pending_account(
        &self,
        pending: &str,
        purpose: &str,
    ) -> Result<Account, SignInError> {
        let hash = crypto::token_hash(pending);
        let c = self
            .store
            .challenge(&hash, purpose, self.now())
            .await?
            .ok_or(SignInError::Expired)?;
        let id = c.account.ok_or(SignInError::Expired)?;
        let a = self.store.account(&id).await?.ok_or(SignInError::Expired)?;
        if !a.active {
            return Err(SignInError::Deactivated);
        }
        Ok(a)
    }

    /// Ends a pending step (once: a second caller gets `Expired`) and signs in.
    async fn complete_pending(
        &self,
        pending: &str,
        purpose: &str,
        account: &Account,
    ) -> Result<NewSession, SignInError> {
        let hash = crypto::token_hash(pending);
        self.store
            .take_challenge(&hash, purpose, self.now())
            .await?
            .ok_or(SignInError::Expired)?;
        Ok(self.start_session(account).await?)
    }

    /// Step two, whichever code: the pending step must be live, a role that
    /// must use its passkey cannot fall back to codes, and the step ends once.
    async fn second_factor(
        &self,
        pending: &str,
        addr: &str,
        factor: SecondFactor<'_>,
    ) -> Result<NewSession, SignInError> {
        self.address_gate(addr, self.now()).await?;
        let account = self.pending_account(pending, PURPOSE_SECOND_FACTOR).await?;
        if self.identity()?.needs_passkey(account.role)
            && self.factors_of(&account.id).await?.passkey
        {
            return Err(SignInError::UsePasskey);
        }
        match factor {
            SecondFactor::Totp(code) => self.check_totp(&account, code).await?,
            SecondFactor::Recovery(code) => self.check_recovery_code(&account, code).await?,
        }
        self.complete_pending(pending, PURPOSE_SECOND_FACTOR, &account)
            .await
    }

    /// Checks a TOTP code of an account (throttled; each code once).
    pub(crate) async fn check_totp(
        &self,
        account: &Account,
        code: &str,
    ) -> Result<(), SignInError> {
        let now = self.now();
        let subject = FactorSubject::Account(account.id.clone());
        Self::gate(&self.factor_counter(&subject, "totp").await?, now)?;
        let creds = self.store.credentials(&account.id).await?;
        let Some(sealed) = creds.totp_secret else {
            return Err(SignInError::WrongCode);
        };
        let secret = self.open_totp(&account.id, &sealed).await?;
        match auth::totp::verify(code, &secret, unix(now), creds.totp_last_step) {
            Ok(step) => {
                if !self
                    .store
                    .advance_totp_step(&account.id, creds.totp_last_step, step)
                    .await?
                {
                    // Another request used a code of this step first.
                    return Err(SignInError::CodeReplayed);
                }
                self.factor_succeeded(&account.id, &["totp"]).await?;
                Ok(())
            }
            Err(TotpError::Replayed) => {
                self.factor_failed(&subject, "totp", now).await?;
                Err(SignInError::CodeReplayed)
            }
            Err(_) => {
                self.factor_failed(&subject, "totp", now).await?;
                Err(SignInError::WrongCode)
            }
        }
    }

    pub(crate) async fn open_totp(
        &self,
        account: &AccountId,
        sealed: &[u8],
    ) -> Result<TotpSecret, AppError> {
        let bytes = zeroize::Zeroizing::new(
            self.open_private(&format!("totp|{account}"), sealed)
                .await?,
        );
        let arr: [u8; auth::totp::SECRET_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| AppError::Integrity("stored TOTP secret".into()))?;
        Ok(TotpSecret::from_bytes(arr))
    }

    pub(crate) async fn check_recovery_code(
        &self,
        account: &Account,
        code: &str,
    ) -> Result<(), SignInError> {
        let now = self.now();
        let id = self.identity()?;
        let subject = FactorSubject::Account(account.id.clone());
        Self::gate(&self.factor_counter(&subject, "recovery").await?, now)?;
        let stored = self.store.recovery_codes(&account.id).await?;
        let hashes: Vec<RecoveryCodeHash> = stored
            .iter()
            .filter_map(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
            .map(RecoveryCodeHash::from_bytes)
            .collect();
        let hit = auth::recovery::verify(code, &hashes, &id.pepper)
            .ok()
            .and_then(|i| hashes.get(i));
        let Some(hit) = hit else {
            self.factor_failed(&subject, "recovery", now).await?;
            return Err(SignInError::WrongCode);
        };
        if !self
            .store
            .consume_recovery_code(&account.id, hit.as_bytes())
            .await?
        {
            return Err(SignInError::CodeReplayed);
        }
        self.factor_succeeded(&account.id, &["recovery", "totp", "passkey"])
            .await?;
        tracing::info!(account = %account.id, "recovery code used");
        Ok(())
    }

    /// Starts a passkey sign-in for `username` at the page's `origin`.
    /// Returns the browser's options and the ceremony id.
    pub async fn passkey_sign_in_start(
        &self,
        origin: &str,
        username: &str,
        addr: &str,
    ) -> Result<(Value, String), SignInError> {
        let now = self.now();
        self.address_gate(addr, now).await?;
        let username = auth::password::normalise(username);
        let account = self
            .store
            .account_by_username(&username)
            .await?
            .filter(|a| a.active);
        let stored: Vec<Vec<u8>> = match &account {
            Some(a) => self.passkey_data(&a.id).await?,
            None => Vec::new(),
        };
        // An unknown user name, or one without passkeys, gets the same kind
        // of answer (options no credential can satisfy): the reply does not
        // tell who exists.
        let account = account.filter(|_| !stored.is_empty());
        let rp = self.identity()?.passkeys(origin)?;
        let (options, state) = rp
            .start_authentication(&stored)
            .map_err(|_| SignInError::PasskeyRefused)?;
        let (secret, hash) = new_secret();
        let payload = match &account {
            Some(a) => {
                self.seal_private(&format!("{PURPOSE_PASSKEY_SIGNIN}|{}", a.id), &state)
                    .await?
            }
            None => Vec::new(),
        };
        self.store
            .put_challenge(
                &hash,
                &Challenge {
                    purpose: PURPOSE_PASSKEY_SIGNIN.to_owned(),
                    account: account.map(|a| a.id),
                    payload,
                    expires: plus_secs(now, CEREMONY_SECS),
                },
            )
            .await?;
        Ok((options, secret))
    }

    /// Finishes a passkey sign-in. A passkey with user verification is
    /// multi-factor by itself, so this signs in at once (and, during a
    /// pending second-factor step, completes it).
    async fn passkey_sign_in_finish_unaudited(
        &self,
        origin: &str,
        ceremony: &str,
        credential: &Value,
        addr: &str,
    ) -> Result<NewSession, SignInError> {
        let now = self.now();
        self.address_gate(addr, now).await?;
        let hash = crypto::token_hash(ceremony);
        let c = self
            .store
            .take_challenge(&hash, PURPOSE_PASSKEY_SIGNIN, now)
            .await?
            .ok_or(SignInError::Expired)?;
        let Some(account_id) = c.account else {
            self.address_failed(addr, now).await?;
            return Err(SignInError::PasskeyRefused);
        };
        let account = self
            .store
            .account(&account_id)
            .await?
            .ok_or(SignInError::Expired)?;
        if !account.active {
            return Err(SignInError::Deactivated);
        }
        let subject = FactorSubject::Account(account.id.clone());
        Self::gate(&self.factor_counter(&subject, "passkey").await?, now)?;
        let state = zeroize::Zeroizing::new(
            self.open_private(
                &format!("{PURPOSE_PASSKEY_SIGNIN}|{}", account.id),
                &c.payload,
            )
            .await?,
        );
        let stored = self.passkey_data(&account.id).await?;
        let rp = self.identity()?.passkeys(origin)?;
        let done = match rp.finish_authentication(&state, credential, &stored) {
            Ok(done) => done,
            Err(e) => {
                tracing::info!(account = %account.id, error = %e, "passkey refused");
                self.factor_failed(&subject, "passkey", now).await?;
                self.address_failed(addr, now).await?;
                return Err(SignInError::PasskeyRefused);
            }
        };
        if let Some(updated) = done.updated {
            let sealed = self
                .seal_private(&passkey_aad(&account.id, &done.credential_id), &updated)
                .await?;
            self.store
                .update_passkey(&done.credential_id, &sealed, now)
                .await?;
        } else {
            // Record the use even when the data did not change.
            if let Some(p) = self
                .store
                .passkeys(&account.id)
                .await?
                .into_iter()
                .find(|p| p.credential_id == done.credential_id)
            {
                self.store
                    .update_passkey(&p.credential_id, &p.data, now)
                    .await?;
            }
        }
        self.factor_succeeded(&account.id, &["passkey", "totp", "recovery", "password"])
            .await?;
        Ok(self.start_session(&account).await?)
    }

    /// The decrypted passkeys of an account (webauthn-rs's serialised form).
    pub(crate) async fn passkey_data(&self, account: &AccountId) -> Result<Vec<Vec<u8>>, AppError> {
        let mut out = Vec::new();
        for p in self.store.passkeys(account).await? {
            out.push(
                self.open_private(&passkey_aad(account, &p.credential_id), &p.data)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Creates a session (a new id every time: sign-in never reuses an id
    /// the browser brought, so fixation is impossible).
    pub(crate) async fn start_session(&self, account: &Account) -> Result<NewSession, AppError> {
        let id = self.identity()?;
        let policy = id.session_policy(account.role);
        let now = self.now();
        let sid = SessionId::generate(&mut rand::rngs::OsRng);
        let session = Session {
            id_hash: *sid.hash().as_bytes(),
            account: account.id.clone(),
            created: now,
            last_seen: now,
            absolute_expiry: plus_secs(now, policy.absolute_timeout().as_secs()),
            idle_timeout_secs: u32::try_from(policy.idle_timeout().as_secs()).unwrap_or(u32::MAX),
            csrf_hash: None,
            revoked: false,
        };
        if !self.store.create_session(&session).await? {
            return Err(AppError::Unauthenticated);
        }
        self.audit_event(
            &account_principal(account),
            Category::Security,
            "login",
            Action::E,
            Some(&account.id),
            None,
        )
        .await?;
        tracing::info!(account = %account.id, "signed in");
        Ok(NewSession {
            cookie: sid.to_cookie_value().to_string(),
            csrf: auth::session::csrf_token(&id.csrf, &sid)
                .as_str()
                .to_owned(),
            account: account.id.clone(),
        })
    }

    /// The session behind a cookie value, refreshed (idle timer) if live.
    pub async fn session(&self, cookie: &str) -> Result<SessionView, SessionProblem> {
        let id = self.identity()?;
        let sid = SessionId::from_cookie_value(cookie).map_err(|_| SessionProblem::Missing)?;
        let hash = *sid.hash().as_bytes();
        let s = self
            .store
            .session(&hash)
            .await?
            .ok_or(SessionProblem::Missing)?;
        let account = self
            .store
            .account(&s.account)
            .await?
            .ok_or(SessionProblem::Missing)?;
        if !account.active {
            return Err(SessionProblem::Deactivated);
        }
        let now = self.now();
        if !s.is_live(now) {
            return Err(SessionProblem::Expired);
        }
        // Touch at most every 30 s (or a tenth of the idle timeout): one
        // write per page view would serialise every reader on SQLite.
        let every = (i64::from(s.idle_timeout_secs) * 100_000).min(30_000_000);
        if now.0.saturating_sub(s.last_seen.0) >= every {
            self.store.touch_session(&hash, now).await?;
        }
        Ok(SessionView {
            caller: Caller {
                account: Some(account.id.clone()),
                role: Some(account.role),
                username: Some(account.username.clone()),
                client_id: None,
                scopes: session_scopes(account.role),
                patient: patient_context(&account),
                via: Via::Session,
                practitioner: account.practitioner.clone(),
                own_patient: patient_context(&account),
                // Workforce sign-in requires a second factor; a patient's
                // session has one when the account enrolled one.
                mfa: account.role != store::Role::Patient,
            },
            csrf: auth::session::csrf_token(&id.csrf, &sid)
                .as_str()
                .to_owned(),
            account,
            signed_in_at: s.created,
        })
    }

    /// Whether the session's sign-in is recent enough for a sensitive action
    /// (managing accounts and apps now; break-the-glass, export and policy
    /// edits when those capabilities land). Otherwise the user signs in
    /// again, which also gives the session a new id.
    pub fn recently_signed_in(&self, view: &SessionView) -> bool {
        self.now().0.saturating_sub(view.signed_in_at.0)
            < i64::try_from(REAUTH_SECS).unwrap_or(i64::MAX) * 1_000_000
    }

    /// Whether `token` is the CSRF token of the session `cookie` (constant time).
    pub fn check_csrf(&self, cookie: &str, token: &str) -> bool {
        let Ok(id) = self.identity() else {
            return false;
        };
        let Ok(sid) = SessionId::from_cookie_value(cookie) else {
            return false;
        };
        auth::session::verify_csrf(&id.csrf, &sid, token).is_ok()
    }

    /// Signs out: the session is revoked server-side.
    pub async fn sign_out(&self, cookie: &str) -> Result<(), AppError> {
        if let Ok(sid) = SessionId::from_cookie_value(cookie) {
            self.store.revoke_session(sid.hash().as_bytes()).await?;
        }
        Ok(())
    }

    /// Housekeeping a server runs now and then: expired sessions, challenges
    /// and tokens.
    pub async fn delete_expired_identity_data(&self) -> Result<u64, AppError> {
        let now = self.now();
        Ok(self.store.delete_expired_sessions(now).await?
            + self.store.delete_expired_challenges(now).await?
            + self.store.delete_expired_tokens(now).await?)
    }
}

/// An account as the agent of its own security events.
pub(crate) fn account_principal(account: &Account) -> Principal {
    Principal::User(Caller {
        account: Some(account.id.clone()),
        role: Some(account.role),
        username: None,
        client_id: None,
        scopes: ScopeSet::default(),
        patient: None,
        via: Via::Session,
        practitioner: None,
        own_patient: None,
        mfa: false,
    })
}

/// Someone not (yet) signed in.
fn anonymous() -> Principal {
    Principal::User(Caller {
        account: None,
        role: None,
        username: None,
        client_id: None,
        scopes: ScopeSet::default(),
        patient: None,
        via: Via::Session,
        practitioner: None,
        own_patient: None,
        mfa: false,
    })
}

impl Vigil {
    /// Records a failed sign-in step (with the account when it is known),
    /// then returns the error.
    async fn login_failed<T>(
        &self,
        account: Option<&Account>,
        e: SignInError,
    ) -> Result<T, SignInError> {
        if let SignInError::App(_) = e {
            return Err(e);
        }
        let who = account.map_or_else(anonymous, account_principal);
        let mut ev = Event::new(Category::Security, "login", Action::E);
        ev.account = account.map(|a| a.id.to_string());
        ev.failure = Some((4, format!("401 {e}")));
        self.audit(&who, ev).await?;
        Err(e)
    }

    /// Step one: user name and password, from client address `addr`.
    pub async fn sign_in_password(
        &self,
        username: &str,
        password: &str,
        addr: &str,
    ) -> Result<SignInStep, SignInError> {
        match self
            .sign_in_password_unaudited(username, password, addr)
            .await
        {
            Ok(step) => Ok(step),
            Err(e) => {
                let u = auth::password::normalise(username);
                let account = if u.is_empty() || u.len() > 200 {
                    None
                } else {
                    self.store.account_by_username(&u).await?
                };
                self.login_failed(account.as_ref(), e).await
            }
        }
    }

    /// Step two with a TOTP code.
    pub async fn sign_in_totp(
        &self,
        pending: &str,
        code: &str,
        addr: &str,
    ) -> Result<NewSession, SignInError> {
        self.second_factor_audited(pending, addr, SecondFactor::Totp(code))
            .await
    }

    /// Step two with a recovery code (each works once). It also unlocks the
    /// account's other factors.
    pub async fn sign_in_recovery(
        &self,
        pending: &str,
        code: &str,
        addr: &str,
    ) -> Result<NewSession, SignInError> {
        self.second_factor_audited(pending, addr, SecondFactor::Recovery(code))
            .await
    }

    /// Step two, with a failure recorded against the pending account.
    async fn second_factor_audited(
        &self,
        pending: &str,
        addr: &str,
        factor: SecondFactor<'_>,
    ) -> Result<NewSession, SignInError> {
        match self.second_factor(pending, addr, factor).await {
            Ok(s) => Ok(s),
            Err(e) => {
                let a = self
                    .pending_account(pending, PURPOSE_SECOND_FACTOR)
                    .await
                    .ok();
                self.login_failed(a.as_ref(), e).await
            }
        }
    }

    /// Finishes a passkey sign-in.
    pub async fn passkey_sign_in_finish(
        &self,
        origin: &str,
        ceremony: &str,
        credential: &Value,
        addr: &str,
    ) -> Result<NewSession, SignInError> {
        match self
            .passkey_sign_in_finish_unaudited(origin, ceremony, credential, addr)
            .await
        {
            Ok(s) => Ok(s),
            Err(e) => self.login_failed(None, e).await,
        }
    }
}

/// The patient a patient account acts for.
pub(crate) fn patient_context(account: &Account) -> Option<ResourceId> {
    (account.role == Role::Patient)
        .then(|| account.patient.clone())
        .flatten()
}

pub(crate) fn passkey_aad(account: &AccountId, credential_id: &[u8]) -> String {
    format!("passkey|{account}|{}", super::hex(credential_id))
}

fn address_key(addr: &str) -> String {
    format!("ip:{addr}")
}

/// A code given at the second step.
enum SecondFactor<'a> {
    Totp(&'a str),
    Recovery(&'a str),
}

enum FactorSubject {
    Account(AccountId),
    /// A user name with no account, by keyed hash.
    Unknown(String),
}
