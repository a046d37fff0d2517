"""Errors raised by the solver.

    SolverError (ValueError)
    └── BadRequest      the gang request itself is invalid (zero pods, unknown level...);
                        names the field, the expected and the received value

A gang that does not fit is *not* an error: `solve` returns an Unschedulable result with
a Diagnosis.
"""

from __future__ import annotations


class SolverError(ValueError):
    """Base of the solver's errors."""


class BadRequest(SolverError):
    def __init__(self, field: str, expected: str, got: object) -> None:
        self.field, self.expected, self.got = field, expected, got
        super().__init__(f"gang request field {field!r}: expected {expected}, got {got!r}")
