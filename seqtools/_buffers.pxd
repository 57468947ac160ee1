# Shared by the Cython kernels (cimported; no module of its own).
from cpython.buffer cimport PyBuffer_Release


cdef inline void release_buffers(Py_buffer *bufs, Py_ssize_t n) noexcept:
    """Release the ``n`` buffers at ``bufs``, if any; the array itself stays.

    A zeroed ``Py_buffer`` (never acquired) has ``obj == NULL``, and releasing it
    is a no-op, so arrays allocated with calloc may be released whole.
    """
    cdef Py_ssize_t k
    if bufs != NULL:
        for k in range(n):
            PyBuffer_Release(&bufs[k])
