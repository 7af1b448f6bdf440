//! Waiting for a condition with a deadline. Every wait in the suite goes through
//! here: poll, and when the deadline passes report what was last seen.
//!
//! `TEST_TIMEOUT_SCALE=N` multiplies every deadline: `cargo xtask vmtest` sets
//! it in emulated VMs, where Python runs several times slower than on the
//! host, so the suite's deadlines keep their meaning there.

use std::{
    thread,
    time::{Duration, Instant},
};

/// How often conditions are re-checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `probe` until it returns `Ok` or `timeout` passes. `probe` returns
/// `Err(state)` describing what it saw while the condition does not hold; on
/// timeout that last state is returned in the error, after `what`.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let timeout = timeout * scale();
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(state) => {
                if start.elapsed() >= timeout {
                    return Err(format!(
                        "timed out after {:.1} s waiting for {what}; last seen: {state}",
                        timeout.as_secs_f64()
                    ));
                }
            }
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// `TEST_TIMEOUT_SCALE` (a whole number, 1 when unset or invalid).
pub fn scale() -> u32 {
    std::env::var("TEST_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}
