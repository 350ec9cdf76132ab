"""The WSGI side of `make bench`: one app, one route per workload, written in
each engine's own idiom where the workload needs waiting (ENGINE says which).

  /hello   12 bytes, Connection: close (uWSGI's --http-socket closes anyway)
  /ka      12 bytes for the keep-alive runs (--http11-socket)
  /wait    waits 1 s on the event loop (C10K)
  /io      waits 10 ms, keep-alive: a request doing a little blocking-style I/O
  /proxy   awaits an AsyncHTTPClient fetch from BACKEND_URL
  /mib     a 1 MiB response
  /ws      a websocket echo through uWSGI's websocket API (ours: the
           engine's RFC 6455; gevent: uWSGI's own), bench/websocket.py
"""
import functools
import os

# tornado (ours), upstream, gevent (uWSGI's), async, ugreen, sync; threads
# (Granian: each request in a blocking thread) and patched (gunicorn -k gevent,
# which monkey-patches time.sleep) wait with time.sleep
ENGINE = os.environ.get("ENGINE", "tornado")
BACKEND = os.environ.get("BACKEND_URL", "http://127.0.0.1:9191/")
HELLO = b"Hello World\n"
MIB = b"x" * (1024 * 1024)

if ENGINE in ("tornado", "upstream"):
    import greenlet
    from tornado.httpclient import AsyncHTTPClient
    from tornado.ioloop import IOLoop

    AsyncHTTPClient.configure(None, max_clients=1000)
if ENGINE == "tornado":
    from uwsgidecorators_ext import sleep as ext_sleep, wait
if ENGINE == "gevent":
    import gevent
if ENGINE in ("async", "ugreen"):
    import uwsgi
if ENGINE in ("threads", "patched"):
    import time


def _on_fetch(me, future):
    me.result = future.result().body
    me.switch()


def _wake(me):
    me.switch()


def wait_seconds(seconds):
    if ENGINE == "tornado":
        ext_sleep(seconds)
    elif ENGINE == "upstream":
        # the upstream docs' pattern: a timer on the IOLoop, switch back from it
        me = greenlet.getcurrent()
        handle = IOLoop.current().call_later(seconds, _wake, me)
        me.parent.switch()
        IOLoop.current().remove_timeout(handle)
    elif ENGINE == "gevent":
        gevent.sleep(seconds)
    elif ENGINE in ("threads", "patched"):
        time.sleep(seconds)


def fetch():
    if ENGINE == "tornado":
        return wait(AsyncHTTPClient().fetch(BACKEND)).body
    me = greenlet.getcurrent()  # upstream: the callback pattern of its docs
    AsyncHTTPClient().fetch(BACKEND).add_done_callback(functools.partial(_on_fetch, me))
    me.parent.switch()
    return me.result


def respond(start_response, body, close=True):
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    if close:
        headers.append(("Connection", "close"))
    start_response("200 OK", headers)
    return [body]


def websocket_echo(environ):
    import uwsgi
    uwsgi.websocket_handshake(environ["HTTP_SEC_WEBSOCKET_KEY"], environ.get("HTTP_ORIGIN", ""))
    try:
        while True:
            uwsgi.websocket_send(uwsgi.websocket_recv())
    except OSError:  # the client closed
        return []


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/ws":
        return websocket_echo(environ)
    if path == "/ka":
        return respond(start_response, HELLO, close=False)
    if path == "/io":
        wait_seconds(0.01)
        return respond(start_response, HELLO, close=False)
    if path == "/mib":
        return respond(start_response, MIB)
    if path == "/proxy":
        return respond(start_response, fetch())
    if path == "/wait":
        if ENGINE in ("async", "ugreen"):
            return uwsgi_async_wait(start_response)
        wait_seconds(1.0)
        return respond(start_response, HELLO, close=environ.get("QUERY_STRING") != "ka")
    return respond(start_response, HELLO)


def uwsgi_async_wait(start_response):
    # uWSGI's own async API: register the timeout, yield to the loop
    yield uwsgi.async_sleep(1)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12"), ("Connection", "close")])
    yield HELLO
