"""One checker's up/down machine: retry counting, optional rise, dynamic weight memory.

Owns: `CheckState`, `HealthOptions` (fastcheck's own knobs, all off by default so the
behaviour is keepalived's), the transition table `RULES` and `Checker.step`.
Must not: know about real servers, quorum or the IPVS table, read a clock, or treat
check types differently — every probe kind goes through the same table.

keepalived 2.2.7 reference (check/check_http.c `epilog`/`timeout_epilog`, the same
shape in check_tcp.c, check_misc.c …; check/ipwrapper.c `update_svr_checker_state`):
- a checker starts up, or down when `alpha` is set;
- a failure while up (or before the first run) counts a retry; the checker goes down at
  failure `retry + 1`; a failure while already down counts nothing;
- when each checker wants its next result (delay_loop, delay_before_retry, the cadence
  while down) and which results it takes from a shared probe: cadence.py (`cadence`);
- a success resets the retry counter and brings the checker up.
- "one failure is enough" (`decisive`): after a fresh start every check's first failure
  takes it down without retries, until its first success (check_data.c sets
  `retry_it = retry` when not reloading); a reload sets it on the new checks of a real
  server that has failed (ipwrapper.c `migrate_checkers`).
- a check's first decisive result that leaves it as it started runs the real server's
  notifier when the check is alpha or the result a failure (`update_svr_checker_state`:
  `is_up == alive && !has_run`): `Step.CONFIRMED`.
- Every failure class counts the same, except an HTTP status mismatch: it takes the
  checker down at once, as keepalived 1.2 (the FULLNAT fork our users run) does in
  http_handle_response, and as they rely on. keepalived 2.2.7 sends it through
  `timeout_epilog` (the retry path) instead. `RETRYABLE` says so in one place.
Extension (off by default): `rise` successes in a row to come up (keepalived: 1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fastcheck.health.cadence import Cadence
from fastcheck.model import Check, CheckKey
from fastcheck.probes.result import Failure


class CheckState(enum.Enum):
    UP = "up"
    RETRYING = "retrying"  # up, with failures counted
    DOWN = "down"
    RISING = "rising"  # down, with successes counted (rise > 1)


UP_STATES = frozenset({CheckState.UP, CheckState.RETRYING})


class Rule(enum.Enum):
    RESET_UP = "reset_up"
    COUNT_FAILURE = "count_failure"
    COUNT_SUCCESS = "count_success"
    RESET_DOWN = "reset_down"
    NOTHING = "nothing"


# (state, probe succeeded) → rule. Before its first run a DOWN (alpha) checker counts
# failures like an up one (keepalived: `checker->is_up || !checker->has_run`).
RULES: dict[tuple[CheckState, bool], Rule] = {
    (CheckState.UP, True): Rule.RESET_UP,
    (CheckState.UP, False): Rule.COUNT_FAILURE,
    (CheckState.RETRYING, True): Rule.RESET_UP,
    (CheckState.RETRYING, False): Rule.COUNT_FAILURE,
    (CheckState.DOWN, True): Rule.COUNT_SUCCESS,
    (CheckState.DOWN, False): Rule.NOTHING,
    (CheckState.RISING, True): Rule.COUNT_SUCCESS,
    (CheckState.RISING, False): Rule.RESET_DOWN,
}

# Which failures go through the retry path. keepalived 1.2 marks a real server down on
# the first HTTP status mismatch (no retries); every other failure retries.
RETRYABLE: dict[Failure | None, bool] = {
    failure: failure is not Failure.HTTP_STATUS for failure in Failure}


@dataclass(frozen=True, slots=True)
class HealthOptions:
    """fastcheck's extensions; the defaults reproduce keepalived.

    rise: successes in a row a down checker needs to come up.
    slow_start_s: after a real server recovers, its weight ramps from ~0 to the
      effective weight over this many seconds, in `slow_start_steps` steps (0 = off).
      Not applied at start-up or to servers that were never down.
    budget_share / budget_window_s: the removal budget (None = off); see budget.py.
    budget_per_vs: one budget per virtual server (share of its real servers) instead of
      one over every real server of the configuration.
    """

    rise: int = 1
    slow_start_s: float = 0.0
    slow_start_steps: int = 10
    budget_share: float | None = None
    budget_window_s: float = 10.0
    budget_per_vs: bool = False


class Step(enum.Enum):
    NONE = "none"
    RETRY = "retry"  # counted a failure, still has retries: ask for an early probe
    WENT_UP = "went_up"
    WENT_DOWN = "went_down"
    CONFIRMED = "confirmed"  # first decisive result, state unchanged: notify anyway


class Checker:
    """The state of one check (one `CheckKey`)."""

    __slots__ = ("cadence", "check", "decisive", "failures", "has_run", "key", "offset",
                 "probe_id", "state", "successes", "weight")

    def __init__(self, key: CheckKey, check: Check, probe_id: int) -> None:
        self.key = key
        self.check = check
        self.probe_id = probe_id
        self.state = CheckState.DOWN if check.alpha else CheckState.UP
        self.failures = 0
        self.successes = 0
        self.has_run = False
        self.decisive = False  # the next failure takes it down without retries
        self.weight: int | None = None  # absolute weight (MISC misc_dynamic)
        self.offset = 0  # weight offset (FILE_CHECK)
        self.cadence = Cadence()  # its own clock and url pass (cadence.py)

    @property
    def up(self) -> bool:
        return self.state in UP_STATES

    def carry(self, old: Checker) -> None:
        """Take over the counters and weights of the same check before a reload."""
        self.state, self.failures, self.successes = old.state, old.failures, old.successes
        self.has_run, self.weight, self.offset = old.has_run, old.weight, old.offset
        self.decisive = old.decisive
        self.cadence.carry(old.cadence)

    def step(self, ok: bool, failure: Failure | None, rise: int) -> Step:
        rule = RULES[self.state, ok]
        if not ok and not self.has_run and self.state is CheckState.DOWN:
            rule = Rule.COUNT_FAILURE  # alpha: first failures still retry
        if not ok and not RETRYABLE.get(failure, True):
            self.failures = self.check.retry  # next count goes over the limit
        first = not self.has_run
        self.has_run = True
        if ok:
            self.decisive = False
        if rule is Rule.RESET_UP:
            self.failures = 0
            was = self.state
            self.state = CheckState.UP
            if was in UP_STATES:
                return Step.CONFIRMED if first and self.check.alpha else Step.NONE
            return Step.WENT_UP
        if rule is Rule.COUNT_FAILURE:
            self.successes = 0
            self.failures += 1
            if self.failures <= self.check.retry and not self.decisive:
                if self.state is CheckState.UP:
                    self.state = CheckState.RETRYING
                return Step.RETRY
            self.decisive = False
            if self.state is CheckState.DOWN:
                return Step.CONFIRMED if first else Step.NONE
            self.state = CheckState.DOWN
            return Step.WENT_DOWN
        if rule is Rule.COUNT_SUCCESS:
            self.failures = 0
            self.successes += 1
            if self.successes >= rise:
                self.successes = 0
                self.state = CheckState.UP
                return Step.WENT_UP
            self.state = CheckState.RISING
            return Step.NONE
        if rule is Rule.RESET_DOWN:
            self.successes = 0
            self.state = CheckState.DOWN
        return Step.NONE

    def snapshot(self) -> dict[str, object]:
        return {"kind": self.check.kind.value, "probe_id": self.probe_id,
                "ordinal": self.key.ordinal, "state": self.state.value,
                "failures": self.failures, "successes": self.successes,
                "retry": self.check.retry, "has_run": self.has_run,
                "decisive": self.decisive, "weight": self.weight,
                "weight_offset": self.offset, **self.cadence.snapshot()}
