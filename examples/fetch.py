"""Fetch with Tornado's AsyncHTTPClient from a WSGI app, two ways.

    .venv/bin/uwsgi --http-socket 127.0.0.1:9090 --wsgi-file examples/fetch.py --tornado 100 --greenlet
    curl http://127.0.0.1:9090/            # blocking style: wait()
    curl http://127.0.0.1:9090/callback    # the callback style of the upstream docs

The backend is BACKEND_URL, by default this same server's /services page,
so the example runs on its own.
"""
import functools
import os

import greenlet
from tornado.httpclient import AsyncHTTPClient

from uwsgidecorators_ext import wait



def backend(environ):
    """BACKEND_URL, or this very server's /services page."""
    return os.environ.get("BACKEND_URL") or "http://%s/services" % environ["HTTP_HOST"]


def handle_response(me, future):
    """Runs in the IOLoop when the fetch is done: back to the request."""
    me.result = future.result().body
    me.switch()


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/services":
        body = b"services"
    elif path == "/callback":
        me = greenlet.getcurrent()
        AsyncHTTPClient().fetch(backend(environ)).add_done_callback(functools.partial(handle_response, me))
        me.parent.switch()  # suspended until handle_response switches back
        body = me.result
    else:
        body = wait(AsyncHTTPClient().fetch(backend(environ))).body
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
