"""The bonus section of the PDF report (Exercise 4), read from ``EXPERIMENT_DIR/bonus/``.

Pages: a table of every bonus run (variant, test accuracy, wall time) with what the numbers
say; the gradient checks of the bonus architectures; batch norm (after the ReLU, PreciseBN,
adaptive BN) with curves and the adaptive-BN table; the deeper networks (Adam, decay, width,
skips); augmentation and the best network. Every number is read from the run folders,
``bonus.json``, ``adaptive_bn.json`` and ``gradcheck_bonus.json``; what is missing is said
to be missing. :func:`bonus_pages` returns page makers for :func:`fastnet.report.pdf.build_report`.
"""
from __future__ import annotations

import math
from pathlib import Path

from fastnet.experiments.records import check_gradcheck_record
from fastnet.report.figures import curve_xy
from fastnet.report.page import Page
from fastnet.report.summary import duration, pct
from fastnet.runs.record import load_run
from fastnet.util.files import read_json_or_none

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]


def _rows(folder: Path) -> dict[str, dict]:
    rec = read_json_or_none(folder / "bonus.json") or {}
    return {r["run"]: r for r in rec.get("rows", [])}


def _acc(rows: dict, run: str) -> float:
    r = rows.get(run)
    return r["test_accuracy"] if r and r.get("test_accuracy") is not None else math.nan


def _delta(rows: dict, run: str, base: str) -> str:
    a, b = _acc(rows, run), _acc(rows, base)
    if math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{100 * (a - b):+.2f} pp"


def _seed_line(stats: list[dict], run: str, base: str) -> str:
    """' (over N seeds: mean a vs b, difference d +- its standard error)' when both have seeds."""
    by = {r["run"]: r for r in stats}
    if run not in by or base not in by:
        return ""
    a, b = by[run], by[base]
    se = math.sqrt(a["std_test_accuracy"] ** 2 / a["seeds"] + b["std_test_accuracy"] ** 2 / b["seeds"])
    d = a["mean_test_accuracy"] - b["mean_test_accuracy"]
    verdict = "within noise" if abs(d) < 2 * se else ("better" if d > 0 else "worse")
    return (f" Over {min(a['seeds'], b['seeds'])} seeds: {pct(a['mean_test_accuracy'])} vs {pct(b['mean_test_accuracy'])}, "
            f"{100 * d:+.2f} +- {100 * se:.2f} pp ({verdict}).")


def findings(rows: dict, stats: list[dict] | None = None) -> list[str]:
    """Sentences on what the bonus numbers say, made from them (none for missing runs);
    ``stats``: bonus.json's seed_stats, used where a comparison was repeated over seeds."""
    stats = stats or []
    out = []

    def have(*runs):
        return all(not math.isnan(_acc(rows, r)) for r in runs)

    if have("3layer-BN", "3layer-BN-after", "9layer-BN", "9layer-BN-after"):
        out.append(f"BN after the ReLU (seed 0): {_delta(rows, '3layer-BN-after', '3layer-BN')} for the 3-layer network, "
                   f"{_delta(rows, '9layer-BN-after', '9layer-BN')} for the 9-layer one (test accuracy vs BN before the ReLU)."
                   + _seed_line(stats, "3layer-BN-after", "3layer-BN").replace(" Over", " 3-layer over")
                   + _seed_line(stats, "9layer-BN-after", "9layer-BN").replace(" Over", " 9-layer over"))
    for depth in (3, 9):
        run = f"{depth}layer-BN-precise"
        r = rows.get(run)
        if r and not math.isnan(r.get("test_accuracy_ema", math.nan)):
            d = 100 * (r["test_accuracy"] - r["test_accuracy_ema"])
            dv = 100 * (r["val_accuracy"] - r["val_accuracy_ema"])
            st = next((x for x in stats if x["run"] == run and "mean_precise_minus_ema" in x), None)
            extra = (f" Over {st['seeds']} seeds the test difference is {100 * st['mean_precise_minus_ema']:+.2f} +- "
                     f"{100 * st['std_precise_minus_ema']:.2f} pp (std).") if st else ""
            out.append(f"PreciseBN, {depth}-layer: test {pct(r['test_accuracy'])} vs {pct(r['test_accuracy_ema'])} with the EMA "
                       f"({d:+.2f} pp), validation {dv:+.2f} pp -- the same trained weights, only the statistics differ.{extra}")
    if have("7layer-BN"):
        parts = [f"{r} {_delta(rows, r, '7layer-BN')}" for r in ("7layer-BN-sgd-cosine", "7layer-BN-adam-cosine", "7layer-BN-adam-cyclic",
                                                               "7layer-BN-wide", "7layer-BN-skip", "7layer-BN-wide-skip-adam") if have(r)]
        if parts:
            out.append(f"7-layer network ({pct(_acc(rows, '7layer-BN'))} with BN, SGD, cyclic): " + "; ".join(parts) + "."
                       + _seed_line(stats, "7layer-BN-adam-cosine", "7layer-BN").replace(" Over", " Adam cosine over")
                       + _seed_line(stats, "7layer-BN-skip", "7layer-BN").replace(" Over", " Skips over"))
    if have("7layer-noBN", "7layer-noBN-skip"):
        out.append(f"Without BN the 7-layer network reaches {pct(_acc(rows, '7layer-noBN'))}; skip connections: "
                   f"{pct(_acc(rows, '7layer-noBN-skip'))} ({_delta(rows, '7layer-noBN-skip', '7layer-noBN')})."
                   + _seed_line(stats, "7layer-noBN-skip", "7layer-noBN"))
    if have("3layer-BN", "3layer-BN-augment"):
        out.append(f"Augmentation: {_delta(rows, '3layer-BN-augment', '3layer-BN')} for [50, 50]"
                   + (f", {_delta(rows, '3layer-wide-BN-augment', '3layer-wide-BN')} for [512, 256]" if have("3layer-wide-BN", "3layer-wide-BN-augment") else "") + ".")
    if have("best"):
        r = rows["best"]
        out.append(f"Best network: {pct(r['test_accuracy'])} test accuracy in {duration(r['train_seconds'])} of training "
                   f"({duration(r['wall_seconds'])} wall, evaluations included): {r['command']}")
    if have("best-precise"):
        r = rows["best-precise"]
        out.append(f"Best network with PreciseBN statistics (the same training bit for bit; its exponential averages come from "
                   f"augmented batches, PreciseBN's from clean training images): {pct(r['test_accuracy'])} test, "
                   f"{pct(r['val_accuracy'])} validation, vs {pct(r['test_accuracy_ema'])} / {pct(r['val_accuracy_ema'])} with the "
                   f"EMA; {duration(r['train_seconds'])} of training, {duration(r['wall_seconds'])} wall: {r['command']}")
    return out


def page_table(plt, folder: Path):
    rows = _rows(folder)
    p = Page(plt, "Bonus (Exercise 4): every variant")
    rec = read_json_or_none(folder / "bonus.json") or {}
    p.text("Each run is one fastnet-train command (listed in bonus.md); unless stated, the assignment's Exercise 3 setting: batch 100, "
           "He init, lambda 0.005, cyclic eta 1e-5..1e-1, n_s 2250, 2 cycles (9,000 steps), seed 0, float32. Wall time includes the "
           "per-epoch evaluations on the 45,000 training and 5,000 validation images." + (" QUICK SETTINGS (smoke test)." if rec.get("quick") else ""))
    lines = [f"{'run':<26} {'variant':<44} {'test':>7} {'val':>7} {'wall':>7}"]
    for r in (r for r in rows.values() if r.get("group") not in ("seeds", "best-mlp")):
        test = pct(r["test_accuracy"]) if r["status"] == "finished" else r["status"]
        lines.append(f"{r['run']:<26} {r['variant'][:44]:<44} {test:>7} {pct(r['val_accuracy']):>7} {duration(r['wall_seconds']):>7}")
    p.text("\n".join(lines), size=7.6, family="monospace")
    stats = rec.get("seed_stats") or []
    if stats:
        p.text("Over seeds (test accuracy, mean +- sample std; seed 0 is the run above)", size=10, weight="bold")
        lines = [f"{'run':<24} {'seeds':>5} {'mean':>7} {'std':>6} {'min':>7} {'max':>7}   PreciseBN - EMA"]
        for r in stats:
            extra = f"{100 * r['mean_precise_minus_ema']:+.2f} +- {100 * r['std_precise_minus_ema']:.2f} pp" if "mean_precise_minus_ema" in r else ""
            lines.append(f"{r['run']:<24} {r['seeds']:>5} {pct(r['mean_test_accuracy']):>7} {100 * r['std_test_accuracy']:>6.2f} "
                         f"{pct(r['min_test_accuracy']):>7} {pct(r['max_test_accuracy']):>7}   {extra}")
        p.text("\n".join(lines), size=7.6, family="monospace")
    p.text("What the numbers say", size=11, weight="bold")
    for s in findings(rows, stats):
        p.text("- " + s, size=8.8)
    return p.fig


def page_gradcheck(plt, folder: Path):
    g = read_json_or_none(folder / "gradcheck_bonus.json")
    p = Page(plt, "Bonus: gradient checks of the new architectures")
    if not g:
        p.text("gradcheck_bonus.json is missing: run `fastnet experiment bonus` (or bonus-bn-after / bonus-skip).")
        return p.fig
    rows = check_gradcheck_record(g, folder / "gradcheck_bonus.json")["rows"]
    worst = max(r["rel_error"] for r in rows)
    p.text("Batch norm after the ReLU (x = gamma BN(max(0, Wx + b)) + beta) and the skip connections of eqs (40)-(41) change the backward "
           "pass: for BN-after the gradient passes BN's backward (eqs 25-27, 31-37 without the ReLU mask) and then the ReLU's mask; for a "
           "skip block the gradient of s^(l+1) is added to that of x^(l-1), the start of the skip, before layer l-1's own backward. "
           f"Checked as the assignment's networks are (float64, centred differences h = {g.get('h', 1e-5):g}, d = 10, n = 16, every entry "
           f"of every array): worst relative error {worst:.2e} over {len(rows)} arrays -- "
           + ("below 1e-6: verified." if worst < 1e-6 else "ABOVE 1e-6: not verified."))
    lines = [f"{'network':<36} {'worst rel err':>13} {'array':>7} {'entry rel':>10} {'checked':>8} {'kinks':>6}"]
    for case in dict.fromkeys(r["case"] for r in rows):
        rs = [r for r in rows if r["case"] == case]
        w = max(rs, key=lambda r: r["rel_error"])
        lines.append(f"{case:<36} {w['rel_error']:>13.2e} {w['param']:>7} {max(r['max_rel_error'] for r in rs):>10.2e} "
                     f"{sum(r['checked'] for r in rs):>8d} {sum(r['skipped_kinks'] for r in rs):>6d}")
    p.text("\n".join(lines), size=8.2, family="monospace")
    return p.fig


def _curves(ax, folder: Path, runs: list[tuple[str, str]], key: str = "val_accuracy", title: str = "") -> None:
    for i, (run, label) in enumerate(runs):
        info = load_run(folder / run)
        if not info.history:
            continue
        ax.plot(*curve_xy(info.history, key), color=COLORS[i % len(COLORS)], marker=".", ms=3, label=label)
    ax.set_xlabel("update step")
    ax.set_ylabel(key.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9.5)
    if ax.lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no finished run", transform=ax.transAxes, ha="center", va="center")


def page_bn(plt, folder: Path):
    rows = _rows(folder)
    p = Page(plt, "Bonus 4.1: batch norm after the ReLU, PreciseBN, adaptive BN")
    p.text("(a) BN after the ReLU keeps a bias in each hidden layer (BN no longer follows the linear map, so it does not cancel). "
           "(b) PreciseBN: before every evaluation and after training, the population statistics are recomputed with the model fixed "
           "over 10,000 training images in training-mode batches of 100, mean = mean of batch means, variance = mean of batch variances + "
           "variance of batch means (exact pooled variance); the exponential averages (alpha 0.9) go on untouched, so the PreciseBN run "
           "trains exactly as the baseline and records both. (c) Adaptive BN: the statistics estimated on the test images themselves.")
    rec = read_json_or_none(folder / "bonus.json") or {}
    for s in findings(rows, rec.get("seed_stats"))[:3]:
        p.text("- " + s, size=8.8)
    a1, a2 = p.axes(0.24, ncols=2, wspace=0.1)
    for ax, depth in ((a1, 3), (a2, 9)):
        _curves(ax, folder, [(f"{depth}layer-BN", "BN before ReLU"), (f"{depth}layer-BN-after", "BN after ReLU"),
                             (f"{depth}layer-BN-precise", "PreciseBN statistics")], title=f"{depth}-layer: validation accuracy")
    ad = read_json_or_none(folder / "adaptive_bn.json")
    if ad:
        p.text("Adaptive BN (test accuracy on all 10,000 test images; statistics from the images named)", size=10, weight="bold")
        shifts = ad.get("shifts") or list(dict.fromkeys(r["test_set"] for r in ad["rows"]))
        labels = ["as is" if s == "none" else s for s in shifts]
        lines = [f"{'model':<10} {'statistics':<36}" + "".join(f" {lab[:14]:>14}" for lab in labels)]
        by = {}
        for r in ad["rows"]:
            by.setdefault((r["run"], r["statistics"]), {})[r["test_set"]] = r["test_accuracy"]
        for (run, stats), v in by.items():
            lines.append(f"{run:<10} {stats[:36]:<36}" + "".join(f" {pct(v.get(s, math.nan)):>14}" for s in shifts))
        p.text("\n".join(lines), size=7.4, family="monospace")
        p.text("Dimming is an affine change of every input pixel, so each first-layer score changes affinely and batch norm with "
               "statistics re-estimated on the dimmed images undoes it exactly: without augmented copies the adaptive figures equal "
               "those on the original images (the translated copies are padded with the training mean pixel, which is not an affine "
               "image of the dimmed one, so there the equality breaks). Noise is not undone, only partly compensated.", size=8.5)
    else:
        p.text("adaptive_bn.json is missing: run `fastnet experiment bonus-adaptive-bn`.")
    return p.fig


def page_deep(plt, folder: Path):
    rows = _rows(folder)
    p = Page(plt, "Bonus 4.2: a deeper network -- Adam, decay, width, skips")
    p.text("7 layers (6 hidden of 50 units, BN) trained as the assignment's networks, then: learning-rate decay (cosine from eta_max to "
           "eta_min over the run, SGD); Adam (beta1 0.9, beta2 0.999, eps 1e-8; eta 1e-5..1e-3, cosine or cyclic -- Adam is allowed with "
           "the cyclic schedule when eta_max <= 0.01); 256 units per layer; skip connections of eq (40) from x^(1) to s^(3) and x^(3) to "
           "s^(5), the middle layers without BN or bias, eq (41); and the three together. Lambda stays 0.005 throughout (an L2 penalty "
           "in the gradient, also for Adam).")
    rec = read_json_or_none(folder / "bonus.json") or {}
    for s in findings(rows, rec.get("seed_stats"))[3:5]:
        p.text("- " + s, size=8.8)
    a1, a2 = p.axes(0.27, ncols=2, wspace=0.1)
    _curves(a1, folder, [("7layer-BN", "SGD cyclic"), ("7layer-BN-sgd-cosine", "SGD cosine"), ("7layer-BN-adam-cosine", "Adam cosine"),
                         ("7layer-BN-adam-cyclic", "Adam cyclic")], title="optimiser and schedule: validation accuracy")
    _curves(a2, folder, [("7layer-BN", "BN"), ("7layer-BN-wide", "wide [256]x6"), ("7layer-BN-skip", "skips"),
                         ("7layer-BN-wide-skip-adam", "wide + skips + Adam"), ("7layer-noBN", "no BN"), ("7layer-noBN-skip", "no BN + skips")],
            title="width and skips: validation accuracy")
    ax, = p.axes(0.25)
    names = [r for r in ("7layer-BN", "7layer-BN-sgd-cosine", "7layer-BN-adam-cosine", "7layer-BN-adam-cyclic", "7layer-BN-wide",
                         "7layer-BN-skip", "7layer-BN-wide-skip-adam", "7layer-noBN", "7layer-noBN-skip") if r in rows]
    accs = [_acc(rows, r) for r in names]
    ax.barh(range(len(names)), [0 if math.isnan(a) else 100 * a for a in accs], color="tab:blue")
    short = {"7layer-BN": "BN, SGD cyclic", "7layer-noBN": "no BN", "7layer-noBN-skip": "no BN, skips"}
    ax.set_yticks(range(len(names)), [short.get(n, n.replace("7layer-BN-", "")) for n in names], fontsize=7.5)
    for i, a in enumerate(accs):
        ax.text((0 if math.isnan(a) else 100 * a) + 0.3, i, pct(a), va="center", fontsize=7.5)
    ax.set_xlabel("test accuracy (%)")
    finite = [100 * a for a in accs if not math.isnan(a)]
    if finite:
        ax.set_xlim(max(0, min(finite) - 8), max(finite) + 4)
    return p.fig


def page_augment(plt, folder: Path):
    rows = _rows(folder)
    p = Page(plt, "Bonus: augmentation and the best network")
    p.text("Augmentation, on the fly per mini-batch: each training image is flipped horizontally with probability 1/2 and translated by "
           "up to 3 pixels in x and y (2 for the best network; zero padding, i.e. the mean pixel), drawn from a generator seeded by the run's "
           "seed and the update step (reproducible and resumable). It acts on the normalised rows viewed as 3x32x32 images, vectorised per "
           "batch (~0.5 ms per 100 images). At the assignment's 20 epochs it does not help (the networks are still underfitting the "
           "augmented data); with a wide network and a longer single cycle it does. The best network's settings were chosen by "
           "validation accuracy in a small search listed in the README.")
    rec = read_json_or_none(folder / "bonus.json") or {}
    for s in (s for s in findings(rows, rec.get("seed_stats")) if s.startswith(("Augmentation", "Best"))):
        p.text("- " + s, size=8.8)
    a1, a2 = p.axes(0.27, ncols=2, wspace=0.1)
    for ax, run, title in ((a1, "3layer-wide-BN", "[512, 256] without augmentation"), (a2, "3layer-wide-BN-augment", "[512, 256] with augmentation")):
        info = load_run(folder / run)
        for key, ls in (("train_accuracy", "-"), ("val_accuracy", "--")):
            if info.history:
                ax.plot(*curve_xy(info.history, key), ls=ls, marker=".", ms=3, label=key.replace("_", " "))
        ax.set_title(title, fontsize=9.5)
        ax.set_xlabel("update step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    ax, = p.axes(0.25)
    _curves(ax, folder, [("3layer-BN", "3-layer [50, 50] (baseline)"), ("best", "best network"), ("best-precise", "best network, PreciseBN statistics")],
            title="best network vs baseline: validation accuracy")
    return p.fig


def page_best_mlp(plt, folder: Path):
    """The best fully-connected network in 10 minutes (issue 17): the search, the seeds, the
    ablation and the chosen network's curves."""
    from fastnet.experiments.catalogue import BEST_MLP, BEST_MLP_MACHINE, BEST_MLP_SEARCH

    rows = _rows(folder)
    rec = read_json_or_none(folder / "bonus.json") or {}
    best = rec.get("best_mlp") or {}
    p = Page(plt, "Bonus: the best fully-connected network in 10 minutes")
    settings = ", ".join(f"{k} {list(v) if isinstance(v, tuple) else v}" for k, v in BEST_MLP.items())
    p.text(f"fastnet experiment best-mlp: {settings}. Chosen on validation accuracy only, among the settings below, each trained "
           f"end to end (the test accuracy was measured once, at the end of each run, and never used to choose). Search machine: "
           f"{BEST_MLP_MACHINE or 'not recorded'}.")
    if best.get("seeds"):
        se = f" +- {pct(best['stderr_test_accuracy'])} (standard error)" if "stderr_test_accuracy" in best else ""
        p.text(f"This folder's runs, {best['seeds']} seed(s): test accuracy {pct(best['mean_test_accuracy'])}{se}; each seed "
               + ", ".join(pct(a) for a in best["test_accuracies"]) + "; wall time at most " + duration(best["max_wall_seconds"]) + ".",
               weight="bold")
    else:
        p.text("No best-mlp run has finished in this folder (fastnet experiment best-mlp --out THIS_FOLDER).")
    if BEST_MLP_SEARCH:
        lines = [f"{'candidate':<30} {'epochs':>6} {'wall':>7} {'val':>7} {'test':>7}"]
        for name, _, epochs, wall, val, test in BEST_MLP_SEARCH:
            lines.append(f"{name[:30]:<30} {epochs:>6.1f} {duration(wall):>7} {pct(val):>7} {pct(test):>7}")
        p.text("The search (settings in fastnet/experiments/catalogue.py, BEST_MLP_SEARCH):", size=10, weight="bold")
        p.text("\n".join(lines), size=7.4, family="monospace")
    if best.get("ablation"):
        lines = [f"{'without':<22} {'test':>7} {'val':>7} {'it adds (test)':>15} {'(val)':>9}"]
        for r in best["ablation"]:
            lines.append(f"{r['ingredient']:<22} {pct(r['test_accuracy']):>7} {pct(r['val_accuracy']):>7} "
                         f"{100 * r['test_gain']:>+13.2f}pp {100 * r['val_gain']:>+7.2f}pp")
        p.text("Ablation (seed 0, same epochs): what each ingredient adds to the chosen network on its own", size=10, weight="bold")
        p.text("\n".join(lines), size=7.6, family="monospace")
    if "best-mlp" in rows:
        ax, = p.axes(0.25)
        info = load_run(folder / "best-mlp")
        for key, ls in (("train_accuracy", "-"), ("val_accuracy", "--")):
            if info.history:
                ax.plot(*curve_xy(info.history, key), ls=ls, marker=".", ms=3, label=key.replace("_", " "))
        ax.set_title("best MLP in 10 minutes, seed 0", fontsize=9.5)
        ax.set_xlabel("update step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return p.fig


def bonus_pages(plt, root: Path) -> list:
    """Page makers for the report when ``root/bonus`` exists (else none)."""
    folder = Path(root) / "bonus"
    if not folder.is_dir():
        return []
    return [lambda: page_table(plt, folder), lambda: page_gradcheck(plt, folder), lambda: page_bn(plt, folder),
            lambda: page_deep(plt, folder), lambda: page_augment(plt, folder), lambda: page_best_mlp(plt, folder)]
