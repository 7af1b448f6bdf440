"""The app exceptions of the stacks tests, shared by flask_app.py and django_app.py.

Each raises what real apps raise, shaped to trip a parser that takes the last
line of a traceback for its exception class. The class Python prints (and the
exporter must report) is named after each; app classes are printed
module-qualified (`failures.UpstreamError`), builtins are not.
"""

LONG_MESSAGE_BYTES = 5000


class UpstreamError(Exception):
    """Raised from a lower-level error (`raise ... from ...`)."""


class StreamInterrupted(Exception):
    """Raised by a streamed body after its first chunk was sent."""


def multiline():
    """ValueError: its message spans three lines, one with a colon."""
    raise ValueError("first line\nsecond line: with a colon\nthird line")


def noted():
    """KeyError: add_note() prints a note line after the exception line."""
    e = KeyError("missing-key")
    e.add_note("note: added with add_note()")
    raise e


def chained():
    """failures.UpstreamError, directly caused by a ZeroDivisionError (printed
    first, with "The above exception was the direct cause...")."""
    try:
        1 / 0
    except ZeroDivisionError as e:
        raise UpstreamError("the upstream call failed") from e


def long_message():
    """TypeError with a message of more than 4 KiB on one line."""
    raise TypeError("long message " + "x" * LONG_MESSAGE_BYTES)


def stream_chunks():
    """A streamed body: one chunk, then failures.StreamInterrupted (the server
    has sent the headers by then and can only cut the connection)."""
    yield b"first chunk\n"
    raise StreamInterrupted("the stream broke after its first chunk")


# Route path -> the class Python prints for the exception it raises, apart from
# the database error, whose class depends on the framework.
EXPECTED = {
    "/error/multiline": "ValueError",
    "/error/note": "KeyError",
    "/error/chained": "failures.UpstreamError",
    "/error/long": "TypeError",
    "/stream/error": "failures.StreamInterrupted",
}
