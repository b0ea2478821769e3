//! The engine refuses policy sets that do not validate in strict mode or
//! lack their annotations.

use policy::{DEFAULT_POLICIES, Engine, PolicyError, SCHEMA, Windows};

fn load(extra: &str) -> Result<Engine, PolicyError> {
    Engine::new(
        SCHEMA,
        &format!("{DEFAULT_POLICIES}\n{extra}"),
        Windows::default(),
    )
}

#[test]
fn shipped_set_loads_and_lists_its_rules() {
    let e = crate::fixtures::engine();
    assert_eq!(e.policy_text(), DEFAULT_POLICIES);
    let ids: std::collections::BTreeSet<&str> = e.rules().iter().map(|r| r.id.as_str()).collect();
    for id in [
        "G1", "G2", "F1", "F2", "F3", "F4", "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9",
        "P10", "P11",
    ] {
        assert!(ids.contains(id), "{id}");
    }
    assert!(e.rules().iter().all(|r| !r.reason.is_empty()));
    assert!(
        e.rules()
            .iter()
            .filter(|r| !r.permit)
            .all(|r| r.lesson.is_some())
    );
}

#[test]
fn unknown_attribute_is_refused() {
    let e = load(
        r#"@id("X") @reason("x") permit (principal, action, resource) when { principal.shoe_size == "9" };"#,
    );
    assert!(
        matches!(e, Err(PolicyError::Invalid(ref m)) if !m.is_empty()),
        "{e:?}"
    );
}

#[test]
fn unknown_context_and_type_errors_are_refused() {
    let e = load(
        r#"@id("X") @reason("x") permit (principal, action, resource) when { context.weather == "sunny" };"#,
    );
    assert!(matches!(e, Err(PolicyError::Invalid(_))), "{e:?}");
    let e = load(
        r#"@id("X") @reason("x") permit (principal, action, resource) when { principal.mfa == "yes" };"#,
    );
    assert!(matches!(e, Err(PolicyError::Invalid(_))), "{e:?}");
}

#[test]
fn missing_annotations_are_refused() {
    let e = load(r#"@reason("x") permit (principal, action, resource);"#);
    assert!(
        matches!(
            e,
            Err(PolicyError::MissingAnnotation {
                annotation: "id",
                ..
            })
        ),
        "{e:?}"
    );
    let e = load(r#"@id("X") permit (principal, action, resource);"#);
    assert!(
        matches!(
            e,
            Err(PolicyError::MissingAnnotation {
                annotation: "reason",
                ..
            })
        ),
        "{e:?}"
    );
    let e =
        load(r#"@id("X") @reason("x") @lesson("L-NOPE") forbid (principal, action, resource);"#);
    assert!(matches!(e, Err(PolicyError::UnknownLesson { .. })), "{e:?}");
}

#[test]
fn parse_and_schema_errors_are_refused() {
    assert!(matches!(load("permit ("), Err(PolicyError::Parse(_))));
    let e = Engine::new("namespace {", DEFAULT_POLICIES, Windows::default());
    assert!(matches!(e, Err(PolicyError::Schema(_))));
    let msg = load(r#"@id("X") @reason("x") permit (principal, action, resource) when { principal.shoe_size == "9" };"#)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.starts_with("the policies do not validate against the schema: "),
        "{msg}"
    );
}

#[test]
fn an_evaluation_error_denies() {
    // Overflow is not caught by validation; it fails at evaluation.
    let e = load(
        r#"@id("X") @reason("x") permit (principal, action, resource) when { 9223372036854775807 + (if principal.mfa then 1 else 2) > 0 };"#,
    );
    let Ok(e) = e else {
        unreachable!("{e:?}");
    };
    let c = crate::fixtures::Case::new(
        policy::Role::Nurse,
        policy::Action::Read,
        model::ResourceType::Practitioner,
    );
    let d = e.decide(&policy::Request {
        principal: &c.principal,
        action: c.action,
        resource: &c.resource,
        purpose: None,
        now: crate::fixtures::NOW,
        facts: &c.facts,
    });
    assert!(!d.allow);
    assert_eq!(d.policies, ["evaluation-error"]);
}
