//! The event loops: the kernel's ring buffer (lifecycle events, failed
//! requests, traceback records) and the heartbeat files' first touches. Each
//! batch is handed to the state, which publishes what scrapes see at its end.

use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};
use futures_util::StreamExt as _;
use tokio::io::{Interest, unix::AsyncFd};

use super::decode;
use crate::lifecycle::state::State;

pub async fn ring(ring: RingBuf<MapData>, state: Arc<Mutex<State>>) -> anyhow::Result<()> {
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd owns
    // the ring buffer, and never replaces it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {}", e.into_parts().1))?;
    loop {
        let mut ready = ring.readable_mut().await?;
        {
            let ring = ready.get_inner_mut();
            let mut state = state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            while let Some(bytes) = ring.next() {
                match decode(&bytes) {
                    Ok(ev) => state.on_event(&ev),
                    Err(e) => log::warn!("{e}: ignored"),
                }
            }
            state.end_batch();
        }
        ready.clear_ready();
    }
}

/// First touches of the workers' heartbeat files.
pub async fn heartbeats(
    mut stream: inotify::EventStream<Vec<u8>>,
    state: Arc<Mutex<State>>,
) -> anyhow::Result<()> {
    while let Some(ev) = stream.next().await {
        let ev = ev?;
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.on_heartbeat(&ev.wd);
        state.end_batch();
    }
    Ok(())
}
