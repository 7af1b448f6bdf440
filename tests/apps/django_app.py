"""Django project of the stacks tests in one file: settings, URLs and views.

Run with DJANGO_SETTINGS_MODULE=django_app and `django_app:application`.
DEBUG is off; logging goes to the console as Django's docs show (a
StreamHandler for `django.request`), so "Internal Server Error: <path>" and
the traceback go to stderr. Django answers an exception in a view with 500
itself; Gunicorn never sees it. A streamed body that raises is iterated by
Gunicorn, which logs "Error handling request" and cuts the connection.

Routes (GET): the same as flask_app.py, with /error/db raising
django.db.utils.OperationalError (sqlite: no such table), and its templated
routes (users, orders, files, boom) too.
"""

import os

from django.db import connection
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import path

import failures

HERE = os.path.dirname(os.path.abspath(__file__))

# ------------------------------------------------------------------ settings

DEBUG = False
SECRET_KEY = "stacks-tests-only"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_app"
INSTALLED_APPS = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [os.path.join(HERE, "templates")],
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
    }
}
USE_TZ = True
TIME_ZONE = "UTC"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
        },
    },
    "loggers": {
        "django.request": {
            "handlers": ["console"],
            "level": "WARNING",
        },
    },
}

# --------------------------------------------------------------------- views


def page(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'a' UNION ALL SELECT 'b' UNION ALL SELECT 'c'")
        items = [row[0] for row in cursor.fetchall()]
    return render(request, "items.html", {"title": "Django page", "items": items})


def unavailable(request):
    return HttpResponse("unavailable", status=503, content_type="text/plain")


def error_multiline(request):
    failures.multiline()


def error_note(request):
    failures.noted()


def error_chained(request):
    failures.chained()


def error_long(request):
    failures.long_message()


def error_db(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM missing_table")


def stream_error(request):
    return StreamingHttpResponse(failures.stream_chunks(), content_type="text/plain")


def user(request, user_id):
    if user_id >= 900:
        raise Http404("no such user")
    if request.method == "POST":
        request.body
        return HttpResponse(f"created {user_id}", status=201, content_type="text/plain")
    return HttpResponse(f"user {user_id}", content_type="text/plain")


def order(request, user_id, order):
    return HttpResponse(f"order {order} of {user_id}", content_type="text/plain")


def file(request, name):
    return HttpResponse(f"file {name}", content_type="text/plain")


def boom(request, n):
    raise RuntimeError(f"boom {n}")


urlpatterns = [
    path("users/<int:user_id>", user),
    path("users/<int:user_id>/orders/<uuid:order>", order),
    path("files/<str:name>", file),
    path("boom/<int:n>", boom),
    path("page", page),
    path("unavailable", unavailable),
    path("error/multiline", error_multiline),
    path("error/note", error_note),
    path("error/chained", error_chained),
    path("error/long", error_long),
    path("error/db", error_db),
    path("stream/error", stream_error),
]

# ----------------------------------------------------------------------- WSGI

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
