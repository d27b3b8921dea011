"""`spooler-import` for tests/apps/apiextra.py (tests/test_api_more.py): imported in each
spooler process only; its @spool function is what a task naming `imported` runs."""
import os

import uwsgi
from uwsgidecorators import spool

MARK_DIR = os.environ["MARK_DIR"]


def _mark(name, *values):
    fd = os.open(os.path.join(MARK_DIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(str(v) for v in values) + "\n").encode())
    finally:
        os.close(fd)


_mark("loaded", os.getpid(), uwsgi.i_am_the_spooler())


@spool
def imported(args):
    _mark("imported", args["id"], os.getpid(), uwsgi.i_am_the_spooler())
    return uwsgi.SPOOL_OK    # a raw uwsgi.spool() task has no ud_spool_ret: the result counts
