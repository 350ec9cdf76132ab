"""The examples of the upstream tornado engine documentation, ported to
Tornado 6 (fetch() takes no callback any more: add_done_callback on its
Future). The backend URL comes from BACKEND_URL."""
import functools
import os
import time

import greenlet
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop

BACKEND = os.environ.get("BACKEND_URL", "http://127.0.0.1:9191")
CHAIN_SECONDS = float(os.environ.get("CHAIN_SECONDS", "2"))

# module level, as the docs do: with a preloaded app this runs in the master
io_loop = IOLoop.instance()
http_client = AsyncHTTPClient()


def handle_request(me, future):
    response = future.result()
    me.result = response.body
    me.switch()


def sleeper(me):
    me.switch()


def handle_request_then_wait(me, future):
    me.result = future.result().body
    me.timeout = io_loop.add_timeout(time.time() + CHAIN_SECONDS, functools.partial(sleeper, me))


def application(environ, start_response):
    me = greenlet.getcurrent()
    if environ["PATH_INFO"] == "/chain":
        future = http_client.fetch(BACKEND + "/services")
        future.add_done_callback(functools.partial(handle_request_then_wait, me))
        me.parent.switch()
        io_loop.remove_timeout(me.timeout)
    elif environ["PATH_INFO"] == "/pid":
        future = http_client.fetch(BACKEND + "/services")
        future.add_done_callback(functools.partial(handle_request, me))
        me.parent.switch()
        me.result += b" " + str(os.getpid()).encode()
    else:
        future = http_client.fetch(BACKEND + "/services")
        future.add_done_callback(functools.partial(handle_request, me))
        # suspend until an IOLoop event switches back
        me.parent.switch()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [me.result]
