"""Behind nginx (Debian's package), with the configs of examples/deploy/:
uwsgi_pass to --socket, proxy_pass with keep-alive to --http11-socket,
websockets, and a graceful reload under load."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import websocket

from conftest import ROOT, Load, free_port, http_get, parallel, wait_port, wrk

WEBSOCKET_ECHO = str(ROOT / "examples" / "websocket_echo.py")


def established_to(port: int) -> int:
    """How many TCP connections to 127.0.0.1:port are established."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    return len(out.splitlines())


def test_uwsgi_pass_100_requests_waiting_1s_each_finish_in_about_1s(uwsgi, nginx):
    server = uwsgi("deploy.py", socket_opt="--socket")
    proxy = nginx("nginx-uwsgi.conf", UWSGI_SOCKET=f"127.0.0.1:{server.port}")
    started = time.monotonic()
    results = parallel(lambda i: http_get(proxy.port, "/sleep?s=1", timeout=20), 100)
    elapsed = time.monotonic() - started
    assert all(isinstance(r, tuple) and r[0] == 200 for r in results), results
    assert len({r[1] for r in results}) == 1  # one worker served them all
    print(f"100 x 1 s through uwsgi_pass: {elapsed:.2f} s")
    assert 1.0 <= elapsed < 1.8


def test_proxy_pass_keepalive_to_http11_socket_wrk_has_no_errors(uwsgi, nginx):
    server = uwsgi(str(ROOT / "examples" / "hello.py"), socket_opt="--http11-socket")
    proxy = nginx("nginx-http11.conf", UWSGI_HTTP=f"127.0.0.1:{server.port}", TORNADO_HTTP=f"127.0.0.1:{free_port()}")
    result = wrk(f"http://127.0.0.1:{proxy.port}/", 3, connections=50, threads=2)
    print(f"wrk through nginx (keep-alive upstream): {result.rps:.0f} req/s, {result.requests} requests")
    assert result.errors == 0, result.output
    assert result.requests >= 3000, result.output
    kept = established_to(server.port)
    assert 1 <= kept <= 2 * 64, kept  # idle in nginx's keep-alive caches (64 per nginx worker)


def test_response_without_content_length_through_nginx_does_not_stall(uwsgi, nginx):
    server = uwsgi("deploy.py", socket_opt="--http11-socket")
    proxy = nginx("nginx-http11.conf", UWSGI_HTTP=f"127.0.0.1:{server.port}", TORNADO_HTTP=f"127.0.0.1:{free_port()}")
    result = wrk(f"http://127.0.0.1:{proxy.port}/nolength", 3, connections=20, threads=2)
    print(f"wrk through nginx, no Content-Length: {result.rps:.0f} req/s, {result.requests} requests")
    assert result.errors == 0, result.output
    assert result.requests >= 1000, result.output


@pytest.mark.parametrize("path", ["/websocket", "/tornado/websocket"], ids=["uwsgi-websocket-api", "tornado-handler"])
def test_websocket_echo_through_nginx(uwsgi, nginx, path):
    address = f"127.0.0.1:{free_port()}"
    server = uwsgi(WEBSOCKET_ECHO, "--master", "--shared-socket", address, socket_opt="--http11-socket",
                   env={"TORNADO_SOCKET": address})
    wait_port(int(address.split(":")[1]))
    proxy = nginx("nginx-http11.conf", UWSGI_HTTP=f"127.0.0.1:{server.port}", TORNADO_HTTP=address)
    ws = websocket.create_connection(f"ws://127.0.0.1:{proxy.port}{path}", timeout=10)
    try:
        for n in range(20):
            ws.send(f"message {n}")
            answer = ws.recv()
            assert (answer.decode() if isinstance(answer, bytes) else answer) == f"You said: message {n}"
    finally:
        ws.close()


def test_graceful_reload_under_load_through_nginx_fails_no_request(uwsgi, nginx):
    server = uwsgi("deploy.py", "--master", "--processes", "2", socket_opt="--http11-socket", workers=2)
    proxy = nginx("nginx-http11.conf", UWSGI_HTTP=f"127.0.0.1:{server.port}", TORNADO_HTTP=f"127.0.0.1:{free_port()}")
    load = Load(proxy.port, threads=4)
    time.sleep(1)
    os.kill(server.pid, signal.SIGHUP)
    reloaded = time.monotonic()
    server.wait_log("tornado loop engine ready on worker", count=4)
    reload_seconds = time.monotonic() - reloaded
    time.sleep(1)
    load.stop()
    print(f"reload through nginx: {sum(load.per_pid.values())} requests, {len(load.failures)} failed, "
          f"new workers ready after {reload_seconds:.2f} s")
    assert load.failures == []
    assert len(load.per_pid) >= 3  # old and new workers both answered


def test_smuggling_attempts_through_nginx_keepalive_upstream_never_reach_the_app(uwsgi, nginx, tmp_path):
    """The attempts of test_framing.py sent to nginx, which keeps its
    connections to --http11-socket alive: none of them gets /secret served,
    and a plain request after each one is answered by its own response."""
    from test_framing import SMUGGLING, exchange

    secret = tmp_path / "secret.log"
    server = uwsgi("framing.py", socket_opt="--http11-socket", env={"SECRET_LOG": str(secret)})
    proxy = nginx("nginx-http11.conf", UWSGI_HTTP=f"127.0.0.1:{server.port}", TORNADO_HTTP=f"127.0.0.1:{free_port()}")
    for name, head, body, _ in SMUGGLING:
        data = exchange(proxy.port, head, body, idle=1.0)
        assert b"SECRET" not in data, (name, data)
        status, page = http_get(proxy.port, "/")
        assert (status, page) == (200, b"public page"), (name, status, page)
    assert not secret.exists(), f"/secret served {secret.read_text().count('served')} times"
