"""`make bench-memory`: what one request in flight costs our worker, by kind
of memory. Starts our engine (one worker, ``--tornado 10000``), reads its
/proc/PID/smaps idle and then with 10,000 requests in flight (wrk, each
request in the glue's ``sleep(1)``), and prints the growth of each kind per
request:

    uwsgi-buffers  uWSGI's per-core shared arrays: the request buffer
                   (--buffer-size) and the iovec array (--max-vars)
    data-stacks    CPython's frame stack chunks: 16 KiB mapped per greenlet,
                   of which the frames of a waiting request touch pages
    python-arenas  CPython's small objects (the rest of the anonymous maps)
    heap           malloc: greenlet state and saved C stacks, dict tables

    python bench/memory.py [uWSGI options, e.g. --buffer-size 2048 --max-vars 32]
"""
from __future__ import annotations

import collections
import re
import resource
import struct
import subprocess
import sys
import time

import run

CONNECTIONS = 10000
CHUNK_PAGES = 4  # CPython's data stack chunk: 16 KiB


def mappings(pid: int) -> dict[tuple[str, str], int]:
    """Resident KiB of each mapping of `pid`, keyed by (range, name)."""
    rss: dict[tuple[str, str], int] = {}
    key = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                key = (parts[0], parts[5] if len(parts) > 5 else "[anon]")
            elif line.startswith("Rss:"):
                rss[key] = int(line.split()[1])
    return rss


def data_stack_kib(pid: int, ranges: list[str]) -> int:
    """Resident KiB of the 16-KiB blocks of anonymous maps whose first page
    only is present: CPython data stack chunks of waiting greenlets."""
    total = 0
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for r in ranges:
            start, end = (int(x, 16) for x in r.split("-"))
            pages = (end - start) // 4096
            pagemap.seek(start // 4096 * 8)
            data = pagemap.read(pages * 8)
            present = [struct.unpack_from("Q", data, i * 8)[0] >> 63 for i in range(pages)]
            for i in range(0, pages - CHUNK_PAGES + 1, CHUNK_PAGES):
                if present[i:i + CHUNK_PAGES] == [1, 0, 0, 0]:
                    total += 4
    return total


def main() -> int:
    extra = sys.argv[1:]
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    server, options, app_engine = run.ENGINES["ours"]
    run.ENGINES["ours"] = (server, options + extra, app_engine)
    srv = run.Server("ours", "c10k", "http://127.0.0.1:1/")
    try:
        pid = srv.proc.pid
        idle = mappings(pid)
        url = f"http://127.0.0.1:{srv.port}/wait"
        wrk = subprocess.Popen(["wrk", "-t2", f"-c{CONNECTIONS}", "-d6s", "--timeout", "10s", url],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(4)
        busy = mappings(pid)
        anon = [r for (r, name) in busy if name == "[anon]"]
        stacks = data_stack_kib(pid, anon)
        wrk.communicate(timeout=70)
    finally:
        srv.stop()
    kinds: dict[str, int] = collections.Counter()
    for key, kib in busy.items():
        grown = kib - idle.get(key, 0)
        name = key[1]
        kind = ("uwsgi-buffers" if name.startswith("/dev/zero") else "heap" if name == "[heap]"
                else "anonymous" if name == "[anon]" else "other")
        kinds[kind] += grown
    kinds["data-stacks"] = stacks
    kinds["python-arenas"] = kinds.pop("anonymous", 0) - stacks
    total = sum(kinds.values())
    print(f"ours {' '.join(extra) or '(defaults)'}: {CONNECTIONS} requests in flight, KiB per request")
    for kind in ("uwsgi-buffers", "data-stacks", "python-arenas", "heap", "other"):
        print(f"  {kind:14} {kinds.get(kind, 0) / CONNECTIONS:6.1f}")
    print(f"  {'total':14} {total / CONNECTIONS:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
