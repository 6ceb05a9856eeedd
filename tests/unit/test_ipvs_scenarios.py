"""The IPVS sync scenarios of the kernel suite, against the memory backend.

Same configurations (tests/data/ipvs/) as tests/kernel: apply from empty, converge to a
second configuration with only the needed operations, repair drift, and the error paths
a kernel can produce (injected here).
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from fastcheck.config.loader import load_file
from fastcheck.errors import IpvsError
from fastcheck.ipvs.memory import MemoryBackend
from fastcheck.ipvs.ops import DestinationOp, LocalAddressOp, ServiceOp, Verb
from fastcheck.ipvs.reconcile import reconcile
from fastcheck.ipvs.table import (
    DestinationKey,
    DestinationSettings,
    Method,
    ServiceKey,
    ServiceSettings,
    desired_table,
)
from fastcheck.model import Family, Protocol

DATA = Path(__file__).resolve().parents[1] / "data" / "ipvs"


def desired(name: str):
    return desired_table(load_file(str(DATA / name))[0])


def sync(backend: MemoryBackend, table) -> list:
    ops = reconcile(table, backend.read())
    assert backend.apply(ops) == []
    return ops


@pytest.mark.parametrize("name", ["farm_v1.conf", "farm_v2.conf", "schedulers.conf"])
def test_apply_from_empty_reads_back_the_desired_table(name):
    backend = MemoryBackend()
    table = desired(name)
    ops = sync(backend, table)
    assert len(ops) == len(table) + sum(len(s.destinations) for s in table.values())
    assert backend.read() == table
    assert reconcile(table, backend.read()) == []


def test_second_configuration_converges_with_only_the_needed_operations():
    backend = MemoryBackend()
    sync(backend, desired("farm_v1.conf"))
    v2 = desired("farm_v2.conf")
    ops = sync(backend, v2)
    assert [op.describe() for op in ops] == [
        "add destination 10.20.2.3:53 in UDP  10.10.0.3:53 (Tunnel weight 1)",
        "add service TCP  10.10.1.4:80 (mh flags 0x10)",
        "add destination 10.20.5.1:80 in TCP  10.10.1.4:80 (Masq weight 1)",
        "add destination 10.20.5.2:80 in TCP  10.10.1.4:80 (Masq weight 1)",
        "add service FWM  300 (fo)",
        "add destination 10.20.6.1:0 in FWM  300 (Route weight 2)",
        "add destination 10.20.6.2:0 in FWM  300 (Route weight 1)",
        "edit service TCP  10.10.0.1:80: wrr -> wlc",
        "edit destination 10.20.0.1:8080 in TCP  10.10.0.1:80 (Masq weight 5) was "
        "(Masq weight 3)",
        "delete destination [2001:db8:20::11]:8080 in TCP  [2001:db8:10::1]:80",
        "delete service SCTP 10.10.0.4:3868",
    ]
    assert backend.read() == v2
    assert reconcile(v2, backend.read()) == []


def test_one_reconcile_repairs_changes_made_behind_our_back():
    backend = MemoryBackend()
    table = desired("farm_v1.conf")
    sync(backend, table)
    web = ServiceKey(Family.INET, Protocol.TCP, "10.10.0.1", 80, 0)
    del backend.table[web].destinations[DestinationKey("10.20.0.2", 8080)]
    backend.table[web].destinations[DestinationKey("10.20.0.1", 8080)] = DestinationSettings(
        weight=99)
    del backend.table[ServiceKey(Family.INET, None, None, 0, 100)]
    backend.table[ServiceKey(Family.INET, Protocol.TCP, "10.99.0.1", 80, 0)] = \
        type(backend.table[web])(ServiceSettings())
    repairs = sync(backend, table)
    assert len(repairs) == 6  # 1 dest add, 1 dest edit, fwmark service + 2 dests, 1 delete
    assert backend.read() == table


def test_adds_that_exist_and_deletes_that_are_gone_are_not_failures():
    backend = MemoryBackend()
    table = desired("farm_v1.conf")
    ops = reconcile(table, {})
    assert backend.apply(ops) == []
    assert backend.apply(ops) == []  # every add meets EEXIST
    removals = reconcile({}, table)
    assert backend.apply(removals) == []
    assert backend.apply(removals) == []  # every delete meets ENOENT/ESRCH
    assert backend.read() == {}


def test_a_refused_operation_is_reported_naming_the_operation_and_object():
    backend = MemoryBackend()
    sync(backend, desired("farm_v1.conf"))
    backend.fail(lambda op: isinstance(op, ServiceOp) and op.verb is Verb.DELETE,
                 errno.EBUSY, times=1)
    ops = reconcile(desired("farm_v2.conf"), backend.read())
    failures = backend.apply(ops)
    assert len(failures) == 1
    assert isinstance(failures[0].error, IpvsError)
    assert str(failures[0].error) == "delete service SCTP 10.10.0.4:3868 failed: EBUSY"
    # Everything else went through; a retry of what is left succeeds.
    retry = reconcile(desired("farm_v2.conf"), backend.read())
    assert [op.describe() for op in retry] == ["delete service SCTP 10.10.0.4:3868"]
    assert backend.apply(retry) == []


def test_edit_of_a_missing_service_fails():
    backend = MemoryBackend()
    key = ServiceKey(Family.INET, Protocol.TCP, "10.0.0.1", 80, 0)
    failures = backend.apply([ServiceOp(Verb.EDIT, key, ServiceSettings())])
    assert str(failures[0].error) == "edit service TCP  10.0.0.1:80 failed: ESRCH"


def test_fullnat_operations_need_a_fullnat_kernel():
    key = ServiceKey(Family.INET, Protocol.TCP, "10.0.0.1", 80, 0)
    ops = [ServiceOp(Verb.ADD, key, ServiceSettings()),
           DestinationOp(Verb.ADD, key, DestinationKey("10.1.0.1", 80),
                         DestinationSettings(method=Method.FNAT)),
           LocalAddressOp(Verb.ADD, key, "192.168.0.1")]
    stock = MemoryBackend()
    unsupported = ("failed: EOPNOTSUPP (FULLNAT is not supported by this kernel (it needs "
                   "the Alibaba LVS patches))")
    assert [str(f.error) for f in stock.apply(ops)] == [
        f"add destination 10.1.0.1:80 of service TCP  10.0.0.1:80 {unsupported}",
        f"add local address 192.168.0.1 of service TCP  10.0.0.1:80 {unsupported}"]
    patched = MemoryBackend(fullnat=True)
    assert patched.apply(ops) == []
    assert patched.read()[key].local_addresses == {"192.168.0.1"}


def test_fullnat_conflicts_name_the_virtual_server():
    from fastcheck.ipvs.backend import KernelInfo, fullnat_conflicts

    table = desired_table(load_file(str(Path(__file__).resolve().parents[2] / "conf" /
                                        "fullnat.conf"))[0])
    assert fullnat_conflicts(table, KernelInfo("1.2.1", 4096, fullnat=True)) == []
    (message,) = fullnat_conflicts(table, KernelInfo("1.2.1", 4096, fullnat=False))
    assert message.startswith("virtual server group web_vips TCP uses FULLNAT")
