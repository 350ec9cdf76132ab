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

.PHONY: all plugin run test test-debug debug clean distclean

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

# build_uwsgi(output dir, extra CFLAGS): copy the plugin out of tree (uWSGI
# leaves .o files next to the sources it compiles), then build the profile
define build_uwsgi
	rm -rf $(1)/plugin && mkdir -p $(1)/plugin && cp -r plugins/tornado $(1)/plugin/
	cd $(SRC) && CFLAGS="-I$(abspath $(VENV))/include/site/python$(PYVER) $(2)" \
		UWSGI_EMBED_PLUGINS="tornado=$(abspath $(1))/plugin/tornado,greenlet" \
		UWSGI_PROFILE=$(abspath buildconf/tornado.ini) UWSGI_BIN_NAME=$(abspath $(1))/uwsgi \
		UWSGI_FORCE_REBUILD=1 CPUCOUNT=2 \
		$(abspath $(VPY)) uwsgiconfig.py --build > $(abspath $(1))/build.log 2>&1 \
		|| (tail -40 $(abspath $(1))/build.log; exit 1)
endef

PYVER = $(shell $(VPY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

$(BUILD)/release/uwsgi: $(SRC)/.unpacked $(PLUGIN_FILES) buildconf/tornado.ini
	$(call build_uwsgi,$(BUILD)/release,-O2)

$(UWSGI): $(BUILD)/release/uwsgi
	rm -f $@ && cp $< $@

# ---- debug build: -O0 -g -Werror and AddressSanitizer ----
debug: $(UWSGI_DEBUG)

$(UWSGI_DEBUG): $(SRC)/.unpacked $(PLUGIN_FILES) buildconf/tornado.ini
	$(call build_uwsgi,$(BUILD)/debug,-O0 -g -fsanitize=address -fno-omit-frame-pointer)

# ---- tornado_plugin.so for an existing uWSGI 2.0.x binary ----
plugin: tornado_plugin.so

tornado_plugin.so: $(UWSGI) $(PLUGIN_FILES)
	rm -rf $(BUILD)/plugin-so && mkdir -p $(BUILD)/plugin-so && cp -r plugins/tornado $(BUILD)/plugin-so/
	cd $(SRC) && PYTHON=$(abspath $(VPY)) CFLAGS="-I$(abspath $(VENV))/include/site/python$(PYVER)" \
		$(abspath $(UWSGI)) --build-plugin "$(abspath $(BUILD))/plugin-so/tornado tornado" \
		> $(abspath $(BUILD))/plugin-so/build.log 2>&1 || (tail -40 $(abspath $(BUILD))/plugin-so/build.log; exit 1)
	cp $(SRC)/tornado_plugin.so $@

# ---- run ----
run: $(UWSGI)
	$(UWSGI) --http-socket 127.0.0.1:9090 --wsgi-file examples/hello.py --tornado 100 --greenlet

# ---- tests ----
test: $(UWSGI) tornado_plugin.so
	$(VPY) -m pytest $(PYTEST_ARGS) tests

test-debug: $(UWSGI_DEBUG)
	UWSGI_BIN=$(abspath $(UWSGI_DEBUG)) ASAN_OPTIONS=detect_leaks=0:detect_stack_use_after_return=0 \
		$(VPY) -m pytest $(PYTEST_ARGS) tests

clean:
	rm -rf $(BUILD)/release $(BUILD)/debug $(BUILD)/plugin-so tornado_plugin.so $(UWSGI)

distclean:
	rm -rf $(BUILD) $(VENV) tornado_plugin.so
