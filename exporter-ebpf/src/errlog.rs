//! Recognising, from its first bytes, a log record that carries a Python
//! traceback: what gunicorn writes (with `Error handling request`) before it
//! answers an app exception with a 500, what Flask (`Exception on`) and Django
//! (`Internal Server Error`) log when they turn one into a 500 themselves, and
//! any other record of Python's logging module with a traceback. Such a
//! record is one write(2): its message line, then
//! `Traceback (most recent call last):` (or an exception group's variant).
//! The kernel sends those records to userspace, which reads the class.

/// Bytes of a write's start the kernel searches for the traceback line.
pub const ERRLOG_HEAD: usize = 512;
/// The buffer holding that head: its first half is the head, the rest room
/// for word loads past it (see [`crate::framing::load64`]).
pub const ERRLOG_BUF: usize = 2 * ERRLOG_HEAD;
/// Writes shorter than this cannot hold a message and a traceback.
pub const ERRLOG_MIN: u64 = 48;

const TRACEBACK: &[u8; 34] = b"Traceback (most recent call last):";
/// An exception group's traceback line, after its `  + ` prefix.
const GROUP: &[u8; 20] = b"  + Exception Group ";

use crate::framing::{first_byte, load64, newlines};

const fn word(text: &[u8], at: usize) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < 8 && at + i < text.len() {
        w |= (text[at + i] as u64) << (8 * i);
        i += 1;
    }
    w
}

/// Whether a write of `len` bytes whose first bytes are `head` is a record
/// with a traceback: the traceback line starts the write, or the line right
/// after its first line (the log message), within [`ERRLOG_HEAD`] bytes.
#[inline(always)]
pub fn has_traceback(head: &[u8; ERRLOG_BUF], len: usize) -> bool {
    let len = if len < ERRLOG_HEAD { len } else { ERRLOG_HEAD };
    if traceback_at(head, len, 0) {
        return true;
    }
    let mut pos = 0;
    while pos < ERRLOG_HEAD {
        if pos >= len {
            return false;
        }
        let mut mask = newlines(load64(head, pos));
        if len - pos < 8 {
            mask &= (1u64 << (8 * (len - pos))) - 1;
        }
        if mask != 0 {
            return traceback_at(head, len, pos + first_byte(mask) + 1);
        }
        pos += 8;
    }
    false
}

/// Whether a traceback line (plain, or an exception group's) starts at `at`:
/// compared a word at a time, the differences OR-ed so that only the final
/// test branches.
#[inline(always)]
fn traceback_at(head: &[u8; ERRLOG_BUF], len: usize, at: usize) -> bool {
    let w = |i: usize| load64(head, at + 8 * i);
    let plain = (w(0) ^ word(TRACEBACK, 0))
        | (w(1) ^ word(TRACEBACK, 8))
        | (w(2) ^ word(TRACEBACK, 16))
        | (w(3) ^ word(TRACEBACK, 24))
        | ((w(4) ^ word(TRACEBACK, 32)) & 0xffff);
    let group = (w(0) ^ word(GROUP, 0))
        | (w(1) ^ word(GROUP, 8))
        | ((w(2) ^ word(GROUP, 16)) & 0xffff_ffff);
    (plain == 0 && at + TRACEBACK.len() <= len) || (group == 0 && at + GROUP.len() <= len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tb(s: &[u8]) -> bool {
        let mut h = [b'x'; ERRLOG_BUF];
        let n = s.len().min(ERRLOG_HEAD);
        h[..n].copy_from_slice(&s[..n]);
        has_traceback(&h, s.len())
    }

    #[test]
    fn finds_records_with_tracebacks() {
        assert!(tb(b"[2026-11-22 03:51:19 +0000] [23304] [ERROR] Error handling request GET /boom\nTraceback (most recent call last):\n  File"));
        assert!(tb(b"[2026-11-22 03:51:19 +0000] [9] [ERROR] Exception on /x [GET]\nTraceback (most recent call last):\n"));
        assert!(tb(
            b"Internal Server Error: /db\nTraceback (most recent call last):\n  File"
        ));
        assert!(tb(
            b"Traceback (most recent call last):\n  File \"x\", line 1\n"
        ));
        assert!(tb(
            b"Error in handler\n  + Exception Group Traceback (most recent call last):\n"
        ));
        assert!(!tb(
            b"127.0.0.1 - - [22/Nov/2026:03:51:19 +0000] \"GET /ok HTTP/1.1\" 200 2\n"
        ));
        assert!(!tb(
            b"[2026-11-22 03:51:19 +0000] [23304] [INFO] Booting worker with pid: 1\n"
        ));
        assert!(
            !tb(b"message\nsecond line\nTraceback (most recent call last):\n"),
            "only right after the first line"
        );
        assert!(
            !tb(b"msg\nTraceback (most recent"),
            "cut before the line ends"
        );
        let long = [&[b'p'; 600][..], b"\nTraceback (most recent call last):\n"].concat();
        assert!(!tb(&long), "the first line must end within the head");
    }
}
