"""One WSGI app with a route per behaviour the engine tests exercise."""
import hashlib
import os
import time
from urllib.parse import parse_qs

import greenlet
import uwsgi
from tornado.ioloop import IOLoop


def query(environ, name, default):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def text(start_response, body, status="200 OK"):
    body = body if isinstance(body, bytes) else str(body).encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        return text(start_response, b"Hello World")
    if path == "/close":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5"), ("Connection", "close")])
        return [b"close"]
    if path == "/pid":
        return text(start_response, str(os.getpid()))
    if path == "/port":
        return text(start_response, environ["REMOTE_PORT"])
    if path == "/sleep":
        started = time.monotonic()
        uwsgi.async_sleep(float(query(environ, "s", "1")))
        return text(start_response, "%.3f" % (time.monotonic() - started))
    if path == "/sleeps":
        for seconds in query(environ, "s", "1").split(","):
            uwsgi.async_sleep(float(seconds))
        return text(start_response, "slept")
    if path == "/yield-sleep":
        return yield_sleep(environ, start_response)
    if path == "/generator":
        return generator(start_response)
    if path == "/spin":
        return spin(environ, start_response)
    if path == "/switch-in-by-hand":  # the app switches into its own waiting request
        me = greenlet.getcurrent()
        IOLoop.current().call_later(0.1, me.switch, "not a wake-up")
        started = time.monotonic()
        uwsgi.async_sleep(0.5)
        return text(start_response, "%.3f" % (time.monotonic() - started))
    if path == "/stale-switch":  # a callback that switches into this greenlet after the request ended
        IOLoop.current().call_later(float(query(environ, "after", "0.3")), greenlet.getcurrent().switch, "stale")
        return text(start_response, "left a callback behind")
    if path == "/suspend":
        for _ in range(3):
            uwsgi.suspend()
        return text(start_response, "back")
    if path == "/fd":
        return wait_fd(environ, start_response)
    if path == "/fd-suspend":
        return wait_fd_suspend(environ, start_response)
    if path == "/error":
        raise RuntimeError("this request fails on purpose")
    if path == "/badstatus":
        start_response(200, [])  # WSGI wants a str
        return [b"x"]
    if path == "/genraise":
        return generator_raising(start_response)
    if path == "/post":
        body = environ["wsgi.input"].read()
        return text(start_response, "%d %s" % (len(body), hashlib.sha256(body).hexdigest()))
    if path == "/big":
        return big(environ, start_response)
    if path == "/nolength":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"no length"]
    if path == "/nocontent":
        start_response("204 No Content", [])
        return []
    if path == "/upload":
        return upload(environ, start_response)
    if path == "/ws":
        return websocket_echo(environ)
    return text(start_response, b"not found", "404 Not Found")


def generator(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one"
    yield b"two"
    yield b"three"


def spin(environ, start_response):
    """Yield nothing for ?s= seconds: the core goes through the ready queue on
    every loop iteration (a CPU-bound generator)."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    until = time.monotonic() + float(query(environ, "s", "1"))
    spins = 0
    while time.monotonic() < until:
        spins += 1
        yield b""
    yield str(spins).encode()


def yield_sleep(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield uwsgi.async_sleep(float(query(environ, "s", "1")))
    yield b"slept"


def generator_raising(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"partial"
    raise RuntimeError("the body fails half way on purpose")


def upload(environ, start_response):
    """Read the whole body, after ?think=S seconds of work; a read error (a
    client too slow) is reported, not raised."""
    think = float(query(environ, "think", "0"))
    if think:
        uwsgi.async_sleep(think)
    try:
        body = environ["wsgi.input"].read()
    except OSError as exc:
        return text(start_response, "read failed: %s" % exc, "400 Bad Request")
    return text(start_response, "%d bytes" % len(body))


def big(environ, start_response):
    size = int(query(environ, "mb", "20")) * 1024 * 1024
    chunk = b"x" * 65536
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    for _ in range(size // len(chunk)):
        yield chunk


def wait_fd(environ, start_response):
    """The classic async API: register an fd, yield, read what woke us.
    ?write=0.3 makes the fd readable after 0.3 s; without it only the timeout ends the wait.
    A second wait follows the first to show that a timeout does not stick."""
    r, w = os.pipe()
    try:
        delay = query(environ, "write", None)
        if delay is not None:
            IOLoop.current().call_later(float(delay), os.write, w, b"x")
        started = time.monotonic()
        yield uwsgi.wait_fd_read(r, int(query(environ, "timeout", "5")))
        first = "ready=%s timeout=%s" % (environ["uwsgi.ready_fd"] == r, environ["x-wsgiorg.fdevent.timeout"])
        elapsed = time.monotonic() - started
        os.write(w, b"y")
        yield uwsgi.wait_fd_read(r, 5)
        second = "ready=%s timeout=%s" % (environ["uwsgi.ready_fd"] == r, environ["x-wsgiorg.fdevent.timeout"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield ("%s|%s|%.3f" % (first, second, elapsed)).encode()
    finally:
        os.close(r)
        os.close(w)


def wait_fd_suspend(environ, start_response):
    """The same without a generator: uwsgi.wait_fd_read() then uwsgi.suspend()."""
    r, w = os.pipe()
    try:
        IOLoop.current().call_later(0.2, os.write, w, b"x")
        uwsgi.wait_fd_read(r, 5)
        uwsgi.suspend()
        return text(start_response, "ready=%s" % (uwsgi.ready_fd() == r))
    finally:
        os.close(r)
        os.close(w)


def websocket_echo(environ):
    uwsgi.websocket_handshake(environ["HTTP_SEC_WEBSOCKET_KEY"], environ.get("HTTP_ORIGIN", ""))
    while True:
        msg = uwsgi.websocket_recv()
        uwsgi.websocket_send(msg)
