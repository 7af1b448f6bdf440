"""A WSGI app that talks to memcached on every request, through pymemcache.

MEMCACHED_ADDR (host:port) names the memcached to use. Each request stores a
value under its own key (`set` -> "STORED") and reads it back (`get` ->
"VALUE <key> 0 <n>", the value, "END"): replies on a client socket of the
worker that begin like an HTTP request line. One client per thread, connected
on first use and kept.

Routes (GET):
    /mc?key=K      set K, get K, 200 with the value read back
    anything else  404 "not found"
"""

import os
import threading
from urllib.parse import parse_qs

from pymemcache.client.base import Client

_host, _port = os.environ["MEMCACHED_ADDR"].rsplit(":", 1)
_local = threading.local()


def _client():
    client = getattr(_local, "client", None)
    if client is None:
        client = Client((_host, int(_port)), connect_timeout=5, timeout=5)
        _local.client = client
    return client


def _respond(start_response, status, body):
    start_response(
        status,
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def app(environ, start_response):
    if environ.get("PATH_INFO") != "/mc":
        return _respond(start_response, "404 Not Found", b"not found")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    key = query.get("key", ["default"])[0]
    value = ("value-of-" + key).encode()
    client = _client()
    client.set(key, value, noreply=False)
    got = client.get(key)
    if got != value:
        return _respond(
            start_response, "502 Bad Gateway", b"memcached returned %r" % (got,)
        )
    return _respond(start_response, "200 OK", got)
