"""The one JSON encoding leadhook writes: compact, with non-ASCII text kept as is."""

from __future__ import annotations

import json
from typing import Any


def dumps(obj: Any) -> str:
    """Encode `obj` as every response body and stored JSON column is: compact, UTF-8 text kept
    as is (the console's substring search over a lead's state relies on it)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
