"""Error types and the diagnostics collector.

Owns: how problems a user can cause are represented and formatted (`file:line: message`),
including how much of a user's text a message may repeat (`clip`, `echo`).
Must not: print, exit, or know about any particular configuration keyword.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

ECHO_CHARS = 40  # user text repeated in a message is cut to this many characters


def clip(text: str) -> str:
    """``text`` for a message; long text is cut short and its length given."""
    if len(text) <= ECHO_CHARS:
        return text
    return f"{text[:ECHO_CHARS]}... ({len(text)} characters)"


def echo(text: str) -> str:
    """``text`` quoted for a message, as ``repr`` does; long text is cut as by ``clip``."""
    if len(text) <= ECHO_CHARS:
        return repr(text)
    return f"{text[:ECHO_CHARS]!r}... ({len(text)} characters)"


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where something was written: a file name and a 1-based line number."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class Severity(enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One message about a configuration, tied to where it was written when known."""

    severity: Severity
    message: str
    position: Position | None = None

    def __str__(self) -> str:
        where = f"{self.position}: " if self.position is not None else ""
        prefix = "" if self.severity is Severity.ERROR else f"{self.severity.value}: "
        return f"{where}{prefix}{self.message}"


class FastcheckError(Exception):
    """Base class of every error fastcheck reports to a user without a traceback."""


class ConfigError(FastcheckError):
    """A configuration could not be loaded; carries every error found, not just the first."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic | str,
                 position: Position | None = None) -> None:
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(Severity.ERROR, diagnostics, position)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    @property
    def position(self) -> Position | None:
        return self.diagnostics[0].position if self.diagnostics else None


class ProbeError(FastcheckError):
    """A probe could not be set up (bad target, missing privilege); not a check failure."""


class IpvsError(FastcheckError):
    """The kernel refused an IPVS operation; names the operation and the object."""


@dataclass(slots=True)
class Diagnostics:
    """Collects errors, warnings and notices while a configuration is read.

    Loading never stops at the first problem: every stage appends here, and the caller
    decides at the end (``raise_if_errors``) whether the result may be used.

    ``stopped`` is set by ``stop``: a limit cut reading short, so what was read is
    incomplete and later stages must neither go on reading nor report on the rest.
    """

    items: list[Diagnostic] = field(default_factory=list)
    strict: bool = False
    stopped: bool = False

    def error(self, position: Position | None, message: str) -> None:
        self.items.append(Diagnostic(Severity.ERROR, message, position))

    def warning(self, position: Position | None, message: str) -> None:
        severity = Severity.ERROR if self.strict else Severity.WARNING
        self.items.append(Diagnostic(severity, message, position))

    def stop(self, position: Position | None, message: str) -> None:
        """An error after which the input is not read any further (a limit was hit)."""
        self.error(position, message)
        self.stopped = True

    def info(self, position: Position | None, message: str) -> None:
        self.items.append(Diagnostic(Severity.INFO, message, position))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.WARNING]

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.items)

    def raise_if_errors(self) -> None:
        if self.has_errors:
            raise ConfigError(self.errors)
