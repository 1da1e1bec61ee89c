"""Progress lines a person can follow on work that takes more than a few seconds.

>>> import io
>>> out = io.StringIO()
>>> bar = Progress(3, stream=out)
>>> bar.step("first")
>>> out.getvalue().split("  ")[0]
'[1/3] first'
"""

from __future__ import annotations

import sys
import time


class Progress:
    """``[k/total] label  elapsed 1m05s, about 3m10s left`` lines (reproduce rows, tuner
    trials). ``done`` counts steps finished before this process started (a resumed
    search); the estimate uses only the steps timed here."""

    def __init__(self, total: int, stream=None, done: int = 0):
        self.total = max(int(total), 1)
        self.done = int(done)
        self._timed = 0
        self.t0 = time.monotonic()
        self.stream = stream or sys.stdout

    @staticmethod
    def clock(s: float) -> str:
        """``65`` -> ``1m05s``."""
        s = int(round(s))
        return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"

    def step(self, label: str) -> None:
        self.done += 1
        self._timed += 1
        el = time.monotonic() - self.t0
        left = el / self._timed * (self.total - self.done)
        tail = f", about {self.clock(left)} left" if self.done < self.total else ""
        print(f"[{self.done}/{self.total}] {label}  elapsed {self.clock(el)}{tail}",
              file=self.stream, flush=True)


__all__ = ["Progress"]
