"""How every benchmark reports: one JSON line (for scripts), then an aligned table."""

from __future__ import annotations

import json
from typing import Any


def print_result(result: dict[str, Any]) -> None:
    print(json.dumps(result))
    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
