"""A Tornado application on a socket the uWSGI master binds and every worker
inherits (--shared-socket): the way circus hands sockets to Tornado. The
kernel spreads the connections over the workers.

    .venv/bin/uwsgi --master --processes 2 --shared-socket 127.0.0.1:9091 \
        --http-socket 127.0.0.1:9090 --wsgi-file examples/shared_socket.py --tornado 100 --greenlet
    curl http://127.0.0.1:9091/      # Tornado, any worker
    curl http://127.0.0.1:9090/      # WSGI
"""
import os

import tornado.web

from uwsgidecorators_ext import serve_shared_socket

ADDRESS = os.environ.get("TORNADO_SOCKET", "127.0.0.1:9091")


class MainHandler(tornado.web.RequestHandler):
    def get(self):
        self.write("Hello from Tornado in pid %d" % os.getpid())


serve_shared_socket(tornado.web.Application([(r"/", MainHandler)]), ADDRESS)


def application(environ, start_response):
    body = b"Hello from WSGI in pid %d" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
