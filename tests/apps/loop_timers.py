"""The worker loop's call_at() and call_later() (tests/test_loop_timers.py):
each path runs one coroutine on the loop through the glue's wait() and
answers what it saw as JSON."""
import asyncio
import contextvars
import json
import math
import os
import weakref

from tornado.ioloop import IOLoop

from uwsgidecorators_ext import wait

var = contextvars.ContextVar("var", default="unset")


async def order():
    loop = asyncio.get_running_loop()
    seen = []
    done = loop.create_future()
    base = loop.time() + 0.05
    for name, offset in [("c", 0.02), ("a1", 0), ("b", 0.01), ("a2", 0), ("a3", 0)]:
        loop.call_at(base + offset, seen.append, name)
    loop.call_at(base + 0.03, done.set_result, None)
    await done
    return seen


async def cancel():
    loop = asyncio.get_running_loop()
    ran = []
    handle = loop.call_later(0.02, ran.append, "ran")
    handle.cancel()
    handle.cancel()
    await asyncio.sleep(0.06)
    return {"ran": ran, "cancelled": handle.cancelled()}


async def context():
    loop = asyncio.get_running_loop()
    var.set("request")
    own, empty = loop.create_future(), loop.create_future()
    loop.call_later(0.01, lambda: own.set_result(var.get()))
    loop.call_later(0.01, lambda: empty.set_result(var.get()), context=contextvars.Context())
    return [await own, await empty]


async def raises():
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    previous = loop.get_exception_handler()

    def handler(_loop, context):
        if not got.done():
            got.set_result([context["message"].split(" <")[0], repr(context["exception"])])
    loop.set_exception_handler(handler)
    try:
        def boom():
            raise ValueError("boom")
        loop.call_later(0.01, boom)
        after = loop.create_future()
        loop.call_later(0.02, after.set_result, "the next call ran")
        return await got + [await after]
    finally:
        loop.set_exception_handler(previous)


async def lateness():
    loop = asyncio.get_running_loop()
    late = []
    for delay in (0.001, 0.005, 0.02, 0.05):
        start = loop.time()
        loop.call_later(delay, lambda d=delay, t=start: late.append(loop.time() - t - d))
    await asyncio.sleep(0.15)
    return late


async def chain():
    loop = asyncio.get_running_loop()
    count = [0]
    done = loop.create_future()

    def again():
        count[0] += 1
        if count[0] == 200:
            done.set_result(None)
        else:
            loop.call_later(0, again)
    loop.call_later(0, again)
    await asyncio.wait_for(done, 10)
    return count[0]


async def timeouts():
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        await asyncio.wait_for(asyncio.sleep(5), 0.05)
        outcome = "no timeout"
    except asyncio.TimeoutError:
        outcome = "timeout"
    return [outcome, loop.time() - start]


async def tornado_timeouts():
    loop = asyncio.get_running_loop()
    io_loop = IOLoop.current()
    ran = []
    fired = loop.create_future()
    removed = io_loop.call_later(0.01, ran.append, "removed")
    io_loop.remove_timeout(removed)
    io_loop.call_later(0.02, fired.set_result, "fired")
    result = await fired
    await asyncio.sleep(0.02)
    return [result, ran]


async def handle_type():
    loop = asyncio.get_running_loop()
    handle = loop.call_later(1, print)
    handle.cancel()
    return f"{type(handle).__module__}.{type(handle).__name__}"


async def debug():
    loop = asyncio.get_running_loop()
    seen = [loop.get_debug()]
    loop.set_debug(True)
    seen.append(loop.get_debug())
    loop.set_debug(False)
    return seen + [loop.get_debug()]


async def forever():
    loop = asyncio.get_running_loop()
    ran = []
    loop.call_later(0.01, ran.append, "later")
    loop.call_at(0, ran.append, "at zero")
    start = loop.time()
    try:
        await asyncio.wait_for(asyncio.sleep(math.inf), 0.05)
        outcome = "returned"
    except asyncio.TimeoutError:
        outcome = "timeout"
    return [outcome, loop.time() - start >= 0.05, sorted(ran)]


async def class_method():
    loop = asyncio.get_running_loop()
    fired = loop.create_future()
    handle = asyncio.BaseEventLoop.call_later(loop, 0.01, fired.set_result, "fired")
    ref = weakref.ref(handle)
    return [await fired, ref() is handle, handle._source_traceback, handle._scheduled]


ROUTES = {"/order": order, "/cancel": cancel, "/context": context, "/raises": raises, "/lateness": lateness,
          "/chain": chain, "/timeouts": timeouts, "/tornado": tornado_timeouts, "/type": handle_type, "/debug": debug, "/forever": forever, "/class": class_method}


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/pid":
        body = str(os.getpid()).encode()
    else:
        body = json.dumps(wait(ROUTES[path]())).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
