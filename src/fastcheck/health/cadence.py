"""Each owner's own clock: which probe results a check takes, and when it wants the next.

Owns: `Cadence` (one per checker: the time it wants its next result, its retry count
while down, the url pass of HTTP_GET/SSL_GET), keepalived's re-arm table (`DOWN_CADENCE`,
`RETRY_FROM_START`, `PASS_KINDS`, `WATCHED`), `verdict` and `rearm`; HealthState.on_result
applies them.
Must not: decide up/down (checker.py's `RULES` do; this module only says which result a
checker sees and translates a multi-url run into what `Checker.step` is given), read a
clock, or know real servers and quorum.

Why. Identical checks of several virtual servers share one probe (probeplan.py), which
runs as often as its fastest owner asks. keepalived runs one checker per owner, each on
its own timer; so here each owner of a shared probe takes only the results of runs that
start at or after the time it wants (`due`, within `tolerance_s`), and the probe runs next
at the earliest time any owner wants — earlier *or later* than its slot: health/ says so
(`ProbeRescheduled`) unless that is the next slot already. A run wanted by nobody is
never made; an owner never counts another owner's retries as its own. A probe with one
owner runs only when that owner wants it, so it takes every result.

keepalived 2.2.7 re-arm (check/check_tcp.c `tcp_epilog`, check_udp.c `udp_epilog`,
check_ping.c `icmp_epilog`, check_smtp.c `smtp_final`, check_dns.c `dns_final`,
check_misc.c `misc_check_child_thread`, check_http.c `epilog`/`timeout_epilog`):
- a success: `delay_loop`; a failure with retries left: `delay_before_retry`, also when it
  is longer than `delay_loop`; the failure that takes the check down: `delay_loop`
  (HTTP_GET/SSL_GET: the longer of the two);
- a failure while down (`DOWN_CADENCE`): TCP_CHECK and SMTP_CHECK go on counting retries,
  `retry` runs `delay_before_retry` apart then one `delay_loop`, so a recovery is seen
  within `delay_before_retry` most of the time; UDP, PING, DNS, MISC (and FILE): every
  `delay_loop`; HTTP_GET/SSL_GET re-check the failed url every
  max(`delay_before_retry`, `delay_loop`);
- delays count from the end of a run (keepalived arms its timer when a check ends),
  except MISC_CHECK's, which count from the script's start, and `delay_loop` after a
  success, which counts from the run's start so the cadence keeps its slots (see
  scheduler.py; keepalived drifts by one check's duration per period).

HTTP_GET/SSL_GET with several urls (check_http.c `epilog`, `http_handle_response`).
A probe run fetches the urls in order and stops at the first failure; its result names
that url (`ProbeResult.failed_url`), so the urls before it passed. keepalived fetches one
url per run, and:
- while up, a failing url is retried and takes the check down after `retry` retries; the
  url is remembered. (A fastcheck run checks every url each time, not one per run:
  deliberate, a broken url is seen within one `delay_loop`.)
- while down, only the remembered url is re-checked; once it passes, a complete pass
  begins: every url in order, one run each, `delay_loop` apart; a url failing during the
  pass is retried after `delay_before_retry` and the pass goes on from it. The check comes
  up only when the pass is complete, so a recovery takes urls + 1 good runs.
- `fast_recovery`: the pass runs at once — here the urls the same run already fetched
  count, so a run that passes every url after the remembered one passed brings the check
  up. keepalived then re-runs a url failing during the pass immediately, in a loop;
  fastcheck waits `delay_before_retry` (deliberate: no busy loop on a dead server).
- an alpha check starts with a pass, as keepalived's first run does.
"""

from __future__ import annotations

import enum
import math

from fastcheck.model import Check, CheckKind, HttpParams
from fastcheck.probes.result import ProbeResult


class DownCadence(enum.Enum):
    LOOP = "loop"  # every delay_loop
    RETRIES = "retries"  # `retry` runs delay_before_retry apart, then one delay_loop
    SLOWER = "slower"  # every max(delay_before_retry, delay_loop)


DOWN_CADENCE: dict[CheckKind, DownCadence] = {
    CheckKind.TCP: DownCadence.RETRIES,
    CheckKind.SMTP: DownCadence.RETRIES,
    CheckKind.UDP: DownCadence.LOOP,
    CheckKind.PING: DownCadence.LOOP,
    CheckKind.DNS: DownCadence.LOOP,
    CheckKind.MISC: DownCadence.LOOP,
    CheckKind.FILE: DownCadence.LOOP,
    CheckKind.HTTP: DownCadence.SLOWER,
    CheckKind.HTTPS: DownCadence.SLOWER,
}

# Whose delay_before_retry counts from the run's start rather than its end.
RETRY_FROM_START = frozenset({CheckKind.MISC})

# Which kinds recover through a pass over their urls.
PASS_KINDS = frozenset({CheckKind.HTTP, CheckKind.HTTPS})

# Which kinds are not run on a clock but report when what they watch changes (FILE_CHECK
# follows its file through inotify, check_file.c): every owner takes every result.
WATCHED = frozenset({CheckKind.FILE})

# A run that starts at most this much (or half the probe's interval, if less) before an
# owner's time still counts as the one it wants: it absorbs the loop's lateness, which
# moves the start the health layer sees, without asking for a run of its own.
TOLERANCE_S = 0.25


def tolerance_s(interval_s: float) -> float:
    return min(TOLERANCE_S, interval_s / 2.0)


class Cadence:
    """One checker's clock and pass: `due` is the start time of the run it wants next."""

    __slots__ = ("down_retries", "due", "failed_url", "pass_at")

    def __init__(self) -> None:
        self.due = -math.inf  # the first result is everyone's
        self.down_retries = 0  # retries counted while down (TCP_CHECK, SMTP_CHECK)
        self.failed_url: int | None = None  # the url that took an HTTP check down
        self.pass_at = 0  # the next url of a pass (HTTP, down, failed_url None)

    def carry(self, old: Cadence) -> None:
        self.due, self.down_retries = old.due, old.down_retries
        self.failed_url, self.pass_at = old.failed_url, old.pass_at

    def snapshot(self) -> dict[str, object]:
        return {"due": None if math.isinf(self.due) else self.due,
                "down_retries": self.down_retries, "failed_url": self.failed_url,
                "pass_at": self.pass_at}


def _urls(check: Check) -> int:
    params = check.params
    return len(params.urls) if isinstance(params, HttpParams) else 1


def _passed(result: ProbeResult, url: int) -> bool | None:
    """Whether `url` passed in this run; None when the run stopped before it."""
    if result.ok:
        return True
    failed = result.failed_url
    if failed is None or failed == url:
        return False
    return True if url < failed else None


def verdict(check: Check, cadence: Cadence, up: bool, result: ProbeResult) -> bool | None:
    """What `Checker.step` is given for this run: its outcome, or None while a pass over
    an HTTP check's urls goes on (no step: the check stays down and counts nothing).

    Only a down HTTP_GET/SSL_GET differs from `result.ok`; see the module docstring.
    """
    if up or check.kind not in PASS_KINDS:
        return result.ok
    fast = check.params.fast_recovery if isinstance(check.params, HttpParams) else False
    if cadence.failed_url is not None:
        if not _passed(result, cadence.failed_url):
            return False
        cadence.failed_url = None  # it answers again: a complete pass begins
        cadence.pass_at = 0
        if not fast:
            return None
    urls = _urls(check)
    if fast:  # every url this run passed counts
        while cadence.pass_at < urls and _passed(result, cadence.pass_at):
            cadence.pass_at += 1
        if cadence.pass_at < urls:
            return False  # the pass's url failed (or was not reached): retry it
    else:  # one url per run
        if not _passed(result, cadence.pass_at):
            return False
        cadence.pass_at += 1
        if cadence.pass_at < urls:
            return None
    cadence.pass_at = 0
    return True


def rearm(check: Check, cadence: Cadence, *, was_up: bool, first: bool, up: bool,
          retrying: bool, ok: bool | None, result: ProbeResult, started: float,
          now: float) -> None:
    """Set `cadence.due` after this owner took a run (keepalived's re-arm, above).

    `was_up`/`up`: the checker before and after its step; `first`: its first result;
    `retrying`: the step counted a failure with retries left; `ok`: what `verdict` said.
    """
    loop_at = started + check.delay_loop_s
    base = started if check.kind in RETRY_FROM_START else now
    retry_at = base + check.delay_before_retry_s
    if up:
        cadence.down_retries, cadence.failed_url, cadence.pass_at = 0, None, 0
        cadence.due = retry_at if retrying else loop_at
        return
    if ok is None or ok:  # a pass goes on (or a rise is counted): next url after delay_loop
        cadence.due = loop_at
        return
    if retrying:  # alpha, before its first run: failures retry
        cadence.due = retry_at
        return
    cadence_kind = DOWN_CADENCE[check.kind]
    if was_up or first:  # this failure took it down
        cadence.down_retries = 0
        if check.kind in PASS_KINDS:
            failed = result.failed_url
            cadence.failed_url = failed if failed is not None else 0
            cadence.pass_at = 0
        cadence.due = max(retry_at, loop_at) if cadence_kind is DownCadence.SLOWER \
            else loop_at
        return
    if check.kind in PASS_KINDS and cadence.failed_url is None:
        cadence.due = retry_at  # a url of the pass failed: check_http.c epilog, FAILED
    elif cadence_kind is DownCadence.RETRIES and cadence.down_retries < check.retry:
        cadence.down_retries += 1
        cadence.due = retry_at
    elif cadence_kind is DownCadence.SLOWER:
        cadence.due = max(retry_at, loop_at)
    else:
        cadence.down_retries = 0
        cadence.due = loop_at
