"""The engine's own websockets (RFC 6455) behind uWSGI's uwsgi.websocket_* API:
real uWSGI, real sockets. Hostile input goes through a raw socket client
(RawWebSocket), well-behaved traffic through websocket-client."""
from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import struct
import threading
import time

import pytest
import websocket  # websocket-client

from conftest import http_get, wait_port

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawWebSocket:
    """A websocket client that sends whatever frames a test asks for."""

    def __init__(self, port: int, path: str = "/ws", headers: str = "", timeout: float = 10,
                 sock: socket.socket | None = None) -> None:
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"{headers}\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        if self.status == 101:
            expected = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            assert self.headers["sec-websocket-accept"] == expected

    def send_frame(self, opcode: int, payload: bytes = b"", fin: bool = True, masked: bool = True,
                   rsv: int = 0, length: int | None = None) -> None:
        n = len(payload) if length is None else length
        first = (0x80 if fin else 0) | (rsv << 4) | opcode
        if n < 126:
            head = struct.pack("!BB", first, (0x80 if masked else 0) | n)
        elif n <= 0xFFFF:
            head = struct.pack("!BBH", first, (0x80 if masked else 0) | 126, n)
        else:
            head = struct.pack("!BBQ", first, (0x80 if masked else 0) | 127, n)
        if masked:
            mask = os.urandom(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            head += mask
        self.sock.sendall(head + payload)

    def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        self.send_frame(0x8, b"" if code is None else struct.pack("!H", code) + reason)

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def recv_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._read(2)
        assert not b1 & 0x80, "a server frame is masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        return bool(b0 & 0x80), b0 & 0x0F, self._read(n)

    def recv_message(self) -> tuple[int, bytes]:
        """The next data message (fragments joined); pings are answered."""
        opcode, parts = None, []
        while True:
            fin, op, payload = self.recv_frame()
            if op == 0x9:
                self.send_frame(0xA, payload)
                continue
            if op == 0x8:
                raise ConnectionError(f"close frame {payload!r}")
            opcode = op if opcode is None else opcode
            parts.append(payload)
            if fin:
                return opcode, b"".join(parts)

    def recv_close(self) -> tuple[int | None, bytes]:
        """Frames until the close frame: (code, reason)."""
        while True:
            fin, op, payload = self.recv_frame()
            if op == 0x8:
                if not payload:
                    return None, b""
                return struct.unpack("!H", payload[:2])[0], payload[2:]

    def at_eof(self, timeout: float = 5) -> bool:
        """The server closed the connection (within `timeout`)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b"" and not self.buf
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


STARTED: list = []


@pytest.fixture(autouse=True)
def no_sanitizer_report():
    """Under make test-debug a worker that hits an AddressSanitizer report
    dies: fail the test even when the client did not notice."""
    STARTED.clear()
    yield
    for server in STARTED:
        assert "ERROR: AddressSanitizer" not in server.log(), server.log()[-5000:]


def start(uwsgi, *extra, **kwargs):
    server = uwsgi("websockets.py", *extra, **kwargs)
    STARTED.append(server)
    return server


def worker_alive_and_same(server, pid: int) -> bool:
    return server.proc.poll() is None and server.worker_pids() == [pid] and http_get(server.port, "/") == (200, b"ok")


# ---- the crash of uWSGI's shared continuation buffer ----

def test_two_clients_interleaving_fragmented_messages_each_get_their_own_message_back(uwsgi):
    server = start(uwsgi)
    pid = server.worker_pids()[0]
    a, b = RawWebSocket(server.port), RawWebSocket(server.port)
    for round_ in range(5):
        a.send_frame(0x1, b"A%d-first " % round_, fin=False)
        b.send_frame(0x1, b"B%d-first " % round_, fin=False)
        a.send_frame(0x0, b"A%d-second " % round_, fin=False)
        b.send_frame(0x0, b"B%d-second" % round_, fin=True)
        a.send_frame(0x0, b"A%d-third" % round_, fin=True)
        assert a.recv_message() == (0x1, b"A%d-first A%d-second A%d-third" % (round_, round_, round_))
        assert b.recv_message() == (0x1, b"B%d-first B%d-second" % (round_, round_))
    a.close()
    b.close()
    assert worker_alive_and_same(server, pid)


def test_twenty_clients_interleaving_fragmented_messages_keep_the_worker(uwsgi):
    server = start(uwsgi)
    pid = server.worker_pids()[0]
    clients = [RawWebSocket(server.port) for _ in range(20)]
    for i, c in enumerate(clients):
        c.send_frame(0x1, b"%d" % i * 1000, fin=False)
    for i, c in enumerate(clients):
        c.send_frame(0x0, b"%d" % (i + 100) * 3000, fin=True)
    for i, c in enumerate(clients):
        assert c.recv_message() == (0x1, b"%d" % i * 1000 + b"%d" % (i + 100) * 3000)
        c.close()
    assert worker_alive_and_same(server, pid)


# ---- messages ----

def test_fragmented_message_with_a_ping_between_its_fragments_is_reassembled(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port)
    ws.send_frame(0x1, b"Hello, ", fin=False)
    ws.send_frame(0x9, b"in the middle")
    ws.send_frame(0x0, b"fragmented ", fin=False)
    ws.send_frame(0x0, b"world", fin=True)
    assert ws.recv_frame() == (True, 0xA, b"in the middle")
    assert ws.recv_frame() == (True, 0x1, b"Hello, fragmented world")


def test_ping_is_answered_with_a_pong_of_the_same_payload(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port)
    payload = os.urandom(125)
    ws.send_frame(0x9, payload)
    assert ws.recv_frame() == (True, 0xA, payload)


def test_text_and_binary_messages_come_back_as_they_were_sent(uwsgi):
    server = start(uwsgi)
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/echo", timeout=10)
    ws.send("text é")
    ws.send_binary(b"\x00\xffbinary")
    assert ws.recv_data() == (websocket.ABNF.OPCODE_TEXT, "text é".encode())
    assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, b"\x00\xffbinary")
    ws.close()


def test_a_1_mib_message_goes_both_ways(uwsgi):
    server = start(uwsgi)
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/echo", timeout=10)
    payload = os.urandom(1024 * 1024 - 16)
    ws.send_binary(payload)
    assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, payload)
    ws.close()


def test_utf8_sequence_split_across_fragments_is_valid_text(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port)
    text = "κόσμε €𝄞".encode()
    ws.send_frame(0x1, text[:2], fin=False)   # the first character's 2 bytes...
    ws.send_frame(0x0, text[2:3], fin=False)  # ...the second split in the middle
    ws.send_frame(0x0, text[3:], fin=True)
    assert ws.recv_message() == (0x1, text)


def test_text_message_is_delivered_as_its_utf8_bytes_through_recv(uwsgi):
    server = start(uwsgi)
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws", timeout=10)
    ws.send("κόσμε")
    assert ws.recv() == "κόσμε"
    ws.close()


def test_recv_nb_returns_empty_bytes_when_nothing_arrived(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port, "/nb")
    assert ws.recv_message() == (0x1, b"nb gave b''")
    ws.send_frame(0x1, b"later")
    assert ws.recv_message() == (0x1, b"nb got later")


# ---- protocol errors close with the RFC's code ----

def test_invalid_utf8_in_a_text_message_closes_with_1007(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port)
    ws.send_frame(0x1, b"valid, then \xed\xa0\x80 (a surrogate)")
    assert ws.recv_close()[0] == 1007
    assert ws.at_eof()
    assert "not UTF-8: closing with 1007" in server.log()


def test_text_message_ending_inside_a_utf8_sequence_closes_with_1007(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port)
    ws.send_frame(0x1, "€".encode()[:2])
    assert ws.recv_close()[0] == 1007


def test_unmasked_client_frame_closes_with_1002(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port)
    ws.send_frame(0x1, b"not masked", masked=False)
    assert ws.recv_close()[0] == 1002
    assert ws.at_eof()


@pytest.mark.parametrize("frames", [
    [dict(opcode=0x1, payload=b"x", rsv=4)],
    [dict(opcode=0x3, payload=b"x")],
    [dict(opcode=0xB, payload=b"x")],
    [dict(opcode=0x9, payload=b"x" * 126)],
    [dict(opcode=0x9, payload=b"x", fin=False)],
    [dict(opcode=0x0, payload=b"x")],
    [dict(opcode=0x1, payload=b"x", fin=False), dict(opcode=0x1, payload=b"y")],
    [dict(opcode=0x8, payload=b"\x03")],
    [dict(opcode=0x8, payload=struct.pack("!H", 1005))],
    [dict(opcode=0x8, payload=struct.pack("!H", 999))],
    [dict(opcode=0x8, payload=struct.pack("!H", 2000))],
    [dict(opcode=0x8, payload=struct.pack("!H", 1000) + b"\xff")],
], ids=["rsv-bits", "reserved-data-opcode", "reserved-control-opcode", "control-frame-over-125-bytes",
        "fragmented-control-frame", "continuation-without-a-message", "new-message-inside-a-fragmented-one",
        "1-byte-close-payload", "close-code-1005", "close-code-999", "close-code-2000",
        "close-reason-not-utf8"])
def test_protocol_violation_closes_with_1002(uwsgi, frames):
    server = start(uwsgi)
    ws = RawWebSocket(server.port)
    for frame in frames:
        ws.send_frame(**frame)
    assert ws.recv_close()[0] == 1002
    assert ws.at_eof()


def test_message_over_websocket_max_size_closes_with_1009(uwsgi):
    server = start(uwsgi, "--websocket-max-size", "4")  # KiB
    ws = RawWebSocket(server.port, "/echo")
    ws.send_frame(0x2, b"x" * 4096)  # exactly the limit: echoed
    assert ws.recv_message() == (0x2, b"x" * 4096)
    ws.send_frame(0x2, b"x" * 3000, fin=False)
    ws.send_frame(0x0, b"x" * 1097, fin=True)  # 4097 bytes in all
    assert ws.recv_close()[0] == 1009
    assert ws.at_eof()


def test_announced_frame_over_the_limit_closes_with_1009_before_its_payload(uwsgi):
    server = start(uwsgi, "--websocket-max-size", "1")
    ws = RawWebSocket(server.port)
    ws.send_frame(0x2, b"", length=1 << 40)  # 1 TiB announced, nothing sent
    assert ws.recv_close()[0] == 1009


# ---- close ----

def test_client_close_code_is_echoed_and_the_connection_closed(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port)
    ws.send_close(4001, b"client says bye")
    assert ws.recv_close() == (4001, b"")
    assert ws.at_eof()


def test_empty_client_close_is_answered_with_an_empty_close(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port)
    ws.send_close(None)
    assert ws.recv_close() == (None, b"")


def test_websocket_close_sends_the_apps_code_and_reason_and_recv_then_raises(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port, "/close?code=4000&reason=bye%20now")
    ws.send_frame(0x1, b"first")
    assert ws.recv_close() == (4000, b"bye now")
    ws.send_close(4000)
    assert ws.at_eof()
    server.wait_log("app: recv after close raised OSError")


def test_session_ends_with_oserror_in_the_app_when_the_client_goes(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port)
    ws.close()
    server.wait_log("app: session over: uwsgi.websocket_recv(): the websocket is closed")


@pytest.mark.parametrize("what, error", [
    ("outside", "RuntimeError"), ("code", "ValueError"), ("reason", "ValueError"), ("handshake-twice", "OSError"),
], ids=["outside-the-request-greenlet", "close-code-1005", "close-reason-over-123-bytes", "second-handshake"])
def test_api_misuse_raises_and_the_session_goes_on(uwsgi, what, error):
    server = start(uwsgi)
    ws = RawWebSocket(server.port, f"/misuse?what={what}")
    assert ws.recv_message() == (0x1, error.encode())
    ws.send_close(1000)
    assert ws.recv_close() == (1000, b"")


# ---- handshake ----

def test_no_subprotocol_is_answered_when_the_app_chose_none(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port, headers="Sec-WebSocket-Protocol: chat, superchat\r\n")
    assert ws.status == 101
    assert "sec-websocket-protocol" not in ws.headers


def test_the_apps_extra_handshake_headers_are_sent(uwsgi):
    server = start(uwsgi)
    ws = RawWebSocket(server.port, "/echo")
    assert ws.status == 101
    assert ws.headers["x-engine"] == "tornado"


def test_the_subprotocol_the_app_chose_is_answered(uwsgi):
    server = start(uwsgi)
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/echo?proto=superchat", timeout=10,
                                     subprotocols=["chat", "superchat"])
    assert ws.getsubprotocol() == "superchat"
    ws.close()


@pytest.mark.parametrize("header, reason", [
    ("Sec-WebSocket-Version: 8", "Sec-WebSocket-Version is not 13"),
    ("Sec-WebSocket-Key: c2hvcnQ=", "Sec-WebSocket-Key is not 16 bytes in base64"),
    ("Upgrade: h2c", "no Upgrade: websocket"),
], ids=["version-8", "short-key", "no-upgrade"])
def test_invalid_upgrade_is_refused_before_anything_is_sent(uwsgi, header, reason):
    server = start(uwsgi)
    name = header.split(":")[0]
    lines = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version": "13"}
    lines[name] = header.split(": ", 1)[1]
    request = "GET /echo HTTP/1.1\r\nHost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(request.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert reason.encode() in data


def test_the_connection_is_closed_after_the_session_on_http11_socket(uwsgi):
    server = start(uwsgi, socket_opt="--http11-socket")
    ws = RawWebSocket(server.port)
    ws.send_close(1000)
    assert ws.recv_close() == (1000, b"")
    try:
        ws.sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    except OSError:
        pass  # already closed: as good
    assert ws.at_eof()


# ---- pings ----

def test_idle_connection_gets_a_server_ping_every_ping_freq_seconds(uwsgi):
    server = start(uwsgi, "--websocket-ping-freq", "1")
    ws = RawWebSocket(server.port)
    started = time.monotonic()
    for _ in range(2):
        assert ws.recv_frame()[1] == 0x9
        ws.send_frame(0xA)
    assert 1.8 < time.monotonic() - started < 3.5
    ws.send_frame(0x1, b"still here")
    assert ws.recv_message() == (0x1, b"still here")


def test_no_pong_within_pong_tolerance_ends_the_session(uwsgi):
    server = start(uwsgi, "--websocket-ping-freq", "1", "--websocket-pong-tolerance", "1")
    ws = RawWebSocket(server.port)
    assert ws.recv_frame()[1] == 0x9  # not answered
    started = time.monotonic()
    assert ws.at_eof(timeout=5)
    assert time.monotonic() - started < 2.5
    assert "no PONG received in 1 seconds" in server.log()


# ---- drain ----

def reload_and_collect_closes(server, clients, answer=True):
    """SIGHUP the master; each client thread waits for its close frame and
    says when it came (seconds after the signal) and with which code."""
    results = [None] * len(clients)

    def wait_close(i):
        try:
            code, _ = clients[i].recv_close()
            results[i] = (code, time.monotonic() - signalled)
            if answer:
                clients[i].send_close(code)
            clients[i].at_eof()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion
            results[i] = exc

    threads = [threading.Thread(target=wait_close, args=(i,), daemon=True) for i in range(len(clients))]
    signalled = time.monotonic()
    os.kill(server.pid, signal.SIGHUP)
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results


def test_reload_closes_every_open_websocket_with_1001_and_no_mercy_is_needed(uwsgi):
    server = start(uwsgi, "--master", "--worker-reload-mercy", "30")
    old = server.worker_pids()[0]
    clients = [RawWebSocket(server.port) for _ in range(10)]
    pusher = RawWebSocket(server.port, "/push")  # an app that never reads
    assert pusher.recv_message() == (0x1, b"push 0")
    for c in clients:
        c.send_frame(0x1, b"hello")
        assert c.recv_message() == (0x1, b"hello")
    results = reload_and_collect_closes(server, clients + [pusher])
    assert all(isinstance(r, tuple) and r[0] == 1001 and r[1] < 2 for r in results), results
    server.wait_log("tornado loop engine ready on worker", count=2, timeout=10)
    wait_port(server.port)
    assert server.worker_pids() != [old]
    assert "closes 11 websockets (1001 going away)" in server.log()
    assert "NO MERCY" not in server.log()


def test_reload_with_clients_that_never_answer_the_close_ends_within_the_close_timeout(uwsgi):
    server = start(uwsgi, "--master", "--worker-reload-mercy", "30", "--tornado-websocket-close-timeout", "1")
    clients = [RawWebSocket(server.port) for _ in range(5)]
    for c in clients:
        c.send_frame(0x1, b"hello")
        assert c.recv_message() == (0x1, b"hello")
    started = time.monotonic()
    results = reload_and_collect_closes(server, clients, answer=False)
    assert all(isinstance(r, tuple) and r[0] == 1001 for r in results), results
    server.wait_log("tornado loop engine ready on worker", count=2, timeout=10)
    assert time.monotonic() - started < 5
    assert "NO MERCY" not in server.log()


def test_max_requests_recycle_closes_the_open_websocket_with_1001(uwsgi):
    server = start(uwsgi, "--master", "--max-requests", "3", "--min-worker-lifetime", "0", "--worker-reload-mercy", "30")
    ws = RawWebSocket(server.port)
    ws.send_frame(0x1, b"hello")
    assert ws.recv_message() == (0x1, b"hello")
    for _ in range(3):
        assert http_get(server.port, "/") == (200, b"ok")
    ws.sock.settimeout(5)
    assert ws.recv_close()[0] == 1001
    ws.send_close(1001)
    assert ws.at_eof()
    server.wait_log("tornado loop engine ready on worker", count=2, timeout=10)
    assert "NO MERCY" not in server.log()


def test_shutdown_signal_sends_1001_to_websockets_waiting_for_a_message(uwsgi):
    server = start(uwsgi)  # no master: SIGINT goes to the worker itself
    clients = [RawWebSocket(server.port) for _ in range(3)]
    for c in clients:
        c.send_frame(0x1, b"hello")
        assert c.recv_message() == (0x1, b"hello")
    started = time.monotonic()
    os.kill(server.pid, signal.SIGINT)
    for c in clients:
        assert c.recv_close()[0] == 1001
    server.proc.wait(5)
    assert time.monotonic() - started < 2
