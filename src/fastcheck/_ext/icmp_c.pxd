# cython: language_level=3
"""C declarations the compiled ICMP twin (``icmp_c.pyx``) needs from the C library.

Owns: the Linux socket, address and batch-receive declarations, kept in one place.
Must not: hold code; ``icmp_c.pyx`` owns the behaviour (rules: ``icmp_py``).
``recvmmsg`` needs ``_GNU_SOURCE``, which Python.h (included first) defines.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from posix.time cimport timespec


cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    enum:
        AF_INET
        AF_INET6
        MSG_DONTWAIT

    ssize_t sendto(int fd, const void *buf, size_t size, int flags,
                   const sockaddr *address, socklen_t address_len)
    int recvmmsg(int fd, mmsghdr *vector, unsigned int vlen, int flags, timespec *timeout)


cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr

    struct in6_addr:
        uint8_t s6_addr[16]

    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr

    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id


cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)
