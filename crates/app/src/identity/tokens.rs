//! Access tokens: checking a bearer token on every API request, and the
//! operator's `vigil token issue`.

use auth::scope::{Context, Scope, ScopeSet};
use auth::token::Claims;
use fhir::IssueCode;
use model::ResourceId;
use store::AccountId;

use super::{Caller, Via, unix};
use crate::{AppError, Principal, Vigil};

/// The `client_id` of tokens an operator issues at the command line.
pub const OPERATOR_CLIENT: &str = "vigil-cli";

impl Vigil {
    /// Checks a bearer token presented to the FHIR base `audience`: the
    /// signature and lifetime (microseconds, no IO), then in one query that
    /// its account or client is still active and it was not revoked.
    pub async fn authenticate_bearer(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<Principal, AppError> {
        let id = self.identity()?;
        let now = unix(self.now());
        let claims = auth::token::verify(token, &id.token_key, audience, now)
            .map_err(|_| AppError::Unauthenticated)?;
        self.principal_of(&claims).await
    }

    pub(crate) async fn principal_of(&self, claims: &Claims) -> Result<Principal, AppError> {
        let scopes = claims.scopes().map_err(|_| AppError::Unauthenticated)?;
        let service = claims.sub == claims.client_id;
        let account = if service {
            None
        } else {
            Some(AccountId::new(claims.sub.clone()).ok_or(AppError::Unauthenticated)?)
        };
        let operator = claims.client_id == OPERATOR_CLIENT;
        let client = (!operator).then_some(claims.client_id.as_str());
        // One query either way: a person's token brings back the account as
        // it is now (so a role change takes effect on the next request).
        let (role, username, practitioner, own_patient) = match &account {
            Some(id) => match self
                .store
                .live_token_account(id, client, &claims.jti)
                .await?
            {
                Some(a) => {
                    let own = super::signin::patient_context(&a);
                    (Some(a.role), Some(a.username), a.practitioner, own)
                }
                None => return Err(AppError::Unauthenticated),
            },
            None => {
                if !self
                    .store
                    .access_token_live(None, client, &claims.jti)
                    .await?
                {
                    return Err(AppError::Unauthenticated);
                }
                (None, None, None, None)
            }
        };
        let patient = match &claims.patient {
            Some(p) => Some(ResourceId::new(p.clone()).map_err(|_| AppError::Unauthenticated)?),
            None => None,
        };
        let jti = claims.jti.clone();
        Ok(Principal::User(Caller {
            account,
            role,
            username,
            client_id: Some(claims.client_id.clone()),
            scopes,
            patient,
            via: if operator {
                Via::OperatorToken { jti }
            } else {
                Via::Token { jti }
            },
            practitioner,
            own_patient,
            // Tokens come from a sign-in (workforce: with a second factor) or
            // from an operator's deliberate, audited act.
            mfa: role.is_some_and(|r| r != store::Role::Patient),
        }))
    }

    /// The identity secrets, when operator tokens are on and the lifetime is
    /// within bounds.
    fn operator_token_identity(&self, ttl_secs: u64) -> Result<&super::Identity, AppError> {
        let id = self.identity()?;
        if !id.cfg.operator_tokens {
            return Err(AppError::Forbidden(
                "operator tokens are switched off ([identity] operator_tokens = false)".into(),
            ));
        }
        if ttl_secs == 0 || ttl_secs > auth::token::MAX_TTL_SECS {
            return Err(AppError::bad_request(
                IssueCode::Invalid,
                "the lifetime must be between 1 second and 1 hour",
            ));
        }
        Ok(id)
    }

    /// Issues a short-lived backend-service token (`system/` scopes only, no
    /// person): for operators' integrations, data loads and smoke tests.
    /// Refused when operator tokens are switched off.
    pub async fn issue_service_token(
        &self,
        scopes: &str,
        ttl_secs: u64,
        issuer: &str,
        audience: &str,
    ) -> Result<String, AppError> {
        let id = self.operator_token_identity(ttl_secs)?;
        let set = ScopeSet::parse(scopes)
            .map_err(|e| AppError::bad_request(IssueCode::Invalid, e.to_string()))?;
        for s in set.iter() {
            if let Scope::Resource(r) = s
                && r.context != Context::System
            {
                return Err(AppError::bad_request(
                    IssueCode::Invalid,
                    format!("scope {s} does not fit a backend service (use system/ scopes)"),
                ));
            }
        }
        let now = unix(self.now());
        let claims = Claims {
            iss: issuer.to_owned(),
            sub: OPERATOR_CLIENT.to_owned(),
            aud: audience.to_owned(),
            exp: now + ttl_secs,
            iat: now,
            jti: auth::token::new_jti(&mut rand::rngs::OsRng),
            scope: set.to_string(),
            client_id: OPERATOR_CLIENT.to_owned(),
            patient: None,
        };
        let token = auth::token::issue(&claims, &id.token_key)
            .map_err(|e| AppError::Keys(format!("token: {e}")))?;
        self.audit_event(
            &Principal::Operator,
            crate::trail::Category::Administration,
            "operator-service-token-issue",
            crate::trail::Action::C,
            None,
            None,
        )
        .await?;
        tracing::info!(jti = %claims.jti, "operator issued a backend-service token");
        Ok(token.into_string())
    }

    /// Issues a short-lived access token for `username` (operators' scripts
    /// and smoke tests). Needs the key file; refused when the configuration
    /// switches operator tokens off. Scopes may be `user/` or, for a patient
    /// account, `patient/`.
    pub async fn issue_operator_token(
        &self,
        username: &str,
        scopes: &str,
        ttl_secs: u64,
        issuer: &str,
        audience: &str,
    ) -> Result<String, AppError> {
        let id = self.operator_token_identity(ttl_secs)?;
        let account = self.account_by_username(username).await?;
        if !account.active {
            return Err(AppError::Forbidden("the account is deactivated".into()));
        }
        let set = ScopeSet::parse(scopes)
            .map_err(|e| AppError::bad_request(IssueCode::Invalid, e.to_string()))?;
        let patient = super::signin::patient_context(&account);
        for s in set.iter() {
            if let Scope::Resource(r) = s {
                let ok = match r.context {
                    Context::User => account.role != store::Role::Patient,
                    Context::Patient => patient.is_some(),
                    Context::System => false,
                };
                if !ok {
                    return Err(AppError::bad_request(
                        IssueCode::Invalid,
                        format!("scope {s} does not fit a {} account", account.role),
                    ));
                }
            }
        }
        let now = unix(self.now());
        let claims = Claims {
            iss: issuer.to_owned(),
            sub: account.id.to_string(),
            aud: audience.to_owned(),
            exp: now + ttl_secs,
            iat: now,
            jti: auth::token::new_jti(&mut rand::rngs::OsRng),
            scope: set.to_string(),
            client_id: OPERATOR_CLIENT.to_owned(),
            patient: patient.map(|p| p.to_string()),
        };
        let token = auth::token::issue(&claims, &id.token_key)
            .map_err(|e| AppError::Keys(format!("token: {e}")))?;
        self.audit_event(
            &Principal::Operator,
            crate::trail::Category::Administration,
            "operator-token-issue",
            crate::trail::Action::C,
            Some(&account.id),
            None,
        )
        .await?;
        tracing::info!(account = %account.id, jti = %claims.jti, "operator issued an access token");
        Ok(token.into_string())
    }
}
