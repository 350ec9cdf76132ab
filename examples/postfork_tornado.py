"""A Tornado application in every worker, on port BASE_PORT + worker id, next
to the WSGI app (the @postfork pattern of the upstream docs).

    .venv/bin/uwsgi --master --processes 2 --http-socket 127.0.0.1:9090 \
        --wsgi-file examples/postfork_tornado.py --tornado 100 --greenlet
    curl http://127.0.0.1:8001/ ; curl http://127.0.0.1:8002/   # Tornado, one port per worker
    curl http://127.0.0.1:9090/                                  # WSGI
"""
import os

import tornado.web

from uwsgidecorators_ext import serve_per_worker

BASE_PORT = int(os.environ.get("BASE_PORT", "8000"))


class MainHandler(tornado.web.RequestHandler):
    def get(self):
        self.write("Hello, world from Tornado in pid %d" % os.getpid())


serve_per_worker(tornado.web.Application([(r"/", MainHandler)]), BASE_PORT)


def application(environ, start_response):
    body = b"Hello from WSGI in pid %d" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
