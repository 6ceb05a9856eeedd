"""ha_suspend's eyes: the host's addresses from rtnetlink, and the checks they suspend.

Owns: `AddressWatch` — a NETLINK_ROUTE socket subscribed to IPv4 and IPv6 address events
(RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR) with a dump of the addresses present first,
kept as a set of (interface, address) on the daemon's loop (re-dumped if the kernel
dropped events: ENOBUFS) — and `VipTracker`, which opens it only while some virtual
server has ha_suspend (keepalived: `using_ha_suspend`), tells health whether each such
VS has its address (`set_vip_present`) at start, after every address change and after a
reload, and logs keepalived's lines.
Must not: decide what suspension means (health/ ignores the VS's results while its
address is absent), or match addresses itself (health/vips.py does).

keepalived 2.2.7 reference: check/check_daemon.c start_check (kernel_netlink_init before
register_checkers_thread, so the addresses are known before the first check),
check/check_api.c register_checkers_thread ("Deactivating healthchecker for service …")
and update_checker_activity ("Suspending/Activating healthchecker for service …"),
core/keepalived_netlink.c (IFA_LOCAL, else IFA_ADDRESS, of RTM_NEWADDR/RTM_DELADDR).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Callable
from typing import Final, Protocol

from fastcheck.health.vips import Address, Range, suspend_ranges, vip_present
from fastcheck.ipvs.genl import (
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    messages,
    parse_attrs,
)
from fastcheck.model import Config, RsKey, VsKey

from .log import checker_activity_message

log = logging.getLogger("fastcheck")

RTMGRP_IPV4_IFADDR: Final = 0x10
RTMGRP_IPV6_IFADDR: Final = 0x100
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFA_ADDRESS, IFA_LOCAL = 1, 2
_HEADER = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface

Entry = tuple[int, Address]  # (interface index, address)


def address_events(data: bytes) -> list[tuple[bool, Entry]]:
    """(added, (interface, address)) of each RTM_NEWADDR / RTM_DELADDR in `data`."""
    found = []
    for kind, _flags, _seq, payload in messages(data):
        if kind not in (RTM_NEWADDR, RTM_DELADDR) or len(payload) < _IFADDRMSG.size:
            continue
        family, _, _, _, index = _IFADDRMSG.unpack_from(payload)
        attrs = parse_attrs(payload, _IFADDRMSG.size)
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if raw is None or (family, len(raw)) not in ((socket.AF_INET, 4),
                                                      (socket.AF_INET6, 16)):
            continue
        version = 4 if family == socket.AF_INET else 6
        found.append((kind == RTM_NEWADDR, (index, (version, int.from_bytes(raw, "big")))))
    return found


class AddressWatch:
    """The host's addresses, kept current on `loop`; `on_change()` after each batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None]) -> None:
        self._loop = loop
        self._on_change = on_change
        self.entries: set[Entry] = set()
        self._seq = 0
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        try:
            self._sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            self._dump()
        except BaseException:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        loop.add_reader(self._sock.fileno(), self._readable)

    @property
    def present(self) -> set[Address]:
        return {addr for _, addr in self.entries}

    def _dump(self) -> None:
        """Asks for every address and reads until the dump ends (blocking, bounded)."""
        self._seq += 1
        body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        self._sock.settimeout(5.0)
        self._sock.send(_HEADER.pack(_HEADER.size + len(body), RTM_GETADDR,
                                     NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0) + body)
        self.entries.clear()
        done = False
        while not done:
            data = self._sock.recv(1 << 16)
            self._apply(data)
            for kind, _flags, seq, _payload in messages(data):
                if seq == self._seq and kind in (NLMSG_DONE, NLMSG_ERROR):
                    done = True

    def _apply(self, data: bytes) -> None:
        for added, entry in address_events(data):
            if added:
                self.entries.add(entry)
            else:
                self.entries.discard(entry)

    def _readable(self) -> None:
        try:
            while True:
                self._apply(self._sock.recv(1 << 16))
        except BlockingIOError:
            pass
        except OSError as error:
            if error.errno != errno.ENOBUFS:
                log.error("ha_suspend: reading address events failed: %s", error.strerror)
                return
            log.warning("ha_suspend: the kernel dropped address events; reading them again")
            try:
                self._dump()
            finally:
                self._sock.setblocking(False)
        self._on_change()

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


class Suspendable(Protocol):
    def set_vip_present(self, vs_key: VsKey, present: bool) -> list[object]: ...


class VipTracker:
    """ha_suspend for the daemon's Runtime: `follow(config)` at start and after reloads."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 health: Callable[[], Suspendable]) -> None:
        self._loop = loop
        self._health = health
        self._config: Config | None = None
        self._ranges: dict[VsKey, tuple[Range, ...]] = {}
        self._state: dict[VsKey, bool] = {}
        self._watch: AddressWatch | None = None

    def follow(self, config: Config) -> None:
        """The configuration (and health) now in force: opens or closes the address
        watch as ha_suspend is used or not, and tells health every VS's presence."""
        self._config = config
        self._ranges = suspend_ranges(config)
        self._state = {key: up for key, up in self._state.items() if key in self._ranges}
        if self._ranges and self._watch is None:
            self._watch = AddressWatch(self._loop, self._changed)
        elif not self._ranges and self._watch is not None:
            self._watch.close()
            self._watch = None
        self._changed(every=True)

    def _changed(self, every: bool = False) -> None:
        if self._watch is None or self._config is None:
            return
        present = self._watch.present
        health = self._health()
        by_key = {vs.key: vs for vs in self._config.virtual_servers}
        for key, ranges in self._ranges.items():
            now_present = vip_present(ranges, present)
            before = self._state.get(key)
            if every or before != now_present:
                health.set_vip_present(key, now_present)
            if before == now_present or (before is None and now_present):
                self._state[key] = now_present
                continue
            self._state[key] = now_present
            for rs in by_key[key].real_servers:
                text = checker_activity_message(RsKey(key, rs.address, rs.port),
                                                active=now_present, starting=before is None)
                for _ in rs.checks:  # one line per checker, as keepalived
                    log.info("%s", text)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
