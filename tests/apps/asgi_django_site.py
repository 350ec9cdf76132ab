"""A one-file Django site (settings, views, URLs) served through Channels'
ProtocolTypeRouter under --tornado-asgi (tests/test_asgi_frameworks.py);
asgi_django.py is its asgi.py."""
import asyncio

from asgi_common import parts

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

SECRET_KEY = "tests only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "asgi_django_site"
INSTALLED_APPS = ["channels"]
USE_TZ = True
STATE = {}


async def scope(request):
    return JsonResponse({"path": request.path, "query": request.META.get("QUERY_STRING", ""),
                         "header": request.headers.get("X-Test")})


async def echo(request):
    return HttpResponse(request.body, content_type="application/octet-stream")


async def stream(request):
    return StreamingHttpResponse(parts("part {}\n"), content_type="text/plain")


async def sse(request):
    return StreamingHttpResponse(parts("data: event {}\n\n"), content_type="text/event-stream")


async def status(request, code):
    return HttpResponse(f"status {code}", status=code, content_type="text/plain")


async def sleep(request):
    await asyncio.sleep(1)
    return HttpResponse("slept", content_type="text/plain")


urlpatterns = [
    path("scope", scope), path("echo", echo), path("stream", stream), path("sse", sse),
    path("status/<int:code>", status), path("sleep", sleep),
]
