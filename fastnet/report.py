"""Figures of runs (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


QUANTITIES = {"loss": "cross-entropy loss", "cost": "cost (loss + L2 term, eq 20)", "accuracy": "accuracy"}


def plot_run(history_rows: list[dict], out_dir, title: str = "") -> list[Path]:
    """loss.png, cost.png and accuracy.png: train vs validation against update steps."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    written = []
    steps = [r["step"] for r in history_rows]
    for key, label in QUANTITIES.items():
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        ax.plot(steps, [r[f"train_{key}"] for r in history_rows], label="training", marker=".")
        ax.plot(steps, [r[f"val_{key}"] for r in history_rows], label="validation", marker=".")
        ax.set_xlabel("update step")
        ax.set_ylabel(label)
        ax.set_title(f"{title} {key}".strip())
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{key}.png"
        tmp = path.with_name(path.stem + ".tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(path)
        written.append(path)
    return written
