# cython: language_level=3
"""The skeleton the compiled connect engines (``tcpconnect_c``, ``exchange_c``) share, as
structs and ``cdef inline`` functions each module compiles in (so a call never crosses
modules); the C counterpart of ``engine_py.BatchedEngine``.

Owns: the ``EngineCore`` an engine holds: the ``Poller`` (epoll instance, the eventfd that makes it readable for results
produced outside it, the event buffer, the epoll_wait loop); the ``SlotTable`` (slots that
start with a ``SlotHead``: descriptor, generation, free-list link; grown by doubling up to
the window, with the deadline heap's room alongside; the ``generation << 32 | slot`` tag of
an epoll registration and its check); the ``Ring`` of requests waiting for a slot; and the deadline heap (``deadlines_c.pxd``) with
the start counter that orders equal deadlines.
Must not: read a clock, know what a slot or a request holds beyond its ``SlotHead``, or
raise except ``MemoryError`` on growth and ``OSError`` from the kernel.
"""

from cpython.exc cimport PyErr_SetFromErrno
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.errno cimport EINTR, errno
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memset
from posix.unistd cimport close, read, write

from fastcheck._ext.deadlines_c cimport (
    DeadlineHeap, heap_free, heap_push, heap_remove, heap_reserve,
)
from fastcheck._ext.includes_c cimport (
    EFD_CLOEXEC, EFD_NONBLOCK, EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLLIN, epoll_create1, epoll_ctl,
    epoll_event, epoll_wait, eventfd,
)
from fastcheck._ext.sockopts_c cimport check_integer


cdef enum:
    MAX_EVENTS = 512      # epoll events read by one epoll_wait
    MAX_WINDOW = 1 << 20  # max_in_flight upper bound


cdef extern from *:
    """
    #define FASTCHECK_EVENTFD_TAG 0xFFFFFFFFFFFFFFFFULL
    """
    const uint64_t EVENTFD_TAG "FASTCHECK_EVENTFD_TAG"  # the eventfd's epoll data


cdef inline int raise_errno() except -1:
    """Raise ``OSError`` (its errno subclass) for ``errno``, with ``os.strerror``'s text."""
    PyErr_SetFromErrno(OSError)
    return -1


# --- the poller: epoll + eventfd ------------------------------------------------------------

cdef struct Poller:        # poller_init before anything else
    int epfd
    int evfd
    bint signalled        # the eventfd has been written since the last poller_drain
    epoll_event *events   # MAX_EVENTS of them, for poller_wait


cdef inline void poller_init(Poller *p) noexcept nogil:
    p.epfd = -1
    p.evfd = -1
    p.signalled = False
    p.events = NULL


cdef inline int poller_open(Poller *p) except -1:
    """The event buffer, the epoll instance, and the eventfd registered in it."""
    cdef epoll_event ev
    p.events = <epoll_event *>PyMem_Malloc(MAX_EVENTS * sizeof(epoll_event))
    if p.events == NULL:
        raise MemoryError()
    p.epfd = epoll_create1(EPOLL_CLOEXEC)
    if p.epfd < 0:
        return raise_errno()
    p.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    if p.evfd < 0:
        return raise_errno()
    ev.events = EPOLLIN
    ev.data.u64 = EVENTFD_TAG
    if epoll_ctl(p.epfd, EPOLL_CTL_ADD, p.evfd, &ev) < 0:
        return raise_errno()
    return 0


cdef inline void poller_close(Poller *p) noexcept nogil:
    """Close both descriptors (the event buffer stays until poller_free). Idempotent."""
    if p.evfd >= 0:
        close(p.evfd)
        p.evfd = -1
    if p.epfd >= 0:
        close(p.epfd)
        p.epfd = -1


cdef inline void poller_free(Poller *p) noexcept:
    poller_close(p)
    PyMem_Free(p.events)
    p.events = NULL


cdef inline void poller_signal(Poller *p) noexcept nogil:
    """Make the epoll descriptor readable until the next poller_drain."""
    cdef uint64_t one = 1
    write(p.evfd, &one, sizeof(uint64_t))
    p.signalled = True


cdef inline void poller_drain(Poller *p) noexcept nogil:
    cdef uint64_t value
    if p.signalled:
        read(p.evfd, &value, sizeof(uint64_t))
        p.signalled = False


cdef inline int poller_wait(Poller *p) except -1:
    """Events ready now (never blocks), in ``p.events``; their count (MAX_EVENTS: ask again)."""
    cdef int n
    while True:
        n = epoll_wait(p.epfd, p.events, MAX_EVENTS, 0)
        if n >= 0:
            return n
        if errno != EINTR:
            return raise_errno()


# --- the slot table -----------------------------------------------------------------------

cdef struct SlotHead:      # the first member of every engine's slot struct
    int fd                # the socket in flight; -1 = a free slot
    uint32_t gen          # bumped whenever the slot is freed: tags its epoll registrations
    int next_free         # free-list link


cdef struct SlotTable:     # slots_init before use
    char *items           # `capacity` slots of `size` bytes, each starting with a SlotHead
    size_t size
    int capacity          # grows by doubling up to `window`
    int window            # max_in_flight
    int active            # slots in use
    int free_head         # free slots, linked through next_free; -1 = none


cdef inline void slots_init(SlotTable *t, size_t size) noexcept nogil:
    t.items = NULL
    t.size = size
    t.capacity = 0
    t.window = 0
    t.active = 0
    t.free_head = -1


cdef inline SlotHead *slot_head(const SlotTable *t, int index) noexcept nogil:
    return <SlotHead *>(t.items + <size_t>index * t.size)


cdef inline int slots_grow(SlotTable *t, DeadlineHeap *deadlines) except -1:
    """Add slots (doubling, up to the window), zeroed and free; room for them in the heap.
    The engine must re-read ``t.items`` afterwards (it may move)."""
    cdef int cap = t.capacity * 2 if t.capacity else 64
    cdef int i
    cdef char *items
    cdef SlotHead *head
    if cap > t.window:
        cap = t.window
    items = <char *>PyMem_Realloc(t.items, <size_t>cap * t.size)
    if items == NULL:
        raise MemoryError()
    t.items = items
    heap_reserve(deadlines, cap)
    for i in range(cap - 1, t.capacity - 1, -1):
        head = slot_head(t, i)
        memset(head, 0, t.size)
        head.fd = -1
        head.next_free = t.free_head
        t.free_head = i
    t.capacity = cap
    return 0


cdef inline uint64_t slot_tag(const SlotTable *t, int index) noexcept nogil:
    """The epoll data of a registration for the slot's current check."""
    return (<uint64_t>slot_head(t, index).gen << 32) | <uint32_t>index


cdef inline int slot_of_event(const SlotTable *t, uint64_t data) noexcept nogil:
    """The slot an event with this epoll data is for, or -1: the eventfd's, or an old
    socket's (a descriptor kept alive by a forked child, say) whose check is reported."""
    cdef int index
    cdef SlotHead *head
    if data == EVENTFD_TAG:
        return -1
    index = <int>(data & 0xFFFFFFFFU)
    if index >= t.capacity:
        return -1
    head = slot_head(t, index)
    if head.fd < 0 or head.gen != <uint32_t>(data >> 32):
        return -1
    return index


cdef inline void slots_claim(SlotTable *t, int fd) noexcept nogil:
    """Give the first free slot (``t.free_head``, which must exist) to ``fd``."""
    cdef SlotHead *head = slot_head(t, t.free_head)
    t.free_head = head.next_free
    head.fd = fd
    t.active += 1


cdef inline void slots_release(SlotTable *t, DeadlineHeap *deadlines, int index) noexcept nogil:
    """Take a closed check's slot out of the heap and back onto the free list."""
    cdef SlotHead *head = slot_head(t, index)
    heap_remove(deadlines, index)
    head.fd = -1
    head.gen += 1
    head.next_free = t.free_head
    t.free_head = index
    t.active -= 1


cdef inline void slots_free(SlotTable *t) noexcept:
    PyMem_Free(t.items)
    t.items = NULL
    t.capacity = 0


# --- the queue of requests waiting for a slot -----------------------------------------------

cdef struct Ring:          # zeroed memory is an empty ring; items of one size per ring
    char *items
    Py_ssize_t head
    Py_ssize_t len
    Py_ssize_t cap


cdef inline void *ring_at(const Ring *q, Py_ssize_t k, size_t size) noexcept nogil:
    """The k-th request from the front (k < q.len)."""
    return q.items + <size_t>((q.head + k) % q.cap) * size


cdef inline int ring_push(Ring *q, const void *item, size_t size) except -1:
    """Copy ``item`` to the back (doubling the ring when full)."""
    cdef Py_ssize_t cap, i
    cdef char *grown
    if q.len == q.cap:
        cap = q.cap * 2 if q.cap else 256
        grown = <char *>PyMem_Malloc(<size_t>cap * size)
        if grown == NULL:
            raise MemoryError()
        for i in range(q.len):
            memcpy(grown + <size_t>i * size, ring_at(q, i, size), size)
        PyMem_Free(q.items)
        q.items = grown
        q.cap = cap
        q.head = 0
    memcpy(ring_at(q, q.len, size), item, size)
    q.len += 1
    return 0


cdef inline void *ring_pop(Ring *q, size_t size) noexcept nogil:
    """Take the front request (q.len > 0); it stays valid until the next ring_push."""
    cdef void *item = ring_at(q, 0, size)
    q.head = (q.head + 1) % q.cap
    q.len -= 1
    return item


cdef inline void ring_free(Ring *q) noexcept:
    PyMem_Free(q.items)
    q.items = NULL
    q.head = q.len = q.cap = 0


# --- all of it: what an engine holds ---------------------------------------------------------

cdef struct EngineCore:    # core_init before anything else
    Poller poller         # epoll + eventfd
    SlotTable table       # the window: slots in flight and free
    DeadlineHeap deadlines  # slots in flight by (deadline, start order)
    uint64_t seq          # starts so far: FIFO among equal deadlines
    Ring queue            # requests waiting for a slot


cdef inline void core_init(EngineCore *c, size_t slot_size) noexcept nogil:
    memset(c, 0, sizeof(EngineCore))
    poller_init(&c.poller)
    slots_init(&c.table, slot_size)


cdef inline int core_open(EngineCore *c, object max_in_flight) except -1:
    """Check ``max_in_flight`` and open the poller."""
    c.table.window = <int>check_integer(max_in_flight, "max_in_flight", 1, MAX_WINDOW)
    return poller_open(&c.poller)


cdef inline void core_close(EngineCore *c) noexcept nogil:
    """Forget the slots in flight (their sockets are the engine's to close first) and the
    queue (the engine releases what its requests own first); close the descriptors."""
    c.table.active = 0
    c.deadlines.len = 0
    c.queue.len = 0
    poller_close(&c.poller)


cdef inline void core_free(EngineCore *c) noexcept:
    poller_free(&c.poller)
    slots_free(&c.table)
    heap_free(&c.deadlines)
    ring_free(&c.queue)


cdef inline bint core_full(const EngineCore *c) noexcept nogil:
    """No free slot in the window: a new request waits in the queue."""
    return c.table.active >= c.table.window


cdef inline bint core_can_start(const EngineCore *c) noexcept nogil:
    """A queued request and a free slot in the window for it."""
    return c.queue.len > 0 and c.table.active < c.table.window


cdef inline int core_next_slot(EngineCore *c) except -1:
    """The slot the next start takes (growing the table when none is free; the engine must
    re-read ``c.table.items`` then)."""
    if c.table.free_head < 0:
        slots_grow(&c.table, &c.deadlines)
    return c.table.free_head


cdef inline int core_track(EngineCore *c, int fd, double deadline) noexcept nogil:
    """Give the slot ``core_next_slot`` named to ``fd`` until ``deadline``; its index."""
    cdef int index = c.table.free_head
    slots_claim(&c.table, fd)
    heap_push(&c.deadlines, index, deadline, c.seq)
    c.seq += 1
    return index


cdef inline object core_next_deadline(const EngineCore *c):
    """The earliest deadline in flight, or None."""
    if c.deadlines.len == 0:
        return None
    return c.deadlines.items[0].at
