"""Worker lifecycle under the tornado engine: uWSGI signals, graceful reload,
recycling, harakiri, shutdown: nothing in flight is lost."""
from __future__ import annotations

import collections
import json
import os
import random
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import Load, free_port, http_get, parallel, wait_port


# ---- uWSGI signals ----

def test_timer_runs_about_once_per_second_in_each_worker(uwsgi, tmp_path):
    log = tmp_path / "timer.log"
    server = uwsgi("lifecycle.py", "--master", "--processes", "2", workers=2, env={"TIMER_LOG": str(log)})
    time.sleep(4.2)
    ticks = collections.Counter(int(line.split()[0]) for line in log.read_text().splitlines())
    assert set(ticks) == set(server.worker_pids())
    assert all(3 <= n <= 6 for n in ticks.values()), ticks


def test_signal_handler_that_waits_does_not_stop_requests(uwsgi, tmp_path):
    log = tmp_path / "signal.log"
    server = uwsgi("lifecycle.py", "--master", env={"SIGNAL_LOG": str(log)})
    assert http_get(server.port, "/signal?n=17")[0] == 200
    deadline = time.monotonic() + 5
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    assert http_get(server.port, "/pid")[0] == 200
    served_in = time.monotonic() - started
    while len(log.read_text().splitlines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    lines = log.read_text().splitlines()
    assert served_in < 0.3
    assert [line.split()[0] for line in lines] == ["start", "end"]
    assert float(lines[1].split()[1]) - float(lines[0].split()[1]) >= 0.45


def test_signal_handler_that_raises_is_logged_and_the_worker_goes_on(uwsgi):
    server = uwsgi("lifecycle.py", "--master")
    pid = http_get(server.port, "/pid")[1]
    assert http_get(server.port, "/signal?n=18")[0] == 200
    server.wait_log("this signal handler fails on purpose")
    assert http_get(server.port, "/pid") == (200, pid)


# ---- graceful reload ----

def test_sighup_lets_50_in_flight_requests_finish_and_new_workers_take_over(uwsgi, tmp_path):
    atexit_file = tmp_path / "atexit"
    server = uwsgi("lifecycle.py", "--master", "--processes", "2", "--listen", "256", workers=2,
                   env={"ATEXIT_FILE": str(atexit_file)})
    old_pids = set(server.worker_pids())
    results: list[object] = []
    runner = threading.Thread(target=lambda: results.extend(
        parallel(lambda i: http_get(server.port, "/slow?s=2", timeout=30), 50)))
    runner.start()
    time.sleep(0.7)
    os.kill(server.pid, signal.SIGHUP)
    signalled = time.monotonic()
    new_answer = None
    while time.monotonic() - signalled < 10:
        status, body = http_get(server.port, "/pid", timeout=10)
        if status == 200 and int(body) not in old_pids:
            new_answer = time.monotonic() - signalled
            break
    runner.join(30)
    assert len(results) == 50
    assert all(isinstance(r, tuple) and r[0] == 200 and int(r[1]) in old_pids for r in results), results
    assert new_answer is not None and new_answer < 3.0
    server.wait_log("tornado loop engine ready on worker", count=4)
    assert not set(server.worker_pids()) & old_pids
    assert {int(line.split()[1]) for line in atexit_file.read_text().splitlines()} == old_pids


def test_graceful_reload_under_continuous_load_fails_no_request(uwsgi):
    server = uwsgi("lifecycle.py", "--master", "--processes", "2", workers=2)
    load = Load(server.port, threads=4)
    time.sleep(1)
    os.kill(server.pid, signal.SIGHUP)
    server.wait_log("tornado loop engine ready on worker", count=4)
    time.sleep(1)
    load.stop()
    assert load.failures == []
    assert len(load.per_pid) >= 3  # old and new workers both answered


# ---- recycling ----

def test_max_requests_recycles_each_worker_after_100_to_110_requests(uwsgi):
    server = uwsgi("lifecycle.py", "--master", "--processes", "2", "--max-requests", "100",
                   "--min-worker-lifetime", "0", workers=2)
    load = Load(server.port, threads=6, limit=60)
    time.sleep(10)
    load.stop()
    live = set(server.worker_pids())  # still serving: not retired yet
    assert load.failures == []
    retired = {pid: n for pid, n in load.per_pid.items() if pid not in live}
    assert len(retired) >= 4, load.per_pid
    outside = {pid: n for pid, n in retired.items() if not 100 <= n <= 110}
    assert outside == {}, f"{len(retired)} retired workers: {sorted(retired.values())}"
    assert "NO MERCY" not in server.log()


def test_reload_on_rss_recycles_the_worker_without_failing_requests(uwsgi):
    server = uwsgi("lifecycle.py", "--master", "--reload-on-rss", "120", "--memory-report")
    first = http_get(server.port, "/pid")[1]
    load = Load(server.port, threads=2)
    for _ in range(8):  # 8 x 20 MiB kept alive: well past 120 MiB
        assert http_get(server.port, "/alloc")[0] == 200
    server.wait_log("The work of process")
    time.sleep(1.5)
    load.stop()
    assert load.failures == []
    assert http_get(server.port, "/pid")[1] != first


def test_max_worker_lifetime_retires_the_worker_through_the_drain(uwsgi):
    server = uwsgi("lifecycle.py", "--master", "--max-worker-lifetime", "2", "--min-worker-lifetime", "1")
    first = set(server.worker_pids())
    load = Load(server.port, threads=3)
    server.wait_log("lifetime reached", timeout=20)
    server.wait_log("tornado loop engine ready on worker", count=2)
    time.sleep(0.5)
    load.stop()
    assert load.failures == []
    assert set(load.per_pid) - first  # the new worker answered too
    assert "NO MERCY" not in server.log()


# ---- shutdown ----

@pytest.mark.parametrize("signum,extra", [(signal.SIGINT, ()), (signal.SIGQUIT, ()),
                                          (signal.SIGTERM, ("--die-on-term",))])
def test_shutdown_signal_stops_the_server_within_2_seconds_and_runs_atexit(uwsgi, tmp_path, signum, extra):
    atexit_file = tmp_path / "atexit"
    server = uwsgi("lifecycle.py", "--master", *extra, env={"ATEXIT_FILE": str(atexit_file)})
    worker = server.worker_pids()[0]
    threading.Thread(target=parallel, args=(lambda i: http_get(server.port, "/slow?s=10", timeout=15), 10),
                     daemon=True).start()
    time.sleep(0.5)
    started = time.monotonic()
    os.kill(server.pid, signum)
    server.proc.wait(10)
    assert time.monotonic() - started < 2.0
    assert atexit_file.read_text().split() == ["atexit", str(worker)]


# ---- harakiri ----

def test_harakiri_kills_a_blocking_request_and_the_worker_is_replaced(uwsgi):
    server = uwsgi("lifecycle.py", "--master", "--harakiri", "2")
    old = int(http_get(server.port, "/pid")[1])
    status, _ = http_get(server.port, "/block?s=10", timeout=20)
    assert status == 0  # the connection died with its worker
    server.wait_log("HARAKIRI")
    server.wait_log("tornado loop engine ready on worker", count=2)
    assert int(http_get(server.port, "/pid")[1]) != old


def test_harakiri_fires_for_a_request_waiting_on_the_loop_too_long(uwsgi):
    server = uwsgi("lifecycle.py", "--master", "--harakiri", "2")
    status, _ = http_get(server.port, "/slow?s=10", timeout=20)
    assert status == 0
    server.wait_log("HARAKIRI")


def test_harakiri_spares_concurrent_requests_that_finish_in_time(uwsgi):
    server = uwsgi("lifecycle.py", "--master", "--harakiri", "2")
    for _ in range(3):  # staggered waves: each request is younger than the deadline
        results = parallel(lambda i: (time.sleep(i * 0.05), http_get(server.port, "/slow?s=1"))[1], 20)
        assert all(r[0] == 200 for r in results), results
    assert "HARAKIRI" not in server.log()


# ---- client disconnects and bad input ----

def stats(port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def abort(port: int, stage: int) -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        if stage == 1:    # during the headers
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nX-Half")
        elif stage == 2:  # during a body upload
            s.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        elif stage == 3:  # while the app waits
            s.sendall(b"GET /slow?s=0.05 HTTP/1.1\r\nHost: x\r\n\r\n")
        elif stage == 4:  # mid-response: read a little, then reset
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    finally:
        s.close()


def test_10000_client_aborts_leave_every_core_free(uwsgi):
    stats_port = free_port()
    server = uwsgi("lifecycle.py", "--master", "--stats", f"127.0.0.1:{stats_port}", "--socket-timeout", "2",
                   "--listen", "1024")
    rng = random.Random(1234)
    stages = [rng.randrange(5) for _ in range(10_000)]
    for chunk in range(0, len(stages), 500):
        parallel(lambda i: [abort(server.port, s) for s in stages[chunk + i * 50: chunk + (i + 1) * 50]], 10)
    results = parallel(lambda i: http_get(server.port, "/pid"), 100)
    assert all(isinstance(r, tuple) and r[0] == 200 for r in results)
    wait_port(stats_port)
    deadline = time.monotonic() + 5  # aborted uploads may wait out --socket-timeout
    while True:
        busy = [c for w in stats(stats_port)["workers"] for c in w["cores"] if c["in_request"]]
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert busy == []
    assert "DAMN" not in server.log()


def malformed_requests(seed: int, count: int) -> list[bytes]:
    """A seeded generator of broken HTTP requests."""
    rng = random.Random(seed)
    good = b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"
    makers = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))),             # random bytes
        lambda: b"GET /\r\n\r\n",                                                              # HTTP/0.9
        lambda: b"GET " + b"/" * rng.randrange(5000, 70000) + b" HTTP/1.1\r\n\r\n",           # beyond --buffer-size
        lambda: b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * rng.randrange(4000, 20000) + b"\r\n\r\n",
        lambda: b"POST /read HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n",  # invalid chunk
        lambda: rng.choice([b"GET", b"\x00\x01", b"G E T", b""]) + b" " + rng.choice([b"/", b"", b"\xff"]) + b" "
        + rng.choice([b"HTTP/1.1", b"HTTP/9", b"", b"\r"]) + b"\r\n" * rng.randrange(0, 3),
        lambda: good[: rng.randrange(len(good))] + bytes([rng.randrange(256)]) + good[rng.randrange(len(good)):],
        lambda: b"POST /read HTTP/1.1\r\nContent-Length: -5\r\n\r\nabc",
        lambda: b"POST /read HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
    ]
    return [rng.choice(makers)() for _ in range(count)]


def send_raw(port: int, payload: bytes) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
    except OSError:
        pass  # a reset is a fine answer to garbage


def uwsgi_packet_wrong_size(rng: random.Random) -> bytes:
    body = b"\x0b\x00REQUEST_URI\x01\x00/"
    size = rng.choice([0, 1, len(body) + 50, 65535])
    return bytes([0]) + size.to_bytes(2, "little") + bytes([0]) + body


def test_fuzz_10000_malformed_requests_never_kill_a_worker(uwsgi):
    uwsgi_port = free_port()
    server = uwsgi("lifecycle.py", "--master", "--socket", f"127.0.0.1:{uwsgi_port}", "--socket-timeout", "2",
                   "--listen", "1024")
    wait_port(uwsgi_port)
    pids = set(server.worker_pids())
    payloads = malformed_requests(seed=2026, count=9_000)
    rng = random.Random(7)
    uwsgi_payloads = [uwsgi_packet_wrong_size(rng) for _ in range(1_000)]
    for chunk in range(0, len(payloads), 1000):
        parallel(lambda i: [send_raw(server.port, p) for p in payloads[chunk + i * 50: chunk + (i + 1) * 50]], 20)
    parallel(lambda i: [send_raw(uwsgi_port, p) for p in uwsgi_payloads[i * 50:(i + 1) * 50]], 20)
    results = parallel(lambda i: http_get(server.port, "/pid"), 20)
    assert all(isinstance(r, tuple) and r[0] == 200 for r in results), results
    assert set(server.worker_pids()) == pids
    assert "DAMN ! worker" not in server.log()
