"""Scaling out with uWSGI's own tools: an HTTP router with a subscription
server (examples/deploy/router.ini) on one host, backends running the
tornado engine (examples/deploy/backend.ini) on three others that subscribe
to it. Each host is a network namespace made by the test (needs root)."""
from __future__ import annotations

import collections
import os
import signal
import threading
import time
from pathlib import Path

from conftest import DEPLOY, Hosts, Server, http_get, parallel

DOMAIN = "app.test"
ROUTER_PORT, SUBSCRIPTION_PORT, BACKEND_PORT = 8080, 2626, 3031


class Cluster:
    """The router and one backend per backend host, started with the configs of
    examples/deploy. A backend's answers are "<name> <pid>"; each logs the ids
    of the /sleep requests it starts and ends (REQUEST_LOG)."""

    def __init__(self, uwsgi, hosts: Hosts, logs: Path) -> None:
        self.uwsgi, self.hosts, self.logs = uwsgi, hosts, logs
        self.subscriptions = f"{hosts.router_address}:{SUBSCRIPTION_PORT}"
        self.router = uwsgi(None, "--ini", str(DEPLOY / "router.ini"), socket_opt=None, engine=False, wait=False,
                            netns=hosts.router, env={"ROUTER_HTTP": f"{hosts.router_address}:{ROUTER_PORT}",
                                                     "ROUTER_SUBSCRIPTIONS": self.subscriptions})
        self.router.wait_log("subscription server bound")
        self.backends = [self.start_backend(i) for i in range(len(hosts.backends))]
        for address in hosts.backend_addresses:
            self.router.wait_log(f"{DOMAIN} => new node: {address}:{BACKEND_PORT}")

    def start_backend(self, i: int) -> Server:
        return self.uwsgi("deploy.py", "--ini", str(DEPLOY / "backend.ini"), socket_opt=None, engine=False,
                          netns=self.hosts.backends[i], env={
                              "BACKEND_SOCKET": f"{self.hosts.backend_addresses[i]}:{BACKEND_PORT}",
                              "ROUTER_SUBSCRIPTIONS": self.subscriptions, "APP_DOMAIN": DOMAIN,
                              "BACKEND_NAME": self.name(i), "REQUEST_LOG": str(self.request_log(i))})

    @staticmethod
    def name(i: int) -> str:
        return f"b{i + 1}"

    def request_log(self, i: int) -> Path:
        return self.logs / f"{self.name(i)}.requests"

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(ROUTER_PORT, path, timeout=20, address=self.hosts.router_address, host=DOMAIN)

    def round(self, n: int, path: str = "/sleep?s=1&id={i}") -> list[object]:
        """n concurrent requests through the router (`{i}` is each one's number)."""
        return parallel(lambda i: self.get(path.format(i=i)), n)

    def crash(self, i: int) -> None:
        """Backend host i loses its uWSGI at once: SIGKILL to the master, then its workers."""
        server = self.backends[i]
        workers = [pid for pid in server.worker_pids() if pid != server.pid]
        os.kill(server.pid, signal.SIGKILL)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        server.proc.wait(5)
        # a worker not dead yet still holds the listen socket: the kernel would
        # accept a connection for it that the router then sees reset
        deadline = time.monotonic() + 5
        while any(process_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.01)


def process_alive(pid: int) -> bool:
    """pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def answered_by(results: list[object]) -> collections.Counter[str]:
    """Backend name -> how many of the results it answered; every result must be a 200."""
    assert all(isinstance(r, tuple) and r[0] == 200 for r in results), results
    return collections.Counter(r[1].split()[0].decode() for r in results)


def test_router_spreads_60_concurrent_requests_over_3_backend_hosts(uwsgi, hosts, tmp_path):
    cluster = Cluster(uwsgi, hosts(3), tmp_path)
    started = time.monotonic()
    per_backend = answered_by(cluster.round(60))
    elapsed = time.monotonic() - started
    print(f"60 x 1 s over 3 backends: {dict(per_backend)} in {elapsed:.2f} s")
    assert set(per_backend) == {"b1", "b2", "b3"}
    assert min(per_backend.values()) >= 15, per_backend
    assert elapsed < 2.0


def test_killing_a_backend_under_load_fails_only_the_requests_it_held(uwsgi, hosts, tmp_path):
    cluster = Cluster(uwsgi, hosts(3), tmp_path)
    answered_by(cluster.round(30, "/sleep?s=1&id=warm{i}"))
    results: list[object] = []
    load = threading.Thread(target=lambda: results.extend(cluster.round(30, "/sleep?s=1&id=kill{i}")))
    load.start()
    time.sleep(0.5)  # every request of the round is now waiting in a backend
    cluster.crash(1)
    load.join(30)
    events = [line.split() for line in cluster.request_log(1).read_text().splitlines()]
    started = {int(i[4:]) for what, i in events if what == "start" and i.startswith("kill")}
    held = started - {int(i[4:]) for what, i in events if what == "end" and i.startswith("kill")}
    failed = {i for i, r in enumerate(results) if not (isinstance(r, tuple) and r[0] == 200)}
    print(f"backend b2 killed holding {len(held)} of 30 requests; {len(failed)} failed at the client")
    assert len(results) == 30
    assert failed == held and 5 <= len(held) <= 15
    assert set(answered_by([r for i, r in enumerate(results) if i not in failed])) == {"b1", "b3"}
    after = [answered_by(cluster.round(30, "/sleep?s=0.2&id=after{i}")) for _ in range(3)]
    assert all(set(per_backend) == {"b1", "b3"} for per_backend in after), after


def test_a_backend_that_comes_back_is_used_again(uwsgi, hosts, tmp_path):
    cluster = Cluster(uwsgi, hosts(3), tmp_path)
    cluster.crash(1)
    assert set(answered_by(cluster.round(30, "/name"))) == {"b1", "b3"}
    cluster.backends[1] = cluster.start_backend(1)
    came_back = time.monotonic()
    per_backend: collections.Counter[str] = collections.Counter()
    while per_backend["b2"] == 0 and time.monotonic() - came_back < 15:
        per_backend = answered_by(cluster.round(30, "/name"))
    print(f"b2 used again {time.monotonic() - came_back:.2f} s after its restart: {dict(per_backend)}")
    assert per_backend["b2"] >= 5, per_backend
