"""A folder of fixed-size blocks of remote objects, shared by the processes of a
node: the workers and ranks reading one dataset fetch each block once.

Layout: ``<cache_dir>/<object key>/<block number>``, where the object key is a
hash of the URL, the object's size and version (ETag...) and the block size, so
that an object written again is never served from the blocks of the old one.

Safe without locks:

- **A partial block is never served.** A block is written to a temporary file
  (``.tmp-<pid>-...``) in the same folder and renamed into place
  (``os.replace``, atomic on POSIX): its name exists only once it is whole. A
  process killed mid-write leaves a temporary file that no read opens, removed by
  the next eviction scan once it is an hour old. A read also checks the block's
  size against the object's (a block of the wrong size is deleted and fetched
  again).
- **Two processes fetching one block** each write their own temporary file and
  rename it; the last rename wins and the contents are the same bytes.
- **Eviction** (least recently used, by modification time, which a read bumps:
  access times are often not kept): a process that has written more than a
  sixteenth of ``cache_size`` since its last scan lists the cache and deletes the
  oldest blocks until the total is below 90% of ``cache_size``. The cache can
  therefore pass ``cache_size`` by up to a sixteenth per writing process between
  scans. A block deleted while another process reads it stays readable through
  the open file; one deleted just before is a miss, fetched again.
"""

import collections
import mmap
import os
import threading
import time

import numpy as np

__all__ = ["BlockCache", "cache_for", "MAPPED", "BUMP_SECONDS"]

#: Block files a process keeps mapped for warm reads.
MAPPED = 256
#: Seconds between two bumps of a mapped block's time (its place in the LRU).
BUMP_SECONDS = 10.0
_TMP = ".tmp-"
_STALE_TMP = 3600.0  # seconds after which a temporary file is a dead writer's
_LOW_WATER = 0.9


class BlockCache:
    """The blocks under ``root``, bounded by ``size_limit`` bytes (None: no bound).

    One object per process and folder (:func:`cache_for`); its methods are
    thread-safe.
    """

    def __init__(self, root, size_limit):
        self.root = os.path.abspath(root)
        self.size_limit = size_limit
        self._written = 0  # bytes written since this process's last scan
        self._lock = threading.Lock()
        self._maps = collections.OrderedDict()  # (key, block) -> [array, bumped]
        os.makedirs(self.root, exist_ok=True)

    def _path(self, key, block):
        return os.path.join(self.root, key, str(block))

    def contains(self, key, block, length):
        """True when the block is cached with ``length`` bytes."""
        try:
            return os.stat(self._path(key, block)).st_size == length
        except OSError:
            return False

    def open(self, key, block, length):
        """A file descriptor of the block, or None when it is not cached whole.

        The caller reads it with ``os.preadv`` and closes it. Bumps its time for
        the LRU order.
        """
        path = self._path(key, block)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size != length:
                # Not ours to serve: a block of another size (a disk that lost
                # data); remove it so that the next read fetches it again.
                os.close(fd)
                try:
                    os.unlink(path)
                except OSError:
                    pass
                return None
            os.utime(fd)
        except OSError:
            os.close(fd)
            return None
        return fd

    def map(self, key, block, length):
        """The block as a read-only uint8 array over a memory map of its file, or
        None when it is not cached whole.

        The process keeps the last :data:`MAPPED` maps open, so that warm reads
        make no system call; a map stays valid when the file is evicted or
        replaced (blocks are only ever unlinked or renamed over, never written in
        place, and a replacement holds the same bytes). A mapped block's time is
        bumped once per :data:`BUMP_SECONDS` at most.
        """
        entry_key = (key, block)
        now = time.monotonic()
        with self._lock:
            entry = self._maps.get(entry_key)
            if entry is not None:
                self._maps.move_to_end(entry_key)
        if entry is not None:
            array, bumped = entry
            if now - bumped > BUMP_SECONDS:
                try:
                    os.utime(self._path(key, block))
                except OSError:
                    pass
                entry[1] = now
            return array
        fd = self.open(key, block, length)
        if fd is None:
            return None
        try:
            mm = mmap.mmap(fd, length, prot=mmap.PROT_READ)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        array = np.frombuffer(mm, np.uint8)
        with self._lock:
            self._maps[entry_key] = [array, now]
            while len(self._maps) > MAPPED:
                self._maps.popitem(last=False)
        return array

    def put(self, key, block, data):
        """Store ``data`` (bytes-like, or an iterable of bytes-like chunks) as the
        block, atomically; then evict if this process has written enough.

        Failures to write (a full disk, a removed folder) are not errors of the
        read: the block is simply not cached.
        """
        folder = os.path.join(self.root, key)
        tmp = os.path.join(
            folder, f"{_TMP}{os.getpid()}-{threading.get_ident()}-"
                    f"{os.urandom(4).hex()}")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                os.makedirs(folder, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            nbytes = 0
            try:
                chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) \
                    else data
                for chunk in chunks:
                    view = memoryview(chunk).cast("B")
                    while view:
                        n = os.write(fd, view)
                        nbytes += n
                        view = view[n:]
            finally:
                os.close(fd)
            os.replace(tmp, self._path(key, block))
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
        if self.size_limit is not None:
            with self._lock:
                self._written += nbytes
                due = self._written * 16 >= self.size_limit
                if due:
                    self._written = 0
            if due:
                self.evict()
        return True

    def scan(self):
        """``(total bytes, [(mtime, size, path), ...])`` of the cached blocks;
        removes temporary files of dead writers on the way."""
        entries = []
        total = 0
        now = time.time()
        try:
            folders = list(os.scandir(self.root))
        except OSError:
            return 0, []
        for folder in folders:
            if not folder.is_dir(follow_symlinks=False):
                continue
            try:
                files = list(os.scandir(folder.path))
            except OSError:
                continue
            for f in files:
                try:
                    st = f.stat(follow_symlinks=False)
                except OSError:
                    continue
                if f.name.startswith(_TMP):
                    if now - st.st_mtime > _STALE_TMP:
                        _unlink(f.path)
                    continue
                entries.append((st.st_mtime, st.st_size, f.path))
                total += st.st_size
        return total, entries

    def evict(self):
        """Delete the least recently used blocks until the cache holds less than
        90% of ``size_limit``; returns the bytes deleted."""
        if self.size_limit is None:
            return 0
        total, entries = self.scan()
        if total <= self.size_limit:
            return 0
        entries.sort()
        target = self.size_limit * _LOW_WATER
        freed = 0
        for _, size, path in entries:
            if total - freed <= target:
                break
            if _unlink(path):
                freed += size
        return freed


def _unlink(path):
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


_caches = {}  # (pid, root, size_limit) -> BlockCache
_caches_lock = threading.Lock()


def _after_fork():
    global _caches_lock
    _caches_lock = threading.Lock()
    _caches.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def cache_for(root, size_limit):
    """The :class:`BlockCache` of ``root`` in this process."""
    key = (os.getpid(), root, size_limit)
    cache = _caches.get(key)
    if cache is None:
        with _caches_lock:
            cache = _caches.get(key)
            if cache is None:
                cache = _caches[key] = BlockCache(root, size_limit)
    return cache
