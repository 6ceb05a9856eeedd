# cython: language_level=3
"""The C names the compiled ICMP twin (``icmp_c.pyx``) uses, cimported from ``includes_c``.

Owns: nothing but this list (the declarations live in ``includes_c.pxd``).
Must not: hold code; ``icmp_c.pyx`` owns the behaviour (rules: ``icmp_py``).
"""

from fastcheck._ext.includes_c cimport (
    AF_INET, AF_INET6, MSG_DONTWAIT, inet_pton, iovec, mmsghdr, recvmmsg, sendto, sockaddr,
    sockaddr_in, sockaddr_in6, socklen_t,
)
