"""TODO docstring for util.plotting."""
from __future__ import annotations

from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, **kw) -> Path:
    plt = pyplot()
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, **kw)
    plt.close(fig)
    tmp.replace(path)
    return path
