"""Pickling functions by the source code of their file.

Worker processes (``prefetch(method='process')``, ``load_buffers``) receive the
pipeline pickled, and pickle refers to functions by module and name. A function
defined in a script (``__main__``), or in a file edited while a job runs, may then
be missing or different on the other side. :class:`SerializableFunc` pickles the
source text of the function's file instead, and the receiving process runs that
text as a fresh module to get the function back.
"""

import functools
import hashlib
import inspect
import linecache
import sys
import threading
import types

__all__ = ["SerializableFunc"]

# Modules rebuilt from pickled sources in this process, by digest of the source.
_loaded = {}
_load_lock = threading.RLock()
# While a pickled source is being executed: (source, filename, digest), so that the
# SerializableFunc decorators it runs do not read the file on disk.
_reloading = threading.local()


def _lookup(namespace, qualname):
    obj = namespace
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class SerializableFunc:
    """Decorate a function so that it pickles with the source of its file.

    The function must be defined with ``def`` at the top level of a module or
    script (or be a method of a top-level class), so that its name finds it again.
    The file is read once, when the decorator runs: an unpickled copy runs the code
    as it was then, even if the file changed since.

    Unpickling executes the whole file as a new module (its ``__name__`` is not
    ``'__main__'``, so an ``if __name__ == '__main__':`` block does not run), once
    per process and source. Code at the top level of the file runs again: keep it
    free of side effects. A process where the same source is already loaded (a
    forked worker, a spawned worker re-importing the script) reuses the function
    without executing anything.

    Parameters
    ----------
    func : function
        The function to wrap.

    Raises
    ------
    TypeError
        If `func` is not a plain function, is a lambda or a nested function, or
        its source file cannot be found.

    Examples
    --------
    In a script, decorate the functions that a pipeline sent to worker processes
    uses (``@seqtools.SerializableFunc`` above ``def``). Any top-level function
    works:

    >>> import pickle, textwrap, seqtools
    >>> dedent = seqtools.SerializableFunc(textwrap.dedent)
    >>> copy = pickle.loads(pickle.dumps(dedent))
    >>> copy("    indented")
    'indented'
    """

    def __init__(self, func):
        if isinstance(func, SerializableFunc):
            func = func.__wrapped__
        if not inspect.isfunction(func):
            raise TypeError(
                "SerializableFunc needs a function defined with def, got "
                f"{type(func).__name__}"
            )
        qualname = func.__qualname__
        if "<" in qualname:
            raise TypeError(
                f"SerializableFunc cannot serialize {qualname}: lambdas and nested "
                "functions cannot be found again by name; define it with def at the "
                "top level of the module"
            )
        reloading = getattr(_reloading, "state", None)
        if reloading is not None and func.__code__.co_filename == reloading[1]:
            source, filename, digest = reloading
            filename = func.__globals__.get("__seqtools_source_file__", filename)
        else:
            filename = inspect.getsourcefile(func)
            if filename is None:
                raise TypeError(
                    f"SerializableFunc cannot find the source file of {qualname} "
                    "(defined interactively or in compiled code?)"
                )
            try:
                with open(filename, "rb") as f:
                    source = f.read()
            except OSError as exc:
                raise TypeError(
                    f"SerializableFunc cannot read the source file of {qualname}: "
                    f"{exc}"
                ) from exc
            digest = hashlib.sha256(source).hexdigest()
        self._source = source
        self._filename = filename
        self._digest = digest
        self._qualname = qualname
        self._module = func.__module__
        functools.update_wrapper(self, func)

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def __get__(self, obj, objtype=None):
        # Bind like a function when used as a method.
        if obj is None:
            return self
        return types.MethodType(self, obj)

    def __repr__(self):
        return f"<SerializableFunc {self._qualname} from {self._filename}>"

    def __reduce__(self):
        return _restore, (
            self._source, self._filename, self._digest, self._qualname, self._module
        )


def _unwrap(obj):
    return obj if isinstance(obj, SerializableFunc) else None


def _restore(source, filename, digest, qualname, module):
    """Unpickle a :class:`SerializableFunc` (see its notes)."""
    # The same source already imported here (fork, or spawn re-importing __main__).
    for name in (module, "__mp_main__" if module == "__main__" else None):
        live = sys.modules.get(name) if name else None
        found = _unwrap(_lookup(live, qualname)) if live is not None else None
        if found is not None and found._digest == digest:
            return found
    with _load_lock:
        mod = _loaded.get(digest)
        if mod is None:
            mod = _execute(source, filename, digest)
            _loaded[digest] = mod
    obj = _lookup(mod, qualname)
    if obj is None:
        raise AttributeError(
            f"SerializableFunc: {qualname} is not defined at the top level of the "
            f"source of {filename} once executed"
        )
    if isinstance(obj, SerializableFunc):
        return obj
    _reloading.state = (source, obj.__code__.co_filename, digest)
    try:
        return SerializableFunc(obj)
    finally:
        _reloading.state = None


def _execute(source, filename, digest):
    name = f"_seqtools_serialized_{digest[:16]}"
    # A distinct file name: tracebacks and inspect show the pickled text, not the
    # file on disk, which may have changed.
    pseudo = f"{filename} (seqtools snapshot {digest[:8]})"
    text = source.decode("utf-8", errors="replace")
    linecache.cache[pseudo] = (len(text), None, text.splitlines(True), pseudo)
    mod = types.ModuleType(name)
    mod.__file__ = pseudo
    mod.__seqtools_source_file__ = filename
    sys.modules[name] = mod  # classes defined there must be importable by pickle
    code = compile(source, pseudo, "exec", dont_inherit=True)
    previous = getattr(_reloading, "state", None)
    _reloading.state = (source, pseudo, digest)
    try:
        exec(code, mod.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        _reloading.state = previous
    return mod
