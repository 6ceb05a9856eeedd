"""carry_over: the health state of a reloaded configuration, keeping what survives.

Owns: the reload rule for health — which checker, real-server, quorum and removal-budget
state moves from the old `HealthState` to the new one (driven by `fastcheck.diff`), which
old check a changed one continues, and what the reload announces (removed live servers,
removed virtual servers, revived servers), queued for `settle()`.
Must not: read a clock or do I/O; events are only queued (`settle()` returns them).
It reaches into HealthState's private records on purpose: it is HealthState's other
constructor, kept apart only to keep state.py small.

keepalived 2.2.7 references (check/ipwrapper.c `clear_diff_services`, `clear_diff_rs`,
`clear_service_vs`, `clear_service_rs`, `update_vs_notifies`, `migrate_checkers`,
`check_new_rs_state`; check/check_misc.c `compare_misc_check`):
- a real server the reload removes runs notify_down if it was alive and in the table;
  a virtual server it removes does that for each of its real servers, then quorum_down
  if it had quorum — unless `lvs_flush_on_stop` is set, where keepalived only re-weighs
  the (untouched) servers and so announces nothing;
- a check continues an old one when it is the same check, or a MISC_CHECK with the same
  script and misc_dynamic (misc_timeout may differ): state, retries and weight go on;
- on a kept real server that has a failed check, or that is down with no check that has
  run, the new checks need one failure to go down and new alpha checks start down; a
  failed server left with no failed check comes back up at once (notify_up);
- new real servers on a reload retry normally; new alpha checks start down.
"""

from __future__ import annotations

from fastcheck.diff import ConfigDiff
from fastcheck.health import events as ev
from fastcheck.health.checker import CheckState, HealthOptions
from fastcheck.health.state import HealthState, _Rs, _Vs
from fastcheck.model import CheckKey, CheckKind, Config, MiscParams
from fastcheck.probeplan import ProbePlan


def carry_over(old: HealthState, new_config: Config, new_plan: ProbePlan, diff: ConfigDiff,
               options: HealthOptions | None = None) -> HealthState:
    """The health state for `new_config` after a reload, keeping what survives.

    `diff` is `fastcheck.diff.diff(old.config, new_config)`. Kept checks keep state,
    counters and dynamic weights; kept real servers keep removal-budget hold and slow
    start; kept VS keep their quorum state. Call `settle()` on the result for what the
    reload announces.
    """
    new = HealthState(new_config, new_plan, options or old.options)
    for checker in new._checkers.values():
        checker.decisive = False  # only a fresh start makes every first failure decisive
    kept_rs = set(diff.rs_kept)
    new._fresh_vs = set(diff.vs_added)
    new._fresh_rs = {key for key in new._rs if key not in kept_rs}
    new._pending = _removals(old, new, diff)
    carried = _carry_checks(old, new, diff.checks_kept)
    revived = []
    for key in diff.rs_kept:
        before, after = old._rs[key], new._rs[key]
        _start_new_checks(before, after, carried)
        after.ramp_start = before.ramp_start
        if after.ramp_start is not None:
            new._ramping[key] = after
        if before.held and after.vs.budget is not None:
            after.held = True
            after.vs.budget.held[key] = None
        if not before.up and all(c.up for c in after.checkers):
            revived.append(after)
    for scope, budget in new.budgets.items():
        before_budget = old.budgets.get(scope)
        if before_budget is None:
            continue
        budget.trips = before_budget.trips
        budget.recent.extend(before_budget.recent)
        if before_budget.tripped and budget.held:
            budget.tripped = True
            new._tripped[budget] = scope
    for vs_key, vs in new._vs.items():
        before_vs = old._vs.get(vs_key)
        if before_vs is not None:
            vs.quorum_up, vs.vip_present = before_vs.quorum_up, before_vs.vip_present
            if vs.sorry_rs is not None and vs.sorry_rs != before_vs.sorry_rs:
                new._sorry_new.add(vs_key)  # clear_diff_s_srv: it is not alive yet
    new._changed.clear()
    new._derive_all(initial=False)
    new._changed.clear()
    for rs in revived:  # migrate_checkers → perform_svr_state(UP)
        new._pending.append(ev.RealServerUp(rs.key, rs.weight, rs.cfg.notify_up,
                                            inhibit=rs.cfg.inhibit_on_failure,
                                            cause=ev.Cause.RELOAD))
    return new


def _continues(old: CheckKey, new: CheckKey) -> bool:
    """A changed check that keepalived still treats as the old one (its `compare`)."""
    if old.probe.kind is not CheckKind.MISC or new.probe.kind is not CheckKind.MISC:
        return False
    before, after = old.probe.params, new.probe.params
    return (isinstance(before, MiscParams) and isinstance(after, MiscParams)
            and before.script == after.script and before.dynamic == after.dynamic)


def _carry_checks(old: HealthState, new: HealthState,
                  kept: tuple[CheckKey, ...]) -> set[CheckKey]:
    """Copies the state of kept and continued checks; returns the new keys that got one."""
    carried = set(kept)
    for key in kept:
        new._checkers[key].carry(old._checkers[key])
    used: set[CheckKey] = set()
    for key, checker in new._checkers.items():
        if key in carried or key.rs not in old._rs:
            continue
        for before in old._rs[key.rs].checkers:
            if before.key in new._checkers or before.key in used:
                continue
            if _continues(before.key, key):
                checker.carry(before)
                carried.add(key)
                used.add(before.key)
                break
    return carried


def _start_new_checks(before: _Rs, after: _Rs, carried: set[CheckKey]) -> None:
    """keepalived `migrate_checkers` for the checks of a kept real server that are new."""
    fresh = [c for c in after.checkers if c.key not in carried]
    if not fresh:
        return
    old_checks = [c for c in after.checkers if c.key in carried]
    failed = any(c.has_run and not c.up for c in old_checks)
    wary = failed or (not before.up and not any(c.has_run for c in old_checks))
    for checker in fresh:
        if wary:
            checker.decisive = True  # one failure is enough
            checker.state = CheckState.DOWN if checker.check.alpha else CheckState.UP
        else:
            checker.state = CheckState.UP  # an alpha check of a live server starts up


def _removals(old: HealthState, new: HealthState, diff: ConfigDiff) -> list[ev.Event]:
    """What a reload announces about what it removes, in the old configuration's order."""
    events: list[ev.Event] = []
    removed_rs = set(diff.rs_removed)
    flushed = new.config.global_defs.lvs_flush_on_stop != "off"
    for vs in old._vs.values():
        if vs.key in new._vs:
            for rs in vs.servers:
                if rs.key in removed_rs:
                    _removed_rs(rs, events)
            continue
        if flushed:  # clear_service_vs with lvs_flush_on_stop: only update_vs_notifies
            if vs.quorum_up and (vs.live_sum == 0
                                 or vs.live_sum < vs.cfg.quorum - vs.cfg.hysteresis):
                _removed_vs(vs, vs.live_sum, events)
            continue
        for rs in vs.servers:
            _removed_rs(rs, events)
        if vs.quorum_up:
            _removed_vs(vs, 0, events)
    return events


def _removed_rs(rs: _Rs, events: list[ev.Event]) -> None:
    if rs.up and rs.put is not None:  # clear_service_rs: alive and in the table
        events.append(ev.RealServerDown(rs.key, rs.cfg.notify_down,
                                        inhibit=rs.cfg.inhibit_on_failure,
                                        cause=ev.Cause.RELOAD))


def _removed_vs(vs: _Vs, weight_sum: int, events: list[ev.Event]) -> None:
    cfg = vs.cfg
    events.append(ev.QuorumLost(vs.key, weight_sum, cfg.quorum - cfg.hysteresis,
                                cfg.quorum_down, quorum=cfg.quorum,
                                hysteresis=cfg.hysteresis, cause=ev.Cause.RELOAD))

