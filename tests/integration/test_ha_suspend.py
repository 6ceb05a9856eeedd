"""ha_suspend with real rtnetlink address events, in a network namespace made for the test.

`fastcheck run --dry-run` runs in the namespace (`net_namespace`); the virtual address
10.78.0.100 is added to and removed from the namespace's loopback with `ip -n NS addr`.
Two virtual servers share one real server (127.0.0.1:PORT, listener inside the namespace
started and stopped by the test): 10.78.0.100 has ha_suspend, 10.78.0.101 has not. While
the address is absent the first one's checks are suspended — its table does not follow the
real server — and they resume as soon as the address appears. Also unit checks of the
address matching and of the rtnetlink parsing. Needs root and iproute2.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemonproc import DryRun, NamespaceListener, free_port, ip, network_namespace, table

from fastcheck.config.loader import load_text
from fastcheck.daemon.addresses import RTM_DELADDR, RTM_NEWADDR, address_events
from fastcheck.health.vips import address, suspend_ranges, vip_present
from fastcheck.ipvs.genl import attr

VIP, OTHER = "10.78.0.100", "10.78.0.101"


@pytest.fixture
def netns() -> Iterator[str]:
    with network_namespace("fcha") as name:
        yield name


def config_text(netns: str, port: int) -> str:
    blocks = [f"net_namespace {netns}\n"]
    for vip, suspend in ((VIP, "    ha_suspend\n"), (OTHER, "")):
        blocks.append(f"virtual_server {vip} 80 {{\n    delay_loop 0.2\n    lb_kind NAT\n"
                      f"    protocol TCP\n{suspend}    real_server 127.0.0.1 {port} {{\n"
                      "        TCP_CHECK {\n            connect_timeout 1\n"
                      "            retry 0\n        }\n    }\n}\n")
    return "".join(blocks)


def wait_for(daemon: DryRun, want: Callable[[dict[str, set[int]]], bool], what: str) -> None:
    daemon.wait_dump(lambda doc: want(table(doc)), what, timeout=15)


def test_checks_are_suspended_while_the_address_is_absent(tmp_path: Path,
                                                          netns: str) -> None:
    port = free_port()
    listener = NamespaceListener(netns, port)
    config = tmp_path / "fc.conf"
    config.write_text(config_text(netns, port))
    daemon = DryRun(tmp_path, config)
    service = f"[127.0.0.1]:tcp:{port} for VS [{VIP}]:tcp:80"
    try:
        daemon.wait_log(f"Deactivating healthchecker for service {service}")
        daemon.wait_log("starting:")
        # Nothing listens: the other VS drops the server, the suspended one keeps it.
        wait_for(daemon, lambda t: t == {VIP: {port}, OTHER: set()},
                 "the suspended VS keeps its server while the other drops it")
        ip("-n", netns, "addr", "add", f"{VIP}/32", "dev", "lo")
        daemon.wait_log(f"Activating healthchecker for service {service}")
        wait_for(daemon, lambda t: t == {VIP: set(), OTHER: set()},
                 "the resumed checks take the dead server out")
        ip("-n", netns, "addr", "del", f"{VIP}/32", "dev", "lo")
        daemon.wait_log(f"Suspending healthchecker for service {service}")
        listener.start()
        wait_for(daemon, lambda t: t[OTHER] == {port}, "the server to come back")
        time.sleep(0.6)  # three delay_loops: the suspended VS still does not follow
        assert table(daemon.dump()) == {VIP: set(), OTHER: {port}}
        ip("-n", netns, "addr", "add", f"{VIP}/32", "dev", "lo")
        wait_for(daemon, lambda t: t == {VIP: {port}, OTHER: {port}},
                 "the resumed checks bring the server in")
        assert daemon.stop(timeout=15) == 0
    finally:
        daemon.kill()
        listener.stop()


def test_vip_matching_covers_addresses_and_group_ranges() -> None:
    rs = "    real_server 10.9.0.1 80 {\n    }\n"
    config, _ = load_text(
        "virtual_server_group web {\n    10.1.0.10-20 80\n    10.1.1.5 80\n}\n"
        f"virtual_server group web {{\n    protocol TCP\n    ha_suspend\n{rs}}}\n"
        f"virtual_server 10.2.0.1 80 {{\n    protocol TCP\n    ha_suspend\n{rs}}}\n"
        f"virtual_server 10.3.0.1 80 {{\n    protocol TCP\n{rs}}}\n")
    ranges = suspend_ranges(config)
    assert len(ranges) == 2  # the VS without ha_suspend is not followed
    group, single = ranges.values()
    assert vip_present(group, {address("10.1.0.15")})
    assert vip_present(group, {address("10.1.1.5")})
    assert not vip_present(group, {address("10.1.0.21"), address("10.2.0.1")})
    assert vip_present(single, {address("10.2.0.1")}) and not vip_present(single, set())


def test_rtnetlink_address_messages_are_parsed() -> None:
    def message(kind: int, family: int, index: int, raw: bytes, local: bool) -> bytes:
        body = struct.pack("=BBBBI", family, 32, 0, 0, index) + attr(2 if local else 1, raw)
        return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body

    data = (message(RTM_NEWADDR, socket.AF_INET, 3, socket.inet_aton("10.0.0.7"), True)
            + message(RTM_DELADDR, socket.AF_INET6, 4,
                      socket.inet_pton(socket.AF_INET6, "fe80::1"), False))
    assert address_events(data) == [(True, (3, address("10.0.0.7"))),
                                     (False, (4, address("fe80::1")))]
