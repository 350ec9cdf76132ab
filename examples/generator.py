"""A WSGI generator: every yield gives the other requests a turn.

    .venv/bin/uwsgi --http-socket 127.0.0.1:9090 --wsgi-file examples/generator.py --tornado 100 --greenlet
    curl http://127.0.0.1:9090/            # onetwothree
"""


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one"
    yield b"two"
    yield b"three"
