# cython: language_level=3
"""The C names the compiled TCP connect engine (``tcpconnect_c.pyx``) uses, cimported from
``includes_c`` (the declarations live there).

Owns: nothing but this list. Must not: hold code.
"""

from fastcheck._ext.includes_c cimport (
    EFD_CLOEXEC, EFD_NONBLOCK, EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLLERR, EPOLLHUP,
    EPOLLIN, EPOLLONESHOT, EPOLLOUT, SO_ERROR, SOL_SOCKET, epoll_create1, epoll_ctl,
    epoll_event, epoll_wait, eventfd, getsockopt, socklen_t,
)
