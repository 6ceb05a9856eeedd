"""The netlink IPVS backend against a real kernel (run in a VM: `pytest tests/kernel`).

Kernel tests (marked `kernel`) start from an empty table (`clean_ipvs`). Their tables
cover NAT/DR/TUN destinations (GUE/GRE, checksums, a mixed-family tunnel), fwmark and
IPv6 services, persistence with netmasks, a persistence engine, every scheduler the
kernel ships (sh/mh with their flags), one-packet UDP, thresholds, weights and SCTP. What
the backend reads is checked against the desired table and against ipvsadm's own view.
The unmarked tests need no kernel: they hold the struct encoder to pyroute2's bytes.
"""

from __future__ import annotations

import asyncio
import errno
import re
import shlex
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple

import pytest

from fastcheck.errors import IpvsError
from fastcheck.ipvs import genl, netlink
from fastcheck.ipvs.backend import Timeouts
from fastcheck.ipvs.netlink import NetlinkBackend
from fastcheck.ipvs.ops import DestinationOp, LocalAddressOp, Op, ServiceOp, Verb
from fastcheck.ipvs.reconcile import reconcile
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
    family_of,
)

TCP, UDP, SCTP = Protocol.TCP, Protocol.UDP, Protocol.SCTP
NAT, DR, TUN = Method.NAT, Method.DR, Method.TUN
FALLBACK, PORT = SchedulerFlag.FLAG_1, SchedulerFlag.FLAG_2
STOCK_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq",
                    "fo", "ovf", "mh")


def kernel_test(function):  # type: ignore[no-untyped-def]
    """Runs in the VM, on an empty IPVS table."""
    return pytest.mark.kernel(pytest.mark.usefixtures("ipvs_kernel", "clean_ipvs")(function))


# --------------------------------------------------------------------------- tables


def svc(address: str, port: int, protocol: Protocol = TCP) -> ServiceKey:
    return ServiceKey(family_of(address), protocol, address, port, 0)


def fwm(mark: int, family: Family = Family.INET) -> ServiceKey:
    return ServiceKey(family, None, None, 0, mark)


def rs(address: str, port: int = 80) -> DestinationKey:
    return DestinationKey(address, port)


def dest(weight: int = 1, method: Method = NAT, **kwargs: object) -> DestinationSettings:
    return DestinationSettings(weight=weight, method=method, **kwargs)  # type: ignore[arg-type]


def realistic_table(schedulers: Sequence[str] = STOCK_SCHEDULERS) -> Table:
    """A director's table with one service per scheduler and every feature besides."""
    table: Table = {}
    for i, scheduler in enumerate(schedulers):
        flags = FALLBACK | PORT if scheduler in ("sh", "mh") else SchedulerFlag(0)
        table[svc(f"10.10.{i}.1", 80)] = Service(
            ServiceSettings(scheduler, flags=flags),
            {rs(f"10.11.{i}.1"): dest(1), rs(f"10.11.{i}.2"): dest(2),
             rs(f"10.11.{i}.3", 8080): dest(3, upper_threshold=100, lower_threshold=10)})
    table[svc("10.20.0.1", 443)] = Service(
        ServiceSettings("rr", persistence_timeout_s=300, netmask="255.255.255.0"),
        {rs("10.21.0.1", 443): dest(5, DR), rs("10.21.0.2", 443): dest(0, DR)})
    table[svc("10.20.0.2", 80)] = Service(ServiceSettings("wlc"), {
        rs("10.22.0.1"): dest(1, TUN),
        rs("10.22.0.2"): dest(2, TUN, tunnel_type=TunnelType.GUE, tunnel_port=6080,
                              tunnel_checksum=TunnelChecksum.CSUM),
        rs("10.22.0.3"): dest(3, TUN, tunnel_type=TunnelType.GUE, tunnel_port=6081,
                              tunnel_checksum=TunnelChecksum.REMCSUM),
        rs("10.22.0.4"): dest(4, TUN, tunnel_type=TunnelType.GRE,
                              tunnel_checksum=TunnelChecksum.CSUM),
        rs("10.22.0.5"): dest(5, TUN, tunnel_type=TunnelType.GRE),
        rs("2001:db8:22::1"): dest(6, TUN),  # mixed family: only tunnels may
    })
    table[svc("10.20.0.3", 53, UDP)] = Service(ServiceSettings("rr", one_packet=True), {
        rs("10.23.0.1", 53): dest(1), rs("10.23.0.2", 53): dest(65535)})
    table[svc("10.20.0.4", 3868, SCTP)] = Service(ServiceSettings("wrr"), {
        rs("10.24.0.1", 3868): dest(1), rs("10.24.0.2", 3868): dest(2)})
    table[svc("10.20.0.5", 5060, UDP)] = Service(
        ServiceSettings("rr", persistence_timeout_s=60, persistence_engine="sip"),
        {rs("10.25.0.1", 5060): dest(1, DR)})
    table[svc("10.20.0.6", 0)] = Service(  # a zero port needs persistence
        ServiceSettings("wlc", persistence_timeout_s=360), {rs("10.26.0.1", 0): dest(1, DR)})
    table[fwm(1001)] = Service(ServiceSettings("sh", flags=FALLBACK | PORT), {
        rs("10.27.0.1", 0): dest(1, DR), rs("10.27.0.2", 0): dest(1, DR)})
    table[fwm(1002, Family.INET6)] = Service(ServiceSettings("mh", flags=PORT), {
        rs("2001:db8:28::1", 0): dest(1, DR), rs("2001:db8:28::2", 0): dest(1, TUN)})
    table[svc("2001:db8:10::1", 80)] = Service(
        ServiceSettings("wlc", persistence_timeout_s=600, netmask="64"),
        {rs("2001:db8:29::1"): dest(1), rs("2001:db8:29::2"): dest(2, DR)})
    table[svc("2001:db8:10::2", 53, UDP)] = Service(ServiceSettings("rr", one_packet=True), {
        rs("2001:db8:29::3", 53): dest(1)})
    return table


def big_table(services: int, destinations: int) -> Table:
    return {svc(f"10.{100 + i // 250}.{i % 250}.1", 80): Service(
        ServiceSettings("wlc"),
        {rs(f"172.16.{i // 250}.{i % 250}", 1000 + j): dest(1 + j % 5)
         for j in range(destinations)})
        for i in range(services)}


def content(table: Table) -> dict[ServiceKey, tuple[ServiceSettings, dict]]:
    return {key: (s.settings, dict(s.destinations)) for key, s in table.items()}


def op_kinds(ops: list[Op]) -> Counter[tuple[str, str]]:
    return Counter((type(op).__name__, op.verb.value) for op in ops)


# --------------------------------------------------------------------------- ipvsadm's view


Ipvsadm = Callable[..., str]  # the rig's `ipvsadm` fixture: ipvsadm("-Ln") is its output


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


_VALUED = frozenset({"-t", "-u", "--sctp-service", "-f", "-s", "-p", "-M", "--pe", "-b",
                     "-r", "-w", "-x", "-y", "--tun-type", "--tun-port"})
_PROTOCOLS = {"-t": TCP, "-u": UDP, "--sctp-service": SCTP}
_FLAG_NAMES = {"sh-fallback": FALLBACK, "mh-fallback": FALLBACK, "flag-1": FALLBACK,
               "sh-port": PORT, "mh-port": PORT, "flag-2": PORT,
               "flag-3": SchedulerFlag.FLAG_3}


def _options(words: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    it = iter(words)
    for word in it:
        options[word] = next(it) if word in _VALUED else ""
    return options


Thresholds = dict[tuple[ServiceKey, DestinationKey], tuple[int, int]]


def ipvsadm_thresholds(ipvsadm: Ipvsadm) -> Thresholds:
    """Upper and lower thresholds from `ipvsadm -Ln --thresholds` (-Sn leaves them out)."""
    out: Thresholds = {}
    key: ServiceKey | None = None
    for line in ipvsadm("-Ln", "--thresholds").splitlines()[3:]:
        words = line.split()
        if words[0] == "FWM":
            key = fwm(int(words[1]), Family.INET6 if words[2:3] == ["IPv6"] else Family.INET)
        elif words[0] != "->":
            address, port = _endpoint(words[1])
            key = svc(address, port, Protocol(words[0]))
        else:
            assert key is not None
            out[key, rs(*_endpoint(words[1]))] = int(words[2]), int(words[3])
    return out


def ipvsadm_table(ipvsadm: Ipvsadm) -> Table:
    """The kernel table as ipvsadm reads it (`ipvsadm -Sn` and -Ln), in the model's shape."""
    table: Table = {}
    thresholds = ipvsadm_thresholds(ipvsadm)
    for line in ipvsadm("-Sn").splitlines():
        words = shlex.split(line)
        if not words:
            continue
        o = _options(words[1:])
        if "-f" in o:
            key = fwm(int(o["-f"]), Family.INET6 if "-6" in o else Family.INET)
        else:
            flag = next(name for name in _PROTOCOLS if name in o)
            address, port = _endpoint(o[flag])
            key = svc(address, port, _PROTOCOLS[flag])
        if words[0] == "-A":
            flags = SchedulerFlag(0)
            for name in filter(None, o.get("-b", "").split(",")):
                flags |= _FLAG_NAMES[name]
            table[key] = Service(ServiceSettings(
                o["-s"], flags=flags, one_packet="-o" in o,
                persistence_timeout_s=int(o.get("-p", 0)), netmask=o.get("-M"),
                persistence_engine=o.get("--pe")))
            continue
        method = DR if "-g" in o else TUN if "-i" in o else NAT
        kind = {"gue": TunnelType.GUE, "gre": TunnelType.GRE}.get(o.get("--tun-type", ""))
        checksum = (TunnelChecksum.CSUM if "--tun-csum" in o else
                    TunnelChecksum.REMCSUM if "--tun-remcsum" in o else None)
        address = rs(*_endpoint(o["-r"]))
        upper, lower = thresholds[key, address]
        table[key].destinations[address] = DestinationSettings(
            int(o["-w"]), method, upper, lower, kind,
            int(o["--tun-port"]) if kind is TunnelType.GUE else None, checksum)
    return table


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def backend() -> Iterator[NetlinkBackend]:
    with NetlinkBackend() as opened:
        yield opened


def apply_all(backend: NetlinkBackend, desired: Table) -> list[Op]:
    ops = reconcile(desired, backend.read())
    failures = backend.apply(ops)
    assert [str(f.error) for f in failures] == []
    return ops


# --------------------------------------------------------------------------- no kernel


def every_kind_of_op() -> list[Op]:
    table = realistic_table()
    ops = reconcile(table, {})
    for key, service in table.items():
        ops.append(ServiceOp(Verb.EDIT, key, service.settings))
        ops.append(ServiceOp(Verb.DELETE, key))
        for address, settings in service.destinations.items():
            ops.append(DestinationOp(Verb.EDIT, key, address, settings))
            ops.append(DestinationOp(Verb.DELETE, key, address))
    return ops


def test_struct_encoder_writes_pyroute2s_bytes() -> None:
    pyroute2 = netlink.Pyroute2Encoder()
    identities: dict[ServiceKey, bytes] = {}
    for op in every_kind_of_op():
        request = netlink.request_of(op)
        expected = pyroute2(request)
        assert netlink.encode_struct(request) == expected, op.describe()
        assert netlink.encode_op(op, identities=identities) == expected, op.describe()


def test_encoded_services_and_destinations_parse_back() -> None:
    for key, service in realistic_table().items():
        request = netlink.request_of(ServiceOp(Verb.ADD, key, service.settings))
        top = genl.parse_attrs(netlink.encode_struct(request), 4)
        assert netlink.parse_service(genl.parse_attrs(top[netlink.ATTR_SERVICE])) == (
            key, service.settings)
        for address, settings in service.destinations.items():
            request = netlink.request_of(DestinationOp(Verb.ADD, key, address, settings))
            top = genl.parse_attrs(netlink.encode_struct(request), 4)
            parsed = genl.parse_attrs(top[netlink.ATTR_DEST])
            assert netlink.parse_destination(parsed, key.family) == (address, settings)


def test_ipv6_services_carry_a_prefix_length_netmask() -> None:
    request = netlink.request_of(ServiceOp(Verb.ADD, svc("2001:db8::1", 80),
                                           ServiceSettings("rr")))
    service = genl.parse_attrs(genl.parse_attrs(netlink.encode_struct(request), 4)[
        netlink.ATTR_SERVICE])
    assert genl.get_u32(service[netlink.SVC_NETMASK]) == 128


def test_an_unknown_generic_netlink_family_is_enoent() -> None:
    with pytest.raises(OSError) as raised:
        genl.GenlSocket("NO_SUCH_FAMILY")
    assert raised.value.errno == errno.ENOENT


# --------------------------------------------------------------------------- kernel


@kernel_test
def test_applies_a_realistic_table_from_empty(backend: NetlinkBackend, ipvsadm: Ipvsadm,
                                              ipvs_schedulers: tuple[str, ...]) -> None:
    desired = realistic_table(ipvs_schedulers)
    ops = apply_all(backend, desired)
    assert len(ops) == len(desired) + sum(len(s.destinations) for s in desired.values())
    assert content(backend.read()) == content(desired)
    assert content(ipvsadm_table(ipvsadm)) == content(desired)
    assert reconcile(desired, backend.read()) == []
    listing = ipvsadm("-Ln")
    for key, service in desired.items():
        for address, settings in service.destinations.items():
            forward = {NAT: "Masq", DR: "Route", TUN: "Tunnel"}[settings.method]
            host = f"[{address.address}]" if ":" in address.address else address.address
            assert re.search(rf"-> {re.escape(host)}:{address.port}\s+{forward}\s+"
                             rf"{settings.weight}\s", listing), (key, address)


@kernel_test
def test_the_pyroute2_encoder_builds_the_same_table(ipvs_schedulers: tuple[str, ...]
                                                    ) -> None:
    desired = realistic_table(ipvs_schedulers)
    with NetlinkBackend(encoder="pyroute2") as backend:
        apply_all(backend, desired)
        assert content(backend.read()) == content(desired)


@kernel_test
def test_a_second_table_converges_with_only_the_needed_ops(
        backend: NetlinkBackend, ipvsadm: Ipvsadm, ipvs_schedulers: tuple[str, ...]) -> None:
    first = realistic_table(ipvs_schedulers)
    apply_all(backend, first)
    second = {key: Service(s.settings, dict(s.destinations)) for key, s in first.items()}
    web, tunnels = svc("10.10.0.1", 80), svc("10.20.0.2", 80)
    second[web].destinations[rs("10.11.0.1")] = dest(7)  # weight
    second[web].destinations[rs("10.11.0.2")] = dest(2, DR)  # method
    del second[web].destinations[rs("10.11.0.3", 8080)]
    second[web].destinations[rs("10.11.0.9")] = dest(1)
    second[tunnels].destinations[rs("10.22.0.2")] = dest(
        2, TUN, tunnel_type=TunnelType.GUE, tunnel_port=7000,
        tunnel_checksum=TunnelChecksum.CSUM)  # tunnel port
    second[tunnels].settings = ServiceSettings("wrr")  # scheduler; keeps destinations
    persistent = svc("10.20.0.1", 443)
    second[persistent].settings = ServiceSettings("rr", persistence_timeout_s=900,
                                                  netmask="255.255.0.0")
    del second[svc("10.20.0.4", 3868, SCTP)]
    second[svc("10.20.0.9", 8443)] = Service(ServiceSettings("lc"), {
        rs("10.29.0.1", 8443): dest(1), rs("10.29.0.2", 8443): dest(1)})

    ops = reconcile(second, backend.read())
    assert op_kinds(ops) == Counter({
        ("ServiceOp", "add"): 1, ("DestinationOp", "add"): 3,
        ("ServiceOp", "edit"): 2, ("DestinationOp", "edit"): 3,
        ("DestinationOp", "delete"): 1, ("ServiceOp", "delete"): 1})
    assert backend.apply(ops) == []
    assert content(backend.read()) == content(second)
    assert content(ipvsadm_table(ipvsadm)) == content(second)
    assert reconcile(second, backend.read()) == []


@kernel_test
def test_one_reconcile_restores_what_was_changed_behind_its_back(
        backend: NetlinkBackend, ipvsadm: Ipvsadm, ipvs_schedulers: tuple[str, ...]) -> None:
    desired = realistic_table(ipvs_schedulers)
    apply_all(backend, desired)
    ipvsadm("-D", "-t", "10.20.0.1:443")  # a service and its 2 destinations
    ipvsadm("-d", "-t", "10.20.0.2:80", "-r", "10.22.0.1:80")
    ipvsadm("-e", "-t", "10.10.0.1:80", "-r", "10.11.0.1:80", "-m", "-w", "9")
    ipvsadm("-E", "-f", "1001", "-s", "rr")
    ipvsadm("-A", "-t", "10.99.0.1:80", "-s", "rr")
    ipvsadm("-a", "-t", "10.99.0.1:80", "-r", "10.99.1.1:80", "-m")

    ops = reconcile(desired, backend.read())
    assert op_kinds(ops) == Counter({
        ("ServiceOp", "add"): 1, ("DestinationOp", "add"): 3,
        ("DestinationOp", "edit"): 1, ("ServiceOp", "edit"): 1, ("ServiceOp", "delete"): 1})
    assert backend.apply(ops) == []
    assert content(backend.read()) == content(desired)
    assert reconcile(desired, backend.read()) == []


@kernel_test
@pytest.mark.parametrize("window", [1, 64])
def test_adds_that_exist_and_deletes_that_are_gone_are_not_failures(
        window: int, ipvs_schedulers: tuple[str, ...]) -> None:
    desired = realistic_table(ipvs_schedulers)
    with NetlinkBackend(window=window) as backend:
        ops = apply_all(backend, desired)
        assert backend.apply(ops) == []  # every add meets EEXIST
        web, gone = svc("10.10.0.1", 80), svc("10.98.0.1", 80)
        deletes: list[Op] = [
            DestinationOp(Verb.DELETE, web, rs("10.98.1.1")),  # ENOENT
            DestinationOp(Verb.DELETE, gone, rs("10.98.1.1")),  # ESRCH
            ServiceOp(Verb.DELETE, gone),  # ESRCH
            ServiceOp(Verb.DELETE, fwm(4242)),
        ]
        assert backend.apply(deletes) == []
        assert content(backend.read()) == content(desired)


@kernel_test
@pytest.mark.parametrize("window", [1, 2, 64])
def test_each_kernel_error_names_the_op_that_caused_it(window: int) -> None:
    good, bad, missing = svc("10.97.0.1", 80), svc("10.97.0.2", 80), svc("10.97.0.3", 80)
    ops: list[Op] = [
        ServiceOp(Verb.ADD, good, ServiceSettings("rr")),
        ServiceOp(Verb.ADD, bad, ServiceSettings("nosuch")),  # ENOENT
        DestinationOp(Verb.ADD, good, rs("10.97.1.1"), dest(1)),
        DestinationOp(Verb.ADD, bad, rs("10.97.1.2"), dest(1)),  # ESRCH
        DestinationOp(Verb.EDIT, good, rs("10.97.1.3"), dest(2)),  # ENOENT
        DestinationOp(Verb.ADD, good, rs("10.97.1.1"), dest(1)),  # EEXIST: agrees
        ServiceOp(Verb.EDIT, missing, ServiceSettings("wlc")),  # ESRCH
        DestinationOp(Verb.ADD, good, rs("10.97.1.4"), dest(3, DR)),
        DestinationOp(Verb.ADD, good, rs("10.97.1.300"), dest(1)),  # never sent: EINVAL
    ]
    with NetlinkBackend(window=window) as backend:
        failures = backend.apply(ops)
        table = backend.read()
    assert [f.op for f in failures] == [ops[1], ops[3], ops[4], ops[6], ops[8]]
    texts = [str(f.error) for f in failures]
    assert texts[0] == ("add service TCP  10.97.0.2:80 failed: ENOENT "
                        "(scheduler 'nosuch' not available in this kernel)")
    assert texts[1].startswith("add destination 10.97.1.2:80 of service TCP  10.97.0.2:80 "
                               "failed: ESRCH")
    assert texts[2].startswith("edit destination 10.97.1.3:80 of service TCP  "
                               "10.97.0.1:80 failed: ENOENT")
    assert texts[3].startswith("edit service TCP  10.97.0.3:80 failed: ESRCH")
    assert texts[4].startswith("add destination 10.97.1.300:80 of service TCP  "
                               "10.97.0.1:80 failed: EINVAL (illegal IP address")
    assert all(isinstance(f.error, IpvsError) for f in failures)
    assert content(table) == {good: (ServiceSettings("rr"), {
        rs("10.97.1.1"): dest(1), rs("10.97.1.4"): dest(3, DR)})}


@kernel_test
def test_fullnat_ops_on_a_stock_kernel_fail_clearly(backend: NetlinkBackend) -> None:
    assert backend.info().fullnat is False
    web = svc("10.96.0.1", 80)
    ops: list[Op] = [
        ServiceOp(Verb.ADD, web, ServiceSettings("rr")),
        DestinationOp(Verb.ADD, web, rs("10.96.1.1"), dest(1, Method.FNAT)),
        LocalAddressOp(Verb.ADD, web, "10.96.2.1"),
        ServiceOp(Verb.ADD, svc("10.96.0.2", 80), ServiceSettings("rr", syn_proxy=True)),
        DestinationOp(Verb.ADD, web, rs("10.96.1.2"), dest(1)),
    ]
    failures = backend.apply(ops)
    assert [f.op for f in failures] == ops[1:4]
    for f in failures:
        assert str(f.error).startswith("add ")
        assert "failed: EOPNOTSUPP (FULLNAT is not supported by this kernel" in str(f.error)
    assert content(backend.read()) == {web: (ServiceSettings("rr"), {rs("10.96.1.2"): dest(1)})}


@kernel_test
def test_statistics_are_read_for_every_service_and_destination(
        backend: NetlinkBackend, ipvs_schedulers: tuple[str, ...],
        wait_until: Callable[..., object]) -> None:
    desired = realistic_table(ipvs_schedulers)
    apply_all(backend, desired)
    vip = svc("10.95.0.1", 80)  # traffic from this host is scheduled at LOCAL_OUT
    apply_all(backend, {**desired, vip: Service(ServiceSettings("rr"),
                                                {rs("127.0.0.1", 9): dest(1)})})
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "route", "replace", "local", "10.95.0.1/32", "dev", "lo"],
                   check=True)
    for _ in range(3):
        with socket.socket() as client:
            client.settimeout(0.5)
            client.connect_ex(("10.95.0.1", 80))
    # Counters reach readers through the rate estimator, every 2 s.
    wait_until(lambda: backend.statistics()[vip].service.connections >= 3, interval_s=0.5,
               what="the connection counters of the VIP")
    stats = backend.statistics()
    assert stats.keys() == backend.read().keys()
    for key, service in backend.read().items():
        assert stats[key].destinations.keys() == service.destinations.keys()
        for counters in (stats[key].service, *stats[key].destinations.values()):
            assert all(isinstance(v, int) and v >= 0 for v in astuple(counters))
    print(f"\nstatistics of {vip}: {stats[vip].service}")
    assert stats[vip].service.connections == 3
    assert stats[vip].service.packets_in >= 3
    assert stats[vip].destinations[rs("127.0.0.1", 9)].connections == 3


@kernel_test
def test_info_matches_ipvsadm(backend: NetlinkBackend, ipvsadm: Ipvsadm) -> None:
    info = backend.info()
    header = ipvsadm("-Ln").splitlines()[0]
    assert header == (f"IP Virtual Server version {info.version} "
                      f"(size={info.connection_table_size})")
    assert re.fullmatch(r"\d+\.\d+\.\d+", info.version)
    assert info.fullnat is False


@kernel_test
def test_flush_empties_the_table(backend: NetlinkBackend, ipvsadm: Ipvsadm,
                                 ipvs_schedulers: tuple[str, ...]) -> None:
    apply_all(backend, realistic_table(ipvs_schedulers))
    backend.flush()
    assert backend.read() == {}
    assert ipvsadm("-Sn").strip() == ""


@kernel_test
def test_timeouts_round_trip(backend: NetlinkBackend, ipvsadm: Ipvsadm) -> None:
    before = backend.timeouts()
    try:
        assert ipvsadm("-L", "--timeout").split(":")[1].split() == [
            str(before.tcp_s), str(before.tcpfin_s), str(before.udp_s)]
        backend.set_timeouts(Timeouts(1000, 100, 200))
        assert backend.timeouts() == Timeouts(1000, 100, 200)
        assert ipvsadm("-L", "--timeout").split(":")[1].split() == ["1000", "100", "200"]
        backend.set_timeouts(Timeouts(0, 0, 250))  # 0 leaves a timeout unchanged
        assert backend.timeouts() == Timeouts(1000, 100, 250)
        with pytest.raises(IpvsError, match="timeouts"):
            backend.set_timeouts(Timeouts(-1, 0, 0))
    finally:
        backend.set_timeouts(before)
    assert backend.timeouts() == before


@kernel_test
def test_usable_inside_a_running_event_loop(backend: NetlinkBackend,
                                            ipvs_schedulers: tuple[str, ...]) -> None:
    """pyroute2's sync sockets raise "This event loop is already running" here."""
    desired = realistic_table(ipvs_schedulers)

    async def daemon_like() -> Table:
        apply_all(backend, desired)
        return backend.read()

    assert content(asyncio.run(daemon_like())) == content(desired)


# --------------------------------------------------------------------------- throughput


def _timed_apply(ipvsadm: Ipvsadm, table: Table, **options: object) -> tuple[float, int]:
    ipvsadm("-C")
    with NetlinkBackend(**options) as backend:  # type: ignore[arg-type]
        ops = reconcile(table, {})
        started = time.perf_counter()
        failures = backend.apply(ops)
        elapsed = time.perf_counter() - started
    assert failures == []
    return elapsed, len(ops)


@kernel_test
def test_throughput_2000_services_x_20_destinations(ipvsadm: Ipvsadm,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Prints ops/s from empty per windowing mode (run with -s to see it through the rig)."""
    table = big_table(2000, 20)
    lines = ["", "IPVS apply from empty, 2,000 services x 20 destinations (42,000 ops):"]
    for label, options in (("one op per round trip (window 1)", {"window": 1}),
                           ("window 64, ack last of window", {"window": 64}),
                           ("window 64, ack every op", {"window": 64, "ack_every_op": True}),
                           ("window 256, ack last of window", {"window": 256}),
                           ("unbounded window (64 KiB writes)", {"window": 1 << 30})):
        elapsed, count = _timed_apply(ipvsadm, table, **options)
        lines.append(f"  {label:<34} {elapsed:7.2f} s  {count / elapsed:9,.0f} ops/s")
    with NetlinkBackend() as backend:
        started = time.perf_counter()
        observed = backend.read()
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        backend.statistics()
        stats_s = time.perf_counter() - started
    assert content(observed) == content(table)
    lines.append(f"  read() of the whole table            {read_s:7.2f} s; "
                 f"statistics() {stats_s:.2f} s")
    small = big_table(200, 20)
    elapsed, count = _timed_apply(ipvsadm, small, window=64, encoder="pyroute2")
    lines.append(f"  pyroute2 encoder, window 64 (200 x 20) {elapsed:5.2f} s  "
                 f"{count / elapsed:9,.0f} ops/s")
    requests = [netlink.request_of(op) for op in reconcile(small, {})]
    for name, encode in (("struct", netlink.encode_struct),
                         ("pyroute2", netlink.Pyroute2Encoder())):
        started = time.perf_counter()
        for request in requests:
            encode(request)
        per_op = (time.perf_counter() - started) / len(requests) * 1e6
        lines.append(f"  encoding alone, {name:<8} {per_op:8.1f} µs per op")
    ipvsadm("-C")
    with capsys.disabled():
        print("\n".join(lines))
