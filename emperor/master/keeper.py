"""The keeper: a small process between the master and a command it runs (a daemon, a cron job).

None of a command's processes may outlive its vassal, whoever is killed: the master, its
emperor, or the command's own first process. The kernel alone cannot promise that for a
command's children (a parent-death signal reaches one process, and a daemon that double-forks
into a session of its own leaves every process group). So each command runs under a keeper:

    master ── keeper (a session of its own, child subreaper) ── /bin/sh -c COMMAND ── ...

- The keeper leads its own session and process group, and the command runs in that group: one
  `killpg` of the keeper's PID reaches the command and whatever it forked (uWSGI's
  `kill(-pid, sig)`, core/daemons.c), while the terminal's and the emperor's signals to the
  master's group do not.
- It is a child subreaper (PR_SET_CHILD_SUBREAPER): whatever the command's processes orphan,
  a daemon that double-forked and made its own session included, becomes its child, so it can
  still reach them. A signal that reaches it with its group (a stop or reload signal) it
  relays to the groups of the processes it holds outside its own.
- Its parent-death signal (PR_SET_PDEATHSIG) is the kill order, KILL_ORDER: when the master
  dies, even by SIGKILL, the keeper SIGKILLs every process it holds, until none is left, and
  exits. The master sends the same order when a stop signal was not obeyed in time.
- The command's first process gets a parent-death SIGKILL: a keeper killed by someone still
  takes it along (the master then SIGKILLs the keeper's group for what is left).
- It tells the master the command's PID on a pipe (`KEEPER COMMAND\\n`), and ends when nothing
  it holds is left, with the status of the command (it re-raises a signal that killed it).
  As a *job* (attach-daemon, cron) that is as soon as the command's first process ends: what
  it left behind is killed. Otherwise (a pidfile daemon, which daemonizes) when the last
  process it holds ends.

It is a fork of the master, so it costs no interpreter start; it closes every descriptor of
the master and waits in `sigwaitinfo` with every signal blocked (it never runs a handler).
"""
from __future__ import annotations

import binascii
import os
import resource
import signal
from collections.abc import Callable

from emperor import log as logmod
from emperor.config import Config
from emperor.master import pidfile as pidfiles
from emperor.master.loop import Loop
from emperor.proc import (PR_SET_PDEATHSIG, become_subreaper, children, drop_privileges, fork_with_signals_blocked,
                          killpg_quietly, prctl, set_command_line, set_process_name, signal_quietly)
from emperor.signals import drain
from emperor.wire import handoff

LABEL = 80                        # characters of a command shown in the log and the status
KILL_ORDER = signal.SIGRTMAX      # to a keeper: kill everything you hold, now (emperor/attached.py reserves it)
NAME = "emperor keeper"           # its process name (pidfile.is_master tells it from a master by it)
SHELL = "/bin/sh"                 # as uWSGI's uwsgi_exec_command_with_args: /bin/sh -c COMMAND
_WAIT = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}


class Keepers:
    """Spawns keepers for one part of the master and learns their commands' PIDs.

    The births pipe is the part's own (its descriptors are the part's `fds()`), watched in the
    master's loop; `on_birth(keeper, command)` is called as each PID arrives.
    """

    def __init__(self, loop: Loop, on_birth: Callable[[int, int], None]) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.on_birth = on_birth
        self.partial = b""
        loop.watch(self.r, self.read)

    def fds(self) -> list[int]:
        return [self.r, self.w]

    def spawn(self, command: str, label: str, *, job: bool, env: dict[str, str], cwd: str,
              uid: str | None = None, gid: str | None = None, stdin: bool = False,
              write_pidfile: str | None = None) -> int:
        """Fork a keeper running `command`; its PID. OSError if the fork fails.

        `write_pidfile`: the command's PID is written there (smart-attach-daemon2), and the
        file removed once it has ended, if it still names it.
        """
        master = os.getpid()
        logmod.flush_std()
        pid = fork_with_signals_blocked()
        if pid == 0:
            try:
                _keep(master, self.w, command, label, job, env, cwd, uid, gid, stdin, write_pidfile)
            finally:
                os._exit(1)
        return pid

    def send(self, keeper: int, sig: int) -> None:
        """`sig` to the keeper's whole group: the command and what it forked (the keeper relays it
        to those that left the group); the keeper itself takes no notice."""
        killpg_quietly(keeper, sig)

    def kill(self, keeper: int, stage: int) -> None:
        """Stage 0: the kill order (the keeper kills all it holds, then itself); after that, SIGKILL
        to the keeper's whole group (a keeper that does not answer, or one that was killed)."""
        if stage == 0:
            signal_quietly(keeper, KILL_ORDER)
        else:
            killpg_quietly(keeper, signal.SIGKILL)

    def read(self) -> None:
        """What the births pipe holds (before a keeper's death is handled: its birth came first)."""
        data = self.partial + drain(self.r)
        *lines, self.partial = data.split(b"\n")
        self.partial = self.partial[-64:]
        for line in lines:
            keeper, _, command = line.decode(errors="replace").partition(" ")
            if keeper.isdigit() and command.isdigit():
                self.on_birth(int(keeper), int(command))


# ---------- in the keeper ----------
def _keep(master: int, births: int, command: str, label: str, job: bool, env: dict[str, str], cwd: str,
          uid: str | None, gid: str | None, stdin: bool, write_pidfile: str | None) -> None:
    """Entered right after fork, every signal blocked; never returns."""
    signal.set_wakeup_fd(-1)
    os.setsid()
    prctl(PR_SET_PDEATHSIG, KILL_ORDER)
    if os.getppid() != master:
        os._exit(1)   # the master died before the prctl: nobody to keep anything for
    become_subreaper()
    if not stdin:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    os.closerange(3, births)
    os.closerange(births + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    set_process_name(NAME)
    set_command_line(f"{NAME} {label}")
    me = os.getpid()
    try:
        child = os.fork()
    except OSError as e:
        logmod.log(f"{label}: cannot fork: {e.strerror}")
        os._exit(1)
    if child == 0:
        _run(me, births, command, env, cwd, uid, gid, write_pidfile)
    try:
        os.write(births, f"{me} {child}\n".encode())
    except OSError:
        pass
    os.close(births)
    code = _watch(master, child, job)
    if write_pidfile:
        pidfiles.remove(write_pidfile, child)
    _exit_as(code)


def _run(keeper: int, births: int, command: str, env: dict[str, str], cwd: str,
         uid: str | None, gid: str | None, write_pidfile: str | None) -> None:
    """The command's first process: as the command expects it, then `/bin/sh -c COMMAND`."""
    try:
        os.close(births)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != keeper:
            os._exit(1)
        for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
            try:   # the master's handlers go at execve anyway; what it ignores (SIGPIPE) must not
                if signal.getsignal(sig) not in (signal.SIG_DFL, None):
                    signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        os.chdir(cwd)
        if (uid or gid) and os.getuid() != 0 and not _already(uid, gid):
            raise OSError(f"uid={uid} gid={gid} needs a master running as root")
        drop_privileges(uid, gid)
        if write_pidfile:
            pidfiles.write(write_pidfile, os.getpid())
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.execve(SHELL, [SHELL, "-c", command], env)
    except OSError as e:
        logmod.log(f"cannot run {command!r}: {e.strerror or e}")
    except BaseException as e:   # nothing of the master's may run here
        logmod.log(f"cannot run {command!r}: {e!r}")
    os._exit(127)


def _already(uid: str | None, gid: str | None) -> bool:
    """Not root: only the identity we have already is possible."""
    import grp
    import pwd

    try:
        if uid and (int(uid) if uid.isdigit() else pwd.getpwnam(uid).pw_uid) != os.getuid():
            return False
        if gid and (int(gid) if gid.isdigit() else grp.getgrnam(gid).gr_gid) != os.getgid():
            return False
    except KeyError:
        return False
    return True


def _watch(master: int, child: int, job: bool) -> int:
    """Until nothing is left: the status to end with (os.waitstatus_to_exitcode's sense).

    A job ends with its first process, what it leaves behind killed: unless that process
    was killed by a signal sent to the group (a stop, a reload): then it may be only the
    shell `/bin/sh -c` left around the command (dash does not exec the last command) while
    the command itself winds down, so what is left may finish. A job ends with the status
    of its first process; a pidfile daemon with its last one's.
    """
    me = os.getpid()
    code = 0
    seen: set[int] = set()      # the signals sent to the group
    while True:
        sig = signal.sigwaitinfo(_WAIT).si_signo
        if sig == KILL_ORDER or os.getppid() != master:
            _kill_held(me)
            return -signal.SIGKILL
        if sig != signal.SIGCHLD:
            seen.add(sig)
            for pid in children(me):   # a signal for the group: the ones that left the group get it too
                try:
                    group = os.getpgid(pid)
                except OSError:
                    continue
                if group != me:
                    killpg_quietly(group, sig)
            continue
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return code       # nothing left
            if pid == 0:
                break
            if pid == child or not job:
                code = os.waitstatus_to_exitcode(status)
            if pid == child:
                if job and -code not in seen:
                    _kill_held(me)    # what the command left behind goes with it
                    return code


def _kill_held(me: int) -> None:
    """SIGKILL every process held, round after round (a killed parent's children come to us,
    the subreaper), until none is left."""
    while True:
        for pid in children(me):
            try:
                group = os.getpgid(pid)
            except OSError:
                group = me
            if group != me:
                killpg_quietly(group, signal.SIGKILL)
            signal_quietly(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _exit_as(code: int) -> None:
    """End with the command's status: its exit code, or death by the signal that killed it."""
    if code >= 0:
        os._exit(code & 0xFF)
    sig = -code
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))   # a SIGSEGV re-raised: no core of ours
    except (OSError, ValueError):
        pass
    try:
        signal.signal(sig, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)     # not reached: a signal that kills by default


def environment(config: Config) -> dict[str, str]:
    """What a command sees: the master's environment without emperor's internals, and the
    vassal's `env` lines (applied to the master itself only when it loads the app)."""
    hidden = set(handoff.INTERNAL + handoff.FROM_EMPEROR)
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    for item in config.env:
        key, sep, value = item.partition("=")
        if sep:
            env[key] = value
        else:
            env.pop(key, None)
    return env


def keys(items: list[tuple[str, str]], config: Config) -> list[str]:
    """An identity per (option, text): what must be equal for a reload to keep it running.
    The vassal's env and chdir are part of it (the command sees them); a repeated line is
    numbered."""
    context = "\0".join(config.env + [config.chdir or ""])
    seen: dict[str, int] = {}
    out = []
    for option, text in items:
        data = f"{option}\0{text}\0{context}".encode()
        # not hashlib: its OpenSSL costs every master image ~5 ms; 64 bits tell <= 64 lines apart
        digest = f"{binascii.crc32(data):08x}{binascii.crc32(data[::-1]):08x}"
        seen[digest] = seen.get(digest, 0) + 1
        out.append(f"{digest}.{seen[digest]}")
    return out


def label(command: str) -> str:
    """A command as the log and the status show it: a long one keeps its start and its end."""
    half = LABEL // 2
    return command if len(command) <= LABEL else command[:half] + "…" + command[-(LABEL - half - 1):]
