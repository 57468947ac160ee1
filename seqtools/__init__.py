"""seqtools: lazy sequence views and background loading for training loops.

The package stands in three wings, each using only those before it:

- :mod:`seqtools.views`: lazy list-like views and their index arithmetic;
- :mod:`seqtools.batching`: batches of views, read whole in compiled code;
- :mod:`seqtools.loaders`: background loaders and the training-loop ``epochs``.

Beside the views, :mod:`seqtools.storage` opens ``.npy`` chunks in object stores
(S3, GCS, HTTP) as views (:func:`open_npy`).

Every public name is importable from here. The modules of SeqTools 1.4.1
(``seqtools.evaluation``, ``seqtools.indexing``, ...) stay importable under
their old paths, for code written for it.
"""

# The imports below reach the compiled modules. Run from a clone where they are
# not built, this folder shadows any installed seqtools and the first of them
# fails with a message about a name or a circular import: _unbuilt's error says
# what happened instead. It is imported only after a failure, so a working
# import pays nothing for it.
try:
    from . import instrument
    from .batching.samplers import minibatches
    from .batching.shape import batch, split, unbatch
    from .batching.stacking import stack
    from .errors import EvaluationError, LoaderClosed, LoaderTimeout, seterr
    from .loaders.api import call_index, load_buffers, prefetch
    from .loaders.epochs import DatasetLengthChanged, epochs
    from .serialization import SerializableFunc
    from .storage import open_npy
    from .views.cache import add_cache
    from .views.combine import case, cycle, interleave, repeat, switch
    from .views.core import View
    from .views.indexing import arange, collate, concatenate, gather, take
    from .views.mapping import smap, starmap
    from .views.uniter import uniter
except ImportError as exc:
    from ._unbuilt import source_folder_error

    error = source_folder_error()
    if error is None:
        raise
    raise error from exc

__all__ = [
    "arange", "gather", "take", "concatenate", "collate",
    "smap", "starmap",
    "prefetch",
    "load_buffers", "call_index", "epochs",
    "View", "EvaluationError", "LoaderClosed", "LoaderTimeout", "DatasetLengthChanged",
    "seterr", "stack", "minibatches",
    "batch", "unbatch", "split",
    "interleave", "cycle", "repeat", "switch", "case",
    "uniter", "add_cache", "SerializableFunc", "instrument", "open_npy"]
__version__ = "2.0.0.dev0"
