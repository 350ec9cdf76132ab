"""A raw ASGI 3 app for tests/test_asgi.py: each path shows one behaviour."""
import asyncio
import contextvars
import json
import os

import uwsgi

from uwsgidecorators_ext.asgi import run_blocking

REQUEST_VAR = contextvars.ContextVar("request_var", default=None)
startups = []
LEFT_BEHIND = []


async def body_of(receive):
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message["body"])
        if not message.get("more_body"):
            return b"".join(chunks), len(chunks)


async def respond(send, status, body, headers=()):
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if os.environ.get("ASGI_FAIL_STARTUP"):
                await send({"type": "lifespan.startup.failed", "message": "the database is not there"})
                return
            scope["state"]["started_by"] = os.getpid()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            path = os.environ.get("ASGI_SHUTDOWN_FILE")
            if path:
                with open(path, "a") as f:
                    f.write(f"shutdown {os.getpid()}\n")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def websocket(scope, receive, send):
    """/ws: an echo; "close <code>" closes with that code, "close-later"
    closes from another task while this one awaits receive(); /ws-deny
    refuses the connection; ?file=... records how the client left."""
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    if path == "/ws-deny":
        await send({"type": "websocket.close", "code": 1008})
        return
    chosen = "chat" if "chat" in scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": chosen, "headers": [(b"x-accepted", b"yes")]})
    record = scope["query_string"].decode()
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            if record:
                with open(record, "w") as f:
                    f.write(str(message["code"]))
            return
        text = message.get("text")
        if text is not None and text.startswith("close "):
            await send({"type": "websocket.close", "code": int(text.split()[1]), "reason": "asked"})
            return
        if text == "close-later":
            async def close_soon():
                await asyncio.sleep(0.2)
                await send({"type": "websocket.close", "code": 4001})
            closer = asyncio.ensure_future(close_soon())
            message = await receive()  # pending when the close goes out
            with open(record, "w") as f:
                f.write(f"{message['type']} {message.get('code')}")
            await closer
            return
        if text == "raise":
            raise RuntimeError("the websocket app failed on purpose")
        if text == "scope":
            await send({"type": "websocket.send", "text": json.dumps({"type": scope["type"], "scheme": scope["scheme"],
                        "path": scope["path"], "subprotocols": scope["subprotocols"]})})
            continue
        await send({"type": "websocket.send", **{k: v for k, v in message.items() if k in ("text", "bytes") and v is not None}})


async def greenlet_spawn(fn):
    """SQLAlchemy's greenlet_spawn, in short: fn runs in a greenlet whose
    parent is the caller's, and hands its awaitables to the caller."""
    import greenlet

    child = greenlet.greenlet(fn, greenlet.getcurrent())
    result = child.switch()
    while not child.dead:
        try:
            value = await result
        except BaseException as exc:  # noqa: BLE001 - handed to the child
            result = child.throw(exc)
        else:
            result = child.switch(value)
    return result


def await_only(awaitable):
    import greenlet

    return greenlet.getcurrent().parent.switch(awaitable)


async def fails_later(message):
    await asyncio.sleep(0.01)
    raise ValueError(message)


def blocking_style():
    got = await_only(asyncio.sleep(0.05, result="a"))
    try:
        await_only(fails_later("b"))
    except ValueError as exc:
        got += str(exc)
    return got + await_only(asyncio.sleep(0.01, result="c"))


def blocking_style_raising():
    await_only(asyncio.sleep(0.01))
    raise RuntimeError("d")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    if scope["type"] == "websocket":
        return await websocket(scope, receive, send)
    path = scope["path"][len(scope["root_path"]):]
    if path == "/hello":
        return await respond(send, 200, b"Hello, ASGI", [(b"content-type", b"text/plain")])
    if path.endswith("/scope"):
        shown = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string", "state", "asgi", "extensions")}
        shown["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        shown["raw_path"] = scope["raw_path"].decode("latin-1")
        shown["query_string"] = scope["query_string"].decode("latin-1")
        shown["state"] = scope["state"]
        shown["asgi"] = scope["asgi"]
        shown["extensions"] = list(scope.get("extensions", {}))
        shown["task"] = asyncio.current_task() is not None
        shown["loop"] = [cls.__module__ for cls in type(asyncio.get_running_loop()).__mro__]
        shown["context_was_fresh"] = REQUEST_VAR.get() is None
        REQUEST_VAR.set("set by this request")
        return await respond(send, 200, json.dumps(shown).encode(), [(b"content-type", b"application/json")])
    if path == "/echo":
        got = await body_of(receive)
        body, chunks = got
        return await respond(send, 200, body, [(b"x-chunks", str(chunks).encode())])
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(5):
            await send({"type": "http.response.body", "body": f"part {i}\n".encode(), "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/big":
        size = int(scope["query_string"] or b"1000000")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        block = b"x" * 65536
        sent = 0
        while sent < size:
            n = min(len(block), size - sent)
            await send({"type": "http.response.body", "body": block[:n], "more_body": True})
            sent += n
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/sleep":
        seconds = float(scope["query_string"].partition(b"=")[2] or b"1")  # /sleep?s=1
        await asyncio.sleep(seconds)
        return await respond(send, 200, b"slept")
    if path == "/status":
        code = int(scope["query_string"])
        return await respond(send, code, b"" if code in (204, 304) else f"status {code}".encode())
    if path == "/raise":
        raise ValueError("the app failed on purpose")
    if path == "/stuck":
        await asyncio.sleep(3600)
    if path == "/pathsend":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.pathsend", "path": scope["query_string"].decode()})
        return
    if path == "/disconnect":
        # an SSE-like stream that stops when the client leaves
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        message = await receive()
        assert message["type"] == "http.request"
        message = await receive()
        with open(scope["query_string"].decode(), "w") as f:
            f.write(message["type"])
        return
    if path == "/forever":
        # streams until send() fails: records what it raised
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
                await asyncio.sleep(0.001)
        except OSError as exc:
            with open(scope["query_string"].decode(), "w") as f:
                f.write(f"{type(exc).__name__} {isinstance(exc, OSError)}")
        return
    if path == "/as-tasks":
        # receive() and send() are coroutines for asyncio, as uvicorn's are
        got = await asyncio.create_task(receive())
        await asyncio.ensure_future(send({"type": "http.response.start", "status": 200, "headers": []}))
        await asyncio.create_task(send({"type": "http.response.body", "body": got["body"]}))
        return
    if path == "/late-send":
        # a task the app leaves behind sends after the response: what it
        # raised is recorded in the file of the query string
        async def late():
            await asyncio.sleep(0.3)
            try:
                await send({"type": "http.response.body", "body": b"late"})
                outcome = "sent"
            except Exception as exc:  # noqa: BLE001 - recorded for the test
                outcome = type(exc).__name__
            with open(scope["query_string"].decode(), "w") as f:
                f.write(outcome)
        LEFT_BEHIND.append(asyncio.get_running_loop().create_task(late()))
        return await respond(send, 200, b"answered")
    if path == "/send-and-receive":
        # a body write that waits for a slow reader, and a receive() asked
        # meanwhile: the core does them one after the other, in order
        await send({"type": "http.response.start", "status": 200, "headers": []})
        block = b"y" * 4_000_000
        _, got = await asyncio.gather(
            send({"type": "http.response.body", "body": block, "more_body": True}), body_of(receive))
        await send({"type": "http.response.body", "body": b"|got %d" % len(got[0])})
        return
    if path == "/first-step":
        # all in the Task's first step, which the engine runs in the core: a
        # write that waits for a slow reader, then the same Task and context
        task = asyncio.current_task()
        REQUEST_VAR.set("first-step")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"w" * 32_000_000, "more_body": True})
        same = asyncio.current_task() is task and REQUEST_VAR.get() == "first-step"
        await send({"type": "http.response.body", "body": b"|same task and context: %s" % str(same).encode()})
        return
    if path == "/greenlet-spawn":
        # greenlets started in the Task's first step (which runs in the
        # core) and driven from its later steps, as SQLAlchemy's asyncio does
        got = await greenlet_spawn(blocking_style)
        try:
            await greenlet_spawn(blocking_style_raising)
        except RuntimeError as exc:
            got += str(exc)
        return await respond(send, 200, got.encode())
    if path == "/cache":
        await run_blocking(uwsgi.cache_update, "k", b"cached value")
        value = await run_blocking(uwsgi.cache_get, "k")
        return await respond(send, 200, value)
    return await respond(send, 404, b"not found")
