//! SMART App Launch 2.2 scopes: the v2 grammar, v1 scopes mapped onto it, and the ceiling
//! they put on what an app may do.
//!
//! A resource scope is `context/Type.permissions[?restriction]`: context `patient`, `user`
//! or `system`; `Type` a FHIR resource type or `*`; permissions a non-empty subsequence of
//! `cruds` in that order. v1 suffixes are mapped when parsed (`read` → `rs`, `write` →
//! `cud`, `*` → `cruds`), so a [`Scope`] always formats in the v2 form. A restriction
//! (`patient/Observation.rs?category=laboratory`) is kept verbatim for the search layer.
//!
//! Scopes are a ceiling only: the access policy still decides what the user may really do.
//! Scopes are not secret, so errors name the offending scope.

use std::fmt;
use std::str::FromStr;

/// Who the access is on behalf of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    /// The patient in context (`patient/`).
    Patient,
    /// The signed-in user (`user/`).
    User,
    /// A backend service (`system/`).
    System,
}

impl Context {
    fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

/// A FHIR interaction, grouped the way SMART permissions are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Interaction {
    const ALL: [(Interaction, char); 5] = [
        (Interaction::Create, 'c'),
        (Interaction::Read, 'r'),
        (Interaction::Update, 'u'),
        (Interaction::Delete, 'd'),
        (Interaction::Search, 's'),
    ];

    fn bit(self) -> u8 {
        match self {
            Interaction::Create => 1,
            Interaction::Read => 2,
            Interaction::Update => 4,
            Interaction::Delete => 8,
            Interaction::Search => 16,
        }
    }
}

/// A non-empty set of interactions.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permissions(u8);

impl Permissions {
    pub const ALL: Permissions = Permissions(31);
    /// v1 `read`.
    pub const READ_SEARCH: Permissions = Permissions(2 | 16);
    /// v1 `write`.
    pub const CREATE_UPDATE_DELETE: Permissions = Permissions(1 | 4 | 8);

    /// Builds a set from interactions; `None` if empty.
    pub fn of(interactions: &[Interaction]) -> Option<Permissions> {
        let bits = interactions.iter().fold(0, |acc, i| acc | i.bit());
        (bits != 0).then_some(Permissions(bits))
    }

    pub fn contains(self, interaction: Interaction) -> bool {
        self.0 & interaction.bit() != 0
    }

    /// Parses the v2 letters: each of `cruds` at most once, in that order.
    fn parse_v2(letters: &str) -> Option<Permissions> {
        let mut bits = 0u8;
        let mut order = Interaction::ALL.iter();
        for c in letters.chars() {
            // Advancing a single iterator enforces both the order and no repeats.
            let (interaction, _) = order.by_ref().find(|(_, l)| *l == c)?;
            bits |= interaction.bit();
        }
        (bits != 0).then_some(Permissions(bits))
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (interaction, letter) in Interaction::ALL {
            if self.contains(interaction) {
                write!(f, "{letter}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permissions({self})")
    }
}

/// Which resource types a scope covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResourceType {
    /// `*`.
    Any,
    /// One FHIR resource type, e.g. `Observation`.
    Named(String),
}

impl ResourceType {
    fn covers(&self, resource_type: &str) -> bool {
        match self {
            ResourceType::Any => true,
            ResourceType::Named(name) => name == resource_type,
        }
    }
}

/// `context/Type.permissions[?restriction]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceScope {
    pub context: Context,
    pub resource: ResourceType,
    pub permissions: Permissions,
    /// The query after `?`, verbatim (without the `?`); the grant covers only resources that
    /// match it.
    pub restriction: Option<String>,
}

/// One scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Resource(ResourceScope),
    /// `launch`: EHR launch, with the launch context to be resolved.
    Launch,
    /// `launch/patient`: standalone launch asking for a patient to be chosen.
    LaunchPatient,
    /// `launch/encounter`.
    LaunchEncounter,
    /// `openid`.
    OpenId,
    /// `fhirUser`.
    FhirUser,
    /// `offline_access`: a refresh token that outlives the session.
    OfflineAccess,
    /// `online_access`: a refresh token bound to the session.
    OnlineAccess,
}

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope `{0}`")]
    Unknown(String),
    #[error("ill-formed scope `{scope}`: {reason}")]
    IllFormed { scope: String, reason: &'static str },
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Scope, ScopeError> {
        let ill = |reason| ScopeError::IllFormed {
            scope: s.to_owned(),
            reason,
        };
        match s {
            "launch" => return Ok(Scope::Launch),
            "launch/patient" => return Ok(Scope::LaunchPatient),
            "launch/encounter" => return Ok(Scope::LaunchEncounter),
            "openid" => return Ok(Scope::OpenId),
            "fhirUser" => return Ok(Scope::FhirUser),
            "offline_access" => return Ok(Scope::OfflineAccess),
            "online_access" => return Ok(Scope::OnlineAccess),
            _ => {}
        }
        // RFC 6749 §3.3: scope tokens are printable ASCII without space, `"` and `\`.
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
        {
            return Err(ill("not a scope token"));
        }
        let Some((context, rest)) = s.split_once('/') else {
            return Err(ScopeError::Unknown(s.to_owned()));
        };
        let context = match context {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return Err(ScopeError::Unknown(s.to_owned())),
        };
        let (body, restriction) = match rest.split_once('?') {
            Some((body, query)) if !query.is_empty() => (body, Some(query.to_owned())),
            Some(_) => return Err(ill("empty restriction")),
            None => (rest, None),
        };
        let Some((resource, permissions)) = body.split_once('.') else {
            return Err(ill("expected `Type.permissions`"));
        };
        let resource = if resource == "*" {
            ResourceType::Any
        } else if is_resource_type(resource) {
            ResourceType::Named(resource.to_owned())
        } else {
            return Err(ill("expected a resource type or `*`"));
        };
        let (permissions, v1) = match permissions {
            "read" => (Permissions::READ_SEARCH, true),
            "write" => (Permissions::CREATE_UPDATE_DELETE, true),
            "*" => (Permissions::ALL, true),
            letters => (
                Permissions::parse_v2(letters)
                    .ok_or_else(|| ill("permissions are letters of `cruds`, in that order"))?,
                false,
            ),
        };
        if v1 && restriction.is_some() {
            return Err(ill("v1 scopes take no restriction"));
        }
        Ok(Scope::Resource(ResourceScope {
            context,
            resource,
            permissions,
            restriction,
        }))
    }
}

fn is_resource_type(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Resource(r) => {
                write!(f, "{}/", r.context.as_str())?;
                match &r.resource {
                    ResourceType::Any => f.write_str("*")?,
                    ResourceType::Named(name) => f.write_str(name)?,
                }
                write!(f, ".{}", r.permissions)?;
                if let Some(q) = &r.restriction {
                    write!(f, "?{q}")?;
                }
                Ok(())
            }
            Scope::Launch => f.write_str("launch"),
            Scope::LaunchPatient => f.write_str("launch/patient"),
            Scope::LaunchEncounter => f.write_str("launch/encounter"),
            Scope::OpenId => f.write_str("openid"),
            Scope::FhirUser => f.write_str("fhirUser"),
            Scope::OfflineAccess => f.write_str("offline_access"),
            Scope::OnlineAccess => f.write_str("online_access"),
        }
    }
}

/// What scopes grant for one interaction on one resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant<'a> {
    Denied,
    /// Every resource of the type (policy permitting).
    Unrestricted,
    /// Only resources matching one of these restrictions.
    OnlyMatching(Vec<&'a str>),
}

/// The scopes of a request or token, in the order given, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    /// Parses a space-separated scope string (the OAuth `scope` parameter).
    pub fn parse(s: &str) -> Result<ScopeSet, ScopeError> {
        let mut scopes: Vec<Scope> = Vec::new();
        for token in s.split_ascii_whitespace() {
            let scope = token.parse()?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(ScopeSet(scopes))
    }

    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> ScopeSet {
        let mut set = ScopeSet::default();
        for scope in scopes {
            if !set.0.contains(&scope) {
                set.0.push(scope);
            }
        }
        set
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What the scopes grant for `interaction` on `resource_type` in `context`.
    pub fn grant(
        &self,
        context: Context,
        resource_type: &str,
        interaction: Interaction,
    ) -> Grant<'_> {
        let mut restrictions = Vec::new();
        for scope in &self.0 {
            let Scope::Resource(r) = scope else { continue };
            if r.context != context
                || !r.resource.covers(resource_type)
                || !r.permissions.contains(interaction)
            {
                continue;
            }
            match &r.restriction {
                None => return Grant::Unrestricted,
                Some(q) => restrictions.push(q.as_str()),
            }
        }
        if restrictions.is_empty() {
            Grant::Denied
        } else {
            Grant::OnlyMatching(restrictions)
        }
    }

    /// Whether the scopes allow `interaction` on every `resource_type` in `context`. A grant
    /// limited by a restriction does not count here (fail closed): use [`ScopeSet::grant`]
    /// to apply restrictions.
    pub fn permits(&self, context: Context, resource_type: &str, interaction: Interaction) -> bool {
        self.grant(context, resource_type, interaction) == Grant::Unrestricted
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{scope}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &str, expect: &str) {
        let parsed: Scope = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(parsed.to_string(), expect, "{input}");
    }

    #[test]
    fn v2_scopes_round_trip() {
        for s in [
            "patient/Observation.rs",
            "user/*.cruds",
            "system/*.rs",
            "patient/Patient.r",
            "user/Encounter.cud",
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            "launch",
            "launch/patient",
            "launch/encounter",
            "openid",
            "fhirUser",
            "offline_access",
            "online_access",
        ] {
            check(s, s);
        }
    }

    #[test]
    fn v1_scopes_mapped() {
        for (v1, v2) in [
            ("patient/*.read", "patient/*.rs"),
            ("patient/Observation.write", "patient/Observation.cud"),
            ("user/*.*", "user/*.cruds"),
            ("system/Patient.read", "system/Patient.rs"),
        ] {
            check(v1, v2);
        }
    }

    #[test]
    fn refusals_name_the_scope() {
        for (input, unknown) in [
            ("launch/practitioner", true),
            ("profile", true),
            ("admin/*.rs", true),
            ("patient/Observation", false),
            ("patient/Observation.", false),
            ("patient/Observation.sr", false),
            ("patient/Observation.rr", false),
            ("patient/Observation.x", false),
            ("patient/observation.rs", false),
            ("patient/Obs-ervation.rs", false),
            ("patient/.rs", false),
            ("patient/Observation.rs?", false),
            ("patient/*.read?category=x", false),
            ("patient/*.rs\"", false),
        ] {
            let err = input.parse::<Scope>().err();
            match (&err, unknown) {
                (Some(ScopeError::Unknown(s)), true) => assert_eq!(s, input),
                (Some(ScopeError::IllFormed { scope, .. }), false) => assert_eq!(scope, input),
                _ => panic!("{input}: {err:?}"),
            }
            assert!(err.is_some_and(|e| e.to_string().contains(input)));
        }
        assert_eq!(
            ScopeSet::parse("openid bogus fhirUser"),
            Err(ScopeError::Unknown("bogus".into()))
        );
    }

    #[test]
    fn permits_is_a_ceiling() {
        let set = ScopeSet::parse(
            "launch/patient openid patient/Observation.rs patient/Condition.rs?clinical-status=active user/*.r",
        );
        let set = set.unwrap_or_else(|e| panic!("{e}"));
        use Context::*;
        use Interaction::*;
        assert!(set.permits(Patient, "Observation", Read));
        assert!(set.permits(Patient, "Observation", Search));
        assert!(!set.permits(Patient, "Observation", Create));
        assert!(!set.permits(Patient, "Patient", Read));
        assert!(!set.permits(System, "Observation", Read));
        assert!(set.permits(User, "Anything", Read));
        assert!(!set.permits(User, "Anything", Search));
        // Restricted grants do not count as full permission.
        assert!(!set.permits(Patient, "Condition", Read));
        assert_eq!(
            set.grant(Patient, "Condition", Search),
            Grant::OnlyMatching(vec!["clinical-status=active"])
        );
        assert_eq!(set.grant(Patient, "Condition", Delete), Grant::Denied);
        assert!(!ScopeSet::default().permits(User, "Patient", Read));
    }

    #[test]
    fn set_formats_and_dedups() {
        let set = ScopeSet::parse("openid  fhirUser openid patient/*.read");
        assert_eq!(
            set.map(|s| s.to_string()),
            Ok("openid fhirUser patient/*.rs".to_owned())
        );
    }

    fn scope() -> impl Strategy<Value = Scope> {
        let resource = (
            prop_oneof![
                Just(Context::Patient),
                Just(Context::User),
                Just(Context::System)
            ],
            prop_oneof![
                Just(ResourceType::Any),
                "[A-Z][A-Za-z0-9]{0,20}".prop_map(ResourceType::Named)
            ],
            1u8..32,
            proptest::option::of(
                "[a-z-]{1,10}=[A-Za-z0-9:/|.,-]{1,30}(&[a-z]{1,5}=[a-z0-9]{1,5})?",
            ),
        )
            .prop_map(|(context, resource, bits, restriction)| {
                Scope::Resource(ResourceScope {
                    context,
                    resource,
                    permissions: Permissions(bits),
                    restriction,
                })
            });
        prop_oneof![
            4 => resource,
            1 => prop_oneof![
                Just(Scope::Launch),
                Just(Scope::LaunchPatient),
                Just(Scope::LaunchEncounter),
                Just(Scope::OpenId),
                Just(Scope::FhirUser),
                Just(Scope::OfflineAccess),
                Just(Scope::OnlineAccess),
            ],
        ]
    }

    proptest! {
        #[test]
        fn parse_format_round_trip(s in scope()) {
            prop_assert_eq!(s.to_string().parse::<Scope>(), Ok(s));
        }

        #[test]
        fn set_round_trip(scopes in proptest::collection::vec(scope(), 0..8)) {
            let set = ScopeSet::from_scopes(scopes);
            prop_assert_eq!(ScopeSet::parse(&set.to_string()), Ok(set));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = ScopeSet::parse(&s);
        }
    }
}
