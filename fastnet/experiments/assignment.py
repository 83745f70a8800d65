"""Every experiment of Assignment 3 as a named preset: ``fastnet experiment NAME``.

Each experiment writes its runs to ``OUT/<experiment>/<run>/`` (one run folder each, see
:mod:`fastnet.runs`) through :func:`fastnet.experiments.sweep.run_sweep` (so it is resumable and runs
in parallel), plus ``OUT/<experiment>/experiment.json`` (what was run, with which settings,
how long it took) and ``results.csv`` / ``results.md``.

The presets (``preset(name)`` returns the list of ``(run name, TrainConfig)`` without
training anything):

``a2-default``
    Assignment 2's first default setting, to check the k-layer code reproduces it: a 2-layer
    network with 50 hidden nodes, no BN, He init, split "a2" (data_batch_1 trains,
    data_batch_2 validates), batch 100, eta 1e-5..1e-1, n_s = 500, lambda = 0.01, 1 cycle.
``ex2-3layer``, ``ex2-9layer``
    Exercise 2: [50, 50] and [50, 30, 20, 20, 10, 10, 10, 10] without BN, He init, split
    "a3" (45,000 / 5,000), batch 100, eta 1e-5..1e-1, lambda = .005, 2 cycles,
    n_s = 5 * 45,000 / 100 = 2250.
``ex3-3layer-bn``, ``ex3-9layer-bn``
    Exercise 3: the same two networks and setting with batch normalization.
``lambda-search``
    Coarse-to-fine search of lambda for the 3-layer BN network, judged by validation
    accuracy. Coarse: 8 values on a grid evenly spaced in log10(lambda) over [-5, -1]. Fine:
    8 values drawn log-uniformly (seeded) within one coarse grid step either side of the
    best coarse value. Each search run is shorter than the default: 2 cycles with
    n_s = 2 * 45,000 / 100 = 900. Ranges, values and seed go to ``lambda_search.json``;
    every run's accuracies to ``lambda_search.csv`` / ``.md``.
``final-3cycles``
    The best lambda of ``lambda-search`` (run first if needed), 3 cycles at n_s = 2250;
    its test accuracy is the answer to item (iv).
``init-sensitivity``
    Normal initialisation with sigma in {1e-1, 1e-3, 1e-4}, with and without BN, the
    3-layer network and the Exercise 3 setting except n_s = 2 * 45,000 / 100 = 900
    (``full_n_s=True``: 2250).

``quick=True`` keeps every preset's structure (networks, BN, lambdas, init) but trains a few
steps (n_s = 4, 300 validation images), for tests and smoke runs; it is recorded in
``experiment.json`` and the report says so.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from fastnet.errors import FastnetError
from fastnet.experiments.catalogue import (
    BATCH,
    COARSE_LOG10,
    COARSE_N,
    DEFAULT_SETTING,
    EXPERIMENTS,
    FINAL_RUN,
    FINAL_RUN_NAME,
    FINE_N,
    FIXED_RUNS,
    HIDDEN_3,
    INIT_RUN,
    INIT_RUN_NAME,
    INIT_SIGMAS,
    N_S_DEFAULT,
    N_S_SHORT,
    QUICK,
    QUICK_COARSE_N,
    QUICK_FINE_N,
    SEARCH_CYCLES,
    SEARCH_RUN,
    SEARCH_RUN_NAME,
    SEARCH_SEED,
    TITLES,
)
from fastnet.experiments.executor import default_workers
from fastnet.training.config import TrainConfig


def _quick(cfg: TrainConfig, quick: bool) -> TrainConfig:
    return replace(cfg, **QUICK) if quick else cfg


def _cfg(quick: bool, backend: str, **kw) -> TrainConfig:
    values = {**DEFAULT_SETTING, **kw, "backend": backend}
    return _quick(TrainConfig(**values), quick).validate()


def coarse_lambdas(quick: bool = False) -> list[float]:
    """The coarse grid: evenly spaced in log10(lambda) over COARSE_LOG10, ends included."""
    n = QUICK_COARSE_N if quick else COARSE_N
    return [float(10.0 ** e) for e in np.linspace(*COARSE_LOG10, n)]


def fine_range(best: float, quick: bool = False) -> tuple[float, float]:
    """log10 range of the fine search: one coarse grid step either side of ``best``."""
    n = QUICK_COARSE_N if quick else COARSE_N
    step = (COARSE_LOG10[1] - COARSE_LOG10[0]) / (n - 1)
    return (math.log10(best) - step, math.log10(best) + step)


def fine_lambdas(best: float, quick: bool = False, seed: int = SEARCH_SEED) -> list[float]:
    """FINE_N values drawn log-uniformly in :func:`fine_range` (seeded: the same every time
    for the same best coarse value, so an interrupted search resumes), sorted."""
    lo, hi = fine_range(best, quick)
    rng = np.random.default_rng([seed, int(round(-1e6 * math.log10(best)))])
    n = QUICK_FINE_N if quick else FINE_N
    return sorted(float(10.0 ** e) for e in rng.uniform(lo, hi, n))


def _lam_name(stage: str, i: int, lam: float) -> str:
    return SEARCH_RUN_NAME.format(stage=stage, i=i, lam=lam)


def search_config(lam: float, quick: bool = False, backend: str = "auto") -> TrainConfig:
    return _cfg(quick, backend, **SEARCH_RUN, lam=lam)


def preset(name: str, *, quick: bool = False, backend: str = "auto", full_n_s: bool = False, best_lam: float | None = None) -> list[tuple[str, TrainConfig]]:
    """The runs of experiment ``name`` as ``(run name, TrainConfig)``, nothing trained, from
    the catalogue (:mod:`fastnet.experiments.catalogue`).

    ``lambda-search`` returns its coarse stage (the fine stage depends on its results:
    :func:`fine_lambdas`); ``final-3cycles`` needs ``best_lam``.
    """
    if name in FIXED_RUNS:
        return [(run, _cfg(quick, backend, **settings)) for run, settings in FIXED_RUNS[name]]
    if name == "lambda-search":
        return [(_lam_name("coarse", i, lam), search_config(lam, quick, backend)) for i, lam in enumerate(coarse_lambdas(quick))]
    if name == "final-3cycles":
        if best_lam is None:
            raise FastnetError("final-3cycles needs the best lambda of lambda-search")
        return [(FINAL_RUN_NAME.format(lam=best_lam), _cfg(quick, backend, **FINAL_RUN, lam=best_lam))]
    if name == "init-sensitivity":
        n_s = N_S_DEFAULT if full_n_s else N_S_SHORT
        return [(INIT_RUN_NAME.format(sigma=sigma, bn="BN" if bn else "noBN"),
                 _cfg(quick, backend, **INIT_RUN, bn=bn, sigma=sigma, n_s=n_s, eval_every=0 if quick else n_s // 5))
                for sigma in INIT_SIGMAS for bn in (True, False)]
    raise FastnetError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)} or all")


# ---------------------------------------------------------------------------- running


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _write_experiment_json(exp_dir: Path, name: str, runs, sweeps, quick: bool, full_n_s: bool, extra: dict | None = None, ran_before=()) -> dict:
    from fastnet.util.files import write_json

    executed = list(ran_before) + [n for s in sweeps for n in s.executed]
    rows = sweeps[-1].rows  # the last sweep lists every run of the experiment
    record = {
        "experiment": name, "title": TITLES[name], "quick": quick, "full_n_s": full_n_s,
        "runs": [{"name": n, "config": c.to_dict()} for n, c in runs],
        "executed": executed, "skipped": list(dict.fromkeys(n for s in sweeps for n in s.skipped if n not in executed)),
        "failed": [r["name"] for r in rows if r["status"] == "failed"],
        "diverged": [r["name"] for r in rows if r["status"] == "diverged"],
        "compute_seconds": sum(r["wall_seconds"] for r in rows if isinstance(r["wall_seconds"], float) and not math.isnan(r["wall_seconds"])),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **(extra or {}),
    }
    write_json(exp_dir / "experiment.json", record)
    return {**record, "rows": rows}


def best_lambda_from(rows: list[dict]) -> dict | None:
    """The finished search row with the highest validation accuracy (ties: smaller lambda)."""
    ok = [r for r in rows if r["status"] == "finished" and not math.isnan(r["val_accuracy"])]
    return max(ok, key=lambda r: (r["val_accuracy"], -r["lam"])) if ok else None


def _run_lambda_search(exp_dir: Path, kw: dict, quick: bool, backend: str) -> tuple[list, list, dict]:
    from fastnet.experiments.sweep import RESULT_FIELDS, markdown_table
    from fastnet.util.files import atomic_write, write_csv

    coarse = preset("lambda-search", quick=quick, backend=backend)
    s1 = _sweep(coarse, exp_dir, kw)
    best_coarse = best_lambda_from(s1.rows)
    if best_coarse is None:
        raise FastnetError(f"no coarse lambda-search run finished (see {exp_dir / 'results.md'})")
    fine_vals = fine_lambdas(best_coarse["lam"], quick)
    fine = [(_lam_name("fine", i, lam), search_config(lam, quick, backend)) for i, lam in enumerate(fine_vals)]
    s2 = _sweep(coarse + fine, exp_dir, kw)  # the coarse runs are finished: skipped, listed
    rows = s2.rows
    for r in rows:
        r["stage"] = r["name"].split("-", 1)[0]
    best = best_lambda_from(rows)
    lo, hi = fine_range(best_coarse["lam"], quick)
    search = {
        "quick": quick, "network": list(HIDDEN_3), "bn": True, "criterion": "validation accuracy at the end of training",
        "training": {"cycles": SEARCH_CYCLES, "n_s": coarse[0][1].n_s, "batch": BATCH, "eta_min": 1e-5, "eta_max": 1e-1, "init": "he"},
        "coarse": {"method": "grid evenly spaced in log10(lambda)", "log10_range": list(COARSE_LOG10), "values": [c.lam for _, c in coarse]},
        "fine": {"method": "log-uniform random draw", "seed": SEARCH_SEED, "around": best_coarse["lam"], "log10_range": [lo, hi], "values": fine_vals},
        "best": {"lam": best["lam"], "val_accuracy": best["val_accuracy"], "test_accuracy": best["test_accuracy"], "run": best["name"]},
        "best_coarse": {"lam": best_coarse["lam"], "val_accuracy": best_coarse["val_accuracy"], "run": best_coarse["name"]},
    }
    from fastnet.util.files import write_json

    write_json(exp_dir / "lambda_search.json", search)
    ordered = sorted(rows, key=lambda r: (r["stage"] != "coarse", r["lam"]))
    write_csv(exp_dir / "lambda_search.csv", ordered, ("stage", *RESULT_FIELDS))
    atomic_write(exp_dir / "lambda_search.md", markdown_table(ordered, ("stage", "lam", "val_accuracy", "test_accuracy", "train_accuracy", "status")))
    return coarse + fine, [s1, s2], search


def _sweep(runs, exp_dir: Path, kw: dict):
    from fastnet.experiments.sweep import run_sweep

    return run_sweep(runs, exp_dir, **kw)


def run_experiment(name: str, out="experiments", *, data_dir=None, workers: int | None = None, scheduler: str | None = None,
                   quick: bool = False, backend: str = "auto", full_n_s: bool = False, plots: bool = True, echo=_echo,
                   pool=None, ran_before: list[str] | None = None, lockstep: bool = True) -> dict:
    """Run experiment ``name`` (or every one for ``"all"``) into ``out``; returns its record
    (experiment.json plus ``rows``, the result row of every run; for ``"all"``:
    ``{name: record}``). Finished runs already there are kept (resumable).

    ``pool`` (from :func:`fastnet.experiments.executor.worker_pool`) is reused instead of starting processes;
    ``ran_before`` names runs of this experiment trained by an earlier sweep of the same
    invocation (they are recorded as executed, not as found finished). ``lockstep``: train
    runs that differ only in lambda in lock-step groups (:func:`fastnet.experiments.sweep.run_sweep`).
    """
    out = Path(out)
    if name.startswith(("bonus", "best-mlp")):  # Exercise 4 and issue 17: fastnet/experiments/bonus.py, all runs in OUT/bonus/
        from fastnet.experiments.bonus import run_bonus

        return run_bonus(name, out, data_dir=data_dir, workers=workers, scheduler=scheduler, quick=quick, backend=backend, plots=plots, echo=echo, pool=pool,
                         lockstep=lockstep)
    if name == "all":
        return _run_all(out, data_dir=data_dir, workers=workers, scheduler=scheduler, quick=quick, backend=backend, full_n_s=full_n_s, plots=plots, echo=echo,
                        lockstep=lockstep)
    if name == "gradcheck":
        return run_gradcheck(out, echo=echo)
    if name not in EXPERIMENTS:
        raise FastnetError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}, gradcheck or all")
    if pool is None and scheduler is None and (workers or default_workers()) > 1:
        from fastnet.experiments.executor import worker_pool

        with worker_pool(workers) as pool:  # one pool for every stage: each worker loads the data once
            return run_experiment(name, out, data_dir=data_dir, workers=workers, quick=quick, backend=backend, full_n_s=full_n_s,
                                  plots=plots, echo=echo, pool=pool, ran_before=ran_before, lockstep=lockstep)
    exp_dir = out / name
    kw = dict(data_dir=data_dir, workers=workers, scheduler=scheduler, plots=plots, echo=echo, pool=pool, lockstep=lockstep)
    echo(f"experiment {name}: {TITLES[name]}{' (quick)' if quick else ''} -> {exp_dir}")
    t0 = time.perf_counter()
    extra = {}
    if name == "lambda-search":
        runs, sweeps, search = _run_lambda_search(exp_dir, kw, quick, backend)
        extra = {"best_lam": search["best"]["lam"]}
    elif name == "final-3cycles":
        search_file = out / "lambda-search" / "lambda_search.json"
        if not search_file.exists():
            echo("final-3cycles: no lambda search yet in this folder; running lambda-search first")
            run_experiment("lambda-search", out, quick=quick, backend=backend, **kw)
        from fastnet.util.files import read_json

        search = read_json(search_file)
        if bool(search.get("quick")) != quick:
            raise FastnetError(f"{search_file} was made with{'' if search.get('quick') else 'out'} --quick; run final-3cycles the same way or use another --out")
        best = float(search["best"]["lam"])
        runs = preset(name, quick=quick, backend=backend, best_lam=best)
        sweeps = [_sweep(runs, exp_dir, kw)]
        extra = {"best_lam": best, "lambda_search": str(search_file)}
    else:
        runs = preset(name, quick=quick, backend=backend, full_n_s=full_n_s)
        sweeps = [_sweep(runs, exp_dir, kw)]
    record = _write_experiment_json(exp_dir, name, runs, sweeps, quick, full_n_s, {**extra, "elapsed_seconds": time.perf_counter() - t0}, ran_before or [])
    return record


def _run_all(out: Path, *, data_dir, workers, scheduler, quick, backend, full_n_s, plots, echo, lockstep: bool = True) -> dict:
    """Every experiment, with as much in parallel as the dependencies allow: the runs that
    depend on nothing (every preset and the coarse lambda grid) go into one sweep over
    ``out``; then the fine lambda stage; then the 3-cycle run with the best lambda. One pool
    of worker processes serves all three, so each loads the data once."""
    import contextlib

    from fastnet.experiments.executor import worker_pool
    from fastnet.experiments.sweep import run_sweep, write_results
    from fastnet.util.files import write_json

    t0 = time.perf_counter()
    records: dict = {"gradcheck": run_gradcheck(out, echo=echo)}
    independent = [(f"{exp}/{run}", cfg) for exp in EXPERIMENTS if exp != "final-3cycles"
                   for run, cfg in preset(exp, quick=quick, backend=backend, full_n_s=full_n_s)]
    use_pool = scheduler is None and (workers or default_workers()) > 1
    with (worker_pool(workers) if use_pool else contextlib.nullcontext()) as pool:
        echo(f"experiment all: {len(independent)} independent runs first (every preset and the coarse lambda grid)")
        first = run_sweep(independent, out, data_dir=data_dir, workers=workers, scheduler=scheduler, plots=plots, echo=echo, pool=pool, lockstep=lockstep)
        for exp in EXPERIMENTS:
            ran = [n.split("/", 1)[1] for n in first.executed if n.startswith(exp + "/")]
            records[exp] = run_experiment(exp, out, data_dir=data_dir, workers=workers, scheduler=scheduler, quick=quick, backend=backend,
                                          full_n_s=full_n_s, plots=plots, echo=echo, pool=pool, ran_before=ran, lockstep=lockstep)
    rows = []
    for exp in EXPERIMENTS:
        rows += [{**r, "name": f"{exp}/{r['name']}"} for r in records[exp].get("rows", [])]
    write_results(out, rows)  # every run of every experiment in one table
    this = {"wall_seconds": time.perf_counter() - t0, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "workers": workers or (None if scheduler else default_workers()), "scheduler": scheduler,
            "executed": sum(len(records[exp]["executed"]) for exp in EXPERIMENTS), "runs": len(rows)}
    from fastnet.util.files import read_json_or_none

    previous = (read_json_or_none(out / "all.json") or {}).get("invocations", [])
    write_json(out / "all.json", {"experiments": list(EXPERIMENTS), "quick": quick, **this, "invocations": previous + [this]})
    return records


GRADCHECK_METHOD = ("centred differences (J(theta+h) - J(theta-h)) / 2h of the mini-batch cost, eq (20), under batch BN statistics; "
                    "entries whose perturbation flips a ReLU are skipped")


def run_gradcheck(out, backend: str = "numpy", echo=_echo) -> dict:
    """Item (i): every standard gradient check (fastnet.model.gradcheck.STANDARD_CASES) in float64,
    written to ``OUT/gradcheck/gradcheck.json``."""
    from fastnet.backends import resolve
    from fastnet.model import gradcheck as gc
    from fastnet.util.files import write_json

    b = resolve(backend)
    record = gc.check_record(gc.STANDARD_CASES, b.ops, b.name, init="he", method=GRADCHECK_METHOD)
    folder = Path(out) / "gradcheck"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "gradcheck.json", record)
    echo(f"gradcheck: {len(record['rows'])} parameter arrays in {len(gc.STANDARD_CASES)} networks, worst relative error {record['worst_rel_error']:.2e} -> {folder / 'gradcheck.json'}")
    return record


def ensure_gradcheck(out) -> None:
    """Write item (i)'s record into the experiment folder ``out`` if it is not there yet (the
    report reads it and computes nothing)."""
    folder = Path(out)
    if folder.is_dir() and not (folder / "gradcheck" / "gradcheck.json").is_file():
        run_gradcheck(folder, echo=lambda line: None)
