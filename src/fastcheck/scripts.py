"""Running external programs as keepalived does: MISC_CHECK scripts and notify scripts.

Owns: splitting a command line into argv (keepalived's quoting and escapes), the account
a script runs as and keepalived's script security test, starting a script in its own
process group with its output on a pipe, keeping the tail of that output, waiting for
its exit through a pidfd, and signalling its whole group. See probes/misc.py for the
keepalived behaviour these follow.
Must not: decide what a script's exit means (probes/misc.py and daemon/notify.py do) or
block the event loop.
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
from typing import Final

from fastcheck.errors import ProbeError
from fastcheck.model import Script

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


def resolve_account(script: Script, security: bool) -> tuple[int | None, int | None, str]:
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


class ScriptOutput:
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


def spawn(argv: tuple[str, ...], uid: int | None, gid: int | None
          ) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` in its own process group as uid/gid (None: the daemon's own), with
    stdout+stderr on a pipe; returns the process and the pipe's read end. A file that is
    not an executable format runs through /bin/sh, as execvp would. Raises OSError."""
    if (uid is None or uid == os.geteuid()) and (gid is None or gid == os.getegid()):
        uid = gid = None
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        for args in (argv, ("/bin/sh", *argv)):
            try:
                return subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
                    close_fds=True, process_group=0, user=uid, group=gid,
                    extra_groups=None if gid is None else [gid]), read_fd
            except OSError as exc:
                if exc.errno != errno.ENOEXEC or args[0] == "/bin/sh":
                    raise
        raise AssertionError("unreachable")
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)


class ExitWaiter:
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


def kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
