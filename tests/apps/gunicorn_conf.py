"""Gunicorn config for the integration tests: server hooks that record markers.

Each hook appends one line "<hook> <os.getpid()> <worker pid or -> <extra>" to the
file named by the environment variable GUNICORN_MARKERS (nothing happens when it is
unset). The file is opened in append mode for each line, flushed and fsynced, so
lines from the master and its workers interleave whole and survive a crash.

Everything else is passed on the gunicorn command line by the tests.
"""

import os


def _mark(hook, worker_pid=None, extra=""):
    path = os.environ.get("GUNICORN_MARKERS")
    if not path:
        return
    wpid = "-" if worker_pid is None else str(worker_pid)
    line = "%s %d %s %s" % (hook, os.getpid(), wpid, extra)
    try:
        with open(path, "a") as f:
            f.write(line.rstrip() + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        pass


def _wpid(worker):
    # Before fork a worker object has no pid of its own yet (pid is the master's);
    # after fork worker.pid is the worker process id.
    return getattr(worker, "pid", None)


def on_starting(server):
    _mark("on_starting")


def when_ready(server):
    _mark("when_ready", extra="workers=%d" % server.num_workers)


def on_reload(server):
    _mark("on_reload")


def pre_fork(server, worker):
    _mark("pre_fork", extra="age=%d" % getattr(worker, "age", 0))


def post_fork(server, worker):
    _mark("post_fork", _wpid(worker), "age=%d" % getattr(worker, "age", 0))
    # Workers forked once this file exists map uvloop, as a uvicorn worker
    # does (tests/privileges.rs: the exporter then attaches the syscall
    # hooks' read/write family, after its start-up).
    flag = os.environ.get("GUNICORN_UVLOOP_FLAG")
    if flag and os.path.exists(flag):
        import uvloop  # noqa: F401


def post_worker_init(worker):
    _mark("post_worker_init", _wpid(worker))


def worker_int(worker):
    _mark("worker_int", _wpid(worker))


def worker_abort(worker):
    _mark("worker_abort", _wpid(worker))


def pre_exec(server):
    _mark("pre_exec")


def child_exit(server, worker):
    _mark("child_exit", _wpid(worker))


def worker_exit(server, worker):
    _mark("worker_exit", _wpid(worker))


def nworkers_changed(server, new_value, old_value):
    _mark(
        "nworkers_changed",
        extra="new=%s old=%s" % (new_value, "-" if old_value is None else old_value),
    )


def on_exit(server):
    _mark("on_exit")
