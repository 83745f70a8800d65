"""A run's own figures: loss.png, cost.png and accuracy.png, training against validation."""
from __future__ import annotations

from pathlib import Path

from fastnet.util.plotting import pyplot, save_figure

QUANTITIES = {"loss": "cross-entropy loss", "cost": "cost (loss + L2 term, eq 20)", "accuracy": "accuracy"}


def plot_run(history_rows: list[dict], out_dir, title: str = "") -> list[Path]:
    """loss.png, cost.png and accuracy.png: train vs validation against update steps."""
    plt = pyplot()
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
        written.append(save_figure(fig, out_dir / f"{key}.png"))
    return written
