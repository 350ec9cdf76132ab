"""A fetch, then a timer: the "callback hell" example of the upstream docs,
next to the same thing with wait() and sleep().

    .venv/bin/uwsgi --http-socket 127.0.0.1:9090 --wsgi-file examples/chain.py --tornado 100 --greenlet
    curl http://127.0.0.1:9090/callback    # fetch, then add_timeout, then answer
    curl http://127.0.0.1:9090/            # the same in blocking style

CHAIN_SECONDS sets the timer (10 s in the docs, 2 s by default here);
BACKEND_URL the backend (by default this server's /services page).
"""
import functools
import os
import time

import greenlet
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop

from uwsgidecorators_ext import sleep, wait



def backend(environ):
    """BACKEND_URL, or this very server's /services page."""
    return os.environ.get("BACKEND_URL") or "http://%s/services" % environ["HTTP_HOST"]
SECONDS = float(os.environ.get("CHAIN_SECONDS", "2"))

io_loop = IOLoop.current()  # at import time, as the docs do: the worker's loop after fork


def sleeper(me):
    me.switch()


def handle_request(me, future):
    me.result = future.result().body
    # add another callback in the chain
    me.timeout = io_loop.add_timeout(time.time() + SECONDS, functools.partial(sleeper, me))


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/services":
        body = b"services"
    elif path == "/callback":
        me = greenlet.getcurrent()
        AsyncHTTPClient().fetch(backend(environ)).add_done_callback(functools.partial(handle_request, me))
        me.parent.switch()
        io_loop.remove_timeout(me.timeout)
        body = me.result
    else:
        body = wait(AsyncHTTPClient().fetch(backend(environ))).body
        sleep(SECONDS)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
