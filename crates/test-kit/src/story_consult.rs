//! The conformance story for telehealth consults' storage
//! ([`store::ConsultStore`]): rooms (one per appointment, updated by
//! compare-and-set on their version), the lists the app and the access
//! policy read, invites and the compare-and-set of their identity checks,
//! revocation, patient erasure and backups. Each scenario gets a fresh,
//! migrated, empty store; [`crate::store_story_tests!`] runs them against
//! every backend.

use std::sync::Arc;

use model::{KeyOwner, Timestamp};
use store::{BackupRecord, ConsultInvite, ConsultRoom, Role, Store, StoreError};

use crate::story::{account, account_id, dump_all, patient, rid};

// ---- builders ----

/// Creates the two clinicians the rooms below refer to.
async fn accounts(store: &dyn Store) {
    for (n, name, role) in [(1, "doc", Role::Physician), (2, "nurse", Role::Nurse)] {
        store.create_account(&account(n, name, role)).await.unwrap();
    }
}

/// A 32-hex-digit id, ordered as `n` is.
fn hex_id(n: u32) -> String {
    format!("{n:032x}")
}

/// Stands in for sealed bytes: arbitrary, including 0x00 and 0xff.
fn sealed(tag: &str) -> Vec<u8> {
    let mut v = vec![0, 0xff];
    v.extend_from_slice(tag.as_bytes());
    v
}

/// Room `n` for appointment `a<n>` of `patient`, by clinician `who`.
fn room(n: u32, patient: &str, who: u8, created: i64) -> ConsultRoom {
    ConsultRoom {
        id: hex_id(n),
        appointment: rid(&format!("a{n}")),
        patient: rid(patient),
        clinician: account_id(who),
        practitioner: Some(format!("pr{who}")),
        created: Timestamp(created),
        version: 1,
        status: "open".to_owned(),
        state: sealed(&format!("room-{n}")),
        consult_start: None,
        consult_end: None,
    }
}

/// Invite `n` into room `room`.
fn invite(n: u32, room: u32, created: i64) -> ConsultInvite {
    ConsultInvite {
        id: hex_id(1_000 + n),
        room: hex_id(room),
        created: Timestamp(created),
        expires: Timestamp(created + 3_600),
        method: "dob".to_owned(),
        failures: 0,
        locked: false,
        verified_at: None,
        revoked: false,
        secret: sealed(&format!("secret-{n}")),
    }
}

/// `room` as the next version, with a new status and state.
fn next(room: &ConsultRoom, status: &str, tag: &str) -> ConsultRoom {
    ConsultRoom {
        version: room.version + 1,
        status: status.to_owned(),
        state: sealed(tag),
        ..room.clone()
    }
}

fn room_ids(rooms: &[ConsultRoom]) -> Vec<&str> {
    rooms.iter().map(|r| r.id.as_str()).collect()
}

fn invite_ids(invites: &[ConsultInvite]) -> Vec<&str> {
    invites.iter().map(|i| i.id.as_str()).collect()
}

/// Everything consults hold, for "nothing changed" checks.
async fn consult_records(store: &dyn Store) -> Vec<BackupRecord> {
    dump_all(store)
        .await
        .into_iter()
        .filter(|r| {
            matches!(
                r,
                BackupRecord::ConsultRoom(_) | BackupRecord::ConsultInvite(_)
            )
        })
        .collect()
}

// ---- scenarios ----

pub async fn consult_rooms_insert_and_read(store: &dyn Store) {
    accounts(store).await;
    assert_eq!(store.room(&hex_id(1)).await.unwrap(), None);
    assert_eq!(store.room_for_appointment(&rid("a1")).await.unwrap(), None);
    let r = room(1, "p1", 1, 1_000);
    store.insert_room(&r).await.unwrap();
    assert_eq!(store.room(&r.id).await.unwrap(), Some(r.clone()));
    assert_eq!(
        store.room_for_appointment(&rid("a1")).await.unwrap(),
        Some(r.clone())
    );
    // Every field survives, the optional ones set too.
    let mut full = room(2, "p2", 2, 2_000);
    full.practitioner = None;
    full.status = "ended".to_owned();
    full.state = Vec::new();
    full.consult_start = Some(Timestamp(2_100));
    full.consult_end = Some(Timestamp(i64::MAX));
    store.insert_room(&full).await.unwrap();
    assert_eq!(store.room(&full.id).await.unwrap(), Some(full.clone()));
    assert_eq!(
        store.room_for_appointment(&rid("a2")).await.unwrap(),
        Some(full)
    );
    assert_eq!(
        store.room(&hex_id(1)[1..]).await.unwrap(),
        None,
        "ids are exact"
    );
    assert_eq!(store.room_for_appointment(&rid("A1")).await.unwrap(), None);

    // A new room starts at version 1; nothing else is stored.
    let before = consult_records(store).await;
    let mut v2 = room(3, "p1", 1, 3_000);
    v2.version = 2;
    assert!(matches!(
        store.insert_room(&v2).await,
        Err(StoreError::ConsultRoom(_))
    ));
    assert_eq!(consult_records(store).await, before);
}

pub async fn consult_second_room_for_an_appointment_is_refused(store: &dyn Store) {
    accounts(store).await;
    let first = room(1, "p1", 1, 1_000);
    store.insert_room(&first).await.unwrap();
    let before = consult_records(store).await;

    // Another id for the same appointment.
    let mut same_appointment = room(2, "p2", 2, 2_000);
    same_appointment.appointment = first.appointment.clone();
    assert!(matches!(
        store.insert_room(&same_appointment).await,
        Err(StoreError::RoomExists)
    ));
    // The same id for another appointment.
    let mut same_id = room(3, "p1", 1, 3_000);
    same_id.id = first.id.clone();
    assert!(matches!(
        store.insert_room(&same_id).await,
        Err(StoreError::RoomExists)
    ));
    assert_eq!(consult_records(store).await, before);
    assert_eq!(
        store.room_for_appointment(&rid("a1")).await.unwrap(),
        Some(first)
    );
    assert_eq!(store.room(&hex_id(2)).await.unwrap(), None);
    assert_eq!(store.room_for_appointment(&rid("a3")).await.unwrap(), None);

    // The clinician's account must exist; nothing is stored otherwise.
    let unknown = room(4, "p1", 9, 4_000);
    assert!(store.insert_room(&unknown).await.is_err());
    assert_eq!(consult_records(store).await, before);
}

pub async fn consult_room_update_is_compare_and_set(store: &dyn Store) {
    accounts(store).await;
    let v1 = room(1, "p1", 1, 1_000);
    store.insert_room(&v1).await.unwrap();

    let mut v2 = next(&v1, "locked", "v2");
    v2.consult_start = Some(Timestamp(1_100));
    v2.consult_end = Some(Timestamp(5_000));
    v2.practitioner = None;
    assert!(store.update_room(&v2, 1).await.unwrap());
    assert_eq!(store.room(&v1.id).await.unwrap(), Some(v2.clone()));

    // A stale writer (it read version 1) changes nothing.
    let stale = next(&v1, "ended", "stale");
    assert!(!store.update_room(&stale, 1).await.unwrap());
    assert_eq!(store.room(&v1.id).await.unwrap(), Some(v2.clone()));
    // Neither does an expected version from the future.
    let mut future = next(&v2, "ended", "future");
    future.version = 4;
    assert!(!store.update_room(&future, 3).await.unwrap());
    assert_eq!(store.room(&v1.id).await.unwrap(), Some(v2.clone()));

    // The new version must be exactly one more than the expected one.
    for (version, expected) in [(2, 2), (4, 2), (3, 1), (0, u64::MAX)] {
        let bad = ConsultRoom {
            version,
            ..next(&v2, "ended", "bad")
        };
        assert!(
            matches!(
                store.update_room(&bad, expected).await,
                Err(StoreError::ConsultRoom(_))
            ),
            "version {version} over {expected}"
        );
    }
    assert_eq!(store.room(&v1.id).await.unwrap(), Some(v2.clone()));

    // No such room: nothing to win.
    let mut ghost = next(&v2, "ended", "ghost");
    ghost.id = hex_id(99);
    assert!(!store.update_room(&ghost, 2).await.unwrap());
    assert_eq!(store.room(&hex_id(99)).await.unwrap(), None);

    // Appointment, patient, clinician and creation time are fixed at insert.
    let mut moved = next(&v2, "ended", "v3");
    moved.appointment = rid("elsewhere");
    moved.patient = rid("p2");
    moved.clinician = account_id(2);
    moved.created = Timestamp(9);
    assert!(store.update_room(&moved, 2).await.unwrap());
    let v3 = ConsultRoom {
        version: 3,
        status: "ended".to_owned(),
        state: sealed("v3"),
        ..v2
    };
    assert_eq!(store.room(&v1.id).await.unwrap(), Some(v3.clone()));
    assert_eq!(
        store.room_for_appointment(&rid("a1")).await.unwrap(),
        Some(v3)
    );
    assert_eq!(
        store.room_for_appointment(&rid("elsewhere")).await.unwrap(),
        None
    );
}

pub async fn consult_room_update_race_has_one_winner(store: &Arc<dyn Store>) {
    accounts(&**store).await;
    let v1 = room(1, "p1", 1, 1_000);
    store.insert_room(&v1).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let update = next(&v1, "locked", &format!("writer-{i}"));
            tokio::spawn(async move {
                let won = store.update_room(&update, 1).await.unwrap();
                (update, won)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (update, won) = t.await.unwrap();
        if won {
            winners.push(update);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(store.room(&v1.id).await.unwrap().as_ref(), winners.first());
}

pub async fn consult_rooms_of_clinician_newest_first(store: &dyn Store) {
    accounts(store).await;
    // Inserted out of order; two share a creation time (then by id, newest
    // id first).
    for r in [
        room(1, "p1", 1, 1_000),
        room(2, "p2", 2, 5_000),
        room(3, "p2", 1, 3_000),
        room(4, "p3", 1, 2_000),
        room(5, "p1", 1, 3_000),
    ] {
        store.insert_room(&r).await.unwrap();
    }
    let all = store.rooms_of_clinician(&account_id(1), 100).await.unwrap();
    assert_eq!(room_ids(&all), [hex_id(5), hex_id(3), hex_id(4), hex_id(1)]);
    assert_eq!(all.first(), Some(&room(5, "p1", 1, 3_000)));
    assert_eq!(
        room_ids(&store.rooms_of_clinician(&account_id(1), 2).await.unwrap()),
        [hex_id(5), hex_id(3)]
    );
    assert!(
        store
            .rooms_of_clinician(&account_id(1), 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        room_ids(&store.rooms_of_clinician(&account_id(2), 100).await.unwrap()),
        [hex_id(2)]
    );
    assert!(
        store
            .rooms_of_clinician(&account_id(3), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn consult_consultations_of_patient_are_the_started_rooms(store: &dyn Store) {
    accounts(store).await;
    let started = |n: u32, patient: &str, start: i64| ConsultRoom {
        consult_start: Some(Timestamp(start)),
        consult_end: Some(Timestamp(start + 1_000)),
        ..room(n, patient, 1, 100)
    };
    for r in [
        started(1, "p1", 1_000),
        room(2, "p1", 2, 100),
        started(3, "p1", 3_000),
        started(4, "p2", 2_000),
        started(5, "p1", 2_000),
    ] {
        store.insert_room(&r).await.unwrap();
    }
    let p1 = store.consultations_of_patient(&rid("p1")).await.unwrap();
    assert_eq!(room_ids(&p1), [hex_id(3), hex_id(5), hex_id(1)]);
    assert_eq!(p1.first(), Some(&started(3, "p1", 3_000)));
    assert_eq!(
        room_ids(&store.consultations_of_patient(&rid("p2")).await.unwrap()),
        [hex_id(4)]
    );
    assert!(
        store
            .consultations_of_patient(&rid("p3"))
            .await
            .unwrap()
            .is_empty()
    );

    // A room's consult starts with an update (the first admission).
    let r2 = store.room(&hex_id(2)).await.unwrap().unwrap();
    let mut admitted = next(&r2, "open", "admitted");
    admitted.consult_start = Some(Timestamp(4_000));
    assert!(store.update_room(&admitted, 1).await.unwrap());
    assert_eq!(
        room_ids(&store.consultations_of_patient(&rid("p1")).await.unwrap()),
        [hex_id(2), hex_id(3), hex_id(5), hex_id(1)]
    );
}

pub async fn consult_invites_insert_read_newest_first(store: &dyn Store) {
    accounts(store).await;
    for r in [room(1, "p1", 1, 100), room(2, "p2", 1, 100)] {
        store.insert_room(&r).await.unwrap();
    }
    assert_eq!(store.invite(&hex_id(1_001)).await.unwrap(), None);
    assert!(store.invites_of_room(&hex_id(1)).await.unwrap().is_empty());

    let first = invite(1, 1, 1_000);
    store.insert_invite(&first).await.unwrap();
    assert_eq!(store.invite(&first.id).await.unwrap(), Some(first.clone()));
    // Every field survives, the optional and flag ones set too.
    let full = ConsultInvite {
        method: "code".to_owned(),
        failures: u32::MAX,
        locked: true,
        verified_at: Some(Timestamp(1_500)),
        revoked: true,
        secret: Vec::new(),
        ..invite(2, 1, 3_000)
    };
    store.insert_invite(&full).await.unwrap();
    assert_eq!(store.invite(&full.id).await.unwrap(), Some(full.clone()));
    for i in [
        invite(3, 1, 2_000),
        invite(4, 2, 5_000),
        invite(5, 1, 2_000),
    ] {
        store.insert_invite(&i).await.unwrap();
    }
    let of_room = store.invites_of_room(&hex_id(1)).await.unwrap();
    assert_eq!(
        invite_ids(&of_room),
        [hex_id(1_002), hex_id(1_005), hex_id(1_003), hex_id(1_001)]
    );
    assert_eq!(of_room.first(), Some(&full));
    assert_eq!(
        invite_ids(&store.invites_of_room(&hex_id(2)).await.unwrap()),
        [hex_id(1_004)]
    );
    assert!(store.invites_of_room(&hex_id(3)).await.unwrap().is_empty());

    // A taken id is refused and changes nothing; an invite needs its room.
    let before = consult_records(store).await;
    let taken = ConsultInvite {
        id: first.id.clone(),
        ..invite(6, 2, 9_000)
    };
    assert!(matches!(
        store.insert_invite(&taken).await,
        Err(StoreError::InviteExists)
    ));
    assert!(store.insert_invite(&invite(7, 99, 9_000)).await.is_err());
    assert_eq!(consult_records(store).await, before);
    assert_eq!(store.invite(&hex_id(1_007)).await.unwrap(), None);
}

pub async fn consult_invite_checks_are_compare_and_set(store: &dyn Store) {
    accounts(store).await;
    store.insert_room(&room(1, "p1", 1, 100)).await.unwrap();
    let i = invite(1, 1, 1_000);
    store.insert_invite(&i).await.unwrap();
    let stored = |failures, locked, verified_at: Option<i64>| ConsultInvite {
        failures,
        locked,
        verified_at: verified_at.map(Timestamp),
        ..i.clone()
    };

    // A failure, then a check from a stale read changes nothing.
    assert!(
        store
            .record_invite_check(&i.id, 0, 1, false, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.invite(&i.id).await.unwrap(),
        Some(stored(1, false, None))
    );
    assert!(
        !store
            .record_invite_check(&i.id, 0, 1, false, Some(Timestamp(1_100)))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_invite_check(&i.id, 2, 3, false, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.invite(&i.id).await.unwrap(),
        Some(stored(1, false, None))
    );

    // A success keeps the count; another check may follow.
    assert!(
        store
            .record_invite_check(&i.id, 1, 1, false, Some(Timestamp(1_200)))
            .await
            .unwrap()
    );
    assert_eq!(
        store.invite(&i.id).await.unwrap(),
        Some(stored(1, false, Some(1_200)))
    );
    // The last allowed failure locks it: no further check is recorded.
    assert!(
        store
            .record_invite_check(&i.id, 1, 5, true, Some(Timestamp(1_200)))
            .await
            .unwrap()
    );
    let locked = stored(5, true, Some(1_200));
    assert_eq!(store.invite(&i.id).await.unwrap(), Some(locked.clone()));
    for (expected, failures, lock) in [(5, 5, false), (5, 6, true), (5, 0, false)] {
        assert!(
            !store
                .record_invite_check(&i.id, expected, failures, lock, Some(Timestamp(1_300)))
                .await
                .unwrap()
        );
    }
    assert_eq!(store.invite(&i.id).await.unwrap(), Some(locked));

    // A revoked invite refuses checks too. (Revoking counts the locked
    // invite as well: it was not revoked.)
    let j = invite(2, 1, 2_000);
    store.insert_invite(&j).await.unwrap();
    assert_eq!(store.revoke_invites(&hex_id(1)).await.unwrap(), 2);
    assert!(
        !store
            .record_invite_check(&j.id, 0, 0, false, Some(Timestamp(2_100)))
            .await
            .unwrap()
    );
    assert_eq!(
        store.invite(&j.id).await.unwrap(),
        Some(ConsultInvite { revoked: true, ..j })
    );
    // No such invite: nothing to win.
    assert!(
        !store
            .record_invite_check(&hex_id(4_242), 0, 1, false, None)
            .await
            .unwrap()
    );
    assert_eq!(store.invite(&hex_id(4_242)).await.unwrap(), None);
}

pub async fn consult_invite_check_race_has_one_winner(store: &Arc<dyn Store>) {
    accounts(&**store).await;
    store.insert_room(&room(1, "p1", 1, 100)).await.unwrap();
    // Several rounds, each two checks from the same read, so an
    // interleaving that lets both through has many chances to show.
    for round in 0..16_u32 {
        let i = invite(round, 1, 1_000);
        store.insert_invite(&i).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = [false, true]
            .into_iter()
            .map(|lock| {
                let (store, barrier, id) = (store.clone(), barrier.clone(), i.id.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let won = store
                        .record_invite_check(&id, 0, 1, lock, None)
                        .await
                        .unwrap();
                    (lock, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (lock, won) = t.await.unwrap();
            if won {
                winners.push(lock);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let stored = store.invite(&i.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.failures, stored.locked),
            (1, winners[0]),
            "round {round}: the winner's check is the one stored"
        );
    }
}

pub async fn consult_revoke_invites_counts_the_unrevoked(store: &dyn Store) {
    accounts(store).await;
    for r in [room(1, "p1", 1, 100), room(2, "p2", 1, 100)] {
        store.insert_room(&r).await.unwrap();
    }
    let already = ConsultInvite {
        revoked: true,
        ..invite(2, 1, 2_000)
    };
    for i in [
        invite(1, 1, 1_000),
        already,
        invite(3, 1, 3_000),
        invite(4, 2, 4_000),
    ] {
        store.insert_invite(&i).await.unwrap();
    }
    assert_eq!(store.revoke_invites(&hex_id(1)).await.unwrap(), 2);
    assert!(
        store
            .invites_of_room(&hex_id(1))
            .await
            .unwrap()
            .iter()
            .all(|i| i.revoked)
    );
    assert_eq!(store.revoke_invites(&hex_id(1)).await.unwrap(), 0);
    // Another room's invites are untouched; an unknown room has none.
    assert_eq!(
        store.invite(&hex_id(1_004)).await.unwrap(),
        Some(invite(4, 2, 4_000))
    );
    assert_eq!(store.revoke_invites(&hex_id(99)).await.unwrap(), 0);
    assert_eq!(store.revoke_invites(&hex_id(2)).await.unwrap(), 1);
    // Revoking changes nothing else.
    assert_eq!(
        store.invite(&hex_id(1_001)).await.unwrap(),
        Some(ConsultInvite {
            revoked: true,
            ..invite(1, 1, 1_000)
        })
    );
}

pub async fn consult_erase_removes_the_patients_rooms_and_invites_only(store: &dyn Store) {
    crate::story::populate(store).await;
    accounts(store).await;
    for r in [
        room(1, "p1", 1, 100),
        room(2, "p2", 1, 200),
        room(3, "p1", 2, 300),
    ] {
        store.insert_room(&r).await.unwrap();
    }
    for i in [
        invite(1, 1, 1_000),
        invite(2, 2, 2_000),
        invite(3, 3, 3_000),
    ] {
        store.insert_invite(&i).await.unwrap();
    }
    let p2_room = store.room(&hex_id(2)).await.unwrap();
    let p2_invite = store.invite(&hex_id(1_002)).await.unwrap();

    // The organisation is refused, and consults are left as they were.
    let before = consult_records(store).await;
    assert!(store.erase_patient(&KeyOwner::Organisation).await.is_err());
    assert_eq!(consult_records(store).await, before);

    store.erase_patient(&patient("p1")).await.unwrap();
    for id in [hex_id(1), hex_id(3)] {
        assert_eq!(store.room(&id).await.unwrap(), None);
        assert!(store.invites_of_room(&id).await.unwrap().is_empty());
    }
    assert_eq!(store.invite(&hex_id(1_001)).await.unwrap(), None);
    assert_eq!(store.invite(&hex_id(1_003)).await.unwrap(), None);
    assert_eq!(store.room_for_appointment(&rid("a1")).await.unwrap(), None);
    assert!(
        store
            .consultations_of_patient(&rid("p1"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .rooms_of_clinician(&account_id(2), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Nobody else's consults moved.
    assert_eq!(store.room(&hex_id(2)).await.unwrap(), p2_room);
    assert_eq!(store.invite(&hex_id(1_002)).await.unwrap(), p2_invite);
    assert_eq!(
        consult_records(store).await,
        [
            BackupRecord::ConsultRoom(p2_room.unwrap()),
            BackupRecord::ConsultInvite(p2_invite.unwrap()),
        ]
    );
    // Erasing a patient with no consults is no error.
    store.erase_patient(&patient("p1")).await.unwrap();
}

/// Two clinicians' rooms (one ended, one started with an updated state) and
/// invites in every state.
pub async fn populate(store: &dyn Store) {
    accounts(store).await;
    let mut r2 = room(2, "p2", 2, 200);
    r2.practitioner = None;
    for r in [room(3, "p1", 1, 300), r2, room(1, "p1", 1, 100)] {
        store.insert_room(&r).await.unwrap();
    }
    let r1 = store.room(&hex_id(1)).await.unwrap().unwrap();
    let mut started = next(&r1, "locked", "started");
    started.consult_start = Some(Timestamp(150));
    started.consult_end = Some(Timestamp(10_000));
    assert!(store.update_room(&started, 1).await.unwrap());
    let ended = next(&started, "ended", "ended");
    assert!(store.update_room(&ended, 2).await.unwrap());

    let code = ConsultInvite {
        method: "code".to_owned(),
        ..invite(3, 3, 3_000)
    };
    for i in [
        invite(2, 1, 2_000),
        code,
        invite(1, 1, 1_000),
        invite(4, 2, 4_000),
    ] {
        store.insert_invite(&i).await.unwrap();
    }
    assert!(
        store
            .record_invite_check(&hex_id(1_001), 0, 1, false, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .record_invite_check(&hex_id(1_001), 1, 1, false, Some(Timestamp(1_500)))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_invite_check(&hex_id(1_003), 0, 5, true, None)
            .await
            .unwrap()
    );
    assert_eq!(store.revoke_invites(&hex_id(2)).await.unwrap(), 1);
}

pub async fn consult_records_are_dumped_last(store: &dyn Store) {
    populate(store).await;
    let records = dump_all(store).await;
    let tail: Vec<&BackupRecord> = records
        .iter()
        .skip_while(|r| !matches!(r, BackupRecord::ConsultRoom(_)))
        .collect();
    let ids: Vec<String> = tail
        .iter()
        .map(|r| match r {
            BackupRecord::ConsultRoom(r) => format!("room {}", r.id),
            BackupRecord::ConsultInvite(i) => format!("invite {}", i.id),
            other => format!("other {other:?}"),
        })
        .collect();
    let expected: Vec<String> = [1, 2, 3]
        .map(|n| format!("room {}", hex_id(n)))
        .into_iter()
        .chain([1, 2, 3, 4].map(|n| format!("invite {}", hex_id(1_000 + n))))
        .collect();
    assert_eq!(ids, expected);
    // The records are the stored ones, to the bit.
    for r in &tail {
        match r {
            BackupRecord::ConsultRoom(room) => {
                assert_eq!(store.room(&room.id).await.unwrap().as_ref(), Some(room));
            }
            BackupRecord::ConsultInvite(invite) => {
                assert_eq!(
                    store.invite(&invite.id).await.unwrap().as_ref(),
                    Some(invite)
                );
            }
            _ => {}
        }
    }
    let r1 = store.room(&hex_id(1)).await.unwrap().unwrap();
    assert_eq!((r1.version, r1.status.as_str()), (3, "ended"));
    assert_eq!(r1.consult_start, Some(Timestamp(150)));
}

/// A dump of consults loads into a second, empty store (of any backend) and
/// dumps back identically; the loaded store goes on from the stored
/// versions and failure counts, and still allows one room per appointment.
pub async fn consult_dump_load_round_trip(from: &dyn Store, to: &dyn Store) {
    populate(from).await;
    let records = dump_all(from).await;

    // An invite whose room is not in the backup is refused, and nothing
    // stays loaded.
    let mut orphan = records.clone();
    orphan.retain(|r| !matches!(r, BackupRecord::ConsultRoom(r) if r.id == hex_id(3)));
    assert!(to.load(orphan).await.is_err());
    assert_eq!(dump_all(to).await, Vec::new());

    to.load(records.clone()).await.unwrap();
    assert_eq!(dump_all(to).await, records);
    for n in [1, 2, 3] {
        assert_eq!(
            to.room(&hex_id(n)).await.unwrap(),
            from.room(&hex_id(n)).await.unwrap()
        );
        assert_eq!(
            to.invites_of_room(&hex_id(n)).await.unwrap(),
            from.invites_of_room(&hex_id(n)).await.unwrap()
        );
    }
    for who in [1, 2] {
        assert_eq!(
            to.rooms_of_clinician(&account_id(who), 100).await.unwrap(),
            from.rooms_of_clinician(&account_id(who), 100)
                .await
                .unwrap()
        );
    }
    assert_eq!(
        to.consultations_of_patient(&rid("p1")).await.unwrap(),
        from.consultations_of_patient(&rid("p1")).await.unwrap()
    );
    assert_eq!(
        room_ids(&to.consultations_of_patient(&rid("p1")).await.unwrap()),
        [hex_id(1)]
    );

    // The loaded store goes on where the source left off.
    let r1 = to.room(&hex_id(1)).await.unwrap().unwrap();
    assert_eq!(r1.version, 3);
    // A writer that read version 2 loses.
    let read_v2 = ConsultRoom {
        version: 2,
        ..r1.clone()
    };
    assert!(
        !to.update_room(&next(&read_v2, "open", "stale"), 2)
            .await
            .unwrap()
    );
    assert!(to.update_room(&next(&r1, "open", "v4"), 3).await.unwrap());
    assert!(
        !to.record_invite_check(&hex_id(1_001), 0, 1, false, None)
            .await
            .unwrap()
    );
    assert!(
        to.record_invite_check(&hex_id(1_001), 1, 2, false, None)
            .await
            .unwrap()
    );
    assert!(
        !to.record_invite_check(&hex_id(1_003), 5, 5, true, None)
            .await
            .unwrap(),
        "a locked invite stays locked"
    );
    assert!(
        !to.record_invite_check(&hex_id(1_004), 0, 0, false, Some(Timestamp(5)))
            .await
            .unwrap(),
        "a revoked invite stays revoked"
    );
    to.insert_room(&room(4, "p3", 1, 400)).await.unwrap();
    let mut again = room(5, "p3", 1, 500);
    again.appointment = rid("a2");
    assert!(matches!(
        to.insert_room(&again).await,
        Err(StoreError::RoomExists)
    ));
}
