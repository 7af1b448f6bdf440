"""Records of exceptions that cannot go through a gunicorn worker (they are
not `Exception`s, so they end the worker) or whose class lives in
`__main__`: logged the way gunicorn 27 logs a request error, to stderr.
"""

import logging
import sys

logging.basicConfig(
    format="%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
    datefmt="[%Y-%m-%d %H:%M:%S %z]",
)
log = logging.getLogger("gunicorn.error")


class MyError(Exception):
    pass


def main_class():
    raise MyError("defined in __main__")


def keyboard_interrupt():
    raise KeyboardInterrupt


def system_exit():
    raise SystemExit(3)


def base_group():
    raise BaseExceptionGroup("stopping", [KeyboardInterrupt(), ValueError("v")])


for name in sys.argv[1:]:
    try:
        globals()[name]()
    except BaseException:
        log.exception("Error handling request GET /%s", name)
