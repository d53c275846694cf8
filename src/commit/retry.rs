//! How often and how patiently a conflicting commit is retried: the `commit.retry.*` table
//! properties, with Java's defaults and its exponential backoff (factor 2, capped, ~10% jitter,
//! bounded by a total timeout).

use std::collections::HashMap;
use std::time::Duration;

/// `commit.retry.num-retries`: retries after the first attempt.
pub const PROP_NUM_RETRIES: &str = "commit.retry.num-retries";
/// `commit.retry.min-wait-ms`: the first backoff.
pub const PROP_MIN_WAIT_MS: &str = "commit.retry.min-wait-ms";
/// `commit.retry.max-wait-ms`: the backoff cap.
pub const PROP_MAX_WAIT_MS: &str = "commit.retry.max-wait-ms";
/// `commit.retry.total-timeout-ms`: no retry starts after this much time since the first attempt.
pub const PROP_TOTAL_TIMEOUT_MS: &str = "commit.retry.total-timeout-ms";

/// Retry budget for commits that lose a compare-and-swap race (REST 409, SQL zero rows updated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (Java default 4, so 5 attempts in all).
    pub num_retries: u32,
    /// Wait before the first retry (Java default 100 ms).
    pub min_wait: Duration,
    /// Upper bound of one wait (Java default 60 s).
    pub max_wait: Duration,
    /// No retry is started once this much time has passed since the first attempt (Java default
    /// 30 min).
    pub total_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            num_retries: 4,
            min_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(60),
            total_timeout: Duration::from_secs(30 * 60),
        }
    }
}

impl RetryPolicy {
    /// Reads the `commit.retry.*` table properties; missing or unparsable values keep the Java
    /// defaults (Java's `PropertyUtil` would throw on garbage, but a daemon should not stop
    /// maintaining a table because of a typo in an unrelated writer setting).
    pub fn from_table_properties(props: &HashMap<String, String>) -> Self {
        let d = Self::default();
        let ms = |key: &str, default: Duration| {
            props
                .get(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_millis)
                .unwrap_or(default)
        };
        let num_retries = props
            .get(PROP_NUM_RETRIES)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(d.num_retries);
        let min_wait = ms(PROP_MIN_WAIT_MS, d.min_wait);
        // A max below the min would make the first wait the cap; keep the pair ordered.
        let max_wait = ms(PROP_MAX_WAIT_MS, d.max_wait).max(min_wait);
        Self {
            num_retries,
            min_wait,
            max_wait,
            total_timeout: ms(PROP_TOTAL_TIMEOUT_MS, d.total_timeout),
        }
    }

    /// The wait before retry number `retry` (1-based), without jitter: `min_wait * 2^(retry-1)`,
    /// capped at `max_wait`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(32);
        let factor = 1u64 << exp;
        let ms = (self.min_wait.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(ms).min(self.max_wait)
    }

    /// [`Self::backoff`] plus up to 10% random jitter, as Java's `Tasks` adds, so that competing
    /// committers do not retry in lock step.
    pub fn backoff_with_jitter(&self, retry: u32) -> Duration {
        let base = self.backoff(retry);
        let spread = (base.as_millis() as u64 / 10).max(1);
        // uuid v4 is already a dependency and random enough for jitter.
        let r = (uuid::Uuid::new_v4().as_u128() % u128::from(spread)) as u64;
        base + Duration::from_millis(r)
    }

    /// Whether retry number `retry` (1-based) may start after `elapsed` since the first attempt
    /// with a wait of `wait` before it.
    pub fn allows(&self, retry: u32, elapsed: Duration, wait: Duration) -> bool {
        retry <= self.num_retries && elapsed + wait <= self.total_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_java() {
        let p = RetryPolicy::from_table_properties(&HashMap::new());
        assert_eq!(p, RetryPolicy::default());
        assert_eq!(p.num_retries, 4);
        assert_eq!(p.min_wait, Duration::from_millis(100));
        assert_eq!(p.max_wait, Duration::from_secs(60));
        assert_eq!(p.total_timeout, Duration::from_secs(1800));
    }

    #[test]
    fn reads_properties_and_ignores_garbage() {
        let props = HashMap::from([
            (PROP_NUM_RETRIES.to_string(), "7".to_string()),
            (PROP_MIN_WAIT_MS.to_string(), "250".to_string()),
            (PROP_MAX_WAIT_MS.to_string(), "nope".to_string()),
            (PROP_TOTAL_TIMEOUT_MS.to_string(), " 5000 ".to_string()),
        ]);
        let p = RetryPolicy::from_table_properties(&props);
        assert_eq!(p.num_retries, 7);
        assert_eq!(p.min_wait, Duration::from_millis(250));
        assert_eq!(p.max_wait, Duration::from_secs(60));
        assert_eq!(p.total_timeout, Duration::from_secs(5));
    }

    #[test]
    fn max_wait_never_below_min_wait() {
        let props = HashMap::from([
            (PROP_MIN_WAIT_MS.to_string(), "500".to_string()),
            (PROP_MAX_WAIT_MS.to_string(), "100".to_string()),
        ]);
        let p = RetryPolicy::from_table_properties(&props);
        assert_eq!(p.max_wait, Duration::from_millis(500));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(p.backoff(20), Duration::from_secs(60));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(60));
        for retry in 1..6 {
            let j = p.backoff_with_jitter(retry);
            assert!(j >= p.backoff(retry));
            assert!(j <= p.backoff(retry) + p.backoff(retry) / 10 + Duration::from_millis(1));
        }
    }

    #[test]
    fn allows_respects_count_and_total_timeout() {
        let p = RetryPolicy {
            num_retries: 2,
            min_wait: Duration::from_millis(10),
            max_wait: Duration::from_millis(100),
            total_timeout: Duration::from_secs(1),
        };
        assert!(p.allows(1, Duration::ZERO, p.backoff(1)));
        assert!(p.allows(2, Duration::ZERO, p.backoff(2)));
        assert!(!p.allows(3, Duration::ZERO, p.backoff(3)));
        assert!(!p.allows(1, Duration::from_millis(995), Duration::from_millis(10)));
    }
}
