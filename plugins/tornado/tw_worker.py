"""The worker's asyncio loop, found or repaired after fork: the cold path of
the tornado loop engine, in Python because it is attribute work on asyncio's
objects. loop.c runs it once per worker as the module uwsgi_tornado_engine
(uwsgiplugin.py embeds this file in the plugin at build time), then adds the
names the glue takes from it: hub, loop, ioloop, sleep.

A loop created before fork (a preloaded app that ran IOLoop.current() or
built an AsyncHTTPClient at import time) shares its epoll fd and its
self-pipe with the master and every other worker. The app holds that loop
object, so it must stay the loop this worker runs: it gets a fresh selector
holding the same registrations and a fresh self-pipe, and loses its default
executor, whose threads did not survive fork.
"""
from __future__ import annotations

import asyncio
import signal
from asyncio import selector_events
from typing import Any

from tornado.ioloop import IOLoop


def _own_kernel_state(loop: selector_events.BaseSelectorEventLoop) -> None:
    """Give a loop made before fork a selector and a self-pipe of its own."""
    old = loop._selector
    pipe = set()
    if loop._ssock is not None:
        pipe = {loop._ssock.fileno(), loop._csock.fileno()}
    new = type(old)()
    for key in list(old.get_map().values()):
        if key.fd not in pipe:
            new.register(key.fileobj, key.events, key.data)
    loop._selector = new
    old.close()
    if loop._ssock is not None:
        loop._ssock.close()
        loop._csock.close()
        loop._ssock = loop._csock = None
        loop._internal_fds -= 1
        loop._make_self_pipe()
        if getattr(loop, "_signal_handlers", None):
            signal.set_wakeup_fd(loop._csock.fileno())
    loop._default_executor = None


def _pre_fork_loop() -> Any:
    """The asyncio loop of the newest IOLoop the app made in the master
    (Tornado maps each to its IOLoop; the map survives fork): asyncio forgets
    its current loop in a child whose at-fork hooks run (3.12+), and its
    policy API, which holds that loop, is deprecated from 3.14 on."""
    loops = [loop for loop in getattr(IOLoop, "_ioloop_for_asyncio", {})
             if not loop.is_closed() and not loop.is_running()]
    return loops[-1] if loops else None


def worker_ioloop(use_uvloop: bool) -> tuple[IOLoop, asyncio.AbstractEventLoop, bool]:
    """The IOLoop this worker runs, the asyncio loop under it, and whether
    that loop's call_at/call_later may be the engine's (calls.c): asyncio's
    own loop, with the base class's timer methods and clock, not in debug
    mode (uvloop's timers are C already); its get_debug too."""
    loop = _pre_fork_loop()
    if isinstance(loop, selector_events.BaseSelectorEventLoop):
        _own_kernel_state(loop)
    else:
        loop = None
    if loop is None and use_uvloop:
        import uvloop
        loop = uvloop.new_event_loop()
    if loop is None:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    base = asyncio.BaseEventLoop
    cls = type(loop)
    own_timers = (isinstance(loop, base) and not loop.get_debug() and cls.call_at is base.call_at
                  and cls.call_later is base.call_later and cls.time is base.time
                  and cls.get_debug is base.get_debug and "_debug" in vars(loop))
    return IOLoop.current(), loop, own_timers
