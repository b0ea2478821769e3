use app::{NewAccount, Principal, SessionProblem, SignInError, SignInStep};
use model::ResourceType;
use serde_json::json;
use store::Role;

use crate::{T, setup};

const PW: &str = "correct horse battery staple 42";

async fn account(t: &T, username: &str, role: Role, patient: Option<&str>) {
    t.vigil
        .create_account(
            &Principal::Operator,
            NewAccount {
                username: username.into(),
                role,
                practitioner: None,
                patient: patient.map(|p| model::ResourceId::new(p).unwrap()),
                display_name: Some("Grace Hopper".into()),
                email: Some(format!("{username}@clinic.example")),
            },
            Some(PW),
        )
        .await
        .unwrap();
}

fn base32_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.chars().filter(|c| !c.is_whitespace()) {
        let v = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".find(c).unwrap() as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

fn code(t: &T, secret: &[u8]) -> String {
    let s = auth::totp::TotpSecret::from_bytes(secret.try_into().unwrap());
    let now = u64::try_from(t.vigil.now().0 / 1_000_000).unwrap();
    auth::totp::TotpConfig::default()
        .code(&s, now)
        .unwrap()
        .to_string()
}

/// Signs a physician in for the first time, enrols TOTP, returns the secret.
async fn enrol_totp(t: &T, username: &str) -> Vec<u8> {
    let SignInStep::Enrol { pending, .. } = t
        .vigil
        .sign_in_password(username, PW, "10.0.0.1")
        .await
        .unwrap()
    else {
        panic!("a workforce account without a factor must enrol one");
    };
    let a = t.vigil.enrolling_account(&pending).await.unwrap();
    let (b32, uri, ceremony) = t.vigil.totp_enrol_start(&a).await.unwrap();
    assert!(uri.starts_with("otpauth://totp/"));
    let secret = base32_decode(&b32);
    assert!(
        secret.len() * 8 >= 160,
        "TOTP secrets have at least 160 bits"
    );
    let codes = t
        .vigil
        .totp_enrol_finish(&a, &ceremony, &code(t, &secret))
        .await
        .unwrap();
    assert_eq!(
        codes.len(),
        10,
        "recovery codes are issued with the first factor"
    );
    t.vigil.finish_enrolment_sign_in(&pending).await.unwrap();
    secret
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_get_the_same_answer() {
    let t = setup().await;
    account(&t, "dr.hopper", Role::Physician, None).await;
    let started = std::time::Instant::now();
    let unknown = t
        .vigil
        .sign_in_password("nobody.here", PW, "10.0.0.1")
        .await
        .unwrap_err();
    let unknown_time = started.elapsed();
    let started = std::time::Instant::now();
    let wrong = t
        .vigil
        .sign_in_password("dr.hopper", "not the right password", "10.0.0.1")
        .await
        .unwrap_err();
    let wrong_time = started.elapsed();
    assert!(matches!(unknown, SignInError::Refused));
    assert!(matches!(wrong, SignInError::Refused));
    assert_eq!(unknown.to_string(), wrong.to_string());
    println!(
        "unknown user took {unknown_time:?}, wrong password took {wrong_time:?} (both run Argon2id)"
    );
    // Throttling treats an unknown name like a real one: five free failures
    // each, then a delay, so counting attempts reveals nothing either.
    for _ in 0..5 {
        let _ = t
            .vigil
            .sign_in_password("nobody.here", "x", "10.0.0.2")
            .await;
        let _ = t.vigil.sign_in_password("dr.hopper", "x", "10.0.0.3").await;
    }
    let a = t
        .vigil
        .sign_in_password("nobody.here", "x", "10.0.0.2")
        .await;
    let b = t.vigil.sign_in_password("dr.hopper", "x", "10.0.0.3").await;
    assert!(matches!(a, Err(SignInError::Throttled { .. })), "{a:?}");
    assert!(matches!(b, Err(SignInError::Throttled { .. })), "{b:?}");
}

#[tokio::test]
async fn password_then_totp_and_each_code_once() {
    let t = setup().await;
    account(&t, "dr.hopper", Role::Physician, None).await;
    let secret = enrol_totp(&t, "dr.hopper").await;
    t.clock.advance_secs(30);
    let SignInStep::SecondFactor { pending, totp, .. } = t
        .vigil
        .sign_in_password("DR.HOPPER", PW, "10.0.0.1")
        .await
        .unwrap()
    else {
        panic!("an enrolled account needs its second factor");
    };
    assert!(totp);
    let c = code(&t, &secret);
    let session = t
        .vigil
        .sign_in_totp(&pending, &c, "10.0.0.1")
        .await
        .unwrap();
    assert!(t.vigil.session(&session.cookie).await.is_ok());
    // The same code again, in a new sign-in: refused as a replay.
    let SignInStep::SecondFactor { pending, .. } = t
        .vigil
        .sign_in_password("dr.hopper", PW, "10.0.0.1")
        .await
        .unwrap()
    else {
        panic!()
    };
    let again = t.vigil.sign_in_totp(&pending, &c, "10.0.0.1").await;
    assert!(matches!(again, Err(SignInError::CodeReplayed)), "{again:?}");
    let wrong = t.vigil.sign_in_totp(&pending, "000000", "10.0.0.1").await;
    assert!(matches!(
        wrong,
        Err(SignInError::WrongCode | SignInError::CodeReplayed)
    ));
    // The next step's code works; the pending step then cannot be reused.
    t.clock.advance_secs(30);
    let next = code(&t, &secret);
    t.vigil
        .sign_in_totp(&pending, &next, "10.0.0.1")
        .await
        .unwrap();
    t.clock.advance_secs(30);
    let reuse = t
        .vigil
        .sign_in_totp(&pending, &code(&t, &secret), "10.0.0.1")
        .await;
    assert!(matches!(reuse, Err(SignInError::Expired)), "{reuse:?}");
}

#[tokio::test]
async fn a_factor_is_disabled_after_100_failures_and_a_reset_unlocks_it() {
    let t = setup().await;
    patient(&t, "p1").await;
    account(&t, "pat.lee", Role::Patient, Some("p1")).await;
    let mut last = None;
    for i in 0..100 {
        // Spread over addresses and time, as a patient attacker would: the
        // per-account counter still reaches its limit.
        t.clock.advance_secs(16 * 60);
        let r = t
            .vigil
            .sign_in_password(
                "pat.lee",
                "wrong password!",
                &format!("10.1.{}.{}", i / 200, i % 200),
            )
            .await;
        last = Some(r);
    }
    assert!(matches!(last, Some(Err(SignInError::Refused))), "{last:?}");
    t.clock.advance_secs(16 * 60);
    let locked = t.vigil.sign_in_password("pat.lee", PW, "10.2.0.1").await;
    assert!(
        matches!(locked, Err(SignInError::FactorDisabled)),
        "{locked:?}"
    );
    // Unlock path: a password reset by e-mailed link (the account has no
    // second factor) sets a new password and clears the counter.
    t.vigil
        .request_password_reset("pat.lee", "http://localhost:8080")
        .await
        .unwrap();
    let mail = t.vigil.outbox(&Principal::Operator, 10).await.unwrap();
    let body = &mail
        .iter()
        .find(|m| m.kind == "password-reset")
        .unwrap()
        .body;
    let link = body.lines().find(|l| l.contains("/reset/")).unwrap().trim();
    let token = link.rsplit('/').next().unwrap();
    let new_pw = "a brand new passphrase for pat";
    t.vigil
        .complete_password_reset(token, None, None, new_pw)
        .await
        .unwrap();
    let step = t
        .vigil
        .sign_in_password("pat.lee", new_pw, "10.2.0.1")
        .await;
    assert!(matches!(step, Ok(SignInStep::Done(_))), "{step:?}");
    // The link worked once.
    let again = t
        .vigil
        .complete_password_reset(token, None, None, "yet another passphrase here")
        .await;
    assert!(matches!(again, Err(SignInError::Expired)), "{again:?}");
}

async fn patient(t: &T, id: &str) {
    t.vigil
        .update(
            &Principal::Operator,
            ResourceType::Patient,
            &model::ResourceId::new(id).unwrap(),
            json!({"resourceType": "Patient", "id": id, "name": [{"family": "Lee"}]}),
            None,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn sessions_are_new_at_sign_in_expire_when_idle_and_die_with_the_account() {
    let t = setup().await;
    patient(&t, "p1").await;
    account(&t, "pat.lee", Role::Patient, Some("p1")).await;
    let SignInStep::Done(s1) = t
        .vigil
        .sign_in_password("pat.lee", PW, "10.0.0.1")
        .await
        .unwrap()
    else {
        panic!("a patient without a second factor signs in with the password")
    };
    // Fixation: a cookie the browser brought (or an attacker planted) is
    // never adopted; every sign-in mints a fresh id.
    let planted = "A".repeat(43);
    assert!(matches!(
        t.vigil.session(&planted).await,
        Err(SessionProblem::Missing)
    ));
    let SignInStep::Done(s2) = t
        .vigil
        .sign_in_password("pat.lee", PW, "10.0.0.1")
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_ne!(s1.cookie, s2.cookie);
    assert!(t.vigil.check_csrf(&s1.cookie, &s1.csrf));
    assert!(
        !t.vigil.check_csrf(&s2.cookie, &s1.csrf),
        "CSRF tokens are per session"
    );
    // Idle timeout (patients: 30 minutes by default).
    t.clock.advance_secs(29 * 60);
    assert!(
        t.vigil.session(&s1.cookie).await.is_ok(),
        "activity within the timeout"
    );
    t.clock.advance_secs(31 * 60);
    assert!(matches!(
        t.vigil.session(&s1.cookie).await,
        Err(SessionProblem::Expired)
    ));
    // Sign-out revokes server-side.
    let SignInStep::Done(s3) = t
        .vigil
        .sign_in_password("pat.lee", PW, "10.0.0.1")
        .await
        .unwrap()
    else {
        panic!()
    };
    t.vigil.sign_out(&s3.cookie).await.unwrap();
    assert!(t.vigil.session(&s3.cookie).await.is_err());
    // Deactivation: the live session and an access token fail on the next request.
    let SignInStep::Done(s4) = t
        .vigil
        .sign_in_password("pat.lee", PW, "10.0.0.1")
        .await
        .unwrap()
    else {
        panic!()
    };
    let token = t
        .vigil
        .issue_operator_token("pat.lee", "patient/*.rs", 900, "http://v", "http://v/fhir")
        .await
        .unwrap();
    assert!(
        t.vigil
            .authenticate_bearer(&token, "http://v/fhir")
            .await
            .is_ok()
    );
    let id = t.vigil.account_by_username("pat.lee").await.unwrap().id;
    t.vigil
        .deactivate_account(&Principal::Operator, &id)
        .await
        .unwrap();
    assert!(matches!(
        t.vigil.session(&s4.cookie).await,
        Err(SessionProblem::Deactivated)
    ));
    assert!(
        t.vigil
            .authenticate_bearer(&token, "http://v/fhir")
            .await
            .is_err()
    );
    let again = t.vigil.sign_in_password("pat.lee", PW, "10.0.0.1").await;
    assert!(matches!(again, Err(SignInError::Deactivated)), "{again:?}");
}

#[tokio::test]
async fn tokens_are_bound_to_audience_lifetime_signature_and_scopes() {
    let t = setup().await;
    patient(&t, "p1").await;
    patient(&t, "p2").await;
    account(&t, "pat.lee", Role::Patient, Some("p1")).await;
    account(&t, "dr.hopper", Role::Physician, None).await;
    let aud = "http://v/fhir";
    let token = t
        .vigil
        .issue_operator_token("pat.lee", "patient/*.rs", 600, "http://v", aud)
        .await
        .unwrap();
    // Wrong audience, tampered, expired.
    assert!(
        t.vigil
            .authenticate_bearer(&token, "http://other/fhir")
            .await
            .is_err()
    );
    let mut tampered = token.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    assert!(
        t.vigil
            .authenticate_bearer(std::str::from_utf8(&tampered).unwrap(), aud)
            .await
            .is_err()
    );
    let who = t.vigil.authenticate_bearer(&token, aud).await.unwrap();
    // patient/ scopes reach only the patient in context.
    let p1 = model::ResourceId::new("p1").unwrap();
    let p2 = model::ResourceId::new("p2").unwrap();
    assert!(t.vigil.read(&who, ResourceType::Patient, &p1).await.is_ok());
    let other = t.vigil.read(&who, ResourceType::Patient, &p2).await;
    assert!(
        matches!(other, Err(app::AppError::Forbidden(_))),
        "{other:?}"
    );
    let page = t
        .vigil
        .search(&who, ResourceType::Patient, &[])
        .await
        .unwrap();
    assert_eq!(
        page.matches.len(),
        1,
        "a search returns only the patient in context"
    );
    let write = t
        .vigil
        .create(
            &who,
            ResourceType::Patient,
            json!({"resourceType": "Patient"}),
        )
        .await;
    assert!(
        matches!(write, Err(app::AppError::Forbidden(_))),
        "read-only scopes cannot write"
    );
    // A patient account cannot get user/ scopes; nobody gets system/ this way.
    assert!(
        t.vigil
            .issue_operator_token("pat.lee", "user/*.rs", 600, "http://v", aud)
            .await
            .is_err()
    );
    assert!(
        t.vigil
            .issue_operator_token("dr.hopper", "system/*.rs", 600, "http://v", aud)
            .await
            .is_err()
    );
    assert!(
        t.vigil
            .issue_operator_token("dr.hopper", "user/*.rs", 7200, "http://v", aud)
            .await
            .is_err(),
        "at most one hour"
    );
    t.clock.advance_secs(606);
    assert!(
        t.vigil.authenticate_bearer(&token, aud).await.is_err(),
        "expired"
    );
}

#[tokio::test]
async fn passwords_are_checked_with_reasons_and_nothing_is_stored_on_refusal() {
    let t = setup().await;
    for (pw, why) in [
        ("short", "at least"),
        ("password12345678", "common"),
        ("grace-likes-long-walks", "name"),
        ("vigil vigil vigil vigil", ""),
    ] {
        let r = t
            .vigil
            .create_account(
                &Principal::Operator,
                NewAccount {
                    username: "grace".into(),
                    role: Role::Physician,
                    practitioner: None,
                    patient: None,
                    display_name: Some("Grace Hopper".into()),
                    email: None,
                },
                Some(pw),
            )
            .await;
        let msg = format!("{:?}", r.unwrap_err());
        assert!(msg.contains("password refused"), "{pw}: {msg}");
        assert!(msg.to_lowercase().contains(why), "{pw}: {msg}");
        assert!(!msg.contains(pw), "a refusal never echoes the password");
    }
    assert!(
        t.vigil.account_by_username("grace").await.is_err(),
        "nothing stored"
    );
    // Workforce: 12 code points with MFA; multi-byte characters count once each.
    let twelve = "ŽluťoučkýKůň"; // 12 code points, more bytes
    assert_eq!(twelve.chars().count(), 12);
    assert!(
        t.vigil
            .check_password("someone", None, Role::Physician, twelve)
            .is_ok()
    );
    assert!(
        t.vigil
            .check_password(
                "someone",
                None,
                Role::Physician,
                &twelve.chars().take(11).collect::<String>()
            )
            .is_err()
    );
    // A patient (password alone) needs 15.
    assert!(
        t.vigil
            .check_password("someone", None, Role::Patient, twelve)
            .is_err()
    );
}

#[tokio::test]
async fn passkey_sign_in_does_not_tell_who_exists() {
    let t = setup().await;
    account(&t, "dr.hopper", Role::Physician, None).await;
    let origin = "http://localhost:8080";
    let (known, c1) = t
        .vigil
        .passkey_sign_in_start(origin, "dr.hopper", "10.0.0.1")
        .await
        .unwrap();
    let (unknown, c2) = t
        .vigil
        .passkey_sign_in_start(origin, "nobody.here", "10.0.0.1")
        .await
        .unwrap();
    let shape = |v: &serde_json::Value| {
        let pk = &v["publicKey"];
        (
            pk["allowCredentials"].as_array().map(Vec::len),
            pk["userVerification"].clone(),
            pk["rpId"].clone(),
        )
    };
    assert_eq!(shape(&known), shape(&unknown));
    assert_ne!(c1, c2);
    // Finishing either with a made-up credential is refused the same way.
    let fake = json!({"id": "AAAA", "rawId": "AAAA", "type": "public-key",
        "response": {"authenticatorData": "AAAA", "clientDataJSON": "AAAA", "signature": "AAAA"},
        "extensions": {}});
    for c in [c1, c2] {
        let r = t
            .vigil
            .passkey_sign_in_finish(origin, &c, &fake, "10.0.0.1")
            .await;
        assert!(matches!(r, Err(SignInError::PasskeyRefused)), "{r:?}");
    }
}
