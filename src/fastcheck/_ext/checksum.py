"""ICMP echo packets and the RFC 1071 checksum, from the compiled twin when available.

Owns: nothing but the choice; re-exports the API of ``checksum_c`` (compiled) or
``checksum_py`` (pure), picked by ``_select.load_twin``, plus ``IMPLEMENTATION``.
Must not: add behaviour of its own; both twins own the semantics (see ``checksum_py``).
"""

from typing import TYPE_CHECKING

from fastcheck._ext._select import implementation_of, load_twin

__all__ = [
    "IMPLEMENTATION",
    "build_echo_request",
    "internet_checksum",
    "parse_echo_replies",
    "parse_echo_reply",
]

if TYPE_CHECKING:  # type checkers read the signatures from the pure twin
    from fastcheck._ext.checksum_py import (
        build_echo_request,
        internet_checksum,
        parse_echo_replies,
        parse_echo_reply,
    )

    IMPLEMENTATION: str
else:
    _twin = load_twin("checksum")
    IMPLEMENTATION = implementation_of(_twin)
    build_echo_request = _twin.build_echo_request
    internet_checksum = _twin.internet_checksum
    parse_echo_replies = _twin.parse_echo_replies
    parse_echo_reply = _twin.parse_echo_reply
