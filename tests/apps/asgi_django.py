"""asgi.py of the Django site in asgi_django_site.py, with Channels:
HTTP to Django's ASGI handler through ProtocolTypeRouter."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asgi_django_site")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

application = ProtocolTypeRouter({"http": django_asgi_app})
