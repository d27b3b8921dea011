"""A Flask application written for uWSGI, run unchanged under emperor and under real uWSGI
(tests/test_api_uwsgi_module.py: the same transcript from both).

It uses what such applications use: @postfork (reconnect after fork), @timer (periodic
work), uwsgi.reload() (an admin endpoint), uwsgi.worker_id(), uwsgi.opt. MARK_DIR (the
vassal's `env`) receives one line per observation. @spool is here for when the spooler
lands: the vassal then sets `spooler = DIR` and `env = FLASK_SPOOL=1`, and GET /spool
queues a task that marks "spooled" (the test's transcript gains those two steps).
"""
import os

import uwsgi
from flask import Flask, jsonify
from uwsgidecorators import postfork, timer

MARK_DIR = os.environ["MARK_DIR"]
app = Flask(__name__)
state = {"connected_in": None}


def mark(name, *values):
    fd = os.open(os.path.join(MARK_DIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(str(v) for v in values) + "\n").encode())
    finally:
        os.close(fd)


@postfork
def connect():
    """What a database connection opened after fork looks like."""
    state["connected_in"] = os.getpid()
    mark("postfork", uwsgi.worker_id())


@timer(1)
def heartbeat(num):
    mark("timer", uwsgi.worker_id(), num)


@app.route("/")
def index():
    return "hello from flask"


@app.route("/info")
def info():
    return jsonify(
        numproc=uwsgi.numproc,
        worker_id_ok=uwsgi.worker_id() in range(1, uwsgi.numproc + 1),
        masterpid_is_parent=uwsgi.masterpid() == os.getppid(),
        connected_here=state["connected_in"] == os.getpid(),
        version=uwsgi.version.decode()[:6],
        opt_keys=sorted(k for k in uwsgi.opt if k != "ini"),
        opt_types=sorted({type(k).__name__ + ":" + type(v).__name__ for k, v in uwsgi.opt.items()}),
        processes=uwsgi.opt["processes"].decode(),
        env=uwsgi.opt["env"].decode().split("=")[0],   # the last env line (as uWSGI 2.0.31 gives it)
        timer_registered=uwsgi.signal_registered(0),
    )


if os.environ.get("FLASK_SPOOL") == "1":
    from uwsgidecorators import spool

    @spool
    def send_mail(arguments):
        mark("spooled", arguments.get("to", "?"))

    @app.route("/spool")
    def queue():
        send_mail.spool(to="someone")
        return "queued"


@app.route("/reload")
def reload():
    return str(uwsgi.reload())
