//! The retry policy of the outbox: when a failed attempt is tried again
//! (exponential backoff with full jitter) and when a message is given up
//! (`dead`). Pure functions of the connector's [`DeliveryPolicy`], the
//! claim's window and a random source, so they are tested without a clock.

use rand::Rng;

use crate::manifest::DeliveryPolicy;
use crate::store::messages::Next;

/// The upper bound of the backoff before retry `n` (1-based: the retry after
/// the first failed attempt is 1): `backoff_initial_ms * 2^(n-1)`, capped at
/// `backoff_max_ms`.
pub fn backoff_cap_ms(policy: &DeliveryPolicy, n: i64) -> u64 {
    let exponent = u32::try_from(n.saturating_sub(1).max(0)).unwrap_or(u32::MAX).min(63);
    let factor = 1u64.checked_shl(exponent).unwrap_or(u64::MAX);
    policy
        .backoff_initial_ms
        .saturating_mul(factor)
        .min(policy.backoff_max_ms)
}

/// "Full jitter": a uniformly random delay in `[0, cap]`. Spreads the
/// retries of many messages that failed together (a provider outage)
/// instead of bringing them back in one wave.
pub fn backoff_ms<R: Rng + ?Sized>(policy: &DeliveryPolicy, n: i64, rng: &mut R) -> u64 {
    rng.random_range(0..=backoff_cap_ms(policy, n))
}

/// What follows a retryable failure of the `window_attempts`th attempt of
/// the current window (which started at `window_started_at`), at `now`
/// (epoch ms): another attempt after a backoff, or `dead` once the attempts
/// or the window's age are used up.
pub fn after_retryable<R: Rng + ?Sized>(
    policy: &DeliveryPolicy,
    window_attempts: i64,
    window_started_at: i64,
    now: i64,
    rng: &mut R,
) -> Next {
    if window_attempts >= i64::from(policy.max_attempts) {
        return Next::Dead;
    }
    let delay = i64::try_from(backoff_ms(policy, window_attempts, rng)).unwrap_or(i64::MAX);
    let at = now.saturating_add(delay);
    if at > window_end(policy, window_started_at) {
        return Next::Dead;
    }
    Next::RetryAt(at)
}

/// When the current retry window closes (epoch ms).
pub fn window_end(policy: &DeliveryPolicy, window_started_at: i64) -> i64 {
    let age = i64::try_from(policy.max_age_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    window_started_at.saturating_add(age)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            max_attempts: 4,
            max_age_s: 60,
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            rate_per_second: None,
        }
    }

    #[test]
    fn caps_double_then_saturate() {
        let p = policy();
        let caps: Vec<u64> = (1..=6).map(|n| backoff_cap_ms(&p, n)).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(backoff_cap_ms(&p, 10_000), 1_000);
        assert_eq!(backoff_cap_ms(&DeliveryPolicy::default(), 1), 1_000);
        assert_eq!(backoff_cap_ms(&DeliveryPolicy::default(), 20), 600_000);
    }

    #[test]
    fn jitter_stays_within_the_cap_and_varies() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<u64> = (0..200).map(|_| backoff_ms(&p, 3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= 400));
        assert!(delays.iter().any(|d| *d < 100) && delays.iter().any(|d| *d > 300));
    }

    #[test]
    fn dead_after_max_attempts_or_window() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(1);
        match after_retryable(&p, 1, 0, 1_000, &mut rng) {
            Next::RetryAt(at) => assert!((1_000..=1_100).contains(&at), "{at}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(after_retryable(&p, 4, 0, 1_000, &mut rng), Next::Dead);
        // The window (60 s) is over.
        assert_eq!(after_retryable(&p, 1, 0, 60_001, &mut rng), Next::Dead);
    }
}
