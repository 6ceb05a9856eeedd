"""Entries of `virtual_server_group` and FULLNAT `local_address_group` blocks.

Owns: the address-range forms keepalived accepts on a group line (single address,
last-part range `10.0.0.1-10`, full range `10.0.0.250-10.0.1.5`, CIDR `10.0.0.8/29`,
`fwmark N [inet|inet6]`) and their expansion limits.
Must not: look up other parts of the configuration.
"""

from __future__ import annotations

import ipaddress
import re

from fastcheck.config import values as v
from fastcheck.errors import echo
from fastcheck.model import Family, GroupEntry

MAX_RANGE = 65536  # one group line may not expand to more kernel services than this

# The last part of a `first-last` range: decimal for IPv4, hexadecimal for IPv6 (any
# length here, so that a long one is reported as out of range, never passed to int()).
_LAST_PART = {4: re.compile(r"[0-9]+"), 6: re.compile(r"[0-9A-Fa-f]+")}


def parse_range(text: str) -> tuple[str, str, Family]:
    """Returns (first, last, family) for a single address, a range or a CIDR block."""
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise v.ValueProblem(f"{echo(text)} is not an address block") from None
        first, last = network.network_address, network.broadcast_address
        return _checked(first, last, text)
    head, dash, tail = text.partition("-")
    try:
        first = ipaddress.ip_address(head)
    except ValueError:
        raise v.ValueProblem(f"{echo(text)} is not an IP address or range") from None
    if not dash:
        return _checked(first, first, text)
    try:
        last = ipaddress.ip_address(tail)
    except ValueError:
        last = _last_part(first, tail, text)
    if last.version != first.version:
        raise v.ValueProblem(f"range {echo(text)} mixes IPv4 and IPv6")
    return _checked(first, last, text)


def _last_part(first: ipaddress.IPv4Address | ipaddress.IPv6Address, tail: str,
               text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """`10.0.0.1-10` ends at 10.0.0.10; `fe80::1-a` ends at fe80::a (hex)."""
    if _LAST_PART[first.version].fullmatch(tail) is None:
        raise v.ValueProblem(f"{echo(text)}: range end {echo(tail)} is not a number")
    limit = 255 if first.version == 4 else 0xFFFF
    digits = tail.lstrip("0") or "0"
    part = int(digits, 10 if first.version == 4 else 16) if len(digits) <= 4 else limit + 1
    if part > limit:
        raise v.ValueProblem(f"{echo(text)}: range end {echo(tail)} is out of range "
                             f"0..{limit}")
    base = int(first) & ~limit
    return ipaddress.ip_address(base | part) if first.version == 4 else \
        ipaddress.IPv6Address(base | part)


def _checked(first: ipaddress.IPv4Address | ipaddress.IPv6Address,
             last: ipaddress.IPv4Address | ipaddress.IPv6Address,
             text: str) -> tuple[str, str, Family]:
    if int(last) < int(first):
        raise v.ValueProblem(f"range {echo(text)} ends before it starts")
    if int(last) - int(first) >= MAX_RANGE:
        raise v.ValueProblem(f"range {echo(text)} expands to more than {MAX_RANGE} "
                             "addresses")
    family = Family.INET if first.version == 4 else Family.INET6
    return first.compressed, last.compressed, family


def vs_group_entry(keyword: str, args: tuple[str, ...]) -> GroupEntry:
    if keyword == "fwmark":
        v.expect_count(args, 1, 2)
        mark = v.parse_int(args[0], 1, 2**32 - 1, "fwmark")
        family = Family.INET
        if len(args) == 2:
            if args[1] not in ("inet", "inet6"):
                raise v.ValueProblem(f"expected inet or inet6, got {args[1]!r}")
            family = Family(args[1])
        return GroupEntry(fwmark=mark, family=family)
    v.expect_count(args, 0, 1)
    first, last, family = parse_range(keyword)
    port = v.parse_port(args[0], allow_zero=True) if args else None
    return GroupEntry(first=first, last=last, port=port or None, family=family)


def local_addresses(keyword: str, args: tuple[str, ...]) -> list[str]:
    v.expect_count(args, 0)
    first, last, family = parse_range(keyword)
    return list(GroupEntry(first=first, last=last, family=family).addresses())
