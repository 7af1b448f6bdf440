//! Lifecycle flow, second stage: the watched Gunicorn as userspace knows it.
//! `state` takes the decoded events; `machine` maps them to Gunicorn's hooks
//! and restart reasons; the rest is what the state keeps (workers, their
//! heartbeats, failed requests and their tracebacks) or does (`--on` actions).

pub mod actions;
pub mod exceptions;
pub mod heartbeats;
mod machine;
pub mod state;
pub mod traceback;
pub mod workers;

pub use machine::{Change, Hook, Lifecycle, Occurrence, Reason, WorkerState, sig};
