/*
 * pyimpl.h: the one place where the two Python implementations the engine
 * runs on differ (tornado.h includes it; every other file is the same C for
 * both). Floor 0: it calls nothing of the engine.
 *
 * CPython: the engine sits beside uWSGI's python plugin and uses its state
 * (`up`, get_uwsgi_pydict(), the GIL macros of uwsgi_python.h) and
 * greenlet's C API (greenlet/greenlet.h, in event.c only).
 *
 * PyPy (TW_PYPY, set by uwsgiplugin.py when pypy3 builds the plugin): the
 * engine sits beside uWSGI's pypy plugin and reaches PyPy through cpyext,
 * PyPy's emulation of the CPython C API (Python.h maps Py* to PyPy*).
 * What cpyext does not have is supplied by pypy.c:
 *   - greenlet has no C API on PyPy (it is a Python module over continulets):
 *     the PyGreenlet_* names event.c uses become calls of that module;
 *   - there is no python plugin: no `up`, the uwsgi module is a Python module
 *     the pypy plugin made (get_uwsgi_pydict() imports it);
 *   - the pypy plugin calls Python through cffi callbacks, and cffi releases
 *     the GIL around every C call: uWSGI's hooks (wait, suspend, current
 *     request) reach the engine without the GIL, and the pypy plugin's own
 *     entry points (the request, signal handlers) must be called without it.
 *     pypy.c wraps both at the worker's start (tw_impl_worker_init);
 *   - libpypy must not be globally visible when the pypy plugin starts (it
 *     would take PyPy for started and skip its start-up): the engine is a
 *     shared object of its own that a small loader compiled into uWSGI
 *     (pypy_loader.c) opens RTLD_LOCAL, and its guard (guard.c) must not call
 *     Python at load time (PyPy has not started yet).
 */
#ifndef UWSGI_TORNADO_PYIMPL_H
#define UWSGI_TORNADO_PYIMPL_H

#ifndef TW_PYPY

#include <uwsgi_python.h>

/* what guard.c compares with the running interpreter */
#define TW_BUILT_PYTHON Py_STRINGIFY(PY_MAJOR_VERSION) "." Py_STRINGIFY(PY_MINOR_VERSION)
#define tw_running_python() Py_GetVersion()
/* the python plugin's state, whose layout the plugin was compiled against */
#define TW_PY_STATE up

extern struct uwsgi_server uwsgi;
extern struct uwsgi_python up;

static inline void tw_gil_get(void) {
	pthread_setspecific(up.upt_gil_key, (void *) PyGILState_Ensure());
}

static inline void tw_gil_release(void) {
	PyGILState_Release((PyGILState_STATE) (long) pthread_getspecific(up.upt_gil_key));
}

/* the worker's loop start (plugin.c): take the GIL, and give uWSGI's
 * threads the engine's way of taking it */
static inline void tw_impl_worker_init(void) {
	UWSGI_GET_GIL
	if (uwsgi.has_threads) {
		up.gil_get = tw_gil_get;
		up.gil_release = tw_gil_release;
	}
}

/* uWSGI's hooks are set (plugin.c): the python plugin calls them holding the GIL */
static inline void tw_impl_hooks_installed(void) {
}

/* options only one implementation has (plugin.c's table): the ASGI bridge
 * and the engine's environ work on the python plugin's apps (asgi.c,
 * environ.c, response.c, compiled for CPython only: uwsgiplugin.py) */
#define TW_IMPL_OPTIONS \
	{"tornado-asgi", required_argument, 0, "load an ASGI application ([mountpoint=]module:callable) on the tornado loop engine, its requests served as uWSGI's own", uwsgi_opt_add_string_list, &utornado.asgi_apps, 0}, \
	{"tornado-stock-wsgi", no_argument, 0, "build the WSGI environ and send the app's response with the python plugin's own subhandlers instead of the engine's (to compare)", uwsgi_opt_true, &utornado.stock_wsgi, 0},
/* plugin hooks only one implementation has (plugin.c's struct) */
#define TW_IMPL_PLUGIN_HOOKS .init_apps = tw_asgi_init_apps,
/* the worker's engine is set up: the environ and response subhandlers of the apps, then the ASGI apps' lifespan */
#define tw_impl_apps_install() (utornado.stock_wsgi ? 0 : (tw_environ_install() < 0 || tw_response_install() < 0) ? -1 : 0)
#define tw_impl_apps_start() tw_asgi_worker_start()
#define tw_impl_apps_stop() tw_asgi_worker_stop()
/* a head passed framing (loop.c): the ASGI bridge keeps its raw header lines */
#define tw_impl_keep_head(c, head, len) tw_asgi_keep_head(c, head, len)
/* the loop's call_at/call_later on the engine's heap (calls.c) */
#define TW_IMPL_LOOP_CALLS 1

#else /* PyPy */

#include <uwsgi.h>
#include <Python.h>

/* "PyPy 3.9": the version guard.c compares, in the form tw_running_python() returns */
#define TW_BUILT_PYTHON "PyPy " Py_STRINGIFY(PY_MAJOR_VERSION) "." Py_STRINGIFY(PY_MINOR_VERSION)
/* CPython's version when a CPython is in the process (the engine loaded into
 * CPython's uWSGI), else TW_BUILT_PYTHON (the engine is linked against the
 * libpypy of its version); never calls PyPy, which has not started yet */
#include <dlfcn.h>
static inline const char *tw_running_python(void) {
	const char *(*cpython_version)(void) = (const char *(*)(void)) dlsym(RTLD_DEFAULT, "Py_GetVersion");
	return cpython_version ? cpython_version() : TW_BUILT_PYTHON;
}
/* uWSGI's own state (the pypy plugin keeps no public one) */
#define TW_PY_STATE uwsgi

#define uwsgi_pyexit {PyErr_Print(); exit(1);}
/* borrowed: the dict of a module in sys.modules (the uwsgi module of the pypy plugin) */
PyObject *get_uwsgi_pydict(char *module);

/* the worker's loop start: take the GIL (the loop runs holding it) */
void tw_impl_worker_init(void);
/* uWSGI's hooks are set: wrap them to take the GIL, and the pypy plugin's
 * entry points to be called without it */
void tw_impl_hooks_installed(void);

/* --greenlet: PyPy's greenlet (continulets) is built in; uWSGI's greenlet
 * plugin is CPython's, so the option that selects it is the engine's here */
void tw_pypy_opt_greenlet(char *opt, char *value, void *unused);
#define TW_IMPL_OPTIONS \
	{"greenlet", no_argument, 0, "use PyPy's built-in greenlet as the suspend engine of the tornado loop engine", tw_pypy_opt_greenlet, NULL, 0},

/* before the app loads: mend what the pypy plugin's uwsgi module gets wrong
 * on Python 3 and the engine's users need (uwsgidecorators' @signal, @timer) */
void tw_pypy_preinit_apps(void);
#define TW_IMPL_PLUGIN_HOOKS .preinit_apps = tw_pypy_preinit_apps,
/* the python plugin's apps (ASGI, the engine's environ) are CPython's only */
#define tw_impl_apps_install() 0
#define tw_impl_apps_start()
#define tw_impl_apps_stop()
#define tw_impl_keep_head(c, head, len) ((void) 0)
/* asyncio's own timers (calls.c is CPython's) */
#define TW_IMPL_LOOP_CALLS 0

/* greenlet's C API, over PyPy's greenlet module (pypy.c) */
typedef PyObject PyGreenlet;
extern void *_PyGreenlet_API;
void tw_pypy_greenlet_import(void);
PyObject *tw_pypy_greenlet_getcurrent(void);
PyObject *tw_pypy_greenlet_new(PyObject *run, PyObject *parent);
PyObject *tw_pypy_greenlet_switch(PyObject *greenlet, PyObject *args, PyObject *kwargs);
int tw_pypy_greenlet_dead(PyObject *greenlet);
extern PyObject *tw_pypy_greenlet_exit, *tw_pypy_greenlet_error;
#define PyExc_GreenletExit tw_pypy_greenlet_exit
#define PyExc_GreenletError tw_pypy_greenlet_error
#define PyGreenlet_Import() tw_pypy_greenlet_import()
#define PyGreenlet_GetCurrent() tw_pypy_greenlet_getcurrent()
#define PyGreenlet_New(run, parent) tw_pypy_greenlet_new(run, parent)
#define PyGreenlet_Switch(greenlet, args, kwargs) tw_pypy_greenlet_switch(greenlet, args, kwargs)
/* event.c asks "started and not active": PyPy's greenlet says "dead" */
#define PyGreenlet_STARTED(greenlet) tw_pypy_greenlet_dead(greenlet)
#define PyGreenlet_ACTIVE(greenlet) 0

#endif

#endif
