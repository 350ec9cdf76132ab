"""Blocking-style access to Tornado and asyncio from WSGI under uWSGI's
tornado loop engine (``--tornado N --greenlet``).

Inside a request, :func:`wait` suspends only that request's greenlet until an
awaitable completes, while the worker's IOLoop serves everything else::

    from uwsgidecorators_ext import wait, sleep
    from tornado.httpclient import AsyncHTTPClient

    def application(environ, start_response):
        body = wait(AsyncHTTPClient().fetch("http://127.0.0.1:9191/services")).body
        sleep(0.5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

:class:`PerWorker` holds an asyncio resource (an asyncpg pool, a
redis.asyncio client) that each worker creates once and closes at exit.
The helpers in :mod:`uwsgidecorators_ext.serve` run Tornado applications in
every worker next to the WSGI app, and :func:`blocking` lets Tornado handlers
use :func:`wait` too.
"""
from __future__ import annotations

from .core import WaitTimeout, blocking, ioloop, run_in_executor, sleep, to_thread, wait
from .resources import PerWorker
from .serve import serve_fd, serve_per_worker, serve_reuseport, serve_shared_socket

__all__ = [
    "wait",
    "sleep",
    "ioloop",
    "to_thread",
    "run_in_executor",
    "WaitTimeout",
    "blocking",
    "PerWorker",
    "serve_per_worker",
    "serve_reuseport",
    "serve_shared_socket",
    "serve_fd",
]
