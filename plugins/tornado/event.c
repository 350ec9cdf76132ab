/*
 * event.c: floor 0, the event layer of the tornado loop engine. It includes
 * nothing of its users: what it needs of policy (a wait's deadline) is a
 * callback plugin.c registers.
 *
 * Three sources wake a suspended core, and all three end up in tw_wake():
 *   - file descriptors: one epoll (utornado.epfd) holds every fd a core waits
 *     on, plus the listen sockets and the signal sockets; the asyncio loop
 *     watches that single epoll fd and calls on_events() when it is readable;
 *   - timers: a binary min-heap of cores by deadline (CLOCK_MONOTONIC, the
 *     clock asyncio's loop.time() uses); one asyncio timer is armed for the
 *     earliest deadline, re-armed only when an earlier one arrives; it also
 *     serves the timed calls an upper floor registers (tw_set_calls: the
 *     loop's call_at/call_later, calls.c);
 *   - the ready queue: cores that yielded (a WSGI generator, uwsgi.suspend())
 *     run again on the next loop iteration; one call_soon() per batch.
 *
 * A core waits in one of four ways, each its own call returning why the
 * wait ended (enum tw_wait_end): tw_wait_fds (fds until a deadline),
 * tw_wait_until (a deadline), tw_yield (the next loop iteration),
 * tw_wait_async_api (what the request registered with uWSGI's core async
 * API). Deadlines are absolute monotonic nanoseconds everywhere; the one
 * rounding is to whole milliseconds, up, where the asyncio timer is armed.
 * A wait bumps the core's generation once, when it starts. Every wake-up
 * source carries the generation it was registered with, so a late event (an
 * epoll batch that still holds an fd the core stopped waiting for, a timer
 * that raced with the fd) can never resume a core that has moved on.
 *
 * Limits: Linux only (epoll). Timer precision is the asyncio loop's (about
 * 1 ms with the default selector).
 */
#include "tornado.h"
#ifndef TW_PYPY   /* pyimpl.h: on PyPy, pypy.c stands in for greenlet's C API */
#include <greenlet/greenlet.h>
#endif

struct uwsgi_tornado utornado;

#define TW_BATCH 64
/* the armed asyncio timer is moved earlier only for a deadline earlier by
 * more than this: a wait may end up to 1 ms late, never early */
#define TW_TIMER_SLACK_NS 1000000ULL

uint64_t tw_now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

int tw_watch(int fd, uint32_t events, uint64_t tag) {
	struct epoll_event ev;
	ev.events = events;
	ev.data.u64 = tag;
	return epoll_ctl(utornado.epfd, EPOLL_CTL_ADD, fd, &ev);
}

void tw_unwatch(int fd) {
	struct epoll_event ev = {0};
	/* ENOENT/EBADF: the fd was closed (which unregisters it) while we waited */
	(void) epoll_ctl(utornado.epfd, EPOLL_CTL_DEL, fd, &ev);
}

/* Call a bound method of the asyncio loop with one or two arguments. */
PyObject *tw_loop_call(PyObject *method, PyObject *arg0, PyObject *arg1) {
	PyObject *args[2] = {arg0, arg1};
	return PyObject_Vectorcall(method, args, arg1 ? 2 : 1, NULL);
}

/* ---- timer heap ---- */

static void heap_set(int i, struct tw_core *c) {
	utornado.heap[i] = c;
	c->wait.heap_idx = i;
}

static void heap_up(int i) {
	struct tw_core *c = utornado.heap[i];
	while (i > 0) {
		int parent = (i - 1) / 2;
		if (utornado.heap[parent]->wait.deadline <= c->wait.deadline) break;
		heap_set(i, utornado.heap[parent]);
		i = parent;
	}
	heap_set(i, c);
}

static void heap_down(int i) {
	struct tw_core *c = utornado.heap[i];
	for (;;) {
		int child = 2 * i + 1;
		if (child >= utornado.heap_len) break;
		if (child + 1 < utornado.heap_len && utornado.heap[child + 1]->wait.deadline < utornado.heap[child]->wait.deadline) child++;
		if (utornado.heap[child]->wait.deadline >= c->wait.deadline) break;
		heap_set(i, utornado.heap[child]);
		i = child;
	}
	heap_set(i, c);
}

static PyObject *str_cancel;   /* "cancel", interned once per worker */
/* what tw_wake() switches back with: a wait learns that it ended from
 * *which object* came back, never from its truthiness (uWSGI's gevent plugin) */
static PyObject *wake_args;   /* (utornado.token_ready,) */

static void timer_arm(uint64_t deadline) {
	if (utornado.timer_handle) {
		PyObject *r = PyObject_CallMethodNoArgs(utornado.timer_handle, str_cancel);
		if (!r) PyErr_Clear();   /* a handle that cannot cancel has fired already */
		Py_XDECREF(r);
		Py_CLEAR(utornado.timer_handle);
	}
	/* whole milliseconds, rounded up: uvloop rounds a delay to the nearest
	 * millisecond, so a timer re-armed for the last 0.5 ms before a deadline
	 * would fire at once, again and again, until the deadline */
	uint64_t now = tw_now_ns();
	uint64_t ms = deadline > now ? (deadline - now + 999999) / 1000000 : 0;
	double delay = (double) ms / 1e3;
	PyObject *py_delay = PyFloat_FromDouble(delay);
	if (!py_delay) goto err;
	utornado.timer_handle = tw_loop_call(utornado.call_later, py_delay, utornado.on_timer);
	Py_DECREF(py_delay);
	if (!utornado.timer_handle) goto err;
	utornado.armed_deadline = deadline;
	return;
err:
	/* without a timer the waits would only end by their fds: say so loudly */
	uwsgi_log("[tornado] unable to arm the loop timer\n");
	PyErr_Print();
	utornado.armed_deadline = 0;
}

void tw_timer_start(struct tw_core *c, uint64_t deadline) {
	if (c->wait.heap_idx >= 0) tw_timer_stop(c);
	c->wait.deadline = deadline;
	c->wait.heap_idx = utornado.heap_len++;
	utornado.heap[c->wait.heap_idx] = c;
	heap_up(c->wait.heap_idx);
	tw_timer_want(utornado.heap[0]->wait.deadline);
}

/* the timed calls an upper floor keeps (calls.c), served by the same timer */
static tw_calls_earliest_fn calls_earliest;
static tw_calls_run_fn calls_run;

void tw_set_calls(tw_calls_earliest_fn earliest, tw_calls_run_fn run) {
	calls_earliest = earliest;
	calls_run = run;
}

/* the earliest deadline of the cores and of the timed calls, 0: none */
static uint64_t earliest_deadline(void) {
	uint64_t core = utornado.heap_len ? utornado.heap[0]->wait.deadline : 0;
	uint64_t call = calls_earliest ? calls_earliest() : 0;
	return !core ? call : !call ? core : core < call ? core : call;
}

/* a deadline arrived (a core's wait, a timed call): the asyncio timer
 * is armed for it when none is, or when it is earlier than the armed one by
 * more than the slack; arm for the earliest overall, which is not always
 * this one: while py_tw_on_timer() runs what is due, no timer is armed */
void tw_timer_want(uint64_t deadline) {
	if (!utornado.timer_handle || deadline + TW_TIMER_SLACK_NS < utornado.armed_deadline) {
		timer_arm(earliest_deadline());
	}
}

void tw_timer_stop(struct tw_core *c) {
	int i = c->wait.heap_idx;
	if (i < 0) return;
	c->wait.heap_idx = -1;
	utornado.heap_len--;
	if (i == utornado.heap_len) return;
	heap_set(i, utornado.heap[utornado.heap_len]);
	heap_up(i);
	heap_down(utornado.heap[i]->wait.heap_idx);
	/* the armed asyncio timer may now be early: it re-arms itself when it fires */
}

static PyObject *py_tw_on_timer(PyObject *self, PyObject *unused) {
	Py_CLEAR(utornado.timer_handle);
	uint64_t now = tw_now_ns();
	while (utornado.heap_len > 0 && utornado.heap[0]->wait.deadline <= now) {
		struct tw_core *c = utornado.heap[0];
		tw_timer_stop(c);
		c->ready_at = c->wait.deadline;
		/* a timer wait's deadline is what it waited for */
		tw_wake(c, c->wait.gen, c->wait.kind == TW_WAIT_TIMER ? TW_WAIT_READY : TW_WAIT_TIMEOUT);
	}
	/* the timed calls that are due; SystemExit and
	 * KeyboardInterrupt go on out of the loop, the timer armed first */
	int failed = calls_run ? calls_run(now) : 0;
	uint64_t next = earliest_deadline();
	if (next && !utornado.timer_handle) {
		PyObject *type, *value, *tb;
		PyErr_Fetch(&type, &value, &tb);
		timer_arm(next);
		PyErr_Restore(type, value, tb);
	}
	if (failed) return NULL;
	Py_RETURN_NONE;
}

/* the clock of the loop-lag measure: 0 (no clock read) when nobody reads it */
static uint64_t lag_clock(void) {
	return utornado.counters.measure_lag ? tw_now_ns() : 0;
}

/* A suspended core is resumed: count it, and its lag when it has a ready time. */
static void count_wakeup(struct tw_core *c) {
	struct tw_counters *k = &utornado.counters;
	k->wakeups++;
	if (!c->ready_at || !k->measure_lag) return;
	uint64_t now = tw_now_ns();
	uint64_t lag = now > c->ready_at ? now - c->ready_at : 0;
	c->ready_at = 0;
	k->lag_sum_ns += (int64_t) lag;
	k->lag_count++;
	if (lag > k->lag_max_ns) k->lag_max_ns = lag;
}

/* ---- ready queue ---- */

void tw_resume_soon(struct tw_core *c) {
	/* already queued (schedule_fix, then the wait itself): it now resumes the current wait */
	c->queued_gen = c->wait.gen;
	if (c->queued) return;
	c->queued = 1;
	c->ready_at = lag_clock();
	c->next_ready = NULL;
	if (utornado.ready_tail) utornado.ready_tail->next_ready = c;
	else utornado.ready_head = c;
	utornado.ready_tail = c;
	if (!utornado.ready_armed) {
		PyObject *h = tw_loop_call(utornado.call_soon, utornado.on_ready, NULL);
		if (!h) {
			uwsgi_log("[tornado] unable to schedule the ready queue\n");
			PyErr_Print();
			return;
		}
		Py_DECREF(h);
		utornado.ready_armed = 1;
	}
}

static PyObject *py_tw_on_ready(PyObject *self, PyObject *unused) {
	/* take the current batch: cores queued while it runs go to the next iteration */
	struct tw_core *c = utornado.ready_head;
	utornado.ready_head = utornado.ready_tail = NULL;
	utornado.ready_armed = 0;
	while (c) {
		struct tw_core *next = c->next_ready;
		c->queued = 0;
		c->next_ready = NULL;
		tw_wake(c, c->queued_gen, TW_WAIT_READY);
		c = next;
	}
	Py_RETURN_NONE;
}

/* ---- the epoll ---- */

/*
 * Handlers: everything in the epoll that is not a core's wait (listen
 * sockets, signal sockets, the core async API's queue, the wake pipe) is
 * registered here by the file that owns it, with the function to call when
 * the fd is readable. The event layer knows nothing of them beyond that.
 */
struct tw_handler {
	int fd;
	tw_fd_handler fn;
	void *data;
	int watched;
};

static struct tw_handler *handlers;
static int handlers_len;

int tw_handler_new(int fd, tw_fd_handler fn, void *data) {
	if (handlers_len >= (int) (TW_ID_HANDLER_MAX - TW_ID_HANDLER)) return -1;
	struct tw_handler *grown = realloc(handlers, sizeof(struct tw_handler) * (handlers_len + 1));
	if (!grown) return -1;
	handlers = grown;
	handlers[handlers_len] = (struct tw_handler) {.fd = fd, .fn = fn, .data = data, .watched = 0};
	return handlers_len++;
}

int tw_handler_watch(int id) {
	struct tw_handler *h = &handlers[id];
	if (h->watched) return 0;
	if (tw_watch(h->fd, TW_READ, TW_TAG(TW_ID_HANDLER + (uint32_t) id, 0))) return -1;
	h->watched = 1;
	return 0;
}

void tw_handler_unwatch(int id) {
	struct tw_handler *h = &handlers[id];
	if (!h->watched) return;
	tw_unwatch(h->fd);
	h->watched = 0;
}

/* register and watch for good (no data): -1 with errno on failure */
int tw_watch_handler(int fd, tw_fd_handler fn) {
	int id = tw_handler_new(fd, fn, NULL);
	return id < 0 ? -1 : tw_handler_watch(id);
}

/* ---- lingering close (RFC 9112 9.6) ---- */

/*
 * A connection closed while the client may still be sending (a refused
 * head, a body the app did not read) is closed in stages, as nginx's
 * lingering close: write side first, then what arrives is read and dropped
 * until the client closes, for at most TW_LINGER_NS or TW_LINGER_BYTES, so
 * the client reads the response instead of a reset. The hub does it, not a
 * core: a client that keeps such connections open holds no core. All
 * lingers last the same, so a ring in arrival order is also deadline order;
 * when it is full (as many as cores), the oldest is closed to make room.
 */
#define TW_LINGER_NS (2 * 1000000000ULL)
#define TW_LINGER_BYTES (1024 * 1024)

struct tw_linger {
	int fd;                 /* -1: closed early (a hole in the ring) */
	uint32_t gen;           /* carried in its epoll tag */
	uint64_t until;
	size_t dropped;
};

static struct tw_linger *lingers;
static int linger_cap, linger_head, linger_count;

static void linger_close(struct tw_linger *l) {
	if (l->fd < 0) return;
	close(l->fd);   /* unregisters it */
	l->fd = -1;
	l->gen++;
}

/* read and drop what is there: 1 while the client may still send */
static int linger_drain(struct tw_linger *l) {
	static char sink[16384];   /* never read: shared by every linger */
	while (l->dropped < TW_LINGER_BYTES) {
		ssize_t n = read(l->fd, sink, sizeof(sink));
		if (n > 0) {
			l->dropped += n;
			continue;
		}
		return n < 0 && uwsgi_is_again();
	}
	return 0;
}

static void linger_event(uint32_t slot, uint32_t gen) {
	if (slot >= (uint32_t) linger_cap) return;
	struct tw_linger *l = &lingers[slot];
	if (l->fd < 0 || l->gen != gen) return;
	if (!linger_drain(l)) linger_close(l);
}

/* Close the lingers that are over (once a second, and to make room). */
void tw_linger_sweep(void) {
	uint64_t now = tw_now_ns();
	while (linger_count > 0) {
		struct tw_linger *l = &lingers[linger_head];
		if (l->fd >= 0 && l->until > now) break;
		linger_close(l);
		linger_head = (linger_head + 1) % linger_cap;
		linger_count--;
	}
}

/* Close fd in stages (the hub takes it over): c is the core whose
 * connection it is, whose epoll registration it inherits. */
void tw_linger(struct tw_core *c, int fd) {
	int registered = c && c->conn_fd == fd;
	if (registered) tw_conn_end(c);
	if (!linger_cap || shutdown(fd, SHUT_WR)) {
		close(fd);
		return;
	}
	if (linger_count == linger_cap) {
		/* full: the oldest goes first */
		linger_close(&lingers[linger_head]);
		linger_head = (linger_head + 1) % linger_cap;
		linger_count--;
	}
	int slot = (linger_head + linger_count) % linger_cap;
	struct tw_linger *l = &lingers[slot];
	l->fd = fd;
	l->gen++;
	l->until = tw_now_ns() + TW_LINGER_NS;
	l->dropped = 0;
	linger_count++;
	if (!linger_drain(l)) {
		linger_close(l);
		return;
	}
	struct epoll_event ev;
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.u64 = TW_TAG(TW_ID_LINGER | (uint32_t) slot, l->gen);
	if (epoll_ctl(utornado.epfd, registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev)) linger_close(l);
}

static PyObject *py_tw_on_events(PyObject *self, PyObject *unused) {
	int n = epoll_wait(utornado.epfd, utornado.events, utornado.nevents, 0);
	if (n < 0) {
		if (errno != EINTR) uwsgi_error("[tornado] epoll_wait()");
		Py_RETURN_NONE;
	}
	uint64_t batch_at = lag_clock();
	int i;
	for (i = 0; i < n; i++) {
		uint64_t tag = utornado.events[i].data.u64;
		uint32_t id = (uint32_t) tag;
		uint32_t gen = (uint32_t) (tag >> 32);
		if ((id & TW_ID_KIND) == TW_ID_LINGER) {
			linger_event(id & ~TW_ID_KIND, gen);
		}
		else if (id & TW_ID_CONN && id < TW_ID_HANDLER) {
			uint32_t core_id = id & ~TW_ID_CONN;
			if (core_id >= (uint32_t) utornado.cores) continue;
			struct tw_core *c = &utornado.core[core_id];
			if (c->conn_gen != gen || c->conn_fd < 0) continue;   /* an earlier connection's */
			uint32_t ev = utornado.events[i].events;
			/* an error or hang-up ends a wait of either kind: the I/O says which */
			uint32_t got = (ev & (EPOLLERR | EPOLLHUP)) ? (EPOLLIN | EPOLLOUT) : (ev & (EPOLLIN | EPOLLOUT));
			if (ev & EPOLLRDHUP) got |= EPOLLIN;
			if (tw_core_suspended(c) && (got & c->conn_wait)) {
				c->conn_ready |= got & ~c->conn_wait;
				c->wait.woken_by = c->conn_fd;
				c->ready_at = batch_at;
				tw_wake(c, c->wait.gen, TW_WAIT_READY);
			}
			else {
				c->conn_ready |= got;
			}
		}
		else if (id < TW_ID_HANDLER) {
			uint32_t core_id = id & ~TW_ID_SLOT1;
			if (core_id >= (uint32_t) utornado.cores) continue;
			struct tw_core *c = &utornado.core[core_id];
			if (c->wait.gen != gen || !tw_core_suspended(c)) continue;
			c->wait.woken_by = c->wait.fds[(id & TW_ID_SLOT1) ? 1 : 0];
			c->ready_at = batch_at;
			tw_wake(c, gen, TW_WAIT_READY);
		}
		else if (id - TW_ID_HANDLER < (uint32_t) handlers_len) {
			struct tw_handler *h = &handlers[id - TW_ID_HANDLER];
			/* unwatched by an earlier handler of this batch */
			if (h->watched) h->fn(h->fd, h->data);
		}
	}
	Py_RETURN_NONE;
}

static PyMethodDef tw_on_events_def = {"uwsgi_tornado_events", py_tw_on_events, METH_NOARGS, "dispatch the engine's epoll"};
static PyMethodDef tw_on_timer_def = {"uwsgi_tornado_timer", py_tw_on_timer, METH_NOARGS, "expire the engine's timers"};
static PyMethodDef tw_on_ready_def = {"uwsgi_tornado_ready", py_tw_on_ready, METH_NOARGS, "resume the cores that yielded"};

int tw_event_init(void) {
	int i;
	utornado.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (utornado.epfd < 0) {
		uwsgi_error("[tornado] epoll_create1()");
		return -1;
	}
	utornado.nevents = TW_BATCH;
	utornado.events = uwsgi_calloc(sizeof(struct epoll_event) * utornado.nevents);
	utornado.core = uwsgi_calloc(sizeof(struct tw_core) * utornado.cores);
	utornado.heap = uwsgi_calloc(sizeof(struct tw_core *) * utornado.cores);
	linger_cap = utornado.cores;
	lingers = uwsgi_calloc(sizeof(struct tw_linger) * linger_cap);
	for (i = 0; i < linger_cap; i++) lingers[i].fd = -1;
	for (i = 0; i < utornado.cores; i++) {
		struct tw_core *c = &utornado.core[i];
		c->id = i;
		c->wsgi_req = &uwsgi.workers[uwsgi.mywid].cores[i].req;
		c->wait.fds[0] = c->wait.fds[1] = -1;
		c->wait.dup_fds[0] = c->wait.dup_fds[1] = -1;
		c->wait.woken_by = -1;
		c->wait.heap_idx = -1;
		c->conn_fd = -1;
	}
	utornado.on_events = PyCFunction_New(&tw_on_events_def, NULL);
	utornado.on_timer = PyCFunction_New(&tw_on_timer_def, NULL);
	utornado.on_ready = PyCFunction_New(&tw_on_ready_def, NULL);
	str_cancel = PyUnicode_InternFromString("cancel");
	/* two objects no one else has: why a wait ended is which one came back */
	utornado.token_ready = PyObject_CallNoArgs((PyObject *) &PyBaseObject_Type);
	utornado.token_timeout = PyObject_CallNoArgs((PyObject *) &PyBaseObject_Type);
	wake_args = utornado.token_ready ? PyTuple_Pack(1, utornado.token_ready) : NULL;
	if (!utornado.on_events || !utornado.on_timer || !utornado.on_ready || !str_cancel || !utornado.token_timeout || !wake_args) return -1;
	return 0;
}

/* ---- greenlet ---- */

int tw_greenlet_import(void) {
	PyGreenlet_Import();
	return _PyGreenlet_API ? 0 : -1;
}

/* new reference */
PyObject *tw_greenlet_current(void) {
	return (PyObject *) PyGreenlet_GetCurrent();
}

/* new reference */
PyObject *tw_greenlet_new(PyObject *run, PyObject *parent) {
	return (PyObject *) PyGreenlet_New(run, (PyGreenlet *) parent);
}

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/*
 * AddressSanitizer and greenlet: greenlet copies the frames of a suspended
 * greenlet out of the C stack and back in, but not their shadow memory, and
 * frames switched away from never run their epilogue, which is where ASan
 * unpoisons a frame. The same stack region then holds other frames under a
 * stale shadow: false reports, or ASan's own CHECK failing. Around every
 * switch, unpoison the stack from the hub's frame down to 256 KiB below the
 * current one, where greenlets run. Debug builds only; it costs the detection
 * of overflows between stack frames in that region, nothing else.
 */
#define TW_ASAN_STACK_WINDOW (256 * 1024)
static uintptr_t tw_stack_top;

void tw_asan_mark_stack_top(void) {
	tw_stack_top = (uintptr_t) __builtin_frame_address(0);
}

static void tw_asan_around_switch(void) {
	uintptr_t low = (uintptr_t) __builtin_frame_address(0) - TW_ASAN_STACK_WINDOW;
	if (tw_stack_top && low < tw_stack_top) __asan_unpoison_memory_region((void *) low, tw_stack_top - low);
}
#else
void tw_asan_mark_stack_top(void) {
}

#define tw_asan_around_switch()
#endif

/* new reference to what the greenlet switched back with, NULL on exception */
static PyObject *greenlet_switch_with(PyObject *greenlet, PyObject *args) {
	tw_asan_around_switch();
	PyObject *ret = PyGreenlet_Switch((PyGreenlet *) greenlet, args, NULL);
	tw_asan_around_switch();
	return ret;
}

PyObject *tw_greenlet_switch(PyObject *greenlet) {
	return greenlet_switch_with(greenlet, NULL);
}

/* the exception set ends a park: greenlet's GreenletExit (the greenlet is
 * being killed), or its error (the switch itself failed: a wait from
 * another thread than the hub's; passing it on would fail again) */
static int ends_park(void) {
	return PyErr_ExceptionMatches(PyExc_GreenletExit) || PyErr_ExceptionMatches(PyExc_GreenletError);
}

/* Switch to the hub handing on what a switch into the running greenlet
 * brought that was meant for someone else: `value` (stolen), or with NULL
 * the exception set, thrown into it. New reference to what it switched back
 * with. */
static PyObject *pass_to_hub(PyObject *value) {
	if (value) {
		PyObject *args = PyTuple_Pack(1, value);
		Py_DECREF(value);
		if (!args) return NULL;
		PyObject *ret = greenlet_switch_with(utornado.hub, args);
		Py_DECREF(args);
		return ret;
	}
	PyObject *type, *evalue, *tb;
	PyErr_Fetch(&type, &evalue, &tb);
	PyErr_NormalizeException(&type, &evalue, &tb);
	tw_asan_around_switch();
	PyObject *ret = PyObject_CallMethod(utornado.hub, "throw", "OOO", type, evalue ? evalue : Py_None, tb ? tb : Py_None);
	tw_asan_around_switch();
	Py_XDECREF(type);
	Py_XDECREF(evalue);
	Py_XDECREF(tb);
	return ret;
}

/*
 * Park the running greenlet in the hub until a switch back is its own
 * business: a value `mine(arg, value)` accepts, or greenlet's GreenletExit
 * (the greenlet is being killed). Anything else comes from a switch by
 * someone else (a loop callback's me.switch(), a greenlet the app started
 * here, whose parent this is, switching to it or ending with a value or an
 * exception) and goes on to the hub, where that switch was made: to the
 * switcher it is as if the hub were that greenlet's parent. New reference to
 * the value, or NULL with GreenletExit (or a failed switch's error) set.
 */
PyObject *tw_park(tw_mine_fn mine, void *arg) {
	PyObject *ret = tw_greenlet_switch(utornado.hub);
	while (ret ? !mine(arg, ret) : !ends_park()) ret = pass_to_hub(ret);
	return ret;
}

/* started and finished: switching to it would only switch to its parent */
int tw_greenlet_dead(PyObject *greenlet) {
	return PyGreenlet_STARTED((PyGreenlet *) greenlet) && !PyGreenlet_ACTIVE((PyGreenlet *) greenlet);
}

/* ---- switching into a core ---- */

/* The core runs from now on: the one place uwsgi.wsgi_req is set (uWSGI's
 * own code and the python plugin read it as "the request running now"). */
void tw_core_enter(struct tw_core *c) {
	uwsgi.wsgi_req = c->wsgi_req;
}

/* Switch from the hub into the core's greenlet (its first run, or a wake-up);
 * new reference to what it switched back with, NULL on exception. */
static PyObject *core_switch_with(struct tw_core *c, PyObject *greenlet, PyObject *args) {
	tw_core_enter(c);
	return greenlet_switch_with(greenlet, args);
}

PyObject *tw_core_switch(struct tw_core *c) {
	return core_switch_with(c, c->greenlet, NULL);
}

/* ---- suspend and wake ---- */

/*
 * Switch from the waiting greenlet to the hub until tw_wake() switches back.
 * Returns 0, or -1 when the greenlet is being killed instead (GreenletExit
 * is left set for the caller). A switch into the waiting greenlet by anyone
 * else (the app's own me.switch() from a loop callback) is not a wake-up:
 * it goes on to the hub (tw_park) and the wait goes on.
 */
static tw_suspend_fn suspend_hook;

/* an upper floor's work around the suspensions of cores marked in_step */
void tw_set_suspend_hook(tw_suspend_fn fn) {
	suspend_hook = fn;
}

static int is_wake(void *unused, PyObject *value) {
	return value == utornado.token_ready;
}

static int suspend(struct tw_core *c) {
	PyObject *current = tw_greenlet_current();
	if (current == utornado.hub) {
		Py_DECREF(current);
		PyErr_SetString(PyExc_RuntimeError, "the tornado loop cannot wait inside its own greenlet");
		return -1;
	}
	c->waiter = current;   /* the reference from GetCurrent, released on wake */
	int hooked = c->in_step && suspend_hook;
	if (hooked) suspend_hook(c, 0);
	/* a wake-up is tw_wake()'s token; a switch in by anyone else goes on to the hub */
	PyObject *ret = tw_park(is_wake, NULL);
	Py_CLEAR(c->waiter);
	if (hooked) suspend_hook(c, 1);
	if (!ret) {
		/* being killed: the core runs again, to unwind */
		tw_core_enter(c);
		return -1;
	}
	Py_DECREF(ret);
	return 0;
}

/* Resume a suspended core, from the hub, if `gen` is still its current
 * wait; `why` is what the wait returns. */
void tw_wake(struct tw_core *c, uint32_t gen, enum tw_wait_end why) {
	if (!tw_core_suspended(c) || c->wait.gen != gen) return;
	c->wait.end = why;
	count_wakeup(c);
	PyObject *waiter = c->waiter;   /* its reference is ours now */
	c->waiter = NULL;               /* not suspended any more: a second source for this wait is dropped */
	PyObject *ret = core_switch_with(c, waiter, wake_args);
	Py_DECREF(waiter);
	if (!ret) {
		/* the exception escaped the core's greenlet: it is lost for that
		 * request only, the loop goes on */
		uwsgi_log("[tornado] exception while resuming core %d\n", c->id);
		PyErr_Print();
		return;
	}
	Py_DECREF(ret);
}

/*
 * A wait on the core's own connection: registered once, edge-triggered for
 * both directions, at the first wait, and kept until tw_conn_end(). Returns
 * 1 when the connection was already seen ready for `events` (the wait ends
 * at once), 0 when the wait is armed, -1 when the fd is watched already by
 * someone else (the caller falls back to a registration per wait).
 */
static int watch_conn(struct tw_core *c, int slot, int fd, uint32_t events) {
	if (c->conn_fd != fd) {
		struct epoll_event ev;
		ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
		ev.data.u64 = TW_TAG(c->id | TW_ID_CONN, c->conn_gen + 1);
		if (epoll_ctl(utornado.epfd, EPOLL_CTL_ADD, fd, &ev)) return -1;
		c->conn_gen++;
		c->conn_fd = fd;
		c->conn_ready = 0;   /* the registration reports what is ready now */
	}
	if (c->conn_ready & events) {
		c->conn_ready &= ~events;
		return 1;
	}
	c->conn_wait = events;
	c->wait.fds[slot] = fd;
	return 0;
}

/* The core's connection is over (closed, or handed back): its registration
 * went with its close; events still queued for it carry an old generation. */
void tw_conn_end(struct tw_core *c) {
	c->conn_fd = -1;
	c->conn_wait = 0;
	c->conn_ready = 0;
}

/* 1: ready at once (the core's connection), 0: watching, -1: error */
static int watch_core_fd(struct tw_core *c, int slot, int fd, uint32_t events) {
	if (c->state != TW_CORE_IDLE && fd == c->wsgi_req->fd && !c->conn_wait) {
		int r = watch_conn(c, slot, fd, events);
		if (r >= 0) return r;
	}
	uint64_t tag = TW_TAG(c->id | (slot ? TW_ID_SLOT1 : 0), c->wait.gen);
	if (tw_watch(fd, events, tag) == 0) {
		c->wait.fds[slot] = fd;
		return 0;
	}
	if (errno != EEXIST) return -1;
	/* another core already watches this fd (two requests waiting on one
	 * pipe): an epoll holds one registration per fd, so watch a duplicate */
	int dfd = dup(fd);
	if (dfd < 0) return -1;
	if (tw_watch(dfd, events, tag)) {
		close(dfd);
		return -1;
	}
	c->wait.fds[slot] = fd;
	c->wait.dup_fds[slot] = dfd;
	return 0;
}

static void unwatch_core_fds(struct tw_core *c) {
	struct tw_wait *w = &c->wait;
	int j;
	for (j = 0; j < 2; j++) {
		if (c->conn_wait && w->fds[j] == c->conn_fd) {
			c->conn_wait = 0;   /* stays registered */
		}
		else if (w->dup_fds[j] >= 0) {
			close(w->dup_fds[j]);   /* closing unregisters it */
			w->dup_fds[j] = -1;
		}
		else if (w->fds[j] >= 0) {
			tw_unwatch(w->fds[j]);
		}
		w->fds[j] = -1;
	}
}

/* policy from the top floor (plugin.c wires it, as Redis' aeSetBeforeSleepProc) */
static tw_wait_limit_fn wait_limit;

void tw_set_wait_limit(tw_wait_limit_fn fn) {
	wait_limit = fn;
}

/* The monotonic deadline `seconds` from now; 0 (none) for seconds <= 0. */
uint64_t tw_deadline_after(double seconds) {
	if (seconds <= 0) return 0;
	return tw_now_ns() + (uint64_t) (seconds * 1e9);
}

/* A wait starts: a new generation, nothing armed yet. */
static void wait_begin(struct tw_core *c, enum tw_wait_kind kind) {
	struct tw_wait *w = &c->wait;
	utornado.counters.waits++;
	w->gen++;
	w->kind = kind;
	w->end = TW_WAIT_ERROR;
	w->woken_by = -1;
	c->wsgi_req->async_timed_out = 0;
}

/* Suspend until woken, then undo every registration: what the wait returns. */
static enum tw_wait_end wait_end(struct tw_core *c, int suspend_now) {
	struct tw_wait *w = &c->wait;
	if (suspend_now && suspend(c)) w->end = TW_WAIT_ERROR;
	unwatch_core_fds(c);
	tw_timer_stop(c);
	/* uWSGI's flag for "the time ran out", a sleep's included */
	if (w->end == TW_WAIT_TIMEOUT || (w->kind == TW_WAIT_TIMER && w->end == TW_WAIT_READY)) c->wsgi_req->async_timed_out = 1;
	w->kind = TW_WAIT_NONE;
	return w->end;
}

/*
 * Wait until fd0 (or fd1, -1: none) is ready for `events`, or `deadline`
 * (monotonic ns, 0: none, or the top floor's limit for the wait) passes.
 * TW_WAIT_READY: c->wait.woken_by says which fd.
 */
enum tw_wait_end tw_wait_fds(struct tw_core *c, int fd0, int fd1, uint32_t events, uint64_t deadline) {
	struct tw_wait *w = &c->wait;
	wait_begin(c, TW_WAIT_FD);
	uint64_t limit = wait_limit ? wait_limit(c, fd0, events) : 0;
	if (limit && (!deadline || limit < deadline)) deadline = limit;
	if (deadline && deadline <= tw_now_ns()) {
		w->end = TW_WAIT_TIMEOUT;
		return wait_end(c, 0);
	}
	int r = watch_core_fd(c, 0, fd0, events);
	if (r == 0 && fd1 >= 0) r = watch_core_fd(c, 1, fd1, events);
	if (r < 0) {
		uwsgi_error("[tornado] watching an fd for a wait");
		return wait_end(c, 0);
	}
	if (r > 0) {
		/* the connection was seen ready while nobody waited on it */
		w->woken_by = c->conn_fd;
		w->end = TW_WAIT_READY;
		return wait_end(c, 0);
	}
	if (deadline) tw_timer_start(c, deadline);
	return wait_end(c, 1);
}

/* Sleep until `deadline` (monotonic ns): TW_WAIT_READY when it came. */
enum tw_wait_end tw_wait_until(struct tw_core *c, uint64_t deadline) {
	if (!deadline || deadline <= tw_now_ns()) return tw_yield(c);
	wait_begin(c, TW_WAIT_TIMER);
	tw_timer_start(c, deadline);
	return wait_end(c, 1);
}

/* Let the loop run once, then go on: TW_WAIT_READY. */
enum tw_wait_end tw_yield(struct tw_core *c) {
	wait_begin(c, TW_WAIT_YIELD);
	tw_resume_soon(c);
	return wait_end(c, 1);
}

/* Wait for what the request registered with the core async API (whoever
 * handles its events wakes the core, TW_WAIT_READY), or until `deadline`
 * (0: none; TW_WAIT_TIMEOUT). */
enum tw_wait_end tw_wait_async_api(struct tw_core *c, uint64_t deadline) {
	wait_begin(c, TW_WAIT_ASYNC_API);
	if (deadline) tw_timer_start(c, deadline);
	return wait_end(c, 1);
}
