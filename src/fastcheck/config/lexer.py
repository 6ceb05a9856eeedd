"""Lexer: keepalived configuration text → logical lines of tokens, each with its position.

Owns: everything keepalived does to a configuration before block structure — reading
files, ``#``/``!`` comments, quoting and escapes, the ``include`` family (globs, brace
expansion, include checks, cycle detection), ``@id``/``@^id`` conditional lines,
``$NAME=value`` parameters (multi-line too) with recursive use-time substitution and the
predefined ``_PWD``, ``_INSTANCE``, ``_RANDOM``, ``_HASH`` and ``_BANG``, and the
``~SEQ``/``~SEQx``/``~LST`` line generators.
Must not: know any keyword besides the include family, build the block tree (parser.py),
raise on bad input (every problem goes to the Diagnostics collector and lexing goes on),
or print.
"""

from __future__ import annotations

import glob
import itertools
import os
import random
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from fastcheck.errors import Diagnostics, Position

OPEN = "{"
CLOSE = "}"
INCLUDE_KEYWORDS = frozenset(
    {"include", "includer", "includem", "includew", "includeb", "includea"})

# keepalived's include_check options; "readable" is always on here (unreadable = error).
_MATCH, _WILDCARD, _BRACE = 1, 2, 4
_INCLUDE_CHECKS = {"include": 0, "includer": 0, "includem": _MATCH, "includew": _WILDCARD,
                   "includeb": _BRACE, "includea": _MATCH | _WILDCARD | _BRACE}

# Guards against definitions that expand forever (keepalived itself would loop or overflow).
_MAX_SUBSTITUTIONS = 10_000      # replacements within one line
_MAX_LINE_CHARS = 1 << 20        # length of one line after substitution
_MAX_DEPTH = 64                  # nesting of multi-line / ~SEQ / ~LST expansions
_MAX_GENERATED = 5_000_000       # lines produced by ~SEQ / ~LST in one configuration
_MAX_BRACE_ALTERNATIVES = 4096   # include {a,b}{c,d}… alternatives

_WS = " \t\f\v\r\n"
_NO_LITERALS: frozenset[int] = frozenset()
# A raw line without any of these needs nothing but a whitespace split (the fast path).
_NEEDS_SLOW = re.compile("[#!\"'\\\\$@~\x00-\x08\x0a\x0e-\x1f\x80-\U0010ffff]")
# Longest prefix holding no comment start outside quotes (then: # ! ' " \ or the end).
_SCAN = re.compile(r"""(?:[^"'\\#!]++|\\.|"(?:[^"\\]++|\\.)*+"|'(?:[^'\\]++|\\.)*+')*+""",
                   re.S)
_TOKEN = re.compile(
    r"(?P<ws>[ \t\f\v\r\n]++)|(?P<brace>[{}])"
    r"|(?P<ref>\$\{[A-Za-z_][A-Za-z0-9_]*+[ 0-9]*+\})"
    r"""|"(?P<dq>(?:[^"\\]++|\\.)*+\\?)"?|'(?P<sq>(?:[^'\\]++|\\.)*+\\?)'?"""
    r"""|\\(?P<esc>[\\#!"'{}])|(?P<text>[^ \t\f\v\r\n{}"'\\$]++|[\\$])""", re.S)
_DEFINITION = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*+)[ \t]*=[ \t]*(.*)", re.S)
_REFERENCE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*+)([ 0-9]*+)\}|([A-Za-z_][A-Za-z0-9_]*+)(?=[ \t,)]|\Z))")
_GENERATOR = re.compile(r"~(SEQx?|LST)[ \t]*\(")
_SEQ_NUMBER = re.compile(r"([+-]?(?:0[xX][0-9A-Fa-f]+|(0[0-7]+)|0|[1-9][0-9]*))")
_LST_ITEM = re.compile(r"[ \t]*+(?:\{([^{}]*+)\}|([^,{} \t]++(?:[ \t]++[^,{} \t]++)*+))[ \t]*+")
_LST_ITEMS = re.compile(rf"{_LST_ITEM.pattern}(?:,{_LST_ITEM.pattern})*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAGIC = re.compile(r"[*?[]")
_BLANKS = re.compile(r"[ \t]+")

_Rows = tuple[tuple[str, ...], Iterator[tuple[str, ...]]]   # ~SEQ/~LST: names, values


def default_config_id() -> str:
    """keepalived's default config id: the node name up to the first dot (``uname -n``)."""
    return os.uname().nodename.split(".")[0]


class Line(NamedTuple):
    """One logical line: its tokens and where it was written.

    ``tokens`` holds words with quotes removed and escapes applied, and the braces ``{``
    and ``}`` as tokens of their own; ``literal`` lists the indices of tokens that read
    ``{`` or ``}`` but were quoted or escaped, so are text rather than structure.
    """

    file: str
    line: int
    tokens: tuple[str, ...]
    literal: frozenset[int] = _NO_LITERALS

    @property
    def position(self) -> Position:
        return Position(self.file, self.line)


@dataclass(frozen=True, slots=True)
class _Definition:
    value: str = ""
    lines: tuple[str, ...] | None = None      # set for a multi-line definition
    fn: Callable[[_Frame, list[int], Position], str] | None = None
    max_params: int = 0


# Generated work: (text, line, nesting depth, parameters to set before processing text).
_Work = tuple[str, int, int, tuple[tuple[str, str], ...]]


@dataclass(slots=True, eq=False)
class _Frame:
    """One file being read; ``pending`` holds generated work to do before its next line."""

    file: str
    directory: str
    lines: list[str]
    identity: tuple[int, int] | None
    parent: _Frame | None = None              # the including file (for cycle detection)
    index: int = 0
    pending: list[Iterator[_Work]] = field(default_factory=list)
    def_name: str | None = None               # multi-line definition being collected
    def_lines: list[str] | None = None


def _unquote(text: str) -> str:
    """Inside quotes only an escaped quote is special, as in the keepalived 2.2.7 binary.

    keepalived's man page documents C-style escapes, but the 2.2.7 parser passes quoted
    text through unchanged, and operators rely on that for regexes such as "^OK\\s".
    """
    if "\\" not in text:
        return text
    return text.replace('\\"', '"').replace("\\'", "'")


def tokenize(text: str, *, structural: bool = True) -> tuple[tuple[str, ...], frozenset[int]]:
    """Split one processed line into tokens; returns them and the literal-brace indices.

    With ``structural=False`` braces are ordinary characters (for include patterns).
    """
    tokens: list[str] = []
    literal: set[int] = set()
    parts: list[str] = []
    quoted = False

    def end_word() -> None:
        word = "".join(parts)
        if quoted and word in (OPEN, CLOSE):
            literal.add(len(tokens))
        tokens.append(word)
        parts.clear()

    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "brace" and not structural:
            kind = "text"
        if kind == "ws" or kind == "brace":
            if parts:
                end_word()
                quoted = False
            if kind == "brace":
                tokens.append(m.group())
        elif kind == "dq" or kind == "sq":
            parts.append(_unquote(m[kind]))
            quoted = True
        else:
            parts.append(m["esc"] if kind == "esc" else m.group())
            quoted = quoted or kind == "esc"
    if parts:
        end_word()
    return tuple(tokens), frozenset(literal) if literal else _NO_LITERALS


def brace_expand(pattern: str) -> list[str]:
    """csh-style ``{a,b}`` expansion as glob(3) GLOB_BRACE does; ``{}`` stays literal."""
    if pattern.count("{") > 64:
        raise ValueError("too many braces")
    depth, start = 0, -1
    commas: list[int] = []
    for i, c in enumerate(pattern):
        if c == "{":
            if depth == 0:
                start, commas = i, []
            depth += 1
        elif c == "}" and depth:
            depth -= 1
            if depth == 0:
                if i == start + 1:
                    continue
                bounds = [start, *commas, i]
                head, tail = pattern[:start], pattern[i + 1:]
                out: list[str] = []
                for a, b in itertools.pairwise(bounds):
                    out.extend(brace_expand(head + pattern[a + 1:b] + tail))
                    if len(out) > _MAX_BRACE_ALTERNATIVES:
                        raise ValueError("too many brace alternatives")
                return out
        elif c == "," and depth == 1:
            commas.append(i)
    return [pattern]


def _identity(path: str) -> tuple[int, int]:
    """(device, inode) of a regular file; OSError for anything that is not one."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError("is a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
    return st.st_dev, st.st_ino


def _read(path: str) -> list[str]:
    with open(path, "rb") as fh:
        text = fh.read().decode("utf-8", errors="surrogateescape")
    return text.removeprefix("\ufeff").split("\n")


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


class _Lexer:
    def __init__(self, diagnostics: Diagnostics, config_id: str | None,
                 rng: random.Random | None) -> None:
        self.diag = diagnostics
        self.config_id = default_config_id() if config_id is None else config_id
        self.rng = rng if rng is not None else random.Random()
        self.generated = 0
        self.frames: list[_Frame] = []
        self.defs: dict[str, _Definition] = {
            "_PWD": _Definition(fn=lambda frame, *_: os.path.abspath(frame.directory)),
            "_INSTANCE": _Definition(self.config_id),
            "_RANDOM": _Definition(fn=self._random, max_params=2),
            "_HASH": _Definition("#"),
            "_BANG": _Definition("!"),
        }

    # -- driving ---------------------------------------------------------------------
    def run(self) -> Iterator[Line]:
        frames = self.frames
        needs_slow = _NEEDS_SLOW.search
        while frames:
            frame = frames[-1]
            if frame.pending:
                out = self._from_pending(frame)
                if out is not None:
                    yield out
                continue
            if frame.def_lines is not None and frame.index < len(frame.lines):
                frame.index += 1
                self._continue_definition(frame, frame.lines[frame.index - 1])
                continue
            lines, file = frame.lines, frame.file
            for index in range(frame.index, len(lines)):
                raw = lines[index]
                if needs_slow(raw) is None:          # the fast path: plain words and braces
                    if "{" in raw or "}" in raw:
                        words = raw.replace("{", " { ").replace("}", " } ").split()
                    else:
                        words = raw.split()
                    if not words:
                        continue
                    if words[0] not in INCLUDE_KEYWORDS:
                        yield Line(file, index + 1, tuple(words))
                        continue
                    frame.index = index + 1
                    out = self._deliver(frame, tuple(words), _NO_LITERALS, index + 1, raw)
                else:
                    frame.index = index + 1
                    text = self._decomment(raw, file, index + 1)
                    if not text:
                        continue
                    out = self._process(frame, text, index + 1, 0, from_file=True)
                if out is not None:
                    yield out
                if frame.pending or frame.def_lines is not None or frames[-1] is not frame:
                    break
            else:
                frame.index = len(lines)
                self._end_definition(frame)
                frames.pop()

    def _from_pending(self, frame: _Frame) -> Line | None:
        item = next(frame.pending[-1], None)
        if item is None:
            frame.pending.pop()
            return None
        text, lineno, depth, presets = item
        for name, value in presets:
            self.defs[name] = _Definition(value)
        if not text:
            return None
        return self._process(frame, text, lineno, depth, from_file=False)

    # -- one line --------------------------------------------------------------------
    def _decomment(self, raw: str, file: str, lineno: int) -> str:
        text = raw.strip(_WS)
        end = _SCAN.match(text).end()  # type: ignore[union-attr]
        if end < len(text):
            c = text[end]
            if c == "#" or c == "!":
                text = text[:end].rstrip(_WS)
            elif c != "\\":
                self.diag.error(Position(file, lineno), f"unterminated {c} quote")
        return text

    def _process(self, frame: _Frame, text: str, lineno: int, depth: int, *,
                 from_file: bool) -> Line | None:
        for _ in range(16):
            if text[0] == "@":
                text = self._conditional(text)
                if not text:
                    return None
            if text[0] == "$":
                m = _DEFINITION.fullmatch(text)
                if m is not None:
                    self._define(frame, m[1], m[2], from_file)
                    return None
            elif text[0] == "~" and (generator := _GENERATOR.match(text)):
                self._generator(frame, text, generator, lineno, depth)
                return None
            if "$" not in text:
                break
            new = self._substitute(frame, text, lineno, depth)
            if new == text:
                break
            text = new
            if not text.strip(_WS):
                return None
            if text[0] not in "@$~":
                break
        tokens, literal = tokenize(text)
        return self._deliver(frame, tokens, literal, lineno, text) if tokens else None

    def _conditional(self, text: str) -> str:
        """``@id rest`` / ``@^id rest`` → ``rest`` when it applies here, else ""."""
        negate, m = text.startswith("@^"), _BLANKS.search(text)
        if m is None or (text[2 if negate else 1:m.start()] == self.config_id) == negate:
            return ""
        return text[m.end():]

    def _deliver(self, frame: _Frame, tokens: tuple[str, ...], literal: frozenset[int],
                 lineno: int, text: str) -> Line | None:
        """Emit a tokenized line, or act on it when it is an include (braces are text)."""
        if tokens[0] not in INCLUDE_KEYWORDS:
            return Line(frame.file, lineno, tokens, literal)
        args = tokenize(text, structural=False)[0][1:]
        self._include(frame, tokens[0], args, lineno)
        return None

    # -- parameters ------------------------------------------------------------------
    def _define(self, frame: _Frame, name: str, value: str, from_file: bool) -> None:
        if value.endswith("\\"):
            value = value[:-1].rstrip(" \t")
            if from_file:
                frame.def_name, frame.def_lines = name, [value] if value else []
                return
        self.defs[name] = _Definition(value)

    def _continue_definition(self, frame: _Frame, raw: str) -> None:
        if not raw.rstrip("\r"):
            self._end_definition(frame)         # an empty line ends it, as in keepalived
            return
        text = self._decomment(raw, frame.file, frame.index)
        if not text:
            return                              # blank or comment-only: skipped
        more = text.endswith("\\")
        if more:
            text = text[:-1].rstrip(" \t")
        if text:
            frame.def_lines.append(text)        # type: ignore[union-attr]
        if not more:
            self._end_definition(frame)

    def _end_definition(self, frame: _Frame) -> None:
        if frame.def_name is not None and frame.def_lines is not None:
            lines = tuple(frame.def_lines)
            self.defs[frame.def_name] = _Definition(lines=lines) if lines else _Definition()
        frame.def_name = frame.def_lines = None

    def _random(self, _: _Frame, params: list[int], position: Position) -> str:
        low, high = (params + [0, 32767][len(params):])[:2]
        if len(params) > 2:
            self.diag.warning(position, "${_RANDOM} takes at most two numbers; extra ignored")
        if low > high:
            self.diag.error(position, f"${{_RANDOM {low} {high}}}: MIN is greater than MAX")
            return str(low)
        return str(self.rng.randint(low, high))

    def _substitute(self, frame: _Frame, text: str, lineno: int, depth: int, *,
                    multiline: bool = True) -> str:
        """Replace ``$NAME``/``${NAME}`` recursively; unknown names stay as written."""
        pos, count = text.find("$"), 0
        while 0 <= pos < len(text) - 1:
            m = _REFERENCE.match(text, pos)
            if m is None:
                pos = text.find("$", pos + 1)
                continue
            name, raw_params = m[1] or m[3], m[2] or ""
            params = raw_params.strip(" ")
            definition = self.defs.get(name)
            if definition is None or (params and (not definition.max_params
                                                  or raw_params.endswith(" "))):
                pos = text.find("$", pos + 1)
                continue
            position = Position(frame.file, lineno)
            if definition.lines is not None:
                if m.end() != len(text) or not multiline:
                    self.diag.warning(position, f"multi-line parameter ${name} can only be "
                                      "used at the end of a line; left as written")
                    pos = text.find("$", pos + 1)
                    continue
                if depth >= _MAX_DEPTH:
                    self.diag.error(position, f"parameter ${name} nests too deeply")
                    return text
                value = definition.lines[0]
                frame.pending.append(iter([(line, lineno, depth + 1, ())
                                           for line in definition.lines[1:]]))
            elif definition.fn is not None:
                value = definition.fn(frame, [int(p) for p in params.split()], position)
            else:
                value = definition.value
            text = text[:pos] + value + text[m.end():]
            count += 1
            if count > _MAX_SUBSTITUTIONS or len(text) > _MAX_LINE_CHARS:
                self.diag.error(position, "parameter substitution does not terminate "
                                "(a definition refers to itself?)")
                return text
            if value.lstrip(" \t").startswith("~"):
                break
        return text

    # -- ~SEQ / ~LST -----------------------------------------------------------------
    def _generator(self, frame: _Frame, text: str, m: re.Match[str], lineno: int,
                   depth: int) -> None:
        position = Position(frame.file, lineno)
        close = text.find(")", m.end())
        if close < 0:
            self.diag.error(position, f"~{m[1]} without a closing ')'")
            return
        if depth >= _MAX_DEPTH:
            self.diag.error(position, f"~{m[1]} nests too deeply")
            return
        spec = self._substitute(frame, text[m.end():close], lineno, depth, multiline=False)
        parsed = _parse_lst(spec) if m[1] == "LST" else _parse_seq(spec, m[1] == "SEQx")
        if isinstance(parsed, str):
            self.diag.error(position, f"invalid ~{m[1]}({spec}): {parsed}")
            return
        names, rows = parsed
        rest = text[close + 1:].lstrip(" \t")
        frame.pending.append(self._generate(position, names, rows, rest, depth + 1))

    def _generate(self, position: Position, names: tuple[str, ...],
                  rows: Iterator[tuple[str, ...]], rest: str, depth: int) -> Iterator[_Work]:
        for row in rows:
            self.generated += 1
            if self.generated > _MAX_GENERATED:
                if self.generated == _MAX_GENERATED + 1:
                    self.diag.error(position, f"~SEQ/~LST would generate more than "
                                    f"{_MAX_GENERATED} lines; stopped")
                return
            yield rest, position.line, depth, tuple(zip(names, row, strict=True))

    # -- include ---------------------------------------------------------------------
    def _include(self, frame: _Frame, keyword: str, args: tuple[str, ...],
                 lineno: int) -> None:
        position = Position(frame.file, lineno)
        if len(args) != 1:
            self.diag.error(position, f"{keyword} needs exactly one file name or pattern")
            return
        pattern, checks = args[0], _INCLUDE_CHECKS[keyword]
        try:
            alternatives = brace_expand(pattern)
            found = [_glob(alt, frame.directory) for alt in alternatives]
        except (OSError, ValueError) as exc:
            self.diag.error(position, f"{keyword} '{pattern}': {exc}")
            return
        paths = [path for paths in found for path in paths]
        if not paths:
            if any(_MAGIC.search(alt) for alt in alternatives):
                if checks & _WILDCARD:
                    self.diag.error(position, f"{keyword} '{pattern}' matched no files")
            elif checks & _MATCH:
                self.diag.error(position, f"{keyword} '{pattern}': file not found")
            else:
                self.diag.warning(position, f"{keyword} '{pattern}': file not found")
        elif checks & _BRACE and len(alternatives) > 1:
            for alt, matched in zip(alternatives, found, strict=True):
                if not matched:
                    self.diag.error(position, f"{keyword} '{pattern}': '{alt}' matched "
                                    "no files")
        opened = [self._open(frame, path, position) for path in paths]
        self.frames.extend(f for f in reversed(opened) if f is not None)

    def _open(self, parent: _Frame, path: str, position: Position) -> _Frame | None:
        try:
            identity = _identity(path)
            chain: list[_Frame] = []
            ancestor: _Frame | None = parent
            while ancestor is not None:
                chain.insert(0, ancestor)
                if ancestor.identity == identity:
                    names = [f.file for f in chain] + [ancestor.file]
                    self.diag.error(position, "include cycle: " + " -> ".join(names))
                    return None
                ancestor = ancestor.parent
            lines = _read(path)
        except (OSError, ValueError) as exc:
            self.diag.error(position, f"cannot read included file '{path}': {_reason(exc)}")
            return None
        return _Frame(path, os.path.dirname(path), lines, identity, parent)


def _glob(pattern: str, directory: str) -> list[str]:
    """Files matching one include alternative, relative to the including file's directory."""
    if _MAGIC.search(pattern):
        names = sorted(glob.glob(pattern, root_dir=directory or None))
        paths = [os.path.join(directory, name) for name in names]
        return [path for path in paths if not os.path.isdir(path)]
    path = os.path.join(directory, pattern)
    return [path] if os.path.lexists(path) else []


def _seq_number(text: str) -> int | None:
    """An integer as strtol(…, 0) reads it: 0x… is hexadecimal, 0… octal."""
    m = _SEQ_NUMBER.fullmatch(text)
    return None if m is None else int(m[1], 8 if m[2] else 0)


def _parse_seq(spec: str, hex_output: bool) -> _Rows | str:
    var, *fields = (part.strip(" \t") for part in spec.split(","))
    parsed = [_seq_number(f) for f in fields]
    if not _NAME.match(var):
        return "the variable must be a parameter name"
    numbers = [n for n in parsed if n is not None]
    if not 1 <= len(parsed) <= 3 or len(numbers) != len(parsed):
        return "expected 1 to 3 integers after the variable"
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


def lex_text(text: str, *, filename: str = "<string>", config_id: str | None = None,
             diagnostics: Diagnostics, base_dir: str | None = None,
             rng: random.Random | None = None) -> Iterator[Line]:
    """Lex configuration ``text`` as if read from ``filename``.

    ``base_dir`` is where relative includes and ``${_PWD}`` resolve; by default the
    directory of ``filename`` (the current directory for names like ``<string>``).
    """
    named = not filename.startswith("<")
    if base_dir is None:
        base_dir = os.path.dirname(filename) if named else ""
    try:
        identity = _identity(filename) if named else None
    except (OSError, ValueError):
        identity = None
    lexer = _Lexer(diagnostics, config_id, rng)
    lexer.frames.append(_Frame(filename, base_dir, text.removeprefix("\ufeff").split("\n"),
                               identity))
    return lexer.run()


def lex_file(path: str, *, config_id: str | None = None, diagnostics: Diagnostics,
             rng: random.Random | None = None) -> Iterator[Line]:
    """Lex the configuration file at ``path``; an unreadable file is one error, no lines."""
    try:
        identity, lines = _identity(path), _read(path)
    except (OSError, ValueError) as exc:
        diagnostics.error(None, f"cannot read configuration file '{path}': {_reason(exc)}")
        return iter(())
    lexer = _Lexer(diagnostics, config_id, rng)
    lexer.frames.append(_Frame(path, os.path.dirname(path), lines, identity))
    return lexer.run()
