"""Plotting: matplotlib on its file-only backend (Agg), imported when first needed, and
figures written through the atomic writer."""
from __future__ import annotations

from pathlib import Path

from fastnet.util.files import atomic_file


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, **kw) -> Path:
    """Write ``fig`` to ``path`` (its format from the suffix) through the atomic writer, and
    close it."""
    plt = pyplot()
    try:
        with atomic_file(path, "wb") as f:
            fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", **kw)
    finally:
        plt.close(fig)
    return path
