//! When to try again, when to warn, when to give up.

use std::time::Duration;

/// The retry schedule and the queue lifetimes. Defaults follow Postfix and sendmail: first retry
/// after 5 minutes, doubling, capped at 66 minutes (Postfix's 300 s / 4000 s), ±10 % jitter so
/// a queue that filled up during an outage does not retry in lock-step; a delay warning after 4
/// hours (`Timeout.queuewarn`) and a bounce after 5 days (`Timeout.queuereturn`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial: Duration,
    /// The longest delay between attempts.
    pub max_interval: Duration,
    /// Relative jitter applied to each delay, 0.0–0.5 (0.1 is ±10 %).
    pub jitter: f64,
    /// Send a delay-warning DSN once a message is this old; `None` never warns.
    pub warn_after: Option<Duration>,
    /// Bounce what is still undelivered once a message is this old.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(300),
            max_interval: Duration::from_secs(4000),
            jitter: 0.1,
            warn_after: Some(Duration::from_secs(4 * 3600)),
            max_age: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The delay after the `attempts`-th failed attempt, before jitter: `initial` doubled
    /// `attempts - 1` times, capped at `max_interval`.
    pub fn base_delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.initial
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max_interval)
            .min(self.max_interval)
    }

    /// The delay after the `attempts`-th failed attempt, with jitter.
    pub fn delay(&self, attempts: u32) -> Duration {
        let base = self.base_delay(attempts);
        let jitter = self.jitter.clamp(0.0, 0.5);
        if jitter == 0.0 {
            return base;
        }
        let factor = 1.0 + rand::random_range(-jitter..=jitter);
        base.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_five_minutes_up_to_sixty_six() {
        let p = RetryPolicy::default();
        let minutes: Vec<u64> = (1..=7).map(|n| p.base_delay(n).as_secs()).collect();
        assert_eq!(minutes, [300, 600, 1200, 2400, 4000, 4000, 4000]);
        assert_eq!(p.base_delay(u32::MAX), p.max_interval);
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let p = RetryPolicy::default();
        for _ in 0..1000 {
            let d = p.delay(1).as_secs_f64();
            assert!((270.0..=330.0).contains(&d), "{d}");
        }
        let exact = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(exact.delay(2), Duration::from_secs(600));
    }
}
