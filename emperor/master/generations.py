"""A master's workers: generations, and keeping every slot of the current one filled.

A generation is the workers of one load of the code and config, with their
scoreboard. The current generation serves; the ones a reload replaced drain
(finish their requests and leave, bounded by `worker-reload-mercy`); with
`snapshot = true` the one the last reload retired is the snapshot: it finishes its
requests and closes its idle connections as a retiring generation does (no client
ever waits on it), then waits, parked, for SIGURG to make it serve again.
The master forks through the callback it gives (`become_worker`, which never
returns in the child) and learns from `worker_ready` when the whole current
generation accepts, the moment the previous ones may leave.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from emperor.config import Config
from emperor.proc import describe_exit, fork_with_signals_blocked, set_command_line, set_process_name, signal_quietly
from emperor.wire import handoff
from emperor.wire.scoreboard import Scoreboard
from emperor.worker.process import TRACEBACK

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

RESPAWN_MIN_INTERVAL = 1.0   # a slot whose worker dies faster than this waits: no fork loop
FAILURE_BACKOFF_MAX = 60.0   # workers that die before serving are retried after 1, 2, 4 ... 60 s
CRASHES = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


class Generation:
    """The workers of one load of the code and config, and their scoreboard."""

    def __init__(self, number: int, board: Scoreboard, slots: list[int | None]) -> None:
        n = len(slots)
        self.number = number
        self.board = board
        self.slots = slots                        # pid per slot
        self.ready: set[int] = set()              # slots that reported READY
        self.respawns = [0] * n
        self.last_spawn = [0.0] * n
        self.harakiri = [0] * n
        self.served = [False] * n                 # the slot's worker served a request (LOYAL)
        self.failures = 0                         # workers in a row that died before serving
        self.last_failure = ""                    # why the last of them did
        self.cheaped: set[int] = set()            # slots left empty on purpose (cheaper, idle)
        self.draining_since: float | None = None
        self.parked_at: float | None = None      # the snapshot since (monotonic, system-wide)

    def pids(self) -> list[int]:
        return [p for p in self.slots if p]

    def export(self) -> str:
        pids = ",".join(str(p or 0) for p in self.slots)
        return f"{self.number}/{self.board.export()}/{pids}/{self.parked_at or ''}"

    @classmethod
    def adopt(cls, spec: str) -> Generation:
        number, board, pids, parked = spec.split("/")
        slots: list[int | None] = [int(p) or None for p in pids.split(",")] if pids else []
        gen = cls(int(number), Scoreboard.adopt(board), slots)
        gen.ready = {i for i, p in enumerate(slots) if p}
        gen.parked_at = float(parked) if parked else None
        return gen


class Workers:
    """Every generation of one master image, and what happens to their workers."""

    def __init__(self, config: Config, number: int, *, log: Callable[[str], None],
                 become_worker: Callable[[Generation, int], None],
                 draining: list[Generation] | None = None, snapshot: Generation | None = None,
                 previous: Generation | None = None,
                 on_failure: Callable[[Generation, float], None] = lambda gen, wait: None,
                 master_only: Callable[[], list[int]] = list, title: str = "emperor worker {slot}") -> None:
        self.config = config
        self.number = number                     # this image's generation (UWSGI_RELOADS)
        self.log = log
        self.become_worker = become_worker
        self.current: Generation | None = None
        self.draining = draining or []           # handed over by the previous image
        self.snapshot = snapshot
        self.previous = previous                 # the generation the reload that made this image retires
        self.on_failure = on_failure             # a worker died before serving; its slot waits that long
        self.master_only = master_only           # descriptors a forked worker closes
        self.title = title                       # what ps shows for a worker ({slot}: from 1)
        self.respawn_at: dict[tuple[int, int], float] = {}
        self.awaiting = True                     # until this image's generation is all ready
        self.stopping = False                    # the master stops: nobody is respawned
        self.sentenced: set[int] = set()         # killed by harakiri, not reaped yet: killed once, logged once
        self.graceful: dict[int, tuple[float, float]] = {}  # harakiri-graceful-timeout: pid -> (request, SIGKILL at)
        self.traced: dict[int, float] = {}       # harakiri-verbose: pid -> the stuck request whose stacks it dumped

    @classmethod
    def adopt(cls, h: handoff.HandOff, config: Config, **kw: Any) -> Workers:
        """The workers of a new image: the generations the previous image handed over."""
        draining = [Generation.adopt(s) for s in h.generations]
        return cls(config, h.reloads, draining=draining,
                   snapshot=Generation.adopt(h.snapshot) if h.snapshot else None,
                   previous=next((g for g in draining if g.number == h.retired), None), **kw)

    def generations(self) -> list[Generation]:
        return [g for g in (self.current, self.snapshot) if g] + self.draining

    def children_left(self) -> bool:
        return any(g.pids() for g in self.generations())

    def hand_over(self, h: handoff.HandOff) -> list[int]:
        """What the next image needs of the generations (the re-exec hand-off); their
        scoreboards' descriptors, which it must inherit."""
        gens = ([self.current] if self.current else []) + self.draining
        h.generations = [g.export() for g in gens]
        h.retired = self.current.number if self.current else -1
        h.snapshot = self.snapshot.export() if self.snapshot else ""
        return [g.board.fd for g in gens + ([self.snapshot] if self.snapshot else [])]

    # ---------- forking ----------
    def start(self) -> Generation:
        c = self.config
        gen = self.current = Generation(self.number, Scoreboard(c.processes, c.threads), [None] * c.processes)
        if c.cheap:
            gen.cheaped = set(range(c.processes))          # no worker before the first connection
        elif c.cheaper:
            gen.cheaped = set(range(c.cheaper_initial, c.processes))
        return gen

    def spawn_all(self) -> None:
        gen = self.current
        assert gen is not None
        for slot in range(len(gen.slots)):
            if slot not in gen.cheaped:
                self.spawn(gen, slot)

    # ---------- how many: cheaper and idle (emperor/master/cheaper.py) ----------
    def active_slots(self, gen: Generation) -> list[int]:
        return [s for s, pid in enumerate(gen.slots) if pid and s not in gen.cheaped]

    def cheaped_slots(self, gen: Generation) -> list[int]:
        return [s for s in sorted(gen.cheaped) if gen.slots[s] is None]

    def decheap(self, gen: Generation, n: int, why: str) -> None:
        """Fill up to `n` slots left empty (one whose worker is still leaving is refilled when it has)."""
        slots = sorted(gen.cheaped, key=lambda s: gen.slots[s] is not None)[:n]
        if not slots:
            return
        before = len(self.active_slots(gen))
        for slot in slots:
            gen.cheaped.discard(slot)
            if gen.slots[slot] is None:
                self.spawn(gen, slot)
        self.log(f"{why}: {before} -> {before + len(slots)} workers")

    def cheap_one(self, gen: Generation, why: str) -> None:
        """Retire the oldest idle worker and leave its slot empty."""
        active = self.active_slots(gen)
        idle = [s for s in active
                if not any(c["busy_since"] for c in gen.board.worker(s)["cores"])]
        if not idle:
            return
        slot = min(idle, key=lambda s: gen.last_spawn[s])
        gen.cheaped.add(slot)
        pid = gen.slots[slot]
        assert pid is not None
        signal_quietly(pid, signal.SIGTERM)   # it finishes its request, then leaves
        self.log(f"{why}: {len(active)} -> {len(active) - 1} workers (worker {slot + 1} retires)")

    def cheap_all(self, gen: Generation, why: str) -> None:
        for slot in self.active_slots(gen):
            gen.cheaped.add(slot)
            signal_quietly(gen.slots[slot] or 0, signal.SIGTERM)
        self.log(f"{why}: every worker retires until the next connection")

    def spawn(self, gen: Generation, slot: int) -> None:
        gen.board.spawning(slot, gen.number, gen.respawns[slot])
        try:
            pid = fork_with_signals_blocked()   # the child installs its own handlers first
        except OSError as e:
            self.log(f"fork failed: {e.strerror}; retrying in 1s")
            self.respawn_at[(gen.number, slot)] = time.monotonic() + 1
            return
        if pid == 0:
            try:
                self._leave_the_master(gen, slot)
                self.become_worker(gen, slot)
            finally:
                os._exit(1)
        gen.slots[slot] = pid
        gen.ready.discard(slot)
        gen.last_spawn[slot] = time.monotonic()
        gen.board.spawned(slot, pid)

    def _leave_the_master(self, gen: Generation, slot: int) -> None:
        """In a new worker: drop what only the master uses; look like a worker in ps."""
        signal.set_wakeup_fd(-1)
        for fd in self.master_only():
            try:
                os.close(fd)
            except OSError:
                pass
        for g in self.generations():
            if g is not gen:
                g.board.close()
        set_process_name("emperor worker")  # not a master's name: see pidfile.is_master
        set_command_line(self.title.replace("{slot}", str(slot + 1)))

    # ---------- signals to workers ----------
    def signal(self, gen: Generation, sig: int) -> None:
        for pid in gen.pids():
            signal_quietly(pid, sig)

    def signal_all(self, sig: int) -> None:
        for gen in self.generations():
            self.signal(gen, sig)

    def wait_all(self, limit: float) -> None:
        """Block (at most `limit` s) until every worker has been reaped: a brutal reload's
        workers were just SIGKILLed, and the next image must not inherit them."""
        deadline = time.monotonic() + limit
        while self.children_left() and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            for gen in self.generations():
                if pid in gen.slots:
                    gen.slots[gen.slots.index(pid)] = None

    # ---------- what workers tell ----------
    def exited(self, pid: int, code: int) -> bool:
        """A child ended: respawn it if it served the current generation. False if not a worker."""
        for gen in self.generations():
            if pid not in gen.slots:
                continue
            slot = gen.slots.index(pid)
            gen.slots[slot] = None
            was_ready = slot in gen.ready
            self.sentenced.discard(pid)
            self.traced.pop(pid, None)
            self.graceful.pop(pid, None)
            gen.ready.discard(slot)
            if gen is not self.current or self.stopping:
                if gen in self.draining and not gen.pids():
                    self.draining.remove(gen)
                    gen.board.close()
                    self.log(f"generation {gen.number} has left")
                return True
            if slot in gen.cheaped:
                gen.served[slot] = False
                return True   # cheaped on purpose: its slot stays empty
            gen.respawns[slot] += 1
            wait = gen.last_spawn[slot] + RESPAWN_MIN_INTERVAL - time.monotonic()
            # a start failure: it died before its first request, on its own (an accepting worker
            # killed from outside, by an operator or the OOM killer, is only replaced)
            failed = not gen.served[slot] and (not was_ready or code > 0 or -code in CRASHES)
            if failed:
                # It died before its first request: the app cannot start (or crashes at once).
                # Retry with a capped backoff, as the emperor does for masters, and say why.
                gen.failures += 1
                gen.last_failure = gen.board.error(slot) or f"worker {describe_exit(code)} before its first request"
                if gen.failures > 1:
                    wait = min(2.0 ** (gen.failures - 1), FAILURE_BACKOFF_MAX)
                self.log(f"worker {slot + 1} (pid {pid}) {describe_exit(code)} before serving: "
                         f"{gen.last_failure}; respawning in {max(wait, 0):g}s")
                self.on_failure(gen, max(wait, 0.0))
            else:
                self.log(f"worker {slot + 1} (pid {pid}) {describe_exit(code)}; respawning")
            gen.served[slot] = False
            if wait > 0 and (code != 0 or failed):
                self.respawn_at[(gen.number, slot)] = time.monotonic() + wait
            else:
                self.spawn(gen, slot)
            return True
        return False

    def worker_served(self, pid: int) -> None:
        """A worker served its first request: its slot's start is a success."""
        for gen in self.generations():
            if pid in gen.slots:
                gen.served[gen.slots.index(pid)] = True
                gen.failures = 0

    def next_respawn(self, gen: Generation) -> float | None:
        return min((t for (n, _), t in self.respawn_at.items() if n == gen.number), default=None)

    def worker_ready(self, pid: int) -> bool:
        """A worker accepts. True once, when the whole generation of this image does:
        then the previous generations are told to leave."""
        gen = self.current
        if gen is None or pid not in gen.slots or self.stopping:
            return False  # a READY read after a stop began (written before it was told) changes nothing
        gen.ready.add(gen.slots.index(pid))
        if not self.awaiting or not self.all_ready(gen):
            return False
        return self.generation_ready()

    def all_ready(self, gen: Generation) -> bool:
        """Every slot meant to be filled has a worker that accepts."""
        return len(gen.ready) >= len(gen.slots) - len(gen.cheaped)

    def generation_ready(self) -> bool:
        """This image's generation serves: the previous ones may leave. True (once)."""
        self.awaiting = False
        if not self.config.snapshot and self.snapshot is not None:
            self.drop_snapshot("the file says snapshot = false")
        for old in list(self.draining):
            if old.draining_since is None:
                if old is self.previous and self.config.snapshot:
                    self.park(old)
                else:
                    self.retire(old)
        return True

    # ---------- retiring, the snapshot ----------
    def retire(self, gen: Generation) -> None:
        """Tell a replaced generation to finish its requests and leave."""
        gen.draining_since = time.monotonic()
        self.signal(gen, signal.SIGTERM)
        self.signal(gen, signal.SIGCONT)  # after: a paused (SIGTSTP) worker must wake to leave

    def park(self, gen: Generation) -> None:
        """Keep `gen` as the snapshot, in place of the one held (which leaves): the generation
        the last reload retired, or the one a restore displaced, so SIGURG always rolls
        back exactly one step and a second SIGURG undoes the first."""
        if gen in self.draining:
            self.draining.remove(gen)
        if self.snapshot is not None:
            self.drop_snapshot(f"generation {gen.number} is the snapshot now")
        self.snapshot = gen
        gen.parked_at = time.monotonic()
        self.signal(gen, signal.SIGUSR1)   # park: finish, close idle connections, wait
        self.signal(gen, signal.SIGCONT)   # after: a paused worker must wake to do that
        self.log(f"generation {gen.number} kept as snapshot (SIGURG restores it)")

    def drop_snapshot(self, why: str) -> None:
        gen = self.snapshot
        if gen is None:
            return
        self.snapshot = None
        self.log(f"snapshot of generation {gen.number} dropped: {why}")
        self.draining.append(gen)
        self.retire(gen)

    def restore_snapshot(self, why: str, paused: bool) -> Generation:
        """The snapshot serves again (paused if the master is); the generation it displaces is
        the snapshot now. Returns the restored generation."""
        snap, cur = self.snapshot, self.current
        assert snap is not None
        self.snapshot = None
        snap.parked_at = None
        self.signal(snap, signal.SIGUSR2)   # unpark: accept again
        if paused:
            self.signal(snap, signal.SIGTSTP)
        self.current = snap
        self.log(f"{why}: restored generation {snap.number}"
                 + (f"; generation {cur.number} is the snapshot now" if cur else ""))
        if cur is not None:
            self.park(cur)
        for slot, pid in enumerate(snap.slots):
            if pid is None and not self.stopping:   # died while parked: the code loaded now is newer
                self.log(f"worker {slot + 1} of restored generation {snap.number} is respawned "
                         f"with generation {self.number}'s code (the only code loaded here)")
                self.spawn(snap, slot)
        return snap

    # ---------- timers ----------
    def next_deadline(self) -> float | None:
        deadlines = list(self.respawn_at.values())
        if self.config.harakiri and not self.stopping:
            deadlines.append(time.monotonic() + 1.0)
        mercy = self.config.worker_reload_mercy
        deadlines += [g.draining_since + mercy for g in self.draining if g.draining_since is not None]
        if self.snapshot is not None and self.snapshot.parked_at is not None:
            deadlines.append(self.snapshot.parked_at + self.config.snapshot_ttl)
        return min(deadlines, default=None)

    def run_timers(self, now: float) -> None:
        for key, when in list(self.respawn_at.items()):
            if when <= now:
                del self.respawn_at[key]
                number, slot = key
                cur = self.current
                if cur and cur.number == number and not self.stopping and cur.slots[slot] is None \
                        and slot not in cur.cheaped:
                    self.spawn(cur, slot)
        mercy = self.config.worker_reload_mercy
        for gen in self.draining:
            if gen.draining_since is not None and now >= gen.draining_since + mercy and gen.pids():
                self.log(f"generation {gen.number} still busy after worker-reload-mercy ({mercy}s): killing")
                self.signal(gen, signal.SIGKILL)
                gen.draining_since = None
        snap = self.snapshot
        if snap is not None and snap.parked_at is not None and now >= snap.parked_at + self.config.snapshot_ttl:
            self.drop_snapshot(f"older than snapshot-ttl ({self.config.snapshot_ttl}s)")
        if self.config.harakiri:
            check_harakiri(self, now)

def harakiri_trace(log: Callable[[str], None], slot: int, pid: int, core: dict, took: float) -> None:
    """harakiri-verbose: what the worker is stuck in, before it is killed. As uWSGI
    (core/master_utils.c, trigger_harakiri): its system call and wait channel from /proc;
    and every thread's Python stack, which the worker writes to the log itself
    (faulthandler, on TRACEBACK: it works even when a thread holds the interpreter)."""
    log(f"HARAKIRI: worker {slot + 1} (pid {pid}) ran {core['method']} {core['path']} for {took:.1f}s; "
        f"its stacks follow, then it is killed")
    for name in ("syscall", "wchan"):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                log(f"HARAKIRI: -- {name}> {f.read().strip()}")
        except OSError:
            pass
    signal_quietly(pid, TRACEBACK)


def check_harakiri(w: Workers, now: float) -> None:
    """harakiri: a request past its limit kills its worker (after harakiri-graceful-timeout's signal,
    if set); a module function, for the Workers class's size."""
    limit = w.config.harakiri
    for gen in [g for g in [w.current] if g] + w.draining:
        for slot, pid in enumerate(gen.slots):
            if not pid or pid in w.sentenced:
                continue
            for core in gen.board.worker(slot)["cores"]:
                since = core["busy_since"]
                if since and now - since > limit:
                    if w.config.harakiri_verbose and w.traced.get(pid) != since:  # killed next look
                        w.traced[pid] = since
                        harakiri_trace(w.log, slot, pid, core, now - since)
                        break
                    grace = w.config.harakiri_graceful_timeout
                    if grace and w.graceful.get(pid, (0.0, 0.0))[0] != since:   # master_checks.c: a signal first
                        w.graceful[pid] = (since, now + grace)
                        sig = w.config.harakiri_graceful_signal
                        w.log(f"HARAKIRI (graceful): worker {slot + 1} (pid {pid}) ran {core['method']} "
                                 f"{core['path']} for {now - since:.1f}s (limit {limit}s): signal {sig}, "
                                 f"killed in {grace}s")
                        signal_quietly(pid, sig)
                        break
                    if grace and now < w.graceful[pid][1]:
                        break
                    w.log(f"HARAKIRI: worker {slot + 1} (pid {pid}) ran {core['method']} {core['path']} "
                             f"for {now - since:.1f}s (limit {limit}s): killing it")
                    gen.harakiri[slot] += 1
                    w.sentenced.add(pid)   # its SIGCHLD may come after the next look here
                    signal_quietly(pid, signal.SIGKILL)
                    break
