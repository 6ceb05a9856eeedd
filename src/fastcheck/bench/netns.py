"""The `--netns` space: a network namespace with a veth pair, made for one run and removed.

Owns: creating `fcbench-<pid>` (veth `fcb<pid>h` here, `fcb<pid>n` inside), its addresses
and routes (198.18.0.0/16 local inside — every address answers, ICMP included —
198.19.0.0/17 a blackhole inside, both routed here through the veth), entering it to
create sockets there (`inside()`), removing it (which takes the veth and the routes with
it), and removing namespaces left by a bench that was killed outright (its pid is gone).
Must not: start processes other than `ip`, or touch any interface or route it did not make.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

from fastcheck.bench.layout import NETNS_BAD_NET, NETNS_GOOD_NET, NETNS_LINK
from fastcheck.netns import setns

PREFIX = "fcbench-"


class NetnsError(Exception):
    """The namespace could not be made; the message says what to change."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def _setns(fd: int) -> None:
    try:
        setns(fd)
    except OSError as error:
        raise NetnsError(f"cannot enter the bench namespace: {error.strerror}") from None


def remove_stale() -> list[str]:
    """Removes fcbench-<pid> namespaces whose bench process is gone; returns their names."""
    removed = []
    done = _ip("netns", "list", check=False)
    for line in done.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX):]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


class Namespace:
    """One bench namespace; `create()`, `inside()` while making sockets, `remove()`."""

    def __init__(self) -> None:
        pid = os.getpid()
        self.name = f"{PREFIX}{pid}"
        self.host_link = f"fcb{pid}h"
        self.inner_link = f"fcb{pid}n"
        self.created = False

    def create(self) -> None:
        if os.geteuid() != 0:
            raise NetnsError("--netns needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN to make a "
                             "network namespace and a veth pair): run as root or drop --netns")
        if shutil.which("ip") is None:
            raise NetnsError("--netns needs the `ip` command (iproute2): install it or drop "
                             "--netns")
        for net in (NETNS_GOOD_NET, NETNS_BAD_NET):
            routes = _ip("route", "show", "match", net.split("/")[0], check=False).stdout
            if any(not line.startswith("default") for line in routes.splitlines()):
                raise NetnsError(f"this host already routes {net}; --netns uses it for its "
                                 "targets: drop --netns")
        remove_stale()
        host, inner, prefix = NETNS_LINK
        try:
            _ip("netns", "add", self.name)
            self.created = True
            _ip("link", "add", self.host_link, "type", "veth", "peer", "name",
                self.inner_link, "netns", self.name)
            _ip("addr", "add", f"{host}/{prefix}", "dev", self.host_link)
            _ip("link", "set", self.host_link, "up")
            inside = ("-n", self.name)
            _ip(*inside, "link", "set", "lo", "up")
            _ip(*inside, "addr", "add", f"{inner}/{prefix}", "dev", self.inner_link)
            _ip(*inside, "link", "set", self.inner_link, "up")
            _ip(*inside, "route", "add", "local", NETNS_GOOD_NET, "dev", "lo")
            _ip(*inside, "route", "add", "blackhole", NETNS_BAD_NET)
            for net in (NETNS_GOOD_NET, NETNS_BAD_NET):
                _ip("route", "add", net, "via", inner, "dev", self.host_link)
        except BaseException:
            self.remove()
            raise

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Sockets created in this block belong to the namespace (and stay there)."""
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(target)
            os.close(home)

    def remove(self) -> None:
        """Deletes the namespace: its veth end goes with it, and so does ours and the
        routes through it. Idempotent."""
        if self.created:
            _ip("link", "del", self.host_link, check=False)
            _ip("netns", "del", self.name, check=False)
            self.created = False
