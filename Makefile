# The one entry point of the project: build, run, test, bench.
# Every version comes from requirements.txt.

PYTHON ?= python3
# PyPy (make PYTHON=pypy3): its own venv and builds under build/pypy (section "PyPy" below); no [asgi] section there (the ASGI bridge is CPython only)
ifneq ($(findstring pypy,$(notdir $(PYTHON))),)
PYPY := 1
VENV ?= build/pypy/venv
BUILD ?= build/pypy
# no gevent, granian, nginx's deployment clients there: the engine, the examples and the tests
SKIP_REQ ?= benchmarks deployment asgi
TEST_SERVICES ?=
endif
VENV ?= .venv
VPY := $(VENV)/bin/python
BUILD ?= build
UWSGI_VERSION := $(shell sed -n 's/^uwsgi==//p' requirements.txt)
SDIST := $(BUILD)/uwsgi-$(UWSGI_VERSION).tar.gz
SRC := $(BUILD)/uwsgi-$(UWSGI_VERSION)
PLUGIN_FILES := $(wildcard plugins/tornado/*.c plugins/tornado/*.h plugins/tornado/*.py)
VENV_UWSGI := $(VENV)/bin/uwsgi
UWSGI_DEBUG := $(BUILD)/debug/uwsgi
PYTEST_ARGS ?=
TESTS ?= tests
# tornado_plugin.so; a build for another Python (make test PY=...) puts it in its BUILD
PLUGIN_SO ?= tornado_plugin.so
# sections of requirements.txt ("# [name]") left out of the venv, e.g. SKIP_REQ=benchmarks
SKIP_REQ ?=
# what make test starts besides uWSGI (the Debian roots pass TEST_SERVICES= : no deployment tests there)
TEST_SERVICES ?= services

.PHONY: all pypy-packages bench-pypy plugin plugin-for-binary debian-packages run test test-install test-debug test-matrix matrix-tools debug tools services bench bench-quick bench-memory soak autobahn clean distclean

all: $(VENV_UWSGI)

# ---- Python environment ----
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	awk -v skip=" $(SKIP_REQ) " '/^# \[/ { section = substr($$2, 2, length($$2) - 2) } \
		!/^uwsgi==/ && index(skip, " " section " ") == 0' requirements.txt > $(BUILD).requirements.tmp
	$(VPY) -m pip install --disable-pip-version-check -q -r $(BUILD).requirements.tmp
	rm -f $(BUILD).requirements.tmp
	touch $@

# ---- uWSGI sources (the PyPI source distribution) ----
$(SRC)/.unpacked: requirements.txt | $(VENV)/.installed
	mkdir -p $(BUILD)
	$(VPY) -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: uwsgi==$(UWSGI_VERSION) -d $(BUILD)
	rm -rf $(SRC) && tar -C $(BUILD) -xzf $(SDIST)
	touch $@

# build_uwsgi(output dir, extra CFLAGS, embedded plugins, LDFLAGS): keep the plugin
# sources this build used next to its binary (uwsgiplugin.py compiles its own copy
# in $(SRC)/tornado_plugin_build), then build
# (optional: 5 the profile in buildconf/, default tornado.ini; 6 the Python that runs uwsgiconfig.py)
define build_uwsgi
	rm -rf $(1)/plugin && mkdir -p $(1)/plugin && cp -r plugins/tornado $(1)/plugin/
	cd $(SRC) && CFLAGS="-I$(abspath $(VENV))/include/site/python$(PYVER) $(2)" LDFLAGS="$(4)" \
		UWSGI_EMBED_PLUGINS="$(3)" \
		UWSGI_PROFILE=$(abspath buildconf/$(or $(5),tornado.ini)) UWSGI_BIN_NAME=$(abspath $(1))/uwsgi \
		UWSGI_FORCE_REBUILD=1 CPUCOUNT=2 \
		$(or $(6),$(abspath $(VPY))) uwsgiconfig.py --build > $(abspath $(1))/build.log 2>&1 \
		|| (tail -40 $(abspath $(1))/build.log; exit 1)
endef

PYVER = $(shell $(VPY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
EMBED = tornado=$(abspath $(1))/plugin/tornado,greenlet

ifndef PYPY
$(BUILD)/release/uwsgi: $(SRC)/.unpacked $(PLUGIN_FILES) buildconf/tornado.ini
	$(call build_uwsgi,$(BUILD)/release,-O2,$(call EMBED,$(BUILD)/release))

# the binary, plus uWSGI's uwsgidecorators module, as `pip install uwsgi` would
$(VENV_UWSGI): $(BUILD)/release/uwsgi
	rm -f $@ && cp $< $@
	cp $(SRC)/uwsgidecorators.py $$($(VPY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/
endif

# ---- debug build: -O0 -g and AddressSanitizer (the plugin builds with -Wall -Werror always) ----
debug: $(UWSGI_DEBUG)

$(UWSGI_DEBUG): $(SRC)/.unpacked $(PLUGIN_FILES) buildconf/tornado.ini
	$(call build_uwsgi,$(BUILD)/debug,-O0 -g -fsanitize=address -fno-omit-frame-pointer,$(call EMBED,$(BUILD)/debug),-fsanitize=address)

# ---- tornado_plugin.so for an existing uWSGI 2.0.x binary ----
# build/stock/uwsgi stands for such a binary: the same sources with greenlet
# but without our plugin; the test suite loads the .so into it with --plugin.
STOCK := $(BUILD)/stock/uwsgi

$(STOCK): $(SRC)/.unpacked buildconf/tornado.ini
	$(call build_uwsgi,$(BUILD)/stock,-O2,greenlet)

ifdef UWSGI
plugin: plugin-for-binary
else
plugin: $(PLUGIN_SO)
endif

$(PLUGIN_SO): $(STOCK) $(PLUGIN_FILES)
	rm -rf $(BUILD)/plugin-so && mkdir -p $(BUILD)/plugin-so && cp -r plugins/tornado $(BUILD)/plugin-so/
	cd $(SRC) && PYTHON=$(abspath $(VPY)) CFLAGS="-I$(abspath $(VENV))/include/site/python$(PYVER)" \
		$(abspath $(STOCK)) --build-plugin "$(abspath $(BUILD))/plugin-so/tornado tornado" \
		> $(abspath $(BUILD))/plugin-so/build.log 2>&1 || (tail -40 $(abspath $(BUILD))/plugin-so/build.log; exit 1)
	mv $(SRC)/tornado_plugin.so $@

# make plugin UWSGI=/path/to/uwsgi [PYTHON=/usr/bin/python3]: tornado_plugin.so for a uWSGI
# binary you name (a distribution's uwsgi-core included), in build/for-<binary name>/.
# The binary's own `--build-plugin` supplies its uwsgi.h and compile flags;
# uwsgi_python.h comes from the sources of the same version: UWSGI_SOURCE if set,
# else /usr/src/uwsgi (Debian's uwsgi-src) when its version matches, else the
# PyPI sdist of that version. PYTHON is the Python its python plugin runs.
FOR_DIR = $(BUILD)/for-$(notdir $(UWSGI))

plugin-for-binary:
	@bin=$$(command -v $(UWSGI)) && bin=$$(readlink -f $$bin) || { echo "UWSGI=$(UWSGI): no such program"; exit 1; }; \
	version=$$($$bin --version) && base=$${version%%-*} && source="$(UWSGI_SOURCE)"; \
	if [ -z "$$source" ] && grep -qs "^uwsgi_version = '$$base'" /usr/src/uwsgi/uwsgiconfig.py; then source=/usr/src/uwsgi; fi; \
	if [ -z "$$source" ]; then \
		source=$(abspath $(BUILD))/src-$$base; \
		[ -f $$source/plugins/python/uwsgi_python.h ] || { rm -rf $$source && mkdir -p $$source && \
		$(PYTHON) -m pip download -q --no-deps --no-binary :all: uwsgi==$$base -d $$source && \
		tar -C $$source --strip-components=1 -xzf $$source/uwsgi-$$base.tar.gz; } || exit 1; \
	fi; \
	rm -rf $(FOR_DIR) && mkdir -p $(FOR_DIR) && cp -r plugins/tornado $(FOR_DIR)/ && \
	echo "building $(FOR_DIR)/tornado_plugin.so for $$bin (uWSGI $$version, uwsgi_python.h from $$source)" && \
	cd $(FOR_DIR) && PYTHON=$$(command -v $(PYTHON)) UWSGI_SOURCE=$$source \
		$$bin --build-plugin "$(abspath $(FOR_DIR))/tornado tornado" > build.log 2>&1 \
		|| { tail -40 build.log; exit 1; }

# What `make plugin UWSGI=/usr/bin/uwsgi-core PYTHON=/usr/bin/python3` needs on Debian
# (the headers its uwsgi.h includes: libcap-dev, libpcre3-dev), Debian's uWSGI
# to run it in, and a second interpreter (python3-dbg) for the pip recipe's tests.
DEBIAN_PACKAGES := uwsgi-core uwsgi-plugin-python3 uwsgi-plugin-greenlet-python3 uwsgi-src \
	python-greenlet-dev python3-tornado python3-dev python3-venv python3-dbg libcap-dev libpcre3-dev

debian-packages:
	dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1 || (apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq $(DEBIAN_PACKAGES))

# ---- PyPy: make PYTHON=pypy3 (Debian's pypy3, pypy3-dev, pypy3-venv) ----
# uWSGI's pypy plugin with the loader of the engine (buildconf/tornado-pypy.ini),
# then the engine itself, built by that binary as a plugin against PyPy's
# cpyext and opened by the loader from next to the binary
# (plugins/tornado/pyimpl.h says why). The system's pypy3 runs uwsgiconfig.py,
# so the pypy plugin's default --pypy-home is its prefix (/usr); the app's
# packages come from the venv (--pypy-pp, see PYPY_ARGS).
ifdef PYPY
PYPY_PACKAGES := pypy3 pypy3-dev pypy3-venv
PYPY_LIB = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("LDLIBRARY"))')
PYPY_LIBPATH = $(firstword $(wildcard $(addsuffix /$(PYPY_LIB),/usr/lib/$(shell gcc -dumpmachine) /usr/lib /usr/local/lib)))
PYPY_SITE = $(shell $(VPY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
# what a PyPy uWSGI needs besides the options of a CPython one (make run, tests/conftest.py)
PYPY_ARGS = --pypy-lib $(PYPY_LIBPATH) --pypy-pp $(PYPY_SITE)

pypy-packages:
	dpkg -s $(PYPY_PACKAGES) >/dev/null 2>&1 || (apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq $(PYPY_PACKAGES))

$(VENV)/.installed: | pypy-packages

# (the binary holds only the loader: the engine's sources rebuild the engine alone)
$(BUILD)/release/uwsgi: $(SRC)/.unpacked plugins/tornado/pypy_loader.c plugins/tornado/uwsgiplugin.py buildconf/tornado-pypy.ini
	$(call build_uwsgi,$(BUILD)/release,-O2,tornado=$(abspath $(BUILD))/release/plugin/tornado,,tornado-pypy.ini,$(PYTHON))

$(BUILD)/release/tornado_pypy_plugin.so: $(BUILD)/release/uwsgi $(PLUGIN_FILES)
	rm -rf $(BUILD)/engine && mkdir -p $(BUILD)/engine && cp -r plugins/tornado $(BUILD)/engine/
	cd $(SRC) && PYTHON=$$(command -v $(PYTHON)) $(abspath $<) --build-plugin "$(abspath $(BUILD))/engine/tornado tornado" \
		> $(abspath $(BUILD))/engine/build.log 2>&1 || (tail -40 $(abspath $(BUILD))/engine/build.log; exit 1)
	mv $(SRC)/tornado_plugin.so $@

$(VENV_UWSGI): $(BUILD)/release/uwsgi $(BUILD)/release/tornado_pypy_plugin.so
	rm -f $@ $(VENV)/bin/tornado_pypy_plugin.so
	cp $(BUILD)/release/uwsgi $@ && cp $(BUILD)/release/tornado_pypy_plugin.so $(VENV)/bin/
	cp $(SRC)/uwsgidecorators.py $(PYPY_SITE)/
endif

# ---- benchmarks ----
# build/bench/uwsgi: our engine, greenlet and gevent in one binary;
# build/upstream/uwsgi: uWSGI's own tornado plugin (from the same sdist), for comparison
$(BUILD)/bench/uwsgi: $(SRC)/.unpacked $(PLUGIN_FILES) buildconf/tornado.ini
	$(call build_uwsgi,$(BUILD)/bench,-O2,$(call EMBED,$(BUILD)/bench)$(COMMA)gevent)

$(BUILD)/upstream/uwsgi: $(SRC)/.unpacked buildconf/tornado.ini
	$(call build_uwsgi,$(BUILD)/upstream,-O2,tornado$(COMMA)greenlet)

COMMA := ,
BENCH_DEPS := $(VENV_UWSGI) $(BUILD)/bench/uwsgi $(BUILD)/upstream/uwsgi tools bench-pypy

# ours on PyPy (bench/run.py: ours-pypy, in hello, io and c10k)
bench-pypy:
	$(MAKE) PYTHON=pypy3 all

bench: $(BENCH_DEPS)
	$(VPY) bench/run.py --rounds 2 --seconds 3
	$(VPY) bench/websocket.py --rounds 2 --seconds 3
	$(VPY) bench/asgi.py --rounds 2 --seconds 3

bench-quick: $(BENCH_DEPS)
	$(VPY) bench/run.py --quick

# KiB per request in flight by kind of memory (C10K), and per idle websocket; MEMORY_OPTS: uWSGI options
bench-memory: $(BUILD)/bench/uwsgi tools
	$(VPY) bench/memory.py $(MEMORY_OPTS)
	$(VPY) bench/websocket.py --idle-only

# graceful reloads, recycling, aborting and dribbling clients under verified load
soak: $(VENV_UWSGI)
	$(VPY) bench/soak.py

# ---- tools the tests and benchmarks drive (Debian packages) ----
# nginx: the tests run it in the foreground with their own configs (tests/test_deploy_*.py);
# strace: tests/test_engine.py counts the epoll_ctl calls of a worker; curl and
# openssl: tests/test_framing.py (an upload with Expect, a test certificate)
tools:
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	command -v strace >/dev/null || (apt-get update -qq && apt-get install -y -qq strace)
	command -v curl >/dev/null && command -v openssl >/dev/null || (apt-get update -qq && apt-get install -y -qq curl openssl)
	test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx)

# servers and the browser the deployment tests start on 127.0.0.1, tmux for uwsgitop (Debian packages)
SERVICES_PRESENT = ls /usr/lib/postgresql/*/bin/initdb && command -v redis-server && command -v chromium && command -v chromedriver && command -v tmux
services:
	($(SERVICES_PRESENT)) >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server chromium chromium-driver tmux)

# the Debian roots of make test-matrix / make test PY=...
matrix-tools:
	command -v debootstrap >/dev/null || (apt-get update -qq && apt-get install -y -qq debootstrap)

# ---- run ----
run: $(VENV_UWSGI)
ifdef PYPY
	$(VENV_UWSGI) --http-socket 127.0.0.1:9090 $(PYPY_ARGS) --pypy-wsgi-file examples/hello.py --tornado 100 --greenlet
else
	$(VENV_UWSGI) --http-socket 127.0.0.1:9090 --wsgi-file examples/hello.py --tornado 100 --greenlet
endif

# ---- tests ----
# `make test PY=3.13`: the suite on another CPython, in its Debian root (matrix/run.py)
ifneq ($(PY),)
HOST_PY := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
endif

ifneq ($(filter-out $(HOST_PY),$(PY)),)
test: matrix-tools
	$(PYTHON) matrix/run.py --pytest-args "$(PYTEST_ARGS)" $(PY)
else
# the plugin .so (and the stock uWSGI it is built with) only when tests/test_build.py runs
test: $(VENV_UWSGI) $(if $(PYPY),,$(if $(filter tests tests/ tests/test_build.py,$(TESTS)),$(PLUGIN_SO))) tools $(TEST_SERVICES)
	STOCK_UWSGI=$(abspath $(STOCK)) PLUGIN_SO_PATH=$(abspath $(PLUGIN_SO)) UWSGI_VENV=$(abspath $(VENV)) \
		$(if $(PYPY),UWSGI_PYPY_ARGS="$(PYPY_ARGS)") \
		$(VPY) -m pytest $(PYTEST_ARGS) --ignore=tests/install $(TESTS)
endif

# every supported CPython (README: Supported versions, rewritten here)
test-matrix: matrix-tools
	$(PYTHON) matrix/run.py --matrix --readme --pytest-args "$(PYTEST_ARGS)"

# The other ways in: the README's pip recipe for two interpreters, and Debian's
# uWSGI with `make plugin UWSGI=/usr/bin/uwsgi-core` (tests/install/)
test-install: $(VENV)/.installed $(PLUGIN_SO) debian-packages
	FIRST_PYTHON=$$(command -v $(PYTHON)) SECOND_PYTHON=/usr/bin/python3-dbg \
		$(VPY) -m pytest $(PYTEST_ARGS) tests/install

# ASan options: the interpreter's own allocations are not leaks we can fix;
# greenlet copies stack slices with memcpy, which ASan's memcpy check
# (replace_intrin) reports as stack underflows: our code stays instrumented;
# uWSGI handles a failed malloc (a client announcing a 10^20-byte body), so
# the allocator returns NULL as libc's does instead of aborting.
test-debug: $(UWSGI_DEBUG) $(PLUGIN_SO) tools services
	STOCK_UWSGI=$(abspath $(STOCK)) PLUGIN_SO_PATH=$(abspath $(PLUGIN_SO)) UWSGI_VENV=$(abspath $(VENV)) \
		UWSGI_BIN=$(abspath $(UWSGI_DEBUG)) UWSGI_ASAN=1 \
		ASAN_OPTIONS=detect_leaks=0:detect_stack_use_after_return=0:replace_intrin=0:allocator_may_return_null=1 \
		$(VPY) -m pytest $(PYTEST_ARGS) --ignore=tests/install $(TESTS)

# ---- Autobahn's websocket fuzzing client against the engine (tests/autobahn/run.py) ----
# autobahntestsuite is Python 2 only: its own virtualenv of a Python 2.7
# (AUTOBAHN_PYTHON), made with a virtualenv that still supports it, every
# version pinned in tests/autobahn/requirements-py27.txt
# (the first that runs: pyenv's, the system's)
AUTOBAHN_PYTHON ?= $(shell for p in $(wildcard $(HOME)/.pyenv/versions/2.7*/bin/python2.7) /usr/bin/python2.7 python2.7; do \
	$$p -c '' 2>/dev/null && { echo $$p; break; }; done)
AUTOBAHN_REQ := tests/autobahn/requirements-py27.txt
AUTOBAHN_VENV := $(BUILD)/autobahn/venv

$(AUTOBAHN_VENV)/.installed: $(AUTOBAHN_REQ)
	rm -rf $(BUILD)/autobahn/vendor $(AUTOBAHN_VENV) && mkdir -p $(BUILD)/autobahn
	$(AUTOBAHN_PYTHON) -m pip install --disable-pip-version-check -q --target $(BUILD)/autobahn/vendor $$(grep '^virtualenv==' $(AUTOBAHN_REQ))
	PYTHONPATH=$(BUILD)/autobahn/vendor $(AUTOBAHN_PYTHON) -m virtualenv -q $(AUTOBAHN_VENV)
	grep -v '^virtualenv==' $(AUTOBAHN_REQ) > $(BUILD)/autobahn/requirements.tmp
	$(AUTOBAHN_VENV)/bin/pip install --disable-pip-version-check -q -r $(BUILD)/autobahn/requirements.tmp
	rm -f $(BUILD)/autobahn/requirements.tmp
	touch $@

# cases 1-7 and 9 (about 2 minutes); UWSGI_BIN=build/debug/uwsgi runs it under ASan
autobahn: $(VENV_UWSGI) $(AUTOBAHN_VENV)/.installed
	WSTEST=$(abspath $(AUTOBAHN_VENV))/bin/wstest $(VPY) tests/autobahn/run.py

clean:
	rm -rf $(BUILD)/release $(BUILD)/debug $(BUILD)/stock $(BUILD)/bench $(BUILD)/upstream $(BUILD)/plugin-so $(BUILD)/for-* $(PLUGIN_SO) $(VENV_UWSGI)

# never while a Debian root of the matrix has something mounted (the repository, bind-mounted)
distclean:
	! grep -q " $(abspath $(BUILD))/roots/" /proc/self/mounts || (echo "a matrix root is in use: not removing $(BUILD)"; exit 1)
	rm -rf $(BUILD) $(VENV) tornado_plugin.so
