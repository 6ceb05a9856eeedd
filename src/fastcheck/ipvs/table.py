"""The IPVS table as data: kernel services, their destinations and local addresses.

Owns: the table shape every IPVS component speaks (desired, observed, memory backend)
and `desired_table(config)`, the table a configuration asks for when every real server
is healthy — virtual_server_group entries expanded to one kernel service each.
Must not: talk to the kernel or decide health.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from fastcheck.model import (
    Config,
    Family,
    Method,
    Protocol,
    SchedulerFlag,
    TunnelChecksum,
    TunnelType,
    VirtualServer,
    VsKey,
    VsKind,
    format_endpoint,
)

NO_FLAGS = SchedulerFlag(0)


class ServiceKey(NamedTuple):
    """How the kernel names a service: (family, protocol, address, port) or (family, fwmark)."""

    family: Family
    protocol: Protocol | None
    address: str | None
    port: int
    fwmark: int

    def __str__(self) -> str:
        if self.fwmark:
            return f"FWM  {self.fwmark}" + (" IPv6" if self.family is Family.INET6 else "")
        proto = self.protocol.value if self.protocol else "?"
        return f"{proto:<4} {format_endpoint(self.address or '', self.port)}"

    def sort_key(self) -> tuple[int, int, int, str, int]:
        proto = self.protocol.value if self.protocol else ""
        number = int(ipaddress.ip_address(self.address)) if self.address else 0
        return (0 if self.family is Family.INET else 1, self.fwmark, number, proto, self.port)


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """The editable attributes of a kernel service."""

    scheduler: str = "wlc"
    flags: SchedulerFlag = NO_FLAGS
    one_packet: bool = False
    persistence_timeout_s: int = 0
    netmask: str | None = None
    persistence_engine: str | None = None
    syn_proxy: bool = False
    established_timeout_s: int | None = None

    def describe(self) -> str:
        parts = [self.scheduler]
        if self.flags:
            parts.append(f"flags 0x{int(self.flags):x}")
        if self.one_packet:
            parts.append("ops")
        if self.persistence_timeout_s:
            parts.append(f"persistent {self.persistence_timeout_s}")
            if self.netmask not in (None, *FULL_NETMASK.values()):
                parts.append(f"mask {self.netmask}")
        if self.persistence_engine:
            parts.append(f"pe {self.persistence_engine}")
        if self.syn_proxy:
            parts.append("synproxy")
        if self.established_timeout_s is not None:
            parts.append(f"est_timeout {self.established_timeout_s}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class DestinationSettings:
    """The editable attributes of a destination (real server) in a service."""

    weight: int = 1
    method: Method = Method.NAT
    upper_threshold: int = 0
    lower_threshold: int = 0
    tunnel_type: TunnelType | None = None
    tunnel_port: int | None = None
    tunnel_checksum: TunnelChecksum | None = None


class DestinationKey(NamedTuple):
    address: str
    port: int

    def __str__(self) -> str:
        return format_endpoint(self.address, self.port)


METHOD_NAMES = {Method.NAT: "Masq", Method.DR: "Route", Method.TUN: "Tunnel",
                Method.FNAT: "FullNat"}


@dataclass(slots=True)
class Service:
    settings: ServiceSettings
    destinations: dict[DestinationKey, DestinationSettings] = field(default_factory=dict)
    local_addresses: frozenset[str] = frozenset()
    owner: VsKey | None = field(default=None, compare=False)  # desired tables only


Table = dict[ServiceKey, Service]


def service_keys(vs: VirtualServer, config: Config) -> Iterator[ServiceKey]:
    """The kernel services one virtual server stands for (groups expand to many)."""
    proto = vs.protocol
    if vs.kind is VsKind.ADDRESS:
        yield ServiceKey(vs.family, proto, vs.address, vs.port or 0, 0)
    elif vs.kind is VsKind.FWMARK:
        yield ServiceKey(vs.family, None, None, 0, vs.fwmark or 0)
    else:
        group = config.vs_group(vs.group or "")
        for entry in group.entries if group else ():
            if entry.fwmark is not None:
                yield ServiceKey(entry.family, None, None, 0, entry.fwmark)
                continue
            for address in entry.addresses():
                yield ServiceKey(entry.family, proto, address, entry.port or 0, 0)


FULL_NETMASK = {Family.INET: "255.255.255.255", Family.INET6: "128"}


def service_settings(vs: VirtualServer, family: Family) -> ServiceSettings:
    """Canonical settings, as a backend reads them back: a full netmask is None."""
    netmask = vs.persistence_granularity
    return ServiceSettings(
        scheduler=vs.scheduler, flags=vs.scheduler_flags, one_packet=vs.one_packet,
        persistence_timeout_s=vs.persistence_timeout_s or 0,
        netmask=None if netmask == FULL_NETMASK[family] else netmask,
        persistence_engine=vs.persistence_engine,
        syn_proxy=vs.syn_proxy, established_timeout_s=vs.established_timeout_s)


def desired_table(config: Config) -> Table:
    """Every service the configuration defines, with every real server at its weight."""
    table: Table = {}
    for vs in config.virtual_servers:
        settings = {family: service_settings(vs, family) for family in Family}
        destinations = {
            DestinationKey(rs.address, rs.port): DestinationSettings(
                weight=rs.weight, method=rs.forwarding.method,
                upper_threshold=rs.upper_threshold, lower_threshold=rs.lower_threshold,
                # Canonical as read back: ipip and nocsum are the kernel's defaults.
                tunnel_type=None if rs.forwarding.tunnel_type is TunnelType.IPIP
                else rs.forwarding.tunnel_type,
                tunnel_port=rs.forwarding.tunnel_port,
                tunnel_checksum=None if rs.forwarding.tunnel_checksum is TunnelChecksum.NOCSUM
                else rs.forwarding.tunnel_checksum)
            for rs in vs.real_servers
        }
        laddrs: frozenset[str] = frozenset()
        if vs.local_address_group:
            group = config.local_address_group(vs.local_address_group)
            laddrs = frozenset(group.addresses) if group else frozenset()
        for key in service_keys(vs, config):
            # FULLNAT local addresses belong to address services only (the Alibaba fork
            # skips fwmark services and fwmark group entries).
            table[key] = Service(settings[key.family], dict(destinations),
                                 frozenset() if key.fwmark else laddrs, vs.key)
    return table
