"""uWSGI's --stats server under the tornado loop engine: what it reports for
the worker and each async core while requests are in flight and after."""
from __future__ import annotations

import threading
import time

from conftest import free_port, http_get, parallel, read_stats, wait_port, wait_stats

IN_FLIGHT = 30
SLEEP = 2.0


def test_stats_show_30_requests_in_flight_then_their_counts_and_avg_rt(uwsgi):
    stats_port = free_port()
    server = uwsgi("basic.py", "--master", "--stats", f"127.0.0.1:{stats_port}")
    wait_port(stats_port)

    # the fixture's readiness probe (a connect and a close) holds a core
    # until the worker has read its end
    before = wait_stats(stats_port, lambda s: s["workers"][0]["status"] == "idle")["workers"][0]
    assert before["status"] == "idle"
    assert before["requests"] == 0
    assert len(before["cores"]) == 100

    results: list[object] = []
    batch = threading.Thread(
        target=lambda: results.extend(parallel(lambda i: http_get(server.port, f"/sleep?s={SLEEP}"), IN_FLIGHT)))
    batch.start()
    # every request is accepted and sleeping well before SLEEP ends
    deadline = time.monotonic() + SLEEP / 2
    while True:
        during = read_stats(stats_port)["workers"][0]
        busy = [c for c in during["cores"] if c["in_request"]]
        if len(busy) == IN_FLIGHT or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    batch.join(SLEEP + 20)

    assert len(busy) == IN_FLIGHT, [c["in_request"] for c in during["cores"]]
    assert during["status"] == "busy"
    assert during["requests"] == 0  # none finished yet
    assert all(c["requests"] == 0 for c in during["cores"])
    assert all(c["in_request"] == 0 for c in during["cores"] if c not in busy)

    assert len(results) == IN_FLIGHT and all(isinstance(r, tuple) and r[0] == 200 for r in results), results
    # a client can read the end of its response a moment before the worker
    # has done the bookkeeping that follows the close
    after = wait_stats(stats_port, lambda s: s["workers"][0]["status"] == "idle")["workers"][0]
    assert after["status"] == "idle"
    assert after["requests"] == IN_FLIGHT
    busy_ids = {c["id"] for c in busy}
    by_id = {c["id"]: c for c in after["cores"]}
    # each core that was busy served exactly its one request; the others none
    assert {i: by_id[i]["requests"] for i in busy_ids} == {i: 1 for i in busy_ids}
    assert sum(c["requests"] for c in after["cores"]) == IN_FLIGHT
    assert all(c["in_request"] == 0 for c in after["cores"])
    print(f"in flight: {len(busy)} cores in_request 1; after: requests {after['requests']}, avg_rt {after['avg_rt']} us")
    # avg_rt is in microseconds: each request slept SLEEP seconds
    assert SLEEP * 1e6 <= after["avg_rt"] < (SLEEP + 1.5) * 1e6, after["avg_rt"]
