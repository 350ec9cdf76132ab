"""asgi.py of the Django site in asgi_django_site.py, with Channels:
HTTP to Django's ASGI handler, /ws to a websocket echo consumer, through
ProtocolTypeRouter."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asgi_django_site")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": URLRouter([path("ws", Echo.as_asgi())])})
