"""Figures of runs and experiments, and the PDF report of Assignment 3 (matplotlib, Agg).

* :func:`plot_run`: one run's loss, cost and accuracy (train vs validation), as PNGs.
* :func:`plot_bn_overlay`, :func:`plot_lambda_search`, :func:`plot_init_grid`: the
  comparison figures of the report, drawn on axes given (or on new figures by
  :func:`experiment_figures`, which writes them as PNGs to ``EXPERIMENT_DIR/figures/``).
* :func:`build_report`: ``EXPERIMENT_DIR/report.pdf`` with the assignment's items i-v and
  ``EXPERIMENT_DIR/summary.md``. Every number in them is read from the run folders (or, for
  the gradient check, from ``gradcheck/gradcheck.json``, computed if absent); an experiment
  that is missing or unfinished is reported as such.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from fastnet.report.bonus import bonus_pages
from fastnet.report.figures import (
    BN_STYLE,
    curve_xy,
    experiment_figures,
    plot_bn_overlay,
    plot_init_bars,
    plot_lambda_search,
)
from fastnet.report.page import A4, MARGIN, Page
from fastnet.report.readings import (
    bn_pair,
    check_experiment_dir,
    first_run,
    init_groups,
    load_experiment,
    run_state,
    search_points,
    search_record,
)
from fastnet.report.summary import (
    all_wall_time,
    duration,
    gradcheck_record,
    init_comment,
    pct,
    summary_markdown,
    summary_rows,
)
from fastnet.runs.record import RunInfo
from fastnet.util.files import atomic_file, atomic_write, read_json
from fastnet.util.plotting import pyplot

# ------------------------------------------------------------------------------ the PDF

def _page_summary(plt, root: Path, rows: list[dict]):

    p = Page(plt, "fastnet: DD2424 Assignment 3 report")
    any_run = next((r for name in ("ex3-3layer-bn", "ex2-3layer", "a2-default") for r in load_experiment(root / name).values()), None)
    source = ""
    if any_run is not None:
        try:
            cfg = read_json(any_run.path / "config.json")
            d = cfg.get("data", {})
            source = f"Data: {d.get('source', '?')} ({d.get('n_train', '?')} training, {d.get('n_val', '?')} validation, {d.get('n_test', '?')} test images for the split 'a3' runs)."
        except Exception:
            pass
    env = (any_run.metrics or {}).get("environment", {}) if any_run is not None else {}
    p.text(f"Experiment folder: {root.resolve()}\nReport made {time.strftime('%Y-%m-%d %H:%M')}. {source}\n"
           f"Backend: {(any_run.metrics or {}).get('backend', '?') if any_run else '?'}, {(any_run.metrics or {}).get('dtype', '?') if any_run else '?'}; "
           f"fastnet {env.get('fastnet', '?')}, numpy {env.get('numpy', '?')}, Python {env.get('python', '?')}, {env.get('cpus', '?')} CPUs.")
    if any("quick" in r["state"] for r in rows):
        p.text("NOTE: some experiments ran with --quick (a few update steps per run): their numbers only show that the pipeline works.", weight="bold")
    p.text("Summary", size=12, weight="bold")
    for r in rows:
        p.text(f"{r['experiment']} - {r['title']}", weight="bold", gap=0.0)
        p.text(f"    result: {r['result']}\n    assignment: {r['quoted']}\n    status: {r['state']}; run time {duration(r['seconds'])}", gap=0.004)
    p.text(all_wall_time(root))
    return p.fig


def _page_no_gradcheck(plt, heading: str):
    p = Page(plt, heading)
    p.text("No gradient-check record: gradcheck/gradcheck.json is missing from this folder. `fastnet report` computes it "
           "before it writes the report, and `fastnet experiment all` writes it with the experiments.")
    return p.fig


def _page_gradcheck(plt, g: dict | None):
    if g is None:
        return _page_no_gradcheck(plt, "(i) Checking the analytic gradients")
    rows = g["rows"]
    worst = max(r["rel_error"] for r in rows)
    worst_row = max(rows, key=lambda r: r["rel_error"])
    worst_entry = max(r["max_rel_error"] for r in rows)
    checked = sum(r["checked"] for r in rows)
    kinks = sum(r["skipped_kinks"] for r in rows)
    cases = list(dict.fromkeys(r["case"] for r in rows))
    p = Page(plt, "(i) Checking the analytic gradients")
    verdict = ("All are below 1e-6, i.e. the analytic and numerical gradients agree to at least 6 significant digits at the scale of "
               "each array's gradient, for every layer of every network, with and without batch normalization: we consider the "
               "k-layer gradient computations, BN included, bug free." if worst < 1e-6 else
               f"The worst relative error, {worst:.2e}, is ABOVE 1e-6: the gradients are not verified (see the table).")
    p.text(f"Every entry of every parameter array (W, b, and gamma, beta with BN) of {len(cases)} small networks was compared with a "
           f"centred finite difference (J(theta + h) - J(theta - h)) / 2h of the mini-batch cost of eq (20), in {g.get('dtype', 'float64')}, "
           f"h = {g.get('h'):g}, on random data with d = {g.get('d')} inputs, n = {g.get('n')} samples (mini-batch > 1, so BN uses "
           f"batch statistics as in the analytic pass) and K = {g.get('K')} classes; {str(g.get('init', 'he')).capitalize()} initialisation, gamma and "
           f"beta moved away from 1 and 0. Networks: 2, 3 and 4 layers (hidden sizes "
           f"{', '.join(dict.fromkeys(str(r['hidden']) for r in rows))}), with and without BN, lambda = 0 and 0.1. Entries whose "
           f"perturbation flips a ReLU (a kink: the difference quotient is meaningless there) are skipped and counted. Backend: "
           f"{g.get('backend')}.")
    p.text(f"Relative error per array = max_i |g_a,i - g_n,i| / max_i max(|g_a,i|, |g_n,i|). Over {len(rows)} arrays and {checked} "
           f"entries ({kinks} skipped at kinks) the worst is {worst:.2e} ({worst_row['case']}, {worst_row['param']}); the worst "
           f"per-entry relative error |g_a - g_n| / (|g_a| + |g_n|) is {worst_entry:.2e}. {verdict}")
    p.text("Worst errors per network (all arrays: next page)", size=11, weight="bold")
    lines = [f"{'network':<24} {'worst rel err':>13} {'array':>7} {'entry rel':>10} {'checked':>8} {'kinks':>6}"]
    for case in cases:
        rs = [r for r in rows if r["case"] == case]
        w = max(rs, key=lambda r: r["rel_error"])
        lines.append(f"{case:<24} {w['rel_error']:>13.2e} {w['param']:>7} {max(r['max_rel_error'] for r in rs):>10.2e} "
                     f"{sum(r['checked'] for r in rs):>8d} {sum(r['skipped_kinks'] for r in rs):>6d}")
    p.text("\n".join(lines), size=9, family="monospace")
    p.text(f"Computed in {g.get('seconds', math.nan):.1f} s by fastnet.model.gradcheck (command: fastnet gradcheck).", size=8.5)
    return p.fig


def _page_gradcheck_table(plt, g: dict | None):
    if g is None:
        return _page_no_gradcheck(plt, "(i) Gradient check: every parameter array")
    p = Page(plt, "(i) Gradient check: every parameter array")
    rows = g["rows"]
    head = f"{'network':<22} {'array':<6} {'shape':<6} {'rel err':>8} {'entry':>8}"
    half = (len(rows) + 1) // 2
    cols = [rows[:half], rows[half:]]
    size = 7.2 if half <= 50 else 5.2
    line_h = size * 1.45 / 72 / A4[1]
    top = p.y
    for k, col in enumerate(cols):
        y = top
        x = MARGIN + k * 0.45
        for line in [head] + [f"{r['case']:<22} {r['param']:<6} {'x'.join(map(str, r['shape'])):<6} {r['rel_error']:>8.1e} {r['max_rel_error']:>8.1e}" for r in col]:
            p.fig.text(x, y, line, size=size, family="monospace", va="top")
            y -= line_h
    p.y = top - (half + 1) * line_h - 0.01
    p.text("rel err: max |g_a - g_n| / max(|g_a|, |g_n|) over the array; entry: the largest per-entry |g_a - g_n| / (|g_a| + |g_n|).", size=8)
    return p.fig


def _final_numbers(pair: dict[bool, RunInfo | None]) -> str:
    parts = []
    for bn in (False, True):
        run = pair.get(bn)
        label = "With BN" if bn else "Without BN"
        if run is None:
            parts.append(f"{label}: missing")
        elif not run.finished:
            parts.append(f"{label}: {run.status}{(' - ' + run.message) if run.message else ''}")
        else:
            parts.append(f"{label}: test accuracy {pct(run.get('test_accuracy'))}, final training loss {run.get('train_loss'):.3f}, "
                         f"validation loss {run.get('val_loss'):.3f} ({run.get('steps', '?')} update steps, {duration(run.get('wall_seconds'))})")
    return "; ".join(parts) + "."


def _settings_line(run: RunInfo | None) -> str:
    if run is None or not run.config:
        return ""
    c = run.config
    return (f"Setting: hidden {c.get('hidden')}, {c.get('init')} init, batch {c.get('batch')}, eta {c.get('eta_min'):g}..{c.get('eta_max'):g}, "
            f"lambda {c.get('lam'):g}, {c.get('cycles')} cycles, n_s = {(run.metrics or {}).get('n_s', c.get('n_s'))}, split {c.get('split')}, "
            f"alpha {c.get('alpha')}, seed {c.get('seed')}.")


def _page_bn(plt, root: Path, item: str, depth: int, no_bn: str, bn: str):
    pair = bn_pair(root, no_bn, bn)
    p = Page(plt, f"({item}) {depth}-layer network with and without batch normalization")
    p.text(_settings_line(pair[True] or pair[False]))
    p.text(_final_numbers(pair))
    a, b = pair.get(False), pair.get(True)
    if a is not None and b is not None and a.finished and b.finished:
        d = b.get("test_accuracy") - a.get("test_accuracy")
        p.text(f"Batch normalization {'raises' if d > 0 else 'lowers'} the test accuracy of the {depth}-layer network by "
               f"{abs(100 * d):.2f} percentage points.")
    ax1, = p.axes(0.36)
    plot_bn_overlay(pair, ax1, title=f"{depth}-layer network: training (solid) and validation (dashed) loss")
    ax2, = p.axes(0.30)
    _plot_acc(pair, ax2, depth)
    return p.fig


def _plot_acc(pair, ax, depth: int) -> None:
    for bn in (False, True):
        run = pair.get(bn)
        if run is None or not run.history:
            continue
        st = BN_STYLE[bn]
        ax.plot(*curve_xy(run.history, "train_accuracy"), color=st["color"], ls="-", marker=".", ms=3, label=f"{st['label']}, training")
        ax.plot(*curve_xy(run.history, "val_accuracy"), color=st["color"], ls="--", marker=".", ms=3, label=f"{st['label']}, validation")
    ax.set_xlabel("update step")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{depth}-layer network: accuracy", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished run", transform=ax.transAxes, ha="center", va="center")


def _page_lambda(plt, root: Path):
    runs = load_experiment(root / "lambda-search")
    search = search_record(root)
    pts = search_points(runs)
    final = first_run(load_experiment(root / "final-3cycles"))
    p = Page(plt, "(iv) Searching lambda for the 3-layer network with BN")
    if not runs:
        p.text("The lambda-search experiment is missing from this folder (run: fastnet experiment lambda-search).")
    if search:
        tr = search.get("training", {})
        c, f = search.get("coarse", {}), search.get("fine", {})
        p.text(f"Each search run trains the 3-layer [50, 50] BN network for {tr.get('cycles')} cycles with n_s = {tr.get('n_s')} "
               f"(shorter than the default), batch {tr.get('batch')}, eta {tr.get('eta_min'):g}..{tr.get('eta_max'):g}, "
               f"{tr.get('init')} init, and is judged by its {search.get('criterion', 'validation accuracy')} on the 5,000 held-out images.")
        p.text(f"Coarse search: {len(c.get('values', []))} values, {c.get('method')}, lambda in [1e{c['log10_range'][0]:g}, 1e{c['log10_range'][1]:g}]. "
               f"Best coarse: lambda = {search['best_coarse']['lam']:.3g} (validation {pct(search['best_coarse']['val_accuracy'])}).")
        p.text(f"Fine search: {len(f.get('values', []))} values, {f.get('method')} (seed {f.get('seed')}), lambda in "
               f"[{10 ** f['log10_range'][0]:.3g}, {10 ** f['log10_range'][1]:.3g}] (log10 {f['log10_range'][0]:.2f} to {f['log10_range'][1]:.2f}).")
    if pts:
        best = max(pts, key=lambda q: (q["val_accuracy"], -q["lam"]))
        p.text(f"Best lambda overall: {best['lam']:.4g} (run {best['name']}), validation accuracy {pct(best['val_accuracy'])}, "
               f"test accuracy of that search run {pct(best['test_accuracy'])}.", weight="bold")
    if pts:
        n_val = int(runs[best["name"]].config.get("n_val", 5000)) if runs[best["name"]].config.get("split", "a3") == "a3" else 10000
        se = math.sqrt(best["val_accuracy"] * (1 - best["val_accuracy"]) / n_val)
        close = [q for q in pts if best["val_accuracy"] - q["val_accuracy"] <= 2 * se]
        p.text(f"A validation accuracy near {pct(best['val_accuracy'])} measured on {n_val} images has a binomial standard error of "
               f"about {100 * se:.2f} points: the {len(close)} values of lambda within two standard errors of the best "
               f"({min(q['lam'] for q in close):.3g} to {max(q['lam'] for q in close):.3g}) are not told apart by this search.")
    if final is not None and final.finished:
        c = final.config
        p.text(f"Trained with lambda = {c.get('lam'):.4g} for {c.get('cycles')} cycles at n_s = {final.get('n_s', c.get('n_s'))}: "
               f"test accuracy {pct(final.get('test_accuracy'))} (validation {pct(final.get('val_accuracy'))}, {duration(final.get('wall_seconds'))}).", weight="bold")
    else:
        p.text(f"The 3-cycle run with the best lambda (final-3cycles) is {run_state(final)}.", weight="bold")
    ax, = p.axes(0.34)
    plot_lambda_search(pts, ax, search)
    ax.set_title("validation accuracy after the search training, per lambda", fontsize=10)
    if pts:
        lines = [f"{'stage':<7} {'lambda':>10} {'val acc':>9} {'test acc':>9}"]
        lines += [f"{q['stage']:<7} {q['lam']:>10.3e} {pct(q['val_accuracy']):>9} {pct(q['test_accuracy']):>9}" for q in sorted(pts, key=lambda q: (q['stage'] != 'coarse', q['lam']))]
        p.text("\n".join(lines), size=7.5 if len(lines) <= 24 else 6, family="monospace")
    return p.fig


def _page_init(plt, root: Path):
    runs = load_experiment(root / "init-sensitivity")
    groups = init_groups(runs)
    p = Page(plt, "(v) Sensitivity to initialisation, BN vs no BN")
    first = first_run(runs)
    if first is None:
        p.text("The init-sensitivity experiment is missing from this folder (run: fastnet experiment init-sensitivity).")
        return p.fig
    p.text("Instead of He initialisation every weight is drawn from N(0, sigma^2), the same sigma at every layer. " + _settings_line(first))
    p.text(init_comment(groups))
    items = list(groups.items())
    panels = items + [None]  # the last panel: test accuracies as bars
    for i in range(0, len(panels), 2):
        axes = p.axes(0.25, ncols=2, wspace=0.1)
        for ax, item in zip(axes, panels[i:i + 2]):
            if item is None:
                plot_init_bars(groups, ax)
            else:
                plot_bn_overlay(item[1], ax, title=f"normal init, sigma = {item[0]:g}")
                if ax.get_legend():
                    ax.legend(fontsize=6.5)
        for ax in axes[len(panels[i:i + 2]):]:
            ax.set_axis_off()
    return p.fig


def build_report(exp_root, out=None) -> Path:
    """``report.pdf`` (items i-v of the assignment) and ``summary.md`` for an experiment folder;
    also the PNG figures in ``figures/``. Returns the PDF's path."""
    plt = pyplot()
    from matplotlib.backends.backend_pdf import PdfPages


    root = check_experiment_dir(exp_root)
    pdf_path = Path(out) if out else root / "report.pdf"
    rows = summary_rows(root)

    atomic_write(root / "summary.md", summary_markdown(root, rows))
    experiment_figures(root)
    g = gradcheck_record(root)
    pages = [
        lambda: _page_summary(plt, root, rows),
        lambda: _page_gradcheck(plt, g),
        lambda: _page_gradcheck_table(plt, g),
        lambda: _page_bn(plt, root, "ii", 3, "ex2-3layer", "ex3-3layer-bn"),
        lambda: _page_bn(plt, root, "iii", 9, "ex2-9layer", "ex3-9layer-bn"),
        lambda: _page_lambda(plt, root),
        lambda: _page_init(plt, root),
    ]
    pages += bonus_pages(plt, root)  # Exercise 4: pages only when root/bonus exists
    with atomic_file(pdf_path, "wb") as f, PdfPages(f, metadata={"Title": "fastnet: DD2424 Assignment 3 report", "Creator": "fastnet report"}) as pdf:
        for make in pages:
            fig = make()
            pdf.savefig(fig)
            plt.close(fig)
    return pdf_path


REPORT_PAGES = 7
