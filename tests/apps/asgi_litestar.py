"""Litestar under --tornado-asgi (tests/test_asgi_frameworks.py)."""
import asyncio

from asgi_common import echo_text, parts
from contextlib import asynccontextmanager

from litestar import Litestar, Request, Response, WebSocket, get, post, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.response import Stream


@asynccontextmanager
async def lifespan(app):
    app.state.greeting = "hello from lifespan"
    yield


@get("/scope")
async def scope(request: Request) -> dict:
    return {"path": request.url.path, "query": request.url.query, "header": request.headers.get("x-test")}


@post("/echo", status_code=200)
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


@get("/stream")
async def stream() -> Stream:
    return Stream(parts("part {}\n"), media_type="text/plain")


@get("/sse")
async def sse() -> Stream:
    return Stream(parts("data: event {}\n\n"), media_type="text/event-stream")


@get("/status/{code:int}")
async def status(code: int) -> Response:
    return Response(f"status {code}", status_code=code, media_type="text/plain")


@get("/state")
async def state(request: Request) -> dict:
    return {"greeting": request.app.state.greeting}


@get("/sleep", media_type="text/plain")
async def sleep() -> str:
    await asyncio.sleep(1)
    return "slept"


@websocket("/ws")
async def ws(socket: WebSocket) -> None:
    await echo_text(socket, WebSocketDisconnect)


app = Litestar(route_handlers=[scope, echo, stream, sse, status, state, sleep, ws], lifespan=[lifespan])
