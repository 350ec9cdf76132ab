/*
 * loop.c: floor 2 of the tornado loop engine: the worker's IOLoop, accept,
 * the accept gate, the worker's phase, and serving a connection in its
 * core's greenlet. It calls floors 0 and 1 only; plugin.c (floor 4) runs it.
 *
 * After fork each worker takes over the IOLoop the app may have created in
 * the master (or creates one), registers the engine's epoll with it, and has
 * one greenlet per async core; the loop runs in the worker's main greenlet,
 * "the hub". Accepting happens in the hub; everything else a request does
 * (parsing, the app, the response, keep-alive) happens in its core's greenlet.
 */
#include "tornado.h"

/*
 * The cold path in Python: finding or repairing the worker's asyncio loop is
 * attribute work on asyncio's objects, clearer in Python than in C. It is
 * tw_worker.py, embedded at build time (uwsgiplugin.py writes tw_worker_py.h).
 */
#include "tw_worker_py.h"

static PyObject *tw_core_run(PyObject *self, PyObject *unused);
static PyMethodDef tw_core_run_def = {"uwsgi_tornado_core", tw_core_run, METH_NOARGS, "serve the connections given to one async core"};

/* Create the IOLoop of this worker; fills utornado.ioloop and utornado.aloop. */
int tw_setup_ioloop(void) {
	int ret = -1;
	PyObject *code = NULL, *module = NULL, *result = NULL;
	code = Py_CompileString(tw_worker_py, "tw_worker.py", Py_file_input);
	if (!code) goto end;
	module = PyImport_ExecCodeModule("uwsgi_tornado_engine", code);
	if (!module) goto end;
	result = PyObject_CallMethod(module, "worker_ioloop", "O", utornado.uvloop ? Py_True : Py_False);
	if (!result) goto end;
	int own_timers = 0;
	if (!PyArg_ParseTuple(result, "OOp", &utornado.ioloop, &utornado.aloop, &own_timers)) goto end;
	Py_INCREF(utornado.ioloop);
	Py_INCREF(utornado.aloop);
	/* the class's own: the engine's timer runs on them */
	utornado.call_later = PyObject_GetAttrString(utornado.aloop, "call_later");
	utornado.call_soon = PyObject_GetAttrString(utornado.aloop, "call_soon");
	if (!utornado.call_later || !utornado.call_soon) goto end;
	/* asyncio's own loop (tw_worker.py says so): its call_at/call_later on
	 * the engine's C heap (calls.c) unless told to keep asyncio's */
	if (own_timers && !utornado.stock_timers && TW_IMPL_LOOP_CALLS) {
		PyObject *stock = tw_calls_install(utornado.aloop);
		if (!stock) goto end;
		Py_SETREF(utornado.call_later, stock);
	}
	PyObject *r = PyObject_CallMethod(utornado.aloop, "add_reader", "iO", utornado.epfd, utornado.on_events);
	if (!r) goto end;
	Py_DECREF(r);
	ret = 0;
end:
	Py_XDECREF(result);
	Py_XDECREF(module);
	Py_XDECREF(code);
	return ret;
}

/* What the glue (uwsgidecorators_ext) takes from the engine's module, so
 * that it never has to guess: the hub, the loops, the engine's sleep. */
int tw_publish_engine(void) {
	PyObject *module = PyImport_AddModule("uwsgi_tornado_engine");   /* borrowed */
	PyObject *uwsgi_dict = get_uwsgi_pydict("uwsgi");                /* borrowed */
	PyObject *sleep = uwsgi_dict ? PyDict_GetItemString(uwsgi_dict, "async_sleep") : NULL;   /* borrowed */
	if (!module || !sleep) {
		if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "the engine's module or uwsgi.async_sleep is missing");
		return -1;
	}
	if (PyObject_SetAttrString(module, "hub", utornado.hub) || PyObject_SetAttrString(module, "loop", utornado.aloop)
		|| PyObject_SetAttrString(module, "ioloop", utornado.ioloop) || PyObject_SetAttrString(module, "sleep", sleep)) {
		return -1;
	}
	return 0;
}

/* ---- cores ---- */

static PyObject *tw_core_greenlet(struct tw_core *c) {
	PyObject *id = PyLong_FromLong(c->id);
	if (!id) return NULL;
	PyObject *run = PyCFunction_New(&tw_core_run_def, id);
	Py_DECREF(id);
	if (!run) return NULL;
	PyObject *gl = tw_greenlet_new(run, utornado.hub);
	Py_DECREF(run);
	return gl;
}

static void tw_core_released(void);

/* Give a wsgi_req back to uWSGI's free list (find_first_available_wsgi_req). */
static void tw_put_wsgi_req(struct wsgi_request *wsgi_req) {
	uwsgi.async_queue_unused_ptr++;
	uwsgi.async_queue_unused[uwsgi.async_queue_unused_ptr] = wsgi_req;
}

/*
 * A core's state, one way in: idle -> head (accepted, or kept alive after a
 * response) -> app (a complete head passed) -> head ... -> closing (the
 * connection ends) -> idle (freed). The heads list (deadlines.c) holds
 * exactly the cores in TW_CORE_HEAD, and utornado.busy counts the cores
 * that are not idle.
 */
static void core_enter(struct tw_core *c, enum tw_core_state state) {
	enum tw_core_state from = c->state;
	if (from == state) return;
	if (from == TW_CORE_HEAD) tw_head_end(c);
	if (from == TW_CORE_IDLE) utornado.busy++;
	c->state = state;
	switch (state) {
	case TW_CORE_HEAD:
		/* a full worker that stopped watching its listen sockets watches
		 * them again, so that a new connection can shed this one */
		tw_head_begin(c);
		if (!utornado.accepting) tw_accept_resume();
		break;
	case TW_CORE_IDLE:
		tw_conn_end(c);
		utornado.busy--;
		tw_put_wsgi_req(c->wsgi_req);
		tw_core_released();
		break;
	default:
		break;
	}
}

/* Close the connection --http11-socket keeps open for the core's next request. */
static void tw_drop_keepalive(struct uwsgi_socket *sock, int id) {
	if (!sock->retry || !sock->retry[id]) return;
	close(sock->fd_threads[id]);
	sock->retry[id] = 0;
	sock->fd_threads[id] = -1;
}

/*
 * The HTTP parsers read the head into a buffer_size malloc that uWSGI keeps
 * until the close, though the head is copied into the core's own buffer by
 * then: 4 KiB per request in flight, most of it for nothing. Keep only the
 * body bytes that came with the head.
 */
static void tw_trim_parser_buffer(struct wsgi_request *wsgi_req) {
	/* proto_parser_buf_size: a parser (fastcgi) that keeps using its buffer */
	if (!wsgi_req->proto_parser_buf || wsgi_req->proto_parser_buf_size || !tw_http_socket(wsgi_req->socket)) return;
	size_t remains = wsgi_req->proto_parser_remains;
	if (!remains) {
		free(wsgi_req->proto_parser_buf);
		wsgi_req->proto_parser_buf = NULL;
		return;
	}
	memmove(wsgi_req->proto_parser_buf, wsgi_req->proto_parser_remains_buf, remains);
	char *trimmed = realloc(wsgi_req->proto_parser_buf, remains);
	if (trimmed) wsgi_req->proto_parser_buf = trimmed;
	wsgi_req->proto_parser_remains_buf = wsgi_req->proto_parser_buf;
}

/* Parse, route and run one request; the connection is already accepted. */
static void tw_serve_one(struct tw_core *c) {
	struct wsgi_request *wsgi_req = c->wsgi_req;

	/* a fresh contextvars context per request, as a new greenlet would have */
	if (PyObject_SetAttr(c->greenlet, utornado.str_gr_context, Py_None)) PyErr_Clear();
	tw_http_begin(c);

	for (;;) {
		int status = wsgi_req->socket->proto(wsgi_req);
		if (status == UWSGI_OK) break;
		if (status < 0) {
			/* uWSGI's parser refused a complete head, or one larger than
			 * --buffer-size: say so (a client that left gets nothing) */
			if (c->http && wsgi_req->proto_parser_pos >= uwsgi.buffer_size) tw_http_reject(c, 431, "request head larger than --buffer-size");
			else if (c->http && wsgi_req->proto_parser_status == 3) tw_http_reject(c, 400, "malformed request head");
			goto broken;
		}
		/* bounded by --socket-timeout per read and by the head deadline
		 * (deadlines.c) overall: a silent or dribbling client loses its core */
		if (tw_wait_fds(c, wsgi_req->fd, -1, TW_READ, tw_deadline_after(uwsgi.socket_timeout)) != TW_WAIT_READY) goto broken;
	}
	core_enter(c, TW_CORE_APP);
	if (c->http) {
		/* strict framing (framing.c) on the raw head, still in the parser's buffer */
		struct tw_http_verdict v = tw_http_check_head(wsgi_req->proto_parser_buf, wsgi_req->proto_parser_pos - wsgi_req->proto_parser_remains,
			c->conn_requests == 0);
		if (v.status) {
			tw_http_reject(c, v.status, v.reason);
			goto broken;
		}
		c->req_flags = v.flags;
		c->head_ok = 1;
		tw_impl_keep_head(c, wsgi_req->proto_parser_buf, wsgi_req->proto_parser_pos - wsgi_req->proto_parser_remains);
	}
	tw_trim_parser_buffer(wsgi_req);

	tw_app_begin(c);

#ifdef UWSGI_ROUTING
	if (uwsgi_apply_routes(wsgi_req) == UWSGI_ROUTE_BREAK) goto done;
#endif
	for (;;) {
		wsgi_req->async_status = uwsgi.p[wsgi_req->uh->modifier1]->request(wsgi_req);
		if (wsgi_req->async_status <= UWSGI_OK) break;
		/* the app yielded: let the others run */
		wsgi_req->switches++;
		uwsgi.schedule_fix(wsgi_req);
		uwsgi.schedule_to_main(wsgi_req);
	}
#ifdef UWSGI_ROUTING
done:
#endif
	async_reset_request(wsgi_req);
	tw_ws_end(c);
	int answered = wsgi_req->headers != NULL || wsgi_req->headers_sent || wsgi_req->response_size;
	struct uwsgi_socket *sock = wsgi_req->socket;
	uwsgi_close_request(wsgi_req);
	tw_app_end(c);
	/* not answered at all (a kept-alive client would wait forever for a
	 * response that will not come), or answered without framing (keepalive.c) */
	if (!answered || c->close_after) tw_drop_keepalive(sock, c->id);
	return;

broken:
	/* the client went away, timed out or sent garbage before a request
	 * existed: nothing to log or account, just free what parsing took */
	core_enter(c, TW_CORE_CLOSING);
	async_reset_request(wsgi_req);
	uwsgi_destroy_request(wsgi_req);
}

/* Serve a connection until it closes: one request, or many with keep-alive. */
static void tw_serve(struct tw_core *c) {
	struct wsgi_request *wsgi_req = c->wsgi_req;
	struct uwsgi_socket *sock = wsgi_req->socket;
	int id = c->id;
	for (c->conn_requests = 0;; c->conn_requests++) {
		tw_serve_one(c);
		/* --http11-socket keeps the connection in sock->retry[core] */
		if (!sock->retry || !sock->retry[id] || utornado.phase != TW_SERVING) break;
		wsgi_req_setup(wsgi_req, id, sock);
		/* waits (in this greenlet) for the next request, up to --socket-timeout
		 * and the head deadline; shedding and a drain end the wait early */
		core_enter(c, TW_CORE_HEAD);
		if (wsgi_req_simple_accept(wsgi_req, sock->fd)) break;
		uwsgi.workers[uwsgi.mywid].cores[id].in_request = 1;
		wsgi_req->start_of_request = uwsgi_micros();
		wsgi_req->start_of_request_in_sec = wsgi_req->start_of_request / 1000000;
	}
	/* draining with an idle keep-alive connection: close it */
	core_enter(c, TW_CORE_CLOSING);
	tw_drop_keepalive(sock, id);
	uwsgi.workers[uwsgi.mywid].cores[id].in_request = 0;
	core_enter(c, TW_CORE_IDLE);
}

/* tw_park(): an accept moved the core out of idle */
static int accepted(void *core, PyObject *unused) {
	return ((struct tw_core *) core)->state != TW_CORE_IDLE;
}

/* The body of a core's greenlet: serve, park in the hub, serve again. Only
 * an accept (which moves the core out of idle before switching in) ends the
 * parking: a switch into a parked core by anyone else (a callback the app
 * left behind, me.switch() after its request) goes on to the hub (tw_park). */
static PyObject *tw_core_run(PyObject *self, PyObject *unused) {
	struct tw_core *c = &utornado.core[PyLong_AsLong(self)];
	for (;;) {
		tw_serve(c);
		/* anyone else's switch: what it brought goes on to the hub */
		PyObject *ret = tw_park(accepted, c);
		/* NULL: the greenlet is being killed (worker exit) */
		if (!ret) return NULL;
		Py_DECREF(ret);
	}
}

/* Hand an accepted connection to its core's greenlet and run it until it
 * first waits (often until the response is sent). */
static void tw_core_start(struct tw_core *c) {
	if (c->greenlet && tw_greenlet_dead(c->greenlet)) {
		/* an exception escaped it: start over with a new one */
		tw_core_set_greenlet(c, NULL);
	}
	if (!c->greenlet) {
		tw_core_set_greenlet(c, tw_core_greenlet(c));
		if (!c->greenlet) {
			PyErr_Print();
			uwsgi_log("[tornado] unable to create the greenlet of core %d\n", c->id);
			uwsgi_destroy_request(c->wsgi_req);
			uwsgi.workers[uwsgi.mywid].cores[c->id].in_request = 0;
			core_enter(c, TW_CORE_IDLE);
			return;
		}
	}
	PyObject *ret = tw_core_switch(c);
	if (!ret) {
		uwsgi_log("[tornado] core %d failed\n", c->id);
		PyErr_Print();
		return;
	}
	Py_DECREF(ret);
}

/* ---- accept ---- */

/* handler ids of the listen sockets (tw_handler_new), -1 for closed ones */
static int *listen_handlers;
static int listen_count;

/* A listen socket is readable: accept while there are free cores. */
static void tw_on_listen(int fd, void *data) {
	struct uwsgi_socket *sock = data;
	while (utornado.accepting) {
		struct wsgi_request *wsgi_req = find_first_available_wsgi_req();
		if (!wsgi_req) {
			/* every core is busy and a connection waits: make room by closing
			 * the oldest connection that has not sent a request (deadlines.c) */
			if (tw_shed_oldest_head()) continue;
			/* none: the backlog holds the rest until a core frees */
			utornado.counters.accept_pauses++;
			tw_accept_pause();
			return;
		}
		wsgi_req_setup(wsgi_req, wsgi_req->async_id, sock);
		if (wsgi_req_simple_accept(wsgi_req, sock->fd)) {
			/* EAGAIN (another worker was faster) or a real error */
			tw_put_wsgi_req(wsgi_req);
			return;
		}
		uwsgi.workers[uwsgi.mywid].cores[wsgi_req->async_id].in_request = 1;
		wsgi_req->start_of_request = uwsgi_micros();
		wsgi_req->start_of_request_in_sec = wsgi_req->start_of_request / 1000000;
		struct tw_core *c = &utornado.core[wsgi_req->async_id];
		core_enter(c, TW_CORE_HEAD);
		tw_core_start(c);
	}
}

void tw_listen_init(void) {
	struct uwsgi_socket *sock;
	for (sock = uwsgi.sockets; sock; sock = sock->next) listen_count++;
	listen_handlers = uwsgi_malloc(sizeof(int) * (listen_count > 0 ? listen_count : 1));
	int i = 0;
	for (sock = uwsgi.sockets; sock; sock = sock->next, i++) {
		listen_handlers[i] = sock->fd < 0 ? -1 : tw_handler_new(sock->fd, tw_on_listen, sock);
		if (sock->fd >= 0 && listen_handlers[i] < 0) {
			uwsgi_log("[tornado] unable to register a listen socket\n");
			exit(1);
		}
	}
}

static void tw_listen_sockets(int add) {
	int i;
	for (i = 0; i < listen_count; i++) {
		if (listen_handlers[i] < 0) continue;
		if (!add) tw_handler_unwatch(listen_handlers[i]);
		else if (tw_handler_watch(listen_handlers[i])) uwsgi_error("[tornado] watching a listen socket");
	}
}

void tw_accept_pause(void) {
	if (!utornado.accepting) return;
	tw_listen_sockets(0);
	utornado.accepting = 0;
}

void tw_accept_resume(void) {
	if (utornado.accepting || utornado.phase != TW_SERVING) return;
	tw_listen_sockets(1);
	utornado.accepting = 1;
}

/* A core gave its connection back: a draining worker whose last request is
 * done stops; a full worker that stopped accepting accepts again. */
static void tw_core_released(void) {
	if (utornado.phase == TW_DRAINING && utornado.busy == 0) tw_phase_enter(TW_STOPPING);
	else if (!utornado.accepting) tw_accept_resume();
}

/*
 * The worker's phase, one way only: serving -> draining (no new connection,
 * the ones in flight finish) -> stopping (the loop stops from a callback,
 * never from inside a core's greenlet). Returns 1 when the phase changed.
 */
int tw_phase_enter(enum tw_phase phase) {
	if (phase <= utornado.phase) return 0;
	utornado.phase = phase;
	uwsgi.workers[uwsgi.mywid].manage_next_request = 0;
	tw_accept_pause();
	if (phase == TW_DRAINING && utornado.busy == 0) phase = utornado.phase = TW_STOPPING;
	if (phase != TW_STOPPING) return 1;
	PyObject *stop = PyObject_GetAttrString(utornado.ioloop, "stop");
	PyObject *h = stop ? tw_loop_call(utornado.call_soon, stop, NULL) : NULL;
	if (!h) PyErr_Print();
	Py_XDECREF(h);
	Py_XDECREF(stop);
	return 1;
}

/* Run the IOLoop until the worker stops; an exception that escaped a loop
 * callback is logged and the loop goes on. */
void tw_loop_run(void) {
	for (;;) {
		PyObject *r = PyObject_CallMethod(utornado.ioloop, "start", NULL);
		if (r) {
			Py_DECREF(r);
			return;
		}
		PyErr_Print();
		if (utornado.phase == TW_STOPPING) return;
	}
}
