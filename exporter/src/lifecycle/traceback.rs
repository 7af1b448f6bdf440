//! Python log records that carry a traceback: the request the record names
//! and the exception class its traceback ends in.
//!
//! Pure and host-tested: the input is the bytes of one write(2) a worker made
//! to its error stream, as Python's `logging` formats a record with
//! `exc_info`: the message line (after whatever prefix the log format adds),
//! then the traceback as `traceback.TracebackException.format` prints it.
//! The fixtures in `tests/data/tracebacks/records` are such writes, captured
//! from real gunicorn, Flask and Django workers (`gen.py` there remakes them).

/// What kind of record named the failing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// gunicorn's `Error handling request [<METHOD> ]<uri>` (the method since
    /// gunicorn 27), logged before it answers 500.
    Gunicorn,
    /// Flask's `Exception on <path> [<METHOD>]`, logged as it answers 500.
    Flask,
    /// Django's `Internal Server Error: <path>` (`django.request`).
    Django,
    /// Any other record with a traceback.
    Other,
}

/// What one record with a traceback says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub source: Source,
    /// The request path the record names, query string removed: gunicorn's
    /// "Error handling request <uri>", Flask's "Exception on <path> [<METHOD>]",
    /// Django's "Internal Server Error: <path>"; None for Other.
    ///
    /// As logged: gunicorn's is the raw request target (percent-encoded, maybe
    /// absolute-form); Flask's is decoded and never had a query; Django's is
    /// decoded and has no query either, but Django >= 5.2.2 escapes it
    /// (`/caf\xe9`, `\n`). None also when the record names no URI (gunicorn's
    /// "(no URI read)") or not in UTF-8; a Flask path with a newline spreads
    /// the message over lines, and the record reads as Other.
    pub path: Option<&'a str>,
    /// Flask names the method, and so does gunicorn since 27; None otherwise.
    pub method: Option<&'a str>,
    /// The exception class the (last) traceback ends in, module-qualified as
    /// Python prints it (`ValueError`, `django.db.utils.OperationalError`);
    /// None when no valid class line is found.
    ///
    /// Python prints a class of `__main__` bare, like a builtin (`MyError`,
    /// not `__main__.MyError`), and one defined in a function by its
    /// qualified name (`views.order.<locals>.Conflict`), which is accepted.
    pub class: Option<&'a str>,
}

const HEADER: &[u8] = b"Traceback (most recent call last):";
const GROUP_HEADER: &[u8] = b"  + Exception Group Traceback (most recent call last):";
/// The margin of a top-level exception group's own lines; its sub-exceptions
/// are indented further (`    | `).
const GROUP_MARGIN: &[u8] = b"  | ";
/// What Python prints between the links of a chain, alone on a line with a
/// blank line on each side.
const JOINERS: [&[u8]; 2] = [
    b"During handling of the above exception, another exception occurred:",
    b"The above exception was the direct cause of the following exception:",
];
const MAX_CLASS_CHARS: usize = 200;

#[derive(Clone, Copy)]
enum State {
    /// The message, before any traceback.
    Message,
    /// Frames of a traceback whose lines start with this margin.
    Frames(&'static [u8]),
    /// After an exception line: its message, notes, sub-exceptions; `joined`
    /// counts the lines matched so far of "<blank>, <joiner>, <blank>".
    Tail { joined: u8 },
}

/// None when the bytes hold no Python traceback.
///
/// The record may be cut (at a capture cap): what is there is parsed, so a
/// chain cut before its last link yields the class of the last one present,
/// and a traceback cut before its exception line yields no class.
pub fn parse(record: &[u8]) -> Option<Record<'_>> {
    let mut lines = record.split(|&b| b == b'\n').peekable();
    let (source, path, method) = request(trim_cr(lines.peek().copied().unwrap_or_default()));
    let mut state = State::Message;
    let mut traceback = false;
    let mut class = None;
    while let Some(line) = lines.next() {
        // Python ends every record with a newline: a last line without one
        // was cut, maybe inside the class name.
        let whole = lines.peek().is_some();
        let line = trim_cr(line);
        state = match state {
            // The first header starts the traceback; text before it is the
            // message, whatever it contains. After a joiner the next link
            // starts: a header, or a bare exception line for an exception
            // that was never raised (it is not the last link).
            State::Message | State::Tail { joined: 3 } => match traceback_start(line) {
                Some(margin) => {
                    traceback = true;
                    class = None;
                    State::Frames(margin)
                }
                None if matches!(state, State::Message) => State::Message,
                None => {
                    class = None;
                    State::Tail { joined: 0 }
                }
            },
            // Frame lines (`  File ...`, source, carets, SyntaxError's
            // location, `[Previous line repeated ...]`) are indented; the
            // first line that is not is the exception line. Anything after it
            // is message or notes, even if it looks like a frame or a header.
            State::Frames(margin) => match line.strip_prefix(margin) {
                Some(rest) if rest.starts_with(b" ") => State::Frames(margin),
                Some(rest) => {
                    class = class_name(rest, whole);
                    State::Tail { joined: 0 }
                }
                // A group's margin ended before its exception line.
                None => State::Tail { joined: 0 },
            },
            // Only an exact, unindented joiner between blank lines chains a
            // further link: nested ones (in a group's sub-exceptions) carry
            // a margin. A message may still spell one out: then it reads as
            // a chain, as it would to a person.
            State::Tail { joined } => State::Tail {
                joined: match (joined, line) {
                    (0 | 2, b"") => joined + 1,
                    (1, _) if JOINERS.contains(&line) => 2,
                    (_, b"") => 1,
                    _ => 0,
                },
            },
        };
    }
    traceback.then_some(Record {
        source,
        path,
        method,
        class,
    })
}

/// The margin of the traceback a line starts, if it is a header.
fn traceback_start(line: &[u8]) -> Option<&'static [u8]> {
    if line == HEADER {
        Some(b"")
    } else if line == GROUP_HEADER {
        Some(GROUP_MARGIN)
    } else {
        None
    }
}

/// The class of an exception line: `Class: message`, or `Class` alone when
/// the message is empty (KeyboardInterrupt). `whole` is false for a line that
/// was cut: without a colon its name may be cut too.
fn class_name(line: &[u8], whole: bool) -> Option<&str> {
    let name = match line.iter().position(|&b| b == b':') {
        Some(colon) => &line[..colon],
        None if whole => line,
        None => return None,
    };
    let name = std::str::from_utf8(name).ok()?;
    is_class_name(name).then_some(name)
}

/// Dotted Python identifiers (Unicode letters allowed), with `<locals>`
/// between two of them; what a label value may be, never message text.
fn is_class_name(name: &str) -> bool {
    let identifier = |part: &str| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_')
    };
    name.chars().count() <= MAX_CLASS_CHARS
        && !name.starts_with('<')
        && !name.ends_with('>')
        && name
            .split('.')
            .all(|part| identifier(part) || part == "<locals>")
}

/// Which request the message line names: (source, path, method).
fn request(line: &[u8]) -> (Source, Option<&str>, Option<&str>) {
    let markers: [(&[u8], Source); 3] = [
        (b"Error handling request ", Source::Gunicorn),
        (b"Exception on ", Source::Flask),
        (b"Internal Server Error: ", Source::Django),
    ];
    // The log format's prefix comes first, so the earliest marker is the
    // message's own.
    let Some((at, marker, source)) = markers
        .into_iter()
        .filter_map(|(marker, source)| Some((find(line, marker)?, marker, source)))
        .min_by_key(|(at, _, _)| *at)
    else {
        return (Source::Other, None, None);
    };
    let rest = &line[at + marker.len()..];
    let (path, method) = match source {
        // gunicorn >= 27: "<METHOD> <uri>"; 23: "<uri>"; a URI has no space.
        // The raw URI keeps its query.
        Source::Gunicorn if rest == b"(no URI read)" => (&b""[..], None),
        Source::Gunicorn => {
            let (method, uri) = match rest.iter().position(|&b| b == b' ') {
                Some(space) => (Some(&rest[..space]), &rest[space + 1..]),
                None => (None, rest),
            };
            let path = uri.split(|&b| b == b'?').next().unwrap_or_default();
            (path, method.filter(|m| is_token(m)))
        }
        // The path is decoded and may hold " [" itself: the method is in the
        // last brackets. Without them the message went on to another line
        // (a path with a newline) and the path is not all here.
        Source::Flask => {
            let Some(open) = rest.windows(2).rposition(|w| w == b" [") else {
                return (Source::Other, None, None);
            };
            let method = rest[open + 2..].strip_suffix(b"]").filter(|m| is_token(m));
            if method.is_none() {
                return (Source::Other, None, None);
            }
            (&rest[..open], method)
        }
        Source::Django | Source::Other => (rest, None),
    };
    (source, text(path), method.and_then(text))
}

/// A field's text: UTF-8 and not empty.
fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok().filter(|s| !s.is_empty())
}

/// An HTTP method: an RFC 9110 token.
fn is_token(b: &[u8]) -> bool {
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(c))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record captured from a real worker (tests/data/tracebacks/gen.py).
    macro_rules! fixture {
        ($name:literal) => {
            (
                $name,
                include_bytes!(concat!(
                    "../../tests/data/tracebacks/records/",
                    $name,
                    ".txt"
                )) as &[u8],
            )
        };
    }

    const FIXTURES: &[(&str, &[u8])] = &[
        fixture!("g27-plain"),
        fixture!("g27-no_message"),
        fixture!("g27-multiline"),
        fixture!("g27-colon_quotes"),
        fixture!("g27-url_message"),
        fixture!("g27-note"),
        fixture!("g27-notes"),
        fixture!("g27-chained_context"),
        fixture!("g27-chained_cause"),
        fixture!("g27-cause_never_raised"),
        fixture!("g27-chain_of_three"),
        fixture!("g27-os_error"),
        fixture!("g27-group"),
        fixture!("g27-group_subclass"),
        fixture!("g27-group_after_error"),
        fixture!("g27-error_after_group"),
        fixture!("g27-group_with_chained_member"),
        fixture!("g27-long_message"),
        fixture!("g27-module_qualified"),
        fixture!("g27-local_class"),
        fixture!("g27-unicode_class"),
        fixture!("g27-bad_str"),
        fixture!("g27-syntax_error"),
        fixture!("g27-recursion"),
        fixture!("g27-fake_chain_in_message"),
        fixture!("g27-path-encoded"),
        fixture!("g27-path-absolute"),
        fixture!("g27-path-post"),
        fixture!("g23-plain"),
        fixture!("g23-path-encoded"),
        fixture!("g23-path-raw-utf8"),
        fixture!("flask-plain"),
        fixture!("flask-chained_cause"),
        fixture!("flask-group"),
        fixture!("flask-path-encoded"),
        fixture!("flask-path-newline"),
        fixture!("django-plain"),
        fixture!("django-module_qualified"),
        fixture!("django-chained_context"),
        fixture!("django-path-encoded"),
        fixture!("django-path-newline"),
        fixture!("main-main_class"),
        fixture!("main-keyboard_interrupt"),
        fixture!("main-system_exit"),
        fixture!("main-base_group"),
    ];

    fn fixture(name: &str) -> &'static [u8] {
        FIXTURES.iter().find(|(n, _)| *n == name).unwrap().1
    }

    fn record<'a>(
        source: Source,
        path: Option<&'a str>,
        method: Option<&'a str>,
        class: &'a str,
    ) -> Record<'a> {
        Record {
            source,
            path,
            method,
            class: Some(class),
        }
    }

    /// Every shape Python printed, through gunicorn 27's record for
    /// `GET /boom?x=1`: the class of the last link, never message text.
    #[test]
    fn classes_of_real_tracebacks() {
        let cases = [
            ("g27-plain", "RuntimeError"),
            ("g27-no_message", "ValueError"),
            // Its message's 2nd line is `  File "x.py", line 1, in f`, its
            // 3rd the header, its 4th `Fake: last`.
            ("g27-multiline", "ValueError"),
            ("g27-colon_quotes", "KeyError"),
            ("g27-url_message", "Exception"),
            ("g27-note", "TypeError"),
            // A note spells out a frame and `NoteError: ...`.
            ("g27-notes", "ZeroDivisionError"),
            ("g27-chained_context", "LookupError"),
            ("g27-chained_cause", "RuntimeError"),
            // The cause was never raised: a bare `ConnectionError: ...` line
            // before the first header.
            ("g27-cause_never_raised", "RuntimeError"),
            ("g27-chain_of_three", "LookupError"),
            ("g27-group", "ExceptionGroup"),
            ("g27-group_subclass", "cases.AppErrors"),
            ("g27-group_after_error", "ExceptionGroup"),
            ("g27-error_after_group", "RuntimeError"),
            // A sub-exception carries its own chain, joiners behind margins.
            ("g27-group_with_chained_member", "ExceptionGroup"),
            ("g27-long_message", "ValueError"),
            ("g27-module_qualified", "django.db.utils.OperationalError"),
            ("g27-local_class", "cases.local_class.<locals>.Boom"),
            ("g27-unicode_class", "cases.Ошибка"),
            ("g27-bad_str", "cases.BadStr"),
            ("g27-syntax_error", "SyntaxError"),
            ("g27-recursion", "RecursionError"),
            // A message that spells out a whole chained link reads as one.
            ("g27-fake_chain_in_message", "FakeError"),
        ];
        for (name, class) in cases {
            let want = record(Source::Gunicorn, Some("/boom"), Some("GET"), class);
            assert_eq!(parse(fixture(name)), Some(want), "{name}");
        }
    }

    /// The request each kind of record names, with and without a query, with
    /// encoded, decoded and non-ASCII paths.
    #[test]
    fn requests_of_real_records() {
        use Source::*;
        let cases = [
            (
                "g27-path-encoded",
                record(
                    Gunicorn,
                    Some("/a%20b/caf%C3%A9"),
                    Some("GET"),
                    "RuntimeError",
                ),
            ),
            (
                "g27-path-absolute",
                record(
                    Gunicorn,
                    Some("http://example.com/abs"),
                    Some("GET"),
                    "RuntimeError",
                ),
            ),
            (
                "g27-path-post",
                record(Gunicorn, Some("/orders"), Some("POST"), "RuntimeError"),
            ),
            // gunicorn 23 names no method.
            (
                "g23-plain",
                record(Gunicorn, Some("/boom"), None, "RuntimeError"),
            ),
            (
                "g23-path-encoded",
                record(Gunicorn, Some("/a%20b/caf%C3%A9"), None, "RuntimeError"),
            ),
            // Raw UTF-8 in the request line, logged as gunicorn decoded it
            // (Latin-1); gunicorn 27 answers it 400 instead.
            (
                "g23-path-raw-utf8",
                record(Gunicorn, Some("/cafÃ©/Ã¼"), None, "RuntimeError"),
            ),
            (
                "flask-plain",
                record(Flask, Some("/boom"), Some("GET"), "RuntimeError"),
            ),
            (
                "flask-chained_cause",
                record(Flask, Some("/orders"), Some("POST"), "RuntimeError"),
            ),
            (
                "flask-group",
                record(Flask, Some("/"), Some("GET"), "ExceptionGroup"),
            ),
            (
                "flask-path-encoded",
                record(Flask, Some("/a b/café"), Some("GET"), "RuntimeError"),
            ),
            // `/n/a%0Ab%0ATraceback...`: the message goes on over 3 lines
            // (the 3rd `Traceback (most recent call last): [GET]`).
            (
                "flask-path-newline",
                record(Other, None, None, "RuntimeError"),
            ),
            (
                "django-plain",
                record(Django, Some("/boom"), None, "RuntimeError"),
            ),
            (
                "django-module_qualified",
                record(
                    Django,
                    Some("/orders/"),
                    None,
                    "django.db.utils.OperationalError",
                ),
            ),
            (
                "django-chained_context",
                record(Django, Some("/x"), None, "LookupError"),
            ),
            // Django escapes the path it logs.
            (
                "django-path-encoded",
                record(Django, Some(r"/a b/caf\xe9"), None, "RuntimeError"),
            ),
            (
                "django-path-newline",
                record(
                    Django,
                    Some(r"/a\nb\nTraceback (most recent call last):"),
                    None,
                    "RuntimeError",
                ),
            ),
            // An OSError from the app is a "Socket error processing request."
            // to gunicorn's sync worker, which then closes without a 500.
            (
                "g27-os_error",
                record(Other, None, None, "FileNotFoundError"),
            ),
            // `__main__` classes print bare; BaseExceptions have no message.
            (
                "main-main_class",
                record(Gunicorn, Some("/main_class"), Some("GET"), "MyError"),
            ),
            (
                "main-keyboard_interrupt",
                record(
                    Gunicorn,
                    Some("/keyboard_interrupt"),
                    Some("GET"),
                    "KeyboardInterrupt",
                ),
            ),
            (
                "main-system_exit",
                record(Gunicorn, Some("/system_exit"), Some("GET"), "SystemExit"),
            ),
            (
                "main-base_group",
                record(
                    Gunicorn,
                    Some("/base_group"),
                    Some("GET"),
                    "BaseExceptionGroup",
                ),
            ),
        ];
        for (name, want) in cases {
            assert_eq!(parse(fixture(name)), Some(want), "{name}");
        }
    }

    /// Records written by hand for what the real ones do not show.
    #[test]
    fn hand_made_records() {
        let tb = "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n";
        // Leaked so that the parse may borrow it: a test's few bytes.
        let parsed = |s: String| {
            let s: &'static str = s.leak();
            parse(s.as_bytes()).map(|r| (r.source, r.path, r.method, r.class))
        };
        assert_eq!(
            parsed(format!(
                "[t] [1] [ERROR] Error handling request (no URI read)\n{tb}OSError: x\n"
            )),
            Some((Source::Gunicorn, None, None, Some("OSError")))
        );
        // No message line: traceback.print_exc() straight to stderr.
        assert_eq!(
            parsed(format!("{tb}KeyError: 1\n")),
            Some((Source::Other, None, None, Some("KeyError")))
        );
        // Flask's path may hold " [" itself.
        assert_eq!(
            parsed(format!("x Exception on /a [b] [PATCH]\n{tb}E: 1\n")),
            Some((Source::Flask, Some("/a [b]"), Some("PATCH"), Some("E")))
        );
        // Written with CRLF line ends.
        assert_eq!(
            parsed(
                format!("Internal Server Error: /x\r\n{tb}KeyboardInterrupt\r\n")
                    .replace("\n  File", "\r\n  File")
            ),
            Some((Source::Django, Some("/x"), None, Some("KeyboardInterrupt")))
        );
        // The exception line is message text, not a class.
        for line in [
            "not a class",
            "1Error: x",
            "a..b: x",
            "a.: x",
            "<locals>.E",
            "E.<locals>",
            "É rror",
        ] {
            assert_eq!(parsed(format!("{tb}{line}\n")).unwrap().3, None, "{line}");
        }
        let long = "a".repeat(MAX_CLASS_CHARS + 1);
        assert_eq!(parsed(format!("{tb}{long}: x\n")).unwrap().3, None);
        let longest = "é".repeat(MAX_CLASS_CHARS);
        assert_eq!(
            parsed(format!("{tb}{longest}: x\n")).unwrap().3,
            Some(longest.as_str())
        );
        // A header alone, and one cut mid-frame: a traceback, no class.
        assert_eq!(parsed(tb.to_string()).unwrap().3, None);
        assert_eq!(parsed(format!("{tb}    f(")).unwrap().3, None);
        // Only an exact header starts a traceback.
        for text in [
            "",
            "\n",
            "Traceback:\nE: x\n",
            " Traceback (most recent call last):\nE: x\n",
            "hello",
        ] {
            assert_eq!(parse(text.as_bytes()), None, "{text:?}");
        }
    }

    /// Invalid UTF-8 outside the class does not hide it; inside, no class.
    #[test]
    fn invalid_utf8() {
        let mut bytes = b"Error handling request GET /\xff\xfe\nTraceback (most recent call last):\n  File \"\xc3\", line 1\n"
            .to_vec();
        bytes.extend_from_slice(b"ValueError: \xff\n");
        assert_eq!(
            parse(&bytes),
            Some(Record {
                source: Source::Gunicorn,
                path: None,
                method: Some("GET"),
                class: Some("ValueError")
            })
        );
        bytes.extend_from_slice(
            b"\nThe above exception was the direct cause of the following exception:\n\n",
        );
        bytes.extend_from_slice(b"Traceback (most recent call last):\n  File \"b\", line 2, in g\nBad\xc3\x28Error: x\n");
        assert_eq!(parse(&bytes).unwrap().class, None);
    }

    /// A record cut anywhere (the capture cap) parses what is there: its
    /// own class once the exception line is whole, an earlier link's class
    /// while later links are missing, never a cut name.
    #[test]
    fn truncated_records() {
        for (name, classes) in [
            ("g27-plain", &["RuntimeError"][..]),
            ("main-keyboard_interrupt", &["KeyboardInterrupt"]),
            ("g27-chained_cause", &["ValueError", "RuntimeError"]),
            (
                "g27-group_after_error",
                &["ConnectionError", "ExceptionGroup"],
            ),
        ] {
            let full = fixture(name);
            for cut in 0..full.len() {
                let class = parse(&full[..cut]).and_then(|r| r.class);
                assert!(
                    class.is_none_or(|c| classes.contains(&c)),
                    "{name} cut at {cut}: {class:?}"
                );
            }
        }
        // Cut mid-traceback: the request is known, the class not.
        let full = fixture("g27-plain");
        let cut = find(full, b"  File").unwrap() + 20;
        assert_eq!(
            parse(&full[..cut]),
            Some(Record {
                source: Source::Gunicorn,
                path: Some("/boom"),
                method: Some("GET"),
                class: None
            })
        );
        // A message past the 64 KiB cap.
        let mut long = fixture("g27-long_message").to_vec();
        let at = find(&long, b"xxxx").unwrap();
        long.splice(at..at, std::iter::repeat_n(b'x', 64 * 1024));
        assert_eq!(parse(&long[..64 * 1024]).unwrap().class, Some("ValueError"));
    }

    /// Random bytes and mutated records (bytes flipped, lines of traceback
    /// syntax spliced in, records cut and joined): never a panic, and a
    /// class is always a class name copied from the input.
    #[test]
    fn fuzz() {
        let pieces: [&[u8]; 12] = [
            b"\n",
            b"\n\n",
            b"Traceback (most recent call last):\n",
            b"  + Exception Group Traceback (most recent call last):\n",
            b"  | ",
            b"  File \"x\", line 1, in f\n",
            b"\nDuring handling of the above exception, another exception occurred:\n\n",
            b"\nThe above exception was the direct cause of the following exception:\n\n",
            b": ",
            b"\xff\xc3",
            b"Error handling request GET /a?b [",
            b"Exception on / [GET]",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            // xorshift64: reproducible without a dependency.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n.max(1) as u64) as usize
        };
        for round in 0..20_000 {
            let mut input = if round % 10 == 0 {
                (0..next(300)).map(|_| next(256) as u8).collect()
            } else {
                let (_, base) = FIXTURES[next(FIXTURES.len())];
                base[..base.len().min(4096)].to_vec()
            };
            for _ in 0..next(8) {
                let at = next(input.len() + 1);
                match next(4) {
                    0 if !input.is_empty() => {
                        let last = input.len() - 1;
                        input[at.min(last)] = next(256) as u8
                    }
                    1 => drop(input.splice(at.., [])),
                    2 => {
                        let (_, other) = FIXTURES[next(FIXTURES.len())];
                        let from = next(other.len());
                        input.splice(at..at, other[from..].iter().take(next(800)).copied());
                    }
                    _ => drop(input.splice(at..at, pieces[next(pieces.len())].iter().copied())),
                }
            }
            if let Some(Record {
                path,
                method,
                class,
                ..
            }) = parse(&input)
            {
                for text in [path, method, class].into_iter().flatten() {
                    assert!(
                        find(&input, text.as_bytes()).is_some(),
                        "{text:?} not in {input:?}"
                    );
                }
                if let Some(class) = class {
                    assert!(
                        is_class_name(class) && !class.contains(':'),
                        "{class:?} from {input:?}"
                    );
                }
            }
        }
    }
}
