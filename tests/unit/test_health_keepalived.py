"""HealthState against keepalived 2.2.7's decisions (check/ipwrapper.c, check_misc.c,
check_data.c): what start-up, a reload and a stop announce, the first failure after a
start, misc_dynamic weights across a reload, inhibited servers under a sorry server.
Sans-IO: time is an argument."""

from __future__ import annotations

from fastcheck.config.loader import load_text
from fastcheck.diff import diff
from fastcheck.health import HealthState, carry_over
from fastcheck.health import events as ev
from fastcheck.model import Config, RsKey, Script
from fastcheck.probeplan import ProbePlan, plan_probes
from fastcheck.probes.result import Failure, ProbeResult

OK = ProbeResult.up()
FAIL = ProbeResult.down(Failure.REFUSED)
START, RELOAD, STOP = ev.Cause.START, ev.Cause.RELOAD, ev.Cause.STOP


def rs(n: int, weight: int = 1, check: str = "tcp", extra: str = "") -> str:
    body = {
        "tcp": "TCP_CHECK {\n retry 3\n delay_before_retry 1\n }\n",
        "alpha": "TCP_CHECK {\n retry 3\n alpha\n }\n",
        "http": "HTTP_GET {\n url {\n path /\n }\n retry 3\n }\n",
        "misc": 'MISC_CHECK {\n misc_path "/bin/w"\n misc_dynamic\n misc_timeout 5\n'
                " retry 2\n }\n",
        "misc9": 'MISC_CHECK {\n misc_path "/bin/w"\n misc_dynamic\n misc_timeout 9\n'
                 " retry 2\n }\n",
    }[check]
    return (f"real_server 172.16.0.{n} 80 {{\n weight {weight}\n"
            f' notify_up "/bin/up {n}"\n notify_down "/bin/down {n}"\n{extra}{body}}}\n')


def vs(address: str, servers: str, extra: str = "") -> str:
    return (f"virtual_server {address} 80 {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n"
            f' quorum_up "/bin/qu {address}"\n quorum_down "/bin/qd {address}"\n'
            f"{extra}{servers}}}\n")


def load(text: str) -> Config:
    cfg, _ = load_text(text)
    return cfg


def start(cfg: Config) -> tuple[HealthState, ProbePlan]:
    plan = plan_probes(cfg)
    return HealthState(cfg, plan), plan


def reload(old: HealthState, cfg: Config) -> tuple[HealthState, ProbePlan]:
    plan = plan_probes(cfg, old.plan)
    return carry_over(old, cfg, plan, diff(old.config, cfg)), plan


def pid(plan: ProbePlan, n: int, kind: str = "TCP_CHECK") -> int:
    for probe in plan.probes.values():
        if probe.key.target.address == f"172.16.0.{n}" and probe.key.kind.value == kind:
            return probe.id
    raise KeyError(n)


def key(cfg: Config, n: int, index: int = 0) -> RsKey:
    return RsKey(cfg.virtual_servers[index].key, f"172.16.0.{n}", 80)


def kinds(events: list) -> list[str]:
    """Event names, without the scheduler's (when a probe runs next is not decided here)."""
    return [type(e).__name__ for e in events if type(e).__name__ != "ProbeRescheduled"]


def scripts(events: list) -> list[str]:
    return [e.script.command for e in events if getattr(e, "script", None) is not None]


# ------------------------------------------------------------------ 1. quorum at start


def test_start_gains_quorum_and_runs_quorum_up_once_its_servers_are_in() -> None:
    cfg = load(vs("10.0.0.1", rs(1, 2) + rs(2, 3), "quorum 4\n hysteresis 1\n"))
    state, _ = start(cfg)
    vs_key = cfg.virtual_servers[0].key
    assert state.startup_events() == [ev.QuorumGained(
        vs_key, 5, 5, Script("/bin/qu 10.0.0.1"), quorum=4, hysteresis=1, cause=START)]
    assert state.settle() == []  # announced once


def test_start_without_quorum_says_nothing_without_a_sorry_server() -> None:
    cfg = load(vs("10.0.0.1", rs(1, 1, "alpha")))  # alpha: not in before its first success
    state, plan = start(cfg)
    assert state.startup_events() == []
    events = state.on_result(0.0, pid(plan, 1), OK)
    assert kinds(events) == ["CheckerUp", "RealServerUp", "QuorumGained"]
    assert events[-1].cause is ev.Cause.CHECK


def test_a_virtual_server_added_by_a_reload_gains_quorum_like_at_start() -> None:
    old_cfg = load(vs("10.0.0.1", rs(1)))
    old, _ = start(old_cfg)
    old.startup_events()
    cfg = load(vs("10.0.0.1", rs(1)) + vs("10.0.0.2", rs(5, 2)))
    new, _ = reload(old, cfg)
    assert new.settle() == [ev.QuorumGained(
        cfg.virtual_servers[1].key, 2, 1, Script("/bin/qu 10.0.0.2"), quorum=1,
        hysteresis=0, cause=START)]


def test_rs_init_notifies_runs_notify_up_of_each_live_server_before_the_quorum() -> None:
    cfg = load("global_defs {\n rs_init_notifies\n}\n"
               + vs("10.0.0.1", rs(1) + rs(2, 1, "alpha")))
    state, _ = start(cfg)
    events = state.startup_events()
    assert kinds(events) == ["RealServerUp", "QuorumGained"]
    assert events[0] == ev.RealServerUp(key(cfg, 1), 1, Script("/bin/up 1"), cause=START)
    # without it, nothing for the servers
    assert kinds(start(load(vs("10.0.0.1", rs(1))))[0].startup_events()) == ["QuorumGained"]


# ------------------------------------------------------------------ 4. first failure


def test_first_failure_after_a_fresh_start_is_decisive_then_retries_apply() -> None:
    cfg = load(vs("10.0.0.1", rs(1) + rs(2)))
    state, plan = start(cfg)
    events = state.on_result(0.0, pid(plan, 1), FAIL)  # retry 3, but one failure is enough
    assert kinds(events)[:2] == ["CheckerDown", "RealServerDown"]
    assert events[0] == ev.CheckerDown(events[0].check, 1)  # "TCP_CHECK … failed."
    # a check that has succeeded once retries as configured
    state.on_result(1.0, pid(plan, 2), OK)
    assert "RetryRequested" in kinds(state.on_result(2.0, pid(plan, 2), FAIL))
    assert state.real_server_up(key(cfg, 2))
    # and so does the first one after it recovers
    state.on_result(3.0, pid(plan, 1), OK)
    assert "RetryRequested" in kinds(state.on_result(4.0, pid(plan, 1), FAIL))


def test_new_servers_of_a_reload_retry_normally() -> None:
    old_cfg = load(vs("10.0.0.1", rs(1)))
    old, _ = start(old_cfg)
    new, plan = reload(old, load(vs("10.0.0.1", rs(1) + rs(2))))
    assert "RetryRequested" in kinds(new.on_result(0.0, pid(plan, 2), FAIL))


# ------------------------------------------------------------------ 2. misc_dynamic


def test_a_reload_changing_only_misc_timeout_keeps_the_check_and_its_weight() -> None:
    old_cfg = load(vs("10.0.0.1", rs(1, 10, "misc") + rs(2)))
    old, plan = start(old_cfg)
    old.on_result(0.0, pid(plan, 1, "MISC_CHECK"), ProbeResult.up(weight=40))
    old.on_result(1.0, pid(plan, 1, "MISC_CHECK"), FAIL)  # one retry used
    cfg = load(vs("10.0.0.1", rs(1, 10, "misc9") + rs(2)))
    new, new_plan = reload(old, cfg)
    assert new.settle() == []
    (checker,) = (new.checker(k) for k in new._checkers if k.rs == key(cfg, 1))
    assert checker.weight == 40 and checker.failures == 1 and checker.up
    (service,) = new.live_table().values()
    assert {d.address: s.weight for d, s in service.destinations.items()}["172.16.0.1"] == 40
    # the retry count went on: two more failures (retry 2) take it down
    p = pid(new_plan, 1, "MISC_CHECK")
    assert kinds(new.on_result(2.0, p, FAIL)) == ["RetryRequested"]
    assert kinds(new.on_result(3.0, p, FAIL)) == ["CheckerDown", "RealServerDown"]


# ------------------------------------------------------------------ 7. inhibit + sorry


def test_inhibited_healthy_servers_go_to_weight_zero_when_the_sorry_server_comes_in() -> None:
    servers = rs(1, 1, extra=" inhibit_on_failure\n") + rs(2, 1, extra=" inhibit_on_failure\n")
    cfg = load(vs("10.0.0.1", servers, "quorum 2\n sorry_server 192.168.9.9 80\n"))
    state, plan = start(cfg)
    state.on_result(0.0, pid(plan, 1), FAIL)  # sum 1 < 2: lost, sorry server in
    (service,) = state.live_table().values()
    assert {d.address: s.weight for d, s in service.destinations.items()} == {
        "172.16.0.1": 0, "172.16.0.2": 0, "192.168.9.9": 1}


# ------------------------------------------------------------------ 9. reload notifies


def test_a_reload_removing_live_servers_and_a_whole_vs_runs_notify_down_and_quorum_down() -> None:
    old_cfg = load(vs("10.0.0.1", rs(1) + rs(2) + rs(3)) + vs("10.0.0.2", rs(4) + rs(5)))
    old, plan = start(old_cfg)
    old.startup_events()
    old.on_result(0.0, pid(plan, 5), FAIL)  # down: no notify_down when removed
    cfg = load(vs("10.0.0.1", rs(1) + rs(3)))
    new, _ = reload(old, cfg)
    events = new.settle()
    assert events == [
        ev.RealServerDown(key(old_cfg, 2), Script("/bin/down 2"), cause=RELOAD),
        ev.RealServerDown(key(old_cfg, 4, 1), Script("/bin/down 4"), cause=RELOAD),
        ev.QuorumLost(old_cfg.virtual_servers[1].key, 0, 1, Script("/bin/qd 10.0.0.2"),
                      quorum=1, hysteresis=0, cause=RELOAD)]


def test_with_lvs_flush_on_stop_a_removed_vs_announces_nothing() -> None:
    flush = "global_defs {\n lvs_flush_on_stop\n}\n"
    old_cfg = load(flush + vs("10.0.0.1", rs(1)) + vs("10.0.0.2", rs(4)))
    old, _ = start(old_cfg)
    new, _ = reload(old, load(flush + vs("10.0.0.1", rs(1))))
    assert new.settle() == []


def test_a_down_server_whose_failed_check_is_replaced_comes_back_up() -> None:
    old_cfg = load(vs("10.0.0.1", rs(1) + rs(2)))
    old, plan = start(old_cfg)
    old.on_result(0.0, pid(plan, 1), FAIL)
    assert not old.real_server_up(key(old_cfg, 1))
    cfg = load(vs("10.0.0.1", rs(1, 1, "http") + rs(2)))  # TCP_CHECK → HTTP_GET
    new, new_plan = reload(old, cfg)
    # keepalived migrate_checkers: no failed checker left → perform_svr_state(UP)
    assert new.settle() == [ev.RealServerUp(key(cfg, 1), 1, Script("/bin/up 1"),
                                            cause=RELOAD)]
    assert new.real_server_up(key(cfg, 1))
    # … and one failure of the new check is enough to take it down again
    events = new.on_result(1.0, pid(new_plan, 1, "HTTP_GET"), FAIL)
    assert kinds(events)[:2] == ["CheckerDown", "RealServerDown"]


def test_a_new_alpha_check_on_a_down_server_keeps_it_down() -> None:
    old_cfg = load(vs("10.0.0.1", rs(1) + rs(2)))
    old, plan = start(old_cfg)
    old.on_result(0.0, pid(plan, 1), FAIL)
    http_alpha = "HTTP_GET {\n url {\n path /\n }\n alpha\n }\n"
    cfg = load(vs("10.0.0.1", "real_server 172.16.0.1 80 {\n" + http_alpha + "}\n" + rs(2)))
    new, _ = reload(old, cfg)
    assert new.settle() == []
    assert not new.real_server_up(key(cfg, 1))


# ------------------------------------------------------------------ 11. notifier details


def test_an_alpha_check_whose_first_result_is_a_failure_gets_notify_down() -> None:
    cfg = load(vs("10.0.0.1", rs(1, 1, "alpha") + rs(2)))
    state, plan = start(cfg)
    events = state.on_result(0.0, pid(plan, 1), FAIL)
    assert kinds(events) == ["CheckerDown", "RealServerDown"]
    assert events[1] == ev.RealServerDown(key(cfg, 1), Script("/bin/down 1"), cause=START)
    assert kinds(state.on_result(5.0, pid(plan, 1), FAIL)) == []  # only the first one


def test_omega_runs_quorum_down_at_stop_even_without_quorum() -> None:
    cfg = load(vs("10.0.0.1", rs(1, 1, "alpha") + rs(2, 1, "alpha"), "omega\n"))
    state, plan = start(cfg)
    state.on_result(0.0, pid(plan, 1), OK)  # rs 1 in, quorum gained
    state.on_result(0.0, pid(plan, 1), FAIL)
    state.on_result(1.0, pid(plan, 1), FAIL)
    state.on_result(2.0, pid(plan, 1), FAIL)
    state.on_result(3.0, pid(plan, 1), FAIL)  # down: quorum lost
    assert not state.quorum_up(cfg.virtual_servers[0].key)
    assert state.shutdown() == [ev.QuorumLost(
        cfg.virtual_servers[0].key, 0, 1, Script("/bin/qd 10.0.0.1"), quorum=1,
        hysteresis=0, cause=STOP)]


def test_omega_with_lvs_flush_on_stop_runs_no_per_server_notify_down() -> None:
    text = vs("10.0.0.1", rs(1) + rs(2), "omega\n")
    events = start(load(text))[0].shutdown()
    assert kinds(events) == ["RealServerDown", "RealServerDown", "QuorumLost"]
    flushed = start(load("global_defs {\n lvs_flush_on_stop\n}\n" + text))[0].shutdown()
    assert kinds(flushed) == ["QuorumLost"] and scripts(flushed) == ["/bin/qd 10.0.0.1"]


def test_omega_announces_nothing_when_the_table_is_left_in_place() -> None:
    """--dont-release-ipvs: keepalived skips clear_services, so no omega notifier runs."""
    events = start(load(vs("10.0.0.1", rs(1) + rs(2), "omega\n")))[0].shutdown(release=False)
    assert events == []


def test_a_vs_without_quorum_given_a_new_sorry_server_starts_with_quorum_down_again() -> None:
    old_cfg = load(vs("10.0.0.1", rs(1, 1, "alpha"), "quorum 1\n"))
    old, _ = start(old_cfg)
    assert old.startup_events() == []  # no sorry server: keepalived says nothing
    cfg = load(vs("10.0.0.1", rs(1, 1, "alpha"), "quorum 1\n sorry_server 192.168.9.9 80\n"))
    new, _ = reload(old, cfg)
    vs_key = cfg.virtual_servers[0].key
    assert new.settle() == [
        ev.QuorumLost(vs_key, 0, 1, Script("/bin/qd 10.0.0.1"), quorum=1, hysteresis=0,
                      cause=START),
        ev.SorryServerIn(vs_key, RsKey(vs_key, "192.168.9.9", 80), False)]
    (service,) = new.live_table().values()
    assert [d.address for d in service.destinations] == ["192.168.9.9"]
