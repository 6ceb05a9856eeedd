"""Parser: the lexer's logical lines → a tree of Statements.

Owns: block structure — a statement is a keyword and its arguments up to the end of the
line or the next brace; a ``{`` on the same line or the next non-empty one opens the
children of the statement before it; ``}`` closes the innermost block — and the errors for
braces that do not balance (but not for blocks left open because a budget stopped the
lexer: ``Diagnostics.stopped``).
Must not: know any keyword (that is keywords.py and loader.py), read files, expand
parameters or includes (lexer.py), or raise: problems go to the Diagnostics collector and
parsing goes on, so one run reports every unbalanced brace.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fastcheck.config.lexer import CLOSE, OPEN, Line, lex_file, lex_text
from fastcheck.errors import Diagnostics, Position


@dataclass(frozen=True, slots=True)
class Statement:
    """One configuration statement; ``children`` is None without a block, () if empty."""

    keyword: str
    args: tuple[str, ...]
    position: Position
    children: tuple[Statement, ...] | None = None


# An open block: its header (None for a stray '{'), where it opened, and the list its
# statement goes to when it closes.
_Header = tuple[str, tuple[str, ...], Position]
_Open = tuple[_Header | None, Position, list[Statement]]


def parse_lines(lines: Iterable[Line], diagnostics: Diagnostics) -> tuple[Statement, ...]:
    """Build the statement tree from logical lines (see the module docstring for rules).

    The tree is hundreds of thousands of objects that all survive: callers that build a
    large one pause the cyclic garbage collector around it (`fastcheck.daemon.gcpolicy`);
    this module never touches the collector.
    """
    return _parse(lines, diagnostics)


def _parse(lines: Iterable[Line], diagnostics: Diagnostics) -> tuple[Statement, ...]:
    root: list[Statement] = []
    children = root                  # where finished statements go
    stack: list[_Open] = []
    pending: _Header | None = None   # last statement, until we know whether '{' follows
    last: Line | None = None
    for line in lines:
        last = line
        tokens = line.tokens
        literal = line.literal
        if CLOSE not in tokens:                 # fast paths for the three common shapes
            if OPEN not in tokens:              # `keyword args…`
                if pending is not None:
                    children.append(Statement(*pending))
                pending = (tokens[0], tokens[1:], Position(line.file, line.line))
                continue
            if tokens.index(OPEN) == len(tokens) - 1 > 0 and not literal:  # `keyword args… {`
                if pending is not None:
                    children.append(Statement(*pending))
                position = Position(line.file, line.line)
                stack.append(((tokens[0], tokens[1:-1], position), position, children))
                children, pending = [], None
                continue
        elif len(tokens) == 1 and stack and not literal:                    # `}`
            if pending is not None:
                children.append(Statement(*pending))
                pending = None
            children = _close(stack.pop(), children)
            continue
        position = Position(line.file, line.line)
        start = 0
        for i, token in enumerate(tokens):
            if token not in (OPEN, CLOSE) or i in literal:
                continue
            if i > start:
                if pending is not None:
                    children.append(Statement(*pending))
                pending = (tokens[start], tokens[start + 1:i], position)
            start = i + 1
            if token == OPEN:
                if pending is None:
                    diagnostics.error(position, "'{' without a statement to open a block for")
                stack.append((pending, position, children))
                children, pending = [], None
                continue
            if pending is not None:
                children.append(Statement(*pending))
                pending = None
            if not stack:
                diagnostics.error(position, "unmatched '}'")
                continue
            children = _close(stack.pop(), children)
        if start < len(tokens):
            if pending is not None:
                children.append(Statement(*pending))
            pending = (tokens[start], tokens[start + 1:], position)
    if pending is not None:
        children.append(Statement(*pending))
    end = f"{last.file}:{last.line}" if last is not None else "the start"
    while stack:
        block = stack.pop()
        header, opened_at, _ = block
        what = f"block '{header[0]}'" if header is not None else "'{'"
        if not diagnostics.stopped:         # else the input was cut short, not the block
            diagnostics.error(header[2] if header is not None else opened_at,
                              f"{what} is never closed (missing '}}' at end of input, {end})")
        children = _close(block, children)
    return tuple(root)


def _close(block: _Open, children: list[Statement]) -> list[Statement]:
    """Finish ``block`` with ``children``; returns the list its parent collects into."""
    header, _, parent = block
    if header is None:
        parent.extend(children)      # a stray '{': keep what it held, already reported
    else:
        parent.append(Statement(header[0], header[1], header[2], tuple(children)))
    return parent


def parse_text(text: str, *, filename: str = "<string>", config_id: str | None = None,
               diagnostics: Diagnostics, base_dir: str | None = None) -> tuple[Statement, ...]:
    """Parse configuration text; ``filename`` and ``base_dir`` are as for ``lex_text``."""
    lines = lex_text(text, filename=filename, config_id=config_id,
                     diagnostics=diagnostics, base_dir=base_dir)
    return parse_lines(lines, diagnostics)


def parse_file(path: str, *, config_id: str | None = None,
               diagnostics: Diagnostics) -> tuple[Statement, ...]:
    """Parse the configuration file at ``path`` with everything it includes."""
    return parse_lines(lex_file(path, config_id=config_id, diagnostics=diagnostics),
                       diagnostics)
