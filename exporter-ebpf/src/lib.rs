//! What the kernel side and userspace share.
//!
//! The eBPF programs (the `bin` target, built for `bpfel-unknown-none`) and the
//! exporter (built for the host) both use this library, so every record that
//! crosses the kernel boundary is declared once and every decision the kernel
//! makes about a request is a pure function tested on the host:
//!
//! - [`abi`]: `#[repr(C)]` map keys, values and ring-buffer events, map names.
//! - [`http`]: recognising a request line and a status line from a few bytes.
//! - [`buckets`]: histogram bucket index, exact at the boundaries.
//! - [`framing`]: where a response ends, from its headers and body framing.
//! - [`request`]: the per-connection state machine that turns reads and writes
//!   into finished requests.
//! - [`route`]: a request path's route key (numeric, UUID and long hex
//!   segments collapsed), computed a byte at a time.
//! - [`errlog`]: recognising a log record that carries a Python traceback
//!   (userspace reads its exception class).
//! - [`tracepoint`]: the tracepoint argument offsets the programs read.
#![cfg_attr(not(test), no_std)]

pub mod abi;
pub mod buckets;
pub mod errlog;
pub mod framing;
pub mod http;
pub mod request;
pub mod route;
pub mod tracepoint;
