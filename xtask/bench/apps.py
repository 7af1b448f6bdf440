"""WSGI apps for `cargo xtask bench`. Standard library only; gunicorn 23 and 27,
sync and gthread workers.

trivial    every request: 200 "Hello, World!" (the cheapest possible app: the
           cost of anything added per request shows at its largest)
realistic  a small JSON API whose routes do about 2 ms of real CPU work each on
           a 2-core VM (JSON encoding and parsing, hashing), plus errors:
    GET  /api/items      200, a JSON list built and encoded per request
    GET  /api/report     200, a digest over data hashed per request
    POST /api/orders     201, parses the JSON body, validates, answers JSON
    GET  /api/fail       the app raises: gunicorn answers 500 (and logs a traceback)
    GET  /api/busy       503 answered by the app itself (as a framework would)
    *    anything else   404
"""

import hashlib
import json

# Work sizes: about 2 ms per route on the 2-core VM the bench was written on
# (`python3 xtask/bench/apps.py` prints the timings on this machine).
ITEMS = 260
HASH_ROUNDS = 50
ORDER_LINES = 440

_HELLO = b"Hello, World!"
_BLOCK = bytes(range(256)) * 64  # 16 KiB


def trivial(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(_HELLO)))],
    )
    return [_HELLO]


def _json(start_response, status, obj):
    body = json.dumps(obj).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _items():
    items = [
        {
            "id": i,
            "name": "item-%d" % i,
            "tags": ["t%d" % (i % 7), "t%d" % (i % 11)],
            "price": round(i * 1.07, 2),
            "stock": {"warehouse": i % 5, "count": (i * 37) % 101},
        }
        for i in range(ITEMS)
    ]
    # Round-trip once, as an app reading from a cache or a DB driver would.
    items = json.loads(json.dumps(items))
    return {"count": len(items), "items": items}


def _report():
    h = hashlib.sha256()
    data = _BLOCK
    for i in range(HASH_ROUNDS):
        h.update(data)
        data = hashlib.md5(data).digest() * 1024
    return {"digest": h.hexdigest(), "rounds": HASH_ROUNDS}


def _orders(environ):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    order = json.loads(raw or b"{}")
    lines = order.get("lines", [])
    total = 0.0
    checked = []
    for _ in range(ORDER_LINES // max(1, len(lines)) or 1):
        for line in lines:
            qty = int(line.get("qty", 0))
            price = float(line.get("price", 0))
            total += qty * price
            checked.append(json.dumps(line, sort_keys=True))
    digest = hashlib.sha256("\n".join(checked).encode()).hexdigest()
    return {"status": "accepted", "total": round(total, 2), "digest": digest}


def realistic(environ, start_response):
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "GET")
    if path == "/api/items" and method == "GET":
        return _json(start_response, "200 OK", _items())
    if path == "/api/report" and method == "GET":
        return _json(start_response, "200 OK", _report())
    if path == "/api/orders" and method == "POST":
        return _json(start_response, "201 Created", _orders(environ))
    if path == "/api/fail":
        raise RuntimeError("database is unreachable")
    if path == "/api/busy":
        return _json(start_response, "503 Service Unavailable", {"error": "busy"})
    return _json(start_response, "404 Not Found", {"error": "not found"})


if __name__ == "__main__":
    import io
    import time

    body = json.dumps(
        {"lines": [{"sku": "s%d" % i, "qty": i % 3 + 1, "price": 9.99} for i in range(8)]}
    ).encode()
    for path, method in (("/api/items", "GET"), ("/api/report", "GET"), ("/api/orders", "POST")):
        n = 200
        start = time.process_time()
        for _ in range(n):
            env = {
                "PATH_INFO": path,
                "REQUEST_METHOD": method,
                "CONTENT_LENGTH": str(len(body)),
                "wsgi.input": io.BytesIO(body),
            }
            realistic(env, lambda status, headers: None)
        print("%-12s %.2f ms CPU" % (path, (time.process_time() - start) * 1000 / n))
