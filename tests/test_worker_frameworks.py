"""Django and Flask applications run unchanged under a master (issue 2)."""
from __future__ import annotations

import json
import sys

import pytest

from support import ROOT, free_port, http_request

APPS = ROOT / "tests" / "apps"


def start(procs, tmp_path, body: str):
    port = free_port()
    ini = tmp_path / "site.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nprocesses = 2\n" + body)
    p = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    p.wait_log("running (workers ready)", timeout=20)
    return port


def test_django_project_runs_unchanged(procs, tmp_path):
    pytest.importorskip("django")
    port = start(procs, tmp_path, f"chdir = {APPS}/djangosite\nmodule = mysite.wsgi:application\n"
                                  "env = DJANGO_SETTINGS_MODULE=mysite.settings\nenv = MYSITE_FLAVOUR=vanilla\n")
    r = http_request(port, "GET", "/")
    assert r.status == 200 and r.body == b"django says hi"
    r = http_request(port, "POST", "/echo/?a=1&b=two", body=b"payload=x", headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Custom": "yes"})
    doc = json.loads(r.body)
    assert doc == {"method": "POST", "path": "/echo/", "query": {"a": "1", "b": "two"},
                   "body": "payload=x", "header": "yes", "env": "vanilla"}
    r = http_request(port, "GET", "/missing")
    assert r.status == 404


def test_flask_app_runs_unchanged(procs, tmp_path):
    pytest.importorskip("flask")
    port = start(procs, tmp_path, f"pythonpath = {APPS}/flaskapp\nmodule = app\ncallable = app\n")
    r = http_request(port, "GET", "/")
    assert r.body == b"flask says hi"
    r = http_request(port, "POST", "/items/7?x=y", body=json.dumps({"k": [1, 2]}).encode(),
                      headers={"Content-Type": "application/json"})
    assert json.loads(r.body) == {"item": 7, "data": {"k": [1, 2]}, "args": {"x": "y"}}
    r = http_request(port, "GET", "/stream")
    assert r.body == b"part0\npart1\npart2\n"
