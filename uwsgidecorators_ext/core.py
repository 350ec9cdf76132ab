"""wait(), sleep(), ioloop(), to_thread() and @blocking.

How it works: the worker's IOLoop runs in the worker's main greenlet (the
hub); every request runs in a greenlet below it. Waiting means: arrange for
the loop to switch back to the current greenlet when the awaitable is done,
then switch to the hub. Only the calling request is suspended.

The engine publishes what it runs in its own module, ``uwsgi_tornado_engine``
(created in each worker after fork): ``hub`` (the loop's greenlet), ``loop``
(the asyncio loop), ``ioloop`` (its Tornado IOLoop) and ``sleep`` (the
engine's ``uwsgi.async_sleep``, on its C timer heap). The glue takes them
from there.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import sys
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar, Union

import greenlet
from tornado.ioloop import IOLoop

if TYPE_CHECKING:
    if sys.version_info >= (3, 10):
        from typing import ParamSpec
    else:
        from typing_extensions import ParamSpec

    P = ParamSpec("P")

T = TypeVar("T")
Waitable = Union[Awaitable[T], "concurrent.futures.Future[T]"]

# values the loop switches back with: they say why the wait ended
_DONE = object()
_TIMEOUT = object()

ENGINE_MODULE = "uwsgi_tornado_engine"

if sys.version_info >= (3, 11):
    WaitTimeout = TimeoutError
else:
    class WaitTimeout(asyncio.TimeoutError, TimeoutError):
        """What :func:`wait` raises when its timeout passes: both a
        ``TimeoutError`` and an ``asyncio.TimeoutError`` (one class from
        Python 3.11 on, two before)."""


def _engine() -> Any:
    """The engine's module in this worker, or None (the master, a plain
    process, another loop engine)."""
    return sys.modules.get(ENGINE_MODULE)


def _hub() -> greenlet.greenlet:
    """The greenlet running the worker's loop, or RuntimeError saying why
    there is nothing to suspend."""
    hub = getattr(_engine(), "hub", None)
    current = greenlet.getcurrent()
    if hub is None or current is hub or current.parent is None:
        raise RuntimeError(
            "uwsgidecorators_ext can only wait inside a request (or a greenlet started "
            "below one) of a uWSGI worker running --tornado N --greenlet: this code runs in "
            "the loop's own greenlet, at import time, in the master or in a plain thread, "
            "where waiting would block every request"
        )
    return hub


def _running_loop() -> asyncio.AbstractEventLoop:
    """The worker's running asyncio loop (the engine's), else RuntimeError.
    (asyncio._get_running_loop() would cost a getpid() system call per call,
    its fork check: a measurable share of a C10K run.)"""
    loop = getattr(_engine(), "loop", None)
    if loop is None or not loop.is_running():
        raise RuntimeError("uwsgidecorators_ext: no running IOLoop in this process (is this a --tornado worker?)")
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
    :class:`WaitTimeout` when it passes and cancel what was waited for:
    ``except TimeoutError`` and ``except asyncio.TimeoutError`` both catch
    it, on every supported Python.
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
                raise WaitTimeout(f"wait() gave up after {timeout} s")
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


def _engine_sleep() -> Callable[[float], object] | None:
    """The tornado engine's ``uwsgi.async_sleep`` (its C timer heap: no
    Python object per sleep), or None where this is not that engine."""
    return getattr(_engine(), "sleep", None)


def ioloop() -> IOLoop:
    """The worker's Tornado IOLoop (the one uWSGI runs).

    Example::

        ioloop().call_later(1.0, print, "one second later, in this worker")
    """
    engine_ioloop = getattr(_engine(), "ioloop", None)
    return engine_ioloop if engine_ioloop is not None else IOLoop.current()


def to_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a blocking ``fn(*args, **kwargs)`` in the loop's thread pool, in a
    copy of the calling request's ``contextvars`` context (as
    ``asyncio.to_thread`` does), and suspend the calling request until it
    returns. ``--tornado`` enables Python threads in uWSGI (as
    ``--enable-threads`` does), which this needs.

    Example::

        digest = to_thread(hashlib.pbkdf2_hmac, "sha256", pw, salt, iterations=600_000)
    """
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return wait(_running_loop().run_in_executor(None, call))


def run_in_executor(fn: Callable[..., T], *args: Any) -> T:
    """The earlier name of :func:`to_thread` (which also takes keyword
    arguments); unlike Tornado's ``IOLoop.run_in_executor(executor, func,
    *args)`` it takes no executor and returns the result, not a Future.

    Example::

        digest = run_in_executor(hashlib.pbkdf2_hmac, "sha256", pw, salt, 600_000)
    """
    return to_thread(fn, *args)


def blocking(method: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """Decorate a Tornado ``RequestHandler`` method (or any function) so it
    runs in a greenlet of its own and may call :func:`wait`, :func:`sleep`
    and the uWSGI API in a blocking style, without monkey-patching. The
    decorated function keeps its signature (it returns an awaitable of its
    result) and runs in a copy of the caller's ``contextvars`` context.

    Example::

        class Fetch(tornado.web.RequestHandler):
            @blocking
            def get(self):
                response = wait(AsyncHTTPClient().fetch(BACKEND))
                self.write(response.body)
    """

    @functools.wraps(method)
    async def run_in_greenlet(*args: P.args, **kwargs: P.kwargs) -> T:
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

        runner = greenlet.greenlet(body, parent=hub)
        runner.gr_context = contextvars.copy_context()  # a new greenlet starts in an empty one
        runner.switch()
        return await future

    return run_in_greenlet
