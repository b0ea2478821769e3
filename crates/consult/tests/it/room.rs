//! Issue 7's refusals and rules, end to end through the pure API: invites,
//! the identity check, the room, TURN credentials and signaling.

use consult::invite::{self, CheckOutcome, CheckState, IdentityProof, Invite, InviteError};
use consult::room::{CompanionKind, Role, Room, RoomConfig, RoomError, RoomEvent, Status};
use consult::signal::{self, ClientMsg, ServerMsg};
use consult::turn::{self, TurnError};
use proptest::prelude::*;

const KEY: [u8; 32] = [42; 32];
const T0: i64 = 1_700_000_000;

fn room() -> Room {
    Room::open("room-1", "dr", "pat", T0 + 1800, RoomConfig::default(), T0)
        .unwrap()
        .0
}

fn admitted_room() -> Room {
    let r = room().check_in("pat", T0 + 10).unwrap().0;
    r.admit("dr", "pat", T0 + 20).unwrap().0
}

#[test]
fn expired_invite_refused() {
    let t = Invite::issue(&KEY, "room-1", "inv-1", T0 + 3600, T0).unwrap();
    assert_eq!(
        invite::parse(&KEY, &t, T0 + 3600),
        Err(InviteError::Expired)
    );
}

#[test]
fn tampered_token_refused() {
    let t = Invite::issue(&KEY, "room-1", "inv-1", T0 + 3600, T0).unwrap();
    // Flip one character of the payload and, separately, of the tag.
    for at in [2, t.len() - 2] {
        let mut bytes = t.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(bytes).unwrap();
        let got = invite::parse(&KEY, &forged, T0);
        assert!(
            matches!(got, Err(InviteError::BadSignature | InviteError::Malformed)),
            "{got:?}"
        );
    }
    // Another room's payload with this room's tag.
    let other = Invite::issue(&KEY, "room-2", "inv-1", T0 + 3600, T0).unwrap();
    let (p, _) = other.split_once('.').unwrap();
    let (_, tag) = t.split_once('.').unwrap();
    assert_eq!(
        invite::parse(&KEY, &format!("{p}.{tag}"), T0),
        Err(InviteError::BadSignature)
    );
    assert_eq!(
        invite::parse(&[0; 32], &t, T0),
        Err(InviteError::BadSignature)
    );
}

#[test]
fn get_style_parse_twice_still_valid() {
    let t = Invite::issue(&KEY, "room-1", "inv-1", T0 + 3600, T0).unwrap();
    let first = invite::parse(&KEY, &t, T0 + 1).unwrap();
    let second = invite::parse(&KEY, &t, T0 + 2).unwrap();
    assert_eq!(first, second);
    assert_eq!(first.room_id, "room-1");
}

#[test]
fn wrong_dob_five_times_locks_and_sixth_correct_refused() {
    let expected = IdentityProof::date_of_birth("1984-03-07").unwrap();
    let wrong = IdentityProof::date_of_birth("1984-07-03").unwrap();
    let mut state = CheckState::default();
    for i in 1..=5u8 {
        let (next, outcome) = invite::check(state, &expected, &wrong);
        state = next;
        if i < 5 {
            assert_eq!(
                outcome,
                CheckOutcome::Mismatch {
                    attempts_left: 5 - i
                }
            );
        } else {
            assert_eq!(outcome, CheckOutcome::LockedNow);
        }
    }
    assert!(state.locked);
    // The right answer, in another accepted form, no longer helps.
    let right = IdentityProof::date_of_birth("03/07/1984").unwrap();
    assert_eq!(
        invite::check(state, &expected, &right).1,
        CheckOutcome::Locked
    );
    // Before the lock, the same answer passes.
    assert_eq!(
        invite::check(CheckState::default(), &expected, &right).1,
        CheckOutcome::Verified
    );
    // The state survives storage.
    let json = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<CheckState>(&json).unwrap(), state);
}

#[test]
fn one_time_code_check() {
    let expected = IdentityProof::one_time_code("48213377").unwrap();
    let given = IdentityProof::one_time_code("4821-3377").unwrap();
    assert_eq!(
        invite::check(CheckState::default(), &expected, &given).1,
        CheckOutcome::Verified
    );
    let dob = IdentityProof::date_of_birth("1984-03-07").unwrap();
    assert!(matches!(
        invite::check(CheckState::default(), &expected, &dob).1,
        CheckOutcome::Mismatch { .. }
    ));
}

#[test]
fn third_uninvited_joiner_refused() {
    let r = admitted_room();
    let r = r
        .approve_companion("dr", "interp", CompanionKind::Interpreter, T0 + 30)
        .unwrap()
        .0;
    let (r, ev) = r.check_in("interp", T0 + 31).unwrap();
    assert_eq!(
        ev,
        vec![RoomEvent::CheckedIn {
            participant: "interp".into(),
            role: Role::Companion(CompanionKind::Interpreter)
        }]
    );
    assert_eq!(r.check_in("stranger", T0 + 32), Err(RoomError::NotInvited));
    // Even an approval cannot add a second companion while one is present.
    assert_eq!(
        r.approve_companion("dr", "family", CompanionKind::Family, T0 + 33),
        Err(RoomError::Full)
    );
    // A companion nobody approved is refused even in an otherwise empty room.
    assert_eq!(
        room().check_in("family", T0 + 1),
        Err(RoomError::NotInvited)
    );
}

#[test]
fn clinician_only_admission_lock_and_end() {
    let r = room().check_in("pat", T0 + 10).unwrap().0;
    assert_eq!(r.admit("pat", "pat", T0 + 11), Err(RoomError::NotClinician));
    assert_eq!(r.lock("pat", T0 + 11), Err(RoomError::NotClinician));
    assert_eq!(r.end("pat", T0 + 11), Err(RoomError::NotClinician));
    let (r, ev) = r.admit("dr", "pat", T0 + 20).unwrap();
    assert!(ev.contains(&RoomEvent::ConsultStarted {
        clinician: "dr".into(),
        patient: "pat".into(),
        start: T0 + 20
    }));
    assert_eq!(r.consult_window(), Some((T0 + 20, T0 + 1800 + 30 * 60)));

    let locked = r.lock("dr", T0 + 30).unwrap().0;
    let locked = locked
        .approve_companion("dr", "fam", CompanionKind::Family, T0 + 31)
        .unwrap()
        .0;
    assert_eq!(locked.check_in("fam", T0 + 32), Err(RoomError::Locked));

    let (ended, _) = r.end("dr", T0 + 600).unwrap();
    assert_eq!(ended.consult_window(), Some((T0 + 20, T0 + 600 + 30 * 60)));
    assert_eq!(ended.check_in("pat", T0 + 601), Err(RoomError::Ended));
    assert_eq!(ended.admit("dr", "pat", T0 + 601), Err(RoomError::Ended));
    assert_eq!(ended.unlock("dr", T0 + 601), Err(RoomError::Ended));
    assert!(!ended.is_admitted("pat"));
    // No admission of the patient, no consult relationship.
    assert_eq!(room().consult_window(), None);
}

#[test]
fn reconnect_within_grace_keeps_admission_after_grace_back_to_waiting() {
    let r = admitted_room().disconnect("pat", T0 + 100).unwrap().0;
    assert!(r.is_admitted("pat"));
    let (back, ev) = r.reconnect("pat", T0 + 220).unwrap();
    assert_eq!(
        ev,
        vec![RoomEvent::Reconnected {
            participant: "pat".into()
        }]
    );
    assert!(back.is_admitted("pat"));

    let (late, ev) = r.reconnect("pat", T0 + 221).unwrap();
    assert_eq!(
        ev,
        vec![RoomEvent::ReturnedToWaiting {
            participant: "pat".into()
        }]
    );
    assert_eq!(late.participant("pat").unwrap().status, Status::Waiting);
    // Re-admission works and does not restart the consult window.
    let readmitted = late.admit("dr", "pat", T0 + 230).unwrap();
    assert_eq!(readmitted.0.consult_window().unwrap().0, T0 + 20);
    assert!(
        !readmitted
            .1
            .iter()
            .any(|e| matches!(e, RoomEvent::ConsultStarted { .. }))
    );

    // The periodic sweep does the same without a reconnect.
    assert!(r.expire_disconnections(T0 + 220).is_none());
    let (swept, _) = r.expire_disconnections(T0 + 221).unwrap();
    assert!(!swept.is_admitted("pat"));
}

#[test]
fn leave_and_rejoin_needs_admission() {
    let r = admitted_room().leave("pat", T0 + 50).unwrap().0;
    assert_eq!(r.participant("pat").unwrap().status, Status::Left);
    let r = r.check_in("pat", T0 + 60).unwrap().0;
    assert!(!r.is_admitted("pat"));
    let denied = r.deny("dr", "pat", T0 + 61).unwrap().0;
    assert_eq!(denied.check_in("pat", T0 + 62), Err(RoomError::Removed));
}

#[test]
fn room_state_survives_storage() {
    let r = admitted_room();
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<Room>(&json).unwrap(), r);
}

#[test]
fn foreign_origin_refused() {
    let allowed = ["https://vigil.example.org"];
    assert!(signal::origin_allowed(
        Some("https://vigil.example.org"),
        &allowed
    ));
    assert!(!signal::origin_allowed(
        Some("https://attacker.example"),
        &allowed
    ));
    assert!(!signal::origin_allowed(Some("null"), &allowed));
    assert!(!signal::origin_allowed(None, &allowed));
}

#[test]
fn expired_turn_credential_refused() {
    let secret = b"coturn-static-auth-secret";
    let c = turn::mint(secret, "pat", T0, turn::DEFAULT_TTL_SECS).unwrap();
    assert_eq!(
        turn::verify(secret, &c.username, &c.credential, T0 + 599),
        Ok(())
    );
    assert_eq!(
        turn::verify(secret, &c.username, &c.credential, T0 + 600),
        Err(TurnError::Expired)
    );
}

fn offer(to: &str) -> ClientMsg {
    ClientMsg::Offer {
        to: to.into(),
        sdp: "v=0".into(),
    }
}

#[test]
fn routing_never_delivers_media_to_a_waiting_participant() {
    let r = room().check_in("pat", T0 + 10).unwrap().0;
    // Clinician → waiting patient: refused back to the clinician only.
    let out = signal::route(&r, "dr", offer("pat"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "dr");
    assert!(matches!(out[0].1, ServerMsg::Error { .. }));
    // Waiting patient → clinician: only its own status comes back.
    assert_eq!(
        signal::route(&r, "pat", offer("dr")),
        vec![("pat".to_owned(), ServerMsg::Waiting)]
    );
    assert_eq!(
        signal::route(
            &r,
            "pat",
            ClientMsg::Chat {
                text: "hello".into(),
                override_reason: None,
            }
        ),
        vec![("pat".to_owned(), ServerMsg::Waiting)]
    );
    // A stranger gets an error and nothing is relayed.
    let out = signal::route(&r, "stranger", offer("dr"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "stranger");

    // After admission, media flows both ways, to the named peer only.
    let r = r.admit("dr", "pat", T0 + 20).unwrap().0;
    assert_eq!(
        signal::route(&r, "dr", offer("pat")),
        vec![(
            "pat".to_owned(),
            ServerMsg::Offer {
                from: "dr".into(),
                sdp: "v=0".into()
            }
        )]
    );
    // A waiting companion receives neither chat nor media.
    let r = r
        .approve_companion("dr", "fam", CompanionKind::Family, T0 + 30)
        .unwrap()
        .0
        .check_in("fam", T0 + 31)
        .unwrap()
        .0;
    let out = signal::route(
        &r,
        "pat",
        ClientMsg::Chat {
            text: "hi".into(),
            override_reason: None,
        },
    );
    assert_eq!(
        out,
        vec![(
            "dr".to_owned(),
            ServerMsg::Chat {
                from: "pat".into(),
                text: "hi".into()
            }
        )]
    );
    assert!(
        signal::route(&r, "dr", offer("fam"))
            .iter()
            .all(|(to, _)| to != "fam")
    );
}

#[test]
fn notify_tells_waiting_participants_only_their_status() {
    let (r, ev) = room().check_in("pat", T0 + 10).unwrap();
    assert_eq!(
        signal::notify(&r, &ev),
        vec![("pat".to_owned(), ServerMsg::Waiting)]
    );
    let (r, ev) = r.admit("dr", "pat", T0 + 20).unwrap();
    let pushes = signal::notify(&r, &ev);
    assert!(pushes.contains(&("pat".to_owned(), ServerMsg::Admitted)));
    assert!(pushes.contains(&(
        "dr".to_owned(),
        ServerMsg::PeerJoined {
            participant: "pat".into()
        }
    )));
}

#[derive(Debug, Clone)]
enum Cmd {
    Approve(usize, usize, bool),
    CheckIn(usize),
    Admit(usize, usize),
    Deny(usize, usize),
    Lock(usize),
    Unlock(usize),
    Leave(usize),
    End(usize),
    Disconnect(usize),
    Reconnect(usize),
    Expire,
    Route(usize, usize),
}

const PEOPLE: [&str; 6] = ["dr", "pat", "interp", "fam", "stranger", "other-dr"];

fn cmd() -> impl Strategy<Value = Cmd> {
    let who = || 0..PEOPLE.len();
    prop_oneof![
        (who(), who(), any::<bool>()).prop_map(|(a, b, c)| Cmd::Approve(a, b, c)),
        who().prop_map(Cmd::CheckIn),
        (who(), who()).prop_map(|(a, b)| Cmd::Admit(a, b)),
        (who(), who()).prop_map(|(a, b)| Cmd::Deny(a, b)),
        who().prop_map(Cmd::Lock),
        who().prop_map(Cmd::Unlock),
        who().prop_map(Cmd::Leave),
        who().prop_map(Cmd::End),
        who().prop_map(Cmd::Disconnect),
        who().prop_map(Cmd::Reconnect),
        Just(Cmd::Expire),
        (who(), who()).prop_map(|(a, b)| Cmd::Route(a, b)),
    ]
}

proptest! {
    #[test]
    fn random_command_sequences_keep_the_rules(
        cmds in proptest::collection::vec((cmd(), 0i64..200), 0..60)
    ) {
        let mut r = room();
        let mut now = T0;
        for (c, dt) in cmds {
            now += dt;
            let before = r.clone();
            let step = match c {
                Cmd::Approve(by, p, interp) => {
                    let kind = if interp { CompanionKind::Interpreter } else { CompanionKind::Family };
                    r.approve_companion(PEOPLE[by], PEOPLE[p], kind, now)
                }
                Cmd::CheckIn(p) => r.check_in(PEOPLE[p], now),
                Cmd::Admit(by, p) => {
                    let res = r.admit(PEOPLE[by], PEOPLE[p], now);
                    if res.is_ok() {
                        prop_assert_eq!(PEOPLE[by], "dr", "a non-clinician admitted");
                        prop_assert!(before.state != consult::room::RoomState::Ended);
                    }
                    res
                }
                Cmd::Deny(by, p) => r.deny(PEOPLE[by], PEOPLE[p], now),
                Cmd::Lock(by) => r.lock(PEOPLE[by], now),
                Cmd::Unlock(by) => r.unlock(PEOPLE[by], now),
                Cmd::Leave(p) => r.leave(PEOPLE[p], now),
                Cmd::End(by) => r.end(PEOPLE[by], now),
                Cmd::Disconnect(p) => r.disconnect(PEOPLE[p], now),
                Cmd::Reconnect(p) => r.reconnect(PEOPLE[p], now),
                Cmd::Expire => r.expire_disconnections(now).ok_or(RoomError::WrongStatus),
                Cmd::Route(from, to) => {
                    for (dest, msg) in signal::route(&r, PEOPLE[from], offer(PEOPLE[to])) {
                        if matches!(msg, ServerMsg::Offer { .. }) {
                            prop_assert!(r.is_admitted(&dest) && r.is_admitted(PEOPLE[from]));
                        } else {
                            prop_assert_eq!(dest.as_str(), PEOPLE[from]);
                        }
                    }
                    Err(RoomError::WrongStatus)
                }
            };
            if before.state == consult::room::RoomState::Ended {
                prop_assert!(step.is_err(), "an ended room accepted a command");
            }
            if let Ok((next, _)) = step {
                r = next;
            }
            let others: Vec<_> = r.participants.iter().filter(|p| p.role != Role::Clinician).collect();
            prop_assert!(others.iter().filter(|p| p.is_present()).count() <= r.limit);
            prop_assert!(others.iter().filter(|p| p.is_present() && p.role == Role::Patient).count() <= 1);
            prop_assert!(others.iter().filter(|p| p.is_present() && matches!(p.role, Role::Companion(_))).count() <= 1);
            for p in &others {
                if p.is_present() {
                    prop_assert!(p.role == Role::Patient || p.approved_companion);
                    // A companion is someone the clinician approved, never a walk-in.
                    prop_assert!(
                        p.role == Role::Patient
                            || r.approved_companions.iter().any(|(id, _)| id == &p.id)
                    );
                }
            }
            if r.state == consult::room::RoomState::Ended {
                prop_assert!(others.iter().all(|p| !p.is_admitted()));
            }
        }
    }
}
