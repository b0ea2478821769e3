//! OAuth 2 / SMART App Launch 2.2: clients, the authorisation-code grant
//! with PKCE (S256 only), refresh-token rotation, client credentials with a
//! signed JWT assertion, introspection (RFC 7662) and revocation (RFC 7009).
//!
//! Scopes are a ceiling only: what the user may really do is decided per
//! request (the access policy, later).

use auth::scope::{Context, Scope, ScopeSet};
use auth::token::Claims;
use model::ResourceId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{Account, Challenge, OAuthClient, RefreshOutcome, RefreshToken, Role};

use super::tokens::OPERATOR_CLIENT;
use super::{plus_secs, random_hex, unix};
use crate::{AppError, Principal, Vigil};

const PURPOSE_CODE: &str = "authcode";
const PURPOSE_JTI: &str = "assertion-jti";
/// Authorisation codes live one minute (SMART allows up to ten).
const CODE_SECS: u64 = 60;
/// Refresh tokens without `offline_access` (online access) live as long as a session may.
const ONLINE_REFRESH_SECS: u64 = 12 * 3600;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An OAuth error as RFC 6749 §5.2 names them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {description}")]
pub struct OAuthError {
    pub error: &'static str,
    pub description: String,
    pub status: u16,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        let status = match error {
            "invalid_client" => 401,
            "server_error" => 500,
            _ => 400,
        };
        OAuthError {
            error,
            description: description.into(),
            status,
        }
    }

    /// The JSON body of a token-endpoint error.
    pub fn to_json(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

impl From<AppError> for OAuthError {
    fn from(e: AppError) -> OAuthError {
        tracing::error!(error = %e, "oauth request failed");
        OAuthError::new("server_error", "the server could not complete the request")
    }
}

impl From<store::StoreError> for OAuthError {
    fn from(e: store::StoreError) -> OAuthError {
        OAuthError::from(AppError::Store(e))
    }
}

/// A client to register.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub client_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    /// The most this client may ever be granted.
    pub scope: String,
    /// A JWK Set for `private_key_jwt`: a confidential app or a backend service.
    pub jwks: Option<Value>,
}

/// What `vigil client list` and the admin page show.
#[derive(Debug, Clone)]
pub struct ClientSummary {
    pub client_id: String,
    pub name: String,
    pub active: bool,
    pub confidential: bool,
    pub redirect_uris: Vec<String>,
    pub scope: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClientData {
    redirect_uris: Vec<String>,
    scope: String,
    #[serde(default)]
    jwks: Option<Value>,
}

/// The query of `GET /oauth/authorize` (also re-posted by the consent form).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub aud: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub nonce: Option<String>,
    pub launch: Option<String>,
}

/// What the consent screen shows.
#[derive(Debug, Clone)]
pub struct ConsentView {
    pub client_name: String,
    pub client_id: String,
    /// Each requested scope (within the client's and the user's ceilings)
    /// with a plain-language description.
    pub scopes: Vec<(String, String)>,
    /// A workforce user launching an app with `launch/patient` picks the patient.
    pub choose_patient: bool,
}

/// The form of `POST /oauth/token`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub client_id: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
    /// Introspection and revocation.
    pub token: Option<String>,
    pub token_type_hint: Option<String>,
}

/// The sealed grant behind a code or a refresh token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Grant {
    client_id: String,
    account: String,
    scope: String,
    patient: Option<String>,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    offline: bool,
}

/// Where the server lives, for `iss`, `aud` and assertion audiences.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// e.g. `https://vigil.example`
    pub issuer: String,
    /// e.g. `https://vigil.example/fhir`
    pub fhir_base: String,
    /// e.g. `https://vigil.example/oauth/token`
    pub token_url: String,
}

fn valid_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_redirect(uri: &str) -> bool {
    uri.len() <= 2000
        && (uri.starts_with("https://")
            || uri.starts_with("http://localhost")
            || uri.starts_with("http://127.0.0.1")
            || uri.starts_with("http://[::1]"))
        && !uri.contains('#')
        && !uri.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A plain-language line for the consent screen.
fn describe(scope: &Scope) -> String {
    match scope {
        Scope::Resource(r) => {
            let what = match &r.resource {
                auth::scope::ResourceType::Any => "all record types".to_owned(),
                auth::scope::ResourceType::Named(n) => format!("{n} records"),
            };
            let whose = match r.context {
                Context::Patient => "of the patient in context",
                Context::User => "you can access",
                Context::System => "of everyone",
            };
            let p = r.permissions.to_string();
            let mut verbs = Vec::new();
            for (c, v) in [
                ('c', "create"),
                ('r', "read"),
                ('u', "update"),
                ('d', "delete"),
                ('s', "search"),
            ] {
                if p.contains(c) {
                    verbs.push(v);
                }
            }
            format!("{} {what} {whose}", verbs.join(", "))
        }
        Scope::Launch | Scope::LaunchEncounter => "know the launch context".into(),
        Scope::LaunchPatient => "know which patient is selected".into(),
        Scope::OpenId | Scope::FhirUser => "know who you are".into(),
        Scope::OfflineAccess => "keep access after you sign out (refresh token)".into(),
        Scope::OnlineAccess => "keep access while you are signed in".into(),
    }
}

impl Vigil {
    /// Registers a client. A JWK Set makes it confidential (`private_key_jwt`).
    pub async fn add_client(&self, who: &Principal, new: NewClient) -> Result<(), AppError> {
        self.require_admin(who)?;
        let bad = |m: &str| AppError::unprocessable(fhir::IssueCode::Invalid, m.to_owned());
        if !valid_client_id(&new.client_id) || new.client_id == OPERATOR_CLIENT {
            return Err(bad(
                "a client id has 1 to 64 of A-Z a-z 0-9 . _ - (and is not vigil-cli)",
            ));
        }
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(bad("a client name has 1 to 100 characters"));
        }
        if new.redirect_uris.len() > 20 || !new.redirect_uris.iter().all(|u| valid_redirect(u)) {
            return Err(bad(
                "redirect URIs must be https (or http on localhost), without fragments",
            ));
        }
        let scope = ScopeSet::parse(&new.scope).map_err(|e| bad(&e.to_string()))?;
        if scope.is_empty() {
            return Err(bad("a client needs at least one scope"));
        }
        let system = scope
            .iter()
            .any(|s| matches!(s, Scope::Resource(r) if r.context == Context::System));
        match &new.jwks {
            Some(j) => auth::assertion::check_jwks(j)
                .map_err(|e| bad(&format!("the JWK Set is not usable: {e}")))?,
            None if system => return Err(bad("system/ scopes need a JWK Set (backend services)")),
            None if new.redirect_uris.is_empty() => {
                return Err(bad("a public app needs a redirect URI"));
            }
            None => {}
        }
        let data = serde_json::to_vec(&ClientData {
            redirect_uris: new.redirect_uris,
            scope: scope.to_string(),
            jwks: new.jwks,
        })
        .map_err(|e| AppError::Integrity(e.to_string()))?;
        let created = self
            .store
            .create_client(&OAuthClient {
                client_id: new.client_id.clone(),
                name: name.to_owned(),
                active: true,
                created: self.now(),
                revoked: None,
                data,
            })
            .await?;
        if !created {
            return Err(AppError::Conflict("that client id is taken".into()));
        }
        self.audit_event(
            who,
            crate::trail::Category::Administration,
            "client-register",
            crate::trail::Action::U,
            None,
            None,
        )
        .await?;
        tracing::info!(client = %new.client_id, "OAuth client registered");
        Ok(())
    }

    pub async fn list_clients(&self, who: &Principal) -> Result<Vec<ClientSummary>, AppError> {
        self.require_admin(who)?;
        let mut out = Vec::new();
        for c in self.store.clients().await? {
            let d = client_data(&c)?;
            out.push(ClientSummary {
                client_id: c.client_id,
                name: c.name,
                active: c.active,
                confidential: d.jwks.is_some(),
                redirect_uris: d.redirect_uris,
                scope: d.scope,
            });
        }
        Ok(out)
    }

    /// Revokes a client: it can get no new tokens, and its tokens stop working.
    pub async fn revoke_client(&self, who: &Principal, client_id: &str) -> Result<(), AppError> {
        self.require_admin(who)?;
        if !self.store.revoke_client(client_id, self.now()).await? {
            return Err(AppError::NotFound("no such active client".into()));
        }
        self.audit_event(
            who,
            crate::trail::Category::Administration,
            "client-revoke",
            crate::trail::Action::U,
            None,
            None,
        )
        .await?;
        tracing::info!(client = %client_id, "OAuth client revoked");
        Ok(())
    }

    async fn active_client(&self, id: &str) -> Result<(OAuthClient, ClientData), OAuthError> {
        let c = self
            .store
            .client(id)
            .await?
            .filter(|c| c.active)
            .ok_or_else(|| OAuthError::new("invalid_client", "unknown or revoked client"))?;
        let d = client_data(&c)?;
        Ok((c, d))
    }

    /// Checks an authorisation request before anything is shown. An `Err`
    /// whose redirect is `None` must not redirect (unknown client or
    /// redirect URI): the page shows the error instead.
    pub async fn authorize_check(
        &self,
        req: &AuthorizeRequest,
        account: &Account,
        fhir_base: &str,
    ) -> Result<ConsentView, (OAuthError, Option<String>)> {
        let client_id = req.client_id.as_deref().unwrap_or("");
        let (client, data) = self.active_client(client_id).await.map_err(|e| (e, None))?;
        let redirect = req.redirect_uri.as_deref().unwrap_or("");
        if !data.redirect_uris.iter().any(|u| u == redirect) {
            return Err((
                OAuthError::new("invalid_request", "the redirect URI is not registered"),
                None,
            ));
        }
        let back = |e: OAuthError| (e, Some(redirect.to_owned()));
        if req.response_type.as_deref() != Some("code") {
            return Err(back(OAuthError::new(
                "unsupported_response_type",
                "only response_type=code",
            )));
        }
        match req.code_challenge_method.as_deref() {
            Some("S256") => {}
            _ => {
                return Err(back(OAuthError::new(
                    "invalid_request",
                    "PKCE with code_challenge_method=S256 is required",
                )));
            }
        }
        auth::pkce::check_challenge(req.code_challenge.as_deref().unwrap_or(""))
            .map_err(|e| back(OAuthError::new("invalid_request", e.to_string())))?;
        if req.aud.as_deref().map(|a| a.trim_end_matches('/')) != Some(fhir_base) {
            return Err(back(OAuthError::new(
                "invalid_request",
                "aud must be this server's FHIR base URL",
            )));
        }
        if req.launch.is_some() {
            return Err(back(OAuthError::new(
                "invalid_request",
                "EHR launch is not supported; use a standalone launch",
            )));
        }
        let granted = self
            .grantable(&data, account, req.scope.as_deref().unwrap_or(""))
            .map_err(back)?;
        let choose_patient =
            granted.contains(&Scope::LaunchPatient) && account.role != Role::Patient;
        Ok(ConsentView {
            client_name: client.name,
            client_id: client.client_id,
            scopes: granted
                .iter()
                .map(|s| (s.to_string(), describe(s)))
                .collect(),
            choose_patient,
        })
    }

    /// The requested scopes within the client's registration and the user's
    /// role (patients get only `patient/` scopes; nobody gets `system/`).
    fn grantable(
        &self,
        client: &ClientData,
        account: &Account,
        requested: &str,
    ) -> Result<ScopeSet, OAuthError> {
        let requested = ScopeSet::parse(requested)
            .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
        let ceiling = ScopeSet::parse(&client.scope).unwrap_or_default();
        let ok = requested
            .iter()
            .filter(|s| covered(&ceiling, s) || matches!(s, Scope::OpenId | Scope::FhirUser))
            .filter(|s| match s {
                Scope::Resource(r) => match r.context {
                    Context::System => false,
                    Context::User => account.role != Role::Patient,
                    Context::Patient => true,
                },
                _ => true,
            })
            .cloned();
        let set = ScopeSet::from_scopes(ok);
        if !set.iter().any(|s| matches!(s, Scope::Resource(_))) {
            return Err(OAuthError::new(
                "invalid_scope",
                "none of the requested resource scopes can be granted",
            ));
        }
        Ok(set)
    }

    /// The user approved (some of) the scopes: returns the redirect URL with
    /// a single-use code.
    pub async fn authorize_approve(
        &self,
        req: &AuthorizeRequest,
        account: &Account,
        fhir_base: &str,
        approved: &[String],
        chosen_patient: Option<&str>,
    ) -> Result<String, (OAuthError, Option<String>)> {
        let view = self.authorize_check(req, account, fhir_base).await?;
        let redirect = req.redirect_uri.clone().unwrap_or_default();
        let back = |e: OAuthError| (e, Some(redirect.clone()));
        let offered: Vec<&String> = view.scopes.iter().map(|(s, _)| s).collect();
        let chosen: Vec<String> = approved
            .iter()
            .filter(|s| offered.contains(s))
            .cloned()
            .collect();
        let set = ScopeSet::parse(&chosen.join(" "))
            .map_err(|e| back(OAuthError::new("invalid_scope", e.to_string())))?;
        if !set.iter().any(|s| matches!(s, Scope::Resource(_))) {
            return Err(back(OAuthError::new(
                "access_denied",
                "no resource scope was approved",
            )));
        }
        let needs_patient = set.contains(&Scope::LaunchPatient)
            || set
                .iter()
                .any(|s| matches!(s, Scope::Resource(r) if r.context == Context::Patient));
        let patient = if account.role == Role::Patient {
            account.patient.clone()
        } else if needs_patient {
            let p = chosen_patient
                .and_then(|p| ResourceId::new(p.trim().to_owned()).ok())
                .ok_or_else(|| back(OAuthError::new("invalid_request", "choose a patient")))?;
            self.read(&Principal::Operator, model::ResourceType::Patient, &p)
                .await
                .map_err(|_| back(OAuthError::new("invalid_request", "no such patient")))?;
            Some(p)
        } else {
            None
        };
        if needs_patient && patient.is_none() {
            return Err(back(OAuthError::new(
                "invalid_request",
                "no patient in context",
            )));
        }
        let grant = Grant {
            client_id: view.client_id,
            account: account.id.to_string(),
            scope: set.to_string(),
            patient: patient.map(|p| p.to_string()),
            redirect_uri: redirect.clone(),
            code_challenge: req.code_challenge.clone().unwrap_or_default(),
            nonce: req.nonce.clone(),
            offline: set.contains(&Scope::OfflineAccess),
        };
        let (code, hash) = super::new_secret();
        let payload = self
            .seal_json(&format!("{PURPOSE_CODE}|{}", hex_of(&hash)), &grant)
            .await
            .map_err(|e| back(e.into()))?;
        self.store
            .put_challenge(
                &hash,
                &Challenge {
                    purpose: PURPOSE_CODE.into(),
                    account: Some(account.id.clone()),
                    payload,
                    expires: plus_secs(self.now(), CODE_SECS),
                },
            )
            .await
            .map_err(|e| back(e.into()))?;
        tracing::info!(account = %account.id, client = %grant.client_id, "authorisation code issued");
        Ok(with_query(
            &redirect,
            &[
                ("code", Some(code.as_str())),
                ("state", req.state.as_deref()),
            ],
        ))
    }

    /// The redirect URL for an error after the redirect URI was validated.
    pub fn authorize_error_redirect(redirect: &str, e: &OAuthError, state: Option<&str>) -> String {
        with_query(
            redirect,
            &[
                ("error", Some(e.error)),
                ("error_description", Some(e.description.as_str())),
                ("state", state),
            ],
        )
    }

    /// Client authentication at the token endpoint: public clients name
    /// themselves; confidential ones must sign an assertion (each `jti` once).
    async fn authenticate_client(
        &self,
        req: &TokenRequest,
        ep: &Endpoints,
    ) -> Result<(OAuthClient, ClientData), OAuthError> {
        let assertion = req.client_assertion.as_deref();
        let named = match (assertion, req.client_id.as_deref()) {
            (Some(a), _) => {
                if req.client_assertion_type.as_deref() != Some(ASSERTION_TYPE) {
                    return Err(OAuthError::new(
                        "invalid_client",
                        "unsupported client_assertion_type",
                    ));
                }
                unverified_iss(a)
                    .ok_or_else(|| OAuthError::new("invalid_client", "malformed assertion"))?
            }
            (None, Some(id)) => id.to_owned(),
            (None, None) => return Err(OAuthError::new("invalid_client", "client_id missing")),
        };
        if req.client_id.as_deref().is_some_and(|id| id != named) {
            return Err(OAuthError::new("invalid_client", "client_id mismatch"));
        }
        let (client, data) = self.active_client(&named).await?;
        match (&data.jwks, assertion) {
            (None, None) => Ok((client, data)),
            (None, Some(_)) => Err(OAuthError::new(
                "invalid_client",
                "this client has no registered keys",
            )),
            (Some(_), None) => Err(OAuthError::new(
                "invalid_client",
                "this client must authenticate with a signed assertion",
            )),
            (Some(jwks), Some(a)) => {
                let now = unix(self.now());
                let claims = auth::assertion::verify_assertion(
                    a,
                    jwks,
                    &client.client_id,
                    &ep.token_url,
                    now,
                    30,
                )
                .map_err(|e| OAuthError::new("invalid_client", e.to_string()))?;
                let key = crypto::token_hash(&format!("{}|{}", client.client_id, claims.jti));
                let fresh = self
                    .store
                    .put_challenge(
                        &key,
                        &Challenge {
                            purpose: PURPOSE_JTI.into(),
                            account: None,
                            payload: Vec::new(),
                            expires: plus_secs(super::from_unix(claims.exp), 60),
                        },
                    )
                    .await?;
                if !fresh {
                    return Err(OAuthError::new(
                        "invalid_client",
                        "this assertion was already used (jti replay)",
                    ));
                }
                Ok((client, data))
            }
        }
    }

    /// `POST /oauth/token`: returns the JSON body of a successful answer.
    pub async fn token(&self, req: &TokenRequest, ep: &Endpoints) -> Result<Value, OAuthError> {
        match req.grant_type.as_deref() {
            Some("authorization_code") => self.token_from_code(req, ep).await,
            Some("refresh_token") => self.token_from_refresh(req, ep).await,
            Some("client_credentials") => self.token_for_service(req, ep).await,
            _ => Err(OAuthError::new(
                "unsupported_grant_type",
                "grant_type must be authorization_code, refresh_token or client_credentials",
            )),
        }
    }

    async fn token_from_code(
        &self,
        req: &TokenRequest,
        ep: &Endpoints,
    ) -> Result<Value, OAuthError> {
        let (client, _) = self.authenticate_client(req, ep).await?;
        let code = req.code.as_deref().unwrap_or("");
        let hash = crypto::token_hash(code);
        let invalid = || OAuthError::new("invalid_grant", "the code is invalid, used or expired");
        // Taken at once: a code works once, even if the rest fails.
        let c = self
            .store
            .take_challenge(&hash, PURPOSE_CODE, self.now())
            .await?
            .ok_or_else(invalid)?;
        let grant: Grant = self
            .open_json(&format!("{PURPOSE_CODE}|{}", hex_of(&hash)), &c.payload)
            .await?;
        if grant.client_id != client.client_id {
            return Err(invalid());
        }
        if req.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
            return Err(OAuthError::new("invalid_grant", "redirect_uri mismatch"));
        }
        auth::pkce::verify_pkce(
            req.code_verifier.as_deref().unwrap_or(""),
            &grant.code_challenge,
        )
        .map_err(|e| OAuthError::new("invalid_grant", e.to_string()))?;
        let family = random_hex();
        self.grant_tokens(&grant, ep, &family, true).await
    }

    /// Issues the access token (and refresh and id tokens when granted).
    async fn grant_tokens(
        &self,
        grant: &Grant,
        ep: &Endpoints,
        family: &str,
        with_id_token: bool,
    ) -> Result<Value, OAuthError> {
        let id = self.identity()?;
        let account_id = store::AccountId::new(grant.account.clone())
            .ok_or_else(|| OAuthError::new("invalid_grant", "bad grant"))?;
        let account = self
            .store
            .account(&account_id)
            .await?
            .filter(|a| a.active)
            .ok_or_else(|| OAuthError::new("invalid_grant", "the account is not active"))?;
        let now = unix(self.now());
        let ttl = id.cfg.access_token_minutes * 60;
        let claims = Claims {
            iss: ep.issuer.clone(),
            sub: account.id.to_string(),
            aud: ep.fhir_base.clone(),
            exp: now + ttl,
            iat: now,
            jti: auth::token::new_jti(&mut rand::rngs::OsRng),
            scope: grant.scope.clone(),
            client_id: grant.client_id.clone(),
            patient: grant.patient.clone(),
        };
        let access = auth::token::issue(&claims, &id.token_key)
            .map_err(|e| AppError::Keys(format!("token: {e}")))?;
        let scopes = ScopeSet::parse(&grant.scope).unwrap_or_default();
        let mut body = json!({
            "access_token": access.as_str(),
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": grant.scope,
        });
        if let Some(p) = &grant.patient {
            set(&mut body, "patient", json!(p));
            set(
                &mut body,
                "need_patient_banner",
                json!(account.role != Role::Patient),
            );
        }
        if scopes.contains(&Scope::OfflineAccess) || scopes.contains(&Scope::OnlineAccess) {
            let (secret, hash) = super::new_secret();
            let t = self.refresh_record(grant, &account, hash, family).await?;
            if !self.store.put_refresh_token(&t).await? {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "the account or client is not active",
                ));
            }
            set(&mut body, "refresh_token", json!(secret));
        }
        if with_id_token && scopes.contains(&Scope::OpenId) && scopes.contains(&Scope::FhirUser) {
            let fhir_user = match (&account.practitioner, &account.patient) {
                (Some(p), _) => format!("{}/Practitioner/{p}", ep.fhir_base),
                (None, Some(p)) => format!("{}/Patient/{p}", ep.fhir_base),
                (None, None) => format!("{}/Person/{}", ep.fhir_base, account.id),
            };
            let token = auth::idtoken::sign_id_token(
                &auth::idtoken::IdTokenClaims {
                    iss: ep.issuer.clone(),
                    sub: account.id.to_string(),
                    aud: grant.client_id.clone(),
                    exp: now + ttl,
                    iat: now,
                    fhir_user,
                    nonce: grant.nonce.clone(),
                },
                &id.id_token_key,
            )
            .map_err(|e| AppError::Keys(format!("id_token: {e}")))?;
            set(&mut body, "id_token", json!(token));
        }
        let mut agent = super::signin::account_principal(&account);
        if let Principal::User(c) = &mut agent {
            c.client_id = Some(grant.client_id.clone());
            c.via = crate::Via::Token {
                jti: claims.jti.clone(),
            };
        }
        self.audit_event(
            &agent,
            crate::trail::Category::Security,
            "token-issue",
            crate::trail::Action::C,
            Some(&account.id),
            None,
        )
        .await?;
        tracing::info!(account = %account.id, client = %grant.client_id, jti = %claims.jti, "access token issued");
        Ok(body)
    }

    async fn refresh_record(
        &self,
        grant: &Grant,
        account: &Account,
        hash: [u8; 32],
        family: &str,
    ) -> Result<RefreshToken, AppError> {
        let now = self.now();
        let secs = if grant.offline {
            self.identity()?.cfg.refresh_token_days * 86_400
        } else {
            ONLINE_REFRESH_SECS
        };
        Ok(RefreshToken {
            hash,
            family: family.to_owned(),
            account: account.id.clone(),
            client_id: grant.client_id.clone(),
            payload: self.seal_json(&format!("refresh|{family}"), grant).await?,
            created: now,
            expires: plus_secs(now, secs),
        })
    }

    async fn token_from_refresh(
        &self,
        req: &TokenRequest,
        ep: &Endpoints,
    ) -> Result<Value, OAuthError> {
        let (client, _) = self.authenticate_client(req, ep).await?;
        let old_hash = crypto::token_hash(req.refresh_token.as_deref().unwrap_or(""));
        let invalid =
            || OAuthError::new("invalid_grant", "the refresh token is invalid or expired");
        let old = self.store.live_refresh_token(&old_hash, self.now()).await?;
        let Some(old) = old else {
            // A used token comes back as reuse: revoke its family.
            if let RefreshOutcome::Reused = self
                .store
                .rotate_refresh_token(&old_hash, &dummy_refresh(), self.now())
                .await?
            {
                tracing::warn!("a used refresh token was presented again; its family is revoked");
            }
            return Err(invalid());
        };
        if old.client_id != client.client_id {
            return Err(invalid());
        }
        let mut grant: Grant = self
            .open_json(&format!("refresh|{}", old.family), &old.payload)
            .await?;
        if let Some(narrower) = req.scope.as_deref() {
            let asked = ScopeSet::parse(narrower)
                .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
            let had = ScopeSet::parse(&grant.scope).unwrap_or_default();
            if asked.iter().any(|s| !had.contains(s)) {
                return Err(OAuthError::new(
                    "invalid_scope",
                    "a refresh cannot widen scopes",
                ));
            }
            grant.scope = asked.to_string();
        }
        let account = self
            .store
            .account(&old.account)
            .await?
            .ok_or_else(invalid)?;
        let (secret, hash) = super::new_secret();
        let new = self
            .refresh_record(&grant, &account, hash, &old.family)
            .await?;
        match self
            .store
            .rotate_refresh_token(&old_hash, &new, self.now())
            .await?
        {
            RefreshOutcome::Rotated(_) => {}
            RefreshOutcome::Reused => {
                tracing::warn!(account = %account.id, "refresh token reused; family revoked");
                return Err(invalid());
            }
            RefreshOutcome::Invalid => return Err(invalid()),
        }
        // The new refresh token is already stored; issue the access token
        // without storing another.
        let mut body = self.grant_tokens_no_refresh(&grant, ep).await?;
        set(&mut body, "refresh_token", json!(secret));
        Ok(body)
    }

    async fn grant_tokens_no_refresh(
        &self,
        grant: &Grant,
        ep: &Endpoints,
    ) -> Result<Value, OAuthError> {
        let mut g = grant.clone();
        let scopes: Vec<String> = ScopeSet::parse(&g.scope)
            .unwrap_or_default()
            .iter()
            .filter(|s| !matches!(s, Scope::OfflineAccess | Scope::OnlineAccess))
            .map(ToString::to_string)
            .collect();
        let original_scope = g.scope.clone();
        g.scope = scopes.join(" ");
        let mut body = self.grant_tokens(&g, ep, "", false).await?;
        set(&mut body, "scope", json!(original_scope));
        Ok(body)
    }

    async fn token_for_service(
        &self,
        req: &TokenRequest,
        ep: &Endpoints,
    ) -> Result<Value, OAuthError> {
        if req.client_assertion.is_none() {
            return Err(OAuthError::new(
                "invalid_client",
                "client_credentials needs a signed client assertion",
            ));
        }
        let (client, data) = self.authenticate_client(req, ep).await?;
        let requested = ScopeSet::parse(req.scope.as_deref().unwrap_or(""))
            .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
        let ceiling = ScopeSet::parse(&data.scope).unwrap_or_default();
        let granted = ScopeSet::from_scopes(
            requested
                .iter()
                .filter(|s| {
                    covered(&ceiling, s)
                        && matches!(s, Scope::Resource(r) if r.context == Context::System)
                })
                .cloned(),
        );
        if granted.is_empty() {
            return Err(OAuthError::new(
                "invalid_scope",
                "request system/ scopes this client is registered for",
            ));
        }
        let id = self.identity()?;
        let now = unix(self.now());
        let ttl = id.cfg.access_token_minutes * 60;
        let claims = Claims {
            iss: ep.issuer.clone(),
            sub: client.client_id.clone(),
            aud: ep.fhir_base.clone(),
            exp: now + ttl,
            iat: now,
            jti: auth::token::new_jti(&mut rand::rngs::OsRng),
            scope: granted.to_string(),
            client_id: client.client_id.clone(),
            patient: None,
        };
        let access = auth::token::issue(&claims, &id.token_key)
            .map_err(|e| AppError::Keys(format!("token: {e}")))?;
        let agent = Principal::User(crate::Caller {
            account: None,
            role: None,
            username: None,
            client_id: Some(client.client_id.clone()),
            scopes: granted.clone(),
            patient: None,
            via: crate::Via::Token {
                jti: claims.jti.clone(),
            },
            practitioner: None,
            own_patient: None,
            mfa: false,
        });
        self.audit_event(
            &agent,
            crate::trail::Category::Security,
            "token-issue",
            crate::trail::Action::C,
            None,
            None,
        )
        .await?;
        tracing::info!(client = %client.client_id, jti = %claims.jti, "service token issued");
        Ok(json!({
            "access_token": access.as_str(),
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": claims.scope,
        }))
    }

    /// RFC 7662 introspection, for an authenticated confidential client.
    pub async fn introspect(
        &self,
        req: &TokenRequest,
        ep: &Endpoints,
    ) -> Result<Value, OAuthError> {
        if req.client_assertion.is_none() {
            return Err(OAuthError::new(
                "invalid_client",
                "introspection needs a signed client assertion",
            ));
        }
        self.authenticate_client(req, ep).await?;
        let token = req.token.as_deref().unwrap_or("");
        let id = self.identity()?;
        let now = unix(self.now());
        if let Ok(claims) = auth::token::verify(token, &id.token_key, &ep.fhir_base, now)
            && self.principal_of(&claims).await.is_ok()
        {
            let mut v = json!({
                "active": true,
                "token_type": "Bearer",
                "scope": claims.scope,
                "client_id": claims.client_id,
                "sub": claims.sub,
                "aud": claims.aud,
                "iss": claims.iss,
                "exp": claims.exp,
                "iat": claims.iat,
                "jti": claims.jti,
            });
            if let Some(p) = claims.patient {
                set(&mut v, "patient", json!(p));
            }
            return Ok(v);
        }
        if let Some(t) = self
            .store
            .live_refresh_token(&crypto::token_hash(token), self.now())
            .await?
        {
            return Ok(json!({
                "active": true,
                "token_type": "refresh_token",
                "client_id": t.client_id,
                "sub": t.account.to_string(),
                "exp": unix(t.expires),
            }));
        }
        Ok(json!({"active": false}))
    }

    /// RFC 7009 revocation: the answer is the same whether or not the token
    /// was known. A client may revoke only its own tokens.
    pub async fn revoke_token(&self, req: &TokenRequest, ep: &Endpoints) -> Result<(), OAuthError> {
        let (client, _) = self.authenticate_client(req, ep).await?;
        let token = req.token.as_deref().unwrap_or("");
        let id = self.identity()?;
        // An expired access token needs no revocation; any leeway is fine here.
        let now = unix(self.now());
        if let Ok(claims) = auth::token::verify(token, &id.token_key, &ep.fhir_base, now) {
            if claims.client_id == client.client_id {
                self.store
                    .revoke_access_token(&claims.jti, plus_secs(super::from_unix(claims.exp), 60))
                    .await?;
                tracing::info!(client = %client.client_id, jti = %claims.jti, "access token revoked");
            }
            return Ok(());
        }
        let hash = crypto::token_hash(token);
        if let Some(t) = self.store.live_refresh_token(&hash, self.now()).await?
            && t.client_id == client.client_id
        {
            self.store.revoke_refresh_token(&hash).await?;
            tracing::info!(client = %client.client_id, "refresh token family revoked");
        }
        Ok(())
    }

    /// The public keys that verify our id_tokens.
    pub fn jwks(&self) -> Result<Value, AppError> {
        Ok(self.identity()?.id_token_key.jwks())
    }
}

/// Whether a client registered for `ceiling` may be granted `s`: the same
/// scope, or a resource scope within a registered one (`system/*.rs` covers
/// `system/Patient.rs` and `system/Patient.r`, not `system/Patient.c`).
fn covered(ceiling: &ScopeSet, s: &Scope) -> bool {
    use auth::scope::Interaction as I;
    let Scope::Resource(r) = s else {
        return ceiling.contains(s);
    };
    ceiling.iter().any(|c| match c {
        Scope::Resource(c) => {
            c.context == r.context
                && (c.resource == auth::scope::ResourceType::Any || c.resource == r.resource)
                && [I::Create, I::Read, I::Update, I::Delete, I::Search]
                    .into_iter()
                    .all(|i| !r.permissions.contains(i) || c.permissions.contains(i))
                && (c.restriction.is_none() || c.restriction == r.restriction)
        }
        _ => false,
    })
}

fn client_data(c: &OAuthClient) -> Result<ClientData, AppError> {
    serde_json::from_slice(&c.data)
        .map_err(|_| AppError::Integrity(format!("client {} registration", c.client_id)))
}

fn hex_of(h: &[u8; 32]) -> String {
    super::hex(h)
}

/// A refresh record that can never be stored (its account is not real): used
/// only to let `rotate_refresh_token` report and act on reuse.
fn dummy_refresh() -> RefreshToken {
    RefreshToken {
        hash: [0; 32],
        family: "0".repeat(32),
        account: store::AccountId::from_bytes([0; 16]),
        client_id: String::new(),
        payload: Vec::new(),
        created: model::Timestamp(0),
        expires: model::Timestamp(0),
    }
}

/// The `iss` of an assertion, read before verification only to find which
/// client's keys verify it.
fn unverified_iss(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let iss = v.get("iss")?.as_str()?;
    valid_client_id(iss).then(|| iss.to_owned())
}

/// Appends query parameters to a URL (which may have a query already).
fn with_query(base: &str, params: &[(&str, Option<&str>)]) -> String {
    let mut out = base.to_owned();
    let mut sep = if base.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        if let Some(v) = v {
            out.push(sep);
            out.push_str(k);
            out.push('=');
            out.push_str(&auth::percent_encode(v));
            sep = '&';
        }
    }
    out
}

/// Sets a member of a JSON object (a no-op on anything else).
fn set(body: &mut Value, key: &str, value: Value) {
    if let Some(o) = body.as_object_mut() {
        o.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_scopes_cover_narrower_ones_only() {
        let ceiling = ScopeSet::parse("system/*.rs patient/Observation.r launch/patient").unwrap();
        let ok = |s: &str| covered(&ceiling, &s.parse().unwrap());
        assert!(ok("system/*.rs"));
        assert!(ok("system/Patient.rs"));
        assert!(ok("system/Patient.r"));
        assert!(ok("system/Patient.read"), "v1 scopes map to v2");
        assert!(!ok("system/Patient.c"));
        assert!(!ok("system/*.cruds"));
        assert!(!ok("user/Patient.rs"), "another context");
        assert!(ok("patient/Observation.r"));
        assert!(!ok("patient/Observation.rs"));
        assert!(!ok("patient/Condition.r"));
        assert!(ok("launch/patient"));
        assert!(!ok("offline_access"));
    }
}
