"""The bundled sample application: plain WSGI, no dependencies."""
import os


def application(environ, start_response):
    if environ["PATH_INFO"] == "/reload":
        import emperor

        emperor.reload()
        body = b"reloading\n"
    else:
        body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Generation", os.environ.get("UWSGI_RELOADS", "0"))])
    return [body]
