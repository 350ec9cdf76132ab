"""Per request nothing leaks: the worker's RSS stays flat over 100,000 requests."""
from __future__ import annotations

import os

import pytest

from conftest import rss_kib, wrk


@pytest.mark.skipif(os.environ.get("UWSGI_ASAN") == "1",
                    reason="AddressSanitizer's quarantine holds freed memory: RSS says nothing about leaks there")
@pytest.mark.parametrize("socket_opt", ["--http-socket", "--http11-socket"])
def test_rss_grows_less_than_1_mib_over_100000_requests(uwsgi, socket_opt):
    server = uwsgi("basic.py", socket_opt=socket_opt)
    pid = server.worker_pids()[0]
    url = server.url + "/close" if socket_opt == "--http-socket" else server.url + "/"
    wrk(url, 8)  # warm up (~250k requests): caches, free lists and malloc arenas reach their size
    before = rss_kib(pid)
    served = 0
    for _ in range(20):  # bounded: at most 20 rounds of 5 s
        served += wrk(url, 5).requests
        if served >= 100_000:
            break
    after = rss_kib(pid)
    assert served >= 100_000
    assert after - before < 1024, f"RSS grew by {after - before} KiB over {served} requests"
