"""Websockets in `make bench` and `make bench-memory`: a round-trip echo
workload against our engine (the engine's RFC 6455 behind uWSGI's websocket
API), uWSGI's gevent engine (uWSGI's own websocket code) and Tornado's
WebSocketHandler, interleaved, one worker each; and the memory of 10,000
idle websockets on one worker of ours.

    python bench/websocket.py [--rounds N] [--seconds S] [--idle-only] [--connections C]

The client is this file's own asyncio websocket client (masked text frames
of 16 bytes, one message in flight per connection): every server is
measured with the same client in the same run, so the ratios compare the
servers. Everything listens on 127.0.0.1 and is stopped by PID.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import statistics
import struct
import time

import run

ENGINES = ["ours", "gevent", "tornado-httpserver"]
PAYLOAD = b"0123456789abcdef"
IDLE = 10000


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a websocket to 127.0.0.1:port/ws (handshake done)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head[:80]!r}")
    return reader, writer


def frame(payload: bytes) -> bytes:
    """A masked text frame (all a client sends is masked, RFC 6455 5.3)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return await reader.readexactly(length)


async def echo_load(port: int, connections: int, seconds: float) -> dict:
    """`connections` websockets, each sending a message and waiting for its
    echo, again and again for `seconds`: round trips per second and latency."""
    sockets = await asyncio.gather(*(connect(port) for _ in range(connections)))
    latencies: list[float] = []
    message = frame(PAYLOAD)
    deadline = time.monotonic() + seconds

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            writer.write(message)
            if await read_frame(reader) != PAYLOAD:
                raise RuntimeError("the echo is not the message")
            latencies.append(time.perf_counter() - sent)

    started = time.monotonic()
    await asyncio.gather(*(one(r, w) for r, w in sockets))
    elapsed = time.monotonic() - started
    for _, writer in sockets:
        writer.write(bytes([0x88, 0x82]) + b"\0\0\0\0" + struct.pack("!H", 1000))
        writer.close()
    latencies.sort()
    return {"rps": len(latencies) / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000}


async def hold_idle(port: int, count: int, measure) -> int:
    """Open `count` websockets (in batches), call measure() while they are
    all open and idle, then close them; returns what measure() returned."""
    sockets = []
    for start in range(0, count, 500):
        sockets += await asyncio.gather(*(connect(port) for _ in range(min(500, count - start))))
    await asyncio.sleep(1.0)
    value = measure()
    for _, writer in sockets:
        writer.close()
    return value


def server(engine: str, cores: int) -> run.Server:
    run.WORKLOADS["ws"] = ("/ws", cores, "--http-socket", cores, set(ENGINES))
    return run.Server(engine, "ws", "http://127.0.0.1:1/")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--idle-only", action="store_true", help="only the memory of 10,000 idle websockets")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    run.RESULTS.mkdir(parents=True, exist_ok=True)

    if not args.idle_only:
        samples: dict[str, list[dict]] = {e: [] for e in ENGINES}
        for r in range(args.rounds):  # interleaved: every engine once per round
            for engine in ENGINES:
                srv = server(engine, 1000)
                try:
                    result = asyncio.run(echo_load(srv.port, args.connections, args.seconds))
                finally:
                    srv.stop()
                samples[engine].append(result)
                print(f"round {r + 1} websocket-echo {engine:18} {result['rps']:10.0f} round trips/s", flush=True)
        ours = statistics.median(s["rps"] for s in samples["ours"])
        print(f"\nwebsocket echo: {args.connections} connections, one 16-byte message in flight each, "
              f"median of {args.rounds} round(s) of {args.seconds:g} s")
        print(f"  {'engine':20} {'trips/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ours/x':>7}")
        for engine, runs in samples.items():
            rps = statistics.median(s["rps"] for s in runs)
            print(f"  {engine:20} {rps:9.0f} {statistics.median(s['p50_ms'] for s in runs):8.2f} "
                  f"{statistics.median(s['p99_ms'] for s in runs):8.2f} {ours / rps:7.2f}")

    srv = server("ours", IDLE)
    try:
        time.sleep(0.5)
        idle_kib = srv.worker_rss_kib()
        held_kib = asyncio.run(hold_idle(srv.port, IDLE, srv.worker_rss_kib))
    finally:
        srv.stop()
    print(f"\n{IDLE} idle websockets on one worker of ours (--tornado {IDLE}): worker RSS {idle_kib} KiB idle, "
          f"{held_kib} KiB with them open: {(held_kib - idle_kib) / IDLE:.1f} KiB per websocket")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
