# The one entry point of the project: build, run, test, bench.
# Every version comes from requirements.txt.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
BUILD := build
UWSGI_VERSION := $(shell sed -n 's/^uwsgi==//p' requirements.txt)
SDIST := $(BUILD)/uwsgi-$(UWSGI_VERSION).tar.gz
SRC := $(BUILD)/uwsgi-$(UWSGI_VERSION)
PLUGIN_FILES := $(wildcard plugins/tornado/*.c plugins/tornado/*.h) plugins/tornado/uwsgiplugin.py
UWSGI := $(VENV)/bin/uwsgi
UWSGI_DEBUG := $(BUILD)/debug/uwsgi
PYTEST_ARGS ?=

.PHONY: all plugin run test test-debug debug tools bench bench-quick soak clean distclean

all: $(UWSGI)

# ---- Python environment ----
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	grep -v '^uwsgi==' requirements.txt > $(BUILD).requirements.tmp
	$(VPY) -m pip install --disable-pip-version-check -q -r $(BUILD).requirements.tmp
	rm -f $(BUILD).requirements.tmp
	touch $@

# ---- uWSGI sources (the PyPI source distribution) ----
$(SRC)/.unpacked: requirements.txt | $(VENV)/.installed
	mkdir -p $(BUILD)
	$(VPY) -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: uwsgi==$(UWSGI_VERSION) -d $(BUILD)
	rm -rf $(SRC) && tar -C $(BUILD) -xzf $(SDIST)
	touch $@

# build_uwsgi(output dir, extra CFLAGS, embedded plugins, LDFLAGS): copy our plugin out
# of tree (uWSGI leaves .o files next to the sources it compiles), then build
define build_uwsgi
	rm -rf $(1)/plugin && mkdir -p $(1)/plugin && cp -r plugins/tornado $(1)/plugin/
	cd $(SRC) && CFLAGS="-I$(abspath $(VENV))/include/site/python$(PYVER) $(2)" LDFLAGS="$(4)" \
		UWSGI_EMBED_PLUGINS="$(3)" \
		UWSGI_PROFILE=$(abspath buildconf/tornado.ini) UWSGI_BIN_NAME=$(abspath $(1))/uwsgi \
		UWSGI_FORCE_REBUILD=1 CPUCOUNT=2 \
		$(abspath $(VPY)) uwsgiconfig.py --build > $(abspath $(1))/build.log 2>&1 \
		|| (tail -40 $(abspath $(1))/build.log; exit 1)
endef

PYVER = $(shell $(VPY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
EMBED = tornado=$(abspath $(1))/plugin/tornado,greenlet

$(BUILD)/release/uwsgi: $(SRC)/.unpacked $(PLUGIN_FILES) buildconf/tornado.ini
	$(call build_uwsgi,$(BUILD)/release,-O2,$(call EMBED,$(BUILD)/release))

# the binary, plus uWSGI's uwsgidecorators module, as `pip install uwsgi` would
$(UWSGI): $(BUILD)/release/uwsgi
	rm -f $@ && cp $< $@
	cp $(SRC)/uwsgidecorators.py $$($(VPY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/

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

plugin: tornado_plugin.so

tornado_plugin.so: $(STOCK) $(PLUGIN_FILES)
	rm -rf $(BUILD)/plugin-so && mkdir -p $(BUILD)/plugin-so && cp -r plugins/tornado $(BUILD)/plugin-so/
	cd $(SRC) && PYTHON=$(abspath $(VPY)) CFLAGS="-I$(abspath $(VENV))/include/site/python$(PYVER)" \
		$(abspath $(STOCK)) --build-plugin "$(abspath $(BUILD))/plugin-so/tornado tornado" \
		> $(abspath $(BUILD))/plugin-so/build.log 2>&1 || (tail -40 $(abspath $(BUILD))/plugin-so/build.log; exit 1)
	mv $(SRC)/tornado_plugin.so $@

# ---- benchmarks ----
# build/bench/uwsgi: our engine, greenlet and gevent in one binary;
# build/upstream/uwsgi: uWSGI's own tornado plugin (from the same sdist), for comparison
$(BUILD)/bench/uwsgi: $(SRC)/.unpacked $(PLUGIN_FILES) buildconf/tornado.ini
	$(call build_uwsgi,$(BUILD)/bench,-O2,$(call EMBED,$(BUILD)/bench)$(COMMA)gevent)

$(BUILD)/upstream/uwsgi: $(SRC)/.unpacked buildconf/tornado.ini
	$(call build_uwsgi,$(BUILD)/upstream,-O2,tornado$(COMMA)greenlet)

COMMA := ,
BENCH_DEPS := $(UWSGI) $(BUILD)/bench/uwsgi $(BUILD)/upstream/uwsgi tools

bench: $(BENCH_DEPS)
	$(VPY) bench/run.py --rounds 2 --seconds 3

bench-quick: $(BENCH_DEPS)
	$(VPY) bench/run.py --quick

# graceful reloads, recycling, aborting and dribbling clients under verified load
soak: $(UWSGI)
	$(VPY) bench/soak.py

# ---- tools the tests and benchmarks drive (Debian packages) ----
# nginx: the tests run it in the foreground with their own configs (tests/test_deploy_*.py)
tools:
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx)

# ---- run ----
run: $(UWSGI)
	$(UWSGI) --http-socket 127.0.0.1:9090 --wsgi-file examples/hello.py --tornado 100 --greenlet

# ---- tests ----
test: $(UWSGI) tornado_plugin.so tools
	STOCK_UWSGI=$(abspath $(STOCK)) $(VPY) -m pytest $(PYTEST_ARGS) tests

# ASan options: the interpreter's own allocations are not leaks we can fix;
# greenlet copies stack slices with memcpy, which ASan's memcpy check
# (replace_intrin) reports as stack underflows: our code stays instrumented;
# uWSGI handles a failed malloc (a client announcing a 10^20-byte body), so
# the allocator returns NULL as libc's does instead of aborting.
test-debug: $(UWSGI_DEBUG) tornado_plugin.so tools
	STOCK_UWSGI=$(abspath $(STOCK)) UWSGI_BIN=$(abspath $(UWSGI_DEBUG)) \
		ASAN_OPTIONS=detect_leaks=0:detect_stack_use_after_return=0:replace_intrin=0:allocator_may_return_null=1 \
		$(VPY) -m pytest $(PYTEST_ARGS) tests

clean:
	rm -rf $(BUILD)/release $(BUILD)/debug $(BUILD)/stock $(BUILD)/bench $(BUILD)/upstream $(BUILD)/plugin-so tornado_plugin.so $(UWSGI)

distclean:
	rm -rf $(BUILD) $(VENV) tornado_plugin.so
