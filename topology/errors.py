"""Errors raised while reading objects.

    RecordError (ValueError)      a Node or Pod field Phalanx cannot read; names the
                                  object, the field, what was expected and what was found
"""

from __future__ import annotations


class RecordError(ValueError):
    """A Node or Pod object that cannot be read; names the object, field, expected, got."""

    def __init__(self, obj: str, field_name: str, expected: str, got: object) -> None:
        self.obj, self.field_name = obj, field_name
        super().__init__(f"{obj}: field {field_name}: expected {expected}, got {got!r}")
