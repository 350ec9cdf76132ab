"""An app for the worker lifecycle tests: uWSGI signals, atexit, slow,
blocking and allocating requests. Files to write come from the environment."""
import os
import time
from urllib.parse import parse_qs

import uwsgi
from uwsgidecorators import signal, timer

TIMER_LOG = os.environ.get("TIMER_LOG")
SIGNAL_LOG = os.environ.get("SIGNAL_LOG")
ATEXIT_FILE = os.environ.get("ATEXIT_FILE")
hoard = []


def append(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")


if TIMER_LOG:
    @timer(1, target="workers")
    def tick(signum):
        append(TIMER_LOG, "%d %.3f" % (os.getpid(), time.time()))


@signal(17, target="workers")
def slow_handler(signum):
    append(SIGNAL_LOG, "start %.3f" % time.time())
    uwsgi.async_sleep(0.5)
    append(SIGNAL_LOG, "end %.3f" % time.time())


@signal(18, target="workers")
def failing_handler(signum):
    raise RuntimeError("this signal handler fails on purpose")


def at_exit():
    if ATEXIT_FILE:
        append(ATEXIT_FILE, "atexit %d" % os.getpid())


uwsgi.atexit = at_exit


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = parse_qs(environ.get("QUERY_STRING", ""))
    seconds = float(q.get("s", ["1"])[0])
    if path == "/slow":
        uwsgi.async_sleep(seconds)
    elif path == "/block":
        time.sleep(seconds)
    elif path == "/alloc":
        hoard.append(bytearray(20 * 1024 * 1024))
    elif path == "/signal":
        uwsgi.signal(int(q["n"][0]))
    elif path == "/read":
        environ["wsgi.input"].read()
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
