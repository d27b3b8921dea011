import os

from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def index(request):
    return HttpResponse("django says hi")


@csrf_exempt
def echo(request):
    return JsonResponse({
        "method": request.method,
        "path": request.path,
        "query": request.GET.dict(),
        "body": request.body.decode(),
        "header": request.headers.get("X-Custom", ""),
        "env": os.environ.get("MYSITE_FLAVOUR", ""),
    })


urlpatterns = [path("", index), path("echo/", echo)]
