/*
 * tornado.h: shared state and internal API of the tornado loop engine.
 *
 * The engine runs uWSGI's async mode on Tornado's IOLoop (an asyncio loop
 * underneath) with greenlet as the suspend engine. One concern per file, in
 * floors: every call goes down a floor, never up or sideways; what a lower
 * floor needs of policy is a callback the top floor registers (Redis' ae.c
 * and aeSetBeforeSleepProc), and the counters each floor keeps are copied
 * out by metrics.c (libuv's uv_metrics_info).
 *
 *   4 plugin.c    the --tornado options, start-up checks, the worker's main
 *                 loop beside the plugin struct (uWSGI's gevent plugin)
 *   3 signals.c   uWSGI signals, graceful reload and shutdown
 *   2 loop.c      the IOLoop after fork, accept and the accept gate, the
 *                 worker's phase, one greenlet per core serving connections
 *   1 deadlines.c slow clients: the request-head deadline, the minimum body
 *                 rate, shedding, the harakiri of the oldest request
 *     framing.c   strict request framing: judges a request head (RFC 9112)
 *     keepalive.c the HTTP socket's functions: whether a connection stays
 *                 open after a response, no body where a response has none,
 *                 100 Continue, rejecting a request head
 *     hooks.c     uWSGI's wait/suspend hooks and the core async API
 *                 (uwsgi.async_sleep, wait_fd_read/write, suspend)
 *     metrics.c   the engine's metrics in uWSGI's metrics subsystem
 *     websocket.c the engine's own websockets (RFC 6455) behind uWSGI's
 *                 uwsgi.websocket_* API, state per core
 *     asgi.c      ASGI apps: their bridge registered as a WSGI app, the
 *                 request's side of it in C, lifespan per worker
 *     environ.c   the WSGI environ: keys made once, constant entries copied
 *                 from a template (the app's wi->request_subhandler)
 *     response.c  a list of bytes sent in one call (wi->response_subhandler)
 *   0 event.c     the event layer: one epoll for every uWSGI wait of the
 *                 worker (a connection registered once), a timer heap, a
 *                 ready queue, lingering closes, greenlet switching, the
 *                 engine's counters; bridged into the asyncio loop
 *     guard.c     refuses a uWSGI or Python the plugin was not built for
 *
 * Why one private epoll instead of asyncio's add_reader() per wait: every
 * add_reader() allocates a Handle and a SelectorKey and goes through Python;
 * a request waits several times, so that cost is per event. Our epoll is
 * registered once as a single reader of the asyncio loop; a connection is
 * registered in it once (event.c, watch_conn), so a wait on it is no system
 * call and no Python object at all. Timers work the same way: a heap
 * in C, and one asyncio timer armed for the earliest deadline only.
 */
#ifndef UWSGI_TORNADO_H
#define UWSGI_TORNADO_H

/* uwsgi.h and Python.h, and what differs between CPython and PyPy */
#include "pyimpl.h"

#ifndef __linux__
#error "the tornado loop engine needs epoll (Linux)"
#endif
#include <sys/epoll.h>

/* what a wait waits for */
#define TW_READ  EPOLLIN
#define TW_WRITE EPOLLOUT

/* epoll tags: the low 32 bits say who registered (a core's wait, or a
 * handler registered with tw_handler_new), the high 32 bits carry the
 * generation of the core's wait, so an event that belongs to a finished wait
 * is recognised and dropped. */
#define TW_ID_SLOT1   0x40000000u   /* core id | this: the wait's second fd */
#define TW_ID_CONN    0x20000000u   /* core id | this: the core's connection (generation: conn_gen) */
#define TW_ID_LINGER  0x10000000u   /* + linger slot: a connection closing in stages */
#define TW_ID_KIND    0xF0000000u
#define TW_ID_HANDLER 0x80000000u   /* + handler id */
#define TW_ID_HANDLER_MAX 0xffffffffu
#define TW_TAG(id, gen) (((uint64_t) (gen) << 32) | (uint32_t) (id))

/* called from the hub when a registered fd is readable */
typedef void (*tw_fd_handler)(int fd, void *data);

struct tw_core;
/* policy the top floor wires into the event layer: the latest moment (a
 * monotonic ns deadline, 0: none) a core's wait on fd may end */
typedef uint64_t (*tw_wait_limit_fn)(struct tw_core *, int fd, uint32_t events);
/* around a suspension of a core marked in_step: resumed 0 before it
 * switches to the hub, 1 once it runs again (asgi.c: a Task's step) */
typedef void (*tw_suspend_fn)(struct tw_core *, int resumed);
/* a deadline never due (2^63 ns of the monotonic clock: 292 years), with
 * room above it for the timer's slack */
#define TW_DEADLINE_NEVER (UINT64_MAX / 2)

/* tw_set_calls(): a heap of timed calls the engine's timer serves (calls.c):
 * its earliest deadline (0: none), and running what is due by `now` (-1
 * with an exception that goes on out of the loop) */
typedef uint64_t (*tw_calls_earliest_fn)(void);
typedef int (*tw_calls_run_fn)(uint64_t now);
/* tw_park(): whether a value switched into the parked greenlet is its own */
typedef int (*tw_mine_fn)(void *arg, PyObject *value);

/* the worker's phase, one way only (loop.c, tw_phase_enter) */
enum tw_phase {
	TW_SERVING = 0,               /* accepting and serving */
	TW_DRAINING,                  /* no new connection; the ones in flight finish */
	TW_STOPPING,                  /* the loop stops */
};

struct tw_ws;

/* What a core is doing with its connection; loop.c moves it (core_enter). */
enum tw_core_state {
	TW_CORE_IDLE = 0,             /* free: no connection */
	TW_CORE_HEAD,                 /* the connection has not delivered a complete request head
	                               * (new, or kept alive between requests): on the heads list */
	TW_CORE_APP,                  /* a request: routing, the app, the response */
	TW_CORE_CLOSING,              /* the connection ends (a broken head, or after the last response) */
};

/* What a suspended core waits for (event.c). */
enum tw_wait_kind {
	TW_WAIT_NONE = 0,             /* not waiting */
	TW_WAIT_FD,                   /* tw_wait_fds: one or two fds, until a deadline */
	TW_WAIT_TIMER,                /* tw_wait_until: a deadline only */
	TW_WAIT_YIELD,                /* tw_yield: the next loop iteration */
	TW_WAIT_ASYNC_API,            /* tw_wait_async_api: the waits the request registered with
	                               * uWSGI's core async API (uwsgi.wait_fd_read, async timeouts) */
};

/* Why a wait ended: set by whoever ended it, returned by the wait. */
enum tw_wait_end {
	TW_WAIT_ERROR = -1,           /* nothing could be watched, or an exception was thrown in (left set) */
	TW_WAIT_READY = 0,            /* an fd is ready (wait.woken_by), the loop came round, the async API's event */
	TW_WAIT_TIMEOUT,              /* its deadline passed */
	TW_WAIT_CANCELLED,            /* ended by the engine: a shed or drained connection, a websocket drain */
};

/* The one wait of a core. gen is bumped once, when a wait starts; every
 * wake-up source carries the gen it was armed with, so one that belongs to
 * an earlier wait (a late epoll event, a timer racing an fd) is dropped. */
struct tw_wait {
	enum tw_wait_kind kind;
	enum tw_wait_end end;
	uint32_t gen;
	int fds[2];                   /* registered in the epoll for this wait (-1: nothing) */
	int dup_fds[2];               /* dup()s made because the fd was already watched */
	int woken_by;                 /* the fd that ended it, -1: none */
	uint64_t deadline;            /* monotonic ns, 0: none; in the timer heap while heap_idx >= 0 */
	int heap_idx;
};

/* One per async core, allocated once per worker. */
struct tw_core {
	int id;
	enum tw_core_state state;
	struct wsgi_request *wsgi_req;
	PyObject *greenlet;     /* owned: the core's greenlet, serves request after request */
	PyObject *waiter;       /* owned while suspended: the greenlet to switch back to */
	struct tw_wait wait;    /* event.c */
	/* the connection's fd stays registered (edge-triggered, in and out) from
	 * the core's first wait on it until the core is freed: a wait on it costs
	 * no epoll_ctl; readiness seen while nobody waited is kept in conn_ready */
	int conn_fd;            /* -1: not registered */
	uint32_t conn_gen;      /* bumped per registration, carried in its tag */
	uint32_t conn_wait;     /* the events the current wait wants of it (0: not waiting on it) */
	uint32_t conn_ready;    /* EPOLLIN/EPOLLOUT seen and not yet waited for */
	int queued;             /* in the ready queue */
	uint32_t queued_gen;
	struct tw_core *next_ready;
	time_t running_since;   /* the app runs a request since then (0: it does not) */
	struct tw_core *run_prev; /* deadlines.c: the cores running the app, oldest first (harakiri) */
	struct tw_core *run_next;
	uint64_t ready_at;      /* monotonic ns since when the core could run (0: unknown), for the loop lag */
	/* deadlines.c: a core in TW_CORE_HEAD is on the heads list, oldest first */
	uint64_t head_deadline; /* monotonic ns; 0: none (--tornado-head-timeout 0) */
	uint64_t body_since;    /* monotonic ns: the app's first wait for body bytes, 0 before */
	struct tw_core *head_prev;
	struct tw_core *head_next;
	/* keepalive.c, per request on an HTTP socket */
	const struct tw_http_ops *http; /* the socket's own functions under ours (NULL: not HTTP) */
	int close_after;        /* close the connection after this response */
	int req_flags;          /* TW_REQ_*: what framing.c found in the head */
	int no_body;            /* the response has no body (HEAD, 204, 304, 1xx) */
	int rejected;           /* the head was answered with an error */
	int head_ok;            /* a complete head passed framing.c: only then may the connection stay open */
	int conn_requests;      /* requests served on the current connection before this one */
	struct tw_ws *ws;       /* websocket.c: the core's websocket session, allocated at its first handshake */
	int in_step;            /* asgi.c: the core runs an asyncio Task's step (event.c calls the suspend hook) */
};

/* framing.c: what a request head says, or why it is refused */
#define TW_REQ_CHUNKED         1   /* Transfer-Encoding: chunked */
#define TW_REQ_EXPECT_CONTINUE 2   /* Expect: 100-continue (HTTP/1.1) */
struct tw_http_verdict {
	int status;             /* 0: served; else the status to answer */
	const char *reason;     /* why, for the client and the log */
	int flags;              /* TW_REQ_* */
};

/* One per worker, in memory shared with the master, which reads it for
 * uWSGI's metrics subsystem (metrics.c). Written by the worker only. */
/* The engine's counters: each floor bumps its own where it happens, in the
 * worker's memory; metrics.c copies them out once a second (as libuv's
 * uv_metrics_info copies the loop's). */
struct tw_counters {
	int64_t waits;          /* event.c: waits started */
	int64_t wakeups;        /* event.c: suspended cores resumed */
	int64_t lag_sum_ns;     /* event.c: from ready to running, summed over lag_count wake-ups */
	int64_t lag_count;
	uint64_t lag_max_ns;    /* event.c: the longest since metrics.c last took it */
	int measure_lag;        /* set by metrics.c when someone reads the lag: a clock read per wake-up */
	int64_t accept_pauses;  /* loop.c: every core busy, accepting stopped */
	int64_t http_rejected;  /* keepalive.c: request heads refused by framing.c's rules */
};

struct tw_metrics {
	/* gauges, published once a second */
	int64_t busy_cores;
	int64_t head_cores;
	int64_t fd_waiting_cores;
	int64_t timer_waiting_cores;
	int64_t ready_queue;
	int64_t loop_lag_max_us;
	/* counters, copied from struct tw_counters once a second */
	int64_t waits;
	int64_t wakeups;
	int64_t lag_sum_ns;
	int64_t lag_count;
	int64_t accept_pauses;
	int64_t http_rejected;
};

struct uwsgi_tornado {
	/* options */
	int cores;
	int uvloop;                   /* --tornado-uvloop */
	int stock_timers;             /* --tornado-stock-timers: asyncio's own call_at/call_later */
	int head_timeout;             /* --tornado-head-timeout (s, 0: off) */
	int body_timeout;             /* --tornado-body-timeout (s) */
	int body_min_rate;            /* --tornado-body-min-rate (bytes/s, 0: off) */
	int ws_close_timeout;         /* --tornado-websocket-close-timeout (s) */
	struct uwsgi_string_list *asgi_apps;  /* --tornado-asgi (asgi.c) */
	int stock_wsgi;               /* --tornado-stock-wsgi: the python plugin's own environ and response subhandlers */

	/* worker state */
	int epfd;
	struct epoll_event *events;   /* one batch buffer, allocated once */
	int nevents;
	struct tw_core *core;         /* uwsgi.async entries */
	int busy;                     /* cores owning a connection */
	int accepting;                /* the accept gate: listen sockets are in the epoll */
	enum tw_phase phase;          /* loop.c, tw_phase_enter(): serving, draining, stopping */
	struct tw_core *heads_first;  /* cores waiting for a request head, oldest first */
	struct tw_core *heads_last;
	struct tw_core *running_first;  /* cores running the app, oldest first */
	struct tw_core *running_last;
	int exit_code;                /* the worker's exit status once stopped (a reload unless told otherwise) */

	/* timers: a binary min-heap of cores by deadline */
	struct tw_core **heap;
	int heap_len;
	PyObject *timer_handle;       /* owned: the asyncio timer armed for the earliest deadline */
	uint64_t armed_deadline;

	/* cores to resume on the next loop iteration */
	struct tw_core *ready_head;
	struct tw_core *ready_tail;
	int ready_armed;

	/* Python objects, created once per worker and owned here */
	PyObject *hub;                /* the greenlet the loop runs in */
	PyObject *ioloop;             /* tornado.ioloop.IOLoop of this worker */
	PyObject *aloop;              /* the asyncio loop under it */
	PyObject *call_later;         /* bound aloop.call_later */
	PyObject *call_soon;          /* bound aloop.call_soon */
	PyObject *on_events;          /* C callables handed to the loop */
	PyObject *on_timer;
	PyObject *on_ready;
	PyObject *periodic;           /* the once-a-second worker check */
	PyObject *token_ready;        /* event.c: what a waker switches back with: the wait's event came */
	PyObject *token_timeout;      /* event.c: ... its deadline passed (tw_green_wait) */
	PyObject *str_gr_context;
	PyObject *str_switch;

	struct tw_counters counters;  /* the engine's counters (metrics.c copies them out) */
	struct tw_metrics *metrics;   /* metrics.c: this worker's slot (never NULL in a worker) */
};

extern struct uwsgi_tornado utornado;

/* suspended in a wait: the hub may wake it */
static inline int tw_core_suspended(const struct tw_core *c) {
	return c->waiter != NULL;
}
extern struct uwsgi_server uwsgi;
extern struct uwsgi_python up;

/* event.c: greenlet's C API lives in one translation unit (greenlet.h keeps
 * its function table in a static variable), these wrap what the others use */
int tw_greenlet_import(void);
PyObject *tw_greenlet_current(void);
PyObject *tw_greenlet_new(PyObject *run, PyObject *parent);
PyObject *tw_greenlet_switch(PyObject *greenlet);
int tw_greenlet_dead(PyObject *greenlet);
void tw_asan_mark_stack_top(void);

/* event.c */
int tw_event_init(void);
uint64_t tw_now_ns(void);
int tw_watch(int fd, uint32_t events, uint64_t tag);
void tw_unwatch(int fd);
int tw_handler_new(int fd, tw_fd_handler fn, void *data);
int tw_handler_watch(int id);
void tw_handler_unwatch(int id);
int tw_watch_handler(int fd, tw_fd_handler fn);
void tw_timer_start(struct tw_core *, uint64_t deadline_ns);
void tw_timer_stop(struct tw_core *);
void tw_resume_soon(struct tw_core *);
uint64_t tw_deadline_after(double seconds);
enum tw_wait_end tw_wait_fds(struct tw_core *, int fd0, int fd1, uint32_t events, uint64_t deadline);
enum tw_wait_end tw_wait_until(struct tw_core *, uint64_t deadline);
enum tw_wait_end tw_yield(struct tw_core *);
enum tw_wait_end tw_wait_async_api(struct tw_core *, uint64_t deadline);
PyObject *tw_core_switch(struct tw_core *);
PyObject *tw_park(tw_mine_fn mine, void *arg);
void tw_core_enter(struct tw_core *);
void tw_conn_end(struct tw_core *);
void tw_set_wait_limit(tw_wait_limit_fn);
void tw_set_suspend_hook(tw_suspend_fn);
void tw_timer_want(uint64_t deadline);
void tw_set_calls(tw_calls_earliest_fn, tw_calls_run_fn);

/* calls.c: the loop's call_at()/call_later() on the engine's timers */
PyObject *tw_calls_install(PyObject *loop);
void tw_linger(struct tw_core *, int fd);
void tw_linger_sweep(void);
void tw_wake(struct tw_core *, uint32_t gen, enum tw_wait_end);
PyObject *tw_loop_call(PyObject *method, PyObject *arg0, PyObject *arg1);

/* loop.c */
void tw_accept_pause(void);
void tw_accept_resume(void);
int tw_phase_enter(enum tw_phase);
void tw_loop_run(void);
int tw_setup_ioloop(void);
int tw_publish_engine(void);
void tw_listen_init(void);

/* hooks.c */
void tw_hooks_install(void);
int tw_legacy_init(void);
struct tw_core *tw_current_core(void);
void tw_core_set_greenlet(struct tw_core *, PyObject *greenlet);
int tw_green_wait(int fd, uint32_t events, uint64_t deadline);
void tw_replace_module_functions(void);

/* signals.c */
void tw_signals_init(void);
void tw_run_atexit(void);
void tw_drain(void);

/* deadlines.c */
void tw_deadlines_defaults(void);
void tw_head_begin(struct tw_core *);
void tw_head_end(struct tw_core *);
uint64_t tw_request_deadline(struct tw_core *, int fd, uint32_t events);
int tw_shed_oldest_head(void);
void tw_close_heads(void);
void tw_app_begin(struct tw_core *);
void tw_app_end(struct tw_core *);

/* framing.c */
void tw_framing_init(void);
struct tw_http_verdict tw_http_check_head(const char *head, size_t len, int first_on_connection);

/* keepalive.c */
void tw_keepalive_init(void);
int tw_http_socket(struct uwsgi_socket *);
void tw_http_begin(struct tw_core *);
void tw_http_reject(struct tw_core *, int status, const char *reason);

/* websocket.c */
void tw_ws_replace_module_functions(void);
void tw_ws_end(struct tw_core *);
int tw_ws_drain(void);

/* asgi.c */
void tw_asgi_init_apps(void);
void tw_asgi_worker_start(void);
void tw_asgi_worker_stop(void);
void tw_asgi_keep_head(struct tw_core *, const char *head, size_t len);
/* environ.c, response.c */
int tw_environ_install(void);
int tw_response_install(void);

/* metrics.c */
void tw_metrics_register(void);
void tw_metrics_worker_init(void);
void tw_metrics_sample(void);

#endif
