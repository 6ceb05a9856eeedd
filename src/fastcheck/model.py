"""The resolved configuration: frozen, slotted dataclasses with every default filled in.

Owns: the shape of a loaded configuration and the identity keys used to diff two of them
(`VsKey`, `RsKey`, `CheckKey`) and to share identical probes (`ProbeKey`).
Must not: know keepalived keyword spellings (config/keywords.py owns those), do I/O, or
hold mutable state. Units are explicit in field names (`_s` = seconds).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from fastcheck.errors import Position


class KeyEnum(enum.Enum):
    """An Enum that hashes by identity (members are singletons compared by identity).

    Enum's own __hash__ is Python code; identity keys of 40,000 real servers hash these
    members millions of times during a diff.
    """

    __hash__ = object.__hash__


class Protocol(KeyEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class Family(KeyEnum):
    INET = "inet"
    INET6 = "inet6"


class Method(KeyEnum):
    """IPVS forwarding method of a destination (FNAT exists only in FULLNAT kernels)."""

    NAT = "NAT"
    DR = "DR"
    TUN = "TUN"
    FNAT = "FNAT"


class TunnelType(KeyEnum):
    IPIP = "ipip"
    GUE = "gue"
    GRE = "gre"


class TunnelChecksum(KeyEnum):
    NOCSUM = "nocsum"
    CSUM = "csum"
    REMCSUM = "remcsum"


class SchedulerFlag(enum.IntFlag):
    """IPVS service flag bits a scheduler interprets (ipvsadm -b)."""

    FLAG_1 = 0x0008  # sh-fallback, mh-fallback
    FLAG_2 = 0x0010  # sh-port, mh-port
    FLAG_3 = 0x0020


class CheckKind(KeyEnum):
    TCP = "TCP_CHECK"
    HTTP = "HTTP_GET"
    HTTPS = "SSL_GET"
    SMTP = "SMTP_CHECK"
    DNS = "DNS_CHECK"
    UDP = "UDP_CHECK"
    PING = "PING_CHECK"
    MISC = "MISC_CHECK"
    FILE = "FILE_CHECK"


class VsKind(KeyEnum):
    ADDRESS = "address"
    FWMARK = "fwmark"
    GROUP = "group"


def family_of(address: str) -> Family:
    return Family.INET6 if ":" in address else Family.INET


def normalize_address(text: str) -> str:
    """Canonical text of an IP address; raises ValueError for anything else."""
    return ipaddress.ip_address(text).compressed


@dataclass(frozen=True, slots=True)
class Forwarding:
    method: Method = Method.NAT
    tunnel_type: TunnelType | None = None
    tunnel_port: int | None = None
    tunnel_checksum: TunnelChecksum | None = None


@dataclass(frozen=True, slots=True)
class Script:
    """An external command (notify, quorum, misc check), with the account it runs as."""

    command: str
    user: str | None = None
    group: str | None = None


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True, slots=True)
class UrlSpec:
    path: str
    digest: str | None = None
    status_codes: tuple[tuple[int, int], ...] = ((200, 299),)
    virtualhost: str | None = None
    regex: str | None = None
    regex_no_match: bool = False
    regex_options: tuple[str, ...] = ()
    regex_stack: tuple[int, int] | None = None
    regex_min_offset: int = 0
    regex_max_offset: int | None = None


@dataclass(frozen=True, slots=True)
class TcpParams:
    pass


@dataclass(frozen=True, slots=True)
class HttpParams:
    urls: tuple[UrlSpec, ...]
    http_protocol: str = "1.0"
    virtualhost: str | None = None
    fast_recovery: bool = False
    enable_sni: bool = False


@dataclass(frozen=True, slots=True)
class SmtpParams:
    helo_name: str


@dataclass(frozen=True, slots=True)
class DnsParams:
    query_type: str = "SOA"
    name: str = "."


@dataclass(frozen=True, slots=True)
class UdpParams:
    payload: bytes | None = None
    require_reply: bool = False
    reply_pattern: str | None = None  # hex nibbles, "x" = don't care
    min_reply_length: int = 0
    max_reply_length: int = 255


@dataclass(frozen=True, slots=True)
class PingParams:
    pass


@dataclass(frozen=True, slots=True)
class MiscParams:
    script: Script
    timeout_s: float
    dynamic: bool = False


@dataclass(frozen=True, slots=True)
class FileParams:
    track_file: str
    weight: int = 1
    reverse: bool = False
    dynamic: bool = False


CheckParams = (
    TcpParams | HttpParams | SmtpParams | DnsParams | UdpParams | PingParams | MiscParams
    | FileParams
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a probe connects to and from."""

    address: str
    port: int
    bind_address: str | None = None
    bind_interface: str | None = None
    bind_port: int | None = None
    fwmark: int | None = None


class ProbeKey(NamedTuple):
    """What makes two checks the same probe: run once, feed every owner."""

    kind: CheckKind
    target: Target
    connect_timeout_s: float
    params: CheckParams


@dataclass(frozen=True, slots=True)
class Check:
    kind: CheckKind
    target: Target
    params: CheckParams
    delay_loop_s: float
    connect_timeout_s: float
    retry: int
    delay_before_retry_s: float
    warmup_s: float
    alpha: bool
    log_all_failures: bool
    position: Position | None = field(default=None, compare=False)

    @property
    def probe_key(self) -> ProbeKey:
        return ProbeKey(self.kind, self.target, self.connect_timeout_s, self.params)


# --------------------------------------------------------------------------- servers


class VsKey(NamedTuple):
    """Identity of a virtual server across reloads."""

    kind: VsKind
    family: Family
    protocol: Protocol | None  # None for fwmark services
    address: str | None = None
    port: int | None = None
    fwmark: int | None = None
    group: str | None = None

    def __str__(self) -> str:
        proto = self.protocol.value if self.protocol else ""
        if self.kind is VsKind.FWMARK:
            return f"FWM {self.fwmark}" + (" IPv6" if self.family is Family.INET6 else "")
        if self.kind is VsKind.GROUP:
            return f"group {self.group} {proto}"
        return f"{proto} {format_endpoint(self.address or '', self.port)}"


class RsKey(NamedTuple):
    vs: VsKey
    address: str
    port: int

    def __str__(self) -> str:
        return f"{format_endpoint(self.address, self.port)} of {self.vs}"


class CheckKey(NamedTuple):
    rs: RsKey
    probe: ProbeKey
    ordinal: int  # n-th identical check on the same real server (normally 0)


def format_endpoint(address: str, port: int | None) -> str:
    host = f"[{address}]" if ":" in address else address
    return host if port is None else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class RealServer:
    address: str
    port: int
    weight: int
    forwarding: Forwarding
    inhibit_on_failure: bool
    alpha: bool
    smtp_alert: bool
    checks: tuple[Check, ...]
    notify_up: Script | None = None
    notify_down: Script | None = None
    upper_threshold: int = 0
    lower_threshold: int = 0
    virtualhost: str | None = None
    position: Position | None = field(default=None, compare=False)

    def check_keys(self, rs_key: RsKey) -> Iterator[tuple[CheckKey, Check]]:
        seen: dict[ProbeKey, int] = {}
        for check in self.checks:
            probe = check.probe_key
            ordinal = seen.get(probe, 0)
            seen[probe] = ordinal + 1
            yield CheckKey(rs_key, probe, ordinal), check


@dataclass(frozen=True, slots=True)
class SorryServer:
    address: str
    port: int
    forwarding: Forwarding
    inhibit: bool = False


@dataclass(frozen=True, slots=True)
class GroupEntry:
    """One line of a virtual_server_group: an address range with a port, or a fwmark."""

    first: str | None = None
    last: str | None = None  # == first for a single address
    port: int | None = None
    fwmark: int | None = None
    family: Family = Family.INET
    position: Position | None = field(default=None, compare=False)

    def addresses(self) -> Iterator[str]:
        if self.first is None or self.last is None:
            return
        start = int(ipaddress.ip_address(self.first))
        end = int(ipaddress.ip_address(self.last))
        make = ipaddress.IPv6Address if self.family is Family.INET6 else ipaddress.IPv4Address
        for value in range(start, end + 1):
            yield make(value).compressed


@dataclass(frozen=True, slots=True)
class VirtualServerGroup:
    name: str
    entries: tuple[GroupEntry, ...]
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class LocalAddressGroup:
    """FULLNAT local (source) addresses a director uses towards real servers."""

    name: str
    addresses: tuple[str, ...]
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class VirtualServer:
    kind: VsKind
    family: Family
    protocol: Protocol
    address: str | None
    port: int | None
    fwmark: int | None
    group: str | None
    scheduler: str
    scheduler_flags: SchedulerFlag
    one_packet: bool
    forwarding: Forwarding
    persistence_timeout_s: int | None
    persistence_granularity: str | None
    persistence_engine: str | None
    delay_loop_s: float
    ha_suspend: bool
    alpha: bool
    omega: bool
    quorum: int
    hysteresis: int
    quorum_up: Script | None
    quorum_down: Script | None
    inhibit_on_failure: bool
    smtp_alert: bool
    virtualhost: str | None
    sorry_server: SorryServer | None
    real_servers: tuple[RealServer, ...]
    local_address_group: str | None = None
    syn_proxy: bool = False
    vip_bind_dev: str | None = None
    established_timeout_s: int | None = None
    snmp_name: str | None = None
    position: Position | None = field(default=None, compare=False)

    @property
    def key(self) -> VsKey:
        protocol = None if self.kind is VsKind.FWMARK else self.protocol
        return VsKey(self.kind, self.family, protocol, self.address, self.port, self.fwmark,
                     self.group)

    def rs_key(self, rs: RealServer) -> RsKey:
        return RsKey(self.key, rs.address, rs.port)


@dataclass(frozen=True, slots=True)
class LvsTimeouts:
    tcp_s: int | None = None
    tcpfin_s: int | None = None
    udp_s: int | None = None


@dataclass(frozen=True, slots=True)
class GlobalDefs:
    router_id: str | None = None
    notification_email: tuple[str, ...] = ()
    notification_email_from: str | None = None
    smtp_server: str | None = None
    smtp_port: int = 25
    smtp_connect_timeout_s: float = 30.0
    smtp_helo_name: str | None = None
    smtp_alert: bool | None = None
    smtp_alert_checker: bool | None = None
    script_user: str | None = None
    script_group: str | None = None
    enable_script_security: bool = False
    lvs_timeouts: LvsTimeouts = LvsTimeouts()
    lvs_flush: bool = False
    lvs_flush_on_stop: str = "off"  # "off" | "all" | "vs"
    checker_log_all_failures: bool = False
    rs_init_notifies: bool = False
    no_checker_emails: bool = False
    lvs_notify_fifo: Script | None = None  # path [user [group]], keepalived's line format
    net_namespace: str | None = None  # top-level `net_namespace NAME`


@dataclass(frozen=True, slots=True)
class SslConfig:
    password: str | None = None
    ca: str | None = None
    certificate: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class TrackFile:
    name: str
    path: str
    weight: int = 1
    reverse: bool = False
    init_value: int | None = None
    init_overwrite: bool = False
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Config:
    global_defs: GlobalDefs
    ssl: SslConfig | None
    track_files: tuple[TrackFile, ...]
    vs_groups: tuple[VirtualServerGroup, ...]
    local_address_groups: tuple[LocalAddressGroup, ...]
    virtual_servers: tuple[VirtualServer, ...]

    def vs_group(self, name: str) -> VirtualServerGroup | None:
        return next((g for g in self.vs_groups if g.name == name), None)

    def local_address_group(self, name: str) -> LocalAddressGroup | None:
        return next((g for g in self.local_address_groups if g.name == name), None)
