"""What the health layer tells the daemon: past-tense, frozen event records.

Owns: every event type `HealthState` emits, the `Event` union, and `Cause` — why a
real-server or quorum event happened, which decides its log line (daemon/log.py) and
nothing else: every RealServer*/Quorum* event runs its script and writes its FIFO line.
Must not: act on anything — the daemon runs notify scripts, moves probes where
`ProbeRescheduled` says (`Scheduler.reschedule`) and pushes `live_table()` to the kernel.

Events carry everything their keepalived log line needs (quorum and hysteresis for the
quorum arithmetic, the inhibit flag for "Disabling/Enabling", the sorry server's
address), so no consumer looks anything up or probes attributes.
"""

from __future__ import annotations

import enum
from dataclasses import KW_ONLY, dataclass

from fastcheck.model import CheckKey, RsKey, Script, VsKey


class Cause(enum.Enum):
    """Why a real-server or quorum event was emitted (keepalived 2.2.7 check/ipwrapper.c)."""

    CHECK = "check"  # a check result changed it (perform_svr_state, update_quorum_state)
    START = "start"  # the state something starts in is announced: start-up, or what a
    #                  reload adds (init_service_rs rs_init_notifies, update_quorum_state
    #                  init=true, an alpha check's first result)
    RELOAD = "reload"  # a reload removed it (clear_service_rs / update_vs_notifies), or
    #                    gave a failed real server new checks (migrate_checkers)
    STOP = "stop"  # stopping, omega (clear_services)


@dataclass(frozen=True, slots=True)
class ProbeRescheduled:
    """The owners of probe `probe_id` want its next run in `delay_s` (not at its next slot):
    a retry, an owner's own cadence, or the cadence while down (health/cadence.py)."""

    probe_id: int
    delay_s: float


@dataclass(frozen=True, slots=True)
class RetryRequested:
    """A check failed but has retries left: it wants probe `probe_id` again after `delay_s`
    (for the log; `ProbeRescheduled` is what moves the probe)."""

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
    _: KW_ONLY
    inhibit: bool = False  # inhibit_on_failure: keepalived says "Enabling service"
    cause: Cause = Cause.CHECK


@dataclass(frozen=True, slots=True)
class RealServerDown:
    rs: RsKey
    script: Script | None  # notify_down
    kept_by_budget: bool = False  # the removal budget kept it in the IPVS table
    _: KW_ONLY
    inhibit: bool = False  # inhibit_on_failure: kept at weight 0, "Disabling service"
    cause: Cause = Cause.CHECK

    @property
    def stopping(self) -> bool:
        """Emitted by `shutdown()` (omega)."""
        return self.cause is Cause.STOP


@dataclass(frozen=True, slots=True)
class WeightChanged:
    rs: RsKey
    old: int
    new: int
    active: bool = True  # the real server was alive (keepalived "active"/"inactive")


@dataclass(frozen=True, slots=True)
class QuorumGained:
    vs: VsKey
    weight_sum: int
    threshold: int  # quorum + hysteresis
    script: Script | None  # quorum_up
    _: KW_ONLY
    quorum: int
    hysteresis: int
    cause: Cause = Cause.CHECK


@dataclass(frozen=True, slots=True)
class QuorumLost:
    vs: VsKey
    weight_sum: int
    threshold: int  # quorum - hysteresis (quorum + hysteresis when starting down)
    script: Script | None  # quorum_down
    _: KW_ONLY
    quorum: int
    hysteresis: int
    cause: Cause = Cause.CHECK

    @property
    def stopping(self) -> bool:
        return self.cause is Cause.STOP


@dataclass(frozen=True, slots=True)
class SorryServerIn:
    vs: VsKey
    server: RsKey  # the sorry server, named like a real server of `vs`
    inhibit: bool  # sorry_server_inhibit: it was in the table at weight 0 ("Enabling")


@dataclass(frozen=True, slots=True)
class SorryServerOut:
    vs: VsKey
    server: RsKey
    inhibit: bool  # stays in the table at weight 0 ("Disabling")


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
    ProbeRescheduled | RetryRequested | CheckerUp | CheckerDown | RealServerUp
    | RealServerDown | WeightChanged
    | QuorumGained | QuorumLost | SorryServerIn | SorryServerOut | RemovalBudgetTripped
    | RemovalBudgetRecovered
)
