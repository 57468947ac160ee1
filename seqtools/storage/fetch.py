"""Byte ranges of remote objects, fetched through fsspec with retries in a time
budget: the one place that talks to a store.

fsspec (and s3fs, gcsfs...) is imported only here, and only when a URL is
opened. A filesystem object is made once per process and set of options
(:func:`filesystem`, keyed by ``os.getpid()``): fsspec's async filesystems run an
event loop thread that a forked child does not have, so a child never uses its
parent's object.

Every wait is bounded. :func:`fetch_ranges` gives each read a budget in seconds
(``timeout``); each attempt is cut by fsspec's own ``timeout=`` at what remains of
it (30 s at most, so that one stuck connection does not use all of it), failed
ranges are asked again with exponential backoff and jitter, and when the budget
is spent the read fails with :class:`~.errors.StoreUnavailable` naming the URL,
the range and the last error. A missing object or refused credentials fail at
once (when the object was opened before, a missing object is retried within the
budget instead: a store that restarts can answer 404 for a moment).
"""

import copy
import json
import os
import random
import threading
import time

from .errors import AccessDenied, ObjectNotFound, StorageError, StoreUnavailable

__all__ = ["filesystem", "discard", "fetch_ranges", "call", "split_url", "is_url",
           "ATTEMPT_TIMEOUT"]

#: Seconds one attempt (one request, or one batch of concurrent requests) may
#: take before it is abandoned and retried, when the budget allows.
ATTEMPT_TIMEOUT = 30.0
#: The same for a request about an object (its size, a listing): small answers,
#: so a store silent this long is retried on a new connection.
METADATA_TIMEOUT = 5.0
_FIRST_DELAY = 0.05
_MAX_DELAY = 2.0

_filesystems = {}  # (pid, protocol, options as JSON) -> filesystem
_lock = threading.Lock()


def _after_fork():
    # The parent's lock may have been held by another thread at the fork; its
    # filesystems belong to the parent's event loop.
    global _lock
    _lock = threading.Lock()
    _filesystems.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def is_url(path):
    """True when ``path`` names a remote object (``protocol://...`` other than
    ``file://``)."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def split_url(url):
    """``(protocol, url)``: the protocol fsspec opens ``url`` with."""
    return url.split("://", 1)[0], url


def _import_fsspec(url):
    try:
        import fsspec
    except ImportError:
        raise ImportError(
            f"reading {url} needs fsspec (and s3fs for s3://, gcsfs for gs://): "
            "pip install 'seqtools[remote]'") from None
    return fsspec


# Settings of botocore under s3fs that keep one request's retries and waits short
# (s3fs adds its own few retries, under two seconds), so that the budget of
# fetch_ranges is what bounds a read, and that let a batch's ranges go out at
# once (botocore keeps 10 connections by default: 64 ranges would wait for each
# other); used where the caller has not set config_kwargs.
_S3_DEFAULTS = {
    "config_kwargs": {"connect_timeout": 5, "read_timeout": 10,
                      "max_pool_connections": 64,
                      "retries": {"max_attempts": 2, "mode": "standard"}},
}


def filesystem(protocol, storage_options, url):
    """The fsspec filesystem of ``protocol`` with ``storage_options`` for this
    process (made on first use, never shared with a forked child)."""
    options = dict(storage_options or {})
    try:
        token = json.dumps(options, sort_keys=True, default=repr)
    except TypeError:
        token = repr(sorted(options.items(), key=lambda kv: kv[0]))
    key = (os.getpid(), protocol, token)
    fs = _filesystems.get(key)
    if fs is not None:
        return fs
    fsspec = _import_fsspec(url)
    if protocol in ("s3", "s3a"):
        for name, value in _S3_DEFAULTS.items():
            if name not in options:
                options[name] = copy.deepcopy(value)
    with _lock:
        fs = _filesystems.get(key)
        if fs is None:
            try:
                fs = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
            except ImportError as exc:
                raise ImportError(
                    f"reading {url} needs the fsspec backend of {protocol}:// "
                    f"({exc}); pip install 'seqtools[remote]'") from None
            for old in [k for k in _filesystems if k[0] != key[0]]:
                del _filesystems[old]
            _filesystems[key] = fs
    return fs


def _permanent(exc, url, byte_range, opened):
    """The error to raise at once for ``exc``, or None to retry it."""
    where = ""
    if byte_range is not None:
        where = f" (bytes [{byte_range[0]}, {byte_range[1]}))"
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, FileNotFoundError) and not opened:
        return ObjectNotFound(
            f"{url} does not exist{where}: check the bucket and key (a glob lists "
            "what there is)", url, byte_range)
    name = type(exc).__name__
    if isinstance(exc, PermissionError) or name in (
            "NoCredentialsError", "PartialCredentialsError", "ClientAuthError"):
        return AccessDenied(
            f"the store refused access to {url}{where}: {name}: {exc}. Check the "
            "credentials (storage_options key/secret/token, or the environment: "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS)"
            " and the bucket's policy", url, byte_range)
    if isinstance(exc, (TypeError, ValueError, NotImplementedError)) and not (
            isinstance(exc, OSError)):
        return exc  # a programming error or a bad option: retrying cannot help
    return None


def _cat(fs, url, ranges, timeout):
    """One attempt at ``ranges``: a list of bytes or exceptions, one per range."""
    if getattr(fs, "async_impl", False):
        # Concurrent requests on fsspec's event loop, the whole attempt bounded.
        return fs.cat_ranges([url] * len(ranges), [r[0] for r in ranges],
                             [r[1] for r in ranges], on_error="return",
                             timeout=timeout)
    out = []
    for start, stop in ranges:
        try:
            out.append(fs.cat_file(url, start=start, end=stop))
        except Exception as exc:  # returned per range, as cat_ranges does
            out.append(exc)
    return out


def discard(fs):
    """Forget ``fs``: the next request of this process makes a new one.

    Called after a failed attempt: a client whose requests were cut by a timeout
    or whose server restarted can keep dead or leaked connections in its pool,
    and the next attempt should not queue behind them.
    """
    with _lock:
        for key in [k for k, v in _filesystems.items() if v is fs]:
            del _filesystems[key]


def _backoff(attempts):
    delay = min(_MAX_DELAY, _FIRST_DELAY * 2 ** (attempts - 1))
    return delay * (0.5 + random.random() / 2)


def _attempt_timeout(deadline):
    return max(0.5, min(deadline - time.monotonic(), ATTEMPT_TIMEOUT))


def fetch_ranges(url, options, ranges, timeout, opened=True):
    """The bytes of ``ranges`` (``(start, stop)`` pairs) of object ``url``, read
    through this process's filesystem of ``options``.

    Retries failed ranges with exponential backoff until ``timeout`` seconds have
    passed since the call, then raises StoreUnavailable; raises ObjectNotFound or
    AccessDenied at once (see the module docstring). ``opened``: the object was
    opened before (a 404 is then retried).
    """
    protocol = split_url(url)[0]
    results = [None] * len(ranges)
    pending = list(range(len(ranges)))
    start_time = time.monotonic()
    deadline = start_time + timeout
    attempts = 0
    last = None
    while True:
        attempts += 1
        fs = filesystem(protocol, options, url)
        wanted = [ranges[i] for i in pending]
        try:
            got = _cat(fs, url, wanted, _attempt_timeout(deadline))
        except Exception as exc:  # the attempt as a whole (a timeout...)
            got = [exc] * len(pending)
        retry = []
        for i, data in zip(pending, got):
            if isinstance(data, BaseException):
                error = _permanent(data, url, ranges[i], opened)
                if error is not None:
                    if error is data:
                        raise error
                    raise error from data
                last = (ranges[i], data)
                retry.append(i)
                continue
            want = ranges[i][1] - ranges[i][0]
            if len(data) != want:
                last = (ranges[i], OSError(
                    f"the store answered {len(data)} bytes for a range of {want}"))
                retry.append(i)
                continue
            results[i] = data
        if not retry:
            return results
        pending = retry
        if not isinstance(last[1], FileNotFoundError):
            discard(fs)
        delay = _backoff(attempts)
        if time.monotonic() + delay >= deadline:
            (lo, hi), exc = last
            detail = str(exc) or "no answer in time"
            if isinstance(exc, FileNotFoundError):
                raise ObjectNotFound(
                    f"{url} is gone: reading bytes [{lo}, {hi}) found no object for "
                    f"{time.monotonic() - start_time:.1f} s (timeout={timeout:g} s), "
                    "though it was there when opened; was it deleted or renamed?",
                    url, (lo, hi)) from exc
            raise StoreUnavailable(
                f"reading bytes [{lo}, {hi}) of {url} failed: {attempts} attempts in "
                f"{time.monotonic() - start_time:.1f} s (the budget, timeout="
                f"{timeout:g} s, is spent); last error: {type(exc).__name__}: "
                f"{detail}. Check that the store is up and reachable, or give "
                "open_npy a longer timeout", url, (lo, hi)) from exc
        time.sleep(delay)


def call(method, url, options, timeout):
    """``fs.<method>(url)`` (``info``, ``glob``) with the retries and bounds of
    :func:`fetch_ranges`: a request about the object rather than its bytes."""
    protocol = split_url(url)[0]
    start_time = time.monotonic()
    deadline = start_time + timeout
    attempts = 0
    while True:
        attempts += 1
        fs = filesystem(protocol, options, url)
        kwargs = {}
        if getattr(fs, "async_impl", False):
            kwargs["timeout"] = min(METADATA_TIMEOUT, _attempt_timeout(deadline))
        try:
            return getattr(fs, method)(url, **kwargs)
        except Exception as exc:
            error = _permanent(exc, url, None, False)
            if error is not None:
                if error is exc:
                    raise
                raise error from exc
            discard(fs)
            delay = _backoff(attempts)
            if time.monotonic() + delay >= deadline:
                raise StoreUnavailable(
                    f"asking the store about {url} ({method}) failed: {attempts} "
                    f"attempts in {time.monotonic() - start_time:.1f} s (timeout="
                    f"{timeout:g} s); last error: {type(exc).__name__}: "
                    f"{str(exc) or 'no answer in time'}. Check that the store is "
                    "up and reachable", url) from exc
            time.sleep(delay)
