"""Sample WSGI application used by the integration tests and `cargo xtask demo`.

Pure WSGI, standard library only. Works under gunicorn 23 and 27 with the sync,
gthread, gevent and eventlet worker classes.

Routes:
    GET  /ok                 200 "ok"
    *    /<anything else>    404 "not found"
    *    /boom               raises RuntimeError("boom") -> gunicorn answers 500
    POST /echo               200, body = decimal length of the request body
    *    /sleep?ms=N         sleeps N ms, 200 "slept"
    *    /file               262144-byte file through wsgi.file_wrapper
    *    /chunked            200, no Content-Length, 5 chunks "chunk-0\\n".."chunk-4\\n"
    *    /big                200, 1048576-byte body
    *    /huge               200, 16777216-byte body (one bytes object, built per request)
    *    /cpu?ms=N           burns N ms of process CPU time, 200 "done"
    *    /alloc?mb=N&hold=S  allocates N MB (every page touched) and holds it S seconds
                             (released by a timer, and by the next request once
                             expired) or, without hold, until /free;
                             200 "allocated pid=<worker pid>"
    *    /free               drops held allocations, 200 "freed"
    *    /crash              os.abort(): the worker dies of SIGABRT
    *    /segv               reads address 0 through ctypes: the worker dies of SIGSEGV
    *    /block?ms=N&until=P holds the GIL for N ms, or until file P exists: the
                             whole worker stalls, heartbeat included, whatever the
                             worker class; 200 "blocked"
"""

import os
import tempfile
import threading
import time
from urllib.parse import parse_qs

FILE_SIZE = 262144
BIG_SIZE = 1048576
HUGE_SIZE = 16777216
PAGE = 4096

# The file served by /file: created once, at import, in a fixed temp directory
# shared by every worker and run (same content everywhere), so workers that die
# of /crash leave nothing behind. Written to a temporary name and renamed into
# place, so concurrent imports never see a partial file.
_FILE_DIR = os.path.join(tempfile.gettempdir(), "gunicorn-test-app-%d" % os.getuid())
FILE_PATH = os.path.join(_FILE_DIR, "payload-%d.bin" % FILE_SIZE)


def _make_file():
    try:
        if os.path.getsize(FILE_PATH) == FILE_SIZE:
            return
    except OSError:
        pass
    os.makedirs(_FILE_DIR, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=_FILE_DIR, prefix=".payload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(i % 251 for i in range(FILE_SIZE)))
        os.chmod(tmp, 0o644)
        os.replace(tmp, FILE_PATH)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_make_file()

_BIG_BODY = b"x" * BIG_SIZE

# Allocations made by /alloc: [release time (monotonic) or None, buffer].
# Expired ones are dropped by a timer and, in case the timer cannot run (it is
# a green thread under eventlet/gevent), at the start of every request.
_held = []
_held_lock = threading.Lock()


def _sweep():
    now = time.monotonic()
    with _held_lock:
        _held[:] = [h for h in _held if h[0] is None or h[0] > now]


def _query(environ):
    return parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)


def _int_param(query, name, default):
    try:
        return int(query[name][0])
    except (KeyError, IndexError, ValueError):
        return default


def _float_param(query, name, default):
    try:
        return float(query[name][0])
    except (KeyError, IndexError, ValueError):
        return default


def _respond(start_response, status, body, content_type="text/plain"):
    if isinstance(body, str):
        body = body.encode()
    start_response(
        status,
        [("Content-Type", content_type), ("Content-Length", str(len(body)))],
    )
    return [body]


def _ok(environ, start_response):
    return _respond(start_response, "200 OK", "ok")


def _not_found(environ, start_response):
    return _respond(start_response, "404 Not Found", "not found")


def _boom(environ, start_response):
    raise RuntimeError("boom")


def _echo(environ, start_response):
    if environ.get("REQUEST_METHOD") != "POST":
        return _not_found(environ, start_response)
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    total = 0
    while total < length:
        chunk = stream.read(min(65536, length - total))
        if not chunk:
            break
        total += len(chunk)
    return _respond(start_response, "200 OK", str(total))


def _sleep(environ, start_response):
    ms = _float_param(_query(environ), "ms", 0.0)
    if ms > 0:
        time.sleep(ms / 1000.0)
    return _respond(start_response, "200 OK", "slept")


def _file(environ, start_response):
    f = open(FILE_PATH, "rb")
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(FILE_SIZE)),
        ],
    )
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, 65536)

    def gen():
        try:
            while True:
                data = f.read(65536)
                if not data:
                    return
                yield data
        finally:
            f.close()

    return gen()


def _chunked(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        for i in range(5):
            yield ("chunk-%d\n" % i).encode()

    return gen()


def _big(environ, start_response):
    return _respond(
        start_response, "200 OK", _BIG_BODY, "application/octet-stream"
    )


def _huge(environ, start_response):
    return _respond(
        start_response, "200 OK", b"h" * HUGE_SIZE, "application/octet-stream"
    )


def _cpu(environ, start_response):
    ms = _float_param(_query(environ), "ms", 0.0)
    deadline = time.process_time() + ms / 1000.0
    x = 0
    while time.process_time() < deadline:
        for i in range(1000):
            x += i * i
    return _respond(start_response, "200 OK", "done")


def _alloc(environ, start_response):
    query = _query(environ)
    mb = _int_param(query, "mb", 1)
    hold = _float_param(query, "hold", 0.0)
    buf = bytearray(max(mb, 0) * 1024 * 1024)
    # Touch every page so the memory is really resident.
    for off in range(0, len(buf), PAGE):
        buf[off] = 1
    with _held_lock:
        _held.append([time.monotonic() + hold if hold > 0 else None, buf])
    del buf
    if hold > 0:
        timer = threading.Timer(hold + 0.05, _sweep)
        timer.daemon = True
        timer.start()
    return _respond(start_response, "200 OK", "allocated pid=%d" % os.getpid())


def _free(environ, start_response):
    with _held_lock:
        _held.clear()
    return _respond(start_response, "200 OK", "freed")


def _crash(environ, start_response):
    os.abort()


def _segv(environ, start_response):
    import ctypes
    ctypes.string_at(0)


def _block(environ, start_response):
    # Stalls the whole worker process, heartbeat included, whatever the worker
    # class (a gthread worker's main thread keeps heartbeating while a pool
    # thread merely sleeps): libc calls through PyDLL keep the GIL, and a huge
    # switch interval keeps other threads from taking it between calls (so no
    # os.* call here: they release it). Ends after ms, or as soon as the file
    # named by `until` exists.
    import ctypes
    import sys
    query = _query(environ)
    ms = _float_param(query, "ms", 0.0)
    until = query.get("until", [""])[0].encode()
    libc = ctypes.PyDLL(None)
    libc.usleep.argtypes = [ctypes.c_uint]
    libc.access.argtypes = [ctypes.c_char_p, ctypes.c_int]
    deadline = time.monotonic() + ms / 1000.0
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        while time.monotonic() < deadline and not (until and libc.access(until, 0) == 0):
            libc.usleep(10000)
    finally:
        sys.setswitchinterval(interval)
    return _respond(start_response, "200 OK", "blocked")


ROUTES = {
    "/ok": _ok,
    "/boom": _boom,
    "/echo": _echo,
    "/sleep": _sleep,
    "/file": _file,
    "/chunked": _chunked,
    "/big": _big,
    "/huge": _huge,
    "/cpu": _cpu,
    "/alloc": _alloc,
    "/free": _free,
    "/crash": _crash,
    "/segv": _segv,
    "/block": _block,
}


def app(environ, start_response):
    if _held:
        _sweep()
    handler = ROUTES.get(environ.get("PATH_INFO", ""), _not_found)
    return handler(environ, start_response)


application = app
