"""ASGI apps on the engine (README: "ASGI apps"), with a raw ASGI 3 app
(tests/apps/asgi_raw.py) so that every byte is the bridge's: the scope, the
request body, the response framing, lifespan, and uWSGI's guarantees
(harakiri, drain, stats) for ASGI requests."""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port, parallel, read_stats, recv_all, rss_kib, sleep_together, wait_port


def asgi(uwsgi, *extra: str, target: str = "asgi_raw:app", socket_opt: str = "--http11-socket", **kw):
    """uWSGI serving the raw ASGI app (or `target`) with the engine."""
    return uwsgi(None, "--need-app", "--tornado-asgi", target, *extra, socket_opt=socket_opt, **kw)


def raw(port: int, request: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        return recv_all(s)


def written(path: Path, timeout: float = 5) -> str:
    """What the app wrote to `path`, once it did (within `timeout` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text:
            return text
        time.sleep(0.05)
    return ""


# ---- the scope ----

def test_the_scope_says_what_the_client_sent_in_its_order_with_duplicates(uwsgi):
    server = asgi(uwsgi)
    body = b"a=1"
    response = raw(server.port, b"POST /sc%C3%A9ne/scope?x=%20y&x=2 HTTP/1.0\r\nHost: example\r\nX-Dup: one\r\n"
                   b"Content-Type: application/x-www-form-urlencoded\r\nX-Dup: two\r\nContent-Length: 3\r\n\r\n" + body)
    scope = json.loads(response.partition(b"\r\n\r\n")[2])
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.0"
    assert scope["method"] == "POST"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scéne/scope"
    assert scope["raw_path"] == "/sc%C3%A9ne/scope"
    assert scope["query_string"] == "x=%20y&x=2"
    assert scope["root_path"] == ""
    assert scope["headers"] == [["host", "example"], ["x-dup", "one"],
                                ["content-type", "application/x-www-form-urlencoded"], ["x-dup", "two"],
                                ["content-length", "3"]]
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0
    assert scope["server"] == ["127.0.0.1", server.port]
    assert "http.response.pathsend" in scope["extensions"]


def test_the_scope_behind_a_mountpoint_has_root_path_and_the_full_path(uwsgi):
    server = asgi(uwsgi, "--manage-script-name", target="/api=asgi_raw:app")
    scope = httpx.get(f"{server.url}/api/scope?q=1").json()
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/scope"
    assert scope["raw_path"] == "/api/scope"


def test_each_request_runs_as_a_task_with_a_fresh_contextvars_context(uwsgi):
    server = asgi(uwsgi)
    with httpx.Client() as client:  # one kept-alive connection, one core
        for _ in range(3):
            scope = client.get(f"{server.url}/scope").json()
            assert scope["task"] is True
            assert scope["context_was_fresh"] is True


def test_lifespan_state_reaches_every_request_and_startup_ran_in_the_worker(uwsgi):
    server = asgi(uwsgi, "--master")
    worker = server.worker_pids()[0]
    assert httpx.get(f"{server.url}/scope").json()["state"] == {"started_by": worker}


# ---- the request body ----

def test_a_posted_body_is_echoed_in_chunks_of_at_most_64_kib(uwsgi):
    server = asgi(uwsgi)
    body = os.urandom(300_000)
    response = httpx.post(f"{server.url}/echo", content=body)
    assert response.content == body
    assert int(response.headers["x-chunks"]) == 5


def test_a_chunked_request_body_is_dechunked(uwsgi):
    server = asgi(uwsgi)
    parts = [b"first ", b"second ", b"third"]
    response = httpx.post(f"{server.url}/echo", content=iter(parts))
    assert response.content == b"".join(parts)


def test_expect_100_continue_is_answered_when_the_app_reads_the_body(uwsgi):
    server = asgi(uwsgi)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        response = recv_all(s)
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"\r\n\r\nhello")


# ---- the response ----

def test_a_body_in_one_piece_gets_content_length_and_the_connection_stays_open(uwsgi):
    server = asgi(uwsgi)
    with httpx.Client() as client:
        first = client.get(f"{server.url}/hello")
        second = client.get(f"{server.url}/hello")
    assert first.text == second.text == "Hello, ASGI"
    assert first.headers["content-length"] == "11"
    assert "connection" not in first.headers


def test_a_streamed_body_is_chunked_on_http11_and_the_connection_stays_open(uwsgi):
    server = asgi(uwsgi)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        second = recv_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"".join(b"7\r\npart %d\n\r\n" % i for i in range(5)) + b"0\r\n\r\n"
    assert second.endswith(b"Hello, ASGI")


def test_a_streamed_body_to_an_http10_client_ends_with_the_connection(uwsgi):
    server = asgi(uwsgi)
    data = raw(server.port, b"GET /stream HTTP/1.0\r\nHost: x\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    assert body == b"".join(b"part %d\n" % i for i in range(5))


def test_head_gets_the_headers_and_no_body(uwsgi):
    server = asgi(uwsgi)
    data = raw(server.port, b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200")
    assert b"content-length: 11" in data.lower()
    assert data.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("code", [201, 204, 304, 404, 418, 503])
def test_the_status_code_the_app_sends_is_the_one_the_client_gets(uwsgi, code):
    server = asgi(uwsgi)
    response = httpx.get(f"{server.url}/status?{code}")
    assert response.status_code == code
    assert response.content == (b"" if code in (204, 304) else f"status {code}".encode())


def test_an_app_that_raises_gets_a_500_and_its_traceback_in_the_log(uwsgi):
    server = asgi(uwsgi, "--enable-logging")
    response = httpx.get(f"{server.url}/raise")
    assert response.status_code == 500
    server.wait_log("ValueError: the app failed on purpose")
    assert httpx.get(f"{server.url}/hello").status_code == 200


def test_pathsend_sends_the_file(uwsgi, tmp_path):
    server = asgi(uwsgi)
    path = tmp_path / "file.bin"
    content = os.urandom(1_000_000)
    path.write_bytes(content)
    response = httpx.get(f"{server.url}/pathsend?{path}")
    assert response.content == content
    assert response.headers["content-length"] == str(len(content))


def test_a_large_streamed_response_arrives_whole(uwsgi):
    server = asgi(uwsgi)
    response = httpx.get(f"{server.url}/big?20000000", timeout=30)
    assert len(response.content) == 20_000_000


def test_a_slow_reader_holds_the_app_in_send_not_the_workers_memory(uwsgi):
    """backpressure: send() returns once written, so an unread 200 MB stream
    stays in the app (the worker's RSS does not grow by it)."""
    server = asgi(uwsgi)
    worker = server.worker_pids()[0]
    before = rss_kib(worker)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /big?200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(65536)
        time.sleep(1.0)
        grown = rss_kib(worker) - before
        assert httpx.get(f"{server.url}/hello").status_code == 200  # the worker serves others meanwhile
    assert grown < 50_000, f"the worker grew by {grown} KiB"


def test_the_app_sees_http_disconnect_when_the_client_leaves(uwsgi, tmp_path):
    server = asgi(uwsgi)
    seen = tmp_path / "seen"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"GET /disconnect?{seen} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"data: first" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    assert written(seen) == "http.disconnect"


def test_send_after_the_client_left_raises_an_oserror(uwsgi, tmp_path):
    record = tmp_path / "raised"
    server = asgi(uwsgi)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"GET /forever?{record} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.recv(65536)
    assert written(record) == "ClientDisconnected True"


def test_receive_and_send_can_run_as_tasks_of_their_own(uwsgi):
    server = asgi(uwsgi)
    response = httpx.post(f"{server.url}/as-tasks", content=b"through create_task")
    assert response.status_code == 200
    assert response.text == "through create_task"


def test_a_send_from_a_task_left_behind_after_the_response_raises_and_the_worker_goes_on(uwsgi, tmp_path):
    record = tmp_path / "late"
    server = asgi(uwsgi)
    worker = server.worker_pids()[0]
    response = httpx.get(f"{server.url}/late-send?{record}")
    assert response.text == "answered"
    assert written(record) == "RuntimeError"
    assert httpx.get(f"{server.url}/hello").text == "Hello, ASGI"
    assert server.worker_pids() == [worker]


def test_a_receive_asked_while_a_body_write_waits_is_served_after_it(uwsgi):
    """the core greenlet does one thing at a time for a request: the
    receive() asked while it waits for a slow reader runs after the write"""
    server = asgi(uwsgi)
    body = b"z" * 100_000
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"POST /send-and-receive HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.5)  # the write waits for this reader meanwhile
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = s.recv(1 << 20)
            assert chunk, data[-200:]
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert rest.count(b"y") == 4_000_000
    assert b"|got 100000" in rest


def test_a_first_step_waiting_for_a_slow_reader_lets_other_tasks_run_and_keeps_its_task_and_context(uwsgi):
    """the Task's first step runs in the core greenlet (README: "ASGI
    apps"): while its write waits, other requests run as their own Tasks,
    and the step goes on as the same current Task in its own context"""
    server = asgi(uwsgi)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /first-step HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)  # the write waits for this reader
        with httpx.Client() as client:
            for _ in range(5):
                scope = client.get(f"{server.url}/scope", timeout=5).json()
                assert scope["task"] is True and scope["context_was_fresh"] is True
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = s.recv(1 << 20)
            assert chunk, data[-200:]
            data += chunk
    rest = data.partition(b"\r\n\r\n")[2]
    assert rest.count(b"w") == 32_000_000
    assert b"|same task and context: True" in rest


def test_greenlets_started_in_the_first_step_and_driven_later_get_their_values_and_errors(uwsgi):
    """SQLAlchemy's asyncio runs blocking-style code in a greenlet whose
    parent is the one that started it: the core greenlet, when that was the
    Task's first step; its later switches reach the Task on the loop"""
    server = asgi(uwsgi)
    with httpx.Client() as client:
        for _ in range(3):
            response = client.get(f"{server.url}/greenlet-spawn", timeout=5)
            assert response.status_code == 200
            assert response.text == "abcd"
    assert httpx.get(f"{server.url}/hello").text == "Hello, ASGI"


def test_on_uvloop_the_requests_run_as_tasks_and_a_first_step_that_waits_lets_others_run(uwsgi):
    pytest.importorskip("uvloop")
    server = asgi(uwsgi, "--tornado-uvloop")
    scope = httpx.get(f"{server.url}/scope").json()
    assert "uvloop" in scope["loop"]  # the engine's loop is a uvloop.Loop
    assert scope["task"] is True and scope["context_was_fresh"] is True
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /first-step HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        assert httpx.get(f"{server.url}/scope", timeout=5).json()["task"] is True
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = s.recv(1 << 20)
            assert chunk, data[-200:]
            data += chunk
    assert b"|same task and context: True" in data
    results, elapsed = sleep_together(server.port, 50, 1.0)
    assert results == [(200, b"slept")] * 50
    assert elapsed < 2.5, elapsed


# ---- the engine's guarantees ----

def test_100_concurrent_requests_sleeping_1s_finish_in_about_1s_on_one_worker(uwsgi):
    server = asgi(uwsgi)
    results, elapsed = sleep_together(server.port, 100, 1.0)
    assert results == [(200, b"slept")] * 100
    assert elapsed < 2.5, elapsed


def test_harakiri_cancels_a_stuck_task_logs_its_stack_and_the_worker_lives(uwsgi):
    server = asgi(uwsgi, "--master", "--harakiri", "3", "--enable-logging")
    worker = server.worker_pids()[0]
    started = time.monotonic()
    response = httpx.get(f"{server.url}/stuck", timeout=30)
    assert response.status_code == 500
    assert 1.5 < time.monotonic() - started < 3.0
    server.wait_log("harakiri: cancelling the ASGI Task of GET /stuck")
    assert "asgi_raw.py" in server.log().split("harakiri: cancelling")[1]
    assert server.worker_pids() == [worker]
    assert httpx.get(f"{server.url}/hello").status_code == 200


def test_asgi_requests_are_counted_in_uwsgis_stats(uwsgi):
    stats = free_port()
    server = asgi(uwsgi, "--stats", f"127.0.0.1:{stats}")
    for _ in range(5):
        httpx.get(f"{server.url}/hello")
    assert read_stats(stats)["workers"][0]["requests"] == 5


def test_a_wsgi_app_and_an_asgi_app_run_in_the_same_instance(uwsgi):
    server = uwsgi("basic.py", "--tornado-asgi", "/asgi=asgi_raw:app", "--manage-script-name",
                   socket_opt="--http11-socket")
    assert httpx.get(f"{server.url}/asgi/hello").text == "Hello, ASGI"
    assert httpx.get(f"{server.url}/").status_code == 200
    assert "Hello, ASGI" not in httpx.get(f"{server.url}/").text


def test_the_tornado_asgi_option_works_from_an_ini_file(uwsgi, tmp_path):
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\ntornado-asgi = asgi_raw:app\n")
    server = uwsgi(None, "--ini", str(ini), socket_opt="--http11-socket")
    assert httpx.get(f"{server.url}/hello").text == "Hello, ASGI"


def test_uwsgi_calls_from_async_code_run_through_run_blocking(uwsgi):
    server = asgi(uwsgi, "--cache2", "name=default,items=10")
    assert httpx.get(f"{server.url}/cache").text == "cached value"


# ---- lifespan across the worker's life ----

def test_lifespan_shutdown_runs_on_a_reload_after_the_request_in_flight(uwsgi, tmp_path):
    marks = tmp_path / "marks"
    server = asgi(uwsgi, "--master", env={"ASGI_SHUTDOWN_FILE": str(marks)})
    worker = server.worker_pids()[0]
    results = parallel(lambda i: (time.sleep(0.3 * i), os.kill(server.pid, signal.SIGHUP) if i else
                                  httpx.get(f"{server.url}/sleep?s=1", timeout=10).status_code)[-1], 2)
    assert results[0] == 200
    server.wait_log("tornado loop engine ready on worker", count=2)
    assert marks.read_text() == f"shutdown {worker}\n"


def test_lifespan_shutdown_runs_when_max_requests_recycles_the_worker(uwsgi, tmp_path):
    marks = tmp_path / "marks"
    server = asgi(uwsgi, "--master", "--max-requests", "3", "--min-worker-lifetime", "0", env={"ASGI_SHUTDOWN_FILE": str(marks)})
    worker = server.worker_pids()[0]
    for _ in range(3):
        assert httpx.get(f"{server.url}/hello").status_code == 200
    server.wait_log("tornado loop engine ready on worker", count=2)
    assert marks.read_text() == f"shutdown {worker}\n"


def test_a_failed_lifespan_startup_stops_the_instance_with_one_line(uwsgi):
    server = asgi(uwsgi, "--master", env={"ASGI_FAIL_STARTUP": "1"}, wait=False)
    server.proc.wait(20)
    log = server.log()
    assert "lifespan startup failed: the database is not there" in log
    assert log.count("spawned uWSGI worker 1") <= 2, log
    assert "tornado loop engine ready" not in log


def test_lifespan_shutdown_runs_when_the_instance_is_stopped(uwsgi, tmp_path):
    marks = tmp_path / "marks"
    server = asgi(uwsgi, "--master", env={"ASGI_SHUTDOWN_FILE": str(marks)})
    worker = server.worker_pids()[0]
    assert httpx.get(f"{server.url}/hello").status_code == 200
    server.stop(signal.SIGINT)
    assert marks.read_text() == f"shutdown {worker}\n"


# ---- the sockets ----

def test_behind_the_uwsgi_protocol_a_stream_ends_with_the_connection_and_headers_stay_apart(uwsgi):
    from test_engine import uwsgi_packet
    port = free_port()
    server = asgi(uwsgi, "--socket", f"127.0.0.1:{port}")
    wait_port(port)
    request = {"REQUEST_METHOD": "GET", "PATH_INFO": "/stream", "REQUEST_URI": "/stream", "SERVER_PROTOCOL": "HTTP/1.1",
               "SERVER_NAME": "x", "SERVER_PORT": "80", "QUERY_STRING": ""}
    data = raw(port, uwsgi_packet(request))
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
    assert body == b"".join(b"part %d\n" % i for i in range(5))
    # repeated headers as the proxy sent them, one variable each
    packet = uwsgi_packet(dict(request, PATH_INFO="/scope", REQUEST_URI="/scope"))
    extra = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                     for k, v in [(b"HTTP_X_DUP", b"one"), (b"HTTP_X_DUP", b"two")])
    packet = struct.pack("<BHB", 0, len(packet) - 4 + len(extra), 0) + packet[4:] + extra
    scope = json.loads(raw(port, packet).partition(b"\r\n\r\n")[2])
    assert scope["headers"] == [["x-dup", "one"], ["x-dup", "two"]]
    assert server.proc.poll() is None


def test_the_https_socket_serves_an_asgi_app_with_scheme_https(uwsgi, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    port = free_port()
    asgi(uwsgi, "--https-socket", f"127.0.0.1:{port},{cert},{key}", socket_opt=None)
    wait_port(port)
    with httpx.Client(verify=False) as client:
        assert client.get(f"https://127.0.0.1:{port}/scope").json()["scheme"] == "https"
        with client.stream("GET", f"https://127.0.0.1:{port}/stream") as response:
            assert response.read() == b"".join(b"part %d\n" % i for i in range(5))


# ---- websockets (on the engine's RFC 6455 code) ----

def ws_connect(server, path: str = "/ws", **kw):
    import websocket  # websocket-client
    return websocket.create_connection(f"ws://127.0.0.1:{server.port}{path}", timeout=10, **kw)


def close_code(ws) -> int:
    """The code of the close frame the server sends next."""
    import websocket
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE, (opcode, data)
    return int.from_bytes(data[:2], "big")


def test_a_websocket_echoes_text_and_binary_and_sees_its_scope(uwsgi):
    server = asgi(uwsgi)
    ws = ws_connect(server)
    try:
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send_binary(b"\x00\xffbinary")
        assert ws.recv() == b"\x00\xffbinary"
        ws.send("scope")
        assert json.loads(ws.recv()) == {"type": "websocket", "scheme": "ws", "path": "/ws", "subprotocols": []}
    finally:
        ws.close()


def test_the_subprotocol_and_headers_the_app_accepts_with_reach_the_client(uwsgi):
    server = asgi(uwsgi)
    ws = ws_connect(server, subprotocols=["x-other", "chat"])
    try:
        assert ws.getsubprotocol() == "chat"
        assert ws.getheaders()["x-accepted"] == "yes"
    finally:
        ws.close()


def test_a_websocket_closed_before_accept_is_denied_with_403(uwsgi):
    import websocket
    server = asgi(uwsgi)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws_connect(server, "/ws-deny")
    assert refused.value.status_code == 403


def close_code_after(server, text: str) -> int:
    """Open a websocket, send `text`, return the code of the server's close."""
    ws = ws_connect(server)
    try:
        ws.send(text)
        return close_code(ws)
    finally:
        ws.close()


def test_the_close_code_of_the_app_reaches_the_client(uwsgi):
    assert close_code_after(asgi(uwsgi), "close 4002") == 4002


def test_the_close_code_of_the_client_reaches_the_app(uwsgi, tmp_path):
    record = tmp_path / "code"
    server = asgi(uwsgi)
    ws = ws_connect(server, f"/ws?{record}")
    ws.close(status=4321)
    assert written(record) == "4321"


def test_a_close_sent_while_the_app_awaits_receive_goes_out_and_ends_that_receive(uwsgi, tmp_path):
    record = tmp_path / "pending"
    server = asgi(uwsgi)
    ws = ws_connect(server, f"/ws?{record}")
    started = time.monotonic()
    ws.send("close-later")
    assert close_code(ws) == 4001
    assert time.monotonic() - started < 1.5
    ws.close()
    assert written(record) == "websocket.disconnect 4001"


def test_a_reload_closes_an_idle_asgi_websocket_with_1001(uwsgi):
    server = asgi(uwsgi, "--master")
    ws = ws_connect(server)
    ws.send("hello")
    assert ws.recv() == "hello"
    started = time.monotonic()
    os.kill(server.pid, signal.SIGHUP)
    assert close_code(ws) == 1001
    assert time.monotonic() - started < 3
    ws.close()
    server.wait_log("tornado loop engine ready on worker", count=2)


def test_a_websocket_app_that_raises_closes_with_1011_and_its_traceback_is_logged(uwsgi):
    server = asgi(uwsgi)
    assert close_code_after(server, "raise") == 1011
    server.wait_log("RuntimeError: the websocket app failed on purpose")
