"""What the calling thread evaluates for a loader, and where its output arrays go.

A loader's worker (a process of ``prefetch``/``load_buffers``, or one of their
threads) marks, on the thread that runs a task, the task's index and -- in worker
processes only -- a source of shared-memory blocks. Code that makes results reads
them here: :func:`seqtools.call_index` and :func:`seqtools.minibatches`' sampler
the index, :func:`seqtools.stack` the blocks. Nothing here imports the loaders: the
views and batching wings may use it, and the worker loop
(``seqtools.loaders._worker``) decides what it holds.

``evaluating`` is a ``threading.local``: other threads (those the task's own code
starts, the parent's) see no task.

- ``evaluating.index``: the call or item index being evaluated, else None.
- ``evaluating.out_block``: a function ``nbytes -> writable uint8 array or None``
  giving a block of the worker's ring that travels to the parent with the result,
  set by the worker loop while a task runs; None elsewhere.
"""

import threading

__all__ = ["evaluating", "out_block"]



class _Evaluating(threading.local):
    # Class attributes: every thread starts with these (a missing attribute of a
    # threading.local costs an exception per read, and stack() reads out_block
    # once per batch).
    index = None
    out_block = None


evaluating = _Evaluating()


def out_block(nbytes):
    """A writable uint8 array of ``nbytes`` where the running task's output should
    live (a ring block handed over uncopied), or None: allocate it with numpy."""
    blocks = evaluating.out_block
    if blocks is None:
        return None
    return blocks(nbytes)


def placing():
    """True when the calling thread runs a task whose outputs go to ring blocks."""
    return evaluating.out_block is not None
