"""ICMP/ICMPv6 echo over one shared raw socket, from the compiled twin when available.

Owns: nothing but the choice; re-exports the API of ``icmp_c`` (compiled) or ``icmp_py``
(pure), picked by ``_select.load_twin``, plus ``IMPLEMENTATION``.
Must not: add behaviour of its own; both twins own the semantics (see ``icmp_py``).
"""

from typing import TYPE_CHECKING

from fastcheck._ext._select import implementation_of, load_twin

__all__ = ["IMPLEMENTATION", "IcmpEngine", "parse_icmp"]

if TYPE_CHECKING:  # type checkers read the signatures from the pure twin
    from fastcheck._ext.icmp_py import IcmpEngine, parse_icmp

    IMPLEMENTATION: str
else:
    _twin = load_twin("icmp")
    IMPLEMENTATION = implementation_of(_twin)
    IcmpEngine = _twin.IcmpEngine
    parse_icmp = _twin.parse_icmp
