"""The pid file: at most one fastcheck per pid file, and how `reload` finds the daemon.

Owns: taking the pid file (an exclusive `flock` held for the daemon's life, so a pid
file left by a dead daemon — stale — is simply taken over), writing our pid into it,
removing it on exit, and reading the pid of a live daemon for `fastcheck reload`.
Must not: send signals other than the liveness probe (signal 0), or exit the process;
problems are raised as PidFileError with a clear message.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os

from fastcheck.errors import FastcheckError

DEFAULT_PID_FILE = "/run/fastcheck.pid"


class PidFileError(FastcheckError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _parse(text: str, path: str) -> int:
    try:
        pid = int(text.strip())
    except ValueError:
        raise PidFileError(f"{path}: does not hold a process id") from None
    if pid <= 0:
        raise PidFileError(f"{path}: does not hold a process id")
    return pid


class PidFile:
    """`acquire()` once at start-up, `release()` at exit (also a context manager)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise PidFileError(f"cannot open pid file {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            text = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                who = f" as pid {text}" if text else ""
                raise PidFileError(f"fastcheck is already running{who} "
                                   f"(pid file {self.path} is locked)") from None
            raise PidFileError(f"cannot lock pid file {self.path}: {error.strerror}") from None
        # Ours now; whatever it held (a stale pid of a dead daemon) is replaced.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def running_pid(path: str) -> int:
    """The pid of the live daemon holding `path`; PidFileError when there is none."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise PidFileError(f"no pid file {path}: is fastcheck running?") from None
    except OSError as error:
        raise PidFileError(f"cannot read pid file {path}: {error.strerror}") from None
    pid = _parse(text, path)
    if not _alive(pid):
        raise PidFileError(f"pid file {path} names pid {pid}, which is not running (stale)")
    return pid
