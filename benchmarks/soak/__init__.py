"""Chaos soak (issue 20): gangs from every source, single pods and DaemonSets arriving
and finishing on a KWOK cluster while real faults are injected at random times, with
the scheduler's invariants judged every second from the API server's view.

Modules, one job each: `workload` (the seeded stream), `work` (creating and deleting
it), `faults` (one class per fault kind), `chaos` (when faults start and heal), `proxy`
(the pausable TCP proxy), `replicas` (the two `phalanx run` processes), `observer` (the
watched view), `invariants` (pure checks), `judge` (the checks wired to the run),
`audit` (requests per gang), `state` (what a run remembers), `report` and `timeline`
(the result and its plot), `runner` (set-up and the loop).
"""
