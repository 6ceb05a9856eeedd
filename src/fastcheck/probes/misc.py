"""MISC_CHECK probe: run the check script, as its user, and report what its exit status says.

Owns: splitting ``misc_path`` into argv (keepalived's quoting and escapes), the account a
script runs as (user, group, keepalived_script by default under root), keepalived's
script security test, running one script at a time in its own process group, killing the
whole group when it outlives misc_timeout, keeping the tail of its output for the detail,
and mapping its end to a `ProbeResult`.
Must not: decide health (retry — 0 by default — belongs to health/), apply weights, run
a shell, or know keyword spellings.

keepalived behaviour followed (2.2.7, keepalived/check/check_misc.c, lib/notify.c, and
lib/parser.c alloc_strvec_quoted_escaped):
- argv: ``misc_path``'s string is split at white space outside quotes; ``'`` and ``"``
  quote (and may start mid-word), backslash escapes work inside and outside quotes
  (``\\n \\t \\xHH \\0oo \\cX``, any other character stands for itself); an unterminated
  quote or a trailing backslash is an error (misc_path_handler / set_script_params_array).
- account (notify.c set_uid_gid, get_default_script_user, set_script_env): `Script.user`
  (config/ has already put global script_user there) with its own group unless a group
  is named; without a user, ``keepalived_script`` if that user exists, else the daemon's
  own account. The child switches group, supplementary groups (to the group alone) and
  user before exec, and gets its own process group (setpgid(0, 0)).
- security (notify.c check_script_secure / check_security): a script that runs as root
  (user or group 0, or a set-uid/gid-root file) is insecure when any directory on its
  path, or the file, is not owned by root or is writable by a non-root group or by all
  (directories with the sticky bit excepted). With enable_script_security such a check
  is disabled — here: the constructor raises `ProbeError`; without, it runs and
  `MiscProbe.warnings` says why it should not.
- exit (misc_check_child_thread): 0 is up; with misc_dynamic 2..255 is up with weight
  exit − 2; anything else, or death by a signal, is down (SCRIPT_EXIT).
- timeout (misc_check_child_thread, THREAD_CHILD_TIMEOUT): after misc_timeout the group
  gets SIGTERM, and SIGKILL when the script is still there after 2 s; once the script is
  gone, its group gets SIGKILL so no child outlives it. The result is SCRIPT_TIMEOUT.

What `ProbeResult.weight` means here: the ABSOLUTE weight the script asks for (exit − 2;
None = the configured weight, which is what exit 0 means). keepalived turns it into an
offset (exit − 2 − the real server's configured weight) because it owns the real server;
a probe is shared by every owner of the same check, so health/ does that subtraction.
FILE_CHECK's weight, in contrast, is an offset (see probes/file.py).

Where this probe differs, on purpose:
- one run at a time: `run` while a run is in progress joins it and returns its result;
  no second process is started (keepalived schedules the next run after the child ends,
  so it never overlaps either). Cancelling the last caller waiting for a run, or `close`,
  kills the script's group at once.
- a script that cannot be started (missing, not executable, account switch refused —
  e.g. a user is named but fastcheck is not root) is LOCAL, run after run. keepalived
  disables such a check at load and, should exec fail later, has the child exit 0: up.
- a file that is not an executable format (no ``#!``) runs through /bin/sh as execvp
  would; keepalived (with libmagic) runs it through system(). Commands beginning with
  ``<`` or ``>`` (keepalived hands those to /bin/sh as file-existence tests) are refused.
- a script that ignores SIGTERM and exits 0 after its timeout is still SCRIPT_TIMEOUT.
- without a user, keepalived_script is the default only when fastcheck runs as root.
- the last 512 bytes of stdout+stderr are kept and the last line is put in the detail
  (keepalived sends both to /dev/null). Children still writing after the script ended
  find the pipe closed.
- no PR_SET_PDEATHSIG: should fastcheck die, a running script is not sent SIGTERM (a
  clean shutdown calls `close`). A script that exits normally may leave children behind,
  as under keepalived; only a timeout or a kill takes the whole group down.

`run` returns within misc_timeout + term_grace_s (2 s), plus up to 10 s more only when a
SIGKILLed script cannot die (uninterruptible sleep).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from typing import Final

from fastcheck.errors import ProbeError
from fastcheck.model import Check, GlobalDefs, MiscParams, Script
from fastcheck.probes.result import Failure, ProbeResult

__all__ = ["DEFAULT_SCRIPT_USER", "MiscProbe", "probe_misc", "script_insecurity",
           "split_command"]

DEFAULT_SCRIPT_USER: Final = "keepalived_script"
TERM_GRACE_S: Final = 2.0  # SIGTERM → SIGKILL, as keepalived's 2 s
REAP_WAIT_S: Final = 10.0  # after SIGKILL, as keepalived's last 10 s
OUTPUT_TAIL_BYTES: Final = 512
_SPACE: Final = b" \t\f\n\r\v"
_SIMPLE_ESCAPES: Final = {ord("a"): 7, ord("b"): 8, ord("E"): 0x1B, ord("f"): 12,
                          ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("v"): 11}
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


def split_command(text: str) -> tuple[str, ...]:
    """argv of a misc_path string, split as keepalived does; ValueError when malformed."""
    data = os.fsencode(text)
    words: list[str] = []
    i, n = 0, len(data)
    while True:
        while i < n and data[i] in _SPACE:
            i += 1
        if i >= n:
            break
        word = bytearray()
        quote = 0
        while i < n:
            c = data[i]
            if c == 0x5C:  # backslash
                i += 1
                if i >= n:
                    raise ValueError(f"trailing backslash in {text!r}")
                c = data[i]
                if c == ord("x") and i + 1 < n and data[i + 1] in _HEX:
                    value, i = 0, i + 1
                    while i < n and data[i] in _HEX:
                        value = (value << 4 | int(chr(data[i]), 16)) & 0xFF
                        i += 1
                elif c == ord("c") and i + 1 < n:
                    value, i = data[i + 1] & 0x1F, i + 2
                elif 0x30 <= c <= 0x37:
                    value, i = c - 0x30, i + 1
                    for _ in range(2):
                        if i < n and 0x30 <= data[i] <= 0x37:
                            value, i = (value << 3 | (data[i] - 0x30)) & 0xFF, i + 1
                else:
                    value, i = _SIMPLE_ESCAPES.get(c, c), i + 1
                word.append(value)
            elif quote:
                if c == quote:
                    quote = 0
                else:
                    word.append(c)
                i += 1
            elif c in b"'\"":
                quote, i = c, i + 1
            elif c in _SPACE:
                break
            else:
                word.append(c)
                i += 1
        if quote:
            raise ValueError(f"missing terminating {chr(quote)} in {text!r}")
        words.append(os.fsdecode(bytes(word.split(b"\0", 1)[0])))  # a C string ends at NUL
    return tuple(words)


def _resolve_account(script: Script, security: bool) -> tuple[int | None, int | None, str]:
    """(uid, gid, shown name) to run as; None = the daemon's own. Raises ProbeError."""
    name = script.user
    if name is None and os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(DEFAULT_SCRIPT_USER)
            name = DEFAULT_SCRIPT_USER
        if name is None and security:
            raise ProbeError(f"no script user and no {DEFAULT_SCRIPT_USER} user: "
                             "enable_script_security refuses to run scripts as root")
    if name is None:
        return None, None, "the daemon's own user"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ProbeError(f"script user {name!r} does not exist") from None
    uid, gid = entry.pw_uid, entry.pw_gid
    if script.group is not None:
        try:
            gid = grp.getgrnam(script.group).gr_gid
        except KeyError:
            raise ProbeError(f"script group {script.group!r} does not exist") from None
    return uid, gid, f"{name}:{script.group}" if script.group else name


def _unsafe(path: str) -> str | None:
    """Why ``path`` (every directory on it, and the file) may be changed by non-root."""
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i]) or "/"
        if i > 1 and not parts[i - 1]:
            continue
        try:
            st = os.lstat(prefix)
        except OSError as exc:
            return f"{prefix}: {exc.strerror}"
        last = i == len(parts)
        if (not last and not stat.S_ISDIR(st.st_mode)) or \
                (last and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode))):
            return f"{prefix} is of the wrong file type"
        if st.st_uid != 0:
            return f"{prefix} is not owned by root"
        sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        checked = (stat.S_ISDIR(st.st_mode) and not sticky_dir) or stat.S_ISREG(st.st_mode)
        if checked and ((st.st_gid and st.st_mode & stat.S_IWGRP) or st.st_mode & stat.S_IWOTH):
            return f"{prefix} is writable by a non-root group or by everyone"
    return None


def script_insecurity(command: str, uid: int | None, gid: int | None) -> str | None:
    """keepalived's script security verdict: why a script running as root is unsafe.

    ``command`` is argv[0] (searched in PATH when it has no slash); None for "safe" or
    "not run as root". A script that cannot be found is reported as such.
    """
    found = command if "/" in command else shutil.which(command)
    if found is None or not os.path.exists(found):
        return f"{command}: not found"
    real = os.path.realpath(found)
    try:
        st = os.stat(real)
    except OSError as exc:
        return f"{command}: {exc.strerror}"
    as_root = (os.geteuid() if uid is None else uid) == 0 or \
        (os.getegid() if gid is None else gid) == 0 or \
        (st.st_uid == 0 and st.st_mode & stat.S_ISUID and st.st_mode & stat.S_IXUSR) or \
        (st.st_gid == 0 and st.st_mode & stat.S_ISGID and st.st_mode & stat.S_IXGRP)
    if not as_root:
        return None
    return _unsafe(os.path.abspath(found)) or (_unsafe(real) if real != found else None)


class _Output:
    """The tail of a script's stdout+stderr, read from a pipe while it runs."""

    __slots__ = ("_fd", "_loop", "tail")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._loop, self._fd, self.tail = loop, fd, b""
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._drain)

    def _drain(self) -> None:
        try:
            for _ in range(16):  # a script writing without pause must not hold the loop
                data = os.read(self._fd, 65536)
                if not data:
                    self._loop.remove_reader(self._fd)  # EOF
                    return
                self.tail = (self.tail + data)[-OUTPUT_TAIL_BYTES:]
        except BlockingIOError:
            pass
        except OSError:
            self._loop.remove_reader(self._fd)

    def close(self) -> str:
        """Stop reading; the last non-empty line seen, for a detail."""
        if self._fd >= 0:
            self._drain()
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        lines = [s for s in self.tail.decode("utf-8", "replace").splitlines() if s.strip()]
        return lines[-1].strip()[:200] if lines else ""


class MiscProbe:
    """One MISC_CHECK, prepared once (argv, account, security verdict).

    The constructor raises `ProbeError` where keepalived disables the check at load (bad
    quoting, unknown user or group, an insecure script under enable_script_security);
    `run` only ever returns a `ProbeResult`. Call `close` before dropping a probe whose
    script may be running (a reload that removes the check, shutdown).
    """

    __slots__ = ("_account", "_dynamic", "_gid", "_task", "_timeout_s", "_uid", "_waiters",
                 "argv", "term_grace_s", "warnings")

    def __init__(self, check: Check, global_defs: GlobalDefs | None = None, *,
                 term_grace_s: float = TERM_GRACE_S) -> None:
        params = check.params
        if not isinstance(params, MiscParams):
            raise ProbeError(f"{check.kind.value} is not a MISC check")
        try:
            self.argv = split_command(params.script.command)
        except ValueError as exc:
            raise ProbeError(f"misc_path: {exc}") from None
        if not self.argv or not self.argv[0]:
            raise ProbeError("misc_path names no program")
        if self.argv[0][0] in "<>":
            raise ProbeError(f"misc_path {self.argv[0]!r}: shell redirections need a "
                             "shell, and fastcheck runs none; use a script")
        if params.timeout_s <= 0:
            raise ProbeError(f"misc_timeout {params.timeout_s:g} s is not positive")
        security = bool(global_defs and global_defs.enable_script_security)
        self._uid, self._gid, self._account = _resolve_account(params.script, security)
        problem = script_insecurity(self.argv[0], self._uid, self._gid)
        if problem and security:
            raise ProbeError(f"script {self.argv[0]} disabled by enable_script_security: "
                             f"{problem}")
        self.warnings: tuple[str, ...] = (f"script {self.argv[0]}: {problem}",) \
            if problem else ()
        self._dynamic = params.dynamic
        self._timeout_s = params.timeout_s
        self.term_grace_s = term_grace_s
        self._task: asyncio.Task[ProbeResult] | None = None
        self._waiters = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run(self, *, loop_time: Callable[[], float] | None = None) -> ProbeResult:
        """Run the script once — or join the run in progress — and report its end.

        Cancelling the last caller waiting for a run kills the script (its whole group).
        """
        task = self._task
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(
                self._run_once(loop_time or time.monotonic))
            self._task = task
        self._waiters += 1
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if self._waiters == 1:
                task.cancel()
            raise
        finally:
            self._waiters -= 1

    async def close(self) -> None:
        """Kill a running script (its whole group) and wait for it to be reaped."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ one run

    def _spawn(self) -> tuple[subprocess.Popen[bytes], int]:
        """Start the script; returns it and the read end of its output pipe."""
        uid, gid = self._uid, self._gid
        switch = (uid is not None and uid != os.geteuid()) or \
            (gid is not None and gid != os.getegid())
        if not switch:
            uid = gid = None
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            for argv in (self.argv, ("/bin/sh", *self.argv)):
                try:
                    return subprocess.Popen(
                        argv, stdin=subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
                        close_fds=True, process_group=0, user=uid, group=gid,
                        extra_groups=None if gid is None else [gid]), read_fd
                except OSError as exc:
                    if exc.errno != errno.ENOEXEC or argv[0] == "/bin/sh":
                        raise
            raise AssertionError("unreachable")
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)

    async def _run_once(self, clock: Callable[[], float]) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = clock()
        try:
            proc, read_fd = self._spawn()
        except OSError as exc:
            return ProbeResult.down(Failure.LOCAL, clock() - start, self._spawn_error(exc))
        output = _Output(loop, read_fd)
        exit_waiter = _ExitWaiter(loop, proc)
        try:
            if await exit_waiter.wait(self._timeout_s):
                return self._verdict(proc.returncode, clock() - start, output.close())
            _kill_group(proc.pid, signal.SIGTERM)
            how = "SIGTERM"
            if not await exit_waiter.wait(self.term_grace_s):
                how = "SIGTERM, then SIGKILL"
            _kill_group(proc.pid, signal.SIGKILL)  # the script, or what it left behind
            await exit_waiter.wait(REAP_WAIT_S)
            return ProbeResult.down(Failure.SCRIPT_TIMEOUT, clock() - start,
                                    f"{self.argv[0]}: still running after "
                                    f"{self._timeout_s:g} s; killed its group ({how})")
        except asyncio.CancelledError:
            _kill_group(proc.pid, signal.SIGKILL)
            await exit_waiter.wait(REAP_WAIT_S)
            raise
        finally:
            exit_waiter.close()
            output.close()

    def _verdict(self, code: int | None, latency_s: float, said: str) -> ProbeResult:
        tail = f" — {said!r}" if said else ""
        if code == 0:
            return ProbeResult.up(latency_s, detail=f"exit 0{tail}")
        if code is not None and code >= 2 and self._dynamic:
            return ProbeResult.up(latency_s, weight=code - 2,
                                  detail=f"exit {code}: weight {code - 2}{tail}")
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit status {code}"
        return ProbeResult.down(Failure.SCRIPT_EXIT, latency_s, f"{self.argv[0]}: {how}{tail}")

    def _spawn_error(self, exc: OSError) -> str:
        program = self.argv[0]
        if isinstance(exc, PermissionError) and self._uid is not None and os.geteuid() != 0:
            return (f"cannot run {program} as {self._account}: fastcheck runs as uid "
                    f"{os.geteuid()}, and only root may switch users")
        if isinstance(exc, FileNotFoundError):
            return f"cannot run {program}: not found"
        return f"cannot run {program} as {self._account}: {exc.strerror or exc}"


class _ExitWaiter:
    """Waits for a child's exit through a pidfd (polling where there is none) and reaps it."""

    __slots__ = ("_event", "_loop", "_pidfd", "_proc")

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> None:
        self._loop, self._proc = loop, proc
        self._event = asyncio.Event()
        try:
            self._pidfd = os.pidfd_open(proc.pid)
            loop.add_reader(self._pidfd, self._event.set)
        except (AttributeError, OSError):
            self._pidfd = -1

    async def wait(self, timeout_s: float) -> bool:
        """True once the child has exited (and is reaped) within ``timeout_s``."""
        proc = self._proc
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while proc.poll() is None:
                    if self._pidfd >= 0:
                        await self._event.wait()
                        self._event.clear()
                    else:
                        await asyncio.sleep(0.02)
        return proc.poll() is not None

    def close(self) -> None:
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def probe_misc(check: Check, global_defs: GlobalDefs | None = None, *,
                     loop_time: Callable[[], float] | None = None) -> ProbeResult:
    """Run a MISC_CHECK once; set-up problems come back as LOCAL failures."""
    try:
        probe = MiscProbe(check, global_defs=global_defs)
    except ProbeError as exc:
        return ProbeResult.down(Failure.LOCAL, 0.0, str(exc))
    return await probe.run(loop_time=loop_time)
