# cython: language_level=3
"""C-level API of the compiled checksum twin, for other compiled twins to ``cimport``.

Owns: the declarations only; the definitions (and their rules) live in ``checksum_c.pyx``.
Must not: declare anything the pure twin cannot do, or change the checksum semantics.
Both functions are ``noexcept nogil`` and work on borrowed raw bytes.
"""

from libc.stdint cimport uint8_t, uint16_t

# RFC 1071 checksum of size bytes at p: the value to store in a header (0 when the
# message already carries a correct checksum).
cdef uint16_t _checksum(const uint8_t *p, Py_ssize_t size) noexcept nogil

# True, with ident/seq filled in, for a well-formed echo reply (IPv4: p starts with the
# IP header and the ICMP checksum must verify; IPv6: p starts with the ICMPv6 header).
cdef bint _parse(const uint8_t *p, Py_ssize_t size, bint ipv6,
                 uint16_t *ident, uint16_t *seq) noexcept nogil
