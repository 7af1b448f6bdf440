//! The event loops: the kernel's ring buffer (lifecycle events, failed
//! requests, traceback records) and the heartbeat files' first touches,
//! decoded at the edge and handed to the state.

use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};
use exporter_ebpf::abi::{Event, FailedEvent, Record as _, RecordEvent, event};
use futures_util::StreamExt as _;
use tokio::io::{Interest, unix::AsyncFd};

use crate::state::State;

/// One ring-buffer record, decoded by its kind.
enum Decoded {
    Lifecycle(Event),
    Failed(FailedEvent),
    Record(Box<RecordEvent>),
}

fn decode(bytes: &[u8]) -> Option<Decoded> {
    let header = Event::from_bytes(bytes)?;
    Some(match header.kind {
        event::FAILED => Decoded::Failed(FailedEvent::from_bytes(bytes)?),
        event::RECORD => Decoded::Record(Box::new(record(bytes)?)),
        _ => Decoded::Lifecycle(header),
    })
}

/// A record piece: its header, then as many bytes as it carries.
fn record(bytes: &[u8]) -> Option<RecordEvent> {
    const HEADER: usize = exporter_ebpf::abi::RECORD_HEADER;
    let head = bytes.get(..HEADER)?;
    let header = Event::from_bytes(head)?;
    let len = u32::from_ne_bytes(head[HEADER - 8..HEADER - 4].try_into().ok()?) as usize;
    let data = bytes.get(HEADER..HEADER + len.min(exporter_ebpf::abi::RECORD_PIECE))?;
    let mut ev = RecordEvent {
        header,
        len: data.len() as u32,
        _pad: 0,
        bytes: [0; exporter_ebpf::abi::RECORD_PIECE],
    };
    ev.bytes[..data.len()].copy_from_slice(data);
    Some(ev)
}

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
                    Some(Decoded::Lifecycle(ev)) => state.on_event(&ev),
                    Some(Decoded::Failed(ev)) => state.on_failed(&ev),
                    Some(Decoded::Record(ev)) => state.on_record(&ev),
                    None => log::warn!("short ring-buffer record ({} bytes) ignored", bytes.len()),
                }
            }
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_only_their_bytes() {
        let mut bytes = vec![0u8; exporter_ebpf::abi::RECORD_HEADER];
        bytes[..4].copy_from_slice(&event::RECORD.to_ne_bytes());
        let at = exporter_ebpf::abi::RECORD_HEADER - 8;
        bytes[at..at + 4].copy_from_slice(&5u32.to_ne_bytes());
        bytes.extend_from_slice(b"hello, and stale bytes");
        let Some(Decoded::Record(r)) = decode(&bytes) else {
            panic!("not a record")
        };
        assert_eq!((r.len, &r.bytes[..5]), (5, &b"hello"[..]));
        assert!(decode(&bytes[..10]).is_none());
    }
}
