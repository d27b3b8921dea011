"""Adaptive workers (`cheaper`): between `cheaper` and `processes` workers, by load.

uWSGI's algorithms (Cheaper doc; core/master_utils.c, plugins/cheaper_busyness),
each deciding once per tick (uWSGI's master cycle: one second) from what the
scoreboard and the kernel say: which workers are busy, their running time, the
listen queue. `spare` (the default) adds workers after `cheaper-overload` ticks
with every worker busy and removes one every `cheaper-overload` idle ticks;
`spare2` keeps `cheaper` idle workers; `backlog` follows the listen queue;
`busyness` follows the average share of time workers spend in requests. A worker
removed ("cheaped") retires gracefully: it finishes its request, nobody is cut.

`idle = N` (with `cheap` or `die-on-idle`) is here too: after N seconds without a
request every worker is retired (or the master exits), and the first connection
brings them back.
"""
from __future__ import annotations

import select
import time
from collections.abc import Callable

from emperor.config import Config
from emperor.master.generations import Generation, Workers
from emperor.master.loop import Loop, Part
from emperor.proc import memory
from emperor.sockets import Listener

TICK = 1.0   # uWSGI's master cycle: each algorithm decides once a second


class View:
    """What an algorithm sees at one tick."""

    __slots__ = ("busy", "active", "cheaped", "running_time", "backlog", "now")

    def __init__(self, busy: list[bool], cheaped: int, running_time: list[int], backlog: int, now: float) -> None:
        self.busy = busy                  # per active worker
        self.active = len(busy)
        self.cheaped = cheaped            # slots that could be spawned
        self.running_time = running_time  # per active worker: µs spent in requests so far
        self.backlog = backlog            # connections waiting in the listen queues
        self.now = now


class Spare:
    """uWSGI's default: more when every worker has been busy for `cheaper-overload` ticks."""

    def __init__(self, c: Config) -> None:
        self.c = c
        self.overload = 0
        self.idle = 0

    def decide(self, v: View, can_spawn: bool) -> int:
        if v.active and all(v.busy):
            self.overload += 1
            self.idle = 0
        elif self.overload:
            self.overload -= 1
        if can_spawn and self.overload >= self.c.cheaper_overload:
            self.overload = 0
            return min(self.c.cheaper_step, v.cheaped)
        if self.overload == 0:
            free = v.active - sum(v.busy)
            if free == 1:
                return 0  # one spare worker: the stable state
            self.idle += 1
            if v.active > self.c.cheaper and self.idle % self.c.cheaper_overload == 0:
                return -1
        return 0


class Spare2:
    """Keep `cheaper` idle workers: add up to `cheaper-step` at once, remove one per `cheaper-idle` ticks."""

    def __init__(self, c: Config) -> None:
        self.c = c
        self.idle_ticks = 0

    def decide(self, v: View, can_spawn: bool) -> int:
        idle = v.busy.count(False)
        if idle < self.c.cheaper:
            self.idle_ticks = 0
            return min(self.c.cheaper - idle, v.cheaped, self.c.cheaper_step) if can_spawn else 0
        if idle == self.c.cheaper:
            self.idle_ticks = 0
            return 0
        self.idle_ticks += 1
        if self.idle_ticks < self.c.cheaper_idle:
            return 0
        self.idle_ticks = 0
        return -1


class Backlog:
    """More while the listen queue holds more than `cheaper-overload` connections."""

    def __init__(self, c: Config) -> None:
        self.c = c

    def decide(self, v: View, can_spawn: bool) -> int:
        if can_spawn and v.backlog > self.c.cheaper_overload:
            return min(self.c.cheaper_step, v.cheaped)
        if v.backlog < self.c.cheaper_overload and v.active > self.c.cheaper:
            return -1
        return 0


class Busyness:
    """By the workers' average busyness over `cheaper-overload` seconds (plugins/cheaper_busyness)."""

    def __init__(self, c: Config) -> None:
        self.c = c
        self.multi = self.min_multi = c.cheaper_busyness_multiplier
        self.last_values: list[int] = []
        self.was_busy: list[int] = []
        self.tcheck = 0.0
        self.next_cheap = 0.0
        self.last_cheaped = 0.0
        self.last_action = 0          # 1: spawned, 2: cheaped
        self.tolerance = 0
        self.emergency = 0
        self.nonzero_since: float | None = None

    def _next_cheap(self, now: float) -> None:
        multi = self.c.cheaper_busyness_backlog_multiplier if self.emergency else self.multi
        self.next_cheap = now + self.c.cheaper_overload * multi

    def _emergency(self, v: View) -> int:
        self.multi = self.min_multi
        self.last_action = 1
        n = min(self.c.cheaper_busyness_backlog_step, v.cheaped)
        self._next_cheap(v.now)
        self.emergency += n
        return n

    def decide(self, v: View, can_spawn: bool) -> int:
        c = self.c
        if len(self.was_busy) != v.active:
            self.was_busy, self.last_values = [0] * v.active, list(v.running_time)
        self.was_busy = [w + b for w, b in zip(self.was_busy, v.busy)]
        period = c.cheaper_overload
        if v.now - self.tcheck >= period:
            self.tcheck = v.now
            total = 0
            for i in range(v.active):
                spent = v.running_time[i] - self.last_values[i]
                percent = min(spent * 100 // int(period * 1_000_000), 100)
                if spent == 0 and self.was_busy[i]:
                    percent = 100   # one long request that has not ended yet
                total += percent
            self.last_values, self.was_busy = list(v.running_time), [0] * v.active
            avg = total // v.active if v.active else 0
            if avg > c.cheaper_busyness_max:
                self.tolerance = 0
                n = min(c.cheaper_step, v.cheaped) if can_spawn else 0
                if n:
                    self.last_action = 1
                    if (v.now - self.last_cheaped) / period <= self.multi:
                        self.multi += c.cheaper_busyness_penalty  # cheaped then needed again: cheap later
                    elif self.multi > self.min_multi:
                        self.multi -= 1
                    self._next_cheap(v.now)
                return n
            if can_spawn and v.backlog > c.cheaper_busyness_backlog_alert and v.cheaped:
                return self._emergency(v)
            if avg < c.cheaper_busyness_min:
                self.tolerance = 0
                if v.active > max(c.cheaper, 1) and v.now >= self.next_cheap:
                    if self.last_action == 2 and self.multi > self.min_multi:
                        self.multi -= 1
                    self._next_cheap(v.now)
                    self.last_cheaped, self.last_action = v.now, 2
                    self.emergency = max(self.emergency - 1, 0)
                    return -1
            elif v.active > 1:
                self.emergency = max(self.emergency - 1, 0)
                self.tolerance += 1
                if self.tolerance >= 3:
                    self._next_cheap(v.now)
                else:
                    self.next_cheap += period
            return 0
        if can_spawn and v.backlog > c.cheaper_busyness_backlog_alert and v.cheaped:
            return self._emergency(v)
        if v.backlog > 0:
            if self.nonzero_since is None:
                self.nonzero_since = v.now
            elif can_spawn and v.cheaped and v.now - self.nonzero_since >= c.cheaper_busyness_backlog_nonzero:
                self.nonzero_since = v.now
                return self._emergency(v)
        else:
            self.nonzero_since = None
        return 0


class Manual:
    """`cheaper-algo = manual`: the count changes only when told (the master FIFO's +/-)."""

    def __init__(self, c: Config) -> None:
        pass

    def decide(self, v: View, can_spawn: bool) -> int:
        return 0


ALGOS: dict[str, Callable[[Config], Spare | Spare2 | Backlog | Busyness | Manual]] = {
    "spare": Spare, "spare2": Spare2, "backlog": Backlog, "busyness": Busyness, "manual": Manual}


class Cheaper(Part):
    """Runs the configured algorithm each tick and applies its verdict to the current generation."""

    def __init__(self, config: Config, workers: Workers, backlog: Callable[[], int],
                 log: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.workers = workers
        self.backlog = backlog
        self.log = log
        self.clock = clock
        self.algo = ALGOS[config.cheaper_algo](config)
        self.due = clock() + TICK

    def deadline(self) -> float | None:
        return None if self.workers.stopping else self.due

    def run_timers(self, now: float) -> None:
        if now < self.due or self.workers.stopping:
            return
        self.due = now + TICK
        gen = self.workers.current
        if gen is None or gen.number != self.workers.number or self.workers.awaiting:
            return  # a restored generation or one still starting: nothing to scale
        self.tick(gen, now)

    def view(self, gen: Generation, now: float) -> View:
        busy, running = [], []
        for slot in self.workers.active_slots(gen):
            w = gen.board.worker(slot)
            busy.append(any(core["busy_since"] for core in w["cores"]))
            running.append(sum(core["rt_sum"] for core in w["cores"]))
        return View(busy, len(self.workers.cheaped_slots(gen)), running, self.backlog(), now)

    def tick(self, gen: Generation, now: float) -> None:
        c = self.config
        v = self.view(gen, now)
        can_spawn = True
        if c.cheaper_rss_limit_soft:
            rss = sum(memory(gen.slots[s])[0] for s in self.workers.active_slots(gen))
            if c.cheaper_rss_limit_hard and v.active > 1 and rss >= c.cheaper_rss_limit_hard:
                # core/master_utils.c uwsgi_calc_cheaper: one fewer while more than one runs,
                # below `cheaper` too; the algorithm is not asked this tick
                self.workers.cheap_one(gen, f"cheaper: workers' RSS {rss >> 20} MiB >= cheaper-rss-limit-hard")
                return
            can_spawn = rss < c.cheaper_rss_limit_soft
        verdict = self.algo.decide(v, can_spawn)
        if verdict > 0 and can_spawn:
            self.workers.decheap(gen, verdict, f"cheaper ({c.cheaper_algo})")
        elif verdict < 0 and v.active > max(c.cheaper, 1):
            self.workers.cheap_one(gen, f"cheaper ({c.cheaper_algo})")


class Idle(Part):
    """`idle = N`: after N seconds without a request (and none in flight), `die-on-idle` ends
    the master (its emperor starts it again on demand); otherwise every worker retires and
    the master waits for a connection to bring them back (the mode `cheap = true` starts in).
    uWSGI's core/master_checks.c uwsgi_master_check_idle."""

    def __init__(self, config: Config, workers: Workers, loop: Loop, listeners: list[int],
                 log: Callable[[str], None], die: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.workers = workers
        self.loop = loop
        self.listeners = listeners
        self.log = log
        self.die = die
        self.clock = clock
        self.cheap = False
        self.requests = -1
        self.since = clock()
        self.tick = max(config.idle / 4, TICK)
        self.due = self.since + self.tick

    def begin(self) -> None:
        """`cheap = true`: no worker until the first connection."""
        if self.config.cheap:
            self._wait_for_a_connection()

    def deadline(self) -> float | None:
        return None if self.workers.stopping or self.cheap or not self.config.idle else self.due

    def run_timers(self, now: float) -> None:
        gen = self.workers.current
        if now < self.due or self.cheap or gen is None or not self.config.idle or self.workers.stopping:
            return
        self.due = now + self.tick
        total, busy = 0, False
        for slot in self.workers.active_slots(gen):
            for core in gen.board.worker(slot)["cores"]:
                total += core["requests"]
                busy = busy or bool(core["busy_since"])
        if total != self.requests or busy:
            self.requests, self.since = total, now
            return
        if now - self.since < self.config.idle:
            return
        self.log(f"no request for {self.config.idle}s (idle)")
        if self.config.die_on_idle:
            self.die()
            return
        self.go_cheap("idle")

    def go_cheap(self, why: str) -> None:
        """Every worker retires; the first connection brings them back (also the master FIFO's C)."""
        if self.workers.current is not None:
            self.workers.cheap_all(self.workers.current, why)
        self._wait_for_a_connection()

    def _wait_for_a_connection(self) -> None:
        self.cheap = True
        for fd in self.listeners:
            self.loop.watch(fd, self._connection, select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0))
        self.log("cheap mode: the first connection starts the workers")

    def _connection(self) -> None:
        """A connection waits in a listen queue: bring the workers back; they will accept it."""
        for fd in self.listeners:
            self.loop.unwatch(fd)
        self.cheap = False
        gen = self.workers.current
        if gen is not None:
            n = self.config.cheaper_initial if self.config.cheaper else self.config.processes
            self.workers.decheap(gen, n, "a connection")
        self.requests, self.since = -1, self.clock()
        self.due = self.since + self.tick


def adaptive_parts(config: Config, workers: Workers, loop: Loop, listeners: list[Listener],
                   log: Callable[[str], None], die: Callable[[], None]) -> list[Part]:
    """The parts of a master that change how many workers run, for what the config asks."""
    from emperor.master.recycle import Recycler, wanted
    from emperor.master.stats import listen_queue

    parts: list[Part] = []
    if config.cheaper:
        parts.append(Cheaper(config, workers, lambda: sum(listen_queue(l.sock)[0] for l in listeners), log))
    if wanted(config):
        parts.append(Recycler(config, workers, log))
    if config.idle or config.cheap:
        idle = Idle(config, workers, loop, [l.fd for l in listeners], log, die)
        idle.begin()
        parts.append(idle)
    return parts
