"""Starlette under --tornado-asgi (tests/test_asgi_frameworks.py)."""
import asyncio

from asgi_common import echo_text, parts
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect


@asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello from lifespan"}


async def scope(request):
    return JSONResponse({"path": request.url.path, "query": request.url.query, "header": request.headers.get("x-test")})


async def echo(request):
    return Response(await request.body(), media_type="application/octet-stream")


async def stream(request):
    return StreamingResponse(parts("part {}\n"), media_type="text/plain")


async def sse(request):
    return StreamingResponse(parts("data: event {}\n\n"), media_type="text/event-stream")


async def status(request):
    code = request.path_params["code"]
    return PlainTextResponse(f"status {code}", status_code=code)


async def state(request):
    return JSONResponse({"greeting": request.state.greeting})


async def sleep(request):
    await asyncio.sleep(1)
    return PlainTextResponse("slept")


async def ws(websocket):
    await echo_text(websocket, WebSocketDisconnect)


app = Starlette(lifespan=lifespan, routes=[
    Route("/scope", scope), Route("/echo", echo, methods=["POST"]), Route("/stream", stream),
    Route("/sse", sse), Route("/status/{code:int}", status), Route("/state", state), Route("/sleep", sleep),
    WebSocketRoute("/ws", ws),
])
