# cython: language_level=3
"""The C names the compiled TCP connect engine (``tcpconnect_c.pyx``) uses, cimported from
``includes_c`` (the declarations live there).

Owns: nothing but this list. Must not: hold code.
"""

from fastcheck._ext.includes_c cimport (
    EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLLERR, EPOLLHUP, EPOLLONESHOT, EPOLLOUT, SO_ERROR,
    SOL_SOCKET, epoll_ctl, epoll_event, getsockopt, socklen_t,
)
