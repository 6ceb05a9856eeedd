"""Batched TCP request/response exchanges (HTTP_GET's hot path), from the compiled twin
when available.

Owns: nothing but the choice; re-exports ``ExchangeEngine`` and the stage constants from
``exchange_c`` (compiled) or ``exchange_py`` (pure), picked by ``_select.load_twin``, plus
``IMPLEMENTATION``.
Must not: add behaviour of its own; both twins own the semantics (see ``exchange_py``).
"""

from typing import TYPE_CHECKING

from fastcheck._ext._select import implementation_of, load_twin

__all__ = ["CONNECTED", "CONNECTING", "IMPLEMENTATION", "ExchangeEngine"]

if TYPE_CHECKING:  # type checkers read the signatures from the pure twin
    from fastcheck._ext.exchange_py import CONNECTED, CONNECTING, ExchangeEngine

    IMPLEMENTATION: str
else:
    _twin = load_twin("exchange")
    IMPLEMENTATION = implementation_of(_twin)
    ExchangeEngine = _twin.ExchangeEngine
    CONNECTING = _twin.CONNECTING
    CONNECTED = _twin.CONNECTED
