# cython: language_level=3
"""C declarations the compiled twins need from libc and Linux, kept in one place.

Owns: the socket, address, epoll, eventfd and batch-receive names (Cython ships none of
them) that ``tcpconnect_c``, ``exchange_c``, ``icmp_c`` and ``sockopts_c`` cimport, as
uvloop's ``includes/*.pxd`` do.
Must not: hold code, or be compiled on its own (there is no ``includes_c.pyx``).
``recvmmsg`` needs ``_GNU_SOURCE``, which Python.h (included first) defines.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
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

    struct linger:
        int l_onoff
        int l_linger

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
        SOCK_STREAM
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        SOL_SOCKET
        SO_ERROR
        SO_LINGER
        SO_REUSEADDR
        MSG_DONTWAIT
        MSG_NOSIGNAL

    int socket(int domain, int type, int protocol)
    int bind(int fd, const sockaddr *addr, socklen_t len)
    int connect(int fd, const sockaddr *addr, socklen_t len)
    int getsockopt(int fd, int level, int name, void *value, socklen_t *len)
    int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
    ssize_t send(int fd, const void *buf, size_t len, int flags)
    ssize_t recv(int fd, void *buf, size_t len, int flags)
    ssize_t sendto(int fd, const void *buf, size_t size, int flags,
                   const sockaddr *address, socklen_t address_len)
    int recvmmsg(int fd, mmsghdr *vector, unsigned int vlen, int flags, timespec *timeout)


cdef extern from "<netinet/in.h>" nogil:
    enum:
        IPPROTO_IP

    struct in_addr:
        uint32_t s_addr

    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr

    struct in6_addr:
        uint8_t s6_addr[16]

    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

    uint16_t htons(uint16_t value)


cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int family, const char *text, void *out)


cdef extern from "<sys/epoll.h>" nogil:
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLLRDHUP
        EPOLLET
        EPOLLONESHOT
        EPOLL_CLOEXEC
        EPOLL_CTL_ADD
        EPOLL_CTL_DEL

    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64

    struct epoll_event:
        uint32_t events
        epoll_data_t data

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)


cdef extern from "<sys/eventfd.h>" nogil:
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC

    int eventfd(unsigned int initval, int flags)


# Socket options older C headers may lack; the values are the Linux ABI.
cdef extern from *:
    """
    #include <sys/socket.h>
    #include <netinet/in.h>
    #ifndef SO_BINDTODEVICE
    #define SO_BINDTODEVICE 25
    #endif
    #ifndef SO_MARK
    #define SO_MARK 36
    #endif
    #ifndef IP_BIND_ADDRESS_NO_PORT
    #define IP_BIND_ADDRESS_NO_PORT 24
    #endif
    """
    enum:
        SO_BINDTODEVICE
        SO_MARK
        IP_BIND_ADDRESS_NO_PORT
