"""Pausing Python's cyclic GC while building large batches of small objects, and giving
the heap back after one.

Parsing 100k Node objects creates millions of dicts and strings; the generational GC
rescans them repeatedly and more than doubles the time (measured: 2.4 s -> 0.8 s for a
100k NodeList). None of these objects form cycles, so nothing is lost by pausing. The
pause is process-wide: hold it over CPU work only, never over a network wait (every
thread's cyclic garbage piles up while it lasts).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import sys
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


_MALLINFO = getattr(_LIBC, "mallinfo2", None)  # glibc 2.33 and later
if _MALLINFO is not None:
    _MALLINFO.restype = _MallInfo2


def heap_stats() -> dict[str, int]:
    """Where the process's memory is, cheaply (no walk over objects): resident KiB;
    blocks Python's small-object allocator has handed out (live small objects); and the
    C heap's bytes in use and free-but-kept (glibc's mallinfo2). Growth in the first is
    live objects; in the last, allocator retention that a trim gives back."""
    stats = {"rss_kib": 0, "python_blocks": sys.getallocatedblocks()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                stats["rss_kib"] = int(line.split()[1])
    if _MALLINFO is not None:
        info = _MALLINFO()
        stats["malloc_used_kib"] = (info.uordblks + info.hblkhd) // 1024
        stats["malloc_free_kib"] = info.fordblks // 1024
    return stats


def census(top: int = 20) -> str:
    """The most numerous live objects the cyclic GC tracks (containers and instances;
    not strings or numbers), by type, as `module.Type=count` fields: where growth in
    live Python blocks comes from. Walks every tracked object (measured: 0.05 s for
    716k), so it is asked for (SIGUSR1 to `phalanx run`), never periodic."""
    counts = Counter(type(o) for o in gc.get_objects())
    return " ".join(f"{_type_name(kind)}={count}" for kind, count in counts.most_common(top))


class _TracedGrowth:
    """Where live Python allocations grew since the first call, by the source line that
    made them, as `file:line=+KiB` fields; "" unless tracemalloc is tracing (start the
    process with PYTHONTRACEMALLOC=1: it costs CPU and memory, so for a diagnosis, not
    for production). The first call records the baseline (per-line totals only: a whole
    snapshot held between calls would be most of the heap again)."""

    def __init__(self) -> None:
        self.baseline: dict[tuple[str, int], int] | None = None

    def __call__(self, top: int = 15) -> str:
        if not tracemalloc.is_tracing():
            return ""
        # Neither tracemalloc's own allocations nor this module's (the baseline table).
        ignore = (tracemalloc.Filter(False, tracemalloc.__file__),
                  tracemalloc.Filter(False, __file__))
        now = {(stat.traceback[0].filename, stat.traceback[0].lineno): stat.size
               for stat in tracemalloc.take_snapshot().filter_traces(ignore).statistics(
                   "lineno")}
        if self.baseline is None:
            self.baseline = now
            return "baseline"
        baseline = self.baseline
        growth = sorted(((size - baseline.get(line, 0), line) for line, size in now.items()),
                        reverse=True)[:top]
        return " ".join(f"{_short(file)}:{lineno}={delta // 1024:+d}KiB"
                        for delta, (file, lineno) in growth)


traced_growth = _TracedGrowth()
"""The process's one traced-growth log (its baseline is the first census's)."""


def _short(file: str) -> str:
    """A source file by its folder and name (`kube/client.py`, `logging/__init__.py`):
    enough to tell apart the many `__init__.py`."""
    path = Path(file)
    return f"{path.parent.name}/{path.name}"


def _type_name(kind: type) -> str:
    """module.Qualname, one token (a generated class's name may hold spaces)."""
    return "".join(f"{kind.__module__}.{kind.__qualname__}".split())


def heap_line() -> str:
    """heap_stats as a log line's `key=value` fields."""
    return " ".join(f"{key}={value}" for key, value in heap_stats().items())


_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # glibc's malloc.h
MMAP_THRESHOLD = 256 * 1024
"""Allocations from this size up get pages of their own, given back when freed."""
MALLOC_ARENAS = 2


def tune_heap() -> bool:
    """Sets glibc's allocator for a long-running process of many threads under one GIL
    (False where there is no glibc). Two settings, both against memory that a re-list
    leaves kept for good:
    - a fixed mmap threshold: by default glibc raises it to the size of each large block
      freed (up to 32 MiB), after which multi-MiB list pages and response bodies come
      from the heap and leave holes there that small long-lived objects then pin;
    - two arenas instead of up to 8 per core: each watch thread would get its own, and
      free space in one thread's arena serves no other thread. The GIL already
      serialises nearly all allocation, so there is little lock contention to lose.
    Call before threads start (an arena, once made, stays)."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None:
        return False
    fixed = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    shared = mallopt(_M_ARENA_MAX, MALLOC_ARENAS) == 1
    return bool(fixed and shared)


def trim_heap() -> bool:
    """Returns the C heap's free pages to the system (glibc's malloc_trim); False where
    there is no glibc. After a large list is decoded and dropped, glibc keeps the freed
    space in the arena of the thread that decoded it (each watch thread has its own, and
    multi-MiB pages land in arenas once the dynamic mmap threshold has risen): without a
    trim a re-list leaves the process's RSS at its high-water mark."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True
