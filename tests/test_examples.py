"""Every example under examples/ starts with its documented command and does
what its docstring says."""
from __future__ import annotations

import time

import pytest
import websocket

from conftest import ROOT, answering_pids, free_port, free_port_run, http_get, parallel, wait_port

EXAMPLES = ROOT / "examples"


def example(name: str) -> str:
    return str(EXAMPLES / name)


def test_hello(uwsgi):
    server = uwsgi(example("hello.py"))
    assert http_get(server.port, "/") == (200, b"Hello World\n")


def test_fetch_with_wait_and_with_the_callback_style(uwsgi):
    server = uwsgi(example("fetch.py"))
    assert http_get(server.port, "/") == (200, b"services")
    assert http_get(server.port, "/callback") == (200, b"services")


def test_chain_fetch_then_timer_both_styles_overlap(uwsgi):
    server = uwsgi(example("chain.py"), env={"CHAIN_SECONDS": "2"})
    started = time.monotonic()
    results = parallel(lambda i: http_get(server.port, "/callback" if i % 2 else "/", timeout=20), 20)
    assert results == [(200, b"services")] * 20
    assert 2.0 <= time.monotonic() - started < 4.0


def test_generator(uwsgi):
    server = uwsgi(example("generator.py"))
    assert http_get(server.port, "/") == (200, b"onetwothree")


def test_postfork_tornado_one_port_per_worker(uwsgi):
    base = free_port_run(3)
    server = uwsgi(example("postfork_tornado.py"), "--master", "--processes", "2", workers=2,
                   env={"BASE_PORT": str(base)})
    pids = set()
    for worker_id in (1, 2):
        wait_port(base + worker_id)
        status, body = http_get(base + worker_id, "/")
        assert status == 200 and body.startswith(b"Hello, world from Tornado in pid ")
        pids.add(int(body.split()[-1]))
    assert pids == set(server.worker_pids())
    assert http_get(server.port, "/")[1].startswith(b"Hello from WSGI")


def test_shared_socket_tornado_app_in_every_worker(uwsgi):
    address = f"127.0.0.1:{free_port()}"
    port = int(address.split(":")[1])
    server = uwsgi(example("shared_socket.py"), "--master", "--processes", "2", "--shared-socket", address,
                   workers=2, env={"TORNADO_SOCKET": address})
    assert answering_pids(port, "/", 2) == set(server.worker_pids())


def test_blocking_handler_waits_on_a_fetch(uwsgi, backend):
    address = f"127.0.0.1:{free_port()}"
    port = int(address.split(":")[1])
    uwsgi(example("blocking_handler.py"), "--master", "--shared-socket", address,
          env={"TORNADO_SOCKET": address, "BACKEND_URL": backend.url + "/services"})
    wait_port(port)
    started = time.monotonic()
    results = parallel(lambda i: http_get(port, "/"), 20)
    assert results == [(200, b"tornado handler got: services")] * 20
    assert time.monotonic() - started < 1.5  # 20 handlers sleeping 0.1 s each overlap


def test_websocket_echo_served_by_uwsgi_and_by_tornado(uwsgi):
    address = f"127.0.0.1:{free_port()}"
    tornado_port = int(address.split(":")[1])
    server = uwsgi(example("websocket_echo.py"), "--master", "--shared-socket", address,
                   env={"TORNADO_SOCKET": address})
    wait_port(tornado_port)
    for port in (server.port, tornado_port):
        status, page = http_get(port, "/")
        assert status == 200 and b'new WebSocket(url)' in page and b'"/websocket"' in page
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/websocket", timeout=10)
        ws.send("Hello, world")
        assert ws.recv() in ("You said: Hello, world", b"You said: Hello, world")
        ws.close()


# ---- ASGI (README: "ASGI apps") ----

def test_fastapi_example_greets_streams_ticks_and_counts_visits_in_the_uwsgi_cache(uwsgi):
    import httpx

    pytest.importorskip("fastapi", reason="FastAPI 0.163 needs Python 3.11+ (requirements.txt)")

    server = uwsgi(None, "--need-app", "--pythonpath", example("asgi"), "--tornado-asgi", "fastapi_app:app",
                   "--cache2", "name=visits,items=100", socket_opt="--http11-socket")
    assert httpx.get(f"{server.url}/hello/you").json() == {"hello": "you", "worker_pid": server.worker_pids()[0]}
    with httpx.stream("GET", f"{server.url}/ticks?count=3") as response:
        assert response.read().decode() == "".join(f"data: tick {i}\n\n" for i in range(3))
    assert [httpx.get(f"{server.url}/visits").json()["visits"] for _ in range(3)] == [1, 2, 3]


def test_django_asgi_example_serves_the_polls_through_channels(uwsgi, tmp_path):
    server = uwsgi(None, "--need-app", "--pythonpath", example("django_project"), "--tornado-asgi", "asgi:application",
                   socket_opt="--http11-socket", env={"DJANGO_DB": str(tmp_path / "db.sqlite3")})
    status, page = http_get(server.port, "/polls/")
    assert status == 200 and b"What is the best loop engine?" in page
