# Declarations of the index-map kernels and argument checks of _indexmaps.pyx,
# cimported by seqtools/_testing.pyx (the test-only entry points: array forms of
# the maps that views locate one index at a time, and the split map).
from libc.stdint cimport int64_t


cdef enum:
    SQ_OK = 0
    SQ_OUT_OF_RANGE = -1


cdef int64_t as_size(object value, str name) except? -2
cdef int64_t as_index(object key) except? -2
cdef object as_index_array(object idx)
cdef raise_index_error(object key, int64_t n)

cdef int unbatch_one(int64_t* i, int64_t n, int64_t k,
                     int64_t* batch, int64_t* offset) noexcept nogil
cdef int split_one(int64_t* i, const int64_t* stops, Py_ssize_t m,
                   int64_t* part, int64_t* local) noexcept nogil
cdef int cycle_one(int64_t* i, int64_t n, int64_t limit) noexcept nogil
cdef int64_t cycle_args(object n, object limit) except? -2


cdef struct IlvPlan:
    const int64_t* lengths   # per sequence, in the caller's order
    Py_ssize_t nseq
    const int64_t* thresh    # t_0 = 0, t_1 .. t_P  (P + 1 values)
    const int64_t* offsets   # first output index of phase p = 1..P, then total
    const int64_t* active    # number of sequences active in phase p
    Py_ssize_t nphase        # P


cdef int interleave_one(const IlvPlan* plan, int64_t* i,
                        int64_t* seq, int64_t* local) noexcept nogil


cdef class InterleaveMap:
    cdef readonly object lengths
    cdef object _thresh, _offsets, _active
    cdef IlvPlan plan
