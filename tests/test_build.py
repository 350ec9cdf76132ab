"""The build: make is incremental, tornado_plugin.so loads into a uWSGI
binary that does not embed the engine, and the C sources keep their floors."""
from __future__ import annotations

import os
import re
import subprocess

from conftest import ROOT, VENV, http_get, parallel

STOCK = os.environ.get("STOCK_UWSGI", str(ROOT / "build" / "stock" / "uwsgi"))
PLUGIN = os.environ.get("PLUGIN_SO_PATH", str(ROOT / "tornado_plugin.so"))
# make's targets for this venv and plugin (make test passes its variables down in MAKEFLAGS)
UWSGI_TARGET = os.path.relpath(VENV / "bin" / "uwsgi", ROOT)
PLUGIN_TARGET = os.path.relpath(PLUGIN, ROOT)


def make_question(*args: str) -> int:
    """`make -q`: 0 when the targets are up to date, 1 when make would rebuild."""
    return subprocess.run(["make", "-q", *args], cwd=ROOT, capture_output=True, timeout=60).returncode


def test_make_with_nothing_changed_rebuilds_nothing():
    assert make_question(UWSGI_TARGET, PLUGIN_TARGET) == 0


def test_make_rebuilds_after_a_plugin_source_changes():
    assert make_question("-W", "plugins/tornado/event.c", UWSGI_TARGET) == 1
    assert make_question("-W", "plugins/tornado/tornado.h", PLUGIN_TARGET) == 1


def test_stock_uwsgi_does_not_know_the_tornado_option():
    proc = subprocess.run([STOCK, "--tornado", "10", "--greenlet"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "unrecognized option" in proc.stdout + proc.stderr


def test_tornado_plugin_so_loads_into_a_stock_uwsgi_with_plugin(uwsgi):
    server = uwsgi("basic.py", "--plugin", PLUGIN, binary=STOCK)
    sleeps = parallel(lambda i: http_get(server.port, "/sleep?s=0.5"), 10)
    assert all(status == 200 and float(body) >= 0.45 for status, body in sleeps), sleeps
    results = parallel(lambda i: http_get(server.port, "/generator"), 10)
    assert results == [(200, b"onetwothree")] * 10


def test_the_glue_package_builds_a_wheel_with_pip(tmp_path):
    proc = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    wheels = list(tmp_path.glob("uwsgidecorators_ext-*.whl"))
    assert len(wheels) == 1
    import zipfile
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "uwsgidecorators_ext/core.py" in names and "uwsgidecorators_ext/serve.py" in names


def test_every_call_in_the_plugin_goes_down_a_floor():
    """Each C file's header says its floor (plugin.c 4 ... event.c 0); a
    function defined in one file is called only from files of a higher
    floor (README: How it works)."""
    sources = sorted((ROOT / "plugins" / "tornado").glob("*.c"))
    floors, defined = {}, {}
    for path in sources:
        text = path.read_text()
        header = re.match(r"/\*\n \* " + re.escape(path.name) + r": floor (\d)", text)
        assert header, f"{path.name}: its header does not say its floor"
        floors[path.name] = int(header.group(1))
        for name in re.findall(r"^(?!static)[a-z][^;\n]*?\b(tw_\w+)\([^;]*$", text, re.M):
            defined[name] = path.name
    assert len(defined) > 40, defined  # the parse found the engine's functions
    upward = []
    for path in sources:
        for name in set(re.findall(r"\b(tw_\w+)\(", path.read_text())):
            home = defined.get(name)
            if home and home != path.name and floors[home] >= floors[path.name]:
                upward.append(f"{path.name} (floor {floors[path.name]}) calls {name} of {home} (floor {floors[home]})")
    assert upward == []


def test_the_running_request_is_set_in_one_place():
    """uwsgi.wsgi_req, the request uWSGI's own code sees as running, is set
    in one function (event.c's tw_core_enter), which every switch into a
    core goes through; a core's state is moved by loop.c alone."""
    assignments, state_moves = [], []
    for path in sorted((ROOT / "plugins" / "tornado").glob("*.c")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\buwsgi\.wsgi_req\s*=[^=]", line):
                assignments.append((path.name, n))
            if re.search(r"->state\s*=[^=]", line) and "ws->state" not in line:
                state_moves.append(path.name)
    assert len(assignments) == 1 and assignments[0][0] == "event.c", assignments
    assert set(state_moves) == {"loop.c"}, state_moves
