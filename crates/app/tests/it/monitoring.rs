//! Privacy monitoring through the façade: importing another EHR's access
//! log into cases, the officer's queue, case view and dispositions, and who
//! may use them.

use app::monitoring::Disposition;
use app::{Caller, Principal, Via};
use monitor::engine::Config;
use monitor::sim::{SimConfig, generate};

fn small() -> monitor::World {
    generate(&SimConfig {
        seed: 2,
        staff: 200,
        patients: 3_000,
        days: 14,
        target_accesses: 20_000,
        ..SimConfig::default()
    })
    .unwrap()
    .world
}

fn nurse() -> Principal {
    Principal::User(Caller {
        account: store::AccountId::new("acct-nurse".to_owned()),
        role: Some(store::Role::Nurse),
        username: Some("nurse".into()),
        client_id: None,
        scopes: auth::scope::ScopeSet::default(),
        patient: None,
        via: Via::Session,
        practitioner: None,
        own_patient: None,
        mfa: true,
    })
}

#[tokio::test]
async fn an_import_becomes_ranked_cases_with_explained_timelines_once() {
    let t = crate::setup().await;
    let v = &t.vigil;
    let world = small();
    let r = v
        .monitor_import(&Principal::Operator, &world, &Config::default())
        .await
        .unwrap();
    assert!(r.alerts > 0 && r.cases > 0, "{r:?}");
    assert_eq!(r.already, 0);

    // The queue: highest risk first, imported staff named as the log named them.
    let queue = v
        .monitor_cases(&Principal::Operator, None, 500)
        .await
        .unwrap();
    assert_eq!(queue.len(), r.cases);
    assert!(queue.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(
        queue
            .iter()
            .all(|c| c.user.starts_with("ext:") && !c.user_name.is_empty())
    );

    // A case: alerts with reasons, a timeline whose accesses are explained.
    let top = &queue[0];
    let case = v.monitor_case(&Principal::Operator, &top.id).await.unwrap();
    assert!(!case.alerts.is_empty());
    assert!(case.alerts.iter().all(|a| !a.reason.is_empty()));
    assert!(!case.timeline.is_empty());
    assert!(case.timeline.iter().any(|i| i.alerted));
    assert!(case.timeline.iter().all(|i| i.explanation.is_some()));
    assert!(case.timeline.windows(2).all(|w| w[0].when <= w[1].when));

    // Importing the same log again stores nothing new.
    let again = v
        .monitor_import(&Principal::Operator, &world, &Config::default())
        .await
        .unwrap();
    assert_eq!(again.alerts, 0, "{again:?}");
    assert_eq!(again.already, r.alerts);
    assert_eq!(
        v.monitor_cases(&Principal::Operator, None, 500)
            .await
            .unwrap()
            .len(),
        r.cases
    );
}

#[tokio::test]
async fn dispositions_notes_and_concurrency() {
    let t = crate::setup().await;
    let v = &t.vigil;
    v.monitor_import(&Principal::Operator, &small(), &Config::default())
        .await
        .unwrap();
    let queue = v
        .monitor_cases(&Principal::Operator, Some("open"), 10)
        .await
        .unwrap();
    let c = &queue[0];
    let decide = |status: &str, expected, note: Option<&str>, suppress| Disposition {
        expected_updated: expected,
        status: status.into(),
        assignee: None,
        note: note.map(str::to_owned),
        suppress,
    };
    // Unknown status, over-long note, suppressing a case not judged
    // appropriate: refused, nothing changes.
    for d in [
        decide("closed", c.updated, None, false),
        decide(
            "open",
            c.updated,
            Some(&"x".repeat(app::monitoring::MAX_NOTE + 1)),
            false,
        ),
        decide("inappropriate", c.updated, None, true),
    ] {
        let e = v
            .monitor_decide(&Principal::Operator, &c.id, &d)
            .await
            .unwrap_err();
        assert_eq!(e.status(), 400, "{e}");
    }
    let same = v.monitor_case(&Principal::Operator, &c.id).await.unwrap();
    assert_eq!(same.summary.status, "open");
    assert!(same.notes.is_empty());

    // Notes need an officer's account to be signed by: an operator's note is
    // refused rather than stored anonymously.
    let e = v
        .monitor_decide(
            &Principal::Operator,
            &c.id,
            &decide(
                "inappropriate",
                c.updated,
                Some("confirmed with the manager"),
                false,
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), 400, "{e}");
    t.clock.advance_secs(60);
    v.monitor_decide(
        &Principal::Operator,
        &c.id,
        &decide("inappropriate", c.updated, None, false),
    )
    .await
    .unwrap();
    let after = v.monitor_case(&Principal::Operator, &c.id).await.unwrap();
    assert_eq!(after.summary.status, "inappropriate");
    assert!(after.notes.is_empty());
    // A second officer's form from before the change is refused.
    let stale = v
        .monitor_decide(
            &Principal::Operator,
            &c.id,
            &decide("appropriate", c.updated, None, false),
        )
        .await
        .unwrap_err();
    assert_eq!(stale.status(), 409);
    let unchanged = v.monitor_case(&Principal::Operator, &c.id).await.unwrap();
    assert_eq!(unchanged.summary.status, "inappropriate");
    // Closed cases leave the open queue.
    let open = v
        .monitor_cases(&Principal::Operator, Some("open"), 500)
        .await
        .unwrap();
    assert!(open.iter().all(|x| x.id != c.id));
}

#[tokio::test]
async fn only_privacy_officers_and_operators_see_monitoring() {
    let t = crate::setup().await;
    let v = &t.vigil;
    let n = nurse();
    let e = v.monitor_cases(&n, None, 10).await.unwrap_err();
    assert_eq!(e.status(), 403);
    let e = v.monitor_case(&n, "case-x").await.unwrap_err();
    assert_eq!(e.status(), 403);
    let e = v
        .monitor_import(&n, &small(), &Config::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), 403);
    assert!(
        v.monitor_cases(&Principal::Operator, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_pass_over_an_empty_trail_does_nothing() {
    let t = crate::setup().await;
    let r = t.vigil.monitor_step().await.unwrap();
    assert_eq!(r.entries, 0);
    assert_eq!(r.alerts, 0);
}
