//! The lifecycle event loop: ring buffer -> decode -> state.

use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};
use exporter_ebpf::abi::{Event, ExceptionEvent, event};
use tokio::io::{Interest, unix::AsyncFd};

use crate::state::State;

pub async fn run(ring: RingBuf<MapData>, state: Arc<Mutex<State>>) -> anyhow::Result<()> {
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
            while let Some(record) = ring.next() {
                match Event::from_bytes(&record) {
                    Some(header) if header.kind == event::EXCEPTION => {
                        match ExceptionEvent::from_bytes(&record) {
                            Some(exception) => state.on_exception(&exception),
                            None => {
                                log::warn!("short exception event ({} bytes) ignored", record.len())
                            }
                        }
                    }
                    Some(event) => state.on_event(&event),
                    None => log::warn!("short lifecycle event ({} bytes) ignored", record.len()),
                }
            }
        }
        ready.clear_ready();
    }
}
