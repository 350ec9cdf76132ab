"""Hello world: the smallest WSGI app, served by the tornado loop engine.

    make run    # or: uwsgi --http-socket :9090 --wsgi-file examples/hello.py --tornado 100 --greenlet
"""


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [b"Hello World\n"]
