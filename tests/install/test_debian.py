"""Debian bookworm's packaged uWSGI (2.0.21: uwsgi-core with the python3 and
greenlet_python3 plugins, tornado 6.2 from python3-tornado) running our
engine as tornado_plugin.so built by `make plugin UWSGI=/usr/bin/uwsgi-core`;
and the guard: a tornado_plugin.so built for another uWSGI refuses to load."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import ROOT, free_port, http_get, parallel, sleep_together, websocket_echo

DEBIAN_UWSGI = "/usr/bin/uwsgi-core"
DEBIAN_PLUGINS = ("--plugin", "python3", "--plugin", "greenlet_python3")
OUR_UWSGI = next(line.split("==")[1].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                 if line.startswith("uwsgi=="))


@pytest.fixture(scope="module")
def plugin() -> str:
    """The README's command for Debian's uWSGI."""
    proc = subprocess.run(["make", "plugin", f"UWSGI={DEBIAN_UWSGI}", "PYTHON=/usr/bin/python3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(ROOT / "build" / "for-uwsgi-core" / "tornado_plugin.so")


@pytest.fixture
def debian(uwsgi, plugin):
    def start(app: str, *extra: str, **kwargs):
        return uwsgi(app, *DEBIAN_PLUGINS, "--plugin", plugin, *extra, binary=DEBIAN_UWSGI, venv=None, **kwargs)
    return start


def test_make_plugin_builds_for_debian_uwsgi_core_without_a_warning(plugin):
    log = (ROOT / "build" / "for-uwsgi-core" / "build.log").read_text()
    assert "-DUWSGI_VERSION=\"\\\"2.0.21" in log  # the binary's own compile flags
    assert "/usr/src/uwsgi/plugins/python" in log  # uwsgi_python.h of uwsgi-src
    assert "warning" not in log.lower()


def test_debian_uwsgi_serves_hello_with_the_engine(debian):
    server = debian("basic.py")
    assert http_get(server.port, "/") == (200, b"Hello World")
    log = server.log()
    assert "Starting uWSGI 2.0.21-debian" in log and "Operational MODE: async" in log


def test_debian_uwsgi_runs_20_concurrent_one_second_sleeps_in_about_one_second(debian):
    server = debian("basic.py")
    results, elapsed = sleep_together(server.port)
    assert all(r[0] == 200 and 0.95 <= float(r[1]) < 1.5 for r in results), results
    assert elapsed < 2.0


def test_the_glue_wait_fetches_20_slow_urls_at_once_with_debian_tornado_6_2(debian, backend):
    server = debian("glue.py", env={"BACKEND_URL": backend.url})
    started = time.monotonic()
    results = parallel(lambda i: http_get(server.port, "/fetch?s=1", timeout=30), 20)
    elapsed = time.monotonic() - started
    assert results == [(200, b"slow")] * 20
    assert elapsed < 2.5


def test_debian_uwsgi_echoes_websockets_for_10_clients_at_once(debian):
    server = debian("basic.py")
    assert parallel(lambda i: websocket_echo(server.port, i), 10) == ["|".join(f"client {i} message {n}" for n in range(5)) for i in range(10)]


def test_graceful_reload_on_debian_uwsgi_lets_the_request_in_flight_finish(debian):
    server = debian("basic.py", "--master")
    old_pid = int(http_get(server.port, "/pid")[1])
    result: list[tuple[int, bytes]] = []
    slow = threading.Thread(target=lambda: result.append(http_get(server.port, "/sleep?s=2")))
    slow.start()
    time.sleep(0.5)
    os.kill(server.pid, signal.SIGHUP)
    slow.join(15)
    assert result and result[0][0] == 200 and 1.95 <= float(result[0][1]) < 3, result
    server.wait_log("tornado loop engine ready on worker", count=2)
    new_pid = int(http_get(server.port, "/pid")[1])
    assert new_pid != old_pid


def test_a_plugin_built_for_our_uwsgi_refuses_to_load_into_debian_2_0_21():
    python = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c",
                             "import sys; print('%d.%d' % sys.version_info[:2])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    proc = subprocess.run([DEBIAN_UWSGI, *DEBIAN_PLUGINS, "--plugin", str(ROOT / "tornado_plugin.so"),
                           "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", str(ROOT / "tests" / "apps" / "basic.py"),
                           "--tornado", "100", "--greenlet"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"tornado_plugin.so was built for uWSGI {OUR_UWSGI} / Python {python}, this is uWSGI 2.0.21-debian / "
        f"Python 3.11: rebuild it with `make plugin UWSGI={DEBIAN_UWSGI}`")
    assert "bound to TCP address" not in proc.stdout + proc.stderr  # refused before anything started
