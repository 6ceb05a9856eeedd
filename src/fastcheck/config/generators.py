"""Generators: keepalived's ``~SEQ``, ``~SEQx`` and ``~LST`` line generators.

Owns: parsing a generator's ``(…)`` specification, turning it into rows of parameter
values, and the work items (the rest of the line, once per row, with the row's values
to set first) that the lexer processes in place of the generator line; plus the guard
against nesting too deeply. Rows are produced lazily, one per work item the lexer takes:
how many lines expansion may produce in all is the lexer's budget (lexer.py).
Must not: read files, strip comments, tokenize or decide what a line is (lexer.py), store
or substitute parameters itself (params.py), raise on bad input (problems go to the
Diagnostics collector), or print.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from fastcheck.config.params import MAX_DEPTH, Parameters, Source, Work
from fastcheck.errors import Diagnostics, Position, clip, echo

# keepalived reads ~SEQ numbers with strtol into a long; so do we, as a range check.
SEQ_MIN, SEQ_MAX = -(2**63), 2**63 - 1
_SEQ_MAX_DIGITS = 22             # significant digits of the longest long (octal); longer
                                 # text is out of range and never passed to int()

GENERATOR = re.compile(r"~(SEQx?|LST)[ \t]*\(")
_SEQ_NUMBER = re.compile(r"([+-]?(?:0[xX][0-9A-Fa-f]+|(0[0-7]+)|0|[1-9][0-9]*))")
_LST_ITEM = re.compile(r"[ \t]*+(?:\{([^{}]*+)\}|([^,{} \t]++(?:[ \t]++[^,{} \t]++)*+))[ \t]*+")
_LST_ITEMS = re.compile(rf"{_LST_ITEM.pattern}(?:,{_LST_ITEM.pattern})*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_Rows = tuple[tuple[str, ...], Iterator[tuple[str, ...]]]   # names, then one row of values each


class Generators:
    """Expands the generator lines of one configuration and counts what they produce."""

    __slots__ = ("_diag", "_params")

    def __init__(self, diagnostics: Diagnostics, params: Parameters) -> None:
        self._diag = diagnostics
        self._params = params

    def start(self, source: Source, text: str, m: re.Match[str], lineno: int,
              depth: int) -> None:
        """Expand ``text``, which ``GENERATOR`` matched as ``m``, onto ``source.pending``."""
        position = Position(source.file, lineno)
        close = text.find(")", m.end())
        if close < 0:
            self._diag.error(position, f"~{m[1]} without a closing ')'")
            return
        if depth >= MAX_DEPTH:
            self._diag.error(position, f"~{m[1]} nests too deeply")
            return
        spec = self._params.substitute(source, text[m.end():close], lineno, depth,
                                       multiline=False)
        if self._diag.stopped:
            return
        parsed = _parse_lst(spec) if m[1] == "LST" else _parse_seq(spec, m[1] == "SEQx")
        if isinstance(parsed, str):
            self._diag.error(position, f"invalid ~{m[1]}({clip(spec)}): {parsed}")
            return
        names, rows = parsed
        rest = text[close + 1:].lstrip(" \t")
        source.pending.append(_generate(names, rows, rest, lineno, depth + 1))


def _generate(names: tuple[str, ...], rows: Iterator[tuple[str, ...]], rest: str,
              lineno: int, depth: int) -> Iterator[Work]:
    for row in rows:
        yield rest, lineno, depth, tuple(zip(names, row, strict=True))


def _seq_number(text: str) -> int | str:
    """An integer as strtol(…, 0) reads it (0x… is hexadecimal, 0… octal), or a problem."""
    m = _SEQ_NUMBER.fullmatch(text)
    if m is None:
        return "expected 1 to 3 integers after the variable"
    value = int(m[1], 8 if m[2] else 0) if len(text.lstrip("+-0xX")) <= _SEQ_MAX_DIGITS \
        else SEQ_MAX + 1
    if not SEQ_MIN <= value <= SEQ_MAX:
        return f"{echo(text)} is out of range {SEQ_MIN}..{SEQ_MAX}"
    return value


def _parse_seq(spec: str, hex_output: bool) -> _Rows | str:
    var, *fields = (part.strip(" \t") for part in spec.split(","))
    if not _NAME.match(var):
        return "the variable must be a parameter name"
    if not 1 <= len(fields) <= 3:
        return "expected 1 to 3 integers after the variable"
    numbers: list[int] = []
    for field in fields:
        number = _seq_number(field)
        if isinstance(number, str):
            return number
        numbers.append(number)
    if len(numbers) == 1:               # keepalived's defaults, including its odd ~SEQ(I, 0)
        start, step, end = (-1 if numbers[0] < 0 else 1), (-1 if numbers[0] < 1 else 1), *numbers
    elif len(numbers) == 2:
        start, end = numbers
        step = 1 if start <= end else -1
    else:
        start, step, end = numbers
        if not step or (start < end and step < 0) or (start > end and step > 0):
            return "the step cannot reach the end"
    if hex_output and (start < 0 or end < 0):
        return "~SEQx is only valid for non-negative numbers"
    fmt = "{:x}" if hex_output else "{:d}"
    return (var,), ((fmt.format(v),) for v in range(start, end + (step > 0 or -1), step))


def _parse_lst(spec: str) -> _Rows | str:
    """``V, a, b`` or ``{V, W}, {a, b}, {c, d}``: the names, then one row per value."""
    if _LST_ITEMS.fullmatch(spec) is None:
        return "expected a name or {names} and then values or {values}, comma separated"
    items = [m[1] if m[1] is not None else m[2] for m in _LST_ITEM.finditer(spec)]
    names, *values = [tuple(part.strip(" \t") for part in i.split(",")) for i in items]
    if not all(_NAME.match(name) for name in names):
        return "the variables must be parameter names"
    if not values:
        return "at least one value is needed"
    if any(len(row) != len(names) for row in values):
        return f"each value needs {len(names)} part(s)"
    return names, iter(values)
