"""Kubernetes resource quantities ("191450m", "1938410Mi", "8", "1.5e3") as integers.

Canonical units: cpu in millicores, everything else in whole units (memory in bytes),
rounded up the way the API server rounds requests.
"""

from __future__ import annotations

import functools
import math
import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}
_PATTERN = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$")

CPU = "cpu"
BASIC_RESOURCES = frozenset({"cpu", "memory", "pods", "ephemeral-storage"})
"""What every pod asks for; anything else (accelerators, EFA, hugepages...) is what
placement and explanations talk about first."""


def parse_quantity(text: str | int | float) -> Decimal:
    """The exact value of a quantity; ValueError naming the text when it is not one."""
    if isinstance(text, bool):
        raise ValueError(f"quantity: expected a string such as '8' or '500m', got {text!r}")
    if isinstance(text, int | float):
        return Decimal(str(text))
    match = _PATTERN.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"quantity: expected a number with an optional suffix, got {text!r}")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"quantity: {number!r} in {text!r} is not a number") from None
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * _DECIMAL[suffix]
    return value * (Decimal(10) ** int(suffix[1:]))


@functools.lru_cache(maxsize=4096)
def to_units(resource: str, text: str | int | float) -> int:
    """Canonical integer amount of `resource`: millicores for cpu, whole units otherwise."""
    value = parse_quantity(text)
    if value < 0:
        raise ValueError(f"quantity of {resource}: expected >= 0, got {text!r}")
    if resource == CPU:
        value *= 1000
    return math.ceil(value)


def format_units(resource: str, amount: int) -> str:
    """Readable form for explanations: 1500m cpu, 64Gi memory, 8 nvidia.com/gpu."""
    if resource == CPU:
        return f"{amount}m" if amount % 1000 else str(amount // 1000)
    if resource == "memory" or resource.startswith("hugepages-") or "storage" in resource:
        for suffix in ("Ti", "Gi", "Mi", "Ki"):
            if amount and amount % _BINARY[suffix] == 0:
                return f"{amount // _BINARY[suffix]}{suffix}"
    return str(amount)
