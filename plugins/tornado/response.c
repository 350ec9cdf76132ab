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
 * --tornado-stock-wsgi leaves the stock subhandler in place (to compare).
 */
#include "tornado.h"

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
	for (i = 0; i < uwsgi_apps_cnt; i++) {
		struct uwsgi_app *wi = &uwsgi_apps[i];
		if (wi->response_subhandler != uwsgi_response_subhandler_wsgi) continue;
		wi->response_subhandler = tw_wsgi_response;
		taken++;
	}
	return taken;
}
