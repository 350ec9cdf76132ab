/*
 * calls.c: floor 1, the loop's call_at() and call_later() on the engine's
 * timers: a heap of its own that event.c's one asyncio timer serves (it
 * calls this file through the functions registered with tw_set_calls()).
 *
 * asyncio's own loop keeps its timers in Python: a TimerHandle made by two
 * Python __init__s per call, a heap ordered by a Python __lt__ (about eight
 * calls of it per timer with a few hundred timers pending), and the moves
 * between its heap and its ready queue. Every asyncio.sleep(), timeout and
 * wait_for() of an app pays that. On asyncio's own loop (not uvloop, whose
 * timers are C already; not in debug mode; not with --tornado-stock-timers)
 * the worker's loop gets call_at and call_later as instance attributes over
 * the class's methods (loop.c installs them; get_debug too, which every
 * Future, Task and Handle asks when it is made, and which is Python there): each call is one C object in
 * a C heap ordered by (deadline, order of the calls), and the one asyncio
 * timer event.c arms for the engine's earliest deadline runs the calls that
 * are due, each in its context, as the loop would run them.
 *
 * What differs from asyncio's TimerHandle, none of it a documented promise:
 * the handle is of its own type (cancel(), cancelled(), when(),
 * get_context(); a cancelled one leaves the heap at once); a call may run up
 * to a millisecond late, never early (the engine's timer precision, event.c);
 * the loop's _scheduled list does not hold these calls. A call that raises
 * goes to loop.call_exception_handler() as asyncio's does; SystemExit and
 * KeyboardInterrupt go on out of the loop.
 */
#include "tornado.h"
#include <math.h>

#ifndef TW_PYPY   /* CPython's (loop.c installs them there only) */

typedef struct {
	PyObject_HEAD
	uint64_t deadline;     /* monotonic ns (tw_now_ns()) */
	uint64_t seq;          /* calls with one deadline run in the order they were made */
	Py_ssize_t idx;        /* in the heap (which then holds a reference), -1: not */
	double when;           /* what when() returns: loop.time() units */
	PyObject *callback;    /* NULL once cancelled or run */
	PyObject *args;        /* a tuple, NULL once cancelled or run */
	PyObject *context;
	PyObject *weakrefs;
	int cancelled;
} call_object;

static struct {
	call_object **heap;
	Py_ssize_t len, cap;
	uint64_t seq;
	PyObject *loop;            /* owned: the loop the calls are installed on */
	PyObject *loop_dict;       /* owned: its instance dict */
	PyObject *stock_call_at;   /* owned: the class's call_at, bound */
	PyObject *empty_context;   /* owned: the context the engine's own timer runs in */
	PyObject *context_kw;      /* owned: ("context",) */
	PyObject *s_closed, *s_debug, *s_context, *s_message, *s_exception, *s_handle, *s_handler;
} calls;

static PyTypeObject call_type;

static int earlier(call_object *a, call_object *b) {
	return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void heap_put(Py_ssize_t i, call_object *h) {
	calls.heap[i] = h;
	h->idx = i;
}

static void sift_up(Py_ssize_t i) {
	call_object *h = calls.heap[i];
	while (i > 0) {
		Py_ssize_t parent = (i - 1) / 2;
		if (!earlier(h, calls.heap[parent])) break;
		heap_put(i, calls.heap[parent]);
		i = parent;
	}
	heap_put(i, h);
}

static void sift_down(Py_ssize_t i) {
	call_object *h = calls.heap[i];
	for (;;) {
		Py_ssize_t child = 2 * i + 1;
		if (child >= calls.len) break;
		if (child + 1 < calls.len && earlier(calls.heap[child + 1], calls.heap[child])) child++;
		if (!earlier(calls.heap[child], h)) break;
		heap_put(i, calls.heap[child]);
		i = child;
	}
	heap_put(i, h);
}

/* take h out of the heap; the heap's reference becomes the caller's */
static void heap_remove(call_object *h) {
	Py_ssize_t i = h->idx;
	h->idx = -1;
	calls.len--;
	if (i == calls.len) return;
	heap_put(i, calls.heap[calls.len]);
	sift_up(i);
	sift_down(calls.heap[i]->idx);
}

static int heap_push(call_object *h) {
	if (calls.len == calls.cap) {
		Py_ssize_t cap = calls.cap ? calls.cap * 2 : 256;
		call_object **heap = realloc(calls.heap, sizeof(call_object *) * cap);
		if (!heap) {
			PyErr_NoMemory();
			return -1;
		}
		calls.heap = heap;
		calls.cap = cap;
	}
	Py_INCREF(h);
	calls.len++;
	heap_put(calls.len - 1, h);
	sift_up(calls.len - 1);
	return 0;
}

/* the earliest deadline of the calls, 0 when there is none */
static uint64_t calls_earliest(void) {
	return calls.len ? calls.heap[0]->deadline : 0;
}

/* ---- the handle ---- */

static PyObject *call_cancel(call_object *self, PyObject *unused) {
	if (!self->cancelled) {
		self->cancelled = 1;
		if (self->idx >= 0) {
			heap_remove(self);
			Py_DECREF(self);   /* the heap's; the caller holds another */
		}
		Py_CLEAR(self->callback);
		Py_CLEAR(self->args);
	}
	Py_RETURN_NONE;
}

static PyObject *call_cancelled(call_object *self, PyObject *unused) {
	return PyBool_FromLong(self->cancelled);
}

static PyObject *call_when(call_object *self, PyObject *unused) {
	return PyFloat_FromDouble(self->when);
}

static PyObject *call_get_context(call_object *self, PyObject *unused) {
	PyObject *context = self->context ? self->context : Py_None;
	Py_INCREF(context);
	return context;
}

/* what asyncio's own code reads of a TimerHandle it got from call_at()
 * (BaseEventLoop.call_later, bound before the engine's were installed) */
static PyObject *get_source_traceback(call_object *self, void *unused) {
	Py_RETURN_NONE;
}

static PyObject *get_scheduled(call_object *self, void *unused) {
	return PyBool_FromLong(self->idx >= 0);
}

static PyObject *get_when(call_object *self, void *unused) {
	return PyFloat_FromDouble(self->when);
}

static PyObject *get_cancelled(call_object *self, void *unused) {
	return PyBool_FromLong(self->cancelled);
}

static PyGetSetDef call_getset[] = {
	{"_source_traceback", (getter) get_source_traceback, NULL, NULL, NULL},
	{"_scheduled", (getter) get_scheduled, NULL, NULL, NULL},
	{"_when", (getter) get_when, NULL, NULL, NULL},
	{"_cancelled", (getter) get_cancelled, NULL, NULL, NULL},
	{NULL, NULL, NULL, NULL, NULL},
};

static PyObject *call_repr(call_object *self) {
	const char *state = self->cancelled ? " cancelled" : self->idx >= 0 ? "" : " done";
	if (!self->callback) return PyUnicode_FromFormat("<TimerHandle%s>", state);
	PyObject *when = PyFloat_FromDouble(self->when);
	if (!when) return NULL;
	PyObject *repr = PyUnicode_FromFormat("<TimerHandle%s when=%R %R>", state, when, self->callback);
	Py_DECREF(when);
	return repr;
}

static int call_traverse(call_object *self, visitproc visit, void *arg) {
	Py_VISIT(self->callback);
	Py_VISIT(self->args);
	Py_VISIT(self->context);
	return 0;
}

static int call_clear(call_object *self) {
	Py_CLEAR(self->callback);
	Py_CLEAR(self->args);
	Py_CLEAR(self->context);
	return 0;
}

static void call_dealloc(call_object *self) {
	PyObject_GC_UnTrack(self);
	if (self->weakrefs) PyObject_ClearWeakRefs((PyObject *) self);
	call_clear(self);
	PyObject_GC_Del(self);
}

static PyMethodDef call_methods[] = {
	{"cancel", (PyCFunction) call_cancel, METH_NOARGS, "cancel the call (it leaves the heap at once)"},
	{"cancelled", (PyCFunction) call_cancelled, METH_NOARGS, "whether the call was cancelled"},
	{"when", (PyCFunction) call_when, METH_NOARGS, "when the call is scheduled, in loop.time() units"},
	{"get_context", (PyCFunction) call_get_context, METH_NOARGS, "the contextvars.Context the call runs in"},
	{NULL, NULL, 0, NULL},
};

static PyTypeObject call_type = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "uwsgi_tornado_engine.TimerHandle",
	.tp_basicsize = sizeof(call_object),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_doc = "a call of the loop's call_at()/call_later() on the engine's timer heap",
	.tp_dealloc = (destructor) call_dealloc,
	.tp_traverse = (traverseproc) call_traverse,
	.tp_clear = (inquiry) call_clear,
	.tp_repr = (reprfunc) call_repr,
	.tp_methods = call_methods,
	.tp_getset = call_getset,
	.tp_weaklistoffset = offsetof(call_object, weakrefs),
};

/* ---- call_at() and call_later() ---- */

/* loop.time() seconds to a deadline: rounded up (never early); 0 means
 * "none" to event.c, so a time at or before the clock's start (or NaN) is
 * 1, due at once; one beyond 2^64 ns (an infinite sleep: anyio's
 * sleep_forever()) is the latest deadline there is, never due */
static uint64_t deadline_of(double at) {
	double ns = ceil(at * 1e9);
	if (!(ns >= 1.0)) return 1;
	if (ns >= (double) TW_DEADLINE_NEVER) return TW_DEADLINE_NEVER;
	return (uint64_t) ns;
}

/* call_at(when, callback, *args, context=None) and call_later(delay, ...):
 * `later` says which; args[0] is `when` or `delay` */
static PyObject *schedule(PyObject *const *args, size_t nargsf, PyObject *kwnames, int later) {
	Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
	const char *name = later ? "call_later" : "call_at";
	if (nargs < 2) {
		PyErr_Format(PyExc_TypeError, "%s() takes a %s and a callback", name, later ? "delay" : "time");
		return NULL;
	}
	PyObject *context = NULL;
	Py_ssize_t i, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
	for (i = 0; i < nkw; i++) {
		PyObject *key = PyTuple_GET_ITEM(kwnames, i);
		if (key != calls.s_context && PyUnicode_Compare(key, calls.s_context)) {
			if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", name, key);
			return NULL;
		}
		context = args[nargs + i];
	}
	if (args[0] == Py_None) {
		PyErr_SetString(PyExc_TypeError, later ? "delay must not be None" : "when cannot be None");
		return NULL;
	}
	double t = PyFloat_AsDouble(args[0]);
	if (t == -1.0 && PyErr_Occurred()) return NULL;
	PyObject *closed = PyDict_GetItemWithError(calls.loop_dict, calls.s_closed);   /* borrowed */
	if (closed == Py_True) {
		PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
		return NULL;
	}
	if (!closed && PyErr_Occurred()) return NULL;
	if (context == Py_None) context = NULL;
	if (context && !PyContext_CheckExact(context)) {
		PyErr_Format(PyExc_TypeError, "context must be a contextvars.Context, not %R", context);
		return NULL;
	}

	call_object *h = PyObject_GC_New(call_object, &call_type);
	if (!h) return NULL;
	h->idx = -1;
	h->cancelled = 0;
	h->weakrefs = NULL;
	h->callback = args[1];
	Py_INCREF(h->callback);
	h->args = PyTuple_New(nargs - 2);
	h->context = context ? (Py_INCREF(context), context) : PyContext_CopyCurrent();
	PyObject_GC_Track(h);
	if (!h->args || !h->context) {
		Py_DECREF(h);
		return NULL;
	}
	for (i = 2; i < nargs; i++) {
		Py_INCREF(args[i]);
		PyTuple_SET_ITEM(h->args, i - 2, args[i]);
	}
	/* the loop's clock is time.monotonic(), tw_now_ns()'s in seconds; the
	 * deadline comes from `when` alone (one time, one deadline: the order
	 * of the calls decides), rounded up (never early) */
	double at = later ? (double) tw_now_ns() / 1e9 + t : t;
	h->when = at;
	h->deadline = deadline_of(at);
	h->seq = calls.seq++;
	if (heap_push(h)) {
		Py_DECREF(h);
		return NULL;
	}
	tw_timer_want(h->deadline);
	return (PyObject *) h;
}

static PyObject *call_at(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
	return schedule(args, nargsf, kwnames, 0);
}

static PyObject *call_later(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
	return schedule(args, nargsf, kwnames, 1);
}

static PyMethodDef call_at_def = {"call_at", (PyCFunction) (void (*)(void)) call_at, METH_FASTCALL | METH_KEYWORDS,
	"call_at(when, callback, *args, context=None): the loop's, on the engine's timer heap"};
static PyMethodDef call_later_def = {"call_later", (PyCFunction) (void (*)(void)) call_later, METH_FASTCALL | METH_KEYWORDS,
	"call_later(delay, callback, *args, context=None): the loop's, on the engine's timer heap"};

/* ---- running the calls that are due ---- */

/* what the call let out: to the loop's exception handler, as asyncio's
 * Handle._run does; -1 (left set) for SystemExit and KeyboardInterrupt */
static int report(call_object *h, PyObject *callback) {
	PyObject *type, *value, *tb;
	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	if (tb && value) PyException_SetTraceback(value, tb);
	if (PyErr_GivenExceptionMatches(type, PyExc_SystemExit) || PyErr_GivenExceptionMatches(type, PyExc_KeyboardInterrupt)) {
		PyErr_Restore(type, value, tb);
		return -1;
	}
	PyObject *message = PyUnicode_FromFormat("Exception in callback %R", callback);
	PyObject *context = message ? PyDict_New() : NULL;
	PyObject *ret = NULL;
	if (context && !PyDict_SetItem(context, calls.s_message, message)
		&& !PyDict_SetItem(context, calls.s_exception, value ? value : Py_None)
		&& !PyDict_SetItem(context, calls.s_handle, (PyObject *) h)) {
		ret = PyObject_CallMethodOneArg(calls.loop, calls.s_handler, context);
	}
	/* the handler re-raises SystemExit and KeyboardInterrupt: out of the loop */
	int failed = !ret && (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt));
	if (!ret && !failed) PyErr_Print();
	Py_XDECREF(ret);
	Py_XDECREF(context);
	Py_XDECREF(message);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
	return failed ? -1 : 0;
}

/* Run the calls due by `now` that were made before this run started (a
 * call that schedules another for now runs it on the next one, as asyncio
 * moves its due timers once per iteration). -1 with SystemExit or
 * KeyboardInterrupt set: the calls left run later. */
static int calls_run(uint64_t now) {
	uint64_t before = calls.seq;
	while (calls.len && calls.heap[0]->deadline <= now) {
		call_object *h = calls.heap[0];
		if (h->seq >= before) {
			/* made during this run: it and what is later wait for the next
			 * one; find the others due (rare: a call_later(0) from a call) */
			Py_ssize_t i;
			call_object *next = NULL;
			for (i = 0; i < calls.len; i++) {
				call_object *o = calls.heap[i];
				if (o->deadline <= now && o->seq < before && (!next || earlier(o, next))) next = o;
			}
			if (!next) break;
			h = next;
		}
		heap_remove(h);   /* its heap reference is ours now */
		PyObject *callback = h->callback, *args = h->args;
		h->callback = h->args = NULL;
		int failed = 0;
		if (PyContext_Enter(h->context)) failed = report(h, callback);
		else {
			PyObject *ret = PyObject_Call(callback, args, NULL);
			PyObject *type, *value, *tb;
			PyErr_Fetch(&type, &value, &tb);
			if (PyContext_Exit(h->context)) PyErr_Print();
			PyErr_Restore(type, value, tb);
			if (ret) Py_DECREF(ret);
			else failed = report(h, callback);
		}
		Py_DECREF(callback);
		Py_DECREF(args);
		Py_DECREF(h);
		if (failed) return -1;
	}
	return 0;
}

/* get_debug(): BaseEventLoop's is Python (`return self._debug`) and every
 * Future, Task and Handle asks it when made; this reads the same attribute */
static PyObject *get_debug(PyObject *self, PyObject *unused) {
	PyObject *debug = PyDict_GetItemWithError(calls.loop_dict, calls.s_debug);   /* borrowed */
	if (!debug) {
		if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "_debug");
		return NULL;
	}
	Py_INCREF(debug);
	return debug;
}

static PyMethodDef get_debug_def = {"get_debug", get_debug, METH_NOARGS, "the loop's get_debug(), in C"};

/* ---- installing them ---- */

/* stock_call_later(delay, callback, *args): asyncio's own timer, for the
 * engine's (event.c arms it); the class's call_later would call the
 * instance's call_at, which is this file's */
static PyObject *stock_call_later(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
	if (nargs < 2) {
		PyErr_SetString(PyExc_TypeError, "stock_call_later(delay, callback, *args)");
		return NULL;
	}
	double delay = PyFloat_AsDouble(args[0]);
	if (delay == -1.0 && PyErr_Occurred()) return NULL;
	PyObject *when = PyFloat_FromDouble((double) tw_now_ns() / 1e9 + delay);
	if (!when) return NULL;
	PyObject *stack[8];
	PyObject **argv = nargs < 8 ? stack : PyMem_Malloc(sizeof(PyObject *) * (nargs + 1));
	if (!argv) {
		Py_DECREF(when);
		return PyErr_NoMemory();
	}
	argv[0] = when;
	memcpy(argv + 1, args + 1, sizeof(PyObject *) * (nargs - 1));
	argv[nargs] = calls.empty_context;
	/* in a context of its own, not the one current when it is armed (a request's) */
	PyObject *ret = PyObject_Vectorcall(calls.stock_call_at, argv, nargs, calls.context_kw);
	if (argv != stack) PyMem_Free(argv);
	Py_DECREF(when);
	return ret;
}

static PyMethodDef stock_call_later_def = {"stock_call_later", (PyCFunction) (void (*)(void)) stock_call_later, METH_FASTCALL,
	"asyncio's own call_later, for the engine's timer"};

/* The loop's call_at and call_later become the engine's (instance
 * attributes over the class's methods). Once per worker, on asyncio's own
 * loop (loop.c says when). New reference to the call_later of asyncio's
 * own timers, for the engine's (event.c); NULL on error. */
PyObject *tw_calls_install(PyObject *loop) {
	if (PyType_Ready(&call_type)) return NULL;
	calls.s_closed = PyUnicode_InternFromString("_closed");
	calls.s_debug = PyUnicode_InternFromString("_debug");
	calls.s_context = PyUnicode_InternFromString("context");
	calls.s_message = PyUnicode_InternFromString("message");
	calls.s_exception = PyUnicode_InternFromString("exception");
	calls.s_handle = PyUnicode_InternFromString("handle");
	calls.s_handler = PyUnicode_InternFromString("call_exception_handler");
	if (!calls.s_closed || !calls.s_debug || !calls.s_context || !calls.s_message || !calls.s_exception || !calls.s_handle || !calls.s_handler) return NULL;
	calls.stock_call_at = PyObject_GetAttrString(loop, "call_at");
	calls.empty_context = calls.stock_call_at ? PyContext_New() : NULL;
	calls.context_kw = calls.empty_context ? PyTuple_Pack(1, calls.s_context) : NULL;
	PyObject *dict = calls.context_kw ? PyObject_GenericGetDict(loop, NULL) : NULL;
	PyObject *stock = dict ? PyCFunction_New(&stock_call_later_def, NULL) : NULL;
	PyObject *at = stock ? PyCFunction_New(&call_at_def, NULL) : NULL;
	PyObject *later = at ? PyCFunction_New(&call_later_def, NULL) : NULL;
	PyObject *debug = later ? PyCFunction_New(&get_debug_def, NULL) : NULL;
	if (debug) {
		/* what the calls read of the loop, before they can be called */
		Py_INCREF(loop);
		calls.loop = loop;
		calls.loop_dict = dict;
		dict = NULL;
		if (PyDict_SetItemString(calls.loop_dict, "get_debug", debug) || PyDict_SetItemString(calls.loop_dict, "call_at", at)
			|| PyDict_SetItemString(calls.loop_dict, "call_later", later)) {
			/* asyncio's own again */
			PyObject *type, *value, *tb;
			PyErr_Fetch(&type, &value, &tb);
			const char *names[] = {"get_debug", "call_at", "call_later"};
			int i;
			for (i = 0; i < 3; i++) if (PyDict_DelItemString(calls.loop_dict, names[i])) PyErr_Clear();
			PyErr_Restore(type, value, tb);
			Py_CLEAR(stock);
		}
		else tw_set_calls(calls_earliest, calls_run);
	}
	else Py_CLEAR(stock);
	Py_XDECREF(dict);
	Py_XDECREF(at);
	Py_XDECREF(later);
	Py_XDECREF(debug);
	return stock;
}

#else   /* PyPy: asyncio's own timers */

PyObject *tw_calls_install(PyObject *loop) {
	PyErr_SetString(PyExc_RuntimeError, "the engine's loop calls are CPython's");
	return NULL;
}

#endif
