"""The bonus exercises (Exercise 4) as experiment presets: ``fastnet experiment bonus[-NAME]``.

Every bonus run goes into one folder, ``OUT/bonus/<run>/``, so runs shared by several presets
(the baselines) train once; each preset is a subset, and ``bonus`` is all of them. Like the
assignment's experiments they run through :func:`fastnet.experiments.sweep.run_sweep` (resumable, in
parallel). Afterwards ``OUT/bonus/bonus.json`` (and ``bonus.md``) hold one row per run --
variant, group, test / validation accuracy, wall time and the ``fastnet-train`` command that
reproduces it -- and ``adaptive_bn.json`` the adaptive-BN evaluations.

The runs and presets are data in :mod:`fastnet.experiments.catalogue` (``BONUS_RUNS``,
``BONUS_PRESETS``); this module builds their configurations and runs them. Settings: the
assignment's Exercise 3 setting (batch 100, He init, lambda = 0.005, cyclic eta
1e-5..1e-1, n_s = 2250, 2 cycles = 9,000 steps) unless a run says otherwise.

``bonus-bn-after`` (4.1a), ``bonus-precise-bn`` (4.1b), ``bonus-adaptive-bn`` (4.1c)
    The 3-layer [50, 50] and 9-layer [50, 30, 20, 20, 10, 10, 10, 10] BN networks of the
    assignment, with batch norm after the ReLU, and with PreciseBN statistics (the same
    training as the baseline bit for bit; only the statistics differ, and the run records
    both). Adaptive BN re-evaluates the baselines' models with statistics of the test images
    (all of them, 500, 100; with and without augmented copies), also on a test set shifted
    from the training one (dimmed images).
``bonus-adam``, ``bonus-wide``, ``bonus-skip`` (4.2a-c)
    A deeper network, 7 layers ([50] * 6), with BN and SGD + cyclic rates as its baseline;
    then with learning-rate decay (cosine, SGD), Adam (cosine, and cyclic), wider layers
    ([256] * 6), skip connections of eqs (40)-(41), and the three together. Also the 7-layer
    network without BN, with and without skips (where optimisation is hardest).
``bonus-augment`` (own idea)
    Random flips and translations of the training images, for the 3-layer network and a
    wider one ([512, 256]).
``bonus-best``
    The best fully-connected network found (see ``catalogue.BEST``), and the same with PreciseBN
    statistics (trained augmented, its moving averages are of augmented batches).
``bonus-seeds``
    The cheap comparisons above again with seeds 1-4 (``catalogue.SEEDED``), for means and spreads.
``best-mlp``, ``best-mlp-ablation`` (issue 17)
    The best fully-connected network that trains end to end in 10 minutes on a 2-core machine
    (``catalogue.BEST_MLP``), over 3 seeds; and the same network without each of its
    ingredients in turn (``catalogue.BEST_MLP_ABLATION``). Their runs train one at a time, in
    this process, whatever ``workers`` says: a run's wall time is what it shows. ``bonus`` does
    not include them.

``quick=True`` trains a few steps per run (smoke test), as for the assignment's presets.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path

from fastnet.errors import FastnetError
from fastnet.experiments.catalogue import (
    ADAPTIVE_RUNS,
    ADAPTIVE_VARIANTS,
    ALONE_PRESETS,
    BEST_MLP_ABLATION,
    BEST_MLP_SEEDS,
    BONUS_EXPERIMENTS,
    BONUS_FOLDER,
    BONUS_PRESETS,
    BONUS_RUNS,
    DEFAULT_SETTING,
    DIM,
    NOISE,
    QUICK,
    SEEDED,
    SEEDS,
)
from fastnet.training.config import TrainConfig


def config(name: str, quick: bool = False, backend: str = "auto") -> TrainConfig:
    """The TrainConfig of bonus run ``name``."""
    _, _, kw = BONUS_RUNS[name]
    cfg = TrainConfig(**{**DEFAULT_SETTING, **kw, "backend": backend})
    return (replace(cfg, **QUICK) if quick else cfg).validate()


def preset(name: str, quick: bool = False, backend: str = "auto") -> list[tuple[str, TrainConfig]]:
    """The runs of bonus experiment ``name`` as ``(run name, TrainConfig)``, nothing trained."""
    if name not in BONUS_PRESETS:
        raise FastnetError(f"unknown bonus experiment {name!r}; choose one of {', '.join(BONUS_EXPERIMENTS)}")
    return [(run, config(run, quick, backend)) for run in BONUS_PRESETS[name]]


def command(cfg: TrainConfig) -> str:
    """The ``fastnet-train`` command line that trains ``cfg`` (flags only where they differ
    from the defaults)."""
    default = TrainConfig()
    flags = []
    for key, value in cfg.to_dict().items():
        if key in ("backend",) or getattr(default, key, None) == value or (key == "hidden" and tuple(value) == default.hidden):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif key == "hidden":
            flags.append(f"{flag} {','.join(map(str, value))}")
        else:
            flags.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " ".join(["fastnet-train", *flags])


# ---------------------------------------------------------------------------- running


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_bonus(name: str, out="experiments", *, data_dir=None, workers: int | None = None, scheduler: str | None = None,
              quick: bool = False, backend: str = "auto", plots: bool = True, echo=_echo, pool=None, lockstep: bool = True) -> dict:
    """Train the runs of bonus experiment ``name`` into ``OUT/bonus/`` (finished ones are kept),
    then the adaptive-BN evaluations it needs, then ``bonus.json`` / ``bonus.md`` of every
    finished bonus run there. Returns the bonus.json record (with ``failed`` runs listed)."""
    from fastnet.experiments.sweep import run_sweep

    runs = preset(name, quick, backend)
    folder = Path(out) / BONUS_FOLDER
    if name in ALONE_PRESETS:  # their wall time is what they show: one run at a time, on every core
        workers, pool, scheduler, lockstep = 1, None, None, False
    echo(f"experiment {name}: {len(runs)} runs{' (quick)' if quick else ''}{', one at a time' if name in ALONE_PRESETS else ''} -> {folder}")
    t0 = time.perf_counter()
    result = run_sweep(runs, folder, data_dir=data_dir, workers=workers, scheduler=scheduler, plots=plots, echo=echo, pool=pool, lockstep=lockstep)
    if name in ("bonus", "bonus-adaptive-bn"):
        adaptive_evaluations(folder, data_dir=data_dir, echo=echo)
    if name in ("bonus", "bonus-bn-after", "bonus-skip") or not (folder / "gradcheck_bonus.json").exists():
        gradcheck_bonus(folder, echo=echo)
    record = write_summary(folder, quick=quick)
    record["failed"] = [r["name"] for r in result.rows if r["status"] == "failed"]
    record["elapsed_seconds"] = time.perf_counter() - t0
    return record


def _metrics(folder: Path, run: str) -> dict | None:
    """The run's metrics.json, or None if it has not finished."""
    from fastnet.util.files import read_json_or_none

    return read_json_or_none(folder / run / "metrics.json")


def write_summary(folder: Path, quick: bool = False) -> dict:
    """``bonus.json`` and ``bonus.md``: one row per bonus run (finished or not) in the folder."""
    from fastnet.experiments.sweep import markdown_table
    from fastnet.util.files import atomic_write, write_json

    rows = []
    for run, (group, desc, _) in BONUS_RUNS.items():
        m = _metrics(folder, run)
        if m is None and not (folder / run).exists():
            continue
        cfg = config(run, quick)
        rows.append({
            "run": run, "group": group, "variant": desc, "status": "finished" if m else "unfinished",
            "test_accuracy": m.get("test_accuracy", math.nan) if m else math.nan,
            "val_accuracy": m.get("val_accuracy", math.nan) if m else math.nan,
            "test_accuracy_ema": m.get("test_accuracy_ema", math.nan) if m else math.nan,
            "val_accuracy_ema": m.get("val_accuracy_ema", math.nan) if m else math.nan,
            # issue 17: a run with test-time augmentation records its test accuracy without it and its validation accuracy with it
            "test_accuracy_without_tta": m.get("test_accuracy_without_tta", math.nan) if m else math.nan,
            "val_accuracy_tta": m.get("val_accuracy_tta", math.nan) if m else math.nan,
            "train_seconds": m.get("train_seconds", math.nan) if m else math.nan,
            "wall_seconds": m.get("wall_seconds", math.nan) if m else math.nan,
            "steps": m.get("steps", "") if m else "", "command": command(cfg),
        })
    record = {"quick": quick, "rows": rows, "seed_stats": seed_stats(rows), "best_mlp": best_mlp_stats(rows), "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(folder / "bonus.json", record)
    atomic_write(folder / "bonus.md", markdown_table(rows, ("run", "variant", "test_accuracy", "val_accuracy", "test_accuracy_ema", "wall_seconds", "command")))
    return record


def gradcheck_bonus(folder: Path, backend: str = "numpy", echo=_echo) -> dict:
    """The gradient checks of the bonus architectures (fastnet.model.gradcheck.BONUS_CASES) in
    float64, written to ``gradcheck_bonus.json`` (a few seconds)."""
    from fastnet.backends import resolve
    from fastnet.model import gradcheck as gc
    from fastnet.util.files import write_json

    b = resolve(backend)
    record = gc.check_record(gc.BONUS_CASES, b.ops, b.name)
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_json(Path(folder) / "gradcheck_bonus.json", record)
    echo(f"gradcheck (bonus architectures): {len(record['rows'])} arrays in {len(gc.BONUS_CASES)} networks, worst relative error {record['worst_rel_error']:.2e}")
    return record


def seed_stats(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation of test accuracy (and, for PreciseBN runs, of the
    PreciseBN - EMA difference on the same weights) over the seeds of every :data:`SEEDED`
    run that has finished with more than one seed."""
    import statistics

    by = {r["run"]: r for r in rows if r["status"] == "finished"}
    out = []
    for run in SEEDED:
        found = [by[n] for n in [run] + [f"{run}-seed{k}" for k in SEEDS] if n in by]
        if len(found) < 2:
            continue
        accs = [r["test_accuracy"] for r in found]
        row = {"run": run, "variant": BONUS_RUNS[run][1], "seeds": len(found), "mean_test_accuracy": statistics.fmean(accs),
               "std_test_accuracy": statistics.stdev(accs), "min_test_accuracy": min(accs), "max_test_accuracy": max(accs)}
        diffs = [r["test_accuracy"] - r["test_accuracy_ema"] for r in found if not math.isnan(r.get("test_accuracy_ema", math.nan))]
        if len(diffs) >= 2:
            row["mean_precise_minus_ema"], row["std_precise_minus_ema"] = statistics.fmean(diffs), statistics.stdev(diffs)
        out.append(row)
    return out


def best_mlp_stats(rows: list[dict]) -> dict:
    """The best-mlp presets' figures: the test accuracy's mean and standard error over the
    seeds finished (with each run's wall time and final validation accuracy), and per ablation
    run what leaving its ingredient out costs against the seed-0 run (same seed, same epochs);
    test-time augmentation's share is the seed-0 run's own figures with and without it."""
    import statistics

    by = {r["run"]: r for r in rows if r["status"] == "finished"}
    seeds = [by[run] for run in BONUS_PRESETS["best-mlp"] if run in by]
    out: dict = {"seeds": len(seeds)}
    if seeds:
        accs = [r["test_accuracy"] for r in seeds]
        out.update(mean_test_accuracy=statistics.fmean(accs), test_accuracies=accs, wall_seconds=[r["wall_seconds"] for r in seeds],
                   max_wall_seconds=max(r["wall_seconds"] for r in seeds))
        if len(accs) >= 2:
            out["stderr_test_accuracy"] = statistics.stdev(accs) / math.sqrt(len(accs))
        out["val_accuracies"] = [final_val(r) for r in seeds]
    base = by.get("best-mlp")
    out["ablation"] = [{"ingredient": key, "run": run, "test_accuracy": by[run]["test_accuracy"], "val_accuracy": final_val(by[run]),
                        "wall_seconds": by[run]["wall_seconds"],
                        "test_gain": base["test_accuracy"] - by[run]["test_accuracy"] if base else math.nan,
                        "val_gain": final_val(base) - final_val(by[run]) if base else math.nan}
                       for key in BEST_MLP_ABLATION for run in [f"best-mlp-without-{key.replace(' ', '-')}"] if run in by]
    if base and not math.isnan(base.get("test_accuracy_without_tta", math.nan)):  # the same run measured without its views
        out["ablation"].append({"ingredient": "test-time augmentation", "run": "best-mlp", "test_accuracy": base["test_accuracy_without_tta"],
                                "val_accuracy": base["val_accuracy"], "wall_seconds": base["wall_seconds"],
                                "test_gain": base["test_accuracy"] - base["test_accuracy_without_tta"],
                                "val_gain": final_val(base) - base["val_accuracy"]})
    return out


def final_val(row: dict) -> float:
    """A run's final validation accuracy as its search compared it: with its test-time
    augmentation where it had one (issue 17), else the last history row's."""
    v = row.get("val_accuracy_tta", math.nan)
    return row["val_accuracy"] if v is None or math.isnan(v) else v


# --------------------------------------------------------------------------- adaptive BN

def adaptive_evaluations(folder: Path, data_dir=None, echo=_echo, seed: int = 0) -> dict:
    """Adaptive BN on the models of :data:`ADAPTIVE_RUNS` (those finished in ``folder``):
    test accuracy with the stored (EMA) statistics and with statistics re-estimated on the
    test images of every :data:`ADAPTIVE_VARIANTS`, on the test set as it is, dimmed
    (:data:`DIM`) and with pixel noise (:data:`NOISE`). Written to ``adaptive_bn.json``."""
    import numpy as np

    from fastnet.model.bn_stats import using_stats
    from fastnet.model.files import load_network
    from fastnet.model.network import evaluate
    from fastnet.runs.evaluate import adaptive_stats, load_run_for_test
    from fastnet.util.files import write_json

    rows = []
    for run in ADAPTIVE_RUNS:
        if _metrics(folder, run) is None:
            continue
        net, X, y, ops, config_ = load_run_for_test(folder / run, data_dir)
        _, mean, std = load_network(folder / run / "model.npz")
        batch = config_.get("train", {}).get("batch", 100)
        pixels = X.astype(np.float64) * std + mean  # back to 0..255
        noisy = np.clip(pixels + np.random.default_rng([seed, 6]).normal(0.0, NOISE, pixels.shape), 0, 255)
        shifted = [("none", X)] + [(label, np.ascontiguousarray(((P - mean) / std).astype(net.dtype)))
                                   for label, P in ((f"dimmed x{DIM:g}", DIM * pixels), (f"noise std {NOISE:g}", noisy))]
        for shift_name, Xs in shifted:
            stored = evaluate(net, Xs, y, 0.0, ops).accuracy
            rows.append({"run": run, "test_set": shift_name, "statistics": "stored (EMA of training)", "images": 0, "copies": 0, "test_accuracy": stored})
            for label, images, copies in ADAPTIVE_VARIANTS:
                stats, used = adaptive_stats(net, Xs, batch, ops, images=images, copies=copies, seed=seed)
                with using_stats(net, stats):
                    acc = evaluate(net, Xs, y, 0.0, ops).accuracy
                rows.append({"run": run, "test_set": shift_name, "statistics": f"adaptive: {label}", "images": used, "copies": copies, "test_accuracy": acc})
            echo(f"adaptive BN {run}, test set {shift_name}: stored {stored:.4f}, adaptive " + ", ".join(f"{r['test_accuracy']:.4f}" for r in rows[-len(ADAPTIVE_VARIANTS):]))
    record = {"dim": DIM, "noise": NOISE, "shifts": [name for name, _ in shifted] if rows else [], "seed": seed, "rows": rows,
              "method": "statistics re-estimated with the model fixed, in training-mode batches of the run's batch size over the "
                        "(possibly subsampled and augmented) test images, aggregated as PreciseBN; accuracy on all 10,000 test images"}
    write_json(folder / "adaptive_bn.json", record)
    return record
