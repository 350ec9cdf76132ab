"""An app for the deployment tests (nginx in front, a subscription router
over several backends):

- /sleep?s=1   waits in the engine (uwsgi.async_sleep), then answers
- /pid         the worker's PID
- /name        the backend's name (BACKEND_NAME) and PID
- /nolength    a hello world without Content-Length

With REQUEST_LOG set, /sleep appends "start <id>" and "end <id>" (the id is
the query's `id`) so a test can tell which requests a backend held."""
import os
from urllib.parse import parse_qs

import uwsgi

NAME = os.environ.get("BACKEND_NAME", "backend")
REQUEST_LOG = os.environ.get("REQUEST_LOG")


def log(line):
    if REQUEST_LOG:
        with open(REQUEST_LOG, "a") as f:
            f.write(line + "\n")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/nolength":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello World\n"]
    if path == "/sleep":
        request_id = query.get("id", ["-"])[0]
        log("start " + request_id)
        uwsgi.async_sleep(float(query.get("s", ["1"])[0]))
        log("end " + request_id)
    body = ("%s %d" % (NAME, os.getpid()) if path in ("/name", "/sleep") else str(os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
