"""Doctor's judgement: host facts (and optionally a configuration's needs) → findings.

Owns: `Needs` (what a configuration asks of the host, from its probe plan), `Finding`
with its `Status`, and `diagnose(facts, needs)`: every rule, its threshold and the exact
command that fixes what it finds.
Must not: read files, sockets or the environment (doctor/facts.py does), print, or load
a configuration. Pure: the same facts give the same findings.

Sizing rules (documented here once, shown in the findings):
- file descriptors: one socket per probe that opens one (TCP_CHECK, HTTP_GET, SSL_GET,
  SMTP_CHECK, DNS_CHECK, UDP_CHECK: all may be in flight at once), three per MISC_CHECK
  (its output pipe's two ends while it starts, and a pidfd), two raw sockets for all
  PING_CHECKs, plus `FD_HEADROOM` for the loop, netlink, logs and reload;
- TIME_WAIT: the checker closes each TCP connection it opens, so every connection leaves
  one TIME_WAIT socket for 60 s: about one per connection opened per minute;
- ephemeral ports: every probe socket in flight holds one local port, and connections
  to one destination must not reuse a port still in TIME_WAIT towards it.
"""

from __future__ import annotations

import enum
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fastcheck.doctor.facts import Facts
from fastcheck.model import CheckKind
from fastcheck.probeplan import ProbePlan

CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
FD_HEADROOM = 256
TIME_WAIT_S = 60.0
SMALL_CONN_TABLE = 4096  # the kernel default (conn_tab_bits=12)
MIN_PORTS_UNSIZED = 4096  # without a configuration, a range below this is "narrow"
MIN_NOFILE_UNSIZED = 1024
MIN_SOMAXCONN = 1024
CONNECTING = frozenset({CheckKind.TCP, CheckKind.HTTP, CheckKind.HTTPS, CheckKind.SMTP})
DATAGRAM = frozenset({CheckKind.DNS, CheckKind.UDP})
_IPVS_HEADER = re.compile(r"version\s+(\S+)\s*\(size=(\d+)\)")
_UNIT = "systemd unit"


class Status(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing doctor looked at: its verdict, what it found, and what to change."""

    name: str  # stable identifier, e.g. "net.ipv4.ip_local_port_range"
    status: Status
    found: str
    fix: str = ""  # an exact command or setting; empty when nothing needs changing

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.value, "found": self.found,
                "fix": self.fix}


@dataclass(frozen=True, slots=True)
class Needs:
    """What one configuration asks of the host (see the module doc for the rules)."""

    checks: int
    probes: int
    by_kind: Mapping[str, int] = field(default_factory=dict)  # keepalived name → probes
    sockets: int = 0  # probe sockets that may be open at once
    scripts: int = 0
    pings: int = 0
    connections_per_minute: float = 0.0  # TCP connections opened per minute (→ TIME_WAIT)
    busiest_per_minute: float = 0.0  # the same, towards the busiest destination

    @property
    def fds(self) -> int:
        return self.sockets + 3 * self.scripts + (2 if self.pings else 0) + FD_HEADROOM


def needs_of(plan: ProbePlan) -> Needs:
    """The host resources `plan` needs when every probe is in flight at once."""
    kinds: Counter[CheckKind] = Counter()
    per_minute = 0.0
    towards: dict[tuple[str, int], float] = {}
    for probe in plan.probes.values():
        kind = probe.key.kind
        kinds[kind] += 1
        if kind in CONNECTING:
            rate = 60.0 / max(probe.interval_s, 0.001)
            per_minute += rate
            target = (probe.key.target.address, probe.key.target.port)
            towards[target] = towards.get(target, 0.0) + rate
    return Needs(
        checks=plan.check_count, probes=len(plan),
        by_kind={kind.value: count for kind, count in kinds.items()},
        sockets=sum(kinds[k] for k in CONNECTING | DATAGRAM),
        scripts=kinds[CheckKind.MISC], pings=kinds[CheckKind.PING],
        connections_per_minute=per_minute,
        busiest_per_minute=max(towards.values(), default=0.0))


# --------------------------------------------------------------------------- helpers


def _ints(text: str | None, count: int) -> tuple[int, ...] | None:
    if text is None:
        return None
    words = text.split()
    if len(words) != count or not all(w.lstrip("-").isdigit() for w in words):
        return None
    return tuple(int(w) for w in words)


def _unknown(name: str) -> Finding:
    path = "/proc/sys/" + name.replace(".", "/")
    return Finding(name, Status.WARN, f"could not read {path}", "")


def _round_up(value: float, step: int = 1024) -> int:
    return max(step, math.ceil(value / step) * step)


def _has(facts: Facts, cap: int) -> bool | None:
    return None if facts.cap_eff is None else bool(facts.cap_eff >> cap & 1)


def _sysctl(name: str, value: object) -> str:
    text = str(value)
    return f"sysctl -w {name}=" + (f"'{text}'" if " " in text else text) + \
        " (persist it in /etc/sysctl.d/90-fastcheck.conf)"


# --------------------------------------------------------------------------- rules


def _hot_paths(facts: Facts) -> list[Finding]:
    if facts.implementations_error:
        return [Finding("hot-paths", Status.FAIL,
                        f"the hot paths could not be loaded: {facts.implementations_error}",
                        "reinstall fastcheck where a C compiler and the Python headers are "
                        "present, or unset FASTCHECK_REQUIRE_EXTENSIONS to accept the "
                        "pure-Python twins")]
    if not facts.implementations:
        return [Finding("hot-paths", Status.WARN, "no hot-path modules found", "")]
    findings = []
    for module, kind in sorted(facts.implementations.items()):
        name = f"hot-path:{module}"
        if kind == "c":
            findings.append(Finding(name, Status.OK, "compiled (c)"))
        elif facts.no_extensions:
            findings.append(Finding(name, Status.WARN,
                                    "pure Python (py): FASTCHECK_NO_EXTENSIONS is set",
                                    "unset FASTCHECK_NO_EXTENSIONS to use the compiled "
                                    "module"))
        else:
            findings.append(Finding(name, Status.WARN,
                                    f"pure Python ({kind}): the compiled module did not import",
                                    "reinstall fastcheck where a C compiler and the Python "
                                    "headers are present; set FASTCHECK_REQUIRE_EXTENSIONS=1 "
                                    "to make this fatal"))
    return findings


def _ipvs_fix(facts: Facts) -> str:
    release = facts.kernel_release or "this kernel"
    state = facts.ip_vs_module
    if state == "no-modules":
        return (f"modprobe ip_vs — but /lib/modules/{release} does not exist on this host, so "
                f"it will fail: install the modules of kernel {release} or boot a kernel "
                "built with CONFIG_IP_VS; until then `fastcheck run --dry-run` works "
                "without IPVS")
    if state == "absent":
        return (f"modprobe ip_vs — but kernel {release} ships no ip_vs module: boot a kernel "
                "built with CONFIG_IP_VS=m; until then `fastcheck run --dry-run` works "
                "without IPVS")
    return "modprobe ip_vs (load it at boot: echo ip_vs > /etc/modules-load.d/ip_vs.conf)"


def _ipvs(facts: Facts) -> tuple[list[Finding], int | None]:
    """The IPVS finding and the connection table size, when IPVS is there."""
    header = _IPVS_HEADER.search(facts.ipvs_proc or "")
    proc_version, proc_size = (header.group(1), int(header.group(2))) if header else (None, None)
    netlink = facts.ipvs_netlink
    if netlink is not None and netlink.error is None:
        extra = ", FULLNAT commands" if netlink.fullnat else ""
        found = (f"IPVS {netlink.version} over generic netlink, connection table "
                 f"{netlink.connection_table_size}{extra}")
        return [Finding("ipvs", Status.OK, found)], netlink.connection_table_size
    if netlink is not None and proc_version is not None:  # present, but netlink refused
        return [Finding("ipvs", Status.FAIL,
                        f"IPVS {proc_version} is loaded (/proc/net/ip_vs) but netlink "
                        f"refused: {netlink.error}",
                        "run fastcheck as root, or grant CAP_NET_ADMIN (systemd unit: "
                        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW)")], proc_size
    if proc_version is not None:
        return [Finding("ipvs", Status.OK, f"IPVS {proc_version} (/proc/net/ip_vs), "
                                           f"connection table {proc_size}")], proc_size
    if netlink is not None:
        found = f"no IPVS in the running kernel: {netlink.error}"
    elif facts.ipvs_proc is not None:
        found = f"unrecognised /proc/net/ip_vs header: {facts.ipvs_proc!r}"
    else:
        found = "no IPVS in the running kernel (no /proc/net/ip_vs)"
    if facts.ip_vs_module == "no-modules":
        found += f"; no /lib/modules/{facts.kernel_release} to load it from"
    elif facts.ip_vs_module == "absent":
        found += f"; kernel {facts.kernel_release} has no ip_vs module"
    elif facts.ip_vs_module == "module":
        found += "; the ip_vs module is installed but not loaded"
    return [Finding("ipvs", Status.FAIL, found, _ipvs_fix(facts))], None


def _conn_table(size: int | None) -> list[Finding]:
    if not size:
        return []
    name = "ipvs.conn_tab_size"
    if size <= SMALL_CONN_TABLE:
        return [Finding(name, Status.WARN,
                        f"{size} hash buckets (the default): long chains under heavy traffic",
                        "echo 'options ip_vs conn_tab_bits=20' > /etc/modprobe.d/ip_vs.conf, "
                        "then reload ip_vs (modprobe -r ip_vs && modprobe ip_vs empties the "
                        "table) or reboot")]
    return [Finding(name, Status.OK, f"{size} hash buckets")]


def _capabilities(facts: Facts, needs: Needs | None) -> list[Finding]:
    grant = ("run fastcheck as root, or in its systemd unit: "
             "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW")
    admin, raw = _has(facts, CAP_NET_ADMIN), _has(facts, CAP_NET_RAW)
    if admin is None:
        return [Finding("capabilities", Status.WARN,
                        "could not read CapEff from /proc/self/status", "")]
    findings = [
        Finding("CAP_NET_ADMIN", Status.OK, "effective") if admin else
        Finding("CAP_NET_ADMIN", Status.FAIL,
                "missing: the IPVS table can be neither read nor changed", grant)]
    if raw:
        findings.append(Finding("CAP_NET_RAW", Status.OK, "effective"))
    elif needs is not None and not needs.pings:
        findings.append(Finding("CAP_NET_RAW", Status.OK,
                                "missing, and not needed: the configuration has no PING_CHECK"))
    elif needs is not None:
        findings.append(Finding("CAP_NET_RAW", Status.FAIL,
                                f"missing: {needs.pings} PING_CHECK probe(s) cannot open their "
                                "raw ICMP socket", grant))
    else:
        findings.append(Finding("CAP_NET_RAW", Status.WARN,
                                "missing: PING_CHECK cannot open its raw ICMP socket", grant))
    return findings


def _ping_group_range(facts: Facts, needs: Needs | None) -> list[Finding]:
    name = "net.ipv4.ping_group_range"
    text = facts.sysctl.get(name)
    bounds = _ints(text, 2)
    if bounds is None:
        return [_unknown(name)]
    low, high = bounds
    allowed = any(low <= gid <= high for gid in facts.gids)
    state = ("unprivileged ICMP sockets allowed for this process's groups" if allowed else
             "unprivileged ICMP sockets off for this process's groups")
    found = f"'{text}': {state}"
    if _has(facts, CAP_NET_RAW) is not False or (needs is not None and not needs.pings):
        return [Finding(name, Status.OK,
                        found + "; not needed: PING_CHECK uses a raw socket (CAP_NET_RAW)")]
    return [Finding(name, Status.WARN,
                    found + "; PING_CHECK needs CAP_NET_RAW either way (it uses a raw socket)",
                    "grant CAP_NET_RAW (systemd unit: AmbientCapabilities=CAP_NET_RAW); "
                    f"{_sysctl(name, '0 2147483647')} helps ping(8), not fastcheck")]


def _nofile(facts: Facts, needs: Needs | None) -> list[Finding]:
    name = "RLIMIT_NOFILE"
    if facts.nofile is None:
        return [Finding(name, Status.WARN, "could not read /proc/self/limits", "")]
    soft, hard = facts.nofile
    shown = f"soft {'unlimited' if soft is None else soft}, " \
            f"hard {'unlimited' if hard is None else hard}"
    if needs is None:
        if soft is not None and soft < MIN_NOFILE_UNSIZED:
            return [Finding(name, Status.WARN, f"{shown}: low for a farm",
                            f"LimitNOFILE={MIN_NOFILE_UNSIZED * 64} in the {_UNIT}, or "
                            f"ulimit -n {MIN_NOFILE_UNSIZED * 64} before starting")]
        return [Finding(name, Status.OK, f"{shown} (give -f FILE to size it against a "
                                         "configuration)")]
    found = f"{shown}; the configuration needs about {needs.fds} ({needs.probes} probes + " \
            f"{FD_HEADROOM} headroom)"
    if soft is None or soft >= needs.fds:
        return [Finding(name, Status.OK, found)]
    want = _round_up(needs.fds * 1.25)
    fix = f"LimitNOFILE={want} in the {_UNIT}, or ulimit -n {want} before starting"
    if hard is not None and hard < want:
        fix += f" (the hard limit {hard} must be raised too: run the ulimit as root)"
    return [Finding(name, Status.FAIL, found + ": checks will fail with EMFILE", fix)]


def _fd_sysctls(facts: Facts, needs: Needs | None) -> list[Finding]:
    findings = []
    for name, status in (("fs.nr_open", Status.FAIL), ("fs.file-max", Status.WARN)):
        value = _ints(facts.sysctl.get(name), 1)
        if value is None:
            findings.append(_unknown(name))
        elif needs is not None and value[0] < needs.fds:
            want = _round_up(needs.fds * 2)
            findings.append(Finding(name, status, f"{value[0]}: below the {needs.fds} file "
                                                  "descriptors the configuration needs",
                                    _sysctl(name, want)))
        else:
            findings.append(Finding(name, Status.OK, str(value[0])))
    return findings


def _ports(facts: Facts, needs: Needs | None) -> tuple[list[Finding], int | None]:
    name = "net.ipv4.ip_local_port_range"
    bounds = _ints(facts.sysctl.get(name), 2)
    if bounds is None:
        return [_unknown(name)], None
    low, high = bounds
    size = high - low + 1
    if size < 1:
        return [Finding(name, Status.FAIL, f"'{low} {high}': no ephemeral ports at all",
                        _sysctl(name, "32768 60999"))], 0
    found = f"{low}-{high}: {size} ephemeral ports"
    if needs is None:
        if size < MIN_PORTS_UNSIZED:
            return [Finding(name, Status.WARN, f"{found}: narrow for a farm",
                            _sysctl(name, "32768 60999"))], size
        return [Finding(name, Status.OK, found)], size
    found += f" for up to {needs.sockets} probe sockets at once"
    if needs.sockets > size:
        want_low = max(1024, min(low, 65535 - 2 * needs.sockets))
        return [Finding(name, Status.WARN,
                        found + ": connect() can fail with EADDRNOTAVAIL",
                        _sysctl(name, f"{want_low} 65535"))], size
    return [Finding(name, Status.OK, found)], size


def _time_wait(facts: Facts, needs: Needs | None, ports: int | None) -> list[Finding]:
    findings = []
    name = "net.ipv4.tcp_max_tw_buckets"
    buckets = _ints(facts.sysctl.get(name), 1)
    if buckets is None:
        findings.append(_unknown(name))
    elif needs is not None and needs.connections_per_minute > buckets[0]:
        estimate = round(needs.connections_per_minute * TIME_WAIT_S / 60)
        findings.append(Finding(name, Status.WARN,
                                f"{buckets[0]}, but about {estimate} TIME_WAIT sockets are "
                                "expected: the rest are destroyed early (dmesg: 'time wait "
                                "bucket table overflow')",
                                _sysctl(name, _round_up(estimate * 2))))
    else:
        extra = "" if needs is None else \
            f" (about {round(needs.connections_per_minute)} TIME_WAIT sockets expected)"
        findings.append(Finding(name, Status.OK, f"{buckets[0]}{extra}"))
    name = "net.ipv4.tcp_tw_reuse"
    reuse = _ints(facts.sysctl.get(name), 1)
    meaning = {0: "off", 1: "on", 2: "loopback only"}
    if reuse is None:
        findings.append(_unknown(name))
    elif needs is not None and ports and reuse[0] != 1 and needs.busiest_per_minute > ports:
        findings.append(Finding(name, Status.WARN,
                                f"{reuse[0]} ({meaning.get(reuse[0], '?')}), but the busiest "
                                f"destination gets about {round(needs.busiest_per_minute)} "
                                f"connections a minute, more than the {ports} ephemeral ports "
                                "free of TIME_WAIT towards it",
                                _sysctl(name, 1)))
    else:
        findings.append(Finding(name, Status.OK,
                                f"{reuse[0]} ({meaning.get(reuse[0], '?')})"))
    return findings


def _somaxconn(facts: Facts) -> list[Finding]:
    name = "net.core.somaxconn"
    value = _ints(facts.sysctl.get(name), 1)
    if value is None:
        return [_unknown(name)]
    if value[0] < MIN_SOMAXCONN:
        return [Finding(name, Status.WARN,
                        f"{value[0]}: caps the listen backlog of services on this host (real "
                        "servers run locally drop connections under load)",
                        _sysctl(name, 4096))]
    return [Finding(name, Status.OK, str(value[0]))]


def diagnose(facts: Facts, needs: Needs | None = None) -> list[Finding]:
    """Every finding, in a fixed order: hot paths, IPVS, privileges, limits, sysctls."""
    ipvs, table_size = _ipvs(facts)
    ports, size = _ports(facts, needs)
    parts: Iterable[list[Finding]] = (
        _hot_paths(facts), ipvs, _conn_table(table_size), _capabilities(facts, needs),
        _ping_group_range(facts, needs), _nofile(facts, needs), _fd_sysctls(facts, needs),
        ports, _time_wait(facts, needs, size), _somaxconn(facts))
    return [finding for part in parts for finding in part]


def worst(findings: Iterable[Finding]) -> Status:
    statuses = {finding.status for finding in findings}
    for status in (Status.FAIL, Status.WARN):
        if status in statuses:
            return status
    return Status.OK
