"""What the health layer tells the daemon: past-tense, frozen event records.

Owns: every event type `HealthState` emits and the `Event` union.
Must not: act on anything — the daemon runs notify scripts, asks the scheduler for early
retries (`Scheduler.after_failure`) and pushes `live_table()` to the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastcheck.model import CheckKey, RsKey, Script, VsKey


@dataclass(frozen=True, slots=True)
class RetryRequested:
    """A check failed but has retries left: run probe `probe_id` again after `delay_s`."""

    probe_id: int
    check: CheckKey
    delay_s: float
    attempt: int  # failures counted so far (1 = first failure)


@dataclass(frozen=True, slots=True)
class CheckerUp:
    check: CheckKey


@dataclass(frozen=True, slots=True)
class CheckerDown:
    check: CheckKey
    failures: int


@dataclass(frozen=True, slots=True)
class RealServerUp:
    rs: RsKey
    weight: int
    script: Script | None  # notify_up, for the daemon to run


@dataclass(frozen=True, slots=True)
class RealServerDown:
    rs: RsKey
    script: Script | None  # notify_down
    kept_by_budget: bool = False  # the removal budget kept it in the IPVS table
    stopping: bool = False  # emitted by `shutdown()` (omega)


@dataclass(frozen=True, slots=True)
class WeightChanged:
    rs: RsKey
    old: int
    new: int


@dataclass(frozen=True, slots=True)
class QuorumGained:
    vs: VsKey
    weight_sum: int
    threshold: int
    script: Script | None  # quorum_up


@dataclass(frozen=True, slots=True)
class QuorumLost:
    vs: VsKey
    weight_sum: int
    threshold: int
    script: Script | None  # quorum_down
    stopping: bool = False


@dataclass(frozen=True, slots=True)
class SorryServerIn:
    vs: VsKey


@dataclass(frozen=True, slots=True)
class SorryServerOut:
    vs: VsKey


@dataclass(frozen=True, slots=True)
class RemovalBudgetTripped:
    removals_in_window: int
    limit: int
    trips: int  # how many times it has tripped, this one included
    vs: VsKey | None = None  # the budget's virtual server; None = the global budget


@dataclass(frozen=True, slots=True)
class RemovalBudgetRecovered:
    released: int  # held real servers now removed from the table
    vs: VsKey | None = None


Event = (
    RetryRequested | CheckerUp | CheckerDown | RealServerUp | RealServerDown | WeightChanged
    | QuorumGained | QuorumLost | SorryServerIn | SorryServerOut | RemovalBudgetTripped
    | RemovalBudgetRecovered
)
