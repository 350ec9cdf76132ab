"""The Django polls example (examples/django_project) under --tornado 100
--greenlet: the vote form with its CSRF token, and the websocket echo served
by the same uWSGI next to Django."""
from __future__ import annotations

import re
from pathlib import Path

import requests
import websocket

from conftest import ROOT, Server

WSGI = str(ROOT / "examples" / "django_project" / "wsgi.py")
QUESTION = "What is the best loop engine?"


def start(uwsgi, tmp_path: Path) -> Server:
    """The example on --http11-socket: a requests.Session keeps its connection
    alive, and --http-socket (stock uWSGI too) answers HTTP/1.1 without
    "Connection: close" then closes, so a reused connection can meet a reset."""
    return uwsgi(WSGI, socket_opt="--http11-socket", env={"DJANGO_DB": str(tmp_path / "db.sqlite3")})


def detail_form(session: requests.Session, server: Server) -> tuple[str, str, dict[str, str]]:
    """From /polls/ to the question's form: (detail url, csrf token, choice text -> id)."""
    index = session.get(server.url + "/polls/", timeout=10)
    assert index.status_code == 200
    link = re.search(r'<a href="(/polls/\d+/)">' + re.escape(QUESTION) + "</a>", index.text)
    assert link, index.text
    detail_url = server.url + link.group(1)
    detail = session.get(detail_url, timeout=10)
    assert detail.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', detail.text)
    assert token, detail.text
    choices = dict(
        (text, value) for value, text in re.findall(
            r'<input type="radio" name="choice" id="choice\d+" value="(\d+)">\s*<label[^>]*>([^<]+)</label>',
            detail.text)
    )
    assert set(choices) == {"tornado", "gevent", "asyncio"}
    return detail_url, token.group(1), choices


def test_voting_for_tornado_twice_shows_two_votes_in_the_results(uwsgi, tmp_path):
    server = start(uwsgi, tmp_path)
    session = requests.Session()
    for expected in ("1 vote", "2 votes"):
        detail_url, token, choices = detail_form(session, server)
        r = session.post(
            detail_url + "vote/",
            data={"csrfmiddlewaretoken": token, "choice": choices["tornado"]},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert [h.status_code for h in r.history] == [302]
        assert r.url == detail_url + "results/"
        assert f"<li>tornado -- {expected}</li>" in r.text
        assert "<li>gevent -- 0 votes</li>" in r.text
    assert (tmp_path / "db.sqlite3").is_file()


def test_a_vote_without_the_csrf_token_is_refused_with_403(uwsgi, tmp_path):
    server = start(uwsgi, tmp_path)
    session = requests.Session()
    detail_url, _, choices = detail_form(session, server)  # the session has the csrf cookie
    r = session.post(detail_url + "vote/", data={"choice": choices["tornado"]},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 403
    assert "CSRF verification failed" in r.text
    results = session.get(detail_url + "results/", timeout=10)
    assert "<li>tornado -- 0 votes</li>" in results.text


def test_the_websocket_next_to_django_echoes_two_messages(uwsgi, tmp_path):
    server = start(uwsgi, tmp_path)
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws/", timeout=10)
    try:
        ws.send("hello django")
        assert ws.recv() == "hello django"
        ws.send("second message")
        assert ws.recv() == "second message"
    finally:
        ws.close()
    assert requests.get(server.url + "/polls/", timeout=10).status_code == 200
