"""Plain helpers for the tests: processes, waiting, HTTP over raw sockets, logs.

Fixtures live in tests/conftest.py (which re-exports the names it always had);
everything here is a plain function or class, importable as `support`.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
APPS = TESTS / "apps"


# ---------- applications and vassals ----------
SYSTEM_PYTHON = "/usr/bin/python3.11"   # one that another user than root can run (/root is private)
# an app that refuses to be imported as root: proves who imports it (master, preflight, worker)
NOT_AS_ROOT = "import os\nif os.getuid() == 0:\n    raise RuntimeError('imported as root')\n"

HELLO_APP = """
import os
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Gen", os.environ.get("UWSGI_RELOADS", "0")), ("X-Pid", str(os.getpid()))])
    return [b"Hello, World!"]
"""


# Pasted into the test applications: started(environ) is how a request tells the test that it
# is inside the application now. The file its X-Started header names appears, whole (written,
# then renamed into place), holding the worker's PID and the time.time() it started at.
STARTED = """
def started(environ):
    import os, time
    path = environ.get("HTTP_X_STARTED")
    if path:
        with open(path + ".tmp", "w") as f:
            f.write("%d %r\\n" % (os.getpid(), time.time()))
        os.replace(path + ".tmp", path)
"""

VERSIONED_APP = STARTED + """
import os, time
VERSION = {version!r}
def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        started(environ)
        time.sleep(float(environ["QUERY_STRING"] or 1))
    if environ["PATH_INFO"] == "/reload":
        import emperor
        emperor.reload()
    start_response("200 OK", [("X-Gen", os.environ.get("UWSGI_RELOADS", "0")), ("X-Pid", str(os.getpid()))])
    return [VERSION.encode()]
"""


def versioned_app(version: str) -> str:
    """An application answering `version`, /slow?SECONDS slowly (announcing it, see STARTED), and
    /reload by asking for one."""
    return VERSIONED_APP.format(version=version)


# The application of the emperor's vassals: its body says which vassal, generation, MARK and
# NOTIFY_SOCKET it sees and which process answers; /slow?SECONDS is slow (and announced, see
# STARTED); IMPORT_DELAY slows its import.
VASSAL_APP = STARTED + """
import os, time
time.sleep(float(os.environ.get("IMPORT_DELAY", "0")))
def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        started(environ)
        time.sleep(float(environ.get("QUERY_STRING") or 1.0))
    body = "%s gen=%s mark=%s notify=%s pid=%d" % (
        os.environ.get("VASSAL"), os.environ.get("UWSGI_RELOADS", "0"), os.environ.get("MARK", ""),
        os.environ.get("NOTIFY_SOCKET", "-"), os.getpid())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
"""


def held_import(marker: Path, go: Path) -> str:
    """Module code that announces its import (`marker` appears, whole, holding the importing PID)
    and then holds the import until `go` exists (60 s at most)."""
    return (f"import os, time\n"
            f"with open({str(marker)!r} + '.tmp', 'w') as f:\n"
            f"    f.write(str(os.getpid()))\n"
            f"os.replace({str(marker)!r} + '.tmp', {str(marker)!r})\n"
            f"deadline = time.monotonic() + 60\n"
            f"while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:\n"
            f"    time.sleep(0.01)\n")


def vassal_ini(port: int, appdir: Path, extra: str = "") -> str:
    """A vassal file serving appdir's wsgiapp (VASSAL_APP) on 127.0.0.1:port, `extra` lines appended."""
    return (f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {appdir}\nmodule = wsgiapp:application\n"
            f"env = VASSAL=%n\n" + textwrap.dedent(extra))


def serving(emperor_proc, name: str, port: int, appdir: Path, extra: str = "", timeout: float = 20.0) -> Path:
    """Write vassal `name` (vassal_ini) into a running emperor's directory; return its path once it answers."""
    path = emperor_proc.dir / name
    path.write_text(vassal_ini(port, appdir, extra))
    body_when(port, lambda b: b.startswith(name[:-4] + " "), timeout)
    return path


def three_vassals(base: Path) -> int:
    """base/vassals.d with good.ini (healthy, 2 workers), bad.ini (config error) and crash.ini (its
    application raises at import: a crash loop), their code in base/app; returns good.ini's port."""
    d = base / "vassals.d"
    d.mkdir()
    app = base / "app"
    app.mkdir()
    (app / "wsgiapp.py").write_text(VASSAL_APP)
    (app / "crashapp.py").write_text("raise RuntimeError('broken at import')\n")
    port = free_port()
    (d / "good.ini").write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {app}\n"
                                f"module = wsgiapp:application\nprocesses = 2\nthreads = 1\n")
    (d / "bad.ini").write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nprocesses = four\n"
                               f"module = wsgiapp:application\n")   # one problem: every one is reported
    (d / "crash.ini").write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nchdir = {app}\n"
                                 f"module = crashapp:application\n")
    return port


# uWSGI's stats document: what uwsgitop needs at the top and in each worker
STATS_TOP_KEYS = ["version", "listen_queue", "listen_queue_errors", "load", "pid", "uid", "gid", "cwd",
                  "sockets", "workers"]
STATS_WORKER_KEYS = ["id", "pid", "accepting", "requests", "delta_requests", "exceptions", "harakiri_count",
                     "signals", "status", "rss", "vsz", "running_time", "last_spawn", "respawn_count", "tx",
                     "avg_rt", "apps", "cores"]

# A master's code that floods the emperor channel (its EMPEROR_CHANNEL descriptor): 50 MB without
# a newline with env FLOOD=bytes, else 1,600 descriptors (tests/test_emperor_reliability.py,
# tests/test_emperor_exhaustion.py); put it before an app.
CHANNEL_FLOOD = """
import os, socket
fd = int(os.environ["EMPEROR_CHANNEL"])
sock = socket.socket(fileno=os.dup(fd))
if os.environ.get("FLOOD") == "bytes":
    sock.sendall(b"x" * (50 << 20))        # no newline, ever
else:
    r, w = os.pipe()
    for _ in range(400):
        socket.send_fds(sock, [b" "], [r, w, r, w])
"""


# ---------- waiting ----------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # polling interval
    raise TimeoutError(f"nothing listens on {host}:{port}")


def text_now(path) -> str:
    """The file's text, "" while it does not exist: a rotated log file is missing for the
    instant between the rename and the reopen (uWSGI's rotation has the same instant), and a
    test polling it must read that as "not yet", not fail."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return ""


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    """The first truthy value of predicate(), polled; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)  # polling interval
    raise TimeoutError(f"condition not met within {timeout}s")


# ---------- processes, from /proc ----------
def children(pid: int) -> list[int]:
    """The live direct children of pid (all its threads'), sorted; [] if it is gone."""
    kids: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids |= {int(x) for x in f.read().split()}
        except OSError:
            pass
    return sorted(kids)


def descendants(pid: int) -> list[int]:
    """All live descendants of pid, from /proc (children files)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            out += kids
            todo += kids
    return out


def cpu_ticks(pid: int) -> int:
    """utime + stime of pid, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    return cpu_ticks(pid) / os.sysconf("SC_CLK_TCK")


def read_stats(port: int, timeout: float = 5.0) -> dict:
    """The stats server's JSON document (it sends it and closes)."""
    import json

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def alive(pid: int) -> bool:
    """pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_tree(pid: int) -> None:
    """Freeze the root first so it cannot respawn what is killed next, then kill all."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    for p in [pid] + descendants(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Proc:
    """A process under test: its output goes to a file the test can read."""

    def __init__(self, argv: list[str], cwd: Path, env: dict | None = None, log: Path | None = None):
        self.log_path = log or cwd / "proc.log"
        self._log = open(self.log_path, "ab")
        e = dict(os.environ)
        extra = (env or {}).get("PYTHONPATH")
        e.update(env or {})
        if env is not None and "PYTHONPATH" in env and extra is None:
            e.pop("PYTHONPATH")  # {"PYTHONPATH": None}: only what the interpreter itself finds
        else:
            e["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, str(ROOT), os.environ.get("PYTHONPATH")]))
        self.popen = subprocess.Popen(argv, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, env=e)
        self.pid = self.popen.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> str:
        wait_for(lambda: self.log.count(text) >= count, timeout)
        return self.log

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 10.0) -> int:
        return self.popen.wait(timeout)

    def kill(self) -> None:
        kill_tree(self.pid)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 30.0
            ) -> subprocess.CompletedProcess:
    """`python -m emperor *args` run to its end from cwd, its output captured as text, with this
    checkout on PYTHONPATH, an 80x24 terminal size in COLUMNS/LINES, and `env` on top."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="80", LINES="24", **(env or {}))
    return subprocess.run([sys.executable, "-m", "emperor", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


# What `emperor status` and `emperor health` say when the emperor did not answer within their own
# 2-3 s; on a loaded machine a running emperor can take that long.
NO_ANSWER = ("(no answer on ", "the emperor does not answer on ")


def ask_cli(*args: str, cwd: Path = ROOT, tries: int = 3, **kw) -> subprocess.CompletedProcess:
    """run_cli for a question to a running emperor: asked again (up to `tries` times in all) when
    the command line gave up waiting for its answer. Not for commands that change something."""
    for _ in range(tries):
        r = run_cli(*args, cwd=cwd, **kw)
        if not any(m in r.stderr for m in NO_ANSWER):
            break
    return r


def write_vassal(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


@contextmanager
def running_master(directory: Path, body: str, http_port: int, name: str = "app.ini",
                   app: str = "probe.py"):
    """A master serving tests/apps/<app> with `body` extra ini lines; killed by PID afterwards
    (for module-scoped fixtures, which cannot use the function-scoped `procs`)."""
    ini = directory / name
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{http_port}\nwsgi-file = {APPS / app}\n"
                   f"env = MARK_DIR={directory}\n" + body)
    p = Proc([sys.executable, "-m", "emperor", "master", str(ini)], directory,
             log=directory / "master.log")
    try:
        p.wait_log("running (workers ready)", timeout=30)
        p.port = http_port
        p.dir = directory
        yield p
    finally:
        p.kill()  # frozen first: killed workers are not respawned behind our back


def tool(name: str) -> str | None:
    """A console script from the active environment (a venv's bin/) or PATH."""
    for d in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which(name)


class Tmux:
    """A private tmux server (its own socket), one window `t` of width x height running `command`
    (a shell by default) in cwd. kill() kills the server and what runs in it, by PID."""

    def __init__(self, cwd: Path, width: int = 80, height: int = 24, command: str = "bash --norc --noprofile") -> None:
        self.sock = f"emperor-test-{uuid.uuid4().hex[:8]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
        # "$EMPEROR" is the command: a typed line as long wherever the clone is (a line of exactly
        # the terminal's width would make capture-pane -J join the next one onto it)
        env.update(PYTHONPATH=str(ROOT), LANG="C.UTF-8", EMPEROR=f"{sys.executable} -m emperor")
        self.run("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height),
                 "-c", str(cwd), command, env=env)
        self.pid = int(self.run("display-message", "-p", "#{pid}").strip())

    def run(self, *args: str, env=None) -> str:
        return subprocess.run(["tmux", "-u", "-L", self.sock, *args], env=env, capture_output=True,
                              text=True, timeout=10, check=True).stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-J", "-t", "t")

    def show(self, what: str) -> str:
        return self.run("display-message", "-p", "-t", "t", what).strip()

    def kill(self) -> None:
        kill_tree(self.pid)
        path = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / self.sock
        path.unlink(missing_ok=True)


# ---------- applications written for uWSGI (tests/test_api_*.py) ----------
def uwsgi_master(procs, tmp_path: Path, test: str = "", body: str = "", processes: int = 2):
    """A master serving tests/apps/uwsgi_app.py; the Proc gets .port, .marks, .ini."""
    port = free_port()
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {APPS}\nmodule = uwsgi_app\n"
                   f"processes = {processes}\nenv = MARK_DIR={marks}\nenv = UWSGI_TEST={test}\n" + body)
    p = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    p.wait_log("running (workers ready)", timeout=30)
    p.port, p.marks, p.ini = port, marks, ini
    return p


def marker_lines(directory: Path, name: str) -> list[list[str]]:
    """The lines of marker file `name` a test app writes in `directory`, split into words."""
    path = directory / name
    return [l.split() for l in path.read_text().splitlines()] if path.exists() else []


def mark_lines(p, name: str) -> list[list[str]]:
    """marker_lines of a uwsgi_master's MARK_DIR."""
    return marker_lines(p.marks, name)


def fd_targets(pid: int) -> list[str]:
    """What each of the process's descriptors points to (/proc/PID/fd), one entry each."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass   # closed meanwhile (the listing's own descriptor)
    return out


# ---------- users made for a test ----------
_USERS: list[str] = []


def temp_user(prefix: str):
    """A new system user (a random name: a leftover of a killed run never collides). Deleted by
    delete_temp_users() at the end of the session, once every process it ran is gone: userdel
    refuses while one still is, and a fixture's teardown can come before its processes die."""
    import pwd

    name = f"{prefix}{os.urandom(3).hex()}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=10)
    _USERS.append(name)
    return pwd.getpwnam(name)


def delete_temp_users() -> None:
    for name in _USERS:
        subprocess.run(["userdel", name], capture_output=True, timeout=10)
    _USERS.clear()


# ---------- logs ----------
PACKAGE = ROOT / "emperor"
_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+', re.M)


def our_frames(log: str) -> list[str]:
    """Traceback lines of `log` in a module of the emperor package (this checkout's, an installed
    or copied one: any path ending in /emperor/<a module of ours>)."""
    found = []
    for m in _FRAME.finditer(log):
        parts = m.group(1).split("/emperor/")
        if any((PACKAGE / "/".join(parts[i:])).is_file() for i in range(1, len(parts))):
            found.append(m.group(0).strip())
    return found


def assert_no_traceback_of_ours(log: str) -> None:
    """No Python traceback passes through the emperor package: what it reports, it reports in a line."""
    frames = our_frames(log)
    assert not frames, "a traceback through the emperor package:\n" + "\n".join(frames)


def log_lines(log: str, text: str) -> list[str]:
    """The lines of `log` that contain `text`, in order."""
    return [line for line in log.splitlines() if text in line]


def stamp(line: str) -> float:
    """The time a log line was written (its `YYYY-MM-DD HH:MM:SS.mmm` prefix), as time.time()."""
    return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000


# ---------- systemd's notify socket ----------
class FakeSystemd:
    """An AF_UNIX datagram socket that collects what the emperor sends."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def wait(self, key: str, value: str = "1", timeout: float = 30.0, count: int = 1) -> dict[str, str]:
        def found():
            self._drain()
            hits = [m for _, m in self.messages if m.get(key) == value]
            return hits[count - 1] if len(hits) >= count else None
        try:
            return wait_for(found, timeout, interval=0.01)
        except TimeoutError:
            raise TimeoutError(f"no {key}={value} (#{count}) in {self.messages}") from None

    def keys(self) -> list[str]:
        self._drain()
        return [k for _, m in self.messages for k in m if k != "STATUS"]

    def close(self) -> None:
        self.sock.close()


# ---------- HTTP over raw sockets ----------
class Closed(EOFError, ConnectionError):
    """The server closed the connection before a whole response."""


class Response:
    def __init__(self, status: int, reason: str, version: str, headers: list[tuple[str, str]],
                 body: bytes, raw_head: bytes) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.body = body
        self.raw_head = raw_head

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    @property
    def text(self) -> str:
        return self.body.decode()

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers} {self.body[:80]!r}>"


class Client:
    """One connection; `send` raw bytes, `response()` parses the next response."""

    def __init__(self, port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            if not self._more():
                raise Closed(f"connection closed with {len(self.buf)} of {n} bytes")

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._more():
                raise Closed("connection closed mid-line")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def response(self, head: bool = False) -> Response:
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                raise Closed(f"connection closed before a response head: {self.buf!r}")
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.split(b"\r\n")
        version, status, reason = lines[0].decode("latin-1").split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        resp = Response(int(status), reason, version, headers, b"", raw + b"\r\n\r\n")
        if head or resp.status in (204, 304) or resp.status < 200:
            return resp
        te = resp.header("Transfer-Encoding")
        cl = resp.header("Content-Length")
        if te is not None:
            assert te == "chunked", te
            parts = []
            while True:
                size = int(self._line(), 16)
                if size == 0:
                    assert self._line() == b""
                    break
                self._need(size + 2)
                parts.append(self.buf[:size])
                assert self.buf[size:size + 2] == b"\r\n"
                self.buf = self.buf[size + 2:]
            resp.body = b"".join(parts)
        elif cl is not None:
            n = int(cl)
            self._need(n)
            resp.body, self.buf = self.buf[:n], self.buf[n:]
        else:
            while self._more():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed(self, timeout: float = 10.0) -> bool:
        """True if the server closes the connection (EOF or reset) within `timeout` with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        if data:
            self.buf += data
            return False
        return True

    def rest(self) -> bytes:
        """Everything until the server closes."""
        try:
            while self._more():
                pass
        except ConnectionResetError:
            pass
        out, self.buf = self.buf, b""
        return out

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def get_request(path: str, host: str = "t", version: str = "HTTP/1.1", extra: str = "") -> bytes:
    """The bytes of a GET request, for a Client to send."""
    return f"GET {path} {version}\r\nHost: {host}\r\n{extra}\r\n".encode()


def one(port: int, data: bytes, head: bool = False, timeout: float = 10.0) -> tuple[Response, bool]:
    """Send `data` on a fresh connection: (first response, whether the server then closed)."""
    with Client(port, timeout) as c:
        c.send(data)
        r = c.response(head=head)
        return r, c.closed(timeout)


def http_request(port: int, method: str, path: str = "/", body=b"", headers: dict | None = None,
                 timeout: float = 10.0, chunked: bool = False, expect: int | None = None,
                 host: str = "127.0.0.1") -> Response:
    """One request on a fresh connection (`Connection: close`), its response read whole (Closed
    if the server hangs up first), then the connection until the server closes it: by then the
    server has done all it does for the request (counted it, for one). `body` is bytes, or with
    `chunked` an iterable of bytes sent chunk by chunk. With `expect`, the status must be that."""
    body = b"" if body is None else body
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        data = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in body if p) + b"0\r\n\r\n"
    else:
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}")
        data = body
    with Client(port, timeout, host) as c:
        c.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
        r = c.response(head=method == "HEAD")
        extra = c.rest()
    assert not extra, f"more than one response: {extra[:200]!r}"
    if expect is not None:
        assert r.status == expect, r
    return r


def http_get(port: int, path: str = "/", headers: dict | None = None, timeout: float = 10.0,
             expect: int | None = None) -> Response:
    """GET `path` on a fresh connection: the Response (status, headers, body, .text)."""
    return http_request(port, "GET", path, headers=headers, timeout=timeout, expect=expect)


def answers(port: int) -> bool:
    """Something on port answers a GET with 200."""
    try:
        return http_get(port, timeout=2).status == 200
    except (OSError, ValueError):
        return False


def refuses(port: int) -> bool:
    """Nothing listens on port: a connection is refused."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def body_when(port: int, predicate=lambda body: True, timeout: float = 10.0, path: str = "/") -> str:
    """The first body of a 200 answer that satisfies predicate, polled (connection errors retried)."""
    def attempt():
        try:
            r = http_get(port, path, timeout=2)
        except (OSError, ValueError):
            return None
        return r.text if r.status == 200 and predicate(r.text) else None
    return wait_for(attempt, timeout)


class InFlight:
    """GET `path` from a thread, its X-Started header naming `marker`. Constructing it returns once
    the application has the request (the marker exists, see STARTED): the request is in flight.
    result() joins the thread and returns the Response or raises what the request raised."""

    def __init__(self, port: int, path: str, marker: Path, timeout: float = 30.0) -> None:
        self.marker = marker
        self.response: Response | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._send, args=(port, path, timeout), daemon=True)
        self.thread.start()
        wait_for(lambda: marker.exists() or not self.thread.is_alive(), timeout)
        if not marker.exists():
            raise AssertionError(f"GET {path} never reached the application: {self.error or self.response}")

    def _send(self, port: int, path: str, timeout: float) -> None:
        try:
            self.response = http_get(port, path, headers={"X-Started": str(self.marker)}, timeout=timeout)
        except BaseException as e:  # noqa: B036  (handed to the test by result())
            self.error = e

    @property
    def started_at(self) -> float:
        """When the application started on it (time.time(), written by the worker)."""
        return float(self.marker.read_text().split()[1])

    def done(self, timeout: float = 30.0) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def result(self, timeout: float = 30.0) -> Response:
        assert self.done(timeout), "the request is still running"
        if self.error is not None:
            raise self.error
        assert self.response is not None
        return self.response


# ---------- emperors of the command-line tests (tests/test_cli_*.py) ----------
CLI_APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def vassals(directory: Path, *names: str, port: int | None = None) -> dict[str, int]:
    """Vassal files serving a hello app, each on its own port (or all on `port`)."""
    directory.mkdir(parents=True, exist_ok=True)
    app = directory.parent / "app"
    app.mkdir(exist_ok=True)
    (app / "hello.py").write_text(textwrap.dedent(CLI_APP))
    ports = {}
    for name in names:
        ports[name] = port or free_port()
        (directory / name).write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{ports[name]}\nchdir = {app}\n"
                                      "module = hello:application\nprocesses = 1\n")
    return ports


def start_emperor(procs, cwd: Path, *args: str, running: tuple[str, ...] = (), env: dict | None = None,
                  log: str = "emperor.log") -> Proc:
    e = procs([sys.executable, "-m", "emperor", "run", *args], cwd, env=env, log=cwd / log)
    for name in running:
        e.wait_log(f"{name}: starting -> running", timeout=20)
    return e


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 15) -> subprocess.CompletedProcess:
    """`python -m emperor ARGS` in an 80x24 terminal's environment."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="80", LINES="24")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "emperor", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


def worker_pids(master_pid: int) -> set[int]:
    """The master's direct children (its workers, and its parts' children), from /proc."""
    kids: set[int] = set()
    try:
        for t in Path(f"/proc/{master_pid}/task").iterdir():
            kids |= {int(x) for x in (t / "children").read_text().split()}
    except OSError:
        pass
    return kids


# ---------- nginx in front (tests/test_worker_behind_nginx.py, tests/test_snapshot.py) ----------
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
     if os.access(p, os.X_OK)), None)

# The stock params, for systems whose nginx ships none (Debian's is preferred).
UWSGI_PARAMS = """
uwsgi_param  QUERY_STRING       $query_string;
uwsgi_param  REQUEST_METHOD     $request_method;
uwsgi_param  CONTENT_TYPE       $content_type;
uwsgi_param  CONTENT_LENGTH     $content_length;
uwsgi_param  REQUEST_URI        $request_uri;
uwsgi_param  PATH_INFO          $document_uri;
uwsgi_param  DOCUMENT_ROOT      $document_root;
uwsgi_param  SERVER_PROTOCOL    $server_protocol;
uwsgi_param  REQUEST_SCHEME     $scheme;
uwsgi_param  HTTPS              $https if_not_empty;
uwsgi_param  REMOTE_ADDR        $remote_addr;
uwsgi_param  REMOTE_PORT        $remote_port;
uwsgi_param  SERVER_PORT        $server_port;
uwsgi_param  SERVER_NAME        $server_name;
"""


def nginx_conf(prefix: Path, port: int, upstream_port: int, mode: str = "uwsgi", keepalive: int = 8) -> str:
    """An nginx.conf in `prefix`: uwsgi_pass to upstream_port, or (mode "proxy-keepalive") proxy_pass
    over `keepalive` pooled HTTP/1.1 upstream connections, as the README recommends."""
    params = Path("/etc/nginx/uwsgi_params")  # Debian's, as deployments include it
    if not params.is_file():
        params = prefix / "uwsgi_params"
        params.write_text(UWSGI_PARAMS)
    user = "user root;" if os.geteuid() == 0 else ""
    temps = "\n".join(f"    {kind}_temp_path {prefix}/tmp/{kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    upstream = ""
    location = f"include {params};\n                    uwsgi_pass 127.0.0.1:{upstream_port};"
    if mode == "proxy-keepalive":  # what the README recommends: pooled HTTP/1.1 upstream connections
        upstream = (f"upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive {keepalive}; "
                    f"keepalive_timeout 3s; }}")
        location = 'proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";'
    return textwrap.dedent(f"""\
        {user}
        worker_processes 1;
        events {{ worker_connections 128; }}
        http {{
            access_log off;
        {temps}
            client_max_body_size 16m;
            {upstream}
            server {{
                listen 127.0.0.1:{port};
                server_name localhost;
                location / {{
                    {location}
                    uwsgi_read_timeout 20s;
                }}
            }}
        }}
        """)


def stop_nginx(pid: int) -> None:
    """SIGKILL nginx's master first, then its workers.

    Killing the workers first (as conftest.kill_tree does) races with the master,
    which respawns a worker that then outlives it.
    """
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    kids = descendants(pid)
    for p in [pid] + kids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
