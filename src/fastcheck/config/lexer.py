"""Lexer: keepalived configuration text → logical lines of tokens, each with its position.

Owns: everything keepalived does to a configuration before block structure — reading
files, the line loop (including the continuation lines of multi-line definitions and the
work that parameters and generators queue), ``#``/``!`` comments, quoting and escapes,
tokenizing, the ``include`` family (globs, brace expansion, include checks, cycle
detection) and ``@id``/``@^id`` conditional lines; it decides what each line is and hands
``$NAME=value`` definitions and substitution to params.py and ``~SEQ``/``~SEQx``/``~LST``
generators to generators.py. It also owns one configuration's reading budgets (files
included, lines and bytes read, lines and characters made by expansion): going over one
is a single error (``Diagnostics.stop``) after which nothing more is read.
Must not: know any keyword besides the include family, store or substitute parameters
itself (params.py), parse generator specifications (generators.py), build the block tree
(parser.py), raise on bad input (every problem goes to the Diagnostics collector and lexing
goes on), or print.
"""

from __future__ import annotations

import glob
import itertools
import os
import random
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from fastcheck.config.generators import GENERATOR, Generators
from fastcheck.config.params import DEFINITION, Collecting, Parameters, Work
from fastcheck.errors import Diagnostics, Position, echo

OPEN = "{"
CLOSE = "}"
INCLUDE_KEYWORDS = frozenset(
    {"include", "includer", "includem", "includew", "includeb", "includea"})

# keepalived's include_check options; "readable" is always on here (unreadable = error).
_MATCH, _WILDCARD, _BRACE = 1, 2, 4
_INCLUDE_CHECKS = {"include": 0, "includer": 0, "includem": _MATCH, "includew": _WILDCARD,
                   "includeb": _BRACE, "includea": _MATCH | _WILDCARD | _BRACE}

_MAX_BRACE_ALTERNATIVES = 4096   # include {a,b}{c,d}… alternatives
_MAX_BRACE_WORK = 1 << 20        # characters brace expansion may scan for one include
_MAX_PATTERN_CHARS = 4096        # an include name or pattern (Linux's PATH_MAX)

# Budgets of one configuration. keepalived (lib/parser.c) has none of these: a mistake such
# as an include tree that fans out, or a generator or parameter that multiplies, would
# make it read forever or run out of memory. Here the first budget exceeded is one error
# at the line that exceeded it, and reading stops there, so bounding time and memory.
# conf/large-farm.conf (10,000 real servers) reads 1 file of 61 lines and expands to
# 91,600 lines, 178,000 words and 1.0 million characters: the expansion budgets leave room
# for four to five times that (40,000 real servers written the same way) while a runaway
# generator is stopped within seconds and a few hundred MB; the reading budgets are ten
# times any farm we know of.
MAX_INCLUDED_FILES = 10_000      # files opened by include; a file included twice counts 2
MAX_INCLUDE_DEPTH = 100          # includes within includes
MAX_LINES_READ = 10_000_000      # lines of all files read, the main file's included
MAX_BYTES_READ = 256 << 20       # bytes of all files read, the main file's included
MAX_EXPANDED_LINES = 400_000     # lines made by ~SEQ/~LST rows and multi-line parameters
MAX_EXPANDED_TOKENS = 1_000_000  # tokens of those lines and of lines changed by substitution
MAX_EXPANDED_CHARS = 16 << 20    # characters of those lines and added by substitution

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
_MAGIC = re.compile(r"[*?[]")
_BLANKS = re.compile(r"[ \t]+")


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


@dataclass(slots=True, eq=False)
class _Frame:
    """One file being read; ``pending`` holds generated work to do before its next line."""

    file: str
    directory: str
    lines: list[str]
    identity: tuple[int, int] | None
    parent: _Frame | None = None              # the including file (for cycle detection)
    depth: int = 0                            # how many includes deep this file is
    index: int = 0
    pending: list[Iterator[Work]] = field(default_factory=list)
    collecting: Collecting | None = None      # multi-line definition being collected


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
    return _brace_expand(pattern, [_MAX_BRACE_WORK])


def _brace_expand(pattern: str, work: list[int]) -> list[str]:
    """``brace_expand``, charging the characters it scans to ``work[0]``."""
    work[0] -= len(pattern)
    if work[0] < 0:
        raise ValueError("brace expansion is too large")
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
                    out.extend(_brace_expand(head + pattern[a + 1:b] + tail, work))
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


_READ_CHUNK = 1 << 20


def _read(path: str, max_bytes: int) -> tuple[list[str], int] | None:
    """The lines of ``path`` and its size; None if it is larger than ``max_bytes``."""
    # In chunks: read(max_bytes + 1) would allocate the whole budget (256 MiB) up front
    # for every file, past a reload reader's memory ceiling and slow for many files.
    chunks: list[bytes] = []
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(min(_READ_CHUNK, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                return None
    data = b"".join(chunks)
    text = data.decode("utf-8", errors="surrogateescape")
    return text.removeprefix("\ufeff").split("\n"), len(data)


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


class _Lexer:
    def __init__(self, diagnostics: Diagnostics, config_id: str | None,
                 rng: random.Random | None) -> None:
        self.diag = diagnostics
        self.config_id = default_config_id() if config_id is None else config_id
        self.params = Parameters(diagnostics, self.config_id,
                                 rng if rng is not None else random.Random())
        self.generators = Generators(diagnostics, self.params)
        self.frames: list[_Frame] = []
        self.included = 0                  # what this configuration used of its budgets
        self.lines_read = 0
        self.bytes_read = 0
        self.expanded_lines = 0
        self.expanded_tokens = 0
        self.expanded_chars = 0

    def start(self, file: str, directory: str, identity: tuple[int, int] | None,
              lines: list[str], size: int) -> Iterator[Line]:
        """Lex the main file, whose ``lines`` (``size`` bytes) the caller read."""
        what = "configuration" if file.startswith("<") else f"configuration file '{file}'"
        if self._charge_read(None, what, len(lines), size):
            self.frames.append(_Frame(file, directory, lines, identity))
        return self.run()

    # -- driving ---------------------------------------------------------------------
    def run(self) -> Iterator[Line]:
        frames = self.frames
        diag = self.diag
        needs_slow = _NEEDS_SLOW.search
        while frames and not diag.stopped:
            frame = frames[-1]
            if frame.pending:
                out = self._from_pending(frame)
                if out is not None:
                    yield out
                continue
            if (collecting := frame.collecting) is not None and frame.index < len(frame.lines):
                frame.index += 1
                self._continue_definition(frame, collecting, frame.lines[frame.index - 1])
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
                if frame.pending or frame.collecting is not None or diag.stopped or \
                        frames[-1] is not frame:
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
        self.expanded_lines += 1
        if self.expanded_lines > MAX_EXPANDED_LINES:
            self.diag.stop(Position(frame.file, lineno), "~SEQ/~LST and multi-line parameters "
                           f"expand to more than {MAX_EXPANDED_LINES} lines in this "
                           "configuration; stopped")
            return None
        if not self._charge_expanded(frame, lineno, len(text)):
            return None
        if presets:
            self.params.assign(presets)
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
        made = not from_file                    # by expansion, so charged to its budget
        for _ in range(16):
            if text[0] == "@":
                text = self._conditional(text)
                if not text:
                    return None
            if text[0] == "$":
                m = DEFINITION.fullmatch(text)
                if m is not None:
                    collecting = self.params.define(m[1], m[2], from_file=from_file)
                    if collecting is not None:
                        frame.collecting = collecting
                    return None
            elif text[0] == "~" and (generator := GENERATOR.match(text)):
                self.generators.start(frame, text, generator, lineno, depth)
                return None
            if "$" not in text:
                break
            new = self.params.substitute(frame, text, lineno, depth)
            if self.diag.stopped or (len(new) > len(text) and
                                     not self._charge_expanded(frame, lineno,
                                                               len(new) - len(text))):
                return None
            if new == text:
                break
            text, made = new, True
            if not text.strip(_WS):
                return None
            if text[0] not in "@$~":
                break
        if _NEEDS_SLOW.search(text) is None:      # plain words and braces, as in run()
            tokens = tuple(text.replace("{", " { ").replace("}", " } ").split()
                           if "{" in text or "}" in text else text.split())
            literal = _NO_LITERALS
        else:
            tokens, literal = tokenize(text)
        if made:
            self.expanded_tokens += len(tokens)
            if self.expanded_tokens > MAX_EXPANDED_TOKENS:
                self.diag.stop(Position(frame.file, lineno), "~SEQ/~LST and parameters expand "
                               f"to more than {MAX_EXPANDED_TOKENS} words in this "
                               "configuration; stopped")
                return None
        return self._deliver(frame, tokens, literal, lineno, text) if tokens else None

    def _charge_expanded(self, frame: _Frame, lineno: int, chars: int) -> bool:
        """Count ``chars`` characters made by expansion; False (stopped) when over budget."""
        self.expanded_chars += chars
        if self.expanded_chars <= MAX_EXPANDED_CHARS:
            return True
        self.diag.stop(Position(frame.file, lineno), "~SEQ/~LST and parameters expand to "
                       f"more than {MAX_EXPANDED_CHARS} characters in this configuration; "
                       "stopped")
        return False

    def _charge_read(self, position: Position | None, what: str, lines: int,
                     size: int) -> bool:
        """Count a file read; False (stopped) when over this configuration's budget."""
        self.lines_read += lines
        self.bytes_read += size
        if self.lines_read > MAX_LINES_READ:
            self.diag.stop(position, f"{what}: more than {MAX_LINES_READ} lines read in "
                           "this configuration; stopped")
            return False
        if self.bytes_read > MAX_BYTES_READ:
            self.diag.stop(position, f"{what}: more than {MAX_BYTES_READ} bytes read in "
                           "this configuration; stopped")
            return False
        return True

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

    # -- multi-line definitions ------------------------------------------------------
    def _continue_definition(self, frame: _Frame, collecting: Collecting, raw: str) -> None:
        if not raw.rstrip("\r"):
            self._end_definition(frame)         # an empty line ends it, as in keepalived
            return
        text = self._decomment(raw, frame.file, frame.index)
        if not text:
            return                              # blank or comment-only: skipped
        if not self.params.extend(collecting, text):
            self._end_definition(frame)

    def _end_definition(self, frame: _Frame) -> None:
        if frame.collecting is not None:
            self.params.finish(frame.collecting)
        frame.collecting = None

    # -- include ---------------------------------------------------------------------
    def _include(self, frame: _Frame, keyword: str, args: tuple[str, ...],
                 lineno: int) -> None:
        position = Position(frame.file, lineno)
        if len(args) != 1:
            self.diag.error(position, f"{keyword} needs exactly one file name or pattern")
            return
        pattern, checks = args[0], _INCLUDE_CHECKS[keyword]
        if len(pattern) > _MAX_PATTERN_CHARS:
            self.diag.error(position, f"{keyword} {echo(pattern)}: longer than "
                            f"{_MAX_PATTERN_CHARS} characters")
            return
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
        opened: list[_Frame] = []
        for path in paths:
            child = self._open(frame, path, position, f"{keyword} '{pattern}'")
            if self.diag.stopped:
                return
            if child is not None:
                opened.append(child)
        self.frames.extend(reversed(opened))

    def _open(self, parent: _Frame, path: str, position: Position,
              what: str) -> _Frame | None:
        if self.included >= MAX_INCLUDED_FILES:
            self.diag.stop(position, f"{what}: more than {MAX_INCLUDED_FILES} files "
                           "included in this configuration; stopped")
            return None
        if parent.depth >= MAX_INCLUDE_DEPTH:
            self.diag.stop(position, f"{what}: includes nest more than "
                           f"{MAX_INCLUDE_DEPTH} deep; stopped")
            return None
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
            self.included += 1
            read = _read(path, MAX_BYTES_READ - self.bytes_read)
        except (OSError, ValueError) as exc:
            self.diag.error(position, f"cannot read included file '{path}': {_reason(exc)}")
            return None
        lines, size = read if read is not None else ([], MAX_BYTES_READ + 1)
        if not self._charge_read(position, what, len(lines), size):
            return None
        return _Frame(path, os.path.dirname(path), lines, identity, parent, parent.depth + 1)


def _glob(pattern: str, directory: str) -> list[str]:
    """Files matching one include alternative, relative to the including file's directory."""
    if _MAGIC.search(pattern):
        names = sorted(glob.glob(pattern, root_dir=directory or None))
        paths = [os.path.join(directory, name) for name in names]
        return [path for path in paths if not os.path.isdir(path)]
    path = os.path.join(directory, pattern)
    return [path] if os.path.lexists(path) else []


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
    lines = text.removeprefix("\ufeff").split("\n")
    return _Lexer(diagnostics, config_id, rng).start(filename, base_dir, identity, lines,
                                                      len(text))


def lex_file(path: str, *, config_id: str | None = None, diagnostics: Diagnostics,
             rng: random.Random | None = None) -> Iterator[Line]:
    """Lex the configuration file at ``path``; an unreadable file is one error, no lines."""
    try:
        identity, read = _identity(path), _read(path, MAX_BYTES_READ)
    except (OSError, ValueError) as exc:
        diagnostics.error(None, f"cannot read configuration file '{path}': {_reason(exc)}")
        return iter(())
    lines, size = read if read is not None else ([], MAX_BYTES_READ + 1)
    return _Lexer(diagnostics, config_id, rng).start(path, os.path.dirname(path), identity,
                                                      lines, size)
