"""Sending what a WSGI app returned (plugins/tornado/response.c): a list or
tuple of bytes is sent in one go, everything else as the python plugin sends
it; the client sees the same either way (--tornado-stock-wsgi: the python
plugin's own)."""
from __future__ import annotations

import re

import pytest

import socket

from conftest import http_get, parallel, recv_all

OWN = {"engine": [], "stock": ["--tornado-stock-wsgi"]}


@pytest.mark.parametrize("which", OWN)
def test_a_list_of_many_chunks_arrives_whole_and_in_order(uwsgi, which):
    server = uwsgi("responses.py", *OWN[which])
    assert http_get(server.port, "/chunks") == (200, b"".join(b"%04d," % i for i in range(1000)))


@pytest.mark.parametrize("which", OWN)
def test_a_tuple_of_bytes_is_a_body(uwsgi, which):
    server = uwsgi("responses.py", *OWN[which])
    assert http_get(server.port, "/tuple") == (200, b"one,two,three")


@pytest.mark.parametrize("which", OWN)
def test_one_list_returned_to_concurrent_requests_reaches_each_whole(uwsgi, which):
    """8 x 256 KiB: the writes wait for the clients, other requests run and
    return the same list meanwhile."""
    server = uwsgi("responses.py", *OWN[which])
    expected = b"".join(bytes([65 + i]) * (256 * 1024) for i in range(8))
    results = parallel(lambda _: http_get(server.port, "/shared", timeout=30), 20)
    assert all(r == (200, expected) for r in results), [r if isinstance(r, Exception) else r[0] for r in results]


@pytest.mark.parametrize("which", OWN)
def test_a_list_subclass_has_its_close_called_once_per_response(uwsgi, which):
    server = uwsgi("responses.py", *OWN[which])
    for _ in range(3):
        assert http_get(server.port, "/closing") == (200, b"closing")
    assert http_get(server.port, "/closed") == (200, b"3")


def test_a_list_with_a_str_item_is_answered_as_the_python_plugin_answers_it(uwsgi):
    ours = uwsgi("responses.py")
    stock = uwsgi("responses.py", "--tornado-stock-wsgi")
    assert http_get(ours.port, "/str-item") == http_get(stock.port, "/str-item")
    assert "Unhandled object from iterator" in ours.log()


def test_a_list_response_is_sent_without_going_back_to_the_loop(uwsgi):
    """The python plugin returns to the loop twice per list (its iterator,
    then its one item): uWSGI's request log counts those switches."""
    logformat = ["--enable-logging", "--logformat", "switches=%(switches) uri=%(uri)"]
    ours = uwsgi("responses.py", *logformat)
    stock = uwsgi("responses.py", *logformat, "--tornado-stock-wsgi")
    for server in (ours, stock):
        assert http_get(server.port, "/hello") == (200, b"Hello World")
        server.wait_log("uri=/hello")
    assert re.findall(r"switches=(\d+) uri=/hello", ours.log()) == ["0"]
    assert re.findall(r"switches=(\d+) uri=/hello", stock.log()) == ["2"]


HEADS = ["plain", "many", "code-only", "twice", "exc-info", "not-latin1", "bytes-value", "tuple-of-headers",
         "list-subclass"]


def raw_get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return recv_all(s)


@pytest.mark.parametrize("socket_opt", ["--http-socket", "--http11-socket"])
def test_response_heads_are_the_python_plugins_byte_for_byte(uwsgi, socket_opt):
    """start_response called right, twice, with exc_info and wrong: the
    engine's start_response writes what the python plugin's would."""
    ours = uwsgi("responses.py", socket_opt=socket_opt)
    stock = uwsgi("responses.py", "--tornado-stock-wsgi", socket_opt=socket_opt)
    for name in HEADS:
        assert raw_get(ours.port, f"/head/{name}") == raw_get(stock.port, f"/head/{name}"), name
    plain = raw_get(ours.port, "/head/plain")
    assert plain.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Latin: caf\xe9\r\nX-Empty: \r\n")
    assert raw_get(ours.port, "/head/code-only").startswith(b"HTTP/1.1 404 Not Found\r\n")
    # the python plugin's own answer to a header it cannot encode: the status
    # line it had prepared, none of the headers (the app's TypeError is logged)
    assert b"X-Euro" not in raw_get(ours.port, "/head/not-latin1")
    assert "encodable in latin1" in ours.log()
