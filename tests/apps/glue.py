"""Exercises uwsgidecorators_ext from a WSGI app: every kind of awaitable,
timeouts, cancellation, exceptions, misuse, and Tornado apps in every worker."""
import asyncio
import concurrent.futures
import contextvars
import os
import sys
import threading
import time
import traceback
from urllib.parse import parse_qs

import greenlet
import tornado.web
from tornado.concurrent import Future as TornadoFuture
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop

from uwsgidecorators_ext import (PerWorker, blocking, ioloop, run_in_executor, serve_per_worker, serve_reuseport,
                                 serve_fd, serve_shared_socket, sleep, to_thread, wait)

BACKEND = os.environ.get("BACKEND_URL", "")
ECHO_PORT = int(os.environ.get("ECHO_PORT", "0"))

# misuse at import time (in the master): a clear RuntimeError
try:
    wait(asyncio.sleep(0))
    IMPORT_TIME = "no error"
except RuntimeError as exc:
    IMPORT_TIME = str(exc)


class Pid(tornado.web.RequestHandler):
    def get(self):
        self.write(str(os.getpid()))


request_id = contextvars.ContextVar("request_id", default="unset")


@blocking
def read_request_id(suffix, *, times=1):
    sleep(0.01)
    return request_id.get() + suffix * times


class BlockingContext(tornado.web.RequestHandler):
    """@blocking runs in the caller's contextvars context and keeps the
    decorated function's arguments."""

    async def get(self):
        request_id.set("req-42")
        self.write(await read_request_id("!", times=2))


class BlockingFetch(tornado.web.RequestHandler):
    @blocking
    def get(self):
        sleep(0.2)
        body = wait(AsyncHTTPClient().fetch(BACKEND + "/services")).body
        self.write(body + b" " + str(os.getpid()).encode())


# a loop made in the master before fork, in a way no CPython warns about,
# as a preloaded app may: every worker must run this very IOLoop
PRE_FORK_LOOP = None
if os.environ.get("PRE_FORK_LOOP"):
    asyncio.set_event_loop(asyncio.new_event_loop())
    PRE_FORK_LOOP = IOLoop.current()

AsyncHTTPClient.configure(None, max_clients=500)
tornado_app = tornado.web.Application([(r"/pid", Pid), (r"/blocking", BlockingFetch),
                                       (r"/blocking-context", BlockingContext)])
# the HTTPServer each serve_* returns: in a worker, the one listening there
tornado_server = None
if os.environ.get("PER_WORKER_PORT"):
    tornado_server = serve_per_worker(tornado_app, int(os.environ["PER_WORKER_PORT"]))
if os.environ.get("REUSEPORT_PORT"):
    tornado_server = serve_reuseport(tornado_app, int(os.environ["REUSEPORT_PORT"]))
if os.environ.get("SERVE_FD"):
    tornado_server = serve_fd(tornado_app, int(os.environ["SERVE_FD"]))
if os.environ.get("SHARED_SOCKET"):
    tornado_server = serve_shared_socket(tornado_app, os.environ["SHARED_SOCKET"])


class Boom(Exception):
    pass


async def coro(value, delay=0.1):
    await asyncio.sleep(delay)
    return value


async def failing():
    await asyncio.sleep(0.05)
    raise Boom("from the coroutine")


async def echo(message):
    reader, writer = await asyncio.open_connection("127.0.0.1", ECHO_PORT)
    writer.write(message + b"\n")
    await writer.drain()
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return line.strip()


cancelled = []


async def forever():
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.append(1)
        raise


def inner_wait():
    return wait(coro(b"inner"))


creations = {"slow": 0, "flaky": 0}


async def make_slowly():
    """A resource that takes 0.3 s to create: its value is the creation count."""
    creations["slow"] += 1
    await asyncio.sleep(0.3)
    return creations["slow"]


def make_flaky():
    """A resource (made without awaiting) whose first creation fails."""
    creations["flaky"] += 1
    if creations["flaky"] == 1:
        raise RuntimeError("the first creation fails")
    return creations["flaky"]


slow_resource = PerWorker(make_slowly)
flaky_resource = PerWorker(make_flaky)


async def make_async():
    await asyncio.sleep(0.01)
    return "made by an async def"


async_resource = PerWorker(make_async)
try:
    PerWorker(make_async())  # a coroutine object: refused, and closed
    COROUTINE_OBJECT = "accepted"
except TypeError as exc:
    COROUTINE_OBJECT = str(exc)


def run(kind, q):
    loop = asyncio.get_running_loop()
    if kind == "coroutine":
        return wait(coro(b"coroutine"))
    if kind == "per-worker-slow":
        return str(slow_resource.get()).encode()
    if kind == "per-worker-flaky":
        try:
            return str(flaky_resource.get()).encode()
        except RuntimeError as exc:
            return str(exc).encode()
    if kind == "task":
        return wait(loop.create_task(coro(b"task")))
    if kind == "asyncio-future":
        f = loop.create_future()
        loop.call_later(0.1, f.set_result, b"asyncio-future")
        return wait(f)
    if kind == "tornado-future":
        f = TornadoFuture()
        ioloop().call_later(0.1, f.set_result, b"tornado-future")
        return wait(f)
    if kind == "concurrent-future":
        f = concurrent.futures.Future()
        threading.Timer(0.1, f.set_result, [b"concurrent-future"]).start()
        return wait(f)
    if kind == "fetch":
        return wait(AsyncHTTPClient().fetch(BACKEND + "/slow?s=" + q.get("s", ["1"])[0])).body
    if kind == "echo":
        return wait(echo(b"ping"))
    if kind == "exception":
        try:
            wait(failing())
        except Boom as exc:
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            return b"Boom %s %s" % (str(exc).encode(), b"in failing" if "in failing" in "".join(tb) else b"no tb")
    if kind == "timeout":
        started = time.monotonic()
        try:
            wait(forever(), timeout=0.3)
        except TimeoutError:
            sleep(0.05)  # let the cancellation run
            return b"timeout %.2f cancelled=%d" % (time.monotonic() - started, len(cancelled))
    if kind == "nested":
        first = wait(coro(b"outer"))
        child = greenlet.greenlet(inner_wait)
        return first + b"+" + child.switch() if not child.dead else b"?"
    if kind == "sleep":
        started = time.monotonic()
        sleep(0.25)
        return b"%.3f" % (time.monotonic() - started)
    if kind == "executor":
        return run_in_executor(lambda a, b: (time.sleep(0.2), a + b)[1], b"ex", b"ecutor")
    if kind == "import-time":
        return IMPORT_TIME.encode()
    if kind == "thread":
        out = []

        def in_thread():
            try:
                wait(asyncio.sleep(0))
            except RuntimeError as exc:
                out.append(str(exc))
        t = threading.Thread(target=in_thread)
        t.start()
        t.join()
        return out[0].encode()
    if kind == "callback":
        out = loop.create_future()

        def in_callback():
            try:
                wait(asyncio.sleep(0))
            except RuntimeError as exc:
                out.set_result(str(exc).encode())
        loop.call_soon(in_callback)
        return wait(out)
    if kind == "warnoptions":
        return " ".join(sys.warnoptions).encode()
    if kind == "pre-fork-loop":
        return b"same" if ioloop() is PRE_FORK_LOOP else b"other"
    if kind == "per-worker-async":
        return async_resource.get().encode()
    if kind == "per-worker-coroutine-object":
        return COROUTINE_OBJECT.encode()
    if kind == "timeout-both":
        caught = []
        try:
            wait(forever(), timeout=0.05)
        except TimeoutError:
            caught.append("TimeoutError")
        try:
            wait(forever(), timeout=0.05)
        except asyncio.TimeoutError:
            caught.append("asyncio.TimeoutError")
        return " ".join(caught).encode()
    if kind == "to-thread":
        request_id.set("in-request")

        def work(a, b, *, sep):
            time.sleep(0.1)
            where = "main-thread" if threading.current_thread() is threading.main_thread() else "pool-thread"
            return sep.join([a, b, request_id.get(), where])
        return to_thread(work, "x", "y", sep="+").encode()
    if kind == "engine":
        import uwsgi
        import uwsgi_tornado_engine as engine
        root = greenlet.getcurrent()
        while root.parent is not None:
            root = root.parent
        checks = [engine.hub is root, engine.ioloop is ioloop(), engine.loop is loop,
                  engine.sleep is uwsgi.async_sleep]
        return " ".join(str(c) for c in checks).encode()
    if kind == "stop-tornado-server":
        tornado_server.stop()
        return b"stopped"
    if kind == "bad-timeout":
        try:
            wait(asyncio.sleep(0), timeout="soon")
        except TypeError as exc:
            return str(exc).encode()
    return b"unknown kind"


def application(environ, start_response):
    q = parse_qs(environ.get("QUERY_STRING", ""))
    body = run(environ["PATH_INFO"].strip("/"), q)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
