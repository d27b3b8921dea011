"""A worker's epoll loop (emperor/worker/core.py), driven in this process with the real kernel."""
from __future__ import annotations

import os
import socket
import threading

from support import wait_for


def test_an_exclusive_wakeup_strands_a_connection_until_listeners_are_re_added(tmp_path):
    """Why a retiring worker has every worker woken: with EPOLLEXCLUSIVE the kernel tells one
    sleeping epoll of a new connection. If that worker stops accepting without taking it, the
    others never hear of it, until they re-add their listeners (what a WAKE order makes them do).
    Two real worker loops (`Core`) in this process, one listening socket, the real kernel."""
    from emperor import sockets
    from emperor.config import load_config
    from emperor.wire.scoreboard import Scoreboard
    from emperor.worker.core import Core
    from emperor.states import WorkerState
    from emperor.worker.process import Worker

    (tmp_path / "a.ini").write_text("[uwsgi]\nhttp-socket = 127.0.0.1:0\nmodule = x\n")
    config = load_config(str(tmp_path / "a.ini"))
    listener = sockets.bind(sockets.HTTP, "127.0.0.1:0", 16)
    listener.sock.setblocking(False)

    def idle_worker() -> Core:
        w = Worker(config=config, slot=0, listeners=[listener], app=None, board=Scoreboard(1, 1),
                   notify_fd=-1, load_app=lambda: None)
        w.master_pid = os.getpid()  # its SIGWINCH comes to us: ignored by default
        c = Core(w, 0, os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)[0])
        c.apply_orders()  # accepting: the listener is in its epoll
        return c

    cores = [idle_worker(), idle_worker()]
    woken: dict[int, list] = {}
    tids: list[int] = []

    def sleep_in_epoll(i: int) -> None:
        tids.append(threading.get_native_id())
        woken[i] = cores[i].ep.poll(1.0)

    threads = [threading.Thread(target=sleep_in_epoll, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    wait_for(lambda: len(tids) == 2 and all(_in_epoll_wait(t) for t in tids))
    client = socket.create_connection(listener.sock.getsockname()[:2], timeout=5)
    for t in threads:
        t.join(5)
    told = [i for i in (0, 1) if woken[i]]
    assert len(told) == 1, woken                 # one epoll was told, the other slept on
    first, other = cores[told[0]], cores[1 - told[0]]
    first.worker.life.to(WorkerState.RETIRING, "test")  # it retires without accepting
    first.apply_orders()
    assert not first.accepting
    assert other.ep.poll(0.3) == []              # stranded: the other loop never hears of it
    other.worker.wakes += 1                      # a WAKE order
    other.apply_orders()
    assert [fd for fd, _ in other.ep.poll(0)] == [listener.fd]
    client.close()
    for c in cores:
        c.ep.close()
    listener.sock.close()


def _in_epoll_wait(tid: int) -> bool:
    with open(f"/proc/self/task/{tid}/wchan") as f:
        return "epoll" in f.read()  # do_epoll_wait (ep_poll on older kernels)
