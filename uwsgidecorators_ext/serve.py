"""Serve Tornado applications from every uWSGI worker, next to the WSGI app.

The IOLoop runs in each worker after fork, so a Tornado server must be set up
after fork too. Three ways to share the work between workers:

- :func:`serve_per_worker`: one port per worker, ``base_port + worker_id``
  (the pattern of the upstream documentation);
- :func:`serve_reuseport`: one port for all workers, each with its own
  ``SO_REUSEPORT`` socket; the kernel spreads the connections;
- :func:`serve_shared_socket` / :func:`serve_fd`: a socket the uWSGI master
  bound (``--shared-socket``) or that a process manager such as circus handed
  over, inherited by every worker, which all accept on it.

Each call returns the :class:`~tornado.httpserver.HTTPServer` it starts (in
each worker, the server that worker listens with: ``server.stop()`` there
stops it), registers the listening to happen after fork and returns at once;
errors (port in use, bad fd) are logged with the port or fd and leave the
worker serving its WSGI app.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any, Callable

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application

log = logging.getLogger("uwsgidecorators_ext")


def _after_fork(setup: Callable[[], None], what: str) -> None:
    """Run ``setup`` in every worker after fork (now, if this already is a worker)."""

    def guarded() -> None:
        try:
            setup()
        except Exception as exc:  # noqa: BLE001 - logged, the worker keeps serving WSGI
            message = f"uwsgidecorators_ext: unable to serve {what} in worker pid {os.getpid()}: {exc!r}"
            log.error(message)
            _uwsgi_log(message)

    try:
        import uwsgi
    except ImportError:  # not under uWSGI: a plain process
        guarded()
        return
    if uwsgi.worker_id() > 0:
        guarded()
        return
    if uwsgi.masterpid():
        # uwsgidecorators owns uwsgi.post_fork_hook when it is used: join its chain
        from uwsgidecorators import postfork

        postfork(guarded)
        return
    # no master (uwsgidecorators refuses to load): chain the hook by hand
    previous = getattr(uwsgi, "post_fork_hook", None)

    def hook() -> None:
        if previous is not None:
            previous()
        guarded()

    uwsgi.post_fork_hook = hook


def _uwsgi_log(message: str) -> None:
    try:
        import uwsgi

        uwsgi.log(message)
    except ImportError:
        pass


def _worker_id() -> int:
    try:
        import uwsgi

        return uwsgi.worker_id()
    except ImportError:
        return 0


def serve_per_worker(app: Application, base_port: int, address: str = "127.0.0.1", **server_options: Any) -> HTTPServer:
    """Listen on ``base_port + worker_id`` in every worker.

    Example (in the WSGI file)::

        server = serve_per_worker(tornado.web.Application([(r"/", Main)]), 8000)
        # worker 1 on 8001, worker 2 on 8002, ...
    """
    server = HTTPServer(app, **server_options)

    def setup() -> None:
        server.add_sockets(_bind(base_port + _worker_id(), address, reuse_port=False))

    _after_fork(setup, f"on port {base_port} + worker id")
    return server


def serve_reuseport(app: Application, port: int, address: str = "127.0.0.1", **server_options: Any) -> HTTPServer:
    """Listen on one port in every worker with ``SO_REUSEPORT``.

    Example::

        server = serve_reuseport(tornado.web.Application([(r"/", Main)]), 8000)
    """
    server = HTTPServer(app, **server_options)

    def setup() -> None:
        server.add_sockets(_bind(port, address, reuse_port=True))

    _after_fork(setup, f"on port {port} (SO_REUSEPORT)")
    return server


def _add_inherited(server: HTTPServer, fd: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        raise OSError(f"fd {fd} is not a socket this process inherited: {exc}") from exc
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 1:
        sock.close()
        raise OSError(f"fd {fd} is not a listening socket")
    sock.setblocking(False)
    server.add_sockets([sock])


def serve_fd(app: Application, fd: int, **server_options: Any) -> HTTPServer:
    """Accept on an inherited listening socket, given by its fd, in every worker.

    Example (circus hands the socket as fd 3)::

        server = serve_fd(tornado.web.Application([(r"/", Main)]), 3)
    """
    server = HTTPServer(app, **server_options)
    _after_fork(lambda: _add_inherited(server, fd), f"on fd {fd}")
    return server


def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:8000"`` -> ``("127.0.0.1", 8000)``; ``"[::1]:8000"`` ->
    ``("::1", 8000)`` (uWSGI's spelling of an IPv6 address and port)."""
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def serve_shared_socket(app: Application, address: str, **server_options: Any) -> HTTPServer:
    """Accept, in every worker, on the socket uWSGI's master bound with
    ``--shared-socket ADDRESS`` (``"127.0.0.1:8000"``, ``"[::1]:8000"``).

    Example::

        # uwsgi ... --shared-socket 127.0.0.1:8000
        server = serve_shared_socket(tornado.web.Application([(r"/", Main)]), "127.0.0.1:8000")
    """
    server = HTTPServer(app, **server_options)

    def setup() -> None:
        fd = find_listening_fd(*split_address(address))
        if fd is None:
            raise OSError(f"no inherited listening socket on {address}: add --shared-socket {address}")
        _add_inherited(server, fd)

    _after_fork(setup, f"on shared socket {address}")
    return server


def find_listening_fd(host: str, port: int) -> int | None:
    """The fd of an inherited listening TCP socket bound to (host, port)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM \
                    and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1 \
                    and sock.getsockname()[:2] == (host, port):
                return fd
        except OSError:
            pass
        finally:
            sock.close()
    return None


def _bind(port: int, address: str, reuse_port: bool) -> list[socket.socket]:
    try:
        return bind_sockets(port, address, reuse_port=reuse_port)
    except OSError as exc:
        raise OSError(f"cannot listen on {address}:{port}: {exc.strerror or exc}") from exc
