"""Tests of seqtools.storage.blockcache: atomic blocks, LRU eviction to the size
bound, a writer killed mid-write (SIGKILL) leaves nothing that is served, and
processes writing the same block at once.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from seqtools.storage.blockcache import BlockCache, cache_for


def read_block(cache, key, block, length):
    fd = cache.open(key, block, length)
    if fd is None:
        return None
    try:
        buf = bytearray(length)
        assert os.preadv(fd, [buf], 0) == length
        return bytes(buf)
    finally:
        os.close(fd)


def test_put_then_read(tmp_path):
    cache = BlockCache(str(tmp_path), None)
    assert read_block(cache, "k", 3, 5) is None
    assert cache.put("k", 3, b"hello")
    assert cache.contains("k", 3, 5)
    assert read_block(cache, "k", 3, 5) == b"hello"
    assert cache.put("k", 4, [b"ab", memoryview(b"cde")])  # chunks
    assert read_block(cache, "k", 4, 5) == b"abcde"
    # a block of another length than the object says is not served, and goes
    assert read_block(cache, "k", 3, 6) is None
    assert not os.path.exists(tmp_path / "k" / "3")
    assert cache_for(str(tmp_path), None) is cache_for(str(tmp_path), None)


def test_lru_eviction_keeps_the_recent_blocks(tmp_path):
    cache = BlockCache(str(tmp_path), 10_000)
    for b in range(8):
        cache.put("k", b, bytes(1000))
    now = time.time()
    for b in range(8):  # block b last used b minutes ago... except 0, just read
        os.utime(tmp_path / "k" / str(b), (now - 60 * b, now - 60 * b))
    assert read_block(cache, "k", 7, 1000) is not None  # bumps block 7
    for b in range(8, 14):  # over the bound: evictions as writes go
        cache.put("k", b, bytes(1000))
    total, entries = cache.scan()
    assert total <= 10_000
    kept = {int(os.path.basename(p)) for _, _, p in entries}
    assert 7 in kept and {8, 9, 10, 11, 12, 13} <= kept
    assert not {6, 5, 4} & kept  # the least recently used went first


def test_a_block_larger_than_the_bound_is_not_kept(tmp_path):
    cache = BlockCache(str(tmp_path), 100)
    cache.put("k", 0, bytes(1000))
    assert cache.scan()[0] <= 100


WRITER = textwrap.dedent("""
    import sys, time
    from seqtools.storage.blockcache import BlockCache

    def chunks():
        yield b"x" * 4096
        open(sys.argv[2], "w").close()  # half the block is written
        time.sleep(120)
        yield b"y" * 4096

    BlockCache(sys.argv[1], None).put("k", 0, chunks())
""")


@pytest.mark.timeout(60)
def test_writer_killed_mid_write_leaves_no_block(tmp_path):
    root, flag = str(tmp_path / "cache"), str(tmp_path / "flag")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, root, flag],
                            cwd=str(tmp_path))
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(flag):
            assert proc.poll() is None, "the writer died before writing"
            assert time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    cache = BlockCache(root, 1 << 20)
    assert not cache.contains("k", 0, 8192)
    assert read_block(cache, "k", 0, 8192) is None
    assert read_block(cache, "k", 0, 4096) is None  # not even the half
    leftovers = os.listdir(os.path.join(root, "k"))
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-")
    # the next scan removes a dead writer's temporary file once it is old
    old = time.time() - 7200
    os.utime(os.path.join(root, "k", leftovers[0]), (old, old))
    assert cache.scan() == (0, [])
    assert os.listdir(os.path.join(root, "k")) == []
    # and the block can be written whole
    cache.put("k", 0, b"z" * 8192)
    assert read_block(cache, "k", 0, 8192) == b"z" * 8192


RACER = textwrap.dedent("""
    import sys
    from seqtools.storage.blockcache import BlockCache

    cache = BlockCache(sys.argv[1], None)
    for _ in range(200):
        cache.put("k", 0, bytes(range(256)) * 256)
""")


@pytest.mark.timeout(60)
def test_processes_writing_the_same_block(tmp_path):
    root = str(tmp_path)
    # cwd: the installed seqtools, not the checkout's source folder
    procs = [subprocess.Popen([sys.executable, "-c", RACER, root], cwd=root)
             for _ in range(2)]
    cache = BlockCache(root, None)
    want = bytes(range(256)) * 256
    seen = 0
    while any(p.poll() is None for p in procs):
        got = read_block(cache, "k", 0, len(want))
        if got is not None:
            assert got == want  # whole, whoever renamed last
            seen += 1
    for p in procs:
        assert p.wait(30) == 0
    assert read_block(cache, "k", 0, len(want)) == want
    assert [n for n in os.listdir(tmp_path / "k") if n.startswith(".tmp")] == []
