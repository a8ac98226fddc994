//! The engine's notion of "now".
//!
//! Production uses the system clock. Tests use a clock anchored to tokio's, so that
//! `tokio::time::pause()` + `advance()` moves message ages, retry times and expiry together
//! without a single real sleep.

use std::time::{Duration, SystemTime};

/// Where the engine reads the time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor: Option<(SystemTime, tokio::time::Instant)>,
}

impl Clock {
    /// The system clock (the default).
    pub fn system() -> Clock {
        Clock { anchor: None }
    }

    /// A clock that starts at the current system time and then advances with tokio's clock,
    /// so a paused tokio runtime controls it. Must be created inside a tokio runtime.
    pub fn tokio() -> Clock {
        Clock {
            anchor: Some((SystemTime::now(), tokio::time::Instant::now())),
        }
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        match self.anchor {
            None => SystemTime::now(),
            Some((wall, instant)) => wall + instant.elapsed(),
        }
    }

    /// How long ago `t` was (zero if `t` is in the future).
    pub fn since(&self, t: SystemTime) -> Duration {
        self.now().duration_since(t).unwrap_or_default()
    }

    /// The tokio instant at which this clock will read `t`, for `sleep_until`.
    pub fn deadline(&self, t: SystemTime) -> tokio::time::Instant {
        let wait = t.duration_since(self.now()).unwrap_or_default();
        tokio::time::Instant::now() + wait
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_the_paused_runtime() {
        let clock = Clock::tokio();
        let start = clock.now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let elapsed = clock.now().duration_since(start).unwrap();
        assert_eq!(elapsed.as_secs(), 3600);
        assert_eq!(clock.since(start).as_secs(), 3600);
    }
}
