"""Per request nothing leaks: the worker's RSS stays flat over 150,000 requests."""
from __future__ import annotations

import os

import pytest

from conftest import rss_kib, wrk


@pytest.mark.skipif(os.environ.get("UWSGI_ASAN") == "1",
                    reason="AddressSanitizer's quarantine holds freed memory: RSS says nothing about leaks there")
@pytest.mark.parametrize("socket_opt", ["--http-socket", "--http11-socket"])
def test_rss_stays_flat_over_150000_requests(uwsgi, socket_opt):
    server = uwsgi("basic.py", socket_opt=socket_opt)
    pid = server.worker_pids()[0]
    url = server.url + "/close" if socket_opt == "--http-socket" else server.url + "/"
    wrk(url, 8)  # warm up (~250k requests): caches, free lists and malloc arenas reach their size
    # three blocks of >= 50,000 requests: a leak grows every block; malloc and
    # the interpreter may still take one step (an arena) in one of them
    samples = [rss_kib(pid)]
    for _ in range(3):
        served = 0
        for _ in range(10):  # bounded: at most 10 rounds of 3 s per block
            served += wrk(url, 3).requests
            if served >= 50_000:
                break
        assert served >= 50_000
        samples.append(rss_kib(pid))
    growth = [after - before for before, after in zip(samples, samples[1:])]
    # < 256 KiB over 50,000 requests: less than 5.3 bytes per request
    assert min(growth) < 256, f"RSS grew in every block of 50,000 requests: {growth} KiB"
    assert samples[-1] - samples[0] < 4096, f"RSS grew by {samples[-1] - samples[0]} KiB: {growth}"
