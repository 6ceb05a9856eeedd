"""Smoke tests of the VM rig itself: the guest kernel really has IPVS, links, pyroute2.

All marked ``kernel``: on the host they report what the one VM run recorded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

# Fixture types (conftest.Ipvsadm...) are not imported: conftest modules are not importable.
pytestmark = pytest.mark.kernel


def test_runs_in_the_vm_on_a_kernel_with_ipvs(ipvs_kernel: str) -> None:
    assert os.environ["FASTCHECK_IN_VM"] == "1"
    assert ipvs_kernel == os.uname().release
    assert Path(f"/lib/modules/{ipvs_kernel}").is_dir()
    assert Path("/proc/net/ip_vs").read_text().startswith("IP Virtual Server version")


def test_the_guest_has_no_network_device_but_loopback() -> None:
    links = sorted(p.name for p in Path("/sys/class/net").iterdir())
    assert links == ["lo"]
    assert Path("/sys/class/net/lo/operstate").read_text().strip() in ("unknown", "up")


def test_ipvsadm_adds_a_service_and_a_real_server(clean_ipvs) -> None:
    clean_ipvs("-A", "-t", "10.0.0.1:80", "-s", "rr")
    clean_ipvs("-a", "-t", "10.0.0.1:80", "-r", "10.0.0.2:80", "-m")
    table = clean_ipvs.list()
    assert re.search(r"^TCP\s+10\.0\.0\.1:80 rr\s*$", table, re.M), table
    assert re.search(r"^\s+-> 10\.0\.0\.2:80\s+Masq\s+1\s", table, re.M), table


def test_the_table_starts_empty(clean_ipvs) -> None:
    assert "10.0.0.1:80" not in clean_ipvs.list()


def test_every_stock_scheduler_is_loaded(ipvs_schedulers: tuple[str, ...]) -> None:
    assert {"rr", "wrr", "lc", "wlc", "sh", "dh", "mh"} <= set(ipvs_schedulers)


def test_a_dummy_interface_can_be_created(wait_until) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname="fcdummy0", kind="dummy")
        try:
            (index,) = ipr.link_lookup(ifname="fcdummy0")
            ipr.addr("add", index=index, address="192.0.2.1", prefixlen=24)
            ipr.link("set", index=index, state="up")
            wait_until(
                lambda: Path("/sys/class/net/fcdummy0/operstate").read_text().strip() != "down",
                what="fcdummy0 to come up",
            )
            addrs = [a.get("IFA_ADDRESS") for a in ipr.get_addr(index=index)]
            assert "192.0.2.1" in addrs
        finally:
            ipr.link("del", ifname="fcdummy0")


def test_pyroute2_ipvs_lists_the_service(clean_ipvs) -> None:
    from pyroute2 import IPVS

    clean_ipvs("-A", "-t", "10.0.0.1:80", "-s", "rr")
    clean_ipvs("-a", "-t", "10.0.0.1:80", "-r", "10.0.0.2:80", "-m")
    with IPVS() as ipvs:
        services = list(ipvs.service("dump"))
        assert len(services) == 1
        service = services[0].get_attr("IPVS_CMD_ATTR_SERVICE")
        assert service.get_attr("IPVS_SVC_ATTR_ADDR") == "10.0.0.1"
        assert service.get_attr("IPVS_SVC_ATTR_PORT") == 80
        assert service.get_attr("IPVS_SVC_ATTR_SCHED_NAME") == "rr"
