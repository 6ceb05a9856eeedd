"""The daemon's log lines: keepalived-compatible wording, where they go, and repeat limits.

Owns: configuring the ``fastcheck`` logger (stderr for journald, or syslog through
``/dev/log``), the DETAIL level (``--log-detail``, keepalived's ``-D``), and keepalived's
wording — the one place it lives: how a virtual and a real server are named (`vs_text`,
`rs_text`, `service_text`), the text of every log line about an IPVS operation
(`op_messages`), a health event (`event_messages`) or a failed probe
(`failure_message`), and the notify FIFO line of an event (`fifo_line`); and
`RepeatLimiter`, which folds repeats of one line.
Must not: decide what happens (it only words what the runtime did or health decided),
read the clock (`RepeatLimiter` takes ``now``), or log anything itself — the runtime logs
what these functions return.

Wording follows keepalived 2.2.7 (checked against the strings of Debian's 2.2.7 binary and
keepalived/check/{ipwrapper,check_tcp,check_http,check_smtp,check_dns,check_udp,
check_ping,check_misc}.c) so log alerts written for keepalived keep matching:

- a real server is ``[10.0.0.2]:tcp:80`` (keepalived 2.x ``FMT_RS``: address, the virtual
  server's protocol, port; IPv6 as ``[2001:db8::2]:tcp:80``); keepalived 1.2.x wrote
  ``[10.0.0.2]:80``, which only SMTP_CHECK lines still use (``inet_sockaddrtopair``);
- a virtual server is ``[10.0.0.1]:tcp:80``, ``FWM 5`` or ``[group]:port``;
- ``Adding service %s to VS %s``, ``Removing service %s from VS %s`` (an
  inhibit_on_failure server: ``Enabling service %s of VS %s``, ``Disabling service %s of
  VS %s``), ``Shutting down service %s from VS %s``, ``Changing weight from %d to %d for
  active service %s of VS %s``, ``Gained quorum %u+%u=%ld <= %ld for VS %s``, ``Lost
  quorum %u-%u=%ld > %ld for VS %s``, ``Starting with quorum down %u-%u=%ld > %ld for VS
  %s`` (keepalived prints quorum+hysteresis as the threshold there, and so do we),
  ``Adding|Enabling sorry server %s to VS %s``, ``Removing|Disabling sorry server %s from
  VS %s``,
  ``TCP_CHECK on service %s failed after %u retries.``, ``TCP connection to %s failed.``,
  ``HTTP status code error to server %s.``, ``MD5 digest error to server %s.`` …

fastcheck adds the failure class (and the probe's detail) in parentheses before the final
full stop — ``TCP connection to [127.0.0.1]:tcp:80 failed (refused).`` — so a pattern
written for keepalived's line still matches the start of ours. Lines keepalived has no
equivalent for (removal budget, FILE_CHECK failures, operations that keepalived does not
log) use the same shapes. keepalived logs nothing when a reload or a stop runs
quorum_down (ipwrapper.c `update_vs_notifies`); fastcheck says so at DETAIL level.

The notify FIFO gets keepalived's ``RS <rs> <vs> UP|DOWN`` and ``VS <vs> UP|DOWN``.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Final, TextIO

from fastcheck.health.events import (
    Cause,
    CheckerDown,
    CheckerUp,
    QuorumGained,
    QuorumLost,
    RealServerDown,
    RealServerUp,
    RemovalBudgetRecovered,
    RemovalBudgetTripped,
    RetryRequested,
    SorryServerIn,
    SorryServerOut,
    WeightChanged,
)
from fastcheck.ipvs.ops import DestinationOp, LocalAddressOp, Op, ServiceOp, Verb
from fastcheck.ipvs.table import METHOD_NAMES, ServiceKey
from fastcheck.model import CheckKey, CheckKind, MiscParams, Protocol, RsKey, Target, VsKey, VsKind

LOGGER_NAME: Final = "fastcheck"
DETAIL: Final = 15
"""Level of the detailed lines (every IPVS operation, every retry): shown with
``--log-detail`` or ``--log-level debug``; between DEBUG and INFO."""
logging.addLevelName(DETAIL, "DETAIL")

LEVELS: Final = {"debug": logging.DEBUG, "detail": DETAIL, "info": logging.INFO,
                 "warning": logging.WARNING, "error": logging.ERROR}
TARGETS: Final = ("stderr", "syslog")
DEV_LOG: Final = "/dev/log"
STDERR_FORMAT: Final = "%(asctime)s fastcheck[%(process)d]: %(message)s"
SYSLOG_FORMAT: Final = "fastcheck[%(process)d]: %(message)s"
DRY_RUN_PREFIX: Final = "[dry-run] "


class LogSetupError(ValueError):
    """A logging option a user gave cannot work (bad level, facility, missing /dev/log)."""


# ----------------------------------------------------------------------------- setup


class _SysLogHandler(logging.handlers.SysLogHandler):
    """Maps DETAIL to syslog's info (keepalived -D logs its detail at LOG_INFO); the stock
    handler would send any level it does not know as a warning."""

    def mapPriority(self, levelName: str) -> str:
        if levelName == "DETAIL":
            return "info"
        return super().mapPriority(levelName)


def effective_level(level: str, detail: bool) -> int:
    """The logger level for ``--log-level`` and ``--log-detail``."""
    try:
        value = LEVELS[level.lower()]
    except KeyError:
        raise LogSetupError(f"unknown log level {level!r} "
                            f"(expected one of {', '.join(LEVELS)})") from None
    return min(value, DETAIL) if detail else value


def facility_code(name: str) -> int:
    """syslog facility number of ``daemon``, ``local0`` … (LOG_ prefix and case ignored)."""
    key = name.lower().removeprefix("log_")
    try:
        return logging.handlers.SysLogHandler.facility_names[key]
    except KeyError:
        names = ", ".join(sorted(logging.handlers.SysLogHandler.facility_names))
        raise LogSetupError(f"unknown syslog facility {name!r} (expected one of {names})") \
            from None


def setup_logging(*, target: str = "stderr", level: str = "info", detail: bool = False,
                  stream: TextIO | None = None, syslog_facility: str = "daemon",
                  syslog_address: str = DEV_LOG) -> logging.Logger:
    """Configures the ``fastcheck`` logger: one handler, replacing earlier ones (call it
    instead of logging.basicConfig, which would add a second, root handler).

    ``stderr`` (journald takes it from there) writes ``<time> fastcheck[pid]: message`` to
    `stream` (default sys.stderr); ``syslog`` sends ``fastcheck[pid]: message`` to
    `syslog_address` (a unix datagram socket, default /dev/log) with `syslog_facility`.
    Raises `LogSetupError` with a readable message for bad options or a missing socket.
    """
    value = effective_level(level, detail)
    if target == "stderr":
        handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT))
    elif target == "syslog":
        facility = facility_code(syslog_facility)
        if not os.path.exists(syslog_address):
            raise LogSetupError(f"cannot log to syslog: {syslog_address} does not exist "
                                "(is a syslog daemon or journald running? "
                                "use --log-target stderr)")
        try:
            handler = _SysLogHandler(address=syslog_address, facility=facility,
                                     socktype=socket.SOCK_DGRAM)
        except OSError as error:
            raise LogSetupError(f"cannot log to syslog at {syslog_address}: "
                                f"{error.strerror or error}") from None
        handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
    else:
        raise LogSetupError(f"unknown log target {target!r} (expected stderr or syslog)")
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(value)
    # Records still propagate: the root logger has no handler in the daemon (so nothing is
    # written twice), and pytest's caplog, which listens on the root, keeps working.
    return logger


# ----------------------------------------------------------------------------- names


def _trio(address: str | None, protocol: Protocol | None, port: int | None) -> str:
    """keepalived's ``inet_sockaddrtotrio``: ``[addr]:proto:port`` (``none`` for fwmarks)."""
    proto = protocol.value.lower() if protocol is not None else "none"
    return f"[{address}]:{proto}:{port or 0}"


def vs_text(vs: VsKey) -> str:
    """keepalived's FMT_VS: ``[addr]:proto:port``, ``FWM n`` or ``[group]:port``."""
    if vs.kind is VsKind.FWMARK:
        return f"FWM {vs.fwmark}"
    if vs.kind is VsKind.GROUP:
        return f"[{vs.group}]:{vs.port or 0}"
    return _trio(vs.address, vs.protocol, vs.port)


def rs_text(rs: RsKey) -> str:
    """keepalived's FMT_RS: ``[addr]:proto:port`` with the virtual server's protocol."""
    return _trio(rs.address, rs.vs.protocol, rs.port)


def checker_activity_message(rs: RsKey, *, active: bool, starting: bool) -> str:
    """ha_suspend (keepalived check_api.c): at start "Activating/Deactivating
    healthchecker for service RS for VS VS", later "Activating/Suspending …"."""
    verb = ("Activating" if active else "Deactivating") if starting else \
        ("Activating" if active else "Suspending")
    return f"{verb} healthchecker for service {rs_text(rs)} for VS {vs_text(rs.vs)}"


def service_text(key: ServiceKey) -> str:
    """A kernel service as keepalived names a virtual server: ``[addr]:proto:port``."""
    if key.fwmark:
        return f"FWM {key.fwmark}"
    return _trio(key.address, key.protocol, key.port)


def _dest_text(address: str, port: int, service: ServiceKey) -> str:
    return _trio(address, service.protocol, port)


def fifo_line(event: object) -> str | None:
    """The notify FIFO line of an event (keepalived ipwrapper.c `notify_fifo_rs`/`_vs`),
    None for events that have none."""
    if isinstance(event, RealServerUp | RealServerDown):
        state = "UP" if isinstance(event, RealServerUp) else "DOWN"
        return f"RS {rs_text(event.rs)} {vs_text(event.rs.vs)} {state}\n"
    if isinstance(event, QuorumGained | QuorumLost):
        state = "UP" if isinstance(event, QuorumGained) else "DOWN"
        return f"VS {vs_text(event.vs)} {state}\n"
    return None


Where = CheckKey | RsKey | Target
"""What a failure line names: a check (its real server and, for MISC_CHECK, its script), a
real server, or a bare probe target when the owner is not known."""


def _target_trio(target: Where, kind: CheckKind) -> str:
    if isinstance(target, CheckKey):
        return rs_text(target.rs)
    if isinstance(target, RsKey):
        return rs_text(target)
    proto = "udp" if kind in (CheckKind.UDP, CheckKind.DNS) else "tcp"
    return f"[{target.address}]:{proto}:{target.port}"


def _target_pair(target: Where) -> str:
    if isinstance(target, CheckKey):
        probe = target.probe.target
        return f"[{probe.address}]:{probe.port}"
    return f"[{target.address}]:{target.port}"


def _vs_of(target: Where) -> str:
    if isinstance(target, CheckKey):
        return vs_text(target.rs.vs)
    return vs_text(target.vs) if isinstance(target, RsKey) else "?"


# ----------------------------------------------------------------------------- ops


def removal_retry_message(attempt: int) -> str:
    """After each failed attempt at removing a reload's vanished entries: the users'
    keepalived 1.2.2 FULLNAT patch's own words, which their alerts match on."""
    return f"clear diff services error, have tried {attempt} times"


def op_messages(op: Op, *, dry_run: bool) -> list[str]:
    """keepalived-like lines for one IPVS operation (prefixed ``[dry-run] `` in dry runs).

    keepalived logs destination changes from its health logic (ipwrapper.c) rather than
    per command; these lines use the same words so reload, stop and drift-repair
    operations read like keepalived's.
    """
    lines = _op_lines(op)
    return [DRY_RUN_PREFIX + line for line in lines] if dry_run else lines


def _op_lines(op: Op) -> list[str]:
    if isinstance(op, ServiceOp):
        vs = service_text(op.service)
        if op.verb is Verb.ADD:
            settings = f" ({op.settings.describe()})" if op.settings else ""
            return [f"Adding Virtual Server {vs}{settings}"]
        if op.verb is Verb.DELETE:
            return [f"Removing Virtual Server {vs}"]
        before = op.previous.describe() if op.previous else "?"
        after = op.settings.describe() if op.settings else "?"
        return [f"Changing Virtual Server {vs} from ({before}) to ({after})"]
    if isinstance(op, DestinationOp):
        vs = service_text(op.service)
        rs = _dest_text(op.destination.address, op.destination.port, op.service)
        if op.verb is Verb.ADD:
            return [f"Adding service {rs} to VS {vs}"]
        if op.verb is Verb.DELETE:
            return [f"Removing service {rs} from VS {vs}"]
        new, old = op.settings, op.previous
        lines = []
        if new is not None and old is not None and new.weight != old.weight:
            lines.append(f"Changing weight from {old.weight} to {new.weight} "
                         f"for active service {rs} of VS {vs}")
        if new is not None and old is not None and new.method is not old.method:
            lines.append(f"Changing forwarding method from {METHOD_NAMES[old.method]} to "
                         f"{METHOD_NAMES[new.method]} for service {rs} of VS {vs}")
        if not lines:
            lines.append(f"Changing service {rs} of VS {vs}")
        return lines
    if isinstance(op, LocalAddressOp):
        vs = service_text(op.service)
        if op.verb is Verb.DELETE:
            return [f"Removing local address {op.address} from VS {vs}"]
        return [f"Adding local address {op.address} to VS {vs}"]
    raise TypeError(f"not an IPVS operation: {op!r}")


# ----------------------------------------------------------------------------- events

# keepalived's name of a check in "<NAME> on service %s failed." lines.
_CHECK_NAMES: Final = {
    CheckKind.TCP: "TCP_CHECK", CheckKind.HTTP: "HTTP_CHECK", CheckKind.HTTPS: "HTTP_CHECK",
    CheckKind.SMTP: "SMTP_CHECK", CheckKind.DNS: "DNS_CHECK", CheckKind.UDP: "UDP_CHECK",
    CheckKind.PING: "ICMP CHECK", CheckKind.MISC: "MISC_CHECK", CheckKind.FILE: "FILE_CHECK",
}


def _script_name(check: CheckKey) -> str:
    params = check.probe.params
    words = params.script.command.split() if isinstance(params, MiscParams) else []
    return words[0] if words else "?"


def _checker_up_text(check: CheckKey) -> str:
    kind, rs = check.probe.kind, rs_text(check.rs)
    if kind is CheckKind.TCP:
        return f"TCP connection to {rs} success."
    if kind in (CheckKind.HTTP, CheckKind.HTTPS):
        return f"Remote Web server {rs} succeed on service."
    if kind is CheckKind.SMTP:
        return f"Remote SMTP server {rs} succeed on service."
    if kind is CheckKind.UDP:
        return f"UDP connection to {rs} success."
    if kind is CheckKind.PING:
        return f"ICMP connection to {rs} success."
    if kind is CheckKind.MISC:
        return (f"Misc check for [{rs} VS {vs_text(check.rs.vs)}] by "
                f"[{_script_name(check)}] succeeded.")
    return f"{_CHECK_NAMES[kind]} on service {rs} succeeded."


def _checker_down_text(check: CheckKey, failures: int) -> str:
    kind, rs = check.probe.kind, rs_text(check.rs)
    retries = failures - 1
    if kind is CheckKind.MISC:
        tail = f" after {retries} retries" if retries > 0 else ""
        return (f"Misc check for [{rs} VS {vs_text(check.rs.vs)}] by "
                f"[{_script_name(check)}] failed{tail}.")
    service = f"{rs} of {vs_text(check.rs.vs)}" if kind is CheckKind.PING and retries > 0 \
        else rs
    if retries > 0:
        return f"{_CHECK_NAMES[kind]} on service {service} failed after {retries} retries."
    return f"{_CHECK_NAMES[kind]} on service {service} failed."


def event_messages(event: Any) -> list[tuple[int, str]]:
    """(logging level, line) pairs for one health event; unknown events get one INFO line."""
    if isinstance(event, RetryRequested):
        check = event.check
        return [(DETAIL, f"{_CHECK_NAMES[check.probe.kind]} on service {rs_text(check.rs)} "
                         f"failed (attempt {event.attempt}), retrying in {event.delay_s:g} s")]
    if isinstance(event, CheckerUp):
        return [(logging.INFO, _checker_up_text(event.check))]
    if isinstance(event, CheckerDown):
        return [(logging.WARNING, _checker_down_text(event.check, event.failures))]
    if isinstance(event, RealServerUp):
        return _rs_up(event)
    if isinstance(event, RealServerDown):
        return _rs_down(event)
    if isinstance(event, WeightChanged):
        rs = event.rs
        state = "" if event.active else "in"
        return [(logging.INFO, f"Changing weight from {event.old} to {event.new} for "
                               f"{state}active service {rs_text(rs)} of VS {vs_text(rs.vs)}")]
    if isinstance(event, QuorumGained | QuorumLost):
        return _quorum(event)
    if isinstance(event, SorryServerIn | SorryServerOut):
        return _sorry(event)
    if isinstance(event, RemovalBudgetTripped):
        scope = f" for VS {vs_text(event.vs)}" if event.vs is not None else ""
        return [(logging.ERROR, f"Removal budget tripped{scope}: {event.removals_in_window} "
                                f"removals in the window (limit {event.limit}, trip "
                                f"{event.trips}); keeping further failed services in IPVS")]
    if isinstance(event, RemovalBudgetRecovered):
        scope = f" for VS {vs_text(event.vs)}" if event.vs is not None else ""
        return [(logging.WARNING, f"Removal budget recovered{scope}: removing "
                                  f"{event.released} held service(s)")]
    return [(logging.INFO, str(event))]


def _rs_up(event: RealServerUp) -> list[tuple[int, str]]:
    """ipwrapper.c `perform_svr_state`. A start-up announcement (rs_init_notifies, an
    alpha check's first success) only runs notifiers, as in keepalived: no line."""
    if event.cause is Cause.START:
        return []
    rs, vs = rs_text(event.rs), vs_text(event.rs.vs)
    if event.inhibit:
        return [(logging.INFO, f"Enabling service {rs} of VS {vs}")]
    return [(logging.INFO, f"Adding service {rs} to VS {vs}")]


def _rs_down(event: RealServerDown) -> list[tuple[int, str]]:
    """`perform_svr_state`; `clear_service_rs` for a reload's removals and a stop."""
    rs, vs = rs_text(event.rs), vs_text(event.rs.vs)
    if event.cause is Cause.START:  # an alpha check's first failure: notifiers only
        return []
    if event.cause is Cause.STOP:
        return [(logging.INFO, f"Shutting down service {rs} from VS {vs}")]
    if event.cause is Cause.RELOAD:
        return [(logging.INFO, f"Removing service {rs} from VS {vs}")]
    if event.inhibit:
        text = f"Disabling service {rs} of VS {vs}"
    else:
        text = f"Removing service {rs} from VS {vs}"
    if event.kept_by_budget:
        text += " (kept in IPVS by the removal budget)"
    return [(logging.WARNING, text)]


def _quorum(event: QuorumGained | QuorumLost) -> list[tuple[int, str]]:
    """`update_quorum_state`: keepalived prints quorum, hysteresis, the threshold it
    compared with and the weight sum. At start (and on a reload, init=true) a virtual
    server without quorum "starts with quorum down" and the threshold printed is
    quorum+hysteresis behind a minus sign, exactly as keepalived prints it."""
    vs = vs_text(event.vs)
    if event.cause in (Cause.RELOAD, Cause.STOP):  # update_vs_notifies logs nothing
        why = "removed by a reload" if event.cause is Cause.RELOAD else "shutting down"
        return [(DETAIL, f"Quorum down for VS {vs} ({why}): running its notifiers")]
    numbers = f"{event.quorum}{'+' if isinstance(event, QuorumGained) else '-'}" \
              f"{event.hysteresis}={event.threshold}"
    if isinstance(event, QuorumGained):
        return [(logging.INFO, f"Gained quorum {numbers} <= {event.weight_sum} for VS {vs}")]
    what = "Starting with quorum down" if event.cause is Cause.START else "Lost quorum"
    return [(logging.WARNING, f"{what} {numbers} > {event.weight_sum} for VS {vs}")]


def _sorry(event: SorryServerIn | SorryServerOut) -> list[tuple[int, str]]:
    """`update_quorum_state` and `perform_quorum_state`."""
    vs, server = vs_text(event.vs), rs_text(event.server)
    if isinstance(event, SorryServerIn):
        verb = "Enabling" if event.inhibit else "Adding"
        return [(logging.WARNING, f"{verb} sorry server {server} to VS {vs}"),
                (logging.INFO, f"Removing alive servers from the pool for VS {vs}")]
    verb = "Disabling" if event.inhibit else "Removing"
    return [(logging.INFO, f"{verb} sorry server {server} from VS {vs}"),
            (logging.INFO, f"Adding alive servers to the pool for VS {vs}")]


# ----------------------------------------------------------------------------- failures

# HTTP_GET/SSL_GET: keepalived's "<what> server %s." (check_http.c timeout_epilog).
_HTTP_WHAT: Final = {
    "refused": "Error connecting", "unreachable": "Connection failed",
    "reset": "Read error with", "tls": "SSL handshake/communication error connecting to",
    "http_status": "HTTP status code error to", "digest": "MD5 digest error to",
    "regex": "Regex match failed", "protocol": "Read, no data received from ",
    "too_large": "Read error with", "local": "Error connecting",
}
# SMTP_CHECK: "SMTP_CHECK <what> server [addr]:port" (check_smtp.c smtp_final).
_SMTP_WHAT: Final = {
    "refused": "Error connecting to", "timeout": "Connection timeout to",
    "unreachable": "Could not connect to", "reset": "Read failure from",
    "protocol": "Bad greeting banner from", "local": "Could not connect to",
}
# DNS_CHECK: "DNS_CHECK (%s) <what>" (check_dns.c dns_final).
_DNS_WHAT: Final = {
    "timeout": "read timeout from socket", "refused": "connection error.",
    "unreachable": "connection failure.", "protocol": "read error occurred.",
    "local": "failed to write socket.",
}


def _why(result: Any) -> str:
    failure = result.failure.value if result.failure is not None else "failed"
    return f"({failure}: {result.detail})" if result.detail else f"({failure})"


def failure_message(check_kind: CheckKind, target: Where, result: Any) -> str:
    """keepalived's line for a failed probe of `check_kind`, with the failure class.

    `target` is the check (CheckKey: names its real server like keepalived's FMT_CHK,
    ``[addr]:proto:port`` with the virtual server's protocol, SMTP_CHECK's connect
    address and MISC_CHECK's script), the real server (RsKey) or, when the owner is not
    known, the probe's Target (protocol then tcp, udp for UDP_CHECK/DNS_CHECK).
    Raises ValueError for a success.
    """
    if result.ok:
        raise ValueError("failure_message() needs a failed probe result")
    why = _why(result)
    failure = result.failure.value if result.failure is not None else ""
    chk = _target_trio(target, check_kind)
    if check_kind is CheckKind.TCP:
        verb = "timeout" if failure == "timeout" else "failed"
        return f"TCP connection to {chk} {verb} {why}."
    if check_kind in (CheckKind.HTTP, CheckKind.HTTPS):
        if failure == "timeout":
            what = "Timeout connecting" if "(connect)" in result.detail else "Timeout HTTP read"
        else:
            what = _HTTP_WHAT.get(failure, "Connection failed")
        return f"{what} server {chk} {why}."
    if check_kind is CheckKind.SMTP:
        what = _SMTP_WHAT.get(failure, "Unknown connection error to")
        return f"SMTP_CHECK {what} server {_target_pair(target)} {why}"
    if check_kind is CheckKind.DNS:
        what = _DNS_WHAT.get(failure, "connection failure.").rstrip(".")
        return f"DNS_CHECK ({chk}) {what} {why}."
    if check_kind is CheckKind.UDP:
        if failure == "protocol":
            return f"UDP check to {chk} reply data mismatch {why}."
        return f"UDP connection to {chk} failed {why}."
    if check_kind is CheckKind.PING:
        return f"ICMP connection to {chk} of {_vs_of(target)} failed {why}."
    if check_kind is CheckKind.MISC:
        verb = "timed out" if failure == "script_timeout" else "failed"
        by = f" by [{_script_name(target)}]" if isinstance(target, CheckKey) else ""
        return f"Misc check for [{chk} VS {_vs_of(target)}]{by} {verb} {why}."
    return f"{_CHECK_NAMES[check_kind]} on service {chk} failed {why}."


# ----------------------------------------------------------------------------- repeats


def with_suppressed(text: str, suppressed: int) -> str:
    """`text` plus the count `RepeatLimiter.allow` returned, when there is one."""
    if suppressed <= 0:
        return text
    noun = "message" if suppressed == 1 else "messages"
    return f"{text} ({suppressed} similar {noun} suppressed)"


class RepeatLimiter:
    """Folds repeats of one line (sans-IO: time comes in as `now`).

    The first occurrence of a key is allowed; repeats within `window_s` of the last
    allowed one are suppressed and counted; the first repeat after the window is allowed
    and reports how many were suppressed. At most `max_keys` keys are remembered: the one
    seen longest ago is forgotten first (its suppressed count with it).
    """

    def __init__(self, window_s: float = 60.0, max_keys: int = 10_000) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, not {window_s!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys!r}")
        self.window_s = window_s
        self.max_keys = max_keys
        self._seen: OrderedDict[Hashable, list[float | int]] = OrderedDict()  # [since, n]
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._seen)

    def allow(self, key: Hashable, now: float) -> tuple[bool, int]:
        """(log it?, repeats suppressed since the last allowed line of `key`)."""
        entry = self._seen.get(key)
        if entry is not None:
            self._seen.move_to_end(key)
            since, count = entry
            if now - since < self.window_s:
                entry[1] = int(count) + 1
                return False, int(count) + 1
            entry[0], entry[1] = now, 0
            return True, int(count)
        self._seen[key] = [now, 0]
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
            self.evicted += 1
        return True, 0

    def forget(self, key: Hashable) -> int:
        """Drops `key` (e.g. the check recovered); returns its pending suppressed count."""
        entry = self._seen.pop(key, None)
        return int(entry[1]) if entry is not None else 0
