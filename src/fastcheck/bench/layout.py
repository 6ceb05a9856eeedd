"""Where the bench's targets live and the configuration that checks them (sans-IO).

Owns: `Layout` — which address and port each target has, which targets fail (a closed
port: refused at once), how the check kinds split in a `mixed` run — the limits that make
a combination impossible (`LayoutError`, worded as what to change), and the
keepalived-style configuration text whose real servers are those targets.
Must not: open sockets, start processes or read a clock.

Spaces. Loopback (the default): listeners are bound to the wildcard address on the `lo`
device only, so one listener on port P serves every 127.x.y.z:P; targets are (address,
port) pairs over a few ports and many addresses of 127.64.0.0/10. Loopback always answers
ICMP, so ping targets cannot fail there; a mixed run puts its failing targets on its TCP
and HTTP share. Network namespace (`--netns`): the targets live in a namespace behind a
veth pair; 198.18.0.0/16 is all local there (every address answers, ICMP included) and
198.19.0.0/17 is a blackhole (failing ping targets: no answer, the timeout path).
In both, listener ports are below the ephemeral range (32768+) so the checks' source
ports never collide with them, and failing TCP/HTTP targets point at closed ports
(bound, never listening: refused at once).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

HOSTS_PER_24 = 254  # .1 .. .254 of each /24
PORTS_PER_KIND = 64  # listener (and closed) ports a kind spreads its targets over
PORT_FLOOR, PORT_CEILING = 30_000, 32_700  # listener ports, below the ephemeral range
VIP_BASE = (127 << 24) | (254 << 16)  # virtual servers (never contacted: no IPVS here)
REAL_SERVERS_PER_VS = 1000
AS_FAST_AS_POSSIBLE_S = 0.000001  # the smallest delay_loop the loader accepts


class Kind(enum.Enum):
    TCP = "tcp"
    HTTP = "http"
    PING = "ping"


CHECK_TYPES = ("tcp", "http", "ping", "mixed")


class LayoutError(Exception):
    """An impossible combination; the message says what to change."""


def _dotted(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


@dataclass(frozen=True, slots=True)
class Space:
    """Where targets live: answering addresses, never-answering ones (for failing ping
    targets; none on loopback), and the device listeners are bound to."""

    name: str
    first_good: int  # network address of the answering range (a /24 boundary)
    good_subnets: int  # /24s in it
    first_bad: int
    bad_subnets: int
    bind_device: str | None

    @property
    def max_good(self) -> int:
        return self.good_subnets * HOSTS_PER_24

    @property
    def max_bad(self) -> int:
        return self.bad_subnets * HOSTS_PER_24

    def good(self, index: int) -> str:
        """The index-th answering address (x.y.z.1 … x.y.z.254, then the next /24)."""
        subnet, host = divmod(index, HOSTS_PER_24)
        return _dotted(self.first_good + (subnet << 8) + host + 1)

    def bad(self, index: int) -> str:
        subnet, host = divmod(index, HOSTS_PER_24)
        return _dotted(self.first_bad + (subnet << 8) + host + 1)


LOOPBACK = Space("loopback", (127 << 24) | (64 << 16), 64 * 256, 0, 0, "lo")
NETNS = Space("netns", (198 << 24) | (18 << 16), 256, (198 << 24) | (19 << 16), 128, None)
NETNS_GOOD_NET, NETNS_BAD_NET = "198.18.0.0/16", "198.19.0.0/17"
NETNS_LINK = ("198.19.255.253", "198.19.255.254", 30)  # host end, namespace end, prefix


def address_text(index: int) -> str:
    """The index-th loopback target address (127.64.0.1, …)."""
    return LOOPBACK.good(index)


@dataclass(frozen=True, slots=True)
class Target:
    kind: Kind
    address: str
    port: int  # the listener port, or the closed port of a failing target; 0 for ping
    failing: bool


@dataclass(frozen=True, slots=True)
class Ports:
    """Ports the bench actually got: each kind's listener ports and the closed ports."""

    tcp: tuple[int, ...]
    http: tuple[int, ...]
    closed: tuple[int, ...]


def split(check: str, targets: int, failing_share: float,
          space: Space = LOOPBACK) -> dict[Kind, tuple[int, int]]:
    """Targets per kind as (total, failing). Raises LayoutError for impossible input."""
    if check not in CHECK_TYPES:
        raise LayoutError(f"unknown check type {check!r}: use one of {', '.join(CHECK_TYPES)}")
    if targets < 1:
        raise LayoutError(f"--targets must be at least 1, got {targets}")
    if not 0.0 <= failing_share <= 1.0:
        raise LayoutError(f"--failing must be a share between 0 and 1, got {failing_share:g}")
    failing = round(targets * failing_share)
    if check == "mixed":
        third = targets // 3
        counts = {Kind.TCP: targets - 2 * third, Kind.HTTP: third, Kind.PING: third}
    else:
        counts = {Kind(check): targets}
    ping_fails = space.max_bad > 0
    can_fail = sum(n for kind, n in counts.items() if ping_fails or kind is not Kind.PING)
    if failing > can_fail:
        raise LayoutError(
            f"{failing} failing targets asked for, but only TCP and HTTP targets can fail "
            f"on loopback (it always answers ICMP) and there are {can_fail}: lower "
            "--failing, or use --netns" + (", or --check tcp|http|mixed"
                                            if check == "ping" else ""))
    result: dict[Kind, tuple[int, int]] = {}
    left = failing
    for kind, n in counts.items():
        if kind is Kind.PING and not ping_fails:
            result[kind] = (n, 0)
            continue
        share = min(n, round(failing * n / can_fail), left) if can_fail else 0
        result[kind] = (n, share)
        left -= share
    for kind, (n, bad) in result.items():  # rounding leftovers
        if left and (ping_fails or kind is not Kind.PING) and bad < n:
            extra = min(left, n - bad)
            result[kind] = (n, bad + extra)
            left -= extra
    _fits(result, space)
    return result


def _fits(split_: dict[Kind, tuple[int, int]], space: Space) -> None:
    """Raises LayoutError when the targets need more addresses than `space` has."""
    good = bad = 0
    for kind, (n, failing) in split_.items():
        if kind is Kind.PING:
            good += n - failing
            bad += failing
        else:  # PORTS_PER_KIND targets per address, answering and failing alike
            good += -(-(n - failing) // PORTS_PER_KIND) + -(-failing // PORTS_PER_KIND)
    where = "the loopback address space" if space is LOOPBACK else \
        f"the namespace's {NETNS_GOOD_NET}"
    if good > space.max_good:
        raise LayoutError(f"the targets need {good:,} addresses, more than the {space.max_good:,}"
                          f" of {where} (a ping target takes an address, other targets "
                          f"share one per {PORTS_PER_KIND} ports): lower --targets")
    if bad > space.max_bad:
        raise LayoutError(f"{bad:,} failing ping targets need as many addresses of "
                          f"{NETNS_BAD_NET}, which has {space.max_bad:,}: lower --failing "
                          "or --targets")


def listener_ports_needed(split_: dict[Kind, tuple[int, int]]) -> dict[Kind, int]:
    """How many listener ports each kind wants (none for ping, none if all fail)."""
    return {kind: min(PORTS_PER_KIND, n - bad) for kind, (n, bad) in split_.items()
            if kind is not Kind.PING and n - bad > 0}


def closed_ports_needed(split_: dict[Kind, tuple[int, int]]) -> int:
    return max([min(PORTS_PER_KIND, bad) for kind, (_, bad) in split_.items()
                if kind is not Kind.PING] + [1])


def place(split_: dict[Kind, tuple[int, int]], ports: Ports,
          space: Space = LOOPBACK) -> list[Target]:
    """Every target. No two targets share (address, port); ping targets have an address
    each; TCP/HTTP targets fill each address's listener (or closed) ports in turn."""
    out: list[Target] = []
    next_good = next_bad = 0

    def spread(kind: Kind, count: int, port_set: tuple[int, ...], failing: bool) -> None:
        nonlocal next_good
        per = max(1, len(port_set))
        for i in range(count):
            address, slot = divmod(i, per)
            out.append(Target(kind, space.good(next_good + address), port_set[slot], failing))
        next_good += -(-count // per)

    for kind, (n, bad) in split_.items():
        if kind is Kind.PING:
            out.extend(Target(kind, space.good(next_good + i), 0, False)
                       for i in range(n - bad))
            next_good += n - bad
            out.extend(Target(kind, space.bad(next_bad + i), 0, True) for i in range(bad))
            next_bad += bad
            continue
        spread(kind, n - bad, ports.tcp if kind is Kind.TCP else ports.http, False)
        spread(kind, bad, ports.closed, True)
    if next_good > space.max_good or next_bad > space.max_bad:
        raise LayoutError(f"the run needs more addresses than {space.name} has: "
                          "lower --targets")
    return out


def _check_text(target: Target, timeout_s: float) -> str:
    if target.kind is Kind.TCP:
        return f"        TCP_CHECK {{\n            connect_timeout {timeout_s:g}\n        }}\n"
    if target.kind is Kind.PING:
        return f"        PING_CHECK {{\n            connect_timeout {timeout_s:g}\n        }}\n"
    return ("        HTTP_GET {\n            url {\n                path /\n"
            "                status_code 200\n            }\n"
            f"            connect_timeout {timeout_s:g}\n        }}\n")


def config_text(targets: list[Target], interval_s: float | None, timeout_s: float) -> str:
    """keepalived-style configuration: virtual servers of up to 1,000 real servers, one
    real server per target with its one check; `interval_s` None = as fast as possible."""
    delay = AS_FAST_AS_POSSIBLE_S if interval_s is None else interval_s
    parts = ["global_defs {\n    router_id fastcheck-bench\n}\n"]
    for start in range(0, len(targets), REAL_SERVERS_PER_VS):
        vs = start // REAL_SERVERS_PER_VS
        vip = VIP_BASE + vs + 1
        parts.append(f"virtual_server {vip >> 24}.{(vip >> 16) & 255}.{(vip >> 8) & 255}."
                     f"{vip & 255} 80 {{\n    delay_loop {delay:.6f}\n    lb_algo rr\n"
                     "    lb_kind NAT\n    protocol TCP\n")
        for target in targets[start:start + REAL_SERVERS_PER_VS]:
            port = target.port or 7  # ping ignores the port; the syntax wants one
            parts.append(f"    real_server {target.address} {port} {{\n"
                         f"{_check_text(target, timeout_s)}    }}\n")
        parts.append("}\n")
    return "".join(parts)
