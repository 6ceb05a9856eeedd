"""HealthState: real-server aggregation, weights, quorum, sorry server, budget, live table,
omega, ha_suspend, snapshot and carry-over across a reload. Sans-IO: time is passed in."""

from __future__ import annotations

import json

from fastcheck.config.loader import load_text
from fastcheck.diff import diff
from fastcheck.health import HealthOptions, HealthState, carry_over
from fastcheck.health import events as ev
from fastcheck.ipvs.table import DestinationKey, desired_table
from fastcheck.model import Config, RsKey, Script
from fastcheck.probeplan import ProbePlan, plan_probes
from fastcheck.probes.result import Failure, ProbeResult

OK = ProbeResult.up()
FAIL = ProbeResult.down(Failure.TIMEOUT)
VIP = "10.0.0.1"


def rs_block(n: int, weight: int = 1, *, checks: str = "tcp", extra: str = "") -> str:
    address = f"172.16.0.{n}"
    body = {
        "tcp": "TCP_CHECK {\n retry 1\n delay_before_retry 2\n }\n",
        "tcp0": "TCP_CHECK {\n retry 0\n }\n",
        "none": "",
        "alpha": "TCP_CHECK {\n retry 0\n alpha\n }\n",
        "two": "TCP_CHECK {\n retry 0\n }\nHTTP_GET {\n url {\n path /\n }\n retry 0\n }\n",
        "misc": 'MISC_CHECK {\n misc_path "/bin/w"\n misc_dynamic\n retry 0\n }\n',
        "file": "FILE_CHECK {\n track_file tf\n }\n",
    }[checks]
    return f"real_server {address} 80 {{\n weight {weight}\n{extra}{body}}}\n"


def config(servers: str, vs_extra: str = "", *, more: str = "") -> Config:
    text = (f"track_file tf {{\n file /tmp/tf\n weight 1\n}}\n"
            f"virtual_server {VIP} 80 {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n"
            f"{vs_extra}{servers}}}\n{more}")
    cfg, _ = load_text(text)
    return cfg


def build(cfg: Config, *, fresh: bool = False,
          **options: object) -> tuple[HealthState, ProbePlan]:
    """A HealthState for `cfg`. Unless `fresh`, every check has passed its first round
    (keepalived's "one failure is enough" after a start no longer applies)."""
    plan = plan_probes(cfg)
    state = HealthState(cfg, plan, HealthOptions(**options))  # type: ignore[arg-type]
    if not fresh:
        for checker in state._checkers.values():
            checker.decisive = False
            checker.has_run = True
    return state, plan


def pid(plan: ProbePlan, n: int, kind: str = "TCP_CHECK") -> int:
    address = f"172.16.0.{n}"
    for probe in plan.probes.values():
        if probe.key.target.address == address and probe.key.kind.value == kind:
            return probe.id
    raise KeyError(address)


def rskey(cfg: Config, n: int, vs: int = 0) -> RsKey:
    return RsKey(cfg.virtual_servers[vs].key, f"172.16.0.{n}", 80)


def dests(state: HealthState) -> dict[str, int]:
    """{address: weight} of the only service."""
    (service,) = state.live_table().values()
    return {d.address: s.weight for d, s in service.destinations.items()}


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


# ------------------------------------------------------------------ retries, rs up/down


def test_retry_requests_then_down_and_notify_scripts() -> None:
    cfg = config(rs_block(1, 5, extra=' notify_up "/bin/up"\n notify_down "/bin/down"\n')
                 + rs_block(2))
    state, plan = build(cfg)
    p = pid(plan, 1)
    events = state.on_result(0.0, p, FAIL)
    assert events == [ev.RetryRequested(p, state.checker(
        next(iter(k for k in state._checkers if k.rs == rskey(cfg, 1)))).key, 2.0, 1),
        ev.ProbeRescheduled(p, 2.0)]
    assert dests(state) == {"172.16.0.1": 5, "172.16.0.2": 1}
    events = state.on_result(2.0, p, FAIL)
    assert kinds(events) == ["CheckerDown", "RealServerDown"]
    assert events[1] == ev.RealServerDown(rskey(cfg, 1), Script("/bin/down"))
    assert dests(state) == {"172.16.0.2": 1}
    # already down: no retry counted, but TCP_CHECK re-checks after delay_before_retry
    assert state.on_result(3.0, p, FAIL) == [ev.ProbeRescheduled(p, 2.0)]
    events = state.on_result(9.0, p, OK)
    assert kinds(events) == ["CheckerUp", "RealServerUp"]
    assert events[1] == ev.RealServerUp(rskey(cfg, 1), 5, Script("/bin/up"))
    assert dests(state) == {"172.16.0.1": 5, "172.16.0.2": 1}


def test_rs_up_only_when_all_checkers_up() -> None:
    cfg = config(rs_block(1, checks="two") + rs_block(2))
    state, plan = build(cfg)
    tcp, http = pid(plan, 1), pid(plan, 1, "HTTP_GET")
    assert kinds(state.on_result(0, tcp, FAIL)) == ["CheckerDown", "RealServerDown"]
    assert kinds(state.on_result(1, http, FAIL)) == ["CheckerDown"]
    assert kinds(state.on_result(2, tcp, OK)) == ["CheckerUp"]
    assert not state.real_server_up(rskey(cfg, 1))
    assert kinds(state.on_result(3, http, OK)) == []  # the failed url answers: a pass begins
    assert kinds(state.on_result(4, http, OK)) == ["CheckerUp", "RealServerUp"]


def test_rs_without_checks_is_always_up() -> None:
    cfg = config(rs_block(1, 3, checks="none"), "alpha\n")
    state, _ = build(cfg)
    assert state.real_server_up(rskey(cfg, 1)) and dests(state) == {"172.16.0.1": 3}


def test_alpha_starts_down_until_first_success() -> None:
    cfg = config(rs_block(1, checks="alpha") + rs_block(2, 2))
    state, plan = build(cfg)
    assert dests(state) == {"172.16.0.2": 2}
    assert not state.real_server_up(rskey(cfg, 1))
    assert kinds(state.on_result(0, pid(plan, 1), OK)) == ["CheckerUp", "RealServerUp"]
    assert dests(state) == {"172.16.0.1": 1, "172.16.0.2": 2}


def test_inhibit_on_failure_keeps_weight_zero() -> None:
    cfg = config(rs_block(1, 4, checks="tcp0", extra=" inhibit_on_failure\n") + rs_block(2))
    state, plan = build(cfg)
    state.on_result(0, pid(plan, 1), FAIL)
    assert dests(state) == {"172.16.0.1": 0, "172.16.0.2": 1}
    state.on_result(1, pid(plan, 1), OK)
    assert dests(state) == {"172.16.0.1": 4, "172.16.0.2": 1}


def test_vs_level_alpha_is_inherited_by_checks() -> None:
    cfg = config(rs_block(1, checks="tcp0") + rs_block(2, checks="none"), "alpha\n")
    state, _ = build(cfg)
    assert not state.real_server_up(rskey(cfg, 1)) and state.real_server_up(rskey(cfg, 2))


def test_alpha_with_inhibit_starts_at_weight_zero() -> None:
    cfg = config(rs_block(1, 4, checks="alpha", extra=" inhibit_on_failure\n"))
    state, _ = build(cfg)
    assert dests(state) == {"172.16.0.1": 0}


# ------------------------------------------------------------------ dynamic weights


def test_misc_dynamic_weight_is_absolute_and_reset_when_the_check_goes_down() -> None:
    cfg = config(rs_block(1, 10, checks="misc") + rs_block(2))
    state, plan = build(cfg)
    p = pid(plan, 1, "MISC_CHECK")
    events = state.on_result(0, p, ProbeResult.up(weight=3))
    assert events == [ev.WeightChanged(rskey(cfg, 1), 10, 3)]
    assert dests(state)["172.16.0.1"] == 3
    assert state.on_result(1, p, ProbeResult.up(weight=3)) == []
    # keepalived check_misc.c: the weight is dropped (silently) when the check goes down
    events = state.on_result(3, p, FAIL)
    assert kinds(events) == ["CheckerDown", "RealServerDown"]
    events = state.on_result(4, p, OK)
    assert events[-1] == ev.RealServerUp(rskey(cfg, 1), 10, None)


def test_misc_dynamic_exit_zero_means_the_configured_weight() -> None:
    cfg = config(rs_block(1, 10, checks="misc") + rs_block(2))
    state, plan = build(cfg)
    p = pid(plan, 1, "MISC_CHECK")
    state.on_result(0, p, ProbeResult.up(weight=3))
    # exit 0 (a success without a weight): keepalived sets cur_weight 0, the configured one
    assert state.on_result(1, p, OK) == [ev.WeightChanged(rskey(cfg, 1), 3, 10)]
    assert dests(state)["172.16.0.1"] == 10


def test_misc_dynamic_weight_survives_failures_while_retries_remain() -> None:
    misc = 'MISC_CHECK {\n misc_path "/bin/w"\n misc_dynamic\n retry 2\n }\n'
    cfg = config("real_server 172.16.0.1 80 {\n weight 1\n" + misc + "}\n"
                 + rs_block(2, 1, checks="tcp0"),
                 "quorum 20\n sorry_server 192.168.9.9 80\n")
    state, plan = build(cfg)
    vs, p = cfg.virtual_servers[0].key, pid(plan, 1, "MISC_CHECK")
    state.on_result(0, p, ProbeResult.up(weight=50))  # 51 ≥ 20: gained
    assert state.quorum_up(vs)
    for now in (1.0, 2.0):  # retries left: the dynamic weight stays, so does quorum
        assert kinds(state.on_result(now, p, FAIL)) == ["RetryRequested", "ProbeRescheduled"]
        assert state.quorum_up(vs) and dests(state)["172.16.0.1"] == 50
    assert state.on_result(3.0, p, ProbeResult.up(weight=50)) == []
    events = state.on_result(4.0, p, FAIL)
    assert kinds(events) == ["RetryRequested", "ProbeRescheduled"] and state.quorum_up(vs)


def test_file_weight_offset_added_and_clamped() -> None:
    cfg = config(rs_block(1, 10, checks="file"))
    state, plan = build(cfg)
    p = pid(plan, 1, "FILE_CHECK")
    state.on_result(0, p, ProbeResult.up(weight_offset=5))
    assert dests(state) == {"172.16.0.1": 15}
    state.on_result(1, p, ProbeResult.up(weight_offset=-25))
    assert dests(state) == {"172.16.0.1": 0}  # clamped at 0, still up
    assert state.real_server_up(rskey(cfg, 1))
    state.on_result(2, p, ProbeResult.up(weight_offset=2**40))
    assert dests(state) == {"172.16.0.1": 2**31 - 1}


# ------------------------------------------------------------------ quorum, sorry server

QUORUM = ('quorum 4\n hysteresis 1\n quorum_up "/bin/qu"\n quorum_down "/bin/qd"\n'
          " sorry_server 192.168.9.9 8080\n")


def farm4(vs_extra: str = QUORUM, inhibit_rs: str = "") -> Config:
    return config("".join(rs_block(n, 2, checks="tcp0", extra=inhibit_rs) for n in (1, 2, 3)),
                  vs_extra)


def test_quorum_lost_and_gained_at_exact_thresholds_with_sorry_swap() -> None:
    cfg = farm4()  # sum 6; gain at ≥5, lose below 3
    state, plan = build(cfg)
    vs = cfg.virtual_servers[0].key
    assert state.quorum_up(vs) and dests(state) == dict.fromkeys(
        ("172.16.0.1", "172.16.0.2", "172.16.0.3"), 2)
    assert kinds(state.on_result(0, pid(plan, 1), FAIL)) == ["CheckerDown", "RealServerDown"]
    assert state.quorum_up(vs)  # 4 ≥ 3
    sorry = RsKey(vs, "192.168.9.9", 8080)
    events = state.on_result(1, pid(plan, 2), FAIL)  # 2 < 3: lost
    assert events[-2:] == [ev.QuorumLost(vs, 2, 3, Script("/bin/qd"), quorum=4, hysteresis=1),
                           ev.SorryServerIn(vs, sorry, False)]
    assert dests(state) == {"192.168.9.9": 1}  # alive 172.16.0.3 pulled
    assert kinds(state.on_result(2, pid(plan, 1), OK)) == ["CheckerUp", "RealServerUp"]
    assert not state.quorum_up(vs) and dests(state) == {"192.168.9.9": 1}  # 4 < 5
    events = state.on_result(3, pid(plan, 2), OK)  # 6 ≥ 5: gained
    assert events[-2:] == [ev.QuorumGained(vs, 6, 5, Script("/bin/qu"), quorum=4,
                                           hysteresis=1), ev.SorryServerOut(vs, sorry, False)]
    assert dests(state) == dict.fromkeys(("172.16.0.1", "172.16.0.2", "172.16.0.3"), 2)


def test_quorum_gain_exactly_at_quorum_plus_hysteresis() -> None:
    cfg = config("".join(rs_block(n, 1, checks="tcp0") for n in range(1, 7)),
                 "quorum 4\n hysteresis 1\n")
    state, plan = build(cfg)
    vs = cfg.virtual_servers[0].key
    for n in (1, 2, 3):
        state.on_result(0, pid(plan, n), FAIL)
    assert state.quorum_up(vs)  # sum 3 = quorum - hysteresis: kept
    assert kinds(state.on_result(1, pid(plan, 4), FAIL))[-1] == "QuorumLost"  # 2 < 3
    assert kinds(state.on_result(2, pid(plan, 4), OK))[-1] == "RealServerUp"  # 3
    assert kinds(state.on_result(3, pid(plan, 3), OK))[-1] == "RealServerUp"  # 4
    assert kinds(state.on_result(4, pid(plan, 2), OK))[-1] == "QuorumGained"  # 5
    # no sorry server: quorum loss changes nothing in the table
    for n in range(1, 7):
        state.on_result(5, pid(plan, n), FAIL)
    assert dests(state) == {}


def test_sorry_server_inhibit_and_inhibited_rs_stay_while_sorry_active() -> None:
    cfg = farm4(QUORUM + " sorry_server_inhibit\n", " inhibit_on_failure\n")
    state, plan = build(cfg)
    assert dests(state) == {"172.16.0.1": 2, "172.16.0.2": 2, "172.16.0.3": 2,
                            "192.168.9.9": 0}
    state.on_result(0, pid(plan, 1), FAIL)
    state.on_result(0, pid(plan, 2), FAIL)
    # keepalived perform_quorum_state + ipvs_cmd: the alive inhibited server 3 goes to
    # weight 0 when the sorry server comes in; it is not deleted
    assert dests(state) == {"172.16.0.1": 0, "172.16.0.2": 0, "172.16.0.3": 0,
                            "192.168.9.9": 1}
    state.on_result(1, pid(plan, 1), OK)
    state.on_result(1, pid(plan, 2), OK)
    assert dests(state) == {"172.16.0.1": 2, "172.16.0.2": 2, "172.16.0.3": 2,
                            "192.168.9.9": 0}


def test_weight_change_while_sorry_active_does_not_touch_table() -> None:
    # quorum 20 of 30 (the loader caps quorum at the weight total); rs 2 starts down
    cfg = config(rs_block(1, 10, checks="file") + rs_block(2, 20, checks="alpha"),
                 "quorum 20\n sorry_server 192.168.9.9 80\n")
    state, plan = build(cfg)
    assert dests(state) == {"192.168.9.9": 1}  # starts without quorum
    vs = cfg.virtual_servers[0].key
    assert state.startup_events() == [
        ev.QuorumLost(vs, 10, 20, None, quorum=20, hysteresis=0, cause=ev.Cause.START),
        ev.SorryServerIn(vs, RsKey(vs, "192.168.9.9", 80), False)]
    state.changed_services()
    state.on_result(0, pid(plan, 1, "FILE_CHECK"), ProbeResult.up(weight_offset=2))
    assert state.changed_services() == set() and dests(state) == {"192.168.9.9": 1}
    state.on_result(1, pid(plan, 1, "FILE_CHECK"), ProbeResult.up(weight_offset=10))
    assert dests(state) == {"172.16.0.1": 20}


# ------------------------------------------------------------------ removal budget


def test_removal_budget_trips_holds_and_recovers() -> None:
    cfg = config("".join(rs_block(n, 1, checks="tcp0") for n in range(1, 11)))
    state, plan = build(cfg, budget_share=0.3, budget_window_s=10.0)  # limit 3
    for n in (1, 2, 3):
        assert kinds(state.on_result(float(n), pid(plan, n), FAIL))[-1] == "RealServerDown"
    events = state.on_result(4.0, pid(plan, 4), FAIL)
    assert ev.RemovalBudgetTripped(3, 3, 1) in events
    assert events[-1] == ev.RealServerDown(rskey(cfg, 4), None, kept_by_budget=True)
    events = state.on_result(5.0, pid(plan, 5), FAIL)
    assert not any(isinstance(e, ev.RemovalBudgetTripped) for e in events)  # once
    table = dests(state)
    assert "172.16.0.4" in table and "172.16.0.5" in table and "172.16.0.1" not in table
    assert state.snapshot()["removal_budget"]["held"] == 2  # type: ignore[index]
    assert state.next_deadline() == 11.0
    assert state.on_tick(11.5) == []  # 2 recent + 2 held ≥ 3
    # held one came back (it never left the table); recent [3.0] + 1 held < 3: recovered
    events = state.on_result(12.0, pid(plan, 4), OK)
    assert kinds(events) == ["CheckerUp", "RealServerUp", "RemovalBudgetRecovered"]
    assert events[-1] == ev.RemovalBudgetRecovered(1)
    assert "172.16.0.5" not in dests(state) and "172.16.0.4" in dests(state)
    assert state.budget.trips == 1 and not state.budget.tripped


def test_removal_budget_per_vs() -> None:
    more = ("virtual_server 10.0.0.2 80 {\n lb_algo rr\n lb_kind NAT\n protocol TCP\n"
            + "".join(rs_block(n, checks="tcp0") for n in range(11, 15)) + "}\n")
    cfg = config("".join(rs_block(n, checks="tcp0") for n in range(1, 5)), more=more)
    state, plan = build(cfg, budget_share=0.5, budget_per_vs=True)  # limit 2 per VS
    vs0, vs1 = (vs.key for vs in cfg.virtual_servers)
    for n in (1, 2):
        state.on_result(0, pid(plan, n), FAIL)
    events = state.on_result(0, pid(plan, 3), FAIL)
    assert ev.RemovalBudgetTripped(2, 2, 1, vs0) in events
    for n in (11, 12):  # the other VS has its own budget
        events = state.on_result(0, pid(plan, n), FAIL)
        assert "RemovalBudgetTripped" not in kinds(events)
    table = state.live_table()
    held = {d.address for s in table.values() if s.owner == vs0 for d in s.destinations}
    assert held == {"172.16.0.3", "172.16.0.4"}
    snap = state.snapshot()
    assert snap["removal_budget"]["tripped"] == 1  # type: ignore[index]
    assert snap["virtual_servers"][0]["removal_budget"]["held"] == 1  # type: ignore[index]
    assert state.next_deadline() == 10.0
    events = state.on_tick(10.0)  # both removals left the window: 0 + 1 held < 2
    assert events == [ev.RemovalBudgetRecovered(1, vs0)]
    assert vs1 not in state._tripped.values()


def test_carry_over_keeps_removal_budget_hold() -> None:
    cfg = config("".join(rs_block(n, checks="tcp0") for n in range(1, 5)))
    old, plan = build(cfg, budget_share=0.25)  # limit 1
    old.on_result(0, pid(plan, 1), FAIL)
    old.on_result(0, pid(plan, 2), FAIL)  # held
    new_cfg = config("".join(rs_block(n, checks="tcp0") for n in range(1, 6)))
    new = carry_over(old, new_cfg, plan_probes(new_cfg, plan), diff(cfg, new_cfg))
    assert new.budget.tripped and list(new.budget.held) == [rskey(cfg, 2)]
    assert new.budget.trips == 1
    assert "172.16.0.2" in dests(new) and "172.16.0.1" not in dests(new)
    events = new.on_result(20.0, pid(plan, 2), OK)
    assert kinds(events) == ["CheckerUp", "RealServerUp", "RemovalBudgetRecovered"]


def test_held_servers_count_for_quorum() -> None:
    cfg = config("".join(rs_block(n, 1, checks="tcp0") for n in range(1, 5)),
                 "quorum 3\n sorry_server 192.168.9.9 80\n")
    state, plan = build(cfg, budget_share=0.25)  # limit 1
    state.on_result(0, pid(plan, 1), FAIL)
    state.on_result(0, pid(plan, 2), FAIL)  # held
    assert state.quorum_up(cfg.virtual_servers[0].key)


# ------------------------------------------------------------------ slow start


def test_slow_start_ramps_after_recovery_only() -> None:
    cfg = config(rs_block(1, 100, checks="tcp0"))
    state, plan = build(cfg, slow_start_s=10.0, slow_start_steps=4)
    assert dests(state) == {"172.16.0.1": 100} and state.next_deadline() is None
    state.on_result(0, pid(plan, 1), FAIL)
    state.on_result(100.0, pid(plan, 1), OK)
    assert dests(state) == {"172.16.0.1": 25}
    assert state.next_deadline() == 102.5
    state.on_tick(102.5)
    assert dests(state) == {"172.16.0.1": 50}
    state.on_tick(107.6)
    assert dests(state) == {"172.16.0.1": 100}
    assert state.next_deadline() is None
    assert state.snapshot()["virtual_servers"][0]["real_servers"][0]["effective_weight"] == 100  # type: ignore[index]


# ------------------------------------------------------------------ ha_suspend, omega


def test_ha_suspend_ignores_results_while_vip_absent() -> None:
    cfg = config(rs_block(1, checks="tcp0"), "ha_suspend\n")
    state, plan = build(cfg)
    vs = cfg.virtual_servers[0].key
    assert state.set_vip_present(vs, False) == []
    assert state.on_result(0, pid(plan, 1), FAIL) == []
    state.set_vip_present(vs, True)
    assert "RealServerDown" in kinds(state.on_result(1, pid(plan, 1), FAIL))


def test_ha_suspend_leaves_track_files_acting() -> None:
    """keepalived applies a track file's changes whatever ha_suspend says (check_file.c
    acts on inotify events, not through the suspended checker threads)."""
    cfg = config(rs_block(1, 10, checks="file"), "ha_suspend\n")
    state, plan = build(cfg)
    state.set_vip_present(cfg.virtual_servers[0].key, False)
    state.on_result(0, pid(plan, 1, "FILE_CHECK"), ProbeResult.up(weight_offset=5))
    assert dests(state) == {"172.16.0.1": 15}


def test_omega_shutdown_runs_down_notifiers() -> None:
    cfg = config(rs_block(1, extra=' notify_down "/bin/d1"\n') + rs_block(2, checks="tcp0"),
                 'omega\n quorum_down "/bin/qd"\n')
    state, plan = build(cfg)
    state.on_result(0, pid(plan, 2), FAIL)
    events = state.shutdown()
    vs = cfg.virtual_servers[0].key
    stop = ev.Cause.STOP
    assert events == [ev.RealServerDown(rskey(cfg, 1), Script("/bin/d1"), cause=stop),
                      ev.QuorumLost(vs, 0, 1, Script("/bin/qd"), quorum=1, hysteresis=0,
                                    cause=stop)]
    assert all(e.stopping for e in events)  # type: ignore[union-attr]
    assert build(config(rs_block(1)))[0].shutdown() == []  # no omega: nothing


# ------------------------------------------------------------------ live table


def test_live_table_equals_desired_when_healthy_including_groups_and_fnat() -> None:
    more = ("local_address_group L1 {\n 192.168.0.1-2\n}\n"
            "virtual_server_group G {\n 10.1.0.1-3 80\n}\n"
            "virtual_server group G {\n lb_algo wlc\n lb_kind FNAT\n protocol TCP\n"
            " laddr_group_name L1\n" + rs_block(5, 3) + rs_block(6, 4) + "}\n")
    cfg = config(rs_block(1, 2) + rs_block(2), more=more)
    state, plan = build(cfg)
    live = state.live_table()
    assert live == desired_table(cfg)
    assert len(live) == 4
    state.changed_services()
    state.on_result(0, pid(plan, 5), FAIL)
    state.on_result(1, pid(plan, 5), FAIL)
    changed = state.changed_services()
    assert len(changed) == 3 and all(key.address.startswith("10.1.0.") for key in changed)
    for key in changed:
        assert DestinationKey("172.16.0.5", 80) not in live[key].destinations
        assert live[key].local_addresses == frozenset({"192.168.0.1", "192.168.0.2"})
    assert state.changed_services() == set()


def test_shared_probe_feeds_every_owner() -> None:
    more = ("virtual_server 10.0.0.2 80 {\n lb_algo rr\n lb_kind NAT\n protocol TCP\n"
            + rs_block(1, 7, checks="tcp0") + "}\n")
    cfg = config(rs_block(1, checks="tcp0"), more=more)
    state, plan = build(cfg)
    events = state.on_result(0, pid(plan, 1), FAIL)
    assert [e.rs for e in events if isinstance(e, ev.RealServerDown)] == [
        rskey(cfg, 1, 0), rskey(cfg, 1, 1)]
    assert all(not s.destinations for s in state.live_table().values())


def test_unknown_probe_id_is_ignored() -> None:
    state, _ = build(config(rs_block(1)))
    assert state.on_result(0, 99999, FAIL) == []


# ------------------------------------------------------------------ snapshot, reload


def test_snapshot_is_json_able() -> None:
    cfg = farm4()
    state, plan = build(cfg)
    state.on_result(0, pid(plan, 1), FAIL)
    snap = json.loads(json.dumps(state.snapshot()))
    vs = snap["virtual_servers"][0]
    assert vs["quorum_up"] and vs["weight_sum"] == 4
    assert vs["real_servers"][0]["up"] is False
    assert vs["real_servers"][0]["checks"][0]["state"] == "down"


def test_carry_over_keeps_state_of_survivors() -> None:
    old_cfg = config(rs_block(1, checks="tcp") + rs_block(2, checks="tcp0")
                     + rs_block(3, checks="misc") + rs_block(4, checks="tcp0"),
                     "quorum 2\n sorry_server 192.168.9.9 80\n")
    old, plan = build(old_cfg)
    old.on_result(0, pid(plan, 1), FAIL)  # retrying, 1 failure
    old.on_result(0, pid(plan, 2), FAIL)  # down
    old.on_result(0, pid(plan, 3, "MISC_CHECK"), ProbeResult.up(weight=9))
    # new config: rs 4 gone, rs 5 new (alpha), rs 2's check changes (retry 0 → HTTP)
    new_cfg = config(rs_block(1, checks="tcp") + rs_block(2, checks="two")
                     + rs_block(3, checks="misc") + rs_block(5, checks="alpha"),
                     "quorum 2\n sorry_server 192.168.9.9 80\n")
    new_plan = plan_probes(new_cfg, plan)
    new = carry_over(old, new_cfg, new_plan, diff(old_cfg, new_cfg))
    c1 = new.checker(next(k for k in new._checkers if k.rs == rskey(new_cfg, 1)))
    assert c1.failures == 1 and c1.up
    assert not new.real_server_up(rskey(new_cfg, 2))  # kept down; new HTTP check too
    assert not new.real_server_up(rskey(new_cfg, 5))  # new, alpha
    assert dests(new) == {"172.16.0.1": 1, "172.16.0.3": 9}
    # rs 4 was live: the reload that removes it runs its notify_down (clear_diff_rs)
    assert new.settle() == [ev.RealServerDown(rskey(old_cfg, 4), None, cause=ev.Cause.RELOAD)]
    # the kept retry counter still counts: one more failure takes rs 1 down
    assert kinds(new.on_result(1, pid(new_plan, 1), FAIL)) == ["CheckerDown", "RealServerDown"]


def test_carry_over_keeps_quorum_state_and_settle_reports_flips() -> None:
    cfg = farm4()
    old, plan = build(cfg)
    for n in (1, 2):
        old.on_result(0, pid(plan, n), FAIL)
    vs = cfg.virtual_servers[0].key
    assert not old.quorum_up(vs)
    new_cfg = farm4(QUORUM.replace("quorum 4", "quorum 1"))  # same VS key
    new = carry_over(old, new_cfg, plan_probes(new_cfg, plan), diff(cfg, new_cfg))
    assert not new.quorum_up(vs) and dests(new) == {"192.168.9.9": 1}
    events = new.settle()
    assert kinds(events) == ["QuorumGained", "SorryServerOut"]
    assert dests(new) == {"172.16.0.3": 2}
