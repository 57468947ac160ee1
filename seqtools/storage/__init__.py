"""Datasets in object stores (S3, GCS, HTTP...): ``.npy`` chunks read as rows.

:func:`open_npy` opens ``.npy`` files by path, URL or glob, local ones as memory
maps and remote ones as :class:`RemoteArray` views that read byte ranges of whole
rows, a batch's rows coalesced into few concurrent range requests, through an
optional block cache on local disk shared by the node's processes
(:mod:`.blockcache`). Stores are reached through fsspec (s3fs, gcsfs...), an
optional dependency (``pip install 'seqtools[remote]'``) imported only when a URL
is opened (:mod:`.fetch`). Faults end in the errors of :mod:`.errors`, which name
the URL and the byte range; reads retry within a time budget and never hang.

It sits beside the views: a remote array is a view with the fused-read hook of
:mod:`seqtools.views.fusion`, so ``stack``, ``load_buffers`` and ``epochs`` read it
with no change of their own. :func:`prefetch` is the read-ahead hook a loader
calls with the items it will read next.
"""

from .errors import (
    AccessDenied,
    CorruptObject,
    ObjectNotFound,
    StorageError,
    StoreUnavailable,
)
from .remote import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_TIMEOUT,
    PREFETCH_QUEUE,
    RemoteArray,
    open_npy,
    prefetch,
    reads_ahead,
)

__all__ = ["open_npy", "RemoteArray", "prefetch", "reads_ahead", "StorageError",
           "StoreUnavailable", "ObjectNotFound", "AccessDenied", "CorruptObject",
           "DEFAULT_TIMEOUT", "DEFAULT_BLOCK_SIZE", "PREFETCH_QUEUE"]
