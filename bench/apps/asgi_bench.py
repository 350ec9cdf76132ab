"""The ASGI side of `make bench` (bench/asgi.py): one raw ASGI 3 app for
every server, and the same hello as WSGI for the per-request cost of the
bridge.

  /hello   12 bytes with Content-Length (keep-alive)
  /io      awaits asyncio.sleep(0.01), then 12 bytes
  /wait    awaits asyncio.sleep(1) (C10K)
"""
import asyncio

HELLO = b"Hello World\n"
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/plain"), (b"content-length", b"12")]}
BODY = {"type": "http.response.body", "body": HELLO}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/io":
        await asyncio.sleep(0.01)
    elif path == "/wait":
        await asyncio.sleep(1)
    await send(START)
    await send(BODY)


def application(environ, start_response):
    """The WSGI hello, for the cost of the bridge against plain WSGI."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [HELLO]
