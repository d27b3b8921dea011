"""A request that waits 20 ms (a database call, say): what makes more workers worth having."""
import time


def application(environ, start_response):
    time.sleep(0.02)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]
