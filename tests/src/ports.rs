//! Free TCP ports for Gunicorn and the exporter.
//!
//! Ports come from just below the kernel's ephemeral range, so the thousands of
//! client connections the tests open (which take ephemeral ports) cannot grab a
//! port between the moment it is chosen and the moment the server binds it. A
//! process-wide counter keeps parallel tests of one binary apart; a bind probe
//! without SO_REUSEADDR skips ports other programs hold and ports with sockets
//! lingering in TIME_WAIT (which would stop a server that binds without it).

use std::{
    net::SocketAddr,
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

use socket2::{Domain, Socket, Type};

/// Size of the range ports are taken from.
const SPAN: u32 = 8000;

fn range() -> (u32, u32) {
    static RANGE: OnceLock<(u32, u32)> = OnceLock::new();
    *RANGE.get_or_init(|| {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32768);
        let high = ephemeral_low.clamp(1024 + SPAN, 65535);
        (high - SPAN, high)
    })
}

/// A port on 127.0.0.1 that nothing listens on now and that no other call in this
/// process has returned (until the range wraps around).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let (low, high) = range();
    let span = high - low;
    // Start at a per-process offset so consecutive test binaries use different ports
    // (sockets of the previous binary may linger in TIME_WAIT).
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = (low + n) as u16;
        if bindable(port) {
            return port;
        }
    }
    panic!("no free TCP port in {low}..{high} on 127.0.0.1");
}

/// Whether a socket without SO_REUSEADDR (std's listeners set it; socket2's
/// do not unless asked) can bind 127.0.0.1:`port` now.
fn bindable(port: u16) -> bool {
    Socket::new(Domain::IPV4, Type::STREAM, None)
        .and_then(|s| s.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into()))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn skips_ports_in_use() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!bindable(l.local_addr().unwrap().port()));
        let p = free_port();
        assert!(bindable(p));
        assert_ne!(free_port(), p);
    }
}
