"""A small progress line for long work, on standard error.

On a terminal it redraws one line at most ten times a second; elsewhere (CI, a log file) it
prints a line only when ``log`` is called, so logs stay readable.
"""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str = "", enabled: bool = True, stream=None):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last = 0.0
        self.done = 0
        self.status = ""

    def update(self, done: int, status: str = "") -> None:
        self.done, self.status = done, status or self.status
        if not self.tty:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        self.stream.write("\r" + self._line())
        self.stream.flush()

    def log(self, message: str) -> None:
        """A line that stays (an epoch summary): above the bar on a terminal."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(message + "\n")
        if self.tty:
            self.stream.write(self._line())
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _line(self) -> str:
        frac = self.done / self.total
        width = 24
        bar = "=" * int(frac * width)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        return f"{self.label} [{bar:<{width}}] {self.done}/{self.total} {self.status} {elapsed:.0f}s<{eta:.0f}s"[:200]
