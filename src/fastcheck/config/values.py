"""Converters from a keyword's argument words to typed values.

Owns: argument counting and value validation (numbers, timers, booleans, addresses,
ports, scripts), each failing with a `ValueProblem` whose text a user can act on.
Must not: know which keyword uses which converter (config/keywords.py owns that) or
touch the model's defaults.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any

from fastcheck.errors import echo
from fastcheck.model import Script

Converter = Callable[[tuple[str, ...]], Any]

TRUE_WORDS = frozenset({"on", "true", "yes"})
FALSE_WORDS = frozenset({"off", "false", "no"})
TIMER_MAX_S = 1_000_000.0  # ~11.5 days; anything larger is a typo, not a schedule
# Significant digits beyond which an integer is out of every range a keyword accepts; such
# text is refused as out of range without being passed to int(), which would raise a
# ValueError of its own beyond 4,300 digits.
MAX_INT_DIGITS = 24

# What strtol(…, 10) would take in full: ASCII digits with an optional sign. int() would
# also take "1_000", surrounding blanks and non-ASCII digits, which keepalived refuses.
_INTEGER = re.compile(r"[+-]?[0-9]+")
# Decimal seconds as strtod reads them, again without int()/float()'s Python extras.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class ValueProblem(ValueError):
    """A keyword's arguments are wrong; the message names what was expected."""


def expect_count(args: tuple[str, ...], low: int, high: int | None = None) -> None:
    high = low if high is None else high
    if low <= len(args) <= high:
        return
    if low == high:
        want = "no argument" if low == 0 else f"{low} argument{'s' if low > 1 else ''}"
    elif high > 99:
        want = f"at least {low} argument{'s' if low > 1 else ''}"
    else:
        want = f"{low} to {high} arguments"
    raise ValueProblem(f"expects {want}, got {len(args)}")


def parse_int(text: str, low: int, high: int, what: str = "value") -> int:
    if _INTEGER.fullmatch(text) is None:
        raise ValueProblem(f"{what} {echo(text)} is not an integer")
    digits = text.lstrip("+-").lstrip("0") or "0"     # int()'s limit counts zeros too
    if len(digits) > MAX_INT_DIGITS:
        raise ValueProblem(f"{what} {echo(text)} is out of range {low}..{high}")
    value = -int(digits) if text[0] == "-" else int(digits)
    if not low <= value <= high:
        raise ValueProblem(f"{what} {value} is out of range {low}..{high}")
    return value


def int_range(low: int, high: int) -> Converter:
    def convert(args: tuple[str, ...]) -> int:
        expect_count(args, 1)
        return parse_int(args[0], low, high)

    return convert


def parse_timer(text: str) -> float:
    if _DECIMAL.fullmatch(text) is None:
        raise ValueProblem(f"timer {echo(text)} is not a number of seconds")
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueProblem(f"timer {echo(text)} must be a non-negative number of seconds")
    if value > TIMER_MAX_S:
        raise ValueProblem(f"timer {echo(text)} is larger than {TIMER_MAX_S:.0f} seconds")
    return round(value, 6)


def timer(args: tuple[str, ...]) -> float:
    expect_count(args, 1)
    return parse_timer(args[0])


def parse_bool(text: str) -> bool:
    word = text.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueProblem(f"{text!r} is not one of on|off|true|false|yes|no")


def flag(args: tuple[str, ...]) -> bool:
    """A switch written bare (`alpha`) or with a boolean (`alpha off`)."""
    expect_count(args, 0, 1)
    return True if not args else parse_bool(args[0])


def string(args: tuple[str, ...]) -> str:
    expect_count(args, 1)
    return args[0]


def words(args: tuple[str, ...]) -> tuple[str, ...]:
    expect_count(args, 1, 1000)
    return args


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def parse_address(text: str) -> str:
    """Canonical text of an IP address (what `ipaddress` prints)."""
    if _CANONICAL_IPV4.fullmatch(text):
        return text  # the common case, without building an ipaddress object
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        raise ValueProblem(f"{echo(text)} is not an IP address") from None


def address(args: tuple[str, ...]) -> str:
    expect_count(args, 1)
    return parse_address(args[0])


def parse_port(text: str, *, allow_zero: bool = False) -> int:
    return parse_int(text, 0 if allow_zero else 1, 65535, "port")


def port(args: tuple[str, ...]) -> int:
    expect_count(args, 1)
    return parse_port(args[0])


def address_and_optional_port(args: tuple[str, ...]) -> tuple[str, int | None]:
    expect_count(args, 1, 2)
    return parse_address(args[0]), (parse_port(args[1], allow_zero=True)
                                    if len(args) == 2 else None)


def script(args: tuple[str, ...]) -> Script:
    """`notify_up "/path arg" [user [group]]` — the command is one (quoted) word."""
    expect_count(args, 1, 3)
    if not args[0].strip():
        raise ValueProblem("script command is empty")
    return Script(args[0], args[1] if len(args) > 1 else None,
                  args[2] if len(args) > 2 else None)


def choice(options: dict[str, Any], what: str) -> Converter:
    def convert(args: tuple[str, ...]) -> Any:
        expect_count(args, 1)
        try:
            return options[args[0]]
        except KeyError:
            names = "|".join(options)
            raise ValueProblem(f"invalid {what} {args[0]!r}; expected one of {names}") from None

    return convert


def netmask(args: tuple[str, ...]) -> str:
    """Persistence granularity: a dotted IPv4 mask or an IPv6 prefix length."""
    expect_count(args, 1)
    text = args[0]
    if text.isdigit():
        return str(parse_int(text, 1, 128, "prefix length"))
    try:
        mask = ipaddress.IPv4Network(f"0.0.0.0/{text}")
    except ValueError:
        raise ValueProblem(f"{echo(text)} is not a netmask") from None
    return str(mask.netmask)


def parse_hex_bytes(text: str, *, allow_wildcard: bool = False) -> str:
    """keepalived's free-form hex: groups split by spaces, odd groups zero-padded.

    Returns normalized lowercase hex (two digits per byte); `x` kept when allowed.
    """
    out: list[str] = []
    for group in text.split():
        digits = group.lower()
        allowed = "0123456789abcdef" + ("x" if allow_wildcard else "")
        if any(c not in allowed for c in digits):
            raise ValueProblem(f"{group!r} is not hexadecimal")
        if len(digits) % 2:
            digits = digits[:-1] + "0" + digits[-1]
        out.append(digits)
    return "".join(out)
