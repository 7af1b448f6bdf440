//! Recognising gunicorn's "Error handling request" log record, which a worker
//! writes (with the traceback) just before it answers an app exception with
//! a 500. Its last line names the exception: `RuntimeError: boom`.

/// Bytes of a log write's start the kernel searches.
pub const ERRLOG_HEAD: usize = 96;
/// Bytes of its end the kernel sends to userspace.
pub const ERRLOG_TAIL: usize = 128;

const MARKER: &[u8; 22] = b"Error handling request";

/// Whether a log write starts a gunicorn "Error handling request" record
/// (the marker within its first [`ERRLOG_HEAD`] bytes, after any prefix the
/// log format adds).
#[inline(always)]
pub fn is_request_error(head: &[u8; ERRLOG_HEAD], len: usize) -> bool {
    let len = if len < ERRLOG_HEAD { len } else { ERRLOG_HEAD };
    let mut i = 0;
    while i + MARKER.len() <= len {
        if head[i] == b'E' {
            let mut j = 1;
            while j < MARKER.len() && head[i + j] == MARKER[j] {
                j += 1;
            }
            if j == MARKER.len() {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// The exception class named by a record's last non-empty line, e.g.
/// `RuntimeError` from `...\nRuntimeError: boom\n` or
/// `django.db.utils.OperationalError` from a dotted one; `None` when the
/// last line does not start with a Python (dotted) identifier.
pub fn exception_class(tail: &[u8]) -> Option<&str> {
    let text = core::str::from_utf8(tail).ok().or_else(|| {
        // The tail may start inside a multi-byte character: skip to a boundary.
        (1..4).find_map(|skip| tail.get(skip..).and_then(|t| core::str::from_utf8(t).ok()))
    })?;
    let line = text.trim_end().rsplit('\n').next()?.trim_end_matches('\r');
    let class = line.split(':').next()?.trim();
    let valid = !class.is_empty()
        && class.len() <= 128
        && class.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        });
    valid.then_some(class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &[u8]) -> ([u8; ERRLOG_HEAD], usize) {
        let mut h = [b'x'; ERRLOG_HEAD];
        let n = s.len().min(ERRLOG_HEAD);
        h[..n].copy_from_slice(&s[..n]);
        (h, s.len())
    }

    #[test]
    fn finds_the_record() {
        let (h, n) = head(
            b"[2026-11-22 03:51:19 +0000] [23304] [ERROR] Error handling request /boom\nTraceback",
        );
        assert!(is_request_error(&h, n));
        let (h, n) = head(b"Error handling request /x");
        assert!(is_request_error(&h, n));
        let (h, n) = head(b"[2026-11-22 03:51:19 +0000] [23304] [INFO] Booting worker with pid: 1");
        assert!(!is_request_error(&h, n));
        let (h, _) = head(b"Error handling request /x");
        assert!(!is_request_error(&h, 21), "cut before the marker ends");
        let (h, n) = head(b"127.0.0.1 - - [22/Nov/2026:03:51:19 +0000] \"GET /ok HTTP/1.1\" 200 2");
        assert!(!is_request_error(&h, n));
    }

    #[test]
    fn classes() {
        assert_eq!(
            exception_class(b"  File \"app.py\", line 3\nRuntimeError: boom\n"),
            Some("RuntimeError")
        );
        assert_eq!(
            exception_class(b"raise\ndjango.db.utils.OperationalError: no such table\n\n"),
            Some("django.db.utils.OperationalError")
        );
        assert_eq!(
            exception_class(b"x\nKeyboardInterrupt\n"),
            Some("KeyboardInterrupt")
        );
        assert_eq!(
            exception_class(b"x\nZeroDivisionError: division by zero\r\n"),
            Some("ZeroDivisionError")
        );
        assert_eq!(exception_class(b"x\n  weird line: with spaces\n"), None);
        assert_eq!(exception_class(b""), None);
        assert_eq!(
            exception_class(b"\xa9\nValueError: caf\xc3\xa9\n"),
            Some("ValueError"),
            "starts mid-character"
        );
        assert_eq!(exception_class(b"x\n1bad: x\n"), None);
    }
}
