"""A run's own figures: loss.png, cost.png and accuracy.png, training against validation, and
the three side by side (:func:`curves_figure`, ``Run.plot()``)."""
from __future__ import annotations

from pathlib import Path

from fastnet.util.plotting import new_figure, save_figure

QUANTITIES = {"loss": "cross-entropy loss", "cost": "cost (loss + L2 term, eq 20)", "accuracy": "accuracy"}


def draw_curve(ax, history_rows: list[dict], key: str, title: str = "") -> None:
    """Training and validation ``key`` (loss, cost or accuracy) against update steps on ``ax``."""
    steps = [r["step"] for r in history_rows]
    ax.plot(steps, [r[f"train_{key}"] for r in history_rows], label="training", marker=".")
    ax.plot(steps, [r[f"val_{key}"] for r in history_rows], label="validation", marker=".")
    ax.set_xlabel("update step")
    ax.set_ylabel(QUANTITIES[key])
    ax.set_title(f"{title} {key}".strip())
    ax.grid(alpha=0.3)
    ax.legend()


def plot_run(history_rows: list[dict], out_dir, title: str = "") -> list[Path]:
    """loss.png, cost.png and accuracy.png: train vs validation against update steps."""
    out_dir = Path(out_dir)
    written = []
    for key in QUANTITIES:
        fig = new_figure(figsize=(6, 4), dpi=120)
        draw_curve(fig.add_subplot(), history_rows, key, title)
        fig.tight_layout()
        written.append(save_figure(fig, out_dir / f"{key}.png"))
    return written


def curves_figure(history_rows: list[dict], title: str = ""):
    """Loss, cost and accuracy side by side in one Figure (shown inline in a notebook)."""
    fig = new_figure(figsize=(15, 4), dpi=100)
    for ax, key in zip(fig.subplots(1, len(QUANTITIES)), QUANTITIES):
        draw_curve(ax, history_rows, key)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
