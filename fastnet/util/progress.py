"""Progress of long work, through tqdm (``tqdm.auto``): a widget in Jupyter, a bar on a
terminal's standard error, and in a log (standard error not a terminal: CI, a file) no bar at
all, only the lines :meth:`Progress.log` writes, so logs stay readable.

Written here: the choice of the three (tqdm's own ``disable=None`` would hide a notebook's
widget, whose stream is no terminal either) and :meth:`Progress.log`'s lines, which tqdm
prints above its bar.
"""
from __future__ import annotations

import sys


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where tqdm.auto draws a widget)."""
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    return get_ipython is not None and type(get_ipython()).__name__ == "ZMQInteractiveShell"


class Progress:
    """A bar of ``total`` steps labelled ``label``; nothing at all unless ``enabled``."""

    def __init__(self, total: int, label: str = "", enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        notebook = enabled and in_notebook()
        self.tty = enabled and (notebook or (hasattr(self.stream, "isatty") and self.stream.isatty()))
        self.bar = None
        if not enabled:  # quiet: not even tqdm's import (it sits inside a run's timed part)
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=max(int(total), 1), desc=label, disable=not self.tty, file=None if notebook else self.stream,
                        mininterval=0.1, dynamic_ncols=True, leave=False)
        self.write = tqdm.write

    def update(self, done: int, status: str = "") -> None:
        """``done`` steps of the total are done; ``status`` is shown after the bar."""
        if not self.tty:
            return
        if status:
            self.bar.set_postfix_str(status, refresh=False)
        self.bar.update(done - self.bar.n)

    def log(self, message: str) -> None:
        """A line that stays (an evaluation's): above the bar, or alone in a log."""
        if self.enabled:
            self.write(message, file=None if self.tty and in_notebook() else self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
