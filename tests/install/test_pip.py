"""The README's pip recipe (Installing, 1): a fresh venv, tornado and greenlet
from PyPI, then uWSGI's sdist built by pip with our plugin embedded. Run for
two interpreters, one after the other, from the same checkout."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, http_get, parallel

FIRST_PYTHON = os.environ.get("FIRST_PYTHON", "python3")
SECOND_PYTHON = os.environ.get("SECOND_PYTHON", "/usr/bin/python3-dbg")

APP = '''import sys
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%s debug=%s" % (sys.prefix, hasattr(sys, "gettotalrefcount"))).encode()]
'''


def readme_pip_commands() -> list[str]:
    """The `pip install` lines of the README's pip recipe, verbatim."""
    text = (ROOT / "README.rst").read_text()
    block = text.split(".. pip-recipe-start", 1)[1].split(".. pip-recipe-end", 1)[0]
    lines = [line.strip() for line in block.splitlines()]
    commands = [line for line in lines if re.search(r"\bpip install\b", line)]
    assert len(commands) == 2, commands
    return commands


def checkout_files() -> set[str]:
    return {str(p.relative_to(ROOT)) for p in (ROOT / "plugins").rglob("*")}


def pip_recipe(python: str, venv: Path) -> subprocess.CompletedProcess:
    """A venv made with `python`, then the README's commands in it, from the
    checkout, as `. venv/bin/activate` would run them."""
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    env = dict(os.environ, VIRTUAL_ENV=str(venv), PATH=f"{venv}/bin:{os.environ['PATH']}")
    env.pop("PYTHONHOME", None)
    script = "set -e\n" + "\n".join(readme_pip_commands())
    return subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    before = checkout_files()
    venv = tmp_path_factory.mktemp("first") / "venv"
    proc = pip_recipe(FIRST_PYTHON, venv)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return venv, before, checkout_files()


@pytest.fixture(scope="module")
def second(first, tmp_path_factory):
    venv = tmp_path_factory.mktemp("second") / "venv"
    proc = pip_recipe(SECOND_PYTHON, venv)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def whoami(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("app") / "whoami.py"
    path.write_text(APP)
    return str(path)


def test_the_readme_pip_recipe_builds_a_uwsgi_whose_engine_serves_10_sleeps_at_once(first, uwsgi):
    venv = first[0]
    server = uwsgi("basic.py", binary=str(venv / "bin" / "uwsgi"), venv=str(venv))
    assert http_get(server.port, "/") == (200, b"Hello World")
    results = parallel(lambda i: http_get(server.port, "/sleep?s=0.5"), 10)
    assert all(r[0] == 200 and 0.45 <= float(r[1]) < 1.0 for r in results), results


def test_the_pip_build_writes_nothing_into_the_checkout(first):
    _, before, after = first
    assert after - before == set()


def test_a_build_for_a_second_interpreter_and_the_first_build_both_serve(first, second, whoami, uwsgi):
    one = uwsgi(whoami, binary=str(first[0] / "bin" / "uwsgi"), venv=str(first[0]))
    two = uwsgi(whoami, binary=str(second / "bin" / "uwsgi"), venv=str(second))
    # each binary runs the interpreter it was built with: the second one is
    # Debian's debug build of CPython (another libpython, Py_DEBUG)
    assert http_get(one.port, "/") == (200, f"{first[0]} debug=False".encode())
    assert http_get(two.port, "/") == (200, f"{second} debug=True".encode())
