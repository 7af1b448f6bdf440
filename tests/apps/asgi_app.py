"""A raw ASGI app for Gunicorn's uvicorn workers (`uvicorn_worker.UvicornWorker`
and `uvicorn_worker.UvicornH11Worker`); no framework.

Routes (any method):
    /ok            200 "ok"
    /error         500 "error" (a response the app chose, no exception)
    /slow?ms=N     sleeps N ms (asyncio), then 200 "slow"
    /big           200, 1048576-byte body sent in 64 KiB chunks (more_body)
    anything else  404 "not found"
"""

import asyncio
from urllib.parse import parse_qs

BIG_SIZE = 1048576
CHUNK = 65536


async def _read_body(receive):
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _respond(send, status, body):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _big(send):
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(BIG_SIZE).encode()),
            ],
        }
    )
    chunk = b"x" * CHUNK
    for sent in range(0, BIG_SIZE, CHUNK):
        await send(
            {
                "type": "http.response.body",
                "body": chunk,
                "more_body": sent + CHUNK < BIG_SIZE,
            }
        )


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await _read_body(receive)
    path = scope["path"]
    if path == "/ok":
        await _respond(send, 200, b"ok")
    elif path == "/error":
        await _respond(send, 500, b"error")
    elif path == "/slow":
        query = parse_qs(scope.get("query_string", b"").decode())
        try:
            ms = float(query["ms"][0])
        except (KeyError, IndexError, ValueError):
            ms = 0.0
        await asyncio.sleep(ms / 1000.0)
        await _respond(send, 200, b"slow")
    elif path == "/big":
        await _big(send)
    else:
        await _respond(send, 404, b"not found")
