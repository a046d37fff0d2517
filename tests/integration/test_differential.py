"""Phalanx's per-pod decisions against kube-scheduler's on the same objects, over a
seeded corpus (benchmarks/differential.py has the corpus, the runner and the
independent checker; `python -m benchmarks.differential` runs a larger one)."""

from __future__ import annotations

import pytest

from benchmarks.differential import DEFAULT_CASES, DEFAULT_SEED, cleanup, corpus, run, summary

pytestmark = pytest.mark.integration


def test_phalanx_agrees_with_kube_scheduler_and_its_nodes_keep_every_rule(kube):
    cases = corpus(DEFAULT_CASES, DEFAULT_SEED)
    assert len(cases) == DEFAULT_CASES
    try:
        result = summary(run(kube, cases))
    finally:
        cleanup(kube, cases)
    print(result)
    assert result["disagreements"] == [] and result["violations"] == []
    # The corpus exercises both answers, and gangs.
    assert result["fit_by_both"] > 20 and result["fit_by_neither"] > 20
    assert result["gangs"] > 10 and result["gangs_placed"] > 0
