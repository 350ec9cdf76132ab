"""Quart under --tornado-asgi (tests/test_asgi_frameworks.py)."""
import asyncio

from quart import Quart, Response, request, websocket

app = Quart(__name__)
STATE = {}


@app.before_serving
async def startup():
    STATE["greeting"] = "hello from lifespan"


async def parts(template):
    for i in range(5):
        yield template.format(i).encode()
        await asyncio.sleep(0.01)


@app.route("/scope")
async def scope():
    return {"path": request.path, "query": request.query_string.decode(), "header": request.headers.get("X-Test")}


@app.route("/echo", methods=["POST"])
async def echo():
    return Response(await request.get_data(), mimetype="application/octet-stream")


@app.route("/stream")
async def stream():
    return parts("part {}\n"), 200, {"Content-Type": "text/plain"}


@app.route("/sse")
async def sse():
    return parts("data: event {}\n\n"), 200, {"Content-Type": "text/event-stream"}


@app.route("/status/<int:code>")
async def status(code):
    return f"status {code}", code


@app.route("/state")
async def state():
    return {"greeting": STATE["greeting"]}


@app.route("/sleep")
async def sleep():
    await asyncio.sleep(1)
    return "slept"


@app.websocket("/ws")
async def ws():
    while True:
        await websocket.send(await websocket.receive())
