#!/usr/bin/env python3
"""Request-head parsing: emperor's own parser against httptools and h11.

For three realistic heads (a curl GET, a browser GET with a dozen headers, a
JSON POST with its body), the time per request of

  emperor    find_head + parse_head: the head found in the buffer, validated
             and turned into a complete WSGI environ (what the worker uses);
  httptools  HttpRequestParser.feed_data with callbacks collecting URL and
             headers (one parser reused, as a server does per connection);
             also "+ environ": the same, then the WSGI environ built from them;
  h11        a new h11.Connection per request, receive_data + next_event until
             the Request (and, for the POST, the Data/EndOfMessage) events.

Each head is timed three ways: "repeated" feeds the same bytes every time (a
keep-alive client repeating itself: emperor's line memo tables always hit);
"new target" cycles through 5000 variants whose request line differs (another
URL each time, the headers repeated: a typical client); "all lines unique"
cycles through 5000 variants in which every line differs (request target and
header values), so the memo tables miss, fill and are emptied: the worst case.
Median of 7 interleaved repeats of timeit, in µs per request, and ratios to emperor.
httptools and h11 come from the benchmark venv (see bench_serve.py); when the
running interpreter lacks them the script re-executes itself there.

    python scripts/bench_parser.py
"""
from __future__ import annotations

import os
import statistics
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    import h11
    import httptools
except ImportError:
    if os.environ.get("_EMPEROR_BENCH_REEXEC"):
        raise
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_serve import DEFAULT_VENV, ensure_venv

    bindir = ensure_venv(DEFAULT_VENV)
    env = dict(os.environ, _EMPEROR_BENCH_REEXEC="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    os.execve(str(bindir / "python"), [str(bindir / "python"), __file__, *sys.argv[1:]], env)

import subprocess  # noqa: E402

from emperor.worker.protocols.http import find_head, parse_head  # noqa: E402
from emperor.worker.wsgi import base_environ  # noqa: E402

CURL = (b"GET /api/items?id=42&sort=name HTTP/1.1\r\n"
        b"Host: localhost:8000\r\n"
        b"User-Agent: curl/7.88.1\r\n"
        b"Accept: */*\r\n"
        b"\r\n")

BROWSER = (b"GET /static/css/site.css?v=3 HTTP/1.1\r\n"
           b"Host: www.example.org\r\n"
           b"Connection: keep-alive\r\n"
           b'sec-ch-ua: "Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"\r\n'
           b"sec-ch-ua-mobile: ?0\r\n"
           b'sec-ch-ua-platform: "Linux"\r\n'
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
           b"Chrome/124.0.0.0 Safari/537.36\r\n"
           b"Accept: text/css,*/*;q=0.1\r\n"
           b"Sec-Fetch-Site: same-origin\r\n"
           b"Sec-Fetch-Mode: no-cors\r\n"
           b"Sec-Fetch-Dest: style\r\n"
           b"Referer: https://www.example.org/articles/2024/05/hello-world\r\n"
           b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
           b"Accept-Language: en-GB,en;q=0.9,fr;q=0.8\r\n"
           b"Cookie: sessionid=8f2b1c0e9a7d4e3f; csrftoken=Zq1xW2ec3rV4tb5yN6um7; theme=dark\r\n"
           b"\r\n")

_BODY = (b'{"title": "A new item", "tags": ["red", "green", "blue"], "price": 12.5, '
         b'"description": "Something long enough to look like a real form post, with some text."}')
POST = (b"POST /api/v1/items HTTP/1.1\r\n"
        b"Host: api.example.org\r\n"
        b"User-Agent: python-requests/2.31.0\r\n"
        b"Accept-Encoding: gzip, deflate\r\n"
        b"Accept: application/json\r\n"
        b"Connection: keep-alive\r\n"
        b"Content-Type: application/json\r\n"
        b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl\r\n"
        b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n"
        b"\r\n" + _BODY)

HEADS = {"curl GET (3 headers)": CURL, "browser GET (14 headers)": BROWSER,
         f"POST JSON (8 headers, {len(_BODY)} B body)": POST}
BASE = base_environ("127.0.0.1", "8000", False)


def emperor_parse(data: bytes) -> dict:
    end = find_head(data, 4096)
    h = parse_head(data[:end], BASE)
    data[end:end + h.length]  # the body slice a server takes
    return h.environ


class _Proto:
    """httptools callbacks: the minimum a server collects."""

    __slots__ = ("url", "headers", "body", "done")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list = []
        self.body: list = []
        self.done = False

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


def make_httptools():
    proto = _Proto()
    parser = httptools.HttpRequestParser(proto)

    def parse(data: bytes):
        parser.feed_data(data)
        assert proto.done
        return parser.get_method(), proto.url, proto.headers

    def parse_environ(data: bytes) -> dict:
        parser.feed_data(data)
        url = httptools.parse_url(proto.url)
        environ = BASE.copy()
        environ["REQUEST_METHOD"] = parser.get_method().decode("ascii")
        environ["SERVER_PROTOCOL"] = "HTTP/" + parser.get_http_version()
        environ["REQUEST_URI"] = proto.url.decode("latin-1")
        environ["PATH_INFO"] = url.path.decode("latin-1")
        environ["QUERY_STRING"] = (url.query or b"").decode("latin-1")
        for name, value in proto.headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            v = value.decode("latin-1")
            if key in environ:
                v = environ[key] + "," + v
            environ[key] = v
        parser.should_keep_alive()
        return environ

    return parse, parse_environ


def h11_parse(data: bytes):
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    req = conn.next_event()
    assert type(req) is h11.Request, req
    ev = conn.next_event()
    while type(ev) is h11.Data:
        ev = conn.next_event()
    return req


def variants(head: bytes, n: int = 5000, headers_too: bool = True) -> list[bytes]:
    """n copies of `head` whose request line (and, with headers_too, every line) differs."""
    text, _, body = head.partition(b"\r\n\r\n")
    first, *headers = text.split(b"\r\n")
    out = []
    for i in range(n):
        method, target, version = first.split(b" ")
        sep = b"&" if b"?" in target else b"?"
        lines = [b" ".join([method, target + sep + b"r=%d" % i, version])]
        for h in headers:
            name, _, value = h.partition(b": ")
            low = name.lower()
            if low == b"content-length" or not headers_too:
                lines.append(h)
            elif low == b"host":
                lines.append(name + b": h%d." % i + value)
            else:
                lines.append(name + b": " + value + b" %d" % i)
        out.append(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    return out


class Feed:
    """Call fn on the same bytes (repeated) or on the next of many variants (unique)."""

    def __init__(self, fn, datas: list[bytes]) -> None:
        self.fn, self.datas, self.i = fn, datas, 0

    def __call__(self):
        d = self.datas
        i = self.i
        self.i = i + 1 if i + 1 < len(d) else 0
        return self.fn(d[i])


def calibrate(call, target: float) -> int:
    n, t = timeit.Timer(call).autorange()
    return max(1, int(n * target / t))


def h11_new_connection(data: bytes):
    return h11.Connection(h11.SERVER)


def main() -> int:
    ht_parse, ht_environ = make_httptools()
    for data in HEADS.values():  # all agree on what they saw
        env = emperor_parse(data)
        assert ht_environ(data)["PATH_INFO"] == env["PATH_INFO"]
        assert h11_parse(data).target.decode() == env["REQUEST_URI"]
    contenders = [("emperor find_head+parse_head (-> environ)", emperor_parse),
                  ("httptools (callbacks only)", ht_parse),
                  ("httptools + environ", ht_environ),
                  ("h11 (new Connection per request)", h11_parse)]
    repeat, target = 7, 0.1
    kinds = {"repeated": lambda h: [h], "new target": lambda h: variants(h, headers_too=False),
             "all lines unique": variants}
    datas = {f"{n}, {k}": make(h) for n, h in HEADS.items() for k, make in kinds.items()}
    for vs in datas.values():  # the variants are valid requests for everyone
        for v in vs[:3]:
            for _, fn in contenders:
                fn(v)
    names = list(datas)
    feeds = {(label, n): Feed(fn, datas[n]) for label, fn in contenders for n in names}
    cells = list(feeds)
    number = {c: calibrate(feeds[c], target) for c in cells}
    samples: dict = {c: [] for c in cells}
    for r in range(repeat):  # interleaved: every repeat times every cell once, in rotating order
        k = r * 5 % len(cells)
        for c in cells[k:] + cells[:k]:
            num = number[c]
            samples[c].append(timeit.Timer(feeds[c]).timeit(num) / num * 1e6)
    rows = {label: [statistics.median(samples[(label, n)]) for n in names] for label, _ in contenders}
    ctor = statistics.median(timeit.Timer(lambda: h11_new_connection(b"")).repeat(repeat, 20000)) / 20000 * 1e6
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    print(f"emperor {rev}, Python {sys.version.split()[0]}, httptools {httptools.__version__}, h11 {h11.__version__}; "
          f"median of {repeat} interleaved repeats, µs per request (lower is better)\n")
    labels = [label for label, _ in contenders]
    print("| head, traffic | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for k, n in enumerate(names):
        b = rows[labels[0]][k]
        cells = [f"{b:.2f}"] + [f"{rows[l][k]:.2f} ({rows[l][k] / b:.2f}×)" for l in labels[1:]]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print(f"\n(ratios: this ÷ emperor, <1 means faster than emperor. "
          f"h11.Connection() alone costs {ctor:.2f} µs of the h11 figures; "
          "'callbacks only' builds no environ, so it is a lower bound for a server using httptools.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
