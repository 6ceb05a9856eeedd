"""Entering a network namespace: keepalived's `net_namespace`, for the daemon and its workers.

Owns: finding a named namespace where `ip netns add` puts it (/run/netns/NAME, then
/var/run/netns/NAME), entering it with setns(2), keeping its file descriptor open for the
daemon's life so that every probe worker started later (restarts included) enters the very
same namespace through it, and checking that the whole process moved (setns moves only the
calling thread: a thread started earlier would stay behind, so this is refused).
Must not: create or delete namespaces, read the configuration, or run once a socket or a
thread exists — the daemon calls it first thing, before its netlink sockets, listeners and
probe workers (keepalived core/main.c calls set_namespaces() before anything else too).

setns goes through ctypes on libc: one call, standard library only (os.setns arrives in
Python 3.12).

keepalived 2.2.7 reference: core/namespaces.c set_namespaces() opens RUNSTATEDIR
"/netns/" NAME and calls setns(fd, CLONE_NEWNET); core/main.c exits with "Unable to set
network namespace NAME - exiting" when that fails. keepalived also moves its pid files under
a private mount of /run/keepalived/NAME; fastcheck keeps the pid file it is given.
"""

from __future__ import annotations

import ctypes
import os
from typing import Final

from fastcheck.errors import FastcheckError

__all__ = ["NETNS_DIRS", "NamespaceError", "NetNamespace", "enter_fd", "enter_namespace",
           "namespace_path", "setns"]

CLONE_NEWNET: Final = 0x40000000
NETNS_DIRS: Final = ("/run/netns", "/var/run/netns")


class NamespaceError(FastcheckError):
    """The namespace cannot be used; the message says which and why."""


def setns(fd: int) -> None:
    """Moves the calling thread into the network namespace open at `fd` (OSError)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def namespace_path(name: str, dirs: tuple[str, ...] = NETNS_DIRS) -> str:
    """Where the namespace `name` is mounted; NamespaceError when nowhere."""
    if not name or "/" in name or name in (".", ".."):
        raise NamespaceError(f"net_namespace {name!r} is not a namespace name")
    for directory in dirs:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    tried = " or ".join(os.path.join(d, name) for d in dirs)
    raise NamespaceError(f"net_namespace {name!r} does not exist (no {tried}); "
                         f"create it with `ip netns add {name}`")


def _ns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


class NetNamespace:
    """A named namespace this process has entered; `fd` stays open until `close()`."""

    __slots__ = ("fd", "name", "path")

    def __init__(self, name: str, path: str, fd: int) -> None:
        self.name, self.path, self.fd = name, path, fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self) -> str:
        return f"NetNamespace({self.name!r}, fd={self.fd})"


def enter_namespace(name: str, dirs: tuple[str, ...] = NETNS_DIRS) -> NetNamespace:
    """Moves this (single-threaded) process into the namespace `name`."""
    path = namespace_path(name, dirs)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise NamespaceError(f"net_namespace {name!r}: cannot open {path}: "
                             f"{error.strerror}") from None
    try:
        _enter(fd, f"net_namespace {name!r} ({path})")
    except BaseException:
        os.close(fd)
        raise
    return NetNamespace(name, path, fd)


def enter_fd(fd: int, what: str = "the daemon's network namespace") -> None:
    """A probe worker's entry: the namespace open at `fd` (inherited from the daemon)."""
    _enter(fd, what)


def _enter(fd: int, what: str) -> None:
    try:
        setns(fd)
    except OSError as error:
        hint = " (entering a namespace needs CAP_SYS_ADMIN: run as root)" \
            if error.errno == 1 else ""
        raise NamespaceError(f"cannot enter {what}: {error.strerror}{hint}") from None
    target = os.fstat(fd)
    left = [task for task in os.listdir("/proc/self/task")
            if _ns_id(f"/proc/self/task/{task}/ns/net") != (target.st_dev, target.st_ino)]
    if left:
        raise NamespaceError(f"cannot enter {what}: {len(left)} thread(s) of this process "
                             "started before it and stay outside (a bug: the namespace must be "
                             "entered first thing)")
