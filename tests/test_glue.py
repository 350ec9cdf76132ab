"""uwsgidecorators_ext: wait(), sleep(), to_thread() and @blocking from
real requests, and Tornado applications served from every worker."""
from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from conftest import answering_pids, cpython_only, free_port, free_port_run, http_get, parallel, wait_port


class EchoHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        time.sleep(1)  # a slow backend
        self.wfile.write(line)


@pytest.fixture
def echo_server():
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.request_queue_size = 256
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), EchoHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def glue(uwsgi, backend, echo_server):
    return uwsgi("glue.py", env={"BACKEND_URL": backend.url, "ECHO_PORT": str(echo_server)})


@pytest.mark.parametrize("kind", ["coroutine", "task", "asyncio-future", "tornado-future", "concurrent-future"])
def test_wait_returns_the_result_of_every_kind_of_awaitable(glue, kind):
    assert http_get(glue.port, f"/{kind}") == (200, kind.encode())


def test_wait_raises_the_awaitables_exception_with_its_traceback(glue):
    assert http_get(glue.port, "/exception") == (200, b"Boom from the coroutine in failing")


def test_wait_with_timeout_raises_timeouterror_and_cancels_the_awaitable(glue):
    status, body = http_get(glue.port, "/timeout")
    word, seconds, cancelled = body.split()
    assert status == 200 and word == b"timeout" and cancelled == b"cancelled=1"
    assert 0.3 <= float(seconds) < 0.8


def test_nested_wait_in_a_greenlet_below_the_request(glue):
    assert http_get(glue.port, "/nested") == (200, b"outer+inner")


def test_sleep_suspends_for_fractions_of_a_second(glue):
    status, body = http_get(glue.port, "/sleep")
    assert status == 200 and 0.24 <= float(body) < 0.5


def test_run_in_executor_runs_a_blocking_call_in_a_thread(glue):
    assert http_get(glue.port, "/executor") == (200, b"executor")


@pytest.mark.parametrize("where", ["import-time", "thread", "callback"])
def test_wait_outside_a_request_greenlet_raises_a_clear_runtimeerror(glue, where):
    status, body = http_get(glue.port, f"/{where}")
    assert status == 200 and b"can only wait inside a request" in body


def test_wait_closes_a_coroutine_it_refuses_to_run(glue):
    # refused at import time (in the master), in a thread, in a loop callback
    # and for a timeout that is no number: each coroutine is closed, not left
    # for the collector to report as never awaited
    for where in ("import-time", "thread", "callback"):
        assert b"can only wait inside a request" in http_get(glue.port, f"/{where}")[1]
    assert http_get(glue.port, "/bad-timeout") == (
        200, b"wait() timeout must be a number of seconds or None, not 'soon'")
    assert http_get(glue.port, "/coroutine") == (200, b"coroutine")
    assert "never awaited" not in glue.log()


@cpython_only("the embedded PyPy does not read PYTHONWARNINGS (its sys.warnoptions stays empty), "
              "so the test cannot turn DeprecationWarning into errors there")
def test_no_deprecationwarning_from_the_engine_or_the_glue(uwsgi, backend, echo_server):
    # PYTHONWARNINGS is the embedded interpreter's -W: a DeprecationWarning
    # fails the worker's start, the request or the Tornado handler it comes from
    port = free_port()
    server = uwsgi("glue.py", "--master", "--processes", "2", workers=2,
                   env={"BACKEND_URL": backend.url, "ECHO_PORT": str(echo_server), "REUSEPORT_PORT": str(port),
                        "PRE_FORK_LOOP": "1", "PYTHONWARNINGS": "error::DeprecationWarning"})
    assert http_get(server.port, "/warnoptions") == (200, b"error::DeprecationWarning")
    assert http_get(server.port, "/pre-fork-loop") == (200, b"same")
    for kind in ("coroutine", "task", "asyncio-future", "tornado-future", "concurrent-future", "sleep",
                 "executor", "timeout", "nested"):
        assert http_get(server.port, f"/{kind}")[0] == 200, kind
    wait_port(port)
    status, body = http_get(port, "/blocking")
    assert status == 200 and body.startswith(b"services "), body
    assert "Warning" not in server.log()


def test_100_requests_awaiting_a_1_second_fetch_finish_in_about_a_second(glue):
    started = time.monotonic()
    results = parallel(lambda i: http_get(glue.port, "/fetch?s=1", timeout=30), 100)
    elapsed = time.monotonic() - started
    assert results == [(200, b"slow")] * 100
    assert 1.0 <= elapsed < 2.5


def test_100_requests_awaiting_an_asyncio_tcp_client_finish_in_about_a_second(glue):
    started = time.monotonic()
    results = parallel(lambda i: http_get(glue.port, "/echo", timeout=30), 100)
    elapsed = time.monotonic() - started
    assert results == [(200, b"ping")] * 100
    assert 1.0 <= elapsed < 2.5


# ---- Tornado applications in every worker ----

def test_tornado_app_on_a_port_per_worker(uwsgi, backend):
    base = free_port_run(3)
    server = uwsgi("glue.py", "--master", "--processes", "2", workers=2,
                   env={"BACKEND_URL": backend.url, "PER_WORKER_PORT": str(base)})
    pids = set(server.worker_pids())
    seen = set()
    for worker_id in (1, 2):
        wait_port(base + worker_id)
        status, body = http_get(base + worker_id, "/pid")
        assert status == 200
        seen.add(int(body))
    assert seen == pids


def test_tornado_app_on_one_reuseport_port_in_every_worker(uwsgi, backend):
    port = free_port()
    server = uwsgi("glue.py", "--master", "--processes", "2", workers=2,
                   env={"BACKEND_URL": backend.url, "REUSEPORT_PORT": str(port)})
    assert answering_pids(port, "/pid", 2) == set(server.worker_pids())


def test_tornado_app_on_a_shared_socket_bound_by_the_master(uwsgi, backend):
    port = free_port()
    address = f"127.0.0.1:{port}"
    server = uwsgi("glue.py", "--master", "--processes", "2", "--shared-socket", address, workers=2,
                   env={"BACKEND_URL": backend.url, "SHARED_SOCKET": address})
    assert answering_pids(port, "/pid", 2) == set(server.worker_pids())


def test_a_port_in_use_is_logged_and_the_worker_keeps_serving_wsgi(uwsgi, backend):
    import socket as socket_module
    taken = socket_module.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        server = uwsgi("glue.py", env={"BACKEND_URL": backend.url, "REUSEPORT_PORT": str(port)})
        server.wait_log(f"cannot listen on 127.0.0.1:{port}")
        assert http_get(server.port, "/coroutine") == (200, b"coroutine")
    finally:
        taken.close()


def test_a_bad_fd_is_logged_and_the_worker_keeps_serving_wsgi(uwsgi, backend):
    server = uwsgi("glue.py", env={"BACKEND_URL": backend.url, "SERVE_FD": "987"})
    server.wait_log("unable to serve on fd 987")
    server.wait_log("fd 987 is not a socket this process inherited")
    assert http_get(server.port, "/coroutine") == (200, b"coroutine")


def test_blocking_tornado_handler_can_wait_and_sleep(uwsgi, backend):
    port = free_port()
    server = uwsgi("glue.py", env={"BACKEND_URL": backend.url, "REUSEPORT_PORT": str(port)})
    wait_port(port)
    started = time.monotonic()
    results = parallel(lambda i: http_get(port, "/blocking"), 20)
    assert results == [(200, b"services " + str(server.worker_pids()[0]).encode())] * 20
    assert time.monotonic() - started < 1.5


def test_per_worker_resource_is_created_once_for_20_concurrent_first_requests(glue):
    results = parallel(lambda i: http_get(glue.port, "/per-worker-slow"), 20)
    assert results == [(200, b"1")] * 20
    assert http_get(glue.port, "/per-worker-slow") == (200, b"1")


def test_per_worker_creation_that_fails_raises_and_the_next_request_creates_it(glue):
    assert http_get(glue.port, "/per-worker-flaky") == (200, b"the first creation fails")
    assert http_get(glue.port, "/per-worker-flaky") == (200, b"2")
    assert http_get(glue.port, "/per-worker-flaky") == (200, b"2")


# ---- the public API's promises ----

def test_a_wait_timeout_is_caught_as_timeouterror_and_as_asyncio_timeouterror(glue):
    assert http_get(glue.port, "/timeout-both") == (200, b"TimeoutError asyncio.TimeoutError")


def test_to_thread_takes_keyword_arguments_and_the_requests_context(glue):
    assert http_get(glue.port, "/to-thread") == (200, b"x+y+in-request+pool-thread")


def test_blocking_keeps_the_callers_context_and_arguments(uwsgi, backend):
    port = free_port()
    server = uwsgi("glue.py", env={"BACKEND_URL": backend.url, "REUSEPORT_PORT": str(port)})
    wait_port(port)
    assert http_get(port, "/blocking-context") == (200, b"req-42!!")
    assert http_get(server.port, "/coroutine") == (200, b"coroutine")


def test_the_glue_takes_hub_loops_and_sleep_from_the_engines_module(glue):
    assert http_get(glue.port, "/engine") == (200, b"True True True True")


def test_per_worker_creates_its_value_with_an_async_def(glue):
    assert http_get(glue.port, "/per-worker-async") == (200, b"made by an async def")


def test_per_worker_refuses_a_coroutine_object_with_a_clear_error(glue):
    status, body = http_get(glue.port, "/per-worker-coroutine-object")
    assert status == 200 and body.startswith(b"PerWorker(create) needs a function that makes the resource"), body
    assert "never awaited" not in glue.log()


def test_serve_returns_the_server_that_listens_in_the_worker(uwsgi, backend):
    port = free_port()
    server = uwsgi("glue.py", env={"BACKEND_URL": backend.url, "REUSEPORT_PORT": str(port)})
    wait_port(port)
    assert http_get(port, "/pid")[0] == 200
    assert http_get(server.port, "/stop-tornado-server") == (200, b"stopped")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_tornado_app_on_an_ipv6_shared_socket_written_in_brackets(uwsgi, backend):
    port = free_port()
    address = f"[::1]:{port}"
    server = uwsgi("glue.py", "--shared-socket", address, env={"BACKEND_URL": backend.url, "SHARED_SOCKET": address})
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("::1", port), timeout=5) as s:
                s.sendall(b"GET /pid HTTP/1.0\r\nHost: x\r\n\r\n")
                data = s.makefile("rb").read()
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(str(server.worker_pids()[0]).encode()), data
    assert "no inherited listening socket" not in server.log()
