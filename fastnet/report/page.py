"""One A4 page of the report: wrapped text placed top-down, figures in axes below it."""
from __future__ import annotations

import textwrap

A4 = (8.27, 11.69)
MARGIN = 0.07


class Page:
    """A4 page that places wrapped text top-down; figures go into axes at given heights."""

    def __init__(self, plt, heading: str):
        self.fig = plt.figure(figsize=A4)
        self.y = 0.955
        self.text(heading, size=15, weight="bold", gap=0.012)

    def text(self, s: str, size: float = 9.5, weight="normal", family=None, width: int | None = None, gap: float = 0.006) -> None:
        width = width or int((92 if weight == "bold" else 100) * 9.5 / size)
        line_h = size * 1.45 / 72 / A4[1]
        for para in s.split("\n"):
            indent = " " * (len(para) - len(para.lstrip(" ")))
            wrapped = textwrap.wrap(para, width, initial_indent="", subsequent_indent=indent + "    " if indent else "") if family is None else [para]
            for line in wrapped or [""]:
                self.fig.text(MARGIN, self.y, line, size=size, weight=weight, family=family, va="top", ha="left")
                self.y -= line_h
        self.y -= gap

    def axes(self, height: float, ncols: int = 1, wspace: float = 0.1):
        """``ncols`` axes side by side, ``height`` (figure fraction) tall, below the text;
        room is left under them for tick and axis labels."""
        bottom = self.y - height
        left, right = MARGIN + 0.06, 1 - MARGIN
        w = (right - left - wspace * (ncols - 1)) / ncols
        axes = [self.fig.add_axes([left + i * (w + wspace), bottom, w, height - 0.03]) for i in range(ncols)]
        self.y = bottom - 0.05
        return axes
