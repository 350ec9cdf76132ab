/*
 * guard.c: floor 0 (calls nothing of the engine): a tornado_plugin.so
 * refuses to run inside a uWSGI or a Python other than the ones it was
 * compiled for.
 *
 * uWSGI checks nothing when it loads a plugin. A plugin compiled against
 * another uWSGI reads struct uwsgi_server (and the python plugin's struct
 * uwsgi_python) at the wrong offsets: --tornado is silently ignored, then a
 * segmentation fault. So the check runs as an ELF constructor, inside
 * dlopen(), before uWSGI reads anything from the plugin, and it reads no
 * uWSGI structure itself: the running binary's version comes from
 * uwsgi_get_cflags() (the text `uwsgi --cflags` prints), the layouts from the
 * sizes of the exported `uwsgi` and `up` symbols, Python's version from
 * Py_GetVersion() (pyimpl.h: on PyPy, which has not started yet, from what
 * the process holds: a CPython, or the libpypy the engine is linked with).
 * Built into the binary (UWSGI_EMBED_PLUGINS), it always passes.
 */
#include "tornado.h"
#include <link.h>

/* The running uWSGI's version ("2.0.21-debian") into buf, from the
 * -DUWSGI_VERSION="\"...\"" of its compile flags. */
static void tw_running_uwsgi_version(char *buf, size_t len) {
	static const char key[] = "-DUWSGI_VERSION=\"\\\"";
	char *cflags = uwsgi_get_cflags();
	char *start = cflags ? strstr(cflags, key) : NULL;
	snprintf(buf, len, "(unknown version)");
	if (start) {
		start += sizeof(key) - 1;
		char *end = strstr(start, "\\\"");
		if (end) snprintf(buf, len, "%.*s", (int) (end - start), start);
	}
	free(cflags);
}

/* The size of the object `addr` points into, as the symbol table of the
 * object that defines it says; 0 when unknown. */
static size_t tw_symbol_size(void *addr) {
	Dl_info info;
	const ElfW(Sym) *sym = NULL;
	if (!dladdr1(addr, &info, (void **) &sym, RTLD_DL_SYMENT) || !sym) return 0;
	return sym->st_size;
}

/* python: the running Python's "X.Y" when it is not the one built for */
static void tw_refuse(const char *why, const char *python, int python_len) {
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	exe[n > 0 ? n : 0] = 0;
	dprintf(2, "%s: rebuild it with `make plugin UWSGI=%s%s%.*s`\n", why, n > 0 ? exe : "/path/to/uwsgi",
		python ? " PYTHON=python" : "", python ? python_len : 0, python ? python : "");
	/* no exit(): uWSGI's atexit handlers would read the mismatched structures */
	_exit(1);
}

__attribute__((constructor)) static void tw_guard(void) {
	char running[64], why[512];
	tw_running_uwsgi_version(running, sizeof(running));
	/* "3.11.2 (main, ...": compare "3.11" */
	const char *py = tw_running_python();   /* pyimpl.h */
	size_t py_len = strcspn(py, ".");
	if (py[py_len]) py_len += 1 + strcspn(py + py_len + 1, ". ");
	int same_python = py_len == strlen(TW_BUILT_PYTHON) && !strncmp(py, TW_BUILT_PYTHON, py_len);
	if (strcmp(running, UWSGI_VERSION) || !same_python) {
		snprintf(why, sizeof(why), "tornado_plugin.so was built for uWSGI %s / Python %s, this is uWSGI %s / Python %.*s",
			UWSGI_VERSION, TW_BUILT_PYTHON, running, (int) py_len, py);
		tw_refuse(why, same_python ? NULL : py, (int) py_len);
	}
	/* same version, another build of it (other compile options) */
	size_t server = tw_symbol_size(&uwsgi), python = tw_symbol_size(&TW_PY_STATE);
	if ((server && server != sizeof(uwsgi)) || (python && python != sizeof(TW_PY_STATE))) {
		snprintf(why, sizeof(why), "tornado_plugin.so was built for another build of uWSGI %s / Python %s "
			"(struct uwsgi_server: %zu bytes in the plugin, %zu in this uWSGI; struct uwsgi_python: %zu, %zu)",
			UWSGI_VERSION, TW_BUILT_PYTHON, sizeof(uwsgi), server, sizeof(TW_PY_STATE), python);
		tw_refuse(why, NULL, 0);
	}
}
