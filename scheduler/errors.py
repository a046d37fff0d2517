"""Errors raised by the scheduler shell.

    ConfigError (ValueError)      bad configuration file or value; names the field

API errors are the client's (`kube.errors`); solver errors the solver's (`solver.errors`).
"""

from __future__ import annotations


class ConfigError(ValueError):
    def __init__(self, field: str, expected: str, got: object) -> None:
        self.field, self.expected, self.got = field, expected, got
        super().__init__(f"config field {field!r}: expected {expected}, got {got!r}")
