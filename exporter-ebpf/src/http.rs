//! Recognising HTTP/1.x from the first bytes of a read or a write.
//!
//! The kernel copies the first [`HEAD_LEN`] bytes of each buffer; `len` says how
//! many of them the syscall really transferred (the rest is stale memory).

/// Bytes of each buffer the kernel looks at: a status line, a chunk-size
/// line, or a request line's method and the start of its target.
pub const HEAD_LEN: usize = 32;

/// Method codes stored in maps. `OTHER` is a syntactically valid method that is
/// not one of the known ones; it keeps the label set bounded.
pub mod method {
    pub const GET: u8 = 1;
    pub const HEAD: u8 = 2;
    pub const POST: u8 = 3;
    pub const PUT: u8 = 4;
    pub const DELETE: u8 = 5;
    pub const CONNECT: u8 = 6;
    pub const OPTIONS: u8 = 7;
    pub const TRACE: u8 = 8;
    pub const PATCH: u8 = 9;
    pub const OTHER: u8 = 10;

    /// The label value for a method code (unknown codes read as `OTHER`).
    pub fn name(code: u8) -> &'static str {
        match code {
            GET => "GET",
            HEAD => "HEAD",
            POST => "POST",
            PUT => "PUT",
            DELETE => "DELETE",
            CONNECT => "CONNECT",
            OPTIONS => "OPTIONS",
            TRACE => "TRACE",
            PATCH => "PATCH",
            _ => "OTHER",
        }
    }
}

/// Packs up to 8 token bytes into a word, so methods compare as integers (the
/// BPF target has no memcmp).
const fn pack(token: &[u8]) -> u64 {
    let mut word = 0u64;
    let mut i = 0;
    while i < token.len() {
        word = (word << 8) | token[i] as u64;
        i += 1;
    }
    word
}

const GET: u64 = pack(b"GET");
const HEAD: u64 = pack(b"HEAD");
const POST: u64 = pack(b"POST");
const PUT: u64 = pack(b"PUT");
const DELETE: u64 = pack(b"DELETE");
const CONNECT: u64 = pack(b"CONNECT");
const OPTIONS: u64 = pack(b"OPTIONS");
const TRACE: u64 = pack(b"TRACE");
const PATCH: u64 = pack(b"PATCH");

/// The method of a request line (`METHOD SP target`), or `None` when the bytes
/// do not start one. A method is an uppercase token followed by a space and the
/// first byte of a request target (`/`, `*` or an absolute URI's letter).
#[inline(always)]
pub fn request_method(head: &[u8; HEAD_LEN], len: usize) -> Option<u8> {
    let len = if len < HEAD_LEN { len } else { HEAD_LEN };
    let mut word = 0u64;
    let mut sp = 0;
    while sp < len && head[sp].is_ascii_uppercase() {
        word = (word << 8) | head[sp] as u64;
        sp += 1;
    }
    if sp == 0 || sp + 1 >= len || head[sp] != b' ' {
        return None;
    }
    let target = head[sp + 1];
    if !(target == b'/' || target == b'*' || target.is_ascii_alphabetic()) {
        return None;
    }
    if sp > 8 {
        return Some(method::OTHER);
    }
    Some(match word {
        GET => method::GET,
        HEAD => method::HEAD,
        POST => method::POST,
        PUT => method::PUT,
        DELETE => method::DELETE,
        CONNECT => method::CONNECT,
        OPTIONS => method::OPTIONS,
        TRACE => method::TRACE,
        PATCH => method::PATCH,
        _ => method::OTHER,
    })
}

/// Bytes of a request target hashed at most: what fits in a head after the
/// shortest method.
pub const TARGET_MAX: usize = HEAD_LEN - 4;

/// FNV-1a over the request target's path as far as the head holds it (up to
/// a space, `?` or the head's end), and how many bytes were hashed. Userspace
/// hashes the path an exception record names the same way, to tie the record
/// to the request it interrupted ([`target_hash_of`]).
#[inline(always)]
pub fn target_hash(head: &[u8; HEAD_LEN], len: usize) -> (u32, u8) {
    let len = if len < HEAD_LEN { len } else { HEAD_LEN };
    let mut sp = 0;
    while sp < len && head[sp] != b' ' {
        sp += 1;
    }
    let mut hash = FNV_OFFSET;
    let mut n = 0u8;
    let mut i = sp + 1;
    while i < HEAD_LEN {
        if i >= len {
            break;
        }
        let b = head[i];
        if b == b' ' || b == b'?' || b == b'\r' {
            break;
        }
        hash = (hash ^ b as u32).wrapping_mul(FNV_PRIME);
        n += 1;
        i += 1;
    }
    (hash, n)
}

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// [`target_hash`] of a path (query string already removed) cut to the
/// `n` bytes the kernel hashed.
pub fn target_hash_of(path: &[u8], n: u8) -> u32 {
    let n = (n as usize).min(path.len());
    path[..n]
        .iter()
        .fold(FNV_OFFSET, |h, &b| (h ^ b as u32).wrapping_mul(FNV_PRIME))
}

/// The status code of a response status line (`HTTP/1.x NNN`), or `None`.
/// The code must be 100..=599 and be followed by a space or a CR.
#[inline(always)]
pub fn response_status(head: &[u8; HEAD_LEN], len: usize) -> Option<u16> {
    let h = head;
    let prefix = h[0] == b'H'
        && h[1] == b'T'
        && h[2] == b'T'
        && h[3] == b'P'
        && h[4] == b'/'
        && h[5] == b'1'
        && h[6] == b'.'
        && (h[7] == b'0' || h[7] == b'1')
        && h[8] == b' ';
    if len < 13 || !prefix {
        return None;
    }
    let (a, b, c) = (h[9], h[10], h[11]);
    if !(b'1'..=b'5').contains(&a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return None;
    }
    if h[12] != b' ' && h[12] != b'\r' {
        return None;
    }
    Some((a - b'0') as u16 * 100 + (b - b'0') as u16 * 10 + (c - b'0') as u16)
}

/// An interim (1xx) response: more of the same response follows. 101 Switching
/// Protocols is final for the HTTP exchange.
#[inline(always)]
pub fn is_interim(status: u16) -> bool {
    status < 200 && status != 101
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> ([u8; HEAD_LEN], usize) {
        let mut h = [b'X'; HEAD_LEN]; // stale bytes past `len` must not matter
        let n = bytes.len().min(HEAD_LEN);
        h[..n].copy_from_slice(&bytes[..n]);
        (h, bytes.len())
    }

    fn m(bytes: &[u8]) -> Option<u8> {
        let (h, n) = head(bytes);
        request_method(&h, n)
    }

    fn s(bytes: &[u8]) -> Option<u16> {
        let (h, n) = head(bytes);
        response_status(&h, n)
    }

    #[test]
    fn known_methods() {
        assert_eq!(m(b"GET /ok HTTP/1.1\r\n"), Some(method::GET));
        assert_eq!(m(b"POST /echo HTTP/1.1"), Some(method::POST));
        assert_eq!(m(b"OPTIONS * HTTP/1.1"), Some(method::OPTIONS));
        assert_eq!(m(b"CONNECT example:443"), Some(method::CONNECT));
        assert_eq!(m(b"GET http://x/ HTTP/1.1"), Some(method::GET));
        assert_eq!(m(b"DELETE /a"), Some(method::DELETE));
    }

    #[test]
    fn unknown_method_is_other() {
        assert_eq!(m(b"PROPFIND /dav HTTP/1.1"), Some(method::OTHER));
        assert_eq!(m(b"BREW /pot"), Some(method::OTHER));
    }

    #[test]
    fn not_a_request_line() {
        assert_eq!(m(b""), None);
        assert_eq!(m(b"GET"), None, "split inside the request line");
        assert_eq!(m(b"GET "), None, "no target byte yet");
        assert_eq!(m(b"get /lower"), None);
        assert_eq!(m(b" GET /"), None);
        assert_eq!(m(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(m(b"{\"json\": 1}"), None);
        assert_eq!(m(b"GET\t/"), None);
        assert_eq!(
            m(b"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF /"),
            None,
            "token fills the head"
        );
        assert_eq!(m(b"\x16\x03\x01\x02\x00"), None, "TLS client hello");
    }

    #[test]
    fn stale_bytes_past_len_are_ignored() {
        let (mut h, _) = head(b"GET /ok HTTP/1.1");
        assert_eq!(request_method(&h, 3), None);
        h[..3].copy_from_slice(b"PUT");
        assert_eq!(request_method(&h, 16), Some(method::PUT));
        let (h, _) = head(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(response_status(&h, 12), None);
    }

    #[test]
    fn status_lines() {
        assert_eq!(s(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(s(b"HTTP/1.0 404 Not Found"), Some(404));
        assert_eq!(s(b"HTTP/1.1 500\r\nContent"), Some(500));
        assert_eq!(s(b"HTTP/1.1 100 Continue"), Some(100));
        assert_eq!(s(b"HTTP/1.1 599 X"), Some(599));
    }

    #[test]
    fn not_a_status_line() {
        assert_eq!(s(b"HTTP/1.1 200"), None, "too short to be sure");
        assert_eq!(s(b"HTTP/2.0 200 OK\r\n"), None);
        assert_eq!(s(b"HTTP/1.2 200 OK\r\n"), None);
        assert_eq!(s(b"HTTP/1.1 600 OK\r\n"), None);
        assert_eq!(s(b"HTTP/1.1 099 OK\r\n"), None);
        assert_eq!(s(b"HTTP/1.1 20x OK\r\n"), None);
        assert_eq!(s(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(s(b"hello world, body"), None);
        assert_eq!(s(b"GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn interim() {
        assert!(is_interim(100));
        assert!(is_interim(103));
        assert!(!is_interim(101));
        assert!(!is_interim(200));
    }

    /// Random heads never panic, and agree with a straightforward reference.
    #[test]
    fn random_heads_match_reference() {
        fn reference_status(b: &[u8]) -> Option<u16> {
            let b = b.get(..13)?;
            let prefix_ok = b.starts_with(b"HTTP/1.0 ") || b.starts_with(b"HTTP/1.1 ");
            let digits = &b[9..12];
            if !prefix_ok
                || !digits.iter().all(u8::is_ascii_digit)
                || !(b[12] == b' ' || b[12] == b'\r')
            {
                return None;
            }
            let code = digits.iter().fold(0u16, |n, d| n * 10 + (d - b'0') as u16);
            (100..600).contains(&code).then_some(code)
        }
        fn reference_method(b: &[u8]) -> Option<()> {
            let sp = b.iter().position(|&c| !c.is_ascii_uppercase())?;
            let target = *b.get(sp + 1)?;
            (sp > 0
                && b[sp] == b' '
                && (target == b'/' || target == b'*' || target.is_ascii_alphabetic()))
            .then_some(())
        }
        let alphabet = b"GETPOSH/1. 0123456789\r\nHTTPxyz*";
        let mut seed = 0x9E3779B97F4A7C15u64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 17) as usize;
            let mut h = [0u8; HEAD_LEN];
            let mut x = seed;
            for byte in h.iter_mut() {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *byte = if x >> 60 == 0 {
                    (x >> 32) as u8
                } else {
                    alphabet[(x >> 33) as usize % alphabet.len()]
                };
            }
            if seed % 3 == 0 {
                h[..9].copy_from_slice(b"HTTP/1.1 ");
            }
            assert_eq!(
                response_status(&h, len),
                reference_status(&h[..len]),
                "{:?}",
                &h[..len]
            );
            assert_eq!(
                request_method(&h, len).is_some(),
                reference_method(&h[..len]).is_some(),
                "{:?}",
                &h[..len]
            );
        }
    }

    #[test]
    fn target_hashes_match_userspace() {
        let (h, n) = head(b"GET /boom?x=1 HTTP/1.1\r\n");
        assert_eq!(target_hash(&h, n), (target_hash_of(b"/boom", 5), 5));
        let (h, n) = head(b"POST /users/123/orders/4567/items/89 HTTP/1.1");
        let (hash, hashed) = target_hash(&h, n);
        assert_eq!(hashed as usize, HEAD_LEN - 5, "cut at the head's end");
        assert_eq!(
            hash,
            target_hash_of(b"/users/123/orders/4567/items/89", hashed)
        );
        assert_ne!(hash, target_hash_of(b"/users/123/orders/4567/items/8", 30));
        let (h, _) = head(b"GET /short HTTP/1.1");
        assert_eq!(
            target_hash(&h, 7),
            (target_hash_of(b"/sh", 3), 3),
            "short read"
        );
    }

    #[test]
    fn names_are_bounded() {
        assert_eq!(method::name(method::PATCH), "PATCH");
        assert_eq!(method::name(method::OTHER), "OTHER");
        assert_eq!(method::name(0), "OTHER");
        assert_eq!(method::name(200), "OTHER");
    }
}
