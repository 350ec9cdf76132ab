"""The test suite on every supported CPython and PyPy: ``make test-matrix``, ``make test PY=3.13``.

The host's interpreter serves its own version; 3.10 and 3.12, which no
reachable Debian suite ships, come from the machine image's pyenv and run on
the host with a venv and uWSGI build of their own (``build/py<version>/``);
PyPy 3.9 (``pypy3.9``) is Debian's ``pypy3`` on the host, built by
``make PYTHON=pypy3`` in ``build/pypy/``, and runs PYPY_TESTS; every other
version runs in a
minimal Debian root made with ``debootstrap`` under ``build/roots/<suite>``,
made once and reused while its recipe (suite, mirror, packages) is unchanged.
Inside a root the repository is bind-mounted (matrix/inroot.sh) and each
Python gets its own venv and uWSGI build under ``build/py<version>/``: nothing
of the host's ``.venv`` or ``build/release`` is used there.

Usage::

    python3 matrix/run.py 3.13                 # the whole suite on 3.13
    python3 matrix/run.py --matrix --readme    # every version, README table rewritten

A version that cannot be set up (no root, no build) fails with the reason;
it is never skipped. Runs as root (debootstrap, chroot, mount).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOTS = ROOT / "build" / "roots"
INROOT = ROOT / "matrix" / "inroot.sh"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")

# CPython version -> the Debian suite that ships it
SUITES = {"3.9": "bullseye", "3.11": "bookworm", "3.13": "trixie", "3.14": "sid", "3.15": "sid"}
# the versions no reachable Debian suite ships (3.10, 3.12) come from the machine image's
# pyenv (built with a shared libpython and its headers): they run on the host,
# each with its own venv and uWSGI build, like a root's
PYENV = ["3.10", "3.12"]
# PyPy: Debian's pypy3 (apt, on the host), uWSGI's pypy plugin with the engine
# (make PYTHON=pypy3, build/pypy/); its own suite below
PYPY = {"pypy3.9": "pypy3"}
MATRIX = ["3.11", "3.9", "3.10", "3.12", "3.13", "3.14", "3.15", "pypy3.9"]
# the whole suite runs on the oldest and newest we build against, the core of it
# elsewhere, so that `.ci/run` stays within its time budget (README: Supported versions)
FULL = {"3.11", "3.15"}
CORE = ["tests/test_engine.py", "tests/test_glue.py", "tests/test_lifecycle.py", "tests/test_loop_timers.py"]
# on PyPy, whole suite or core alike: the engine, its lifecycle, the glue, websockets,
# metrics and the slow-client rules (README: PyPy says what else differs there)
PYPY_TESTS = CORE + ["tests/test_websocket.py", "tests/test_metrics.py", "tests/test_slow_clients.py"]
# the deployment tests need nginx, PostgreSQL, Redis and Chromium ("make services")
# and the [deployment] packages: they run on the host only
HOST_ONLY = ["tests/test_asyncio_clients.py", "tests/test_browser.py", "tests/test_deploy_nginx.py",
             "tests/test_deploy_scaling.py", "tests/test_example_flask.py", "tests/test_uwsgitop.py"]
# what the build and the tests need inside a root, besides the interpreter
# (libssl-dev: uWSGI's websocket handshake needs its SHA-1; wrk, strace, curl and nginx:
# make tools; openssl: the --https-socket test's certificate)
ROOT_PACKAGES = ["gcc", "make", "libc6-dev", "libcrypt-dev", "libssl-dev", "zlib1g-dev", "wrk", "strace", "curl",
                 "openssl", "nginx"]
# what debootstrap's resolver misses (it does not follow virtual packages):
# bullseye's python3.9-venv needs python3.9-distutils, provided by python3-distutils
SUITE_PACKAGES = {"bullseye": ["python3-distutils"]}


@dataclass
class Result:
    """One version's run: what it used, how long each step took, how it ended."""

    python: str
    suite: str = "host"
    tests: str = "full"
    cpython: str = "-"
    tornado: str = "-"
    greenlet: str = "-"
    uwsgi: str = "-"
    root_s: float = 0.0
    root_cached: bool = False
    build_s: float = 0.0
    test_s: float = 0.0
    summary: str = ""
    passed: bool = False
    reason: str = ""
    log: str = ""
    extra: dict = field(default_factory=dict)


class StepFailed(Exception):
    """A step of one version failed; the message says which and why."""


def host_version() -> str:
    return "%d.%d" % sys.version_info[:2]


def root_packages(suite: str) -> list[str]:
    """Every package of a root: the interpreters of all versions it serves."""
    pythons = sorted(v for v, s in SUITES.items() if s == suite)
    return sorted(ROOT_PACKAGES + SUITE_PACKAGES.get(suite, [])
                  + [f"python{v}-{kind}" for v in pythons for kind in ("dev", "venv")])


def recipe(suite: str) -> str:
    """The debootstrap command line of a root: the root is rebuilt when it changes."""
    return " ".join(["debootstrap", "--variant=minbase", "--include=" + ",".join(root_packages(suite)),
                     suite, "<dir>", MIRROR])


def mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if (p + "/").startswith(prefix)]


def ensure_root(suite: str, result: Result) -> Path:
    """Make build/roots/<suite> unless it exists with the same recipe.

    Example::

        root = ensure_root("sid", Result("3.14"))
    """
    path = ROOTS / suite
    stamp = path / ".recipe"
    wanted = recipe(suite)
    if stamp.exists() and stamp.read_text() == wanted:
        result.root_cached = True
        return path
    started = time.monotonic()
    ROOTS.mkdir(parents=True, exist_ok=True)
    for old in (path, path.with_name(suite + ".new")):
        busy = mounts_below(old)
        if busy:
            raise StepFailed(f"root: {old} still has mounts ({', '.join(busy)}); unmount them first")
        if old.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(old)], check=True)
    if shutil.which("debootstrap") is None:
        raise StepFailed("root: debootstrap is not installed (apt-get install debootstrap)")
    new = path.with_name(suite + ".new")
    log = ROOTS / f"{suite}.log"
    cmd = wanted.split()
    cmd[cmd.index("<dir>")] = str(new)
    print(f"matrix: making the {suite} root ({' '.join(cmd)})", flush=True)
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise StepFailed(f"root: debootstrap {suite} failed ({proc.returncode}), see {log.relative_to(ROOT)}:\n"
                         + "\n".join(tail))
    new.rename(path)
    stamp.write_text(wanted)
    # the venvs and uWSGI builds made in the old root are stale
    for version, its_suite in SUITES.items():
        if its_suite == suite:
            shutil.rmtree(ROOT / "build" / f"py{version}", ignore_errors=True)
    result.root_s = time.monotonic() - started
    return path


def pyenv_python(version: str) -> str:
    """The interpreter of `version` in the machine image's pyenv (the newest
    patch release there), or StepFailed saying where it looked."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = sorted(root.glob(f"versions/{version}.*/bin/python{version}"),
                   key=lambda p: [int(x) for x in p.parent.parent.name.split(".") if x.isdigit()])
    if not found:
        raise StepFailed(f"pyenv: no CPython {version} under {root}/versions (the machine image's pyenv ships it)")
    return str(found[-1])


def make_vars(version: str, where: str) -> list[str]:
    """The make variables of one version: its own venv and builds, in a root
    or from pyenv; none for the host's own interpreter."""
    if where == "host":
        return []
    if where == "pypy":  # the Makefile's PyPy section picks build/pypy and its venv
        return [f"PYTHON={PYPY[version]}"]
    build = f"build/py{version}"
    python = pyenv_python(version) if where == "pyenv" else f"python{version}"
    return [f"PYTHON={python}", f"VENV={build}/venv", f"BUILD={build}",
            f"PLUGIN_SO={build}/tornado_plugin.so", "SKIP_REQ=benchmarks deployment", "TEST_SERVICES="]


def where_of(version: str) -> str:
    """host (this interpreter), pyenv, pypy (the host's apt package), or root (a Debian root)."""
    if version in PYPY:
        return "pypy"
    if version == host_version():
        return "host"
    return "pyenv" if version in PYENV else "root"


def run_step(cmd: list[str], log: Path, what: str) -> str:
    """Run cmd with its output on our stdout and in log; StepFailed when it fails."""
    print("matrix: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
            lines.append(line)
        code = proc.wait()
    sys.stdout.flush()
    if code != 0:
        raise StepFailed(f"{what}: exit {code}, see {log.relative_to(ROOT)}")
    return "".join(lines)


def pytest_summary(output: str) -> str:
    """'84 passed, 1 failed' from pytest's closing line, or ''."""
    found = re.findall(r"^=+ (.*\d+ (?:passed|failed|error).*?) in [\d.]+s", output, re.M)
    return found[-1] if found else ""


def run_version(version: str, tests: str, pytest_args: str) -> Result:
    """Set up, build and test one CPython version.

    Example::

        result = run_version("3.13", "full", "-x")
        print(result.passed, result.test_s)
    """
    where = where_of(version)
    in_root = where == "root"
    result = Result(python=version, suite=SUITES.get(version, "?") if in_root else where, tests=tests)
    logdir = ROOT / "build" / "matrix"
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"py{version}.log"
    log.write_text("")
    result.log = str(log.relative_to(ROOT))
    prefix: list[str] = []
    try:
        if in_root and version not in SUITES:
            raise StepFailed(f"root: no Debian suite known for CPython {version} "
                             f"(known: {', '.join(SUITES)}; from pyenv: {', '.join(PYENV)})")
        if in_root:
            prefix = [str(INROOT), str(ensure_root(SUITES[version], result))]
        mv = make_vars(version, where)
        started = time.monotonic()
        plugin = ["plugin"] if tests == "full" and where != "pypy" else []
        run_step(prefix + ["make", "all", "tools"] + plugin + mv, log, "build")
        result.build_s = time.monotonic() - started
        venv = {"host": ".venv", "pypy": "build/pypy/venv"}.get(where, f"build/py{version}/venv")
        info = run_step(prefix + [f"{venv}/bin/python", "-c",
                                  "import platform, tornado, greenlet; "
                                  "print('versions', (platform.python_implementation() + '-').replace('CPython-', '')"
                                  " + platform.python_version(), tornado.version, greenlet.__version__)"],
                        log, "build")
        result.cpython, result.tornado, result.greenlet = info.split("versions ", 1)[1].split()[:3]
        result.cpython = result.cpython.replace("-", " ")
        uwsgi = run_step(prefix + [f"{venv}/bin/uwsgi", "--version"], log, "build")
        result.uwsgi = uwsgi.strip().splitlines()[-1]
        selection = " ".join(PYPY_TESTS) if where == "pypy" else "tests" if tests == "full" else " ".join(CORE)
        if where != "host":  # no [deployment] packages in its venv
            pytest_args = " ".join([pytest_args] + [f"--ignore={t}" for t in HOST_ONLY]).strip()
        started = time.monotonic()
        try:
            output = run_step(prefix + ["make", "test", f"TESTS={selection}", f"PYTEST_ARGS={pytest_args}"] + mv,
                              log, "tests")
        finally:
            result.test_s = time.monotonic() - started
            text = log.read_text(errors="replace")
            result.summary = pytest_summary(text)
        result.passed = True
    except StepFailed as exc:
        result.reason = str(exc)
        print(f"matrix: Python {version} FAILED: {exc}", file=sys.stderr, flush=True)
    return result


def table_lines(results: list[Result], when: str) -> list[str]:
    rows = []
    for r in results:
        outcome = f"passed ({r.summary})" if r.passed else f"failed: {r.reason.splitlines()[0]}"
        where = {"host": "host", "pyenv": "pyenv (machine image)", "pypy": "Debian pypy3 (host)"}.get(
            r.suite, f"Debian {r.suite}")
        suite = "PyPy suite" if r.suite == "pypy" else "whole suite" if r.tests == "full" else "core"
        rows.append(f"   {r.cpython if r.cpython != '-' else r.python}, {where}, {r.tornado}, {r.greenlet}, "
                    f"{r.uwsgi}, {suite}, \"{outcome}\", {when}")
    return [".. csv-table:: Supported versions (written by ``make test-matrix``)",
            "   :header: Python, from, tornado, greenlet, uWSGI, tests, result, date", ""] + rows + [""]


def update_readme(results: list[Result], readme: Path = ROOT / "README.rst") -> None:
    """Put the versions table between the versions markers of README.rst.

    Example::

        update_readme([run_version("3.13", "full", "")])
    """
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    start, end = ".. versions-table-start", ".. versions-table-end"
    text = readme.read_text()
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + start + "\n\n" + "\n".join(table_lines(results, when)) + "\n" + end + tail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="*", help="CPython versions, e.g. 3.13, or pypy3.9 (default: the matrix)")
    parser.add_argument("--matrix", action="store_true",
                        help="every version, the whole suite on 3.11 and 3.15 and the core elsewhere")
    parser.add_argument("--readme", action="store_true", help="rewrite the README's Supported versions table")
    parser.add_argument("--pytest-args", default="", help="passed to pytest")
    args = parser.parse_args()
    versions = args.versions or (os.environ.get("MATRIX") or "").split() or MATRIX
    if os.geteuid() != 0 and any(where_of(v) == "root" for v in versions):
        print("matrix: making and entering Debian roots needs root (debootstrap, chroot, mount)", file=sys.stderr)
        return 2
    started = time.monotonic()
    results = []
    for version in versions:
        tests = ("full" if version in FULL else "core") if args.matrix else "full"
        results.append(run_version(version, tests, args.pytest_args))
    total = time.monotonic() - started
    (ROOT / "build" / "matrix" / "results.json").write_text(
        json.dumps({"total_s": total, "results": [asdict(r) for r in results]}, indent=2))
    print(f"\nmatrix: {len(versions)} version(s) in {total:.0f} s")
    for r in results:
        root = "cached" if r.root_cached else f"{r.root_s:.0f} s"
        outcome = f"passed {r.summary}" if r.passed else f"FAILED {r.summary or r.reason.splitlines()[0]}"
        print(f"  {r.python:5} {r.cpython:8} {r.suite:9} root {root:>7}  build {r.build_s:4.0f} s  "
              f"tests ({r.tests}) {r.test_s:4.0f} s  {outcome}")
    if args.readme and versions == MATRIX:
        update_readme(results)
    elif args.readme:
        print("matrix: README table left as it is (it is written for the whole matrix only)")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
