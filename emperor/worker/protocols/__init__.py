"""Wire protocols a worker speaks: HTTP/1.x and the uwsgi binary protocol."""
