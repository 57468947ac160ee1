# The limits the C ring, the allocation hook, _transport and _stack agree on,
# defined once in csrc/sq_limits.h (see there).
cdef extern from "sq_limits.h":
    enum:
        SQ_SLOT_BLOCKS
        SQH_MAX
        SQ_RESULT_BLOCKS
        SQ_MAX_NDIM
