"""The heap tools `phalanx run` uses over a long life."""

import sys

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
