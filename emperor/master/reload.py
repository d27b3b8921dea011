"""A graceful reload: a preflight in a throwaway process, then `execve` of the next image.

The preflight parses the new config, test-binds new sockets and imports the
app; only if it passes does the master re-execute itself, so a broken deploy
costs the serving generation nothing (`reload failed`, the old code keeps
serving). Under an emperor the preflight is a fork of the emperor, asked for
over the channel (~100 ms sooner than a fresh interpreter); otherwise a fresh
`python -m emperor master --preflight FILE`. Its output (the app's traceback)
comes back on a pipe and is logged on failure.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator

from emperor import log as logmod
from emperor.master.loop import Loop, Part
from emperor.proc import signal_quietly
from emperor.wire import channel, handoff

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from emperor.master.link import EmperorLink

MAX_OUTPUT = 65536   # of a preflight's output kept for the log


@contextlib.contextmanager
def in_directory(path: str) -> Iterator[None]:
    """Run a block in `path`, then return to the directory we were in, even one deleted since
    (a deploy that removed the old release the app was chdir'ed into). Best effort both ways."""
    try:
        back = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        try:
            os.chdir(path)
        except OSError:
            pass
        yield
    finally:
        try:
            os.fchdir(back)
        finally:
            os.close(back)


class Reloader(Part):
    """Runs one preflight at a time, each bounded by `limit` seconds (reload-mercy).

    A reload asked for while one runs supersedes it: the running preflight is killed
    and a new one checks the newest file, so a hung import never blocks later deploys.
    Preflights the emperor forks for us carry a sequence number, so the result of a
    superseded one is never taken for the current one's.
    """

    def __init__(self, config_path: str, cwd: str, *, env: dict[str, str], limit: float,
                 emperor: EmperorLink | None, loop: Loop,
                 on_failed: Callable[[str], None], on_passed: Callable[[], None]) -> None:
        self.config_path = config_path
        self.cwd = cwd                  # where the first image started: `-m emperor` resolves from there
        self.env = env                  # the preflight's environment (without the hand-off's variables)
        self.limit = limit
        self.emperor = emperor          # None: no emperor to fork it for us
        self.loop = loop
        self.on_failed = on_failed
        self.on_passed = on_passed
        self.pid: int | None = None     # a preflight we spawned ourselves
        self.remote = False             # the emperor runs it; it says `preflight SEQ CODE`
        self.seq = 0
        self.due: float | None = None
        self.stopped = False            # the master stops: a result changes nothing
        self.fd: int | None = None
        self.output = b""

    @property
    def busy(self) -> bool:
        return self.pid is not None or self.remote

    def start(self, held: str) -> None:
        """Start a preflight; one already running is superseded (killed, its result ignored)."""
        self.cancel()
        self.seq += 1
        r, w = os.pipe2(os.O_CLOEXEC)
        if self.emperor is not None and self.emperor.ask_preflight(f"{self.seq} {held}", w):
            self.remote = True   # its environment: the one the emperor gave us, + HELD
        else:
            env = dict(self.env, **{handoff.HELD: held})
            argv = [sys.executable, "-m", "emperor", "master", "--preflight", self.config_path]
            actions = [(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)]
            try:
                with in_directory(self.cwd):  # `-m emperor` resolves from where we started, as our re-exec does
                    self.pid = os.posix_spawn(sys.executable, argv, env, file_actions=actions)
            except OSError as e:
                os.close(r)
                os.close(w)
                self.on_failed(f"cannot run the preflight: {e}")
                return
        os.close(w)
        os.set_blocking(r, False)
        self.fd = r
        self.output = b""
        self.due = time.monotonic() + self.limit
        self.loop.watch(r, self.read)

    def read(self) -> None:
        """The output pipe is readable."""
        assert self.fd is not None
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if data:
            self.output += data[:MAX_OUTPUT - len(self.output)]
        else:
            self._close_pipe()

    def reported(self, text: str) -> None:
        """The emperor's `preflight SEQ CODE`: only the current preflight's result counts."""
        seq, _, code = text.partition(" ")
        if self.remote and seq == str(self.seq):
            self.done(int(code) if code.lstrip("-").isdigit() else 1)

    # ---------- a part of the master (emperor/master/loop.py) ----------
    def reaped(self, pid: int, code: int) -> bool:
        if pid != self.pid:
            return False
        self.done(code)
        return True

    def alive(self) -> bool:
        return self.pid is not None

    def deadline(self) -> float | None:
        return self.due

    def stop(self, graceful: bool) -> None:
        self.stopped = True
        self.cancel()

    def fds(self) -> list[int]:
        return [self.fd] if self.fd is not None else []

    def done(self, code: int) -> None:
        """The preflight exited with `code` (reaped here, or reported by the emperor)."""
        self.pid, self.remote, self.due = None, False, None
        if self.fd is not None:
            while True:
                try:
                    data = os.read(self.fd, 65536)
                except BlockingIOError:
                    break
                if not data:
                    break
                self.output += data[:MAX_OUTPUT - len(self.output)]
            self._close_pipe()
        if self.stopped:
            return
        if code != 0:
            self.on_failed(self.output.decode(errors="replace").rstrip() or f"preflight exited {code}")
        else:
            self.on_passed()

    def run_timers(self, now: float) -> None:
        """A preflight past its limit (an import that hangs) fails the reload."""
        if self.busy and self.due is not None and now >= self.due:
            output = self.output.decode(errors="replace").rstrip()
            self.cancel()
            self.on_failed((output + "\n" if output else "")
                           + f"the preflight did not finish within {self.limit:g}s (reload-mercy): stopped")

    def cancel(self) -> None:
        """Stop the running preflight, if any; its result will not count."""
        if self.pid is not None:
            signal_quietly(self.pid, signal.SIGKILL)  # reaped as a stranger: not ours any more
        elif self.remote and self.emperor is not None:
            self.emperor.tell(channel.PREFLIGHT, "cancel")
        self.pid, self.remote, self.due = None, False, None
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.fd is not None:
            self.loop.unwatch(self.fd)
            os.close(self.fd)
            self.fd = None


def reexec(config_path: str, cwd: str, env: dict[str, str], fds: list[int]) -> str:
    """Become the next image: same PID, same inherited descriptors, new code. Returns only on failure."""
    handoff.inheritable(fds)
    argv = [sys.executable, "-m", "emperor", "master", config_path]
    logmod.flush_std()
    # Signals stay blocked across execve until the new image has its handlers:
    # a SIGHUP in that window would otherwise kill the master (default action).
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        os.chdir(cwd)
    except OSError:
        pass
    try:
        os.execve(sys.executable, argv, env)
    except OSError as e:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        return f"execve {sys.executable}: {e.strerror}"
    return ""  # not reached
