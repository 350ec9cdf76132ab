"""BlackSheep under --tornado-asgi (tests/test_asgi_frameworks.py)."""
import asyncio

from asgi_common import echo_text

from blacksheep import Application, Content, Request, Response, StreamedContent, WebSocket, WebSocketDisconnectError, json

app = Application()
STATE = {}


async def startup(application):
    STATE["greeting"] = "hello from lifespan"

app.on_start += startup


def parts(template):
    async def provider():
        for i in range(5):
            yield template.format(i).encode()
            await asyncio.sleep(0.01)
    return provider


@app.router.get("/scope")
async def scope(request: Request):
    header = request.get_first_header(b"x-test")
    return json({"path": request.url.path.decode(), "query": (request.url.query or b"").decode(),
                 "header": header.decode() if header else None})


@app.router.post("/echo")
async def echo(request: Request):
    return Response(200, content=Content(b"application/octet-stream", await request.read() or b""))


@app.router.get("/stream")
async def stream():
    return Response(200, content=StreamedContent(b"text/plain", parts("part {}\n")))


@app.router.get("/sse")
async def sse():
    return Response(200, content=StreamedContent(b"text/event-stream", parts("data: event {}\n\n")))


@app.router.get("/status/{int:code}")
async def status(code: int):
    return Response(code, content=Content(b"text/plain", f"status {code}".encode()))


@app.router.get("/state")
async def state():
    return json({"greeting": STATE["greeting"]})


@app.router.get("/sleep")
async def sleep():
    await asyncio.sleep(1)
    return Response(200, content=Content(b"text/plain", b"slept"))


@app.router.ws("/ws")
async def ws(websocket: WebSocket):
    await echo_text(websocket, WebSocketDisconnectError)
