"""The report's numbers as text: one row per experiment (summary.md), the wall time of
``experiment all``, and the sentences the pages quote."""
from __future__ import annotations

import math
from pathlib import Path

from fastnet.experiments.catalogue import EXPERIMENTS, QUOTED, TITLES
from fastnet.experiments.records import check_all_record, check_gradcheck_record
from fastnet.report.readings import (
    experiment_record,
    first_run,
    init_groups,
    load_experiment,
    run_state,
    search_points,
)
from fastnet.runs.record import RunInfo
from fastnet.util.files import read_json

# ------------------------------------------------------------------------- the numbers


def pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f} %"


def duration(seconds) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def gradcheck_record(root: Path) -> dict | None:
    """``gradcheck/gradcheck.json`` of the experiment folder, or None if it has none (the report
    computes nothing: ``fastnet report`` writes the record first when it is missing)."""

    p = root / "gradcheck" / "gradcheck.json"
    return check_gradcheck_record(read_json(p), p) if p.is_file() else None


def summary_rows(root: Path) -> list[dict]:
    """One row per experiment: its test accuracy (or what stands for it), what the
    assignment quotes, status, and run time (sum of the runs' wall_seconds)."""

    rows = []
    for name in EXPERIMENTS:
        runs = load_experiment(root / name)
        finished = [r for r in runs.values() if r.finished]
        rec = experiment_record(root, name)
        seconds = sum(r.get("wall_seconds", 0.0) for r in finished) if finished else math.nan
        if not runs:
            result, state = "–", "missing"
        elif name == "lambda-search":
            pts = search_points(runs)
            if pts:
                best = max(pts, key=lambda p: (p["val_accuracy"], -p["lam"]))
                result = f"best lambda {best['lam']:.3g}: val {pct(best['val_accuracy'])}, test {pct(best['test_accuracy'])}"
            else:
                result = "–"
            state = f"{len(finished)}/{len(runs)} runs finished"
        elif name == "init-sensitivity":
            parts = []
            for sigma, pair in init_groups(runs).items():
                parts.append(f"sigma {sigma:g}: BN {pct(pair[True].get('test_accuracy')) if True in pair else '–'}, "
                             f"no BN {pct(pair[False].get('test_accuracy')) if False in pair else '–'}")
            result = "; ".join(parts) or "–"
            state = f"{len(finished)}/{len(runs)} runs finished"
        else:
            run = first_run(runs)
            result = pct(run.get("test_accuracy")) if run.finished else "–"
            state = run_state(run)
        if rec.get("quick"):
            state += " (quick)"
        rows.append({"experiment": name, "title": TITLES[name], "result": result, "quoted": QUOTED[name], "state": state, "seconds": seconds})
    return rows


def summary_markdown(root: Path, rows: list[dict]) -> str:

    lines = ["| experiment | what | test accuracy (ours) | assignment | status | run time |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['experiment']} | {r['title']} | {r['result']} | {r['quoted']} | {r['state']} | {duration(r['seconds'])} |")
    notes = ["", "Run time: the sum of the runs' training and evaluation wall time (metrics.json `wall_seconds`)."]
    line = all_wall_time(root)
    if line:
        notes.append(line.replace("fastnet experiment all", "`fastnet experiment all`"))
    return "\n".join(lines + notes) + "\n"


def all_wall_time(root: Path) -> str:
    """One sentence on the wall time of ``fastnet experiment all`` from ``all.json``: the
    invocations that trained something (a resumed run takes several), or '' if none."""

    p = root / "all.json"
    if not p.exists():
        return ""
    a = check_all_record(read_json(p), p)
    calls = a.get("invocations") or [a]
    training = [c for c in calls if c.get("executed", 1)]
    if not training:
        return f"fastnet experiment all: every run was already finished when last invoked ({a.get('finished_at', '?')})."
    total = sum(c.get("wall_seconds", 0.0) for c in training)
    runs = sum(c.get("executed", 0) for c in training)
    how = "in one invocation" if len(training) == 1 else f"over {len(training)} invocations (resumed)"
    last = training[-1]
    where = f"the dask cluster {last['scheduler']}" if last.get("scheduler") else f"{last.get('workers', '?')} worker process(es)"
    return (f"fastnet experiment all trained {runs} runs in {duration(total)} of wall time {how}, on "
            f"{where}{' (quick settings)' if a.get('quick') else ''}; "
            f"last finished {training[-1].get('finished_at', '?')}.")


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
        fa = pct(a) if a is not None else states[True].get(s, "missing")
        fb = pct(b) if b is not None else states[False].get(s, "missing")
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
                       f"({pct(min(vals.values()))} to {pct(max(vals.values()))}).")
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
