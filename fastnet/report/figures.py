"""The report's comparison figures: batch norm against none, the lambda search, the
initialisation grid; drawn on axes given, or written as PNGs to ``EXPERIMENT_DIR/figures/``."""
from __future__ import annotations

import math
from pathlib import Path

from fastnet.report.readings import (
    bn_pair,
    init_groups,
    load_experiment,
    search_points,
    search_record,
)
from fastnet.runs.record import RunInfo
from fastnet.util.plotting import pyplot, save_figure

# ---------------------------------------------------------------------------- figures

BN_STYLE = {True: dict(color="tab:blue", label="BN"), False: dict(color="tab:red", label="no BN")}


def curve_xy(history: list[dict], key: str):
    pts = [(r["step"], r[key]) for r in history if not math.isnan(r.get(key, math.nan))]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_bn_overlay(runs: dict[bool, RunInfo | None], ax_loss, ax_acc=None, title: str = "") -> None:
    """Training (solid) and validation (dashed) loss of the BN and no-BN run on one axes;
    validation accuracy on ``ax_acc`` if given."""
    for bn in (False, True):
        run = runs.get(bn)
        if run is None or not run.history:
            continue
        st = BN_STYLE[bn]
        suffix = "" if run.finished else f" ({run.status})"
        ax_loss.plot(*curve_xy(run.history, "train_loss"), color=st["color"], ls="-", marker=".", ms=3, label=f"{st['label']}, training{suffix}")
        ax_loss.plot(*curve_xy(run.history, "val_loss"), color=st["color"], ls="--", marker=".", ms=3, label=f"{st['label']}, validation{suffix}")
        if ax_acc is not None:
            ax_acc.plot(*curve_xy(run.history, "train_accuracy"), color=st["color"], ls="-", marker=".", ms=3, label=f"{st['label']}, training")
            ax_acc.plot(*curve_xy(run.history, "val_accuracy"), color=st["color"], ls="--", marker=".", ms=3, label=f"{st['label']}, validation")
    for ax, ylabel in ((ax_loss, "cross-entropy loss"), (ax_acc, "accuracy")):
        if ax is None:
            continue
        ax.set_xlabel("update step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no finished run", transform=ax.transAxes, ha="center", va="center")
    if title:
        ax_loss.set_title(title, fontsize=10)


def plot_lambda_search(points: list[dict], ax, search: dict | None = None) -> None:
    """Validation accuracy against lambda (log axis): coarse grid and fine draw marked, the
    fine range shaded, the best run circled."""
    if search and search.get("fine", {}).get("log10_range"):
        lo, hi = search["fine"]["log10_range"]
        ax.axvspan(10 ** lo, 10 ** hi, color="tab:orange", alpha=0.12, label="fine range")
    for stage, style in (("coarse", dict(color="tab:blue", marker="o", label="coarse (grid)")), ("fine", dict(color="tab:orange", marker="s", label="fine (random)"))):
        pts = [p for p in points if p["stage"] == stage]
        if pts:
            ax.plot([p["lam"] for p in pts], [p["val_accuracy"] for p in pts], ls="-" if stage == "coarse" else "none", **style)
    if points:
        best = max(points, key=lambda p: (p["val_accuracy"], -p["lam"]))
        ax.plot([best["lam"]], [best["val_accuracy"]], marker="o", ms=14, mfc="none", mec="k", ls="none", label=f"best: lambda = {best['lam']:.3g}")
    else:
        ax.text(0.5, 0.5, "no finished search run", transform=ax.transAxes, ha="center", va="center")
    ax.set_xscale("log")
    ax.set_xlabel("lambda (L2 regularisation, log scale)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend(fontsize=8)


def plot_init_grid(groups: dict[float, dict[bool, RunInfo]], axes) -> None:
    """One panel per sigma: training (solid) and validation (dashed) loss, BN vs no BN."""
    for ax, (sigma, pair) in zip(axes, groups.items()):
        plot_bn_overlay(pair, ax, title=f"normal init, sigma = {sigma:g}")
    for ax in list(axes)[len(groups):]:
        ax.set_axis_off()


def plot_init_bars(groups: dict[float, dict[bool, RunInfo]], ax) -> None:
    """Test accuracy per sigma, BN and no BN side by side; chance level marked."""
    sigmas = list(groups)
    width = 0.38
    for k, bn in enumerate((False, True)):
        xs, ys = [], []
        for i, sigma in enumerate(sigmas):
            run = groups[sigma].get(bn)
            if run is not None and run.finished:
                xs.append(i + (k - 0.5) * width)
                ys.append(100 * run.get("test_accuracy"))
        bars = ax.bar(xs, ys, width, color=BN_STYLE[bn]["color"], label=BN_STYLE[bn]["label"])
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.axhline(10, color="0.4", ls=":", lw=1, label="chance (10 %)")
    ax.set_xticks(range(len(sigmas)), [f"{s:g}" for s in sigmas])
    ax.set_xlabel("sigma of the normal initialisation")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, max([70] + [b.get_height() + 10 for b in ax.patches]))
    ax.set_title("test accuracy after training", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper right")


def experiment_figures(exp_root) -> list[Path]:
    """The comparison figures as PNGs in ``EXPERIMENT_DIR/figures/`` (those whose runs exist)."""
    plt = pyplot()
    root = Path(exp_root)
    fig_dir = root / "figures"
    fig_dir.mkdir(exist_ok=True)
    written = []
    for depth, no_bn, bn in ((3, "ex2-3layer", "ex3-3layer-bn"), (9, "ex2-9layer", "ex3-9layer-bn")):
        pair = bn_pair(root, no_bn, bn)
        if any(pair.values()):
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
            plot_bn_overlay(pair, a1, a2, title=f"{depth}-layer network: loss")
            a2.set_title(f"{depth}-layer network: accuracy", fontsize=10)
            fig.tight_layout()
            written.append(save_figure(fig, fig_dir / f"bn-vs-nobn-{depth}layer.png"))
    runs = load_experiment(root / "lambda-search")
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        plot_lambda_search(search_points(runs), ax, search_record(root))
        fig.tight_layout()
        written.append(save_figure(fig, fig_dir / "lambda-search.png"))
    groups = init_groups(load_experiment(root / "init-sensitivity"))
    if groups:
        fig, axes = plt.subplots(1, len(groups) + 1, figsize=(5 * (len(groups) + 1), 4.2), dpi=120, squeeze=False)
        plot_init_grid(groups, axes[0][:-1])
        plot_init_bars(groups, axes[0][-1])
        fig.tight_layout()
        written.append(save_figure(fig, fig_dir / "init-sensitivity.png"))
    return written
