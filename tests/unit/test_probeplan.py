"""The probe plan: identical checks probed once, shared schedules, ids carried by reloads."""

from __future__ import annotations

import pytest

from fastcheck.config.loader import load_text
from fastcheck.model import CheckKind, Config, VsKind
from fastcheck.probeplan import diff_plans, plan_probes
from fastcheck.synthetic import farm


def load(text: str) -> Config:
    config, _ = load_text(text)
    return config


def vs(address: str, body: str, *, delay_loop: float = 5, port: int = 80) -> str:
    return (f"virtual_server {address} {port} {{\n    delay_loop {delay_loop}\n"
            f"    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n{body}}}\n")


def rs(address: str, check: str, port: int = 8080) -> str:
    return f"    real_server {address} {port} {{\n        {check}\n    }}\n"


TCP = "TCP_CHECK { connect_timeout 3 }"


def test_two_virtual_servers_sharing_a_real_server_probe_it_once():
    plan = plan_probes(load(vs("10.0.0.1", rs("172.16.0.1", TCP))
                            + vs("10.0.0.2", rs("172.16.0.1", TCP))))
    assert len(plan) == 1
    (probe,) = plan.probes.values()
    assert probe.key.kind is CheckKind.TCP
    assert probe.host == "172.16.0.1"
    assert [owner.rs.vs.address for owner in probe.owners] == ["10.0.0.1", "10.0.0.2"]
    assert plan.check_count == 2
    for owner in probe.owners:
        assert plan.probe_of(owner) is probe


def test_differing_connect_timeout_makes_two_probes():
    plan = plan_probes(load(vs("10.0.0.1", rs("172.16.0.1", TCP))
                            + vs("10.0.0.2", rs("172.16.0.1", "TCP_CHECK { connect_timeout 4 }"))))
    assert len(plan) == 2
    assert sorted(p.key.connect_timeout_s for p in plan.probes.values()) == [3.0, 4.0]
    assert all(len(p.owners) == 1 for p in plan.probes.values())


def test_differing_port_or_check_kind_makes_separate_probes():
    plan = plan_probes(load(vs("10.0.0.1", rs("172.16.0.1", TCP) + rs("172.16.0.1", TCP, 8081)
                               + rs("172.16.0.2", TCP))
                            + vs("10.0.0.2", rs("172.16.0.1", "HTTP_GET { url { path / } }"))))
    assert len(plan) == 4


def test_shared_probe_takes_the_fastest_interval_and_shortest_warmup():
    plan = plan_probes(load(
        vs("10.0.0.1", rs("172.16.0.1", "TCP_CHECK { connect_timeout 3\n warmup 7 }"),
           delay_loop=10)
        + vs("10.0.0.2", rs("172.16.0.1", "TCP_CHECK { connect_timeout 3\n warmup 2 }"),
             delay_loop=3)
        + vs("10.0.0.3", rs("172.16.0.1", "TCP_CHECK { connect_timeout 3\n warmup 4 }"),
             delay_loop=6)))
    (probe,) = plan.probes.values()
    assert probe.interval_s == 3.0
    assert probe.warmup_s == 2.0
    assert len(probe.owners) == 3


def test_group_and_plain_virtual_server_share_the_probe():
    text = ("virtual_server_group WEB {\n    10.0.1.1-3 80\n}\n"
            "virtual_server group WEB {\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n"
            + rs("172.16.0.1", TCP) + "}\n"
            + vs("10.0.0.1", rs("172.16.0.1", TCP)))
    plan = plan_probes(load(text))
    (probe,) = plan.probes.values()
    assert [owner.rs.vs.kind for owner in probe.owners] == [VsKind.GROUP, VsKind.ADDRESS]


def test_identical_checks_on_one_real_server_are_one_probe_with_two_owners():
    plan = plan_probes(load(vs("10.0.0.1", rs("172.16.0.1", TCP + "\n        " + TCP))))
    (probe,) = plan.probes.values()
    assert [owner.ordinal for owner in probe.owners] == [0, 1]


def test_ids_are_dense_in_configuration_order_without_a_previous_plan():
    config = load(farm(20, 5))
    plan = plan_probes(config)
    assert list(plan.probes) == list(range(100))
    assert plan.next_id == 100
    assert plan_probes(config) == plan  # deterministic


def test_ids_survive_a_reload_and_are_never_reused():
    old = plan_probes(load(farm(30, 4)))
    new = plan_probes(load(farm(30, 4, revision=1)), previous=old)
    survivors = old.ids.keys() & new.ids.keys()
    assert survivors
    assert all(old.ids[key] == new.ids[key] for key in survivors)
    fresh = [new.ids[key] for key in new.ids.keys() - old.ids.keys()]
    assert fresh and min(fresh) >= old.next_id
    assert new.next_id == old.next_id + len(fresh)

    change = diff_plans(old, new)
    assert {p.id for p in change.added} == set(fresh)
    assert set(change.removed) == {old.ids[key] for key in old.ids.keys() - new.ids.keys()}
    assert change.kept == len(survivors)
    assert change.retimed == ()

    # a key that vanished and comes back later gets a new id, not its old one
    again = plan_probes(load(farm(30, 4)), previous=new)
    returned = old.ids.keys() - new.ids.keys()
    assert all(again.ids[key] >= new.next_id for key in returned)


def test_diff_reports_retimed_probes():
    old = plan_probes(load(vs("10.0.0.1", rs("172.16.0.1", TCP), delay_loop=5)))
    new = plan_probes(load(vs("10.0.0.1", rs("172.16.0.1", TCP), delay_loop=2)), previous=old)
    change = diff_plans(old, new)
    assert (change.added, change.removed, change.kept) == ((), (), 1)
    assert [p.interval_s for p in change.retimed] == [2.0]
    assert diff_plans(new, new).retimed == ()


def test_probe_of_unknown_check_raises():
    plan = plan_probes(load(vs("10.0.0.1", rs("172.16.0.1", TCP))))
    other = plan_probes(load(vs("10.0.0.1", rs("172.16.0.9", TCP))))
    (owner,) = next(iter(other.probes.values())).owners
    with pytest.raises(KeyError):
        plan.probe_of(owner)


def test_plans_a_mid_sized_farm():
    config = load(farm(200, 20))
    plan = plan_probes(config)
    checks = sum(len(r.checks) for v in config.virtual_servers for r in v.real_servers)
    assert plan.check_count == checks == 4000
    assert len(plan) == 4000  # the synthetic farm shares no real server
