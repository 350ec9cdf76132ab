/*
 * hooks.c: floor 1 (calls event.c only): uWSGI's suspend and wait hooks,
 * and the core async API, on top of
 * the event layer (event.c).
 *
 * uWSGI calls wait_read_hook/wait_write_hook/wait_read2_hook/
 * wait_milliseconds_hook whenever a request would block (reading the body,
 * writing the response, websockets, ...). In a core they become
 * tw_wait_fds() or tw_wait_until(). Outside a core (a greenlet of the app's own, a signal
 * handler) they fall back to tw_green_wait(), which uses the asyncio loop
 * directly: slower, but such waits are rare. In the hub itself nothing can
 * wait; that is an error, never a crash.
 *
 * The core async API (uwsgi.wait_fd_read/write + yield or uwsgi.suspend(),
 * x-wsgiorg.fdevent) keeps its own bookkeeping in wsgi_req->waiting_fds and
 * wsgi_req->async_timeout on uwsgi.async_queue and uwsgi.rb_async_timeouts.
 * We give it a real uwsgi.async_queue, watch that queue from our epoll, and
 * map its one-second timeouts onto the core's timer. uwsgi.async_sleep() is
 * replaced by a version that really sleeps, with sub-second precision.
 */
#include "tornado.h"

/*
 * greenlet -> core, for a greenlet the loop switched into without us (the
 * glue's timers, the callback style of the upstream docs: me.switch() from an
 * IOLoop callback): an open-addressing table with linear probing, twice the
 * cores, allocated once per worker. A scan of the cores instead cost O(cores)
 * per such resume: 6 % of the worker's time at C10K.
 */
static struct tw_core **gl_table;
static size_t gl_mask;

static size_t gl_home(PyObject *greenlet) {
	return (size_t) (((uint64_t) (uintptr_t) greenlet * 0x9E3779B97F4A7C15ULL) >> 32) & gl_mask;
}

static void gl_table_init(void) {
	size_t n = 16;
	while (n < (size_t) utornado.cores * 2) n <<= 1;
	gl_table = uwsgi_calloc(sizeof(struct tw_core *) * n);
	gl_mask = n - 1;
}

static void gl_insert(struct tw_core *c) {
	size_t i = gl_home(c->greenlet);
	while (gl_table[i]) i = (i + 1) & gl_mask;
	gl_table[i] = c;
}

/* cyclic: is x in (from, to]? */
static int gl_between(size_t from, size_t x, size_t to) {
	return from <= to ? (from < x && x <= to) : (from < x || x <= to);
}

static void gl_remove(struct tw_core *c) {
	size_t i = gl_home(c->greenlet);
	while (gl_table[i] != c) {
		if (!gl_table[i]) return;
		i = (i + 1) & gl_mask;
	}
	/* backward shift: entries after the hole whose home is not between the
	 * hole and themselves move into it */
	size_t j = i;
	gl_table[i] = NULL;
	for (;;) {
		j = (j + 1) & gl_mask;
		if (!gl_table[j]) return;
		if (gl_between(i, gl_home(gl_table[j]->greenlet), j)) continue;
		gl_table[i] = gl_table[j];
		gl_table[j] = NULL;
		i = j;
	}
}

/* The core's greenlet becomes `greenlet` (a new reference the core takes over, or NULL). */
void tw_core_set_greenlet(struct tw_core *c, PyObject *greenlet) {
	if (c->greenlet) {
		gl_remove(c);
		Py_CLEAR(c->greenlet);
	}
	c->greenlet = greenlet;
	if (greenlet) gl_insert(c);
}

/* The core whose greenlet is running, or NULL (hub, signal handler, app greenlet). */
struct tw_core *tw_current_core(void) {
	if (!utornado.core) return NULL;
	PyObject *current = tw_greenlet_current();
	Py_DECREF(current);   /* only its address is compared */
	struct wsgi_request *wsgi_req = uwsgi.wsgi_req;
	/* fast path: the core the loop resumed last */
	if (wsgi_req && wsgi_req->async_id < utornado.cores) {
		struct tw_core *c = &utornado.core[wsgi_req->async_id];
		if (c->greenlet == current && c->state != TW_CORE_IDLE) return c;
	}
	/* switched into by hand */
	size_t i = gl_home(current);
	for (; gl_table[i]; i = (i + 1) & gl_mask) {
		struct tw_core *c = gl_table[i];
		if (c->greenlet != current) continue;
		if (c->state == TW_CORE_IDLE) return NULL;
		tw_core_enter(c);
		return c;
	}
	return NULL;
}

static struct wsgi_request *tw_current_wsgi_req(void) {
	struct tw_core *c = tw_current_core();
	return c ? c->wsgi_req : NULL;
}

/* ---- waits outside a core ---- */

/* tw_park(): the wait ended, with the token of why */
static int is_token(void *unused, PyObject *value) {
	return value == utornado.token_ready || value == utornado.token_timeout;
}

/*
 * Suspend the current (non-hub, non-core) greenlet with asyncio's own
 * readers and timers until fd is ready (-1: none) or `deadline` (monotonic
 * ns, 0: none) passes. The greenlet is switched back with the token of what
 * happened. Returns 1 for the fd, 0 for the deadline, or -1.
 */
int tw_green_wait(int fd, uint32_t events, uint64_t deadline) {
	int ret = -1, reader = 0, wfd = -1;
	PyObject *current = tw_greenlet_current();
	PyObject *gswitch = NULL, *timer = NULL, *py_fd = NULL, *r = NULL;
	if (current == utornado.hub) {
		uwsgi_log("[tornado] a blocking uWSGI call was made from the IOLoop's own greenlet (a loop callback): it cannot wait there\n");
		goto end;
	}
	gswitch = PyObject_GetAttr(current, utornado.str_switch);
	if (!gswitch) goto end;
	if (fd >= 0) {
		/* asyncio keeps one reader per fd number and add_reader() replaces it:
		 * watch a duplicate, so a reader the app has on this fd stays */
		wfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (wfd < 0) {
			uwsgi_error("[tornado] dup() for a wait outside a core");
			goto end;
		}
		py_fd = PyLong_FromLong(wfd);
		if (!py_fd) goto end;
		r = PyObject_CallMethod(utornado.aloop, events & TW_WRITE ? "add_writer" : "add_reader", "OOO", py_fd, gswitch, utornado.token_ready);
		if (!r) goto end;
		Py_CLEAR(r);
		reader = 1;
	}
	if (deadline || fd < 0) {
		uint64_t now = tw_now_ns();
		double delay = deadline > now ? (double) (deadline - now) / 1e9 : 0.0;
		timer = PyObject_CallMethod(utornado.aloop, "call_later", "dOO", delay, gswitch, utornado.token_timeout);
		if (!timer) goto end;
	}
	/* why the wait ended is which token came back; anything else is the
	 * app's own switch into this greenlet, which goes on to the hub while
	 * the wait goes on */
	r = tw_park(is_token, NULL);
	if (!r) goto end;
	ret = r == utornado.token_ready ? 1 : 0;
end:
	if (PyErr_Occurred()) PyErr_Print();
	Py_XDECREF(r);
	if (reader) {
		r = PyObject_CallMethod(utornado.aloop, events & TW_WRITE ? "remove_writer" : "remove_reader", "O", py_fd);
		if (!r) PyErr_Print();
		Py_XDECREF(r);
	}
	if (timer) {
		r = PyObject_CallMethod(timer, "cancel", NULL);
		if (!r) PyErr_Print();
		Py_XDECREF(r);
		Py_DECREF(timer);
	}
	if (wfd >= 0) close(wfd);
	Py_XDECREF(py_fd);
	Py_XDECREF(gswitch);
	Py_DECREF(current);
	return ret;
}

/* ---- uWSGI wait hooks ---- */

/* uWSGI's wait hooks: 1 ready, 0 timed out, -1 error */
static int hook_result(enum tw_wait_end end) {
	if (end == TW_WAIT_ERROR && PyErr_Occurred()) PyErr_Print();
	return end == TW_WAIT_READY ? 1 : end == TW_WAIT_ERROR ? -1 : 0;
}

/* A wait outside a core (a signal handler, a loop callback's greenlet):
 * tw_green_wait, its Python error printed so the C caller, which knows
 * nothing of Python, gets a plain -1. 1 fd ready, 0 deadline, -1 error. */
static int outside_wait(int fd, uint32_t events, uint64_t deadline) {
	int ret = tw_green_wait(fd, events, deadline);
	if (ret < 0 && PyErr_Occurred()) PyErr_Print();
	return ret;
}

/* Run a wait in the current core, or outside one. */
static int wait_fd(int fd, uint32_t events, int timeout) {
	uint64_t deadline = tw_deadline_after(timeout);
	struct tw_core *c = tw_current_core();
	if (c) return hook_result(tw_wait_fds(c, fd, -1, events, deadline));
	return outside_wait(fd, events, deadline);
}

static int tw_wait_read_hook(int fd, int timeout) {
	return wait_fd(fd, TW_READ, timeout);
}

static int tw_wait_write_hook(int fd, int timeout) {
	return wait_fd(fd, TW_WRITE, timeout);
}

static int tw_wait_read2_hook(int fd0, int fd1, int timeout, int *fd) {
	struct tw_core *c = tw_current_core();
	if (!c) {
		uwsgi_log("[tornado] wait_read2 outside of a request is not supported\n");
		return -1;
	}
	int ret = hook_result(tw_wait_fds(c, fd0, fd1, TW_READ, tw_deadline_after(timeout)));
	if (ret > 0) *fd = c->wait.woken_by;
	return ret;
}

/* uWSGI's contract: 0 when the time passed, -1 otherwise */
static int tw_wait_milliseconds_hook(int timeout) {
	uint64_t deadline = tw_deadline_after((timeout > 0 ? timeout : 1) / 1e3);
	struct tw_core *c = tw_current_core();
	if (c) return tw_wait_until(c, deadline) == TW_WAIT_READY ? 0 : -1;
	return outside_wait(-1, 0, deadline) == 0 ? 0 : -1;
}

/* ---- schedule hooks: yields and the core async API ---- */

/* After a WSGI generator yields: run again on the next loop iteration,
 * unless the app registered its own waits (they resume it instead). */
static void tw_schedule_fix(struct wsgi_request *wsgi_req) {
	struct tw_core *c = &utornado.core[wsgi_req->async_id];
	if (!wsgi_req->waiting_fds && !wsgi_req->async_timeout) tw_resume_soon(c);
}

/*
 * Suspend the request: until one of the waits it registered with the core
 * async API fires, or, when it registered none, until the next loop
 * iteration (so uwsgi.suspend() always comes back).
 */
static void tw_schedule_to_main(struct wsgi_request *wsgi_req) {
	struct tw_core *c = tw_current_core();
	if (!c || c->wsgi_req != wsgi_req) {
		uwsgi_log("[tornado] suspend called outside of its request greenlet, ignored\n");
		return;
	}
	enum tw_wait_end end;
	if (!wsgi_req->waiting_fds && !wsgi_req->async_timeout) {
		end = tw_yield(c);
	}
	else {
		uint64_t deadline = 0;
		if (wsgi_req->async_timeout) {
			/* uWSGI keeps these in whole seconds of uwsgi_now() */
			int64_t left = (int64_t) wsgi_req->async_timeout->value - (int64_t) uwsgi_now();
			deadline = tw_deadline_after(left > 0 ? (double) left : 0.001);
		}
		end = tw_wait_async_api(c, deadline);
		if (end == TW_WAIT_TIMEOUT) {
			/* our timer fired first: tell the app through uWSGI's own flag */
			async_reset_request(wsgi_req);
			wsgi_req->async_timed_out = 1;
		}
	}
	if (end == TW_WAIT_ERROR && PyErr_Occurred()) PyErr_Print();
}

/* uwsgi.async_queue got events: wake the cores that registered those fds */
static void tw_on_legacy_event(int queue, void *unused) {
	struct epoll_event events[16];
	int n = epoll_wait(queue, events, 16, 0);
	int i;
	for (i = 0; i < n; i++) {
		int fd = events[i].data.fd;
		struct wsgi_request *wsgi_req = uwsgi.async_waiting_fd_table[fd];
		if (!wsgi_req) {
			event_queue_del_fd(uwsgi.async_queue, fd, events[i].events);
			continue;
		}
		struct tw_core *c = &utornado.core[wsgi_req->async_id];
		async_reset_request(wsgi_req);
		wsgi_req->async_ready_fd = 1;
		wsgi_req->async_last_ready_fd = fd;
		if (c->wait.kind == TW_WAIT_ASYNC_API) tw_wake(c, c->wait.gen, TW_WAIT_READY);
	}
}

/* Give the core async API the structures uWSGI's own async loop would create. */
int tw_legacy_init(void) {
	uwsgi.async_queue = event_queue_init();
	if (uwsgi.async_queue < 0) return -1;
	uwsgi.rb_async_timeouts = uwsgi_init_rb_timer();
	uwsgi.async_waiting_fd_table = uwsgi_calloc(sizeof(struct wsgi_request *) * uwsgi.max_fd);
	uwsgi.async_proto_fd_table = uwsgi_calloc(sizeof(struct wsgi_request *) * uwsgi.max_fd);
	return tw_watch_handler(uwsgi.async_queue, tw_on_legacy_event);
}

/* ---- uwsgi.async_sleep ---- */

/*
 * uwsgi.async_sleep(seconds): suspend the calling request (or greenlet) for
 * `seconds`, fractions included, while the worker serves others. Returns b""
 * so the classic `yield uwsgi.async_sleep(n)` keeps working.
 */
static PyObject *py_tw_async_sleep(PyObject *self, PyObject *arg) {
	double seconds = PyFloat_AsDouble(arg);
	if (seconds == -1.0 && PyErr_Occurred()) return NULL;
	uint64_t deadline = tw_deadline_after(seconds);
	struct tw_core *c = tw_current_core();
	int ret;
	if (c) {
		/* no deadline (0 s) yields to the loop once */
		ret = tw_wait_until(c, deadline) == TW_WAIT_ERROR ? -1 : 0;
	}
	else {
		PyObject *current = tw_greenlet_current();
		Py_DECREF(current);   /* only its address is compared */
		if (current == utornado.hub) {
			return PyErr_Format(PyExc_RuntimeError, "uwsgi.async_sleep() cannot suspend the IOLoop itself: call it from a request or a greenlet");
		}
		ret = tw_green_wait(-1, 0, deadline);
	}
	if (ret < 0) {
		if (!PyErr_Occurred()) PyErr_SetString(PyExc_OSError, "uwsgi.async_sleep(): unable to wait");
		return NULL;
	}
	return PyBytes_FromString("");
}

static PyMethodDef tw_async_sleep_def = {"async_sleep", py_tw_async_sleep, METH_O, "sleep without blocking the worker (tornado engine)"};

/* Put our versions of the uwsgi module's async functions in place. */
void tw_replace_module_functions(void) {
	PyObject *uwsgi_dict = get_uwsgi_pydict("uwsgi");
	if (!uwsgi_dict) {
		PyErr_Clear();
		return;
	}
	/* __module__ tells the glue (uwsgidecorators_ext.sleep) it can use it */
	PyObject *module = PyUnicode_FromString("uwsgi_tornado_engine");
	PyObject *f = module ? PyCFunction_NewEx(&tw_async_sleep_def, NULL, module) : NULL;
	Py_XDECREF(module);
	if (!f || PyDict_SetItemString(uwsgi_dict, "async_sleep", f)) PyErr_Print();
	Py_XDECREF(f);
}

void tw_hooks_install(void) {
	gl_table_init();
	uwsgi.wait_read_hook = tw_wait_read_hook;
	uwsgi.wait_write_hook = tw_wait_write_hook;
	uwsgi.wait_read2_hook = tw_wait_read2_hook;
	uwsgi.wait_milliseconds_hook = tw_wait_milliseconds_hook;
	uwsgi.schedule_fix = tw_schedule_fix;
	uwsgi.schedule_to_main = tw_schedule_to_main;
	uwsgi.current_wsgi_req = tw_current_wsgi_req;
}
