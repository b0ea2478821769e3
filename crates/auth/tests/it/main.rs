//! The identity story through the public API: choose a password, hash it, enrol TOTP and
//! recovery codes, sign in, and get throttled.

mod assertion;

use auth::hash::{HashConfig, Pepper, Verified, VerifyError};
use auth::password::{Context, PasswordPolicy, PasswordRefusal};
use auth::recovery::{self, RecoveryError};
use auth::throttle::{Attempt, ThrottlePolicy};
use auth::totp::{self, TotpConfig, TotpError, TotpSecret};
use rand::SeedableRng;
use rand::rngs::StdRng;

const CONTEXT: Context<'static> = Context {
    username: "nurse.kim",
    real_name: "Soo-ah Kim",
    organisation: "Riverside Clinic",
    has_second_factor: true,
};

#[test]
fn enrol_and_sign_in() {
    let mut rng = StdRng::seed_from_u64(42);
    let pepper = Pepper::from_bytes([9; 32]);
    let policy = PasswordPolicy::default();

    // Choosing a password: refusals say why.
    assert_eq!(
        policy.check("riverside-rocks!", &CONTEXT),
        Err(PasswordRefusal::ContainsContextWord(
            auth::password::ContextWord::Organisation
        ))
    );
    assert_eq!(
        policy.check("short pass", &CONTEXT),
        Err(PasswordRefusal::TooShort { minimum: 12 })
    );
    let password = "lantern orchard 7 tides";
    assert_eq!(policy.check(password, &CONTEXT), Ok(()));

    // Hashing; the real cost is exercised in the unit tests.
    let config = HashConfig::default();
    let phc = config.hash(password, &pepper, &mut rng).unwrap();
    assert_eq!(
        config.verify(password, &phc, &pepper),
        Ok(Verified {
            needs_rehash: false
        })
    );
    assert_eq!(
        config.verify("lantern orchard 7 tide", &phc, &pepper),
        Err(VerifyError::Mismatch)
    );

    // TOTP enrolment and sign-in, each code once.
    let secret = TotpSecret::generate(&mut rng);
    let uri = TotpConfig::default().otpauth_uri(&secret, "nurse.kim");
    assert!(uri.starts_with("otpauth://totp/Vigil:nurse.kim?secret="));
    assert!(!format!("{secret:?}").contains(secret.to_base32().as_str()));
    let now = 1_767_225_600;
    let code = TotpConfig::default().code(&secret, now).unwrap();
    let step = totp::verify(&code, &secret, now, None).unwrap();
    assert_eq!(
        totp::verify(&code, &secret, now + 5, Some(step)),
        Err(TotpError::Replayed)
    );

    // Recovery codes: each one once.
    let set = recovery::generate(recovery::DEFAULT_COUNT, &pepper, &mut rng);
    let mut stored: Vec<_> = set.iter().map(|(_, h)| *h).collect();
    let used = recovery::verify(set[3].0.as_str(), &stored, &pepper).unwrap();
    assert_eq!(used, 3);
    stored.remove(used);
    assert_eq!(
        recovery::verify(set[3].0.as_str(), &stored, &pepper),
        Err(RecoveryError::NoMatch)
    );
}

#[test]
fn throttled_then_disabled() {
    let policy = ThrottlePolicy::default();
    let mut state = Default::default();
    let mut now = 0;
    loop {
        match policy.check(&state, now) {
            Attempt::Allowed => state = policy.record_failure(state, now),
            Attempt::WaitUntil { unix } => now = unix,
            Attempt::Disabled => break,
        }
    }
    assert_eq!(state.consecutive_failures, 100);
    assert_eq!(
        policy.check(&policy.record_success(), now),
        Attempt::Allowed
    );
}
