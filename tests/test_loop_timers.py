"""The worker loop's call_at() and call_later() on the engine's C timer heap
(plugins/tornado/calls.c; README: The loop's timers): what asyncio's own
promise, kept, on asyncio's loop. --tornado-stock-timers keeps asyncio's."""
from __future__ import annotations

import json

from conftest import cpython_only, http_get

pytestmark = cpython_only("the engine's loop calls are CPython's (PyPy keeps asyncio's)")


def get_json(server, path):
    status, body = http_get(server.port, path)
    assert status == 200, body
    return json.loads(body)


def test_the_loops_handles_are_the_engines_by_default(uwsgi):
    server = uwsgi("loop_timers.py")
    assert get_json(server, "/type") == "uwsgi_tornado_engine.TimerHandle"


def test_stock_timers_keeps_asyncios_own_handles(uwsgi):
    server = uwsgi("loop_timers.py", "--tornado-stock-timers")
    assert get_json(server, "/type") == "asyncio.events.TimerHandle"


def test_calls_run_by_deadline_and_calls_for_one_deadline_in_the_order_they_were_made(uwsgi):
    server = uwsgi("loop_timers.py")
    assert get_json(server, "/order") == ["a1", "a2", "a3", "b", "c"]


def test_a_cancelled_call_never_runs_and_says_it_was_cancelled(uwsgi):
    server = uwsgi("loop_timers.py")
    assert get_json(server, "/cancel") == {"ran": [], "cancelled": True}


def test_a_call_runs_in_the_context_it_was_made_in_or_the_one_it_was_given(uwsgi):
    server = uwsgi("loop_timers.py")
    assert get_json(server, "/context") == ["request", "unset"]


def test_a_call_that_raises_goes_to_the_loops_exception_handler_and_the_next_calls_run(uwsgi):
    server = uwsgi("loop_timers.py")
    pid = http_get(server.port, "/pid")[1]
    assert get_json(server, "/raises") == ["Exception in callback", "ValueError('boom')", "the next call ran"]
    assert http_get(server.port, "/pid")[1] == pid


def test_a_call_never_runs_early_and_at_most_a_little_late(uwsgi):
    server = uwsgi("loop_timers.py")
    late = get_json(server, "/lateness")
    assert len(late) == 4
    assert all(0 <= s < 0.05 for s in late), late


def test_a_call_that_makes_a_call_for_now_runs_it_on_a_later_turn_of_the_loop(uwsgi):
    server = uwsgi("loop_timers.py")
    assert get_json(server, "/chain") == 200


def test_asyncios_wait_for_times_out_on_the_engines_timers(uwsgi):
    server = uwsgi("loop_timers.py")
    outcome, elapsed = get_json(server, "/timeouts")
    assert outcome == "timeout"
    assert 0.05 <= elapsed < 1


def test_tornados_call_later_and_remove_timeout_run_on_the_engines_timers(uwsgi):
    server = uwsgi("loop_timers.py")
    assert get_json(server, "/tornado") == ["fired", []]


def test_the_loops_get_debug_says_what_set_debug_set(uwsgi):
    server = uwsgi("loop_timers.py")
    assert get_json(server, "/debug") == [False, True, False]


def test_an_infinite_sleep_waits_until_cancelled_and_the_other_calls_still_run(uwsgi):
    server = uwsgi("loop_timers.py")
    assert get_json(server, "/forever") == ["timeout", True, ["at zero", "later"]]


def test_asyncios_own_call_later_bound_from_the_class_works_on_the_engines_call_at(uwsgi):
    server = uwsgi("loop_timers.py")
    assert get_json(server, "/class") == ["fired", True, None, False]
