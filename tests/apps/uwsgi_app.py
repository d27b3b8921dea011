"""An application written for uWSGI: `import uwsgi`, `uwsgidecorators` (tests/test_api_*.py).

What it does is chosen by the vassal's `env` (UWSGI_TEST_*), and every observation is a line
appended to a file in MARK_DIR (one write each, so lines from two workers never mix).
"""
import json
import os
import time

import uwsgi
from uwsgidecorators import cron, filemon, harakiri, lock, postfork, rbtimer, signal, timer

MARK_DIR = os.environ["MARK_DIR"]
WANT = os.environ.get("UWSGI_TEST", "").split(",")


def mark(name, *values):
    line = " ".join(str(v) for v in values) + "\n"
    fd = os.open(os.path.join(MARK_DIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


mark("import", os.getpid(), uwsgi.worker_id(), "%.3f" % time.monotonic())


uwsgi.atexit = lambda: mark("atexit", uwsgi.worker_id(), os.getpid())


@postfork
def _after_fork():
    mark("postfork", uwsgi.worker_id(), os.getpid(), uwsgi.masterpid(), uwsgi.numproc)


if "postfork_raise" in WANT:
    @postfork
    def _no_database():
        raise RuntimeError("no database")


if "many_timers" in WANT:
    for i in range(70):   # past the 64 the master keeps: the rest are refused with a log line
        uwsgi.add_timer(100 + i, 3600)


if "timer" in WANT:
    @timer(1)
    def _tick(num):
        mark("timer", uwsgi.worker_id(), "%.3f" % time.monotonic(), num)

if "rbtimer" in WANT:
    @rbtimer(1, signum=40)
    def _rb(num):
        mark("rbtimer", uwsgi.worker_id(), num)
    uwsgi.add_rb_timer(41, 1, 2)   # two iterations only
    uwsgi.register_signal(41, "", lambda num: mark("rb2", uwsgi.worker_id(), num))

if "cron" in WANT:
    @cron(-1, -1, -1, -1, -1)
    def _every_minute(num):
        mark("cron", uwsgi.worker_id(), "%.3f" % time.monotonic())

if "filemon" in WANT:
    @filemon(os.path.join(MARK_DIR, "watched"))
    def _touched(num):
        mark("filemon", uwsgi.worker_id(), num)

if "signals" in WANT:
    @signal(17, target="workers")
    def _all(num):
        mark("sig17", uwsgi.worker_id())

    @signal(18, target="worker2")
    def _second(num):
        mark("sig18", uwsgi.worker_id())

    @signal(19)
    def _one(num):
        mark("sig19", uwsgi.worker_id())

    @signal(20)
    def _boom(num):
        raise RuntimeError("boom")


@lock
def _locked(rid):
    mark("lock", "enter", rid, "%.6f" % time.monotonic())
    time.sleep(0.3)
    mark("lock", "leave", rid, "%.6f" % time.monotonic())


@harakiri(1)
def _slow():
    time.sleep(5)


def _facts():
    return {
        "worker_id": uwsgi.worker_id(), "masterpid": uwsgi.masterpid(), "numproc": uwsgi.numproc,
        "pid": os.getpid(), "version": uwsgi.version.decode(), "hostname_bytes": isinstance(uwsgi.hostname, bytes),
        "opt": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in uwsgi.opt.items()},
        "opt_types": sorted({type(k).__name__ + ":" + type(v).__name__ for k, v in uwsgi.opt.items()}),
        "request_id": uwsgi.request_id(), "total_requests": uwsgi.total_requests(),
        "mem": list(uwsgi.mem()), "started_on": uwsgi.started_on, "ready": uwsgi.ready(),
        "workers": [{"id": w["id"], "pid": w["pid"], "status": w["status"].decode()} for w in uwsgi.workers()],
        "registered_17": uwsgi.signal_registered(17), "registered_200": uwsgi.signal_registered(200),
        "is_a_reload": uwsgi.is_a_reload, "listen_queue": uwsgi.listen_queue(),
        "websockets": hasattr(uwsgi, "websocket_send"),
    }


def application(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    status, body = "200 OK", "ok"
    if path == "/facts":
        body = json.dumps(_facts())
    elif path == "/signal":
        uwsgi.signal(int(query))
    elif path == "/lock":
        _locked(query)
    elif path == "/logvar":
        uwsgi.set_logvar("who", "app-" + query)
        body = repr(uwsgi.get_logvar("who"))   # bytes, as uWSGI 2.0.31 gives it
    elif path == "/reload":
        body = str(uwsgi.reload())
    elif path == "/garbage":   # what a broken or hostile app could write on the master's pipe
        from emperor.api import state
        sent = [state.area.send(m) for m in (b"{nope", b"[1, 2]", b'{"op": "signal", "num": 9999}',
                                               b'{"op": "timer", "num": 5, "secs": -1}', b"x" * 5000, b"[" * 2000)]
        body = repr(sent)
    elif path == "/stop":
        body = str(uwsgi.stop())
    elif path == "/harakiri":
        _slow()
    elif path == "/mule":
        try:
            uwsgi.register_signal(30, "mule1", lambda n: None)
            body = "registered"
        except ValueError as e:
            body = "ValueError: " + str(e)
    start_response(status, [("Content-Type", "text/plain")])
    return [body.encode()]
