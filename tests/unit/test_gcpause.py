"""The heap tools `phalanx run` uses over a long life."""

import sys
import tracemalloc

import gcpause
from gcpause import census, heap_stats, tune_heap


class Kept:
    """Stands for a record type whose instances pile up."""


def test_the_census_names_what_piles_up():
    kept = [Kept() for _ in range(5000)]
    fields = dict(field.rsplit("=", 1) for field in census(top=100_000).split())
    assert int(fields[f"{__name__}.Kept"]) >= 5000
    del kept


def test_the_allocator_takes_the_long_run_settings():
    assert sys.platform != "linux" or tune_heap()
    assert heap_stats()["rss_kib"] > 0


def test_traced_growth_names_the_line_that_grew_since_the_first_call():
    traced_growth = type(gcpause.traced_growth)()  # a baseline of its own
    assert traced_growth() == ""  # not tracing: nothing to say
    tracemalloc.start()
    try:
        assert traced_growth() == "baseline"
        kept = [bytes(1024) for _ in range(2048)]  # ~2 MiB made on this line
        growth = traced_growth()
        top = growth.split()[0]
        assert top.startswith("unit/test_gcpause.py:") and int(top.split("=")[1][1:-3]) >= 2000
        assert len(kept) == 2048
    finally:
        tracemalloc.stop()
