"""One gunicorn app that hands each request to a plain WSGI app (gunicorn
logs the exception), a Flask app or a Django app (they log it themselves),
chosen by the X-Via header; the X-Case header names the function of cases.py
that raises. The request path is left free for the record to name.
"""

import cases


def plain_app(environ, start_response):
    cases.CASES[environ["HTTP_X_CASE"]]()


from flask import Flask, request  # noqa: E402

flask_app = Flask("shop")


@flask_app.route("/", defaults={"p": ""}, methods=["GET", "POST"])
@flask_app.route("/<path:p>", methods=["GET", "POST"])
@flask_app.route("/n/<p>")  # `path` does not match a newline, `string` does
def flask_view(p):
    cases.CASES[request.headers["X-Case"]]()


import django  # noqa: E402
from django.conf import settings  # noqa: E402

# Django logs "Internal Server Error: <path>" through django.request; by
# default (DEBUG=False) only to mail_admins, so send it to stderr as a
# deployment that wants it in gunicorn's log would.
settings.configure(
    DEBUG=False,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="fixture",
    LOGGING={
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": {"class": "logging.StreamHandler"}},
        "loggers": {
            "django.request": {
                "handlers": ["stderr"],
                "level": "ERROR",
                "propagate": False,
            }
        },
    },
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import re_path  # noqa: E402


def django_view(request):
    cases.CASES[request.headers["X-Case"]]()


urlpatterns = [re_path(r"", django_view)]
django_app = get_wsgi_application()

APPS = {"gunicorn": plain_app, "flask": flask_app, "django": django_app}


def application(environ, start_response):
    return APPS[environ["HTTP_X_VIA"]](environ, start_response)
