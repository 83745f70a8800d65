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
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


QUANTITIES = {"loss": "cross-entropy loss", "cost": "cost (loss + L2 term, eq 20)", "accuracy": "accuracy"}


def _save(fig, path: Path, **kw) -> Path:
    plt = _pyplot()
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, **kw)
    plt.close(fig)
    tmp.replace(path)
    return path


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
        written.append(_save(fig, out_dir / f"{key}.png"))
    return written


# ------------------------------------------------------------------------ reading runs


@dataclass
class RunInfo:
    """One run folder as the report sees it."""

    name: str
    path: Path
    config: dict                      # the TrainConfig as a dict ({} if unreadable)
    metrics: dict | None              # metrics.json, None unless finished
    history: list[dict] = field(default_factory=list)
    status: str = "unfinished"        # finished | diverged | interrupted | failed | unfinished
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    def get(self, key: str, default=math.nan):
        return (self.metrics or {}).get(key, default) if (self.metrics or {}).get(key) is not None else default


def _dedup_steps(rows: list[dict]) -> list[dict]:
    """One evaluation per update step (the last), in step order: an epoch end and an
    --eval-every point can fall on the same step."""
    by_step = {}
    for r in rows:
        by_step[r["step"]] = r
    return [by_step[s] for s in sorted(by_step)]


def load_run(path) -> RunInfo:
    from .runs import read_history, read_json

    path = Path(path)
    config, metrics, history, status, message = {}, None, [], "unfinished", ""
    try:
        config = read_json(path / "config.json").get("train", {})
    except Exception:
        pass
    if (path / "metrics.json").is_file():
        try:
            metrics = read_json(path / "metrics.json")
            status = "finished"
        except Exception:
            metrics = None
    if metrics is None and (path / "status.json").is_file():
        try:
            st = read_json(path / "status.json")
            status, message = st.get("status", status), st.get("message", "")
        except Exception:
            pass
    if (path / "history.csv").is_file():
        try:
            history = _dedup_steps(read_history(path / "history.csv"))
        except Exception:
            history = []
    return RunInfo(path.name, path, config, metrics, history, status, message)


def load_experiment(exp_dir) -> dict[str, RunInfo]:
    """The run folders of one experiment, in the order experiment.json lists them (else by
    name); ``{}`` when the folder does not exist."""
    from .runs import read_json

    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        return {}
    names = []
    if (exp_dir / "experiment.json").is_file():
        try:
            names = [r["name"] for r in read_json(exp_dir / "experiment.json").get("runs", [])]
        except Exception:
            names = []
    found = sorted(p.name for p in exp_dir.iterdir() if p.is_dir() and (p / "config.json").is_file())
    names = [n for n in names if n in found] + [n for n in found if n not in names]
    return {n: load_run(exp_dir / n) for n in names}


# ---------------------------------------------------------------------------- figures

BN_STYLE = {True: dict(color="tab:blue", label="BN"), False: dict(color="tab:red", label="no BN")}


def _xy(history: list[dict], key: str):
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
        ax_loss.plot(*_xy(run.history, "train_loss"), color=st["color"], ls="-", marker=".", ms=3, label=f"{st['label']}, training{suffix}")
        ax_loss.plot(*_xy(run.history, "val_loss"), color=st["color"], ls="--", marker=".", ms=3, label=f"{st['label']}, validation{suffix}")
        if ax_acc is not None:
            ax_acc.plot(*_xy(run.history, "train_accuracy"), color=st["color"], ls="-", marker=".", ms=3, label=f"{st['label']}, training")
            ax_acc.plot(*_xy(run.history, "val_accuracy"), color=st["color"], ls="--", marker=".", ms=3, label=f"{st['label']}, validation")
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


def search_points(runs: dict[str, RunInfo]) -> list[dict]:
    """(stage, lambda, validation accuracy, test accuracy, name) of every finished search run."""
    pts = []
    for name, run in runs.items():
        if not run.finished or "lam" not in run.config:
            continue
        pts.append({"stage": name.split("-", 1)[0], "lam": float(run.config["lam"]), "val_accuracy": run.get("val_accuracy"),
                    "test_accuracy": run.get("test_accuracy"), "name": name})
    return sorted(pts, key=lambda p: p["lam"])


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


def init_groups(runs: dict[str, RunInfo]) -> dict[float, dict[bool, RunInfo]]:
    """init-sensitivity runs grouped by sigma, then by BN."""
    groups: dict[float, dict[bool, RunInfo]] = {}
    for run in runs.values():
        if run.config.get("sigma") is None:
            continue
        groups.setdefault(float(run.config["sigma"]), {})[bool(run.config.get("bn"))] = run
    return dict(sorted(groups.items(), reverse=True))


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
    plt = _pyplot()
    root = Path(exp_root)
    fig_dir = root / "figures"
    fig_dir.mkdir(exist_ok=True)
    written = []
    for depth, no_bn, bn in ((3, "ex2-3layer", "ex3-3layer-bn"), (9, "ex2-9layer", "ex3-9layer-bn")):
        pair = _pair(root, no_bn, bn)
        if any(pair.values()):
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
            plot_bn_overlay(pair, a1, a2, title=f"{depth}-layer network: loss")
            a2.set_title(f"{depth}-layer network: accuracy", fontsize=10)
            fig.tight_layout()
            written.append(_save(fig, fig_dir / f"bn-vs-nobn-{depth}layer.png"))
    runs = load_experiment(root / "lambda-search")
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        plot_lambda_search(search_points(runs), ax, _search_json(root))
        fig.tight_layout()
        written.append(_save(fig, fig_dir / "lambda-search.png"))
    groups = init_groups(load_experiment(root / "init-sensitivity"))
    if groups:
        fig, axes = plt.subplots(1, len(groups) + 1, figsize=(5 * (len(groups) + 1), 4.2), dpi=120, squeeze=False)
        plot_init_grid(groups, axes[0][:-1])
        plot_init_bars(groups, axes[0][-1])
        fig.tight_layout()
        written.append(_save(fig, fig_dir / "init-sensitivity.png"))
    return written


# ------------------------------------------------------------------------- the numbers


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f} %"


def _dur(seconds) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _first(runs: dict[str, RunInfo]) -> RunInfo | None:
    return next(iter(runs.values()), None)


def _pair(root: Path, no_bn: str, bn: str) -> dict[bool, RunInfo | None]:
    return {False: _first(load_experiment(root / no_bn)), True: _first(load_experiment(root / bn))}


def _search_json(root: Path) -> dict | None:
    from .runs import read_json

    p = root / "lambda-search" / "lambda_search.json"
    try:
        return read_json(p) if p.is_file() else None
    except Exception:
        return None


def _experiment_json(root: Path, name: str) -> dict:
    from .runs import read_json

    p = root / name / "experiment.json"
    try:
        return read_json(p) if p.is_file() else {}
    except Exception:
        return {}


def _run_state(run: RunInfo | None) -> str:
    if run is None:
        return "missing"
    return "finished" if run.finished else run.status


def gradcheck_record(root: Path) -> dict:
    """``gradcheck/gradcheck.json`` of the experiment folder, computed now if absent."""
    from .runs import read_json

    p = root / "gradcheck" / "gradcheck.json"
    if p.is_file():
        return read_json(p)
    from .experiments import run_gradcheck

    return run_gradcheck(root, echo=lambda line: None)


def summary_rows(root: Path) -> list[dict]:
    """One row per experiment: its test accuracy (or what stands for it), what the
    assignment quotes, status, and run time (sum of the runs' wall_seconds)."""
    from .experiments import EXPERIMENTS, QUOTED, TITLES

    rows = []
    for name in EXPERIMENTS:
        runs = load_experiment(root / name)
        finished = [r for r in runs.values() if r.finished]
        rec = _experiment_json(root, name)
        seconds = sum(r.get("wall_seconds", 0.0) for r in finished) if finished else math.nan
        if not runs:
            result, state = "–", "missing"
        elif name == "lambda-search":
            pts = search_points(runs)
            if pts:
                best = max(pts, key=lambda p: (p["val_accuracy"], -p["lam"]))
                result = f"best lambda {best['lam']:.3g}: val {_pct(best['val_accuracy'])}, test {_pct(best['test_accuracy'])}"
            else:
                result = "–"
            state = f"{len(finished)}/{len(runs)} runs finished"
        elif name == "init-sensitivity":
            parts = []
            for sigma, pair in init_groups(runs).items():
                parts.append(f"sigma {sigma:g}: BN {_pct(pair[True].get('test_accuracy')) if True in pair else '–'}, "
                             f"no BN {_pct(pair[False].get('test_accuracy')) if False in pair else '–'}")
            result = "; ".join(parts) or "–"
            state = f"{len(finished)}/{len(runs)} runs finished"
        else:
            run = _first(runs)
            result = _pct(run.get("test_accuracy")) if run.finished else "–"
            state = _run_state(run)
        if rec.get("quick"):
            state += " (quick)"
        rows.append({"experiment": name, "title": TITLES[name], "result": result, "quoted": QUOTED[name], "state": state, "seconds": seconds})
    return rows


def summary_markdown(root: Path, rows: list[dict]) -> str:

    lines = ["| experiment | what | test accuracy (ours) | assignment | status | run time |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['experiment']} | {r['title']} | {r['result']} | {r['quoted']} | {r['state']} | {_dur(r['seconds'])} |")
    notes = ["", "Run time: the sum of the runs' training and evaluation wall time (metrics.json `wall_seconds`)."]
    line = all_wall_time(root)
    if line:
        notes.append(line.replace("fastnet experiment all", "`fastnet experiment all`"))
    return "\n".join(lines + notes) + "\n"


def all_wall_time(root: Path) -> str:
    """One sentence on the wall time of ``fastnet experiment all`` from ``all.json``: the
    invocations that trained something (a resumed run takes several), or '' if none."""
    from .runs import read_json

    if not (root / "all.json").is_file():
        return ""
    try:
        a = read_json(root / "all.json")
    except Exception:
        return ""
    calls = a.get("invocations") or [a]
    training = [c for c in calls if c.get("executed", 1)]
    if not training:
        return f"fastnet experiment all: every run was already finished when last invoked ({a.get('finished_at', '?')})."
    total = sum(c.get("wall_seconds", 0.0) for c in training)
    runs = sum(c.get("executed", 0) for c in training)
    how = "in one invocation" if len(training) == 1 else f"over {len(training)} invocations (resumed)"
    last = training[-1]
    where = f"the dask cluster {last['scheduler']}" if last.get("scheduler") else f"{last.get('workers', '?')} worker process(es)"
    return (f"fastnet experiment all trained {runs} runs in {_dur(total)} of wall time {how}, on "
            f"{where}{' (quick settings)' if a.get('quick') else ''}; "
            f"last finished {training[-1].get('finished_at', '?')}.")


# ------------------------------------------------------------------------------ the PDF

A4 = (8.27, 11.69)
MARGIN = 0.07


class _Page:
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


def _page_summary(plt, root: Path, rows: list[dict]):
    from .runs import read_json

    p = _Page(plt, "fastnet: DD2424 Assignment 3 report")
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
        p.text(f"    result: {r['result']}\n    assignment: {r['quoted']}\n    status: {r['state']}; run time {_dur(r['seconds'])}", gap=0.004)
    p.text(all_wall_time(root))
    return p.fig


def _page_gradcheck(plt, g: dict):
    rows = g["rows"]
    worst = max(r["rel_error"] for r in rows)
    worst_row = max(rows, key=lambda r: r["rel_error"])
    worst_entry = max(r["max_rel_error"] for r in rows)
    checked = sum(r["checked"] for r in rows)
    kinks = sum(r["skipped_kinks"] for r in rows)
    cases = list(dict.fromkeys(r["case"] for r in rows))
    p = _Page(plt, "(i) Checking the analytic gradients")
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
    p.text(f"Computed in {g.get('seconds', math.nan):.1f} s by fastnet.gradcheck (command: fastnet gradcheck).", size=8.5)
    return p.fig


def _page_gradcheck_table(plt, g: dict):
    p = _Page(plt, "(i) Gradient check: every parameter array")
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
            parts.append(f"{label}: test accuracy {_pct(run.get('test_accuracy'))}, final training loss {run.get('train_loss'):.3f}, "
                         f"validation loss {run.get('val_loss'):.3f} ({run.get('steps', '?')} update steps, {_dur(run.get('wall_seconds'))})")
    return "; ".join(parts) + "."


def _settings_line(run: RunInfo | None) -> str:
    if run is None or not run.config:
        return ""
    c = run.config
    return (f"Setting: hidden {c.get('hidden')}, {c.get('init')} init, batch {c.get('batch')}, eta {c.get('eta_min'):g}..{c.get('eta_max'):g}, "
            f"lambda {c.get('lam'):g}, {c.get('cycles')} cycles, n_s = {(run.metrics or {}).get('n_s', c.get('n_s'))}, split {c.get('split')}, "
            f"alpha {c.get('alpha')}, seed {c.get('seed')}.")


def _page_bn(plt, root: Path, item: str, depth: int, no_bn: str, bn: str):
    pair = _pair(root, no_bn, bn)
    p = _Page(plt, f"({item}) {depth}-layer network with and without batch normalization")
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
        ax.plot(*_xy(run.history, "train_accuracy"), color=st["color"], ls="-", marker=".", ms=3, label=f"{st['label']}, training")
        ax.plot(*_xy(run.history, "val_accuracy"), color=st["color"], ls="--", marker=".", ms=3, label=f"{st['label']}, validation")
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
    search = _search_json(root)
    pts = search_points(runs)
    final = _first(load_experiment(root / "final-3cycles"))
    p = _Page(plt, "(iv) Searching lambda for the 3-layer network with BN")
    if not runs:
        p.text("The lambda-search experiment is missing from this folder (run: fastnet experiment lambda-search).")
    if search:
        tr = search.get("training", {})
        c, f = search.get("coarse", {}), search.get("fine", {})
        p.text(f"Each search run trains the 3-layer [50, 50] BN network for {tr.get('cycles')} cycles with n_s = {tr.get('n_s')} "
               f"(shorter than the default), batch {tr.get('batch')}, eta {tr.get('eta_min'):g}..{tr.get('eta_max'):g}, "
               f"{tr.get('init')} init, and is judged by its {search.get('criterion', 'validation accuracy')} on the 5,000 held-out images.")
        p.text(f"Coarse search: {len(c.get('values', []))} values, {c.get('method')}, lambda in [1e{c['log10_range'][0]:g}, 1e{c['log10_range'][1]:g}]. "
               f"Best coarse: lambda = {search['best_coarse']['lam']:.3g} (validation {_pct(search['best_coarse']['val_accuracy'])}).")
        p.text(f"Fine search: {len(f.get('values', []))} values, {f.get('method')} (seed {f.get('seed')}), lambda in "
               f"[{10 ** f['log10_range'][0]:.3g}, {10 ** f['log10_range'][1]:.3g}] (log10 {f['log10_range'][0]:.2f} to {f['log10_range'][1]:.2f}).")
    if pts:
        best = max(pts, key=lambda q: (q["val_accuracy"], -q["lam"]))
        p.text(f"Best lambda overall: {best['lam']:.4g} (run {best['name']}), validation accuracy {_pct(best['val_accuracy'])}, "
               f"test accuracy of that search run {_pct(best['test_accuracy'])}.", weight="bold")
    if pts:
        n_val = int(runs[best["name"]].config.get("n_val", 5000)) if runs[best["name"]].config.get("split", "a3") == "a3" else 10000
        se = math.sqrt(best["val_accuracy"] * (1 - best["val_accuracy"]) / n_val)
        close = [q for q in pts if best["val_accuracy"] - q["val_accuracy"] <= 2 * se]
        p.text(f"A validation accuracy near {_pct(best['val_accuracy'])} measured on {n_val} images has a binomial standard error of "
               f"about {100 * se:.2f} points: the {len(close)} values of lambda within two standard errors of the best "
               f"({min(q['lam'] for q in close):.3g} to {max(q['lam'] for q in close):.3g}) are not told apart by this search.")
    if final is not None and final.finished:
        c = final.config
        p.text(f"Trained with lambda = {c.get('lam'):.4g} for {c.get('cycles')} cycles at n_s = {final.get('n_s', c.get('n_s'))}: "
               f"test accuracy {_pct(final.get('test_accuracy'))} (validation {_pct(final.get('val_accuracy'))}, {_dur(final.get('wall_seconds'))}).", weight="bold")
    else:
        p.text(f"The 3-cycle run with the best lambda (final-3cycles) is {_run_state(final)}.", weight="bold")
    ax, = p.axes(0.34)
    plot_lambda_search(pts, ax, search)
    ax.set_title("validation accuracy after the search training, per lambda", fontsize=10)
    if pts:
        lines = [f"{'stage':<7} {'lambda':>10} {'val acc':>9} {'test acc':>9}"]
        lines += [f"{q['stage']:<7} {q['lam']:>10.3e} {_pct(q['val_accuracy']):>9} {_pct(q['test_accuracy']):>9}" for q in sorted(pts, key=lambda q: (q['stage'] != 'coarse', q['lam']))]
        p.text("\n".join(lines), size=7.5 if len(lines) <= 24 else 6, family="monospace")
    return p.fig


def init_comment(groups: dict[float, dict[bool, RunInfo]]) -> str:
    """What the init-sensitivity numbers say, in words made from them."""
    acc = {bn: {s: pair[bn].get("test_accuracy") for s, pair in groups.items() if bn in pair and pair[bn].finished} for bn in (True, False)}
    states = {bn: {s: pair[bn].status for s, pair in groups.items() if bn in pair and not pair[bn].finished} for bn in (True, False)}
    if not any(acc.values()):
        return "No init-sensitivity run has finished: nothing to compare."
    out = []
    for s, pair in groups.items():
        a = acc[True].get(s)
        b = acc[False].get(s)
        fa = _pct(a) if a is not None else states[True].get(s, "missing")
        fb = _pct(b) if b is not None else states[False].get(s, "missing")
        out.append(f"sigma = {s:g}: with BN {fa}, without BN {fb}.")
    chance = 0.15  # CIFAR-10 has 10 classes: 10 % is chance
    for bn in (True, False):
        vals = acc[bn]
        label = "With BN" if bn else "Without BN"
        flat = [(s, pair[bn].get("train_loss")) for s, pair in groups.items() if bn in pair and pair[bn].finished
                and abs(pair[bn].get("train_loss") - math.log(10)) < 0.01]
        if len(vals) >= 2:
            spread = max(vals.values()) - min(vals.values())
            out.append(f"{label} the test accuracy varies by {100 * spread:.1f} percentage points across the sigmas "
                       f"({_pct(min(vals.values()))} to {_pct(max(vals.values()))}).")
        stuck = [s for s, v in vals.items() if v < chance]
        if stuck:
            out.append(f"{label}, sigma = {', '.join(f'{s:g}' for s in stuck)} stayed at chance level (< {100 * chance:.0f} %): "
                       f"the network did not learn.")
        if flat:
            out.append(f"{label}, the final training loss for sigma = {', '.join(f'{s:g}' for s, _ in flat)} is "
                       f"{', '.join(f'{v:.4f}' for _, v in flat)}, i.e. ln 10 = {math.log(10):.4f}, the loss of giving every class "
                       f"probability 1/10: the signal vanished in the forward pass.")
        if states[bn]:
            out.append(f"{label}: " + ", ".join(f"sigma = {s:g} {st}" for s, st in states[bn].items()) + ".")
    if len(acc[True]) >= 2 and len(acc[False]) >= 2:
        sb = max(acc[True].values()) - min(acc[True].values())
        sn = max(acc[False].values()) - min(acc[False].values())
        if sb < sn:
            out.append(f"So batch normalization made training much less sensitive to the initial scale of the weights "
                       f"(spread {100 * sb:.1f} vs {100 * sn:.1f} points), consistent with the claim that it makes training more stable.")
        else:
            out.append(f"Here batch normalization did not reduce the sensitivity to the initial scale (spread {100 * sb:.1f} vs "
                       f"{100 * sn:.1f} points).")
    return "\n".join(out)


def _page_init(plt, root: Path):
    runs = load_experiment(root / "init-sensitivity")
    groups = init_groups(runs)
    p = _Page(plt, "(v) Sensitivity to initialisation, BN vs no BN")
    first = _first(runs)
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
    plt = _pyplot()
    from matplotlib.backends.backend_pdf import PdfPages

    from .errors import FastnetError

    root = Path(exp_root)
    if not root.is_dir():
        raise FastnetError(f"{root} is not a folder; run `fastnet experiment all --out {root}` first")
    pdf_path = Path(out) if out else root / "report.pdf"
    rows = summary_rows(root)
    from .runs import _atomic_write

    _atomic_write(root / "summary.md", summary_markdown(root, rows))
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
    from .bonus_report import bonus_pages  # Exercise 4: pages only when root/bonus exists

    pages += bonus_pages(plt, root)
    tmp = pdf_path.with_name(pdf_path.stem + ".tmp.pdf")
    with PdfPages(tmp, metadata={"Title": "fastnet: DD2424 Assignment 3 report", "Creator": "fastnet report"}) as pdf:
        for make in pages:
            fig = make()
            pdf.savefig(fig)
            plt.close(fig)
    tmp.replace(pdf_path)
    return pdf_path


REPORT_PAGES = 7
