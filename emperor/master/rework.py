"""Commands that act on the workers alone: the master FIFO's w, W, c, +, - and C.

uWSGI's references: core/master.c uwsgi_reload_workers (w), uwsgi_brutally_reload_workers
(W), uwsgi_chain_reload with core/master_checks.c uwsgi_master_check_chain (c),
core/master_utils.c uwsgi_cheaper_increase/decrease (+/-, applied at the cheaper tick)
and uwsgi_go_cheap (C). Here, on the generation machinery (emperor/master/generations.py):

- w: a new generation of workers from the code this master loaded (with `lazy-apps`
  each new worker imports the app again, so that is how new code is taken without a
  full reload), started while the current workers serve; those retire once every new
  worker accepts, as after a reload, so no connection waits. If a new worker dies
  before its first request (code that no longer imports), the new generation is given
  up and the current one keeps serving. (uWSGI tells every worker to finish and respawns
  each: connections wait in the backlog meanwhile.)
- W: every worker leaves at once, requests in flight are cut (uWSGI's SIGINT), and each
  slot is respawned.
- c: as uWSGI's chain: one worker finishes its requests and leaves, its slot is
  respawned, and the next goes once that replacement accepts; the others serve
  meanwhile. It stops, leaving the rest as they are, if a replacement fails to start.
- + / -: one worker more or fewer in the current generation, between `cheaper` and
  `processes`, in cheaper mode only (as uWSGI; `cheaper-algo = manual` leaves the count
  to these alone). A - while every worker is busy waits for one to be idle (retried each
  second, as uWSGI's delta goes back to the pool). uWSGI's - does not check the
  `cheaper` minimum; emperor keeps it, as its own algorithms do.
- C: every worker retires (finishing its request; uWSGI kills them) and the first
  connection brings them back (the Idle part of emperor/master/cheaper.py).
A generation restored from the snapshot runs older code than this master's: these
commands refuse it (a respawned worker would run this master's code).
"""
from __future__ import annotations

import signal
import time
from collections.abc import Callable

from emperor.config import Config
from emperor.master.cheaper import TICK, Idle
from emperor.master.generations import Generation, Workers
from emperor.master.loop import Loop, Part
from emperor.proc import signal_quietly
from emperor.sockets import Listener


class WorkerCommands:
    """What the FIFO's worker commands do; driven from its part's timers (each loop turn)."""

    def __init__(self, config: Config, workers: Workers, loop: Loop, listeners: list[Listener],
                 parts: list[Part], log: Callable[[str], None]) -> None:
        self.config = config
        self.workers = workers
        self.loop = loop
        self.listeners = listeners
        self.parts = parts
        self.log = log
        self.trial: Generation | None = None      # w: the new workers, until they all accept
        self.replaced: Generation | None = None   # w: the workers serving meanwhile
        self.give_up = False                      # w: a new worker died before serving
        self.chain_gen: Generation | None = None  # c: the generation being replaced one by one
        self.chain_left: list[int] = []                # c: its slots still to go
        self.chain_slot: tuple[int, int] | None = None   # c: (slot, pid) of the worker leaving now
        self.fewer_pending = 0                    # -: workers still to retire once idle
        self.due: float | None = None             # -: when to try again
        self.idle: Idle | None = None             # C: our own, when the file asks for no idle mode
        # A worker that dies before serving is the master's to handle, unless it is one of ours.
        self.on_failure, workers.on_failure = workers.on_failure, self._failure

    def _current(self, why: str) -> Generation | None:
        w = self.workers
        gen = w.current
        if gen is None or w.stopping:
            self.log(f"{why}: the master is stopping; ignored")
        elif w.awaiting:
            self.log(f"{why}: a generation is still starting; ignored")
        elif gen.number != w.number:
            self.log(f"{why}: generation {gen.number} was restored from the snapshot and runs older "
                     f"code than this master's; reload (r) first; ignored")
        else:
            return gen
        return None

    # ---------- w, W, c ----------
    def reload(self, why: str) -> None:
        old = self._current(why)
        if old is None:
            return
        w = self.workers
        active = len(w.active_slots(old))
        gen = w.start()
        gen.cheaped = set(range(active, len(gen.slots)))   # as many workers as serve now
        w.draining.append(old)      # serves on until generation_ready() retires it
        w.awaiting = True
        self.trial, self.replaced, self.give_up = gen, old, False
        self.chain_gen, self.chain_left, self.chain_slot = None, [], None
        w.spawn_all()
        if w.all_ready(gen):
            w.generation_ready()

    def kill(self, why: str) -> None:
        gen = self._current(why)
        if gen is None:
            return
        slots = self.workers.active_slots(gen)
        for slot in slots:
            signal_quietly(gen.slots[slot] or 0, signal.SIGINT)
        self.log(f"{why}: {len(slots)} worker(s) stopped at once; each slot is respawned")

    def chain(self, why: str) -> None:
        gen = self._current(why)
        if gen is None:
            return
        if self.chain_gen is not None:
            self.log(f"{why}: a chain reload is already running")
            return
        self.chain_gen, self.chain_left = gen, self.workers.active_slots(gen)
        self.log(f"chain reload starting: {len(self.chain_left)} worker(s), one at a time")
        self._chain_next()

    def _chain_next(self) -> None:
        gen = self.chain_gen
        while gen is not None and self.chain_left:
            slot = self.chain_left.pop(0)
            pid = gen.slots[slot]
            if pid and slot not in gen.cheaped:
                self.chain_slot = (slot, pid)
                self.log(f"chain reload: worker {slot + 1} (pid {pid}) finishes its requests and is replaced")
                signal_quietly(pid, signal.SIGTERM)
                signal_quietly(pid, signal.SIGCONT)   # after: a paused worker must wake to leave
                return
        self._chain_over("chain reload complete")

    def _chain_over(self, text: str) -> None:
        self.chain_gen, self.chain_left, self.chain_slot = None, [], None
        self.log(text)

    def _failure(self, gen: Generation, wait: float) -> None:
        if gen is self.trial and self.replaced is not None:
            self.give_up = True     # done from the timers, once the worker's exit is handled
            return
        if gen is self.chain_gen:
            self._chain_over(f"chain reload stopped: a new worker failed: {gen.last_failure}")
        self.on_failure(gen, wait)

    # ---------- +, -, C ----------
    def _cheaper(self, why: str) -> Generation | None:
        if not self.config.cheaper:
            self.log(f"{why}: not in cheaper mode (cheaper = N turns it on; cheaper-algo = manual "
                     f"leaves the count to + and -); ignored")
            return None
        return self._current(why)

    def more(self, why: str) -> None:
        gen = self._cheaper(why)
        if gen is None:
            return
        if not gen.cheaped:
            self.log(f"{why}: already {len(gen.slots)} workers (processes)")
            return
        self.fewer_pending = 0
        self.workers.decheap(gen, 1, why)

    def fewer(self, why: str) -> None:
        gen = self._cheaper(why)
        if gen is None:
            return
        floor = max(self.config.cheaper, 1)
        if len(self.workers.active_slots(gen)) - self.fewer_pending <= floor:
            self.log(f"{why}: already at the minimum ({floor} workers: cheaper)")
            return
        self.fewer_pending += 1
        self._fewer(gen, why)

    def _fewer(self, gen: Generation, why: str) -> None:
        while self.fewer_pending:
            before = len(self.workers.active_slots(gen))
            if before <= max(self.config.cheaper, 1):
                self.fewer_pending = 0
                break
            self.workers.cheap_one(gen, why)
            if len(self.workers.active_slots(gen)) == before:   # every worker busy
                if self.due is None:
                    self.log(f"{why}: every worker is busy; one retires once idle")
                self.due = time.monotonic() + TICK
                return
            self.fewer_pending -= 1
        self.due = None

    def go_cheap(self, why: str) -> None:
        if self._current(why) is None:
            return
        idle = self.idle or next((p for p in self.parts if isinstance(p, Idle)), None)
        if idle is None:   # `idle` and `cheap` unset: one of our own (no timer: it only waits)
            idle = self.idle = Idle(self.config, self.workers, self.loop, [l.fd for l in self.listeners],
                                    self.log, die=lambda: None)
        if idle.cheap:
            self.log(f"{why}: already in cheap mode")
            return
        idle.go_cheap(why)

    # ---------- driven by the part's timers ----------
    def deadline(self) -> float | None:
        return time.monotonic() if self.give_up else self.due

    def run_timers(self, now: float) -> None:
        w = self.workers
        if self.trial is not None:
            if self.give_up:
                self._abandon()
            elif not w.awaiting:
                self.log(f"workers reloaded: every new worker of generation {self.trial.number} accepts; "
                         f"the previous ones finish their requests and leave")
                self.trial = self.replaced = None
        if self.chain_slot is not None:
            gen, (slot, pid) = self.chain_gen, self.chain_slot
            if gen is None or gen is not w.current or w.stopping:
                self._chain_over("chain reload stopped: the workers were replaced meanwhile")
            elif (slot in gen.cheaped and gen.slots[slot] is None) or \
                    (gen.slots[slot] not in (None, pid) and slot in gen.ready):
                self._chain_next()
        if self.fewer_pending and self.due is not None and now >= self.due and w.current is not None:
            self._fewer(w.current, "master FIFO -")

    def _abandon(self) -> None:
        """A new worker of `w` died before its first request: the workers that serve stay."""
        w, gen, old = self.workers, self.trial, self.replaced
        assert gen is not None and old is not None
        self.trial = self.replaced = None
        self.give_up = False
        if w.current is gen:
            w.current, w.awaiting = old, False
            if old in w.draining:
                w.draining.remove(old)
            w.draining.append(gen)
            w.retire(gen)
        self.log(f"workers reload failed: {gen.last_failure}; the previous workers keep serving")
