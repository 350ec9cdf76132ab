"""The websocket echo of the Tornado talk, served two ways by one uWSGI:

- by the WSGI app with uWSGI's websocket API (http://127.0.0.1:9090/);
- by a Tornado WebSocketHandler on a socket the master binds and every
  worker shares (http://127.0.0.1:9091/).

Both serve static/echo.html, whose JavaScript is the client.

    .venv/bin/uwsgi --master --shared-socket 127.0.0.1:9091 --http-socket 127.0.0.1:9090 \
        --wsgi-file examples/websocket_echo.py --tornado 100 --greenlet
"""
import os

import tornado.web
import tornado.websocket
import uwsgi

from uwsgidecorators_ext import serve_shared_socket

ADDRESS = os.environ.get("TORNADO_SOCKET", "127.0.0.1:9091")
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "echo.html")


class PageHandler(tornado.web.RequestHandler):
    def get(self):
        with open(PAGE, "rb") as f:
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.write(f.read())


class EchoWebSocket(tornado.websocket.WebSocketHandler):
    def on_message(self, message):
        self.write_message("You said: " + message)


serve_shared_socket(tornado.web.Application([(r"/", PageHandler), (r"/websocket", EchoWebSocket)]), ADDRESS)


def application(environ, start_response):
    if environ["PATH_INFO"] == "/websocket":
        uwsgi.websocket_handshake(environ["HTTP_SEC_WEBSOCKET_KEY"], environ.get("HTTP_ORIGIN", ""))
        while True:
            try:
                message = uwsgi.websocket_recv()
            except OSError:  # the client went away
                return []
            uwsgi.websocket_send(b"You said: " + message)
    with open(PAGE, "rb") as f:
        body = f.read()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
