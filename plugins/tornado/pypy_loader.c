/*
 * pypy_loader.c: floor 0 (calls nothing of the engine, includes no Python):
 * the plugin named "tornado" that a PyPy build of uWSGI embeds instead of
 * the engine (uwsgiplugin.py picks it when pypy3 builds uWSGI).
 *
 * The engine is linked against libpypy (cpyext), and uWSGI opens what it
 * embeds or loads with RTLD_GLOBAL. uWSGI's pypy plugin starts PyPy only
 * when libpypy is not globally visible yet (otherwise it takes PyPy for
 * started, skips its start-up, and the first Python call crashes). So the
 * engine is a shared object of its own, tornado_pypy_plugin.so next to the
 * uwsgi binary, and this loader opens it RTLD_LOCAL when uWSGI loads its
 * embedded plugins, before the options are parsed and before the pypy
 * plugin starts PyPy (which then opens the same libpypy globally). The
 * loader then becomes the engine: its plugin struct is copied over this one.
 */
#include <uwsgi.h>

extern struct uwsgi_server uwsgi;
struct uwsgi_plugin tornado_plugin;

#define TW_ENGINE_FILE "tornado_pypy_plugin.so"

static void tw_loader_on_load(void) {
	char exe[PATH_MAX], path[PATH_MAX + sizeof(TW_ENGINE_FILE)];
	if (!realpath("/proc/self/exe", exe)) {
		uwsgi_error("[tornado] realpath(/proc/self/exe)");
		exit(1);
	}
	char *slash = strrchr(exe, '/');
	if (slash) *slash = 0;
	snprintf(path, sizeof(path), "%s/%s", exe, TW_ENGINE_FILE);
	void *engine_so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!engine_so) {
		/* not fatal: this binary builds the engine (--build-plugin) before
		 * it exists; without it, --tornado is an unknown option */
		uwsgi_log("the tornado loop engine for PyPy cannot be loaded: %s\n", dlerror());
		return;
	}
	struct uwsgi_plugin *engine = dlsym(engine_so, "tornado_plugin");
	if (!engine || !engine->name || strcmp(engine->name, "tornado")) {
		uwsgi_log("the tornado loop engine for PyPy: %s has no tornado plugin\n", path);
		exit(1);
	}
	tornado_plugin = *engine;
	if (tornado_plugin.on_load) tornado_plugin.on_load();
}

struct uwsgi_plugin tornado_plugin = {
	.name = "tornado",
	.on_load = tw_loader_on_load,
};
