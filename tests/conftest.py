"""Helpers shared by the test suites: start a real uWSGI (the one the Makefile
built) on free 127.0.0.1 ports, talk to it, stop it by PID, and show its log
when a test fails."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
UWSGI = os.environ.get("UWSGI_BIN", str(ROOT / ".venv" / "bin" / "uwsgi"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_run(count: int) -> int:
    """The first of `count` consecutive free ports, below the kernel's
    ephemeral range (where the test's own client connections would take them)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for base in range(20000, low - count, count + 7):
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports below {low}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


class Server:
    """One uWSGI instance: its process, its ports and its log."""

    def __init__(self, args: list[str], log: Path, port: int, env: dict[str, str]):
        self.args = args
        self.log_path = log
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(ROOT), env=env,
        )
        self.pid = self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, count: int = 1, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uwsgi exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} x{count} not in the log after {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        """The workers: the children of the master, or the process itself."""
        kids = children(self.pid)
        return kids if kids else [self.pid]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10) -> int:
        workers = [pid for pid in self.worker_pids() if pid != self.pid] if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # without --master the other workers are not ours to reap: a worker
        # still alive once the first process is gone is killed here
        for pid in workers:
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == self.args[0].encode():
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass  # gone already
        self._log.close()
        return self.proc.returncode


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def uwsgi(request, tmp_path) -> Iterator[Callable[..., Server]]:
    """Start uWSGI: ``uwsgi("app.py", "--processes", "2")``.

    The app is a file under tests/apps (or an absolute path). By default the
    server gets ``--http-socket`` on a free port, ``--tornado 100 --greenlet``
    and waits until every worker runs the loop. Pass ``engine=False`` to leave
    the engine options out, ``socket=None`` to bind nothing yourself,
    ``venv=None`` to run in the binary's own Python (a distribution's uWSGI).
    """
    servers: list[Server] = []

    def start(app: str | None, *extra: str, socket_opt: str | None = "--http-socket",
              engine: bool = True, workers: int = 1, wait: bool = True,
              env: dict[str, str] | None = None, binary: str = UWSGI,
              venv: str | None = str(ROOT / ".venv")) -> Server:
        port = free_port()
        extra_list = list(extra)
        args = [binary] + (["--need-app"] if app else []) + (["--virtualenv", venv] if venv else [])
        while "--plugin" in extra_list:  # plugins load before the options they add
            i = extra_list.index("--plugin")
            args += extra_list[i:i + 2]
            del extra_list[i:i + 2]
        extra = tuple(extra_list)
        if socket_opt:
            args += [socket_opt, f"127.0.0.1:{port}"]
        if app:
            path = app if os.path.isabs(app) else str(APPS / app)
            args += ["--wsgi-file", path]
        if engine:
            args += ["--tornado", "100", "--greenlet"]
        args += ["--disable-logging"] if "--enable-logging" not in extra else []
        args += [a for a in extra if a != "--enable-logging"]
        full_env = dict(os.environ, PYTHONPATH=f"{ROOT}:{APPS}", PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        server = Server(args, tmp_path / f"uwsgi-{len(servers)}.log", port, full_env)
        servers.append(server)
        if wait:
            server.wait_log("tornado loop engine ready on worker", count=workers)
            wait_port(port)
        return server

    yield start

    failed = getattr(request.node, "rep_call", None)
    for server in servers:
        server.stop()
        if failed is not None and failed.failed:
            sys.stderr.write(f"\n----- uwsgi log ({' '.join(server.args)}) -----\n{server.log()}\n")


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Backend:
    """A local HTTP backend in a thread: GET /services -> b"services", /slow?s=1
    sleeps first. Stands in for the remote service of the upstream docs."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path.startswith("/slow"):
                    time.sleep(float(self.path.split("=", 1)[1]))
                body = b"services" if self.path.startswith("/services") else b"slow"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.request_queue_size = 512
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.close()


def http_get(port: int, path: str = "/", timeout: float = 10, headers: str = "") -> tuple[int, bytes]:
    """One HTTP/1.0 request on a fresh connection; returns (status, body).
    Reads until the server closes, so it also proves the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())
        data = recv_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def read_stats(port: int, timeout: float = 10) -> dict:
    """The JSON document uWSGI's --stats server on 127.0.0.1:`port` sends."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        return json.loads(recv_all(s))


def recv_all(s: socket.socket) -> bytes:
    """Everything the peer sends until it closes the connection."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def parallel(fn: Callable[[int], object], n: int, timeout: float = 60) -> list[object]:
    """Run fn(0..n-1) in n threads at once; return the results (exceptions included)."""
    results: list[object] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout)
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout  # one bound for the whole batch
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return results


def sleep_together(port: int, n: int = 20, seconds: float = 1.0) -> tuple[list[object], float]:
    """n concurrent /sleep?s=seconds requests of basic.py: their results
    (status, seconds slept) and the wall time of the whole batch."""
    started = time.monotonic()
    results = parallel(lambda i: http_get(port, f"/sleep?s={seconds}"), n)
    return results, time.monotonic() - started


def websocket_echo(port: int, client: int, messages: int = 5) -> str:
    """One websocket client of the /ws echo: sends `messages` numbered messages
    and returns what came back, joined with |."""
    import websocket  # websocket-client

    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=10)
    try:
        out = []
        for n in range(messages):
            ws.send(f"client {client} message {n}")
            out.append(ws.recv())
        return "|".join(out)
    finally:
        ws.close()


def answering_pids(port: int, path: str, expected: int, timeout: float = 10) -> set[int]:
    """Send rounds of 20 concurrent requests until `expected` different PIDs
    answered (the PID is the last word of each body) or `timeout` passes."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    wait_port(port)
    while len(seen) < expected and time.monotonic() < deadline:
        for result in parallel(lambda i: http_get(port, path), 20):
            assert isinstance(result, tuple) and result[0] == 200, result
            seen.add(int(result[1].split()[-1]))
    return seen


class Dribbler:
    """A client that sends one header line every `interval` seconds and never
    finishes its request head; with `reconnect` it comes back as soon as the
    server closes it. Runs in a thread until stop() or `limit` seconds."""

    def __init__(self, port: int, interval: float, reconnect: bool = False, limit: float = 30) -> None:
        self.port = port
        self.interval = interval
        self.reconnect = reconnect
        self.limit = limit
        self.closed_after: list[float] = []  # seconds from connect to the server's close
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=self.limit)
            except OSError:
                time.sleep(0.05)
                continue
            self.connections += 1
            started = time.monotonic()
            s.settimeout(self.interval)
            try:
                s.sendall(b"GET / HTTP/1.1\r\n")
                while not self._stop.is_set() and time.monotonic() < deadline:
                    try:
                        if s.recv(100) == b"":
                            break  # closed by the server
                    except socket.timeout:
                        s.sendall(b"X-Dribble: 1\r\n")
                else:
                    return
            except OSError:
                pass  # reset by the server: closed too
            finally:
                s.close()
            self.closed_after.append(time.monotonic() - started)
            if not self.reconnect:
                return

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(self.limit)


# ---- real servers the deployment tests talk to (Debian packages, `make services`) ----

class Service:
    """A server process started for a test module, stopped by PID."""

    def __init__(self, args: list[str], log: Path, **popen: object):
        self.args = args
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, **popen)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def _wait_service(service: Service, port: int, timeout: float = 30) -> None:
    try:
        wait_port(port, timeout)
    except OSError:
        service.stop()
        raise RuntimeError(f"{service.args[0]} did not listen on {port}:\n{service.log()}")


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (initdb, data in a fresh directory under
    /tmp) on 127.0.0.1 and a free port; yields its DSN."""
    import glob
    import pwd
    import shutil
    import tempfile

    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    root = Path(tempfile.mkdtemp(prefix="uwsgi-tornado-pg-"))
    user = None  # PostgreSQL refuses to run as root: as root, run it as `postgres`
    if os.geteuid() == 0:
        user = "postgres"
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data = root / "data"
    subprocess.run([f"{bindir}/initdb", "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8"],
                   user=user, check=True, capture_output=True, timeout=120, cwd=root)
    port = free_port()
    server = Service(
        [f"{bindir}/postgres", "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
         "-c", "unix_socket_directories=", "-c", "max_connections=300", "-c", "fsync=off"],
        root / "postgres.log", user=user, cwd=root,
    )
    _wait_service(server, port)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        server.stop(signal.SIGINT)  # fast shutdown
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A Redis server on 127.0.0.1 and a free port, nothing saved; yields its URL."""
    root = tmp_path_factory.mktemp("redis")
    port = free_port()
    server = Service(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", str(root), "--maxclients", "1000"],
                     root / "redis.log")
    _wait_service(server, port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.stop()
