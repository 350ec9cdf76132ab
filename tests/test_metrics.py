"""The engine's own metrics in uWSGI's metrics subsystem (--enable-metrics):
worker.N.tornado.* in the stats output and in --metrics-dir, under load and
back at rest."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from conftest import PYPY_GENERATORS, free_port, http_get, parallel, read_stats, wait_port, wait_stats

CORES = 10
LOAD = 3.0  # seconds each loaded request lasts
GAUGES = ("busy_cores", "head_cores", "fd_waiting_cores", "timer_waiting_cores", "ready_queue",
          "loop_lag_max_us", "loop_lag_avg_us", "waits_per_sec", "wakeups_per_sec")


def engine_metrics(stats: dict, wid: int = 1) -> dict[str, int]:
    """worker.<wid>.tornado.* of a stats document, without the prefix."""
    prefix = f"worker.{wid}.tornado."
    return {name[len(prefix):]: m["value"] for name, m in stats["metrics"].items() if name.startswith(prefix)}


def tornado_metrics(stats_port: int, wid: int = 1) -> dict[str, int]:
    """worker.<wid>.tornado.* from the stats server, without the prefix."""
    return engine_metrics(read_stats(stats_port), wid)


def metrics_dir_value(path: Path) -> int:
    """A --metrics-dir file: the value as text, padded with NUL bytes."""
    text = path.read_bytes().strip(b"\0").strip()
    return int(text) if text else 0


def poll(stats_port: int, done, timeout: float) -> dict[str, int]:
    """Read the metrics every 0.2 s until done(metrics) or `timeout`; the last reading."""
    return engine_metrics(wait_stats(stats_port, lambda stats: done(engine_metrics(stats)), timeout, every=0.2))


@PYPY_GENERATORS
def test_engine_metrics_move_under_load_and_return_to_rest(uwsgi, tmp_path):
    stats_port = free_port()
    mdir = tmp_path / "metrics"
    mdir.mkdir()
    server = uwsgi("basic.py", "--master", "--tornado", str(CORES), "--greenlet", "--enable-metrics",
                   "--metrics-dir", str(mdir), "--stats", f"127.0.0.1:{stats_port}", engine=False)
    wait_port(stats_port)
    start = tornado_metrics(stats_port)
    assert set(GAUGES) | {"waits", "wakeups", "accept_pauses"} <= set(start), start

    # the load: 2 requests waiting on a pipe (uwsgi.wait_fd_read), 2
    # generators that yield in a loop (the ready queue), and 8 sleepers
    # (timers) of which only 6 find a free core: accepting pauses
    results: list[object] = []
    clients = [
        threading.Thread(target=lambda: results.extend(parallel(lambda i: http_get(server.port, f"/fd?timeout={LOAD:.0f}"), 2))),
        threading.Thread(target=lambda: results.extend(parallel(lambda i: http_get(server.port, f"/spin?s={LOAD}"), 2))),
        threading.Thread(target=lambda: results.extend(parallel(lambda i: http_get(server.port, f"/sleep?s={LOAD}"), 8))),
    ]
    for t in clients:
        t.start()
        time.sleep(0.2)

    def loaded(m: dict[str, int]) -> bool:
        return (m["busy_cores"] == CORES and m["fd_waiting_cores"] == 2 and m["timer_waiting_cores"] == 6
                and m["ready_queue"] >= 1 and m["waits_per_sec"] > 0 and m["wakeups_per_sec"] > 0
                and m["loop_lag_max_us"] > 0 and m["accept_pauses"] >= 1)

    busy = poll(stats_port, loaded, LOAD - 0.5)
    busy_file = metrics_dir_value(mdir / "worker.1.tornado.busy_cores")
    print("under load:", busy)
    assert busy["busy_cores"] == CORES
    assert busy["fd_waiting_cores"] == 2
    assert busy["timer_waiting_cores"] == 6
    assert 1 <= busy["ready_queue"] <= 2
    assert busy["waits_per_sec"] > 100  # the generators alone wait once per loop iteration
    assert busy["wakeups_per_sec"] > 100
    assert busy["loop_lag_max_us"] > 0
    assert busy["accept_pauses"] >= 1
    assert busy["waits"] > start["waits"] and busy["wakeups"] > start["wakeups"]
    assert busy_file == CORES

    for t in clients:
        t.join(3 * LOAD + 10)
    assert len(results) == 12 and all(isinstance(r, tuple) and r[0] == 200 for r in results), results

    rest = poll(stats_port, lambda m: all(m[g] == 0 for g in GAUGES), 6)
    print("at rest:", rest)
    assert {g: rest[g] for g in GAUGES} == {g: 0 for g in GAUGES}
    assert rest["waits"] >= busy["waits"] and rest["accept_pauses"] >= 1
    assert metrics_dir_value(mdir / "worker.1.tornado.busy_cores") == 0
    assert metrics_dir_value(mdir / "worker.1.tornado.waits") == rest["waits"]


def test_connections_without_a_request_head_count_as_head_cores_not_as_running(uwsgi):
    """A core is a state machine: connections that sent no complete head
    (one byte of it, a half-sent head, an idle keep-alive one) are head cores;
    requests in the app are not; both are busy, and all return to idle."""
    stats_port = free_port()
    server = uwsgi("basic.py", "--master", "--tornado", str(CORES), "--greenlet", "--enable-metrics",
                   "--stats", f"127.0.0.1:{stats_port}", engine=False, socket_opt="--http11-socket")
    wait_port(stats_port)
    conns = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        conns[0].sendall(b"G")  # a silent connection is not accepted yet (TCP_DEFER_ACCEPT)
        conns[1].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a head
        conns[2].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # served, then idle with keep-alive
        assert conns[2].recv(65536).startswith(b"HTTP/1.1 200")
        sleepers = threading.Thread(target=lambda: parallel(lambda i: http_get(server.port, f"/sleep?s={LOAD}"), 2))
        sleepers.start()
        seen = poll(stats_port, lambda m: m["busy_cores"] == 5 and m["head_cores"] == 3, LOAD - 0.5)
        assert (seen["busy_cores"], seen["head_cores"], seen["timer_waiting_cores"]) == (5, 3, 2), seen
        sleepers.join(LOAD + 5)
    finally:
        for c in conns:
            c.close()
    rest = poll(stats_port, lambda m: m["busy_cores"] == 0, 5)
    assert (rest["busy_cores"], rest["head_cores"]) == (0, 0), rest


def test_each_worker_reports_its_own_busy_cores_as_the_stats_cores_show_them(uwsgi):
    stats_port = free_port()
    server = uwsgi("basic.py", "--master", "--processes", "2", "--enable-metrics",
                   "--stats", f"127.0.0.1:{stats_port}", workers=2)
    wait_port(stats_port)
    sleepers = threading.Thread(target=parallel, args=(lambda i: http_get(server.port, f"/sleep?s={LOAD}"), 20))
    sleepers.start()

    def per_worker(stats: dict) -> tuple[list[int], list[int]]:
        in_request = [sum(c["in_request"] for c in w["cores"]) for w in stats["workers"]]
        metric = [stats["metrics"][f"worker.{w['id']}.tornado.busy_cores"]["value"] for w in stats["workers"]]
        return in_request, metric

    def all_20_seen(stats: dict) -> bool:
        in_request, metric = per_worker(stats)
        return metric == in_request and sum(metric) == 20

    in_request, metric = per_worker(wait_stats(stats_port, all_20_seen, LOAD - 0.5, every=0.2))
    sleepers.join(LOAD + 20)
    print("in_request per worker:", in_request, "busy_cores metric per worker:", metric)
    assert sum(in_request) == 20
    assert metric == in_request
