"""The WSGI environ the engine builds (plugins/tornado/environ.c) is the
python plugin's, key by key and type by type: the same app is started twice
with the same options, once with the engine's subhandlers and once with
--tornado-stock-wsgi (the python plugin's own), and both get the same
requests; tests/apps/environ_dump.py answers with what it was given."""
from __future__ import annotations

import json
import socket
import ssl
import subprocess

import pytest

from conftest import free_port, recv_all, uwsgi_packet, wait_port

BEHAVIOURS = ["cheat", "holy"]


def exchange(port: int, request: bytes, tls: bool = False) -> dict:
    """One request on a fresh connection, the app's JSON document back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with context.wrap_socket(raw) as s:
                s.sendall(request)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        else:
            raw.sendall(request)
            data = recv_all(raw)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], data[:500]
    return json.loads(body)


def normalized(doc: dict, port: int) -> dict:
    """What differs between two servers by nature: their port, the client's port."""
    environ = {}
    for key, (key_type, value_type, value) in doc["environ"].items():
        if isinstance(value, str):
            value = value.replace(str(port), "{port}")
        if key == "REMOTE_PORT":
            value = "{client port}"
        environ[key] = (key_type, value_type, value)
    return {"environ": environ, "body": doc["body"]}


@pytest.fixture
def pair(uwsgi):
    """start(*options, socket=None) -> (ours port, stock port): the dump app
    twice; `socket` (option, address with {port}) adds a socket of another
    protocol to each server, on its own port, and the ports are those."""
    def start(*options: str, socket: tuple[str, str] | None = None) -> tuple[int, int]:
        ports = []
        for own in ([], ["--tornado-stock-wsgi"]):
            extra = []
            if socket:
                port = free_port()
                extra = [socket[0], socket[1].format(port=port)]
            server = uwsgi("environ_dump.py", *options, *extra, *own)
            if socket:
                wait_port(port)
            ports.append(port if socket else server.port)
        return ports[0], ports[1]
    return start


def assert_same_environ(ours_port: int, stock_port: int, requests: list[bytes], tls: bool = False) -> list[dict]:
    docs = []
    for request in requests:
        ours = normalized(exchange(ours_port, request, tls), ours_port)
        stock = normalized(exchange(stock_port, request, tls), stock_port)
        assert set(ours["environ"]) == set(stock["environ"]), (request, set(ours["environ"]) ^ set(stock["environ"]))
        for key in stock["environ"]:
            assert ours["environ"][key] == stock["environ"][key], (request, key)
        assert ours["body"] == stock["body"], request
        docs.append(ours)
    return docs


def http(method: str, target: bytes, headers: list[tuple[bytes, bytes]] = (), body: bytes = b"",
         version: bytes = b"HTTP/1.1") -> bytes:
    head = [method.encode() + b" " + target + b" " + version, b"Host: example.test"]
    head += [name + b": " + value for name, value in headers]
    if body:
        head.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_environ_is_the_python_plugins_for_methods_and_query_strings(pair, behaviour):
    ours, stock = pair("--wsgi-env-behaviour", behaviour)
    requests = [http("GET", b"/"), http("GET", b"/a/b?x=1&y=%20z&&flag"), http("GET", b"/empty?"),
                http("DELETE", b"/thing/1"), http("OPTIONS", b"*"),
                http("PURGE", b"/cache?all"), http("GET", b"/old", version=b"HTTP/1.0")]
    requests += [http(method, b"/form?kind=" + method.lower().encode(), [(b"Content-Type", b"application/x-www-form-urlencoded")],
                      b"a=1&b=" + method.encode()) for method in ("POST", "PUT", "PATCH")]
    docs = assert_same_environ(ours, stock, requests)
    environ = docs[1]["environ"]
    assert environ["QUERY_STRING"] == ("str", "str", "x=1&y=%20z&&flag")
    assert environ["wsgi.url_scheme"] == ("str", "str", "http")
    assert environ["wsgi.input"][1] == "_Input"
    assert environ["wsgi.version"] == ("str", "tuple", [1, 0])
    assert docs[-1]["environ"]["REQUEST_METHOD"] == ("str", "str", "PATCH") and docs[-1]["body"] == "a=1&b=PATCH"


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_environ_is_the_python_plugins_for_many_and_repeated_headers(pair, behaviour):
    ours, stock = pair("--wsgi-env-behaviour", behaviour)
    common = [(b"User-Agent", b"test/1.0"), (b"Accept", b"text/html"), (b"Accept-Encoding", b"gzip, br"),
              (b"Accept-Language", b"fr, en;q=0.5"), (b"Cookie", b"a=1; b=2"), (b"Referer", b"http://example.test/"),
              (b"Authorization", b"Basic eDp5"), (b"X-Forwarded-For", b"10.0.0.1"), (b"Cache-Control", b"no-cache"),
              (b"Origin", b"http://example.test"), (b"If-None-Match", b'"abc"'), (b"X-Request-Id", b"42")]
    many = [(f"X-Header-{i}".encode(), f"value {i}".encode()) for i in range(60)]
    repeated = [(b"X-Dup", b"1"), (b"X-Dup", b"2"), (b"Cookie", b"c=3"), (b"Accept", b"*/*"), (b"X-Dup", b"3")]
    # names that uWSGI turns into the names of entries the subhandler sets itself
    entry_like = [(b"wsgi.input", b"x"), (b"Uwsgi-Node", b"y"), (b"X-Wsgiorg-Fdevent-Timeout", b"z")]
    requests = [http("GET", b"/common", common), http("GET", b"/many", common + many),
                http("GET", b"/repeated", common + repeated), http("GET", b"/entries", entry_like),
                # the same headers again: the engine reuses the values it kept
                http("GET", b"/common", common), http("GET", b"/changed", [(b"User-Agent", b"test/2.0")])]
    docs = assert_same_environ(ours, stock, requests)
    assert docs[1]["environ"]["HTTP_X_HEADER_59"] == ("str", "str", "value 59")
    assert docs[5]["environ"]["HTTP_USER_AGENT"] == ("str", "str", "test/2.0")


def test_environ_is_the_python_plugins_for_non_ascii_paths_and_header_values(pair):
    ours, stock = pair()
    requests = [http("GET", b"/caf\xc3\xa9/\xe9?q=\xff\xfe"), http("GET", b"/%E2%82%AC/%e9?x=%C3%A9"),
                http("GET", b"/latin", [(b"X-Latin", b"caf\xe9"), (b"X-Utf8", b"caf\xc3\xa9")]),
                http("POST", b"/bytes", body=bytes(range(1, 256)))]
    docs = assert_same_environ(ours, stock, requests)
    # PEP 3333: str of the bytes as latin-1
    assert docs[0]["environ"]["PATH_INFO"] == ("str", "str", "/caf\xc3\xa9/\xe9")
    assert docs[2]["environ"]["HTTP_X_LATIN"] == ("str", "str", "caf\xe9")
    assert docs[3]["body"] == bytes(range(1, 256)).decode("latin-1")


def test_environ_is_the_python_plugins_over_https(pair, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    ours, stock = pair(socket=("--https-socket", f"127.0.0.1:{{port}},{cert},{key}"))
    requests = [http("GET", b"/secure?x=1", [(b"User-Agent", b"test/1.0")]), http("POST", b"/form", body=b"a=1")]
    docs = assert_same_environ(ours, stock, requests, tls=True)
    assert docs[0]["environ"]["wsgi.url_scheme"] == ("str", "str", "https")
    assert docs[0]["environ"]["HTTPS"] == ("str", "str", "on")


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_environ_is_the_python_plugins_over_the_uwsgi_protocol(pair, behaviour):
    ours, stock = pair("--wsgi-env-behaviour", behaviour, socket=("--socket", "127.0.0.1:{port}"))
    base = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/up?a=b", "PATH_INFO": "/up", "QUERY_STRING": "a=b",
            "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "example.test", "SERVER_PORT": "80",
            "REMOTE_ADDR": "10.1.2.3", "REMOTE_PORT": "5555", "HTTP_HOST": "example.test", "DOCUMENT_ROOT": "/srv"}
    packets = [
        base,
        # nginx's https: HTTPS=on, or its own scheme variable
        dict(base, HTTPS="on", REQUEST_SCHEME="https"),
        dict(base, UWSGI_SCHEME="https"),
        dict(base, UWSGI_SCHEME="ftp"),
        # a mount point, and variables nginx may pass under any name
        dict(base, SCRIPT_NAME="/app", PATH_INFO="/up", MY_PARAM="caf\xe9", **{"x.custom-name": "1"}),
        # variables named like the entries the subhandler sets itself: theirs win
        dict(base, **{"wsgi.version": "9", "wsgi.url_scheme": "gopher", "uwsgi.node": "n", "wsgi.input": "i",
                      "x-wsgiorg.fdevent.timeout": "t", "uwsgi.core": "c"}),
        # a variable repeated: the last one
        list(base.items()) + [("HTTP_X_DUP", "1"), ("HTTP_X_DUP", "2")],
    ]
    requests = [uwsgi_packet(p) for p in packets]
    docs = assert_same_environ(ours, stock, requests)
    assert docs[0]["environ"]["REMOTE_ADDR"] == ("str", "str", "10.1.2.3")
    assert docs[1]["environ"]["wsgi.url_scheme"] == ("str", "str", "https")
    assert docs[3]["environ"]["wsgi.url_scheme"] == ("str", "str", "ftp")
    assert docs[4]["environ"]["MY_PARAM"] == ("str", "str", "caf\xe9")
    assert docs[5]["environ"]["wsgi.version"] == ("str", "tuple", [1, 0])
    assert docs[5]["environ"]["wsgi.url_scheme"] == ("str", "str", "http")
    assert docs[6]["environ"]["HTTP_X_DUP"] == ("str", "str", "2")


def previous(port: int) -> dict:
    return exchange(port, http("GET", b"/previous", [(b"Connection", b"close")]))


def test_cheat_environ_is_the_cores_own_dict_cleared_after_each_request(uwsgi):
    """--wsgi-env-behaviour cheat (the default): one dict per core, reused;
    with the engine's environ as with the python plugin's."""
    for own in ([], ["--tornado-stock-wsgi"]):
        server = uwsgi("environ_dump.py", "--tornado", "2", *own)
        previous(server.port)
        doc = previous(server.port)   # one request at a time: the same core
        assert doc["same_dict"] is True
        # the previous request's dict holds this request's environ by now
        assert "PATH_INFO" in doc["previous_keys"] and "wsgi.input" in doc["previous_keys"]


def test_holy_environ_is_a_new_dict_per_request(uwsgi):
    for own in ([], ["--tornado-stock-wsgi"]):
        server = uwsgi("environ_dump.py", "--wsgi-env-behaviour", "holy", *own)
        previous(server.port)
        doc = previous(server.port)
        assert doc["same_dict"] is False
        assert "PATH_INFO" in doc["previous_keys"]


def test_a_worker_respawned_after_recycling_builds_the_environ_too(uwsgi):
    """The apps' table lives in memory shared with the master: the worker
    that replaces a recycled one finds the engine's subhandler already set."""
    server = uwsgi("environ_dump.py", "--master", "--max-requests", "3", "--min-worker-lifetime", "0")
    pids = set()
    for i in range(12):
        doc = exchange(server.port, http("GET", f"/n{i}".encode(), [(b"Connection", b"close")]))
        assert doc["environ"]["PATH_INFO"] == ["str", "str", f"/n{i}"]
        assert doc["environ"]["wsgi.version"] == ["str", "tuple", [1, 0]]
        pids.update(server.worker_pids())
    assert len(pids) >= 3, pids   # recycled at least twice
    assert "unable to build the WSGI environ" not in server.log()
