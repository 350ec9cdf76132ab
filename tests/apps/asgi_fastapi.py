"""FastAPI under --tornado-asgi (tests/test_asgi_frameworks.py): the same
endpoints in every framework's app."""
import asyncio

from asgi_common import echo_text, parts
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, Response, StreamingResponse


@asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello from lifespan"}


app = FastAPI(lifespan=lifespan)


@app.get("/scope")
async def scope(request: Request):
    return {"path": request.url.path, "query": request.url.query, "header": request.headers.get("x-test")}


@app.post("/echo")
async def echo(request: Request):
    return Response(await request.body(), media_type="application/octet-stream")


@app.get("/stream")
async def stream():
    return StreamingResponse(parts("part {}\n"), media_type="text/plain")


@app.get("/sse")
async def sse():
    return StreamingResponse(parts("data: event {}\n\n"), media_type="text/event-stream")


@app.get("/status/{code}")
async def status(code: int):
    return PlainTextResponse(f"status {code}", status_code=code)


@app.get("/state")
async def state(request: Request):
    return {"greeting": request.state.greeting}


@app.get("/sleep")
async def sleep():
    await asyncio.sleep(1)
    return PlainTextResponse("slept")


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await echo_text(websocket, WebSocketDisconnect)
