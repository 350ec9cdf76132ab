"""Real ASGI frameworks under --tornado-asgi, end to end with httpx: each
app (tests/apps/asgi_<name>.py) has the same endpoints, and each test runs
against every framework installed for this Python (requirements.txt marks
the ones that need a newer one: their tests skip here)."""
from __future__ import annotations

import importlib.util
import os
import re

import httpx
import pytest

from conftest import sleep_together

# (name, the module it needs, the --tornado-asgi target, has lifespan state)
FRAMEWORKS = [
    ("fastapi", "fastapi", "asgi_fastapi:app", True),
    ("starlette", "starlette", "asgi_starlette:app", True),
    ("litestar", "litestar", "asgi_litestar:app", True),
    ("quart", "quart", "asgi_quart:app", True),
    ("blacksheep", "blacksheep", "asgi_blacksheep:app", True),
    ("django-channels", "channels", "asgi_django:application", False),
]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(params=[pytest.param(f, id=f[0], marks=pytest.mark.skipif(not installed(f[1]), reason=f"{f[1]} is not installed for this Python"))
                        for f in FRAMEWORKS])
def framework(request, uwsgi):
    name, _, target, has_state = request.param
    server = uwsgi(None, "--need-app", "--tornado-asgi", target, socket_opt="--http11-socket")
    server.framework = name
    server.has_state = has_state
    return server


def test_the_app_sees_the_path_query_and_headers(framework):
    response = httpx.get(f"{framework.url}/scope?x=1&y=%20z", headers={"X-Test": "yes"})
    assert response.status_code == 200
    assert response.json() == {"path": "/scope", "query": "x=1&y=%20z", "header": "yes"}


def test_a_posted_body_is_echoed(framework):
    body = os.urandom(200_000)
    response = httpx.post(f"{framework.url}/echo", content=body)
    assert response.status_code == 200
    assert response.content == body


def test_a_streamed_response_arrives_in_order(framework):
    with httpx.Client() as client:
        with client.stream("GET", f"{framework.url}/stream") as response:
            text = b"".join(response.iter_raw()).decode()
            assert response.headers.get("transfer-encoding") == "chunked"
        # the connection is kept alive after the chunked stream
        assert client.get(f"{framework.url}/status/200").status_code == 200
    assert text == "".join(f"part {i}\n" for i in range(5))


def test_a_server_sent_events_stream_arrives_event_by_event(framework):
    with httpx.stream("GET", f"{framework.url}/sse") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = re.findall(r"data: (.*?)\r?\n\r?\n", response.read().decode())
    assert events == [f"event {i}" for i in range(5)]


@pytest.mark.parametrize("code", [200, 201, 404, 418, 503])
def test_the_status_code_reaches_the_client(framework, code):
    response = httpx.get(f"{framework.url}/status/{code}")
    assert response.status_code == code
    assert response.text == f"status {code}"


def test_lifespan_startup_ran_before_the_first_request(framework):
    if not framework.has_state:
        pytest.skip("Django's ASGI handler and Channels do not speak lifespan")
    assert httpx.get(f"{framework.url}/state").json() == {"greeting": "hello from lifespan"}


def test_an_app_without_lifespan_is_served_and_the_log_says_so(framework):
    if framework.has_state:
        pytest.skip("this framework speaks lifespan")
    assert "does not support lifespan" in framework.log()


def test_100_concurrent_requests_sleeping_1s_finish_in_about_1s(framework):
    results, elapsed = sleep_together(framework.port, 100, 1.0)
    assert results == [(200, b"slept")] * 100
    assert elapsed < 2.5, elapsed


def test_a_websocket_echoes_and_closes_cleanly(framework):
    import websocket  # websocket-client

    ws = websocket.create_connection(f"ws://127.0.0.1:{framework.port}/ws", timeout=10)
    for text in ("hello", "ünïcode", "x" * 70000):
        ws.send(text)
        assert ws.recv() == text
    ws.close()
    # the worker goes on serving
    assert httpx.get(f"{framework.url}/status/200").status_code == 200
