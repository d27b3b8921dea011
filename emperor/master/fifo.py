"""The master FIFO (`master-fifo = PATH`): one-letter commands written to a named pipe.

uWSGI's Master FIFO (MasterFIFO.rst; core/fifo.c): `echo r > /run/app.fifo` reloads,
`echo +++s > /run/app.fifo` adds three workers and logs the stats. Each byte is one
command, in order; whitespace (echo's newline) is skipped. Several `master-fifo`
lines name slots 0, 1, ...; the master listens on one at a time (slot 0 first) and a
digit selects another, once what was written with it has been read (uWSGI switches
when the writer closes). A command that is an action of the master's signal table
calls the same `on_<action>` the signal does (`ACTIONS`), so there is one table of
behaviours; the others act on the workers (emperor/master/rework.py) or are here.

The FIFO is the master's user's alone, since whoever can write to it controls the
vassal: it is created after the privilege drop (as uWSGI does: core/master.c
creates it in master_loop, after uwsgi_as_root), with mode 0600 under umask 0177,
and an existing name is used only if it is a FIFO of that user (a reload, or a
master that crashed); a symlink (never followed: O_NOFOLLOW) or anything else there
is refused with one log line, and the master serves without that FIFO. The master
keeps a write end of its own open, so a writer closing never makes the read end
report end-of-file over and over (uWSGI instead recreates the FIFO each time).

Across a graceful reload (execve, same PID) the descriptors are handed over
(emperor/wire/handoff.py), not reopened: a pipe keeps what was written only while
one of its ends is open, so a command written during the re-exec is read by the
next image rather than lost, and its writer never gets EPIPE; the next image also
learns which paths this one made, and removes one the new file no longer names. The FIFO
a digit selected stays selected across a reload while the file still names it (uWSGI's
re-exec starts again at slot 0: it knows nothing of the previous image).
The FIFOs the master used are removed when it stops (uWSGI: at exit, with `vacuum`; a
FIFO left behind blocks every `echo` into it forever), and only if the name is still
the FIFO it made. SIGINT still hurries a graceful stop.
"""
from __future__ import annotations

import errno
import os
import signal
import stat

from emperor import log as logmod
from emperor.config import Config
from emperor.master import pidfile
from emperor.master.loop import Loop, Part
from emperor.master.rework import WorkerCommands
from emperor.wire.handoff import HandOff

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from emperor.master.process import Master

log = logmod.log

READ_SIZE = 512       # bytes of commands read at once
READS_PER_WAKEUP = 8  # then back to the loop: a flood of commands cannot starve the rest

# Commands that are the master's own actions: the signal table's on_<action> (process.py SIGNALS)
# and, for q, the graceful stop SIGTERM means with die-on-term.
ACTIONS: dict[str, tuple[str, str]] = {
    "r": ("on_graceful_reload", "graceful reload (SIGHUP)"),
    "R": ("on_brutal_reload", "brutal reload (SIGTERM)"),
    "q": ("graceful_stop", "graceful stop (SIGTERM with die-on-term)"),
    "Q": ("on_stop", "stop now (SIGINT)"),
    "p": ("on_toggle_pause", "pause / resume (SIGTSTP)"),
    "s": ("on_log_stats", "statistics in the log (SIGUSR1)"),
}
# Commands that act on the workers: methods of WorkerCommands (emperor/master/rework.py).
WORKER_COMMANDS: dict[str, tuple[str, str]] = {
    "w": ("reload", "reload the workers gracefully"),
    "W": ("kill", "reload the workers brutally"),
    "c": ("chain", "chain reload: the workers one at a time"),
    "+": ("more", "one more worker (cheaper)"),
    "-": ("fewer", "one worker fewer (cheaper)"),
    "C": ("go_cheap", "cheap mode: no worker until a connection comes"),
}
# Commands of this part.
OWN: dict[str, tuple[str, str]] = {
    "E": ("rescan_emperor", "ask the emperor to rescan its directory (SIGWINCH)"),
    "P": ("write_pidfiles", "write the pidfiles again"),
    "l": ("log_file", "reopen the log file"),
    "L": ("log_file", "rotate the log file"),
    **{d: ("select", f"listen on master-fifo {d}") for d in "0123456789"},
}
# uWSGI's commands for what emperor does not have: named, and logged when received.
UNSUPPORTED: dict[str, str] = {
    "B": "broodlord mode (a vassal asking its emperor for reinforcements) is not part of emperor",
    "f": "re-forking the master: emperor keeps one master per vassal (r replaces its image, same PID)",
    "S": "emperor has no subscription system to block",
}


class Refused(Exception):
    """A FIFO path not to use; str() says why in a few words."""


def open_fifo(path: str) -> tuple[int, int, tuple[int, int]]:
    """Create (or take back our own) FIFO at `path`; its read and write ends and (device, inode)."""
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise Refused(e.strerror or str(e)) from None
    if st is not None:
        _check(st, "it is a symlink (never followed)")
    else:
        mask = os.umask(0o177)
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            raise Refused("something was created there meanwhile") from None
        except OSError as e:
            raise Refused(f"cannot create it: {e.strerror}") from None
        finally:
            os.umask(mask)
    try:   # O_NOFOLLOW: a symlink put there since the lstat is not followed either
        r = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        why = "it is a symlink (never followed)" if e.errno == errno.ELOOP else f"cannot open it: {e.strerror}"
        raise Refused(why) from None
    try:
        st = os.fstat(r)
        _check(st, "")
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(r, 0o600)   # a FIFO of ours from before, made under another umask
        # the same pipe through our own descriptor: no second lookup of the name
        w = os.open(f"/proc/self/fd/{r}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        os.close(r)
        raise Refused(f"cannot open it: {e.strerror}") from None
    except Refused:
        os.close(r)
        raise
    return r, w, (st.st_dev, st.st_ino)


def _check(st: os.stat_result, symlink: str) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise Refused(symlink)
    if not stat.S_ISFIFO(st.st_mode):
        raise Refused("something else than a FIFO is there (left untouched)")
    if st.st_uid != os.geteuid():
        raise Refused(f"the FIFO there belongs to uid {st.st_uid}, not to this master's user")


def remove(path: str, ident: tuple[int, int]) -> None:
    """Unlink `path` if it is still the FIFO we made (device, inode), nothing else."""
    try:
        st = os.lstat(path)
        if stat.S_ISFIFO(st.st_mode) and (st.st_dev, st.st_ino) == ident:
            os.unlink(path)
    except OSError:
        pass


class MasterFifo(Part):
    """Reads the active FIFO from the master's loop and runs each command."""

    def __init__(self, master: Master, paths: list[str], inherited: HandOff) -> None:
        self.master = master
        self.config: Config = master.config
        self.loop: Loop = master.loop
        self.paths = paths
        self.rework = WorkerCommands(master.config, master.workers, master.loop, master.listeners,
                                      master.parts, log)
        self.slot = 0
        self.select_next: int | None = None
        self.fd: int | None = None       # the active FIFO's read end
        self.w: int | None = None        # our own write end: no end-of-file when a writer leaves
        self.made: dict[str, tuple[int, int]] = {}   # every FIFO this master used: removed when it stops
        if not self._adopt(inherited.fifo):
            self._open(0)

    @classmethod
    def create(cls, master: Master) -> list[Part]:
        """The part if the file names a FIFO; paths relative to `chdir`, as uWSGI opens them."""
        c = master.config
        paths = [os.path.join(c.chdir or master.cwd, p) for p in c.master_fifo]
        if paths:
            return [cls(master, paths, master.inherited)]
        if master.inherited.fifo:   # the previous image had one, this file names none
            r, w, made = _handed(master.inherited.fifo)
            os.close(r)
            os.close(w)
            for path, ident in made.items():
                remove(path, ident)
        return []

    # ---------- the FIFO ----------
    def _open(self, slot: int) -> bool:
        path = self.paths[slot]
        try:
            r, w, ident = open_fifo(path)
        except Refused as e:
            log(f"master-fifo {path}: refused: {e}")
            return False
        self._close()
        self.fd, self.w, self.slot = r, w, slot
        self.made[path] = ident
        self.loop.watch(r, self._read)
        return True

    def _close(self) -> None:
        if self.fd is not None:
            self.loop.unwatch(self.fd)
            os.close(self.fd)
        if self.w is not None:
            os.close(self.w)
        self.fd = self.w = None

    def _adopt(self, handed: str) -> bool:
        """Take over the previous image's FIFO if this file still names its path (and the name is
        still that FIFO); forget, and remove, the paths this file no longer names."""
        if not handed:
            return False
        r, w, made = _handed(handed)
        for path, ident in made.items():
            if path in self.paths:
                self.made[path] = ident
            else:
                remove(path, ident)
        st = os.fstat(r)
        active = next((p for p, i in made.items() if i == (st.st_dev, st.st_ino)), "")
        if active not in self.paths or not _still(active, made[active]):
            os.close(r)
            os.close(w)
            return False
        for fd in (r, w):
            os.set_inheritable(fd, False)   # execve needed them; a preflight we spawn must not have them
        os.set_blocking(r, False)
        self.fd, self.w, self.slot = r, w, self.paths.index(active)
        self.loop.watch(r, self._read)
        return True

    def _read(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            if self.fd is None:
                return
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                data = b""
            except OSError as e:
                log(f"master-fifo {self.paths[self.slot]}: {e.strerror}")
                return
            if not data:   # all read: now a digit takes effect (uWSGI: when the writer closes)
                if self.select_next is not None:
                    slot, self.select_next = self.select_next, None
                    if slot != self.slot and self._open(slot):
                        log(f"active master fifo is now {self.paths[slot]}")
                return
            for byte in data:
                self.run(chr(byte))

    # ---------- the commands ----------
    def run(self, cmd: str) -> None:
        """One command byte, as if written to the FIFO."""
        why = f"master FIFO {cmd}"
        if cmd.isspace():
            return
        if cmd in UNSUPPORTED:
            log(f"{why}: not supported: {UNSUPPORTED[cmd]}")
        elif cmd in ACTIONS:
            log(f"{why}: {ACTIONS[cmd][1]}")
            getattr(self.master, ACTIONS[cmd][0])(why)
        elif cmd in WORKER_COMMANDS:
            log(f"{why}: {WORKER_COMMANDS[cmd][1]}")
            getattr(self.rework, WORKER_COMMANDS[cmd][0])(why)
        elif cmd in OWN:
            getattr(self, OWN[cmd][0])(why, cmd)
        else:
            log(f"master FIFO {cmd!r}: unknown command; ignored")

    def select(self, why: str, digit: str) -> None:
        slot = int(digit)
        if slot >= len(self.paths):
            log(f"{why}: there is no master-fifo {slot} (the file names {len(self.paths)}); ignored")
            return
        log(f"{why}: master-fifo {slot} ({self.paths[slot]}) is next, once this one is read")
        self.select_next = slot

    def log_file(self, why: str, cmd: str) -> None:
        """l reopens the log file, L rotates it (as touch-logreopen, touch-logrotate: logfiles.py)."""
        logfile = self.master.logfile
        if not logfile.path:
            log(f"{why}: this master has no log file (logto, daemonize, logger = file:)")
        elif cmd == "L":
            logfile.rotate()
        else:
            logfile.reopen(why)

    def rescan_emperor(self, why: str, cmd: str) -> None:
        if self.master.link.fileno() is None:
            log(f"{why}: this master has no emperor to rescan")
            return
        try:
            os.kill(os.getppid(), signal.SIGWINCH)   # the emperor's "rescan now"
            log(f"{why}: asked the emperor to rescan its directory")
        except OSError as e:
            log(f"{why}: cannot signal the emperor: {e.strerror}")

    def write_pidfiles(self, why: str, cmd: str) -> None:
        if not (self.config.pidfile or self.config.safe_pidfile):
            log(f"{why}: no pidfile or safe-pidfile to write")
            return
        pidfile.write_all(self.config, os.getpid())
        log(f"{why}: pidfiles written (pid {os.getpid()})")

    # ---------- a part of the master (emperor/master/loop.py) ----------
    def deadline(self) -> float | None:
        return self.rework.deadline()

    def run_timers(self, now: float) -> None:
        self.rework.run_timers(now)

    def stop(self, graceful: bool) -> None:
        """The master stops: no command changes that now, and the FIFOs it used go (uWSGI removes
        them at exit, with vacuum; a master under an emperor ends with os._exit, so not atexit).
        A brutal reload stops the parts too, but the workers are not stopping then: kept."""
        if self.master.workers.stopping:
            self._close()
            for path, ident in self.made.items():
                remove(path, ident)

    def fds(self) -> list[int]:
        return [fd for fd in (self.fd, self.w) if fd is not None]

    def hand_over(self, h: HandOff) -> list[int]:
        if self.fd is None or self.w is None:
            h.fifo = ""
            return []
        h.fifo = "\n".join([f"{self.fd},{self.w}"] + [f"{d}:{i}:{p}" for p, (d, i) in self.made.items()])
        return [self.fd, self.w]


def _handed(value: str) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """`MasterFifo.hand_over`'s value: the read and write ends, and each path made with its identity."""
    first, *lines = value.split("\n")
    r, w = (int(x) for x in first.split(","))
    made = {}
    for line in lines:
        dev, ino, path = line.split(":", 2)
        made[path] = (int(dev), int(ino))
    return r, w, made


def _still(path: str, ident: tuple[int, int]) -> bool:
    """`path` is still the FIFO (device, inode) it was."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISFIFO(st.st_mode) and (st.st_dev, st.st_ino) == ident
