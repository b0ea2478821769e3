//! The decision point: Cedar policies validated in strict mode against the
//! schema, evaluated over a small entity slice built per request.

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::RwLock;

use cedar_policy as cedar;
use model::Timestamp;

use crate::compile;
use crate::explain::{self, Need};
use crate::{
    Action, Category, Decision, Facts, Label, Lesson, Principal, Purpose, Relationship, Request,
    Windows, consent_denies, relationships,
};

/// The Cedar schema the policies are validated against.
pub const SCHEMA: &str = include_str!("../policies/schema.cedarschema");
/// The default policy set (`docs/access-policy.md`).
pub const DEFAULT_POLICIES: &str = include_str!("../policies/default.cedar");

/// The id a denial carries when no permit rule applied.
pub const DEFAULT_DENY: &str = "default-deny";
/// The id a denial carries when the decision could not be evaluated.
pub const EVALUATION_ERROR: &str = "evaluation-error";
/// The rule whose denial names the consent that denied.
const CONSENT_RULE: &str = "F1";

/// Why a schema or policy set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the schema does not parse: {0}")]
    Schema(String),
    #[error("the policies do not parse: {0}")]
    Parse(String),
    #[error("the policies do not validate against the schema: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("a policy has no @{annotation} annotation: {policy}")]
    MissingAnnotation {
        annotation: &'static str,
        policy: String,
    },
    #[error("policy {id} names an unknown lesson: {lesson}")]
    UnknownLesson { id: String, lesson: String },
    #[error("policy templates are not supported")]
    Template,
    #[error("the schema lacks the vigil entity or action names: {0}")]
    Names(String),
}

/// One policy of the set, as the privacy officer's page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule number of the rule book (`@id`); several policies may share one.
    pub id: String,
    /// `permit` (true) or `forbid` (false).
    pub permit: bool,
    /// `@reason`.
    pub reason: String,
    /// `@lesson`, if any.
    pub lesson: Option<Lesson>,
    /// `@mask`: elements removed from what this permit allows.
    pub masks: Vec<String>,
    /// The Cedar text of the policy.
    pub text: String,
}

const LESSONS: [Lesson; 8] = [
    Lesson::Relationship,
    Lesson::Consent,
    Lesson::Vip,
    Lesson::Sensitive,
    Lesson::Role,
    Lesson::Purpose,
    Lesson::Training,
    Lesson::Mfa,
];

/// The decision point. Everything is parsed and validated once, in
/// [`Engine::new`]; [`Engine::decide`] only builds the request's entities.
pub struct Engine {
    authorizer: cedar::Authorizer,
    /// In source order.
    rules: Vec<Rule>,
    index: HashMap<cedar::PolicyId, usize>,
    user: cedar::EntityTypeName,
    resource: cedar::EntityTypeName,
    /// Each action's uid and the policies Cedar is asked for it (see
    /// [`compile`]).
    actions: Vec<(Action, cedar::EntityUid, cedar::PolicySet)>,
    windows: Windows,
    text: String,
    /// What the policies read, so that the memo's key holds exactly that.
    reads: Reads,
    /// Cedar's answers by everything they depend on (see [`MemoKey`]).
    /// Read-mostly: lookups share the lock, only a new answer takes it alone.
    memo: RwLock<HashMap<MemoKey, (bool, Vec<usize>)>>,
}

/// The answers kept at most (the memo is emptied when full: it is a cache,
/// never the truth).
const MEMO_MAX: usize = 65_536;

/// Which inputs the policy set can see beyond the attributes every key holds:
/// entity ids (a policy naming a user or a resource) and the principal's
/// practitioner, organization and department attributes.
#[derive(Debug, Clone, Copy, Default)]
struct Reads {
    ids: bool,
    practitioner: bool,
    organization: bool,
    department: bool,
}

impl Reads {
    /// Scans the policies' JSON form: any entity literal other than an
    /// action means ids matter; any attribute access names what is read.
    fn of(set: &cedar::PolicySet) -> Result<Reads, PolicyError> {
        fn walk(v: &serde_json::Value, r: &mut Reads) {
            match v {
                serde_json::Value::Object(m) => {
                    if let (Some(serde_json::Value::String(t)), Some(_)) =
                        (m.get("type"), m.get("id"))
                        && t != "Vigil::Action"
                        && t != "Action"
                    {
                        r.ids = true;
                    }
                    if let Some(serde_json::Value::String(a)) = m.get("attr") {
                        match a.as_str() {
                            "practitioner" => r.practitioner = true,
                            "organization" => r.organization = true,
                            "department" => r.department = true,
                            _ => {}
                        }
                    }
                    m.values().for_each(|x| walk(x, r));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, r)),
                _ => {}
            }
        }
        let mut r = Reads::default();
        for p in set.policies() {
            let json = p
                .to_json()
                .map_err(|e| PolicyError::Parse(format!("{}: {e}", p.id())))?;
            walk(&json, &mut r);
        }
        Ok(r)
    }
}

/// Everything a Cedar answer depends on: the two entities' attributes (and
/// their ids or the optional attributes only when the policies read them),
/// the action and the context. Cedar is a pure function of these, so a
/// remembered answer is exactly the answer it would give again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MemoKey {
    ids: Option<(String, Option<String>)>,
    role: crate::Role,
    mfa: bool,
    training_current: bool,
    practitioner: Option<String>,
    organization: Option<String>,
    department: Option<String>,
    rtype: model::ResourceType,
    has_patient: bool,
    labels: BTreeSet<Label>,
    action: Action,
    purpose: Purpose,
    rels: BTreeSet<Relationship>,
    consent_denied: bool,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.rules.len())
            .field("windows", &self.windows)
            .finish_non_exhaustive()
    }
}

/// What Cedar answered for one purpose.
struct Eval {
    allow: bool,
    /// Indexes into `rules` of the deciding policies, in source order.
    fired: Vec<usize>,
    /// The consent that denies this access, if any.
    consent: Option<String>,
}

/// One decision's questions to Cedar: the entity slice (built at most once,
/// and only if Cedar is asked) and whether the memo may answer.
struct Call<'e> {
    slice: OnceCell<Result<Slice<'e>, Internal>>,
    memo: bool,
}

/// Any failure to build or evaluate a request (the decision denies).
struct Internal;

/// The entities of one request, built once per decision.
struct Slice<'e> {
    entities: cedar::Entities,
    user: cedar::EntityUid,
    action: cedar::EntityUid,
    resource: cedar::EntityUid,
    /// The policies whose scope can match the action.
    policies: &'e cedar::PolicySet,
}

impl Engine {
    /// Parses `schema` and `policies`, validates the policies against the
    /// schema in strict mode and checks that every policy has an `@id` and a
    /// `@reason` (and that a `@lesson` names a known lesson).
    pub fn new(schema: &str, policies: &str, windows: Windows) -> Result<Engine, PolicyError> {
        let (schema, _warnings) = cedar::Schema::from_cedarschema_str(schema)
            .map_err(|e| PolicyError::Schema(e.to_string()))?;
        let set =
            cedar::PolicySet::from_str(policies).map_err(|e| PolicyError::Parse(e.to_string()))?;
        if set.templates().next().is_some() {
            return Err(PolicyError::Template);
        }
        let result =
            cedar::Validator::new(schema.clone()).validate(&set, cedar::ValidationMode::Strict);
        if !result.validation_passed() {
            let errors = result
                .validation_errors()
                .map(|e| format!("{}: {e}", e.policy_id()))
                .collect();
            return Err(PolicyError::Invalid(errors));
        }

        // `PolicySet::from_str` names policies `policy0`, `policy1`, … in
        // source order; the rules keep that order (it orders explanations).
        let mut parsed: Vec<&cedar::Policy> = set.policies().collect();
        parsed.sort_by_key(|p| {
            let id = p.id().to_string();
            (id.len(), id)
        });
        let mut rules = Vec::with_capacity(parsed.len());
        let mut index = HashMap::with_capacity(parsed.len());
        for p in parsed {
            let text = p.to_string();
            let annotation = |annotation: &'static str| {
                p.annotation(annotation).map(str::to_owned).ok_or_else(|| {
                    PolicyError::MissingAnnotation {
                        annotation,
                        policy: text.clone(),
                    }
                })
            };
            let id = annotation("id")?;
            let reason = annotation("reason")?;
            let lesson = match p.annotation("lesson") {
                None => None,
                Some(l) => Some(LESSONS.into_iter().find(|k| k.as_str() == l).ok_or_else(
                    || PolicyError::UnknownLesson {
                        id: id.clone(),
                        lesson: l.to_owned(),
                    },
                )?),
            };
            let masks = p
                .annotation("mask")
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            index.insert(p.id().clone(), rules.len());
            rules.push(Rule {
                id,
                permit: p.effect() == cedar::Effect::Permit,
                reason,
                lesson,
                masks,
                text,
            });
        }

        let name = |s: &str| {
            cedar::EntityTypeName::from_str(s).map_err(|e| PolicyError::Names(e.to_string()))
        };
        let action_type = name("Vigil::Action")?;
        let uids: Vec<(Action, cedar::EntityUid)> = Action::ALL
            .into_iter()
            .map(|a| {
                let uid = cedar::EntityUid::from_type_name_and_id(
                    action_type.clone(),
                    cedar::EntityId::new(a.as_str()),
                );
                (a, uid)
            })
            .collect();
        let leaves: Vec<&cedar::EntityUid> = uids.iter().map(|(_, u)| u).collect();
        let mut actions = Vec::with_capacity(uids.len());
        for (a, uid) in &uids {
            actions.push((*a, uid.clone(), compile::for_action(&set, uid, &leaves)?));
        }
        let reads = Reads::of(&set)?;
        Ok(Engine {
            reads,
            memo: RwLock::new(HashMap::new()),
            authorizer: cedar::Authorizer::new(),
            rules,
            index,
            user: name("Vigil::User")?,
            resource: name("Vigil::Resource")?,
            actions,
            windows,
            text: policies.to_owned(),
        })
    }

    /// The shipped schema and default policies.
    pub fn shipped(windows: Windows) -> Result<Engine, PolicyError> {
        Engine::new(SCHEMA, DEFAULT_POLICIES, windows)
    }

    /// The policy text the engine enforces.
    pub fn policy_text(&self) -> &str {
        &self.text
    }

    /// The policies with their ids, reasons, lessons and masks, in source order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn windows(&self) -> &Windows {
        &self.windows
    }

    /// The relationships between `principal` and `patient` at `now`, and the
    /// break-the-glass grant behind `emergency`, if one holds.
    pub fn relationships(
        &self,
        principal: &Principal,
        patient: &str,
        facts: &Facts,
        now: Timestamp,
    ) -> (BTreeSet<Relationship>, Option<String>) {
        relationships::derive(principal, patient, facts, now, &self.windows)
    }

    /// "What if": the decision for a hypothetical request (the same as
    /// [`Engine::decide`]; nothing is recorded here either way).
    pub fn what_if(&self, req: &Request<'_>) -> Decision {
        self.decide(req)
    }

    /// Decides one request. Never panics: any failure to evaluate denies
    /// with the policy id `evaluation-error`.
    ///
    /// The purpose is the declared one. A request that declares none is
    /// decided under its role's usual purpose; if that denies and a
    /// break-the-glass grant holds, it is decided under `ETREAT` instead
    /// (access under a grant always has purpose `ETREAT`). The grant id is
    /// reported whenever the decision is under `ETREAT` and a grant holds.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        self.decide_with(req, true)
    }

    /// How many answers the memo holds.
    pub fn memo_len(&self) -> usize {
        self.memo.read().map_or(0, |m| m.len())
    }

    /// [`Engine::decide`] without the memo: every question goes to Cedar
    /// (for the benchmark's figure of an evaluation, and for diagnostics).
    pub fn decide_fresh(&self, req: &Request<'_>) -> Decision {
        self.decide_with(req, false)
    }

    fn decide_with(&self, req: &Request<'_>, memo: bool) -> Decision {
        // A directory resource belongs to no patient, whatever it says.
        let patient = req
            .resource
            .patient
            .as_deref()
            .filter(|_| Category::of(req.resource.rtype) != Category::Directory);
        let (rels, grant) = match patient {
            Some(patient) => self.relationships(req.principal, patient, req.facts, req.now),
            None => (BTreeSet::new(), None),
        };
        // The slice is built only if Cedar is asked (not when the memo answers).
        let call = Call {
            slice: OnceCell::new(),
            memo,
        };
        let (purpose, eval) = match req.purpose {
            Some(p) => (p, self.evaluate(req, &call, &rels, p)),
            None => {
                let usual = req.principal.role.default_purpose();
                let eval = self.evaluate(req, &call, &rels, usual);
                let allowed = matches!(eval, Ok(Eval { allow: true, .. }));
                if !allowed && rels.contains(&Relationship::Emergency) {
                    (
                        Purpose::Etreat,
                        self.evaluate(req, &call, &rels, Purpose::Etreat),
                    )
                } else {
                    (usual, eval)
                }
            }
        };
        let grant = grant.filter(|_| purpose == Purpose::Etreat);
        let mut d = Decision {
            allow: false,
            policies: Vec::new(),
            reason: String::new(),
            missing: None,
            way_forward: None,
            lesson: None,
            break_glass_possible: false,
            purpose,
            relationships: BTreeSet::new(),
            grant,
            consent: None,
            masks: Vec::new(),
        };
        let eval = match eval {
            Ok(eval) => eval,
            Err(Internal) => {
                d.policies.push(EVALUATION_ERROR.to_owned());
                d.reason = "the decision could not be evaluated, so access is denied".to_owned();
                d.relationships = rels;
                return d;
            }
        };
        let fired: Vec<&Rule> = eval
            .fired
            .iter()
            .filter_map(|&i| self.rules.get(i))
            .collect();
        d.policies = dedup(fired.iter().map(|r| r.id.clone()));
        d.reason = dedup(fired.iter().map(|r| {
            let consent = eval
                .consent
                .as_deref()
                .map(consent_reference)
                .unwrap_or_default();
            r.reason.replace("{consent}", &consent)
        }))
        .join("; ");
        if eval.allow {
            let mut masks: Vec<String> = fired.iter().flat_map(|r| r.masks.clone()).collect();
            masks.sort();
            masks.dedup();
            d.allow = true;
            d.masks = masks;
            d.relationships = rels;
            return d;
        }

        d.break_glass_possible =
            !rels.contains(&Relationship::Emergency) && req.resource.patient.is_some() && {
                let mut with_grant = rels.clone();
                with_grant.insert(Relationship::Emergency);
                matches!(
                    self.evaluate(req, &call, &with_grant, Purpose::Etreat),
                    Ok(Eval { allow: true, .. })
                )
            };
        let way_forward = |d: &Decision| {
            let care_team = "ask to be added to the patient's care team";
            match (req.principal.role.is_clinician(), d.break_glass_possible) {
                (true, true) => Some(format!("{care_team}, or break the glass in an emergency")),
                (true, false) => Some(care_team.to_owned()),
                (false, _) => None,
            }
        };

        if !fired.is_empty() {
            // A forbid decided.
            d.lesson = fired.iter().find_map(|r| r.lesson);
            if fired.iter().any(|r| r.id == CONSENT_RULE) {
                d.consent = eval.consent;
            }
            if d.break_glass_possible {
                d.way_forward = way_forward(&d);
            }
            d.relationships = rels;
            return d;
        }

        // No permit applied: default deny, with what is missing.
        d.policies = vec![DEFAULT_DENY.to_owned()];
        if let Some((alt, rules)) = self.needed_purpose(req, &call, &rels, purpose) {
            d.reason = format!(
                "the rule {rules} allows this for purpose {}, not {}",
                alt.as_str(),
                purpose.as_str()
            );
            d.missing = Some(format!("purpose {}", alt.as_str()));
            d.way_forward = Some(format!("declare the purpose {}", alt.as_str()));
            d.lesson = Some(Lesson::Purpose);
        } else {
            match explain::need(req.principal.role, req.action, req.resource, &self.windows) {
                Need::Relationship(missing) => {
                    d.reason = format!("no rule allows this without {missing}");
                    d.missing = Some(missing);
                    d.way_forward = way_forward(&d);
                    d.lesson = Some(Lesson::Relationship);
                }
                Need::Never(missing) => {
                    d.reason = format!("no rule allows this: {missing}");
                    d.missing = Some(missing);
                    d.lesson = Some(Lesson::Role);
                }
            }
        }
        d.relationships = rels;
        d
    }

    /// G3: for a declared purpose that no permit accepts, the purpose (and
    /// the rule ids) under which the same request would be allowed. The
    /// role's usual purpose is tried first.
    fn needed_purpose<'s>(
        &'s self,
        req: &Request<'_>,
        call: &Call<'s>,
        rels: &BTreeSet<Relationship>,
        purpose: Purpose,
    ) -> Option<(Purpose, String)> {
        req.purpose?;
        std::iter::once(req.principal.role.default_purpose())
            .chain(Purpose::ALL)
            .filter(|&p| p != purpose)
            .find_map(|p| match self.evaluate(req, call, rels, p) {
                Ok(e) if e.allow => {
                    let ids = dedup(
                        e.fired
                            .iter()
                            .filter_map(|&i| self.rules.get(i))
                            .map(|r| r.id.clone()),
                    );
                    Some((p, ids.join(", ")))
                }
                _ => None,
            })
    }

    /// Asks Cedar about `req` (whose entities are `slice`) under `purpose`
    /// with `rels`.
    fn evaluate<'s>(
        &'s self,
        req: &Request<'_>,
        call: &Call<'s>,
        rels: &BTreeSet<Relationship>,
        purpose: Purpose,
    ) -> Result<Eval, Internal> {
        let consent = consent_denies(req.principal, purpose, req.resource, req.facts, req.now);
        let key = self.memo_key(req, rels, purpose, consent.is_some());
        let remembered = if call.memo {
            self.memo.read().ok().and_then(|m| m.get(&key).cloned())
        } else {
            None
        };
        if let Some((allow, fired)) = remembered {
            return Ok(Eval {
                allow,
                fired,
                consent,
            });
        }
        let slice = call
            .slice
            .get_or_init(|| self.slice(req, None))
            .as_ref()
            .map_err(|_| Internal)?;
        let request = self.cedar_request(slice, rels, purpose, consent.is_some(), None)?;
        let response = self
            .authorizer
            .is_authorized(&request, slice.policies, &slice.entities);
        if response.diagnostics().errors().next().is_some() {
            return Err(Internal);
        }
        let mut fired = response
            .diagnostics()
            .reason()
            .map(|id| self.index.get(id).copied().ok_or(Internal))
            .collect::<Result<Vec<usize>, Internal>>()?;
        fired.sort_unstable();
        let allow = response.decision() == cedar::Decision::Allow;
        if call.memo
            && let Ok(mut m) = self.memo.write()
        {
            if m.len() >= MEMO_MAX {
                m.clear();
            }
            m.insert(key, (allow, fired.clone()));
        }
        Ok(Eval {
            allow,
            fired,
            consent,
        })
    }

    /// The memo key of a question (see [`MemoKey`]).
    fn memo_key(
        &self,
        req: &Request<'_>,
        rels: &BTreeSet<Relationship>,
        purpose: Purpose,
        consent_denied: bool,
    ) -> MemoKey {
        let p = req.principal;
        let r = req.resource;
        let reads = self.reads;
        MemoKey {
            ids: reads.ids.then(|| (p.id.clone(), r.id.clone())),
            role: p.role,
            mfa: p.mfa,
            training_current: p.training_current,
            practitioner: p.practitioner.clone().filter(|_| reads.practitioner),
            organization: p.organization.clone().filter(|_| reads.organization),
            department: p.department.clone().filter(|_| reads.department),
            rtype: r.rtype,
            has_patient: r.patient.is_some(),
            labels: r.labels.clone(),
            action: req.action,
            purpose,
            rels: rels.clone(),
            consent_denied,
        }
    }

    /// The entity slice of a request: the principal and the resource.
    /// With a schema, the entities are validated against it (tests do;
    /// production skips it, the shapes being fixed here).
    fn slice(
        &self,
        req: &Request<'_>,
        schema: Option<&cedar::Schema>,
    ) -> Result<Slice<'_>, Internal> {
        let p = req.principal;
        let r = req.resource;
        let s = |v: &str| cedar::RestrictedExpression::new_string(v.to_owned());
        let b = cedar::RestrictedExpression::new_bool;
        let opt = |v: &Option<String>| s(v.as_deref().unwrap_or(""));

        let user =
            cedar::EntityUid::from_type_name_and_id(self.user.clone(), cedar::EntityId::new(&p.id));
        let user_attrs = HashMap::from([
            ("role".to_owned(), s(p.role.as_str())),
            ("workforce".to_owned(), b(p.role.is_workforce())),
            ("clinician".to_owned(), b(p.role.is_clinician())),
            ("mfa".to_owned(), b(p.mfa)),
            ("training_current".to_owned(), b(p.training_current)),
            ("practitioner".to_owned(), opt(&p.practitioner)),
            ("organization".to_owned(), opt(&p.organization)),
            ("department".to_owned(), opt(&p.department)),
        ]);

        let category = Category::of(r.rtype);
        let resource_id = format!("{}/{}", r.rtype.as_str(), r.id.as_deref().unwrap_or(""));
        let resource = cedar::EntityUid::from_type_name_and_id(
            self.resource.clone(),
            cedar::EntityId::new(resource_id),
        );
        let resource_attrs = HashMap::from([
            ("type".to_owned(), s(r.rtype.as_str())),
            ("category".to_owned(), s(category.as_str())),
            ("has_patient".to_owned(), b(r.patient.is_some())),
            (
                "labels".to_owned(),
                cedar::RestrictedExpression::new_set(r.labels.iter().map(|l| s(l.as_str()))),
            ),
            (
                "restricted".to_owned(),
                b(r.labels.iter().any(|l| l.is_restricted())),
            ),
            ("vip".to_owned(), b(r.labels.contains(&Label::Vip))),
        ]);
        let entities = cedar::Entities::from_entities(
            [
                cedar::Entity::new(user.clone(), user_attrs, HashSet::new())
                    .map_err(|_| Internal)?,
                cedar::Entity::new(resource.clone(), resource_attrs, HashSet::new())
                    .map_err(|_| Internal)?,
            ],
            schema,
        )
        .map_err(|_| Internal)?;
        let (action, policies) = self
            .actions
            .iter()
            .find(|(a, _, _)| *a == req.action)
            .map(|(_, uid, set)| (uid.clone(), set))
            .ok_or(Internal)?;
        Ok(Slice {
            entities,
            user,
            action,
            resource,
            policies,
        })
    }

    /// The Cedar request for `slice` with its context.
    fn cedar_request(
        &self,
        slice: &Slice,
        rels: &BTreeSet<Relationship>,
        purpose: Purpose,
        consent_denied: bool,
        schema: Option<&cedar::Schema>,
    ) -> Result<cedar::Request, Internal> {
        let s = |v: &str| cedar::RestrictedExpression::new_string(v.to_owned());
        let b = cedar::RestrictedExpression::new_bool;
        let context = cedar::Context::from_pairs([
            ("purpose".to_owned(), s(purpose.as_str())),
            (
                "relationships".to_owned(),
                cedar::RestrictedExpression::new_set(rels.iter().map(|x| s(x.as_str()))),
            ),
            ("direct".to_owned(), b(rels.iter().any(|x| x.is_direct()))),
            ("consent_denied".to_owned(), b(consent_denied)),
        ])
        .map_err(|_| Internal)?;
        cedar::Request::new(
            slice.user.clone(),
            slice.action.clone(),
            slice.resource.clone(),
            context,
            schema,
        )
        .map_err(|_| Internal)
    }
}

/// `Consent/id` (the id as given if it already names its type).
fn consent_reference(id: &str) -> String {
    if id.starts_with("Consent/") {
        id.to_owned()
    } else {
        format!("Consent/{id}")
    }
}

/// The distinct items, in their first order.
fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Builds the request's entities and context validated against the
    /// shipped schema (production skips this: the shapes are fixed here).
    pub(crate) fn validates_against_schema(
        engine: &Engine,
        req: &Request<'_>,
        rels: &BTreeSet<Relationship>,
    ) -> bool {
        let Ok((schema, _)) = cedar::Schema::from_cedarschema_str(SCHEMA) else {
            return false;
        };
        let purpose = req.purpose.unwrap_or(Purpose::Treat);
        engine.slice(req, Some(&schema)).is_ok_and(|slice| {
            engine
                .cedar_request(&slice, rels, purpose, false, Some(&schema))
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memo's key holds ids and optional attributes exactly when some
    /// policy can see them.
    #[test]
    fn what_the_policies_read_is_found() {
        let reads = |text: &str| {
            let set = cedar::PolicySet::from_str(text).map_err(|e| e.to_string())?;
            Reads::of(&set).map_err(|e| e.to_string())
        };
        let Ok(r) = reads(DEFAULT_POLICIES) else {
            unreachable!("the shipped policies parse");
        };
        assert!(!r.ids && !r.practitioner && !r.organization && !r.department);
        let named = r#"permit (principal == Vigil::User::"u1", action, resource);"#;
        assert!(reads(named).is_ok_and(|r| r.ids));
        let literal = r#"permit (principal, action, resource) when { resource == Vigil::Resource::"Patient/p1" };"#;
        assert!(reads(literal).is_ok_and(|r| r.ids));
        let action_only = r#"permit (principal, action == Vigil::Action::"read", resource);"#;
        assert!(reads(action_only).is_ok_and(|r| !r.ids));
        let attrs = r#"permit (principal, action, resource) when { principal.practitioner == "x" && principal.department == "y" };"#;
        assert!(reads(attrs).is_ok_and(|r| r.practitioner && r.department && !r.organization));
    }

    #[test]
    fn each_action_is_asked_only_the_policies_scoped_to_it() {
        let Ok(engine) = Engine::shipped(Windows::default()) else {
            unreachable!("the shipped policies load");
        };
        for (action, uid, part) in &engine.actions {
            let ids: BTreeSet<&cedar::PolicyId> = part.policies().map(|p| p.id()).collect();
            for (id, &i) in &engine.index {
                let Some(rule) = engine.rules.get(i) else {
                    unreachable!("the index points into the rules");
                };
                let unscoped = rule.text.contains("(principal, action, resource)");
                let named = rule
                    .text
                    .contains(&format!("Vigil::Action::\"{}\"", action.as_str()));
                assert_eq!(ids.contains(id), unscoped || named, "{} for {uid}", rule.id);
            }
        }
        // A list naming something other than a leaf action (a group) keeps
        // the policy for every action.
        let Ok(p) = cedar::Policy::from_str(
            r#"permit (principal, action in [Vigil::Action::"all"], resource);"#,
        ) else {
            unreachable!("the policy parses");
        };
        let leaves: Vec<&cedar::EntityUid> = engine.actions.iter().map(|(_, u, _)| u).collect();
        assert!(
            engine
                .actions
                .iter()
                .all(|(_, uid, _)| compile::scoped_to(&p, uid, &leaves))
        );
    }

    #[test]
    fn shipped_set_validates() {
        let engine = Engine::shipped(Windows::default());
        assert!(engine.is_ok(), "{engine:?}");
    }

    /// The entities and context built per request conform to the schema
    /// (production builds them without checking, for speed).
    #[test]
    fn requests_conform_to_the_schema() {
        let Ok(engine) = Engine::shipped(Windows::default()) else {
            unreachable!("the shipped policies load");
        };
        let all: BTreeSet<Relationship> = [Relationship::CareTeam, Relationship::Emergency].into();
        for role in crate::Role::ALL {
            let principal = Principal {
                id: "a \"quoted\" id".to_owned(),
                role,
                practitioner: None,
                patient: Some("p1".to_owned()),
                organization: Some("o1".to_owned()),
                department: None,
                mfa: true,
                training_current: false,
            };
            for rtype in model::ResourceType::ALL {
                let resource = crate::Resource {
                    rtype,
                    id: None,
                    patient: Some("p1".to_owned()),
                    labels: Label::ALL.into(),
                    date: None,
                };
                for action in Action::ALL {
                    let req = Request {
                        principal: &principal,
                        action,
                        resource: &resource,
                        purpose: None,
                        now: Timestamp(0),
                        facts: &Facts::default(),
                    };
                    for rels in [&BTreeSet::new(), &all] {
                        assert!(test_support::validates_against_schema(&engine, &req, rels));
                    }
                }
            }
        }
    }
}
