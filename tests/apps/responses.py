"""What a WSGI app returns, in the shapes plugins/tornado/response.c sends
itself (a list or tuple of bytes) and the ones it leaves to the python
plugin (tests/test_response.py).

  /chunks     a list of 1,000 numbered chunks
  /tuple      a tuple of bytes
  /shared     a module-level list of 8 x 256 KiB: every request returns the
              same object (the writes wait; other requests run meanwhile)
  /closing    a list subclass with close(): /closed says how often it was called
  /str-item   a list holding a str: not a WSGI body
"""
SHARED = [bytes([65 + i]) * (256 * 1024) for i in range(8)]
closed = 0


class Closing(list):
    def close(self):
        global closed
        closed += 1


def application(environ, start_response):
    path = environ["PATH_INFO"]
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
