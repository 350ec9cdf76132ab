/*
 * pypy.c: floor 0 (calls nothing of the engine): what the engine needs of
 * PyPy that cpyext does not give, compiled only when pypy3 builds the plugin
 * (pyimpl.h says why each piece exists).
 *
 *   - greenlet: PyPy's greenlet is a Python module (lib_pypy/greenlet.py,
 *     on continulets), with no C API; the PyGreenlet_* names event.c uses
 *     call it (getcurrent, greenlet(run, parent), switch, dead);
 *   - the uwsgi module: a Python module the pypy plugin put in sys.modules;
 *   - the GIL: the pypy plugin's Python calls uWSGI through cffi, which
 *     releases the GIL around the call, so uWSGI's hooks reach the engine
 *     without it: each hook is wrapped to take it (and give it back) when
 *     the thread does not hold it. The other way round, the pypy plugin's
 *     entry points (the request handler, uWSGI signal handlers) are cffi
 *     callbacks that take the GIL themselves: they are wrapped to be called
 *     without it, or the first request would wait for itself forever.
 * The worker's loop runs holding the GIL; every greenlet switch happens
 * holding it, so the state is the same on every stack.
 */
#include "tornado.h"

#ifdef TW_PYPY
/* ---- greenlet over PyPy's greenlet module ---- */

void *_PyGreenlet_API;          /* the greenlet class once imported (event.c checks it) */
static PyObject *gl_class;      /* owned: greenlet.greenlet */
static PyObject *gl_getcurrent; /* owned: greenlet.getcurrent */
static PyObject *str_switch, *str_dead;
PyObject *tw_pypy_greenlet_exit;  /* owned: greenlet.GreenletExit */
PyObject *tw_pypy_greenlet_error; /* owned: greenlet.error */

void tw_pypy_greenlet_import(void) {
	PyObject *module = PyImport_ImportModule("greenlet");
	if (!module) return;
	gl_class = PyObject_GetAttrString(module, "greenlet");
	gl_getcurrent = PyObject_GetAttrString(module, "getcurrent");
	tw_pypy_greenlet_exit = PyObject_GetAttrString(module, "GreenletExit");
	tw_pypy_greenlet_error = PyObject_GetAttrString(module, "error");
	Py_DECREF(module);
	str_switch = PyUnicode_InternFromString("switch");
	str_dead = PyUnicode_InternFromString("dead");
	if (gl_class && gl_getcurrent && tw_pypy_greenlet_exit && tw_pypy_greenlet_error && str_switch && str_dead) _PyGreenlet_API = gl_class;
}

/* new reference */
PyObject *tw_pypy_greenlet_getcurrent(void) {
	return PyObject_CallNoArgs(gl_getcurrent);
}

/* new reference */
PyObject *tw_pypy_greenlet_new(PyObject *run, PyObject *parent) {
	return PyObject_CallFunctionObjArgs(gl_class, run, parent, NULL);
}

/* new reference to what the greenlet was switched back with; args: a tuple or NULL */
PyObject *tw_pypy_greenlet_switch(PyObject *greenlet, PyObject *args, PyObject *kwargs) {
	PyObject *method = PyObject_GetAttr(greenlet, str_switch);
	if (!method) return NULL;
	PyObject *empty = args ? NULL : PyTuple_New(0);
	PyObject *ret = (args || empty) ? PyObject_Call(method, args ? args : empty, kwargs) : NULL;
	Py_XDECREF(empty);
	Py_DECREF(method);
	return ret;
}

int tw_pypy_greenlet_dead(PyObject *greenlet) {
	PyObject *dead = PyObject_GetAttr(greenlet, str_dead);
	int ret = dead ? PyObject_IsTrue(dead) : 0;
	if (!dead || ret < 0) PyErr_Clear();
	Py_XDECREF(dead);
	return ret > 0;
}

/* ---- the uwsgi module ---- */

/* borrowed (the module stays in sys.modules), NULL with an exception set */
PyObject *get_uwsgi_pydict(char *name) {
	PyObject *module = PyImport_ImportModule(name);
	if (!module) return NULL;
	PyObject *dict = PyModule_GetDict(module);
	Py_DECREF(module);
	return dict;
}

/* ---- the GIL ---- */

/* take the GIL unless this thread holds it; returns whether it took it */
static int gil_take(void) {
	if (PyGILState_Check()) return 0;
	PyGILState_Ensure();
	return 1;
}

static void gil_drop(int taken) {
	if (taken) PyGILState_Release(PyGILState_UNLOCKED);
}

void tw_impl_worker_init(void) {
	/* held from here until the worker exits */
	gil_take();
}

/* uWSGI's hooks as the engine set them, called by the wrappers below */
static struct {
	int (*wait_read)(int, int);
	int (*wait_write)(int, int);
	int (*wait_read2)(int, int, int, int *);
	int (*wait_milliseconds)(int);
	void (*schedule_fix)(struct wsgi_request *);
	void (*schedule_to_main)(struct wsgi_request *);
	struct wsgi_request *(*current_req)(void);
	void (*gbcw)(void);
	int (*request)(struct wsgi_request *);
	int (*signal_handler)(uint8_t, void *);
} engine;

static int gil_wait_read(int fd, int timeout) {
	int taken = gil_take();
	int ret = engine.wait_read(fd, timeout);
	gil_drop(taken);
	return ret;
}

static int gil_wait_write(int fd, int timeout) {
	int taken = gil_take();
	int ret = engine.wait_write(fd, timeout);
	gil_drop(taken);
	return ret;
}

static int gil_wait_read2(int fd0, int fd1, int timeout, int *fd) {
	int taken = gil_take();
	int ret = engine.wait_read2(fd0, fd1, timeout, fd);
	gil_drop(taken);
	return ret;
}

static int gil_wait_milliseconds(int timeout) {
	int taken = gil_take();
	int ret = engine.wait_milliseconds(timeout);
	gil_drop(taken);
	return ret;
}

static void gil_schedule_fix(struct wsgi_request *wsgi_req) {
	int taken = gil_take();
	engine.schedule_fix(wsgi_req);
	gil_drop(taken);
}

static void gil_schedule_to_main(struct wsgi_request *wsgi_req) {
	int taken = gil_take();
	engine.schedule_to_main(wsgi_req);
	gil_drop(taken);
}

static struct wsgi_request *gil_current_wsgi_req(void) {
	int taken = gil_take();
	struct wsgi_request *wsgi_req = engine.current_req();
	gil_drop(taken);
	return wsgi_req;
}

static void gil_gbcw(void) {
	int taken = gil_take();
	engine.gbcw();
	gil_drop(taken);
}

/* the pypy plugin's entry points: called without the GIL (their cffi callbacks take it) */
static int nogil_request(struct wsgi_request *wsgi_req) {
	int held = PyGILState_Check();
	PyThreadState *state = held ? PyEval_SaveThread() : NULL;
	int ret = engine.request(wsgi_req);
	if (held) PyEval_RestoreThread(state);
	return ret;
}

static int nogil_signal_handler(uint8_t sig, void *handler) {
	int held = PyGILState_Check();
	PyThreadState *state = held ? PyEval_SaveThread() : NULL;
	int ret = engine.signal_handler(sig, handler);
	if (held) PyEval_RestoreThread(state);
	return ret;
}

/* keep uWSGI's hook as the engine set it in `saved`, and put `wrapper` in its place */
#define WRAP(hook, saved, wrapper) do { saved = uwsgi.hook; uwsgi.hook = wrapper; } while (0)

void tw_impl_hooks_installed(void) {
	WRAP(wait_read_hook, engine.wait_read, gil_wait_read);
	WRAP(wait_write_hook, engine.wait_write, gil_wait_write);
	WRAP(wait_read2_hook, engine.wait_read2, gil_wait_read2);
	WRAP(wait_milliseconds_hook, engine.wait_milliseconds, gil_wait_milliseconds);
	WRAP(schedule_fix, engine.schedule_fix, gil_schedule_fix);
	WRAP(schedule_to_main, engine.schedule_to_main, gil_schedule_to_main);
	WRAP(current_wsgi_req, engine.current_req, gil_current_wsgi_req);
	engine.gbcw = uwsgi.gbcw_hook;
	if (engine.gbcw) uwsgi.gbcw_hook = gil_gbcw;
	int i;
	for (i = 0; i < 256; i++) {
		struct uwsgi_plugin *p = uwsgi.p[i];
		if (!p || !p->name || strcmp(p->name, "pypy") || p->request == nogil_request) continue;
		engine.request = p->request;
		engine.signal_handler = p->signal_handler;
		p->request = nogil_request;
		if (p->signal_handler) p->signal_handler = nogil_signal_handler;
	}
}

/* ---- the pypy plugin's uwsgi module on Python 3 ---- */

/* uwsgi.register_signal(signum, kind, handler) hands `kind` (a str, as
 * uwsgidecorators and the docs pass it) to cffi as char[], which takes bytes
 * only on Python 3: every @signal and @timer of an app failed to import */
static const char mend_uwsgi_module[] =
	"import uwsgi\n"
	"def _bytes_kind(register):\n"
	"    def register_signal(signum, kind, handler):\n"
	"        return register(signum, kind.encode() if isinstance(kind, str) else kind, handler)\n"
	"    return register_signal\n"
	"uwsgi.register_signal = _bytes_kind(uwsgi.register_signal)\n";

void tw_pypy_preinit_apps(void) {
	int taken = gil_take();
	if (PyRun_SimpleString(mend_uwsgi_module)) uwsgi_log("[tornado] unable to mend uwsgi.register_signal\n");
	gil_drop(taken);
}

/* ---- --greenlet ---- */

/* PyPy's greenlet needs no start-up: the engine's hooks replace this
 * placeholder in every worker; it only says that a suspend engine is there */
static void tw_pypy_no_suspend(struct wsgi_request *wsgi_req) {
	uwsgi_log("[tornado] suspend outside of the tornado loop engine, ignored\n");
}

void tw_pypy_opt_greenlet(char *opt, char *value, void *unused) {
	uwsgi.schedule_to_main = tw_pypy_no_suspend;
	uwsgi.schedule_to_req = NULL;
}

#endif
