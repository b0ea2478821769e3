//! Failure throttling per account and factor, as a pure state machine (NIST SP 800-63B-4
//! §3.2.2): growing delays after a few free failures, and the factor disabled after at most
//! 100 consecutive failures. The caller stores [`FailureState`] per account and factor,
//! asks [`ThrottlePolicy::check`] before verifying (and does not verify when told to wait),
//! then records the outcome. Time is a parameter; nothing here reads the clock.

/// NIST's ceiling on consecutive failed attempts for one account and factor.
pub const NIST_MAX_FAILURES: u32 = 100;

/// How failures are throttled; [`ThrottlePolicy::new`] refuses a limit above NIST's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    free_failures: u32,
    base_delay_secs: u64,
    max_delay_secs: u64,
    disable_after: u32,
}

impl Default for ThrottlePolicy {
    /// Five free failures, then 2 s doubling up to 15 minutes, disabled after 100.
    fn default() -> ThrottlePolicy {
        ThrottlePolicy {
            free_failures: 5,
            base_delay_secs: 2,
            max_delay_secs: 15 * 60,
            disable_after: NIST_MAX_FAILURES,
        }
    }
}

/// Why a [`ThrottlePolicy`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ThrottleError {
    #[error("the failure limit must be between 1 and {NIST_MAX_FAILURES}")]
    LimitOutOfRange,
    #[error("the maximum delay is below the base delay")]
    MaxBelowBase,
}

/// What the caller stores per account and factor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureState {
    pub consecutive_failures: u32,
    pub last_failure_unix: Option<u64>,
}

/// Whether an attempt may be verified now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Allowed,
    /// Too soon after the last failure: refuse without verifying.
    WaitUntil {
        unix: u64,
    },
    /// The factor is disabled until an administrator or another factor resets it.
    Disabled,
}

impl ThrottlePolicy {
    pub fn new(
        free_failures: u32,
        base_delay_secs: u64,
        max_delay_secs: u64,
        disable_after: u32,
    ) -> Result<ThrottlePolicy, ThrottleError> {
        if disable_after == 0 || disable_after > NIST_MAX_FAILURES {
            return Err(ThrottleError::LimitOutOfRange);
        }
        if max_delay_secs < base_delay_secs {
            return Err(ThrottleError::MaxBelowBase);
        }
        Ok(ThrottlePolicy {
            free_failures,
            base_delay_secs,
            max_delay_secs,
            disable_after,
        })
    }

    /// The delay imposed after `failures` consecutive failures.
    pub fn delay_after(&self, failures: u32) -> u64 {
        let Some(extra) = failures.checked_sub(self.free_failures).filter(|&n| n > 0) else {
            return 0;
        };
        let factor = 1u64.checked_shl(extra - 1).unwrap_or(u64::MAX);
        self.base_delay_secs
            .saturating_mul(factor)
            .min(self.max_delay_secs)
    }

    pub fn check(&self, state: &FailureState, now_unix: u64) -> Attempt {
        if state.consecutive_failures >= self.disable_after {
            return Attempt::Disabled;
        }
        let delay = self.delay_after(state.consecutive_failures);
        match state.last_failure_unix {
            Some(last) if delay > 0 && now_unix < last.saturating_add(delay) => {
                Attempt::WaitUntil {
                    unix: last.saturating_add(delay),
                }
            }
            _ => Attempt::Allowed,
        }
    }

    /// The state after a failed verification at `now_unix`.
    pub fn record_failure(&self, state: FailureState, now_unix: u64) -> FailureState {
        FailureState {
            consecutive_failures: state
                .consecutive_failures
                .saturating_add(1)
                .min(self.disable_after),
            last_failure_unix: Some(now_unix),
        }
    }

    /// The state after a successful verification (or an administrator's reset).
    pub fn record_success(&self) -> FailureState {
        FailureState::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn limits_never_above_nist() {
        assert_eq!(
            ThrottlePolicy::new(5, 2, 900, 101),
            Err(ThrottleError::LimitOutOfRange)
        );
        assert_eq!(
            ThrottlePolicy::new(5, 2, 900, 0),
            Err(ThrottleError::LimitOutOfRange)
        );
        assert_eq!(
            ThrottlePolicy::new(5, 2, 1, 100),
            Err(ThrottleError::MaxBelowBase)
        );
        assert_eq!(
            ThrottlePolicy::new(5, 2, 900, 100),
            Ok(ThrottlePolicy::default())
        );
    }

    #[test]
    fn delays_grow_then_cap() {
        let p = ThrottlePolicy::default();
        let delays: Vec<u64> = (0..=10).map(|n| p.delay_after(n)).collect();
        assert_eq!(delays, [0, 0, 0, 0, 0, 0, 2, 4, 8, 16, 32]);
        assert_eq!(p.delay_after(20), 900);
        assert_eq!(p.delay_after(99), 900);
    }

    #[test]
    fn disabled_after_100_consecutive_failures_and_reset_on_success() {
        let p = ThrottlePolicy::default();
        let mut state = FailureState::default();
        let mut now = 1_000;
        for _ in 0..99 {
            match p.check(&state, now) {
                Attempt::Allowed => {}
                Attempt::WaitUntil { unix } => now = unix,
                Attempt::Disabled => panic!("disabled too early at {}", state.consecutive_failures),
            }
            assert_eq!(p.check(&state, now), Attempt::Allowed);
            state = p.record_failure(state, now);
        }
        assert_eq!(state.consecutive_failures, 99);
        assert!(matches!(p.check(&state, now), Attempt::WaitUntil { .. }));
        now += 900;
        assert_eq!(p.check(&state, now), Attempt::Allowed);
        state = p.record_failure(state, now);
        assert_eq!(p.check(&state, now + 1_000_000), Attempt::Disabled);
        assert_eq!(p.check(&p.record_success(), now), Attempt::Allowed);
    }

    #[test]
    fn wait_is_measured_from_the_last_failure() {
        let p = ThrottlePolicy::default();
        let state = FailureState {
            consecutive_failures: 6,
            last_failure_unix: Some(100),
        };
        assert_eq!(p.check(&state, 101), Attempt::WaitUntil { unix: 102 });
        assert_eq!(p.check(&state, 102), Attempt::Allowed);
    }

    proptest! {
        #[test]
        fn delays_are_monotonic_and_bounded(n in 0u32..200) {
            let p = ThrottlePolicy::default();
            prop_assert!(p.delay_after(n) <= p.delay_after(n + 1));
            prop_assert!(p.delay_after(n) <= 900);
            let state = p.record_failure(FailureState { consecutive_failures: n, last_failure_unix: None }, 0);
            prop_assert!(state.consecutive_failures <= NIST_MAX_FAILURES);
        }
    }
}
