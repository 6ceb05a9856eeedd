"""Where the bench's targets live and the configuration that checks them (sans-IO).

Owns: `Layout` — which address and port each target has, which targets fail (a closed
port: refused at once), how the check kinds split in a `mixed` run — the limits that make
a combination impossible (`LayoutError`, worded as what to change), and the
keepalived-style configuration text whose real servers are those targets.
Must not: open sockets, start processes or read a clock.

Loopback layout. Listeners are bound to the wildcard address on the `lo` device only, so
one listener on port P serves every 127.x.y.z:P; targets are (address, port) pairs over a
few ports and many addresses of 127.64.0.0/10. Listener ports are below the ephemeral range
(32768+) so the checks' source ports never collide with them. Ping targets need one address
each (a probe is keyed by address). Failing targets point at a closed port (bound, never
listening: the kernel refuses at once). Loopback always answers ICMP, so ping targets
cannot fail here; a mixed run puts its failing targets on its TCP and HTTP share.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

FIRST_ADDRESS = (127 << 24) | (64 << 16)  # 127.64.0.0
HOSTS_PER_24 = 254  # .1 .. .254 of each /24
SUBNETS_24 = 64 * 256  # 127.64.0.0 .. 127.127.255.0
MAX_ADDRESSES = SUBNETS_24 * HOSTS_PER_24  # 4,161,536
PORTS_PER_KIND = 64  # listener ports a kind spreads its targets over
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


def address_text(index: int) -> str:
    """The index-th loopback target address (127.64.0.1, 127.64.0.2, … 127.64.0.254,
    127.64.1.1, …)."""
    subnet, host = divmod(index, HOSTS_PER_24)
    value = FIRST_ADDRESS + (subnet << 8) + host + 1
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


@dataclass(frozen=True, slots=True)
class Target:
    kind: Kind
    address: str
    port: int  # the listener port, or the closed port of a failing target; 0 for ping
    failing: bool


@dataclass(frozen=True, slots=True)
class Ports:
    """Ports the targets process actually got (each kind's listener ports and the
    closed port)."""

    tcp: tuple[int, ...]
    http: tuple[int, ...]
    closed: int


def split(check: str, targets: int, failing_share: float) -> dict[Kind, tuple[int, int]]:
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
    can_fail = sum(n for kind, n in counts.items() if kind is not Kind.PING)
    if failing > can_fail:
        raise LayoutError(
            f"{failing} failing targets asked for, but only TCP and HTTP targets can fail "
            f"on loopback (it always answers ICMP) and there are {can_fail}: lower "
            "--failing" + (" or use --check tcp|http|mixed" if check == "ping" else ""))
    result: dict[Kind, tuple[int, int]] = {}
    left = failing
    for kind, n in counts.items():
        if kind is Kind.PING:
            result[kind] = (n, 0)
            continue
        share = min(n, round(failing * n / can_fail)) if can_fail else 0
        share = min(share, left)
        result[kind] = (n, share)
        left -= share
    for kind, (n, bad) in result.items():  # rounding leftovers
        if left and kind is not Kind.PING and bad < n:
            extra = min(left, n - bad)
            result[kind] = (n, bad + extra)
            left -= extra
    for kind, (n, _) in result.items():
        limit = MAX_ADDRESSES if kind is Kind.PING else MAX_ADDRESSES * PORTS_PER_KIND
        if n > limit:
            raise LayoutError(
                f"{n} {kind.value} targets do not fit the loopback address space "
                f"(at most {limit:,} {kind.value} targets: "
                f"{'one address each' if kind is Kind.PING else f'{PORTS_PER_KIND} ports x '}"
                f"{'' if kind is Kind.PING else f'{MAX_ADDRESSES:,} addresses'}): "
                "lower --targets")
    return result


def listener_ports_needed(split_: dict[Kind, tuple[int, int]]) -> dict[Kind, int]:
    """How many listener ports each kind wants (none for ping, none if all fail)."""
    return {kind: min(PORTS_PER_KIND, n - bad) for kind, (n, bad) in split_.items()
            if kind is not Kind.PING and n - bad > 0}


def place(split_: dict[Kind, tuple[int, int]], ports: Ports) -> list[Target]:
    """Every target: addresses are distinct across the whole run (one per ping target,
    one per `ports` group otherwise); failing ones are spread evenly among each kind's."""
    out: list[Target] = []
    next_address = 0
    for kind, (n, bad) in split_.items():
        if kind is Kind.PING:
            out.extend(Target(kind, address_text(next_address + i), 0, False)
                       for i in range(n))
            next_address += n
            continue
        listen = ports.tcp if kind is Kind.TCP else ports.http
        good = n - bad
        per = max(1, len(listen))
        for i in range(good):
            address, slot = divmod(i, per)
            out.append(Target(kind, address_text(next_address + address), listen[slot], False))
        next_address += -(-good // per) if good else 0
        out.extend(Target(kind, address_text(next_address + i), ports.closed, True)
                   for i in range(bad))
        next_address += bad
    if next_address > MAX_ADDRESSES:
        raise LayoutError(f"the run needs {next_address:,} loopback addresses, more than "
                          f"the {MAX_ADDRESSES:,} available: lower --targets")
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
