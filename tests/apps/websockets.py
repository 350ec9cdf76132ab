"""Websocket routes for tests/test_websocket.py, on the uwsgi.websocket_* API."""
import sys
from urllib.parse import parse_qs

import uwsgi
from tornado.ioloop import IOLoop


def query(environ, name, default):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def refuse(start_response, exc):
    body = str(exc).encode()
    start_response("400 Bad Request", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def log(line):
    sys.stderr.write("app: %s\n" % line)
    sys.stderr.flush()


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    try:
        if path in ("/ws", "/push"):
            # uWSGI's own API only, as apps written for uWSGI call it
            uwsgi.websocket_handshake(environ["HTTP_SEC_WEBSOCKET_KEY"], environ.get("HTTP_ORIGIN", ""))
        else:
            proto = query(environ, "proto", None)
            uwsgi.websocket_handshake(proto=proto, headers=[("X-Engine", "tornado")])
    except OSError as exc:
        return refuse(start_response, exc)
    try:
        if path == "/ws":
            while True:
                uwsgi.websocket_send(uwsgi.websocket_recv())
        elif path == "/echo":
            # each message back with its kind (text or binary)
            while True:
                kind, payload = uwsgi.websocket_recv_message()
                if kind == "text":
                    uwsgi.websocket_send(payload)
                else:
                    uwsgi.websocket_send_binary(payload)
        elif path == "/close":
            # the first message, then the app closes with ?code= and ?reason=
            uwsgi.websocket_recv()
            uwsgi.websocket_close(int(query(environ, "code", "1000")), query(environ, "reason", ""))
            try:
                uwsgi.websocket_recv()
            except OSError:
                log("recv after close raised OSError")
        elif path == "/nb":
            # recv_nb() with nothing there, then a message the client sends
            first = uwsgi.websocket_recv_nb()
            uwsgi.websocket_send(b"nb gave %r" % first)
            while True:
                message = uwsgi.websocket_recv_nb()
                if message:
                    uwsgi.websocket_send(b"nb got " + message)
                    break
                uwsgi.async_sleep(0.05)
            uwsgi.websocket_recv()
        elif path == "/misuse":
            # ?what=: a misuse of the API; the exception's type goes back to the client
            what = query(environ, "what", "")
            result = []

            def attempt(fn, *args):
                try:
                    fn(*args)
                    result.append("no error")
                except Exception as exc:  # noqa: BLE001 - reported to the client
                    result.append(type(exc).__name__)

            if what == "outside":  # from an IOLoop callback, not the request's greenlet
                IOLoop.current().add_callback(attempt, uwsgi.websocket_send, b"from the loop")
                while not result:
                    uwsgi.async_sleep(0.01)
            elif what == "code":
                attempt(uwsgi.websocket_close, 1005)
            elif what == "reason":
                attempt(uwsgi.websocket_close, 1000, "x" * 124)
            elif what == "handshake-twice":
                attempt(uwsgi.websocket_handshake)
            uwsgi.websocket_send(result[0].encode())
            uwsgi.websocket_recv()
        elif path == "/push":
            # the app never reads: it sends a message every 0.2 s
            n = 0
            while True:
                uwsgi.websocket_send(b"push %d" % n)
                n += 1
                uwsgi.async_sleep(0.2)
    except OSError as exc:
        log("session over: %s" % exc)
    return []
