# cython: language_level=3
"""An indexed binary min-heap of deadlines, shared by the compiled connect engines
(``tcpconnect_c``, ``exchange_c``) as ``cdef inline`` functions each module compiles in.

Owns: ordering the engine's slots in flight by (deadline, start order): earliest first,
FIFO among equal deadlines; finding and removing a slot's entry in O(log n) through a
slot -> position table. Entries are keyed by slot index (0 .. capacity - 1).
Must not: read a clock, know what a slot holds, or raise except MemoryError on growth.
"""

from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport uint64_t


cdef struct Deadline:
    double at             # when the slot's operation times out
    uint64_t seq          # start order: FIFO among equal deadlines
    int slot


cdef struct DeadlineHeap:  # zeroed memory is an empty heap
    Deadline *items       # items[0] is the earliest
    int *pos              # slot -> index in items (valid while the slot is in the heap)
    int len


cdef inline bint _earlier(const Deadline *a, const Deadline *b) noexcept nogil:
    return a.at < b.at or (a.at == b.at and a.seq < b.seq)


cdef inline void _put(DeadlineHeap *h, int i, Deadline item) noexcept nogil:
    h.items[i] = item
    h.pos[item.slot] = i


cdef inline void _sift_up(DeadlineHeap *h, int i) noexcept nogil:
    cdef Deadline item = h.items[i]
    cdef int parent
    while i > 0:
        parent = (i - 1) >> 1
        if not _earlier(&item, &h.items[parent]):
            break
        _put(h, i, h.items[parent])
        i = parent
    _put(h, i, item)


cdef inline void _sift_down(DeadlineHeap *h, int i) noexcept nogil:
    cdef Deadline item = h.items[i]
    cdef int child
    while True:
        child = 2 * i + 1
        if child >= h.len:
            break
        if child + 1 < h.len and _earlier(&h.items[child + 1], &h.items[child]):
            child += 1
        if not _earlier(&h.items[child], &item):
            break
        _put(h, i, h.items[child])
        i = child
    _put(h, i, item)


cdef inline int heap_reserve(DeadlineHeap *h, int capacity) except -1:
    """Room for slots 0 .. capacity - 1 (capacity never shrinks)."""
    cdef Deadline *items = <Deadline *>PyMem_Realloc(h.items, capacity * sizeof(Deadline))
    cdef int *pos
    if items == NULL:
        raise MemoryError()
    h.items = items
    pos = <int *>PyMem_Realloc(h.pos, capacity * sizeof(int))
    if pos == NULL:
        raise MemoryError()
    h.pos = pos
    return 0


cdef inline void heap_free(DeadlineHeap *h) noexcept:
    PyMem_Free(h.items)
    PyMem_Free(h.pos)
    h.items = NULL
    h.pos = NULL
    h.len = 0


cdef inline void heap_push(DeadlineHeap *h, int slot, double at, uint64_t seq) noexcept nogil:
    cdef Deadline item
    item.at = at
    item.seq = seq
    item.slot = slot
    _put(h, h.len, item)
    h.len += 1
    _sift_up(h, h.len - 1)


cdef inline void heap_remove(DeadlineHeap *h, int slot) noexcept nogil:
    cdef int i = h.pos[slot]
    cdef Deadline last
    h.len -= 1
    if i == h.len:
        return
    last = h.items[h.len]
    _put(h, i, last)
    if i > 0 and _earlier(&last, &h.items[(i - 1) >> 1]):
        _sift_up(h, i)
    else:
        _sift_down(h, i)
