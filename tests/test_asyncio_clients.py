"""Real asyncio clients awaited from WSGI through wait(), against real servers
the tests start: asyncpg + PostgreSQL, redis.asyncio + Redis, aiohttp and
httpx + a local HTTP backend."""
from __future__ import annotations

import asyncio
import re
import threading
import time

import asyncpg
import pytest
import redis

from conftest import Server, http_get, parallel


@pytest.fixture
def clients(uwsgi, postgres, redis_url, backend):
    """Start tests/apps/aio_clients.py: ``clients("--master", "--processes", "2", workers=2)``."""
    def start(*extra: str, workers: int = 1) -> Server:
        env = {"DATABASE_URL": postgres, "REDIS_URL": redis_url, "BACKEND_URL": backend.url}
        return uwsgi("aio_clients.py", *extra, workers=workers, env=env)
    return start


def pg_connections(dsn: str) -> int:
    """Client connections PostgreSQL has, other than the one asking."""
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        finally:
            await conn.close()
    return asyncio.run(count())


def test_100_concurrent_pg_sleep_of_100_ms_take_under_half_a_second_on_one_worker(clients):
    server = clients()
    assert http_get(server.port, "/pg-pool")[0] == 200  # the worker's pool exists: 100 connections
    started = time.monotonic()
    results = parallel(lambda i: http_get(server.port, "/pg-sleep?s=0.1"), 100)
    elapsed = time.monotonic() - started
    print(f"100 x pg_sleep(0.1): {elapsed:.3f} s")
    assert results == [(200, b"slept")] * 100
    assert elapsed < 0.5


def test_the_asyncpg_pool_is_created_once_per_worker_and_closed_at_worker_exit(clients, postgres):
    server = clients("--master", "--processes", "2", workers=2)
    pools: dict[int, set[tuple[str, str]]] = {}
    for _ in range(5):
        for result in parallel(lambda i: http_get(server.port, "/pg-pool"), 40):
            assert isinstance(result, tuple) and result[0] == 200, result
            pid, pool_id, created, size, _backend = result[1].decode().split()
            pools.setdefault(int(pid), set()).add((pool_id, created, size))
        if len(pools) == 2:
            break
    assert set(pools) == set(server.worker_pids())
    # one pool object per worker, created once, with its 100 connections
    assert all(len(seen) == 1 and next(iter(seen))[1:] == ("1", "100") for seen in pools.values()), pools
    assert pg_connections(postgres) == 200

    server.stop()
    closed = re.findall(r"asyncpg pool of worker pid (\d+) closed \((\d+) connections\)", server.log())
    assert sorted(closed) == sorted((str(pid), "100") for pid in pools), server.log()
    assert pg_connections(postgres) == 0


def test_50_concurrent_blpop_requests_are_released_by_one_lpush_each(clients, redis_url):
    server = clients()
    r = redis.Redis.from_url(redis_url)
    r.delete("jobs")
    results: list[object] = []
    waiting = threading.Thread(
        target=lambda: results.extend(parallel(lambda i: http_get(server.port, "/blpop?key=jobs&timeout=20"), 50, 30)))
    waiting.start()
    deadline = time.monotonic() + 10
    while r.info("clients")["blocked_clients"] < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.info("clients")["blocked_clients"] == 50
    # the worker serves others while 50 requests block in BLPOP
    started = time.monotonic()
    assert http_get(server.port, "/ping") == (200, b"pong")
    assert time.monotonic() - started < 0.5
    assert results == []

    for i in range(50):
        r.lpush("jobs", str(i))
    waiting.join(30)
    assert sorted(results, key=lambda res: int(res[1]) if isinstance(res, tuple) else -1) == \
        [(200, str(i).encode()) for i in range(50)]
    assert r.llen("jobs") == 0


def test_a_blpop_nobody_feeds_returns_after_its_1_s_timeout(clients, redis_url):
    server = clients()
    redis.Redis.from_url(redis_url).delete("nothing")
    started = time.monotonic()
    assert http_get(server.port, "/blpop?key=nothing&timeout=1") == (200, b"timeout")
    assert 1.0 <= time.monotonic() - started < 3.0  # Redis checks timeouts 10 times a second


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
def test_20_concurrent_fetches_of_a_1_s_backend_take_about_1_s(clients, client):
    server = clients()
    assert http_get(server.port, f"/{client}?path=/services") == (200, b"services")  # the session exists
    started = time.monotonic()
    results = parallel(lambda i: http_get(server.port, f"/{client}?path=/slow?s=1"), 20)
    elapsed = time.monotonic() - started
    print(f"20 x {client} fetch of a 1 s backend: {elapsed:.3f} s")
    assert results == [(200, b"slow")] * 20
    assert 1.0 <= elapsed < 2.0
