//! Accounts: creation, enrolment links, first-run set-up, listing,
//! deactivation, second factors, passwords and their reset.

use auth::password::{Context as PasswordContext, PasswordRefusal};
use auth::totp::TotpSecret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fhir::IssueCode;
use model::{ResourceId, ResourceType, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{Account, AccountId, Challenge, Role, StoredPasskey};

use super::signin::{
    Factors, PURPOSE_ENROL_FACTOR, PURPOSE_SECOND_FACTOR, account_principal, passkey_aad,
};
use super::{NewSession, SignInError, SignInStep, new_secret, plus_secs};
use crate::trail::{Action, Category};
use crate::{AppError, Principal, Vigil};

const PURPOSE_ENROLMENT: &str = "enrolment";
const PURPOSE_RESET: &str = "password-reset";
const PURPOSE_TOTP_ENROL: &str = "totp-enrol";
const PURPOSE_PASSKEY_REGISTER: &str = "passkey-register";
/// Enrolment links last a week; reset links an hour.
const ENROLMENT_SECS: u64 = 7 * 24 * 3600;
const RESET_SECS: u64 = 3600;
const CEREMONY_SECS: u64 = 15 * 60;
const MAX_PASSKEYS: usize = 10;

/// An account to create.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub username: String,
    pub role: Role,
    pub practitioner: Option<ResourceId>,
    pub patient: Option<ResourceId>,
    pub display_name: Option<String>,
    pub email: Option<String>,
}

/// The private part of an account, sealed in `Account::profile`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Profile {
    display_name: Option<String>,
    email: Option<String>,
}

/// One line of the account list.
#[derive(Debug, Clone)]
pub struct AccountSummary {
    pub id: AccountId,
    pub username: String,
    pub role: Role,
    pub active: bool,
    pub created: Timestamp,
    pub practitioner: Option<ResourceId>,
    pub patient: Option<ResourceId>,
    pub totp: bool,
    pub passkeys: usize,
    pub recovery_codes: usize,
}

/// A registered passkey as the account page shows it.
#[derive(Debug, Clone)]
pub struct PasskeyView {
    /// The credential id, base64url.
    pub id: String,
    pub name: String,
    pub created: Timestamp,
    pub last_used: Option<Timestamp>,
}

/// What the account page shows.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub summary: AccountSummary,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub passkeys: Vec<PasskeyView>,
    pub passkey_required: bool,
    pub mfa_required: bool,
}

fn invalid(msg: impl Into<String>) -> AppError {
    AppError::unprocessable(IssueCode::Invalid, msg)
}

fn refusal(r: PasswordRefusal) -> AppError {
    AppError::unprocessable(IssueCode::Invalid, format!("password refused: {r}"))
}

fn forbidden() -> AppError {
    AppError::Forbidden("this needs an administrator".into())
}

/// `NFKC`, 3 to 64 code points, no spaces or control characters.
fn check_username(raw: &str) -> Result<String, AppError> {
    let u = auth::password::normalise(raw.trim());
    let n = u.chars().count();
    if !(3..=64).contains(&n) || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("a user name has 3 to 64 characters and no spaces"));
    }
    Ok(u)
}

fn check_email(e: &str) -> Result<String, AppError> {
    let e = e.trim();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    if ok {
        Ok(e.to_owned())
    } else {
        Err(invalid("the e-mail address is not valid"))
    }
}

impl Vigil {
    /// Administrators (signed in) and operators at the CLI manage accounts.
    pub(crate) fn require_admin(&self, who: &Principal) -> Result<(), AppError> {
        match who {
            Principal::Operator => Ok(()),
            Principal::User(c) if c.role == Some(Role::Administrator) => Ok(()),
            _ => Err(forbidden()),
        }
    }

    /// Checks `password` for an account (or one about to be created) and
    /// says why it is refused.
    pub fn check_password(
        &self,
        username: &str,
        display_name: Option<&str>,
        role: Role,
        password: &str,
    ) -> Result<(), PasswordRefusal> {
        let Ok(id) = self.identity() else {
            return Err(PasswordRefusal::Common);
        };
        let ctx = PasswordContext {
            username,
            real_name: display_name.unwrap_or(""),
            organisation: &id.cfg.organisation,
            // Workforce accounts always have (or must enrol) a second factor.
            has_second_factor: id.needs_mfa(role) || id.needs_passkey(role),
        };
        id.policy.check(password, &ctx)
    }

    /// The shortest password `role` may have.
    pub fn password_min_length(&self, role: Role) -> usize {
        self.identity().map_or(15, |id| {
            id.policy
                .min_len(id.needs_mfa(role) || id.needs_passkey(role))
        })
    }

    pub fn password_max_length(&self) -> usize {
        self.identity().map_or(64, |id| id.policy.max_len())
    }

    /// Creates an account. With `password`, it is checked by the policy and
    /// set; without, the user sets one from an enrolment link.
    pub async fn create_account(
        &self,
        who: &Principal,
        new: NewAccount,
        password: Option<&str>,
    ) -> Result<AccountId, AppError> {
        self.require_admin(who)?;
        let id = self.identity()?;
        let username = check_username(&new.username)?;
        match (new.role, &new.practitioner, &new.patient) {
            (Role::Patient, None, Some(_)) => {}
            (Role::Patient, _, _) => {
                return Err(invalid("a patient account links to a Patient (--patient)"));
            }
            (_, _, Some(_)) => {
                return Err(invalid("only patient accounts link to a Patient"));
            }
            _ => {}
        }
        if let Some(p) = &new.patient {
            self.read(&Principal::Operator, ResourceType::Patient, p)
                .await
                .map_err(|_| invalid("the linked Patient does not exist"))?;
        }
        if let Some(p) = &new.practitioner {
            self.read(&Principal::Operator, ResourceType::Practitioner, p)
                .await
                .map_err(|_| invalid("the linked Practitioner does not exist"))?;
        }
        let display_name = new
            .display_name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        if display_name.is_some_and(|d| d.chars().count() > 200) {
            return Err(invalid("the display name is too long"));
        }
        let email = new.email.as_deref().map(check_email).transpose()?;
        let phc = match password {
            Some(pw) => {
                self.check_password(&username, display_name, new.role, pw)
                    .map_err(refusal)?;
                Some(
                    id.hash
                        .hash(pw, &id.pepper, &mut rand::rngs::OsRng)
                        .map_err(|e| AppError::Keys(format!("password hash: {e}")))?,
                )
            }
            None => None,
        };
        let account_id = AccountId::new(super::random_hex())
            .ok_or_else(|| AppError::Keys("account id".into()))?;
        let profile = self
            .seal_json(
                &format!("profile|{account_id}"),
                &Profile {
                    display_name: display_name.map(str::to_owned),
                    email,
                },
            )
            .await?;
        let account = Account {
            id: account_id.clone(),
            username,
            role: new.role,
            practitioner: new.practitioner,
            patient: new.patient,
            active: true,
            created: self.now(),
            deactivated: None,
            profile,
        };
        self.store
            .create_account(&account)
            .await
            .map_err(|e| match e {
                store::StoreError::UsernameTaken => {
                    AppError::Conflict("that user name is already taken".into())
                }
                e => AppError::Store(e),
            })?;
        if let Some(phc) = phc {
            self.store
                .set_password_hash(&account_id, phc.as_bytes())
                .await?;
        }
        self.audit_event(
            who,
            Category::Administration,
            "account-create",
            Action::C,
            Some(&account_id),
            None,
        )
        .await?;
        tracing::info!(account = %account_id, role = %account.role, "account created");
        Ok(account_id)
    }

    /// Whether an active administrator exists (first-run set-up is over).
    pub async fn has_administrator(&self) -> Result<bool, AppError> {
        let mut after: Option<AccountId> = None;
        loop {
            let page = self.store.accounts(after.as_ref(), 500).await?;
            if page
                .iter()
                .any(|a| a.active && a.role == Role::Administrator)
            {
                return Ok(true);
            }
            match page.last() {
                Some(a) => after = Some(a.id.clone()),
                None => return Ok(false),
            }
        }
    }

    /// First-run set-up: the holder of the bootstrap token creates the first
    /// administrator. Refused once an administrator exists.
    pub async fn set_up_first_administrator(
        &self,
        bootstrap_token: &str,
        new: NewAccount,
        password: &str,
    ) -> Result<SignInStep, SignInError> {
        if !self.bootstrap_matches(bootstrap_token) {
            return Err(SignInError::Refused);
        }
        if self.has_administrator().await? {
            return Err(SignInError::App(AppError::Forbidden(
                "set-up is complete: an administrator exists".into(),
            )));
        }
        let new = NewAccount {
            role: Role::Administrator,
            patient: None,
            ..new
        };
        let id = self
            .create_account(&Principal::Operator, new, Some(password))
            .await?;
        let account = self.store.account(&id).await?.ok_or(SignInError::Expired)?;
        tracing::info!(account = %id, "first administrator set up with the bootstrap token");
        self.after_password(&account).await
    }

    /// The display name an account shows (sealed in its profile).
    pub(crate) async fn display_name(&self, a: &Account) -> Result<Option<String>, AppError> {
        Ok(self.profile(a).await?.display_name)
    }

    async fn profile(&self, a: &Account) -> Result<Profile, AppError> {
        if a.profile.is_empty() {
            return Ok(Profile::default());
        }
        self.open_json(&format!("profile|{}", a.id), &a.profile)
            .await
    }

    /// Sends (through the outbox) a link with which the user sets a password
    /// and enrols their factors. `site` is the public base, e.g.
    /// `https://vigil.example`.
    pub async fn send_enrolment(
        &self,
        who: &Principal,
        id: &AccountId,
        site: &str,
    ) -> Result<(), AppError> {
        self.require_admin(who)?;
        let a = self
            .store
            .account(id)
            .await?
            .filter(|a| a.active)
            .ok_or_else(|| AppError::NotFound("no such active account".into()))?;
        let profile = self.profile(&a).await?;
        let to = profile
            .email
            .ok_or_else(|| invalid("the account has no e-mail address"))?;
        self.store
            .delete_challenges_of(id, PURPOSE_ENROLMENT)
            .await?;
        let (secret, hash) = new_secret();
        self.store
            .put_challenge(
                &hash,
                &Challenge {
                    purpose: PURPOSE_ENROLMENT.into(),
                    account: Some(id.clone()),
                    payload: Vec::new(),
                    expires: plus_secs(self.now(), ENROLMENT_SECS),
                },
            )
            .await?;
        let link = format!("{}/enrol/{secret}", site.trim_end_matches('/'));
        self.enqueue(
            Some(id),
            "enrolment",
            &to,
            "Your Vigil account",
            &format!(
                "Hello {name},\n\nAn account was created for you on Vigil ({org}).\nYour user name is: {user}\n\nSet your password and second factor here (the link works once, for 7 days):\n{link}\n\nIf you did not expect this, tell your privacy officer.\n",
                name = profile.display_name.as_deref().unwrap_or(&a.username),
                org = self.identity()?.cfg.organisation,
                user = a.username,
            ),
        )
        .await?;
        self.audit_event(
            who,
            Category::Administration,
            "enrolment-sent",
            Action::E,
            Some(id),
            None,
        )
        .await?;
        tracing::info!(account = %id, "enrolment link sent");
        Ok(())
    }

    /// The account an enrolment link is for.
    pub async fn enrolment_account(&self, token: &str) -> Result<Account, SignInError> {
        self.link_account(token, PURPOSE_ENROLMENT).await
    }

    async fn link_account(&self, token: &str, purpose: &str) -> Result<Account, SignInError> {
        let c = self
            .store
            .challenge(&crypto::token_hash(token), purpose, self.now())
            .await?
            .ok_or(SignInError::Expired)?;
        let id = c.account.ok_or(SignInError::Expired)?;
        let a = self.store.account(&id).await?.ok_or(SignInError::Expired)?;
        if !a.active {
            return Err(SignInError::Deactivated);
        }
        Ok(a)
    }

    /// Completes an enrolment link: sets the password, then continues as a
    /// sign-in (workforce accounts enrol a second factor next).
    pub async fn complete_enrolment(
        &self,
        token: &str,
        password: &str,
    ) -> Result<SignInStep, SignInError> {
        let a = self.enrolment_account(token).await?;
        let display = self.profile(&a).await?.display_name;
        self.check_password(&a.username, display.as_deref(), a.role, password)
            .map_err(SignInError::Password)?;
        self.store
            .take_challenge(&crypto::token_hash(token), PURPOSE_ENROLMENT, self.now())
            .await?
            .ok_or(SignInError::Expired)?;
        self.set_password(&a, password).await?;
        self.audit_event(
            &account_principal(&a),
            Category::Security,
            "enrolment",
            Action::U,
            Some(&a.id),
            None,
        )
        .await?;
        tracing::info!(account = %a.id, "enrolment completed");
        self.after_password(&a).await
    }

    async fn set_password(&self, a: &Account, password: &str) -> Result<(), AppError> {
        let id = self.identity()?;
        let phc = id
            .hash
            .hash(password, &id.pepper, &mut rand::rngs::OsRng)
            .map_err(|e| AppError::Keys(format!("password hash: {e}")))?;
        self.store.set_password_hash(&a.id, phc.as_bytes()).await?;
        self.factor_succeeded(&a.id, &["password"]).await?;
        Ok(())
    }

    async fn summary(&self, a: &Account) -> Result<AccountSummary, AppError> {
        let creds = self.store.credentials(&a.id).await?;
        Ok(AccountSummary {
            id: a.id.clone(),
            username: a.username.clone(),
            role: a.role,
            active: a.active,
            created: a.created,
            practitioner: a.practitioner.clone(),
            patient: a.patient.clone(),
            totp: creds.totp_secret.is_some(),
            passkeys: self.store.passkeys(&a.id).await?.len(),
            recovery_codes: self.store.recovery_codes(&a.id).await?.len(),
        })
    }

    /// Every account, ordered by id.
    pub async fn list_accounts(&self, who: &Principal) -> Result<Vec<AccountSummary>, AppError> {
        self.require_admin(who)?;
        let mut out = Vec::new();
        let mut after: Option<AccountId> = None;
        loop {
            let page = self.store.accounts(after.as_ref(), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for a in &page {
                out.push(self.summary(a).await?);
            }
        }
        Ok(out)
    }

    /// The account with this user name (case-insensitive).
    pub async fn account_by_username(&self, username: &str) -> Result<Account, AppError> {
        let u = auth::password::normalise(username.trim());
        self.store
            .account_by_username(&u)
            .await?
            .ok_or_else(|| AppError::NotFound("no such account".into()))
    }

    /// Deactivates an account: its sessions and refresh tokens are revoked
    /// in the same transaction, and its access tokens fail from the next request.
    pub async fn deactivate_account(
        &self,
        who: &Principal,
        id: &AccountId,
    ) -> Result<(), AppError> {
        self.require_admin(who)?;
        if !self.store.deactivate_account(id, self.now()).await? {
            return Err(AppError::NotFound("no such active account".into()));
        }
        self.audit_event(
            who,
            Category::Administration,
            "account-deactivate",
            Action::U,
            Some(id),
            None,
        )
        .await?;
        tracing::info!(account = %id, "account deactivated");
        Ok(())
    }

    /// Removes every second factor of an account (lost devices); the user
    /// enrols again at next sign-in. Sessions and refresh tokens are revoked.
    pub async fn reset_second_factors(
        &self,
        who: &Principal,
        id: &AccountId,
    ) -> Result<(), AppError> {
        self.require_admin(who)?;
        if self.store.account(id).await?.is_none() {
            return Err(AppError::NotFound("no such account".into()));
        }
        self.store.reset_second_factors(id).await?;
        self.audit_event(
            who,
            Category::Security,
            "mfa-reset",
            Action::U,
            Some(id),
            None,
        )
        .await?;
        tracing::info!(account = %id, "second factors reset");
        Ok(())
    }

    /// What the account page shows.
    pub async fn account_view(&self, id: &AccountId) -> Result<AccountView, AppError> {
        let ident = self.identity()?;
        let a = self
            .store
            .account(id)
            .await?
            .ok_or_else(|| AppError::NotFound("no such account".into()))?;
        let profile = self.profile(&a).await?;
        let passkeys = self
            .store
            .passkeys(id)
            .await?
            .into_iter()
            .map(|p| PasskeyView {
                id: URL_SAFE_NO_PAD.encode(&p.credential_id),
                name: p.name,
                created: p.created,
                last_used: p.last_used,
            })
            .collect();
        Ok(AccountView {
            summary: self.summary(&a).await?,
            display_name: profile.display_name,
            email: profile.email,
            passkeys,
            passkey_required: ident.needs_passkey(a.role),
            mfa_required: ident.needs_mfa(a.role),
        })
    }

    /// Changes the password of a signed-in user, who proves the current one.
    /// Other sessions of the account are signed out.
    pub async fn change_password(
        &self,
        account: &Account,
        current: &str,
        new: &str,
        keep_session: &str,
    ) -> Result<(), SignInError> {
        let id = self.identity()?;
        let creds = self.store.credentials(&account.id).await?;
        let ok = creds
            .password_hash
            .as_deref()
            .and_then(|p| std::str::from_utf8(p).ok())
            .is_some_and(|phc| id.hash.verify(current, phc, &id.pepper).is_ok());
        if !ok {
            return Err(SignInError::Refused);
        }
        let display = self.profile(account).await?.display_name;
        self.check_password(&account.username, display.as_deref(), account.role, new)
            .map_err(SignInError::Password)?;
        self.set_password(account, new).await?;
        self.revoke_other_sessions(account, keep_session).await?;
        self.audit_event(
            &account_principal(account),
            Category::Security,
            "password-change",
            Action::U,
            Some(&account.id),
            None,
        )
        .await?;
        tracing::info!(account = %account.id, "password changed");
        Ok(())
    }

    async fn revoke_other_sessions(&self, a: &Account, keep: &str) -> Result<(), AppError> {
        // Revoke all, then the kept one is replaced by the caller with a new
        // session (privilege change → new id).
        let _ = keep;
        self.store.revoke_sessions_of(&a.id).await?;
        Ok(())
    }

    /// Starts TOTP enrolment: a new secret, kept sealed until a code proves
    /// the authenticator has it. Returns (base32 secret, otpauth URI, ceremony id).
    pub async fn totp_enrol_start(
        &self,
        account: &Account,
    ) -> Result<(String, String, String), AppError> {
        let secret = TotpSecret::generate(&mut rand::rngs::OsRng);
        let (ceremony, hash) = new_secret();
        let payload = self
            .seal_private(
                &format!("{PURPOSE_TOTP_ENROL}|{}", account.id),
                secret.expose(),
            )
            .await?;
        self.store
            .put_challenge(
                &hash,
                &Challenge {
                    purpose: PURPOSE_TOTP_ENROL.into(),
                    account: Some(account.id.clone()),
                    payload,
                    expires: plus_secs(self.now(), CEREMONY_SECS),
                },
            )
            .await?;
        let uri = auth::totp::TotpConfig::default().otpauth_uri(&secret, &account.username);
        Ok((secret.to_base32().to_string(), uri.to_string(), ceremony))
    }

    /// Confirms TOTP enrolment with a code from the authenticator. Returns
    /// fresh recovery codes when the account had none (shown once).
    pub async fn totp_enrol_finish(
        &self,
        account: &Account,
        ceremony: &str,
        code: &str,
    ) -> Result<Vec<String>, SignInError> {
        let now = self.now();
        let hash = crypto::token_hash(ceremony);
        let c = self
            .store
            .challenge(&hash, PURPOSE_TOTP_ENROL, now)
            .await?
            .filter(|c| c.account.as_ref() == Some(&account.id))
            .ok_or(SignInError::Expired)?;
        let secret = zeroize::Zeroizing::new(
            self.open_private(&format!("{PURPOSE_TOTP_ENROL}|{}", account.id), &c.payload)
                .await?,
        );
        let arr: [u8; auth::totp::SECRET_LEN] = secret
            .as_slice()
            .try_into()
            .map_err(|_| AppError::Integrity("pending TOTP secret".into()))?;
        let secret = TotpSecret::from_bytes(arr);
        let step = auth::totp::verify(code, &secret, super::unix(now), None)
            .map_err(|_| SignInError::WrongCode)?;
        self.store
            .take_challenge(&hash, PURPOSE_TOTP_ENROL, now)
            .await?
            .ok_or(SignInError::Expired)?;
        let sealed = self
            .seal_private(&format!("totp|{}", account.id), secret.expose())
            .await?;
        self.store
            .set_totp_secret(&account.id, Some(&sealed))
            .await?;
        // The enrolment code counts as used.
        self.store
            .advance_totp_step(&account.id, None, step)
            .await?;
        self.factor_succeeded(&account.id, &["totp"]).await?;
        self.audit_event(
            &account_principal(account),
            Category::Security,
            "mfa-enrol",
            Action::C,
            Some(&account.id),
            None,
        )
        .await?;
        tracing::info!(account = %account.id, "TOTP enrolled");
        self.recovery_codes_if_none(account).await
    }

    async fn recovery_codes_if_none(&self, account: &Account) -> Result<Vec<String>, SignInError> {
        if self.store.recovery_codes(&account.id).await?.is_empty() {
            Ok(self.regenerate_recovery_codes(account).await?)
        } else {
            Ok(Vec::new())
        }
    }

    /// Replaces the account's recovery codes; returns the new ones (shown once).
    pub async fn regenerate_recovery_codes(
        &self,
        account: &Account,
    ) -> Result<Vec<String>, AppError> {
        let id = self.identity()?;
        let codes = auth::recovery::generate(
            auth::recovery::DEFAULT_COUNT,
            &id.pepper,
            &mut rand::rngs::OsRng,
        );
        let hashes: Vec<Vec<u8>> = codes.iter().map(|(_, h)| h.as_bytes().to_vec()).collect();
        self.store.set_recovery_codes(&account.id, &hashes).await?;
        self.audit_event(
            &account_principal(account),
            Category::Security,
            "mfa-recovery-codes",
            Action::U,
            Some(&account.id),
            None,
        )
        .await?;
        tracing::info!(account = %account.id, "recovery codes issued");
        Ok(codes
            .into_iter()
            .map(|(c, _)| c.as_str().to_owned())
            .collect())
    }

    /// Starts registering a passkey at `origin`. Returns (options, ceremony id).
    pub async fn passkey_register_start(
        &self,
        origin: &str,
        account: &Account,
    ) -> Result<(Value, String), AppError> {
        let existing = self.store.passkeys(&account.id).await?;
        if existing.len() >= MAX_PASSKEYS {
            return Err(invalid("at most 10 passkeys per account"));
        }
        let exclude: Vec<Vec<u8>> = existing.into_iter().map(|p| p.credential_id).collect();
        let display = self
            .profile(account)
            .await?
            .display_name
            .unwrap_or_else(|| account.username.clone());
        let mut handle = [0u8; 16];
        for (i, b) in handle.iter_mut().enumerate() {
            *b = account
                .id
                .as_str()
                .get(i * 2..i * 2 + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
        }
        let rp = self.identity()?.passkeys(origin)?;
        let (options, state) = rp
            .start_registration(handle, &account.username, &display, &exclude)
            .map_err(|e| invalid(e.to_string()))?;
        let (ceremony, hash) = new_secret();
        let payload = self
            .seal_private(
                &format!("{PURPOSE_PASSKEY_REGISTER}|{}", account.id),
                &state,
            )
            .await?;
        self.store
            .put_challenge(
                &hash,
                &Challenge {
                    purpose: PURPOSE_PASSKEY_REGISTER.into(),
                    account: Some(account.id.clone()),
                    payload,
                    expires: plus_secs(self.now(), CEREMONY_SECS),
                },
            )
            .await?;
        Ok((options, ceremony))
    }

    /// Finishes registering a passkey. Returns fresh recovery codes when the
    /// account had none.
    pub async fn passkey_register_finish(
        &self,
        origin: &str,
        account: &Account,
        ceremony: &str,
        name: &str,
        credential: &Value,
    ) -> Result<Vec<String>, SignInError> {
        let now = self.now();
        let name = name.trim();
        let name = if name.is_empty() { "Passkey" } else { name };
        if name.chars().count() > 64 {
            return Err(SignInError::App(invalid(
                "a passkey name has at most 64 characters",
            )));
        }
        let c = self
            .store
            .take_challenge(&crypto::token_hash(ceremony), PURPOSE_PASSKEY_REGISTER, now)
            .await?
            .filter(|c| c.account.as_ref() == Some(&account.id))
            .ok_or(SignInError::Expired)?;
        let state = zeroize::Zeroizing::new(
            self.open_private(
                &format!("{PURPOSE_PASSKEY_REGISTER}|{}", account.id),
                &c.payload,
            )
            .await?,
        );
        let rp = self.identity()?.passkeys(origin)?;
        let new = rp.finish_registration(&state, credential).map_err(|e| {
            tracing::info!(account = %account.id, error = %e, "passkey registration refused");
            SignInError::PasskeyRefused
        })?;
        let data = self
            .seal_private(&passkey_aad(&account.id, &new.credential_id), &new.data)
            .await?;
        let added = self
            .store
            .add_passkey(&StoredPasskey {
                credential_id: new.credential_id,
                account: account.id.clone(),
                name: name.to_owned(),
                created: now,
                last_used: None,
                data,
            })
            .await?;
        if !added {
            return Err(SignInError::App(AppError::Conflict(
                "that passkey is already registered".into(),
            )));
        }
        self.audit_event(
            &account_principal(account),
            Category::Security,
            "mfa-enrol",
            Action::C,
            Some(&account.id),
            None,
        )
        .await?;
        tracing::info!(account = %account.id, "passkey registered");
        self.recovery_codes_if_none(account).await
    }

    /// Removes one of the account's passkeys. The last second factor of an
    /// account that needs one cannot be removed.
    pub async fn passkey_delete(&self, account: &Account, id_b64: &str) -> Result<(), AppError> {
        let cred = URL_SAFE_NO_PAD
            .decode(id_b64)
            .map_err(|_| invalid("no such passkey"))?;
        let ident = self.identity()?;
        let f = self.factors_of(&account.id).await?;
        let passkeys = self.store.passkeys(&account.id).await?.len();
        let would_remain = Factors {
            passkey: passkeys > 1,
            ..f
        };
        if (ident.needs_mfa(account.role) && !would_remain.any())
            || (ident.needs_passkey(account.role) && !would_remain.passkey)
        {
            return Err(invalid(
                "this is your last second factor; add another before removing it",
            ));
        }
        if !self.store.delete_passkey(&account.id, &cred).await? {
            return Err(AppError::NotFound("no such passkey".into()));
        }
        self.audit_event(
            &account_principal(account),
            Category::Security,
            "mfa-remove",
            Action::D,
            Some(&account.id),
            None,
        )
        .await?;
        tracing::info!(account = %account.id, "passkey removed");
        Ok(())
    }

    /// The account of a pending step that must enrol a factor.
    pub async fn enrolling_account(&self, pending: &str) -> Result<Account, SignInError> {
        self.pending_account(pending, PURPOSE_ENROL_FACTOR).await
    }

    /// The account of a pending second-factor step.
    pub async fn second_factor_account(&self, pending: &str) -> Result<Account, SignInError> {
        self.pending_account(pending, PURPOSE_SECOND_FACTOR).await
    }

    /// Ends the enrolment step once the account has what it needs.
    pub async fn finish_enrolment_sign_in(&self, pending: &str) -> Result<NewSession, SignInError> {
        let a = self.enrolling_account(pending).await?;
        let ident = self.identity()?;
        let f = self.factors_of(&a.id).await?;
        if (ident.needs_mfa(a.role) && !f.any()) || (ident.needs_passkey(a.role) && !f.passkey) {
            return Err(SignInError::App(invalid("enrol a second factor first")));
        }
        self.store
            .take_challenge(
                &crypto::token_hash(pending),
                PURPOSE_ENROL_FACTOR,
                self.now(),
            )
            .await?
            .ok_or(SignInError::Expired)?;
        Ok(self.start_session(&a).await?)
    }

    /// Sends a password-reset link to the account's e-mail address. The
    /// answer is the same whether or not the account exists.
    pub async fn request_password_reset(&self, username: &str, site: &str) -> Result<(), AppError> {
        let u = auth::password::normalise(username.trim());
        let Some(a) = self
            .store
            .account_by_username(&u)
            .await?
            .filter(|a| a.active)
        else {
            return Ok(());
        };
        let Some(to) = self.profile(&a).await?.email else {
            tracing::info!(account = %a.id, "password reset asked for an account without e-mail");
            return Ok(());
        };
        self.store
            .delete_challenges_of(&a.id, PURPOSE_RESET)
            .await?;
        let (secret, hash) = new_secret();
        self.store
            .put_challenge(
                &hash,
                &Challenge {
                    purpose: PURPOSE_RESET.into(),
                    account: Some(a.id.clone()),
                    payload: Vec::new(),
                    expires: plus_secs(self.now(), RESET_SECS),
                },
            )
            .await?;
        let link = format!("{}/reset/{secret}", site.trim_end_matches('/'));
        self.enqueue(
            Some(&a.id),
            "password-reset",
            &to,
            "Reset your Vigil password",
            &format!(
                "Someone (hopefully you) asked to reset the password of {user} on Vigil.\n\nThe link below works once, for one hour. You will also need your second factor.\n{link}\n\nIf this was not you, ignore this message and tell your privacy officer.\n",
                user = a.username
            ),
        )
        .await?;
        tracing::info!(account = %a.id, "password reset link sent");
        Ok(())
    }

    /// The account of a reset link and the factors it must prove.
    pub async fn reset_account(&self, token: &str) -> Result<(Account, bool, bool), SignInError> {
        let a = self.link_account(token, PURPOSE_RESET).await?;
        let f = self.factors_of(&a.id).await?;
        Ok((a, f.totp, f.recovery))
    }

    /// Completes a reset: the link, the second factor (a TOTP code or a
    /// recovery code, when the account has one) and a new password. Every
    /// session of the account is signed out.
    pub async fn complete_password_reset(
        &self,
        token: &str,
        totp: Option<&str>,
        recovery: Option<&str>,
        new_password: &str,
    ) -> Result<(), SignInError> {
        let a = self.link_account(token, PURPOSE_RESET).await?;
        let f = self.factors_of(&a.id).await?;
        let display = self.profile(&a).await?.display_name;
        self.check_password(&a.username, display.as_deref(), a.role, new_password)
            .map_err(SignInError::Password)?;
        if f.totp || f.recovery || f.passkey {
            match (
                totp.filter(|s| !s.is_empty()),
                recovery.filter(|s| !s.is_empty()),
            ) {
                (Some(code), _) if f.totp => self.check_totp(&a, code).await?,
                (_, Some(code)) if f.recovery => self.check_recovery_code(&a, code).await?,
                _ if f.passkey && !f.totp && !f.recovery => {
                    return Err(SignInError::UsePasskey);
                }
                _ => return Err(SignInError::WrongCode),
            }
        }
        self.store
            .take_challenge(&crypto::token_hash(token), PURPOSE_RESET, self.now())
            .await?
            .ok_or(SignInError::Expired)?;
        self.set_password(&a, new_password).await?;
        self.store.revoke_sessions_of(&a.id).await?;
        self.audit_event(
            &account_principal(&a),
            Category::Security,
            "password-reset",
            Action::U,
            Some(&a.id),
            None,
        )
        .await?;
        tracing::info!(account = %a.id, "password reset");
        Ok(())
    }
}
