"""What a WSGI app returns, in the shapes plugins/tornado/response.c sends
itself (a list or tuple of bytes) and the ones it leaves to the python
plugin (tests/test_response.py).

  /chunks     a list of 1,000 numbered chunks
  /tuple      a tuple of bytes
  /shared     a module-level list of 8 x 256 KiB: every request returns the
              same object (the writes wait; other requests run meanwhile)
  /closing    a list subclass with close(): /closed says how often it was called
  /str-item   a list holding a str: not a WSGI body
  /head/NAME  start_response called as HEADS[NAME] says (the response head
              the engine writes itself, or leaves to the python plugin)
"""
import sys
SHARED = [bytes([65 + i]) * (256 * 1024) for i in range(8)]
closed = 0


class Closing(list):
    def close(self):
        global closed
        closed += 1


def head_plain(start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Latin", "caf\xe9"), ("X-Empty", "")])


def head_many(start_response):
    start_response("201 Created", [(f"X-Header-{i}", "v" * i) for i in range(60)])


def head_code_only(start_response):
    start_response("404", [("Content-Type", "text/plain")])


def head_twice(start_response):
    start_response("200 OK", [("X-First", "1")])
    start_response("202 Accepted", [("X-Second", "2")])


def head_exc_info(start_response):
    try:
        raise ValueError("failed")
    except ValueError:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())


def head_not_latin1(start_response):
    start_response("200 OK", [("X-Euro", "\u20ac")])


def head_bytes_value(start_response):
    start_response("200 OK", [("X-Bytes", b"v")])


def head_tuple_of_headers(start_response):
    start_response("200 OK", (("X-Tuple", "v"),))


def head_list_subclass(start_response):
    class Headers(list):
        pass
    start_response("200 OK", Headers([("X-Sub", "v")]))


HEADS = {name[5:].replace("_", "-"): fn for name, fn in list(globals().items()) if name.startswith("head_")}


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/head/"):
        HEADS[path[6:]](start_response)
        return [b"body"]
    if path == "/chunks":
        body = [b"%04d," % i for i in range(1000)]
    elif path == "/tuple":
        body = (b"one,", b"two,", b"three")
    elif path == "/shared":
        body = SHARED
    elif path == "/closing":
        body = Closing([b"closing"])
    elif path == "/closed":
        body = [str(closed).encode()]
    elif path == "/str-item":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"bytes,", "str"]
    else:
        body = [b"Hello World"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(sum(map(len, body))))])
    return body
