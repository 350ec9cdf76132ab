/*
 * response.c: floor 1 (calls nothing of the engine's; event.c would be the
 * only floor below): sending what a WSGI app returned, for the apps the
 * engine serves, through the hook uWSGI gives every app: its
 * wi->response_subhandler.
 *
 * The python plugin's own (uwsgi_response_subhandler_wsgi) treats a list
 * like any iterable in async mode: it takes an iterator and returns
 * UWSGI_AGAIN, then sends one item per call and returns UWSGI_AGAIN again:
 * every "return [body]" goes back to the loop twice (four greenlet switches,
 * two passes through the ready queue, and x-wsgiorg.fdevent.timeout and
 * uwsgi.ready_fd set again in the environ each time) before its end; and at
 * the end, to call close(), it asks the list for a "close" attribute, which
 * a list never has: an AttributeError with its formatted message, made and
 * dropped per request.
 *
 * A list or tuple (exactly those types: a subclass may have close()) whose
 * items are all bytes is sent here in one call, item after item (a write
 * that would block still waits in the engine's hooks, other requests run
 * meanwhile), then released as the stock subhandler releases it. Anything
 * else (a generator, wsgi.file_wrapper, str items, other iterables) goes to
 * the stock subhandler, whose yields between items are the point there.
 *
 * start_response is the engine's too, where it can be: the python plugin's
 * (py_uwsgi_spit) encodes the status and every header name and value into a
 * new bytes object, and uWSGI's core (uwsgi_response_prepare_headers,
 * uwsgi_response_add_header) builds each line in a uwsgi_buffer of its own
 * (two mallocs), copies it into the response head and frees it. A str of
 * one byte per character already holds its latin-1 bytes: here the status
 * line and each "name: value" line go straight into the response head. Only
 * where uWSGI would do nothing else: the socket's own header functions are
 * uWSGI's base ones (HTTP, uwsgi), no --remove-header, --pull-header,
 * --collect-header, --cgi-mode or --start-response-nodelay, a status longer
 * than its code, str and list types exactly. Anything else (exc_info, a
 * wrong type, a character above U+00FF) is the python plugin's
 * start_response, with its errors.
 *
 * What stays per request, and whose: the head's own buffer (a page, uWSGI's
 * core allocates it at the first header and frees it in
 * uwsgi_close_request); REMOTE_ADDR formatted by inet_ntop in uWSGI's HTTP
 * parser for every request, a kept-alive one too.
 *
 * --tornado-stock-wsgi leaves the stock subhandler and start_response in
 * place (to compare).
 */
#include "tornado.h"

#ifndef PYPY_VERSION
static PyObject *stock_start_response;   /* owned: the python plugin's */

/* the latin-1 bytes a str holds already (one byte per character) */
static int latin1_of(PyObject *o, char **s, size_t *len) {
	if (!PyUnicode_CheckExact(o)) return 0;
#if PY_VERSION_HEX < 0x030C0000
	if (!PyUnicode_IS_READY(o)) return 0;
#endif
	if (PyUnicode_KIND(o) != PyUnicode_1BYTE_KIND || PyUnicode_GET_LENGTH(o) > 0xffff) return 0;
	*s = (char *) PyUnicode_1BYTE_DATA(o);
	*len = PyUnicode_GET_LENGTH(o);
	return 1;
}

/* (status, headers) that the engine writes as uWSGI's core would */
static int plain_call(struct wsgi_request *wsgi_req, PyObject *args) {
	struct uwsgi_socket *sock = wsgi_req->socket;
	char *s;
	size_t len;
	if (PyTuple_GET_SIZE(args) != 2 || wsgi_req->headers_sent || wsgi_req->remove_headers || up.start_response_nodelay
		|| uwsgi.remove_headers || uwsgi.pull_headers || uwsgi.collect_headers || uwsgi.cgi_mode
		|| sock->proto_prepare_headers != uwsgi_proto_base_prepare_headers || sock->proto_add_header != uwsgi_proto_base_add_header) return 0;
	if (!latin1_of(PyTuple_GET_ITEM(args, 0), &s, &len) || len <= 4) return 0;
	PyObject *headers = PyTuple_GET_ITEM(args, 1);
	if (!PyList_CheckExact(headers)) return 0;
	Py_ssize_t i;
	for (i = 0; i < PyList_GET_SIZE(headers); i++) {
		PyObject *h = PyList_GET_ITEM(headers, i);
		if (!PyTuple_CheckExact(h) || PyTuple_GET_SIZE(h) != 2 || !latin1_of(PyTuple_GET_ITEM(h, 0), &s, &len)
			|| !latin1_of(PyTuple_GET_ITEM(h, 1), &s, &len)) return 0;
	}
	return 1;
}

static int append(struct uwsgi_buffer *ub, char *a, size_t al, char *sep, char *b, size_t bl) {
	return uwsgi_buffer_append(ub, a, al) || uwsgi_buffer_append(ub, sep, strlen(sep)) || uwsgi_buffer_append(ub, b, bl)
		|| uwsgi_buffer_append(ub, "\r\n", 2);
}

/* uwsgi_response_prepare_headers with the base protocol's status line */
static int status_line(struct wsgi_request *wsgi_req, char *status, size_t len) {
	if (wsgi_req->headers_size || wsgi_req->response_size || wsgi_req->write_errors) return -1;
	if (!wsgi_req->headers) {
		wsgi_req->headers = uwsgi_buffer_new(uwsgi.page_size);
		wsgi_req->headers->limit = uwsgi.response_header_limit;
	}
	wsgi_req->headers->pos = 0;
	wsgi_req->header_cnt = 0;
	wsgi_req->status = uwsgi_str3_num(status);
#ifdef UWSGI_ROUTING
	if (wsgi_req->is_error_routing == 0) {
		if (uwsgi_apply_error_routes(wsgi_req) == UWSGI_ROUTE_BREAK) {
			wsgi_req->ignore_body = 1;
			return -1;
		}
		wsgi_req->is_error_routing = 0;
	}
#endif
	int failed = wsgi_req->protocol_len ? append(wsgi_req->headers, wsgi_req->protocol, wsgi_req->protocol_len, " ", status, len)
		: append(wsgi_req->headers, "HTTP/1.0", 8, " ", status, len);
	if (failed) wsgi_req->write_errors++;
	return failed ? -1 : 0;
}

static PyObject *tw_start_response(PyObject *self, PyObject *args) {
	struct wsgi_request *wsgi_req = py_current_wsgi_req();
	if (!plain_call(wsgi_req, args)) return PyObject_Call(stock_start_response, args, NULL);
	char *s, *k, *v;
	size_t len, kl, vl;
	latin1_of(PyTuple_GET_ITEM(args, 0), &s, &len);
	/* the stock one returns write() without a word when the status line fails */
	if (!status_line(wsgi_req, s, len)) {
		PyObject *headers = PyTuple_GET_ITEM(args, 1);
		Py_ssize_t i;
		for (i = 0; i < PyList_GET_SIZE(headers); i++) {
			PyObject *h = PyList_GET_ITEM(headers, i);
			latin1_of(PyTuple_GET_ITEM(h, 0), &k, &kl);
			latin1_of(PyTuple_GET_ITEM(h, 1), &v, &vl);
			if (wsgi_req->headers_size || wsgi_req->response_size || wsgi_req->write_errors
				|| append(wsgi_req->headers, k, kl, ": ", v, vl)) {
				wsgi_req->write_errors++;
				return PyErr_Format(PyExc_TypeError, "unable to add header to the response");
			}
			wsgi_req->header_cnt++;
		}
	}
	Py_INCREF(up.wsgi_writeout);
	return up.wsgi_writeout;
}

/* named as the python plugin's, which an app may print */
static PyMethodDef tw_start_response_def = {"uwsgi_spit", tw_start_response, METH_VARARGS, ""};

/* The engine's start_response in the arguments of the apps it took (cheat:
 * each core's tuple; holy: made per request from up.wsgi_spitout, replaced
 * when the engine took every app). */
static int start_response_install(int *taken_apps, int taken, int all) {
	PyObject *ours = PyCFunction_New(&tw_start_response_def, NULL);
	if (!ours) return -1;
	stock_start_response = up.wsgi_spitout;
	Py_INCREF(stock_start_response);
	int i, j;
	for (i = 0; i < taken; i++) {
		struct uwsgi_app *wi = &uwsgi_apps[taken_apps[i]];
		for (j = 0; j < uwsgi.cores; j++) {
			PyObject *args = wi->args[j];
			if (!args || PyTuple_GET_ITEM(args, 1) != stock_start_response) continue;
			Py_INCREF(ours);
			PyTuple_SET_ITEM(args, 1, ours);
			Py_DECREF(stock_start_response);
		}
	}
	if (all) {
		/* the python plugin's own reference to its start_response is not
		 * released: it stays alive, for the calls handed over to it */
		Py_INCREF(ours);
		up.wsgi_spitout = ours;
	}
	Py_DECREF(ours);
	return 0;
}
#endif

static int all_bytes(PyObject *seq) {
	Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq);
	PyObject **items = PySequence_Fast_ITEMS(seq);
	for (i = 0; i < n; i++) {
		if (!PyBytes_CheckExact(items[i])) return 0;
	}
	return 1;
}

static int tw_wsgi_response(struct wsgi_request *wsgi_req) {
	PyObject *result = wsgi_req->async_result;
	if (wsgi_req->async_placeholder || !(PyList_CheckExact(result) || PyTuple_CheckExact(result)) || !all_bytes(result)) {
		return uwsgi_response_subhandler_wsgi(wsgi_req);
	}
	Py_ssize_t i;
	/* a write may wait, and other requests run meanwhile: a list they can
	 * reach (a module-level one) is read afresh at each item */
	for (i = 0; i < PySequence_Fast_GET_SIZE(result); i++) {
		PyObject *chunk = PySequence_Fast_GET_ITEM(result, i);
		Py_INCREF(chunk);
		int sent = uwsgi_python_send_body(wsgi_req, chunk);
		Py_DECREF(chunk);
		if (sent < 0) break;
	}
	/* the stock subhandler's end for what it was given: the reference
	 * wsgi.file_wrapper took if the app called it, the result (no close()
	 * on a list or tuple) */
	if (wsgi_req->async_sendfile) Py_DECREF((PyObject *) wsgi_req->async_sendfile);
	Py_DECREF(result);
	PyErr_Clear();
	return UWSGI_OK;
}

/* In the worker, once its apps are loaded: the engine's response subhandler
 * for each WSGI app that has the stock one. Returns how many it took. */
int tw_response_install(void) {
	int i, taken = 0;
	int *taken_apps = uwsgi_calloc(sizeof(int) * (uwsgi_apps_cnt > 0 ? uwsgi_apps_cnt : 1));
	for (i = 0; i < uwsgi_apps_cnt; i++) {
		struct uwsgi_app *wi = &uwsgi_apps[i];
		/* shared with the master: a respawned worker finds its predecessor's */
		if (wi->response_subhandler != uwsgi_response_subhandler_wsgi && wi->response_subhandler != tw_wsgi_response) continue;
		wi->response_subhandler = tw_wsgi_response;
		taken_apps[taken++] = i;
	}
#ifndef PYPY_VERSION
	if (taken && start_response_install(taken_apps, taken, taken == uwsgi_apps_cnt)) taken = -1;
#endif
	free(taken_apps);
	return taken;
}
