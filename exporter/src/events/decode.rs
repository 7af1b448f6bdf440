//! Ring-buffer records -> [`Event`]: the one place that knows what the
//! generic fields of the kernel's `abi::Event` mean for each kind.

use exporter_ebpf::abi::{
    self, FailedEvent, RECORD_HEADER, RECORD_PIECE, Record as _, RecordEvent,
};

/// Whether a dying worker still held its heartbeat file, which Gunicorn
/// closes right before it runs worker_exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartbeatAtExit {
    /// Its file was not known yet (it died while booting).
    Unknown,
    /// Still open: worker_exit did not run.
    Open,
    /// Closed: Gunicorn got to worker_exit.
    Closed,
}

/// What happened to a watched process, or a record it left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `master` forked `child`.
    Forked { child: u32, master: u32 },
    /// The last thread of `pid` exited at `at_ns` (monotonic) with the wait
    /// status `status`.
    Exited {
        pid: u32,
        master: u32,
        status: i32,
        heartbeat: HeartbeatAtExit,
        at_ns: u64,
    },
    /// `pid` called execve (a master re-executing on USR2; `old_master`
    /// forked it).
    Execed { pid: u32, old_master: u32 },
    /// `sender` generated `signal` for `target`.
    Signalled {
        target: u32,
        sender: u32,
        signal: i32,
    },
    /// `signal` was delivered to `pid`: to its handler, or to the default
    /// action.
    Delivered {
        pid: u32,
        signal: i32,
        handled: bool,
    },
    /// `master` reaped its dead `child` (wait status `status`).
    Reaped {
        master: u32,
        child: u32,
        status: i32,
    },
    /// Worker `pid` touched its heartbeat file for the first time: it booted
    /// (made by userspace, which watches the files).
    Booted { pid: u32, master: u32 },
    /// The OOM killer chose `pid`.
    OomChosen { pid: u32 },
    /// Discovery: untracked candidate `pid` forked `child`, its first.
    CandidateForked { pid: u32, child: u32 },
    /// A failed request.
    Failed(FailedEvent),
    /// A piece of a log record with a traceback.
    Record(Box<RecordEvent>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("a {len}-byte ring-buffer record is shorter than its kind's")]
    Short { len: usize },
    #[error("ring-buffer record of unknown kind {0}")]
    UnknownKind(u32),
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let short = || DecodeError::Short { len: bytes.len() };
    let h = abi::Event::from_bytes(bytes).ok_or_else(short)?;
    Ok(match h.kind {
        abi::event::FORK => Event::Forked {
            child: h.pid,
            master: h.other,
        },
        abi::event::EXIT => Event::Exited {
            pid: h.pid,
            master: h.other,
            status: h.value,
            heartbeat: match h.code {
                abi::heartbeat::OPEN => HeartbeatAtExit::Open,
                abi::heartbeat::CLOSED => HeartbeatAtExit::Closed,
                _ => HeartbeatAtExit::Unknown,
            },
            at_ns: h.ts_ns,
        },
        abi::event::EXEC => Event::Execed {
            pid: h.pid,
            old_master: h.other,
        },
        abi::event::SIGNAL => Event::Signalled {
            target: h.pid,
            sender: h.other,
            signal: h.value,
        },
        abi::event::DELIVER => Event::Delivered {
            pid: h.pid,
            signal: h.value,
            handled: h.code != 0,
        },
        abi::event::REAP => Event::Reaped {
            master: h.pid,
            child: h.other,
            status: h.value,
        },
        abi::event::BOOTED => Event::Booted {
            pid: h.pid,
            master: h.other,
        },
        abi::event::OOM => Event::OomChosen { pid: h.pid },
        abi::event::CANDIDATE_FORK => Event::CandidateForked {
            pid: h.pid,
            child: h.other,
        },
        abi::event::FAILED => Event::Failed(FailedEvent::from_bytes(bytes).ok_or_else(short)?),
        abi::event::RECORD => Event::Record(Box::new(record(bytes).ok_or_else(short)?)),
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

/// A record piece: its header, then as many bytes as it says it carries.
fn record(bytes: &[u8]) -> Option<RecordEvent> {
    let head = bytes.get(..RECORD_HEADER)?;
    let header = abi::Event::from_bytes(head)?;
    let len = u32::from_ne_bytes(head[RECORD_HEADER - 8..RECORD_HEADER - 4].try_into().ok()?);
    let data = bytes.get(RECORD_HEADER..RECORD_HEADER + (len as usize).min(RECORD_PIECE))?;
    let mut ev = RecordEvent {
        header,
        len: data.len() as u32,
        _pad: 0,
        bytes: [0; RECORD_PIECE],
    };
    ev.bytes[..data.len()].copy_from_slice(data);
    Some(ev)
}

/// The bytes the kernel sends for a lifecycle event (at time 7 ns), for
/// tests that go through the real decoder.
#[cfg(test)]
pub fn raw(kind: u32, pid: u32, other: u32, value: i32, code: i32) -> Vec<u8> {
    let h = abi::Event::new(kind, pid, other, value, code, 7);
    // SAFETY: abi::Event is plain integers.
    unsafe {
        std::slice::from_raw_parts(
            (&h as *const abi::Event).cast::<u8>(),
            size_of::<abi::Event>(),
        )
    }
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_kind_names_its_fields() {
        use abi::event::*;
        assert_eq!(
            decode(&raw(FORK, 3, 1, 0, 0)),
            Ok(Event::Forked {
                child: 3,
                master: 1
            })
        );
        assert_eq!(
            decode(&raw(EXIT, 3, 1, 9, abi::heartbeat::CLOSED)),
            Ok(Event::Exited {
                pid: 3,
                master: 1,
                status: 9,
                heartbeat: HeartbeatAtExit::Closed,
                at_ns: 7
            })
        );
        assert_eq!(
            decode(&raw(SIGNAL, 3, 1, 15, 0)),
            Ok(Event::Signalled {
                target: 3,
                sender: 1,
                signal: 15
            })
        );
        assert_eq!(
            decode(&raw(DELIVER, 3, 3, 15, 1)),
            Ok(Event::Delivered {
                pid: 3,
                signal: 15,
                handled: true
            })
        );
        assert_eq!(
            decode(&raw(REAP, 1, 3, 0, 0)),
            Ok(Event::Reaped {
                master: 1,
                child: 3,
                status: 0
            })
        );
        assert_eq!(
            decode(&raw(99, 0, 0, 0, 0)),
            Err(DecodeError::UnknownKind(99))
        );
        assert_eq!(
            decode(&raw(FORK, 3, 1, 0, 0)[..10]),
            Err(DecodeError::Short { len: 10 })
        );
        assert_eq!(
            decode(&raw(FAILED, 3, 1, 500, 0)),
            Err(DecodeError::Short {
                len: size_of::<abi::Event>()
            }),
            "a failed request is longer than its header"
        );
    }

    #[test]
    fn records_carry_only_their_bytes() {
        let mut bytes = vec![0u8; RECORD_HEADER];
        bytes[..4].copy_from_slice(&abi::event::RECORD.to_ne_bytes());
        let at = RECORD_HEADER - 8;
        bytes[at..at + 4].copy_from_slice(&5u32.to_ne_bytes());
        bytes.extend_from_slice(b"hello, and stale bytes");
        let Ok(Event::Record(r)) = decode(&bytes) else {
            panic!("not a record")
        };
        assert_eq!((r.len, &r.bytes[..5]), (5, &b"hello"[..]));
        assert!(decode(&bytes[..10]).is_err());
    }

    proptest! {
        /// Whatever the ring buffer holds, decoding returns, never panics.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
            let _ = decode(&bytes);
        }

        /// Any known kind with a full header decodes, whatever its fields.
        #[test]
        fn every_lifecycle_kind_decodes(
            kind in prop::sample::select(vec![1u32, 2, 3, 4, 5, 6, 8, 9]),
            pid: u32, other: u32, value: i32, code: i32,
        ) {
            prop_assert!(decode(&raw(kind, pid, other, value, code)).is_ok());
        }

        /// A record never claims more bytes than it carries.
        #[test]
        fn records_never_overstate(len: u32, body in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let mut bytes = vec![0u8; RECORD_HEADER];
            bytes[..4].copy_from_slice(&abi::event::RECORD.to_ne_bytes());
            bytes[RECORD_HEADER - 8..RECORD_HEADER - 4].copy_from_slice(&len.to_ne_bytes());
            bytes.extend_from_slice(&body);
            if let Ok(Event::Record(r)) = decode(&bytes) {
                prop_assert!(r.len as usize <= body.len().min(RECORD_PIECE));
                prop_assert_eq!(&r.bytes[..r.len as usize], &body[..r.len as usize]);
            }
        }
    }
}
