"""The batched non-blocking TCP connect engine, from the compiled twin when available.

Owns: nothing but the choice; re-exports ``TcpConnectEngine`` from ``tcpconnect_c``
(compiled) or ``tcpconnect_py`` (pure), picked by ``_select.load_twin``, plus
``IMPLEMENTATION``.
Must not: add behaviour of its own; both twins own the semantics (see ``tcpconnect_py``).
"""

from typing import TYPE_CHECKING

from fastcheck._ext._select import implementation_of, load_twin

__all__ = ["IMPLEMENTATION", "TcpConnectEngine"]

if TYPE_CHECKING:  # type checkers read the signatures from the pure twin
    from fastcheck._ext.tcpconnect_py import TcpConnectEngine

    IMPLEMENTATION: str
else:
    _twin = load_twin("tcpconnect")
    IMPLEMENTATION = implementation_of(_twin)
    TcpConnectEngine = _twin.TcpConnectEngine
