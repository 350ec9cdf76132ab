/*
 * environ.c: floor 1 (calls nothing of the engine's; event.c would be the
 * only floor below): the WSGI environ of the apps the engine serves, built
 * with less work per request than the python plugin's own
 * (uwsgi_request_subhandler_wsgi), through the hook uWSGI gives every app:
 * its wi->request_subhandler.
 *
 * What the stock subhandler does per request, and what this file does once:
 *
 *  - every key is a new str decoded from the request's bytes, hashed when
 *    inserted; every constant entry (wsgi.version, wsgi.errors, ...) goes
 *    through PyDict_SetItemString, which makes the key from a C string and
 *    interns it, a lookup in the interpreter's table of interned strings:
 *    here the keys uWSGI produces (its CGI variables, the common HTTP_*
 *    headers, the constant entries) are interned str made once per worker,
 *    their hash cached in them;
 *  - the constant entries of an app are one template dict, built once; a
 *    request's environ starts as a copy of it (CPython clones a clean dict's
 *    table in one piece, instead of inserting entry by entry);
 *  - a known key keeps the last value it had (SERVER_NAME, REMOTE_ADDR,
 *    HTTP_HOST, HTTP_USER_AGENT... repeat from one request to the next): a
 *    value with the same bytes is the same immutable str again, compared
 *    with memcmp instead of decoded and allocated;
 *  - wsgi.input is one object per core (it only points at the core's
 *    wsgi_request, as the stock one does), not one per request, and so is
 *    the int of uwsgi.core (above 256, CPython's small ints, it would be a
 *    new object per request).
 *
 * The rules stay the python plugin's: keys and values are str decoded as
 * latin-1 (PEP 3333), the request's variables in their order (a repeated
 * one: the last wins), then the entries the stock subhandler sets after
 * them, which win over a variable of the same name as they do there
 * (wsgi.input, wsgi.file_wrapper unless --wsgi-disable-file-wrapper,
 * x-wsgiorg.fdevent.*, wsgi.version, wsgi.errors, wsgi.run_once,
 * wsgi.multithread, wsgi.multiprocess, wsgi.url_scheme, uwsgi.version,
 * uwsgi.core, uwsgi.node), uwsgi.env, and --wsgi-env-behaviour: the dict is
 * the one the python plugin's env allocator gave (holy: a new one per
 * request; cheat, the default: the core's own, cleared after each request),
 * this file only fills it. The order in which a dict iterates its keys
 * differs (the constant entries come first); PEP 3333 says nothing of it.
 *
 * --tornado-stock-wsgi leaves the stock subhandler in place (to compare).
 */
#include "tornado.h"

extern PyTypeObject uwsgi_InputType;

static PyObject *new_ref(PyObject *o) {
	Py_INCREF(o);
	return o;
}

/* values of a known key longer than this are not kept for the next request */
#define TW_ENV_VALUE_KEEP_MAX 256

/* the keys made once: uWSGI's CGI variables, common headers, the constant entries */
static const char *known_names[] = {
	"REQUEST_METHOD", "REQUEST_URI", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "SCRIPT_NAME",
	"SERVER_NAME", "SERVER_PORT", "SERVER_ADDR", "REMOTE_ADDR", "REMOTE_PORT", "REMOTE_USER", "HTTPS",
	"CONTENT_TYPE", "CONTENT_LENGTH", "DOCUMENT_ROOT", "REQUEST_SCHEME", "UWSGI_ROUTER", "UWSGI_SCHEME",
	"HTTP_HOST", "HTTP_USER_AGENT", "HTTP_ACCEPT", "HTTP_ACCEPT_ENCODING", "HTTP_ACCEPT_LANGUAGE",
	"HTTP_CONNECTION", "HTTP_COOKIE", "HTTP_REFERER", "HTTP_ORIGIN", "HTTP_CACHE_CONTROL", "HTTP_PRAGMA",
	"HTTP_UPGRADE", "HTTP_AUTHORIZATION", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
	"HTTP_X_FORWARDED_HOST", "HTTP_X_REAL_IP", "HTTP_X_REQUEST_ID", "HTTP_IF_NONE_MATCH",
	"HTTP_IF_MODIFIED_SINCE", "HTTP_DNT", "HTTP_UPGRADE_INSECURE_REQUESTS", "HTTP_SEC_FETCH_SITE",
	"HTTP_SEC_FETCH_MODE", "HTTP_SEC_FETCH_DEST", "HTTP_SEC_FETCH_USER", "HTTP_TE", "HTTP_EXPECT",
	"HTTP_TRANSFER_ENCODING", "HTTP_SEC_WEBSOCKET_KEY", "HTTP_SEC_WEBSOCKET_VERSION",
	"HTTP_SEC_WEBSOCKET_PROTOCOL", "HTTP_SEC_WEBSOCKET_EXTENSIONS",
	/* the entries the stock subhandler sets after the variables (ENTRY_*) */
	"wsgi.input", "wsgi.file_wrapper", "x-wsgiorg.fdevent.readable", "x-wsgiorg.fdevent.writable",
	"x-wsgiorg.fdevent.timeout", "wsgi.version", "wsgi.errors", "wsgi.run_once", "wsgi.multithread",
	"wsgi.multiprocess", "wsgi.url_scheme", "uwsgi.version", "uwsgi.core", "uwsgi.node",
};
#define KNOWN_COUNT (sizeof(known_names) / sizeof(known_names[0]))
#define FIRST_ENTRY (KNOWN_COUNT - 14)
enum { ENTRY_INPUT = FIRST_ENTRY, ENTRY_FILE_WRAPPER, ENTRY_FD_READABLE, ENTRY_FD_WRITABLE, ENTRY_FD_TIMEOUT,
	ENTRY_VERSION, ENTRY_ERRORS, ENTRY_RUN_ONCE, ENTRY_MULTITHREAD, ENTRY_MULTIPROCESS, ENTRY_URL_SCHEME,
	ENTRY_UWSGI_VERSION, ENTRY_UWSGI_CORE, ENTRY_UWSGI_NODE };

struct known_key {
	const char *name;
	size_t len;
	int entry;              /* set after the variables by the stock subhandler: a variable of this name is overwritten there */
	PyObject *key;          /* owned: the interned str */
	PyObject *last;         /* owned: the value it had last (NULL: none kept) */
};
static struct known_key known[KNOWN_COUNT];

/* an open-addressing table of known[], by the bytes of a key */
#define SLOTS 256
static struct known_key *slots[SLOTS];

static unsigned slot_of(const char *k, size_t len) {
	return (unsigned) (len * 131 + (unsigned char) k[0] * 31 + (unsigned char) k[len - 1] * 7 + (unsigned char) k[len / 2]) & (SLOTS - 1);
}

static struct known_key *lookup(const char *k, size_t len) {
	if (len == 0) return NULL;
	unsigned s = slot_of(k, len);
	struct known_key *kk;
	while ((kk = slots[s])) {
		if (kk->len == len && !memcmp(kk->name, k, len)) return kk;
		s = (s + 1) & (SLOTS - 1);
	}
	return NULL;
}

static PyObject *str_env;            /* "env" in the uwsgi module's dict */
static PyObject *str_http, *str_https;
static PyObject **inputs;            /* owned: wsgi.input of each core */
static PyObject **core_ids;          /* owned: uwsgi.core of each core, made at its first request */
static PyObject **templates;         /* owned: the constant entries of each app (uwsgi.max_apps) */

/* the value of a known key: its last one again when the bytes are the same */
static PyObject *value_of(struct known_key *kk, const char *v, size_t len) {
#ifndef PYPY_VERSION
	PyObject *last = kk->last;
	if (last && (size_t) PyUnicode_GET_LENGTH(last) == len && PyUnicode_KIND(last) == PyUnicode_1BYTE_KIND
		&& !memcmp(PyUnicode_1BYTE_DATA(last), v, len)) {
		Py_INCREF(last);
		return last;
	}
#endif
	PyObject *value = PyUnicode_DecodeLatin1(v, len, NULL);
#ifndef PYPY_VERSION
	if (value && len <= TW_ENV_VALUE_KEEP_MAX) {
		Py_INCREF(value);
		Py_XSETREF(kk->last, value);
	}
#endif
	return value;
}

static int set_entry(PyObject *env, int entry, PyObject *value) {
	return PyDict_SetItem(env, known[entry].key, value);
}

/* the app's entries that are the same for every request */
static PyObject *app_template(struct uwsgi_app *wi) {
	PyObject *t = PyDict_New();
	if (!t) return NULL;
	if ((!up.wsgi_disable_file_wrapper && set_entry(t, ENTRY_FILE_WRAPPER, wi->sendfile))
		|| set_entry(t, ENTRY_FD_READABLE, wi->eventfd_read) || set_entry(t, ENTRY_FD_WRITABLE, wi->eventfd_write)
		|| set_entry(t, ENTRY_FD_TIMEOUT, Py_None) || set_entry(t, ENTRY_VERSION, wi->gateway_version)
		|| set_entry(t, ENTRY_ERRORS, wi->error) || set_entry(t, ENTRY_RUN_ONCE, Py_False)
		|| set_entry(t, ENTRY_MULTITHREAD, uwsgi.threads > 1 ? Py_True : Py_False)
		|| set_entry(t, ENTRY_MULTIPROCESS, uwsgi.numproc == 1 ? Py_False : Py_True)
		|| set_entry(t, ENTRY_UWSGI_VERSION, wi->uwsgi_version) || set_entry(t, ENTRY_UWSGI_NODE, wi->uwsgi_node)) {
		Py_DECREF(t);
		return NULL;
	}
	return t;
}

static PyObject *url_scheme(struct wsgi_request *wsgi_req) {
	if (wsgi_req->scheme_len > 0) {
		if (!uwsgi_strncmp(wsgi_req->scheme, wsgi_req->scheme_len, "http", 4)) return new_ref(str_http);
		if (!uwsgi_strncmp(wsgi_req->scheme, wsgi_req->scheme_len, "https", 5)) return new_ref(str_https);
		return PyUnicode_FromStringAndSize(wsgi_req->scheme, wsgi_req->scheme_len);
	}
	if (wsgi_req->https_len > 0 && (!strncasecmp(wsgi_req->https, "on", 2) || wsgi_req->https[0] == '1')) return new_ref(str_https);
	return new_ref(str_http);
}

static PyObject *core_input(struct wsgi_request *wsgi_req) {
	PyObject **input = &inputs[wsgi_req->async_id];
	if (!*input) {
		*input = (PyObject *) PyObject_New(uwsgi_Input, &uwsgi_InputType);
		if (!*input) return NULL;
	}
	((uwsgi_Input *) *input)->wsgi_req = wsgi_req;
	return new_ref(*input);
}

/* The variables of the request, one by one, as the stock subhandler sets them. */
static int add_variables(PyObject *env, struct wsgi_request *wsgi_req) {
	int i;
	for (i = 0; i < wsgi_req->var_cnt; i += 2) {
		const char *k = wsgi_req->hvec[i].iov_base, *v = wsgi_req->hvec[i + 1].iov_base;
		size_t kl = wsgi_req->hvec[i].iov_len, vl = wsgi_req->hvec[i + 1].iov_len;
		struct known_key *kk = lookup(k, kl);
		PyObject *key, *value;
		if (kk) {
			if (kk->entry) continue;   /* overwritten after the variables anyway */
			key = new_ref(kk->key);
			value = value_of(kk, v, vl);
		}
		else {
			key = PyUnicode_DecodeLatin1(k, kl, NULL);
			value = key ? PyUnicode_DecodeLatin1(v, vl, NULL) : NULL;
		}
		int failed = !key || !value || PyDict_SetItem(env, key, value);
		Py_XDECREF(key);
		Py_XDECREF(value);
		if (failed) return -1;
	}
	return 0;
}

/* wi->request_subhandler of the apps the engine serves */
static void *tw_wsgi_request(struct wsgi_request *wsgi_req, struct uwsgi_app *wi) {
	PyObject *env = wsgi_req->async_environ;
	PyObject *template = templates[wsgi_req->app_id];
	PyObject *scheme = NULL, *core = NULL;

	/* the dict the env allocator gave is empty: the constant entries first */
	if (PyDict_Update(env, template) || add_variables(env, wsgi_req)) goto error;

	/* what the stock subhandler does for uWSGI's "manage PATH_INFO" modifier:
	 * on Python 3 its SCRIPT_NAME test is a bytes test no str passes, so the
	 * modifier is reset and PATH_INFO stays as it is */
	if (wsgi_req->uh->modifier1 == UWSGI_MODIFIER_MANAGE_PATH_INFO) wsgi_req->uh->modifier1 = wi->modifier1;

	wsgi_req->async_input = core_input(wsgi_req);
	if (!wsgi_req->async_input || set_entry(env, ENTRY_INPUT, wsgi_req->async_input)) goto error;
	scheme = url_scheme(wsgi_req);
	if (!scheme || set_entry(env, ENTRY_URL_SCHEME, scheme)) goto error;
	Py_CLEAR(scheme);

	wsgi_req->async_app = wi->callable;
	/* uwsgi.env, in non-threaded mode only (as the stock subhandler) */
	if (uwsgi.threads < 2 && PyDict_SetItem(up.embedded_dict, str_env, env)) goto error;
	if (uwsgi.cores > 1) {
		PyObject **id = &core_ids[wsgi_req->async_id];
		if (!*id && !(*id = PyLong_FromLong(wsgi_req->async_id))) goto error;
		core = new_ref(*id);
		if (set_entry(env, ENTRY_UWSGI_CORE, core)) goto error;
		Py_CLEAR(core);
	}

	if (PyTuple_GetItem(wsgi_req->async_args, 0) != env) {
		Py_INCREF(env);
		if (PyTuple_SetItem(wsgi_req->async_args, 0, env)) {
			uwsgi_log_verbose("unable to set environ to the python application callable, consider using the holy env allocator\n");
			return NULL;
		}
	}
	return python_call(wsgi_req->async_app, wsgi_req->async_args, uwsgi.catch_exceptions, wsgi_req);

error:
	Py_XDECREF(scheme);
	Py_XDECREF(core);
	uwsgi_log("[tornado] unable to build the WSGI environ\n");
	uwsgi_manage_exception(wsgi_req, 0);
	return NULL;
}

static int make_keys(void) {
	size_t i;
	for (i = 0; i < KNOWN_COUNT; i++) {
		struct known_key *kk = &known[i];
		kk->name = known_names[i];
		kk->len = strlen(kk->name);
		kk->entry = i >= FIRST_ENTRY && (i != ENTRY_FILE_WRAPPER || !up.wsgi_disable_file_wrapper)
			&& (i != ENTRY_UWSGI_CORE || uwsgi.cores > 1);
		kk->key = PyUnicode_InternFromString(kk->name);
		if (!kk->key) return -1;
		unsigned s = slot_of(kk->name, kk->len);
		while (slots[s]) s = (s + 1) & (SLOTS - 1);
		slots[s] = kk;
	}
	str_env = PyUnicode_InternFromString("env");
	str_http = PyUnicode_InternFromString("http");
	str_https = PyUnicode_InternFromString("https");
	return str_env && str_http && str_https ? 0 : -1;
}

/* In the worker, once its apps are loaded: the engine's subhandler for each
 * WSGI app that has the stock one (web3, pump and apps loaded later keep
 * theirs). Returns the number of apps it took, -1 on error. */
int tw_environ_install(void) {
	int i, taken = 0;
	if (make_keys()) return -1;
	inputs = uwsgi_calloc(sizeof(PyObject *) * uwsgi.cores);
	core_ids = uwsgi_calloc(sizeof(PyObject *) * uwsgi.cores);
	templates = uwsgi_calloc(sizeof(PyObject *) * uwsgi.max_apps);
	for (i = 0; i < uwsgi_apps_cnt; i++) {
		struct uwsgi_app *wi = &uwsgi_apps[i];
		/* the apps' table is in memory shared with the master: a worker
		 * respawned after a recycle finds the subhandler its predecessor set */
		if (wi->request_subhandler != uwsgi_request_subhandler_wsgi && wi->request_subhandler != tw_wsgi_request) continue;
		templates[i] = app_template(wi);
		if (!templates[i]) return -1;
		wi->request_subhandler = tw_wsgi_request;
		taken++;
	}
	return taken;
}
