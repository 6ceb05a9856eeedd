"""Parameters: keepalived's ``$NAME=value`` definitions and their use-time substitution.

Owns: the table of definitions in force while one configuration is lexed (one
``Parameters`` per lexer run; nothing at module level), single- and multi-line
definitions, recursive ``$NAME``/``${NAME}`` substitution with its termination guards,
and the predefined ``_PWD``, ``_INSTANCE``, ``_RANDOM``, ``_HASH`` and ``_BANG``.
Must not: read files, strip comments, tokenize or decide what a line is (lexer.py), expand
``~SEQ``/``~LST`` (generators.py), raise on bad input (problems go to the Diagnostics
collector), or print.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from fastcheck.errors import Diagnostics, Position

# Guards against definitions that expand forever (keepalived itself would loop or overflow).
MAX_DEPTH = 64                   # nesting of multi-line / ~SEQ / ~LST expansions
_MAX_SUBSTITUTIONS = 10_000      # replacements within one line
_MAX_LINE_CHARS = 1 << 20        # length of one line after substitution
# …and against many lines that each stay just inside those: the work of all of one
# configuration's substitutions (conf/large-farm.conf makes 35,400 replacements, copying
# 1.0 million characters). Each replacement copies its line, so the two bound the time:
# about a second each at worst. Going over either stops reading (Diagnostics.stop).
MAX_TOTAL_SUBSTITUTIONS = 1_000_000
MAX_TOTAL_COPIED = 1 << 28       # characters
_MAX_PARAM_DIGITS = 18           # a ${NAME 1 2} number; longer may not fit keepalived's long

DEFINITION = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*+)[ \t]*=[ \t]*(.*)", re.S)
_REFERENCE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*+)([ 0-9]*+)\}|([A-Za-z_][A-Za-z0-9_]*+)(?=[ \t,)]|\Z))")

# Generated work: (text, line, nesting depth, parameters to set before processing text).
Work = tuple[str, int, int, tuple[tuple[str, str], ...]]


class Source(Protocol):
    """What substitution needs of the file being read (the lexer's frame)."""

    file: str
    directory: str                      # where ``${_PWD}`` points
    pending: list[Iterator[Work]]       # the rest of a multi-line parameter goes here


@dataclass(frozen=True, slots=True)
class _Definition:
    value: str = ""
    lines: tuple[str, ...] | None = None      # set for a multi-line definition
    fn: Callable[[Source, list[int], Position], str] | None = None
    max_params: int = 0


@dataclass(slots=True, eq=False)
class Collecting:
    """A multi-line definition whose continuation lines are still being read."""

    name: str
    lines: list[str]


class Parameters:
    """The definitions in force while one configuration is lexed."""

    __slots__ = ("_copied", "_defs", "_diag", "_rng", "_substitutions")

    def __init__(self, diagnostics: Diagnostics, config_id: str,
                 rng: random.Random) -> None:
        self._diag = diagnostics
        self._rng = rng
        self._substitutions = 0              # totals for this configuration
        self._copied = 0
        self._defs: dict[str, _Definition] = {
            "_PWD": _Definition(fn=lambda source, *_: os.path.abspath(source.directory)),
            "_INSTANCE": _Definition(config_id),
            "_RANDOM": _Definition(fn=self._random, max_params=2),
            "_HASH": _Definition("#"),
            "_BANG": _Definition("!"),
        }

    # -- definitions -----------------------------------------------------------------
    def assign(self, presets: Iterable[tuple[str, str]]) -> None:
        """Set plain values (a ``~SEQ``/``~LST`` row) as if each were ``$NAME=value``."""
        for name, value in presets:
            self._defs[name] = _Definition(value)

    def define(self, name: str, value: str, *, from_file: bool) -> Collecting | None:
        """``$NAME=value``; a value ending in ``\\`` read from a file starts collecting."""
        if value.endswith("\\"):
            value = value[:-1].rstrip(" \t")
            if from_file:
                return Collecting(name, [value] if value else [])
        self._defs[name] = _Definition(value)
        return None

    @staticmethod
    def extend(collecting: Collecting, text: str) -> bool:
        """Add one decommented, non-blank continuation line; True if more lines follow."""
        more = text.endswith("\\")
        if more:
            text = text[:-1].rstrip(" \t")
        if text:
            collecting.lines.append(text)
        return more

    def finish(self, collecting: Collecting) -> None:
        """End a multi-line definition; with no lines at all it defines an empty value."""
        lines = tuple(collecting.lines)
        self._defs[collecting.name] = _Definition(lines=lines) if lines else _Definition()

    def _random(self, _: Source, params: list[int], position: Position) -> str:
        low, high = (params + [0, 32767][len(params):])[:2]
        if len(params) > 2:
            self._diag.warning(position, "${_RANDOM} takes at most two numbers; extra ignored")
        if low > high:
            self._diag.error(position, f"${{_RANDOM {low} {high}}}: MIN is greater than MAX")
            return str(low)
        return str(self._rng.randint(low, high))

    # -- use -------------------------------------------------------------------------
    def substitute(self, source: Source, text: str, lineno: int, depth: int, *,
                   multiline: bool = True) -> str:
        """Replace ``$NAME``/``${NAME}`` recursively; unknown names stay as written.

        A multi-line parameter (only at the end of the line, and only when ``multiline``)
        becomes its first line here; the rest is pushed onto ``source.pending``.
        Going over this configuration's total budget stops reading (``Diagnostics.stop``).
        """
        pos, count = text.find("$"), 0
        while 0 <= pos < len(text) - 1:
            m = _REFERENCE.match(text, pos)
            if m is None:
                pos = text.find("$", pos + 1)
                continue
            name, raw_params = m[1] or m[3], m[2] or ""
            params = raw_params.strip(" ")
            definition = self._defs.get(name)
            if definition is None or (params and (not definition.max_params
                                                  or raw_params.endswith(" "))):
                pos = text.find("$", pos + 1)
                continue
            position = Position(source.file, lineno)
            if definition.lines is not None:
                if m.end() != len(text) or not multiline:
                    self._diag.warning(position, f"multi-line parameter ${name} can only be "
                                       "used at the end of a line; left as written")
                    pos = text.find("$", pos + 1)
                    continue
                if depth >= MAX_DEPTH:
                    self._diag.error(position, f"parameter ${name} nests too deeply")
                    return text
                value = definition.lines[0]
                source.pending.append((line, lineno, depth + 1, ())
                                      for line in itertools.islice(definition.lines, 1, None))
            elif definition.fn is not None:
                numbers = params.split()
                if any(len(n.lstrip("0")) > _MAX_PARAM_DIGITS for n in numbers):
                    self._diag.error(position, f"${{{name}}}: a number of more than "
                                     f"{_MAX_PARAM_DIGITS} digits; left as written")
                    pos = text.find("$", pos + 1)
                    continue
                value = definition.fn(source, [int(n.lstrip("0") or "0") for n in numbers],
                                      position)
            else:
                value = definition.value
            text = text[:pos] + value + text[m.end():]
            count += 1
            self._substitutions += 1
            self._copied += len(text)
            if count > _MAX_SUBSTITUTIONS or len(text) > _MAX_LINE_CHARS:
                self._diag.error(position, "parameter substitution does not terminate "
                                 "(a definition refers to itself?)")
                return text
            if self._substitutions > MAX_TOTAL_SUBSTITUTIONS or \
                    self._copied > MAX_TOTAL_COPIED:
                self._diag.stop(position, "parameter substitution in this configuration "
                                f"exceeds {MAX_TOTAL_SUBSTITUTIONS} replacements or "
                                f"{MAX_TOTAL_COPIED} characters; stopped")
                return text
            if value.lstrip(" \t").startswith("~"):
                break
        return text
