"""What a reload changes, and applying a reload's removals with bounded retries.

Owns: `prepare(old_config, new_config, old_plan)` → `ReloadPlan` (pure: the config diff,
the next probe plan and what the scheduler must add/remove/retime), `split_removals(ops)`
and `remove_with_retries(backend, ops, attempts, sleep, log)` — keepalived 1.2.2
FULLNAT patch behaviour: vanished entries are removed first, a failed removal is retried
up to `attempts` times (only the ops that failed), and a caller that gets `ok=False`
back stops the daemon.
Must not: read a clock (waiting goes through the `sleep` callback), parse files, hold
state between reloads, or decide health.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fastcheck.diff import ConfigDiff, diff
from fastcheck.ipvs.backend import IpvsBackend, OpFailure
from fastcheck.ipvs.ops import Op, Verb
from fastcheck.model import Config
from fastcheck.probeplan import PlanDiff, ProbePlan, diff_plans, plan_probes

from .log import removal_retry_message

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """Everything a reload from one configuration to the next implies, computed up front."""

    config: Config
    config_diff: ConfigDiff
    plan: ProbePlan
    plan_diff: PlanDiff


def prepare(old_config: Config, new_config: Config, old_plan: ProbePlan) -> ReloadPlan:
    new_plan = plan_probes(new_config, previous=old_plan)
    return ReloadPlan(new_config, diff(old_config, new_config, with_ops=False), new_plan,
                      diff_plans(old_plan, new_plan))


def split_removals(ops: Sequence[Op]) -> tuple[list[Op], list[Op]]:
    """(removals, the rest) keeping reconcile's order within each part."""
    removals = [op for op in ops if op.verb is Verb.DELETE]
    rest = [op for op in ops if op.verb is not Verb.DELETE]
    return removals, rest


def backoff_s(attempt: int, base_s: float = 0.1, cap_s: float = 2.0) -> float:
    """Pause after failed attempt `attempt` (1-based): doubling from base_s, at most cap_s."""
    return float(min(cap_s, base_s * 2 ** (attempt - 1)))


@dataclass(frozen=True, slots=True)
class RetryOutcome:
    ok: bool
    attempts: int  # attempts made (0 when there was nothing to do)
    failures: tuple[OpFailure, ...]  # the last attempt's failures (empty when ok)


async def remove_with_retries(backend: IpvsBackend, ops: Sequence[Op], attempts: int,
                              sleep: Sleep, log: logging.Logger,
                              backoff: Callable[[int], float] = backoff_s,
                              give_up: Callable[[], bool] = lambda: False) -> RetryOutcome:
    """Applies `ops`; retries the failed ones up to `attempts` attempts in all.

    `give_up()` is asked before each retry (a stop was requested): True ends the
    retries at once with `ok=False`.
    """
    pending = list(ops)
    if not pending:
        return RetryOutcome(True, 0, ())
    attempts = max(1, attempts)
    failures: list[OpFailure] = []
    for attempt in range(1, attempts + 1):
        failures = backend.apply(pending)
        if not failures:
            if attempt > 1:
                log.info("reload: removals succeeded on attempt %d/%d", attempt, attempts)
            return RetryOutcome(True, attempt, ())
        for item in failures:
            log.error("reload: %s (attempt %d/%d)", item.error, attempt, attempts)
        log.error("%s", removal_retry_message(attempt))
        pending = [item.op for item in failures]
        if attempt < attempts:
            await sleep(backoff(attempt))
            if give_up():
                log.warning("reload: stop requested; no more removal attempts")
                return RetryOutcome(False, attempt, tuple(failures))
    return RetryOutcome(False, attempts, tuple(failures))
