"""The interface every IPVS backend implements (kernel over netlink, or memory).

Owns: the `IpvsBackend` protocol, the result types it returns (failures, statistics,
kernel facts) and the rule that an add meeting EEXIST or a delete meeting ENOENT is not
a failure — the table already agrees.
Must not: decide what to apply (ipvs/reconcile.py does) or import pyroute2.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fastcheck.errors import IpvsError
from fastcheck.ipvs.ops import DestinationOp, LocalAddressOp, Op, ServiceOp, Verb
from fastcheck.ipvs.table import DestinationKey, ServiceKey, Table


@dataclass(frozen=True, slots=True)
class Counters:
    """Traffic counters of a service or destination, as the kernel keeps them."""

    connections: int = 0
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    active_connections: int = 0  # destinations only
    inactive_connections: int = 0  # destinations only


@dataclass(frozen=True, slots=True)
class ServiceStats:
    service: Counters
    destinations: dict[DestinationKey, Counters] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KernelInfo:
    version: str  # e.g. "1.2.1"
    connection_table_size: int
    fullnat: bool  # the running kernel accepts FULLNAT destinations and local addresses


@dataclass(frozen=True, slots=True)
class Timeouts:
    tcp_s: int
    tcpfin_s: int
    udp_s: int


@dataclass(frozen=True, slots=True)
class OpFailure:
    op: Op
    error: IpvsError


def describe_target(op: Op) -> str:
    if isinstance(op, ServiceOp):
        return f"service {op.service}"
    if isinstance(op, DestinationOp):
        return f"destination {op.destination} of service {op.service}"
    return f"local address {op.address} of service {op.service}"


def already_agrees(op: Op, code: int) -> bool:
    """EEXIST on an add and ENOENT (or ESRCH) on a delete mean nothing needs doing."""
    if op.verb is Verb.ADD:
        return code == errno.EEXIST
    if op.verb is Verb.DELETE:
        return code in (errno.ENOENT, errno.ESRCH)
    return False


FULLNAT_UNSUPPORTED = "FULLNAT is not supported by this kernel (it needs the Alibaba LVS patches)"


def needs_fullnat(op: Op) -> bool:
    """Local addresses and FULLNAT destinations exist only in FULLNAT kernels."""
    if isinstance(op, LocalAddressOp):
        return True
    settings = op.settings
    if isinstance(op, DestinationOp):
        return settings is not None and settings.method.value == "FNAT"
    return settings is not None and (settings.syn_proxy
                                     or settings.established_timeout_s is not None)


def failure(op: Op, code: int, detail: str = "") -> OpFailure:
    # errno.errorcode names 95 ENOTSUP; the kernel and ipvsadm say EOPNOTSUPP.
    reason = "EOPNOTSUPP" if code == errno.EOPNOTSUPP else errno.errorcode.get(code, str(code))
    text = f"{op.verb.value} {describe_target(op)} failed: {reason}"
    if detail:
        text += f" ({detail})"
    return OpFailure(op, IpvsError(text))


class IpvsBackend(Protocol):
    """What the daemon, `plan --kernel` and `ipvs show` need from an IPVS table."""

    name: str

    def read(self) -> Table:
        """The live table: services with their settings, destinations, local addresses."""
        ...

    def apply(self, ops: Sequence[Op]) -> list[OpFailure]:
        """Applies ops in order; returns those that failed (agreeing errors are not)."""
        ...

    def statistics(self) -> dict[ServiceKey, ServiceStats]:
        ...

    def info(self) -> KernelInfo:
        ...

    def flush(self) -> None:
        """Removes every service (ipvsadm -C)."""
        ...

    def timeouts(self) -> Timeouts:
        ...

    def set_timeouts(self, timeouts: Timeouts) -> None:
        ...

    def close(self) -> None:
        ...



def fullnat_conflicts(desired: Table, info: KernelInfo) -> list[str]:
    """One message per virtual server that needs FULLNAT from a kernel without it."""
    if info.fullnat:
        return []
    owners: dict[str, None] = {}
    for service in desired.values():
        settings = service.settings
        uses = (service.local_addresses or settings.syn_proxy
                or settings.established_timeout_s is not None
                or any(d.method.value == "FNAT" for d in service.destinations.values()))
        if uses:
            owners[str(service.owner) if service.owner else "?"] = None
    return [f"virtual server {owner} uses FULLNAT (lb_kind FNAT, laddr_group_name, syn_proxy "
            f"or est_timeout), but {FULLNAT_UNSUPPORTED}" for owner in owners]
