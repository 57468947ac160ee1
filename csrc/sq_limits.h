/*
 * sq_limits.h: the limits that the C ring (ringbuf.c), the worker's allocation
 * hook (allochook.c) and the Cython modules (_transport.pyx, _stack.pyx, through
 * `cdef extern from "sq_limits.h"`) must agree on, defined once.
 */
#ifndef SQ_LIMITS_H
#define SQ_LIMITS_H

/* Blocks one task may hold reserved at once (sq_ring_reserve refuses more with
 * SQ_EFULL): its result's main block and the blocks its code stacked batches in
 * (seqtools.stack in a worker), which the commit hands over together.  One is
 * left for the main block, so a result holds at most SQ_SLOT_BLOCKS - 1 batches
 * stacked in shared memory. */
#define SQ_SLOT_BLOCKS 12

/* Arrays the worker's allocation hook keeps in ring blocks at once; further
 * allocations go to numpy's own allocator.  A commit adopts at most this many
 * kept blocks, and sq_ring_commit_n accepts at most SQ_SLOT_BLOCKS. */
#define SQH_MAX 8

/* Blocks one result's header may name besides its main block (_transport): every
 * block a task can hold, reserved or adopted. */
#define SQ_RESULT_BLOCKS (SQ_SLOT_BLOCKS + SQH_MAX)

/* Dimensions of an array stacked (_stack) or sent in place (_transport): numpy's
 * own maximum, NPY_MAXDIMS, is 64 from numpy 2 on and 32 before, so no numpy
 * array has more. */
#define SQ_MAX_NDIM 64

#if SQH_MAX > SQ_SLOT_BLOCKS
#error "a commit must be able to adopt every kept block (SQH_MAX <= SQ_SLOT_BLOCKS)"
#endif

#endif
