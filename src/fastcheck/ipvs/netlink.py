"""The kernel's IPVS table over generic netlink: the backend the daemon runs on.

Owns: `NetlinkBackend` — the table model (ipvs/table.py) turned into IPVS generic-netlink
attributes and back, ops applied in windows with each kernel error matched to the op
that caused it, and kernel facts (IPVS version, timeouts, FULLNAT support).
pyroute2 is imported here only, lazily, as the reference encoder (`encoder="pyroute2"`):
its IPVS message classes with the two attribute types it declares wrongly corrected.
The default encoder writes the same bytes with `struct` over 20 times faster (the tests
hold both to the same bytes and to the kernel). pyroute2's IPVS socket is not used: it
runs a private asyncio loop that cannot be entered from a running loop, cannot window
requests, and its `service("update")` sends IPVS_CMD_DEL_SERVICE.
Must not: decide what to apply (ipvs/reconcile.py does), shell out to ipvsadm, or keep
table state between calls.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

from fastcheck.errors import IpvsError
from fastcheck.ipvs import genl
from fastcheck.ipvs.backend import (
    FULLNAT_UNSUPPORTED,
    Counters,
    KernelInfo,
    OpFailure,
    ServiceStats,
    Timeouts,
    already_agrees,
    failure,
    needs_fullnat,
)
from fastcheck.ipvs.ops import DestinationOp, LocalAddressOp, Op, ServiceOp, Verb
from fastcheck.ipvs.table import (
    DestinationKey,
    DestinationSettings,
    Service,
    ServiceKey,
    ServiceSettings,
    Table,
)
from fastcheck.model import (
    Family,
    Method,
    Protocol,
    SchedulerFlag,
    TunnelChecksum,
    TunnelType,
)

# include/uapi/linux/ip_vs.h
GENL_NAME = "IPVS"
GENL_VERSION = 1
CMD_NEW_SERVICE, CMD_SET_SERVICE, CMD_DEL_SERVICE, CMD_GET_SERVICE = 1, 2, 3, 4
CMD_NEW_DEST, CMD_SET_DEST, CMD_DEL_DEST, CMD_GET_DEST = 5, 6, 7, 8
CMD_SET_CONFIG, CMD_GET_CONFIG, CMD_GET_INFO, CMD_FLUSH = 12, 13, 15, 17
ATTR_SERVICE, ATTR_DEST = 1, 2
ATTR_TIMEOUT_TCP, ATTR_TIMEOUT_TCP_FIN, ATTR_TIMEOUT_UDP = 4, 5, 6
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK = 1, 2, 3, 4, 5
SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK = 6, 7, 8, 9
SVC_STATS, SVC_PE_NAME, SVC_STATS64 = 10, 11, 12
DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT = 1, 2, 3, 4
DEST_U_THRESH, DEST_L_THRESH, DEST_ACTIVE_CONNS, DEST_INACT_CONNS = 5, 6, 7, 8
DEST_STATS, DEST_ADDR_FAMILY, DEST_STATS64 = 10, 11, 12
DEST_TUN_TYPE, DEST_TUN_PORT, DEST_TUN_FLAGS = 13, 14, 15
STATS_CONNS, STATS_INPKTS, STATS_OUTPKTS, STATS_INBYTES, STATS_OUTBYTES = 1, 2, 3, 4, 5
INFO_VERSION, INFO_CONN_TAB_SIZE = 1, 2
SVC_F_PERSISTENT, SVC_F_ONEPACKET, SVC_F_SCHED_MASK = 0x1, 0x4, 0x38
CONN_F_FWD_MASK = 0x7  # older kernels report the whole conn_flags (0x80 NOOUTPUT …)

_AF = {Family.INET: socket.AF_INET, Family.INET6: socket.AF_INET6}
_FAMILY = {socket.AF_INET: Family.INET, socket.AF_INET6: Family.INET6}
_PROTO = {Protocol.TCP: socket.IPPROTO_TCP, Protocol.UDP: socket.IPPROTO_UDP,
          Protocol.SCTP: 132}
_PROTOCOL = {number: proto for proto, number in _PROTO.items()}
_FWD = {Method.NAT: 0, Method.TUN: 2, Method.DR: 3}
# 1 is LOCALNODE (a masqueraded destination on this host; ipvsadm shows "Local") and
# 5 is IP_VS_CONN_F_FULLNAT in patched kernels; 4 (BYPASS) is never a destination's.
_METHOD = {0: Method.NAT, 1: Method.NAT, 2: Method.TUN, 3: Method.DR, 5: Method.FNAT}
_TUN_TYPE = {TunnelType.IPIP: 0, TunnelType.GUE: 1, TunnelType.GRE: 2}
_TUN_FLAGS = {TunnelChecksum.NOCSUM: 0, TunnelChecksum.CSUM: 1, TunnelChecksum.REMCSUM: 2}
_FULL_MASK4 = "255.255.255.255"
_FULLNAT_UNDRIVEN = ("this kernel has FULLNAT commands, but fastcheck's netlink backend "
                     "does not drive them yet")

Fields = list[tuple[str, Any]]  # attribute name (without prefix) and its value, in order
Request = tuple[int, Fields, Fields | None]  # command, service fields, destination fields


class _Refused(Exception):
    """An op that is not sent: the kernel cannot do it, or its values cannot be encoded."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# --------------------------------------------------------------------------- ops → fields


def service_fields(key: ServiceKey) -> Fields:
    """The attributes naming a service."""
    fields: Fields = [("AF", _AF[key.family])]
    if key.fwmark:
        fields.append(("FWMARK", key.fwmark))
    else:
        if key.protocol is None or key.address is None:
            raise _Refused(errno.EINVAL, "a service needs a protocol and an address")
        fields += [("PROTOCOL", _PROTO[key.protocol]), ("ADDR", key.address),
                   ("PORT", key.port)]
    return fields


def netmask_bytes(family: Family, netmask: str | None) -> bytes:
    """The kernel's raw netmask: an IPv4 mask in network order, an IPv6 prefix length
    as a host-order u32 (an IPv6 service without one is refused with EINVAL)."""
    try:
        if family is Family.INET6:
            return struct.pack("=I", int(netmask) if netmask else 128)
        return socket.inet_aton(netmask or _FULL_MASK4)
    except (OSError, ValueError, struct.error):
        raise _Refused(errno.EINVAL, f"bad persistence netmask {netmask!r}") from None


def settings_fields(key: ServiceKey, settings: ServiceSettings) -> Fields:
    """The attributes a full service (add or set) carries after its name."""
    flags = int(settings.flags) & SVC_F_SCHED_MASK
    if settings.one_packet:
        flags |= SVC_F_ONEPACKET
    if settings.persistence_timeout_s:
        flags |= SVC_F_PERSISTENT
    fields: Fields = [("SCHED_NAME", settings.scheduler)]
    if settings.persistence_engine:
        fields.append(("PE_NAME", settings.persistence_engine))
    fields += [("FLAGS", (flags, 0xFFFFFFFF)), ("TIMEOUT", settings.persistence_timeout_s),
               ("NETMASK", netmask_bytes(key.family, settings.netmask))]
    return fields


def destination_fields(dest: DestinationKey, settings: DestinationSettings | None) -> Fields:
    family = socket.AF_INET6 if ":" in dest.address else socket.AF_INET
    fields: Fields = [("ADDR_FAMILY", family), ("ADDR", dest.address), ("PORT", dest.port)]
    if settings is None:
        return fields
    fields += [("FWD_METHOD", _FWD[settings.method]), ("WEIGHT", settings.weight),
               ("U_THRESH", settings.upper_threshold), ("L_THRESH", settings.lower_threshold)]
    if settings.method is Method.TUN:
        kind = settings.tunnel_type or TunnelType.IPIP
        fields += [("TUN_TYPE", _TUN_TYPE[kind]),
                   ("TUN_PORT", (settings.tunnel_port or 0) if kind is TunnelType.GUE else 0),
                   ("TUN_FLAGS", _TUN_FLAGS[settings.tunnel_checksum or
                                            TunnelChecksum.NOCSUM])]
    return fields


def request_of(op: Op, fullnat: bool = False) -> Request:
    """The command and attributes an op becomes; raises _Refused when it cannot be sent.

    FULLNAT destinations, local addresses, syn_proxy and est_timeout need a patched
    kernel; on a stock one they are refused without asking it.
    """
    if needs_fullnat(op) or isinstance(op, LocalAddressOp):
        raise _Refused(errno.EOPNOTSUPP, _FULLNAT_UNDRIVEN if fullnat else FULLNAT_UNSUPPORTED)
    service = service_fields(op.service)
    if isinstance(op, ServiceOp):
        if op.verb is Verb.DELETE:
            return CMD_DEL_SERVICE, service, None
        settings = op.settings or ServiceSettings()
        # An edit is IPVS_CMD_SET_SERVICE, which keeps the destinations (never del + add).
        command = CMD_NEW_SERVICE if op.verb is Verb.ADD else CMD_SET_SERVICE
        return command, service + settings_fields(op.service, settings), None
    if op.verb is Verb.DELETE:
        return CMD_DEL_DEST, service, destination_fields(op.destination, None)
    settings = op.settings or DestinationSettings()
    command = CMD_NEW_DEST if op.verb is Verb.ADD else CMD_SET_DEST
    return command, service, destination_fields(op.destination, settings)


# --------------------------------------------------------------------------- encoders


def _addr(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


_U8, _U16, _U32, _BE16 = (struct.Struct(f) for f in ("=B", "=H", "=I", ">H"))
_PACKERS: dict[str, tuple[dict[str, int], dict[str, Callable[[Any], bytes]]]] = {
    "SVC": ({"AF": SVC_AF, "PROTOCOL": SVC_PROTOCOL, "ADDR": SVC_ADDR, "PORT": SVC_PORT,
             "FWMARK": SVC_FWMARK, "SCHED_NAME": SVC_SCHED_NAME, "FLAGS": SVC_FLAGS,
             "TIMEOUT": SVC_TIMEOUT, "NETMASK": SVC_NETMASK, "PE_NAME": SVC_PE_NAME},
            {"AF": _U16.pack, "PROTOCOL": _U16.pack, "ADDR": _addr, "PORT": _BE16.pack,
             "FWMARK": _U32.pack, "SCHED_NAME": lambda s: s.encode() + b"\0",
             "FLAGS": lambda f: struct.pack("=II", *f), "TIMEOUT": _U32.pack,
             "NETMASK": bytes, "PE_NAME": lambda s: s.encode() + b"\0"}),
    "DEST": ({"ADDR": DEST_ADDR, "PORT": DEST_PORT, "FWD_METHOD": DEST_FWD_METHOD,
              "WEIGHT": DEST_WEIGHT, "U_THRESH": DEST_U_THRESH, "L_THRESH": DEST_L_THRESH,
              "ADDR_FAMILY": DEST_ADDR_FAMILY, "TUN_TYPE": DEST_TUN_TYPE,
              "TUN_PORT": DEST_TUN_PORT, "TUN_FLAGS": DEST_TUN_FLAGS},
             {"ADDR": _addr, "PORT": _BE16.pack, "FWD_METHOD": _U32.pack, "WEIGHT": _U32.pack,
              "U_THRESH": _U32.pack, "L_THRESH": _U32.pack, "ADDR_FAMILY": _U16.pack,
              "TUN_TYPE": _U8.pack, "TUN_PORT": _BE16.pack, "TUN_FLAGS": _U16.pack}),
}


def _nest(kind: int, section: str, fields: Fields) -> bytes:
    numbers, packers = _PACKERS[section]
    return genl.nested(kind, *(genl.attr(numbers[name], packers[name](value))
                               for name, value in fields))


def encode_struct(request: Request) -> bytes:
    """The generic-netlink payload of a request, built with struct (the default)."""
    command, service, dest = request
    body = _nest(ATTR_SERVICE, "SVC", service)
    if dest is not None:
        body += _nest(ATTR_DEST, "DEST", dest)
    return genl.genl_payload(command, GENL_VERSION, body)


def encode_op(op: Op, fullnat: bool = False,
              identities: dict[ServiceKey, bytes] | None = None) -> bytes:
    """`encode_struct(request_of(op))`; with `identities`, a service's part is built once
    and reused by every destination op of that service."""
    command, service, dest = request_of(op, fullnat)
    if dest is None or identities is None:
        return encode_struct((command, service, dest))
    ident = identities.get(op.service)
    if ident is None:
        ident = identities[op.service] = _nest(ATTR_SERVICE, "SVC", service)
    return genl.genl_payload(command, GENL_VERSION, ident + _nest(ATTR_DEST, "DEST", dest))


class Pyroute2Encoder:
    """The same payloads built with pyroute2's IPVS message classes (the reference).

    pyroute2 declares IPVS_SVC_ATTR_NETMASK as an IPv4 address (an IPv6 service needs a
    prefix length there) and IPVS_DEST_ATTR_TUN_PORT as host-order u16 (the kernel reads
    big-endian); both are corrected here. pyroute2 caches compiled attribute maps per
    class, inherited by subclasses, so each subclass resets that cache.
    """

    def __init__(self) -> None:
        from pyroute2.netlink.generic import ipvs  # only this path needs pyroute2

        def patched(nla_map: Any, fixes: dict[str, str]) -> tuple[tuple[str, str], ...]:
            return tuple((name, fixes.get(name, kind)) for name, kind in nla_map)

        class service(ipvs.ipvsmsg.service):  # pyroute2 looks it up by name
            _nlmsg_base__compiled_nla = False
            nla_map = patched(ipvs.ipvsmsg.service.nla_map, {"IPVS_SVC_ATTR_NETMASK": "cdata"})

        class dest(ipvs.ipvsmsg.dest):
            _nlmsg_base__compiled_nla = False
            nla_map = patched(ipvs.ipvsmsg.dest.nla_map, {"IPVS_DEST_ATTR_TUN_PORT": "be16"})

        class message(ipvs.ipvsmsg):
            _nlmsg_base__compiled_nla = False
            nla_map = ipvs.ipvsmsg.nla_map

        message.service, message.dest = service, dest  # type: ignore[attr-defined]
        self._message = message

    def __call__(self, request: Request) -> bytes:
        command, service, dest = request

        def nla(prefix: str, fields: Fields) -> dict[str, Any]:
            return {"attrs": [(prefix + name, {"flags": value[0], "mask": value[1]}
                               if name == "FLAGS" else value) for name, value in fields]}

        msg = self._message()
        msg["cmd"] = command
        msg["version"] = GENL_VERSION
        msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", nla("IPVS_SVC_ATTR_", service))]
        if dest is not None:
            msg["attrs"].append(("IPVS_CMD_ATTR_DEST", nla("IPVS_DEST_ATTR_", dest)))
        msg.encode()
        return bytes(msg.data[16:msg["header"]["length"]])


# --------------------------------------------------------------------------- attrs → table


def _address(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw[:16 if family == socket.AF_INET6 else 4])


def parse_service(attrs: genl.Attrs) -> tuple[ServiceKey, ServiceSettings] | None:
    """A dumped service, or None for one the model cannot express (another protocol)."""
    af = genl.get_u16(attrs[SVC_AF])
    family = _FAMILY.get(af)
    if family is None:
        return None
    if SVC_FWMARK in attrs:
        key = ServiceKey(family, None, None, 0, genl.get_u32(attrs[SVC_FWMARK]))
    else:
        protocol = _PROTOCOL.get(genl.get_u16(attrs[SVC_PROTOCOL]))
        if protocol is None:
            return None
        key = ServiceKey(family, protocol, _address(af, attrs[SVC_ADDR]),
                         genl.get_be16(attrs[SVC_PORT]), 0)
    flags = struct.unpack_from("=I", attrs[SVC_FLAGS])[0]
    persistent = bool(flags & SVC_F_PERSISTENT)
    pe = genl.get_str(attrs[SVC_PE_NAME]) if SVC_PE_NAME in attrs else ""
    return key, ServiceSettings(
        scheduler=genl.get_str(attrs[SVC_SCHED_NAME]),
        flags=SchedulerFlag(flags & SVC_F_SCHED_MASK),
        one_packet=bool(flags & SVC_F_ONEPACKET),
        persistence_timeout_s=genl.get_u32(attrs[SVC_TIMEOUT]) if persistent else 0,
        netmask=_netmask_text(family, attrs.get(SVC_NETMASK)),
        persistence_engine=pe or None)


def _netmask_text(family: Family, raw: bytes | None) -> str | None:
    """The model's netmask: None for a full mask, else a dotted mask or prefix length."""
    if raw is None:
        return None
    if family is Family.INET6:
        length = genl.get_u32(raw)
        return None if length == 128 else str(length)
    text = socket.inet_ntoa(raw[:4])
    return None if text == _FULL_MASK4 else text


def parse_destination(attrs: genl.Attrs, family: Family
                      ) -> tuple[DestinationKey, DestinationSettings]:
    af = (genl.get_u16(attrs[DEST_ADDR_FAMILY]) if DEST_ADDR_FAMILY in attrs
          else _AF[family])
    forwarding = genl.get_u32(attrs[DEST_FWD_METHOD]) & CONN_F_FWD_MASK
    method = _METHOD.get(forwarding, Method.NAT)
    kind = port = checksum = None
    if method is Method.TUN:
        number = genl.get_u8(attrs[DEST_TUN_TYPE]) if DEST_TUN_TYPE in attrs else 0
        kind = {1: TunnelType.GUE, 2: TunnelType.GRE}.get(number)  # IPIP is the default
        if kind is TunnelType.GUE and DEST_TUN_PORT in attrs:
            port = genl.get_be16(attrs[DEST_TUN_PORT])
        bits = genl.get_u16(attrs[DEST_TUN_FLAGS]) if DEST_TUN_FLAGS in attrs else 0
        checksum = (TunnelChecksum.REMCSUM if bits & 2 else
                    TunnelChecksum.CSUM if bits & 1 else None)
    key = DestinationKey(_address(af, attrs[DEST_ADDR]), genl.get_be16(attrs[DEST_PORT]))
    return key, DestinationSettings(
        weight=genl.get_u32(attrs[DEST_WEIGHT]), method=method,
        upper_threshold=genl.get_u32(attrs[DEST_U_THRESH]),
        lower_threshold=genl.get_u32(attrs[DEST_L_THRESH]),
        tunnel_type=kind, tunnel_port=port, tunnel_checksum=checksum)


def parse_counters(attrs: genl.Attrs, stats64: int, stats32: int,
                   active: int = 0, inactive: int = 0) -> Counters:
    """Traffic counters, from the 64-bit set when the kernel sends it (≥ 4.1)."""
    raw = attrs.get(stats64) or attrs.get(stats32)
    stats = genl.parse_attrs(raw) if raw else {}

    def get(kind: int) -> int:
        return genl.get_uint(stats[kind]) if kind in stats else 0

    return Counters(connections=get(STATS_CONNS), packets_in=get(STATS_INPKTS),
                    packets_out=get(STATS_OUTPKTS), bytes_in=get(STATS_INBYTES),
                    bytes_out=get(STATS_OUTBYTES), active_connections=active,
                    inactive_connections=inactive)


# --------------------------------------------------------------------------- the backend


def _reason(exc: OSError) -> str:
    code = exc.errno or errno.EIO
    text = f"{errno.errorcode.get(code, str(code))}: {exc.strerror or os.strerror(code)}"
    return text + (" (IPVS needs root or CAP_NET_ADMIN)" if code == errno.EPERM else "")


def _hint(op: Op, code: int) -> str:
    """What a bare errno most likely means for this op."""
    if code == errno.EPERM:
        return "IPVS needs root or CAP_NET_ADMIN"
    if isinstance(op, ServiceOp) and op.settings and code == errno.ENOENT:
        pe = op.settings.persistence_engine
        return (f"scheduler {op.settings.scheduler!r}" + (f" or persistence engine {pe!r}"
                                                          if pe else "")
                + " not available in this kernel")
    if isinstance(op, DestinationOp) and code == errno.ESRCH:
        return "the service does not exist"
    if isinstance(op, DestinationOp) and code == errno.EINVAL and op.settings and (
            (":" in op.destination.address) != (op.service.family is Family.INET6)):
        return "a destination of another address family must be tunnelled (TUN)"
    return ""


class NetlinkBackend:
    """The running kernel's IPVS table. One socket; not thread-safe (one owner).

    `window` requests go out per write (1 = one round trip per op); `ack_every_op` asks
    an acknowledgement of every request instead of only the last of each window.
    """

    name = "netlink"

    def __init__(self, *, window: int = 64, ack_every_op: bool = False,
                 encoder: str = "struct", timeout_s: float = 5.0) -> None:
        if encoder not in ("struct", "pyroute2"):
            raise ValueError(f"unknown encoder {encoder!r}")
        self.window = window
        self.ack_every_op = ack_every_op
        self._pyroute2 = Pyroute2Encoder() if encoder == "pyroute2" else None
        try:
            self._sock = genl.GenlSocket(GENL_NAME, timeout_s)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise IpvsError("the kernel has no IPVS generic netlink family "
                                "(is the ip_vs module loaded?)") from exc
            raise IpvsError(f"cannot open the IPVS netlink socket: {_reason(exc)}") from exc
        # Mainline IPVS ends at IPVS_CMD_FLUSH; FULLNAT kernels add local-address commands.
        self._fullnat = any(command > CMD_FLUSH for command in self._sock.commands)

    def __enter__(self) -> NetlinkBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    # ------------------------------------------------------------------ apply

    def apply(self, ops: Sequence[Op]) -> list[OpFailure]:
        failures: dict[int, OpFailure] = {}
        payloads: list[bytes] = []
        positions: list[int] = []
        identities: dict[ServiceKey, bytes] = {}
        for index, op in enumerate(ops):
            try:
                payloads.append(self._payload(op, identities))
                positions.append(index)
            except _Refused as refused:
                failures[index] = failure(op, refused.code, refused.detail)
        outcomes = self._sock.pipeline(payloads, self.window, self.ack_every_op)
        for index, (code, message) in zip(positions, outcomes, strict=True):
            op = ops[index]
            if code and not already_agrees(op, code):
                failures[index] = failure(op, code, message or _hint(op, code))
        return [failures[index] for index in sorted(failures)]

    def _payload(self, op: Op, identities: dict[ServiceKey, bytes]) -> bytes:
        try:
            if self._pyroute2 is None:
                return encode_op(op, self._fullnat, identities)
            return self._pyroute2(request_of(op, self._fullnat))
        except (OSError, ValueError, struct.error) as exc:  # e.g. a malformed address
            raise _Refused(errno.EINVAL, str(exc)) from None

    # ------------------------------------------------------------------ reading

    def _call(self, what: str, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except OSError as exc:
            raise IpvsError(f"{what} failed: {_reason(exc)}") from exc

    def _services(self) -> list[genl.Attrs]:
        replies = self._call("listing IPVS services", self._sock.dump, CMD_GET_SERVICE)
        return [genl.parse_attrs(r[ATTR_SERVICE]) for r in replies if ATTR_SERVICE in r]

    def _destinations(self, key: ServiceKey) -> list[genl.Attrs]:
        attrs = _nest(ATTR_SERVICE, "SVC", service_fields(key))
        replies = self._call(f"listing destinations of service {key}", self._sock.dump,
                             CMD_GET_DEST, attrs)
        return [genl.parse_attrs(r[ATTR_DEST]) for r in replies if ATTR_DEST in r]

    def read(self) -> Table:
        table: Table = {}
        for attrs in self._services():
            parsed = parse_service(attrs)
            if parsed is None:
                continue
            key, settings = parsed
            destinations = dict(parse_destination(d, key.family)
                                for d in self._destinations(key))
            table[key] = Service(settings, destinations)
        return table

    def statistics(self) -> dict[ServiceKey, ServiceStats]:
        out: dict[ServiceKey, ServiceStats] = {}
        for attrs in self._services():
            parsed = parse_service(attrs)
            if parsed is None:
                continue
            key = parsed[0]
            destinations = {}
            for d in self._destinations(key):
                active = genl.get_u32(d[DEST_ACTIVE_CONNS]) if DEST_ACTIVE_CONNS in d else 0
                inactive = genl.get_u32(d[DEST_INACT_CONNS]) if DEST_INACT_CONNS in d else 0
                destinations[parse_destination(d, key.family)[0]] = parse_counters(
                    d, DEST_STATS64, DEST_STATS, active, inactive)
            out[key] = ServiceStats(parse_counters(attrs, SVC_STATS64, SVC_STATS),
                                    destinations)
        return out

    def info(self) -> KernelInfo:
        replies = self._call("reading IPVS info", self._sock.request, CMD_GET_INFO)
        attrs = replies[0] if replies else {}
        version = genl.get_u32(attrs[INFO_VERSION]) if INFO_VERSION in attrs else 0
        size = genl.get_u32(attrs[INFO_CONN_TAB_SIZE]) if INFO_CONN_TAB_SIZE in attrs else 0
        text = f"{version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF}"
        return KernelInfo(text, size, self._fullnat)

    def flush(self) -> None:
        self._call("flushing the IPVS table", self._sock.request, CMD_FLUSH)

    def timeouts(self) -> Timeouts:
        replies = self._call("reading IPVS timeouts", self._sock.request, CMD_GET_CONFIG)
        attrs = replies[0] if replies else {}

        def get(kind: int) -> int:
            return genl.get_u32(attrs[kind]) if kind in attrs else 0

        return Timeouts(get(ATTR_TIMEOUT_TCP), get(ATTR_TIMEOUT_TCP_FIN),
                        get(ATTR_TIMEOUT_UDP))

    def set_timeouts(self, timeouts: Timeouts) -> None:
        """Sets the tcp, tcpfin and udp timeouts; 0 leaves one unchanged (as ipvsadm)."""
        values = (timeouts.tcp_s, timeouts.tcpfin_s, timeouts.udp_s)
        if any(not 0 <= value <= 0x7FFFFFFF for value in values):
            raise IpvsError(f"setting IPVS timeouts failed: {values} out of range")
        attrs = b"".join(genl.u32(kind, value) for kind, value in zip(
            (ATTR_TIMEOUT_TCP, ATTR_TIMEOUT_TCP_FIN, ATTR_TIMEOUT_UDP), values, strict=True))
        self._call("setting IPVS timeouts", self._sock.request, CMD_SET_CONFIG, attrs)
