"""Forks at import, then waits: for the discovery test, which must never take
either use of it for a Gunicorn master.

- Loaded by `gunicorn --check-config forking_import:app`, it makes the check
  look like a master with a worker (a child with its command line).
- Run as `python forking_import.py`, it is a plain Python process with a
  child of the same command line.

The child leaves when its parent does; the parent after 60 s (the test kills
it sooner).
"""

import os
import time

_parent = os.getpid()
if os.fork() == 0:
    while os.getppid() == _parent:
        time.sleep(0.1)
    os._exit(0)
time.sleep(60)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
