"""carry_over: the health state of a reloaded configuration, keeping what survives.

Owns: the reload rule for health — which checker, real-server, quorum and removal-budget
state moves from the old `HealthState` to the new one (driven by `fastcheck.diff`).
Must not: emit events itself (call `settle()` on the result), read a clock, or do I/O.
It reaches into HealthState's private records on purpose: it is HealthState's other
constructor, kept apart only to keep state.py small.
"""

from __future__ import annotations

from fastcheck.diff import ConfigDiff
from fastcheck.health.checker import CheckState, HealthOptions
from fastcheck.health.state import HealthState
from fastcheck.model import Config
from fastcheck.probeplan import ProbePlan


def carry_over(old: HealthState, new_config: Config, new_plan: ProbePlan, diff: ConfigDiff,
               options: HealthOptions | None = None) -> HealthState:
    """The health state for `new_config` after a reload, keeping what survives.

    `diff` is `fastcheck.diff.diff(old.config, new_config)`. Kept checks (equal CheckKey)
    keep state, counters and dynamic weights; kept real servers keep up/down (a new
    check on a kept server starts in the server's old state — up if it was up, down
    until its first success if it was down), removal-budget hold and slow start; kept
    VS keep their quorum state (call `settle()` for flips the new weights imply). New
    servers and checks start fresh (alpha rules).
    """
    new = HealthState(new_config, new_plan, options or old.options)
    for key in diff.checks_kept:
        new._checkers[key].carry(old._checkers[key])
    kept_checks = set(diff.checks_kept)
    for key in diff.rs_kept:
        before, after = old._rs[key], new._rs[key]
        for checker in after.checkers:
            if checker.key not in kept_checks:
                checker.state = CheckState.UP if before.up else CheckState.DOWN
        after.ramp_start = before.ramp_start
        if after.ramp_start is not None:
            new._ramping[key] = after
        if before.held and after.vs.budget is not None:
            after.held = True
            after.vs.budget.held[key] = None
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
    new._changed.clear()
    new._derive_all(initial=False)
    new._changed.clear()
    return new
