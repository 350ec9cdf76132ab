/*
 * asgi.c: floor 1 (calls event.c only): ASGI applications on the engine.
 *
 * --tornado-asgi [mountpoint=]module:callable loads an ASGI app. The glue
 * (uwsgidecorators_ext/asgi.py) wraps it in a WSGI callable, the bridge,
 * which this file registers with the python plugin as an ordinary app
 * (init_uwsgi_app, as --mount does): uWSGI routes, logs, counts, recycles
 * and applies --harakiri to its requests as to any WSGI request.
 *
 * In the worker, each ASGI app gets this file's own request subhandler
 * (wi->request_subhandler, tw_asgi_request): an HTTP request is served here,
 * in C, without a WSGI environ (the scope is built from uWSGI's request;
 * "the HTTP request of an ASGI app, in C" below says how), a websocket by the
 * bridge in Python, through the stock WSGI environ. For both, the request's
 * core greenlet is its I/O pump and the app runs as an asyncio Task.
 *
 * Module _uwsgi_tornado_asgi gives the Python bridge the request's side: the
 * request's headers in the client's order (uWSGI's vars, Content-Type and
 * Content-Length included, duplicates kept), the response head and body
 * straight from ASGI's bytes, and the file of http.response.pathsend. Per
 * worker this file runs the apps' lifespan startup before the worker accepts
 * and their shutdown after the last request of a drain.
 */
#include "tornado.h"

/* the python plugin's loader of --mount, --wsgi-file and friends */
extern int init_uwsgi_app(int, void *, struct wsgi_request *, PyThreadState *, int);

/* owned, set once by the glue (configure()): what a failed write raises */
static PyObject *disconnected_exc;
static PyObject *glue;   /* owned: uwsgidecorators_ext.asgi, once an app is loaded */

static struct wsgi_request *current_req(void) {
	struct wsgi_request *wsgi_req = uwsgi.current_wsgi_req ? current_wsgi_req() : NULL;
	if (!wsgi_req) PyErr_SetString(PyExc_RuntimeError, "no uWSGI request is running in this greenlet");
	return wsgi_req;
}

/*
 * uWSGI's HTTP parser merges repeated headers into one var (", "-joined,
 * at the first one's place): the scope wants them as the client sent them.
 * So on an HTTP socket the request head is copied, once it passed framing.c,
 * into a buffer the core keeps (allocated once per core, --buffer-size),
 * before loop.c trims the parser's buffer; headers() reads it. Behind the
 * uwsgi protocol the vars are what the proxy sent, one per header line.
 */
static char **kept_head;       /* per core, NULL until an ASGI app is loaded */
static size_t *kept_len;

void tw_asgi_keep_head(struct tw_core *c, const char *head, size_t len) {
	if (!utornado.asgi_apps) return;
	if (!kept_head) {
		kept_head = uwsgi_calloc(sizeof(char *) * utornado.cores);
		kept_len = uwsgi_calloc(sizeof(size_t) * utornado.cores);
	}
	if (!kept_head[c->id]) kept_head[c->id] = uwsgi_malloc(uwsgi.buffer_size);
	if (len > (size_t) uwsgi.buffer_size) len = 0;
	memcpy(kept_head[c->id], head, len);
	kept_len[c->id] = len;
}

/* header names and short values repeat from one request to the next: the
 * same bytes object again when the bytes are the same (as environ.c does) */
#define HX_SLOTS 64
#define HX_KEEP_MAX 128
static struct { PyObject *name; PyObject *value; } hx_cache[HX_SLOTS];

static unsigned hx_slot(const char *k, size_t len) {
	unsigned h = 2166136261u;
	size_t i;
	for (i = 0; i < len; i++) h = (h ^ (unsigned char) k[i]) * 16777619u;
	return h & (HX_SLOTS - 1);
}

static PyObject *same_bytes(PyObject *kept, const char *v, size_t len) {
	if (kept && (size_t) PyBytes_GET_SIZE(kept) == len && !memcmp(PyBytes_AS_STRING(kept), v, len)) {
		Py_INCREF(kept);
		return kept;
	}
	return NULL;
}

/* a (name, value) pair, name lower-cased already */
static int append_header(PyObject *list, const char *name, size_t nl, const char *v, size_t vl) {
	unsigned s = hx_slot(name, nl);
	PyObject *n = same_bytes(hx_cache[s].name, name, nl);
	int cached = n != NULL;
	if (!n) {
		n = PyBytes_FromStringAndSize(name, nl);
		if (!n) return -1;
		if (!hx_cache[s].name) {
			Py_INCREF(n);
			hx_cache[s].name = n;
			cached = 1;
		}
	}
	PyObject *value = cached ? same_bytes(hx_cache[s].value, v, vl) : NULL;
	if (!value) {
		value = PyBytes_FromStringAndSize(v, vl);
		if (!value) {
			Py_DECREF(n);
			return -1;
		}
		if (cached && vl <= HX_KEEP_MAX) {
			Py_XDECREF(hx_cache[s].value);
			Py_INCREF(value);
			hx_cache[s].value = value;
		}
	}
	PyObject *pair = PyTuple_New(2);
	if (!pair) {
		Py_DECREF(n);
		Py_DECREF(value);
		return -1;
	}
	PyTuple_SET_ITEM(pair, 0, n);
	PyTuple_SET_ITEM(pair, 1, value);
	int ret = PyList_Append(list, pair);
	Py_DECREF(pair);
	return ret;
}

/* the header lines of a kept head (framing.c refused obs-fold, bare LF and
 * lines without a colon already); uWSGI's parser upper-cased the names and
 * made '-' '_' in place, which is undone here (as for its vars: a name with
 * '_' of its own comes out with '-') */
static int head_headers(PyObject *list, const char *p, size_t len) {
	const char *end = p + len;
	const char *eol = memchr(p, '\n', end - p);   /* the request line */
	char name[256];
	while (eol && (p = eol + 1) < end) {
		eol = memchr(p, '\n', end - p);
		const char *line_end = eol ? eol : end;
		if (line_end > p && line_end[-1] == '\r') line_end--;
		if (line_end == p) break;   /* the empty line */
		const char *colon = memchr(p, ':', line_end - p);
		if (!colon || colon - p >= (Py_ssize_t) sizeof(name)) continue;
		size_t n = colon - p, j;
		/* uWSGI's parser made the names CGI-like in place (X_DUP): back to x-dup */
		for (j = 0; j < n; j++) name[j] = p[j] == '_' ? '-' : ((p[j] >= 'A' && p[j] <= 'Z') ? p[j] + 32 : p[j]);
		const char *v = colon + 1, *ve = line_end;
		while (v < ve && (*v == ' ' || *v == '\t')) v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
		if (append_header(list, name, n, v, ve - v)) return -1;
	}
	return 0;
}

/* headers(): [(name, value), ...] as bytes, lower-case names, the client's order */
static PyObject *request_headers(struct wsgi_request *wsgi_req) {
	PyObject *list = PyList_New(0);
	if (!list) return NULL;
	struct tw_core *c = &utornado.core[wsgi_req->async_id];
	if (c->http && kept_head && kept_len[c->id]) {
		if (head_headers(list, kept_head[c->id], kept_len[c->id])) {
			Py_DECREF(list);
			return NULL;
		}
		return list;
	}
	char name[256];
	int i;
	for (i = 0; i + 1 < wsgi_req->var_cnt; i += 2) {
		char *key = wsgi_req->hvec[i].iov_base;
		size_t key_len = wsgi_req->hvec[i].iov_len;
		size_t skip;
		if (key_len > 5 && !memcmp(key, "HTTP_", 5)) skip = 5;
		else if ((key_len == 12 && !memcmp(key, "CONTENT_TYPE", 12)) || (key_len == 14 && !memcmp(key, "CONTENT_LENGTH", 14))) skip = 0;
		else continue;
		size_t n = key_len - skip, j;
		if (n >= sizeof(name)) continue;
		for (j = 0; j < n; j++) {
			char ch = key[skip + j];
			name[j] = ch == '_' ? '-' : (ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
		}
		if (append_header(list, name, n, wsgi_req->hvec[i + 1].iov_base, wsgi_req->hvec[i + 1].iov_len)) {
			Py_DECREF(list);
			return NULL;
		}
	}
	return list;
}

/* http_socket(): the request came on an HTTP socket of the engine
 * (--http-socket, --http11-socket, --https-socket), where the engine frames
 * a response itself (chunked); False behind the uwsgi protocol */
static PyObject *asgi_http_socket(PyObject *self, PyObject *unused) {
	struct wsgi_request *wsgi_req = current_req();
	if (!wsgi_req) return NULL;
	struct tw_core *c = &utornado.core[wsgi_req->async_id];
	return PyBool_FromLong(c->http != NULL);
}

/* what a write raises once the client went away (ClientDisconnected) */
static PyObject *write_failed(void) {
	PyErr_SetString(disconnected_exc ? disconnected_exc : PyExc_OSError, "the client went away");
	return NULL;
}

/* sendfile(fd, size): http.response.pathsend, by uWSGI's sendfile */
static PyObject *asgi_sendfile(PyObject *self, PyObject *args) {
	int fd;
	Py_ssize_t size;
	if (!PyArg_ParseTuple(args, "in:sendfile", &fd, &size)) return NULL;
	struct wsgi_request *wsgi_req = current_req();
	if (!wsgi_req) return NULL;
	int ret = uwsgi_response_sendfile_do_can_close(wsgi_req, fd, 0, size, 0);
	if (ret < 0 || wsgi_req->write_errors) return write_failed();
	Py_RETURN_NONE;
}

/* abort(): the response stopped short of its end (the app failed while
 * streaming): the connection is not kept for another request */
static PyObject *asgi_abort(PyObject *self, PyObject *unused) {
	struct wsgi_request *wsgi_req = current_req();
	if (!wsgi_req) return NULL;
	utornado.core[wsgi_req->async_id].close_after = 1;
	Py_RETURN_NONE;
}

/* configure(exception): the OSError subclass a failed write raises */
static PyObject *asgi_configure(PyObject *self, PyObject *exc) {
	Py_XDECREF(disconnected_exc);
	Py_INCREF(exc);
	disconnected_exc = exc;
	Py_RETURN_NONE;
}

/* ==== the HTTP request of an ASGI app, in C ====
 *
 * The app's own subhandler (tw_asgi_request, wi->request_subhandler of every
 * --tornado-asgi app) serves an HTTP request without a WSGI environ and
 * without Python in the bridge: the scope is built here from the request's
 * fields and its kept head, a Request object gives the app its receive() and
 * send(), and the core greenlet stays the request's I/O pump (the design
 * the Python bridge had, which keeps serving websockets):
 *
 *  - the app runs as an asyncio Task (glue: _run_http) in the loop's greenlet,
 *    the hub; the core greenlet parks (switches to the hub) until the Task
 *    calls for I/O or ends;
 *  - a receive() or send() that needs the connection (a body read, a
 *    response write) switches into the parked core, which does it with
 *    uWSGI's own functions (the engine's deadlines, 100-continue and
 *    backpressure apply) and parks again: the Task's switch returns with the
 *    result, handed back as an awaitable that is already done (Ready, no
 *    Future, no loop iteration). When the I/O had to wait, the core's wait
 *    switched to the hub before the result was there: the Task awaits a
 *    Future the core resolves once it is;
 *  - a call that needs no I/O (http.response.start, the body of a request
 *    without one) never leaves the Task;
 *  - the Task's end switches into the core, which ends the request (a 500
 *    when nothing was answered, a connection closed after a body that
 *    stopped short) and goes on with the connection.
 */

/* What receive() and send() return: an awaitable that is a coroutine too
 * (send, throw, close: asyncio.create_task() and ensure_future() take it,
 * as they take uvicorn's coroutines). Either done already (value; None:
 * NULL), or waiting for the Future the core greenlet resolves, whose own
 * iterator it delegates to. */
typedef struct {
	PyObject_HEAD
	PyObject *value;
	PyObject *future;
	PyObject *iter;       /* the future's __await__() once started */
} ready_object;

static PyTypeObject ready_type;

static void ready_dealloc(ready_object *self) {
	Py_XDECREF(self->value);
	Py_XDECREF(self->future);
	Py_XDECREF(self->iter);
	PyObject_Free(self);
}

static PyObject *ready_await(PyObject *self) {
	Py_INCREF(self);
	return self;
}

static PyObject *ready_next(ready_object *self) {
	if (self->future) {
		if (!self->iter && !(self->iter = PyObject_CallMethod(self->future, "__await__", NULL))) return NULL;
		return Py_TYPE(self->iter)->tp_iternext(self->iter);
	}
	PyObject *value = self->value;
	if (!value) return NULL;   /* StopIteration: None */
	self->value = NULL;
	/* a value that is a tuple or an exception would be taken for the
	 * exception's arguments: wrap it */
	PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, value);
	Py_DECREF(value);
	if (stop) {
		PyErr_SetObject(PyExc_StopIteration, stop);
		Py_DECREF(stop);
	}
	return NULL;
}

static PyObject *ready_send(ready_object *self, PyObject *value) {
	PyObject *r = ready_next(self);
	if (!r && !PyErr_Occurred()) PyErr_SetNone(PyExc_StopIteration);
	return r;
}

static PyObject *ready_throw(ready_object *self, PyObject *args) {
	if (self->iter) {
		PyObject *throw = PyObject_GetAttrString(self->iter, "throw");
		PyObject *r = throw ? PyObject_Call(throw, args, NULL) : NULL;
		Py_XDECREF(throw);
		return r;
	}
	PyObject *type, *value = NULL, *tb = NULL;
	if (!PyArg_UnpackTuple(args, "throw", 1, 3, &type, &value, &tb)) return NULL;
	if (PyExceptionInstance_Check(type)) PyErr_SetObject((PyObject *) Py_TYPE(type), type);
	else PyErr_SetObject(type, value && value != Py_None ? value : NULL);
	return NULL;
}

static PyObject *ready_close(ready_object *self, PyObject *unused) {
	Py_CLEAR(self->iter);
	Py_CLEAR(self->value);
	Py_RETURN_NONE;
}

static PyMethodDef ready_methods[] = {
	{"send", (PyCFunction) ready_send, METH_O, NULL},
	{"throw", (PyCFunction) ready_throw, METH_VARARGS, NULL},
	{"close", (PyCFunction) ready_close, METH_NOARGS, NULL},
	{NULL, NULL, 0, NULL},
};

static PyAsyncMethods ready_as_async = {(unaryfunc) ready_await, NULL, NULL};

static PyTypeObject ready_type = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "_uwsgi_tornado_asgi.Awaitable",
	.tp_basicsize = sizeof(ready_object),
	.tp_dealloc = (destructor) ready_dealloc,
	.tp_as_async = &ready_as_async,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "what receive() and send() return: a coroutine, done already or waiting for the connection",
	.tp_iter = PyObject_SelfIter,
	.tp_iternext = (iternextfunc) ready_next,
	.tp_methods = ready_methods,
};

/* new reference; steals value (NULL: None) and future (NULL: done) */
static PyObject *ready_make(PyObject *value, PyObject *future) {
	if (!value && !future && PyErr_Occurred()) return NULL;
	ready_object *r = PyObject_New(ready_object, &ready_type);
	if (!r) {
		Py_XDECREF(value);
		Py_XDECREF(future);
		return NULL;
	}
	r->value = value;
	r->future = future;
	r->iter = NULL;
	return (PyObject *) r;
}

static PyObject *ready_new(PyObject *value) {
	return ready_make(value, NULL);
}

/* a Future the core resolves, as one of ours (new reference; steals it) */
static PyObject *ready_wait(PyObject *future) {
	return future ? ready_make(NULL, future) : NULL;
}

/* what the core greenlet does for the Task */
enum asgi_op { OP_NONE = 0, OP_RECEIVE, OP_BODY, OP_PATHSEND };

typedef struct asgi_request {
	PyObject_HEAD
	struct wsgi_request *wsgi_req;  /* NULL once the request is over */
	struct tw_core *c;
	PyObject *name;        /* owned: the app's name, for the log */
	PyObject *task;        /* owned while the request runs */
	/* the op handed to the parked core, and its result */
	enum asgi_op op;
	PyObject *op_msg;      /* owned */
	PyObject *op_future;   /* owned: what the Task awaits when the op had to wait */
	int has_reply;
	PyObject *reply;       /* owned: the op's result (NULL: None) */
	PyObject *reply_type, *reply_value, *reply_tb;   /* owned: the op's exception */
	PyObject *queue;       /* owned: (op, message, future) the Task asked while the core was busy */
	PyObject *waiters;     /* owned: futures of receive()s awaiting http.disconnect */
	PyObject *error;       /* owned: what the app raised */
	int idle, done;
	int chunked_in, body_done;
	Py_ssize_t remaining;
	int status;
	PyObject *headers;     /* owned: http.response.start's */
	int started, chunked_out, complete, disconnected, is_head, watching, fd;
} asgi_request;

static PyTypeObject request_type;

/* once per worker (asgi_http_configure): what the requests take from the glue and the loop */
static struct {
	PyObject *run_http;       /* glue: the Task's coroutine function */
	PyObject *create_task;    /* loop.create_task */
	PyObject *create_future;  /* loop.create_future */
	PyObject *call_later;     /* loop.call_later */
	PyObject *add_reader, *remove_reader;
	PyObject *harakiri_cb;    /* glue: logs the Task's stack and cancels it */
	double harakiri;          /* seconds before the Task is cancelled, 0: never */
	PyObject *log_error;      /* glue: logs what the app raised */
	PyObject *cancelled_exc;  /* asyncio.CancelledError */
	PyObject *headers_none;   /* () */
	/* the first step of a request's Task in its core (eager_step below) */
	PyObject *loop;           /* asyncio's loop, NULL: no first step in the core */
	PyObject *loop_dict;      /* its instance dict */
	PyObject *call_soon;      /* its own call_soon */
	PyObject *current_task, *enter_task, *leave_task;   /* asyncio's (current_task: or its dict of them) */
	PyObject *capture;        /* capture_step(), as the loop's call_soon while a Task is made */
	int arming;               /* a request's Task is being made: capture_step() keeps its step */
	PyObject *step, *step_ctx;   /* what capture_step() took */
	PyObject **step_task;     /* per core: the Task whose first step it runs (borrowed) */
	PyObject *context_kw;     /* ("context",) */
} hx;

/* the apps' bridges by app id: their app, name and lifespan state */
struct asgi_app {
	PyObject *app;      /* owned: the ASGI 3 callable */
	PyObject *name;     /* owned */
	PyObject *state;    /* owned: the lifespan state dict */
};
static struct asgi_app *asgi_apps;   /* uwsgi.max_apps entries, in the worker */

/* interned strings, made once per worker */
static PyObject *s_type, *s_body, *s_more_body, *s_status, *s_headers, *s_path, *s_http_request,
	*s_http_disconnect, *s_start, *s_resp_body, *s_pathsend, *s_done, *s_set_result, *s_set_exception,
	*s_cancel, *s_asgi, *s_http_version, *s_method, *s_scheme, *s_raw_path, *s_root_path,
	*s_query_string, *s_client, *s_server, *s_state, *s_extensions, *s_http, *s_https, *s_v11,
	*s_v10, *s_empty_bytes, *s_empty_str, *asgi_template, *pathsend_ext_name, *s_context;

#define S(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1
static int http_strings(void) {
	S(s_type, "type"); S(s_body, "body"); S(s_more_body, "more_body"); S(s_status, "status");
	S(s_headers, "headers"); S(s_path, "path"); S(s_http_request, "http.request");
	S(s_http_disconnect, "http.disconnect"); S(s_start, "http.response.start");
	S(s_resp_body, "http.response.body"); S(s_pathsend, "http.response.pathsend"); S(s_done, "done");
	S(s_set_result, "set_result"); S(s_set_exception, "set_exception"); S(s_cancel, "cancel");
	S(s_asgi, "asgi"); S(s_http_version, "http_version"); S(s_method, "method"); S(s_scheme, "scheme");
	S(s_raw_path, "raw_path"); S(s_root_path, "root_path"); S(s_query_string, "query_string");
	S(s_client, "client"); S(s_server, "server"); S(s_state, "state"); S(s_extensions, "extensions");
	S(s_http, "http"); S(s_https, "https"); S(s_v11, "1.1"); S(s_v10, "1.0"); S(s_empty_str, "");
	S(pathsend_ext_name, "http.response.pathsend"); S(s_context, "context");
	s_empty_bytes = PyBytes_FromStringAndSize("", 0);
	/* the glue's ASGI dict (the spec version it implements), copied per scope */
	asgi_template = PyObject_GetAttrString(glue, "ASGI");
	hx.headers_none = PyTuple_New(0);
	return s_empty_bytes && asgi_template && PyDict_Check(asgi_template) && hx.headers_none ? 0 : -1;
}
#undef S

static int str_is(PyObject *o, PyObject *interned) {
	return o == interned || (PyUnicode_Check(o) && !PyUnicode_Compare(o, interned));
}

/* ---- the scope ---- */

/* the scope's server for a listen socket ("host:port", ":port"; None for a
 * unix socket), made once per socket */
#define HX_SOCKETS 16
static struct { struct uwsgi_socket *sock; PyObject *server; } hx_servers[HX_SOCKETS];

static PyObject *server_of(struct uwsgi_socket *sock) {
	int i;
	for (i = 0; i < HX_SOCKETS && hx_servers[i].sock; i++) {
		if (hx_servers[i].sock == sock) {
			Py_INCREF(hx_servers[i].server);
			return hx_servers[i].server;
		}
	}
	PyObject *server = NULL;
	char *name = sock && sock->name ? sock->name : "";
	char *colon = strrchr(name, ':');
	if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
		char *host = name;
		size_t hl = colon - name;
		if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
			host++;
			hl -= 2;
		}
		server = hl ? Py_BuildValue("(s#i)", host, (Py_ssize_t) hl, atoi(colon + 1)) : Py_BuildValue("(si)", "0.0.0.0", atoi(colon + 1));
		if (!server) return NULL;
	}
	else {
		server = Py_None;
		Py_INCREF(server);
	}
	if (i < HX_SOCKETS) {
		hx_servers[i].sock = sock;
		hx_servers[i].server = server;
		Py_INCREF(server);
	}
	return server;
}

static PyObject *last_client_host;   /* owned: the client host of the last request */

static PyObject *client_of(struct wsgi_request *wsgi_req) {
	char ip[INET6_ADDRSTRLEN] = "";
	int port;
	struct sockaddr *sa = (struct sockaddr *) &wsgi_req->client_addr;
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &wsgi_req->client_addr.sin.sin_addr, ip, sizeof(ip));
		port = ntohs(wsgi_req->client_addr.sin.sin_port);
	}
	else if (sa->sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &wsgi_req->client_addr.sin6.sin6_addr, ip, sizeof(ip));
		port = ntohs(wsgi_req->client_addr.sin6.sin6_port);
	}
	else Py_RETURN_NONE;
	size_t len = strlen(ip);
	PyObject *host = NULL;
	if (last_client_host && (size_t) PyUnicode_GET_LENGTH(last_client_host) == len
		&& !memcmp(PyUnicode_DATA(last_client_host), ip, len)) {
		host = last_client_host;
		Py_INCREF(host);
	}
	else {
		host = PyUnicode_DecodeASCII(ip, len, NULL);
		if (!host) return NULL;
		Py_XDECREF(last_client_host);
		Py_INCREF(host);
		last_client_host = host;
	}
	PyObject *p = PyLong_FromLong(port);
	PyObject *client = p ? PyTuple_New(2) : NULL;
	if (!client) {
		Py_DECREF(host);
		Py_XDECREF(p);
		return NULL;
	}
	PyTuple_SET_ITEM(client, 0, host);
	PyTuple_SET_ITEM(client, 1, p);
	return client;
}

static PyObject *method_cache[8];

static PyObject *method_of(struct wsgi_request *wsgi_req) {
	int i;
	for (i = 0; i < 8 && method_cache[i]; i++) {
		PyObject *m = method_cache[i];
		if ((size_t) PyUnicode_GET_LENGTH(m) == wsgi_req->method_len && !memcmp(PyUnicode_DATA(m), wsgi_req->method, wsgi_req->method_len)) {
			Py_INCREF(m);
			return m;
		}
	}
	PyObject *m = PyUnicode_DecodeLatin1(wsgi_req->method, wsgi_req->method_len, NULL);
	if (m && i < 8 && PyUnicode_IS_ASCII(m)) {
		Py_INCREF(m);
		method_cache[i] = m;
	}
	return m;
}

static int set_item(PyObject *d, PyObject *key, PyObject *value) {
	if (!value) return -1;
	int ret = PyDict_SetItem(d, key, value);
	Py_DECREF(value);
	return ret;
}

/* new reference: the http scope of the running request */
static PyObject *http_scope(struct wsgi_request *wsgi_req, PyObject *state) {
	PyObject *scope = PyDict_New();
	if (!scope) return NULL;
	char *uri = wsgi_req->uri;
	size_t uri_len = wsgi_req->uri_len;
	char *q = memchr(uri, '?', uri_len);
	size_t raw_len = q ? (size_t) (q - uri) : uri_len;
	/* the path: SCRIPT_NAME + PATH_INFO, percent-decoded by uWSGI, as UTF-8 */
	char path_buf[1024];
	char *path = path_buf;
	size_t path_len = wsgi_req->script_name_len + wsgi_req->path_info_len;
	if (path_len > sizeof(path_buf)) path = uwsgi_malloc(path_len);
	memcpy(path, wsgi_req->script_name, wsgi_req->script_name_len);
	memcpy(path + wsgi_req->script_name_len, wsgi_req->path_info, wsgi_req->path_info_len);
	PyObject *path_obj = PyUnicode_DecodeUTF8(path, path_len, "replace");
	if (path != path_buf) free(path);

	PyObject *scheme;
	if (wsgi_req->scheme_len > 0) scheme = PyUnicode_DecodeLatin1(wsgi_req->scheme, wsgi_req->scheme_len, NULL);
	else if (wsgi_req->https_len > 0 && (!strncasecmp(wsgi_req->https, "on", 2) || wsgi_req->https[0] == '1')) {
		scheme = s_https;
		Py_INCREF(scheme);
	}
	else {
		scheme = s_http;
		Py_INCREF(scheme);
	}
	PyObject *version;
	if (wsgi_req->protocol_len == 8 && !memcmp(wsgi_req->protocol, "HTTP/1.1", 8)) version = s_v11;
	else if (wsgi_req->protocol_len == 8 && !memcmp(wsgi_req->protocol, "HTTP/1.0", 8)) version = s_v10;
	else version = NULL;
	if (version) Py_INCREF(version);
	else if (wsgi_req->protocol_len > 5) version = PyUnicode_DecodeLatin1(wsgi_req->protocol + 5, wsgi_req->protocol_len - 5, NULL);
	else version = PyUnicode_FromString("1.0");

	PyObject *ext = PyDict_New();
	if (ext && set_item(ext, pathsend_ext_name, PyDict_New())) Py_CLEAR(ext);

	if (set_item(scope, s_type, (Py_INCREF(s_http), s_http))
		|| set_item(scope, s_asgi, PyDict_Copy(asgi_template))
		|| set_item(scope, s_http_version, version)
		|| set_item(scope, s_method, method_of(wsgi_req))
		|| set_item(scope, s_scheme, scheme)
		|| set_item(scope, s_path, path_obj)
		|| set_item(scope, s_raw_path, PyBytes_FromStringAndSize(uri, raw_len))
		|| set_item(scope, s_root_path, PyUnicode_DecodeUTF8(wsgi_req->script_name, wsgi_req->script_name_len, "replace"))
		|| set_item(scope, s_query_string, PyBytes_FromStringAndSize(wsgi_req->query_string, wsgi_req->query_string_len))
		|| set_item(scope, s_headers, request_headers(wsgi_req))
		|| set_item(scope, s_client, client_of(wsgi_req))
		|| set_item(scope, s_server, server_of(wsgi_req->socket))
		|| set_item(scope, s_state, PyDict_Size(state) ? PyDict_Copy(state) : PyDict_New())
		|| set_item(scope, s_extensions, ext)) {
		Py_DECREF(scope);
		return NULL;
	}
	return scope;
}

/* ---- the Request object: receive() and send() ---- */

static PyObject *disconnect_message(void) {
	PyObject *m = PyDict_New();
	if (m && PyDict_SetItem(m, s_type, s_http_disconnect)) Py_CLEAR(m);
	return m;
}

static PyObject *body_message(const char *data, size_t len, int more) {
	PyObject *m = PyDict_New();
	if (!m) return NULL;
	if (PyDict_SetItem(m, s_type, s_http_request)
		|| set_item(m, s_body, len ? PyBytes_FromStringAndSize(data, len) : (Py_INCREF(s_empty_bytes), s_empty_bytes))
		|| PyDict_SetItem(m, s_more_body, more ? Py_True : Py_False)) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}

static PyObject *new_future(void) {
	return PyObject_CallNoArgs(hx.create_future);
}

/* resolve a future unless it is done already (cancelled); consumes value or
 * the exception triple */
static void future_resolve(PyObject *future, PyObject *value, PyObject *type, PyObject *evalue, PyObject *tb) {
	PyObject *done = PyObject_CallMethodNoArgs(future, s_done);
	if (done == Py_False) {
		PyObject *r;
		if (type) {
			PyErr_NormalizeException(&type, &evalue, &tb);
			if (tb && evalue) PyException_SetTraceback(evalue, tb);
			r = PyObject_CallMethodOneArg(future, s_set_exception, evalue ? evalue : type);
		}
		else r = PyObject_CallMethodOneArg(future, s_set_result, value ? value : Py_None);
		if (!r) PyErr_Print();
		Py_XDECREF(r);
	}
	else if (!done) PyErr_Print();
	Py_XDECREF(done);
	Py_XDECREF(value);
	Py_XDECREF(type);
	Py_XDECREF(evalue);
	Py_XDECREF(tb);
}

static void wake_waiters(asgi_request *r);

static void unwatch(asgi_request *r) {
	if (!r->watching) return;
	r->watching = 0;
	PyObject *fd = PyLong_FromLong(r->fd);
	PyObject *ret = fd ? PyObject_CallOneArg(hx.remove_reader, fd) : NULL;
	if (!ret) PyErr_Print();
	Py_XDECREF(ret);
	Py_XDECREF(fd);
}

static void disconnected(asgi_request *r) {
	r->disconnected = 1;
	wake_waiters(r);
}

/* resolve the receive()s waiting for the client to leave */
static void wake_waiters(asgi_request *r) {
	PyObject *waiters = r->waiters;
	r->waiters = NULL;
	if (waiters) {
		Py_ssize_t i;
		for (i = 0; i < PyList_GET_SIZE(waiters); i++) {
			PyObject *m = disconnect_message();
			if (!m) {
				PyErr_Print();
				continue;
			}
			future_resolve(PyList_GET_ITEM(waiters, i), m, NULL, NULL, NULL);
		}
		Py_DECREF(waiters);
	}
	unwatch(r);
}

/* asyncio's reader on the connection while a receive() waits for the client
 * to leave: EOF or an error is the disconnect; bytes (a next request, TLS)
 * say nothing more */
static PyObject *request_readable(asgi_request *r, PyObject *unused) {
	char byte;
	ssize_t n = recv(r->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) Py_RETURN_NONE;
	if (n > 0) unwatch(r);
	else disconnected(r);
	Py_RETURN_NONE;
}

static PyMethodDef readable_def = {"readable", (PyCFunction) request_readable, METH_NOARGS, NULL};

static int watch(asgi_request *r) {
	if (r->watching || r->fd < 0) return 0;
	PyObject *cb = PyCFunction_New(&readable_def, (PyObject *) r);
	PyObject *fd = cb ? PyLong_FromLong(r->fd) : NULL;
	PyObject *ret = fd ? PyObject_CallFunctionObjArgs(hx.add_reader, fd, cb, NULL) : NULL;
	Py_XDECREF(cb);
	Py_XDECREF(fd);
	if (!ret) return -1;
	Py_DECREF(ret);
	r->watching = 1;
	return 0;
}

static PyObject *perform(asgi_request *r, enum asgi_op op, PyObject *msg);

/* An op asked from inside the Task's first step, which runs in the core
 * greenlet (eager_step): done here, no switch. */
static int in_core(asgi_request *r) {
	if (!r->c->in_step || tw_core_suspended(r->c)) return 0;
	PyObject *current = tw_greenlet_current();
	Py_XDECREF(current);
	return current == r->c->greenlet;
}

/* Hand an op to the core greenlet: at once when it is parked (the result,
 * or the Future of an op that had to wait), else after the op it performs
 * now (a Future). New reference to an awaitable; steals msg. */
static PyObject *call_core(asgi_request *r, enum asgi_op op, PyObject *msg) {
	if (!r->queue && in_core(r)) {
		PyObject *value = perform(r, op, msg);
		Py_XDECREF(msg);
		return ready_new(value);
	}
	if (r->idle && !r->queue) {
		r->op = op;
		r->op_msg = msg;
		r->has_reply = 0;
		r->idle = 0;
		PyObject *v = tw_core_switch(r->c);
		if (!v) return NULL;
		Py_DECREF(v);
		if (r->has_reply) {
			r->has_reply = 0;
			if (r->reply_type) {
				PyErr_Restore(r->reply_type, r->reply_value, r->reply_tb);
				r->reply_type = r->reply_value = r->reply_tb = NULL;
				return NULL;
			}
			PyObject *value = r->reply;
			r->reply = NULL;
			return ready_new(value);
		}
		/* the core waits for the connection: it resolves this later */
		PyObject *future = new_future();
		if (!future) return NULL;
		Py_XSETREF(r->op_future, future);
		Py_INCREF(future);
		return ready_wait(future);
	}
	PyObject *future = new_future();
	if (!future) {
		Py_XDECREF(msg);
		return NULL;
	}
	if (!r->queue && !(r->queue = PyList_New(0))) {
		Py_XDECREF(msg);
		Py_DECREF(future);
		return NULL;
	}
	PyObject *item = Py_BuildValue("(iOO)", (int) op, msg ? msg : Py_None, future);
	Py_XDECREF(msg);
	if (!item || PyList_Append(r->queue, item)) {
		Py_XDECREF(item);
		Py_DECREF(future);
		return NULL;
	}
	Py_DECREF(item);
	return ready_wait(future);
}

static PyObject *request_receive(asgi_request *r, PyObject *unused) {
	if (!r->body_done) {
		if (r->wsgi_req && (r->chunked_in || r->remaining > 0)) return call_core(r, OP_RECEIVE, NULL);
		/* no body: nothing to read */
		r->body_done = 1;
		return ready_new(body_message("", 0, 0));
	}
	if (r->complete || r->disconnected || !r->wsgi_req) return ready_new(disconnect_message());
	PyObject *future = new_future();
	if (!future) return NULL;
	if ((!r->waiters && !(r->waiters = PyList_New(0))) || PyList_Append(r->waiters, future) || watch(r)) {
		Py_DECREF(future);
		return NULL;
	}
	return ready_wait(future);
}

static PyObject *request_send(asgi_request *r, PyObject *message) {
	PyObject *kind = PyDict_Check(message) ? PyDict_GetItemWithError(message, s_type) : NULL;
	if (!kind) {
		if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "type");
		return NULL;
	}
	if (r->disconnected) return write_failed();
	if (str_is(kind, s_start)) {
		if (r->status) {
			PyErr_SetString(PyExc_RuntimeError, "http.response.start sent twice");
			return NULL;
		}
		PyObject *status = PyDict_GetItemWithError(message, s_status);
		if (!status) {
			if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "status");
			return NULL;
		}
		long st = PyLong_AsLong(status);
		if (st == -1 && PyErr_Occurred()) return NULL;
		if (st < 100 || st > 999) {
			PyErr_Format(PyExc_ValueError, "invalid HTTP status %ld", st);
			return NULL;
		}
		PyObject *headers = PyDict_GetItemWithError(message, s_headers);
		if (!headers && PyErr_Occurred()) return NULL;
		r->status = (int) st;
		Py_INCREF(headers ? headers : hx.headers_none);
		Py_XSETREF(r->headers, headers ? headers : hx.headers_none);
		return ready_new(NULL);
	}
	if (!r->status) {
		PyErr_Format(PyExc_RuntimeError, "%R sent before http.response.start", kind);
		return NULL;
	}
	if (r->complete || !r->wsgi_req) {
		PyErr_Format(PyExc_RuntimeError, "%R sent after the response completed", kind);
		return NULL;
	}
	enum asgi_op op = str_is(kind, s_resp_body) ? OP_BODY : str_is(kind, s_pathsend) ? OP_PATHSEND : OP_NONE;
	if (op == OP_NONE) {
		PyErr_Format(PyExc_RuntimeError, "unexpected ASGI message %R for an http scope", kind);
		return NULL;
	}
	Py_INCREF(message);
	return call_core(r, op, message);
}

/* finished(error): the Task's last step (glue: _run_http) */
static PyObject *request_finished(asgi_request *r, PyObject *error) {
	if (error != Py_None) {
		Py_INCREF(error);
		Py_XSETREF(r->error, error);
	}
	r->done = 1;
	if (r->idle) {
		r->idle = 0;
		/* the core goes on with the end of the request from here, the Task's
		 * last step: no loop iteration between */
		PyObject *v = tw_core_switch(r->c);
		if (!v) return NULL;
		Py_DECREF(v);
	}
	Py_RETURN_NONE;
}

static PyMethodDef request_methods[] = {
	{"receive", (PyCFunction) request_receive, METH_NOARGS, "the ASGI receive(): the next http.request chunk, or http.disconnect"},
	{"send", (PyCFunction) request_send, METH_O, "the ASGI send(message)"},
	{"finished", (PyCFunction) request_finished, METH_O, "finished(error): the app returned (error None) or raised"},
	{NULL, NULL, 0, NULL},
};

static void request_clear(asgi_request *r) {
	Py_CLEAR(r->task);
	Py_CLEAR(r->op_msg);
	Py_CLEAR(r->op_future);
	Py_CLEAR(r->reply);
	Py_CLEAR(r->reply_type);
	Py_CLEAR(r->reply_value);
	Py_CLEAR(r->reply_tb);
	Py_CLEAR(r->queue);
	Py_CLEAR(r->waiters);
	Py_CLEAR(r->error);
	Py_CLEAR(r->headers);
	Py_CLEAR(r->name);
}

static void request_dealloc(asgi_request *r) {
	request_clear(r);
	PyObject_Free(r);
}

static PyTypeObject request_type = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "_uwsgi_tornado_asgi.Request",
	.tp_basicsize = sizeof(asgi_request),
	.tp_dealloc = (destructor) request_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "one HTTP request of an ASGI app: its receive() and send()",
	.tp_methods = request_methods,
};

/* ---- in the core greenlet: the I/O the Task asks for ---- */

static int write_failed_op(asgi_request *r) {
	disconnected(r);
	write_failed();
	return -1;
}

/* a response header's name is name (case-insensitive) */
static int header_is(const char *k, Py_ssize_t kl, const char *name, Py_ssize_t nl) {
	return kl == nl && !strncasecmp(k, name, nl);
}

/* the pairs of a headers iterable, each as bytes (borrowed into k/v) */
static int header_pair(PyObject *pair, PyObject **pk, PyObject **pv, char **k, Py_ssize_t *kl, char **v, Py_ssize_t *vl) {
	*pk = PySequence_Check(pair) && PySequence_Size(pair) == 2 ? PySequence_GetItem(pair, 0) : NULL;
	*pv = *pk ? PySequence_GetItem(pair, 1) : NULL;
	if (!*pk || !*pv || PyBytes_AsStringAndSize(*pk, k, kl) || PyBytes_AsStringAndSize(*pv, v, vl)) {
		Py_CLEAR(*pk);
		Py_CLEAR(*pv);
		if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
			PyErr_Clear();
			PyErr_SetString(PyExc_TypeError, "each response header must be a [bytes, bytes] pair");
		}
		return -1;
	}
	return 0;
}

/* The status line and the app's headers (a PySequence_Fast of [bytes,
 * bytes] pairs; drop_te: without Transfer-Encoding): 0, -1 with a Python
 * error (a header the app got wrong), -2 when uWSGI could not take it (the
 * client went away). */
static int head_start(struct wsgi_request *wsgi_req, int status, PyObject *seq, int drop_te) {
	if (wsgi_req->headers_sent) {
		PyErr_SetString(PyExc_RuntimeError, "the response has started already");
		return -1;
	}
	if (uwsgi_response_prepare_headers_int(wsgi_req, status)) return -2;
	Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq);
	for (i = 0; i < n; i++) {
		PyObject *pk, *pv;
		char *k, *v;
		Py_ssize_t kl, vl;
		if (header_pair(PySequence_Fast_GET_ITEM(seq, i), &pk, &pv, &k, &kl, &v, &vl)) return -1;
		int bad = kl > 0xffff || vl > 0xffff || memchr(v, '\n', vl) || memchr(v, '\r', vl) || memchr(k, ':', kl);
		int skip = drop_te && header_is(k, kl, "transfer-encoding", 17);
		int failed = !bad && !skip && uwsgi_response_add_header(wsgi_req, k, kl, v, vl);
		Py_DECREF(pk);
		Py_DECREF(pv);
		if (bad) {
			PyErr_SetString(PyExc_ValueError, "a response header with a newline, a colon in its name, or longer than 64 KiB");
			return -1;
		}
		if (failed) return -2;
	}
	return 0;
}

/* The response head, once the first body is known: Content-Length when the
 * body comes in one piece (final_len >= 0), chunked framing when it does not
 * (on an HTTP socket, for HTTP/1.1), else the end of the connection. */
static int begin(asgi_request *r, Py_ssize_t final_len) {
	struct wsgi_request *wsgi_req = r->wsgi_req;
	PyObject *seq = PySequence_Fast(r->headers, "headers must be an iterable of [name, value] pairs");
	if (!seq) return -1;
	Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq);
	int length = 0, chunked = 0, drop_te = 0;
	for (i = 0; i < n; i++) {
		PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
		PyObject *pk, *pv;
		char *k, *v;
		Py_ssize_t kl, vl;
		if (header_pair(pair, &pk, &pv, &k, &kl, &v, &vl)) goto error;
		if (header_is(k, kl, "content-length", 14)) length = 1;
		else if (header_is(k, kl, "transfer-encoding", 17)) chunked = 1;
		Py_DECREF(pk);
		Py_DECREF(pv);
	}
	int has_body = r->status >= 200 && r->status != 204 && r->status != 304;
	int can_chunk = r->c->http && !r->is_head && wsgi_req->protocol_len == 8 && !memcmp(wsgi_req->protocol, "HTTP/1.1", 8);
	char extra[32];
	const char *extra_name = NULL;
	size_t extra_len = 0;
	if (chunked && !length) {
		/* the app says chunked (BlackSheep does) and leaves the framing to
		 * the server, as uvicorn does it: frame it, or, where chunked cannot
		 * go (HTTP/1.0, the uwsgi protocol), drop the header */
		if (can_chunk && has_body) r->chunked_out = 1;
		else drop_te = 1;
	}
	else if (!length && has_body) {
		if (final_len >= 0) {
			extra_name = "content-length";
			extra_len = snprintf(extra, sizeof(extra), "%zd", final_len);
		}
		else if (can_chunk) {
			extra_name = "transfer-encoding";
			extra_len = 7;
			memcpy(extra, "chunked", 7);
			r->chunked_out = 1;
		}
	}
	int ret = head_start(wsgi_req, r->status, seq, drop_te);
	if (ret == -1) goto error;
	if (ret < 0) goto failed;
	if (extra_name && uwsgi_response_add_header(wsgi_req, (char *) extra_name, strlen(extra_name), extra, extra_len)) goto failed;
	Py_DECREF(seq);
	r->started = 1;
	return 0;
failed:
	Py_DECREF(seq);
	return write_failed_op(r);
error:
	Py_DECREF(seq);
	return -1;
}

/* body bytes, in a chunk of chunked framing when told; returns once they
 * are written (uWSGI's writer waits through the engine) */
static int write_body(struct wsgi_request *wsgi_req, const char *data, size_t len, int chunked) {
	int ret;
	if (chunked) {
		char head[20];
		int hl = snprintf(head, sizeof(head), "%zx\r\n", len);
		struct iovec iov[3] = {{head, hl}, {(char *) data, len}, {"\r\n", 2}};
		/* an empty chunk ends the body: only the terminator (0\r\n\r\n) */
		if (!len) ret = uwsgi_response_write_body_do(wsgi_req, "0\r\n\r\n", 5);
		else if (wsgi_req->socket->proto_writev) ret = uwsgi_response_writev_body_do(wsgi_req, iov, 3);
		/* uWSGI's writev fallback (TLS) loses the bytes after the first
		 * vector (it keeps write_pos across them): a write per part */
		else ret = uwsgi_response_write_body_do(wsgi_req, head, hl) || uwsgi_response_write_body_do(wsgi_req, (char *) data, len)
			|| uwsgi_response_write_body_do(wsgi_req, "\r\n", 2) ? -1 : UWSGI_OK;
	}
	else if (len) ret = uwsgi_response_write_body_do(wsgi_req, (char *) data, len);
	/* an empty body: the head alone */
	else ret = wsgi_req->headers_sent ? UWSGI_OK : uwsgi_response_write_headers_do(wsgi_req);
	return ret < 0 || wsgi_req->write_errors ? -1 : 0;
}

/* start(status, headers): the response head, from ASGI's bytes pairs
 * (the Python bridge's websocket denial) */
static PyObject *asgi_start(PyObject *self, PyObject *args) {
	int status;
	PyObject *headers;
	if (!PyArg_ParseTuple(args, "iO:start", &status, &headers)) return NULL;
	struct wsgi_request *wsgi_req = current_req();
	if (!wsgi_req) return NULL;
	PyObject *seq = PySequence_Fast(headers, "headers must be an iterable of [name, value] pairs");
	if (!seq) return NULL;
	int ret = head_start(wsgi_req, status, seq, 0);
	Py_DECREF(seq);
	if (ret == -1) return NULL;
	if (ret < 0) return write_failed();
	Py_RETURN_NONE;
}

/* write(data, chunked): body bytes (write_body) */
static PyObject *asgi_write(PyObject *self, PyObject *args) {
	Py_buffer data;
	int chunked = 0;
	if (!PyArg_ParseTuple(args, "y*|p:write", &data, &chunked)) return NULL;
	struct wsgi_request *wsgi_req = current_req();
	int failed = wsgi_req ? write_body(wsgi_req, data.buf, data.len, chunked) : 0;
	PyBuffer_Release(&data);
	if (!wsgi_req) return NULL;
	if (failed) return write_failed();
	Py_RETURN_NONE;
}

static void completed(asgi_request *r) {
	r->complete = 1;
	if (r->waiters || r->watching) wake_waiters(r);
}

/* http.response.body */
static int op_body(asgi_request *r, PyObject *message) {
	PyObject *body = PyDict_GetItemWithError(message, s_body);
	if (!body && PyErr_Occurred()) return -1;
	PyObject *more_obj = PyDict_GetItemWithError(message, s_more_body);
	if (!more_obj && PyErr_Occurred()) return -1;
	int more = more_obj ? PyObject_IsTrue(more_obj) : 0;
	if (more < 0) return -1;
	Py_buffer data = {0};
	if (body && PyObject_GetBuffer(body, &data, PyBUF_SIMPLE)) return -1;
	int ret = 0;
	if (!r->started) ret = begin(r, more ? -1 : data.len);
	if (!ret) {
		if (r->chunked_out) {
			if (data.len && write_body(r->wsgi_req, data.buf, data.len, 1)) ret = write_failed_op(r);
			else if (!more && write_body(r->wsgi_req, "", 0, 1)) ret = write_failed_op(r);
		}
		else if ((data.len || !more) && write_body(r->wsgi_req, data.buf, data.len, 0)) ret = write_failed_op(r);
	}
	if (body) PyBuffer_Release(&data);
	if (!ret && !more) completed(r);
	return ret;
}

/* http.response.pathsend: the file by uWSGI's sendfile */
static int op_pathsend(asgi_request *r, PyObject *message) {
	PyObject *path = PyDict_GetItemWithError(message, s_path);
	if (!path) {
		if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "path");
		return -1;
	}
	PyObject *fspath = PyOS_FSPath(path);
	PyObject *encoded = NULL;
	if (!fspath || !PyUnicode_FSConverter(fspath, &encoded)) {
		Py_XDECREF(fspath);
		return -1;
	}
	Py_DECREF(fspath);
	int fd = open(PyBytes_AS_STRING(encoded), O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
		Py_DECREF(encoded);
		return -1;
	}
	Py_DECREF(encoded);
	struct stat st;
	if (fstat(fd, &st)) {
		PyErr_SetFromErrno(PyExc_OSError);
		close(fd);
		return -1;
	}
	/* the file's size is the Content-Length, whatever the app said */
	PyObject *seq = PySequence_Fast(r->headers, "headers must be an iterable of [name, value] pairs");
	PyObject *headers = seq ? PyList_New(0) : NULL;
	Py_ssize_t i;
	int ret = headers ? 0 : -1;
	for (i = 0; !ret && i < PySequence_Fast_GET_SIZE(seq); i++) {
		PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
		PyObject *pk, *pv;
		char *k, *v;
		Py_ssize_t kl, vl;
		if (header_pair(pair, &pk, &pv, &k, &kl, &v, &vl)) ret = -1;
		else {
			if (!header_is(k, kl, "content-length", 14)) ret = PyList_Append(headers, pair);
			Py_DECREF(pk);
			Py_DECREF(pv);
		}
	}
	Py_XDECREF(seq);
	if (!ret) {
		char size[32];
		snprintf(size, sizeof(size), "%lld", (long long) st.st_size);
		PyObject *pair = Py_BuildValue("(y#y)", "content-length", (Py_ssize_t) 14, size);
		ret = !pair || PyList_Append(headers, pair) ? -1 : 0;
		Py_XDECREF(pair);
	}
	if (!ret) {
		Py_XSETREF(r->headers, headers);
		headers = NULL;
		ret = begin(r, -1);
	}
	Py_XDECREF(headers);
	if (!ret) {
		int sent = uwsgi_response_sendfile_do_can_close(r->wsgi_req, fd, 0, st.st_size, 0);
		if (sent < 0 || r->wsgi_req->write_errors) ret = write_failed_op(r);
	}
	close(fd);
	if (!ret) completed(r);
	return ret;
}

/* the next http.request chunk (at most 64 KiB), or http.disconnect */
static PyObject *op_receive(asgi_request *r) {
	struct wsgi_request *wsgi_req = r->wsgi_req;
	if (r->chunked_in) {
		size_t len = 0;
		char *chunk = uwsgi_chunked_read(wsgi_req, &len, uwsgi.socket_timeout, 0);
		if (!chunk) {
			disconnected(r);
			return disconnect_message();
		}
		if (!len) r->body_done = 1;
		return body_message(chunk, len, len > 0);
	}
	ssize_t rlen = 0;
	char *buf = uwsgi_request_body_read(wsgi_req, r->remaining < 65536 ? r->remaining : 65536, &rlen);
	if (!buf || buf == uwsgi.empty || rlen <= 0) {
		/* the body ended early, or the client went away */
		disconnected(r);
		return disconnect_message();
	}
	r->remaining -= rlen;
	if (r->remaining <= 0) r->body_done = 1;
	return body_message(buf, rlen, r->remaining > 0);
}

/* perform one op; new reference to its result (NULL and an exception set, or
 * NULL for None with none set) */
static PyObject *perform(asgi_request *r, enum asgi_op op, PyObject *msg) {
	if (!r->wsgi_req) return write_failed();
	if (op == OP_RECEIVE) return op_receive(r);
	/* a write's result is None: NULL with no exception set */
	if (op == OP_BODY) op_body(r, msg);
	else op_pathsend(r, msg);
	return NULL;
}

/* the result of an op, to its Future (the Task awaited it) or as the reply
 * the Task's switch into the core returns with */
static void deliver(asgi_request *r, PyObject *future, PyObject *value) {
	PyObject *type = NULL, *evalue = NULL, *tb = NULL;
	if (!value && PyErr_Occurred()) PyErr_Fetch(&type, &evalue, &tb);
	if (future) {
		future_resolve(future, value, type, evalue, tb);
		return;
	}
	r->has_reply = 1;
	r->reply = value;
	r->reply_type = type;
	r->reply_value = evalue;
	r->reply_tb = tb;
}

/* tw_park(): the Task switched in with an op, or ended */
static int tasks_own(void *request, PyObject *unused) {
	asgi_request *r = request;
	return r->op != OP_NONE || r->done;
}

/* the ops the Task queued while the core was busy */
static void perform_queued(asgi_request *r) {
	while (r->queue && PyList_GET_SIZE(r->queue)) {
		PyObject *item = PyList_GET_ITEM(r->queue, 0);
		Py_INCREF(item);
		if (PyList_SetSlice(r->queue, 0, 1, NULL)) {
			Py_DECREF(item);
			PyErr_Print();
			break;
		}
		PyObject *future = PyTuple_GET_ITEM(item, 2);
		PyObject *done = PyObject_CallMethodNoArgs(future, s_done);
		if (done == Py_False) {
			Py_INCREF(future);
			deliver(r, future, perform(r, (enum asgi_op) PyLong_AsLong(PyTuple_GET_ITEM(item, 0)), PyTuple_GET_ITEM(item, 1)));
			Py_DECREF(future);
		}
		else if (!done) PyErr_Print();
		Py_XDECREF(done);
		Py_DECREF(item);
	}
	if (r->queue && !PyList_GET_SIZE(r->queue)) Py_CLEAR(r->queue);
}

/* The Task is over: say what went wrong, answer 500 when nothing was answered. */
static void request_end(asgi_request *r) {
	PyObject *error = r->error;
	if (error && !PyObject_TypeCheck(error, (PyTypeObject *) (disconnected_exc ? disconnected_exc : PyExc_OSError))
		&& !PyObject_TypeCheck(error, (PyTypeObject *) hx.cancelled_exc)) {
		PyObject *ret = PyObject_CallFunctionObjArgs(hx.log_error, r->name, error, NULL);
		if (!ret) PyErr_Print();
		Py_XDECREF(ret);
	}
	if (!r->started && !r->disconnected) {
		if (!error) uwsgi_log("[tornado] ASGI app %s returned without a response\n", PyUnicode_AsUTF8(r->name));
		if (!error && PyErr_Occurred()) PyErr_Clear();
		r->status = 500;
		PyObject *headers = Py_BuildValue("[(y,y),(y,y)]", "content-type", "text/plain; charset=utf-8", "connection", "close");
		if (headers) {
			Py_XSETREF(r->headers, headers);
			if (!begin(r, 21)) write_body(r->wsgi_req, "Internal Server Error", 21, 0);
		}
		PyErr_Clear();
		r->complete = 1;
	}
	else if (!r->complete && !r->disconnected) {
		/* the body stopped short: the client must not take it for whole */
		r->c->close_after = 1;
	}
}

static asgi_request *request_new(struct wsgi_request *wsgi_req, struct tw_core *c, struct asgi_app *a) {
	asgi_request *r = PyObject_New(asgi_request, &request_type);
	if (!r) return NULL;
	memset((char *) r + sizeof(PyObject), 0, sizeof(asgi_request) - sizeof(PyObject));
	r->wsgi_req = wsgi_req;
	r->c = c;
	Py_INCREF(a->name);
	r->name = a->name;
	r->fd = wsgi_req->fd;
	r->chunked_in = (c->req_flags & TW_REQ_CHUNKED) != 0;
	r->remaining = wsgi_req->post_cl;
	r->is_head = wsgi_req->method_len == 4 && !memcmp(wsgi_req->method, "HEAD", 4);
	return r;
}

/* The request is over (the Task may still hold the object, and run): a
 * receive() waiting is told http.disconnect, an op still queued fails. */
static void request_release(asgi_request *r) {
	r->wsgi_req = NULL;
	wake_waiters(r);
	PyObject *queue = r->queue;
	r->queue = NULL;
	if (queue) {
		Py_ssize_t i;
		for (i = 0; i < PyList_GET_SIZE(queue); i++) {
			PyObject *future = PyTuple_GET_ITEM(PyList_GET_ITEM(queue, i), 2);
			Py_INCREF(future);
			write_failed();
			PyObject *type, *value, *tb;
			PyErr_Fetch(&type, &value, &tb);
			future_resolve(future, NULL, type, value, tb);
			Py_DECREF(future);
		}
		Py_DECREF(queue);
	}
	request_clear(r);
	Py_DECREF(r);
}

/*
 * The first step of a request's Task runs in its core greenlet, at once,
 * instead of the loop running it from its queue later: an app that answers
 * without awaiting anything else (a hello) is served with no greenlet switch
 * and no loop iteration, as a WSGI request is, and its send()s write from
 * there (in_core()). The Task is asyncio's own: the loop's call_soon is
 * capture_step() (an instance attribute over the class's method), which
 * passes every call on to the loop's own but, while the request's Task is
 * made, keeps the step of Task.__init__ instead of queueing it; the step
 * then runs in the Task's context, as the loop would run it. When the step waits in the core (a slow client), the Task
 * leaves asyncio's current task while other work runs (step_suspend()).
 * Only on asyncio's own loop with no task factory, and not while a Task is
 * current (a pipelined request ended from a Task's last step): the loop
 * runs the step then.
 */
static PyObject *capture_step(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
	Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
	Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
	if (!hx.arming || hx.step || nargs != 1 || nkw > 1 || (nkw && (!str_is(PyTuple_GET_ITEM(kwnames, 0), s_context)
		|| !PyContext_CheckExact(args[1])))) return PyObject_Vectorcall(hx.call_soon, args, nargsf, kwnames);
	Py_INCREF(args[0]);
	hx.step = args[0];
	if (nkw) {
		Py_INCREF(args[1]);
		hx.step_ctx = args[1];
	}
	Py_RETURN_NONE;
}

static PyMethodDef capture_def = {"call_soon", (PyCFunction) (void (*)(void)) capture_step, METH_FASTCALL | METH_KEYWORDS, NULL};

/* the Task of the request: its step kept in hx.step when it is to run here */
static PyObject *make_task(PyObject *coro) {
	int eager = 0;
	if (hx.loop) {
		if (PyDict_CheckExact(hx.current_task)) {
			/* asyncio's dict of current tasks (the glue says when) */
			eager = !PyDict_GetItemWithError(hx.current_task, hx.loop);
			if (PyErr_Occurred()) return NULL;
		}
		else {
			PyObject *current = PyObject_CallOneArg(hx.current_task, hx.loop);
			if (!current) return NULL;
			eager = current == Py_None;
			Py_DECREF(current);
		}
	}
	hx.arming = eager;
	PyObject *task = PyObject_CallOneArg(hx.create_task, coro);
	hx.arming = 0;
	if (!task) Py_CLEAR(hx.step);
	if (!task) Py_CLEAR(hx.step_ctx);
	return task;
}

/* around a wait of the core inside the step: the Task is not asyncio's
 * current task meanwhile (other Tasks run), and is again after */
static void step_suspend(struct tw_core *c, int resumed) {
	PyObject *type, *value, *tb;
	PyErr_Fetch(&type, &value, &tb);
	PyObject *args[2] = {hx.loop, hx.step_task[c->id]};
	PyObject *ret = PyObject_Vectorcall(resumed ? hx.enter_task : hx.leave_task, args, 2, NULL);
	if (!ret) PyErr_Print();
	Py_XDECREF(ret);
	PyErr_Restore(type, value, tb);
}

/* raise_in_hub(exc): a KeyboardInterrupt or SystemExit the first step let
 * out, raised from a loop callback as the loop's own run of the step would */
static PyObject *raise_in_hub(PyObject *self, PyObject *exc) {
	PyErr_SetObject((PyObject *) Py_TYPE(exc), exc);
	return NULL;
}

static PyMethodDef raise_def = {"raise_in_hub", (PyCFunction) raise_in_hub, METH_O, NULL};

/* schedule a step (or any callback) on the loop, in ctx */
static void call_soon_in(PyObject *callback, PyObject *arg, PyObject *ctx) {
	PyObject *args[3] = {callback, arg, ctx};
	size_t n = arg ? 2 : 1;
	if (!arg) args[1] = ctx;
	PyObject *handle = PyObject_Vectorcall(hx.call_soon, args, n, ctx ? hx.context_kw : NULL);
	if (!handle) PyErr_Print();
	Py_XDECREF(handle);
}

/* Run the kept step in the core. As the loop would: what the step lets
 * out is reported, and a KeyboardInterrupt or SystemExit goes on to the
 * loop (after the request ends here). */
static void eager_step(asgi_request *r) {
	PyObject *step = hx.step, *ctx = hx.step_ctx;
	hx.step = hx.step_ctx = NULL;
	struct tw_core *c = r->c;
	if (ctx && PyContext_Enter(ctx)) {
		/* the step did not run: the loop runs it */
		PyErr_Print();
		call_soon_in(step, NULL, ctx);
		goto end;
	}
	c->in_step = 1;
	hx.step_task[c->id] = r->task;
	PyObject *ret = PyObject_CallNoArgs(step);
	c->in_step = 0;
	hx.step_task[c->id] = NULL;
	PyObject *type, *value, *tb;
	PyErr_Fetch(&type, &value, &tb);
	if (ctx && PyContext_Exit(ctx)) PyErr_Print();
	if (ret) Py_DECREF(ret);
	else if (type) {
		PyErr_NormalizeException(&type, &value, &tb);
		if (value && !PyErr_GivenExceptionMatches(type, PyExc_Exception)) {
			PyObject *raiser = PyCFunction_New(&raise_def, NULL);
			if (raiser) call_soon_in(raiser, value, NULL);
			else PyErr_Print();
			Py_XDECREF(raiser);
		}
		else {
			PyErr_Restore(type, value, tb);
			type = value = tb = NULL;
			PyErr_Print();
		}
	}
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
end:
	Py_DECREF(step);
	Py_XDECREF(ctx);
}

static void *(*websocket_subhandler)(struct wsgi_request *, struct uwsgi_app *);

/* wi->request_subhandler of the ASGI apps: an HTTP request served here
 * (NULL: nothing more for the python plugin to send), a websocket by the
 * Python bridge (through the stock WSGI environ) */
static void *tw_asgi_request(struct wsgi_request *wsgi_req, struct uwsgi_app *wi) {
	struct asgi_app *a = &asgi_apps[wsgi_req->app_id];
	struct tw_core *c = &utornado.core[wsgi_req->async_id];
	wsgi_req->async_input = NULL;
	if (!a->app || !hx.run_http) return websocket_subhandler(wsgi_req, wi);
	uint16_t i;
	for (i = 0; i + 1 < wsgi_req->var_cnt; i += 2) {
		if (wsgi_req->hvec[i].iov_len == 12 && !memcmp(wsgi_req->hvec[i].iov_base, "HTTP_UPGRADE", 12)) {
			if (wsgi_req->hvec[i + 1].iov_len == 9 && !strncasecmp(wsgi_req->hvec[i + 1].iov_base, "websocket", 9)) {
				return websocket_subhandler(wsgi_req, wi);
			}
		}
	}
	/* the modifier the stock subhandler resets (environ.c says why) */
	if (wsgi_req->uh->modifier1 == UWSGI_MODIFIER_MANAGE_PATH_INFO) wsgi_req->uh->modifier1 = wi->modifier1;

	PyObject *scope = NULL, *coro = NULL, *timer = NULL;
	asgi_request *r = request_new(wsgi_req, c, a);
	if (!r) goto error;
	scope = http_scope(wsgi_req, a->state);
	if (!scope) goto error;
	coro = PyObject_CallFunctionObjArgs(hx.run_http, a->app, scope, (PyObject *) r, NULL);
	Py_CLEAR(scope);
	if (!coro) goto error;
	r->task = make_task(coro);
	Py_CLEAR(coro);
	if (!r->task) goto error;
	if (hx.harakiri > 0) {
		PyObject *method = PyUnicode_DecodeLatin1(wsgi_req->method, wsgi_req->method_len, NULL);
		PyObject *uri = method ? PyUnicode_DecodeLatin1(wsgi_req->uri, wsgi_req->uri_len, NULL) : NULL;
		PyObject *delay = uri ? PyFloat_FromDouble(hx.harakiri) : NULL;
		timer = delay ? PyObject_CallFunctionObjArgs(hx.call_later, delay, hx.harakiri_cb, r->task, method, uri, NULL) : NULL;
		Py_XDECREF(method);
		Py_XDECREF(uri);
		Py_XDECREF(delay);
		if (!timer) PyErr_Print();
	}

	/* the Task's first step, here, when make_task() kept it; then the
	 * pump: park until the Task asks for I/O or ends */
	if (hx.step) eager_step(r);
	for (;;) {
		perform_queued(r);
		if (r->done) break;
		r->idle = 1;
		/* the Task's switches in are an op or its end; any other (a
		 * greenlet the app started in the first step, whose parent this is,
		 * as SQLAlchemy's greenlet_spawn does) goes on to the hub, where the
		 * Task drives that greenlet now */
		PyObject *v = tw_park(tasks_own, r);
		r->idle = 0;
		if (!v) {
			/* thrown into: the greenlet is being killed (worker exit), the Task with it */
			PyObject *type, *value, *tb;
			PyErr_Fetch(&type, &value, &tb);
			PyObject *ret = PyObject_CallMethodNoArgs(r->task, s_cancel);
			Py_XDECREF(ret);
			PyErr_Clear();
			PyErr_Restore(type, value, tb);
			break;
		}
		Py_DECREF(v);
		enum asgi_op op = r->op;
		if (op == OP_NONE) continue;   /* the Task's end (finished()) */
		PyObject *msg = r->op_msg;
		r->op = OP_NONE;
		r->op_msg = NULL;
		PyObject *value = perform(r, op, msg);
		Py_XDECREF(msg);
		PyObject *future = r->op_future;
		r->op_future = NULL;
		deliver(r, future, value);
		Py_XDECREF(future);
	}
	if (timer) {
		PyObject *type, *value, *tb;
		PyErr_Fetch(&type, &value, &tb);
		PyObject *ret = PyObject_CallMethodNoArgs(timer, s_cancel);
		if (!ret) PyErr_Print();
		Py_XDECREF(ret);
		Py_DECREF(timer);
		PyErr_Restore(type, value, tb);
	}
	if (PyErr_Occurred()) {
		PyObject *type, *value, *tb;
		PyErr_Fetch(&type, &value, &tb);
		request_release(r);
		PyErr_Restore(type, value, tb);
		uwsgi_manage_exception(wsgi_req, 0);
		return NULL;
	}
	unwatch(r);
	request_end(r);
	request_release(r);
	return NULL;

error:
	Py_XDECREF(scope);
	Py_XDECREF(coro);
	if (r) request_release(r);
	uwsgi_manage_exception(wsgi_req, 0);
	if (!wsgi_req->headers_sent) uwsgi_500(wsgi_req);
	return NULL;
}

/* Once per worker, after the lifespan startups: what the requests take
 * from the glue (_http_config()) and each ASGI app's own subhandler. */
static int asgi_http_configure(void) {
	PyObject *conf = PyObject_CallMethod(glue, "_http_config", NULL);
	if (!conf) return -1;
	double harakiri = 0;
	PyObject *loop;
	if (!PyArg_ParseTuple(conf, "OOOOOOOdOO(OOOO):_http_config", &hx.run_http, &hx.create_task, &hx.create_future,
		&hx.call_later, &hx.add_reader, &hx.remove_reader, &hx.harakiri_cb, &harakiri, &hx.log_error, &hx.cancelled_exc,
		&loop, &hx.current_task, &hx.enter_task, &hx.leave_task)) {
		Py_DECREF(conf);
		hx.run_http = NULL;
		return -1;
	}
	if (loop != Py_None && !hx.loop) {
		/* eager_step(): owned for the worker's life */
		hx.loop_dict = PyObject_GenericGetDict(loop, NULL);
		hx.call_soon = hx.loop_dict ? PyObject_GetAttrString(loop, "call_soon") : NULL;
		hx.capture = hx.call_soon ? PyCFunction_New(&capture_def, NULL) : NULL;
		hx.context_kw = hx.capture ? Py_BuildValue("(s)", "context") : NULL;
		if (!hx.context_kw || PyDict_SetItemString(hx.loop_dict, "call_soon", hx.capture)) {
			Py_DECREF(conf);
			return -1;
		}
		hx.step_task = uwsgi_calloc(sizeof(PyObject *) * utornado.cores);
		Py_INCREF(loop); Py_INCREF(hx.current_task); Py_INCREF(hx.enter_task); Py_INCREF(hx.leave_task);
		hx.loop = loop;
		tw_set_suspend_hook(step_suspend);
	}
	hx.harakiri = harakiri;
	/* owned for the worker's life */
	Py_INCREF(hx.run_http); Py_INCREF(hx.create_task); Py_INCREF(hx.create_future); Py_INCREF(hx.call_later);
	Py_INCREF(hx.add_reader); Py_INCREF(hx.remove_reader); Py_INCREF(hx.harakiri_cb); Py_INCREF(hx.log_error);
	Py_INCREF(hx.cancelled_exc);
	Py_DECREF(conf);
	if (http_strings() || PyType_Ready(&ready_type) || PyType_Ready(&request_type)) return -1;
	asgi_apps = uwsgi_calloc(sizeof(struct asgi_app) * uwsgi.max_apps);
	websocket_subhandler = uwsgi_request_subhandler_wsgi;
	int i;
	for (i = 0; i < uwsgi_apps_cnt; i++) {
		struct uwsgi_app *wi = &uwsgi_apps[i];
		PyObject *info = PyObject_CallMethod(glue, "_http_app", "O", (PyObject *) wi->callable);
		if (!info) return -1;
		if (info != Py_None && !PyArg_ParseTuple(info, "OOO", &asgi_apps[i].app, &asgi_apps[i].name, &asgi_apps[i].state)) {
			Py_DECREF(info);
			return -1;
		}
		if (info != Py_None) {
			Py_INCREF(asgi_apps[i].app);
			Py_INCREF(asgi_apps[i].name);
			Py_INCREF(asgi_apps[i].state);
			wi->request_subhandler = tw_asgi_request;
		}
		Py_DECREF(info);
	}
	return 0;
}

/* scope(state): the http scope of the running request, for the Python
 * bridge's websockets (which change what differs) */
static PyObject *asgi_scope(PyObject *self, PyObject *state) {
	struct wsgi_request *wsgi_req = current_req();
	if (!wsgi_req) return NULL;
	if (!PyDict_Check(state)) {
		PyErr_SetString(PyExc_TypeError, "the lifespan state is a dict");
		return NULL;
	}
	return http_scope(wsgi_req, state);
}

static PyMethodDef asgi_methods[] = {
	{"scope", asgi_scope, METH_O, "scope(state): the http scope of the running request (state: the lifespan state)"},
	{"http_socket", asgi_http_socket, METH_NOARGS, "the request came on an HTTP socket"},
	{"start", asgi_start, METH_VARARGS, "start(status, headers): the response head"},
	{"write", asgi_write, METH_VARARGS, "write(data, chunked=False): response body bytes"},
	{"sendfile", asgi_sendfile, METH_VARARGS, "sendfile(fd, size): the response body from a file"},
	{"abort", asgi_abort, METH_NOARGS, "the response stopped short: close the connection after it"},
	{"configure", asgi_configure, METH_O, "configure(exc): the exception a failed write raises"},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef asgi_module = {PyModuleDef_HEAD_INIT, "_uwsgi_tornado_asgi", "the request's side of the ASGI bridge", -1, asgi_methods};

static int asgi_module_install(void) {
	PyObject *modules = PyImport_GetModuleDict();   /* borrowed */
	if (PyDict_GetItemString(modules, "_uwsgi_tornado_asgi")) return 0;
	PyObject *m = PyModule_Create(&asgi_module);
	if (!m) return -1;
	int ret = PyDict_SetItemString(modules, "_uwsgi_tornado_asgi", m);
	Py_DECREF(m);
	return ret;
}

/* Load one --tornado-asgi app and register its bridge as a WSGI app. */
static int asgi_load(char *spec) {
	char *eq = strchr(spec, '=');
	char *colon = strchr(spec, ':');
	/* "module:callable" has no '=' before its ':' */
	char *mountpoint = eq && (!colon || eq < colon) ? uwsgi_concat2n(spec, eq - spec, "", 0) : uwsgi_str("");
	char *target = eq && (!colon || eq < colon) ? eq + 1 : spec;
	int ret = -1;
	PyObject *bridge = NULL;
	if (asgi_module_install()) goto end;
	if (!glue) glue = PyImport_ImportModule("uwsgidecorators_ext.asgi");
	if (!glue) goto end;
	bridge = PyObject_CallMethod(glue, "load", "s", target);
	if (!bridge) goto end;
	struct wsgi_request *wsgi_req = uwsgi.wsgi_req;
	wsgi_req->appid = mountpoint;
	wsgi_req->appid_len = strlen(mountpoint);
	uwsgi_log("mounting ASGI app %s on %s\n", target, mountpoint[0] ? mountpoint : "/");
	ret = init_uwsgi_app(LOADER_CALLABLE, bridge, wsgi_req, up.main_thread, PYTHON_APP_TYPE_WSGI) < 0 ? -1 : 0;
end:
	if (PyErr_Occurred()) PyErr_Print();
	Py_XDECREF(bridge);
	/* uWSGI keeps the app's mountpoint in its own copy */
	free(mountpoint);
	return ret;
}

/* The plugin's init_apps: after the python plugin's, in the master (or in
 * each worker with --lazy-apps). */
void tw_asgi_init_apps(void) {
	if (!utornado.asgi_apps) return;
	if (uwsgi.mywid > 0) UWSGI_GET_GIL
	struct uwsgi_string_list *usl;
	int failed = 0;
	uwsgi_foreach(usl, utornado.asgi_apps) {
		if (asgi_load(usl->value)) {
			uwsgi_log("[tornado] unable to load the ASGI app %s\n", usl->value);
			failed = 1;
		}
	}
	if (uwsgi.mywid > 0) UWSGI_RELEASE_GIL
	if (failed && uwsgi.need_app) exit(UWSGI_FAILED_APP_CODE);
}

/* Each worker, after fork and before it accepts: the apps' lifespan
 * startup. A failed startup ends the worker with one line, and the instance
 * with it (as gunicorn's arbiter halts on a worker that cannot boot): a
 * master respawning it would only fail again. */
void tw_asgi_worker_start(void) {
	if (!glue) return;
	PyObject *r = PyObject_CallMethod(glue, "worker_start", NULL);
	if (r == Py_True) {
		Py_DECREF(r);
		if (!asgi_http_configure()) return;
		PyErr_Print();
		uwsgi_log("[tornado] unable to set up the ASGI apps on worker %d (pid: %d)\n", uwsgi.mywid, uwsgi.mypid);
		exit(UWSGI_FAILED_APP_CODE);
	}
	if (!r) PyErr_Print();
	Py_XDECREF(r);
	uwsgi_log("[tornado] ASGI lifespan startup failed on worker %d (pid: %d): stopping the instance\n", uwsgi.mywid, uwsgi.mypid);
	if (uwsgi.master_process && uwsgi.workers[0].pid > 0) kill(uwsgi.workers[0].pid, SIGINT);
	exit(UWSGI_FAILED_APP_CODE);
}

/* After the loop stopped (the requests in flight are done): the apps'
 * lifespan shutdown. */
void tw_asgi_worker_stop(void) {
	if (!glue) return;
	PyObject *r = PyObject_CallMethod(glue, "worker_stop", NULL);
	if (!r) PyErr_Print();
	Py_XDECREF(r);
}
