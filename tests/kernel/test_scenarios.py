"""The IPVS sync scenarios of tests/unit/test_ipvs_scenarios.py, against the real kernel.

Same configurations (tests/data/ipvs/): apply from empty and compare with the desired
table and with `ipvsadm -Ln`; converge to a second configuration with exactly the
operations the memory backend needed; repair changes made behind fastcheck's back with
ipvsadm in one reconcile.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fastcheck.config.loader import load_file
from fastcheck.errors import IpvsError
from fastcheck.ipvs.memory import MemoryBackend
from fastcheck.ipvs.netlink import NetlinkBackend
from fastcheck.ipvs.reconcile import reconcile
from fastcheck.ipvs.table import METHOD_NAMES, ServiceKey, Table, desired_table

pytestmark = pytest.mark.kernel

DATA = Path(__file__).resolve().parents[1] / "data" / "ipvs"


def desired(name: str) -> Table:
    return desired_table(load_file(str(DATA / name))[0])


@pytest.fixture
def backend(clean_ipvs) -> Iterator[NetlinkBackend]:
    with NetlinkBackend() as kernel:
        yield kernel


def sync(backend, table: Table) -> list:
    ops = reconcile(table, backend.read())
    assert backend.apply(ops) == []
    return ops


def ipvsadm_view(text: str) -> dict[str, tuple[str, frozenset[tuple[str, str, str]]]]:
    """`ipvsadm -Ln` → {service: (scheduler, {(destination, forward, weight)})}."""
    view: dict[str, tuple[str, frozenset[tuple[str, str, str]]]] = {}
    current = None
    dests: set[tuple[str, str, str]] = set()
    for line in text.splitlines()[3:]:
        words = line.split()
        if words[0] == "->":
            dests.add((words[1], words[2], words[3]))
            continue
        if current is not None:
            view[current[0]] = (current[1], frozenset(dests))
        dests = set()
        if words[0] == "FWM":
            name = f"FWM {words[1]}" + (" IPv6" if words[2] == "IPv6" else "")
            scheduler = words[3] if words[2] == "IPv6" else words[2]
        else:
            name, scheduler = f"{words[0]} {words[1]}", words[2]
        current = (name, scheduler)
    if current is not None:
        view[current[0]] = (current[1], frozenset(dests))
    return view


def table_view(table: Table) -> dict[str, tuple[str, frozenset[tuple[str, str, str]]]]:
    """The same view computed from our table (ipvsadm prints a fwmark dest's port as 0)."""
    return {" ".join(str(key).split()): (
        service.settings.scheduler,
        frozenset((str(dest), METHOD_NAMES[s.method], str(s.weight))
                  for dest, s in service.destinations.items()))
        for key, service in table.items()}


@pytest.mark.parametrize("name", ["farm_v1.conf", "farm_v2.conf"])
def test_apply_from_empty_matches_desired_and_ipvsadm(backend, clean_ipvs, name):
    table = desired(name)
    sync(backend, table)
    assert backend.read() == table
    assert ipvsadm_view(clean_ipvs.list()) == table_view(table)
    assert reconcile(table, backend.read()) == []


def test_every_scheduler_the_kernel_has(backend, clean_ipvs, ipvs_schedulers):
    table = desired("schedulers.conf")
    available = {key: svc for key, svc in table.items()
                 if svc.settings.scheduler in ipvs_schedulers}
    missing = {key: svc for key, svc in table.items() if key not in available}
    sync(backend, available)
    assert backend.read() == available
    # A scheduler the kernel lacks is a clear error naming the service, not a crash.
    for key, service in missing.items():
        (failure, *_) = backend.apply(reconcile({key: service}, {}))
        assert isinstance(failure.error, IpvsError)
        assert str(key) in str(failure.error)


def test_second_configuration_converges_like_the_memory_backend(backend):
    v1, v2 = desired("farm_v1.conf"), desired("farm_v2.conf")
    memory = MemoryBackend()
    sync(memory, v1)
    expected = reconcile(v2, memory.read())
    sync(backend, v1)
    ops = reconcile(v2, backend.read())
    assert ops == expected and len(ops) == 11
    assert backend.apply(ops) == []
    assert backend.read() == v2
    assert reconcile(v2, backend.read()) == []


def test_one_reconcile_repairs_what_ipvsadm_changed(backend, clean_ipvs):
    table = desired("farm_v1.conf")
    sync(backend, table)
    clean_ipvs("-d", "-t", "10.10.0.1:80", "-r", "10.20.0.2:8080")
    clean_ipvs("-e", "-t", "10.10.0.1:80", "-r", "10.20.0.1:8080", "-m", "-w", "99")
    clean_ipvs("-D", "-f", "100")
    clean_ipvs("-E", "-t", "10.10.0.2:443", "-s", "rr")
    clean_ipvs("-A", "-t", "10.99.0.1:80", "-s", "rr")
    repairs = sync(backend, table)
    assert len(repairs) == 7  # dest add + dest edit + fwmark service and 2 dests,
    #                           service edit, stray service delete
    assert backend.read() == table
    assert ipvsadm_view(clean_ipvs.list()) == table_view(table)


def test_service_key_text_matches_ipvsadm(clean_ipvs, backend):
    table = desired("farm_v1.conf")
    sync(backend, table)
    listed = set(ipvsadm_view(clean_ipvs.list()))
    assert listed == {" ".join(str(key).split()) for key in table}
    assert all(isinstance(key, ServiceKey) for key in backend.read())
