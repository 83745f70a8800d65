"""Plotting: matplotlib figures made without pyplot (:func:`new_figure`, shown inline in a
notebook through ``_repr_png_``, never touching the user's backend), pyplot on its file-only
backend (Agg) for the report, imported when first needed, and figures written through the
atomic writer."""
from __future__ import annotations

import io
import sys
from pathlib import Path

from fastnet.util.files import atomic_file


def pyplot():
    """``matplotlib.pyplot``, on the Agg backend (no display needed) unless pyplot was imported
    already (a notebook's inline backend is then left as it is)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(**kw):
    """A matplotlib Figure outside pyplot (an Agg canvas of its own, no global state), which a
    notebook shows inline: :class:`InlineFigure`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    class InlineFigure(Figure):
        """A Figure that IPython displays as PNG."""

        def _repr_png_(self) -> bytes:
            buf = io.BytesIO()
            self.savefig(buf, format="png")
            return buf.getvalue()

    fig = InlineFigure(**kw)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path, **kw) -> Path:
    """Write ``fig`` to ``path`` (its format from the suffix) through the atomic writer, and
    close it (a pyplot figure; one of :func:`new_figure` has nothing to close)."""
    try:
        with atomic_file(path, "wb") as f:
            fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", **kw)
    finally:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close(fig)
    return path
