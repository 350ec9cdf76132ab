"""The proxy workload's backend: a Tornado server answering 8 bytes."""
import asyncio
import sys

import tornado.web


class Services(tornado.web.RequestHandler):
    def get(self):
        self.write(b"services")


async def main(port):
    tornado.web.Application([(r"/", Services)]).listen(port, "127.0.0.1", backlog=4096)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1])))
    except KeyboardInterrupt:  # bench/run.py stops it with SIGINT
        pass
