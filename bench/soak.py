"""`make soak`: a mixed soak of one uWSGI instance running our engine, with
graceful reloads and recycling while clients verify every answer.

    python bench/soak.py [--seconds 45] [--dribblers 30]

Load: 12 clients POST a random body and check its SHA-256 in the answer, 2
clients abort requests half way, `--dribblers` connections dribble their
request heads and reconnect when closed; `--max-requests 400` recycles the
workers and the master gets SIGHUP every 9 s. Prints the requests sent, the
requests lost (no answer, a wrong answer or a client timeout of 15 s) and the
"NO MERCY" kills in the server log; exits 1 when anything was lost. Every
server listens on 127.0.0.1 and is stopped by PID; every loop is bounded by
--seconds.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import APPS, UWSGI, Dribbler, Server, free_port, wait_port  # noqa: E402


def verifying_client(url: str, until: float, counts: dict[str, int], lock: threading.Lock) -> None:
    session = requests.Session()
    while time.monotonic() < until:
        body = os.urandom(2048)
        why = ""
        try:
            r = session.post(f"{url}/post", data=body, timeout=15)
            if r.status_code != 200 or r.text != "%d %s" % (len(body), hashlib.sha256(body).hexdigest()):
                why = f"answer {r.status_code}"
        except requests.RequestException as exc:
            why = type(exc).__name__ + ": " + str(exc)[-60:]
        with lock:
            counts["sent"] += 1
            if why:
                counts["lost"] += 1
                counts[why] = counts.get(why, 0) + 1


def aborting_client(port: int, until: float) -> None:
    while time.monotonic() < until:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nxxxx")
        except OSError:
            pass
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--dribblers", type=int, default=30)
    parser.add_argument("--reload-every", type=float, default=9, help="seconds between SIGHUPs (0: none)")
    parser.add_argument("--max-requests", type=int, default=400, help="0: no recycling")
    parser.add_argument("--aborters", type=int, default=2)
    opts = parser.parse_args()

    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="soak-")) / "uwsgi.log"
    args = [UWSGI, "--need-app", "--virtualenv", str(ROOT / ".venv"), "--http-socket", f"127.0.0.1:{port}",
            "--wsgi-file", str(APPS / "basic.py"), "--master", "--processes", "2", "--tornado", "200", "--greenlet",
            "--disable-logging"] + (["--max-requests", str(opts.max_requests)] if opts.max_requests else [])
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{APPS}")
    server = Server(args, log, port, env)
    try:
        server.wait_log("tornado loop engine ready on worker", count=2)
        wait_port(port)
        until = time.monotonic() + opts.seconds
        counts = {"sent": 0, "lost": 0}
        lock = threading.Lock()
        threads = [threading.Thread(target=verifying_client, args=(server.url, until, counts, lock)) for _ in range(12)]
        threads += [threading.Thread(target=aborting_client, args=(port, until)) for _ in range(opts.aborters)]
        for t in threads:
            t.start()
        dribblers = [Dribbler(port, 1.0, reconnect=True, limit=opts.seconds) for _ in range(opts.dribblers)]
        reloads = 0
        while opts.reload_every and time.monotonic() + opts.reload_every < until:
            time.sleep(opts.reload_every)
            server.proc.send_signal(signal.SIGHUP)
            reloads += 1
        for t in threads:
            t.join(max(0.0, until - time.monotonic()) + 30)
        for d in dribblers:
            d.stop()
        no_mercy = server.log().count("NO MERCY")
        print(f"soak {opts.seconds:.0f}s, {opts.dribblers} dribblers, {reloads} reloads: "
              f"{counts['sent']} requests, {counts['lost']} lost, {no_mercy} NO MERCY, "
              f"{sum(d.connections for d in dribblers)} dribbling connections")
        for why, n in counts.items():
            if why not in ("sent", "lost"):
                print(f"  lost: {n} x {why}")
        return 1 if counts["lost"] or no_mercy else 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
