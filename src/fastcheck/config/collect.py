"""Collects the keywords of one block through a keywords.py table.

Owns: unknown-keyword, block-shape and argument errors for a single block, the "set
twice" warning, and the warnings and notices for keywords keepalived ignores or
deprecates (their reasons are in keywords.py). Must not: resolve defaults or look outside
the block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastcheck.config import keywords as k
from fastcheck.config import values as v
from fastcheck.config.parser import Statement
from fastcheck.errors import Diagnostics, Position


@dataclass(slots=True)
class Fields:
    """The collected keywords of one block: converted values and where each was set."""

    values: dict[str, Any] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    blocks: dict[str, list[Statement]] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


def collect(statements: tuple[Statement, ...], table: dict[str, k.Kw], context: str,
            diags: Diagnostics) -> Fields:
    fields = Fields()
    for st in statements:
        kw = table.get(st.keyword)
        if kw is None:
            diags.error(st.position, f"unknown keyword '{st.keyword}' in {context}")
            continue
        if kw.ignored is not None:
            diags.warning(st.position, f"'{st.keyword}' is ignored in {context}: {kw.ignored}")
            continue
        if kw.notice is not None:
            diags.info(st.position, kw.notice)
        if kw.block is not None:
            if st.children is None and kw.block != "list":
                diags.error(st.position, f"'{st.keyword}' needs a {{ }} block")
                continue
            fields.blocks.setdefault(kw.field, []).append(st)
            continue
        if st.children is not None:
            diags.error(st.position, f"'{st.keyword}' does not take a {{ }} block")
            continue
        assert kw.convert is not None
        try:
            value = kw.convert(st.args)
        except v.ValueProblem as problem:
            diags.error(st.position, f"{st.keyword}: {problem}")
            continue
        if kw.field in fields.values and not kw.repeat:
            earlier = fields.positions[kw.field]
            diags.warning(st.position, f"'{st.keyword}' set again (first at {earlier}); "
                                       "the last one is used")
        fields.values[kw.field] = value
        fields.positions[kw.field] = st.position
    return fields
