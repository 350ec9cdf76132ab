"""The environ the app was given, as JSON: every key with the name of its
value's type and the value itself where it is data (str, int, bool, None,
tuple), the name of the object otherwise; plus the request body read from
wsgi.input. tests/test_environ.py compares the engine's environ with the
python plugin's with it.

  /previous   whether this environ is the very dict of the previous request
              on this process, and what that one holds now (env behaviours)
"""
import json

previous = None


def describe(value):
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, tuple):
        return list(value)
    return getattr(value, "__name__", type(value).__qualname__)


def application(environ, start_response):
    global previous
    if environ["PATH_INFO"] == "/previous":
        doc = {"same_dict": environ is previous, "previous_keys": None if previous is None else sorted(previous)}
        previous = environ
    else:
        body = environ["wsgi.input"].read()
        doc = {"environ": {key: [type(key).__name__, type(value).__name__, describe(value)] for key, value in environ.items()},
               "body": body.decode("latin-1")}
    out = json.dumps(doc, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
