"""The Django polls project of wsgi.py served as ASGI: Django's ASGI handler
behind Channels' ProtocolTypeRouter, on the tornado loop engine. From the
repository root:

    .venv/bin/uwsgi --http11-socket 127.0.0.1:9090 --tornado 100 --greenlet \
        --pythonpath examples/django_project --tornado-asgi asgi:application

then open http://127.0.0.1:9090/polls/. Django runs the synchronous views
(the ORM) in its thread, as under any ASGI server; async views run on the
worker's loop.
"""
from __future__ import annotations

import wsgi  # noqa: F401 - settings, the migrated database, the sample question
from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

application = ProtocolTypeRouter({"http": get_asgi_application()})
