"""ASGI in `make bench`: the same raw ASGI app (bench/apps/asgi_bench.py)
on our engine (--tornado-asgi), uvicorn (httptools + uvloop), Granian in
ASGI mode and gunicorn's ASGI worker (-k asgi), one worker each,
interleaved rounds, ratios to ours in one run; and our WSGI hello, for the
per-request cost of the ASGI bridge.

    python bench/asgi.py [--rounds N] [--seconds S] [--workloads hello,io,c10k] [--servers ours,uvicorn]

Each number is wrk's requests per second (median of the rounds) and the
CPU seconds the server's processes used per 1,000 requests (less sensitive
to a shared machine than the rate). Granian may use more than one core: its
CPU per request says so. Everything listens on 127.0.0.1 and is stopped by PID.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import run

APPS = run.ROOT / "bench" / "apps"
VENV = run.VENV
UWSGI = [str(VENV / "bin" / "uwsgi"), "--virtualenv", str(VENV), "--disable-logging", "--listen", "4096",
         "--max-fd", "20000", "--socket-timeout", "30", "--pythonpath", str(APPS)]
# workload -> (path, wrk connections, async cores)
WORKLOADS = {"hello": ("/hello", 50, 100), "io": ("/io", 512, 1000), "c10k": ("/wait", 10000, 10000)}
SERVERS = ["ours", "ours+uvloop", "ours-wsgi", "uvicorn", "granian", "gunicorn"]


def command(server: str, workload: str, port: int) -> list[str]:
    _, connections, cores = WORKLOADS[workload]
    bind = f"127.0.0.1:{port}"
    if server in ("ours", "ours+uvloop"):
        # ours+uvloop: the engine's loop on uvloop, as uvicorn's is (--tornado-uvloop)
        return UWSGI + ["--http11-socket", bind, "--tornado", str(cores), "--greenlet", "--tornado-asgi", "asgi_bench:app"] \
            + (["--tornado-uvloop"] if server == "ours+uvloop" else [])
    if server == "ours-wsgi":
        return UWSGI + ["--http11-socket", bind, "--tornado", str(cores), "--greenlet", "--wsgi-file", str(APPS / "asgi_bench.py")]
    if server == "uvicorn":
        return [str(VENV / "bin" / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--backlog", "4096",
                "--app-dir", str(APPS), "asgi_bench:app"]
    if server == "granian":
        return [str(VENV / "bin" / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--backlog", "4096", "--backpressure", str(max(connections, 1024)),
                "--working-dir", str(APPS), "--no-ws", "asgi_bench:app"]
    return [str(VENV / "bin" / "gunicorn"), "--workers", "1", "--bind", bind, "--backlog", "4096", "-k", "asgi",
            "--worker-connections", str(connections + 1000), "--keep-alive", "30", "--chdir", str(APPS), "asgi_bench:app"]


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the workers)."""
    total = 0.0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                pids.extend(int(k) for k in kids)
        except (OSError, IndexError, ValueError):
            continue
    return total


class AsgiServer(run.Server):
    """One server of this file's list (run.Server's stop and log)."""

    def __init__(self, server: str, workload: str) -> None:  # noqa: super().__init__ takes run.py's engines
        self.port = run.free_port()
        self.log = open(run.RESULTS / f"asgi-{server}.log.tmp", "wb")
        self.proc = subprocess.Popen(command(server, workload, self.port), stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=str(APPS), env=dict(os.environ, PYTHONPATH=f"{run.ROOT}:{APPS}"))


def measure(server: str, workload: str, seconds: int) -> dict | None:
    proc = AsgiServer(server, workload)
    try:
        run.wait_port(proc.port)
        time.sleep(0.5)
        path, connections, _ = WORKLOADS[workload]
        threads = 2 if connections > 1000 else 1
        cpu = tree_cpu(proc.proc.pid)
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
                              f"http://127.0.0.1:{proc.port}{path}"], capture_output=True, text=True,
                             timeout=seconds + 60).stdout
        cpu = tree_cpu(proc.proc.pid) - cpu
        result = run.parse_wrk(out)
        requests = result["rps"] * seconds
        result["cpu_ms_per_1k"] = 1000 * 1000 * cpu / requests if requests else float("nan")
        return result
    except (RuntimeError, subprocess.TimeoutExpired, AttributeError) as exc:
        print(f"  {server} {workload}: {exc}", file=sys.stderr)
        return None
    finally:
        proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--workloads", default="hello,io,c10k")
    parser.add_argument("--servers", default=",".join(SERVERS), help="a subset of " + ",".join(SERVERS))
    args = parser.parse_args()
    servers = [s for s in SERVERS if s in args.servers.split(",")]
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    workloads = args.workloads.split(",")
    samples: dict = {w: {s: [] for s in SERVERS} for w in workloads}
    for _ in range(args.rounds):
        for workload in workloads:
            for server in servers:
                if server == "ours-wsgi" and workload != "hello":
                    continue
                result = measure(server, workload, args.seconds)
                if result:
                    samples[workload][server].append(result)
    report = {}
    print(f"ASGI, one worker each, {args.rounds} rounds of {args.seconds} s (median); ratio = ours / that server,"
          " uv = ours+uvloop / that server")
    print(f"{'workload':10} {'server':12} {'req/s':>9} {'ratio':>6} {'uv':>6} {'p99 ms':>8} {'CPU ms/1k req':>14}")
    for workload in workloads:
        ours = statistics.median(r["rps"] for r in samples[workload]["ours"]) if samples[workload]["ours"] else float("nan")
        uv = statistics.median(r["rps"] for r in samples[workload]["ours+uvloop"]) if samples[workload]["ours+uvloop"] else float("nan")
        for server in servers:
            runs = samples[workload][server]
            if not runs:
                continue
            rps = statistics.median(r["rps"] for r in runs)
            p99 = statistics.median(r["p99_ms"] for r in runs)
            cpu = statistics.median(r["cpu_ms_per_1k"] for r in runs)
            errors = sum(r["errors"] for r in runs)
            report.setdefault(workload, {})[server] = {"rps": rps, "p99_ms": p99, "cpu_ms_per_1k": cpu, "errors": errors}
            print(f"{workload:10} {server:12} {rps:9.0f} {ours / rps:6.2f} {uv / rps:6.2f} {p99:8.1f} {cpu:14.1f}" + (f"  ({errors} errors)" if errors else ""))
    (run.RESULTS / "asgi.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
