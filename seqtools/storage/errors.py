"""The errors of remote arrays: each names the URL, the byte range when there is
one, and what to do.

They subclass the built-in exception a caller would catch anyway (``OSError``
for a store that does not answer, ``FileNotFoundError`` for a missing object,
``PermissionError`` for refused credentials, ``ValueError`` for a file that is not
a valid ``.npy``), and :class:`StorageError`, so that a training loop can catch
the storage faults apart from the rest.
"""

__all__ = ["StorageError", "StoreUnavailable", "ObjectNotFound", "AccessDenied",
           "CorruptObject"]


class StorageError(OSError):
    """Base of the errors of :func:`seqtools.open_npy` and its remote arrays.

    Attributes
    ----------
    url : str
        The object.
    byte_range : tuple of int or None
        ``(start, stop)``, the bytes being read (stop excluded), or None.
    """

    def __init__(self, message, url, byte_range=None):
        super().__init__(message)
        self.url = url
        self.byte_range = byte_range

    def __str__(self):
        return self.args[0]

    def __reduce__(self):
        # Raised in worker processes and pickled to the parent: keep the fields.
        return type(self), (self.args[0], self.url, self.byte_range)


class StoreUnavailable(StorageError):
    """The store did not serve a range within the time budget (``timeout``),
    retries included: it is down, restarting, unreachable or too slow."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """The object does not exist (or a glob matched nothing)."""


class AccessDenied(StorageError, PermissionError):
    """The store refused the credentials (wrong key, secret, token or region)."""


class CorruptObject(StorageError, ValueError):
    """The object is not a valid ``.npy`` of row-readable data: a truncated or
    corrupt header, a size that does not match the header, or a layout whose rows
    are not contiguous bytes."""
