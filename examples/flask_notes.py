"""A Flask app whose views await asyncpg (PostgreSQL) and redis.asyncio
through wait(), under --tornado N --greenlet: each request waits for its own
queries while the worker serves the others; no async view, no thread.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/0 \\
    .venv/bin/uwsgi --http11-socket 127.0.0.1:9090 --wsgi-file examples/flask_notes.py --tornado 100 --greenlet

then http://127.0.0.1:9090/ (a form to post notes), /notes.json, /slow.
Each worker creates its asyncpg pool and its Redis client on its first
request (PerWorker) and closes them when it exits.
"""
import os

import asyncpg
import redis.asyncio
from flask import Flask, jsonify, redirect, render_template_string, request, url_for

from uwsgidecorators_ext import PerWorker, wait

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id serial PRIMARY KEY,
    text text NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
)"""


async def create_pool() -> asyncpg.Pool:
    pool = await asyncpg.create_pool(DATABASE_URL, min_size=2, max_size=50)
    async with pool.acquire() as conn, conn.transaction():
        # workers starting together: one creates the table, the others wait
        await conn.execute("SELECT pg_advisory_xact_lock(7101)")
        await conn.execute(SCHEMA)
    return pool


db = PerWorker(create_pool, close=lambda pool: pool.close())
cache = PerWorker(lambda: redis.asyncio.Redis.from_url(REDIS_URL, max_connections=50),
                  close=lambda client: client.aclose())

app = Flask(__name__)
application = app

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Notes</title></head>
<body>
<h1>Notes</h1>
<p id="counts">{{ posted }} posted, page viewed {{ views }} times</p>
<form method="post" action="{{ url_for('post_note') }}">
  <input name="text" id="text" required> <button id="post">Post</button>
</form>
<ul id="notes">{% for note in notes %}<li>{{ note.text }}</li>{% endfor %}</ul>
</body></html>"""


@app.get("/")
def index():
    notes = wait(db.get().fetch("SELECT id, text FROM notes ORDER BY id"))
    views = wait(cache.get().incr("notes:views"))
    posted = int(wait(cache.get().get("notes:posted")) or 0)
    return render_template_string(PAGE, notes=notes, views=views, posted=posted)


@app.post("/notes")
def post_note():
    text = request.form["text"].strip()
    note_id = wait(db.get().fetchval("INSERT INTO notes (text) VALUES ($1) RETURNING id", text))
    wait(cache.get().incr("notes:posted"))
    app.logger.info("note %d posted", note_id)
    return redirect(url_for("index"), code=303)


@app.get("/notes.json")
def notes_json():
    rows = wait(db.get().fetch("SELECT id, text FROM notes ORDER BY id"))
    return jsonify([dict(row) for row in rows])


@app.get("/slow")
def slow():
    """A view that waits 200 ms in PostgreSQL: many run at once on one worker."""
    wait(db.get().execute("SELECT pg_sleep(0.2)"))
    return jsonify(slow=wait(cache.get().incr("notes:slow")))
