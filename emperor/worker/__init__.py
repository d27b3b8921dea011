"""The worker process: accepts connections and serves the WSGI application.

`process` holds its signal table (orders from the master); `core` the epoll
loop of each thread; `protocols` and `wsgi` the request and response side.
"""
