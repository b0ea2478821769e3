//! Break-the-glass: a clinician without a relationship asks for emergency
//! access to one patient, after re-authenticating, with a reason code and a
//! justification. The grant is time-boxed; its start and end are audit
//! entries; each access under it carries purpose ETREAT and the grant id;
//! the privacy officer reviews every grant.

use model::{PatientId, ResourceId, ResourceType, Timestamp};
use serde::Serialize;
use store::{AccountId, EmergencyGrant, GrantReview};

use crate::trail::{Action, Category, Event, PolicyNote};
use crate::{AppError, Principal, Vigil};

/// How long the privacy officer has to review a grant.
const REVIEW_SECS: u64 = 3 * 24 * 3600;
/// Longest justification, in characters.
const MAX_JUSTIFICATION: usize = 2000;

/// A grant as its holder and the privacy officer see it.
#[derive(Debug, Clone, Serialize)]
pub struct GrantView {
    pub id: String,
    pub account: String,
    /// The holder's display name (else user name), for the review queue.
    pub holder: String,
    pub patient: String,
    pub start: Timestamp,
    pub expires: Timestamp,
    pub revoked: Option<Timestamp>,
    pub reason: String,
    /// Shown to the holder and the privacy officer only.
    pub justification: String,
    pub review_due: Timestamp,
    pub reviewed: Option<ReviewView>,
    pub live: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReviewView {
    pub reviewer: String,
    pub at: Timestamp,
    pub outcome: String,
    pub note: String,
}

/// What a clinician asks for.
#[derive(Debug, Clone)]
pub struct BreakGlassRequest {
    pub patient: ResourceId,
    /// The purpose code; only `ETREAT` is accepted.
    pub reason: String,
    pub justification: String,
    /// Minutes; `None` takes the configured default.
    pub minutes: Option<u32>,
}

/// The outcomes a review may record.
pub const REVIEW_OUTCOMES: [&str; 3] = ["appropriate", "inappropriate", "needs-follow-up"];

fn grant_aad(id: &str) -> String {
    format!("grant|{id}")
}

fn review_aad(id: &str) -> String {
    format!("grant-review|{id}")
}

impl Vigil {
    /// Records an operation's entry with its outcome, then returns the
    /// outcome (or the audit failure, if the entry cannot be written).
    pub(crate) async fn record_outcome<T>(
        &self,
        who: &Principal,
        ev: Event,
        result: Result<T, AppError>,
    ) -> Result<T, AppError> {
        match result {
            Ok(v) => {
                self.audit(who, ev).await?;
                Ok(v)
            }
            Err(e) => {
                self.audit(who, ev.failed(&e)).await?;
                Err(e)
            }
        }
    }

    fn clinician(who: &Principal) -> Result<(AccountId, store::Role), AppError> {
        match who {
            Principal::User(c) => match (&c.account, c.role) {
                (Some(a), Some(r))
                    if matches!(
                        r,
                        store::Role::Physician | store::Role::Nurse | store::Role::OtherClinical
                    ) =>
                {
                    Ok((a.clone(), r))
                }
                _ => Err(AppError::Forbidden(
                    "only clinicians may break the glass".into(),
                )),
            },
            Principal::Operator => Err(AppError::Forbidden(
                "break-the-glass is for a signed-in clinician".into(),
            )),
        }
    }

    fn privacy_officer(who: &Principal) -> Result<AccountId, AppError> {
        match who {
            Principal::User(c) if c.role == Some(store::Role::PrivacyOfficer) => c
                .account
                .clone()
                .ok_or_else(|| AppError::Forbidden("privacy officers only".into())),
            _ => Err(AppError::Forbidden("privacy officers only".into())),
        }
    }

    async fn grant_view(&self, g: EmergencyGrant) -> Result<GrantView, AppError> {
        let justification = String::from_utf8(
            self.open_private(&grant_aad(&g.id), &g.justification)
                .await?,
        )
        .map_err(|_| AppError::Integrity("grant justification".into()))?;
        let reviewed = match &g.review {
            None => None,
            Some(r) => Some(ReviewView {
                reviewer: r.reviewer.to_string(),
                at: r.at,
                outcome: r.outcome.clone(),
                note: String::from_utf8(self.open_private(&review_aad(&g.id), &r.note).await?)
                    .map_err(|_| AppError::Integrity("grant review".into()))?,
            }),
        };
        let live = g.is_live(self.now());
        let holder = match self.store.account(&g.account).await? {
            Some(a) => self.display_name(&a).await?.unwrap_or(a.username),
            None => "an unknown account".to_owned(),
        };
        Ok(GrantView {
            id: g.id,
            account: g.account.to_string(),
            holder,
            patient: g.patient.to_string(),
            start: g.start,
            expires: g.expires,
            revoked: g.revoked,
            reason: g.reason,
            justification,
            review_due: g.review_due,
            reviewed,
            live,
        })
    }

    /// Starts a break-the-glass grant. `fresh` says whether the caller
    /// signed in within the re-authentication window (the web layer knows).
    pub async fn break_glass(
        &self,
        who: &Principal,
        req: &BreakGlassRequest,
        fresh: bool,
    ) -> Result<GrantView, AppError> {
        let mut ev = Event::new(Category::Rest, "break-glass-start", Action::E);
        ev.patients = vec![req.patient.to_string()];
        match self.break_glass_inner(who, req, fresh).await {
            Ok(g) => {
                ev.policy = Some(PolicyNote {
                    policies: vec!["P8".into()],
                    purpose: Some("ETREAT".into()),
                    grants: vec![g.id.clone()],
                });
                // The grant is only usable once its start is on record:
                // if the entry cannot be written the grant is ended at once.
                if let Err(e) = self.audit(who, ev).await {
                    let _ = self.store.revoke_grant(&g.id, self.now()).await;
                    self.policy
                        .invalidate(&model::KeyOwner::Patient(PatientId(req.patient.clone())));
                    return Err(e);
                }
                tracing::info!(grant = %g.id, patient = %req.patient, "break-the-glass grant started");
                Ok(g)
            }
            Err(e) => {
                self.audit(who, ev.failed(&e)).await?;
                Err(e)
            }
        }
    }

    async fn break_glass_inner(
        &self,
        who: &Principal,
        req: &BreakGlassRequest,
        fresh: bool,
    ) -> Result<GrantView, AppError> {
        let (account, _) = Self::clinician(who)?;
        if !fresh {
            return Err(AppError::Forbidden(
                "sign in again first: break-the-glass needs a sign-in within the last 15 minutes"
                    .into(),
            ));
        }
        if req.reason != "ETREAT" {
            return Err(AppError::bad_request(
                fhir::IssueCode::Invalid,
                "the reason code for break-the-glass is ETREAT (emergency treatment)",
            ));
        }
        let justification = req.justification.trim();
        if justification.chars().count() < 10 {
            return Err(AppError::bad_request(
                fhir::IssueCode::Required,
                "say why in at least 10 characters",
            ));
        }
        if justification.chars().count() > MAX_JUSTIFICATION {
            return Err(AppError::bad_request(
                fhir::IssueCode::TooLong,
                format!("the justification is longer than {MAX_JUSTIFICATION} characters"),
            ));
        }
        let cfg = &self.policy.config;
        let minutes = req.minutes.unwrap_or(cfg.grant_minutes);
        if minutes == 0 || minutes > cfg.grant_max_minutes {
            return Err(AppError::bad_request(
                fhir::IssueCode::Invalid,
                format!(
                    "a grant lasts between 1 and {} minutes",
                    cfg.grant_max_minutes
                ),
            ));
        }
        // The patient must exist (and not be deleted).
        match self
            .store
            .current(ResourceType::Patient, &req.patient)
            .await?
        {
            Some(sv) if !sv.deleted => {}
            _ => {
                return Err(AppError::NotFound(format!("Patient/{}", req.patient)));
            }
        }
        let now = self.now();
        let id = crate::identity::random_hex();
        let sealed = self
            .seal_private(&grant_aad(&id), justification.as_bytes())
            .await?;
        let grant = EmergencyGrant {
            id: id.clone(),
            account,
            patient: req.patient.clone(),
            start: now,
            expires: crate::identity::plus_secs(now, u64::from(minutes) * 60),
            revoked: None,
            reason: req.reason.clone(),
            justification: sealed,
            review_due: crate::identity::plus_secs(now, REVIEW_SECS),
            review: None,
        };
        self.store.insert_grant(&grant).await?;
        self.policy
            .invalidate(&model::KeyOwner::Patient(PatientId(req.patient.clone())));
        self.grant_view(grant).await
    }

    /// Ends a grant early (its holder, or the privacy officer).
    pub async fn end_break_glass(&self, who: &Principal, id: &str) -> Result<(), AppError> {
        let mut ev = Event::new(Category::Rest, "break-glass-end", Action::E);
        let result = async {
            let g = self
                .store
                .grant(id)
                .await?
                .ok_or_else(|| AppError::NotFound("no such grant".into()))?;
            ev.patients = vec![g.patient.to_string()];
            ev.policy = Some(PolicyNote {
                policies: Vec::new(),
                purpose: Some("ETREAT".into()),
                grants: vec![g.id.clone()],
            });
            let holder =
                matches!(who, Principal::User(c) if c.account.as_ref() == Some(&g.account));
            if !holder && Self::privacy_officer(who).is_err() {
                return Err(AppError::Forbidden(
                    "only the holder or a privacy officer may end a grant".into(),
                ));
            }
            self.store.revoke_grant(id, self.now()).await?;
            self.policy
                .invalidate(&model::KeyOwner::Patient(PatientId(g.patient)));
            Ok(())
        }
        .await;
        self.record_outcome(who, ev, result).await
    }

    /// The caller's own grants (newest first), live or not.
    pub async fn my_grants(&self, who: &Principal) -> Result<Vec<GrantView>, AppError> {
        let (account, _) = Self::clinician(who)?;
        let mut out = Vec::new();
        for g in self.store.grants_for_account(&account, None).await? {
            out.push(self.grant_view(g).await?);
        }
        Ok(out)
    }

    /// The privacy officer's review queue: unreviewed grants by deadline.
    pub async fn grants_to_review(&self, who: &Principal) -> Result<Vec<GrantView>, AppError> {
        Self::privacy_officer(who)?;
        let mut out = Vec::new();
        for g in self.store.grants_to_review(500).await? {
            out.push(self.grant_view(g).await?);
        }
        Ok(out)
    }

    /// One grant, for its holder or the privacy officer.
    pub async fn grant(&self, who: &Principal, id: &str) -> Result<GrantView, AppError> {
        let g = self
            .store
            .grant(id)
            .await?
            .ok_or_else(|| AppError::NotFound("no such grant".into()))?;
        let holder = matches!(who, Principal::User(c) if c.account.as_ref() == Some(&g.account));
        if !holder && Self::privacy_officer(who).is_err() {
            return Err(AppError::NotFound("no such grant".into()));
        }
        self.grant_view(g).await
    }

    /// Records the privacy officer's review of a grant (once).
    pub async fn review_grant(
        &self,
        who: &Principal,
        id: &str,
        outcome: &str,
        note: &str,
    ) -> Result<(), AppError> {
        let mut ev = Event::new(Category::Administration, "break-glass-review", Action::U);
        let result = async {
            let reviewer = Self::privacy_officer(who)?;
            if !REVIEW_OUTCOMES.contains(&outcome) {
                return Err(AppError::bad_request(
                    fhir::IssueCode::Invalid,
                    "the outcome is appropriate, inappropriate or needs-follow-up",
                ));
            }
            if note.chars().count() > MAX_JUSTIFICATION {
                return Err(AppError::bad_request(
                    fhir::IssueCode::TooLong,
                    "the note is too long",
                ));
            }
            let g = self
                .store
                .grant(id)
                .await?
                .ok_or_else(|| AppError::NotFound("no such grant".into()))?;
            ev.patients = vec![g.patient.to_string()];
            ev.account = Some(g.account.to_string());
            let review = GrantReview {
                reviewer,
                at: self.now(),
                outcome: outcome.to_owned(),
                note: self.seal_private(&review_aad(id), note.as_bytes()).await?,
            };
            if !self.store.review_grant(id, &review).await? {
                return Err(AppError::Conflict("the grant was already reviewed".into()));
            }
            Ok(())
        }
        .await;
        self.record_outcome(who, ev, result).await
    }
}
