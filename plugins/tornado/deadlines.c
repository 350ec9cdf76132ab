/*
 * deadlines.c: floor 1 (calls event.c only): slow clients cannot take the
 * worker.
 *
 * A loop engine holds many connections cheaply, which is what a slowloris
 * leans on: --socket-timeout bounds each read, so a client that sends one
 * header byte every few seconds keeps its core forever. Three rules, all on
 * the core's own timer (event.c's heap), no Python object per request:
 *
 *   - the request head has a deadline: --tornado-head-timeout seconds from
 *     the accept, or from the end of the previous request on a kept-alive
 *     connection. Every wait in that phase (parsing, TLS, the keep-alive
 *     wait) ends by then at the latest, and the connection is closed;
 *   - the request body has a minimum rate (as Apache's mod_reqtimeout
 *     body=T,MinRate=R): a wait for body bytes ends at
 *     head + --tornado-body-timeout + received / --tornado-body-min-rate;
 *     the app sees a read error, as with any broken upload;
 *   - shedding: connections still waiting for their request head are kept on
 *     a list, oldest first. When every core is taken and a connection waits
 *     in the backlog, the oldest of them is closed to make room, so complete
 *     requests are served; a drain closes all of them at once.
 *
 * And --harakiri covers every request, not only the last one started: the
 * worker's deadline (which the master enforces) is the one of its oldest
 * running request. The cores running the app are kept on a list by start
 * time, so the oldest is its head (no scan of the cores per request).
 */
#include "tornado.h"

#define TW_NS 1000000000ULL

/* defaults, in the plugin's on_load (before the options are parsed) */
void tw_deadlines_defaults(void) {
	/* a real client sends its head in one packet; 15 s covers a bad mobile
	 * link with room to spare, and bounds an idle keep-alive connection too */
	utornado.head_timeout = 15;
	/* mod_reqtimeout's defaults: 20 s to start, then at least 500 bytes/s */
	utornado.body_timeout = 20;
	utornado.body_min_rate = 500;
}

static void heads_unlink(struct tw_core *c) {
	if (c->head_prev) c->head_prev->head_next = c->head_next;
	else utornado.heads_first = c->head_next;
	if (c->head_next) c->head_next->head_prev = c->head_prev;
	else utornado.heads_last = c->head_prev;
	c->head_prev = c->head_next = NULL;
}

/* The core's connection starts waiting for a request head: now, after an
 * accept, or after a response on a kept-alive connection. */
void tw_head_begin(struct tw_core *c) {
	uint64_t timeout = utornado.head_timeout > 0 ? (uint64_t) utornado.head_timeout * TW_NS : 0;
	/* without a deadline the core is still on the list (shedding, drain) */
	c->head_deadline = timeout ? tw_now_ns() + timeout : 0;
	c->head_prev = utornado.heads_last;
	c->head_next = NULL;
	if (utornado.heads_last) utornado.heads_last->head_next = c;
	else utornado.heads_first = c;
	utornado.heads_last = c;
}

/* The head is complete, or the connection is gone. */
void tw_head_end(struct tw_core *c) {
	heads_unlink(c);
	c->head_deadline = 0;
	c->body_since = 0;
}

/*
 * The latest moment a wait of this core may end, 0 for none: the head
 * deadline while the head is incomplete, the body deadline while the app
 * waits for body bytes. The body's clock starts at the app's first wait for
 * body bytes (as mod_reqtimeout's starts at the first body read): an app
 * that works before reading does not spend the client's time.
 */
uint64_t tw_request_deadline(struct tw_core *c, int fd, uint32_t events) {
	if (c->state == TW_CORE_HEAD) return c->head_deadline;
	if (utornado.body_min_rate <= 0 || events != TW_READ) return 0;
	struct wsgi_request *wsgi_req = c->wsgi_req;
	if (fd != wsgi_req->fd || wsgi_req->post_pos >= wsgi_req->post_cl) return 0;
	if (!c->body_since) c->body_since = tw_now_ns();
	return c->body_since + (uint64_t) utornado.body_timeout * TW_NS
		+ (uint64_t) wsgi_req->post_pos * TW_NS / (uint64_t) utornado.body_min_rate;
}

/* End the wait of a core on the heads list: its connection is closed by the
 * core itself, as after a timeout. From the hub only. */
static int close_head(struct tw_core *c) {
	if (!tw_core_suspended(c)) return 0;
	tw_wake(c, c->wait.gen, TW_WAIT_CANCELLED);
	return 1;
}

/* Every core is taken and a connection waits: close the oldest connection
 * that has not sent a request head. Returns 1 when a core was freed. */
int tw_shed_oldest_head(void) {
	struct tw_core *c;
	for (c = utornado.heads_first; c; c = c->head_next) {
		if (!close_head(c)) continue;
		return c->state == TW_CORE_IDLE;
	}
	return 0;
}

/* A drain: close every connection that has not sent a complete request. */
void tw_close_heads(void) {
	int i;
	for (i = 0; i < utornado.cores; i++) {
		struct tw_core *c = &utornado.core[i];
		if (c->state == TW_CORE_HEAD) close_head(c);
	}
}

/* ---- harakiri: the oldest request running the app ---- */

static void harakiri_publish(void) {
	int secs = uwsgi.harakiri_options.workers;
	if (secs <= 0) return;
	time_t oldest = utornado.running_first ? utornado.running_first->running_since : 0;
	uwsgi.workers[uwsgi.mywid].harakiri = oldest ? oldest + secs : 0;
	if (!uwsgi.master_process) {
		/* no master: uWSGI's harakiri is a SIGALRM in the worker */
		time_t left = oldest ? oldest + secs - uwsgi_now() : 0;
		alarm(oldest ? (left > 0 ? left : 1) : 0);
	}
}

/* The app starts running the core's request (after routing). */
void tw_app_begin(struct tw_core *c) {
	/* a core whose greenlet died in the app never reached tw_app_end() */
	tw_app_end(c);
	c->running_since = uwsgi_now();
	c->run_prev = utornado.running_last;
	c->run_next = NULL;
	if (utornado.running_last) utornado.running_last->run_next = c;
	else utornado.running_first = c;
	utornado.running_last = c;
	harakiri_publish();
}

/* The request is over: uwsgi_close_request() cleared the worker's harakiri,
 * set it back for the requests still running. */
void tw_app_end(struct tw_core *c) {
	if (!c->running_since) return;
	if (c->run_prev) c->run_prev->run_next = c->run_next;
	else utornado.running_first = c->run_next;
	if (c->run_next) c->run_next->run_prev = c->run_prev;
	else utornado.running_last = c->run_prev;
	c->run_prev = c->run_next = NULL;
	c->running_since = 0;
	harakiri_publish();
}
