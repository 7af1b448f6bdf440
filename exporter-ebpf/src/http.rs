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

/// A little-endian word of up to 8 token bytes, as a request line holds them.
const fn word(token: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < token.len() {
        w |= (token[i] as u64) << (8 * i);
        i += 1;
    }
    w
}

/// The known methods: (word, length, code).
const METHODS: [(u64, usize, u8); 9] = [
    (word(b"GET"), 3, method::GET),
    (word(b"HEAD"), 4, method::HEAD),
    (word(b"POST"), 4, method::POST),
    (word(b"PUT"), 3, method::PUT),
    (word(b"DELETE"), 6, method::DELETE),
    (word(b"CONNECT"), 7, method::CONNECT),
    (word(b"OPTIONS"), 7, method::OPTIONS),
    (word(b"TRACE"), 5, method::TRACE),
    (word(b"PATCH"), 5, method::PATCH),
];

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// The high bit of each byte of `w` equal to `byte` (exact per byte).
#[inline(always)]
fn bytes_equal(w: u64, byte: u8) -> u64 {
    let t = w ^ (ONES * byte as u64);
    !(((t & LOW7).wrapping_add(LOW7)) | t | LOW7)
}

/// The high bit of each byte of `w` that is an ASCII uppercase letter.
#[inline(always)]
fn uppercase(w: u64) -> u64 {
    let low = w & LOW7;
    // b >= 'A' (0x41) sets the high bit of b + 0x3F; b > 'Z' (0x5A) that of b + 0x25.
    (low.wrapping_add(ONES * 0x3F)) & !(low.wrapping_add(ONES * 0x25)) & !w & HIGH
}

/// The high bits of the bytes at indexes below `n` of a word.
#[inline(always)]
fn below(n: usize) -> u64 {
    if n >= 8 {
        HIGH
    } else {
        ((1u64 << (8 * n)) - 1) & HIGH
    }
}

/// The bytes at indexes below `n` of a word, all bits.
#[inline(always)]
fn keep(n: usize) -> u64 {
    (below(n) >> 7).wrapping_mul(0xFF)
}

/// The index of the lowest byte flagged in `mask`, 8 when none.
#[inline(always)]
fn first(mask: u64) -> usize {
    if mask == 0 {
        8
    } else {
        crate::framing::first_byte(mask)
    }
}

/// The little-endian word of `head[8 * i..8 * i + 8]`.
#[inline(always)]
fn head_word(head: &[u8; HEAD_LEN], i: usize) -> u64 {
    let mut w = 0u64;
    let mut b = 0;
    while b < 8 {
        w |= (head[(8 * i + b) & (HEAD_LEN - 1)] as u64) << (8 * b);
        b += 1;
    }
    w
}

/// A request line's start, as much as a head holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLine {
    /// [`method`] code.
    pub method: u8,
    /// [`line_hash`] of the line's first `hashed` bytes: the method, its
    /// space and the target's path (up to a space, `?`, CR or the head's
    /// end). Userspace hashes `METHOD /path` the same way to tie a logged
    /// exception to its request.
    pub hash: u32,
    pub hashed: u8,
}

/// The request line that starts `head[..len]` (`METHOD SP target`), or
/// `None` when the bytes do not start one: a method is an uppercase token of
/// 1 to 15 bytes, followed by a space and the first byte of a target (`/`,
/// `*` or an absolute URI's letter). Word operations, not byte loops: the
/// BPF verifier walks each exit of a byte loop as a path of its own.
#[inline(always)]
pub fn request_line(head: &[u8; HEAD_LEN], len: usize) -> Option<RequestLine> {
    let len = if len < HEAD_LEN { len } else { HEAD_LEN };
    let words = [
        head_word(head, 0),
        head_word(head, 1),
        head_word(head, 2),
        head_word(head, 3),
    ];
    // The method's end: the first space within the first 16 bytes.
    let (s0, s1) = (bytes_equal(words[0], b' '), bytes_equal(words[1], b' '));
    let sp = if s0 != 0 { first(s0) } else { 8 + first(s1) };
    if sp == 0 || sp >= 16 || sp + 1 >= len {
        return None;
    }
    // Every byte before it uppercase.
    let upper = (uppercase(words[0]) | !below(sp)) & HIGH == HIGH
        && (sp <= 8 || (uppercase(words[1]) | !below(sp - 8)) & HIGH == HIGH);
    let target = head[(sp + 1) & (HEAD_LEN - 1)];
    if !upper || !(target == b'/' || target == b'*' || target.is_ascii_alphabetic()) {
        return None;
    }
    let mut method = method::OTHER;
    if sp <= 8 {
        let token = words[0] & keep(sp);
        let mut i = 0;
        while i < METHODS.len() {
            if METHODS[i].0 == token && METHODS[i].1 == sp {
                method = METHODS[i].2;
            }
            i += 1;
        }
    }
    // The path ends at a space, `?` or CR after the target's start.
    let from = sp + 1;
    let mut end = HEAD_LEN;
    let mut i = 4;
    while i > 0 {
        i -= 1;
        let w = words[i];
        let mut ends = bytes_equal(w, b' ') | bytes_equal(w, b'?') | bytes_equal(w, b'\r');
        if from >= 8 * (i + 1) {
            ends = 0;
        } else if from > 8 * i {
            ends &= !below(from - 8 * i);
        }
        if ends != 0 {
            end = 8 * i + first(ends);
        }
    }
    let hashed = if end < len { end } else { len };
    Some(RequestLine {
        method,
        hash: hash_words(words, hashed),
        hashed: hashed as u8,
    })
}

/// Mixes the first `n` bytes of four words (the rest zeroed).
#[inline(always)]
fn hash_words(words: [u64; 4], n: usize) -> u32 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut i = 0;
    while i < 4 {
        let part = if n >= 8 * (i + 1) {
            words[i]
        } else if n <= 8 * i {
            0
        } else {
            words[i] & keep(n - 8 * i)
        };
        h = (h ^ part).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        i += 1;
    }
    (h ^ (h >> 32)) as u32
}

/// [`RequestLine::hash`] of a request line's bytes (`GET /path`), cut to
/// the `hashed` bytes the kernel hashed.
pub fn line_hash(line: &[u8], hashed: u8) -> u32 {
    let n = (hashed as usize).min(line.len()).min(HEAD_LEN);
    let mut bytes = [0u8; HEAD_LEN];
    bytes[..n].copy_from_slice(&line[..n]);
    hash_words(
        [
            head_word(&bytes, 0),
            head_word(&bytes, 1),
            head_word(&bytes, 2),
            head_word(&bytes, 3),
        ],
        n,
    )
}

/// The method of a request line, or `None` ([`request_line`]).
#[inline(always)]
pub fn request_method(head: &[u8; HEAD_LEN], len: usize) -> Option<u8> {
    request_line(head, len).map(|l| l.method)
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
    fn line_hashes_match_userspace() {
        let l = |bytes: &[u8]| {
            let (h, n) = head(bytes);
            request_line(&h, n).unwrap()
        };
        let boom = l(b"GET /boom?x=1 HTTP/1.1\r\n");
        assert_eq!((boom.method, boom.hashed), (method::GET, 9));
        assert_eq!(boom.hash, line_hash(b"GET /boom", 9));
        assert_ne!(boom.hash, line_hash(b"GET /bool", 9));
        let long = l(b"POST /users/123/orders/4567/items/89 HTTP/1.1");
        assert_eq!(long.hashed as usize, HEAD_LEN, "cut at the head's end");
        assert_eq!(
            long.hash,
            line_hash(b"POST /users/123/orders/4567/items/89", 32)
        );
        let (h, _) = head(b"GET /short HTTP/1.1");
        let short = request_line(&h, 7).unwrap();
        assert_eq!(
            (short.hashed, short.hash),
            (7, line_hash(b"GET /short", 7)),
            "short read"
        );
        let root = l(b"OPTIONS * HTTP/1.1");
        assert_eq!((root.method, root.hashed), (method::OPTIONS, 9));
        let odd = l(b"MKCALENDAR /cal HTTP/1.1");
        assert_eq!(
            (odd.method, odd.hash),
            (method::OTHER, line_hash(b"MKCALENDAR /cal", 15))
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
