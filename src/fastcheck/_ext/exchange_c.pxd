# cython: language_level=3
"""The C names the compiled exchange engine (``exchange_c.pyx``) uses, cimported from
``includes_c`` (the declarations live there).

Owns: nothing but this list. Must not: hold code.
"""

from fastcheck._ext.includes_c cimport (
    EPOLL_CTL_ADD, EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, MSG_NOSIGNAL,
    SO_ERROR, SOL_SOCKET, epoll_ctl, epoll_event, getsockopt, recv, send, socklen_t,
)
