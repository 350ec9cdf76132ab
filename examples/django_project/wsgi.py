"""A Django polls project and a websocket echo on one uWSGI server, served by
the tornado loop engine. Run it from the repository root:

    .venv/bin/uwsgi --http11-socket 127.0.0.1:9090 --wsgi-file examples/django_project/wsgi.py --tornado 100 --greenlet

then open http://127.0.0.1:9090/polls/ ; ws://127.0.0.1:9090/ws/ echoes.
--http11-socket keeps browsers' connections alive; --http-socket would close
each one after its response without saying so, and a browser reusing it can
meet a reset.
The SQLite database is $DJANGO_DB (default: db.sqlite3 next to this file); it
is migrated and given a sample question at import time.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterable

PROJECT_DIR = Path(__file__).resolve().parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
# Each request runs in its own greenlet on the thread of the worker's asyncio
# loop, so Django sees a running event loop and would refuse the ORM
# ("SynchronousOnlyOperation"). Here that is safe: Django keeps one database
# connection per greenlet (its connection storage follows the contextvars
# context, which greenlet gives each greenlet), and a query only blocks the
# loop for its own duration, as any blocking call does in a greenlet engine.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

import uwsgi  # noqa: E402 - provided by the uWSGI binary
from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import connections, transaction  # noqa: E402

StartResponse = Callable[..., object]
WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]

django_application: WSGIApp = get_wsgi_application()  # runs django.setup()


def prepare_database() -> None:
    """Apply the migrations and add the sample question to an empty database."""
    from polls.models import Question

    call_command("migrate", interactive=False, verbosity=0)
    with transaction.atomic():
        if not Question.objects.exists():
            question = Question.objects.create(question_text="What is the best loop engine?")
            for text in ("tornado", "gevent", "asyncio"):
                question.choice_set.create(choice_text=text)
    connections.close_all()  # workers (maybe forked) open their own connections


def websocket_echo(environ: dict) -> list[bytes]:
    """Send every message back until the client goes away."""
    uwsgi.websocket_handshake(environ["HTTP_SEC_WEBSOCKET_KEY"], environ.get("HTTP_ORIGIN", ""))
    while True:
        try:
            msg = uwsgi.websocket_recv()
        except (IOError, OSError):
            return []
        uwsgi.websocket_send(msg)


def application(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    """/ws/ is the websocket echo, everything else is Django."""
    if environ.get("PATH_INFO") == "/ws/":
        return websocket_echo(environ)
    return django_application(environ, start_response)


prepare_database()
