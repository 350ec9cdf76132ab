"""ASGI applications on the tornado loop engine (``--tornado-asgi``).

``uwsgi --http11-socket :9090 --tornado 100 --greenlet --tornado-asgi app:app``
loads the ASGI 3 application ``app`` of module ``app`` (an ASGI 2 double
callable is wrapped by asgiref's ``guarantee_single_callable``). The plugin
(``asgi.c``) registers the :class:`Bridge` of each app with the python plugin
as an ordinary WSGI app, so uWSGI routes, logs, counts, recycles and applies
``--harakiri`` to ASGI requests as to any other.

How a request runs: in the request's core greenlet, which stays the
request's I/O pump. The app runs as an ``asyncio.Task`` on the worker's
loop (in the greenlet's fresh ``contextvars`` context, so anyio, sniffio and
``asyncio.current_task()`` work) and the core greenlet serves the Task's
``receive()`` and ``send()``: a call that needs the connection (a body read,
a response write) switches into the core greenlet, which does it with
uWSGI's own functions (the engine's deadlines, 100-continue and
backpressure apply) and switches back with the result; when the I/O has to
wait, the Task awaits a future the greenlet resolves. A call that needs no
I/O (``http.response.start``, the body of a request without one) never
leaves the Task. An HTTP request is served that way by asgi.c itself (the
plugin gives every ASGI app its own subhandler: the scope is built from
uWSGI's request, no WSGI environ; :func:`_run_http` is its Task); a
websocket by the :class:`Bridge`, in Python, through uWSGI's WSGI environ.

Lifespan runs once per worker after fork, before the worker accepts
(:func:`worker_start`), and its shutdown after the last request of a drain
(:func:`worker_stop`).
"""
from __future__ import annotations

import asyncio
import collections
import functools
import importlib
import inspect
import os
import socket
import sys
import traceback
import types
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional, Tuple

import greenlet

from .core import blocking

Message = Dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Dict[str, Any], Receive, Send], Awaitable[None]]

#: the ASGI spec version the bridge implements (2.4: send() raises
#: :class:`ClientDisconnected`, an OSError, once the client left)
SPEC_VERSION = "2.4"
ASGI = {"version": "3.0", "spec_version": SPEC_VERSION}

_NO_BODY = frozenset({204, 304})


class ClientDisconnected(OSError):
    """What ``send()`` raises once the client went away (ASGI 2.4)."""


def _c() -> Any:
    """The request's side of the bridge, in C (asgi.c); it exists once an
    ASGI app is loaded."""
    import _uwsgi_tornado_asgi
    return _uwsgi_tornado_asgi


def _single_callable(app: Any) -> ASGIApp:
    """An ASGI 3 callable for ``app`` (ASGI 2 double callables wrapped)."""
    try:
        from asgiref.compatibility import guarantee_single_callable
    except ImportError:  # asgiref not installed: ASGI 3 only
        return app
    return guarantee_single_callable(app)


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in (attr or "application").split("."):
        obj = getattr(obj, part)
    return obj


#: the bridges of the apps loaded in this process, in --tornado-asgi order
_bridges: List["Bridge"] = []


def load(target: str) -> "Bridge":
    """``module:callable`` (``callable`` defaults to ``application``, and
    may be dotted) as a WSGI callable for uWSGI; called by the plugin at
    app-load time."""
    bridge = Bridge(_single_callable(_import(target)), target)
    _bridges.append(bridge)
    return bridge


def _option(name: str) -> Optional[str]:
    """The last value of a uWSGI option, or None."""
    import uwsgi
    value = uwsgi.opt.get(name)
    if isinstance(value, list):
        value = value[-1]
    if isinstance(value, bytes):
        value = value.decode()
    return None if value is None or value is True else str(value)


class _Engine:
    """What a bridge takes from the worker's engine, once per worker."""

    def __init__(self) -> None:
        engine = sys.modules["uwsgi_tornado_engine"]
        import uwsgi
        self.loop: asyncio.AbstractEventLoop = engine.loop
        self.hub: greenlet.greenlet = engine.hub
        self.c = _c()
        self.uwsgi = uwsgi
        self.socket_timeout = int(_option("socket-timeout") or 30)
        seconds = float(_option("harakiri") or 0)
        # the Task is cancelled a second before the master's harakiri (which
        # counts whole seconds), so that the stack is logged and the worker lives
        self.harakiri = max(seconds - 1.0, seconds / 2) if seconds > 0 else 0.0


_engine: Optional[_Engine] = None


def worker_start() -> bool:
    """Per worker, after fork, before accepting: bind the bridges to the
    worker's loop and run every app's lifespan startup. False when one
    failed (the plugin then ends the worker)."""
    global _engine
    _c().configure(ClientDisconnected)
    _engine = _Engine()
    for bridge in _bridges:
        if not bridge.lifespan.startup(_engine.loop):
            return False
    return True


def worker_stop() -> None:
    """Per worker, after the last request of a drain: every app's lifespan
    shutdown, in the reverse order of their startups."""
    if _engine is None:
        return
    for bridge in reversed(_bridges):
        bridge.lifespan.shutdown(_engine.loop)


def _log(line: str) -> None:
    sys.stderr.write(line if line.endswith("\n") else line + "\n")
    sys.stderr.flush()


class Lifespan:
    """The lifespan protocol of one app: startup before the worker accepts,
    shutdown after its last request; ``state`` reaches every request's scope
    (a shallow copy per request, as uvicorn does). An app that raises before
    it answers the startup does not speak lifespan: one line says so and the
    worker serves it anyway (uvicorn's ``--lifespan auto``)."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name
        self.state: Dict[str, Any] = {}
        self.supported = False
        self.task: Optional[asyncio.Task] = None
        self._started: Optional[asyncio.Future] = None
        self._shutdown: Optional[asyncio.Future] = None
        self._stopped: Optional[asyncio.Future] = None
        self._sent_startup = False
        self._failure: Optional[str] = None

    async def _receive(self) -> Message:
        if not self._sent_startup:
            self._sent_startup = True
            return {"type": "lifespan.startup"}
        assert self._shutdown is not None
        await self._shutdown
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: Message) -> None:
        kind = message.get("type")
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if kind == "lifespan.startup.failed":
                self._failure = message.get("message") or "lifespan.startup.failed"
            self.supported = True
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if kind == "lifespan.shutdown.failed":
                _log(f"[tornado] ASGI app {self.name}: lifespan shutdown failed: {message.get('message', '')}")
            if self._stopped is not None and not self._stopped.done():
                self._stopped.set_result(None)
        else:
            raise RuntimeError(f"unexpected lifespan message {kind!r}")

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": dict(ASGI), "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:  # noqa: BLE001 - reported below, the worker goes on
            if not self.supported:
                _log(f"[tornado] ASGI app {self.name} does not support lifespan ({type(exc).__name__}: {exc}): serving it without")
            elif self._started is not None and self._started.done() and self._failure is None:
                _log(f"[tornado] ASGI app {self.name}: lifespan raised: {''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))}")
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            for future in (self._started, self._stopped):
                if future is not None and not future.done():
                    future.set_result(None)

    def startup(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Run the startup to its end on the (not yet running) loop."""
        self._started = loop.create_future()
        self._shutdown = loop.create_future()
        self._stopped = loop.create_future()
        self.task = loop.create_task(self._run())
        loop.run_until_complete(self._started)
        if self._failure is not None:
            _log(f"[tornado] ASGI app {self.name}: lifespan startup failed: {self._failure}")
            return False
        return True

    def shutdown(self, loop: asyncio.AbstractEventLoop, timeout: float = 30.0) -> None:
        """Ask for the shutdown and run the loop until it completed (the
        loop stopped: the requests are done), within ``timeout`` seconds."""
        if self.task is None or self.task.done() or not self.supported or loop.is_running() or loop.is_closed():
            return
        assert self._shutdown is not None and self._stopped is not None
        self._shutdown.set_result(None)
        try:
            loop.run_until_complete(asyncio.wait([self._stopped], timeout=timeout))
        except Exception as exc:  # noqa: BLE001 - the worker exits anyway
            _log(f"[tornado] ASGI app {self.name}: lifespan shutdown: {exc!r}")
        if not self._stopped.done():
            _log(f"[tornado] ASGI app {self.name}: lifespan shutdown did not complete within {timeout:g} s")


class Bridge:
    """The WSGI callable uWSGI runs for an ASGI app: one :class:`_Request`
    per request, in the request's core greenlet."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name
        self.lifespan = Lifespan(app, name)

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
        if _engine is None:
            raise RuntimeError("ASGI apps run under --tornado N --greenlet only")
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            raise RuntimeError("the HTTP requests of an ASGI app are served by asgi.c, not the bridge")
        return _WebSocket(self, _engine, environ).run()


# ---- the HTTP requests, served by asgi.c ----

async def _run_http(app: ASGIApp, scope: Dict[str, Any], request: Any) -> None:
    """The Task of one HTTP request: the app with the ``receive`` and
    ``send`` of ``request`` (asgi.c's Request), then ``request.finished``,
    from which the core greenlet ends the request (no loop iteration
    between)."""
    error: Optional[BaseException] = None
    try:
        await app(scope, request.receive, request.send)
    except BaseException as exc:  # noqa: BLE001 - asgi.c reports it
        error = exc
    request.finished(error)
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        raise error


def _http_app(callable_: Any) -> Optional[Tuple[ASGIApp, str, Dict[str, Any]]]:
    """(app, name, lifespan state) when ``callable_`` is the bridge of an
    ASGI app (its HTTP requests then go to asgi.c), else None."""
    if isinstance(callable_, Bridge):
        return callable_.app, callable_.name, callable_.lifespan.state
    return None


def _log_error(name: str, error: BaseException) -> None:
    _log(f"[tornado] ASGI app {name} raised:\n"
         + "".join(traceback.format_exception(type(error), error, error.__traceback__)))


def _harakiri_http(task: "asyncio.Task[None]", method: str, uri: str) -> None:
    """``--harakiri``: log where the request's Task waits, and cancel it."""
    if task.done():
        return
    stack = "".join(traceback.format_list(_await_chain(task.get_coro())))
    _log(f"[tornado] harakiri: cancelling the ASGI Task of {method} {uri} (pid: {os.getpid()}), its stack:\n{stack}")
    task.cancel()


def _http_config() -> Tuple[Any, ...]:
    """What asgi.c's requests take from the glue and the worker's loop, once
    per worker after :func:`worker_start`."""
    assert _engine is not None
    loop = _engine.loop
    # the Task class itself, called from C, unless the app set a task factory
    # (in its lifespan startup): loop.create_task is a Python method on
    # asyncio's loop, the class is C
    create_task: Callable[..., Any] = loop.create_task
    # asyncio's own loop or the engine's uvloop, with no task factory: asgi.c
    # runs the first step of each request's Task in the core greenlet (its
    # I/O without a switch)
    eager: Any = None
    uvloop = sys.modules.get("uvloop")
    if loop.get_task_factory() is None and (isinstance(loop, asyncio.BaseEventLoop)
                                            or (uvloop is not None and isinstance(loop, uvloop.Loop))):
        create_task = functools.partial(asyncio.Task, loop=loop)
        if hasattr(loop, "__dict__"):
            eager = loop
    # asyncio.current_task is Python before 3.12, over the C module's dict of
    # the current tasks that _enter_task and _leave_task keep: asgi.c reads
    # the dict then
    current: Any = asyncio.current_task
    current_tasks = getattr(asyncio.tasks, "_current_tasks", None)
    if isinstance(current, types.FunctionType) and type(current_tasks) is dict \
            and current_tasks is getattr(sys.modules.get("_asyncio"), "_current_tasks", None):
        current = current_tasks
    steps = (eager, current, asyncio.tasks._enter_task,  # type: ignore[attr-defined]
             asyncio.tasks._leave_task)  # type: ignore[attr-defined]
    return (_run_http, create_task, loop.create_future, loop.call_later, loop.add_reader,
            loop.remove_reader, _harakiri_http, float(_engine.harakiri), _log_error, asyncio.CancelledError,
            steps)


# what the core greenlet does for the Task
_RECEIVE, _BODY, _PATHSEND, _WS_ACCEPT, _WS_SEND, _WS_CLOSE, _WS_DENY, _WS_POLL = 1, 2, 3, 4, 5, 6, 7, 8


class _Op:
    """One receive()/send() call the core greenlet performs for the Task."""
    __slots__ = ("kind", "message", "future")

    def __init__(self, kind: int, message: Optional[Message]) -> None:
        self.kind = kind
        self.message = message
        self.future: Optional[asyncio.Future] = None


class _Reply:
    """What the core greenlet switches back with when it performed an op
    without waiting."""
    __slots__ = ("value", "error")

    def __init__(self, value: Any, error: Optional[BaseException]) -> None:
        self.value = value
        self.error = error


_DISCONNECT = {"type": "http.disconnect"}
# what a websocket's send() asks of the core greenlet, before and after accept
_WS_BEFORE_ACCEPT = {"websocket.accept": _WS_ACCEPT, "websocket.close": _WS_DENY}
_WS_AFTER_ACCEPT = {"websocket.send": _WS_SEND, "websocket.close": _WS_CLOSE}
_PENDING = object()


class _Request:
    """The pump of a websocket's request (_WebSocket): its scope, its Task,
    and the core greenlet serving the Task's calls. HTTP requests are
    served by asgi.c, which follows the same design in C."""

    __slots__ = ("bridge", "engine", "environ", "task", "core", "idle", "queue", "done",
                 "remaining", "chunked_in", "body_done", "status", "headers", "started",
                 "chunked_out", "complete", "disconnected", "waiters", "fd", "watching",
                 "head", "http", "_reply", "error")

    def __init__(self, bridge: Bridge, engine: _Engine, environ: Dict[str, Any]) -> None:
        self.bridge = bridge
        self.engine = engine
        self.environ = environ
        self.core = greenlet.getcurrent()
        self.idle = False
        self.queue: Deque[_Op] = collections.deque()
        self.done = False
        self.chunked_in = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        length = environ.get("CONTENT_LENGTH")
        self.remaining = int(length) if length else 0
        self.body_done = False
        self.status = 0
        self.headers: Any = None
        self.started = False
        self.chunked_out = False
        self.complete = False
        self.disconnected = False
        self.waiters: List[asyncio.Future] = []
        self.fd = -1
        self.watching = False
        self.head = environ["REQUEST_METHOD"] == "HEAD"
        self.http = False
        self._reply: Optional[_Reply] = None
        self.error: Optional[BaseException] = None

    # ---- the scope ----

    def scope(self) -> Dict[str, Any]:
        """The request's http scope, built by asgi.c as for an HTTP request."""
        return self.engine.c.scope(self.bridge.lifespan.state)

    # ---- in the core greenlet ----

    def run(self) -> List[bytes]:
        engine = self.engine
        self.http = engine.c.http_socket()
        self.fd = engine.uwsgi.connection_fd()
        task = self.task = engine.loop.create_task(self._main(self.scope()))
        timer = engine.loop.call_later(engine.harakiri, self._harakiri) if engine.harakiri else None
        try:
            while True:
                op = self._park()
                if op is None:
                    break
                self._perform(op)
        finally:
            if timer is not None:
                timer.cancel()
            self._unwatch()
            if not self.done:
                # the greenlet is being killed (worker exit): so is the Task
                task.cancel()
        self._finish(self.error)
        return []

    def _park(self) -> Optional[_Op]:
        """Wait for the Task's next call (None: the Task is over)."""
        reply = None
        while True:
            queue = self.queue
            while queue:
                op = queue.popleft()
                if op.future is None or not op.future.done():
                    return op
            if self.done:
                return None
            self.idle = True
            value = self.engine.hub.switch(reply)
            self.idle = False
            reply = None
            if value.__class__ is _Op:
                return value
            # None: the Task ended; anything else: not ours, wait on

    def _perform(self, op: _Op) -> None:
        try:
            value, error = self._do(op), None
        except BaseException as exc:  # noqa: BLE001 - handed to the Task
            value, error = None, exc
        if value is _PENDING:
            return  # resolved later (a websocket receive waiting for a message)
        self._resolve(op, value, error)

    def _resolve(self, op: _Op, value: Any, error: Optional[BaseException]) -> None:
        future = op.future
        if future is None:
            # the Task is still inside its switch into this greenlet
            self._reply = _Reply(value, error)
            return
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    def _begin(self, final_body: Optional[bytes]) -> None:
        """The response head, once the first body is known: Content-Length
        when the body comes in one piece, chunked framing when it does not
        (on an HTTP socket, for HTTP/1.1), else the end of the connection."""
        status = self.status
        headers = self.headers
        length = chunked = False
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length":
                length = True
            elif lname == b"transfer-encoding":
                chunked = True
        has_body = status >= 200 and status not in _NO_BODY
        can_chunk = self.http and not self.head and self.environ.get("SERVER_PROTOCOL") == "HTTP/1.1"
        if chunked and not length:
            # the app says chunked (BlackSheep does) and leaves the framing
            # to the server, as uvicorn does it: frame it, or, where chunked
            # cannot go (HTTP/1.0, the uwsgi protocol), drop the header
            if can_chunk and has_body:
                self.chunked_out = True
            else:
                headers = [h for h in headers if h[0].lower() != b"transfer-encoding"]
        elif not length and has_body:
            if final_body is not None:
                headers = list(headers)
                headers.append((b"content-length", str(len(final_body)).encode()))
            elif can_chunk:
                headers = list(headers)
                headers.append((b"transfer-encoding", b"chunked"))
                self.chunked_out = True
        self.engine.c.start(status, headers)
        self.started = True

    def _write_body(self, message: Message) -> None:
        body = message.get("body", b"")
        more = message.get("more_body", False)
        c = self.engine.c
        try:
            if not self.started:
                self._begin(None if more else body)
            if self.chunked_out:
                if body:
                    c.write(body, True)
                if not more:
                    c.write(b"", True)
            elif body or not more:
                c.write(body)
        except OSError:
            self._disconnect()
            raise
        if not more:
            self._completed()

    def _completed(self) -> None:
        self.complete = True
        if self.waiters or self.watching:
            self._wake_waiters()

    # ---- in the Task ----

    async def _call(self, op: _Op) -> Any:
        if self.idle:
            self.idle = False
            self._reply = None
            self.core.switch(op)
            reply = self._reply
            if reply is not None:
                self._reply = None
                if reply.error is not None:
                    raise reply.error
                return reply.value
        else:
            self.queue.append(op)
        future = op.future = self.engine.loop.create_future()
        return await future

    # ---- the client going away ----

    async def _main(self, scope: Dict[str, Any]) -> None:
        """The Task: the app, then the core greenlet goes on with the end of
        the request from the Task's last step (no loop iteration between)."""
        try:
            await self.bridge.app(scope, self.receive, self.send)
        except BaseException as exc:  # noqa: BLE001 - _finish() reports it
            self.error = exc
        self.done = True
        if self.idle:
            self.idle = False
            self.core.switch(None)
        if isinstance(self.error, (KeyboardInterrupt, SystemExit)):
            raise self.error

    def _disconnect(self) -> None:
        self.disconnected = True
        self._wake_waiters()

    def _wake_waiters(self, value: Any = _DISCONNECT) -> None:
        """Resolve the receive() calls waiting (for the client to leave, or
        for a websocket's accept) with `value`."""
        waiters, self.waiters = self.waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(value)
        self._unwatch()

    def _watch(self) -> None:
        """A receive() waits for the client to leave: watch the connection
        (asyncio's reader, beside the engine's registration)."""
        if self.watching or self.fd < 0:
            return
        self.watching = True
        self.engine.loop.add_reader(self.fd, self._readable)

    def _unwatch(self) -> None:
        if self.watching:
            self.watching = False
            self.engine.loop.remove_reader(self.fd)

    def _readable(self) -> None:
        try:
            with socket.fromfd(self.fd, socket.AF_INET, socket.SOCK_STREAM) as s:
                data = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            # bytes of a next request, or TLS: nothing more to learn here
            self._unwatch()
            return
        self._disconnect()

    def _harakiri(self) -> None:
        task = self.task
        if task.done():
            return
        stack = "".join(traceback.format_list(_await_chain(task.get_coro())))
        _log(f"[tornado] harakiri: cancelling the ASGI Task of {self.environ.get('REQUEST_METHOD')} "
             f"{self.environ.get('REQUEST_URI')} (pid: {os.getpid()}), its stack:\n{stack}")
        task.cancel()


class _WebSocket(_Request):
    """One websocket of an ASGI app, on the engine's RFC 6455 code (the
    uwsgi.websocket_* API): the core greenlet stays the only one that reads
    and writes the connection. A receive() waiting for a message does not
    block the greenlet: it is kept pending while asyncio watches the
    connection (and a 1 s poll answers pings and a drain's 1001), so the app
    may send, and close, while it awaits receive()."""

    __slots__ = ("accepted", "closed", "pending", "connected", "poll", "close_code")

    def __init__(self, bridge: Bridge, engine: _Engine, environ: Dict[str, Any]) -> None:
        super().__init__(bridge, engine, environ)
        self.accepted = False
        self.closed = False
        self.connected = False
        self.pending: Optional[_Op] = None
        self.poll: Optional[asyncio.TimerHandle] = None
        self.close_code = 1000

    def scope(self) -> Dict[str, Any]:
        scope = super().scope()
        scope["type"] = "websocket"
        scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
        del scope["method"]
        protocols = self.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
        scope["subprotocols"] = [p.strip() for p in protocols.split(",") if p.strip()]
        scope["extensions"] = {}
        return scope

    def _do(self, op: _Op) -> Any:
        uwsgi = self.engine.uwsgi
        kind = op.kind
        if kind == _WS_ACCEPT:
            message = op.message
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers") or ()]
            try:
                uwsgi.websocket_handshake(proto=message.get("subprotocol") or None, headers=headers)
            except OSError:
                # not a valid upgrade (the engine sent nothing): refuse it
                self._deny(400)
                raise ClientDisconnected("the websocket upgrade was not valid")
            self.accepted = True
            self._wake_waiters(None)
            return None
        if kind == _WS_DENY:
            self._deny(403)
            return None
        if kind == _WS_SEND:
            message = op.message
            try:
                if message.get("bytes") is not None:
                    uwsgi.websocket_send_binary(message["bytes"])
                else:
                    uwsgi.websocket_send(message.get("text") or "")
            except OSError:
                self._gone(1006)
                raise ClientDisconnected("the websocket is closed")
            return None
        if kind == _WS_CLOSE:
            code = op.message.get("code") or 1000
            try:
                uwsgi.websocket_close(code, op.message.get("reason") or "")
            except OSError:
                pass
            self._gone(code)
            return None
        if kind == _RECEIVE:
            self.pending = op
        return self._try_receive()

    def _try_receive(self) -> Any:
        """The pending receive's message, if one came (else _PENDING)."""
        op = self.pending
        if op is None:
            return _PENDING
        if self.closed:
            message: Any = {"type": "websocket.disconnect", "code": self.close_code}
        else:
            try:
                got = self.engine.uwsgi.websocket_recv_message(nb=True)
            except OSError as exc:
                code = getattr(exc, "close_code", None)
                self._gone(code if code is not None else 1006)
                got = None
                message = {"type": "websocket.disconnect", "code": self.close_code}
            else:
                if got is None:
                    self._watch()
                    return _PENDING
                kind, payload = got
                message = ({"type": "websocket.receive", "text": payload.decode("utf-8")} if kind == "text"
                           else {"type": "websocket.receive", "bytes": payload})
        self.pending = None
        self._unwatch()
        if op.future is None:
            return message
        self._resolve(op, message, None)
        return _PENDING

    def _deny(self, status: int) -> None:
        self.status = status
        self.headers = [(b"content-type", b"text/plain"), (b"connection", b"close")]
        self._write_body({"body": b"", "more_body": False})
        self.closed = True
        self._wake_waiters(None)

    def _gone(self, code: int) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
        self.disconnected = True
        self._try_receive()

    # watching the connection while a receive is pending
    def _watch(self) -> None:
        if not self.watching and self.fd >= 0:
            self.watching = True
            self.engine.loop.add_reader(self.fd, self._wake_for_input)
        if self.poll is None:
            self.poll = self.engine.loop.call_later(1.0, self._tick)

    def _unwatch(self) -> None:
        super()._unwatch()
        if self.poll is not None:
            self.poll.cancel()
            self.poll = None

    def _tick(self) -> None:
        self.poll = None
        self._wake_for_input()

    def _wake_for_input(self) -> None:
        if self.idle and self.pending is not None:
            self.idle = False
            self.core.switch(_Op(_WS_POLL, None))
        elif self.pending is not None and self.poll is None:
            self.poll = self.engine.loop.call_later(1.0, self._tick)

    def _perform(self, op: _Op) -> None:
        if op.kind == _WS_POLL:
            if self.watching:
                self.engine.loop.remove_reader(self.fd)
                self.watching = False
            self._try_receive()
            return
        super()._perform(op)

    # ---- in the Task ----

    async def receive(self) -> Message:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        while not self.accepted and not self.closed:
            # a receive() before the accept (Quart reads in a task of its
            # own) waits for it
            future = self.engine.loop.create_future()
            self.waiters.append(future)
            await future
        if self.closed and self.pending is None:
            return {"type": "websocket.disconnect", "code": self.close_code}
        return await self._call(_Op(_RECEIVE, None))

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.closed:
            raise ClientDisconnected("the websocket was refused" if not self.accepted else "the websocket is closed")
        op = (_WS_BEFORE_ACCEPT if not self.accepted else _WS_AFTER_ACCEPT).get(kind)
        if op is None:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for a websocket scope"
                               + ("" if self.accepted else " before websocket.accept"))
        return await self._call(_Op(op, message))

    def _finish(self, error: Optional[BaseException]) -> None:
        if error is not None and not isinstance(error, (ClientDisconnected, asyncio.CancelledError)):
            _log(f"[tornado] ASGI app {self.bridge.name} raised in a websocket:\n"
                 + "".join(traceback.format_exception(type(error), error, error.__traceback__)))
        self._unwatch()
        if not self.accepted and not self.closed:
            # the app returned (or failed) without accepting: refused, as uvicorn does
            try:
                self._deny(403 if error is None else 500)
            except OSError:
                pass
        elif self.accepted and not self.closed:
            try:
                self.engine.uwsgi.websocket_close(1000 if error is None else 1011)
            except OSError:
                pass


def _await_chain(coro: Any) -> List[traceback.FrameSummary]:
    """Where a coroutine waits: its frame and those of what it awaits, down
    to the innermost (a Task's get_stack() shows only its outermost one)."""
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(traceback.FrameSummary(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


async def run_blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking uWSGI call (``uwsgi.cache_get``, ``uwsgi.rpc``,
    ``uwsgi.signal``, or any function that uses :func:`wait`) from async
    code, in a greenlet of its own, without freezing the loop: the reverse
    of :func:`wait`.

    Example::

        async def app(scope, receive, send):
            value = await run_blocking(uwsgi.cache_get, "key")
    """
    return await blocking(fn)(*args, **kwargs)
