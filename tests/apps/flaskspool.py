"""A Flask application queueing work with uwsgidecorators' @spool and reloading itself with
uwsgi.reload(), run unchanged under emperor and real uWSGI (tests/test_api_spooler.py).
Each run of the task appends `NAME PID` to MARK_DIR/flask.log."""
import os

import uwsgi
from flask import Flask, request
from uwsgidecorators import spool

MARK_DIR = os.environ.get("MARK_DIR", "/tmp")
app = Flask(__name__)
application = app


@spool(pass_arguments=True)
def send_mail(to, subject="hi"):
    with open(os.path.join(MARK_DIR, "flask.log"), "a") as f:
        f.write(f"{to}:{subject} {os.getpid()}\n")


@app.route("/queue")
def queue():
    name = send_mail.spool(request.args["to"], subject=request.args.get("subject", "hi"))
    return f"{name!r} {os.getpid()}"


@app.route("/reload")
def reload():
    return f"{uwsgi.reload()!r} {os.getpid()}"
