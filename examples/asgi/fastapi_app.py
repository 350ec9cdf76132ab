"""A FastAPI app served by uWSGI with the tornado loop engine. From the
repository root:

    .venv/bin/uwsgi --http11-socket 127.0.0.1:9090 --tornado 100 --greenlet \
        --pythonpath examples/asgi --tornado-asgi fastapi_app:app --cache2 name=visits,items=100

then ``curl http://127.0.0.1:9090/hello/you``, ``curl -N http://127.0.0.1:9090/ticks``
(a Server-Sent Events stream) and ``curl http://127.0.0.1:9090/visits``.

Each request is an asyncio Task on the worker's loop; uWSGI parses, logs,
counts (--stats), and --harakiri / --max-requests apply as for WSGI. The
lifespan runs in each worker before it accepts; ``run_blocking`` calls the
uWSGI cache (a blocking API) without freezing the loop.
"""
from __future__ import annotations

import asyncio
import os
import sys
from contextlib import asynccontextmanager
from typing import AsyncIterator

import uwsgi
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from uwsgidecorators_ext.asgi import run_blocking


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict]:
    # once per worker, after fork: what the requests share
    yield {"worker_pid": os.getpid()}


app = FastAPI(lifespan=lifespan)


@app.get("/hello/{name}")
async def hello(name: str, request: Request) -> dict:
    return {"hello": name, "worker_pid": request.state.worker_pid}


@app.get("/ticks")
async def ticks(count: int = 5) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        for i in range(count):
            yield f"data: tick {i}\n\n"
            await asyncio.sleep(0.2)
    return StreamingResponse(events(), media_type="text/event-stream")


def count_visit() -> int:
    """uWSGI's cache, shared by the workers (a blocking call)."""
    uwsgi.cache_inc("visits", 1, 0, "visits")
    return int.from_bytes(uwsgi.cache_get("visits", "visits"), sys.byteorder)


@app.get("/visits")
async def visits() -> dict:
    return {"visits": await run_blocking(count_visit)}
