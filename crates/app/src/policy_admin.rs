//! The privacy officer's view of the access policy: the current policies
//! with their rules, their versions, edits (validated in strict mode before
//! they take effect, recorded in the audit trail), and the "what if" tester.

use model::{KeyOwner, PatientId, ResourceId, ResourceType};
use serde::Serialize;

use crate::trail::{Action, Category, Event};
use crate::{AppError, Principal, Vigil};

/// Longest policy text accepted, in bytes.
const MAX_POLICY_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    pub id: String,
    pub effect: String,
    pub reason: String,
    pub lesson: Option<String>,
    pub masks: Vec<String>,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    /// 0 for the shipped default (no edit yet).
    pub version: u64,
    pub text: String,
    pub rules: Vec<RuleView>,
    pub schema: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyVersionView {
    pub version: u64,
    pub author: Option<String>,
    pub created: model::Timestamp,
    pub comment: String,
}

/// A "what if" question.
#[derive(Debug, Clone)]
pub struct WhatIf {
    /// The user name of the account asked about.
    pub username: String,
    pub action: policy::Action,
    pub rtype: ResourceType,
    pub id: ResourceId,
    pub purpose: Option<policy::Purpose>,
    /// Policy text to try instead of the current one (not saved).
    pub draft: Option<String>,
}

/// The answer: the decision, and the relationships found.
#[derive(Debug, Clone, Serialize)]
pub struct WhatIfAnswer {
    pub decision: policy::Decision,
    pub principal_role: String,
}

impl Vigil {
    fn officer_only(who: &Principal) -> Result<(), AppError> {
        match who {
            Principal::Operator => Ok(()),
            Principal::User(c) if c.role == Some(store::Role::PrivacyOfficer) => Ok(()),
            _ => Err(AppError::Forbidden(
                "the access policy is managed by the privacy officer".into(),
            )),
        }
    }

    /// Loads the newest stored policy version (if any) into the engine.
    /// Refuses to start on stored text that no longer validates.
    pub async fn load_policy(&self) -> Result<u64, AppError> {
        let Some(v) = self.store.current_policy().await? else {
            return Ok(0);
        };
        let engine = policy::Engine::new(policy::SCHEMA, &v.text, self.policy.config.windows)
            .map_err(|e| AppError::Policy(format!("stored policy version {}: {e}", v.version)))?;
        self.policy.replace_engine(engine)?;
        self.policy.invalidate_all();
        Ok(v.version)
    }

    pub async fn policy_current(&self, who: &Principal) -> Result<PolicyView, AppError> {
        Self::officer_only(who)?;
        let engine = self.policy.engine()?;
        let version = self.store.current_policy().await?.map_or(0, |v| v.version);
        Ok(PolicyView {
            version,
            text: engine.policy_text().to_owned(),
            rules: engine
                .rules()
                .iter()
                .map(|r| RuleView {
                    id: r.id.clone(),
                    effect: if r.permit { "permit" } else { "forbid" }.to_owned(),
                    reason: r.reason.clone(),
                    lesson: r.lesson.map(|l| l.as_str().to_owned()),
                    masks: r.masks.clone(),
                    text: r.text.clone(),
                })
                .collect(),
            schema: policy::SCHEMA.to_owned(),
        })
    }

    pub async fn policy_versions(
        &self,
        who: &Principal,
    ) -> Result<Vec<PolicyVersionView>, AppError> {
        Self::officer_only(who)?;
        Ok(self
            .store
            .policy_versions()
            .await?
            .into_iter()
            .map(|v| PolicyVersionView {
                version: v.version,
                author: v.author.map(|a| a.to_string()),
                created: v.created,
                comment: v.comment,
            })
            .collect())
    }

    /// One stored version's text.
    pub async fn policy_version_text(
        &self,
        who: &Principal,
        version: u64,
    ) -> Result<String, AppError> {
        Self::officer_only(who)?;
        self.store
            .policy_version(version)
            .await?
            .map(|v| v.text)
            .ok_or_else(|| AppError::NotFound(format!("policy version {version}")))
    }

    /// Checks policy text against the schema in strict mode without saving.
    pub fn policy_check(&self, text: &str) -> Result<(), AppError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(AppError::TooLarge("the policy text is over 256 KiB".into()));
        }
        policy::Engine::new(policy::SCHEMA, text, self.policy.config.windows)
            .map(|_| ())
            .map_err(|e| AppError::bad_request(fhir::IssueCode::Invalid, e.to_string()))
    }

    /// Saves and applies a new policy version. `fresh`: the officer signed
    /// in within the re-authentication window.
    pub async fn policy_update(
        &self,
        who: &Principal,
        text: &str,
        comment: &str,
        fresh: bool,
    ) -> Result<u64, AppError> {
        let mut ev = Event::new(Category::Administration, "policy-edit", Action::U);
        let result = async {
            Self::officer_only(who)?;
            if !fresh {
                return Err(AppError::Forbidden(
                    "sign in again first: policy edits need a sign-in within the last 15 minutes"
                        .into(),
                ));
            }
            if comment.trim().is_empty() || comment.chars().count() > 500 {
                return Err(AppError::bad_request(
                    fhir::IssueCode::Required,
                    "say what the change is for (1 to 500 characters)",
                ));
            }
            if text.len() > MAX_POLICY_BYTES {
                return Err(AppError::TooLarge("the policy text is over 256 KiB".into()));
            }
            let engine = policy::Engine::new(policy::SCHEMA, text, self.policy.config.windows)
                .map_err(|e| AppError::bad_request(fhir::IssueCode::Invalid, e.to_string()))?;
            let author = match who {
                Principal::User(c) => c.account.clone(),
                Principal::Operator => None,
            };
            let version = self
                .store
                .add_policy_version(text, author.as_ref(), self.now(), comment.trim())
                .await?;
            self.policy.replace_engine(engine)?;
            self.policy.invalidate_all();
            Ok(version)
        }
        .await;
        match result {
            Ok(v) => {
                ev.resources = vec![format!("policy/{v}")];
                self.audit(who, ev).await?;
                tracing::info!(version = v, "access policy changed");
                Ok(v)
            }
            Err(e) => {
                self.audit(who, ev.failed(&e)).await?;
                Err(e)
            }
        }
    }

    /// "May this user do this action on this resource for this purpose, and
    /// why?" — decided exactly as a request would be, against the current
    /// policy or a draft. Recorded in the audit trail (it looks at a record).
    pub async fn policy_what_if(
        &self,
        who: &Principal,
        q: &WhatIf,
    ) -> Result<WhatIfAnswer, AppError> {
        Self::officer_only(who)?;
        let mut ev = Event::new(Category::Administration, "policy-what-if", Action::E);
        ev.resources = vec![format!("{}/{}", q.rtype, q.id)];
        let result = self.what_if_inner(q).await;
        match result {
            Ok((a, patient)) => {
                ev.patients = patient.into_iter().collect();
                self.audit(who, ev).await?;
                Ok(a)
            }
            Err(e) => {
                self.audit(who, ev.failed(&e)).await?;
                Err(e)
            }
        }
    }

    async fn what_if_inner(&self, q: &WhatIf) -> Result<(WhatIfAnswer, Option<String>), AppError> {
        let account = self.account_by_username(&q.username).await?;
        let engine = match &q.draft {
            Some(text) => std::sync::Arc::new(
                policy::Engine::new(policy::SCHEMA, text, self.policy.config.windows)
                    .map_err(|e| AppError::bad_request(fhir::IssueCode::Invalid, e.to_string()))?,
            ),
            None => self.policy.engine()?,
        };
        let caller = crate::Caller {
            account: Some(account.id.clone()),
            role: Some(account.role),
            username: None,
            client_id: None,
            scopes: auth::scope::ScopeSet::default(),
            patient: None,
            via: crate::Via::Session,
            practitioner: account.practitioner.clone(),
            own_patient: crate::identity::signin::patient_context(&account),
            mfa: account.role != store::Role::Patient,
        };
        let principal =
            crate::decide::policy_principal(&caller, self.policy.config.training_current)
                .ok_or_else(|| AppError::NotFound("no such account".into()))?;
        let sv = self
            .store
            .current(q.rtype, &q.id)
            .await?
            .filter(|s| !s.deleted)
            .ok_or_else(|| AppError::NotFound(format!("{}/{}", q.rtype, q.id)))?;
        let v = self.open_version(&sv).await?;
        let body = v
            .resource
            .as_ref()
            .ok_or_else(|| AppError::NotFound(format!("{}/{}", q.rtype, q.id)))?;
        let owner = crate::records::key_owner(q.rtype, &q.id, body);
        let pf = match &owner {
            KeyOwner::Patient(p) => self.load_facts(p).await?,
            KeyOwner::Organisation => crate::decide::PatientFacts::default(),
        };
        let resource = crate::decide::policy_resource(q.rtype, Some(&q.id), &owner, body, pf.vip);
        let req = policy::Request {
            principal: &principal,
            action: q.action,
            resource: &resource,
            purpose: q.purpose,
            now: self.now(),
            facts: &pf.facts,
        };
        let decision = engine.what_if(&req);
        let patient = match owner {
            KeyOwner::Patient(PatientId(p)) => Some(p.to_string()),
            KeyOwner::Organisation => None,
        };
        Ok((
            WhatIfAnswer {
                decision,
                principal_role: principal.role.as_str().to_owned(),
            },
            patient,
        ))
    }
}
