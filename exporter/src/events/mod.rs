//! Lifecycle flow, first stage: what the kernel's ring buffer (and the
//! heartbeat watch) report, decoded once at the edge into typed events.

mod decode;
mod loops;

#[cfg(test)]
pub use decode::raw;
pub use decode::{Event, HeartbeatAtExit, decode};
pub use loops::{heartbeats, ring};
