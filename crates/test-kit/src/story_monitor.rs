//! The conformance story for privacy monitoring's storage
//! ([`store::MonitorStore`]): the cursor's compare-and-set, case upserts and
//! the queue, officer updates with optimistic concurrency and numbered
//! notes, suppressions, explanations, foreign keys, and backups. Each
//! scenario gets a fresh, migrated, empty store;
//! [`crate::store_story_tests!`] runs them against every backend.

use std::sync::Arc;

use model::Timestamp;
use store::{
    AccessExplanation, AccountId, BackupRecord, CaseNote, CaseQuery, MonitorAlert, MonitorBatch,
    MonitorCase, Role, Store, StoreError, Suppression,
};

use crate::story::{account, account_id, dump_all};

// ---- builders ----

/// Creates the two officers and the auditor the records below refer to.
async fn accounts(store: &dyn Store) {
    for (n, name) in [(1, "officer-a"), (2, "officer-b"), (3, "auditor")] {
        store
            .create_account(&account(n, name, Role::PrivacyOfficer))
            .await
            .unwrap();
    }
}

/// Stands in for sealed bytes: arbitrary, including 0x00 and 0xff.
fn sealed(tag: &str) -> Vec<u8> {
    let mut v = vec![0, 0xff];
    v.extend_from_slice(tag.as_bytes());
    v
}

fn case(id: &str, subject: &str, status: &str, score: f64, updated: i64) -> MonitorCase {
    MonitorCase {
        id: id.to_owned(),
        subject: sealed(subject),
        status: status.to_owned(),
        score,
        assignee: None,
        opened: Timestamp(updated - 50),
        updated: Timestamp(updated),
        alerts: 1,
        sealed: sealed(id),
    }
}

fn alert(id: &str, case_id: &str, score: f64, created: i64) -> MonitorAlert {
    MonitorAlert {
        id: id.to_owned(),
        case_id: case_id.to_owned(),
        kind: "family".to_owned(),
        score,
        created: Timestamp(created),
        sealed: sealed(id),
    }
}

fn explanation(index: u64, tag: &str) -> AccessExplanation {
    AccessExplanation {
        index,
        sealed: sealed(tag),
    }
}

fn suppression(id: &str, created: i64) -> Suppression {
    Suppression {
        id: id.to_owned(),
        author: account_id(1),
        created: Timestamp(created),
        revoked: None,
        sealed: sealed(id),
    }
}

fn batch(from: u64, to: u64) -> MonitorBatch {
    MonitorBatch {
        from,
        to,
        ..MonitorBatch::default()
    }
}

/// Commits the cases (and nothing else) with the cursor staying where it is.
async fn put_cases(store: &dyn Store, cases: Vec<MonitorCase>) {
    let at = store.monitor_cursor().await.unwrap();
    store
        .commit_monitor_batch(MonitorBatch {
            cases,
            ..batch(at, at)
        })
        .await
        .unwrap();
}

fn case_ids(cases: &[MonitorCase]) -> Vec<&str> {
    cases.iter().map(|c| c.id.as_str()).collect()
}

fn alert_ids(alerts: &[MonitorAlert]) -> Vec<&str> {
    alerts.iter().map(|a| a.id.as_str()).collect()
}

fn query(status: Option<&str>, assignee: Option<AccountId>, limit: u32) -> CaseQuery {
    CaseQuery {
        status: status.map(str::to_owned),
        assignee,
        limit,
    }
}

/// Everything monitoring holds, for "nothing changed" checks.
async fn monitor_records(store: &dyn Store) -> Vec<BackupRecord> {
    dump_all(store)
        .await
        .into_iter()
        .filter(|r| {
            matches!(
                r,
                BackupRecord::MonitorCursor(_)
                    | BackupRecord::AccessExplanation(_)
                    | BackupRecord::MonitorCase(_)
                    | BackupRecord::MonitorAlert(_)
                    | BackupRecord::CaseNote(_)
                    | BackupRecord::Suppression(_)
            )
        })
        .collect()
}

// ---- scenarios ----

pub async fn monitor_cursor_moves_by_compare_and_set(store: &dyn Store) {
    assert_eq!(store.monitor_cursor().await.unwrap(), 0);
    store
        .commit_monitor_batch(MonitorBatch {
            explanations: vec![explanation(0, "e0"), explanation(3, "e3")],
            cases: vec![case("c1", "u1", "open", 5.0, 100)],
            alerts: vec![alert("a1", "c1", 5.0, 100)],
            ..batch(0, 10)
        })
        .await
        .unwrap();
    assert_eq!(store.monitor_cursor().await.unwrap(), 10);
    let before = monitor_records(store).await;

    // A stale `from` stores nothing at all: no case, no alert, no
    // replacement of an explanation.
    let stale = MonitorBatch {
        explanations: vec![explanation(3, "other"), explanation(4, "e4")],
        cases: vec![
            case("c1", "u1", "inappropriate", 9.0, 200),
            case("c2", "u2", "open", 1.0, 200),
        ],
        alerts: vec![alert("a2", "c2", 1.0, 200)],
        ..batch(0, 20)
    };
    assert!(matches!(
        store.commit_monitor_batch(stale.clone()).await,
        Err(StoreError::MonitorCursor)
    ));
    assert!(matches!(
        store
            .commit_monitor_batch(MonitorBatch {
                from: 11,
                ..stale.clone()
            })
            .await,
        Err(StoreError::MonitorCursor)
    ));
    assert_eq!(monitor_records(store).await, before);
    assert_eq!(store.monitor_cursor().await.unwrap(), 10);
    assert_eq!(store.monitor_case("c2").await.unwrap(), None);
    assert_eq!(
        store.explanations(&[3, 4]).await.unwrap(),
        [explanation(3, "e3")]
    );

    // The cursor never moves back, and staying put is allowed.
    assert!(matches!(
        store.commit_monitor_batch(batch(10, 9)).await,
        Err(StoreError::MonitorBatch(_))
    ));
    store.commit_monitor_batch(batch(10, 10)).await.unwrap();
    // The same batch from the right place goes through.
    store
        .commit_monitor_batch(MonitorBatch { from: 10, ..stale })
        .await
        .unwrap();
    assert_eq!(store.monitor_cursor().await.unwrap(), 20);
    assert_eq!(store.monitor_case("c1").await.unwrap().unwrap().score, 9.0);
    assert_eq!(alert_ids(&store.case_alerts("c2").await.unwrap()), ["a2"]);
    // Scores must be finite; nothing is stored otherwise.
    let mut nan = case("c3", "u3", "open", f64::NAN, 300);
    assert!(matches!(
        store
            .commit_monitor_batch(MonitorBatch {
                cases: vec![nan.clone()],
                ..batch(20, 21)
            })
            .await,
        Err(StoreError::MonitorBatch(_))
    ));
    nan.score = f64::NEG_INFINITY;
    assert!(matches!(
        store
            .commit_monitor_batch(MonitorBatch {
                cases: vec![nan],
                ..batch(20, 21)
            })
            .await,
        Err(StoreError::MonitorBatch(_))
    ));
    assert_eq!(store.monitor_cursor().await.unwrap(), 20);
    assert_eq!(store.monitor_case("c3").await.unwrap(), None);
}

pub async fn monitor_cursor_race_has_one_winner(store: &Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("c{i}");
                let result = store
                    .commit_monitor_batch(MonitorBatch {
                        explanations: vec![explanation(1, &id)],
                        cases: vec![case(&id, "u", "open", 1.0, 100)],
                        alerts: vec![alert(&format!("a{i}"), &id, 1.0, 100)],
                        ..batch(0, 5)
                    })
                    .await;
                (id, result)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (id, result) = t.await.unwrap();
        match result {
            Ok(()) => winners.push(id),
            Err(StoreError::MonitorCursor) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = &winners[0];
    assert_eq!(store.monitor_cursor().await.unwrap(), 5);
    assert_eq!(
        case_ids(&store.monitor_cases(&query(None, None, 100)).await.unwrap()),
        [winner.as_str()]
    );
    assert_eq!(
        store.explanations(&[1]).await.unwrap(),
        [explanation(1, winner)]
    );
}

pub async fn monitor_case_upserts_keep_opened_and_subject(store: &dyn Store) {
    accounts(store).await;
    let first = case("c1", "u1", "open", 2.0, 100);
    put_cases(store, vec![first.clone()]).await;
    assert_eq!(store.monitor_case("c1").await.unwrap(), Some(first.clone()));
    assert_eq!(
        store.monitor_case("C1").await.unwrap(),
        None,
        "ids are exact"
    );

    let mut upsert = case("c1", "someone-else", "follow_up", 7.5, 300);
    upsert.opened = Timestamp(1);
    upsert.assignee = Some(account_id(2));
    upsert.alerts = 4;
    // Within one batch, the last of equal ids wins.
    let mut earlier = upsert.clone();
    earlier.score = 1.0;
    earlier.status = "open".to_owned();
    put_cases(store, vec![earlier, upsert.clone()]).await;
    let got = store.monitor_case("c1").await.unwrap().unwrap();
    assert_eq!(
        got,
        MonitorCase {
            subject: first.subject.clone(),
            opened: first.opened,
            ..upsert.clone()
        }
    );
    // An upsert can also clear the assignee.
    upsert.assignee = None;
    put_cases(store, vec![upsert]).await;
    assert_eq!(
        store.monitor_case("c1").await.unwrap().unwrap().assignee,
        None
    );
    assert_eq!(
        store
            .open_case_for(&sealed("u1"))
            .await
            .unwrap()
            .unwrap()
            .id,
        "c1",
        "found by the subject it was opened with"
    );
    assert_eq!(
        store.open_case_for(&sealed("someone-else")).await.unwrap(),
        None
    );
}

pub async fn monitor_cases_query_order_and_filters(store: &dyn Store) {
    accounts(store).await;
    assert_eq!(
        store.monitor_cases(&query(None, None, 10)).await.unwrap(),
        Vec::new()
    );
    let assigned = |mut c: MonitorCase, who: u8| {
        c.assignee = Some(account_id(who));
        c
    };
    put_cases(
        store,
        vec![
            case("a", "u1", "open", 3.0, 100),
            assigned(case("b", "u2", "open", 9.0, 100), 1),
            case("c", "u3", "appropriate", 9.0, 200),
            assigned(case("d", "u4", "open", 3.0, 100), 2),
            assigned(case("e", "u5", "follow_up", 3.0, 150), 1),
            case("f", "u6", "open", -1.5, 500),
            assigned(case("g", "u7", "open", 3.0, 100), 1),
        ],
    )
    .await;
    // Score descending, then updated descending, then id.
    assert_eq!(
        case_ids(&store.monitor_cases(&query(None, None, 100)).await.unwrap()),
        ["c", "b", "e", "a", "d", "g", "f"]
    );
    assert_eq!(
        case_ids(&store.monitor_cases(&query(None, None, 3)).await.unwrap()),
        ["c", "b", "e"]
    );
    assert_eq!(
        store.monitor_cases(&query(None, None, 0)).await.unwrap(),
        Vec::new()
    );
    assert_eq!(
        case_ids(
            &store
                .monitor_cases(&query(Some("open"), None, 100))
                .await
                .unwrap()
        ),
        ["b", "a", "d", "g", "f"]
    );
    assert_eq!(
        case_ids(
            &store
                .monitor_cases(&query(None, Some(account_id(1)), 100))
                .await
                .unwrap()
        ),
        ["b", "e", "g"]
    );
    assert_eq!(
        case_ids(
            &store
                .monitor_cases(&query(Some("open"), Some(account_id(1)), 1))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        case_ids(
            &store
                .monitor_cases(&query(Some("open"), Some(account_id(1)), 100))
                .await
                .unwrap()
        ),
        ["b", "g"]
    );
    assert_eq!(
        store
            .monitor_cases(&query(Some("inappropriate"), None, 100))
            .await
            .unwrap(),
        Vec::new()
    );
    assert_eq!(
        store
            .monitor_cases(&query(None, Some(account_id(3)), 100))
            .await
            .unwrap(),
        Vec::new()
    );
    // Whole rows come back.
    assert_eq!(
        store
            .monitor_cases(&query(Some("follow_up"), None, 10))
            .await
            .unwrap(),
        [assigned(case("e", "u5", "follow_up", 3.0, 150), 1)]
    );
}

pub async fn open_case_for_picks_the_newest_open_or_follow_up(store: &dyn Store) {
    let opened = |mut c: MonitorCase, at: i64| {
        c.opened = Timestamp(at);
        c
    };
    put_cases(
        store,
        vec![
            opened(case("old-open", "u1", "open", 1.0, 900), 100),
            opened(case("follow", "u1", "follow_up", 1.0, 900), 200),
            opened(case("closed", "u1", "appropriate", 1.0, 900), 300),
            opened(case("bad", "u1", "inappropriate", 1.0, 900), 400),
            opened(case("other", "u2", "open", 1.0, 900), 500),
        ],
    )
    .await;
    let newest = |subject: &'static str| async move {
        store
            .open_case_for(&sealed(subject))
            .await
            .unwrap()
            .map(|c| c.id)
    };
    assert_eq!(newest("u1").await.as_deref(), Some("follow"));
    assert_eq!(newest("u2").await.as_deref(), Some("other"));
    assert_eq!(newest("u3").await, None);
    // Subjects are compared as bytes, exactly.
    assert_eq!(store.open_case_for(b"u1").await.unwrap(), None);

    // Closing the newest open case falls back to the older one.
    let follow = store.monitor_case("follow").await.unwrap().unwrap();
    store
        .update_case(
            "follow",
            follow.updated,
            "appropriate",
            None,
            Timestamp(1_000),
            None,
        )
        .await
        .unwrap();
    assert_eq!(newest("u1").await.as_deref(), Some("old-open"));
    // A newer open case, opened later with an equal time: ties go to the
    // greater id.
    put_cases(
        store,
        vec![
            opened(case("new-b", "u1", "open", 1.0, 900), 600),
            opened(case("new-a", "u1", "open", 1.0, 900), 600),
        ],
    )
    .await;
    assert_eq!(newest("u1").await.as_deref(), Some("new-b"));
}

pub async fn case_alerts_ordered_and_never_overwritten(store: &dyn Store) {
    put_cases(
        store,
        vec![
            case("c1", "u1", "open", 5.0, 100),
            case("c2", "u2", "open", 1.0, 100),
        ],
    )
    .await;
    store
        .commit_monitor_batch(MonitorBatch {
            alerts: vec![
                alert("z", "c1", 2.0, 50),
                alert("y", "c1", 8.0, 70),
                alert("x", "c1", 2.0, 40),
                alert("w", "c1", 2.0, 40),
                alert("v", "c2", 1.0, 10),
            ],
            ..batch(0, 1)
        })
        .await
        .unwrap();
    // Score descending, then created, then id.
    assert_eq!(
        alert_ids(&store.case_alerts("c1").await.unwrap()),
        ["y", "w", "x", "z"]
    );
    assert_eq!(
        store.case_alerts("c2").await.unwrap(),
        [alert("v", "c2", 1.0, 10)]
    );
    assert_eq!(store.case_alerts("none").await.unwrap(), Vec::new());

    // An alert id stored already refuses the whole batch.
    let before = monitor_records(store).await;
    assert!(matches!(
        store
            .commit_monitor_batch(MonitorBatch {
                explanations: vec![explanation(1, "e1")],
                cases: vec![case("c3", "u3", "open", 1.0, 200)],
                alerts: vec![alert("u", "c3", 1.0, 1), alert("v", "c3", 9.0, 1)],
                ..batch(1, 2)
            })
            .await,
        Err(StoreError::MonitorBatch(_))
    ));
    // And so does an id given twice in one batch.
    assert!(matches!(
        store
            .commit_monitor_batch(MonitorBatch {
                alerts: vec![alert("t", "c1", 1.0, 1), alert("t", "c1", 2.0, 1)],
                ..batch(1, 2)
            })
            .await,
        Err(StoreError::MonitorBatch(_))
    ));
    assert_eq!(monitor_records(store).await, before);
    assert_eq!(store.monitor_cursor().await.unwrap(), 1);
}

pub async fn update_case_checks_concurrency_and_numbers_notes(store: &dyn Store) {
    accounts(store).await;
    put_cases(
        store,
        vec![
            case("c1", "u1", "open", 5.0, 100),
            case("c2", "u2", "open", 4.0, 100),
        ],
    )
    .await;

    // Assign without a note.
    assert_eq!(
        store
            .update_case(
                "c1",
                Timestamp(100),
                "open",
                Some(&account_id(1)),
                Timestamp(110),
                None
            )
            .await
            .unwrap(),
        None
    );
    let c1 = store.monitor_case("c1").await.unwrap().unwrap();
    assert_eq!(
        c1,
        MonitorCase {
            assignee: Some(account_id(1)),
            updated: Timestamp(110),
            ..case("c1", "u1", "open", 5.0, 100)
        },
        "only status, assignee and updated change"
    );

    // A disposition with a note.
    let seq = store
        .update_case(
            "c1",
            Timestamp(110),
            "follow_up",
            Some(&account_id(1)),
            Timestamp(120),
            Some((account_id(1), sealed("n1"))),
        )
        .await
        .unwrap();
    assert_eq!(seq, Some(1));

    // A stale `expected_updated` changes nothing, the note included.
    let before = monitor_records(store).await;
    assert!(matches!(
        store
            .update_case(
                "c1",
                Timestamp(110),
                "appropriate",
                None,
                Timestamp(130),
                Some((account_id(2), sealed("lost"))),
            )
            .await,
        Err(StoreError::MonitorCaseChanged)
    ));
    assert!(matches!(
        store
            .update_case(
                "absent",
                Timestamp(100),
                "appropriate",
                None,
                Timestamp(130),
                Some((account_id(2), sealed("lost"))),
            )
            .await,
        Err(StoreError::MonitorCaseNotFound)
    ));
    assert_eq!(monitor_records(store).await, before);

    // Notes are numbered per case, gap-free, and keep their author and time.
    assert_eq!(
        store
            .update_case(
                "c1",
                Timestamp(120),
                "inappropriate",
                None,
                Timestamp(140),
                Some((account_id(2), sealed("n2"))),
            )
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        store
            .update_case(
                "c2",
                Timestamp(100),
                "open",
                None,
                Timestamp(150),
                Some((account_id(2), sealed("m1"))),
            )
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        store.case_notes("c1").await.unwrap(),
        [
            CaseNote {
                case_id: "c1".to_owned(),
                seq: 1,
                author: account_id(1),
                at: Timestamp(120),
                sealed: sealed("n1"),
            },
            CaseNote {
                case_id: "c1".to_owned(),
                seq: 2,
                author: account_id(2),
                at: Timestamp(140),
                sealed: sealed("n2"),
            },
        ]
    );
    assert_eq!(store.case_notes("c2").await.unwrap().len(), 1);
    assert_eq!(store.case_notes("absent").await.unwrap(), Vec::new());
    let c1 = store.monitor_case("c1").await.unwrap().unwrap();
    assert_eq!(
        (c1.status.as_str(), c1.assignee, c1.updated),
        ("inappropriate", None, Timestamp(140))
    );
}

pub async fn update_case_race_has_one_winner(store: &Arc<dyn Store>) {
    accounts(&**store).await;
    put_cases(&**store, vec![case("c", "u", "open", 1.0, 100)]).await;
    // Each racer moves `updated` to its own time: exactly one sees 100.
    let tasks: Vec<_> = (1..=6)
        .map(|i: i64| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .update_case(
                        "c",
                        Timestamp(100),
                        "appropriate",
                        None,
                        Timestamp(100 + i),
                        Some((account_id(1), sealed(&format!("n{i}")))),
                    )
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(seq) => {
                assert_eq!(seq, Some(1));
                won += 1;
            }
            Err(StoreError::MonitorCaseChanged) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.case_notes("c").await.unwrap().len(), 1);

    // Racers that keep `updated` as it is all succeed, and their notes get
    // distinct, gap-free numbers.
    let now = store.monitor_case("c").await.unwrap().unwrap().updated;
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .update_case(
                        "c",
                        now,
                        "follow_up",
                        Some(&account_id(2)),
                        now,
                        Some((account_id(2), sealed(&format!("m{i}")))),
                    )
                    .await
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=7).collect::<Vec<u64>>());
    let notes = store.case_notes("c").await.unwrap();
    assert_eq!(
        notes.iter().map(|n| n.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<u64>>()
    );
}

pub async fn suppressions_are_revoked_once(store: &dyn Store) {
    accounts(store).await;
    assert_eq!(store.suppressions().await.unwrap(), Vec::new());
    for s in [
        suppression("s-b", 200),
        suppression("s-c", 100),
        suppression("s-a", 200),
    ] {
        store.add_suppression(&s).await.unwrap();
    }
    // A taken id is refused and the stored one kept.
    let mut dup = suppression("s-a", 50);
    dup.author = account_id(2);
    assert!(matches!(
        store.add_suppression(&dup).await,
        Err(StoreError::SuppressionExists)
    ));
    // Oldest first, then by id.
    assert_eq!(
        store.suppressions().await.unwrap(),
        [
            suppression("s-c", 100),
            suppression("s-a", 200),
            suppression("s-b", 200)
        ]
    );
    assert!(
        !store
            .revoke_suppression("absent", Timestamp(300))
            .await
            .unwrap()
    );
    assert!(
        store
            .revoke_suppression("s-a", Timestamp(300))
            .await
            .unwrap()
    );
    // A second revocation neither succeeds nor moves the time.
    assert!(
        !store
            .revoke_suppression("s-a", Timestamp(400))
            .await
            .unwrap()
    );
    let all = store.suppressions().await.unwrap();
    assert_eq!(all.len(), 3, "revoked suppressions are kept");
    assert_eq!(
        all[1],
        Suppression {
            revoked: Some(Timestamp(300)),
            ..suppression("s-a", 200)
        }
    );
    assert_eq!(all[0].revoked, None);
    // A suppression may also be stored already revoked (as a restore does).
    let mut revoked = suppression("s-d", 10);
    revoked.revoked = Some(Timestamp(20));
    store.add_suppression(&revoked).await.unwrap();
    assert!(
        !store
            .revoke_suppression("s-d", Timestamp(30))
            .await
            .unwrap()
    );
    assert_eq!(store.suppressions().await.unwrap()[0], revoked);
}

pub async fn explanations_are_replaced_and_fetched_in_bulk(store: &dyn Store) {
    assert_eq!(store.explanations(&[]).await.unwrap(), Vec::new());
    assert_eq!(store.explanations(&[0, 1]).await.unwrap(), Vec::new());
    // Every other index of 0..24_000, over two batches.
    let all: Vec<AccessExplanation> = (0..12_000_u64)
        .map(|i| explanation(2 * i, &format!("e{i}")))
        .collect();
    let (first, second) = all.split_at(7_000);
    store
        .commit_monitor_batch(MonitorBatch {
            explanations: first.to_vec(),
            ..batch(0, 14_000)
        })
        .await
        .unwrap();
    store
        .commit_monitor_batch(MonitorBatch {
            explanations: second.to_vec(),
            ..batch(14_000, 24_000)
        })
        .await
        .unwrap();

    // More than 10,000 indexes in one call, unordered, repeated, some
    // never explained: index order, each once.
    let mut wanted: Vec<u64> = (0..25_000_u64).rev().collect();
    wanted.extend([4, 4, 23_998, 1 << 40]);
    assert_eq!(store.explanations(&wanted).await.unwrap(), all);
    assert_eq!(
        store.explanations(&[23_998, 3, 10]).await.unwrap(),
        [explanation(10, "e5"), explanation(23_998, "e11999")]
    );

    // Explaining an index again replaces it; within a batch the last wins.
    store
        .commit_monitor_batch(MonitorBatch {
            explanations: vec![
                explanation(10, "first"),
                explanation(11, "new"),
                explanation(10, "again"),
            ],
            ..batch(24_000, 24_000)
        })
        .await
        .unwrap();
    assert_eq!(
        store.explanations(&[9, 10, 11, 12]).await.unwrap(),
        [
            explanation(10, "again"),
            explanation(11, "new"),
            explanation(12, "e6")
        ]
    );
}

pub async fn monitor_foreign_keys_refuse_and_store_nothing(store: &dyn Store) {
    accounts(store).await;
    put_cases(store, vec![case("c1", "u1", "open", 1.0, 100)]).await;
    let before = monitor_records(store).await;
    let unknown = AccountId::from_bytes([0xee; 16]);

    // An alert whose case is neither stored nor in the batch.
    let orphan = MonitorBatch {
        explanations: vec![explanation(0, "e0")],
        cases: vec![case("c2", "u2", "open", 1.0, 100)],
        alerts: vec![alert("a1", "c2", 1.0, 1), alert("a2", "missing", 1.0, 1)],
        ..batch(0, 5)
    };
    assert!(store.commit_monitor_batch(orphan).await.is_err());
    // A case assigned to no account.
    let mut stray = case("c3", "u3", "open", 1.0, 100);
    stray.assignee = Some(unknown.clone());
    let unassignable = MonitorBatch {
        explanations: vec![explanation(0, "e0")],
        cases: vec![stray],
        ..batch(0, 5)
    };
    assert!(store.commit_monitor_batch(unassignable).await.is_err());
    assert_eq!(monitor_records(store).await, before);
    assert_eq!(store.monitor_cursor().await.unwrap(), 0);

    // An officer update naming an unknown assignee or note author.
    assert!(
        store
            .update_case(
                "c1",
                Timestamp(100),
                "appropriate",
                Some(&unknown),
                Timestamp(200),
                None
            )
            .await
            .is_err()
    );
    assert!(
        store
            .update_case(
                "c1",
                Timestamp(100),
                "appropriate",
                None,
                Timestamp(200),
                Some((unknown.clone(), sealed("n"))),
            )
            .await
            .is_err()
    );
    // A suppression by an unknown author.
    assert!(
        store
            .add_suppression(&Suppression {
                author: unknown,
                ..suppression("s1", 1)
            })
            .await
            .is_err()
    );
    assert_eq!(monitor_records(store).await, before);
    assert_eq!(
        store.monitor_case("c1").await.unwrap().unwrap().updated,
        Timestamp(100),
        "the case is as it was, so the officer can retry"
    );
}

/// Moves the cursor and stores explanations, three cases (one assigned, two
/// with notes), alerts and suppressions (one revoked).
pub async fn populate(store: &dyn Store) {
    accounts(store).await;
    let mut assigned = case("c-b", "u2", "follow_up", 0.1 + 0.2, 300);
    assigned.assignee = Some(account_id(2));
    assigned.alerts = 2;
    store
        .commit_monitor_batch(MonitorBatch {
            explanations: vec![
                explanation(0, "e0"),
                explanation(1, "e1"),
                explanation(7, "e7"),
            ],
            cases: vec![
                case("c-a", "u1", "open", 1e-300, 200),
                assigned,
                case("c-c", "u3", "appropriate", -2.5, 100),
            ],
            alerts: vec![
                alert("a-3", "c-b", 0.1 + 0.2, 250),
                alert("a-1", "c-a", 1e-300, 150),
                alert("a-2", "c-b", f64::MAX, 300),
                alert("a-4", "c-c", -2.5, 90),
            ],
            ..batch(0, 8)
        })
        .await
        .unwrap();
    for (id, updated, author, note) in [
        ("c-b", 300, 1, "n1"),
        ("c-a", 200, 2, "m1"),
        ("c-b", 310, 2, "n2"),
    ] {
        let case = store.monitor_case(id).await.unwrap().unwrap();
        assert_eq!(case.updated, Timestamp(updated));
        store
            .update_case(
                id,
                case.updated,
                &case.status,
                case.assignee.as_ref(),
                Timestamp(updated + 10),
                Some((account_id(author), sealed(note))),
            )
            .await
            .unwrap();
    }
    for s in [suppression("s-2", 20), suppression("s-1", 10)] {
        store.add_suppression(&s).await.unwrap();
    }
    assert!(
        store
            .revoke_suppression("s-2", Timestamp(30))
            .await
            .unwrap()
    );
}

pub async fn monitor_records_are_dumped_last(store: &dyn Store) {
    populate(store).await;
    let records = dump_all(store).await;
    let tail: Vec<&BackupRecord> = records
        .iter()
        .skip_while(|r| !matches!(r, BackupRecord::MonitorCursor(_)))
        .collect();
    let kinds: Vec<&str> = tail
        .iter()
        .map(|r| match r {
            BackupRecord::MonitorCursor(8) => "cursor",
            BackupRecord::AccessExplanation(e) => match e.index {
                0 => "e0",
                1 => "e1",
                7 => "e7",
                _ => "e?",
            },
            BackupRecord::MonitorCase(c) => c.id.as_str(),
            BackupRecord::MonitorAlert(a) => a.id.as_str(),
            BackupRecord::CaseNote(n) => match (n.case_id.as_str(), n.seq) {
                ("c-a", 1) => "c-a/1",
                ("c-b", 1) => "c-b/1",
                ("c-b", 2) => "c-b/2",
                _ => "note?",
            },
            BackupRecord::Suppression(s) => s.id.as_str(),
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "cursor", "e0", "e1", "e7", "c-a", "c-b", "c-c", "a-1", "a-2", "a-3", "a-4", "c-a/1",
            "c-b/1", "c-b/2", "s-1", "s-2"
        ]
    );
    // The records are the stored ones, to the bit.
    for r in &tail {
        match r {
            BackupRecord::MonitorCase(c) => {
                assert_eq!(store.monitor_case(&c.id).await.unwrap().as_ref(), Some(c));
            }
            BackupRecord::MonitorAlert(a) => {
                assert!(store.case_alerts(&a.case_id).await.unwrap().contains(a));
            }
            _ => {}
        }
    }
    let b = store.monitor_case("c-b").await.unwrap().unwrap();
    assert_eq!(b.score.to_bits(), (0.1_f64 + 0.2).to_bits());
    assert_eq!(b.updated, Timestamp(320));
    assert_eq!(dump_all(store).await, records, "two dumps are equal");
    assert!(matches!(
        store.load(records).await,
        Err(StoreError::Backup(_))
    ));
}

pub async fn load_refuses_a_store_whose_monitor_cursor_moved(store: &dyn Store) {
    // Only the cursor has moved: nothing else is stored.
    store.commit_monitor_batch(batch(0, 3)).await.unwrap();
    assert_eq!(dump_all(store).await, [BackupRecord::MonitorCursor(3)]);
    let one = vec![BackupRecord::Setting {
        name: "other".to_owned(),
        value: b"x".to_vec(),
    }];
    assert!(matches!(store.load(one).await, Err(StoreError::Backup(_))));
    assert_eq!(store.get_setting("other").await.unwrap(), None);
}

/// A dump of monitoring loads into a second, empty store (of any backend)
/// and dumps back identically; the loaded store goes on from the cursor,
/// numbers notes on from the last, and refuses a second revocation.
pub async fn monitor_dump_load_round_trip(from: &dyn Store, to: &dyn Store) {
    populate(from).await;
    let records = dump_all(from).await;

    // Notes out of order are refused, and nothing stays loaded.
    let mut bad = records.clone();
    bad.retain(|r| !matches!(r, BackupRecord::CaseNote(n) if n.case_id == "c-b" && n.seq == 1));
    assert!(matches!(to.load(bad).await, Err(StoreError::Backup(_))));
    // So is an alert whose case is not in the backup.
    let mut orphan = records.clone();
    orphan.retain(|r| !matches!(r, BackupRecord::MonitorCase(c) if c.id == "c-c"));
    assert!(to.load(orphan).await.is_err());
    assert_eq!(dump_all(to).await, Vec::new());
    assert_eq!(to.monitor_cursor().await.unwrap(), 0);

    to.load(records.clone()).await.unwrap();
    assert_eq!(dump_all(to).await, records);
    assert_eq!(to.monitor_cursor().await.unwrap(), 8);
    let all = query(None, None, 100);
    assert_eq!(
        to.monitor_cases(&all).await.unwrap(),
        from.monitor_cases(&all).await.unwrap()
    );
    for id in ["c-a", "c-b", "c-c"] {
        assert_eq!(
            to.case_alerts(id).await.unwrap(),
            from.case_alerts(id).await.unwrap()
        );
        assert_eq!(
            to.case_notes(id).await.unwrap(),
            from.case_notes(id).await.unwrap()
        );
    }
    assert_eq!(
        to.explanations(&[0, 1, 2, 7]).await.unwrap(),
        from.explanations(&[0, 1, 2, 7]).await.unwrap()
    );
    assert_eq!(
        to.suppressions().await.unwrap(),
        from.suppressions().await.unwrap()
    );
    assert_eq!(
        to.open_case_for(&sealed("u2")).await.unwrap(),
        from.open_case_for(&sealed("u2")).await.unwrap()
    );

    // The loaded store goes on where the source left off.
    assert!(matches!(
        to.commit_monitor_batch(batch(0, 9)).await,
        Err(StoreError::MonitorCursor)
    ));
    to.commit_monitor_batch(batch(8, 9)).await.unwrap();
    assert_eq!(
        to.update_case(
            "c-b",
            Timestamp(320),
            "inappropriate",
            None,
            Timestamp(400),
            Some((account_id(3), sealed("n3"))),
        )
        .await
        .unwrap(),
        Some(3)
    );
    assert!(!to.revoke_suppression("s-2", Timestamp(90)).await.unwrap());
    assert!(matches!(
        to.add_suppression(&suppression("s-1", 1)).await,
        Err(StoreError::SuppressionExists)
    ));
    assert!(matches!(
        to.commit_monitor_batch(MonitorBatch {
            alerts: vec![alert("a-1", "c-a", 1.0, 1)],
            ..batch(9, 10)
        })
        .await,
        Err(StoreError::MonitorBatch(_))
    ));
}
