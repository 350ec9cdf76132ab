"""Slow clients cannot take the worker: the request-head deadline, the minimum
body rate, shedding connections without a request when every core is taken,
and a drain that closes them instead of waiting for them."""
from __future__ import annotations

import signal
import socket
import threading
import time

from conftest import Dribbler, http_get, parallel, wait_port


def test_a_dribbling_request_head_is_closed_at_the_head_deadline(uwsgi):
    server = uwsgi("basic.py", "--socket-timeout", "5", "--tornado-head-timeout", "2")
    dribblers = [Dribbler(server.port, 0.3) for _ in range(10)]
    for d in dribblers:
        d.thread.join(8)
    times = [t for d in dribblers for t in d.closed_after]
    assert len(times) == 10, "every dribbling connection is closed, however slowly it keeps sending"
    assert all(1.8 <= t < 3.5 for t in times), times
    assert http_get(server.port, "/") == (200, b"Hello World")


def test_an_idle_keep_alive_connection_is_closed_at_the_head_deadline(uwsgi):
    server = uwsgi("basic.py", "--socket-timeout", "30", "--tornado-head-timeout", "1", socket_opt="--http11-socket")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"Hello World" in s.recv(4096)
        started = time.monotonic()
        assert s.recv(100) == b""
        assert 0.8 <= time.monotonic() - started < 2.5


def test_a_complete_request_sent_in_pieces_within_the_deadline_is_served(uwsgi):
    server = uwsgi("basic.py", "--tornado-head-timeout", "3")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        for piece in (b"GET / HTTP/1.0\r\n", b"Host: x\r\n", b"\r\n"):
            s.sendall(piece)
            time.sleep(0.5)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.0 200") and data.endswith(b"Hello World")


def post_slowly(port: int, total: int, piece: int, interval: float, limit: float,
                after: float = 0, think: float = 0) -> tuple[bytes, float]:
    """POST /upload announcing `total` bytes, sending `piece` bytes every
    `interval` s from `after` s after the head on, to an app that works
    `think` s before it reads; returns (what the server answered, seconds
    from the head until it did)."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
        s.sendall(b"POST /upload?think=%g HTTP/1.0\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (think, total))
        started = time.monotonic()
        time.sleep(after)
        sent = 0
        s.settimeout(interval)
        data = b""
        while time.monotonic() - started < limit:
            if sent < total:
                try:
                    s.sendall(b"x" * min(piece, total - sent))
                    sent += min(piece, total - sent)
                except OSError:
                    pass  # the server gave up on the body: read its answer
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                break  # closed with our unread body bytes in its buffer: the answer came first
            if not chunk:
                break
            data += chunk
        return data, time.monotonic() - started


def test_a_body_slower_than_the_minimum_rate_fails_the_read_in_the_app(uwsgi):
    server = uwsgi("basic.py", "--tornado-body-timeout", "1", "--tornado-body-min-rate", "100")
    # 20 bytes/s against 100 bytes/s: the read fails once 1 s + received/100 has passed
    data, elapsed = post_slowly(server.port, 100000, 10, 0.5, limit=10)
    assert data.startswith(b"HTTP/1.0 400"), data
    assert b"read failed" in data
    assert 1.0 <= elapsed < 3.5, elapsed
    assert http_get(server.port, "/") == (200, b"Hello World")


def test_a_slow_body_above_the_minimum_rate_is_read_whole(uwsgi):
    server = uwsgi("basic.py", "--tornado-body-timeout", "1", "--tornado-body-min-rate", "100")
    # 400 bytes/s against 100 bytes/s for 2 s: never behind its deadline
    data, elapsed = post_slowly(server.port, 800, 100, 0.25, limit=10)
    assert data.startswith(b"HTTP/1.0 200"), data
    assert data.endswith(b"800 bytes")
    assert 1.5 <= elapsed < 4


def test_the_body_clock_starts_when_the_app_first_waits_for_the_body(uwsgi):
    server = uwsgi("basic.py", "--tornado-body-timeout", "1", "--tornado-body-min-rate", "1000")
    # the app works 3 s before reading; the client starts its body at 2.8 s
    # and sends 2,500 bytes/s: counted from the head it would be 1.5 s late
    data, elapsed = post_slowly(server.port, 2500, 250, 0.1, limit=10, after=2.8, think=3)
    assert data.startswith(b"HTTP/1.0 200"), data
    assert data.endswith(b"2500 bytes")
    assert 3.0 <= elapsed < 5.5, elapsed


def test_twice_as_many_dribblers_as_cores_do_not_stop_complete_requests(uwsgi):
    # no head deadline within the test: shedding alone must keep the worker serving
    server = uwsgi("basic.py", "--tornado", "20", "--greenlet", "--socket-timeout", "60",
                   "--tornado-head-timeout", "60", "--listen", "128", engine=False)
    dribblers = [Dribbler(server.port, 0.5, reconnect=True, limit=20) for _ in range(40)]
    try:
        time.sleep(1.5)  # every core parses a dribbler, the rest wait in the backlog
        latencies = []
        deadline = time.monotonic() + 12
        while len(latencies) < 100 and time.monotonic() < deadline:
            started = time.monotonic()
            assert http_get(server.port, "/", timeout=10) == (200, b"Hello World")
            latencies.append(time.monotonic() - started)
        shed = sum(d.connections for d in dribblers)
    finally:
        for d in dribblers:
            d.stop()
    assert len(latencies) == 100
    latencies.sort()
    assert latencies[98] < 2.0, f"p99 {latencies[98]:.3f}s"
    assert shed > 40, "dribblers were closed to make room, and came back"


def test_a_drain_closes_connections_without_a_request_and_waits_for_requests_in_flight(uwsgi):
    server = uwsgi("basic.py", "--master", "--tornado-head-timeout", "60", "--socket-timeout", "60",
                   "--worker-reload-mercy", "20")
    old = server.worker_pids()
    dribblers = [Dribbler(server.port, 0.3, limit=25) for _ in range(30)]
    in_flight = []
    thread = threading.Thread(target=lambda: in_flight.append(http_get(server.port, "/sleep?s=2", timeout=20)))
    thread.start()
    time.sleep(1)
    reload_started = time.monotonic()
    server.proc.send_signal(signal.SIGHUP)
    for d in dribblers:
        d.thread.join(5)
    dribblers_closed = time.monotonic() - reload_started
    thread.join(20)
    server.wait_log("tornado loop engine ready on worker", count=2, timeout=20)
    wait_port(server.port)
    assert in_flight and in_flight[0][0] == 200, in_flight
    assert all(len(d.closed_after) == 1 for d in dribblers), "every dribbler is closed by the drain"
    assert dribblers_closed < 2, f"dribblers closed {dribblers_closed:.2f}s after SIGHUP"
    assert "NO MERCY" not in server.log()
    results = parallel(lambda i: http_get(server.port, "/pid"), 10)
    assert all(isinstance(r, tuple) and r[0] == 200 for r in results), results
    assert not {int(r[1]) for r in results} & set(old), "a new worker answers"
