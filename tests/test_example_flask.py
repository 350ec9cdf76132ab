"""The Flask example (examples/flask_notes.py): views that await asyncpg and
redis.asyncio through wait(), against a real PostgreSQL and Redis."""
from __future__ import annotations

import asyncio
import time

import asyncpg
import redis
import requests

from conftest import ROOT, Server, parallel

APP = str(ROOT / "examples" / "flask_notes.py")


def start(uwsgi, postgres: str, redis_url: str, *extra: str) -> Server:
    redis.Redis.from_url(redis_url).flushdb()
    asyncio.run(drop_notes(postgres))
    return uwsgi(APP, *extra, socket_opt="--http11-socket", env={"DATABASE_URL": postgres, "REDIS_URL": redis_url})


async def drop_notes(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS notes")
    finally:
        await conn.close()


async def stored_notes(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["text"] for r in await conn.fetch("SELECT text FROM notes ORDER BY id")]
    finally:
        await conn.close()


def test_notes_posted_through_flask_are_stored_in_postgresql_and_counted_in_redis(uwsgi, postgres, redis_url):
    server = start(uwsgi, postgres, redis_url)
    session = requests.Session()
    for text in ("first", "second", "third"):
        r = session.post(server.url + "/notes", data={"text": text}, timeout=10)
        assert r.status_code == 200 and [h.status_code for h in r.history] == [303]
    page = session.get(server.url + "/", timeout=10).text
    assert "<li>first</li><li>second</li><li>third</li>" in page
    assert "3 posted, page viewed 4 times" in page  # three redirects to / and this one
    assert session.get(server.url + "/notes.json", timeout=10).json() == [
        {"id": 1, "text": "first"}, {"id": 2, "text": "second"}, {"id": 3, "text": "third"}]
    assert asyncio.run(stored_notes(postgres)) == ["first", "second", "third"]
    assert redis.Redis.from_url(redis_url).get("notes:posted") == b"3"


def test_50_concurrent_flask_views_waiting_200_ms_in_postgresql_take_under_2_s(uwsgi, postgres, redis_url):
    server = start(uwsgi, postgres, redis_url)
    assert requests.get(server.url + "/slow", timeout=10).json() == {"slow": 1}  # pool and table exist
    started = time.monotonic()
    results = parallel(lambda i: requests.get(server.url + "/slow", timeout=10).json()["slow"], 50)
    elapsed = time.monotonic() - started
    print(f"50 x Flask view with pg_sleep(0.2): {elapsed:.3f} s")
    assert sorted(results) == list(range(2, 52))
    # one after the other: 10 s; the pool opens its other 48 connections meanwhile
    assert elapsed < 2.0
