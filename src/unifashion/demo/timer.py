"""The demo's stage timer."""

from __future__ import annotations

import time
from collections.abc import Callable


class Timer:
    """Collects `time/<stage>_s`; `before_each` (optional) is called before every step it runs."""

    def __init__(self, before_each: Callable[[], None] | None = None) -> None:
        self.times: dict[str, float] = {}
        self.before_each = before_each

    def run(self, stage: str, fn: Callable[[], object]):
        if self.before_each is not None:
            self.before_each()
        start = time.perf_counter()
        print(f"\n=== {stage} ===", flush=True)
        out = fn()
        self.times[f"time/{stage}_s"] = round(time.perf_counter() - start, 2)
        print(f"=== {stage}: {self.times[f'time/{stage}_s']:.1f} s", flush=True)
        return out
