"""wait(), sleep(), ioloop(), run_in_executor() and @blocking.

How it works: the worker's IOLoop runs in the worker's main greenlet (the
hub); every request runs in a greenlet below it. Waiting means: arrange for
the loop to switch back to the current greenlet when the awaitable is done,
then switch to the hub. Only the calling request is suspended.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
from typing import Any, Awaitable, Callable, TypeVar, Union

import greenlet
from tornado.ioloop import IOLoop

T = TypeVar("T")
Waitable = Union[Awaitable[T], "concurrent.futures.Future[T]"]

# values the loop switches back with: they say why the wait ended
_DONE = object()
_TIMEOUT = object()


def _hub() -> greenlet.greenlet:
    """The greenlet running the worker's loop, or RuntimeError saying why
    there is nothing to suspend."""
    current = greenlet.getcurrent()
    if current.parent is None:
        raise RuntimeError(
            "uwsgidecorators_ext can only wait inside a request (or a greenlet started "
            "below one) of a uWSGI worker running --tornado N --greenlet: this code runs in "
            "the loop's own greenlet, at import time, in the master or in a plain thread, "
            "where waiting would block every request"
        )
    root = current
    while root.parent is not None:
        root = root.parent
    return root


_loop: asyncio.AbstractEventLoop | None = None


def _running_loop() -> asyncio.AbstractEventLoop:
    # asyncio._get_running_loop() costs a getpid() system call per call (its
    # fork check), a measurable share of a C10K run: keep the worker's loop.
    # Only a worker gets here with a running loop, so the cache never holds
    # the master's loop.
    global _loop
    if _loop is not None and _loop.is_running():
        return _loop
    loop = asyncio._get_running_loop()
    if loop is None:
        raise RuntimeError("uwsgidecorators_ext: no running IOLoop in this process (is this a --tornado worker?)")
    _loop = loop
    return loop


def _as_future(awaitable: Any, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
    if isinstance(awaitable, concurrent.futures.Future):
        return asyncio.wrap_future(awaitable, loop=loop)
    if asyncio.isfuture(awaitable):  # asyncio and Tornado (>= 5) Futures, Tasks
        return awaitable
    if inspect.isawaitable(awaitable):  # coroutines and other awaitables
        return asyncio.ensure_future(awaitable, loop=loop)
    raise TypeError(f"wait() needs a Future, a Task, a coroutine or a concurrent.futures.Future, not {awaitable!r}")


def wait(awaitable: Waitable[T], timeout: float | None = None) -> T:
    """Suspend the calling request until ``awaitable`` completes; return its
    result or raise its exception (with its traceback).

    ``awaitable`` is a Tornado or asyncio Future, a Task, a coroutine, or a
    ``concurrent.futures.Future``. With ``timeout`` (seconds), raise
    ``TimeoutError`` when it passes and cancel what was waited for.
    Outside a request greenlet, raise ``RuntimeError``. A coroutine that
    ``wait`` refuses (outside a request, a wrong ``timeout``) is closed.

    Example::

        async def lookup(key):
            reader, writer = await asyncio.open_connection("127.0.0.1", 6379)
            ...

        def application(environ, start_response):
            value = wait(lookup("k"), timeout=2)
            ...
    """
    try:
        hub = _hub()
        loop = _running_loop()
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
            raise TypeError(f"wait() timeout must be a number of seconds or None, not {timeout!r}")
        future = _as_future(awaitable, loop)
    except BaseException:
        # refused before anything runs it: a coroutine never awaited would
        # only be reported ("coroutine ... was never awaited") when collected
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        raise
    if future.done():
        return future.result()
    me = greenlet.getcurrent()

    def wake(_: object) -> None:
        me.switch(_DONE)

    future.add_done_callback(wake)
    timer = loop.call_later(timeout, me.switch, _TIMEOUT) if timeout is not None else None
    try:
        while True:
            why = hub.switch()
            if why is _TIMEOUT and not future.done():
                future.cancel()
                raise TimeoutError(f"wait() gave up after {timeout} s")
            if future.done():
                break
            # switched to by someone else (an app's own callback): keep waiting
    finally:
        future.remove_done_callback(wake)
        if timer is not None:
            timer.cancel()
    return future.result()


def sleep(seconds: float) -> None:
    """Suspend the calling request for ``seconds`` (fractions allowed) while
    the worker serves others.

    Example::

        def application(environ, start_response):
            sleep(0.5)
            start_response("200 OK", [])
            return [b"late"]
    """
    hub = _hub()
    engine_sleep = _engine_sleep()
    if engine_sleep is not None:
        engine_sleep(max(seconds, 0.0))
        return
    loop = _running_loop()
    me = greenlet.getcurrent()
    timer = loop.call_later(max(seconds, 0.0), me.switch, _DONE)
    try:
        while hub.switch() is not _DONE:
            pass
    finally:
        timer.cancel()


_UNSET: Any = object()
_engine_sleep_fn: Any = _UNSET


def _engine_sleep() -> Callable[[float], object] | None:
    """The tornado engine's ``uwsgi.async_sleep`` (its C timer heap: no
    Python object per sleep), or None where this is not that engine."""
    global _engine_sleep_fn
    if _engine_sleep_fn is _UNSET:
        try:
            import uwsgi
        except ImportError:
            uwsgi = None
        fn = getattr(uwsgi, "async_sleep", None)
        _engine_sleep_fn = fn if getattr(fn, "__module__", None) == "uwsgi_tornado_engine" else None
    return _engine_sleep_fn


def ioloop() -> IOLoop:
    """The worker's Tornado IOLoop (the one uWSGI runs).

    Example::

        ioloop().call_later(1.0, print, "one second later, in this worker")
    """
    return IOLoop.current()


def run_in_executor(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking ``fn(*args)`` in the loop's thread pool and suspend the
    calling request until it returns. ``--tornado`` enables Python threads in
    uWSGI (as ``--enable-threads`` does), which this needs.

    Example::

        digest = run_in_executor(hashlib.pbkdf2_hmac, "sha256", pw, salt, 600_000)
    """
    return wait(_running_loop().run_in_executor(None, functools.partial(fn, *args)))


def blocking(method: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Decorate a Tornado ``RequestHandler`` method so it runs in a greenlet of
    its own and may call :func:`wait`, :func:`sleep` and the uWSGI API in a
    blocking style, without monkey-patching.

    Example::

        class Fetch(tornado.web.RequestHandler):
            @blocking
            def get(self):
                response = wait(AsyncHTTPClient().fetch(BACKEND))
                self.write(response.body)
    """

    @functools.wraps(method)
    async def run_in_greenlet(*args: Any, **kwargs: Any) -> T:
        loop = _running_loop()
        future: asyncio.Future = loop.create_future()
        hub = greenlet.getcurrent()

        def body() -> None:
            try:
                result = method(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                if not future.cancelled():
                    future.set_exception(exc)
            else:
                if not future.cancelled():
                    future.set_result(result)

        greenlet.greenlet(body, parent=hub).switch()
        return await future

    return run_in_greenlet
