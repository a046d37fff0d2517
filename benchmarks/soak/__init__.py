"""Chaos soak (issue 20): gangs from every source, single pods and DaemonSets arriving
and finishing on a KWOK cluster while real faults are injected at random times, with
the scheduler's invariants judged every second from the API server's view.

Modules, one job each: `workload` (the seeded stream), `faults` (one class per fault
kind), `proxy` (the pausable TCP proxy), `replicas` (the two `phalanx run` processes),
`observer` (the watched view), `invariants` (pure checks), `audit` (requests per gang),
`timeline` (the plot), `runner` (the loop and the report).
"""
