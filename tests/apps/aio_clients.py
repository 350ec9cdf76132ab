"""asyncio clients awaited from WSGI through wait(): asyncpg, redis.asyncio,
aiohttp and httpx, each with one client (pool) per worker.

DATABASE_URL, REDIS_URL and BACKEND_URL say where the servers are."""
import os

import aiohttp
import asyncpg
import httpx
import redis.asyncio

from basic import query, text
from uwsgidecorators_ext import PerWorker, wait

created = {"pg": 0}


async def create_pg_pool() -> asyncpg.Pool:
    created["pg"] += 1
    return await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=100, max_size=100)


async def close_pg_pool(pool: asyncpg.Pool) -> None:
    size = pool.get_size()
    await pool.close()
    print(f"asyncpg pool of worker pid {os.getpid()} closed ({size} connections)", flush=True)


pg = PerWorker(create_pg_pool, close=close_pg_pool)
rd = PerWorker(lambda: redis.asyncio.Redis.from_url(os.environ["REDIS_URL"], max_connections=200),
               close=lambda client: client.aclose())
aio = PerWorker(lambda: aiohttp.ClientSession(), close=lambda session: session.close())
hx = PerWorker(lambda: httpx.AsyncClient(timeout=10), close=lambda client: client.aclose())


async def aiohttp_get(session, url):
    async with session.get(url) as response:
        return await response.read()


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/pg-sleep":
        seconds = float(query(environ, "s", "0.1"))
        wait(pg.get().execute("SELECT pg_sleep($1)", seconds))
        return text(start_response, "slept")
    if path == "/pg-pool":
        pool = pg.get()
        backend_pid = wait(pool.fetchval("SELECT pg_backend_pid()"))
        return text(start_response, f"{os.getpid()} {id(pool)} {created['pg']} {pool.get_size()} {backend_pid}")
    if path == "/blpop":
        got = wait(rd.get().blpop(query(environ, "key", "jobs"), timeout=float(query(environ, "timeout", "10"))))
        return text(start_response, "timeout" if got is None else got[1])
    if path == "/aiohttp":
        # aiohttp's response is an async context manager: a coroutine of ours reads it
        return text(start_response, wait(aiohttp_get(aio.get(), os.environ["BACKEND_URL"] + query(environ, "path", "/"))))
    if path == "/httpx":
        response = wait(hx.get().get(os.environ["BACKEND_URL"] + query(environ, "path", "/")))
        return text(start_response, response.content)
    if path == "/ping":
        return text(start_response, "pong")
    return text(start_response, "not found", "404 Not Found")
