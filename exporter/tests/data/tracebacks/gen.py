"""Regenerates records/*.txt: each file is the bytes of ONE write(2) a
gunicorn worker (or a plain Python process, main_cases.py) made to its stderr
while logging an exception, as strace saw it.

    python3 gen.py VENV27 VENV23

Each venv holds python3 with gunicorn (27.0.1, resp. 23.0.0), Flask 3.1.3 and
Django 5.2.19 (the fixtures were made with Python 3.11.7); strace must be on
PATH. Timestamps and pids in the records are those of the run.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "records"
PORT = 18731

# (fixture name, app, case in cases.py, method, raw request target)
BOOM = b"/boom?x=1"
ON_27 = [(f"g27-{case}", "gunicorn", case, "GET", BOOM) for case in [
    "plain", "no_message", "multiline", "colon_quotes", "url_message", "note",
    "notes", "chained_context", "chained_cause", "cause_never_raised",
    "chain_of_three", "os_error", "group", "group_subclass", "group_after_error",
    "error_after_group", "group_with_chained_member", "long_message",
    "module_qualified", "local_class", "unicode_class", "bad_str",
    "syntax_error", "recursion", "fake_chain_in_message",
]] + [
    ("g27-path-encoded", "gunicorn", "plain", "GET", b"/a%20b/caf%C3%A9?q=a%20b"),
    ("g27-path-absolute", "gunicorn", "plain", "GET", b"http://example.com/abs?x=1"),
    ("g27-path-post", "gunicorn", "plain", "POST", b"/orders"),
    ("flask-plain", "flask", "plain", "GET", BOOM),
    ("flask-chained_cause", "flask", "chained_cause", "POST", b"/orders?id=7"),
    ("flask-group", "flask", "group", "GET", b"/"),
    ("flask-path-encoded", "flask", "plain", "GET", b"/a%20b/caf%C3%A9?q=1"),
    ("flask-path-newline", "flask", "plain", "GET", b"/n/a%0Ab%0ATraceback%20(most%20recent%20call%20last):"),
    ("django-plain", "django", "plain", "GET", BOOM),
    ("django-module_qualified", "django", "module_qualified", "POST", b"/orders/?id=7"),
    ("django-chained_context", "django", "chained_context", "GET", b"/x"),
    ("django-path-encoded", "django", "plain", "GET", b"/a%20b/caf%C3%A9?q=1"),
    ("django-path-newline", "django", "plain", "GET", b"/a%0Ab%0ATraceback%20(most%20recent%20call%20last):"),
]
ON_23 = [
    ("g23-plain", "gunicorn", "plain", "GET", BOOM),
    ("g23-path-encoded", "gunicorn", "plain", "GET", b"/a%20b/caf%C3%A9?q=a%20b"),
    ("g23-path-raw-utf8", "gunicorn", "plain", "GET", "/café/ü?x=ü".encode()),
]
MAIN = ["main_class", "keyboard_interrupt", "system_exit", "base_group"]

WRITE = re.compile(rb'^write\(2, "((?:\\x[0-9a-f]{2})*)", \d+\) = \d+$', re.M)


def stderr_writes(trace_prefix):
    """The writes to fd 2 that hold a traceback, per process in pid order."""
    records = []
    for path in sorted(Path(trace_prefix).parent.glob(Path(trace_prefix).name + ".*"),
                       key=lambda p: int(p.suffix[1:])):
        for m in WRITE.finditer(path.read_bytes()):
            data = bytes.fromhex(m.group(1).replace(b"\\x", b"").decode())
            if b"Traceback (most recent call last):" in data:
                records.append(data)
    return records


def request(method, target, via, case):
    with socket.create_connection(("127.0.0.1", PORT)) as s:
        s.sendall(method.encode() + b" " + target + b" HTTP/1.1\r\nHost: shop\r\n"
                  + f"X-Via: {via}\r\nX-Case: {case}\r\n".encode()
                  + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := s.recv(65536):
            response += chunk
    # An OSError is no answer at all (see cases.os_error).
    assert response.startswith(b"HTTP/1.1 500") or case == "os_error", response[:100]


def serve(venv, requests, tmp):
    trace, pidfile = f"{tmp}/serve", f"{tmp}/master.pid"
    try:
        socket.create_connection(("127.0.0.1", PORT)).close()
        sys.exit(f"port {PORT} is taken: a gunicorn left over from an earlier run?")
    except OSError:
        pass
    strace = subprocess.Popen([
        "strace", "-ff", "-qq", "-e", "trace=write", "-e", "signal=none", "-s", "1000000",
        "-xx", "-o", trace, f"{venv}/bin/gunicorn", "--chdir", str(HERE), "-w", "1",
        "-b", f"127.0.0.1:{PORT}", "--pid", pidfile, "apps:application"])
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", PORT)).close()
                break
            except OSError:
                time.sleep(0.05)
        for _, via, case, method, target in requests:
            request(method, target, via, case)
    finally:
        os.kill(int(Path(pidfile).read_text()), signal.SIGTERM)
        strace.wait()
    records = stderr_writes(trace)
    assert len(records) == len(requests), [r[:80] for r in records]
    return records


def main_records(venv, tmp):
    trace = f"{tmp}/main"
    subprocess.run(["strace", "-ff", "-qq", "-e", "trace=write", "-e", "signal=none",
                    "-s", "1000000", "-xx", "-o", trace, f"{venv}/bin/python3",
                    str(HERE / "main_cases.py"), *MAIN], check=True)
    records = stderr_writes(trace)
    assert len(records) == len(MAIN)
    return records


def main():
    venv27, venv23 = sys.argv[1:3]
    RECORDS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = list(zip([r[0] for r in ON_27], serve(venv27, ON_27, tmp)))
        with tempfile.TemporaryDirectory() as tmp23:
            out += zip([r[0] for r in ON_23], serve(venv23, ON_23, tmp23))
        out += zip([f"main-{m}" for m in MAIN], main_records(venv27, tmp))
    for name, data in out:
        (RECORDS / f"{name}.txt").write_bytes(data)
        print(f"{name}.txt: {len(data)} bytes")


if __name__ == "__main__":
    main()
