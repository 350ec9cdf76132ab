"""A Tornado handler written in blocking style: @blocking runs it in a
greenlet, so it can wait() on a fetch and sleep() without callbacks and
without monkey-patching (what gevent + Tornado offered).

    .venv/bin/uwsgi --master --shared-socket 127.0.0.1:9091 --http-socket 127.0.0.1:9090 \
        --wsgi-file examples/blocking_handler.py --tornado 100 --greenlet
    curl http://127.0.0.1:9091/      # the Tornado handler: fetches :9090/services, waits, answers
"""
import os

import tornado.web
from tornado.httpclient import AsyncHTTPClient

from uwsgidecorators_ext import blocking, serve_shared_socket, sleep, wait

ADDRESS = os.environ.get("TORNADO_SOCKET", "127.0.0.1:9091")
BACKEND = os.environ.get("BACKEND_URL", "http://127.0.0.1:9090/services")


class FetchHandler(tornado.web.RequestHandler):
    @blocking
    def get(self):
        body = wait(AsyncHTTPClient().fetch(BACKEND)).body
        sleep(0.1)
        self.write(b"tornado handler got: " + body)


serve_shared_socket(tornado.web.Application([(r"/", FetchHandler)]), ADDRESS)


def application(environ, start_response):
    body = b"services"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
