"""make autobahn: Autobahn's fuzzing client (wstest -m fuzzingclient) against
the engine's websocket echo (tests/apps/websockets.py, /echo: each message
back with its kind), on one worker under a master.

Fails when a case is not OK, NON-STRICT or INFORMATIONAL, when the worker
crashed or was respawned (its PID changed), or when wstest did not finish.
Cases: 1-7 and 9 (all of 9, up to its 16 MiB messages: about 15 s of the
run; --websocket-max-size is raised to 16 MiB for them). The reports are in
build/autobahn/reports/ (index.html)."""
from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "autobahn"
WSTEST = Path(os.environ.get("WSTEST", BUILD / "venv" / "bin" / "wstest"))
VENV = os.environ.get("UWSGI_VENV", str(ROOT / ".venv"))
UWSGI = os.environ.get("UWSGI_BIN", str(Path(VENV) / "bin" / "uwsgi"))
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def case_key(case: str) -> list[int]:
    return [int(part) for part in case.split(".")]


def main() -> int:
    BUILD.mkdir(parents=True, exist_ok=True)
    port = free_port()
    reports = BUILD / "reports"
    config = {
        "outdir": str(reports),
        "servers": [{"agent": "tornado-engine", "url": f"ws://127.0.0.1:{port}/echo"}],
        "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*"],
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    (BUILD / "fuzzingclient.json").write_text(json.dumps(config, indent=2))
    log_path = BUILD / "uwsgi.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [UWSGI, "--virtualenv", VENV, "--master", "--http-socket", f"127.0.0.1:{port}", "--wsgi-file",
             str(ROOT / "tests" / "apps" / "websockets.py"), "--tornado", "100", "--greenlet",
             "--disable-logging", "--websocket-max-size", "16384"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(ROOT))
    try:
        deadline = time.monotonic() + 30
        while "tornado loop engine ready" not in log_path.read_text(errors="replace"):
            if server.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text(errors="replace"))
                print("autobahn: uWSGI did not start")
                return 1
            time.sleep(0.1)
        worker = children(server.pid)
        started = time.monotonic()
        run = subprocess.run([str(WSTEST), "-m", "fuzzingclient", "-s", str(BUILD / "fuzzingclient.json")],
                             cwd=str(BUILD), capture_output=True, text=True, timeout=1800)
        elapsed = time.monotonic() - started
        (BUILD / "wstest.log").write_text(run.stdout + run.stderr)
        if run.returncode != 0:
            print(run.stdout[-3000:] + run.stderr[-3000:])
            print(f"autobahn: wstest exited with {run.returncode}")
            return 1
        results = json.loads((reports / "index.json").read_text())["tornado-engine"]
        behaviors = collections.Counter(r["behavior"] for r in results.values())
        failed = sorted((case for case, r in results.items() if r["behavior"] not in PASSING), key=case_key)
        for case in failed:
            r = results[case]
            print(f"  {case}: {r['behavior']} (close: {r['behaviorClose']})")
        same_worker = children(server.pid) == worker and server.poll() is None
        log = log_path.read_text(errors="replace")
        crashed = [line for line in log.splitlines()
                   if "respawn" in line or "AddressSanitizer" in line or ("signal" in line.lower() and "killed" in line.lower())]
        summary = ", ".join(f"{n} {b}" for b, n in sorted(behaviors.items()))
        print(f"autobahn: {len(results)} cases in {elapsed:.0f} s: {summary}; "
              f"worker {'kept' if same_worker else 'CHANGED'} (pid {worker})")
        if crashed:
            print("\n".join(crashed))
        return 1 if failed or not same_worker or crashed else 0
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)


if __name__ == "__main__":
    sys.exit(main())
