"""JSON as RFC 8259 has it: no NaN, no infinity. Postgres refuses those tokens, and a
browser's or a ticket system's JSON parser fails on them, yet metrics hold them: a retention
with no concepts to retain, a loss that overflowed. They are written as null."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float, however deeply nested, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    """`json.dumps` of `finite(value)`."""
    return json.dumps(finite(value), allow_nan=False, **options)
