//! How our binaries wait before trying again: one policy type and one
//! backoff for every retry they make (the importer's writes while MongoDB is
//! away or refusing, reconnects to either server, and the producer's move
//! to the next broker when its connection is lost).
//!
//! Backoff is capped exponential with jitter, so that tasks which failed
//! together (every writer, when the database goes away) do not all try
//! again at the same instant.

use rand::Rng;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before giving up (None: no limit on attempts).
    pub max_attempts: Option<u32>,
    /// How long a failure may last, from the first failed attempt, before
    /// giving up (None: no limit in time).
    pub window: Option<Duration>,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Also retry what the store refuses on its merits, not only outages:
    /// a writer then holds its batch (nothing acknowledged) until an
    /// operator fixes the cause. For the long-running importer, which must
    /// not drop or dead-letter good records because of a store fault.
    pub hold_refused: bool,
}

impl RetryPolicy {
    /// For the long-running importer's writers: never give up. Meanwhile
    /// consuming pauses (the writers stop taking records, the consumers'
    /// prefetch fills, the broker stops delivering).
    pub const FOREVER: RetryPolicy = RetryPolicy {
        max_attempts: None,
        window: None,
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        hold_refused: true,
    };

    /// For one-shot runs: an outage is retried for `window` from its first
    /// failed attempt (a replica-set election, a failover: MongoDB's take
    /// about ten seconds), then the run fails (its messages stay in the
    /// queue); a refusal fails it at once, with the store's own words.
    pub const fn one_shot(window: Duration) -> RetryPolicy {
        RetryPolicy {
            max_attempts: None,
            window: Some(window),
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(4),
            hold_refused: false,
        }
    }

    /// For reconnecting to a server that went away.
    pub const RECONNECT: RetryPolicy = RetryPolicy {
        max_attempts: None,
        window: None,
        first_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(5),
        hold_refused: false,
    };

    /// For the producer when its broker connection is lost mid-publish:
    /// reconnect (to the next address that answers) and resume, a few
    /// times over about half a minute, then fail the run.
    pub const FAILOVER: RetryPolicy = RetryPolicy {
        max_attempts: Some(8),
        window: None,
        first_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(5),
        hold_refused: false,
    };

    /// The wait before attempt `attempt + 1`: capped exponential, then a
    /// random half to all of it.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.first_backoff.saturating_mul(1 << attempt.min(16));
        let capped = exp.min(self.max_backoff);
        capped.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Whether attempt `attempt + 1` may follow a failure of attempt
    /// `attempt`, the failures having lasted `failing_for` since the first.
    pub fn may_retry(&self, attempt: u32, failing_for: Duration) -> bool {
        self.max_attempts.is_none_or(|max| attempt + 1 < max) && self.window.is_none_or(|window| failing_for < window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::one_shot(Duration::from_secs(60));
        let mut seen = std::collections::BTreeSet::new();
        for attempt in 0..20 {
            let wait = p.backoff(attempt);
            let full = p.first_backoff.saturating_mul(1 << attempt.min(16)).min(p.max_backoff);
            assert!(
                wait >= full / 2 && wait <= full,
                "attempt {attempt}: {wait:?} vs {full:?}"
            );
            seen.insert(wait);
        }
        assert!(seen.len() > 10, "jittered, not fixed: {seen:?}");
        assert!(p.backoff(10) <= p.max_backoff);
    }

    #[test]
    fn one_shot_gives_up_after_its_window_failover_after_its_attempts_and_forever_never() {
        let one_shot = RetryPolicy::one_shot(Duration::from_secs(30));
        assert!(one_shot.may_retry(1_000, Duration::from_millis(29_999)));
        assert!(!one_shot.may_retry(1, Duration::from_secs(30)));
        assert!(RetryPolicy::FAILOVER.may_retry(6, Duration::from_secs(3_600)));
        assert!(!RetryPolicy::FAILOVER.may_retry(7, Duration::ZERO));
        assert!(RetryPolicy::FOREVER.may_retry(u32::MAX - 1, Duration::MAX));
    }
}
