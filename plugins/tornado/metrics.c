/*
 * metrics.c: floor 1 (reads event.c's counters): the engine's metrics in
 * uWSGI's metrics subsystem
 * (--enable-metrics, which turns on the master).
 *
 * uWSGI's metrics live in the master: they are registered there before the
 * workers exist (uwsgi_setup_metrics() gives each one its slot of shared
 * memory right after the plugins' post_init), and a collector thread of the
 * master refreshes every value once a second; the stats server (--stats,
 * "metrics") and --metrics-dir show those values. A worker's own memory is
 * out of the master's reach, so the engine keeps one struct tw_metrics per
 * worker in memory shared with the master and registers, for each worker N:
 *
 *   worker.N.tornado.busy_cores           cores owning a connection
 *   worker.N.tornado.head_cores           of those, connections that have not sent a complete
 *                                         request head (new, or idle between keep-alive requests)
 *   worker.N.tornado.fd_waiting_cores     cores suspended on a file descriptor
 *   worker.N.tornado.timer_waiting_cores  cores suspended on a timer only
 *   worker.N.tornado.ready_queue          cores queued to run on the next iteration
 *   worker.N.tornado.loop_lag_max_us      the longest a woken core waited to run, last second
 *   worker.N.tornado.loop_lag_avg_us      the same on average, last second
 *   worker.N.tornado.waits                waits started (counter)
 *   worker.N.tornado.wakeups              suspended cores resumed (counter)
 *   worker.N.tornado.waits_per_sec        waits started during the last second
 *   worker.N.tornado.wakeups_per_sec      cores resumed during the last second
 *   worker.N.tornado.accept_pauses        times every core was busy and accepting stopped (counter)
 *   worker.N.tornado.http_rejected        request heads refused before the app (counter)
 *
 * The counters are plain integers each floor increments in the worker's own
 * memory (struct tw_counters: the event layer's waits, wake-ups and lag, the
 * accept gate's pauses, framing's refusals); once a second the worker copies
 * them, and writes the gauges, into its slot (tw_metrics_sample(), from the
 * worker's periodic check), as libuv's uv_metrics_info() copies the loop's
 * own counters out; rates and averages are computed in the master
 * by two collectors of ours from the change of the counters. Nothing is
 * allocated after fork and the hot path does no more than an increment and,
 * with metrics on, one clock read per wake-up.
 *
 * Loop lag: a core becomes runnable when its fd shows up in an epoll batch,
 * when its timer is due, or when it is queued to run again; the lag is the
 * time from then until it really runs, i.e. what the loop's other work made
 * it wait.
 */
#include "tornado.h"

/* master: one slot per worker (index = worker id), shared with the workers */
static struct tw_metrics *tw_shared;
/* without --enable-metrics: a slot nobody reads */
static struct tw_metrics tw_unshared;
/* worker: what an earlier process in this slot counted, to go on from */
static struct tw_metrics tw_base;

/* master-private state of a metric computed from the change of counters */
struct tw_metric_delta {
	int64_t *den;           /* avg: the counter to divide by */
	int64_t last_num;
	int64_t last_den;
	uint64_t last_ns;
};

/* collector "tornado_rate": increase of *ptr per second since the last collection */
static int64_t tw_collect_rate(struct uwsgi_metric *um) {
	struct tw_metric_delta *d = (struct tw_metric_delta *) um->custom;
	uint64_t now = tw_now_ns();
	int64_t num = *um->ptr;
	int64_t rate = 0;
	if (d->last_ns && now > d->last_ns && num > d->last_num) {
		rate = (int64_t) ((double) (num - d->last_num) * 1e9 / (double) (now - d->last_ns) + 0.5);
	}
	d->last_num = num;
	d->last_ns = now;
	return rate;
}

/* collector "tornado_avg": increase of *ptr (ns) per increase of *den, in microseconds */
static int64_t tw_collect_avg(struct uwsgi_metric *um) {
	struct tw_metric_delta *d = (struct tw_metric_delta *) um->custom;
	int64_t num = *um->ptr;
	int64_t den = *d->den;
	int64_t avg = 0;
	if (den > d->last_den && num >= d->last_num) avg = (num - d->last_num) / (den - d->last_den) / 1000;
	d->last_num = num;
	d->last_den = den;
	return avg;
}

static void tw_metric(int wid, const char *name, uint8_t type, char *collector, int64_t *ptr, int64_t *den) {
	char buf[256];
	if (snprintf(buf, sizeof(buf), "worker.%d.tornado.%s", wid, name) >= (int) sizeof(buf)) {
		uwsgi_log("[tornado] metric name too long: %s\n", name);
		exit(1);
	}
	struct tw_metric_delta *d = NULL;
	if (strcmp(collector, "ptr")) {
		d = uwsgi_calloc(sizeof(struct tw_metric_delta));
		d->den = den;
	}
	uwsgi_register_metric(buf, NULL, type, collector, ptr, 0, d);
}

/* In the master, before uWSGI allocates the metrics' storage. */
void tw_metrics_register(void) {
	if (!uwsgi.has_metrics || uwsgi.numproc < 1) return;
	uwsgi_register_metric_collector("tornado_rate", tw_collect_rate);
	uwsgi_register_metric_collector("tornado_avg", tw_collect_avg);
	tw_shared = uwsgi_calloc_shared(sizeof(struct tw_metrics) * (uwsgi.numproc + 1));
	int wid;
	for (wid = 1; wid <= uwsgi.numproc; wid++) {
		struct tw_metrics *m = &tw_shared[wid];
		tw_metric(wid, "busy_cores", UWSGI_METRIC_GAUGE, "ptr", &m->busy_cores, NULL);
		tw_metric(wid, "head_cores", UWSGI_METRIC_GAUGE, "ptr", &m->head_cores, NULL);
		tw_metric(wid, "fd_waiting_cores", UWSGI_METRIC_GAUGE, "ptr", &m->fd_waiting_cores, NULL);
		tw_metric(wid, "timer_waiting_cores", UWSGI_METRIC_GAUGE, "ptr", &m->timer_waiting_cores, NULL);
		tw_metric(wid, "ready_queue", UWSGI_METRIC_GAUGE, "ptr", &m->ready_queue, NULL);
		tw_metric(wid, "loop_lag_max_us", UWSGI_METRIC_GAUGE, "ptr", &m->loop_lag_max_us, NULL);
		tw_metric(wid, "loop_lag_avg_us", UWSGI_METRIC_GAUGE, "tornado_avg", &m->lag_sum_ns, &m->lag_count);
		tw_metric(wid, "waits", UWSGI_METRIC_COUNTER, "ptr", &m->waits, NULL);
		tw_metric(wid, "wakeups", UWSGI_METRIC_COUNTER, "ptr", &m->wakeups, NULL);
		tw_metric(wid, "waits_per_sec", UWSGI_METRIC_GAUGE, "tornado_rate", &m->waits, NULL);
		tw_metric(wid, "wakeups_per_sec", UWSGI_METRIC_GAUGE, "tornado_rate", &m->wakeups, NULL);
		tw_metric(wid, "accept_pauses", UWSGI_METRIC_COUNTER, "ptr", &m->accept_pauses, NULL);
		tw_metric(wid, "http_rejected", UWSGI_METRIC_COUNTER, "ptr", &m->http_rejected, NULL);
	}
}

/* In the worker, after fork: point at this worker's slot. The counters go
 * on from what an earlier process in this slot counted (the rates stay right
 * across a respawn); the gauges start from rest. */
void tw_metrics_worker_init(void) {
	if (!tw_shared || uwsgi.mywid < 1 || uwsgi.mywid > uwsgi.numproc) {
		utornado.metrics = &tw_unshared;
		return;
	}
	utornado.metrics = &tw_shared[uwsgi.mywid];
	tw_base = *utornado.metrics;
	utornado.counters.measure_lag = 1;
	tw_metrics_sample();
}

/* Publish the gauges and copy the counters out: once a second, from the
 * worker's periodic check. */
void tw_metrics_sample(void) {
	if (utornado.metrics == &tw_unshared) return;
	int64_t head = 0, fd_waiting = 0, timer_waiting = 0, ready = 0;
	int i;
	for (i = 0; i < utornado.cores; i++) {
		struct tw_core *c = &utornado.core[i];
		if (c->state == TW_CORE_HEAD) head++;
		if (!tw_core_suspended(c)) continue;
		switch (c->wait.kind) {
		case TW_WAIT_FD:
			fd_waiting++;
			break;
		case TW_WAIT_ASYNC_API:
			if (c->wsgi_req->waiting_fds) fd_waiting++;
			else if (c->wait.heap_idx >= 0) timer_waiting++;
			break;
		case TW_WAIT_TIMER:
			timer_waiting++;
			break;
		default:
			break;
		}
	}
	struct tw_core *c;
	for (c = utornado.ready_head; c; c = c->next_ready) ready++;
	struct tw_metrics *m = utornado.metrics;
	struct tw_counters *k = &utornado.counters;
	m->busy_cores = utornado.busy;
	m->head_cores = head;
	m->fd_waiting_cores = fd_waiting;
	m->timer_waiting_cores = timer_waiting;
	m->ready_queue = ready;
	m->loop_lag_max_us = (int64_t) (k->lag_max_ns / 1000);
	k->lag_max_ns = 0;
	m->waits = tw_base.waits + k->waits;
	m->wakeups = tw_base.wakeups + k->wakeups;
	m->lag_sum_ns = tw_base.lag_sum_ns + k->lag_sum_ns;
	m->lag_count = tw_base.lag_count + k->lag_count;
	m->accept_pauses = tw_base.accept_pauses + k->accept_pauses;
	m->http_rejected = tw_base.http_rejected + k->http_rejected;
}
