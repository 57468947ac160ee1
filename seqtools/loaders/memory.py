"""How large the shared-memory ring of process workers may be, and what a
stalled ring tells the user: the memory the machine has, checks before the
ring takes more, and the message of a ring that nothing can free but the
reader. Used by :mod:`.process`.
"""

import os

__all__ = ["physical_memory", "available_memory", "check_memory", "round_up",
           "stall_message"]


def physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 34


def available_memory():
    """Bytes the shared region may take: MemAvailable on Linux, else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(nbytes):
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise MemoryError(
            f"the shared-memory ring needs {nbytes / 2**20:.1f} MiB but only "
            f"{avail / 2**20:.1f} MiB of memory is available; lower shm_size or "
            "max_buffered/max_cached, or give the machine (container) more memory"
        )


def round_up(n, a):
    return (n + a - 1) // a * a


def stall_message(s, budget=0):
    """Why a stalled ring is stuck, from ``Ring.stats()``, and what to do;
    ``budget``: what an automatic ring may grow to (0: the user's shm_size)."""
    if budget:
        return (stall_message(s).replace("shm_size", "shm_budget")
                + f" (this ring grew to its budget, shm_budget="
                f"{budget / 2**20:.0f} MiB)")
    n = s["popped"]
    results = f"{n} result{'s' if n != 1 else ''}"
    free = s["capacity"] - s["used"]
    need = s["waiting_for"]
    if n == 0:
        return (f"the shared-memory ring ({s['capacity']} bytes) is too small for "
                f"the results the workers write at once: each holds part of its "
                f"result and waits for room for the rest ({need} more bytes, "
                f"{free} free). Pass a larger shm_size (the largest result times "
                "the number of workers, twice over)")
    if need and free >= need > s["largest_free"]:
        return (f"the shared-memory ring has {free} of {s['capacity']} bytes free, "
                f"but not in one piece: a worker needs {need} contiguous bytes and "
                f"the largest free run is {s['largest_free']}: the {results} handed "
                f"out earlier and still referenced split{'s' if n == 1 else ''} it. "
                "Copy the arrays you keep (np.array(x)), drop them sooner, or pass "
                "a larger shm_size (twice the largest result or more)")
    if need > free:
        return (f"the shared-memory ring has {free} of {s['capacity']} bytes free, "
                f"less than the {need} bytes a worker needs: the {results} handed "
                f"out earlier and still referenced take{'s' if n == 1 else ''} the "
                "rest. Copy the arrays you keep (np.array(x)), drop them sooner, or "
                "pass a larger shm_size (twice the largest result or more)")
    return (f"the shared-memory ring is full ({s['used']} of {s['capacity']} "
            f"bytes): {results} handed out earlier are still referenced, so workers "
            "cannot write new ones. Copy the arrays you keep (np.array(x)), drop "
            "them sooner, or pass a larger shm_size")
