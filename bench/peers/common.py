"""What the Python peers share: query parsing and the token text."""

from __future__ import annotations

import time
from collections.abc import Mapping

END_DATA = '{"finish_reason":"stop"}'


def stream_params(args: Mapping[str, str]) -> tuple[int, float, bool]:
    """``(n, delay in seconds, stamp)`` from the query string."""
    return int(args.get("n", "2000")), float(args.get("delay_ms", "0")) / 1000.0, args.get("stamp") == "1"


def token_text(stamp: bool) -> str:
    # Five letters and a space, about the size of the demo provider's words.
    return f"@{time.time():.6f} token" if stamp else " token"


def id_base() -> str:
    """Ids shaped like chatapp's (``<ms>-<seq>``), so frames are the same size."""
    return f"{time.time_ns() // 1_000_000}-"
