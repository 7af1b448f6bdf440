//! Where an HTTP/1.x response ends, read from its own framing: the header
//! block's end, then `Content-Length` body bytes, or chunks up to the last
//! one, or nothing for a response that has no body (HEAD, 204, 304).
//!
//! These are the pieces the connection state machine ([`crate::request`])
//! drives; every one is a pure function over a few bytes, written so the BPF
//! verifier accepts it (fixed-size arrays, masked indexes, bounded loops):
//!
//! - [`newlines`] finds the `\n` bytes of an 8-byte word (SWAR), so a header
//!   block is scanned a word at a time, not a byte at a time;
//! - [`classify`] tells what a header line says about the framing;
//! - [`size_line`] parses a chunk-size line.

/// Header bytes scanned per response, across all its writes. A header block
/// longer than this (or a framing header beyond it) leaves the response
/// [`kind::UNFRAMED`]: the worker's own signals end it, and it is counted.
pub const HEADER_BOUND: usize = 2048;
/// Bytes of a header line examined from its start: enough for
/// `Content-Length` or `Transfer-Encoding` with their values and some spaces.
pub const LINE: usize = 64;
/// The scratch buffer the kernel reads a header window into: a carried
/// partial line and up to [`HEADER_BOUND`] new bytes fit in its first
/// quarter, so any index masked into its first half has a line's lookahead
/// of room after it, and any copy the verifier can bound (to twice the
/// window, masked) lands in it (every access in bounds without a branch).
pub const SCRATCH: usize = 16384;
/// Largest partial header line carried from one write to the next.
pub const CARRY: usize = 48;
/// Chunk-size lines parsed per write; more (many tiny chunks coalesced into
/// one write) leave the response unframed.
pub const CHUNKS_PER_WRITE: usize = 8;
/// Steps of a walk through one write's chunks: a size line and the data of
/// each chunk, the last chunk's CRLF, and one to see the write's end.
pub const CHUNK_STEPS: u32 = 2 * CHUNKS_PER_WRITE as u32 + 2;

/// The little-endian word at `at` of `buf`, `at` masked into the buffer's
/// first half (callers keep their data there; see [`SCRATCH`]).
#[inline(always)]
pub fn load64<const N: usize>(buf: &[u8; N], at: usize) -> u64 {
    let at = at & (N / 2 - 1);
    // SAFETY: at + 8 <= N / 2 + 8 <= N for every buffer used (N >= 16).
    u64::from_le(unsafe { core::ptr::read_unaligned(buf.as_ptr().add(at) as *const u64) })
}

/// The byte at `at` of `buf`, masked into the buffer.
#[inline(always)]
pub fn byte<const N: usize>(buf: &[u8; N], at: usize) -> u8 {
    buf[at & (N - 1)]
}

/// How a response's end is known ([`crate::request::Conn::framing`]).
pub mod kind {
    /// No response is being written.
    pub const NONE: u8 = 0;
    /// Its header block is being scanned.
    pub const HEADERS: u8 = 1;
    /// `Content-Length`: `body_left` bytes to come.
    pub const LENGTH: u8 = 2;
    /// Chunked: see [`super::chunk`] for where in a chunk the next byte is.
    pub const CHUNKED: u8 = 3;
    /// No length and not chunked: the body ends with the connection.
    pub const CLOSE: u8 = 4;
    /// The framing was not found within [`super::HEADER_BOUND`] (or did not
    /// parse): the worker's signals end it (next request, EAGAIN, shutdown, close).
    pub const UNFRAMED: u8 = 5;
}

/// Header-scan flags kept across writes ([`crate::request::Conn::scan`]).
pub mod flag {
    /// A `Content-Length` line was seen; its value is in `body_left`.
    pub const LENGTH: u8 = 1;
    /// `Transfer-Encoding` ends in `chunked`.
    pub const CHUNKED: u8 = 2;
    /// The last write ended with `\n`: the next byte starts a line.
    pub const LINE_START: u8 = 4;
    /// The last write ended inside a line that matters, carried over
    /// (the kernel keeps it in its PARTIAL map).
    pub const CARRY: u8 = 8;
    /// The last write ended inside a line that does not matter: skip to its end.
    pub const SKIP: u8 = 16;
    /// The response has no body whatever its headers say (HEAD, 204, 304).
    pub const NO_BODY: u8 = 32;
    /// After its headers the connection is no longer HTTP (101, CONNECT 2xx).
    pub const TUNNEL: u8 = 64;
    /// Two different `Content-Length` values: unframed.
    pub const BAD: u8 = 128;
}

/// Where a chunked body is ([`crate::request::Conn::chunk`]).
pub mod chunk {
    /// A chunk-size line comes next.
    pub const SIZE: u8 = 0;
    /// `body_left` bytes of chunk data and its CRLF come next.
    pub const DATA: u8 = 1;
    /// The last chunk's size line was read: the final CRLF comes next.
    pub const LAST: u8 = 2;
}

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
const LOWER: u64 = 0x2020_2020_2020_2020;

/// One bit (the high bit of the byte) set for each byte of `word` that is `\n`,
/// exact per byte (no borrow between bytes).
#[inline(always)]
pub fn newlines(word: u64) -> u64 {
    bytes_equal(word, b'\n')
}

/// The byte index (0..8, little endian) of the lowest set high bit of a
/// [`newlines`] mask, without a branch (BPF has no count-trailing-zeros, and
/// every branch is a path the verifier walks): isolate that bit, shift it to
/// the byte's low bit (`256^k`), and a multiply moves byte `7 - k` of
/// `0x0001020304050607` (which holds `k`) to the top.
#[inline(always)]
pub fn first_byte(mask: u64) -> usize {
    let low = mask & mask.wrapping_neg();
    ((low >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

const fn pattern(text: &[u8], at: usize, n: usize) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < n {
        w |= (text[at + i] as u64) << (8 * i);
        i += 1;
    }
    w
}

const CONTENT_LENGTH: &[u8; 15] = b"content-length:";
const TRANSFER_ENCODING: &[u8; 18] = b"transfer-encoding:";
const CL0: u64 = pattern(CONTENT_LENGTH, 0, 8);
const CL1: u64 = pattern(CONTENT_LENGTH, 8, 7);
const TE0: u64 = pattern(TRANSFER_ENCODING, 0, 8);
const TE1: u64 = pattern(TRANSFER_ENCODING, 8, 8);
const TE2: u64 = pattern(TRANSFER_ENCODING, 16, 2);
const CHUNKED: u64 = pattern(b"chunked", 0, 7);
const MASK7: u64 = (1 << 56) - 1;
const MASK2: u64 = (1 << 16) - 1;

/// What a header line says about the response's framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// Nothing about framing (or not a header at all).
    Other,
    /// The empty line that ends the header block; the value is its length (1 or 2).
    End(usize),
    /// A `Content-Length` line, its value not read yet ([`content_length`]).
    LengthHeader,
    /// A `Transfer-Encoding` line, its value not read yet ([`chunked_value`]).
    EncodingHeader,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: ... chunked`.
    Chunked,
    /// A framing line that may go on beyond the bytes available.
    Partial,
}

/// Classifies the header line starting at `buf[s]`, of which `avail` bytes
/// are valid (its end, or the end of the write): the block's end, or a
/// framing header by its name, matched case-insensitively (OR-ing 0x20 leaves
/// `-` and `:` as they are). Values are read apart ([`content_length`],
/// [`chunked_value`]): a header scan classifies every line, and the few
/// framing lines are read once after it.
#[inline(always)]
pub fn classify<const N: usize>(buf: &[u8; N], s: usize, avail: usize) -> Line {
    let avail = if avail < LINE { avail } else { LINE };
    if avail == 0 {
        return Line::Partial;
    }
    let b0 = byte(buf, s);
    if b0 == b'\n' {
        return Line::End(1);
    }
    if b0 == b'\r' {
        if avail < 2 {
            return Line::Partial;
        }
        return if byte(buf, s + 1) == b'\n' {
            Line::End(2)
        } else {
            Line::Other
        };
    }
    let first = b0 | 0x20;
    if first != b'c' && first != b't' {
        return Line::Other;
    }
    let (w0, w1) = (load64(buf, s) | LOWER, load64(buf, s + 8) | LOWER);
    if w0 == CL0 && w1 & MASK7 == CL1 && avail >= 16 {
        return Line::LengthHeader;
    }
    if w0 == TE0 && w1 == TE1 && (load64(buf, s + 16) | LOWER) & MASK2 == TE2 {
        return Line::EncodingHeader;
    }
    Line::Other
}

/// The value of the `Content-Length` line at `buf[s]`: optional blanks,
/// digits, optional blanks, then the line's end (cut before it: Partial).
///
/// Each run (blanks, digits, blanks) is measured a word at a time, so the
/// only branches are a few that pick a run's length and a digit sum whose
/// branch rejoins at once: a byte loop carrying a phase made the verifier
/// walk every phase at every byte (most of a write's cost on Linux 6.1).
#[inline(always)]
pub fn content_length<const N: usize>(buf: &[u8; N], s: usize, avail: usize) -> Line {
    // At most 7 leading blanks, 18 digits (19 could overflow) and 7
    // trailing blanks.
    const MAX_DIGITS: usize = 18;
    let avail = if avail < LINE { avail } else { LINE };
    let lead_mask = not_blank(load64(buf, s + CONTENT_LENGTH.len()));
    let lead = if lead_mask != 0 {
        first_byte(lead_mask)
    } else {
        8
    };
    let at = s + CONTENT_LENGTH.len() + lead;
    let (x0, x1, x2) = (
        not_digit(load64(buf, at)),
        not_digit(load64(buf, at + 8)),
        not_digit(load64(buf, at + 16)),
    );
    let digits = if x0 != 0 {
        first_byte(x0)
    } else if x1 != 0 {
        8 + first_byte(x1)
    } else if x2 != 0 {
        16 + first_byte(x2)
    } else {
        24
    };
    let trail_mask = not_blank(load64(buf, at + digits));
    let trail = if trail_mask != 0 {
        first_byte(trail_mask)
    } else {
        8
    };
    // The byte that ends the value, as an index into the line.
    let end = CONTENT_LENGTH.len() + lead + digits + trail;
    if end >= avail {
        // Every byte there is fits the grammar: the value may go on.
        return Line::Partial;
    }
    let last = byte(buf, s + end);
    if lead == 8 || trail == 8 || digits == 0 || digits > MAX_DIGITS {
        return Line::Other;
    }
    if last != b'\r' && last != b'\n' {
        return Line::Other;
    }
    let mut value = 0u64;
    let mut i = 0;
    while i < MAX_DIGITS {
        if i < digits {
            value = value * 10 + (byte(buf, at + i) - b'0') as u64;
        }
        i += 1;
    }
    Line::Length(value)
}

const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` equal to `b` (exact per byte).
#[inline(always)]
fn bytes_equal(w: u64, b: u8) -> u64 {
    let t = w ^ (ONES * b as u64);
    !(((t & LOW7).wrapping_add(LOW7)) | t | LOW7)
}

/// The high bit of each byte of `w` that is neither a space nor a tab.
#[inline(always)]
fn not_blank(w: u64) -> u64 {
    !(bytes_equal(w, b' ') | bytes_equal(w, b'\t')) & HIGH
}

/// Whether the bytes of `v` (each below 0x80) are in `lo..hi`: the high
/// bit of each byte of `v + 0x80 - lo` set, that of `v + 0x80 - hi` clear.
#[inline(always)]
fn in_range(v: u64, lo: u8, hi: u8) -> u64 {
    (v.wrapping_add(ONES * (0x80 - lo as u64)))
        & !(v.wrapping_add(ONES * (0x80 - hi as u64)))
        & HIGH
}

/// The high bit of each byte of `w` that is not an ASCII decimal digit.
#[inline(always)]
fn not_digit(w: u64) -> u64 {
    !(in_range(w & LOW7, b'0', b'9' + 1) & !w) & HIGH
}

/// Whether the `Transfer-Encoding` line at `buf[s]` ends with `chunked`
/// (followed by the line's end or spaces).
#[inline(always)]
pub fn chunked_value<const N: usize>(buf: &[u8; N], s: usize, avail: usize) -> Line {
    let mut p = TRANSFER_ENCODING.len();
    while p + 8 <= LINE {
        if p + 8 > avail {
            break;
        }
        if (load64(buf, s + p) | LOWER) & MASK7 == CHUNKED {
            let next = byte(buf, s + p + 7);
            if next == b'\r' || next == b'\n' || next == b' ' || next == b'\t' {
                return Line::Chunked;
            }
        }
        p += 1;
    }
    Line::Other
}

/// A chunk-size line as [`size_line`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeLine {
    /// The chunk's data size and the size line's own length (through its LF).
    Size { size: u64, len: usize },
    /// The line continues beyond the bytes available.
    Partial,
    /// Not a chunk-size line: the body is not framed as announced.
    Bad,
}

/// Bytes of a chunk-size line the kernel reads (a head's worth).
pub const SIZE_LINE: usize = crate::http::HEAD_LEN;

/// Parses a chunk-size line (`1a2b[;ext]\r\n`) from `avail` valid bytes.
/// Its end and its run of hex digits are found a word at a time, and the
/// digits summed by a loop whose only branch rejoins at once: the verifier
/// walks the callback that runs this once per state it is entered in, so a
/// loop exiting at each digit count multiplied its work by sixteen.
#[inline(always)]
pub fn size_line(bytes: &[u8; SIZE_LINE], avail: usize) -> SizeLine {
    let avail = if avail < SIZE_LINE { avail } else { SIZE_LINE };
    let words = [
        word_at(bytes, 0),
        word_at(bytes, 1),
        word_at(bytes, 2),
        word_at(bytes, 3),
    ];
    // The line's end: its first LF.
    let nl = [
        newlines(words[0]),
        newlines(words[1]),
        newlines(words[2]),
        newlines(words[3]),
    ];
    let end = if nl[0] != 0 {
        first_byte(nl[0])
    } else if nl[1] != 0 {
        8 + first_byte(nl[1])
    } else if nl[2] != 0 {
        16 + first_byte(nl[2])
    } else if nl[3] != 0 {
        24 + first_byte(nl[3])
    } else {
        SIZE_LINE
    };
    if end >= avail {
        // Extensions longer than the bytes read are not something servers send.
        return if avail < SIZE_LINE {
            SizeLine::Partial
        } else {
            SizeLine::Bad
        };
    }
    // The hex digits: up to the first byte that is not one (within 16).
    let (x0, x1) = (not_hex(words[0]), not_hex(words[1]));
    let digits = if x0 != 0 {
        first_byte(x0)
    } else if x1 != 0 {
        8 + first_byte(x1)
    } else {
        16
    };
    let mut size = 0u64;
    let mut i = 0;
    while i < 15 {
        if i < digits {
            let b = bytes[i];
            // '0'..'9' -> 0..9, 'a'..'f' and 'A'..'F' -> 10..15.
            size = (size << 4) | ((b & 0xf) + 9 * (b >> 6)) as u64;
        }
        i += 1;
    }
    let next = bytes[digits & (SIZE_LINE - 1)];
    let ends = next == b'\r' || next == b'\n' || next == b';' || next == b' ' || next == b'\t';
    if digits == 0 || digits > 15 || !ends {
        return SizeLine::Bad;
    }
    SizeLine::Size { size, len: end + 1 }
}

/// The little-endian word of `bytes[8 * w..8 * w + 8]`.
#[inline(always)]
fn word_at(bytes: &[u8; SIZE_LINE], w: usize) -> u64 {
    let mut word = 0u64;
    let mut i = 0;
    while i < 8 {
        word |= (bytes[(w * 8 + i) & (SIZE_LINE - 1)] as u64) << (8 * i);
        i += 1;
    }
    word
}

/// The high bit of each byte of `w` that is not an ASCII hex digit.
#[inline(always)]
fn not_hex(w: u64) -> u64 {
    let low = w & LOW7;
    let lower = (w | LOWER) & LOW7;
    let hex = (in_range(low, b'0', b'9' + 1) | in_range(lower, b'a', b'f' + 1)) & !w;
    !hex & HIGH
}

/// Whether a final response with `status` to a request with `method` has a
/// body at all (RFC 9112 section 6.3): not for HEAD, 204 or 304.
#[inline(always)]
pub fn has_body(method: u8, status: u16) -> bool {
    method != crate::http::method::HEAD && status != 204 && status != 304
}

/// Whether the connection leaves HTTP after this response's headers: 101
/// Switching Protocols, or a 2xx to CONNECT.
#[inline(always)]
pub fn is_tunnel(method: u8, status: u16) -> bool {
    status == 101 || (method == crate::http::method::CONNECT && (200..300).contains(&status))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line as a header scan reads it: classified, then its value.
    fn c(text: &[u8]) -> Line {
        // Stale bytes past `avail` must not matter; start mid-buffer too.
        let mut buf = [b'#'; 256];
        let n = text.len().min(LINE);
        buf[40..40 + n].copy_from_slice(&text[..n]);
        match classify(&buf, 40, text.len()) {
            Line::LengthHeader => content_length(&buf, 40, text.len()),
            Line::EncodingHeader => chunked_value(&buf, 40, text.len()),
            other => other,
        }
    }

    #[test]
    fn newline_positions_are_exact() {
        for pos in 0..8 {
            let mut bytes = [b'a'; 8];
            bytes[pos] = b'\n';
            let mask = newlines(u64::from_le_bytes(bytes));
            assert_eq!(mask.count_ones(), 1, "{pos}");
            assert_eq!(first_byte(mask), pos);
        }
        // A zero-ish neighbour (0x0b after 0x0a) must not be flagged.
        let w = u64::from_le_bytes([b'\n', 0x0b, 0x0a, 0x01, 0x0a, 0, 0xff, 0x8a]);
        let m = newlines(w);
        assert_eq!(m.count_ones(), 3);
        assert_eq!(first_byte(m), 0);
        assert_eq!(first_byte(m & (m - 1)), 2);
        assert_eq!(newlines(u64::from_le_bytes(*b"no lines")), 0);
        // Against a per-byte reference over many words.
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..50_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let bytes: [u8; 8] = seed
                .to_le_bytes()
                .map(|b| if b % 5 == 0 { b'\n' } else { b });
            let mask = newlines(u64::from_le_bytes(bytes));
            for (i, b) in bytes.iter().enumerate() {
                assert_eq!(mask >> (8 * i + 7) & 1 == 1, *b == b'\n', "{bytes:?}");
            }
            if mask != 0 {
                assert_eq!(
                    Some(first_byte(mask)),
                    bytes.iter().position(|&b| b == b'\n')
                );
            }
        }
    }

    #[test]
    fn lengths() {
        assert_eq!(c(b"Content-Length: 13\r\n"), Line::Length(13));
        assert_eq!(c(b"content-length:0\r\n"), Line::Length(0));
        assert_eq!(c(b"CONTENT-LENGTH:   4096  \r\n"), Line::Length(4096));
        assert_eq!(
            c(b"Content-Length: 18446744073\n"),
            Line::Length(18446744073)
        );
        assert_eq!(
            c(b"Content-Length: 99999999999999999999\r\n"),
            Line::Other,
            "overflow"
        );
        assert_eq!(
            c(b"Content-Length: 999999999999999999\r\n"),
            Line::Length(999_999_999_999_999_999)
        );
        assert_eq!(c(b"Content-Length: 5, 5\r\n"), Line::Other);
        assert_eq!(c(b"Content-Length: \r\n"), Line::Other);
        assert_eq!(c(b"Content-Length: 1 2\r\n"), Line::Other);
        assert_eq!(c(b"Content-Length: 12"), Line::Partial, "value may go on");
        assert_eq!(c(b"Content-Length: 12 \t"), Line::Partial);
        assert_eq!(c(b"Content-Length:  "), Line::Partial);
        assert_eq!(c(b"Content-Length:\t7\t\r\n"), Line::Length(7));
        assert_eq!(c(b"Content-Length: 7\n"), Line::Length(7));
        assert_eq!(c(b"Content-Length: 7x\r\n"), Line::Other);
        assert_eq!(c(b"Content-Length: -7\r\n"), Line::Other);
        assert_eq!(c(b"Content-Length:         7\r\n"), Line::Other, "8 blanks");
        assert_eq!(
            c(b"Content-Length:       7\r\n"),
            Line::Length(7),
            "7 blanks"
        );
        assert_eq!(c(b"Content-Length: 7        \r\n"), Line::Other, "8 blanks");
        assert_eq!(
            c(b"Content-Length: 0000000000000000000042\r\n"),
            Line::Other
        );
        // Every cut of a good line is Partial, never a wrong length.
        let line = b"Content-Length:  123456789012  \r\n";
        for cut in 16..line.len() - 1 {
            assert_eq!(c(&line[..cut]), Line::Partial, "cut at {cut}");
        }
        assert_eq!(
            c(b"Content-Len"),
            Line::Other,
            "too short to know: not ours"
        );
        assert_eq!(c(b"Content-Type: text/plain\r\n"), Line::Other);
        assert_eq!(c(b"X-Content-Length: 3\r\n"), Line::Other);
    }

    #[test]
    fn chunked() {
        assert_eq!(c(b"Transfer-Encoding: chunked\r\n"), Line::Chunked);
        assert_eq!(c(b"transfer-encoding:CHUNKED\r\n"), Line::Chunked);
        assert_eq!(c(b"Transfer-Encoding: gzip, chunked  \r\n"), Line::Chunked);
        assert_eq!(c(b"Transfer-Encoding: chunked, gzip\r\n"), Line::Other);
        assert_eq!(c(b"Transfer-Encoding: identity\r\n"), Line::Other);
        assert_eq!(
            c(b"Transfer-Encoding: chun"),
            Line::Other,
            "cut: carried, not read"
        );
        assert_eq!(
            c(b"Transfer-Encoding: chunked"),
            Line::Other,
            "its end not seen yet"
        );
        assert_eq!(c(b"Transfer-Encoding: xchunked\r\n"), Line::Chunked);
    }

    #[test]
    fn ends() {
        assert_eq!(c(b"\r\nbody"), Line::End(2));
        assert_eq!(c(b"\nbody"), Line::End(1));
        assert_eq!(c(b"\r"), Line::Partial);
        assert_eq!(c(b""), Line::Partial);
        assert_eq!(c(b"Server: gunicorn\r\n"), Line::Other);
    }

    fn s(text: &[u8]) -> SizeLine {
        let mut b = [b'#'; SIZE_LINE];
        let n = text.len().min(SIZE_LINE);
        b[..n].copy_from_slice(&text[..n]);
        size_line(&b, text.len())
    }

    #[test]
    fn size_lines() {
        assert_eq!(s(b"5\r\nhello\r\n"), SizeLine::Size { size: 5, len: 3 });
        assert_eq!(
            s(b"1A2b\r\n"),
            SizeLine::Size {
                size: 0x1a2b,
                len: 6
            }
        );
        assert_eq!(s(b"0\r\n\r\n"), SizeLine::Size { size: 0, len: 3 });
        assert_eq!(
            s(b"10;name=value\r\n"),
            SizeLine::Size { size: 16, len: 15 }
        );
        assert_eq!(s(b"ff"), SizeLine::Partial);
        assert_eq!(s(b"ff\r"), SizeLine::Partial);
        assert_eq!(s(b"\r\n"), SizeLine::Bad);
        assert_eq!(s(b"xyz\r\n"), SizeLine::Bad);
        assert_eq!(s(b"ffffffffffffffff\r\n"), SizeLine::Bad, "too big");
        assert_eq!(
            s(b"fffffffffffffff\r\n"),
            SizeLine::Size {
                size: 0xfffffffffffffff,
                len: 17
            }
        );
        assert_eq!(s(b"5x\r\n"), SizeLine::Bad);
        assert_eq!(s(b"5 ; ext\r\n"), SizeLine::Size { size: 5, len: 9 });
        for (text, size) in [(&b"09AFaf\r\n"[..], 0x09afaf), (b"10\n", 16)] {
            assert!(matches!(s(text), SizeLine::Size { size: got, .. } if got == size));
        }
    }

    #[test]
    fn words_and_bytes_mask_into_the_buffer() {
        let mut buf = [0u8; 64];
        buf[..8].copy_from_slice(b"abcdefgh");
        assert_eq!(load64(&buf, 0), u64::from_le_bytes(*b"abcdefgh"));
        assert_eq!(
            load64(&buf, 32),
            load64(&buf, 0),
            "masked into the first half"
        );
        assert_eq!(byte(&buf, 65), b'b');
    }

    #[test]
    fn bodies() {
        use crate::http::method::{CONNECT, GET, HEAD};
        assert!(has_body(GET, 200));
        assert!(!has_body(HEAD, 200));
        assert!(!has_body(GET, 204));
        assert!(!has_body(GET, 304));
        assert!(is_tunnel(GET, 101));
        assert!(is_tunnel(CONNECT, 200));
        assert!(!is_tunnel(CONNECT, 407));
        assert!(!is_tunnel(GET, 200));
    }
}
