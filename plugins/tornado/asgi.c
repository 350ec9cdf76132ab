/*
 * asgi.c: floor 1 (calls event.c only): ASGI applications on the engine.
 *
 * --tornado-asgi [mountpoint=]module:callable loads an ASGI app. The glue
 * (uwsgidecorators_ext/asgi.py) wraps it in a WSGI callable, the bridge,
 * which this file registers with the python plugin as an ordinary app
 * (init_uwsgi_app, as --mount does): uWSGI routes, logs, counts, recycles
 * and applies --harakiri to its requests as to any WSGI request. The bridge
 * runs in the request's core greenlet, the request's I/O pump: it starts the
 * app as an asyncio Task on the worker's loop and serves its receive() and
 * send() with uWSGI's own body reads and response writes.
 *
 * This file gives the bridge the request's side in C, module
 * _uwsgi_tornado_asgi: the request's headers in the client's order (uWSGI's
 * vars, Content-Type and Content-Length included, duplicates kept), the
 * response head and body straight from ASGI's bytes (no str round trip per
 * header), and the file of http.response.pathsend. Per worker it runs the
 * apps' lifespan startup before the worker accepts and their shutdown after
 * the last request of a drain.
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

static int append_pair(PyObject *list, const char *name, Py_ssize_t name_len, const char *value, Py_ssize_t value_len) {
	PyObject *pair = Py_BuildValue("(y#y#)", name, name_len, value, value_len);
	if (!pair) return -1;
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
		if (append_pair(list, name, n, v, ve - v)) return -1;
	}
	return 0;
}

/* headers(): [(name, value), ...] as bytes, lower-case names, the client's order */
static PyObject *asgi_headers(PyObject *self, PyObject *unused) {
	struct wsgi_request *wsgi_req = current_req();
	if (!wsgi_req) return NULL;
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
		if (append_pair(list, name, n, wsgi_req->hvec[i + 1].iov_base, wsgi_req->hvec[i + 1].iov_len)) {
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

/* peer(): (client host, client port, the listen socket's name) */
static PyObject *asgi_peer(PyObject *self, PyObject *unused) {
	struct wsgi_request *wsgi_req = current_req();
	if (!wsgi_req) return NULL;
	char ip[INET6_ADDRSTRLEN] = "";
	int port = 0;
	struct sockaddr *sa = (struct sockaddr *) &wsgi_req->client_addr;
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &wsgi_req->client_addr.sin.sin_addr, ip, sizeof(ip));
		port = ntohs(wsgi_req->client_addr.sin.sin_port);
	}
	else if (sa->sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &wsgi_req->client_addr.sin6.sin6_addr, ip, sizeof(ip));
		port = ntohs(wsgi_req->client_addr.sin6.sin6_port);
	}
	return Py_BuildValue("(sis)", ip, port, wsgi_req->socket && wsgi_req->socket->name ? wsgi_req->socket->name : "");
}

static PyObject *write_failed(void) {
	PyErr_SetString(disconnected_exc ? disconnected_exc : PyExc_OSError, "the client went away");
	return NULL;
}

/* start(status, headers): the response head, from ASGI's bytes pairs */
static PyObject *asgi_start(PyObject *self, PyObject *args) {
	int status;
	PyObject *headers;
	if (!PyArg_ParseTuple(args, "iO:start", &status, &headers)) return NULL;
	struct wsgi_request *wsgi_req = current_req();
	if (!wsgi_req) return NULL;
	if (wsgi_req->headers_sent) {
		PyErr_SetString(PyExc_RuntimeError, "the response has started already");
		return NULL;
	}
	if (uwsgi_response_prepare_headers_int(wsgi_req, status)) return write_failed();
	PyObject *seq = PySequence_Fast(headers, "headers must be an iterable of [name, value] pairs");
	if (!seq) return NULL;
	Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq);
	for (i = 0; i < n; i++) {
		PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
		char *k, *v;
		Py_ssize_t kl, vl;
		PyObject *pk = PySequence_Check(pair) && PySequence_Size(pair) == 2 ? PySequence_GetItem(pair, 0) : NULL;
		PyObject *pv = pk ? PySequence_GetItem(pair, 1) : NULL;
		if (!pk || !pv || PyBytes_AsStringAndSize(pk, &k, &kl) || PyBytes_AsStringAndSize(pv, &v, &vl)) {
			Py_XDECREF(pk);
			Py_XDECREF(pv);
			Py_DECREF(seq);
			if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
				PyErr_Clear();
				PyErr_SetString(PyExc_TypeError, "each response header must be a [bytes, bytes] pair");
			}
			return NULL;
		}
		int bad = kl > 0xffff || vl > 0xffff || memchr(v, '\n', vl) || memchr(v, '\r', vl) || memchr(k, ':', kl);
		int failed = !bad && uwsgi_response_add_header(wsgi_req, k, kl, v, vl);
		Py_DECREF(pk);
		Py_DECREF(pv);
		if (bad) {
			Py_DECREF(seq);
			PyErr_SetString(PyExc_ValueError, "a response header with a newline, a colon in its name, or longer than 64 KiB");
			return NULL;
		}
		if (failed) {
			Py_DECREF(seq);
			return write_failed();
		}
	}
	Py_DECREF(seq);
	Py_RETURN_NONE;
}

/* write(data, chunked): body bytes, in a chunk of chunked framing when told;
 * returns once they are written (uWSGI's writer waits through the engine) */
static PyObject *asgi_write(PyObject *self, PyObject *args) {
	Py_buffer data;
	int chunked = 0;
	if (!PyArg_ParseTuple(args, "y*|p:write", &data, &chunked)) return NULL;
	struct wsgi_request *wsgi_req = current_req();
	if (!wsgi_req) {
		PyBuffer_Release(&data);
		return NULL;
	}
	int ret;
	if (chunked) {
		char head[20];
		int hl = snprintf(head, sizeof(head), "%zx\r\n", (size_t) data.len);
		struct iovec iov[3] = {{head, hl}, {data.buf, data.len}, {"\r\n", 2}};
		/* an empty chunk ends the body: only the terminator (0\r\n\r\n) */
		if (!data.len) ret = uwsgi_response_write_body_do(wsgi_req, "0\r\n\r\n", 5);
		else if (wsgi_req->socket->proto_writev) ret = uwsgi_response_writev_body_do(wsgi_req, iov, 3);
		/* uWSGI's writev fallback (TLS) loses the bytes after the first
		 * vector (it keeps write_pos across them): a write per part */
		else ret = uwsgi_response_write_body_do(wsgi_req, head, hl) || uwsgi_response_write_body_do(wsgi_req, data.buf, data.len)
			|| uwsgi_response_write_body_do(wsgi_req, "\r\n", 2) ? -1 : UWSGI_OK;
	}
	else if (data.len) ret = uwsgi_response_write_body_do(wsgi_req, data.buf, data.len);
	/* an empty body: the head alone */
	else ret = wsgi_req->headers_sent ? UWSGI_OK : uwsgi_response_write_headers_do(wsgi_req);
	PyBuffer_Release(&data);
	if (ret < 0 || wsgi_req->write_errors) return write_failed();
	Py_RETURN_NONE;
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

static PyMethodDef asgi_methods[] = {
	{"headers", asgi_headers, METH_NOARGS, "the request's headers, (name, value) bytes pairs in the client's order"},
	{"peer", asgi_peer, METH_NOARGS, "(client host, client port, listen socket name)"},
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
		return;
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
