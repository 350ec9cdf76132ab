/*
 * plugin.c: floor 4, the top of the tornado loop engine: the --tornado
 * options, the start-up checks, and the worker's main loop beside the plugin
 * struct (as uWSGI's gevent plugin has it). It wires the floors below
 * together; every call goes down a floor:
 *
 *   4 plugin.c    options, checks, the worker's main loop
 *   3 signals.c   uWSGI signals, drain, shutdown
 *   2 loop.c      the IOLoop, accept and its gate, the phase, serving a connection
 *   1 deadlines.c, keepalive.c, framing.c, metrics.c, hooks.c, websocket.c,
 *                 asgi.c, environ.c, response.c (each calls floor 0 only)
 *   0 event.c     fd table, timer heap, ready queue, greenlet switching, counters
 *                 (guard.c, the build guard, stands apart)
 */
#include "tornado.h"

/* --tornado N: async mode with N cores on the tornado loop */
static void tw_opt_tornado(char *opt, char *value, void *unused) {
	uwsgi_opt_set_int(opt, value, &uwsgi.async);
	if (uwsgi.async < 1) {
		uwsgi_log("--tornado needs a number of async cores, e.g. --tornado 100 (got \"%s\")\n", value);
		exit(1);
	}
	uwsgi.loop = "tornado";
}

static struct uwsgi_option tw_options[] = {
	{"tornado", required_argument, 0, "run the tornado loop engine with the specified number of async cores (needs --greenlet)", tw_opt_tornado, NULL, UWSGI_OPT_THREADS},
	{"tornado-stock-timers", no_argument, 0, "keep asyncio's own call_at/call_later on the worker's loop instead of the engine's C timer heap (to compare)", uwsgi_opt_true, &utornado.stock_timers, 0},
	{"tornado-uvloop", no_argument, 0, "run the tornado loop engine on a uvloop event loop (when the app did not create a loop before fork)", uwsgi_opt_true, &utornado.uvloop, 0},
	{"tornado-head-timeout", required_argument, 0, "close a connection that has not sent a complete request head within this many seconds of its accept or previous request (default 15, 0: off)", uwsgi_opt_set_int, &utornado.head_timeout, 0},
	{"tornado-body-timeout", required_argument, 0, "seconds a request body gets before --tornado-body-min-rate applies (default 20)", uwsgi_opt_set_int, &utornado.body_timeout, 0},
	{"tornado-body-min-rate", required_argument, 0, "fail the body read of a request whose body arrives slower than this many bytes per second after --tornado-body-timeout (default 500, 0: off)", uwsgi_opt_set_int, &utornado.body_min_rate, 0},
	{"tornado-websocket-close-timeout", required_argument, 0, "seconds a websocket waits for the client's close frame after the engine sent its own (a drain's 1001, the app's websocket_close(), a protocol error) before the connection is closed (default 2)", uwsgi_opt_set_int, &utornado.ws_close_timeout, 0},
	TW_IMPL_OPTIONS
	{0, 0, 0, 0, 0, 0, 0},
};

static int tw_selected(void) {
	return uwsgi.loop && !strcmp(uwsgi.loop, "tornado");
}

/* The suspend engine (--greenlet) installs uwsgi.schedule_to_main when it
 * initialises, together with the apps. */
static void tw_check_suspend_engine(void) {
	if (!uwsgi.schedule_to_main) {
		uwsgi_log("the tornado loop engine needs a suspend engine: add --greenlet (and build uWSGI with the greenlet plugin)\n");
		/* in a worker, make the master give up instead of respawning it forever */
		exit(uwsgi.mywid > 0 ? UWSGI_FAILED_APP_CODE : 1);
	}
}

/* Option checks, in the master before any worker exists: a wrong setup stops
 * here with one clear line, instead of a crash on the first request. */
static void tw_post_init(void) {
	if (!tw_selected()) return;
	if (uwsgi.async < 2) {
		uwsgi_log("the tornado loop engine needs at least 2 async cores: use --tornado <cores> (e.g. --tornado 100)\n");
		exit(1);
	}
	if (utornado.head_timeout < 0 || utornado.body_timeout < 0 || utornado.body_min_rate < 0 || utornado.ws_close_timeout < 0) {
		uwsgi_log("--tornado-head-timeout, --tornado-body-timeout, --tornado-body-min-rate and --tornado-websocket-close-timeout take a number >= 0\n");
		exit(1);
	}
	/* a silent client holds a core until --socket-timeout: gevent's default of
	 * 30 s unless the operator chose a value */
	if (!uwsgi_get_exported_opt("socket-timeout") && uwsgi.socket_timeout < 30) {
		uwsgi.socket_timeout = 30;
	}
	tw_metrics_register();
}

/* After the apps are loaded in the master (with --lazy-apps the worker's
 * loop start checks instead, see tw_worker_main()). */
static void tw_postinit_apps(void) {
	if (!tw_selected() || uwsgi.lazy || uwsgi.lazy_apps) return;
	tw_check_suspend_engine();
}

/* The worker's main loop: registered as the loop engine "tornado", it runs
 * in every worker, wires the floors together and runs the IOLoop. */
static void tw_worker_main(void) {
	signal(SIGPIPE, SIG_IGN);

	if (uwsgi.async < 2) {
		uwsgi_log("the tornado loop engine requires async mode: use --tornado <cores>\n");
		exit(1);
	}
	tw_check_suspend_engine();
	utornado.cores = uwsgi.async;

	tw_impl_worker_init();   /* pyimpl.h: the GIL */

	if (tw_greenlet_import()) uwsgi_pyexit;
	tw_asan_mark_stack_top();
	utornado.hub = tw_greenlet_current();
	utornado.str_gr_context = PyUnicode_InternFromString("gr_context");
	utornado.str_switch = PyUnicode_InternFromString("switch");
	if (!utornado.str_gr_context || !utornado.str_switch) uwsgi_pyexit;

	if (tw_event_init()) uwsgi_pyexit;
	tw_metrics_worker_init();
	if (tw_legacy_init()) {
		uwsgi_log("[tornado] unable to set up the core async API\n");
		exit(1);
	}
	if (tw_setup_ioloop()) uwsgi_pyexit;

	tw_hooks_install();
	tw_replace_module_functions();
	tw_ws_replace_module_functions();
	if (tw_impl_apps_install() < 0) uwsgi_pyexit;
	if (tw_publish_engine()) uwsgi_pyexit;
	tw_signals_init();
	tw_framing_init();
	tw_keepalive_init();
	tw_listen_init();
	tw_impl_hooks_installed();   /* pyimpl.h: every hook is set */

	/* policy the event layer applies to every wait, wired from here (as
	 * Redis' aeSetBeforeSleepProc): a wait for the client never outlasts
	 * the request's own deadline (deadlines.c) */
	tw_set_wait_limit(tw_request_deadline);

	tw_impl_apps_start();
	tw_accept_resume();
	uwsgi_log("tornado loop engine ready on worker %d (pid: %d, cores: %d)\n", uwsgi.mywid, uwsgi.mypid, utornado.cores);

	tw_loop_run();
	tw_impl_apps_stop();

	/* the loop was stopped: the worker drained (reload, recycle) or is asked to die */
	tw_run_atexit();
	uwsgi_log("goodbye to the tornado IOLoop on worker %d (pid: %d)\n", uwsgi.mywid, uwsgi.mypid);
	exit(utornado.exit_code);
}

static void tw_on_load(void) {
	tw_deadlines_defaults();
	/* a client answers a close frame in one round trip */
	utornado.ws_close_timeout = 2;
	uwsgi_register_loop("tornado", tw_worker_main);
}

struct uwsgi_plugin tornado_plugin = {
	.name = "tornado",
	.options = tw_options,
	.on_load = tw_on_load,
	.post_init = tw_post_init,
	.postinit_apps = tw_postinit_apps,
	TW_IMPL_PLUGIN_HOOKS
};
