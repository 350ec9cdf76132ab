"""PerWorker: an asyncio resource (a database pool, a client session) that
each worker creates once, on its own loop, and closes when it exits.

Why: asyncio clients bind their connections to the loop that created them,
and a loop never crosses a fork. Creating a pool at import time (in the
master) would hand every worker the same sockets on a loop that does not run
there; creating one per request would reconnect every time. Each worker
instead creates it on its first request that needs it, and uWSGI's
``atexit`` (which the engine runs after the worker's loop stopped) closes it.
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable, Generic, Optional, TypeVar, Union

from .core import _engine, _running_loop, wait

T = TypeVar("T")


class PerWorker(Generic[T]):
    """A resource created once per worker by ``create()`` (a coroutine
    function, ``async def``, or a function returning an awaitable or the
    resource itself; a coroutine object is refused: it could only run once)
    and closed at worker exit by ``close(resource)`` (which may return an
    awaitable).

    Example::

        import asyncpg
        from uwsgidecorators_ext import PerWorker, wait

        db = PerWorker(lambda: asyncpg.create_pool("postgresql://127.0.0.1/app", max_size=50),
                       close=lambda pool: pool.close())

        def application(environ, start_response):
            answer = wait(db.get().fetchval("SELECT 42"))
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(answer).encode()]

    Requests that arrive while the first one is still creating it wait for
    that same creation; a creation that fails raises in those requests and
    is tried again by the next one.
    """

    def __init__(self, create: Callable[[], Union[Awaitable[T], T]],
                 close: Optional[Callable[[T], Optional[Awaitable[Any]]]] = None) -> None:
        if inspect.isawaitable(create) or not callable(create):
            # a coroutine made at import time runs once, in one worker, on a
            # loop that may not be this worker's: each worker needs its own
            if inspect.iscoroutine(create):
                create.close()
            raise TypeError("PerWorker(create) needs a function that makes the resource (an async def, "
                            f"or a function returning it or an awaitable of it), not {create!r}: "
                            "pass the function itself, e.g. PerWorker(make_pool) or "
                            "PerWorker(lambda: asyncpg.create_pool(DSN))")
        self._create = create
        self._close = close
        self._creating: Optional[asyncio.Future] = None
        self._value: Optional[T] = None
        self._ready = False

    def get(self) -> T:
        """The worker's resource; creates it on first use (inside a request,
        where :func:`~uwsgidecorators_ext.wait` can suspend).

        Example::

            pool = db.get()
            rows = wait(pool.fetch("SELECT id, text FROM notes"))
        """
        if self._ready:
            return self._value  # type: ignore[return-value]
        if self._creating is None:
            self._creating = asyncio.ensure_future(self._make(), loop=_running_loop())
        creating = self._creating
        try:
            return wait(creating)
        finally:
            if creating.done() and (creating.cancelled() or creating.exception() is not None):
                self._creating = None  # the next request tries again

    async def _make(self) -> T:
        value = self._create()
        if inspect.isawaitable(value):
            value = await value
        self._value, self._ready = value, True
        _close_at_exit(self)
        return value

    def close(self) -> None:
        """Close the resource now if this worker created it; with the loop
        stopped (worker exit) this runs the loop until the close is done.

        Example::

            db.close()   # normally left to the worker's exit
        """
        if not self._ready:
            return
        value, self._value, self._ready, self._creating = self._value, None, False, None
        if self._close is None:
            return
        result = self._close(value)  # type: ignore[arg-type]
        if inspect.isawaitable(result):
            loop = _running_loop_or_stopped()
            if loop.is_running():
                asyncio.ensure_future(result, loop=loop)
            else:
                loop.run_until_complete(result)


def _running_loop_or_stopped() -> asyncio.AbstractEventLoop:
    """The worker's loop, running (a request) or stopped (worker exit)."""
    loop = getattr(_engine(), "loop", None)
    return loop if loop is not None else asyncio.get_event_loop()


_to_close: list[PerWorker[Any]] = []


def _close_at_exit(resource: PerWorker[Any]) -> None:
    """Close `resource` in uWSGI's atexit, before the one the app set (if any)."""
    if not _to_close:
        import uwsgi

        previous = getattr(uwsgi, "atexit", None)

        def close_all() -> None:
            for r in reversed(_to_close):
                try:
                    r.close()
                except Exception as exc:  # noqa: BLE001 - one failed close must not skip the others
                    print(f"uwsgidecorators_ext: closing {r!r} at exit failed: {exc!r}", flush=True)
            del _to_close[:]
            if previous is not None:
                previous()

        uwsgi.atexit = close_all
    _to_close.append(resource)
