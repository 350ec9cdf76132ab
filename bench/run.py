"""`make bench`: the same workloads against our engine and its alternatives,
interleaved, in one run; prints requests/second, p50/p99 latency and worker
RSS per engine, and the ratio of ours to every other engine.

    python bench/run.py [--quick] [--rounds N] [--seconds S]

Writes bench/results/latest.json and bench/results/latest.png. Every server
listens on 127.0.0.1 and is stopped by PID; every load run is bounded by wrk's
duration.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"
RESULTS = ROOT / "bench" / "results"
VENV = ROOT / ".venv"
PY = str(VENV / "bin" / "python")
BENCH_UWSGI = str(ROOT / "build" / "bench" / "uwsgi")
UPSTREAM_UWSGI = str(ROOT / "build" / "upstream" / "uwsgi")
# ours on PyPy: make PYTHON=pypy3 (README: PyPy), the same app through the pypy plugin
PYPY_VENV = ROOT / "build" / "pypy" / "venv"
PYPY_UWSGI = str(PYPY_VENV / "bin" / "uwsgi")

# engine -> (server, options, ENGINE for the app); server: a uWSGI binary, or
# "tornado" (pure Tornado), "granian" or "gunicorn" from .venv/bin
ENGINES = {
    "ours": (BENCH_UWSGI, ["--tornado", "{cores}", "--greenlet"], "tornado"),
    "ours-pypy": (PYPY_UWSGI, ["--tornado", "{cores}", "--greenlet"], "tornado"),
    "ours+uvloop": (BENCH_UWSGI, ["--tornado", "{cores}", "--greenlet", "--tornado-uvloop"], "tornado"),
    "upstream-tornado": (UPSTREAM_UWSGI, ["--tornado", "{cores}", "--greenlet"], "upstream"),
    "gevent": (BENCH_UWSGI, ["--gevent", "{cores}"], "gevent"),
    "async+greenlet": (BENCH_UWSGI, ["--async", "{cores}", "--greenlet"], "async"),
    "async+ugreen": (BENCH_UWSGI, ["--async", "{cores}", "--ugreen"], "ugreen"),
    "sync": (BENCH_UWSGI, [], "sync"),
    "tornado-httpserver": ("tornado", [], "tornado"),
    "granian": ("granian", [], "threads"),
    "granian-512": ("granian", ["--blocking-threads", "512"], "threads"),
    "gunicorn-gevent": ("gunicorn", ["-k", "gevent", "--worker-connections", "{connections}"], "patched"),
}
PEERS = {"granian", "granian-512", "gunicorn-gevent"}

# workload -> (path, wrk connections, uWSGI socket option, cores, engines that can run it)
WAITING = {"ours", "ours+uvloop", "upstream-tornado", "gevent", "async+greenlet", "async+ugreen",
           "tornado-httpserver"} | PEERS
BLOCKING_IO = {"ours", "ours+uvloop", "upstream-tornado", "gevent", "tornado-httpserver"} | PEERS
# ours on PyPy runs hello, io and c10k only
CPYTHON_ENGINES = set(ENGINES) - {"ours-pypy"}
# uWSGI's --http11-socket keeps a connection alive only under a loop engine
# that gives it back to its loop after a response: under gevent, the
# upstream tornado plugin and the stock async mode the second request on a
# connection is never read (wrk counted some 10^6 errors per run), so they
# run the --http-socket workloads only
NO_KEEPALIVE = {"gevent", "upstream-tornado", "async+greenlet", "async+ugreen"}
WORKLOADS = {
    "hello": ("/hello", 50, "--http-socket", 100, set(ENGINES)),
    "c10k": ("/wait", 10000, "--http-socket", 10000, WAITING | {"ours-pypy"}),
    "proxy": ("/proxy", 50, "--http-socket", 100, {"ours", "ours+uvloop", "upstream-tornado", "tornado-httpserver"}),
    "1mib": ("/mib", 50, "--http-socket", 100, CPYTHON_ENGINES),
    "keepalive": ("/ka", 50, "--http11-socket", 100, CPYTHON_ENGINES - NO_KEEPALIVE),
    "c10k-keepalive": ("/wait?ka", 10000, "--http11-socket", 10000, WAITING - NO_KEEPALIVE),
    "io": ("/io", 512, "--http11-socket", 1000, (BLOCKING_IO | {"ours-pypy"}) - NO_KEEPALIVE),
}
# the C10K runs measure steady state: one wrk run of C10K_RAMP + C10K_WINDOW
# + 1 s; the 10,000 connections start together, so the first seconds come in
# waves of 1-s requests that even out; the rate is the mean of the responses
# completed per second in the C10K_WINDOW whole seconds after the ramp
# (bench/persecond.lua counts them)
C10K_RAMP = 4
C10K_WINDOW = 8
PER_SECOND_LUA = ROOT / "bench" / "persecond.lua"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def available(engine: str) -> bool:
    server = ENGINES[engine][0]
    if server == "tornado":
        return True
    return (VENV / "bin" / server).exists() if server in ("granian", "gunicorn") else Path(server).exists()


def server_args(engine: str, workload: str, port: int) -> list[str]:
    """The command line of one engine for one workload: one worker each."""
    server, options, _ = ENGINES[engine]
    path, connections, socket_opt, cores, _ = WORKLOADS[workload]
    options = [o.format(cores=cores, connections=connections + 1000) for o in options]
    if server == "tornado":
        return [PY, str(APPS / "tornado_bench.py"), str(port)]
    if server == "granian":
        return [str(VENV / "bin" / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--backlog", "4096", "--backpressure", str(max(connections, 1024)),
                "--working-dir", str(APPS), *options, "wsgi_bench:application"]
    if server == "gunicorn":
        return [str(VENV / "bin" / "gunicorn"), "--workers", "1", "--bind", f"127.0.0.1:{port}", "--backlog", "4096",
                "--keep-alive", "30", "--chdir", str(APPS), *options, "wsgi_bench:application"]
    if server == PYPY_UWSGI:  # the pypy plugin loads the app and finds its packages its own way
        app = ["--pypy-lib", str(sorted(Path("/usr/lib").glob("*/libpypy3*-c.so"))[-1]),
               "--pypy-pp", str(sorted(PYPY_VENV.glob("lib/pypy*/site-packages"))[-1]),
               "--pypy-wsgi-file", str(APPS / "wsgi_bench.py")]
    else:
        app = ["--wsgi-file", str(APPS / "wsgi_bench.py"), "--virtualenv", str(VENV)]
    return [server, socket_opt, f"127.0.0.1:{port}", *app, "--disable-logging", "--listen", "4096",
            "--max-fd", "20000", "--socket-timeout", "30", *options]


class Server:
    def __init__(self, engine: str, workload: str, backend_url: str):
        self.port = free_port()
        env = dict(os.environ, ENGINE=ENGINES[engine][2], BACKEND_URL=backend_url, PYTHONPATH=str(ROOT))
        self.log = open(RESULTS / f"server-{engine}.log.tmp", "wb")
        args = server_args(engine, workload, self.port)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        wait_port(self.port)
        time.sleep(0.3)

    def worker_pid(self) -> int:
        """The one worker (the master's or the arbiter's child), or the process."""
        pid = self.proc.pid
        kids = Path(f"/proc/{pid}/task/{pid}/children")
        children = kids.read_text().split() if kids.exists() else []
        return int(children[0]) if children else pid

    def worker_rss_kib(self) -> int:
        return rss_kib(self.worker_pid())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def parse_wrk(out: str) -> dict:
    def latency_ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        # with Connection: close wrk counts the close as a read "error": ignore those
        errors = int(m.group(1)) + int(m.group(3)) + int(m.group(4))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return {"rps": rps, "p50_ms": latency_ms("50"), "p99_ms": latency_ms("99"), "errors": errors}


def steady_rate(out: str, started: float, ramp: int, window: int) -> float:
    """Responses per second over the `window` whole seconds that follow the
    first `ramp` whole seconds after `started` (the wall-clock time wrk was
    started); a second with no response counts as 0."""
    per_second = {int(t): int(n) for t, n in re.findall(r"^second (\d+) (\d+)$", out, re.M)}
    first = math.ceil(started) + ramp
    return round(sum(per_second.get(t, 0) for t in range(first, first + window)) / window, 1)


def run_one(engine: str, workload: str, seconds: int, backend_url: str, c10k: tuple[int, int]) -> dict:
    path, connections, _, _, _ = WORKLOADS[workload]
    server = Server(engine, workload, backend_url)
    try:
        url = f"http://127.0.0.1:{server.port}{path}"
        threads = 2 if connections > 1000 else 1
        idle_kib = server.worker_rss_kib()
        wrk_args = ["wrk", f"-t{threads}", f"-c{connections}", "--timeout", "10s", "--latency"]
        if connections > 1000:
            ramp, window = c10k
            seconds = ramp + window + 2
            wrk_args += ["-s", str(PER_SECOND_LUA)]
        started = time.time()
        cpu_before = worker_cpu_s(server.worker_pid())
        wrk = subprocess.Popen(wrk_args + [f"-d{seconds}s", url], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        time.sleep(seconds / 2)  # every connection has a request in flight by now
        busy_kib = server.worker_rss_kib()
        out, _ = wrk.communicate(timeout=seconds + 60)
        result = parse_wrk(out)
        result["cpu_us_per_request"] = cpu_us_per_request(worker_cpu_s(server.worker_pid()) - cpu_before, out)
        result["rss_kib"] = busy_kib
        result["kib_per_request"] = None
        if connections > 1000:
            # steady state, not wrk's average over the whole run with its ramp
            result["rps_whole_run"] = result["rps"]
            result["rps"] = steady_rate(out, started, *c10k)
            # what one request in flight costs: (RSS under load - RSS idle) / connections
            result["kib_per_request"] = round((busy_kib - idle_kib) / connections, 1)
        return result
    except Exception as exc:  # noqa: BLE001 - a broken engine is a result, not the end of the run
        return {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": -1, "rss_kib": 0,
                "kib_per_request": None, "cpu_us_per_request": None, "failure": repr(exc)}
    finally:
        server.stop()


# ---- cost: worker CPU and system calls per request ----
# A rate moves with whatever else the machine runs; what a request costs the
# worker does much less: CPU microseconds per request (utime + stime of the
# worker from /proc/PID/stat over each run, / the requests wrk completed) in
# every run, and system calls per request (strace -c -f on the worker over a
# short run of hello keep-alive) for the uWSGI engines in COST_ENGINES.
COST_ENGINES = ("ours", "sync")
COST_WORKLOAD = "keepalive"
COST_SECONDS = 2


def worker_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_requests(out: str) -> int:
    m = re.search(r"^\s*(\d+) requests in ", out, re.M)
    return int(m.group(1)) if m else 0


def cpu_us_per_request(cpu_s: float, out: str) -> float | None:
    requests = wrk_requests(out)
    if not requests or math.isnan(cpu_s):
        return None
    return round(cpu_s * 1e6 / requests, 2)


def parse_strace_counts(text: str) -> dict[str, int]:
    """strace -c's table: syscall -> calls ("total" included)."""
    calls = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[3].isdigit():
            calls[fields[-1]] = int(fields[3])
    return calls


def syscalls_per_request(engine: str, workload: str, seconds: int, backend_url: str) -> dict:
    """strace -c -f on the worker over one wrk run of `seconds`; the calls of
    each system call per request completed in that run (strace slows the
    worker: the rate of this run means nothing, the counts per request do)."""
    path, connections, _, _, _ = WORKLOADS[workload]
    server = Server(engine, workload, backend_url)
    counts = RESULTS / f"strace-{engine}.txt.tmp"
    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(counts), "-p", str(server.worker_pid())],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # attached
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{server.port}{path}"],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(20)
        server.stop()
    requests = wrk_requests(out)
    calls = parse_strace_counts(counts.read_text()) if counts.exists() else {}
    if not requests or "total" not in calls:
        return {"requests": requests, "per_request": None, "calls": calls}
    per = {name: round(n / requests, 3) for name, n in sorted(calls.items(), key=lambda kv: -kv[1])}
    return {"requests": requests, "per_request": per.pop("total"), "calls": per}


def measure_cost(backend_url: str, engines: list[str], seconds: int) -> dict:
    cost = {}
    for engine in COST_ENGINES:
        if engine in engines:
            cost[engine] = syscalls_per_request(engine, COST_WORKLOAD, seconds, backend_url)
            per = cost[engine]["per_request"]
            print(f"syscalls   {COST_WORKLOAD:9} {engine:18} {'-' if per is None else f'{per:.2f}':>10} per request", flush=True)
    return cost


def print_cost(report: dict) -> None:
    rows = report["results"].get(COST_WORKLOAD, {})
    print(f"\ncost of {COST_WORKLOAD} (hello keep-alive) per request: worker CPU (every run, median), "
          f"system calls (strace -c -f, one {COST_SECONDS} s run)")
    for engine, row in sorted(rows.items(), key=lambda kv: kv[1].get("cpu_us_per_request") or 1e9):
        cpu = row.get("cpu_us_per_request")
        sys_cost = report.get("cost", {}).get(engine, {})
        per = sys_cost.get("per_request")
        top = ", ".join(f"{n} {c:.2f}" for n, c in list(sys_cost.get("calls", {}).items())[:6])
        print(f"  {engine:18} {'-' if cpu is None else f'{cpu:.1f}':>8} us CPU  "
              f"{'' if per is None else f'{per:.2f} syscalls ({top})'}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one short round of hello, keepalive, io and c10k")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--engines", help="comma-separated: only these engines (an A/B run; README untouched)")
    parser.add_argument("--workloads", help="comma-separated: only these workloads (README untouched)")
    args = parser.parse_args()
    rounds, seconds = (1, 2) if args.quick else (args.rounds, args.seconds)
    workloads = ["hello", "keepalive", "io", "c10k"] if args.quick else list(WORKLOADS)
    if args.workloads:
        workloads = [w for w in args.workloads.split(",") if w in WORKLOADS]
    c10k = (2, 3) if args.quick else (C10K_RAMP, C10K_WINDOW)
    engines = [e for e in ENGINES if available(e) and (not args.engines or e in args.engines.split(","))]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    RESULTS.mkdir(parents=True, exist_ok=True)

    backend_port = free_port()
    backend = subprocess.Popen([PY, str(APPS / "backend.py"), str(backend_port)], cwd=str(ROOT))
    wait_port(backend_port)
    backend_url = f"http://127.0.0.1:{backend_port}/"
    started = time.monotonic()
    samples: dict[str, dict[str, list[dict]]] = {w: {e: [] for e in engines} for w in workloads}
    try:
        for r in range(rounds):  # interleaved: every engine once per round
            for workload in workloads:
                for engine in engines:
                    if engine not in WORKLOADS[workload][4]:
                        continue
                    if r > 0 and WORKLOADS[workload][1] > 1000:
                        continue  # C10K: one long run per engine (the bench's time limit)
                    result = run_one(engine, workload, seconds, backend_url, c10k)
                    samples[workload][engine].append(result)
                    cpu = result.get("cpu_us_per_request")
                    print(f"round {r + 1} {workload:9} {engine:18} {result['rps']:10.0f} req/s"
                          f"{'' if cpu is None else f'{cpu:8.1f} us CPU/req'}"
                          f"{'  ' + result['failure'] if 'failure' in result else ''}", flush=True)
        cost = measure_cost(backend_url, engines, 1 if args.quick else COST_SECONDS) if COST_WORKLOAD in workloads else {}
    finally:
        backend.send_signal(signal.SIGINT)
        backend.wait(10)

    table = summarize(samples)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
                   f"{platform.python_version()}, Linux {platform.release()}",
        "rounds": rounds, "seconds": seconds, "duration_s": round(time.monotonic() - started),
        "note": "one worker per engine; hello/c10k/proxy/1mib on --http-socket, keepalive, c10k-keepalive and "
                "io on --http11-socket (Granian and gunicorn keep connections alive where the client does; "
                "pure Tornado only in keepalive, c10k-keepalive and io; uWSGI's gevent, the upstream tornado "
                "plugin and the stock async mode not there: they never read a second request on a kept-alive "
                "connection); c10k: 10,000 connections each waiting "
                "1 s in the app (--tornado/--gevent/--async 10000, gunicorn --worker-connections 11000), "
                f"one run per engine, req/s = responses per second over seconds {c10k[0] + 1} to {sum(c10k)} of "
                "the run (steady state, after the ramp of 10,000 connections started together); io: 512 connections, each request waits "
                "10 ms (ours: the glue's sleep(), uWSGI gevent: gevent.sleep(), Granian: time.sleep() in its "
                "blocking threads, gunicorn -k gevent: the patched time.sleep()); Granian 2.8.7 with its default "
                "blocking threads and with --blocking-threads 512, gunicorn 27.0.1 -k gevent",
        "results": table,
        "cost": cost,
    }
    partial = bool(args.engines or args.workloads)
    name = "quick" if args.quick else "partial" if partial else "latest"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2))
    print_table(report)
    print_cost(report)
    chart(report, RESULTS / f"{name}.png")
    if not args.quick and not partial:
        update_readme(report)
    for tmp in RESULTS.glob("*.tmp"):
        tmp.unlink()
    return 0


def summarize(samples: dict) -> dict:
    table: dict[str, dict[str, dict]] = {}
    for workload, per_engine in samples.items():
        table[workload] = {}
        for engine, runs in per_engine.items():
            if not runs:
                continue
            table[workload][engine] = {
                key: statistics.median(r[key] for r in runs) for key in ("rps", "p50_ms", "p99_ms", "rss_kib")
            }
            table[workload][engine]["errors"] = sum(r["errors"] for r in runs)
            per_request = [r["kib_per_request"] for r in runs if r.get("kib_per_request") is not None]
            table[workload][engine]["kib_per_request"] = statistics.median(per_request) if per_request else None
            cpu = [r["cpu_us_per_request"] for r in runs if r.get("cpu_us_per_request") is not None]
            table[workload][engine]["cpu_us_per_request"] = round(statistics.median(cpu), 2) if cpu else None
        ours = table[workload].get("ours", {}).get("rps", 0)
        for engine, row in table[workload].items():
            # an engine that failed the workload (errors, < 1 req/s) has no meaningful ratio
            served = row["rps"] >= 1 and row["errors"] <= row["rps"]
            row["ours_ratio"] = round(ours / row["rps"], 2) if served else None
        pypy = table[workload].get("ours-pypy")
        if pypy:  # ours on PyPy / ours on CPython, and / Granian (its default threads)
            for key, engine in (("pypy_vs_ours", "ours"), ("pypy_vs_granian", "granian")):
                other = table[workload].get(engine, {}).get("rps", 0)
                pypy[key] = round(pypy["rps"] / other, 2) if other and pypy["ours_ratio"] is not None else None
    return table


def pypy_line(workload: str, rows: dict) -> str:
    """'ours on PyPy: 1.21x ours on CPython, 0.98x Granian', or '' when it did not run."""
    pypy = rows.get("ours-pypy")
    if not pypy:
        return ""
    ratio = {k: "-" if pypy.get(k) is None else f"{pypy[k]:.2f}x" for k in ("pypy_vs_ours", "pypy_vs_granian")}
    return f"{workload}: ours on PyPy {pypy['rps']:.0f} req/s, {ratio['pypy_vs_ours']} ours on CPython, " \
           f"{ratio['pypy_vs_granian']} Granian"


def print_table(report: dict) -> None:
    print(f"\n{report['date']} - {report['machine']} - median of {report['rounds']} round(s) of {report['seconds']} s")
    for workload, rows in report["results"].items():
        print(f"\n{workload}")
        print(f"  {'engine':18} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'RSS KiB':>9} {'KiB/req':>8} "
              f"{'errors':>7} {'ours/x':>7} {'us CPU/req':>10}")
        for engine, row in sorted(rows.items(), key=lambda kv: -kv[1]["rps"]):
            ratio = "-" if row["ours_ratio"] is None else f"{row['ours_ratio']:.2f}"
            per_request = "-" if row.get("kib_per_request") is None else f"{row['kib_per_request']:.1f}"
            cpu = "-" if row.get("cpu_us_per_request") is None else f"{row['cpu_us_per_request']:.1f}"
            print(f"  {engine:18} {row['rps']:10.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
                  f"{row['rss_kib']:9.0f} {per_request:>8} {row['errors']:7d} {ratio:>7} {cpu:>10}")
        if pypy_line(workload, rows):
            print("  " + pypy_line(workload, rows))


def update_readme(report: dict, readme: Path = ROOT / "README.rst") -> None:
    """Put the table between the bench markers of README.rst."""
    lines = [f"Measured {report['date']} on {report['machine']}: median of {report['rounds']} interleaved "
             f"rounds of {report['seconds']} s (``wrk``); {report['note']}. ``ours/x`` is our requests/second "
             "divided by that engine's, in the same run; ``-``: the engine failed the workload. "
             "Worker RSS is sampled half way through the run; ``KiB/req`` (C10K only) is "
             "(that RSS - the idle worker's RSS) / connections; ``us CPU/req``: the worker's user + system "
             "CPU time over the run / the requests completed.", ""]
    for engine, sys_cost in report.get("cost", {}).items():
        if sys_cost.get("per_request") is not None:
            top = ", ".join(f"``{n}`` {c:.2f}" for n, c in list(sys_cost["calls"].items())[:6])
            lines += [f"System calls per {COST_WORKLOAD} request, {engine} (``strace -c -f`` on the worker, "
                      f"{sys_cost['requests']} requests): {sys_cost['per_request']:.2f} ({top}).", ""]
    for workload, rows in report["results"].items():
        lines += [f".. csv-table:: {workload}",
                  "   :header: engine, req/s, p50 ms, p99 ms, worker RSS KiB, KiB/req, errors, ours/x, us CPU/req", ""]
        for engine, row in sorted(rows.items(), key=lambda kv: -kv[1]["rps"]):
            ratio = "-" if row["ours_ratio"] is None else f"{row['ours_ratio']:.2f}"
            per_request = "-" if row.get("kib_per_request") is None else f"{row['kib_per_request']:.1f}"
            cpu = "-" if row.get("cpu_us_per_request") is None else f"{row['cpu_us_per_request']:.1f}"
            lines.append(f"   {engine}, {row['rps']:.0f}, {row['p50_ms']:.2f}, {row['p99_ms']:.2f}, "
                         f"{row['rss_kib']:.0f}, {per_request}, {row['errors']}, {ratio}, {cpu}")
        lines.append("")
        if pypy_line(workload, rows):
            lines += [pypy_line(workload, rows) + ".", ""]
    text = readme.read_text()
    start, end = ".. bench-table-start", ".. bench-table-end"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(head + start + "\n\n" + "\n".join(lines) + "\n" + end + tail)


def chart(report: dict, path: Path) -> None:
    """One panel per workload: ours / each other engine (bars right of 1.0:
    we are faster); engines that failed the workload are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(report["results"])
    cols = min(4, len(workloads))
    nrows = (len(workloads) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(workloads):]:
        ax.axis("off")
    for ax, workload in zip(axes.flat, workloads):
        rows = [(e, r) for e, r in report["results"][workload].items() if e != "ours"]
        rows.sort(key=lambda kv: -(kv[1]["ours_ratio"] or 1e9))
        names = [e for e, _ in rows]
        ratios = [r["ours_ratio"] or 0.0 for _, r in rows]
        colors = ["tab:gray" if r["ours_ratio"] is None else "tab:green" if r["ours_ratio"] >= 1 else "tab:red"
                  for _, r in rows]
        bars = ax.barh(names, ratios, color=colors)
        for bar, (_, r) in zip(bars, rows):
            label = "failed" if r["ours_ratio"] is None else f"{r['ours_ratio']:.2f}x"
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + label, va="center", fontsize=7)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        ours = report["results"][workload].get("ours", {}).get("rps", 0)
        ax.set_title(f"{workload}: ours {ours:,.0f} req/s", fontsize=9)
        ax.set_xlabel("ours / engine (req/s)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"make bench, {report['date']}, {report['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
