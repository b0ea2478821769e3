//! The conformance story for the access-policy capability's storage:
//! break-the-glass grants ([`store::GrantStore`]) and policy versions
//! ([`store::PolicyStore`]). Each scenario gets a fresh, migrated, empty
//! store; [`crate::store_story_tests!`] runs them against every backend.

use std::sync::Arc;

use model::Timestamp;
use store::{BackupRecord, EmergencyGrant, GrantReview, PolicyVersion, Role, Store, StoreError};

use crate::story::{account, account_id, dump_all, rid};

// ---- builders ----

/// Creates the clinicians and the officer the grants below refer to.
async fn accounts(store: &dyn Store) {
    for (n, name, role) in [
        (1, "doc", Role::Physician),
        (2, "nurse", Role::Nurse),
        (3, "officer", Role::PrivacyOfficer),
    ] {
        store.create_account(&account(n, name, role)).await.unwrap();
    }
}

fn grant(id: &str, who: u8, patient: &str, start: i64, expires: i64) -> EmergencyGrant {
    EmergencyGrant {
        id: id.to_owned(),
        account: account_id(who),
        patient: rid(patient),
        start: Timestamp(start),
        expires: Timestamp(expires),
        revoked: None,
        reason: "ETREAT".to_owned(),
        // Stands in for sealed bytes: arbitrary, including 0x00.
        justification: vec![0, 0xff, who],
        review_due: Timestamp(expires + 1_000),
        review: None,
    }
}

fn review(at: i64, outcome: &str) -> GrantReview {
    GrantReview {
        reviewer: account_id(3),
        at: Timestamp(at),
        outcome: outcome.to_owned(),
        note: vec![0, 1, 2, 0xff],
    }
}

fn grant_ids(grants: &[EmergencyGrant]) -> Vec<&str> {
    grants.iter().map(|g| g.id.as_str()).collect()
}

fn versions(policies: &[PolicyVersion]) -> Vec<u64> {
    policies.iter().map(|p| p.version).collect()
}

// ---- scenarios ----

pub async fn grants_insert_get_round_trip(store: &dyn Store) {
    accounts(store).await;
    assert_eq!(store.grant("g1").await.unwrap(), None);
    let mut g = grant("g1", 1, "p1", 1_000, 2_000);
    store.insert_grant(&g).await.unwrap();
    assert_eq!(store.grant("g1").await.unwrap(), Some(g.clone()));
    // Every field survives, a review and a revocation included.
    g.id = "g2".to_owned();
    g.revoked = Some(Timestamp(1_500));
    g.review = Some(review(3_000, "appropriate"));
    store.insert_grant(&g).await.unwrap();
    assert_eq!(store.grant("g2").await.unwrap(), Some(g));
    assert_eq!(store.grant("G1").await.unwrap(), None, "ids are exact");
}

pub async fn grants_duplicate_id_is_refused(store: &dyn Store) {
    accounts(store).await;
    let first = grant("dup", 1, "p1", 1_000, 2_000);
    store.insert_grant(&first).await.unwrap();
    let mut second = grant("dup", 2, "p2", 5_000, 6_000);
    second.reason = "BTG".to_owned();
    assert!(matches!(
        store.insert_grant(&second).await,
        Err(StoreError::GrantExists)
    ));
    assert_eq!(store.grant("dup").await.unwrap(), Some(first));
    assert_eq!(
        store.grants_for_patient(&rid("p2")).await.unwrap(),
        Vec::new()
    );
    assert_eq!(
        store
            .grants_for_account(&account_id(2), None)
            .await
            .unwrap(),
        Vec::new()
    );
}

pub async fn grants_list_by_patient_and_account(store: &dyn Store) {
    accounts(store).await;
    for g in [
        grant("a", 1, "p1", 1_000, 2_000),
        grant("b", 1, "p2", 3_000, 4_000),
        grant("c", 2, "p1", 2_000, 5_000),
        grant("d", 1, "p1", 1_500, 1_800),
        grant("e", 1, "p3", 1_000, 9_000),
    ] {
        store.insert_grant(&g).await.unwrap();
    }
    assert!(store.revoke_grant("e", Timestamp(1_200)).await.unwrap());

    // All of a patient's grants, whoever holds them, newest start first.
    assert_eq!(
        grant_ids(&store.grants_for_patient(&rid("p1")).await.unwrap()),
        ["c", "d", "a"]
    );
    assert_eq!(
        grant_ids(&store.grants_for_patient(&rid("p3")).await.unwrap()),
        ["e"],
        "revoked grants are listed too"
    );
    assert_eq!(
        store.grants_for_patient(&rid("nobody")).await.unwrap(),
        Vec::new()
    );

    // All of an account's grants, revoked ones included.
    assert_eq!(
        grant_ids(
            &store
                .grants_for_account(&account_id(1), None)
                .await
                .unwrap()
        ),
        ["b", "d", "e", "a"],
        "equal starts are ordered by id, descending"
    );
    assert_eq!(
        grant_ids(
            &store
                .grants_for_account(&account_id(2), None)
                .await
                .unwrap()
        ),
        ["c"]
    );

    // Live ones only: both ends inclusive, revoked ones never.
    let live = |t: i64| async move {
        let grants = store
            .grants_for_account(&account_id(1), Some(Timestamp(t)))
            .await
            .unwrap();
        assert!(grants.iter().all(|g| g.is_live(Timestamp(t))));
        grant_ids(&grants)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(live(999).await, Vec::<String>::new());
    assert_eq!(live(1_000).await, ["a"], "start is inclusive");
    assert_eq!(live(1_500).await, ["d", "a"]);
    assert_eq!(live(1_800).await, ["d", "a"], "expires is inclusive");
    assert_eq!(live(1_801).await, ["a"]);
    assert_eq!(live(2_000).await, ["a"]);
    assert_eq!(live(2_001).await, Vec::<String>::new());
    assert_eq!(live(3_000).await, ["b"]);
    assert_eq!(live(4_001).await, Vec::<String>::new(), "e is revoked");
    assert_eq!(
        store
            .grants_for_account(&account_id(3), Some(Timestamp(1_500)))
            .await
            .unwrap(),
        Vec::new()
    );
}

pub async fn grants_revoke_once(store: &dyn Store) {
    accounts(store).await;
    store
        .insert_grant(&grant("g", 1, "p1", 1_000, 2_000))
        .await
        .unwrap();
    assert!(
        !store
            .revoke_grant("absent", Timestamp(1_100))
            .await
            .unwrap()
    );
    assert!(store.revoke_grant("g", Timestamp(1_100)).await.unwrap());
    // A second revocation neither succeeds nor moves the time.
    assert!(!store.revoke_grant("g", Timestamp(1_200)).await.unwrap());
    let g = store.grant("g").await.unwrap().unwrap();
    assert_eq!(g.revoked, Some(Timestamp(1_100)));
    assert_eq!(g, {
        let mut want = grant("g", 1, "p1", 1_000, 2_000);
        want.revoked = Some(Timestamp(1_100));
        want
    });
    assert_eq!(
        store
            .grants_for_account(&account_id(1), Some(Timestamp(1_050)))
            .await
            .unwrap(),
        Vec::new(),
        "a revoked grant is not live, even before the revocation time"
    );
}

pub async fn grants_review_once(store: &dyn Store) {
    accounts(store).await;
    store
        .insert_grant(&grant("g", 1, "p1", 1_000, 2_000))
        .await
        .unwrap();
    let first = review(3_000, "appropriate");
    assert!(!store.review_grant("absent", &first).await.unwrap());
    assert!(store.review_grant("g", &first).await.unwrap());
    assert!(
        !store
            .review_grant("g", &review(4_000, "inappropriate"))
            .await
            .unwrap()
    );
    assert_eq!(store.grant("g").await.unwrap().unwrap().review, Some(first));
    // Reviewing does not revoke, and revoking keeps the review.
    assert!(store.revoke_grant("g", Timestamp(5_000)).await.unwrap());
    let g = store.grant("g").await.unwrap().unwrap();
    assert_eq!(g.revoked, Some(Timestamp(5_000)));
    assert_eq!(g.review.unwrap().outcome, "appropriate");
}

pub async fn grants_to_review_in_due_order(store: &dyn Store) {
    accounts(store).await;
    assert_eq!(store.grants_to_review(10).await.unwrap(), Vec::new());
    for (id, due) in [("a", 30), ("b", 10), ("c", 20), ("d", 40), ("e", 5)] {
        let mut g = grant(id, 1, "p1", 1, 2);
        g.review_due = Timestamp(due);
        store.insert_grant(&g).await.unwrap();
    }
    assert_eq!(
        grant_ids(&store.grants_to_review(10).await.unwrap()),
        ["e", "b", "c", "a", "d"]
    );
    assert_eq!(
        grant_ids(&store.grants_to_review(2).await.unwrap()),
        ["e", "b"]
    );
    assert_eq!(store.grants_to_review(0).await.unwrap(), Vec::new());
    // Reviewed grants leave the queue; revoked ones stay until reviewed.
    assert!(
        store
            .review_grant("b", &review(100, "appropriate"))
            .await
            .unwrap()
    );
    assert!(
        store
            .review_grant("d", &review(100, "inappropriate"))
            .await
            .unwrap()
    );
    assert!(store.revoke_grant("c", Timestamp(3)).await.unwrap());
    assert_eq!(
        grant_ids(&store.grants_to_review(10).await.unwrap()),
        ["e", "c", "a"]
    );
    assert!(
        store
            .grants_to_review(10)
            .await
            .unwrap()
            .iter()
            .all(|g| g.review.is_none())
    );
}

pub async fn policy_versions_are_numbered_gap_free(store: &dyn Store) {
    accounts(store).await;
    assert_eq!(store.current_policy().await.unwrap(), None);
    assert_eq!(store.policy_versions().await.unwrap(), Vec::new());
    assert_eq!(store.policy_version(1).await.unwrap(), None);

    let author = account_id(3);
    let texts = [
        "permit(principal, action, resource);",
        "forbid(principal, action, resource);",
        // Text is kept exactly, whitespace and non-ASCII included.
        "// Ärztin\npermit(principal, action, resource)\n  when { true };\n",
    ];
    for (n, text) in (1_u64..).zip(texts) {
        let who = (n != 1).then_some(&author);
        let comment = format!("change {n}");
        let v = store
            .add_policy_version(
                text,
                who,
                Timestamp(100 * i64::try_from(n).unwrap()),
                &comment,
            )
            .await
            .unwrap();
        assert_eq!(v, n);
    }
    let want = |n: u64| PolicyVersion {
        version: n,
        text: texts[usize::try_from(n - 1).unwrap()].to_owned(),
        author: (n != 1).then(|| author.clone()),
        created: Timestamp(100 * i64::try_from(n).unwrap()),
        comment: format!("change {n}"),
    };
    assert_eq!(store.current_policy().await.unwrap(), Some(want(3)));
    for n in 1..=3 {
        assert_eq!(store.policy_version(n).await.unwrap(), Some(want(n)));
    }
    assert_eq!(store.policy_version(0).await.unwrap(), None);
    assert_eq!(store.policy_version(4).await.unwrap(), None);
    assert_eq!(store.policy_version(u64::MAX).await.unwrap(), None);
    assert_eq!(
        store.policy_versions().await.unwrap(),
        vec![want(3), want(2), want(1)]
    );
}

pub async fn policy_versions_concurrent_adds_are_gap_free(store: &Arc<dyn Store>) {
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .add_policy_version(&format!("policy {i}"), None, Timestamp(i), "")
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (1..=12).collect::<Vec<u64>>());
    assert_eq!(
        versions(&store.policy_versions().await.unwrap()),
        (1..=12).rev().collect::<Vec<u64>>()
    );
}

/// Stores two policy versions and three grants (one revoked, one reviewed).
async fn populate(store: &dyn Store) {
    accounts(store).await;
    store
        .add_policy_version(
            "permit(principal, action, resource);",
            None,
            Timestamp(10),
            "default",
        )
        .await
        .unwrap();
    store
        .add_policy_version(
            "forbid(principal, action, resource);",
            Some(&account_id(3)),
            Timestamp(20),
            "lock down",
        )
        .await
        .unwrap();
    for g in [
        grant("g-b", 1, "p1", 1_000, 2_000),
        grant("g-a", 2, "p2", 1_500, 3_000),
        grant("g-c", 1, "p2", 2_500, 3_500),
    ] {
        store.insert_grant(&g).await.unwrap();
    }
    assert!(store.revoke_grant("g-a", Timestamp(1_600)).await.unwrap());
    assert!(
        store
            .review_grant("g-b", &review(4_000, "appropriate"))
            .await
            .unwrap()
    );
}

pub async fn grants_and_policies_are_dumped_last(store: &dyn Store) {
    populate(store).await;
    let records = dump_all(store).await;
    // Accounts first (grants refer to them), then policy versions in order,
    // then grants by id.
    let tail: Vec<&BackupRecord> = records
        .iter()
        .skip_while(|r| !matches!(r, BackupRecord::PolicyVersion(_)))
        .collect();
    assert_eq!(tail.len(), 5);
    let policy: Vec<u64> = tail
        .iter()
        .filter_map(|r| match r {
            BackupRecord::PolicyVersion(p) => Some(p.version),
            _ => None,
        })
        .collect();
    assert_eq!(policy, [1, 2]);
    let grants: Vec<EmergencyGrant> = tail
        .iter()
        .filter_map(|r| match r {
            BackupRecord::Grant(g) => Some(g.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(grant_ids(&grants), ["g-a", "g-b", "g-c"]);
    for g in &grants {
        assert_eq!(store.grant(&g.id).await.unwrap().as_ref(), Some(g));
    }
    assert!(
        records
            .iter()
            .take_while(|r| !matches!(r, BackupRecord::PolicyVersion(_)))
            .all(|r| !matches!(r, BackupRecord::Grant(_)))
    );
    assert_eq!(dump_all(store).await, records, "two dumps are equal");
    assert!(matches!(
        store.load(records).await,
        Err(StoreError::Backup(_))
    ));
}

pub async fn load_refuses_a_store_holding_policy_versions(store: &dyn Store) {
    // (A grant needs an account, which alone makes the store non-empty.)
    store
        .add_policy_version(
            "permit(principal, action, resource);",
            None,
            Timestamp(1),
            "",
        )
        .await
        .unwrap();
    let one = vec![BackupRecord::Setting {
        name: "other".to_owned(),
        value: b"x".to_vec(),
    }];
    assert!(matches!(store.load(one).await, Err(StoreError::Backup(_))));
    assert_eq!(store.get_setting("other").await.unwrap(), None);
}

/// A dump of grants and policy versions loads into a second, empty store
/// and dumps back identically; the loaded store keeps numbering and
/// refuses a second revocation or review.
pub async fn grants_and_policies_dump_load_round_trip(from: &dyn Store, to: &dyn Store) {
    populate(from).await;
    let records = dump_all(from).await;

    // Out-of-order policy versions are refused, and nothing stays loaded.
    let mut bad = records.clone();
    bad.retain(|r| !matches!(r, BackupRecord::PolicyVersion(p) if p.version == 1));
    assert!(matches!(to.load(bad).await, Err(StoreError::Backup(_))));
    assert_eq!(dump_all(to).await, Vec::new());

    to.load(records.clone()).await.unwrap();
    assert_eq!(dump_all(to).await, records);
    assert_eq!(
        to.policy_versions().await.unwrap(),
        from.policy_versions().await.unwrap()
    );
    assert_eq!(
        to.grants_for_patient(&rid("p2")).await.unwrap(),
        from.grants_for_patient(&rid("p2")).await.unwrap()
    );
    assert_eq!(
        to.grants_to_review(10).await.unwrap(),
        from.grants_to_review(10).await.unwrap()
    );
    let a = to.grant("g-a").await.unwrap().unwrap();
    assert_eq!(a.revoked, Some(Timestamp(1_600)));
    assert!(!to.revoke_grant("g-a", Timestamp(9_000)).await.unwrap());
    assert!(
        !to.review_grant("g-b", &review(9_000, "inappropriate"))
            .await
            .unwrap()
    );
    // Numbering continues where the source left off.
    assert_eq!(
        to.add_policy_version(
            "permit(principal, action, resource);",
            None,
            Timestamp(30),
            ""
        )
        .await
        .unwrap(),
        3
    );
    assert!(matches!(
        to.insert_grant(&grant("g-c", 2, "p9", 1, 2)).await,
        Err(StoreError::GrantExists)
    ));
}
