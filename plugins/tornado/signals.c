/*
 * signals.c: floor 3 (calls loop.c and below): uWSGI signals, graceful
 * drain and shutdown for the tornado loop
 * engine.
 *
 * uWSGI signals (@timer, @signal, @filemon, ...) arrive on signal_socket and
 * my_signal_socket; both sit in the engine's epoll, and each signal runs in a
 * greenlet of its own, so a handler may wait (uwsgi.async_sleep) while the
 * worker goes on serving.
 *
 * Unix signals cannot touch Python: the handlers only write one byte to a
 * pipe that sits in the engine's epoll (async-signal-safe), and the loop does
 * the work on its next iteration.
 *
 * Draining (SIGHUP, --max-requests and the other recycling options through
 * uWSGI's gbcw_hook): stop accepting at once, close every websocket with
 * 1001 (websocket.c), let the requests in flight
 * finish (bounded by --worker-reload-mercy, enforced by uWSGI's time bomb),
 * run uwsgi.atexit, exit. Stopping (SIGINT, SIGQUIT, SIGTERM): the same
 * without waiting for the requests.
 */
#include "tornado.h"

static int wake_pipe[2] = {-1, -1};

static void tw_unix_signal(int signum) {
	char byte = (char) signum;
	int saved = errno;
	if (write(wake_pipe[1], &byte, 1) < 0) {
		/* pipe full: a wake-up is pending anyway */
	}
	errno = saved;
}

static PyObject *tw_signal_run(PyObject *self, PyObject *unused) {
	int fd = (int) PyLong_AsLong(self);
	uwsgi_receive_signal(fd, "worker", uwsgi.mywid);
	if (PyErr_Occurred()) PyErr_Print();
	Py_RETURN_NONE;
}

static PyMethodDef tw_signal_run_def = {"uwsgi_tornado_signal", tw_signal_run, METH_NOARGS, "run one uWSGI signal handler"};

/* A uWSGI signal is waiting on fd: run its handler in a new greenlet. */
static void tw_on_signal(int fd, void *unused) {
	PyObject *py_fd = NULL, *run = NULL, *gl = NULL, *ret = NULL;
	py_fd = PyLong_FromLong(fd);
	if (!py_fd) goto err;
	run = PyCFunction_New(&tw_signal_run_def, py_fd);
	if (!run) goto err;
	gl = tw_greenlet_new(run, utornado.hub);
	if (!gl) goto err;
	ret = tw_greenlet_switch(gl);
	if (!ret) goto err;
	goto end;
err:
	uwsgi_log("[tornado] unable to run a uWSGI signal handler\n");
	PyErr_Print();
end:
	Py_XDECREF(ret);
	Py_XDECREF(gl);
	Py_XDECREF(run);
	Py_XDECREF(py_fd);
}

void tw_run_atexit(void) {
	PyObject *uwsgi_dict = get_uwsgi_pydict("uwsgi");
	if (!uwsgi_dict) {
		PyErr_Clear();
		return;
	}
	PyObject *ae = PyDict_GetItemString(uwsgi_dict, "atexit");
	if (!ae) return;
	PyObject *r = PyObject_CallNoArgs(ae);
	if (!r) PyErr_Print();
	Py_XDECREF(r);
}

/* From the hub: close the connections that have not sent a complete request
 * (idle keep-alive ones, slow or silent clients), so a draining worker waits
 * only for the requests that arrived. */
static PyObject *tw_close_idle(PyObject *self, PyObject *unused) {
	tw_close_heads();
	/* websockets: close 1001, bounded by --tornado-websocket-close-timeout */
	int websockets = tw_ws_drain();
	if (websockets > 0) {
		uwsgi_log("worker %d (pid: %d) closes %d websockets (1001 going away)\n", uwsgi.mywid, uwsgi.mypid, websockets);
	}
	Py_RETURN_NONE;
}

static PyMethodDef tw_close_idle_def = {"uwsgi_tornado_close_idle", tw_close_idle, METH_NOARGS, "close connections without a request"};

/* Stop accepting; exit once the last request in flight is done. */
void tw_drain(void) {
	if (utornado.phase != TW_SERVING) return;
	uwsgi_log("Gracefully killing worker %d (pid: %d)...\n", uwsgi.mywid, uwsgi.mypid);
	if (utornado.busy > 0) {
		uwsgi_log("worker %d (pid: %d) waits for %d requests in flight\n", uwsgi.mywid, uwsgi.mypid, utornado.busy);
	}
	/* stops at once when nothing is in flight */
	tw_phase_enter(TW_DRAINING);
	if (utornado.phase == TW_STOPPING) return;
	/* --worker-reload-mercy bounds the wait */
	uwsgi_time_bomb(uwsgi.worker_reload_mercy, 0);
	/* this may run in a core's greenlet (gbcw_hook): switching to other
	 * cores is the hub's job */
	PyObject *f = PyCFunction_New(&tw_close_idle_def, NULL);
	PyObject *h = f ? tw_loop_call(utornado.call_soon, f, NULL) : NULL;
	if (!h) PyErr_Print();
	Py_XDECREF(h);
	Py_XDECREF(f);
}

/* uWSGI decided this worker is done (--max-requests, --reload-on-rss, ...). */
static void tw_gbcw_hook(void) {
	uwsgi_log("...The work of process %d is done. Seeya!\n", getpid());
	tw_drain();
}

static void tw_on_wake(int fd, void *unused) {
	char bytes[64];
	ssize_t n = read(fd, bytes, sizeof(bytes));
	ssize_t i;
	for (i = 0; i < n; i++) {
		int signum = bytes[i];
		if (signum == SIGHUP) {
			tw_drain();
		}
		else if (signum == SIGWINCH) {
			/* the master retires us (--max-worker-lifetime, cheaper):
			 * it cleared manage_next_request, checked below */
		}
		else {
			uwsgi_log("Brutally killing worker %d (pid: %d)...\n", uwsgi.mywid, uwsgi.mypid);
			utornado.exit_code = UWSGI_END_CODE;
			tw_phase_enter(TW_STOPPING);
			/* best effort, without waiting: the websockets waiting for a
			 * message send their close 1001 now, before the loop stops */
			tw_ws_drain();
		}
	}
	if (!uwsgi.workers[uwsgi.mywid].manage_next_request) tw_drain();
}

/* the period of tw_periodic, boxed once per worker */
static PyObject *one_second;

/* Once a second: the master may retire us without a signal we see. */
static PyObject *tw_periodic(PyObject *self, PyObject *unused) {
	if (!uwsgi.workers[uwsgi.mywid].manage_next_request) tw_drain();
	tw_metrics_sample();
	tw_linger_sweep();
	if (utornado.phase != TW_STOPPING) {
		/* self is NULL here (a module-less C function): re-arm with our own reference */
		PyObject *h = tw_loop_call(utornado.call_later, one_second, utornado.periodic);
		if (!h) PyErr_Print();
		Py_XDECREF(h);
	}
	Py_RETURN_NONE;
}

static PyMethodDef tw_periodic_def = {"uwsgi_tornado_periodic", tw_periodic, METH_NOARGS, "periodic worker checks"};

void tw_signals_init(void) {
	utornado.exit_code = UWSGI_RELOAD_CODE;
	if (uwsgi.signal_socket > -1) {
		if (tw_watch_handler(uwsgi.signal_socket, tw_on_signal)) uwsgi_error("[tornado] watching signal_socket");
		if (tw_watch_handler(uwsgi.my_signal_socket, tw_on_signal)) uwsgi_error("[tornado] watching my_signal_socket");
	}
	if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK)) {
		uwsgi_error("[tornado] pipe2()");
		exit(1);
	}
	if (tw_watch_handler(wake_pipe[0], tw_on_wake)) {
		uwsgi_error("[tornado] watching the wake pipe");
		exit(1);
	}
	uwsgi.gbcw_hook = tw_gbcw_hook;
	signal(SIGHUP, tw_unix_signal);
	signal(SIGINT, tw_unix_signal);
	signal(SIGQUIT, tw_unix_signal);
	signal(SIGTERM, tw_unix_signal);
	signal(SIGWINCH, tw_unix_signal);

	utornado.periodic = PyCFunction_New(&tw_periodic_def, NULL);
	one_second = PyFloat_FromDouble(1.0);
	if (!utornado.periodic || !one_second) uwsgi_pyexit;
	PyObject *h = tw_periodic(NULL, NULL);
	Py_XDECREF(h);
}
