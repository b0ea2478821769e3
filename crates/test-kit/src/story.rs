//! The store conformance story: one function per scenario, each given a
//! fresh, migrated, empty store. Run against every backend by
//! [`crate::store_story_tests!`].

use std::sync::Arc;

use model::{KeyOwner, PatientId, ResourceId, ResourceType, Timestamp, VersionId};
use store::{
    Account, AccountId, AuditAppended, AuditHead, AuditQuery, AuditRecord, AuditTile, BackupRecord,
    Challenge, ConflictReason, Credentials, EraseReport, FailureCounter, IndexClause, IndexQuery,
    IndexRow, Integrated, OAuthClient, OutboxMessage, Precondition, RefreshOutcome, RefreshToken,
    Role, Session, Stats, Store, StoreError, StoredPasskey, StoredVersion, WrappedKey, WriteOp,
};

use ResourceType::{Observation, Organization, Patient};

// ---- builders ----

pub fn rid(s: &str) -> ResourceId {
    ResourceId::new(s).expect("valid test id")
}

pub fn patient(id: &str) -> KeyOwner {
    KeyOwner::Patient(PatientId(rid(id)))
}

pub fn token(s: &str) -> Vec<u8> {
    // Stands in for an HMAC output: arbitrary bytes, including 0x00.
    let mut t = vec![0_u8, 0xff];
    t.extend_from_slice(s.as_bytes());
    t
}

pub fn row(param: &str, t: &str) -> IndexRow {
    IndexRow {
        param: param.to_owned(),
        token: token(t),
    }
}

pub fn version(
    rtype: ResourceType,
    id: &str,
    v: u64,
    at: i64,
    owner: &KeyOwner,
    ciphertext: &[u8],
) -> StoredVersion {
    StoredVersion {
        rtype,
        id: rid(id),
        version: VersionId(v),
        last_updated: Timestamp(at),
        deleted: false,
        key_owner: owner.clone(),
        ciphertext: ciphertext.to_vec(),
    }
}

pub fn create(
    rtype: ResourceType,
    id: &str,
    owner: &KeyOwner,
    ciphertext: &[u8],
    index: Vec<IndexRow>,
) -> WriteOp {
    WriteOp {
        precondition: Precondition::MustNotExist,
        version: version(rtype, id, 1, 1_000, owner, ciphertext),
        index,
    }
}

pub fn update(
    rtype: ResourceType,
    id: &str,
    from: u64,
    owner: &KeyOwner,
    ciphertext: &[u8],
    index: Vec<IndexRow>,
) -> WriteOp {
    WriteOp {
        precondition: Precondition::CurrentVersion(VersionId(from)),
        version: version(
            rtype,
            id,
            from + 1,
            1_000 + i64::try_from(from).unwrap(),
            owner,
            ciphertext,
        ),
        index,
    }
}

pub fn delete(rtype: ResourceType, id: &str, from: u64, owner: &KeyOwner) -> WriteOp {
    let mut v = version(rtype, id, from + 1, 5_000, owner, b"");
    v.deleted = true;
    WriteOp {
        precondition: Precondition::CurrentVersion(VersionId(from)),
        version: v,
        index: Vec::new(),
    }
}

pub fn clause(param: &str, tokens: &[&str]) -> IndexClause {
    IndexClause {
        param: param.to_owned(),
        tokens: tokens.iter().map(|t| token(t)).collect(),
    }
}

pub fn query(clauses: Vec<IndexClause>, limit: usize) -> IndexQuery {
    IndexQuery {
        clauses,
        limit,
        ..IndexQuery::default()
    }
}

fn ids(list: &[ResourceId]) -> Vec<&str> {
    list.iter().map(ResourceId::as_str).collect()
}

pub async fn dump_all(store: &dyn Store) -> Vec<BackupRecord> {
    let mut out = Vec::new();
    store
        .dump(&mut |r| {
            out.push(r);
            Ok(())
        })
        .await
        .expect("dump");
    out
}

#[track_caller]
pub fn assert_conflict(
    result: store::Result<()>,
    rtype: ResourceType,
    id: &str,
    reason: ConflictReason,
) {
    match result {
        Err(StoreError::Conflict {
            rtype: r,
            id: i,
            reason: got,
        }) => {
            assert_eq!(
                (r, i.as_str(), got),
                (rtype, id, reason),
                "conflict details"
            );
        }
        other => panic!("expected a {reason} conflict on {rtype}/{id}, got {other:?}"),
    }
}

/// A small but varied data set: history, a delete marker, several owners,
/// index rows, keys and settings.
pub async fn populate(store: &dyn Store) {
    let org = KeyOwner::Organisation;
    let (p1, p2) = (patient("p1"), patient("p2"));
    store.put_setting("node-id", b"node-1").await.unwrap();
    store
        .put_setting("bootstrap", &[0, 1, 2, 255])
        .await
        .unwrap();
    for (owner, kek) in [(&org, "kek-1"), (&p1, "kek-1"), (&p2, "kek-2")] {
        let key = WrappedKey {
            owner: owner.clone(),
            kek_id: kek.to_owned(),
            wrapped: token(&owner.storage_key()),
        };
        store.put_key_if_absent(&key).await.unwrap();
    }
    store
        .commit(vec![
            create(
                Organization,
                "org1",
                &org,
                b"org-1",
                vec![row("name", "acme")],
            ),
            create(
                Patient,
                "p1",
                &p1,
                b"p1-v1",
                vec![row("identifier", "mrn-1"), row("name", "smith")],
            ),
            create(
                Patient,
                "p2",
                &p2,
                b"p2-v1",
                vec![row("identifier", "mrn-2"), row("name", "smith")],
            ),
            create(
                Observation,
                "o1",
                &p1,
                b"o1-v1",
                vec![row("code", "bp"), row("subject", "p1")],
            ),
            create(
                Observation,
                "o2",
                &p2,
                b"o2-v1",
                vec![row("code", "hr"), row("subject", "p2")],
            ),
        ])
        .await
        .unwrap();
    store
        .commit(vec![update(
            Patient,
            "p1",
            1,
            &p1,
            b"p1-v2",
            vec![row("identifier", "mrn-1b")],
        )])
        .await
        .unwrap();
    store
        .commit(vec![delete(Observation, "o2", 1, &p2)])
        .await
        .unwrap();
}

// ---- scenarios ----

pub async fn create_read_version_history(store: &dyn Store) {
    assert!(!store.backend().is_empty());
    let p1 = patient("p1");
    assert_eq!(store.current(Patient, &rid("p1")).await.unwrap(), None);
    assert!(store.history(Patient, &rid("p1")).await.unwrap().is_empty());

    let v1 = create(
        Patient,
        "p1",
        &p1,
        b"\x00cipher-1\xff",
        vec![row("name", "smith")],
    );
    store.commit(vec![v1.clone()]).await.unwrap();
    assert_eq!(
        store.current(Patient, &rid("p1")).await.unwrap(),
        Some(v1.version.clone())
    );
    assert_eq!(
        store
            .version(Patient, &rid("p1"), VersionId(1))
            .await
            .unwrap(),
        Some(v1.version.clone())
    );
    // The same id under another type is another resource.
    assert_eq!(store.current(Observation, &rid("p1")).await.unwrap(), None);

    let v2 = update(
        Patient,
        "p1",
        1,
        &p1,
        b"cipher-2",
        vec![row("name", "jones")],
    );
    store.commit(vec![v2.clone()]).await.unwrap();
    assert_eq!(
        store.current(Patient, &rid("p1")).await.unwrap(),
        Some(v2.version.clone())
    );
    assert_eq!(
        store
            .version(Patient, &rid("p1"), VersionId(1))
            .await
            .unwrap(),
        Some(v1.version.clone())
    );
    assert_eq!(
        store
            .version(Patient, &rid("p1"), VersionId(2))
            .await
            .unwrap(),
        Some(v2.version.clone())
    );
    assert_eq!(
        store
            .version(Patient, &rid("p1"), VersionId(3))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .version(Patient, &rid("p1"), VersionId(u64::MAX))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.history(Patient, &rid("p1")).await.unwrap(),
        vec![v2.version, v1.version]
    );

    // An empty batch is a no-op.
    store.commit(Vec::new()).await.unwrap();
}

pub async fn migrate_is_idempotent(store: &dyn Store) {
    populate(store).await;
    let before = dump_all(store).await;
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(dump_all(store).await, before);
    store.check_durability().await.unwrap();
}

pub async fn preconditions_conflict_and_leave_data_unchanged(store: &dyn Store) {
    let p1 = patient("p1");
    store
        .commit(vec![create(
            Patient,
            "p1",
            &p1,
            b"v1",
            vec![row("name", "a")],
        )])
        .await
        .unwrap();
    let baseline = dump_all(store).await;

    let with = |precondition: Precondition, id: &str, v: u64| WriteOp {
        precondition,
        version: version(Patient, id, v, 2_000, &p1, b"new"),
        index: vec![row("name", "b")],
    };
    let cases = [
        // Create-only on an id that exists.
        (
            with(Precondition::MustNotExist, "p1", 1),
            "p1",
            ConflictReason::AlreadyExists,
        ),
        (
            with(Precondition::MustNotExist, "p1", 2),
            "p1",
            ConflictReason::AlreadyExists,
        ),
        // If-Match with a stale or future version.
        (
            with(Precondition::CurrentVersion(VersionId(2)), "p1", 3),
            "p1",
            ConflictReason::VersionMismatch,
        ),
        (
            with(Precondition::CurrentVersion(VersionId(0)), "p1", 2),
            "p1",
            ConflictReason::VersionMismatch,
        ),
        (
            with(Precondition::CurrentIs(Some(VersionId(2))), "p1", 3),
            "p1",
            ConflictReason::VersionMismatch,
        ),
        // PUT that read "absent" but the resource exists now.
        (
            with(Precondition::CurrentIs(None), "p1", 2),
            "p1",
            ConflictReason::VersionMismatch,
        ),
        // The right precondition but a version that leaves a gap or repeats.
        (
            with(Precondition::CurrentVersion(VersionId(1)), "p1", 3),
            "p1",
            ConflictReason::VersionMismatch,
        ),
        (
            with(Precondition::CurrentVersion(VersionId(1)), "p1", 1),
            "p1",
            ConflictReason::VersionMismatch,
        ),
        (
            with(Precondition::CurrentIs(Some(VersionId(1))), "p1", 7),
            "p1",
            ConflictReason::VersionMismatch,
        ),
        // Preconditions on an id that does not exist.
        (
            with(Precondition::CurrentVersion(VersionId(1)), "nope", 2),
            "nope",
            ConflictReason::VersionMismatch,
        ),
        (
            with(Precondition::CurrentIs(Some(VersionId(1))), "nope", 2),
            "nope",
            ConflictReason::VersionMismatch,
        ),
        (
            with(Precondition::MustNotExist, "nope", 2),
            "nope",
            ConflictReason::VersionMismatch,
        ),
        (
            with(Precondition::CurrentIs(None), "nope", 0),
            "nope",
            ConflictReason::VersionMismatch,
        ),
    ];
    for (op, id, reason) in cases {
        assert_conflict(store.commit(vec![op]).await, Patient, id, reason);
        assert_eq!(
            dump_all(store).await,
            baseline,
            "a failed commit must leave data unchanged"
        );
    }
    // The equivalent correct writes succeed.
    store
        .commit(vec![with(
            Precondition::CurrentIs(Some(VersionId(1))),
            "p1",
            2,
        )])
        .await
        .unwrap();
    store
        .commit(vec![with(Precondition::CurrentIs(None), "new", 1)])
        .await
        .unwrap();
    assert_eq!(
        store
            .current(Patient, &rid("p1"))
            .await
            .unwrap()
            .unwrap()
            .version,
        VersionId(2)
    );
}

pub async fn multi_op_commit_is_atomic(store: &dyn Store) {
    let org = KeyOwner::Organisation;
    store
        .commit(vec![create(
            Organization,
            "c",
            &org,
            b"c1",
            vec![row("name", "c")],
        )])
        .await
        .unwrap();
    let baseline = dump_all(store).await;
    let stats = store.stats().await.unwrap();

    let batch = vec![
        create(Organization, "a", &org, b"a1", vec![row("name", "a")]),
        create(Organization, "b", &org, b"b1", vec![row("name", "b")]),
        update(Organization, "c", 1, &org, b"c2", vec![row("name", "c2")]),
        // The last op conflicts: nothing above may be written.
        update(Organization, "c", 5, &org, b"c6", Vec::new()),
    ];
    assert_conflict(
        store.commit(batch).await,
        Organization,
        "c",
        ConflictReason::VersionMismatch,
    );
    assert_eq!(dump_all(store).await, baseline);
    assert_eq!(store.stats().await.unwrap(), stats);
    assert_eq!(store.current(Organization, &rid("a")).await.unwrap(), None);

    // A batch may write one id twice: later ops see earlier ones.
    store
        .commit(vec![
            create(Organization, "a", &org, b"a1", vec![row("name", "a")]),
            update(Organization, "a", 1, &org, b"a2", vec![row("name", "a2")]),
            create(Organization, "b", &org, b"b1", vec![row("name", "b")]),
        ])
        .await
        .unwrap();
    assert_eq!(
        store
            .current(Organization, &rid("a"))
            .await
            .unwrap()
            .unwrap()
            .ciphertext,
        b"a2"
    );
    assert_eq!(
        store.history(Organization, &rid("a")).await.unwrap().len(),
        2
    );
    let found = store
        .find(
            Organization,
            &query(vec![clause("name", &["a", "a2", "b"])], 10),
        )
        .await
        .unwrap();
    assert_eq!(ids(&found), ["a", "b"]);
}

pub async fn delete_then_recreate(store: &dyn Store) {
    let p1 = patient("p1");
    store
        .commit(vec![create(
            Patient,
            "p1",
            &p1,
            b"v1",
            vec![row("name", "smith")],
        )])
        .await
        .unwrap();
    store
        .commit(vec![delete(Patient, "p1", 1, &p1)])
        .await
        .unwrap();

    let marker = store
        .current(Patient, &rid("p1"))
        .await
        .unwrap()
        .expect("the delete marker is current");
    assert!(marker.deleted);
    assert_eq!(marker.version, VersionId(2));
    assert!(marker.ciphertext.is_empty());
    assert!(
        store
            .existing(Patient, &[rid("p1")])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .current_many(Patient, &[rid("p1")])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .find(Patient, &query(vec![clause("name", &["smith"])], 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.scan(Patient, None, 10).await.unwrap().is_empty());
    assert_eq!(
        store.stats().await.unwrap().index_rows,
        0,
        "a delete removes the index rows"
    );
    assert_eq!(store.stats().await.unwrap().current_resources, 0);

    // Deleted ids are not reused by a server-assigned create.
    assert_conflict(
        store
            .commit(vec![create(Patient, "p1", &p1, b"again", Vec::new())])
            .await,
        Patient,
        "p1",
        ConflictReason::AlreadyExists,
    );
    // If-Match on a deleted resource fails: there is no current version to match.
    let if_match = WriteOp {
        precondition: Precondition::CurrentVersion(VersionId(2)),
        version: version(Patient, "p1", 3, 6_000, &p1, b"v3"),
        index: Vec::new(),
    };
    assert_conflict(
        store.commit(vec![if_match]).await,
        Patient,
        "p1",
        ConflictReason::VersionMismatch,
    );

    // PUT recreates it, continuing the version count.
    let recreate = |v: u64| WriteOp {
        precondition: Precondition::CurrentIs(None),
        version: version(Patient, "p1", v, 6_000, &p1, b"v3"),
        index: vec![row("name", "jones")],
    };
    assert_conflict(
        store.commit(vec![recreate(1)]).await,
        Patient,
        "p1",
        ConflictReason::VersionMismatch,
    );
    assert_conflict(
        store.commit(vec![recreate(2)]).await,
        Patient,
        "p1",
        ConflictReason::VersionMismatch,
    );
    store.commit(vec![recreate(3)]).await.unwrap();
    let history = store.history(Patient, &rid("p1")).await.unwrap();
    let shape: Vec<(u64, bool)> = history.iter().map(|v| (v.version.0, v.deleted)).collect();
    assert_eq!(shape, [(3, false), (2, true), (1, false)]);
    assert_eq!(
        ids(&store.existing(Patient, &[rid("p1")]).await.unwrap()),
        ["p1"]
    );
    assert_eq!(
        ids(&store
            .find(Patient, &query(vec![clause("name", &["jones"])], 10))
            .await
            .unwrap()),
        ["p1"]
    );
    assert!(
        store
            .find(Patient, &query(vec![clause("name", &["smith"])], 10))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Observations o1..o6 with codes, subjects and write times 100..600.
async fn observations(store: &dyn Store) {
    let org = KeyOwner::Organisation;
    let data = [
        ("o1", "bp", "p1", 100),
        ("o2", "bp", "p2", 200),
        ("o3", "hr", "p1", 300),
        ("o4", "hr", "p2", 400),
        ("o5", "temp", "p1", 500),
        ("o6", "bp", "p1", 600),
    ];
    let ops = data
        .iter()
        .map(|(id, code, subject, at)| WriteOp {
            precondition: Precondition::MustNotExist,
            version: version(Observation, id, 1, *at, &org, id.as_bytes()),
            index: vec![
                row("code", code),
                row("subject", subject),
                row("category", "vital-signs"),
            ],
        })
        .collect();
    store.commit(ops).await.unwrap();
    // The same tokens on another type never match an Observation search.
    store
        .commit(vec![create(
            Patient,
            "o7",
            &org,
            b"x",
            vec![row("code", "bp"), row("subject", "p1")],
        )])
        .await
        .unwrap();
}

pub async fn find_combines_clauses_tokens_ids_and_bounds(store: &dyn Store) {
    observations(store).await;
    let find =
        |q: IndexQuery| async move { ids(&store.find(Observation, &q).await.unwrap()).join(",") };

    assert_eq!(
        find(query(vec![clause("code", &["bp"])], 10)).await,
        "o1,o2,o6"
    );
    // OR within a clause.
    assert_eq!(
        find(query(vec![clause("code", &["bp", "temp"])], 10)).await,
        "o1,o2,o5,o6"
    );
    // AND across clauses.
    assert_eq!(
        find(query(
            vec![clause("code", &["bp"]), clause("subject", &["p1"])],
            10
        ))
        .await,
        "o1,o6"
    );
    assert_eq!(
        find(query(
            vec![
                clause("code", &["bp", "hr"]),
                clause("subject", &["p2"]),
                clause("category", &["vital-signs"])
            ],
            10
        ))
        .await,
        "o2,o4"
    );
    // A token never indexed, a param never indexed, and a clause with no tokens match nothing.
    assert_eq!(find(query(vec![clause("code", &["nope"])], 10)).await, "");
    assert_eq!(find(query(vec![clause("nope", &["bp"])], 10)).await, "");
    assert_eq!(
        find(query(
            vec![clause("code", &["bp"]), clause("subject", &[])],
            10
        ))
        .await,
        ""
    );
    // Tokens are scoped to their param.
    assert_eq!(find(query(vec![clause("subject", &["bp"])], 10)).await, "");
    // No clause: every current resource of the type.
    assert_eq!(find(query(Vec::new(), 10)).await, "o1,o2,o3,o4,o5,o6");
    // Limit.
    assert_eq!(
        find(query(vec![clause("code", &["bp", "hr"])], 2)).await,
        "o1,o2"
    );
    assert_eq!(find(query(vec![clause("code", &["bp"])], 0)).await, "");
    // Id restriction.
    let mut q = query(vec![clause("code", &["bp"])], 10);
    q.ids = Some(vec![rid("o2"), rid("o3"), rid("o6"), rid("unknown")]);
    assert_eq!(find(q.clone()).await, "o2,o6");
    q.ids = Some(Vec::new());
    assert_eq!(find(q).await, "");
    let mut q = query(Vec::new(), 10);
    q.ids = Some(vec![rid("o5"), rid("o1")]);
    assert_eq!(find(q).await, "o1,o5");
    // _lastUpdated bounds, inclusive.
    let mut q = query(vec![clause("category", &["vital-signs"])], 10);
    q.last_updated_from = Some(Timestamp(200));
    assert_eq!(find(q.clone()).await, "o2,o3,o4,o5,o6");
    q.last_updated_to = Some(Timestamp(400));
    assert_eq!(find(q.clone()).await, "o2,o3,o4");
    q.last_updated_from = None;
    assert_eq!(find(q.clone()).await, "o1,o2,o3,o4");
    q.clauses = vec![clause("code", &["hr"])];
    q.last_updated_from = Some(Timestamp(301));
    assert_eq!(find(q).await, "o4");
    // Everything at once.
    let q = IndexQuery {
        clauses: vec![
            clause("code", &["bp", "hr"]),
            clause("subject", &["p1", "p2"]),
        ],
        ids: Some(vec![rid("o1"), rid("o2"), rid("o3"), rid("o6")]),
        last_updated_from: Some(Timestamp(150)),
        last_updated_to: Some(Timestamp(600)),
        limit: 2,
        owners: None,
    };
    assert_eq!(find(q).await, "o2,o3");
}

pub async fn current_of_owner_reads_one_compartment(store: &dyn Store) {
    let ops = vec![
        create(
            ResourceType::CareTeam,
            "t1",
            &patient("pa"),
            b"t1",
            Vec::new(),
        ),
        create(
            ResourceType::Encounter,
            "e1",
            &patient("pa"),
            b"e1",
            Vec::new(),
        ),
        create(Observation, "x1", &patient("pa"), b"x1", Vec::new()),
        create(
            ResourceType::CareTeam,
            "t2",
            &patient("pb"),
            b"t2",
            Vec::new(),
        ),
        create(
            ResourceType::CareTeam,
            "t3",
            &patient("pa"),
            b"t3",
            Vec::new(),
        ),
    ];
    store.commit(ops).await.unwrap();
    let del = store
        .current(ResourceType::CareTeam, &rid("t3"))
        .await
        .unwrap()
        .unwrap();
    store
        .commit(vec![WriteOp {
            precondition: Precondition::CurrentVersion(del.version),
            version: StoredVersion {
                version: VersionId(del.version.0 + 1),
                deleted: true,
                ciphertext: Vec::new(),
                ..del
            },
            index: Vec::new(),
        }])
        .await
        .unwrap();
    let got = |owner: KeyOwner, types: Vec<ResourceType>| async move {
        let mut v: Vec<String> = store
            .current_of_owner(&owner, &types)
            .await
            .unwrap()
            .into_iter()
            .map(|s| {
                assert!(!s.deleted);
                assert_eq!(s.ciphertext, s.id.as_str().as_bytes());
                format!("{}/{}", s.rtype, s.id)
            })
            .collect();
        v.sort();
        v.join(",")
    };
    assert_eq!(
        got(
            patient("pa"),
            vec![ResourceType::CareTeam, ResourceType::Encounter]
        )
        .await,
        "CareTeam/t1,Encounter/e1"
    );
    assert_eq!(
        got(patient("pb"), vec![ResourceType::CareTeam]).await,
        "CareTeam/t2"
    );
    assert_eq!(
        got(patient("pa"), vec![Observation]).await,
        "Observation/x1"
    );
    assert_eq!(
        got(patient("nobody"), vec![ResourceType::CareTeam]).await,
        ""
    );
    assert_eq!(got(patient("pa"), Vec::new()).await, "");
}

pub async fn find_narrows_to_owners(store: &dyn Store) {
    let ops = [
        ("n1", patient("pa")),
        ("n2", patient("pb")),
        ("n3", patient("pa")),
        ("n4", KeyOwner::Organisation),
    ]
    .iter()
    .map(|(id, owner)| {
        create(
            Observation,
            id,
            owner,
            id.as_bytes(),
            vec![row("code", "bp")],
        )
    })
    .collect();
    store.commit(ops).await.unwrap();
    let find = |owners: Option<Vec<KeyOwner>>| async move {
        let mut q = query(vec![clause("code", &["bp"])], 10);
        q.owners = owners;
        ids(&store.find(Observation, &q).await.unwrap()).join(",")
    };
    assert_eq!(find(None).await, "n1,n2,n3,n4");
    assert_eq!(find(Some(vec![patient("pa")])).await, "n1,n3");
    assert_eq!(
        find(Some(vec![patient("pb"), KeyOwner::Organisation])).await,
        "n2,n4"
    );
    assert_eq!(find(Some(vec![patient("nobody")])).await, "");
    // No owner at all reaches nothing (never "everything").
    assert_eq!(find(Some(Vec::new())).await, "");
    // Without index clauses too.
    let mut q = query(Vec::new(), 10);
    q.owners = Some(vec![patient("pb")]);
    assert_eq!(ids(&store.find(Observation, &q).await.unwrap()), ["n2"]);
}

pub async fn find_handles_long_token_and_id_lists(store: &dyn Store) {
    observations(store).await;
    // Well past SQLite's default variable limit if each token were a parameter.
    let mut tokens: Vec<String> = (0..40_000).map(|i| format!("filler-{i}")).collect();
    tokens.push("hr".to_owned());
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut q = query(
        vec![clause("code", &refs), clause("subject", &refs[39_000..])],
        10,
    );
    assert!(store.find(Observation, &q).await.unwrap().is_empty());
    q.clauses = vec![clause("code", &refs), clause("category", &["vital-signs"])];
    let mut many_ids: Vec<ResourceId> = (0..40_000).map(|i| rid(&format!("x{i}"))).collect();
    many_ids.push(rid("o4"));
    q.ids = Some(many_ids.clone());
    assert_eq!(ids(&store.find(Observation, &q).await.unwrap()), ["o4"]);
    assert_eq!(
        ids(&store.existing(Observation, &many_ids).await.unwrap()),
        ["o4"]
    );
    assert_eq!(
        store
            .current_many(Observation, &many_ids)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn find_follows_index_replacement(store: &dyn Store) {
    let org = KeyOwner::Organisation;
    store
        .commit(vec![create(
            Organization,
            "a",
            &org,
            b"1",
            vec![row("name", "old"), row("type", "x")],
        )])
        .await
        .unwrap();
    store
        .commit(vec![update(
            Organization,
            "a",
            1,
            &org,
            b"2",
            vec![row("name", "new")],
        )])
        .await
        .unwrap();
    let find = |c: IndexClause| async move {
        ids(&store.find(Organization, &query(vec![c], 10)).await.unwrap()).join(",")
    };
    assert_eq!(find(clause("name", &["old"])).await, "");
    assert_eq!(find(clause("type", &["x"])).await, "");
    assert_eq!(find(clause("name", &["new"])).await, "a");
    // Duplicate index rows in one write are stored once.
    store
        .commit(vec![update(
            Organization,
            "a",
            2,
            &org,
            b"3",
            vec![row("name", "dup"), row("name", "dup")],
        )])
        .await
        .unwrap();
    assert_eq!(find(clause("name", &["dup"])).await, "a");
    assert_eq!(store.stats().await.unwrap().index_rows, 1);
}

pub async fn ids_sort_bytewise(store: &dyn Store) {
    let org = KeyOwner::Organisation;
    let names = ["b", "B", "a.1", "a-1", "a", "A", "a1", "Z9", "0", "-", "."];
    let ops = names
        .iter()
        .map(|n| create(Organization, n, &org, b"x", vec![row("t", "all")]))
        .collect();
    store.commit(ops).await.unwrap();
    let mut expected: Vec<&str> = names.to_vec();
    expected.sort_unstable(); // byte order, as both backends must sort
    let found = store
        .find(Organization, &query(vec![clause("t", &["all"])], 100))
        .await
        .unwrap();
    assert_eq!(ids(&found), expected);
    let scanned: Vec<String> = store
        .scan(Organization, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.id.to_string())
        .collect();
    assert_eq!(scanned, expected);
    // Paging after an id uses the same order.
    let after = store
        .scan(Organization, Some(&rid("a-1")), 100)
        .await
        .unwrap();
    let pos = expected.iter().position(|e| *e == "a-1").unwrap();
    assert_eq!(
        after.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(),
        expected[pos + 1..]
    );
}

pub async fn scan_pages_through_current_resources(store: &dyn Store) {
    let org = KeyOwner::Organisation;
    let ops = (0..25)
        .map(|i| {
            create(
                Patient,
                &format!("p{i:02}"),
                &org,
                format!("c{i}").as_bytes(),
                Vec::new(),
            )
        })
        .collect();
    store.commit(ops).await.unwrap();
    store
        .commit(vec![delete(Patient, "p07", 1, &org)])
        .await
        .unwrap();
    store
        .commit(vec![update(Patient, "p03", 1, &org, b"c3-v2", Vec::new())])
        .await
        .unwrap();
    store
        .commit(vec![create(
            Organization,
            "p99",
            &org,
            b"other type",
            Vec::new(),
        )])
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut after: Option<ResourceId> = None;
    let mut pages = Vec::new();
    loop {
        let page = store.scan(Patient, after.as_ref(), 10).await.unwrap();
        pages.push(page.len());
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(page);
    }
    assert_eq!(pages, [10, 10, 4, 0]);
    let seen_ids: Vec<String> = seen.iter().map(|v| v.id.to_string()).collect();
    let expected: Vec<String> = (0..25)
        .filter(|i| *i != 7)
        .map(|i| format!("p{i:02}"))
        .collect();
    assert_eq!(seen_ids, expected);
    let p03 = seen.iter().find(|v| v.id.as_str() == "p03").unwrap();
    assert_eq!(
        (p03.version, p03.ciphertext.as_slice()),
        (VersionId(2), b"c3-v2".as_slice())
    );
    assert!(seen.iter().all(|v| !v.deleted && v.rtype == Patient));
    assert!(store.scan(Patient, None, 0).await.unwrap().is_empty());
}

pub async fn existing_and_current_many(store: &dyn Store) {
    let org = KeyOwner::Organisation;
    store
        .commit(vec![
            create(Patient, "a", &org, b"a1", Vec::new()),
            create(Patient, "b", &org, b"b1", Vec::new()),
            create(Patient, "c", &org, b"c1", Vec::new()),
        ])
        .await
        .unwrap();
    store
        .commit(vec![
            update(Patient, "a", 1, &org, b"a2", Vec::new()),
            delete(Patient, "c", 1, &org),
        ])
        .await
        .unwrap();
    let asked = [rid("c"), rid("a"), rid("zzz"), rid("b"), rid("a")];
    let mut existing = store.existing(Patient, &asked).await.unwrap();
    existing.sort();
    existing.dedup();
    assert_eq!(ids(&existing), ["a", "b"]);
    assert!(
        store
            .existing(Organization, &asked)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.existing(Patient, &[]).await.unwrap().is_empty());

    let mut many = store.current_many(Patient, &asked).await.unwrap();
    many.sort_by(|x, y| x.id.cmp(&y.id));
    many.dedup_by(|x, y| x.id == y.id);
    let got: Vec<(&str, u64, &[u8])> = many
        .iter()
        .map(|v| (v.id.as_str(), v.version.0, v.ciphertext.as_slice()))
        .collect();
    assert_eq!(
        got,
        [("a", 2, b"a2".as_slice()), ("b", 1, b"b1".as_slice())]
    );
    assert!(store.current_many(Patient, &[]).await.unwrap().is_empty());
}

pub async fn keys_put_if_absent_race(store: &Arc<dyn Store>) {
    for round in 0..10 {
        let owner = patient(&format!("p{round}"));
        let mut tasks = Vec::new();
        for contender in 0..4 {
            let store = store.clone();
            let key = WrappedKey {
                owner: owner.clone(),
                kek_id: "kek-1".to_owned(),
                wrapped: format!("key-{round}-{contender}").into_bytes(),
            };
            tasks.push(tokio::spawn(async move {
                store.put_key_if_absent(&key).await.unwrap()
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            winners.push(t.await.unwrap());
        }
        let stored = store
            .get_key(&owner)
            .await
            .unwrap()
            .expect("a key is stored");
        assert!(
            winners.iter().all(|w| *w == stored),
            "every contender sees the one stored key"
        );
        assert_eq!(stored.owner, owner);
    }
    assert_eq!(store.stats().await.unwrap().keys, 10);
    assert_eq!(store.get_key(&patient("nobody")).await.unwrap(), None);
}

pub async fn keys_rotation_compare_and_swap(store: &dyn Store) {
    let key = |owner: &KeyOwner, kek: &str, w: &str| WrappedKey {
        owner: owner.clone(),
        kek_id: kek.to_owned(),
        wrapped: w.as_bytes().to_vec(),
    };
    let (org, p1, p2, p3) = (
        KeyOwner::Organisation,
        patient("p1"),
        patient("p2"),
        patient("p3"),
    );
    for k in [
        key(&org, "k1", "org@k1"),
        key(&p1, "k1", "p1@k1"),
        key(&p2, "k1", "p2@k1"),
        key(&p3, "k2", "p3@k2"),
    ] {
        assert_eq!(store.put_key_if_absent(&k).await.unwrap(), k);
    }
    // A second put for an owner keeps the first key.
    assert_eq!(
        store
            .put_key_if_absent(&key(&p1, "k2", "other"))
            .await
            .unwrap(),
        key(&p1, "k1", "p1@k1")
    );

    let owners = |keys: Vec<WrappedKey>| {
        keys.into_iter()
            .map(|k| k.owner.storage_key())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        owners(store.keys_not_wrapped_by("k2", 10).await.unwrap()),
        ["org", "patient/p1", "patient/p2"]
    );
    assert_eq!(store.keys_not_wrapped_by("k2", 2).await.unwrap().len(), 2);
    assert_eq!(
        owners(store.keys_not_wrapped_by("k1", 10).await.unwrap()),
        ["patient/p3"]
    );
    assert!(store.keys_not_wrapped_by("k2", 0).await.unwrap().is_empty());

    let (old, new) = (key(&p1, "k1", "p1@k1"), key(&p1, "k2", "p1@k2"));
    assert!(store.replace_key(&old, &new).await.unwrap());
    // The same swap again is stale: the stored key no longer matches `old`.
    assert!(
        !store
            .replace_key(&old, &key(&p1, "k2", "p1@k2-again"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .replace_key(&key(&p2, "k1", "wrong bytes"), &key(&p2, "k2", "x"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .replace_key(
                &key(&patient("none"), "k1", "x"),
                &key(&patient("none"), "k2", "y")
            )
            .await
            .unwrap()
    );
    assert_eq!(store.get_key(&p1).await.unwrap(), Some(new));
    assert_eq!(
        store.get_key(&p2).await.unwrap(),
        Some(key(&p2, "k1", "p2@k1"))
    );
    assert_eq!(
        owners(store.keys_not_wrapped_by("k2", 10).await.unwrap()),
        ["org", "patient/p2"]
    );
    // A swap may not move a key to another owner.
    assert!(
        store
            .replace_key(&key(&p2, "k1", "p2@k1"), &key(&p3, "k2", "x"))
            .await
            .is_err()
    );
}

pub async fn erase_patient_removes_only_that_owner(store: &dyn Store) {
    populate(store).await;
    let (p1, p2, org) = (patient("p1"), patient("p2"), KeyOwner::Organisation);
    let before = store.stats().await.unwrap();
    let p2_history = store.history(Patient, &rid("p2")).await.unwrap();

    let report = store.erase_patient(&p1).await.unwrap();
    // Patient/p1 v1+v2 and Observation/o1; index rows of Patient/p1 (1) and Observation/o1 (2).
    assert_eq!(
        report,
        EraseReport {
            versions_deleted: 3,
            index_rows_deleted: 3,
            key_destroyed: true
        }
    );

    assert_eq!(store.get_key(&p1).await.unwrap(), None);
    assert_eq!(store.current(Patient, &rid("p1")).await.unwrap(), None);
    assert!(store.history(Patient, &rid("p1")).await.unwrap().is_empty());
    assert_eq!(
        store
            .version(Observation, &rid("o1"), VersionId(1))
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .find(Observation, &query(vec![clause("subject", &["p1"])], 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .find(Patient, &query(vec![clause("identifier", &["mrn-1b"])], 10))
            .await
            .unwrap()
            .is_empty()
    );
    let after = store.stats().await.unwrap();
    assert_eq!(
        after,
        Stats {
            keys: before.keys - 1,
            current_resources: before.current_resources - 2,
            versions: before.versions - 3,
            index_rows: before.index_rows - 3,
        }
    );
    // Nobody else's data moved.
    assert!(store.get_key(&p2).await.unwrap().is_some());
    assert!(store.get_key(&org).await.unwrap().is_some());
    assert_eq!(
        store.history(Patient, &rid("p2")).await.unwrap(),
        p2_history
    );
    assert_eq!(
        ids(&store
            .find(Patient, &query(vec![clause("name", &["smith"])], 10))
            .await
            .unwrap()),
        ["p2"]
    );
    assert_eq!(
        store
            .current(Organization, &rid("org1"))
            .await
            .unwrap()
            .unwrap()
            .ciphertext,
        b"org-1"
    );
    assert_eq!(
        store.history(Observation, &rid("o2")).await.unwrap().len(),
        2
    );

    // Erasing again finds nothing left.
    assert_eq!(
        store.erase_patient(&p1).await.unwrap(),
        EraseReport::default()
    );
    // The erased id may be written again from scratch (the key is gone, so the app re-keys).
    store
        .commit(vec![create(Patient, "p1", &p1, b"fresh", Vec::new())])
        .await
        .unwrap();
}

pub async fn erase_refuses_the_organisation_key(store: &dyn Store) {
    populate(store).await;
    let before = dump_all(store).await;
    assert!(store.erase_patient(&KeyOwner::Organisation).await.is_err());
    assert_eq!(dump_all(store).await, before);
}

pub async fn settings_round_trip(store: &Arc<dyn Store>) {
    assert_eq!(store.get_setting("node-id").await.unwrap(), None);
    assert_eq!(
        store
            .put_setting_if_absent("node-id", b"one")
            .await
            .unwrap(),
        b"one"
    );
    assert_eq!(
        store
            .put_setting_if_absent("node-id", b"two")
            .await
            .unwrap(),
        b"one"
    );
    assert_eq!(
        store.get_setting("node-id").await.unwrap(),
        Some(b"one".to_vec())
    );
    store.put_setting("node-id", b"three").await.unwrap();
    assert_eq!(
        store.get_setting("node-id").await.unwrap(),
        Some(b"three".to_vec())
    );
    store.put_setting("empty", b"").await.unwrap();
    assert_eq!(store.get_setting("empty").await.unwrap(), Some(Vec::new()));

    // Racing first writers agree on one value.
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put_setting_if_absent("race", format!("v{i}").as_bytes())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    let stored = store.get_setting("race").await.unwrap().unwrap();
    assert!(seen.iter().all(|s| *s == stored));
}

pub async fn stats_count_everything(store: &dyn Store) {
    assert_eq!(store.stats().await.unwrap(), Stats::default());
    populate(store).await;
    // 3 keys; current: org1, p1, p2, o1 (o2 deleted); versions: 5 + p1 v2 + o2 delete;
    // index: org1 1, p1 1 (replaced), p2 2, o1 2.
    assert_eq!(
        store.stats().await.unwrap(),
        Stats {
            keys: 3,
            current_resources: 4,
            versions: 7,
            index_rows: 6
        }
    );
}

/// Dumps `from`, loads it into the empty `to`, and checks both dumps agree.
/// Works across backends: the backup format is the same.
/// Accounts with credentials, recovery codes, passkeys, counters and
/// sessions; OAuth clients; and what is never backed up (a challenge, a
/// refresh token, a revoked jti, an outbox message).
pub async fn populate_identity(store: &dyn Store) {
    let a = account(1, "Alice", Role::Physician);
    let mut b = account(2, "bob", Role::Patient);
    b.profile = Vec::new();
    store.create_account(&a).await.unwrap();
    store.create_account(&b).await.unwrap();
    store
        .set_password_hash(&a.id, b"$argon2id$a")
        .await
        .unwrap();
    store.set_totp_secret(&a.id, Some(&[0, 9])).await.unwrap();
    assert!(store.advance_totp_step(&a.id, None, 42).await.unwrap());
    store
        .set_password_hash(&b.id, b"$argon2id$b")
        .await
        .unwrap();
    store
        .set_recovery_codes(&a.id, &[vec![2], vec![0, 1]])
        .await
        .unwrap();
    let c = FailureCounter {
        failures: 3,
        next_allowed_at: Some(Timestamp(77)),
        disabled: false,
    };
    store
        .put_factor_failures(&b.id, "password", &c)
        .await
        .unwrap();
    store.put_address_failures("192.0.2.1", &c).await.unwrap();
    assert!(
        store
            .create_session(&session(1, &a.id, 1_000))
            .await
            .unwrap()
    );
    let mut used = passkey(1, &a.id, 1_100);
    used.last_used = Some(Timestamp(1_200));
    assert!(store.add_passkey(&used).await.unwrap());
    assert!(store.add_passkey(&passkey(2, &b.id, 1_100)).await.unwrap());
    assert!(store.create_client(&client("app")).await.unwrap());
    assert!(store.create_client(&client("gone")).await.unwrap());
    assert!(store.revoke_client("gone", Timestamp(1_300)).await.unwrap());
    assert!(
        store
            .put_challenge(&[1; 32], &challenge("reset", Some(&a.id), 9_000))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_refresh_token(&refresh_token(1, 1, &a.id, "app", 9_000))
            .await
            .unwrap()
    );
    store
        .revoke_access_token("jti-1", Timestamp(9_000))
        .await
        .unwrap();
    store
        .enqueue_message(&message(1, 1_000, Some(&a.id)))
        .await
        .unwrap();
    assert!(
        store
            .deactivate_account(&b.id, Timestamp(2_000))
            .await
            .unwrap()
    );
}

pub async fn dump_load_round_trip(from: &dyn Store, to: &dyn Store) {
    populate(from).await;
    populate_identity(from).await;
    populate_audit(from).await;
    let records = dump_all(from).await;
    // Dependency order: settings, keys, versions, index rows, then identity.
    let rank = |r: &BackupRecord| match r {
        BackupRecord::Setting { .. } => 0,
        BackupRecord::Key(_) => 1,
        BackupRecord::Version(_) => 2,
        BackupRecord::Index { .. } => 3,
        BackupRecord::Account(_) => 4,
        BackupRecord::Credentials { .. } => 5,
        BackupRecord::RecoveryCode { .. } => 6,
        BackupRecord::Passkey(_) => 7,
        BackupRecord::FactorFailures { .. } => 8,
        BackupRecord::Client(_) => 9,
        BackupRecord::AuditEntry { .. } => 10,
        BackupRecord::AuditTile(_) => 11,
        BackupRecord::AuditCheckpoint { .. } => 12,
        BackupRecord::AuditHead(_) => 13,
        BackupRecord::PolicyVersion(_) => 14,
        BackupRecord::Grant(_) => 15,
        BackupRecord::MonitorCursor(_) => 16,
        BackupRecord::AccessExplanation(_) => 17,
        BackupRecord::MonitorCase(_) => 18,
        BackupRecord::MonitorAlert(_) => 19,
        BackupRecord::CaseNote(_) => 20,
        BackupRecord::Suppression(_) => 21,
        BackupRecord::ConsultRoom(_) => 22,
        BackupRecord::ConsultInvite(_) => 23,
    };
    assert!(records.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])));
    assert_eq!(
        records
            .iter()
            .map(rank)
            .filter(|&r| (4..10).contains(&r))
            .count(),
        11,
        "2 accounts, 2 credentials, 2 recovery codes, 2 passkeys, 1 counter, 2 clients"
    );
    assert_eq!(
        records.iter().filter(|r| rank(r) == 2).count(),
        7,
        "history and delete markers are dumped"
    );

    assert_eq!(
        [10, 11, 12, 13].map(|k| records.iter().filter(|r| rank(r) == k).count()),
        [5, 2, 2, 1],
        "5 audit entries, 2 tiles, 2 checkpoints, the head"
    );

    to.load(records.clone()).await.unwrap();
    assert_eq!(dump_all(to).await, records);
    assert_eq!(
        to.audit_head().await.unwrap(),
        from.audit_head().await.unwrap()
    );
    assert_eq!(
        to.audit_tile(0, 1).await.unwrap(),
        from.audit_tile(0, 1).await.unwrap()
    );
    assert_eq!(
        to.find_audit(&AuditQuery {
            clauses: vec![("patient".to_owned(), vec![token("p1")])],
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap(),
        [4, 0]
    );
    // The loaded log takes appends where the source left off.
    assert_eq!(
        append(to, vec![audit_record("e5", 105, &[])])
            .await
            .first_index,
        5
    );
    assert_eq!(to.stats().await.unwrap(), from.stats().await.unwrap());
    assert_eq!(
        to.current(Patient, &rid("p1")).await.unwrap(),
        from.current(Patient, &rid("p1")).await.unwrap()
    );
    assert!(
        to.current(Observation, &rid("o2"))
            .await
            .unwrap()
            .unwrap()
            .deleted
    );
    assert_eq!(
        ids(&to
            .find(Patient, &query(vec![clause("name", &["smith"])], 10))
            .await
            .unwrap()),
        ["p2"]
    );
    assert_eq!(
        ids(&to
            .find(Patient, &query(vec![clause("identifier", &["mrn-1b"])], 10))
            .await
            .unwrap()),
        ["p1"]
    );
    // The loaded store takes writes where the source left off.
    to.commit(vec![update(
        Patient,
        "p1",
        2,
        &patient("p1"),
        b"p1-v3",
        Vec::new(),
    )])
    .await
    .unwrap();
    // Identity survives, sessions and per-address counters do not.
    let alice = to.account_by_username("alice").await.unwrap().unwrap();
    assert_eq!(
        Some(&alice),
        from.account(&account_id(1)).await.unwrap().as_ref()
    );
    assert!(!to.account(&account_id(2)).await.unwrap().unwrap().active);
    let creds = to.credentials(&alice.id).await.unwrap();
    assert_eq!(creds, from.credentials(&alice.id).await.unwrap());
    assert_eq!(creds.totp_last_step, Some(42));
    assert!(!to.advance_totp_step(&alice.id, None, 42).await.unwrap());
    assert_eq!(
        to.recovery_codes(&alice.id).await.unwrap(),
        vec![vec![0, 1], vec![2]]
    );
    assert_eq!(
        to.factor_failures(&account_id(2), "password")
            .await
            .unwrap()
            .failures,
        3
    );
    assert_eq!(
        to.address_failures("192.0.2.1").await.unwrap(),
        FailureCounter::default()
    );
    assert_eq!(to.session(&[1; 32]).await.unwrap(), None);
    // Passkeys and clients survive whole.
    for who in [&alice.id, &account_id(2)] {
        let passkeys = to.passkeys(who).await.unwrap();
        assert_eq!(passkeys.len(), 1);
        assert_eq!(passkeys, from.passkeys(who).await.unwrap());
    }
    assert_eq!(
        to.passkeys(&alice.id).await.unwrap()[0].last_used,
        Some(Timestamp(1_200))
    );
    assert_eq!(to.clients().await.unwrap(), from.clients().await.unwrap());
    assert!(!to.client("gone").await.unwrap().unwrap().active);
    // Challenges, refresh tokens, revoked jtis and the outbox do not.
    assert_eq!(
        to.challenge(&[1; 32], "reset", Timestamp(10))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        to.live_refresh_token(&[1; 32], Timestamp(10))
            .await
            .unwrap(),
        None
    );
    assert!(
        to.access_token_live(Some(&alice.id), Some("app"), "jti-1")
            .await
            .unwrap()
    );
    assert_eq!(to.messages(None, 10).await.unwrap(), Vec::new());
    // And refuses a second load.
    assert!(matches!(to.load(records).await, Err(StoreError::Backup(_))));
}

pub async fn dump_load_round_trip_same_backend(store: &dyn Store) {
    // Load into the same store after a dump is refused; the cross-store round
    // trip lives in each adapter's tests, with a second fresh store.
    populate(store).await;
    let records = dump_all(store).await;
    assert!(matches!(
        store.load(records).await,
        Err(StoreError::Backup(_))
    ));
    populate_audit(store).await;
    // Two dumps of an unchanged store are equal.
    assert_eq!(dump_all(store).await, dump_all(store).await);
}

pub async fn load_refuses_non_empty_store(store: &dyn Store) {
    let mut nothing = 0;
    store
        .dump(&mut |_| {
            nothing += 1;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(nothing, 0, "a fresh store dumps nothing");
    // Loading an empty backup into an empty store is fine.
    store.load(Vec::new()).await.unwrap();

    // A store holding only an account is not empty either.
    let restored = account(5, "restored", Role::Nurse);
    store
        .create_account(&account(4, "held", Role::Nurse))
        .await
        .unwrap();
    assert!(matches!(
        store
            .load(vec![BackupRecord::Account(restored.clone())])
            .await,
        Err(StoreError::Backup(_))
    ));
    assert_eq!(store.account(&restored.id).await.unwrap(), None);

    store.put_setting("node-id", b"n").await.unwrap();
    let one = vec![BackupRecord::Setting {
        name: "other".to_owned(),
        value: b"x".to_vec(),
    }];
    assert!(matches!(
        store.load(one.clone()).await,
        Err(StoreError::Backup(_))
    ));
    assert_eq!(store.get_setting("other").await.unwrap(), None);

    let org = KeyOwner::Organisation;
    store
        .commit(vec![create(Organization, "a", &org, b"a", Vec::new())])
        .await
        .unwrap();
    assert!(matches!(store.load(one).await, Err(StoreError::Backup(_))));
}

pub async fn load_is_all_or_nothing(store: &dyn Store) {
    let org = KeyOwner::Organisation;
    let records = vec![
        BackupRecord::Setting {
            name: "node-id".to_owned(),
            value: b"n".to_vec(),
        },
        BackupRecord::Version(version(Organization, "a", 1, 10, &org, b"a")),
        // An index row for a resource the backup does not hold.
        BackupRecord::Index {
            rtype: Organization,
            id: rid("ghost"),
            row: row("name", "x"),
        },
    ];
    assert!(store.load(records).await.is_err());
    assert_eq!(dump_all(store).await, Vec::new());
    assert_eq!(store.stats().await.unwrap(), Stats::default());
}

pub async fn concurrent_updates_have_one_winner(store: &Arc<dyn Store>) {
    let org = KeyOwner::Organisation;
    store
        .commit(vec![create(Organization, "hot", &org, b"v1", Vec::new())])
        .await
        .unwrap();
    for from in 1..=5_u64 {
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = store.clone();
                let org = org.clone();
                tokio::spawn(async move {
                    let body = format!("v{}-{i}", from + 1);
                    let op = update(
                        Organization,
                        "hot",
                        from,
                        &org,
                        body.as_bytes(),
                        vec![row("w", &body)],
                    );
                    (body, store.commit(vec![op]).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (body, result) = t.await.unwrap();
            match result {
                Ok(()) => winners.push(body),
                Err(e) => assert!(
                    matches!(
                        e,
                        StoreError::Conflict {
                            reason: ConflictReason::VersionMismatch,
                            ..
                        }
                    ),
                    "a loser gets a version conflict, got {e:?}"
                ),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "exactly one writer wins version {}",
            from + 1
        );
        let current = store
            .current(Organization, &rid("hot"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(current.version, VersionId(from + 1));
        assert_eq!(current.ciphertext, winners[0].as_bytes());
        assert_eq!(store.stats().await.unwrap().index_rows, 1);
    }
    let history: Vec<u64> = store
        .history(Organization, &rid("hot"))
        .await
        .unwrap()
        .iter()
        .map(|v| v.version.0)
        .collect();
    assert_eq!(history, [6, 5, 4, 3, 2, 1]);
}

pub async fn concurrent_creates_have_one_winner(store: &Arc<dyn Store>) {
    let org = KeyOwner::Organisation;
    for round in 0..5 {
        let id = format!("new-{round}");
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = store.clone();
                let org = org.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    // Half create-only, half PUT-to-absent: both must collide.
                    let mut op = create(
                        Organization,
                        &id,
                        &org,
                        format!("{i}").as_bytes(),
                        vec![row("n", &id)],
                    );
                    if i % 2 == 1 {
                        op.precondition = Precondition::CurrentIs(None);
                    }
                    store.commit(vec![op]).await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("a loser gets a conflict, got {e:?}"),
            }
        }
        assert_eq!(ok, 1, "exactly one creator wins {id}");
        assert_eq!(
            store.history(Organization, &rid(&id)).await.unwrap().len(),
            1
        );
    }
}

/// Two batches that write the same two resources in opposite orders: one
/// wins, the other gets a conflict (never a half-applied batch, never an
/// opaque database error, even when PostgreSQL detects a deadlock).
pub async fn crossed_batches_have_one_winner(store: &Arc<dyn Store>) {
    let org = KeyOwner::Organisation;
    store
        .commit(vec![
            create(Organization, "a", &org, b"a1", Vec::new()),
            create(Organization, "b", &org, b"b1", Vec::new()),
        ])
        .await
        .unwrap();
    for from in 1..=4_u64 {
        let batch = |first: &str, second: &str| {
            vec![
                update(Organization, first, from, &org, b"x", Vec::new()),
                update(Organization, second, from, &org, b"x", Vec::new()),
            ]
        };
        let (s1, s2) = (store.clone(), store.clone());
        let (b1, b2) = (batch("a", "b"), batch("b", "a"));
        let t1 = tokio::spawn(async move { s1.commit(b1).await });
        let t2 = tokio::spawn(async move { s2.commit(b2).await });
        let results = [t1.await.unwrap(), t2.await.unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "exactly one crossed batch wins: {results:?}");
        for r in results {
            if let Err(e) = r {
                assert!(
                    matches!(e, StoreError::Conflict { .. }),
                    "loser gets a conflict, got {e:?}"
                );
            }
        }
        for id in ["a", "b"] {
            let current = store
                .current(Organization, &rid(id))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                current.version,
                VersionId(from + 1),
                "{id} moved with its batch"
            );
        }
    }
}

pub async fn keys_put_many_if_absent(store: &Arc<dyn Store>) {
    let key = |p: &str, w: &str| WrappedKey {
        owner: patient(p),
        kek_id: "k1".to_owned(),
        wrapped: w.as_bytes().to_vec(),
    };
    assert!(store.put_keys_if_absent(&[]).await.unwrap().is_empty());
    store.put_key_if_absent(&key("b", "b-first")).await.unwrap();
    // Answers come back in the caller's order; existing keys win.
    let got = store
        .put_keys_if_absent(&[key("c", "c1"), key("b", "b2"), key("a", "a1")])
        .await
        .unwrap();
    assert_eq!(got, [key("c", "c1"), key("b", "b-first"), key("a", "a1")]);

    // Racing batches over overlapping owners, in opposite orders, agree.
    let batch: Vec<WrappedKey> = (0..20)
        .map(|i| key(&format!("r{i:02}"), &format!("x{i}")))
        .collect();
    let reversed: Vec<WrappedKey> = batch
        .iter()
        .rev()
        .map(|k| WrappedKey {
            wrapped: b"other".to_vec(),
            ..k.clone()
        })
        .collect();
    let (s1, s2) = (store.clone(), store.clone());
    let t1 = tokio::spawn(async move { s1.put_keys_if_absent(&batch).await.unwrap() });
    let t2 = tokio::spawn(async move { s2.put_keys_if_absent(&reversed).await.unwrap() });
    let (mut r1, r2) = (t1.await.unwrap(), t2.await.unwrap());
    r1.reverse();
    assert_eq!(r1, r2, "both batches see the same stored keys");
    assert_eq!(store.stats().await.unwrap().keys, 23);
}

/// New data keys and the data they seal commit together or not at all: a key
/// whose owner already has one fails the whole commit, and a failing op leaves
/// no key behind.
pub async fn keys_commit_with_their_data(store: &dyn Store) {
    let p = patient("kc");
    let key = |bytes: &[u8]| WrappedKey {
        owner: p.clone(),
        kek_id: "kek-a".into(),
        wrapped: bytes.to_vec(),
    };
    // A conflicting op at the end: neither the key nor the data is written.
    store
        .commit(vec![create(Observation, "existing", &p, b"x1", Vec::new())])
        .await
        .unwrap();
    let baseline = dump_all(store).await;
    let err = store
        .commit_with_keys(
            vec![key(b"k1")],
            vec![
                create(Patient, "kc", &p, b"p1", vec![row("name", "kc")]),
                create(Observation, "existing", &p, b"x2", Vec::new()),
            ],
        )
        .await;
    assert!(matches!(err, Err(StoreError::Conflict { .. })), "{err:?}");
    assert_eq!(dump_all(store).await, baseline);
    assert_eq!(store.get_key(&p).await.unwrap(), None);
    // Key and data together.
    store
        .commit_with_keys(
            vec![key(b"k1")],
            vec![create(Patient, "kc", &p, b"p1", vec![row("name", "kc")])],
        )
        .await
        .unwrap();
    assert_eq!(store.get_key(&p).await.unwrap(), Some(key(b"k1")));
    assert!(store.current(Patient, &rid("kc")).await.unwrap().is_some());
    // A second first key for the same owner fails everything.
    let baseline = dump_all(store).await;
    let err = store
        .commit_with_keys(
            vec![key(b"k2")],
            vec![create(Observation, "o2", &p, b"o2", Vec::new())],
        )
        .await;
    assert!(matches!(err, Err(StoreError::KeyExists)), "{err:?}");
    assert_eq!(dump_all(store).await, baseline);
    assert_eq!(store.get_key(&p).await.unwrap(), Some(key(b"k1")));
}

// ---- identity: accounts, credentials, throttling, sessions ----

pub fn account_id(n: u8) -> AccountId {
    AccountId::from_bytes([n; 16])
}

pub fn account(n: u8, username: &str, role: Role) -> Account {
    Account {
        id: account_id(n),
        username: username.to_owned(),
        role,
        practitioner: (role != Role::Patient).then(|| rid(&format!("pr{n}"))),
        patient: (role == Role::Patient).then(|| rid(&format!("pa{n}"))),
        active: true,
        created: Timestamp(1_000 + i64::from(n)),
        deactivated: None,
        profile: vec![0, 0xff, n],
    }
}

pub fn session(n: u8, account: &AccountId, at: i64) -> Session {
    Session {
        id_hash: [n; 32],
        account: account.clone(),
        created: Timestamp(at),
        last_seen: Timestamp(at),
        absolute_expiry: Timestamp(at + 12 * 3_600_000_000),
        idle_timeout_secs: 900,
        csrf_hash: Some(vec![n, 1, 2]),
        revoked: false,
    }
}

pub async fn accounts_have_unique_usernames_ignoring_case(store: &dyn Store) {
    let alice = account(1, "Alice.Smith", Role::Physician);
    store.create_account(&alice).await.unwrap();
    assert_eq!(store.account(&alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(
        store.account_by_username("alice.smith").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.account_by_username("ALICE.SMITH").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.account_by_username("bob").await.unwrap(), None);
    assert_eq!(store.account(&account_id(9)).await.unwrap(), None);

    // Same name in another case: a typed conflict, nothing stored.
    let clash = account(2, "ALICE.smith", Role::Nurse);
    assert!(matches!(
        store.create_account(&clash).await,
        Err(StoreError::UsernameTaken)
    ));
    assert_eq!(store.account(&clash.id).await.unwrap(), None);
    // Same id: a different conflict.
    let same_id = account(1, "someone-else", Role::Nurse);
    assert!(matches!(
        store.create_account(&same_id).await,
        Err(StoreError::AccountExists)
    ));

    // Paging by id, every role round-trips.
    for (i, role) in Role::ALL.into_iter().enumerate() {
        let n = u8::try_from(i).unwrap() + 10;
        store
            .create_account(&account(n, &format!("user{n}"), role))
            .await
            .unwrap();
    }
    let first = store.accounts(None, 4).await.unwrap();
    assert_eq!(first.len(), 4);
    assert_eq!(first[0], alice);
    let rest = store.accounts(Some(&first[3].id), 100).await.unwrap();
    assert_eq!(rest.len(), 5);
    let mut ids: Vec<_> = first.iter().chain(&rest).map(|a| a.id.clone()).collect();
    let sorted = {
        let mut s = ids.clone();
        s.sort();
        s
    };
    assert_eq!(ids, sorted);
    ids.dedup();
    assert_eq!(ids.len(), 9);
    let roles: Vec<Role> = first.iter().chain(&rest).skip(1).map(|a| a.role).collect();
    assert_eq!(roles, Role::ALL.to_vec());
}

pub async fn deactivation_revokes_every_session(store: &dyn Store) {
    let a = account(1, "a", Role::Nurse);
    let b = account(2, "b", Role::Nurse);
    store.create_account(&a).await.unwrap();
    store.create_account(&b).await.unwrap();
    for (n, who) in [(1, &a), (2, &a), (3, &b)] {
        assert!(
            store
                .create_session(&session(n, &who.id, 5_000))
                .await
                .unwrap()
        );
    }
    assert!(
        store
            .deactivate_account(&a.id, Timestamp(6_000))
            .await
            .unwrap()
    );
    // A second deactivation changes nothing.
    assert!(
        !store
            .deactivate_account(&a.id, Timestamp(7_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .deactivate_account(&account_id(9), Timestamp(7_000))
            .await
            .unwrap()
    );

    let stored = store.account(&a.id).await.unwrap().unwrap();
    assert!(!stored.active);
    assert_eq!(stored.deactivated, Some(Timestamp(6_000)));
    for n in [1, 2] {
        let s = store.session(&[n; 32]).await.unwrap().unwrap();
        assert!(
            s.revoked,
            "session {n} of the deactivated account is revoked"
        );
        assert!(
            !store
                .touch_session(&[n; 32], Timestamp(6_500))
                .await
                .unwrap()
        );
    }
    assert!(!store.session(&[3; 32]).await.unwrap().unwrap().revoked);
    // No new session for an inactive or unknown account.
    assert!(
        !store
            .create_session(&session(4, &a.id, 7_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_session(&session(5, &account_id(9), 7_000))
            .await
            .unwrap()
    );
    assert_eq!(store.session(&[4; 32]).await.unwrap(), None);
}

pub async fn totp_step_is_compare_and_set(store: &Arc<dyn Store>) {
    let a = account(1, "a", Role::Physician);
    store.create_account(&a).await.unwrap();
    // No secret yet: nothing to advance.
    assert!(!store.advance_totp_step(&a.id, None, 10).await.unwrap());
    assert_eq!(
        store.credentials(&a.id).await.unwrap(),
        Credentials::default()
    );

    store
        .set_password_hash(&a.id, b"$argon2id$v=19$x")
        .await
        .unwrap();
    store
        .set_totp_secret(&a.id, Some(&[0, 1, 0xff]))
        .await
        .unwrap();
    let creds = store.credentials(&a.id).await.unwrap();
    assert_eq!(
        creds.password_hash.as_deref(),
        Some(&b"$argon2id$v=19$x"[..])
    );
    assert_eq!(creds.totp_secret.as_deref(), Some(&[0, 1, 0xff][..]));
    assert_eq!(creds.totp_last_step, None);

    assert!(store.advance_totp_step(&a.id, None, 100).await.unwrap());
    // The same code again (stale expectation), or an older step: refused.
    assert!(!store.advance_totp_step(&a.id, None, 100).await.unwrap());
    assert!(
        !store
            .advance_totp_step(&a.id, Some(100), 100)
            .await
            .unwrap()
    );
    assert!(!store.advance_totp_step(&a.id, Some(100), 99).await.unwrap());
    assert!(!store.advance_totp_step(&a.id, Some(99), 101).await.unwrap());
    assert_eq!(
        store.credentials(&a.id).await.unwrap().totp_last_step,
        Some(100)
    );

    // Concurrent sign-ins with the same code: exactly one winner.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (s, id) = (Arc::clone(store), a.id.clone());
        tasks.push(tokio::spawn(async move {
            s.advance_totp_step(&id, Some(100), 101).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(
        store.credentials(&a.id).await.unwrap().totp_last_step,
        Some(101)
    );

    // A new secret resets the step; the password hash stays.
    store.set_totp_secret(&a.id, Some(&[7])).await.unwrap();
    let creds = store.credentials(&a.id).await.unwrap();
    assert_eq!(creds.totp_last_step, None);
    assert_eq!(
        creds.password_hash.as_deref(),
        Some(&b"$argon2id$v=19$x"[..])
    );
    store.set_totp_secret(&a.id, None).await.unwrap();
    assert_eq!(store.credentials(&a.id).await.unwrap().totp_secret, None);
}

pub async fn recovery_codes_are_consumed_once(store: &Arc<dyn Store>) {
    let a = account(1, "a", Role::Nurse);
    store.create_account(&a).await.unwrap();
    let codes = vec![vec![3_u8, 0], vec![1, 0xff], vec![2]];
    store.set_recovery_codes(&a.id, &codes).await.unwrap();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(store.recovery_codes(&a.id).await.unwrap(), sorted);

    assert!(store.consume_recovery_code(&a.id, &[2]).await.unwrap());
    assert!(!store.consume_recovery_code(&a.id, &[2]).await.unwrap());
    assert!(
        !store
            .consume_recovery_code(&account_id(9), &[1, 0xff])
            .await
            .unwrap()
    );

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (s, id) = (Arc::clone(store), a.id.clone());
        tasks.push(tokio::spawn(async move {
            s.consume_recovery_code(&id, &[1, 0xff]).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(store.recovery_codes(&a.id).await.unwrap(), vec![vec![3, 0]]);

    // A new set replaces the old one.
    store.set_recovery_codes(&a.id, &[vec![9]]).await.unwrap();
    assert_eq!(store.recovery_codes(&a.id).await.unwrap(), vec![vec![9]]);
}

pub async fn failure_counters_round_trip(store: &dyn Store) {
    let a = account(1, "a", Role::Billing);
    store.create_account(&a).await.unwrap();
    assert_eq!(
        store.factor_failures(&a.id, "password").await.unwrap(),
        FailureCounter::default()
    );
    let c = FailureCounter {
        failures: 100,
        next_allowed_at: Some(Timestamp(9_000)),
        disabled: true,
    };
    store.put_factor_failures(&a.id, "totp", &c).await.unwrap();
    assert_eq!(store.factor_failures(&a.id, "totp").await.unwrap(), c);
    assert_eq!(
        store.factor_failures(&a.id, "password").await.unwrap(),
        FailureCounter::default()
    );
    store
        .put_factor_failures(&a.id, "totp", &FailureCounter::default())
        .await
        .unwrap();
    assert_eq!(
        store.factor_failures(&a.id, "totp").await.unwrap(),
        FailureCounter::default()
    );

    let addr = FailureCounter {
        failures: u32::MAX,
        next_allowed_at: None,
        disabled: false,
    };
    assert_eq!(
        store.address_failures("2001:db8::1").await.unwrap(),
        FailureCounter::default()
    );
    store
        .put_address_failures("2001:db8::1", &addr)
        .await
        .unwrap();
    assert_eq!(store.address_failures("2001:db8::1").await.unwrap(), addr);
    assert_eq!(
        store.address_failures("192.0.2.1").await.unwrap(),
        FailureCounter::default()
    );
}

pub async fn sessions_create_touch_revoke_expire(store: &dyn Store) {
    let a = account(1, "a", Role::FrontDesk);
    store.create_account(&a).await.unwrap();
    let s1 = session(1, &a.id, 1_000_000);
    assert!(store.create_session(&s1).await.unwrap());
    assert_eq!(store.session(&[1; 32]).await.unwrap(), Some(s1.clone()));
    assert_eq!(store.session(&[9; 32]).await.unwrap(), None);
    // The same id twice is an error, not a silent overwrite.
    assert!(store.create_session(&s1).await.is_err());

    assert!(
        store
            .touch_session(&[1; 32], Timestamp(2_000_000))
            .await
            .unwrap()
    );
    let touched = store.session(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(touched.last_seen, Timestamp(2_000_000));
    assert!(touched.is_live(Timestamp(2_000_000 + 899_000_000)));
    assert!(!touched.is_live(Timestamp(2_000_000 + 900_000_000)));
    assert!(
        !store
            .touch_session(&[9; 32], Timestamp(2_000_000))
            .await
            .unwrap()
    );

    let mut s2 = session(2, &a.id, 1_000_000);
    s2.csrf_hash = None;
    assert!(store.create_session(&s2).await.unwrap());
    assert_eq!(store.session(&[2; 32]).await.unwrap(), Some(s2));
    assert!(store.revoke_session(&[2; 32]).await.unwrap());
    assert!(!store.revoke_session(&[2; 32]).await.unwrap());
    assert!(store.session(&[2; 32]).await.unwrap().unwrap().revoked);

    // Idle-expired (s3), absolute-expired (s4), live (s1 until its idle end).
    let s3 = session(3, &a.id, 1_000_000);
    let mut s4 = session(4, &a.id, 3_000_000);
    s4.absolute_expiry = Timestamp(3_500_000);
    s4.idle_timeout_secs = 3_600;
    store.create_session(&s3).await.unwrap();
    store.create_session(&s4).await.unwrap();
    let now = Timestamp(1_000_000 + 900_000_000);
    // s2 revoked, s3 idle since 1s for 900s, s4 past its absolute expiry.
    assert_eq!(store.delete_expired_sessions(now).await.unwrap(), 3);
    assert!(store.session(&[1; 32]).await.unwrap().is_some());
    for n in [2, 3, 4] {
        assert_eq!(store.session(&[n; 32]).await.unwrap(), None);
    }

    let s5 = session(5, &a.id, 5_000_000);
    store.create_session(&s5).await.unwrap();
    assert_eq!(store.revoke_sessions_of(&a.id).await.unwrap(), 2);
    assert_eq!(store.revoke_sessions_of(&a.id).await.unwrap(), 0);
    assert!(store.session(&[5; 32]).await.unwrap().unwrap().revoked);
}

pub async fn concurrent_signups_have_one_winner(store: &Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for n in 1..=8_u8 {
        let s = Arc::clone(store);
        // Same name in different cases, different ids.
        let name = if n % 2 == 0 { "Carol" } else { "cAROL" };
        let a = account(n, name, Role::Nurse);
        tasks.push(tokio::spawn(async move { s.create_account(&a).await }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => wins += 1,
            Err(StoreError::UsernameTaken) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.accounts(None, 100).await.unwrap().len(), 1);
}

pub async fn no_session_outlives_a_racing_deactivation(store: &Arc<dyn Store>) {
    let a = account(1, "racer", Role::Nurse);
    store.create_account(&a).await.unwrap();
    let mut tasks = Vec::new();
    for n in 1..=16_u8 {
        let (s, id) = (Arc::clone(store), a.id.clone());
        tasks.push(tokio::spawn(async move {
            s.create_session(&session(n, &id, 1_000)).await.unwrap();
        }));
    }
    let (s, id) = (Arc::clone(store), a.id.clone());
    let deactivate =
        tokio::spawn(async move { s.deactivate_account(&id, Timestamp(1_500)).await.unwrap() });
    for t in tasks {
        t.await.unwrap();
    }
    assert!(deactivate.await.unwrap());
    for n in 1..=16_u8 {
        if let Some(s) = store.session(&[n; 32]).await.unwrap() {
            assert!(s.revoked, "session {n} survived the deactivation");
        }
    }
}

// ---- identity: second factors, challenges, OAuth clients, tokens, outbox ----

pub fn passkey(n: u8, account: &AccountId, at: i64) -> StoredPasskey {
    StoredPasskey {
        credential_id: vec![n, 0, 0xff],
        account: account.clone(),
        name: format!("key {n}"),
        created: Timestamp(at),
        last_used: None,
        data: vec![n, 1],
    }
}

pub fn challenge(purpose: &str, account: Option<&AccountId>, expires: i64) -> Challenge {
    Challenge {
        purpose: purpose.to_owned(),
        account: account.cloned(),
        payload: vec![0xff, 7],
        expires: Timestamp(expires),
    }
}

pub fn client(id: &str) -> OAuthClient {
    OAuthClient {
        client_id: id.to_owned(),
        name: format!("App {id}"),
        active: true,
        created: Timestamp(100),
        revoked: None,
        data: br#"{"redirect_uris":[]}"#.to_vec(),
    }
}

/// 32 lowercase hex digits.
pub fn family(n: u8) -> String {
    format!("{n:032x}")
}

pub fn refresh_token(
    n: u8,
    family_no: u8,
    account: &AccountId,
    client_id: &str,
    expires: i64,
) -> RefreshToken {
    RefreshToken {
        hash: [n; 32],
        family: family(family_no),
        account: account.clone(),
        client_id: client_id.to_owned(),
        payload: vec![n, 0xfe],
        created: Timestamp(10),
        expires: Timestamp(expires),
    }
}

pub fn message(n: u8, created: i64, account: Option<&AccountId>) -> OutboxMessage {
    OutboxMessage {
        id: format!("{n:032x}"),
        created: Timestamp(created),
        account: account.cloned(),
        kind: "password-reset".to_owned(),
        payload: vec![n, 0],
        sent_at: None,
        attempts: 0,
        last_error: None,
    }
}

pub async fn reset_second_factors_removes_everything(store: &dyn Store) {
    let a = account(1, "a", Role::Physician);
    let b = account(2, "b", Role::Nurse);
    for x in [&a, &b] {
        store.create_account(x).await.unwrap();
        store.set_password_hash(&x.id, b"$argon2id$").await.unwrap();
        store.set_totp_secret(&x.id, Some(&[1, 2])).await.unwrap();
        assert!(store.advance_totp_step(&x.id, None, 5).await.unwrap());
        store.set_recovery_codes(&x.id, &[vec![1]]).await.unwrap();
        store
            .put_factor_failures(
                &x.id,
                "totp",
                &FailureCounter {
                    failures: 2,
                    next_allowed_at: None,
                    disabled: true,
                },
            )
            .await
            .unwrap();
    }
    assert!(store.create_client(&client("app")).await.unwrap());
    assert!(store.add_passkey(&passkey(1, &a.id, 10)).await.unwrap());
    assert!(store.add_passkey(&passkey(2, &a.id, 11)).await.unwrap());
    assert!(store.add_passkey(&passkey(3, &b.id, 12)).await.unwrap());
    for (n, who) in [(1, &a), (2, &a), (3, &b)] {
        assert!(
            store
                .create_session(&session(n, &who.id, 5_000))
                .await
                .unwrap()
        );
        assert!(
            store
                .put_refresh_token(&refresh_token(n, n, &who.id, "app", 1_000))
                .await
                .unwrap()
        );
    }

    store.reset_second_factors(&a.id).await.unwrap();

    let creds = store.credentials(&a.id).await.unwrap();
    assert_eq!(creds.password_hash.as_deref(), Some(&b"$argon2id$"[..]));
    assert_eq!((creds.totp_secret, creds.totp_last_step), (None, None));
    assert_eq!(store.passkeys(&a.id).await.unwrap(), Vec::new());
    assert_eq!(
        store.recovery_codes(&a.id).await.unwrap(),
        Vec::<Vec<u8>>::new()
    );
    assert_eq!(
        store.factor_failures(&a.id, "totp").await.unwrap(),
        FailureCounter::default()
    );
    for n in [1, 2] {
        assert!(store.session(&[n; 32]).await.unwrap().unwrap().revoked);
        assert_eq!(
            store
                .live_refresh_token(&[n; 32], Timestamp(20))
                .await
                .unwrap(),
            None
        );
    }
    assert!(store.account(&a.id).await.unwrap().unwrap().active);

    // The other account keeps everything.
    let creds = store.credentials(&b.id).await.unwrap();
    assert_eq!(creds.totp_last_step, Some(5));
    assert_eq!(store.passkeys(&b.id).await.unwrap().len(), 1);
    assert_eq!(store.recovery_codes(&b.id).await.unwrap().len(), 1);
    assert!(store.factor_failures(&b.id, "totp").await.unwrap().disabled);
    assert!(!store.session(&[3; 32]).await.unwrap().unwrap().revoked);
    assert!(
        store
            .live_refresh_token(&[3; 32], Timestamp(20))
            .await
            .unwrap()
            .is_some()
    );

    // Resetting an account with nothing left (or none at all) is fine.
    store.reset_second_factors(&a.id).await.unwrap();
    store.reset_second_factors(&account_id(9)).await.unwrap();
}

pub async fn passkeys_add_list_update_delete(store: &dyn Store) {
    let a = account(1, "a", Role::Physician);
    let b = account(2, "b", Role::Nurse);
    store.create_account(&a).await.unwrap();
    store.create_account(&b).await.unwrap();
    let (p1, p2) = (passkey(1, &a.id, 20), passkey(2, &a.id, 10));
    assert!(store.add_passkey(&p1).await.unwrap());
    assert!(store.add_passkey(&p2).await.unwrap());
    // Oldest first.
    assert_eq!(
        store.passkeys(&a.id).await.unwrap(),
        vec![p2.clone(), p1.clone()]
    );

    // A credential id is registered once, whichever account tries again.
    let mut dup = passkey(1, &b.id, 30);
    dup.data = vec![9];
    assert!(!store.add_passkey(&dup).await.unwrap());
    dup.account = a.id.clone();
    assert!(!store.add_passkey(&dup).await.unwrap());
    assert_eq!(store.passkeys(&b.id).await.unwrap(), Vec::new());
    assert_eq!(store.passkeys(&a.id).await.unwrap()[1], p1);

    assert!(
        store
            .update_passkey(&p1.credential_id, &[7, 7], Timestamp(40))
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_passkey(&[0xee], &[7], Timestamp(40))
            .await
            .unwrap()
    );
    let updated = StoredPasskey {
        data: vec![7, 7],
        last_used: Some(Timestamp(40)),
        ..p1.clone()
    };
    assert_eq!(
        store.passkeys(&a.id).await.unwrap(),
        vec![p2.clone(), updated]
    );

    // Only the owner deletes a passkey.
    assert!(
        !store
            .delete_passkey(&b.id, &p1.credential_id)
            .await
            .unwrap()
    );
    assert_eq!(store.passkeys(&a.id).await.unwrap().len(), 2);
    assert!(
        store
            .delete_passkey(&a.id, &p1.credential_id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_passkey(&a.id, &p1.credential_id)
            .await
            .unwrap()
    );
    assert_eq!(store.passkeys(&a.id).await.unwrap(), vec![p2]);
    // The freed credential id can be registered again.
    assert!(store.add_passkey(&passkey(1, &b.id, 50)).await.unwrap());
}

pub async fn challenges_are_taken_once(store: &Arc<dyn Store>) {
    let a = account(1, "a", Role::Physician);
    let b = account(2, "b", Role::Nurse);
    store.create_account(&a).await.unwrap();
    store.create_account(&b).await.unwrap();
    let key = [1_u8; 32];
    let c = challenge("signin", Some(&a.id), 1_000);
    assert!(store.put_challenge(&key, &c).await.unwrap());
    // A replay of the same key is refused and changes nothing.
    let mut other = challenge("signin", Some(&b.id), 5_000);
    other.payload = vec![1];
    assert!(!store.put_challenge(&key, &other).await.unwrap());
    assert_eq!(
        store
            .challenge(&key, "signin", Timestamp(999))
            .await
            .unwrap(),
        Some(c.clone())
    );
    // Peeking does not consume.
    assert!(
        store
            .challenge(&key, "signin", Timestamp(10))
            .await
            .unwrap()
            .is_some()
    );
    // A secret for one purpose never passes for another.
    assert_eq!(
        store.challenge(&key, "reset", Timestamp(10)).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .take_challenge(&key, "reset", Timestamp(10))
            .await
            .unwrap(),
        None
    );
    // Expired at its expiry time.
    assert_eq!(
        store
            .challenge(&key, "signin", Timestamp(1_000))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .take_challenge(&key, "signin", Timestamp(1_000))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .take_challenge(&[9; 32], "signin", Timestamp(10))
            .await
            .unwrap(),
        None
    );

    // Of concurrent takers exactly one gets it.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            s.take_challenge(&key, "signin", Timestamp(10))
                .await
                .unwrap()
        }));
    }
    let mut taken = Vec::new();
    for t in tasks {
        taken.extend(t.await.unwrap());
    }
    assert_eq!(taken, vec![c]);
    assert_eq!(
        store
            .challenge(&key, "signin", Timestamp(10))
            .await
            .unwrap(),
        None
    );
    // Once taken, the key may be used again.
    assert!(store.put_challenge(&key, &other).await.unwrap());

    // An account's challenges of one purpose go together.
    let jti = challenge("jti", None, 3_000);
    assert!(store.put_challenge(&[2; 32], &jti).await.unwrap());
    for (n, who, purpose, expires) in [
        (3, &a, "reset", 2_000),
        (4, &a, "reset", 4_000),
        (5, &a, "enrolment", 4_000),
        (6, &b, "reset", 4_000),
    ] {
        assert!(
            store
                .put_challenge(&[n; 32], &challenge(purpose, Some(&who.id), expires))
                .await
                .unwrap()
        );
    }
    assert_eq!(store.delete_challenges_of(&a.id, "reset").await.unwrap(), 2);
    assert_eq!(store.delete_challenges_of(&a.id, "reset").await.unwrap(), 0);
    for (n, purpose, present) in [
        (3, "reset", false),
        (4, "reset", false),
        (5, "enrolment", true),
        (6, "reset", true),
        (2, "jti", true),
    ] {
        assert_eq!(
            store
                .challenge(&[n; 32], purpose, Timestamp(10))
                .await
                .unwrap()
                .is_some(),
            present,
            "challenge {n}"
        );
    }
    assert_eq!(
        store
            .challenge(&[2; 32], "jti", Timestamp(10))
            .await
            .unwrap()
            .unwrap()
            .account,
        None
    );

    // Expired ones are cleaned up: [2] at 3 000, [5], [6] and [1] (b's) later.
    assert_eq!(
        store
            .delete_expired_challenges(Timestamp(3_000))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .delete_expired_challenges(Timestamp(3_000))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .delete_expired_challenges(Timestamp(i64::MAX))
            .await
            .unwrap(),
        3
    );
}

pub async fn clients_create_list_revoke(store: &dyn Store) {
    let a = account(1, "a", Role::Physician);
    store.create_account(&a).await.unwrap();
    let (x, y) = (client("b.app"), client("a-app"));
    assert!(store.create_client(&x).await.unwrap());
    assert!(store.create_client(&y).await.unwrap());
    let mut dup = client("a-app");
    dup.name = "Impostor".to_owned();
    assert!(!store.create_client(&dup).await.unwrap());
    assert_eq!(store.client("a-app").await.unwrap(), Some(y.clone()));
    assert_eq!(store.client("c").await.unwrap(), None);
    assert_eq!(store.clients().await.unwrap(), vec![y.clone(), x.clone()]);

    for (n, c) in [(1, "a-app"), (2, "b.app")] {
        assert!(
            store
                .put_refresh_token(&refresh_token(n, n, &a.id, c, 1_000))
                .await
                .unwrap()
        );
    }
    assert!(
        store
            .access_token_live(Some(&a.id), Some("a-app"), "j")
            .await
            .unwrap()
    );

    assert!(store.revoke_client("a-app", Timestamp(50)).await.unwrap());
    assert!(!store.revoke_client("a-app", Timestamp(60)).await.unwrap());
    assert!(!store.revoke_client("c", Timestamp(60)).await.unwrap());
    let revoked = store.client("a-app").await.unwrap().unwrap();
    assert_eq!(
        revoked,
        OAuthClient {
            active: false,
            revoked: Some(Timestamp(50)),
            ..y
        }
    );

    // Its refresh tokens and access tokens are dead, the other client's live.
    assert_eq!(
        store
            .live_refresh_token(&[1; 32], Timestamp(20))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .rotate_refresh_token(
                &[1; 32],
                &refresh_token(3, 1, &a.id, "a-app", 1_000),
                Timestamp(20)
            )
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    assert!(
        !store
            .put_refresh_token(&refresh_token(4, 4, &a.id, "a-app", 1_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .access_token_live(Some(&a.id), Some("a-app"), "j")
            .await
            .unwrap()
    );
    assert!(
        !store
            .access_token_live(None, Some("a-app"), "j")
            .await
            .unwrap()
    );
    assert!(
        store
            .live_refresh_token(&[2; 32], Timestamp(20))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .access_token_live(Some(&a.id), Some("b.app"), "j")
            .await
            .unwrap()
    );
}

pub async fn refresh_tokens_rotate_and_catch_reuse(store: &dyn Store) {
    let a = account(1, "a", Role::Physician);
    let b = account(2, "b", Role::Patient);
    store.create_account(&a).await.unwrap();
    store.create_account(&b).await.unwrap();
    assert!(store.create_client(&client("app")).await.unwrap());
    assert!(store.create_client(&client("other")).await.unwrap());

    let t1 = refresh_token(1, 1, &a.id, "app", 1_000);
    assert!(store.put_refresh_token(&t1).await.unwrap());
    // Unknown account or client: nothing stored.
    assert!(
        !store
            .put_refresh_token(&refresh_token(20, 20, &account_id(9), "app", 1_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_refresh_token(&refresh_token(21, 21, &a.id, "nope", 1_000))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .live_refresh_token(&[20; 32], Timestamp(10))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .live_refresh_token(&t1.hash, Timestamp(10))
            .await
            .unwrap(),
        Some(t1.clone())
    );

    // Rotation: the old token is used, the new one lives in the same family
    // (whatever family the caller wrote into it).
    let t2 = refresh_token(2, 99, &a.id, "app", 2_000);
    assert_eq!(
        store
            .rotate_refresh_token(&t1.hash, &t2, Timestamp(10))
            .await
            .unwrap(),
        RefreshOutcome::Rotated(t1.clone())
    );
    assert_eq!(
        store
            .live_refresh_token(&t1.hash, Timestamp(10))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .live_refresh_token(&t2.hash, Timestamp(10))
            .await
            .unwrap(),
        Some(RefreshToken {
            family: family(1),
            ..t2.clone()
        })
    );

    // Presenting the old token again revokes the family: the new one is dead too.
    let t3 = refresh_token(3, 1, &a.id, "app", 2_000);
    assert_eq!(
        store
            .rotate_refresh_token(&t1.hash, &t3, Timestamp(20))
            .await
            .unwrap(),
        RefreshOutcome::Reused
    );
    assert_eq!(
        store
            .live_refresh_token(&t2.hash, Timestamp(20))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .live_refresh_token(&t3.hash, Timestamp(20))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .rotate_refresh_token(&t2.hash, &t3, Timestamp(20))
            .await
            .unwrap(),
        RefreshOutcome::Reused
    );

    // Unknown and expired tokens are invalid; an expired token is not used up.
    assert_eq!(
        store
            .rotate_refresh_token(&[30; 32], &t3, Timestamp(20))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    let t5 = refresh_token(5, 5, &a.id, "app", 100);
    assert!(store.put_refresh_token(&t5).await.unwrap());
    let t6 = refresh_token(6, 5, &a.id, "app", 2_000);
    assert_eq!(
        store
            .rotate_refresh_token(&t5.hash, &t6, Timestamp(100))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        store
            .live_refresh_token(&t5.hash, Timestamp(100))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .live_refresh_token(&t5.hash, Timestamp(99))
            .await
            .unwrap(),
        Some(t5.clone())
    );
    // Presented for another client: invalid, and not used up either.
    let t7 = refresh_token(7, 5, &a.id, "other", 2_000);
    assert_eq!(
        store
            .rotate_refresh_token(&t5.hash, &t7, Timestamp(50))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    assert!(matches!(
        store
            .rotate_refresh_token(&t5.hash, &t6, Timestamp(50))
            .await
            .unwrap(),
        RefreshOutcome::Rotated(_)
    ));

    // Explicit revocation takes the whole family.
    assert!(store.revoke_refresh_token(&t5.hash).await.unwrap());
    assert!(!store.revoke_refresh_token(&[30; 32]).await.unwrap());
    assert_eq!(
        store
            .live_refresh_token(&t6.hash, Timestamp(50))
            .await
            .unwrap(),
        None
    );

    // A deactivated account's tokens are revoked and no longer rotate.
    let t8 = refresh_token(8, 8, &b.id, "app", 2_000);
    assert!(store.put_refresh_token(&t8).await.unwrap());
    assert!(
        store
            .deactivate_account(&b.id, Timestamp(60))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .live_refresh_token(&t8.hash, Timestamp(70))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .rotate_refresh_token(
                &t8.hash,
                &refresh_token(9, 8, &b.id, "app", 2_000),
                Timestamp(70)
            )
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    assert!(
        !store
            .put_refresh_token(&refresh_token(10, 10, &b.id, "app", 2_000))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .live_refresh_token(&[9; 32], Timestamp(70))
            .await
            .unwrap(),
        None
    );

    // Expired tokens are deleted (used and revoked ones are kept until then,
    // to catch replays), and so are revoked jtis.
    store
        .revoke_access_token("gone", Timestamp(100))
        .await
        .unwrap();
    assert_eq!(
        store.delete_expired_tokens(Timestamp(1_000)).await.unwrap(),
        3,
        "t1, t5 and the jti"
    );
    assert_eq!(
        store.delete_expired_tokens(Timestamp(1_000)).await.unwrap(),
        0
    );
    assert_eq!(
        store
            .rotate_refresh_token(&t1.hash, &t3, Timestamp(20))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        store.delete_expired_tokens(Timestamp(2_000)).await.unwrap(),
        3,
        "t2, t6 and t8"
    );
}

pub async fn concurrent_rotations_have_one_winner(store: &Arc<dyn Store>) {
    let a = account(1, "a", Role::Physician);
    store.create_account(&a).await.unwrap();
    assert!(store.create_client(&client("app")).await.unwrap());
    let t1 = refresh_token(1, 1, &a.id, "app", 1_000);
    assert!(store.put_refresh_token(&t1).await.unwrap());
    let mut tasks = Vec::new();
    for n in 10..18_u8 {
        let (s, new) = (Arc::clone(store), refresh_token(n, 1, &a.id, "app", 2_000));
        tasks.push(tokio::spawn(async move {
            s.rotate_refresh_token(&[1; 32], &new, Timestamp(10))
                .await
                .unwrap()
        }));
    }
    let (mut rotated, mut reused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            RefreshOutcome::Rotated(old) => {
                assert_eq!(old, t1);
                rotated += 1;
            }
            RefreshOutcome::Reused => reused += 1,
            RefreshOutcome::Invalid => panic!("a live token was found invalid"),
        }
    }
    assert_eq!((rotated, reused), (1, 7));
    // The replays revoked the family, the winner's new token included.
    for n in 10..18_u8 {
        assert_eq!(
            store
                .live_refresh_token(&[n; 32], Timestamp(10))
                .await
                .unwrap(),
            None
        );
    }
}

pub async fn access_token_liveness(store: &dyn Store) {
    let a = account(1, "a", Role::Physician);
    store.create_account(&a).await.unwrap();
    assert!(store.create_client(&client("app")).await.unwrap());
    let live = |account: Option<&AccountId>, client_id: Option<&str>, jti: &str| {
        let (account, client_id, jti) = (
            account.cloned(),
            client_id.map(str::to_owned),
            jti.to_owned(),
        );
        async move {
            store
                .access_token_live(account.as_ref(), client_id.as_deref(), &jti)
                .await
                .unwrap()
        }
    };
    assert!(live(Some(&a.id), Some("app"), "j1").await);
    assert!(live(Some(&a.id), None, "j1").await);
    // The person's check returns the account in the same query.
    let holder = |account: AccountId, client_id: Option<&'static str>, jti: &'static str| async move {
        store
            .live_token_account(&account, client_id, jti)
            .await
            .unwrap()
            .map(|found| found.id)
    };
    assert_eq!(
        holder(a.id.clone(), Some("app"), "j1").await,
        Some(a.id.clone())
    );
    assert_eq!(holder(a.id.clone(), None, "j1").await, Some(a.id.clone()));
    assert_eq!(holder(account_id(9), Some("app"), "j1").await, None);
    assert_eq!(holder(a.id.clone(), Some("nope"), "j1").await, None);
    // Backend services hold client-only tokens.
    assert!(live(None, Some("app"), "j1").await);
    assert!(live(None, None, "j1").await);
    assert!(!live(Some(&account_id(9)), None, "j1").await);
    assert!(!live(Some(&account_id(9)), Some("app"), "j1").await);
    assert!(!live(None, Some("nope"), "j1").await);
    assert!(!live(Some(&a.id), Some("nope"), "j1").await);

    store
        .revoke_access_token("j1", Timestamp(100))
        .await
        .unwrap();
    // Revoking twice is harmless; the later expiry is kept.
    store
        .revoke_access_token("j1", Timestamp(50))
        .await
        .unwrap();
    assert!(!live(Some(&a.id), Some("app"), "j1").await);
    assert!(!live(None, Some("app"), "j1").await);
    assert!(!live(None, None, "j1").await);
    assert_eq!(holder(a.id.clone(), Some("app"), "j1").await, None);
    assert_eq!(holder(a.id.clone(), None, "j1").await, None);
    assert!(live(Some(&a.id), Some("app"), "j2").await);
    assert_eq!(
        holder(a.id.clone(), Some("app"), "j2").await,
        Some(a.id.clone())
    );
    assert_eq!(store.delete_expired_tokens(Timestamp(50)).await.unwrap(), 0);
    assert!(!live(None, None, "j1").await);
    assert_eq!(
        store.delete_expired_tokens(Timestamp(100)).await.unwrap(),
        1
    );
    assert!(live(None, None, "j1").await);

    assert!(
        store
            .deactivate_account(&a.id, Timestamp(60))
            .await
            .unwrap()
    );
    assert!(!live(Some(&a.id), Some("app"), "j2").await);
    assert!(!live(Some(&a.id), None, "j2").await);
    assert_eq!(holder(a.id.clone(), Some("app"), "j2").await, None);
    assert!(live(None, Some("app"), "j2").await);
}

pub async fn outbox_enqueue_send_and_retry(store: &dyn Store) {
    let a = account(1, "a", Role::Physician);
    store.create_account(&a).await.unwrap();
    let (m1, m2, m3) = (
        message(1, 30, Some(&a.id)),
        message(2, 10, Some(&a.id)),
        message(3, 20, None),
    );
    for m in [&m1, &m2, &m3] {
        store.enqueue_message(m).await.unwrap();
    }
    assert!(store.enqueue_message(&m1).await.is_err(), "ids are unique");
    // Oldest first.
    assert_eq!(
        store.unsent_messages(3, 10).await.unwrap(),
        vec![m2.clone(), m3.clone(), m1.clone()]
    );
    assert_eq!(
        store.unsent_messages(3, 2).await.unwrap(),
        vec![m2.clone(), m3.clone()]
    );

    for _ in 0..3 {
        store
            .mark_message_failed(&m2.id, "550 relay refused")
            .await
            .unwrap();
    }
    let failed = OutboxMessage {
        attempts: 3,
        last_error: Some("550 relay refused".to_owned()),
        ..m2.clone()
    };
    assert_eq!(
        store.unsent_messages(3, 10).await.unwrap(),
        vec![m3.clone(), m1.clone()]
    );
    assert_eq!(
        store.unsent_messages(4, 10).await.unwrap(),
        vec![failed.clone(), m3.clone(), m1.clone()]
    );

    store
        .mark_message_sent(&m3.id, Timestamp(40))
        .await
        .unwrap();
    let sent = OutboxMessage {
        sent_at: Some(Timestamp(40)),
        ..m3.clone()
    };
    assert_eq!(
        store.unsent_messages(4, 10).await.unwrap(),
        vec![failed.clone(), m1.clone()]
    );

    // Newest first, optionally before a time.
    assert_eq!(
        store.messages(None, 10).await.unwrap(),
        vec![m1.clone(), sent.clone(), failed.clone()]
    );
    assert_eq!(store.messages(None, 1).await.unwrap(), vec![m1.clone()]);
    assert_eq!(
        store.messages(Some(Timestamp(30)), 10).await.unwrap(),
        vec![sent, failed]
    );
    assert_eq!(
        store.messages(Some(Timestamp(10)), 10).await.unwrap(),
        Vec::new()
    );
}

// ---- the audit log ----

/// The head the fake tree expects for a log of `size` entries.
fn fake_state(size: u64) -> Vec<u8> {
    if size == 0 {
        Vec::new()
    } else {
        size.to_be_bytes().to_vec()
    }
}

/// A stand-in for the app's Merkle tree: the state is the size, level-0
/// tiles hold 4 entries (the partial one widens), the checkpoint names the
/// size. It refuses a head that is not the one it left, so a writer that
/// read a stale head (a broken single-writer lock) fails loudly.
pub fn fake_integrate(head: &AuditHead, records: &[AuditRecord]) -> Result<Integrated, String> {
    if head.state != fake_state(head.size)
        || head.checkpoint != (head.size > 0).then(|| format!("size {}", head.size))
    {
        return Err(format!("stale or foreign head at size {}", head.size));
    }
    let size = head.size + records.len() as u64;
    let tiles = if size == head.size {
        Vec::new()
    } else {
        (head.size / 4..=(size - 1) / 4)
            .map(|t| {
                let width = (size - t * 4).min(4);
                AuditTile {
                    level: 0,
                    index: t,
                    width: u16::try_from(width).unwrap(),
                    data: vec![u8::try_from(t % 256).unwrap(); usize::try_from(width).unwrap()],
                }
            })
            .collect()
    };
    Ok(Integrated {
        state: fake_state(size),
        tiles,
        checkpoint: format!("size {size}"),
        persist_checkpoint: true,
    })
}

pub fn audit_record(bytes: &str, recorded: i64, terms: &[(&str, &str)]) -> AuditRecord {
    AuditRecord {
        bytes: bytes.as_bytes().to_vec(),
        recorded: Timestamp(recorded),
        terms: terms
            .iter()
            .map(|(p, t)| ((*p).to_owned(), token(t)))
            .collect(),
    }
}

async fn append(store: &dyn Store, records: Vec<AuditRecord>) -> AuditAppended {
    store
        .append_audit(records, &fake_integrate)
        .await
        .expect("append")
}

async fn all_entries(store: &dyn Store) -> Vec<(u64, Vec<u8>)> {
    store.audit_entries(0, usize::MAX).await.unwrap()
}

/// A few entries with terms, tiles and checkpoints, for the backup tests.
pub async fn populate_audit(store: &dyn Store) {
    append(
        store,
        vec![
            audit_record("e0", 100, &[("patient", "p1"), ("who", "alice")]),
            audit_record("e1", 101, &[("patient", "p2")]),
        ],
    )
    .await;
    append(
        store,
        vec![
            audit_record("e2", 102, &[]),
            audit_record("e3", 103, &[("who", "bob")]),
            audit_record("e4", 104, &[("patient", "p1"), ("who", "bob")]),
        ],
    )
    .await;
}

/// Entries come back exactly as appended, whatever their bytes (NULs,
/// invalid UTF-8, empty) and wherever a read starts and stops, across the
/// adapters' internal read chunks.
pub async fn audit_entries_read_back_byte_for_byte(store: &dyn Store) {
    let entry = |i: usize| -> Vec<u8> {
        match i % 5 {
            0 => Vec::new(),
            1 => vec![0u8; 3],
            2 => (0..=255u8).collect(),
            3 => vec![0xff, 0xfe, 0x00, 0xc3, 0x28],
            _ => format!("e{i}").into_bytes(),
        }
    };
    let n = 9_000usize;
    let mut next = 0usize;
    for batch in [1usize, 4095, 1, 2000, 2903] {
        let records = (next..next + batch)
            .map(|i| AuditRecord {
                bytes: entry(i),
                recorded: Timestamp(i64::try_from(i).unwrap()),
                terms: Vec::new(),
            })
            .collect();
        append(store, records).await;
        next += batch;
    }
    assert_eq!(next, n);
    let all = all_entries(store).await;
    assert_eq!(all.len(), n);
    for (i, (idx, bytes)) in all.iter().enumerate() {
        assert_eq!(*idx, i as u64);
        assert_eq!(*bytes, entry(i), "entry {i}");
    }
    for (from, limit) in [
        (0usize, 4095usize),
        (1, 4096),
        (4095, 4097),
        (8190, 100),
        (8999, 5),
    ] {
        let got = store.audit_entries(from as u64, limit).await.unwrap();
        let want: Vec<(u64, Vec<u8>)> = (from..(from + limit).min(n))
            .map(|i| (i as u64, entry(i)))
            .collect();
        assert_eq!(got, want, "entries from {from}, at most {limit}");
    }
    assert_eq!(store.audit_entries(9_000, 10).await.unwrap(), Vec::new());
    assert_eq!(store.audit_entries(0, 0).await.unwrap(), Vec::new());
}

pub async fn audit_appends_get_consecutive_indexes(store: &dyn Store) {
    assert_eq!(store.audit_head().await.unwrap(), AuditHead::default());
    assert_eq!(all_entries(store).await, Vec::new());
    let seen = std::sync::Mutex::new(Vec::new());
    let spy = |head: &AuditHead, records: &[AuditRecord]| {
        seen.lock().unwrap().push((head.clone(), records.len()));
        fake_integrate(head, records)
    };
    let a = store
        .append_audit(
            vec![audit_record("a", 1, &[]), audit_record("b", 2, &[])],
            &spy,
        )
        .await
        .unwrap();
    assert_eq!(
        a,
        AuditAppended {
            first_index: 0,
            size: 2,
            checkpoint: "size 2".to_owned()
        }
    );
    let b = store
        .append_audit(vec![audit_record("c", 3, &[])], &spy)
        .await
        .unwrap();
    assert_eq!((b.first_index, b.size), (2, 3));
    // An empty batch lands at the end and changes nothing but the checkpoint.
    let c = store.append_audit(Vec::new(), &spy).await.unwrap();
    assert_eq!((c.first_index, c.size), (3, 3));
    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen,
        vec![
            (AuditHead::default(), 2),
            (
                AuditHead {
                    size: 2,
                    state: fake_state(2),
                    checkpoint: Some("size 2".to_owned())
                },
                1
            ),
            (
                AuditHead {
                    size: 3,
                    state: fake_state(3),
                    checkpoint: Some("size 3".to_owned())
                },
                0
            ),
        ],
        "the callback sees the head the previous append left"
    );
    assert_eq!(
        all_entries(store).await,
        vec![(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec())]
    );
    assert_eq!(
        store.audit_entries(1, 1).await.unwrap(),
        vec![(1, b"b".to_vec())]
    );
    assert_eq!(store.audit_entries(3, 10).await.unwrap(), Vec::new());
    assert_eq!(store.audit_entries(u64::MAX, 10).await.unwrap(), Vec::new());
    assert_eq!(
        store.audit_head().await.unwrap(),
        AuditHead {
            size: 3,
            state: fake_state(3),
            checkpoint: Some("size 3".to_owned())
        }
    );
}

pub async fn audit_failing_callback_stores_nothing(store: &dyn Store) {
    populate_audit(store).await;
    let before = dump_all(store).await;
    let failing = |_: &AuditHead, _: &[AuditRecord]| -> Result<Integrated, String> {
        Err("signing key unavailable".to_owned())
    };
    match store
        .append_audit(vec![audit_record("x", 1, &[("patient", "px")])], &failing)
        .await
    {
        Err(StoreError::Audit(msg)) => assert_eq!(msg, "signing key unavailable"),
        other => panic!("expected an audit error, got {other:?}"),
    }
    assert_eq!(dump_all(store).await, before);
    assert_eq!(
        store
            .find_audit(&AuditQuery {
                clauses: vec![("patient".to_owned(), vec![token("px")])],
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap(),
        Vec::<u64>::new()
    );
    // The log goes on where it was.
    assert_eq!(
        append(store, vec![audit_record("e5", 105, &[])])
            .await
            .first_index,
        5
    );
}

pub async fn commit_audited_is_all_or_nothing(store: &dyn Store) {
    let org = KeyOwner::Organisation;
    let entry = || vec![audit_record("created a", 10, &[("what", "a")])];
    // A failing precondition stores neither the data nor the entries.
    let stale = update(Organization, "a", 1, &org, b"a2", Vec::new());
    let result = store
        .commit_audited(Vec::new(), vec![stale], entry(), &fake_integrate)
        .await;
    assert!(
        matches!(result, Err(StoreError::Conflict { .. })),
        "{result:?}"
    );
    // A failing callback stores neither either.
    let failing =
        |_: &AuditHead, _: &[AuditRecord]| -> Result<Integrated, String> { Err("no".to_owned()) };
    let key = WrappedKey {
        owner: patient("p1"),
        kek_id: "kek-1".to_owned(),
        wrapped: token("k"),
    };
    let result = store
        .commit_audited(
            vec![key.clone()],
            vec![create(Patient, "p1", &patient("p1"), b"p1", Vec::new())],
            entry(),
            &failing,
        )
        .await;
    assert!(matches!(result, Err(StoreError::Audit(_))), "{result:?}");
    assert_eq!(dump_all(store).await, Vec::new());
    assert_eq!(store.audit_head().await.unwrap(), AuditHead::default());

    // A succeeding one stores both.
    let appended = store
        .commit_audited(
            vec![key.clone()],
            vec![create(
                Organization,
                "a",
                &org,
                b"a1",
                vec![row("name", "a")],
            )],
            entry(),
            &fake_integrate,
        )
        .await
        .unwrap();
    assert_eq!((appended.first_index, appended.size), (0, 1));
    assert!(
        store
            .current(Organization, &rid("a"))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.get_key(&patient("p1")).await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(all_entries(store).await, vec![(0, b"created a".to_vec())]);

    // An existing key fails the data half, and the audit half with it.
    let result = store
        .commit_audited(
            vec![key],
            vec![update(Organization, "a", 1, &org, b"a2", Vec::new())],
            entry(),
            &fake_integrate,
        )
        .await;
    assert!(matches!(result, Err(StoreError::KeyExists)), "{result:?}");
    assert_eq!(store.audit_head().await.unwrap().size, 1);
    assert_eq!(
        store
            .current(Organization, &rid("a"))
            .await
            .unwrap()
            .unwrap()
            .version,
        VersionId(1)
    );
}

/// Checks that the log holds `expected` entries, indexes 0..n, each once,
/// with each batch's entries consecutive and in order.
async fn assert_gap_free(store: &dyn Store, batches: &[(u64, Vec<Vec<u8>>)]) {
    let entries = all_entries(store).await;
    let total: usize = batches.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(entries.len(), total);
    for (n, (i, _)) in entries.iter().enumerate() {
        assert_eq!(*i, n as u64, "indexes are gap-free");
    }
    let mut seen = std::collections::HashSet::new();
    for (first, batch) in batches {
        for (k, bytes) in batch.iter().enumerate() {
            let (i, stored) = &entries[usize::try_from(*first).unwrap() + k];
            assert_eq!(stored, bytes, "entry {i} is the one appended there");
            assert!(seen.insert(bytes.clone()), "entry stored once");
        }
    }
    assert_eq!(store.audit_head().await.unwrap().size, total as u64);
    let sizes: Vec<u64> = store
        .audit_checkpoints(0, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(sizes.len(), batches.len(), "one checkpoint per append");
    assert!(sizes.windows(2).all(|w| w[0] < w[1]));
}

/// `tasks` appenders, each appending `rounds` batches of 3 entries to the
/// store it is given (tasks alternate between `stores`).
pub async fn append_concurrently(
    stores: &[Arc<dyn Store>],
    tasks: usize,
    rounds: usize,
) -> Vec<(u64, Vec<Vec<u8>>)> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = stores[t % stores.len()].clone();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for r in 0..rounds {
                let batch: Vec<AuditRecord> = (0..3)
                    .map(|k| audit_record(&format!("t{t}-r{r}-k{k}"), 1, &[("task", "t")]))
                    .collect();
                let bytes = batch.iter().map(|b| b.bytes.clone()).collect();
                let appended = store.append_audit(batch, &fake_integrate).await.unwrap();
                assert_eq!(appended.size, appended.first_index + 3);
                out.push((appended.first_index, bytes));
            }
            out
        }));
    }
    let mut batches = Vec::new();
    for h in handles {
        batches.extend(h.await.unwrap());
    }
    batches
}

pub async fn audit_concurrent_appenders_are_gap_free(store: &Arc<dyn Store>) {
    let batches = append_concurrently(std::slice::from_ref(store), 16, 6).await;
    assert_gap_free(&**store, &batches).await;
}

/// Two nodes (separate stores on one database) appending at once.
pub async fn audit_two_nodes_share_one_log(a: &Arc<dyn Store>, b: &Arc<dyn Store>) {
    let batches = append_concurrently(&[a.clone(), b.clone()], 16, 6).await;
    assert_gap_free(&**a, &batches).await;
    assert_eq!(all_entries(&**a).await, all_entries(&**b).await);
}

pub async fn audit_tiles_widen(store: &dyn Store) {
    assert_eq!(store.audit_tile(0, 0).await.unwrap(), None);
    append(store, vec![audit_record("a", 1, &[])]).await;
    assert_eq!(store.audit_tile(0, 0).await.unwrap().unwrap().width, 1);
    append(
        store,
        (0..4)
            .map(|i| audit_record(&format!("b{i}"), 1, &[]))
            .collect(),
    )
    .await;
    let full = store.audit_tile(0, 0).await.unwrap().unwrap();
    assert_eq!(
        full,
        AuditTile {
            level: 0,
            index: 0,
            width: 4,
            data: vec![0; 4]
        }
    );
    assert_eq!(store.audit_tile(0, 1).await.unwrap().unwrap().width, 1);
    assert_eq!(store.audit_tile(1, 0).await.unwrap(), None);
    assert_eq!(store.audit_tile(0, u64::MAX).await.unwrap(), None);
    // A narrower version never replaces a wider one; a wider one (listed
    // after a narrower one in the same batch) does.
    let narrow = |head: &AuditHead, records: &[AuditRecord]| {
        let mut i = fake_integrate(head, records)?;
        i.tiles = vec![
            AuditTile {
                level: 0,
                index: 0,
                width: 2,
                data: vec![9; 2],
            },
            AuditTile {
                level: 0,
                index: 1,
                width: 2,
                data: vec![7; 2],
            },
            AuditTile {
                level: 0,
                index: 1,
                width: 3,
                data: vec![8; 3],
            },
        ];
        Ok(i)
    };
    store
        .append_audit(vec![audit_record("c", 1, &[])], &narrow)
        .await
        .unwrap();
    assert_eq!(store.audit_tile(0, 0).await.unwrap(), Some(full));
    assert_eq!(
        store.audit_tile(0, 1).await.unwrap().unwrap().data,
        vec![8; 3]
    );
}

pub async fn audit_checkpoint_history(store: &dyn Store) {
    for n in 1..=3 {
        append(
            store,
            (0..n)
                .map(|i| audit_record(&format!("{n}-{i}"), 1, &[]))
                .collect(),
        )
        .await;
    }
    let all = store.audit_checkpoints(0, 10).await.unwrap();
    assert_eq!(
        all,
        vec![
            (1, "size 1".to_owned()),
            (3, "size 3".to_owned()),
            (6, "size 6".to_owned())
        ]
    );
    assert_eq!(store.audit_checkpoints(2, 10).await.unwrap(), all[1..]);
    assert_eq!(store.audit_checkpoints(0, 1).await.unwrap(), all[..1]);
    assert_eq!(store.audit_checkpoints(7, 10).await.unwrap(), Vec::new());
    // Not persisting keeps the checkpoint in the head only.
    let transient = |head: &AuditHead, records: &[AuditRecord]| {
        let mut i = fake_integrate(head, records)?;
        i.persist_checkpoint = false;
        Ok(i)
    };
    store
        .append_audit(vec![audit_record("t", 1, &[])], &transient)
        .await
        .unwrap();
    assert_eq!(store.audit_checkpoints(0, 10).await.unwrap(), all);
    assert_eq!(
        store.audit_head().await.unwrap().checkpoint.as_deref(),
        Some("size 7")
    );
}

pub async fn find_audit_clauses_bounds_and_paging(store: &dyn Store) {
    populate_audit(store).await;
    let q = |clauses: &[(&str, &[&str])]| AuditQuery {
        clauses: clauses
            .iter()
            .map(|(p, ts)| ((*p).to_owned(), ts.iter().map(|t| token(t)).collect()))
            .collect(),
        limit: 100,
        ..AuditQuery::default()
    };
    let find = |query: AuditQuery| async move { store.find_audit(&query).await.unwrap() };
    assert_eq!(find(q(&[])).await, [4, 3, 2, 1, 0], "no clause: everything");
    assert_eq!(find(q(&[("patient", &["p1"])])).await, [4, 0]);
    assert_eq!(find(q(&[("patient", &["p1", "p2"])])).await, [4, 1, 0]);
    assert_eq!(
        find(q(&[("patient", &["p1"]), ("who", &["bob"])])).await,
        [4]
    );
    assert_eq!(
        find(q(&[("patient", &["p2"]), ("who", &["bob"])])).await,
        [0_u64; 0]
    );
    assert_eq!(
        find(q(&[("patient", &[])])).await,
        [0_u64; 0],
        "no token: nothing"
    );
    assert_eq!(
        find(q(&[("who", &["p1"])])).await,
        [0_u64; 0],
        "terms are per parameter"
    );
    // Recorded bounds: from inclusive, to exclusive.
    let mut bounded = q(&[("who", &["alice", "bob"])]);
    bounded.recorded_from = Some(Timestamp(100));
    bounded.recorded_to = Some(Timestamp(104));
    assert_eq!(find(bounded).await, [3, 0]);
    // Paging newest first with `before`.
    let mut page = q(&[]);
    page.limit = 2;
    assert_eq!(find(page.clone()).await, [4, 3]);
    page.before = Some(3);
    assert_eq!(find(page.clone()).await, [2, 1]);
    page.before = Some(1);
    assert_eq!(find(page.clone()).await, [0]);
    page.before = Some(0);
    assert_eq!(find(page.clone()).await, [0_u64; 0]);
    page.before = Some(u64::MAX);
    assert_eq!(find(page.clone()).await, [4, 3]);
    page.limit = 0;
    assert_eq!(find(page).await, [0_u64; 0]);
    // Erasing a patient leaves the audit log alone.
    store.erase_patient(&patient("p1")).await.unwrap();
    assert_eq!(find(q(&[("patient", &["p1"])])).await, [4, 0]);
    assert_eq!(all_entries(store).await.len(), 5);
}

pub async fn load_checks_the_audit_log(store: &dyn Store) {
    let entry = |index: u64| BackupRecord::AuditEntry {
        index,
        recorded: Timestamp(1),
        bytes: vec![1],
        terms: Vec::new(),
    };
    let head = |size: u64| {
        BackupRecord::AuditHead(AuditHead {
            size,
            state: fake_state(size),
            checkpoint: Some(format!("size {size}")),
        })
    };
    // Out of order, missing head, head of the wrong size: all refused.
    for records in [
        vec![entry(1), head(1)],
        vec![entry(0)],
        vec![entry(0), entry(1), head(1)],
    ] {
        assert!(store.load(records).await.is_err());
        assert_eq!(store.audit_head().await.unwrap(), AuditHead::default());
        assert_eq!(all_entries(store).await, Vec::new());
    }
    // A store with only an audit log is not empty.
    append(store, vec![audit_record("a", 1, &[])]).await;
    assert!(matches!(
        store.load(Vec::new()).await,
        Err(StoreError::Backup(_))
    ));
}

/// Times appends of 256 entries of 300 bytes with 3 terms each (the
/// benchmark's batch). Prints, never asserts on time.
pub async fn audit_batch_timings(store: &dyn Store) {
    const BATCHES: usize = 40;
    let mut took = Vec::new();
    for b in 0..BATCHES {
        let batch: Vec<AuditRecord> = (0..256)
            .map(|i| {
                let mut bytes = vec![u8::try_from(i % 251).unwrap(); 300];
                bytes[..8].copy_from_slice(&((b * 256 + i) as u64).to_be_bytes());
                AuditRecord {
                    bytes,
                    recorded: Timestamp(1_000 + i64::try_from(b).unwrap()),
                    terms: vec![
                        ("patient".to_owned(), token(&format!("p{}", i % 50))),
                        ("who".to_owned(), token(&format!("s{}", i % 7))),
                        ("action".to_owned(), token("read")),
                    ],
                }
            })
            .collect();
        let start = std::time::Instant::now();
        append(store, batch).await;
        took.push(start.elapsed());
    }
    took.sort();
    let total: std::time::Duration = took.iter().sum();
    let mean = total / u32::try_from(BATCHES).unwrap();
    println!(
        "audit batch timings ({}): {BATCHES} batches of 256 x 300 B + 3 terms: \
         median {:?}, mean {mean:?}, min {:?}, max {:?}, {:.0} entries/s",
        store.backend(),
        took[BATCHES / 2],
        took[0],
        took[BATCHES - 1],
        (BATCHES * 256) as f64 / total.as_secs_f64()
    );
    assert_eq!(
        store.audit_head().await.unwrap().size,
        (BATCHES * 256) as u64
    );
}
