"""An object of the block cache seen as one contiguous, read-only array.

The block cache keeps an object as one file per block. An :class:`ObjectMap`
reserves an address range as long as the object (no memory: ``PROT_NONE``,
``MAP_NORESERVE``) and maps each cached block's file over its place in it
(``MAP_FIXED``), so that the object's rows are one array whatever blocks they
cross, and a batch of them is gathered by the same compiled code as rows of a
local memory-mapped file.

Reading a place whose block is not mapped yet faults (``SIGSEGV``): the map
keeps track of the blocks in place, and its user asks :meth:`ObjectMap.missing`
before it reads rows, then maps those first. A block is never
unmapped on its own; the whole range goes when the object is collected, which
the arrays over it (they hold it through the buffer protocol) delay until they
are dropped. A mapped block file that the cache evicts (unlinks) or replaces
(renames over) stays readable through the mapping with the same bytes: blocks
are never written in place.
"""

from cpython.buffer cimport PyBuffer_FillInfo
from libc.errno cimport errno
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free
from posix.mman cimport (MAP_ANONYMOUS, MAP_FAILED, MAP_FIXED, MAP_NORESERVE,
                         MAP_PRIVATE, MAP_SHARED, PROT_NONE, PROT_READ, mmap, munmap)
from posix.unistd cimport sysconf

import os

cdef extern from "<unistd.h>":
    enum: _SC_PAGESIZE

PAGE_SIZE = sysconf(_SC_PAGESIZE)


cdef class ObjectMap:
    """``size`` bytes of address space for one object of blocks of
    ``block_size`` bytes (a multiple of the page size); :meth:`map` places its
    blocks. Exposes the whole range as a read-only buffer."""

    cdef char *base
    cdef uint64_t nbytes
    cdef uint64_t reserved
    cdef uint64_t bs
    cdef uint64_t n_blocks
    cdef uint64_t n_mapped
    cdef unsigned char *in_place  # per block: mapped

    def __cinit__(self, uint64_t size, uint64_t block_size):
        cdef uint64_t page = <uint64_t>sysconf(_SC_PAGESIZE)
        cdef void *p
        self.base = NULL
        self.in_place = NULL
        if block_size == 0 or block_size % page:
            raise ValueError(f"blocks of {block_size} bytes cannot be mapped: not a "
                             f"multiple of the page size ({page})")
        self.bs = block_size
        self.n_blocks = (size + block_size - 1) // block_size
        self.n_mapped = 0
        self.in_place = <unsigned char *>calloc(max(self.n_blocks, 1), 1)
        if self.in_place == NULL:
            raise MemoryError()
        self.nbytes = size
        self.reserved = (size + page - 1) // page * page
        if self.reserved == 0:
            self.reserved = page
        p = mmap(NULL, self.reserved, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        if p == MAP_FAILED:
            raise OSError(errno, f"cannot reserve {size} bytes of address space "
                          f"for a cached object: {os.strerror(errno)}")
        self.base = <char *>p

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, self.reserved)
            self.base = NULL
        free(self.in_place)
        self.in_place = NULL

    @property
    def size(self):
        return self.nbytes

    @property
    def nblocks(self):
        """Blocks of the object."""
        return self.n_blocks

    @property
    def nmapped(self):
        """Blocks in place."""
        return self.n_mapped

    @property
    def full(self):
        """Every block is in place."""
        return self.n_mapped == self.n_blocks

    def mapped_blocks(self):
        """The numbers of the blocks in place, in order."""
        return [b for b in range(self.n_blocks) if self.in_place[b]]

    def map(self, int fd, uint64_t block, uint64_t length):
        """Map the first ``length`` bytes of file ``fd`` as block ``block``
        (``length``: the block's size, shorter for the object's last one). The
        file must hold ``length`` bytes for as long as it is mapped: a read
        past its end faults. The caller serialises the calls for one map."""
        cdef uint64_t offset
        cdef void *p
        if block >= self.n_blocks or length == 0 or length > self.bs or (
                block * self.bs + length > self.nbytes):
            raise ValueError(f"cannot map {length} bytes as block {block} of an "
                             f"object of {self.nbytes} bytes in blocks of {self.bs}")
        if self.in_place[block]:
            return
        offset = block * self.bs
        p = mmap(self.base + offset, length, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0)
        if p == MAP_FAILED:
            raise OSError(errno, f"cannot map a cached block: {os.strerror(errno)}")
        self.in_place[block] = 1  # after the mapping: readers look here first
        self.n_mapped += 1

    def missing(self, const int64_t[:] local, object part, int64_t j,
                uint64_t offset, uint64_t rowbytes):
        """The blocks not in place that rows ``local[k]`` (those with ``part[k]
        == j``, or all if ``part`` is None) of ``rowbytes`` bytes from byte
        ``offset`` touch: a sorted list, empty when every such row can be read."""
        cdef const int64_t[:] parts
        cdef Py_ssize_t k, n = local.shape[0]
        cdef uint64_t start, b, last
        cdef bint filtered = part is not None
        cdef list out = []
        cdef set seen
        if rowbytes == 0:
            return out
        if filtered:
            parts = part
            if parts.shape[0] != n:
                raise ValueError("part and local differ in length")
        for k in range(n):
            if filtered and parts[k] != j:
                continue
            if local[k] < 0:
                raise IndexError(f"row {local[k]} out of range")
            start = offset + <uint64_t>local[k] * rowbytes
            b = start // self.bs
            last = (start + rowbytes - 1) // self.bs
            if last >= self.n_blocks:
                raise IndexError(f"row {local[k]} out of range")
            while b <= last:
                if not self.in_place[b]:
                    out.append(b)
                b += 1
        if out:
            seen = set(out)
            out = sorted(seen)
        return out

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, self.base, <Py_ssize_t>self.nbytes, 1, flags)

    def __releasebuffer__(self, Py_buffer *view):
        pass
