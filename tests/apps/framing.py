"""Routes for the request-framing tests: none of them reads a body unless
its name says so, and /secret records every time it is served (the file
named by $SECRET_LOG), so a test can prove no smuggled request reached it."""
import os


def respond(start_response, body, status="200 OK", headers=()):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))] + list(headers))
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/secret":
        with open(os.environ["SECRET_LOG"], "a") as log:
            log.write("served\n")
        return respond(start_response, b"SECRET")
    if path == "/echo":
        body = environ["wsgi.input"].read()
        return respond(start_response, b"got " + body)
    if path == "/too-large":  # refuses an upload without reading it
        return respond(start_response, b"too large", "413 Payload Too Large")
    if path == "/no-content":  # a body the status forbids
        return respond(start_response, b"should never be sent", "204 No Content")
    if path == "/interim":  # an interim status as the final one
        return respond(start_response, b"should never be sent", "103 Early Hints")
    if path == "/not-modified":
        return respond(start_response, b"should never be sent", "304 Not Modified")
    if path == "/stream":  # a body without Content-Length, in pieces
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"one ", b"two"])
    return respond(start_response, b"public page")
