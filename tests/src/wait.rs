//! Waiting on conditions with deadlines (never fixed sleeps).

use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// Polls `probe` every 100 ms until it returns `Ok`, for at most `timeout`.
///
/// `probe` returns `Ok(value)` when the condition holds, or `Err(observed)` describing what it saw
/// instead; on timeout the error names `what` and shows the last `observed` state, so a failing
/// test says why. The probe runs at least once, even with a zero timeout.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    probe: impl FnMut() -> Result<T, String>,
) -> Result<T> {
    wait_until_with(timeout, Duration::from_millis(100), what, probe)
}

/// [`wait_until`] with a chosen polling interval.
pub fn wait_until_with<T>(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        let last = match probe() {
            Ok(v) => return Ok(v),
            Err(observed) => observed,
        };
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(Error::Timeout {
                what: what.to_string(),
                after: elapsed,
                last,
            });
        }
        std::thread::sleep(every.min(timeout - elapsed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let v = wait_until(Duration::from_secs(5), "n to reach 3", || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(format!("n = {n}"))
            }
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn timeout_shows_the_last_observed_state() {
        let mut n = 0;
        let err = wait_until_with(
            Duration::from_millis(50),
            Duration::from_millis(10),
            "never",
            || -> Result<(), String> {
                n += 1;
                Err(format!("attempt {n}"))
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for never"), "{err}");
        assert!(err.contains(&format!("attempt {n}")), "{err}");
    }
}
