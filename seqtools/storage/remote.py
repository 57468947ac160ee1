"""Arrays in ``.npy`` objects of an object store, read as byte ranges of whole rows.

:func:`open_npy` opens local files as memory maps and URLs as
:class:`RemoteArray` views. A remote array knows its object's URL, where its data
starts, its shape and dtype (from the ``.npy`` header, read once at opening), and
reads rows as byte ranges (:mod:`.fetch`), through the node's block cache when it
has one (:mod:`.blockcache`).

How it takes part in seqtools
-----------------------------
A :class:`RemoteArray` is a view (:class:`seqtools.View`): ``len``, ``arr[i]``,
slices, iteration, and every view over it (``gather``, ``concatenate``,
``collate``...) work as over a memory-mapped array. For batch reads it declares
the fused-read hook ``_fuse`` (see :mod:`seqtools.views.fusion`): ``stack`` of a
gather over it (or over ``concatenate`` of several) hands it the batch's rows at
once, and it reads them with one coalesced set of range requests, sent
concurrently, instead of a request per row; the rows land in a fresh array the
stack copies from.

Pickling and worker processes
-----------------------------
A remote array pickles as what it is made of (URL, data offset, shape, dtype,
the object's size and version, storage options, cache settings), never data, and
opens nothing when unpickled: the filesystem object and the cache are made in
each process on its first read (:func:`.fetch.filesystem`, keyed by process id),
so that a worker under fork, forkserver or spawn never reuses its parent's.

Read-ahead
----------
:meth:`RemoteArray.prefetch_rows` (and :func:`prefetch` for a whole view graph)
fetches blocks into the cache in the background, for a loader that knows which
rows it will read next.
"""

import glob as _glob
import hashlib
import math
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..views.core import View
from ..views.fusion import Items, Rows, peel, program, row_spec
from . import fetch as _fetch
from ._objmap import PAGE_SIZE, ObjectMap
from .blockcache import BUMP_SECONDS, cache_for
from .errors import ObjectNotFound, StorageError
from .npyheader import PROBE_BYTES, header_length, parse_header

__all__ = ["RemoteArray", "open_npy", "prefetch", "reads_ahead", "DEFAULT_TIMEOUT",
           "DEFAULT_BLOCK_SIZE"]

#: Seconds a read may spend on one batch of range requests, retries included.
#: One minute: a store restarting (SeaweedFS, MinIO) or S3 throttling with 503
#: SlowDown answers again within seconds to tens of seconds, and a training step
#: waiting a minute is still obviously stalled to whoever watches it (the loaders
#: report a stall after 60 s too).
DEFAULT_TIMEOUT = 60.0
#: Bytes per cached block. Big enough that a cache fills in few requests (the
#: request rate, not the bandwidth, limits small reads from object stores), small
#: enough that a random row does not pull much more than itself over a slow link.
DEFAULT_BLOCK_SIZE = 1 << 20
# Uncached reads: rows less than _MAX_GAP bytes apart are read in one range. A
# request costs about what a megabyte of transfer does: 20-50 ms of latency at
# 20-50 MB/s per connection to a cloud store, and some 1.5 ms of client CPU
# (signing, parsing) where 1 MB of bytes costs well under that; so a gap under a
# MiB is cheaper fetched than skipped (on the local S3 server of the tests, 32
# random rows of 2 KB from a 10 MB chunk: 100 ms a batch at 64 KiB, 25 ms at
# 1 MiB). One range is at most _MAX_RANGE bytes, so that a long run is fetched
# as concurrent requests.
_MAX_GAP = 1 << 20
_MAX_RANGE = 8 << 20
# Opening many objects: header requests in flight at once.
_OPEN_THREADS = 8


class RemoteArray(View):
    """A read-only, row-indexable array stored in a ``.npy`` object of a store.

    Made by :func:`open_npy`. Item ``i`` is row ``i`` as a new array (a numpy
    scalar for a 1-D array), read from the store or the cache; slices and
    gathers are views, read when their items are.

    Attributes
    ----------
    url : str
        The object.
    shape : tuple of int
        The array's shape, from the ``.npy`` header.
    dtype : numpy.dtype
        The array's dtype.
    ndim : int
        ``len(shape)``.
    """

    __slots__ = ("_url", "_protocol", "_dtype", "_shape", "_offset", "_size",
                 "_version", "_options", "_cache_dir", "_cache_size",
                 "_block_size", "_timeout", "_rowbytes", "_key", "_spec",
                 "_nblocks", "_mapkey")
    _transient = ("_rowbytes", "_key", "_spec", "_nblocks", "_mapkey")

    def __init__(self, url, dtype, shape, offset, size, version, options,
                 cache_dir, cache_size, block_size, timeout):
        View.__init__(self, shape[0])
        self._url = url
        self._protocol = _fetch.split_url(url)[0]
        self._dtype = np.dtype(dtype)
        self._shape = tuple(shape)
        self._offset = offset
        self._size = size
        self._version = version
        self._options = options
        self._cache_dir = cache_dir
        self._cache_size = cache_size
        self._block_size = block_size
        self._timeout = timeout
        self._bind()

    def _bind(self):
        self._rowbytes = math.prod(self._shape[1:]) * self._dtype.itemsize
        # The cache key: a new version of the object is a new set of blocks.
        ident = "\0".join([self._url, str(self._size), str(self._version),
                           str(self._block_size)])
        self._key = hashlib.sha256(ident.encode()).hexdigest()[:32]
        self._nblocks = -(-self._size // self._block_size)
        self._mapkey = (self._cache_dir, self._key)  # of _maps, _seen
        # (dtype, row shape) when rows can be handed to stack as bytes.
        self._spec = row_spec(np.empty((0,) + self._shape[1:], self._dtype))

    def __reduce__(self):
        return _rebuild, (self._url, self._dtype.str if self._dtype.names is None
                          else self._dtype.descr, self._shape, self._offset,
                          self._size, self._version, self._options,
                          self._cache_dir, self._cache_size, self._block_size,
                          self._timeout)

    # -- attributes -----------------------------------------------------------------
    @property
    def url(self):
        return self._url

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        return self._dtype

    @property
    def ndim(self):
        return len(self._shape)

    def __repr__(self):
        return (f"<seqtools.RemoteArray {self._url} shape={self._shape} "
                f"dtype={self._dtype}>")

    # -- reads ----------------------------------------------------------------------
    def _get(self, i):
        rows = self.read_rows(np.array([i], np.int64))
        return rows[0]

    def _iter(self):
        # Reads ahead a block's worth of rows at a time, not a request per row.
        step = max(1, self._block_size // max(1, self._rowbytes))
        for start in range(0, self._n, step):
            rows = self.read_rows(np.arange(start, min(self._n, start + step)))
            yield from rows

    @property
    def _rows_spec(self):
        # Rows prepared on demand (see _prepare_rows): through a cache only.
        return self._spec if self._cache_dir is not None else None

    def _prepare_rows(self, local, part, j):
        """The fused-read hook of rows that arrive on demand (see
        :mod:`seqtools.views.fusion`): the object's rows as one array over its
        cached blocks (see :class:`_Mapped`), its rows ``local[part == j]``
        (all of ``local`` if ``part`` is None) made readable first: their
        blocks fetched if they are not cached, and mapped. None when they
        cannot be mapped (a block size not a multiple of the page size, a cache
        that does not keep them, the process's mapping budget spent): the
        caller then reads them block by block (:meth:`_read_cached`)."""
        m = _maps.get(self._mapkey)
        if m is None:
            m = _object_map(self)
            if m is None:
                return None
        objmap = m.objmap
        if not objmap.full:
            need = objmap.missing(local, part, j, self._offset, self._rowbytes)
            if need and not self._map_blocks(m, need):
                return None
        if time.monotonic() - m.bumped > BUMP_SECONDS:
            m.bump(self._cache())
        return m.rows

    def _fuse(self, indices):
        if self._spec is None:
            # Rows stack does not take as bytes (1-D strings, big-endian scalars):
            # read at once, then item by item from the array, as from a local one.
            return Items(self.read_rows(indices), np.arange(len(indices)))
        if self._cache_dir is not None:
            rows = self._prepare_rows(indices, None, 0)
            if rows is not None:  # the rows of a local memory map, as it were
                return Rows((rows,), None, indices, *self._spec)
        unique, inverse = np.unique(indices, return_inverse=True)
        data = self._read_sorted(unique)
        return Rows((data,), None, inverse.reshape(-1).astype(np.int64, copy=False),
                    *self._spec)

    def __array__(self, dtype=None, copy=None):
        data = self._read_sorted(np.arange(self._n, dtype=np.int64))
        return data if dtype is None else data.astype(dtype, copy=False)

    def read_rows(self, indices):
        """Rows ``indices`` as a new array of shape ``(len(indices),) + shape[1:]``.

        Parameters
        ----------
        indices : array_like of int
            Row numbers, ``0 <= i < len(self)``, in any order, repeats allowed.

        Returns
        -------
        numpy.ndarray
            The rows, read with as few range requests as their layout allows (the
            cache's blocks first when there is a cache).

        Raises
        ------
        IndexError
            If an index is out of range.
        seqtools.storage.StorageError
            If the store does not serve the rows (see :mod:`seqtools.storage`).
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= self._n):
            bad = indices[(indices < 0) | (indices >= self._n)][0]
            raise IndexError(f"row {bad} out of range for {self._url} "
                             f"({self._n} rows)")
        unique, inverse = np.unique(indices, return_inverse=True)
        data = self._read_sorted(unique)
        if len(unique) == len(indices) and (inverse == np.arange(len(inverse))).all():
            return data
        return data[inverse.reshape(-1)]

    def _read_sorted(self, rows):
        """The rows ``rows`` (sorted, unique int64) as a new array."""
        out = np.empty((len(rows),) + self._shape[1:], self._dtype)
        if len(rows) == 0 or self._rowbytes == 0:
            return out
        dest = out.reshape(len(rows), -1).view(np.uint8)
        starts = self._offset + rows * self._rowbytes
        if self._cache_dir is None:
            self._read_direct(starts, dest)
            return out
        mapped = self._prepare_rows(rows, None, 0)
        if mapped is not None:
            np.take(mapped, rows, axis=0, out=out)
        else:
            self._read_cached(starts, dest)
        return out

    def _fetch(self, ranges):
        return _fetch.fetch_ranges(self._url, self._options, ranges, self._timeout)

    def _read_direct(self, starts, dest):
        """Rows at byte ``starts`` (sorted) into ``dest``, no cache: the rows
        coalesced into ranges."""
        rb = self._rowbytes
        groups = _coalesce(starts.tolist(), rb, _MAX_GAP, _MAX_RANGE)
        datas = self._fetch([(lo, hi) for lo, hi, _, _ in groups])
        for (lo, _, k0, k1), data in zip(groups, datas):
            buf = np.frombuffer(data, np.uint8)
            if len(buf) == (k1 - k0) * rb:  # adjacent rows: one copy
                dest[k0:k1] = buf.reshape(k1 - k0, rb)
                continue
            for k in range(k0, k1):
                o = int(starts[k]) - lo
                dest[k] = buf[o:o + rb]

    # -- the block cache --------------------------------------------------------------
    def _cache(self):
        return cache_for(self._cache_dir, self._cache_size)

    def _block_length(self, b):
        return min(self._block_size, self._size - b * self._block_size)

    def _blocks_of(self, starts):
        """The sorted block numbers that rows at byte ``starts`` touch."""
        bs = self._block_size
        first = starts // bs
        last = (starts + self._rowbytes - 1) // bs
        if (first == last).all():
            return np.unique(first)
        return np.unique(np.concatenate(
            [np.arange(a, b + 1) for a, b in zip(first.tolist(), last.tolist())]))

    def _fill(self, blocks, cache):
        """Fetch the blocks not in the cache and store them; returns
        ``{block: bytes}`` of those fetched.

        A block another thread of this process is fetching (read-ahead, another
        loader thread) is waited for, within the read's ``timeout``, instead of
        fetched twice; the caller fetches it itself if it is still not cached.
        """
        key = self._key
        # Blocks seen cached are taken as cached (no stat per block and batch);
        # _read_cached fetches those evicted since.
        known = _seen.get((self._cache_dir, key), ())
        missing = [b for b in blocks if b not in known
                   and not cache.contains(key, b, self._block_length(b))]
        _see(self, blocks if not missing else set(blocks) - set(missing))
        if not missing:
            return {}
        mine, theirs = _claim(key, missing)
        fresh = {}
        try:
            if mine:
                bs = self._block_size
                runs = _runs(mine, max(1, _MAX_RANGE // bs))
                datas = self._fetch(
                    [(b0 * bs, b0 * bs + sum(self._block_length(b)
                                             for b in range(b0, b1)))
                     for b0, b1 in runs])
                for (b0, b1), data in zip(runs, datas):
                    view = memoryview(data)
                    for b in range(b0, b1):
                        lo = (b - b0) * bs
                        block = view[lo:lo + self._block_length(b)]
                        if cache.put(key, b, block):
                            _see(self, (b,))
                        fresh[b] = block
        finally:
            _release(key, mine)
        deadline = time.monotonic() + self._timeout
        for event in theirs:
            event.wait(max(0.0, deadline - time.monotonic()))
        return fresh

    def _map_blocks(self, m, blocks):
        """Map ``blocks`` (sorted block numbers) into ``m``, fetched into the
        cache first if they are not there; False if one cannot be."""
        cache = self._cache()
        self._fill(blocks, cache)
        for attempt in range(2):
            with m.lock:
                if not _budget(self, m, len(blocks)):
                    return False
                gone = [b for b in blocks if not self._map_block(m, cache, b)]
            if not gone:
                return True
            if attempt == 0:
                # Evicted since this process saw them cached: fetched again.
                _unsee(self, gone)
                self._fill(gone, cache)
                blocks = gone
        return False  # not kept by the cache (a full disk, a tiny cache)

    def _map_block(self, m, cache, b):
        """Map block ``b`` from the cache into ``m`` (its lock held); False if
        the cache does not hold it whole."""
        length = self._block_length(b)
        fd = cache.open(self._key, b, length)
        if fd is None:
            return False
        try:
            m.objmap.map(fd, b, length)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def _read_cached(self, starts, dest):
        """Rows at byte ``starts`` into ``dest`` through the block cache, block
        by block (when the object cannot be seen as one mapped array)."""
        cache = self._cache()
        bs, rb = self._block_size, self._rowbytes
        fresh = self._fill(self._blocks_of(starts).tolist(), cache)
        # Rows inside one block, the common case, are taken from the block's
        # bytes seen as a table of rows, one numpy copy per block; the others
        # (rows across blocks, blocks gone since _fill) piece by piece below.
        first = starts // bs
        pos = starts - first * bs
        inside = pos + rb <= bs
        gone = []
        for b in np.unique(first[inside]).tolist():
            data = fresh.get(b)
            if data is None:
                data = cache.map(self._key, b, self._block_length(b))
                if data is None:
                    gone.append(b)
                    continue
            self._take_rows(dest, inside & (first == b), pos, data)
        if gone:  # evicted since this process saw them: fetched together
            _unsee(self, gone)
            fresh.update(self._fill(gone, cache))
            for b in gone:
                if b in fresh:
                    self._take_rows(dest, inside & (first == b), pos, fresh[b])
                else:  # fetched by another thread, or not cacheable: below
                    inside &= first != b
        self._read_pieces(starts, dest, np.flatnonzero(~inside), fresh, cache)

    def _take_rows(self, dest, mask, pos, data):
        """Rows ``mask`` of ``dest``, all inside one block at byte ``pos`` of it,
        from the block's bytes ``data`` seen as a table of rows."""
        rb = self._rowbytes
        ks = np.flatnonzero(mask)
        data = np.frombuffer(data, np.uint8)
        r0 = int(pos[ks[0]]) % rb  # where the rows of this block start
        table = data[r0:r0 + (len(data) - r0) // rb * rb].reshape(-1, rb)
        dest[ks] = table[(pos[ks] - r0) // rb]

    def _read_pieces(self, starts, dest, ks, fresh, cache):
        """Rows ``ks`` at byte ``starts[ks]`` into ``dest``, block piece by block
        piece: from ``fresh``, the cache's files, or fetched again."""
        bs, rb = self._block_size, self._rowbytes
        fds = {}
        try:
            for k in ks.tolist():
                s = int(starts[k])
                row = memoryview(dest[k])
                b, pos = divmod(s, bs)
                done = 0
                while done < rb:
                    n = min(rb - done, bs - pos)
                    piece = row[done:done + n]
                    data = fresh.get(b)
                    if data is None:
                        fd = fds.get(b)
                        if fd is None:
                            fd = fds[b] = cache.open(self._key, b,
                                                     self._block_length(b))
                        if fd is None or os.preadv(fd, [piece], pos) != n:
                            # Evicted (or damaged) since _fill looked: fetch it.
                            if fd is not None:
                                os.close(fd)
                                del fds[b]
                            data = fresh[b] = self._fetch(
                                [(b * bs, b * bs + self._block_length(b))])[0]
                            cache.put(self._key, b, data)
                    if data is not None:
                        piece[:] = memoryview(data)[pos:pos + n]
                    done += n
                    b, pos = b + 1, 0
        finally:
            for fd in fds.values():
                if fd is not None:
                    os.close(fd)

    # -- read-ahead -------------------------------------------------------------------
    def prefetch_rows(self, indices):
        """Fetch the blocks of rows ``indices`` into the cache, in the background.

        The read-ahead hook for loaders that know which rows they will read: the
        call returns at once (it only queues the request), a few threads per
        process fetch the queued blocks that are not cached yet, and later reads
        of those rows find them on local disk. Without a cache (no ``cache_dir``)
        there is nowhere to put them, and the call does nothing.

        Parameters
        ----------
        indices : array_like of int
            Row numbers, ``0 <= i < len(self)``; out-of-range ones are ignored.

        Returns
        -------
        concurrent.futures.Future or None
            Done when the blocks are cached (its result: the number of blocks
            fetched; its exception: the read's, which a later read will meet
            again); None when nothing was queued: no cache, or the queue
            already holds :data:`~seqtools.storage.PREFETCH_QUEUE` requests
            (read-ahead is a hint: it is dropped rather than block the caller).
        """
        if self._cache_dir is None or self._rowbytes == 0:
            return None
        if (self._cache_dir, self._key) in _complete:
            return prefetch_done  # every block seen cached: a warm cache costs nothing
        rows = np.unique(np.asarray(indices, dtype=np.int64).reshape(-1))
        rows = rows[(rows >= 0) & (rows < self._n)]
        if len(rows) == 0:
            return None
        blocks = self._blocks_of(self._offset + rows * self._rowbytes).tolist()
        # Blocks this process saw cached are skipped without a look at the disk:
        # once the cache is warm, read-ahead costs the loop next to nothing.
        known = _seen.get((self._cache_dir, self._key), ())
        blocks = [b for b in blocks if b not in known]
        if not blocks:
            return prefetch_done
        return _prefetcher().submit(self, blocks)

    def _prefetch_blocks(self, blocks):
        return len(self._fill(blocks, self._cache()))


def _rebuild(*args):
    return RemoteArray(*args)


# The future of a read-ahead with nothing to fetch: done, its result 0 (a done
# future runs the callbacks added to it at once and keeps none, so one serves
# every such call).
prefetch_done = Future()
prefetch_done.set_result(0)


# (cache folder, object key) -> the blocks this process found in the cache or
# put there: reads take them as cached and read-ahead skips them. It may hold
# blocks evicted since (the read fetches those), never blocks that were not
# cached.
_seen = {}
_SEEN_LIMIT = 1 << 20  # blocks over all objects, past which it starts again
_seen_total = 0
# The keys of _seen whose every block was seen: read-ahead of them is skipped.
_complete = set()


def _see(arr, blocks):
    """Note ``arr``'s ``blocks`` as cached."""
    global _seen_total
    key = (arr._cache_dir, arr._key)
    if _seen_total > _SEEN_LIMIT:
        _seen.clear()
        _complete.clear()
        _seen_total = 0
    known = _seen.get(key)
    if known is None:
        known = _seen[key] = set()
    before = len(known)
    known.update(blocks)
    _seen_total += len(known) - before
    if len(known) == arr._nblocks:
        _complete.add(key)


def _unsee(arr, blocks):
    """``arr``'s ``blocks`` were found evicted."""
    key = (arr._cache_dir, arr._key)
    known = _seen.get(key)
    if known is not None:
        known.difference_update(blocks)
    _complete.discard(key)


def all_seen(arrays):
    """Whether every block of the remote ``arrays`` was seen cached by this
    process: read-ahead of them has nothing left to fetch (blocks evicted
    since are fetched by the reads that find them gone)."""
    for arr in arrays:
        if (arr._cache_dir, arr._key) not in _complete:
            return False
    return True


# Blocks being fetched by a thread of this process: (object key, block) -> Event,
# set when the fetch ends (cached, or failed).
_inflight = {}
_inflight_lock = threading.Lock()


def _claim(key, blocks):
    """``(mine, theirs)``: the blocks this thread is to fetch (now marked in
    flight), and the events of those another thread is fetching."""
    mine, theirs = [], []
    with _inflight_lock:
        for b in blocks:
            event = _inflight.get((key, b))
            if event is None:
                _inflight[(key, b)] = threading.Event()
                mine.append(b)
            else:
                theirs.append(event)
    return mine, theirs


def _release(key, blocks):
    with _inflight_lock:
        for b in blocks:
            event = _inflight.pop((key, b), None)
            if event is not None:
                event.set()


# -- the cached object as one array --------------------------------------------------


class _Mapped:
    """A cached object's blocks mapped side by side into one address range
    (:class:`._objmap.ObjectMap`, which knows the blocks in place), with its
    rows seen as one array over it.

    Only rows whose blocks are all in place are read (elsewhere the range
    faults). Blocks are added, never taken out: a mapped block evicted from
    the cache keeps its bytes (and its disk space) until the whole map is
    dropped, which :meth:`bump` does when it finds one evicted, and the
    process's budgets (:func:`_budget`) bound. While the object is read, its
    mapped blocks' times are bumped every ``BUMP_SECONDS`` so that the cache's
    LRU order sees them in use.
    """

    __slots__ = ("key", "block_size", "objmap", "rows", "bumped", "lock")

    def __init__(self, arr):
        self.key = (arr._cache_dir, arr._key)
        self.block_size = arr._block_size
        self.objmap = ObjectMap(arr._size, arr._block_size)
        data = np.frombuffer(self.objmap, np.uint8, count=arr._n * arr._rowbytes,
                             offset=arr._offset)
        self.rows = data.view(arr._dtype).reshape(arr._shape)
        self.bumped = time.monotonic()
        self.lock = threading.Lock()

    def bump(self, cache):
        """Bump the mapped blocks' times (LRU); drop this map from the
        process's maps if one of them was evicted, so that its disk space goes
        and the next read maps what the cache holds now."""
        with self.lock:
            if time.monotonic() - self.bumped <= BUMP_SECONDS:
                return  # another thread did it
            self.bumped = time.monotonic()
            blocks = self.objmap.mapped_blocks()
        folder = os.path.join(cache.root, self.key[1])
        for b in blocks:
            try:
                os.utime(os.path.join(folder, str(b)))
            except OSError:
                _drop_map(self)
                return


# (cache folder, object key) -> _Mapped, oldest first.
_maps = {}
_maps_lock = threading.Lock()
#: Blocks a process keeps mapped at most, over all objects: each is a mapping
#: of its own (Linux allows some 65,000 per process, vm.max_map_count), and
#: one evicted from the cache holds its disk space until it is unmapped.
MAP_BLOCKS = 16384


def _object_map(arr):
    """The :class:`_Mapped` of ``arr``'s object in this process, made on first
    use; None when its blocks cannot be mapped (a block size that is not a
    multiple of the page size, no rows)."""
    if arr._rowbytes == 0 or arr._block_size % PAGE_SIZE or arr._size == 0:
        return None
    key = (arr._cache_dir, arr._key)
    m = _maps.get(key)
    if m is None:
        with _maps_lock:
            m = _maps.get(key)
            if m is None:
                try:
                    m = _maps[key] = _Mapped(arr)
                except OSError:  # no address space left
                    return None
    return m


def _budget(arr, m, more):
    """Whether ``more`` blocks of ``arr`` may be mapped into its map ``m``:
    within MAP_BLOCKS over all objects, and within ``cache_size`` bytes over
    the objects of its cache (mapped blocks hold their disk space). Other
    objects' maps, oldest first, are dropped to make room."""
    def fits():
        if sum(x.objmap.nmapped for x in _maps.values()) + more > MAP_BLOCKS:
            return False
        if arr._cache_size is None:
            return True
        used = sum(x.objmap.nmapped * x.block_size for x in _maps.values()
                   if x.key[0] == m.key[0])
        return used + more * arr._block_size <= arr._cache_size

    with _maps_lock:
        for other in list(_maps.values()):
            if fits():
                return True
            if other is not m:
                del _maps[other.key]
        return fits()


def _drop_map(m):
    with _maps_lock:
        if _maps.get(m.key) is m:
            del _maps[m.key]


def _coalesce(starts, length, max_gap, max_range):
    """Ranges over the byte ``starts`` (sorted) of pieces of ``length`` bytes:
    ``[(lo, hi, k0, k1)]``, pieces ``k0 <= k < k1`` in ``[lo, hi)``."""
    groups = []
    k0 = 0
    lo = starts[0]
    hi = lo + length
    for k in range(1, len(starts)):
        s = starts[k]
        if s - hi <= max_gap and s + length - lo <= max_range:
            hi = s + length
            continue
        groups.append((lo, hi, k0, k))
        k0, lo, hi = k, s, s + length
    groups.append((lo, hi, k0, len(starts)))
    return groups


def _runs(blocks, longest):
    """Runs ``[(b0, b1)]`` of consecutive block numbers, at most ``longest`` each."""
    runs = []
    b0 = prev = blocks[0]
    for b in blocks[1:]:
        if b == prev + 1 and b - b0 < longest:
            prev = b
            continue
        runs.append((b0, prev + 1))
        b0 = prev = b
    runs.append((b0, prev + 1))
    return runs


#: Read-ahead requests a process keeps queued; more are dropped.
PREFETCH_QUEUE = 64
_PREFETCH_THREADS = 4


class _Prefetcher:
    """Daemon threads fetching queued blocks into the cache (one per process):
    daemons, so that a queue of read-ahead never delays the interpreter's exit."""

    def __init__(self):
        self.pid = os.getpid()
        self.queue = queue.Queue(PREFETCH_QUEUE)
        self.threads = []
        for _ in range(_PREFETCH_THREADS):
            t = threading.Thread(target=self._run, name="seqtools-prefetch",
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def submit(self, array, blocks):
        future = Future()
        try:
            self.queue.put_nowait((future, array, blocks))
        except queue.Full:
            return None
        return future

    def _run(self):
        while True:
            future, array, blocks = self.queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(array._prefetch_blocks(blocks))
            except BaseException as exc:  # handed to whoever looks at the future
                future.set_exception(exc)


_prefetchers = {}
_prefetch_lock = threading.Lock()


def _prefetcher():
    pid = os.getpid()
    p = _prefetchers.get(pid)
    if p is None:
        with _prefetch_lock:
            p = _prefetchers.get(pid)
            if p is None:
                _prefetchers.clear()  # a forked parent's: its threads are gone
                p = _prefetchers[pid] = _Prefetcher()
    return p


def _reset_after_fork():
    # The parent's threads, their fetches in flight and their locks are not in
    # the child.
    global _prefetch_lock, _inflight_lock, _maps_lock
    _prefetch_lock = threading.Lock()
    _prefetchers.clear()
    _inflight_lock = threading.Lock()
    _inflight.clear()
    # The maps are valid in the child (inherited), but their locks may have
    # been held by a thread that is not here: each process maps its own.
    _maps_lock = threading.Lock()
    _maps.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _remote_rows(seq, indices, found):
    """Append ``(remote array, rows)`` for items ``indices`` of view ``seq``,
    following index-only views, collations and concatenations; other views
    (``smap``...) are not looked into."""
    seq, indices = peel(seq, indices)
    if isinstance(seq, RemoteArray):
        found.append((seq, indices))
        return
    if View not in type(seq).__mro__ or len(indices) == 0:
        return
    prog = program(seq)
    if prog is not None:
        for leaf, (part, local) in zip(prog.leaves,
                                       prog.resolver.resolve(indices)):
            if leaf.spec is None:
                _remote_rows(leaf.seq, local, found)
            elif leaf.prepare:  # arrays, and remote arrays among them
                for j, src in enumerate(leaf.seq):
                    if isinstance(src, RemoteArray):
                        rows = local if part is None else local[part == j]
                        if len(rows):
                            found.append((src, rows))
        return
    locate_parts = getattr(seq, "_locate_parts", None)  # concatenations
    if locate_parts is not None:
        part, local = locate_parts(indices)
        parts = seq.sequences
        for j in np.unique(part).tolist():
            _remote_rows(parts[j], local[part == j], found)


def reads_ahead(dataset):
    """Whether :func:`prefetch` over ``dataset`` can fill a cache: whether a
    :class:`RemoteArray` with a ``cache_dir`` is among the views under it.

    A walk over the view graph (the views' slots), once per loader: no item
    is read, nothing is opened, and a graph with no remote array costs a visit
    of each view. It may say yes for a remote array that only a view
    :func:`prefetch` does not look into (``smap``...) reaches: read-ahead then
    finds no rows, which costs a walk per batch and changes nothing.
    """
    return bool(cached_arrays(dataset))


def cached_arrays(dataset):
    """The :class:`RemoteArray` views with a ``cache_dir`` under ``dataset``
    (the walk of :func:`reads_ahead`), each once."""
    found, stack, seen = [], [dataset], set()
    while stack:
        seq = stack.pop()
        if id(seq) in seen or View not in type(seq).__mro__:
            continue
        seen.add(id(seq))
        if isinstance(seq, RemoteArray):
            if seq._cache_dir is not None and seq._rowbytes > 0:
                found.append(seq)
            continue
        for cls in type(seq).__mro__:
            for name in cls.__dict__.get("__slots__", ()):
                value = getattr(seq, name, None)
                if isinstance(value, (tuple, list)):
                    stack.extend(v for v in value if View in type(v).__mro__)
                elif View in type(value).__mro__:
                    stack.append(value)
    return found


def prefetch(dataset, indices):
    """Fetch into the cache, in the background, the remote rows that reading items
    ``indices`` of ``dataset`` will read.

    The read-ahead hook for a loader: ``prefetch(dataset, idx)`` before
    ``stack(gather(dataset, idx))`` is read later. Follows gathers, slices,
    ``collate`` and ``concatenate`` down to the :class:`RemoteArray` leaves and
    calls their :meth:`~RemoteArray.prefetch_rows`; returns at once.

    Parameters
    ----------
    dataset : sequence
        A view over remote arrays (other sources are skipped).
    indices : array_like of int
        Items of ``dataset``, ``0 <= i < len(dataset)``.

    Returns
    -------
    list of concurrent.futures.Future
        One per remote array with rows to fetch (requests dropped because the
        queue is full, or without a cache, are left out).
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    found = []
    _remote_rows(dataset, indices, found)
    futures = [arr.prefetch_rows(rows) for arr, rows in found]
    return [f for f in futures if f is not None]


# -- opening ------------------------------------------------------------------------


def _has_magic(path):
    return any(c in path for c in "*?[")


def _expand(paths, storage_options, timeout):
    """The list of paths and URLs that ``paths`` names, globs expanded, sorted."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    elif not isinstance(paths, (list, tuple)):
        raise TypeError(f"open_npy(): paths must be a path, a URL, or a list of "
                        f"them, not {type(paths).__name__}")
    out = []
    for p in paths:
        if isinstance(p, os.PathLike):
            p = os.fspath(p)
        if not isinstance(p, str):
            raise TypeError(f"open_npy(): paths must be strings or path-like, not "
                            f"{type(p).__name__} {p!r}")
        if p.startswith("file://"):
            p = p[len("file://"):]
        if not _has_magic(p):
            out.append(p)
            continue
        if _fetch.is_url(p):
            found = _fetch.call("glob", p, storage_options, timeout)
            fs = _fetch.filesystem(_fetch.split_url(p)[0], storage_options, p)
            matches = sorted(fs.unstrip_protocol(m) for m in found)
        else:
            matches = sorted(_glob.glob(p))
        if not matches:
            raise ObjectNotFound(f"open_npy(): nothing matches {p}", p)
        out.extend(matches)
    return out


def _open_local(path):
    try:
        arr = np.lib.format.open_memmap(path, mode="r")
    except FileNotFoundError:
        raise ObjectNotFound(f"open_npy(): {path} does not exist", path) from None
    if arr.ndim == 0:
        raise ValueError(f"open_npy(): {path} holds a 0-d array: open_npy needs "
                         "arrays with rows (ndim >= 1)")
    return arr


def _version(info):
    for name in ("ETag", "etag", "generation", "VersionId", "mtime",
                 "LastModified", "last_modified", "updated", "created"):
        value = info.get(name)
        if value is not None:
            return str(value)
    return None


def _open_remote(url, options, cache_dir, cache_size, block_size, timeout):
    info = _fetch.call("info", url, options, timeout)
    size = info.get("size")
    if size is None:
        raise StorageError(f"{url}: the store does not tell the object's size, "
                           "which reading rows needs", url)
    probe = min(size, PROBE_BYTES)
    head = b""
    if probe:
        head = _fetch.fetch_ranges(url, options, [(0, probe)], timeout,
                                   opened=False)[0]
    total = header_length(head, url)
    if total > len(head) and total <= size:
        head = _fetch.fetch_ranges(url, options, [(0, total)], timeout,
                                   opened=False)[0]
    dtype, shape, offset = parse_header(head, url, size)
    return RemoteArray(url, dtype, shape, offset, size, _version(info), options,
                       cache_dir, cache_size, block_size, timeout)


def open_npy(paths, *, storage_options=None, cache_dir=None, cache_size=None,
             block_size=DEFAULT_BLOCK_SIZE, timeout=DEFAULT_TIMEOUT):
    """Open ``.npy`` files, local or in an object store, as row-indexable arrays.

    Parameters
    ----------
    paths : str, os.PathLike or list of them
        Local paths, URLs (``s3://bucket/key.npy``, ``gs://...``,
        ``https://...``, anything fsspec opens), globs of either
        (``"s3://bucket/train-*.npy"``, expanded and sorted), or a list of them.
    storage_options : dict, optional
        Options of the fsspec filesystem (``key``, ``secret``,
        ``endpoint_url``, ``client_kwargs``, ``token``...). For ``s3://``,
        short retry and timeout settings of s3fs are added where not given, so
        that ``timeout`` bounds a read.
    cache_dir : str, optional
        A folder for the block cache, shared by the processes (workers, ranks)
        of the node that use the same folder. None: no cache, every read goes to
        the store.
    cache_size : int, optional
        Bytes the cache may hold; the least recently used blocks are deleted
        beyond it. None: no bound (the disk's).
    block_size : int
        Bytes per cached block (default 1 MiB).
    timeout : float
        Seconds a read (one batch of range requests) may take, retries of a
        failing store included, before it fails (default 60: see
        :data:`DEFAULT_TIMEOUT`).

    Returns
    -------
    list
        One array per file, in the order of ``paths`` (each glob's matches
        sorted): read-only memory-mapped ``numpy.ndarray`` for local files,
        :class:`RemoteArray` for URLs. Concatenate them with
        :func:`seqtools.concatenate`.

    Raises
    ------
    ObjectNotFound
        A file or object does not exist, or a glob matches nothing.
    AccessDenied
        The store refused the credentials.
    CorruptObject
        A remote object is not a ``.npy`` file of rows: truncated, a corrupt
        header, a Fortran-ordered or object array (local files: numpy's
        ValueError).
    StoreUnavailable
        The store did not answer within ``timeout``.
    ImportError
        A URL was given and fsspec (or its backend, s3fs, gcsfs) is not
        installed: ``pip install 'seqtools[remote]'``.

    Examples
    --------
    >>> import os, tempfile, numpy as np, seqtools
    >>> folder = tempfile.mkdtemp()
    >>> for k in range(3):
    ...     np.save(os.path.join(folder, f"train-{k}.npy"), np.full((4, 2), k))
    >>> chunks = seqtools.open_npy(os.path.join(folder, "train-*.npy"))
    >>> data = seqtools.concatenate(chunks)
    >>> seqtools.stack(seqtools.gather(data, [0, 5, 11]))[:, 0]
    array([0, 1, 2])

    With ``"s3://bucket/train-*.npy"`` and
    ``storage_options={"endpoint_url": ...}`` the same code reads from the store.
    """
    if storage_options is not None and not isinstance(storage_options, dict):
        raise TypeError("open_npy(): storage_options must be a dict or None, not "
                        f"{type(storage_options).__name__}")
    block_size = _positive_int(block_size, "block_size")
    if cache_size is not None:
        cache_size = _positive_int(cache_size, "cache_size")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"open_npy(): timeout must be a positive number of "
                         f"seconds, not {timeout!r}")
    if cache_dir is not None:
        cache_dir = os.path.abspath(os.fspath(cache_dir))
    options = dict(storage_options or {})
    expanded = _expand(paths, options, float(timeout))
    remote = [k for k, p in enumerate(expanded) if _fetch.is_url(p)]
    result = [None] * len(expanded)
    for k, p in enumerate(expanded):
        if not _fetch.is_url(p):
            result[k] = _open_local(p)
    if len(remote) == 1:
        k = remote[0]
        result[k] = _open_remote(expanded[k], options, cache_dir, cache_size,
                                 block_size, float(timeout))
    elif remote:
        # The headers of many chunks: a few requests in flight at once.
        with ThreadPoolExecutor(min(_OPEN_THREADS, len(remote))) as pool:
            futures = {k: pool.submit(_open_remote, expanded[k], options, cache_dir,
                                      cache_size, block_size, float(timeout))
                       for k in remote}
            for k, f in futures.items():
                result[k] = f.result()
    return result


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"open_npy(): {name} must be an integer, not "
                        f"{type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"open_npy(): {name} must be > 0, not {value}")
    return int(value)
