"""Pure Tornado HTTPServer with the same routes as wsgi_bench.py (keep-alive
is Tornado's default; `Connection: close` is sent where the uWSGI runs close)."""
import asyncio
import os
import sys

import tornado.web
import tornado.websocket
from tornado.httpclient import AsyncHTTPClient

BACKEND = os.environ.get("BACKEND_URL", "http://127.0.0.1:9191/")
HELLO = b"Hello World\n"
MIB = b"x" * (1024 * 1024)
AsyncHTTPClient.configure(None, max_clients=1000)


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Connection", "close")
        self.write(HELLO)


class KeepAlive(tornado.web.RequestHandler):
    def get(self):
        self.write(HELLO)


class Wait(tornado.web.RequestHandler):
    async def get(self):
        await asyncio.sleep(1.0)
        self.set_header("Connection", "close")
        self.write(HELLO)


class Io(tornado.web.RequestHandler):
    async def get(self):
        await asyncio.sleep(0.01)
        self.write(HELLO)


class Proxy(tornado.web.RequestHandler):
    async def get(self):
        response = await AsyncHTTPClient().fetch(BACKEND)
        self.set_header("Connection", "close")
        self.write(response.body)


class Mib(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Connection", "close")
        self.write(MIB)


class Echo(tornado.websocket.WebSocketHandler):
    def on_message(self, message):
        self.write_message(message, binary=isinstance(message, bytes))


async def main(port):
    app = tornado.web.Application([(r"/hello", Hello), (r"/ka", KeepAlive), (r"/wait", Wait), (r"/io", Io),
                                   (r"/proxy", Proxy), (r"/mib", Mib), (r"/ws", Echo)],
                                  websocket_max_message_size=1 << 20)
    app.listen(port, "127.0.0.1", backlog=4096)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
