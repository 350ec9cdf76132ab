"""Helpers shared by the test suites: start a real uWSGI (the one the Makefile
built) on free 127.0.0.1 ports, talk to it, stop it by PID, and show its log
when a test fails."""
from __future__ import annotations

import collections
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
# the venv the Makefile built (make test passes its own: .venv, or build/py3.X/venv in a root)
VENV = Path(os.environ.get("UWSGI_VENV", str(ROOT / ".venv")))
UWSGI = os.environ.get("UWSGI_BIN", str(VENV / "bin" / "uwsgi"))


# ---- PyPy's uWSGI (make test PYTHON=pypy3) ----
# The same tests run on uWSGI's pypy plugin with the engine; only how uWSGI
# loads an app differs there. UWSGI_PYPY_ARGS (the Makefile's PYPY_ARGS:
# --pypy-lib, --pypy-pp) says the binary is a PyPy one; uwsgi_command() is the
# one place that translates a CPython command line for it.
PYPY_ARGS = os.environ.get("UWSGI_PYPY_ARGS", "").split()
PYPY = bool(PYPY_ARGS)
# CPython option -> PyPy option taking the same value
PYPY_OPTIONS = {"--wsgi-file": "--pypy-wsgi-file", "--module": "--pypy-wsgi", "--pythonpath": "--pypy-pp"}
# options the pypy plugin has no equivalent of -> how many values they take:
# it registers no app uWSGI counts (--need-app would refuse to start), and
# its packages come from --pypy-pp instead of a virtualenv
PYPY_DROPPED = {"--need-app": 0, "--virtualenv": 1}


def cpython_only(why: str):
    """Mark a test (or a parameter) that cannot run on PyPy's uWSGI, saying why."""
    return pytest.mark.skipif(PYPY, reason=f"not on PyPy: {why}")


# what the pypy plugin does differently, for the tests that depend on it
PYPY_GENERATORS = cpython_only(
    "the pypy plugin runs a WSGI response generator to its end without going back to the loop between "
    "items, and sets no uwsgi.ready_fd or x-wsgiorg.fdevent.timeout in environ: `yield uwsgi.wait_fd_read()` "
    "does not suspend the request")


def uwsgi_command(args: list[str]) -> list[str]:
    """`args`, a uWSGI command line written for CPython's uWSGI, for the uWSGI
    the tests run (the same on CPython; translated on PyPy)."""
    if not PYPY or UWSGI not in args:
        return list(args)
    at = args.index(UWSGI) + 1
    out = list(args[:at]) + PYPY_ARGS
    i = at
    while i < len(args):
        arg = args[i]
        if arg in PYPY_DROPPED:
            i += 1 + PYPY_DROPPED[arg]
            continue
        out.append(PYPY_OPTIONS.get(arg, arg))
        i += 1
    return out


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
        args = uwsgi_command(args)
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
    ``venv=None`` to run in the binary's own Python (a distribution's uWSGI),
    ``netns=name`` to run it inside that network namespace.
    """
    servers: list[Server] = []

    def start(app: str | None, *extra: str, socket_opt: str | None = "--http-socket",
              engine: bool = True, workers: int = 1, wait: bool = True,
              env: dict[str, str] | None = None, binary: str = UWSGI,
              venv: str | None = str(VENV), netns: str | None = None) -> Server:
        port = free_port()
        extra_list = list(extra)
        args = (["ip", "netns", "exec", netns] if netns else []) + [binary]
        args += (["--need-app"] if app else []) + (["--virtualenv", venv] if venv else [])
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
            if socket_opt:
                wait_port(port)
        return server

    yield start
    stop_all(request, servers, lambda server: f"uwsgi log ({' '.join(server.args)})")
    # on the ASan build (make test-debug) a worker that hit a memory error
    # dies and is respawned: the test may still pass, the run must not
    for server in servers:
        assert "ERROR: AddressSanitizer" not in server.log(), server.log()


def stop_all(request, processes: list, title: Callable[..., str]) -> None:
    """Stop what a fixture started; when the test failed, show each one's log."""
    failed = getattr(request.node, "rep_call", None)
    for process in processes:
        process.stop()
        if failed is not None and failed.failed:
            sys.stderr.write(f"\n----- {title(process)} -----\n{process.log()}\n")


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


def http_get(port: int, path: str = "/", timeout: float = 10, headers: str = "",
             address: str = "127.0.0.1", host: str | None = None) -> tuple[int, bytes]:
    """One HTTP/1.0 request on a fresh connection; returns (status, body).
    Reads until the server closes, so it also proves the close. `host` is the
    Host header (default: address:port)."""
    with socket.create_connection((address, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host or f'{address}:{port}'}\r\n{headers}\r\n".encode())
        data = recv_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def read_stats(port: int, timeout: float = 10) -> dict:
    """The JSON document uWSGI's --stats server on 127.0.0.1:`port` sends."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        return json.loads(recv_all(s))


def wait_stats(port: int, ready: Callable[[dict], bool], timeout: float = 5, every: float = 0.05) -> dict:
    """The first document of the --stats server on `port` for which `ready`
    holds (read every `every` s), or the last one read once `timeout` seconds
    have passed (the caller asserts on it, so a failure shows what the server
    reported)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = read_stats(port)
        if ready(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(every)


def uwsgi_packet(vars: dict[str, str] | list[tuple[str, str]]) -> bytes:
    """A request in the uwsgi protocol (what nginx's uwsgi_pass sends): its
    variables (a list of pairs may repeat one), latin-1."""
    pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (vars.items() if isinstance(vars, dict) else vars)]
    body = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v for k, v in pairs)
    return struct.pack("<BHB", 0, len(body), 0) + body


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


class Load:
    """Client threads sending requests in a loop until stopped (bounded by
    `limit` seconds): counts answers per worker PID and failures."""

    def __init__(self, port: int, threads: int = 4, path: str = "/pid", limit: float = 30):
        self.port, self.path, self.limit = port, path, limit
        self.per_pid: collections.Counter[int] = collections.Counter()
        self.failures: list[str] = []
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self.stopped.is_set() and time.monotonic() < deadline:
            try:
                status, body = http_get(self.port, self.path, timeout=15)
                with self.lock:
                    if status == 200:
                        self.per_pid[int(body)] += 1
                    else:
                        self.failures.append(f"status {status}")
            except OSError as exc:
                with self.lock:
                    self.failures.append(repr(exc))

    def stop(self) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(30)


# ---- wrk ----

WRK = shutil.which("wrk") or "/usr/bin/wrk"


@dataclass
class WrkResult:
    requests: int
    rps: float
    errors: int  # connect/read/write errors, timeouts and non-2xx/3xx answers
    output: str


def wrk(url: str, seconds: int, connections: int = 50, threads: int = 1) -> WrkResult:
    """Load the URL with wrk for `seconds` (bounded) and return what it counted."""
    out = subprocess.run(
        [WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return WrkResult(int(re.search(r"(\d+) requests in", out).group(1)),
                     float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), errors, out)


# ---- nginx (Debian's package) in front ----

NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
DEPLOY = ROOT / "examples" / "deploy"


def render(template: Path, values: dict[str, object]) -> str:
    """A config of examples/deploy with its ${NAME} placeholders filled in
    (what the envsubst command of its header does)."""
    text = template.read_text()
    for name, value in values.items():
        text = text.replace("${%s}" % name, str(value))
    left = set(re.findall(r"\$\{[A-Z_]+\}", text))
    assert not left, f"{template.name}: no value for {sorted(left)}"
    return text


class Nginx:
    """nginx in the foreground with its own prefix, pid file and logs."""

    def __init__(self, template: str, prefix: Path, **values: object) -> None:
        self.port = free_port()
        self.prefix = prefix
        prefix.mkdir()
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(render(DEPLOY / template, dict(values, LISTEN=f"127.0.0.1:{self.port}", PREFIX=prefix)))
        self.error_log = prefix / "error.log"
        self._out = open(prefix / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(self.conf), "-e", str(self.error_log), "-g", "daemon off;"],
            stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nginx does not listen on {self.port}:\n{self.log()}")
                time.sleep(0.05)

    def log(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.prefix / "stderr.log", self.error_log) if p.exists()]
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc.poll() is None:
            workers = children(self.pid)
            self.proc.terminate()  # fast shutdown: the master stops its workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                for pid in workers:
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


@pytest.fixture
def nginx(request, tmp_path) -> Iterator[Callable[..., Nginx]]:
    """Start nginx with a config of examples/deploy:
    ``nginx("nginx-uwsgi.conf", UWSGI_SOCKET="127.0.0.1:3031")``; it listens on
    a free 127.0.0.1 port (``.port``). Its error log is shown when the test fails."""
    started: list[Nginx] = []

    def start(template: str, **values: object) -> Nginx:
        server = Nginx(template, tmp_path / f"nginx-{len(started)}", **values)
        started.append(server)
        return server

    yield start
    stop_all(request, started, lambda server: f"nginx log ({server.conf})")


# ---- hosts made of network namespaces ----

def ip(*args: str, netns: str | None = None) -> None:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + ["ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


class Hosts:
    """A router host and `backends` backend hosts, each a network namespace
    with its own address, linked by veth pairs (needs root):

        this host --- router host --- backend host 1
         10.N.0.1     10.N.0.2 (+ 10.N.i.1)  10.N.i.2, default route via 10.N.i.1

    The router host answers the tests at `router_address`; backend host i
    reaches it through its own link. Nothing is forwarded: the router host
    is the end of every connection."""

    def __init__(self, backends: int) -> None:
        token = secrets.token_hex(3)
        self.net = 10, random.randint(64, 191)
        used = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
        while f"10.{self.net[1]}." in used:
            self.net = 10, random.randint(64, 191)
        prefix = "10.%d" % self.net[1]
        self.router = f"dpl-{token}-router"
        self.backends = [f"dpl-{token}-b{i}" for i in range(1, backends + 1)]
        self.link = f"dpl{token}"
        self.router_address = f"{prefix}.0.2"
        self.backend_addresses = [f"{prefix}.{i}.2" for i in range(1, backends + 1)]
        self.created: list[str] = []
        try:
            self._create(prefix)
        except BaseException:
            self.delete()
            raise

    def _up(self, netns: str, device: str, address: str) -> None:
        ip("addr", "add", address, "dev", device, netns=netns)
        ip("link", "set", device, "up", netns=netns)
        ip("link", "set", "lo", "up", netns=netns)

    def _create(self, prefix: str) -> None:
        ip("netns", "add", self.router)
        self.created.append(self.router)
        ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", self.router)
        ip("addr", "add", f"{prefix}.0.1/24", "dev", self.link)
        ip("link", "set", self.link, "up")
        self._up(self.router, "eth0", f"{prefix}.0.2/24")
        for i, netns in enumerate(self.backends, 1):
            ip("netns", "add", netns)
            self.created.append(netns)
            ip("link", "add", f"b{i}", "netns", self.router, "type", "veth", "peer", "name", "eth0", "netns", netns)
            self._up(self.router, f"b{i}", f"{prefix}.{i}.1/24")
            self._up(netns, "eth0", f"{prefix}.{i}.2/24")
            ip("route", "add", "default", "via", f"{prefix}.{i}.1", netns=netns)

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.link], capture_output=True, timeout=10)
        for netns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=10)
        self.created = []


@pytest.fixture
def hosts() -> Iterator[Callable[[int], Hosts]]:
    """``hosts(3)``: a router host and 3 backend hosts; deleted after the test."""
    made: list[Hosts] = []

    def make(backends: int) -> Hosts:
        made.append(Hosts(backends))
        return made[-1]

    yield make
    for h in made:
        h.delete()
