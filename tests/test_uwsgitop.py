"""uwsgitop (PyPI) against the stats socket of a worker running the engine.
uwsgitop is a curses program with no one-shot mode: it runs in a detached
tmux session on a private tmux server, and the test reads the screen with
`tmux capture-pane`."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from conftest import ROOT, free_port, http_get, parallel, wait_port

UWSGITOP = str(ROOT / ".venv" / "bin" / "uwsgitop")


class Tmux:
    """A tmux server of our own (its socket in the test's tmp dir), killed by PID."""

    def __init__(self, socket_path: Path, command: str):
        self.base = ["tmux", "-S", str(socket_path)]
        env = dict(os.environ, TERM="xterm")
        subprocess.run(self.base + ["new-session", "-d", "-x", "160", "-y", "60", command], check=True, env=env, timeout=10)
        self.pid = int(self.run("display-message", "-p", "#{pid}"))

    def run(self, *args: str) -> str:
        return subprocess.run(self.base + list(args), check=True, capture_output=True, text=True, timeout=10).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p")

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGTERM)


def test_uwsgitop_shows_the_busy_worker_and_its_busy_async_cores(uwsgi, tmp_path):
    stats_port = free_port()
    server = uwsgi("basic.py", "--master", "--stats", f"127.0.0.1:{stats_port}")
    wait_port(stats_port)
    # 10 cores serve one short request each (uwsgitop lists cores whose
    # request count is above 0), then the same 10 take one long request each
    short = parallel(lambda i: http_get(server.port, "/sleep?s=0.3"), 10)
    assert all(isinstance(r, tuple) and r[0] == 200 for r in short), short
    long_requests = threading.Thread(target=parallel, args=(lambda i: http_get(server.port, "/sleep?s=4"), 10))
    long_requests.start()

    tmux = Tmux(tmp_path / "tmux.sock", f"{UWSGITOP} 127.0.0.1:{stats_port}")
    try:
        for _ in range(2):  # 'a' twice: the active cores under their worker
            tmux.run("send-keys", "a")
        deadline = time.monotonic() + 3
        while True:
            screen = tmux.screen()
            cores = re.findall(r"^\s+:(\d+)\s+\S+\s+-\s+(\d+)\s+\d+\s+-\s+-\s+(\w+)", screen, re.M)
            if len(cores) == 10 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        tmux.kill()
    long_requests.join(15)
    print(screen)

    worker_pid = server.worker_pids()[0]
    assert re.search(r"^uwsgi-2\.0\.\d+ - .* - req: 10 - RPS: \d+ ", screen, re.M), screen
    worker = re.search(rf"^\s*1\s+100\.0\s+{worker_pid}\s+(\d+)\s+\d+\s+\d+\s+\d+\s+(\w+)\s+(\d+)ms", screen, re.M)
    assert worker, screen
    assert worker.group(1) == "10" and worker.group(2) == "busy"
    assert 250 <= int(worker.group(3)) < 1000  # avg_rt of the 0.3 s requests
    # each of the 10 cores: 1 request served, busy with the second
    assert len(cores) == 10, screen
    assert all(requests == "1" and status == "busy" for _, requests, status in cores), cores
