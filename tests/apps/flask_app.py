"""Flask app of the stacks tests (Flask 3.1, logging at its defaults).

Flask answers an exception in a view with 500 itself and logs
"Exception on <path> [<METHOD>]" with the traceback to the WSGI error stream
(Gunicorn's error log); Gunicorn never sees it. A streamed body that raises is
iterated by Gunicorn, which logs "Error handling request" and cuts the
connection (the headers are out).

Routes (GET):
    /page              200, templates/items.html
    /unavailable       503 "unavailable" (a plain response, no exception)
    /error/multiline   ValueError                   -> 500
    /error/note        KeyError                     -> 500
    /error/chained     failures.UpstreamError       -> 500
    /error/long        TypeError (> 4 KiB message)  -> 500
    /error/db          sqlite3.OperationalError (a missing table) -> 500
    /stream/error      200, one chunk, then failures.StreamInterrupted
    anything else      404

Templated routes (the routes tests):
    GET, POST /users/<int:id>                 200 (POST 201); 404 for ids >= 900
    GET /users/<int:id>/orders/<uuid:order>   200
    GET /files/<name>                         200
    GET /boom/<int:id>                        RuntimeError -> 500
"""

import sqlite3

from flask import Flask, Response, abort, render_template, request

import failures

app = Flask(__name__)


@app.get("/page")
def page():
    return render_template("items.html", title="Flask page", items=["a", "b", "c"])


@app.get("/unavailable")
def unavailable():
    return Response("unavailable", status=503, mimetype="text/plain")


@app.get("/error/multiline")
def error_multiline():
    failures.multiline()


@app.get("/error/note")
def error_note():
    failures.noted()


@app.get("/error/chained")
def error_chained():
    failures.chained()


@app.get("/error/long")
def error_long():
    failures.long_message()


@app.get("/error/db")
def error_db():
    db = sqlite3.connect(":memory:")
    try:
        db.execute("SELECT * FROM missing_table").fetchall()
    finally:
        db.close()


@app.get("/stream/error")
def stream_error():
    return Response(failures.stream_chunks(), mimetype="text/plain")


@app.route("/users/<int:user_id>", methods=["GET", "POST"])
def user(user_id):
    if user_id >= 900:
        abort(404)
    if request.method == "POST":
        request.get_data()
        return Response(f"created {user_id}", status=201, mimetype="text/plain")
    return Response(f"user {user_id}", mimetype="text/plain")


@app.get("/users/<int:user_id>/orders/<uuid:order>")
def order(user_id, order):
    return Response(f"order {order} of {user_id}", mimetype="text/plain")


@app.get("/files/<name>")
def file(name):
    return Response(f"file {name}", mimetype="text/plain")


@app.get("/boom/<int:n>")
def boom(n):
    raise RuntimeError(f"boom {n}")
