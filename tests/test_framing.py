"""Strict request framing on the HTTP sockets the engine serves (README:
"What the engine refuses"): every request-smuggling attempt gets exactly one
response and never reaches /secret, responses that have no body send none,
100 Continue is sent when the app reads the body, and a connection is kept
alive only when its next byte starts a new request. Raw sockets throughout:
the bytes are the test."""
from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import time
from typing import Iterator

import pytest

from conftest import free_port, read_stats, recv_all, wait_stats

SECRET = b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n"  # 33 bytes, 0x21
assert len(SECRET) == 0x21
CHUNKED_SECRET = b"21\r\n" + SECRET + b"\r\n0\r\n\r\n"

# (id, request head, second packet, expected status): the second packet is
# a body that is itself a request for /secret, sent after a pause
SMUGGLING = [
    ("chunked-body-not-read", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", CHUNKED_SECRET, 200),
    ("content-length-and-transfer-encoding", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", CHUNKED_SECRET, 400),
    ("transfer-encoding-xchunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", CHUNKED_SECRET, 400),
    ("two-differing-content-lengths", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 33\r\n\r\n", SECRET, 400),
    ("merged-content-length-list", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 33\r\n\r\n", SECRET, 400),
    ("content-length-with-plus-sign", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +33\r\n\r\n", SECRET, 400),
    ("obs-fold-header-line", b"POST / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\nContent-Length: 33\r\n\r\n", SECRET, 400),
    ("bare-lf-before-content-length", b"POST / HTTP/1.1\r\nHost: x\r\nX-A: a\nContent-Length: 33\r\n\r\n", SECRET, 400),
    ("lines-ending-in-bare-lf", b"POST / HTTP/1.1\nHost: x\nContent-Length: 33\n\r\n\r\n", SECRET, 400),
    ("content-length-body-not-read", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 33\r\n\r\n", SECRET, 200),
    # uWSGI's parser keeps a leading HTAB in the value and reads "\t33" as 0
    ("tab-before-content-length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\t33\r\n\r\n", SECRET, 400),
]

# heads refused before the app runs: (id, head, status)
REFUSED = [
    ("transfer-encoding-in-http-1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("chunked-applied-twice", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("chunked-not-final", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("gzip-then-chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ("content-length-not-digits", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x21\r\n\r\n", 400),
    ("content-length-19-digits", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000000\r\n\r\n", 400),
    ("two-equal-content-lengths", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("space-before-colon", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 33\r\n\r\n", 400),
    ("nul-in-header-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    ("control-character-in-header-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400),
    ("bare-cr-in-header-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
    ("header-line-without-colon", b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
    ("http-1.1-without-host", b"GET / HTTP/1.1\r\nX-A: a\r\n\r\n", 400),
    ("http-1.1-with-two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("http-0.9-request-line", b"GET /\r\nHost: x\r\n\r\n", 400),
    ("unknown-protocol", b"GET / FOO/1.1\r\nHost: x\r\n\r\n", 400),
    ("http-2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("two-spaces-in-request-line", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("control-character-in-target", b"GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("unsupported-expectation", b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n", 417),
]


@pytest.fixture
def framing(uwsgi, tmp_path):
    """Start tests/apps/framing.py on the socket kind asked for; its .secret
    is the file /secret writes to each time it is served."""
    def start(socket_opt: str = "--http11-socket", *extra: str):
        secret = tmp_path / "secret.log"
        server = uwsgi("framing.py", *extra, socket_opt=socket_opt, env={"SECRET_LOG": str(secret)})
        server.secret = secret
        return server
    return start


def exchange(port: int, *packets: bytes, pause: float = 0.2, timeout: float = 5, idle: float | None = None) -> bytes:
    """Send each packet (a pause between them, as separate TCP segments) on
    one connection, then read until the server closes it (or, with `idle`,
    until it has sent nothing for that many seconds: a proxy keeps its
    client connections open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        for i, packet in enumerate(packets):
            if i:
                time.sleep(pause)
            try:
                s.sendall(packet)
            except OSError:
                break  # the server closed already: what it sent is read below
        if idle is None:
            return recv_all(s)
        s.settimeout(idle)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return data


def responses(data: bytes) -> list[bytes]:
    """The status lines in what the server sent."""
    return re.findall(rb"(?:^|\r\n)(HTTP/1\.[01] \d{3} [^\r\n]*)", data)


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def secret_served(server) -> bool:
    return server.secret.exists()


# ---- request smuggling ----

@pytest.mark.parametrize("socket_opt", ["--http11-socket", "--http-socket"])
@pytest.mark.parametrize("head, body, status", [case[1:] for case in SMUGGLING], ids=[case[0] for case in SMUGGLING])
def test_a_smuggled_request_in_the_body_is_never_served(framing, socket_opt, head, body, status):
    server = framing(socket_opt)
    data = exchange(server.port, head, body)
    assert len(responses(data)) == 1, data
    assert status_of(data) == status, data
    assert b"SECRET" not in data
    assert not secret_served(server)


def test_a_refused_head_is_answered_once_and_the_connection_closed(framing):
    server = framing()
    data = exchange(server.port, SMUGGLING[1][1], SMUGGLING[1][2])
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data
    assert b"\r\nConnection: close" in head
    assert body == b"Transfer-Encoding together with Content-Length (RFC 9112 6.1)\n"


def test_the_client_protocol_token_is_never_echoed_as_the_status_line(framing):
    server = framing("--http-socket")
    data = exchange(server.port, b"GET / HTTP/1.1\nHost: x\nX-Injected: yes\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data
    assert b"X-Injected" not in data


@pytest.mark.parametrize("head, status", [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_an_invalid_head_is_refused_before_the_app(framing, head, status):
    server = framing()
    data = exchange(server.port, head, SECRET)
    assert len(responses(data)) == 1, data
    assert status_of(data) == status, data
    assert b"public page" not in data


def test_a_head_larger_than_the_buffer_is_431(framing):
    server = framing("--http11-socket", "--buffer-size", "4096")
    data = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
    assert status_of(data) == 431, data


def test_a_head_filling_the_buffer_up_to_its_last_cr_lf_cr_is_431(framing):
    server = framing("--http11-socket", "--buffer-size", "4096")
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
    head += b"a" * (4096 - len(head) - 3) + b"\r\n\r"
    data = exchange(server.port, head, b"\nmore")
    assert status_of(data) == 431, data


def test_a_head_cut_after_cr_lf_cr_that_times_out_does_not_keep_the_connection(framing):
    """uWSGI's own close takes such a head for complete: the connection must
    not wait for a next request, where S would be served."""
    server = framing("--http11-socket", "--tornado-head-timeout", "1")
    data = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r", SECRET, pause=1.6)
    assert b"SECRET" not in data
    assert not secret_served(server)


@contextlib.contextmanager
def connections(port: int, count: int, head: bytes) -> Iterator[list[socket.socket]]:
    """`count` connections that each sent `head` and stay open until the end
    of the block."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(head)
            opened.append(s)
        yield opened
    finally:
        for s in opened:
            s.close()


def test_a_shed_head_cut_after_cr_lf_cr_does_not_keep_the_connection(framing):
    server = framing("--http11-socket", "--tornado", "4")
    with connections(server.port, 4, b"GET / HTTP/1.1\r\nHost: x\r\n\r") as cut:
        time.sleep(0.3)
        # a fifth connection sheds the oldest cut one
        assert exchange(server.port, b"GET / HTTP/1.0\r\n\r\n").endswith(b"public page")
        for s in cut:
            try:
                s.sendall(SECRET)
            except OSError:
                pass
        time.sleep(0.3)
        assert not secret_served(server)


def test_lingering_connections_hold_no_core(framing):
    """Refused connections that stay open while the engine lingers on them
    (RFC 9112 9.6) do not keep a 4-core worker from answering."""
    server = framing("--http11-socket", "--tornado", "4")
    with connections(server.port, 8, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n") as held:
        for s in held:
            assert s.recv(4096).startswith(b"HTTP/1.1 400")
        started = time.monotonic()
        assert exchange(server.port, b"GET / HTTP/1.0\r\n\r\n").endswith(b"public page")
        assert time.monotonic() - started < 0.5


def test_a_proxy_protocol_line_is_refused_after_the_first_request(framing):
    server = framing("--http11-socket", "--enable-proxy-protocol")
    data = exchange(server.port, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"PROXY TCP4 9.9.9.9 5.6.7.8 1 2\r\nGET /secret HTTP/1.1\r\nHost: x\r\n\r\n")
    assert responses(data)[:1] == [b"HTTP/1.1 200 OK"], data
    assert not secret_served(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, rest = read_response(s)
        while len(rest) < len(b"public page"):
            rest += s.recv(4096)
        s.sendall(b"PROXY TCP4 9.9.9.9 5.6.7.8 1 2\r\nGET /secret HTTP/1.1\r\nHost: x\r\n\r\n")
        data = recv_all(s)
    assert data.startswith(b"HTTP/1.1 400"), data
    assert b"PROXY protocol line after the first request" in data
    assert not secret_served(server)


def test_a_refused_head_followed_by_a_large_body_still_reaches_the_client(framing):
    """Lingering close: the response is not lost to a TCP reset while the
    client is still sending (RFC 9112 9.6)."""
    server = framing()
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n"
    data = exchange(server.port, head, b"x" * 300_000)
    assert status_of(data) == 400, data


def test_refused_heads_are_counted_and_their_log_is_bounded(framing):
    stats_port = free_port()
    server = framing("--http11-socket", "--enable-metrics", "--stats", f"127.0.0.1:{stats_port}", "--master")
    for _ in range(40):
        exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
    stats = wait_stats(stats_port, lambda s: s["metrics"]["worker.1.tornado.http_rejected"]["value"] >= 40)
    assert stats["metrics"]["worker.1.tornado.http_rejected"]["value"] == 40
    lines = server.log().count("400 Bad Request to 127.0.0.1: invalid Content-Length")
    # at most ten lines a second per worker; 40 connections take well under 4 s
    assert 10 <= lines < 40, server.log()


def test_https_socket_refuses_an_ambiguous_head(framing, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    port = free_port()
    server = framing(None, "--https-socket", f"127.0.0.1:{port},{cert},{key}")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as s:
        s.sendall(SMUGGLING[1][1] + SMUGGLING[1][2])
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ssl.SSLError, OSError):
                break
            if not chunk:
                break
            data += chunk
    assert status_of(data) == 400, data
    assert not secret_served(server)


# ---- keep-alive: only when the next byte starts a new request ----

def test_a_body_read_to_its_end_keeps_the_connection_alive(framing):
    server = framing()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        for word in (b"first", b"second"):
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(word), word))
            data = b""
            while not data.endswith(b"got " + word):
                chunk = s.recv(4096)
                assert chunk, data
                data += chunk
            assert b"Connection: close" not in data


def test_a_body_the_app_did_not_read_closes_the_connection_with_connection_close(framing):
    server = framing()
    data = exchange(server.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(responses(data)) == 1, data
    assert b"\r\nConnection: close\r\n" in data


def test_pipelined_requests_get_one_response_saying_connection_close(framing):
    server = framing()
    data = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /secret HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(responses(data)) == 1, data
    assert b"\r\nConnection: close\r\n" in data
    assert not secret_served(server)


def test_a_websocket_session_that_ends_closes_its_connection(uwsgi):
    server = uwsgi("basic.py", socket_opt="--http11-socket")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        s.sendall(bytes([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE8 ^ 2]))  # masked close, code 1000
        time.sleep(0.3)
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass
        rest = recv_all(s)
    assert b"HTTP/1.1 200" not in rest, rest


# ---- responses without a body ----

def read_response(s: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes]:
    """One response head from s (and what came after it, up to now)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def test_an_interim_status_as_the_final_response_closes_the_connection(framing):
    server = framing()
    data = exchange(server.port, b"GET /interim HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert responses(data) == [b"HTTP/1.1 103 Early Hints"], data
    assert b"should never be sent" not in data


@pytest.mark.parametrize("request_line, status", [
    (b"HEAD / HTTP/1.1", 200),
    (b"HEAD /stream HTTP/1.1", 200),
    (b"GET /no-content HTTP/1.1", 204),
    (b"GET /not-modified HTTP/1.1", 304),
], ids=["head", "head-of-a-streamed-response", "204", "304"])
def test_a_response_without_a_body_sends_none_and_keeps_the_connection(framing, request_line, status):
    server = framing()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(request_line + b"\r\nHost: x\r\n\r\n")
        head, rest = read_response(s)
        assert status_of(head) == status, head
        time.sleep(0.3)  # a body, if any were sent, would be here by now
        s.setblocking(False)
        try:
            rest += s.recv(4096)
        except BlockingIOError:
            pass
        s.setblocking(True)
        assert rest == b"", (head, rest)
        assert b"Connection: close" not in head
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, rest = read_response(s)
        while len(rest) < len(b"public page"):
            rest += s.recv(4096)
        assert status_of(head) == 200 and rest == b"public page", (head, rest)


def test_a_head_response_keeps_the_apps_content_length(framing):
    server = framing()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = read_response(s)
    assert b"Content-Length: 11" in head


# ---- Expect: 100-continue ----

@pytest.mark.parametrize("socket_opt", ["--http11-socket", "--http-socket"])
def test_100_continue_is_sent_when_the_app_reads_the_body(framing, socket_opt):
    server = framing(socket_opt)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        s.settimeout(2)
        interim = s.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        s.sendall(b"hello")
        head, rest = read_response(s)
        while not rest.endswith(b"got hello"):
            chunk = s.recv(4096)
            assert chunk, rest
            rest += chunk
    assert status_of(head) == 200


def test_100_continue_is_not_sent_when_the_app_answers_without_reading(framing):
    server = framing()
    data = exchange(server.port, b"POST /too-large HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100000000\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 413"), data
    assert b"100 Continue" not in data
    assert b"\r\nConnection: close\r\n" in data


def test_100_continue_is_not_sent_when_the_body_came_with_the_head(framing):
    server = framing()
    data = exchange(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n"
                                 b"Connection: close\r\n\r\nhello")
    assert data.startswith(b"HTTP/1.1 200"), data
    assert data.endswith(b"got hello")


def test_curl_upload_with_expect_does_not_wait_a_second(framing, tmp_path):
    server = framing()
    upload = tmp_path / "upload"
    upload.write_bytes(b"u" * 2_000_000)  # curl sends Expect: 100-continue above 1 MiB
    started = time.monotonic()
    out = subprocess.run(["curl", "-sS", "--data-binary", f"@{upload}", f"http://127.0.0.1:{server.port}/echo"],
                         capture_output=True, timeout=30, check=True).stdout
    elapsed = time.monotonic() - started
    assert out == b"got " + upload.read_bytes()
    assert elapsed < 0.9, elapsed  # curl's own wait for a 100 that never comes is 1 s
