"""fastcheck.daemon.log: keepalived 2.2.7 wording, the repeat limiter, stderr and syslog setup."""

from __future__ import annotations

import io
import logging
import os
import socket
import tempfile
from collections.abc import Iterator

import pytest

from fastcheck.daemon import log as dlog
from fastcheck.daemon.log import (
    DETAIL,
    LogSetupError,
    RepeatLimiter,
    event_messages,
    failure_message,
    op_messages,
    setup_logging,
    with_suppressed,
)
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
from fastcheck.ipvs.ops import DestinationOp, LocalAddressOp, ServiceOp, Verb
from fastcheck.ipvs.table import DestinationKey, DestinationSettings, ServiceKey, ServiceSettings
from fastcheck.model import (
    CheckKey,
    CheckKind,
    Family,
    HttpParams,
    Method,
    MiscParams,
    PingParams,
    ProbeKey,
    Protocol,
    RsKey,
    Script,
    Target,
    TcpParams,
    UrlSpec,
    VsKey,
    VsKind,
)
from fastcheck.probes.result import Failure, ProbeResult

VS = VsKey(VsKind.ADDRESS, Family.INET, Protocol.TCP, "10.0.0.1", 80)
VS6 = VsKey(VsKind.ADDRESS, Family.INET6, Protocol.TCP, "2001:db8::1", 443)
FWM = VsKey(VsKind.FWMARK, Family.INET, None, fwmark=7)
GROUP = VsKey(VsKind.GROUP, Family.INET, Protocol.UDP, group="web", port=0)
RS = RsKey(VS, "10.0.0.2", 8080)
RS6 = RsKey(VS6, "2001:db8::2", 443)
SVC = ServiceKey(Family.INET, Protocol.TCP, "10.0.0.1", 80, 0)
SVC_FWM = ServiceKey(Family.INET, None, None, 0, 7)
DEST = DestinationKey("10.0.0.2", 8080)


def check_key(kind: CheckKind, params: object = None, rs: RsKey = RS) -> CheckKey:
    probe = ProbeKey(kind, Target(rs.address, rs.port), 3.0, params or TcpParams())
    return CheckKey(rs, probe, 0)


# ----------------------------------------------------------------------------- ops


@pytest.mark.parametrize(("op", "expected"), [
    (DestinationOp(Verb.ADD, SVC, DEST, DestinationSettings(weight=3)),
     ["Adding service [10.0.0.2]:tcp:8080 to VS [10.0.0.1]:tcp:80"]),
    (DestinationOp(Verb.DELETE, SVC, DEST),
     ["Removing service [10.0.0.2]:tcp:8080 from VS [10.0.0.1]:tcp:80"]),
    (DestinationOp(Verb.EDIT, SVC, DEST, DestinationSettings(weight=0),
                   DestinationSettings(weight=5)),
     ["Changing weight from 5 to 0 for active service [10.0.0.2]:tcp:8080 "
      "of VS [10.0.0.1]:tcp:80"]),
    (DestinationOp(Verb.EDIT, SVC, DEST, DestinationSettings(weight=2, method=Method.DR),
                   DestinationSettings(weight=2, method=Method.NAT)),
     ["Changing forwarding method from Masq to Route for service [10.0.0.2]:tcp:8080 "
      "of VS [10.0.0.1]:tcp:80"]),
    (DestinationOp(Verb.ADD, SVC_FWM, DEST, DestinationSettings()),
     ["Adding service [10.0.0.2]:none:8080 to VS FWM 7"]),
    (ServiceOp(Verb.ADD, SVC, ServiceSettings(scheduler="rr")),
     ["Adding Virtual Server [10.0.0.1]:tcp:80 (rr)"]),
    (ServiceOp(Verb.DELETE, SVC), ["Removing Virtual Server [10.0.0.1]:tcp:80"]),
    (ServiceOp(Verb.EDIT, SVC, ServiceSettings(scheduler="wrr"), ServiceSettings()),
     ["Changing Virtual Server [10.0.0.1]:tcp:80 from (wlc) to (wrr)"]),
    (LocalAddressOp(Verb.ADD, SVC, "192.0.2.9"),
     ["Adding local address 192.0.2.9 to VS [10.0.0.1]:tcp:80"]),
    (LocalAddressOp(Verb.DELETE, SVC, "192.0.2.9"),
     ["Removing local address 192.0.2.9 from VS [10.0.0.1]:tcp:80"]),
])
def test_op_lines_use_keepalived_words(op: object, expected: list[str]) -> None:
    assert op_messages(op, dry_run=False) == expected  # type: ignore[arg-type]


def test_dry_run_ops_are_marked_but_keep_the_keepalived_text() -> None:
    op = DestinationOp(Verb.DELETE, SVC, DEST)
    assert op_messages(op, dry_run=True) == [
        "[dry-run] Removing service [10.0.0.2]:tcp:8080 from VS [10.0.0.1]:tcp:80"]


def test_ipv6_service_and_destination_are_bracketed() -> None:
    svc = ServiceKey(Family.INET6, Protocol.TCP, "2001:db8::1", 443, 0)
    op = DestinationOp(Verb.ADD, svc, DestinationKey("2001:db8::2", 443), DestinationSettings())
    assert op_messages(op, dry_run=False) == [
        "Adding service [2001:db8::2]:tcp:443 to VS [2001:db8::1]:tcp:443"]


def test_not_an_op_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        op_messages("add", dry_run=False)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- events


def test_real_server_transitions() -> None:
    assert event_messages(RealServerUp(RS, 3, None)) == [
        (logging.INFO, "Adding service [10.0.0.2]:tcp:8080 to VS [10.0.0.1]:tcp:80")]
    assert event_messages(RealServerDown(RS, None)) == [
        (logging.WARNING, "Removing service [10.0.0.2]:tcp:8080 from VS [10.0.0.1]:tcp:80")]
    assert event_messages(RealServerDown(RS, None, cause=Cause.STOP)) == [
        (logging.INFO, "Shutting down service [10.0.0.2]:tcp:8080 from VS [10.0.0.1]:tcp:80")]
    assert event_messages(RealServerDown(RS, None, kept_by_budget=True)) == [
        (logging.WARNING, "Removing service [10.0.0.2]:tcp:8080 from VS [10.0.0.1]:tcp:80 "
                          "(kept in IPVS by the removal budget)")]
    assert event_messages(RealServerDown(RS, None, cause=Cause.RELOAD)) == [
        (logging.INFO, "Removing service [10.0.0.2]:tcp:8080 from VS [10.0.0.1]:tcp:80")]
    # start-up announcements (rs_init_notifies, an alpha check's first result) only notify
    assert event_messages(RealServerUp(RS, 3, None, cause=Cause.START)) == []
    assert event_messages(RealServerDown(RS, None, cause=Cause.START)) == []


def test_inhibited_servers_are_enabled_and_disabled_like_keepalived() -> None:
    # keepalived ipwrapper.c perform_svr_state: "%sing service %s %s VS %s"
    assert event_messages(RealServerUp(RS, 3, None, inhibit=True)) == [
        (logging.INFO, "Enabling service [10.0.0.2]:tcp:8080 of VS [10.0.0.1]:tcp:80")]
    assert event_messages(RealServerDown(RS, None, inhibit=True)) == [
        (logging.WARNING, "Disabling service [10.0.0.2]:tcp:8080 of VS [10.0.0.1]:tcp:80")]


def test_virtual_server_kinds_are_named_like_keepalived() -> None:
    assert event_messages(RealServerUp(RsKey(FWM, "10.0.0.3", 80), 1, None))[0][1] == \
        "Adding service [10.0.0.3]:none:80 to VS FWM 7"
    assert event_messages(RealServerUp(RsKey(GROUP, "10.0.0.3", 53), 1, None))[0][1] == \
        "Adding service [10.0.0.3]:udp:53 to VS [web]:0"
    assert event_messages(RealServerUp(RS6, 1, None))[0][1] == \
        "Adding service [2001:db8::2]:tcp:443 to VS [2001:db8::1]:tcp:443"


def test_weight_change() -> None:
    assert event_messages(WeightChanged(RS, 5, 2)) == [
        (logging.INFO, "Changing weight from 5 to 2 for active service [10.0.0.2]:tcp:8080 "
                       "of VS [10.0.0.1]:tcp:80")]
    assert event_messages(WeightChanged(RS, 5, 2, active=False))[0][1].startswith(
        "Changing weight from 5 to 2 for inactive service [10.0.0.2]:tcp:8080")


def test_quorum_lines_carry_keepalived_arithmetic() -> None:
    # ipwrapper.c update_quorum_state: "Gained quorum %u+%u=%ld <= %ld for VS %s"
    assert event_messages(QuorumGained(VS, 4, 3, None, quorum=2, hysteresis=1)) == [
        (logging.INFO, "Gained quorum 2+1=3 <= 4 for VS [10.0.0.1]:tcp:80")]
    assert event_messages(QuorumLost(VS, 0, 1, None, quorum=2, hysteresis=1)) == [
        (logging.WARNING, "Lost quorum 2-1=1 > 0 for VS [10.0.0.1]:tcp:80")]
    # init=true without quorum: keepalived prints quorum+hysteresis behind the minus sign
    assert event_messages(QuorumLost(VS, 0, 3, None, quorum=2, hysteresis=1,
                                     cause=Cause.START)) == [
        (logging.WARNING, "Starting with quorum down 2-1=3 > 0 for VS [10.0.0.1]:tcp:80")]
    assert event_messages(QuorumGained(VS, 2, 1, None, quorum=1, hysteresis=0,
                                       cause=Cause.START)) == [
        (logging.INFO, "Gained quorum 1+0=1 <= 2 for VS [10.0.0.1]:tcp:80")]
    # update_vs_notifies (a stop, a reload's removal) logs nothing in keepalived
    for cause in (Cause.STOP, Cause.RELOAD):
        [(level, _)] = event_messages(QuorumLost(VS, 0, 1, None, quorum=1, hysteresis=0,
                                                 cause=cause))
        assert level == DETAIL


def test_sorry_server_lines_name_the_sorry_server() -> None:
    sorry = RsKey(VS, "10.0.9.9", 8080)
    assert event_messages(SorryServerIn(VS, sorry, False)) == [
        (logging.WARNING, "Adding sorry server [10.0.9.9]:tcp:8080 to VS [10.0.0.1]:tcp:80"),
        (logging.INFO, "Removing alive servers from the pool for VS [10.0.0.1]:tcp:80")]
    assert event_messages(SorryServerOut(VS, sorry, False)) == [
        (logging.INFO, "Removing sorry server [10.0.9.9]:tcp:8080 from VS [10.0.0.1]:tcp:80"),
        (logging.INFO, "Adding alive servers to the pool for VS [10.0.0.1]:tcp:80")]
    # sorry_server_inhibit: it stays in the table at weight 0
    assert event_messages(SorryServerIn(VS, sorry, True))[0][1] == \
        "Enabling sorry server [10.0.9.9]:tcp:8080 to VS [10.0.0.1]:tcp:80"
    assert event_messages(SorryServerOut(VS, sorry, True))[0][1] == \
        "Disabling sorry server [10.0.9.9]:tcp:8080 from VS [10.0.0.1]:tcp:80"


def test_keepalived_wording_has_one_home() -> None:
    """notify.py writes FIFO lines and names scripts with log.py's formatters."""
    import inspect

    from fastcheck.daemon import notify

    source = inspect.getsource(notify)
    assert "def vs_text" not in source and "def rs_text" not in source
    assert "def fifo_line" not in source and '"FWM ' not in source
    assert notify.fifo_line is dlog.fifo_line


@pytest.mark.parametrize(("kind", "params", "failures", "expected"), [
    (CheckKind.TCP, None, 1, "TCP_CHECK on service [10.0.0.2]:tcp:8080 failed."),
    (CheckKind.TCP, None, 4, "TCP_CHECK on service [10.0.0.2]:tcp:8080 failed after 3 retries."),
    (CheckKind.HTTP, HttpParams((UrlSpec("/"),)), 1,
     "HTTP_CHECK on service [10.0.0.2]:tcp:8080 failed."),
    (CheckKind.HTTPS, HttpParams((UrlSpec("/"),)), 2,
     "HTTP_CHECK on service [10.0.0.2]:tcp:8080 failed after 1 retries."),
    (CheckKind.PING, PingParams(), 1, "ICMP CHECK on service [10.0.0.2]:tcp:8080 failed."),
    (CheckKind.PING, PingParams(), 3, "ICMP CHECK on service [10.0.0.2]:tcp:8080 of "
                                      "[10.0.0.1]:tcp:80 failed after 2 retries."),
    (CheckKind.MISC, MiscParams(Script("/usr/local/bin/probe --fast"), 5.0), 1,
     "Misc check for [[10.0.0.2]:tcp:8080 VS [10.0.0.1]:tcp:80] by "
     "[/usr/local/bin/probe] failed."),
])
def test_checker_down(kind: CheckKind, params: object, failures: int, expected: str) -> None:
    assert event_messages(CheckerDown(check_key(kind, params), failures)) == [
        (logging.WARNING, expected)]


@pytest.mark.parametrize(("kind", "params", "expected"), [
    (CheckKind.TCP, None, "TCP connection to [10.0.0.2]:tcp:8080 success."),
    (CheckKind.HTTP, HttpParams((UrlSpec("/"),)),
     "Remote Web server [10.0.0.2]:tcp:8080 succeed on service."),
    (CheckKind.PING, PingParams(), "ICMP connection to [10.0.0.2]:tcp:8080 success."),
])
def test_checker_up(kind: CheckKind, params: object, expected: str) -> None:
    assert event_messages(CheckerUp(check_key(kind, params))) == [(logging.INFO, expected)]


def test_retry_is_a_detail_line() -> None:
    [(level, text)] = event_messages(RetryRequested(4, check_key(CheckKind.TCP), 2.5, 1))
    assert level == DETAIL < logging.INFO
    assert text == ("TCP_CHECK on service [10.0.0.2]:tcp:8080 failed (attempt 1), "
                    "retrying in 2.5 s")


def test_removal_budget_lines() -> None:
    assert event_messages(RemovalBudgetTripped(5, 5, 1)) == [
        (logging.ERROR, "Removal budget tripped: 5 removals in the window (limit 5, trip 1); "
                        "keeping further failed services in IPVS")]
    assert event_messages(RemovalBudgetRecovered(2, VS)) == [
        (logging.WARNING, "Removal budget recovered for VS [10.0.0.1]:tcp:80: removing 2 "
                          "held service(s)")]


def test_unknown_event_still_gets_a_line() -> None:
    assert event_messages("something") == [(logging.INFO, "something")]


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize(("kind", "result", "expected"), [
    (CheckKind.TCP, ProbeResult.down(Failure.REFUSED),
     "TCP connection to [10.0.0.2]:tcp:8080 failed (refused)."),
    (CheckKind.TCP, ProbeResult.down(Failure.TIMEOUT),
     "TCP connection to [10.0.0.2]:tcp:8080 timeout (timeout)."),
    (CheckKind.HTTP, ProbeResult.down(Failure.HTTP_STATUS, detail="status 503"),
     "HTTP status code error to server [10.0.0.2]:tcp:8080 (http_status: status 503)."),
    (CheckKind.HTTPS, ProbeResult.down(Failure.DIGEST),
     "MD5 digest error to server [10.0.0.2]:tcp:8080 (digest)."),
    (CheckKind.HTTP, ProbeResult.down(Failure.REGEX),
     "Regex match failed server [10.0.0.2]:tcp:8080 (regex)."),
    (CheckKind.HTTP, ProbeResult.down(Failure.REFUSED),
     "Error connecting server [10.0.0.2]:tcp:8080 (refused)."),
    (CheckKind.HTTP, ProbeResult.down(Failure.TIMEOUT, detail="no answer (connect)"),
     "Timeout connecting server [10.0.0.2]:tcp:8080 (timeout: no answer (connect))."),
    (CheckKind.HTTP, ProbeResult.down(Failure.TIMEOUT, detail="no answer (response)"),
     "Timeout HTTP read server [10.0.0.2]:tcp:8080 (timeout: no answer (response))."),
    (CheckKind.HTTPS, ProbeResult.down(Failure.TLS),
     "SSL handshake/communication error connecting to server [10.0.0.2]:tcp:8080 (tls)."),
    (CheckKind.SMTP, ProbeResult.down(Failure.PROTOCOL),
     "SMTP_CHECK Bad greeting banner from server [10.0.0.2]:8080 (protocol)"),
    (CheckKind.SMTP, ProbeResult.down(Failure.TIMEOUT),
     "SMTP_CHECK Connection timeout to server [10.0.0.2]:8080 (timeout)"),
    (CheckKind.DNS, ProbeResult.down(Failure.TIMEOUT),
     "DNS_CHECK ([10.0.0.2]:tcp:8080) read timeout from socket (timeout)."),
    (CheckKind.UDP, ProbeResult.down(Failure.PROTOCOL),
     "UDP check to [10.0.0.2]:tcp:8080 reply data mismatch (protocol)."),
    (CheckKind.UDP, ProbeResult.down(Failure.REFUSED),
     "UDP connection to [10.0.0.2]:tcp:8080 failed (refused)."),
    (CheckKind.PING, ProbeResult.down(Failure.TIMEOUT, detail="no ICMP echo reply"),
     "ICMP connection to [10.0.0.2]:tcp:8080 of [10.0.0.1]:tcp:80 failed "
     "(timeout: no ICMP echo reply)."),
    (CheckKind.MISC, ProbeResult.down(Failure.SCRIPT_EXIT, detail="/bin/false: exit 1"),
     "Misc check for [[10.0.0.2]:tcp:8080 VS [10.0.0.1]:tcp:80] failed "
     "(script_exit: /bin/false: exit 1)."),
    (CheckKind.MISC, ProbeResult.down(Failure.SCRIPT_TIMEOUT),
     "Misc check for [[10.0.0.2]:tcp:8080 VS [10.0.0.1]:tcp:80] timed out (script_timeout)."),
    (CheckKind.FILE, ProbeResult.down(Failure.FILE, detail="value 0"),
     "FILE_CHECK on service [10.0.0.2]:tcp:8080 failed (file: value 0)."),
])
def test_failure_lines(kind: CheckKind, result: ProbeResult, expected: str) -> None:
    assert failure_message(kind, RS, result) == expected


def test_failure_line_from_a_probe_target_without_an_owner() -> None:
    target = Target("127.0.0.1", 80)
    assert failure_message(CheckKind.TCP, target, ProbeResult.down(Failure.REFUSED)) == \
        "TCP connection to [127.0.0.1]:tcp:80 failed (refused)."
    assert failure_message(CheckKind.DNS, Target("127.0.0.1", 53),
                           ProbeResult.down(Failure.TIMEOUT)) == \
        "DNS_CHECK ([127.0.0.1]:udp:53) read timeout from socket (timeout)."


def test_failure_line_of_a_success_is_refused() -> None:
    with pytest.raises(ValueError, match="failed probe"):
        failure_message(CheckKind.TCP, RS, ProbeResult.up())


def test_every_failure_class_of_every_kind_gets_a_line() -> None:
    for kind in CheckKind:
        for failure in Failure:
            text = failure_message(kind, RS, ProbeResult.down(failure))
            assert f"({failure.value})" in text and "10.0.0.2" in text


# ----------------------------------------------------------------------------- limiter


def test_limiter_suppresses_repeats_within_the_window_and_reports_them() -> None:
    limiter = RepeatLimiter(window_s=60)
    assert limiter.allow("a", 100.0) == (True, 0)
    assert limiter.allow("a", 110.0) == (False, 1)
    assert limiter.allow("a", 159.9) == (False, 2)
    assert limiter.allow("b", 120.0) == (True, 0)  # other keys are independent
    assert limiter.allow("a", 160.0) == (True, 2)
    assert limiter.allow("a", 161.0) == (False, 1)  # a new window starts at 160
    assert limiter.allow("a", 300.0) == (True, 1)
    assert limiter.allow("a", 400.0) == (True, 0)


def test_limiter_memory_is_bounded_and_evicts_the_oldest_key() -> None:
    limiter = RepeatLimiter(window_s=60, max_keys=3)
    for index, key in enumerate("abc"):
        limiter.allow(key, float(index))
    limiter.allow("a", 5.0)  # touching "a" makes "b" the oldest
    limiter.allow("d", 6.0)
    assert len(limiter) == 3 and limiter.evicted == 1
    assert limiter.allow("b", 7.0) == (True, 0)  # forgotten: logs again at once
    assert limiter.allow("a", 8.0) == (False, 2)  # remembered (evicted "c" for "b")


def test_limiter_bounded_under_many_keys() -> None:
    limiter = RepeatLimiter(max_keys=100)
    for index in range(10_000):
        limiter.allow(("check", index), float(index))
    assert len(limiter) == 100 and limiter.evicted == 9_900


def test_limiter_forget_returns_pending_count() -> None:
    limiter = RepeatLimiter()
    limiter.allow("a", 0.0)
    limiter.allow("a", 1.0)
    assert limiter.forget("a") == 1
    assert limiter.forget("a") == 0
    assert limiter.allow("a", 2.0) == (True, 0)


@pytest.mark.parametrize(("window", "keys"), [(0, 10), (-1, 10), (60, 0)])
def test_limiter_rejects_bad_bounds(window: float, keys: int) -> None:
    with pytest.raises(ValueError):
        RepeatLimiter(window_s=window, max_keys=keys)


def test_with_suppressed() -> None:
    assert with_suppressed("x failed.", 0) == "x failed."
    assert with_suppressed("x failed.", 1) == "x failed. (1 similar message suppressed)"
    assert with_suppressed("x failed.", 7) == "x failed. (7 similar messages suppressed)"


# ----------------------------------------------------------------------------- setup


@pytest.fixture
def restore_logger() -> Iterator[None]:
    logger = logging.getLogger("fastcheck")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.mark.usefixtures("restore_logger")
def test_stderr_setup_format_and_levels() -> None:
    stream = io.StringIO()
    logger = setup_logging(target="stderr", level="info", detail=False, stream=stream)
    logger.info("Adding service [10.0.0.2]:tcp:80 to VS [10.0.0.1]:tcp:80")
    logger.log(DETAIL, "detail line")
    logging.getLogger("fastcheck.child").warning("from a child logger")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f" fastcheck[{os.getpid()}]: Adding service [10.0.0.2]:tcp:80 "
                             "to VS [10.0.0.1]:tcp:80")
    assert lines[1].endswith("from a child logger")


@pytest.mark.usefixtures("restore_logger")
def test_log_detail_shows_detail_lines_and_debug_still_hidden() -> None:
    stream = io.StringIO()
    logger = setup_logging(target="stderr", level="info", detail=True, stream=stream)
    logger.log(DETAIL, "retrying")
    logger.debug("debug noise")
    assert "retrying" in stream.getvalue() and "debug noise" not in stream.getvalue()


@pytest.mark.usefixtures("restore_logger")
def test_setup_replaces_earlier_handlers() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging(target="stderr", level="info", detail=False, stream=first)
    logger = setup_logging(target="stderr", level="warning", detail=False, stream=second)
    logger.warning("only once")
    logger.info("below the level")
    assert first.getvalue() == "" and second.getvalue().count("only once") == 1
    assert "below the level" not in second.getvalue()


@pytest.mark.usefixtures("restore_logger")
def test_syslog_setup_sends_a_real_datagram() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "log")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(path)
        server.settimeout(5)
        try:
            logger = setup_logging(target="syslog", level="info", detail=True,
                                   syslog_facility="local3", syslog_address=path)
            logger.warning("Removing service [10.0.0.2]:tcp:80 from VS [10.0.0.1]:tcp:80")
            warning = server.recv(4096).decode()
            logger.log(DETAIL, "retrying")
            detail = server.recv(4096).decode()
        finally:
            server.close()
    # <PRI> = facility * 8 + severity: local3 = 19, warning = 4, info = 6
    assert warning == (f"<{19 * 8 + 4}>fastcheck[{os.getpid()}]: Removing service "
                       "[10.0.0.2]:tcp:80 from VS [10.0.0.1]:tcp:80\x00")
    assert detail.startswith(f"<{19 * 8 + 6}>fastcheck[")


def test_syslog_without_the_socket_is_a_clear_error() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        missing = os.path.join(tmp, "no-such-log")
        with pytest.raises(LogSetupError, match=r"does not exist.*--log-target stderr"):
            setup_logging(target="syslog", level="info", detail=False,
                          syslog_address=missing)


@pytest.mark.parametrize(("options", "message"), [
    ({"target": "journal"}, "unknown log target 'journal'"),
    ({"level": "loud"}, "unknown log level 'loud'"),
    ({"target": "syslog", "syslog_facility": "kitchen"}, "unknown syslog facility 'kitchen'"),
])
def test_bad_options_are_clear_errors(options: dict[str, str], message: str) -> None:
    with pytest.raises(LogSetupError, match=message):
        setup_logging(**options)  # type: ignore[arg-type]


def test_facility_names_accept_log_prefix_and_case() -> None:
    assert dlog.facility_code("LOG_DAEMON") == dlog.facility_code("daemon") == 3
    assert dlog.facility_code("Local7") == 23


def test_failure_line_from_a_check_key_names_the_script_and_smtp_connect_address() -> None:
    misc = check_key(CheckKind.MISC, MiscParams(Script("/usr/bin/check-app -q"), 5.0))
    assert failure_message(CheckKind.MISC, misc, ProbeResult.down(Failure.SCRIPT_EXIT)) == \
        ("Misc check for [[10.0.0.2]:tcp:8080 VS [10.0.0.1]:tcp:80] by [/usr/bin/check-app] "
         "failed (script_exit).")
    smtp = CheckKey(RS, ProbeKey(CheckKind.SMTP, Target("10.0.0.9", 25), 3.0, TcpParams()), 0)
    assert failure_message(CheckKind.SMTP, smtp, ProbeResult.down(Failure.REFUSED)) == \
        "SMTP_CHECK Error connecting to server [10.0.0.9]:25 (refused)"
    tcp = check_key(CheckKind.TCP)
    assert failure_message(CheckKind.TCP, tcp, ProbeResult.down(Failure.RESET)) == \
        "TCP connection to [10.0.0.2]:tcp:8080 failed (reset)."


@pytest.mark.usefixtures("restore_logger")
def test_records_still_reach_root_listeners(caplog: pytest.LogCaptureFixture) -> None:
    logger = setup_logging(target="stderr", level="info", detail=False, stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="fastcheck"):
        logger.info("Gained quorum 1 <= 2 for VS FWM 7")
    assert [r.getMessage() for r in caplog.records] == ["Gained quorum 1 <= 2 for VS FWM 7"]
