//! Waiting for a condition with a deadline. Every wait in the suite goes through
//! here: poll, and when the deadline passes report what was last seen.

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
