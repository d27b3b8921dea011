"""A one-module Django project whose cache is django-uwsgi-cache's backend (`uwsgicache`, from
PyPI), run unchanged under emperor and real uWSGI (tests/test_api_cache.py). Same URLs as
spoolcache.py: /cache/set?k=K&v=V, /cache/get?k=K, /sleep?s=S; answers `RESULT PID`."""
import os
import time

import django
from django.conf import settings

MARK_DIR = os.environ.get("MARK_DIR", "/tmp")

settings.configure(
    DEBUG=False, SECRET_KEY="test-only", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, MIDDLEWARE=[],
    CACHES={"default": {"BACKEND": "uwsgicache.UWSGICache", "LOCATION": "django"}},
)
django.setup()

from django.core.cache import cache  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def _answer(result):
    return HttpResponse(f"{result} {os.getpid()}", content_type="text/plain")


def cache_set(request):
    cache.set(request.GET["k"], {"value": request.GET["v"]}, timeout=None)
    return _answer(True)


def cache_get(request):
    return _answer(repr(cache.get(request.GET["k"])))


def sleep(request):
    busy = os.path.join(MARK_DIR, f"busy.{os.getpid()}")
    open(busy, "w").close()
    time.sleep(float(request.GET.get("s", "1")))
    os.unlink(busy)
    return _answer("slept")


urlpatterns = [path("cache/set", cache_set), path("cache/get", cache_get), path("sleep", sleep)]
application = get_wsgi_application()
