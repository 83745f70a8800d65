"""Run many trainings: a list of ``(name, TrainConfig)`` becomes run folders ``OUT/name/``.

:func:`run_sweep` skips the finished runs, plans the others into units of work (single runs
and lock-step groups, below), and trains them

* one after the other in this process (``workers=1``, or one unit only);
* or in a :class:`fastnet.experiments.executor.SweepPool`: worker processes pinned to one
  BLAS thread each (``workers=N > 1``, or a pool handed in and kept open between sweeps), or
  a ``dask.distributed`` cluster (``scheduler="tcp://host:port"``). Both are a
  :class:`concurrent.futures.Executor`; one function submits the units to either and collects
  the results as they finish (:func:`fastnet.experiments.executor.run_tasks`).

In every case a process loads each data set it needs once and keeps it (:func:`load_data`).

**Lock-step groups** (``lockstep=True``, the default): pending runs that differ only in
lambda or the learning-rate range, and are otherwise groupable (plain SGD, batch norm before
the ReLU or none; :mod:`fastnet.training.lockstep`), are trained together as one task -- one shared
gather of each mini-batch and one wide first-layer product for all of them -- split into at
least one group per worker (so 8 lambdas on 2 workers are 2 groups of 4). Each run still gets
its own folder, as if trained alone. ``lockstep=False`` (``--no-lockstep``) trains every run
on its own.

**Resumable.** A run whose folder holds ``metrics.json`` (written last by
:func:`fastnet.runs.train.run_to_folder`) is finished and skipped; a folder without it is an
interrupted run and is done again from scratch (the unfinished runs of a lock-step group are
grouped again, among themselves). A finished run whose recorded configuration
differs from the requested one is refused rather than silently reused.

The results of all runs, skipped or executed, are written after every completed run to
``OUT/results.csv`` and ``OUT/results.md``; ``OUT/sweep.log`` records which runs each
invocation started, finished, skipped or lost (one line each).

This module imports nothing heavy at import time: a spawned worker imports it for the task
functions (:func:`execute_run`, :func:`execute_group`) after pinning its threads.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastnet.errors import DivergenceError, FastnetError
from fastnet.experiments.executor import (
    SweepPool,
    dask_pool,
    default_workers,
    pin_threads,
    run_tasks,
    worker_pool,
)
from fastnet.runs.record import is_finished
from fastnet.util.names import child_path, safe_component, unique_names

RESULT_FIELDS = (
    "name", "status", "executed", "test_accuracy", "val_accuracy", "train_accuracy",
    "test_loss", "val_loss", "train_loss", "wall_seconds", "steps", "epochs",
    "hidden", "bn", "init", "sigma", "lam", "eta_min", "eta_max", "n_s", "cycles", "batch",
    "split", "backend", "message",
)
MARKDOWN_FIELDS = ("name", "status", "test_accuracy", "val_accuracy", "train_accuracy", "hidden", "bn", "init", "sigma", "lam", "n_s", "cycles", "wall_seconds")

_DATA_CACHE: dict = {}


# ------------------------------------------------------------------------- in a worker


def load_data(data_dir, split: str, n_val: int, dtype: str):
    """The data set a run needs, loaded once per process and kept."""
    key = (str(data_dir) if data_dir is not None else None, split, n_val if split == "a3" else None, dtype)
    if key not in _DATA_CACHE:
        import numpy as np

        from fastnet.data.cifar10 import load_cifar10

        _DATA_CACHE[key] = load_cifar10(data_dir, split=split, n_val=n_val, dtype=np.dtype(dtype), progress=False)
    return _DATA_CACHE[key]


def _log(log_path, event: str, name: str, extra: str = "") -> None:
    if log_path is None:
        return
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {event} {name} pid={os.getpid()}{(' ' + extra) if extra else ''}\n"
    with open(log_path, "a", encoding="utf-8") as f:  # one short append: atomic enough
        f.write(line)


def execute_run(name: str, cfg_dict: dict, run_dir: str, data_dir=None, plots: bool = True, log_path=None, pin: bool = False) -> dict:
    """Train one run into ``run_dir`` (overwriting an unfinished folder); never raises for a
    failed run: returns ``{"name", "status", "metrics" | "message", "pid"}``.

    ``status`` is ``"finished"``, ``"diverged"`` (a result: the message says where) or
    ``"failed"``. Top-level so that process pools and dask can pickle it.
    """
    if pin:
        pin_threads()
    from fastnet.runs.train import run_to_folder
    from fastnet.training.config import TrainConfig

    cfg = TrainConfig.from_dict(cfg_dict)
    _log(log_path, "started", name)
    try:
        data = load_data(data_dir, cfg.split, cfg.n_val, cfg.dtype)
        metrics = run_to_folder(cfg, run_dir, data=data, overwrite=True, progress=False, plots=plots)
    except DivergenceError as exc:
        _log(log_path, "diverged", name)
        return {"name": name, "status": "diverged", "message": str(exc), "pid": os.getpid()}
    except Exception as exc:  # one bad run must not sink the sweep; the message says why
        _log(log_path, "failed", name)
        return {"name": name, "status": "failed", "message": f"{type(exc).__name__}: {exc}", "pid": os.getpid()}
    _log(log_path, "finished", name)
    return {"name": name, "status": "finished", "metrics": metrics, "pid": os.getpid()}


def execute_group(names: list[str], cfg_dicts: list[dict], run_dirs: list[str], data_dir=None, plots: bool = True, log_path=None, pin: bool = False) -> list[dict]:
    """Train the runs ``names`` together in lock-step (:func:`fastnet.runs.group.run_group_to_folders`),
    each into its ``run_dirs`` entry (overwriting unfinished folders); never raises for a failed
    run: returns one :func:`execute_run`-style dict per run. Top-level for pickling."""
    if pin:
        pin_threads()
    from fastnet.runs.group import run_group_to_folders
    from fastnet.training.config import TrainConfig

    cfgs = [TrainConfig.from_dict(d) for d in cfg_dicts]
    for name in names:
        _log(log_path, "started", name, f"lockstep={len(names)}")
    try:
        data = load_data(data_dir, cfgs[0].split, cfgs[0].n_val, cfgs[0].dtype)
        outcomes = run_group_to_folders(cfgs, run_dirs, data=data, overwrite=True, progress=False, plots=plots)
    except Exception as exc:  # the whole group failed; each run says why
        for name in names:
            _log(log_path, "failed", name)
        return [{"name": name, "status": "failed", "message": f"{type(exc).__name__}: {exc}", "pid": os.getpid()} for name in names]
    results = []
    for name, outcome in zip(names, outcomes):
        if isinstance(outcome, dict):
            _log(log_path, "finished", name)
            results.append({"name": name, "status": "finished", "metrics": outcome, "pid": os.getpid()})
        else:
            status = "diverged" if isinstance(outcome, DivergenceError) else "failed"
            _log(log_path, status, name)
            message = str(outcome) if status == "diverged" else f"{type(outcome).__name__}: {outcome}"
            results.append({"name": name, "status": status, "message": message, "pid": os.getpid()})
    return results


def _task(unit: list[str], args: dict, pin: bool) -> tuple:
    """(function, arguments) that train ``unit``: one run alone, or a lock-step group; ``pin``:
    pin the process to one BLAS thread first (a worker's)."""
    if len(unit) == 1:
        return execute_run, (*args[unit[0]], pin)
    a = [args[n] for n in unit]
    return execute_group, (list(unit), [x[1] for x in a], [x[2] for x in a], a[0][3], a[0][4], a[0][5], pin)


# ---------------------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    """What a sweep did: one row per run (see RESULT_FIELDS), and which runs it executed."""

    out_dir: Path
    rows: list[dict] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]

    def by_name(self) -> dict[str, dict]:
        return {r["name"]: r for r in self.rows}


def _comparable(train: dict) -> dict:
    """A configuration as JSON would give it back, without the backend (results are the same
    mathematics on every backend)."""
    d = json.loads(json.dumps(train))
    d.pop("backend", None)
    return d


def _check_same_config(run_dir: Path, cfg) -> None:
    from fastnet.util.files import read_json

    recorded = read_json(run_dir / "config.json").get("train", {}) if (run_dir / "config.json").exists() else {}
    if _comparable(recorded) != _comparable(cfg.to_dict()):
        diff = sorted(k for k in set(recorded) | set(cfg.to_dict()) if k != "backend" and _comparable(recorded).get(k) != _comparable(cfg.to_dict()).get(k))
        raise FastnetError(f"{run_dir} holds a finished run with another configuration (differs in {', '.join(diff) or 'unknown keys'}); "
                           f"use another --out folder or delete that run")


def result_row(name: str, cfg, status: str, metrics: dict | None, executed: bool, message: str = "") -> dict:
    """One line of results.csv from a configuration and its metrics (None if not finished)."""
    m = metrics or {}
    return {
        "name": name, "status": status, "executed": executed,
        **{k: m.get(k, math.nan) for k in ("test_accuracy", "val_accuracy", "train_accuracy", "test_loss", "val_loss", "train_loss", "wall_seconds")},
        "steps": m.get("steps", ""), "epochs": m.get("epochs", ""), "n_s": m.get("n_s", cfg.n_s if cfg.n_s is not None else ""),
        "hidden": "-".join(str(h) for h in cfg.hidden), "bn": cfg.bn, "init": cfg.init, "sigma": "" if cfg.sigma is None else cfg.sigma,
        "lam": cfg.lam, "eta_min": cfg.eta_min, "eta_max": cfg.eta_max, "cycles": cfg.cycles, "batch": cfg.batch,
        "split": cfg.split, "backend": m.get("backend", cfg.backend), "message": message,
    }


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict], fields) -> str:
    """A GitHub Markdown table of ``rows`` restricted to ``fields``."""
    lines = ["| " + " | ".join(fields) + " |", "|" + "|".join("---" for _ in fields) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k, "")).replace("|", "\\|") for k in fields) + " |")
    return "\n".join(lines) + "\n"


def write_results(out_dir, rows: list[dict], stem: str = "results") -> None:
    """``OUT/results.csv`` (every field) and ``OUT/results.md`` (the main ones)."""
    from fastnet.util.files import atomic_write, write_csv

    out_dir = Path(out_dir)
    write_csv(out_dir / f"{stem}.csv", rows, RESULT_FIELDS)
    atomic_write(out_dir / f"{stem}.md", markdown_table(rows, MARKDOWN_FIELDS))


def _estimated_cost(cfg) -> float:
    """Relative cost of a run (update steps x weights), to start the longest first."""
    n_train = 10000 if cfg.split == "a2" else 50000 - cfg.n_val
    n_s = cfg.resolved_n_s(n_train)
    sizes = [3072, *cfg.hidden, 10]
    return 2 * n_s * cfg.cycles * sum(a * b for a, b in zip(sizes, sizes[1:]))


def run_sweep(runs, out_dir, *, data_dir=None, workers: int | None = None, scheduler: str | None = None,
              plots: bool = True, echo=None, connect_timeout: float = 20.0, pool: SweepPool | None = None, lockstep: bool = True,
              max_group: int | None = None) -> SweepResult:
    """Train every ``(name, TrainConfig)`` of ``runs`` into ``out_dir/name`` unless finished.

    Parameters
    ----------
    runs : list of (str, TrainConfig)
        Names are folder names inside ``out_dir`` (:func:`fastnet.util.names.unique_names`:
        one safe component each, or fastnet's own ``experiment/run``), unique after
        normalisation; every folder is proved to lie inside ``out_dir``.
    out_dir : path
        Where the run folders, ``results.csv``, ``results.md`` and ``sweep.log`` go.
    data_dir : path or None
        Passed to :func:`fastnet.data.cifar10.load_cifar10` in whichever process trains.
    workers : int or None
        Processes to use (default: the cores this process may run on); 1 trains in this
        process. Ignored with ``scheduler``.
    scheduler : str or None
        Address of a running ``dask.distributed`` scheduler to submit the runs to.
    plots : bool
        Write each run's PNG figures.
    echo : callable or None
        Called with one line of text per event (default: print to stderr).
    connect_timeout : float
        Seconds to wait for the dask scheduler to answer.
    pool : SweepPool or None
        A pool from :func:`fastnet.experiments.executor.worker_pool` (or ``dask_pool``) to train
        in, kept open, so that successive sweeps reuse its processes and the data they loaded.
        Overrides ``workers``; ``scheduler`` overrides it.
    lockstep : bool
        Train groupable runs that differ only in lambda / learning-rate range together, in
        lock-step groups (module docstring); False trains every run on its own.
    max_group : int or None
        The largest lock-step group (default :data:`fastnet.training.lockstep.MAX_GROUP`).

    Returns
    -------
    SweepResult
        Rows in the order of ``runs``. Runs that failed are rows with status ``"failed"``
        and a message; a sweep never stops at one bad run.
    """
    out_dir = Path(out_dir)
    configs = _validated(runs)  # before anything is created: a bad name writes nothing
    out_dir.mkdir(parents=True, exist_ok=True)
    tally = _Tally(out_dir, configs, echo or _to_stderr)
    start = time.perf_counter()
    pending = tally.skip_finished()
    tally.write()
    if pending:
        args = {n: (n, tally.configs[n].to_dict(), str(child_path(out_dir, n)), None if data_dir is None else str(data_dir), plots, str(tally.log_path))
                for n in pending}
        with contextlib.ExitStack() as stack:
            if scheduler:
                pool = stack.enter_context(dask_pool(scheduler, connect_timeout))
            wanted = pool.workers if pool is not None else workers or default_workers()
            units = _plan(pending, tally.configs, wanted, lockstep, max_group, tally.echo)
            if pool is None and min(wanted, len(units)) > 1:  # no more processes than units
                pool = stack.enter_context(worker_pool(min(wanted, len(units))))
            if pool is None:
                for unit in units:
                    fn, a = _task(unit, args, pin=False)
                    tally.unit_done(unit, fn(*a), None)
            else:
                tally.echo(f"sweep: {len(pending)} runs on {pool.where}")
                run_tasks(pool, {tuple(unit): _task(unit, args, pin=True) for unit in units}, tally.unit_done)
    return tally.finish(time.perf_counter() - start)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _validated(runs) -> dict:
    """``{name: validated TrainConfig}`` in the order of ``runs``; names must be unique."""
    from fastnet.training.config import TrainConfig

    names = unique_names([name for name, _ in runs], nested=True)  # safe folder names, one folder each
    return {name: (cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)).validate() for name, (_, cfg) in zip(names, runs)}


def _plan(pending: list[str], configs: dict, workers: int, lockstep: bool, max_group: int | None, echo) -> list[list[str]]:
    """The units of work (:func:`fastnet.training.lockstep.plan_units`: lock-step groups and
    single runs, at least one group per worker), the longest first."""
    from fastnet.training.lockstep import MAX_GROUP, plan_units

    units = plan_units(pending, configs, workers, lockstep, max_group or MAX_GROUP)
    units.sort(key=lambda u: -sum(_estimated_cost(configs[n]) for n in u))  # longest first (stable)
    grouped = [u for u in units if len(u) > 1]
    if grouped:
        echo(f"sweep: {sum(map(len, grouped))} runs in {len(grouped)} lock-step group(s) of {', '.join(str(len(u)) for u in grouped)}")
    return units


class _Tally:
    """A sweep's rows as it goes: one per run in the order asked, written to ``results.csv`` /
    ``results.md`` after every change, and which runs were skipped and executed."""

    def __init__(self, out_dir: Path, configs: dict, echo):
        self.out_dir, self.configs, self.echo = out_dir, configs, echo
        self.log_path = out_dir / "sweep.log"
        self.result = SweepResult(out_dir)
        self.rows: dict[str, dict] = {}
        self.pending: list[str] = []

    def skip_finished(self) -> list[str]:
        """The runs to train, the longest first (less idle time at the end); finished ones are
        rows from their metrics.json (refused if their configuration differs)."""
        from fastnet.util.files import read_json

        for name, cfg in self.configs.items():
            run_dir = child_path(self.out_dir, name)  # inside out_dir, links resolved
            if is_finished(run_dir):
                _check_same_config(run_dir, cfg)
                self.rows[name] = result_row(name, cfg, "finished", read_json(run_dir / "metrics.json"), executed=False)
                self.result.skipped.append(name)
                _log(self.log_path, "skipped", name, "finished before")
            else:
                self.pending.append(name)
                self.rows[name] = result_row(name, cfg, "pending", None, executed=False)
        if self.result.skipped:
            self.echo(f"sweep: {len(self.result.skipped)} of {len(self.configs)} runs already finished in {self.out_dir}; {len(self.pending)} to do")
        self.pending.sort(key=lambda n: -_estimated_cost(self.configs[n]))
        return self.pending

    def unit_done(self, unit, res, lost: str | None) -> None:
        """The outcome of one unit of work: its result(s), or the message of a lost unit."""
        if lost is not None:
            for name in unit:
                _log(self.log_path, "lost", name)
            res = [{"name": name, "status": "failed", "message": lost} for name in unit]
        for r in (res if isinstance(res, list) else [res]):
            self.run_done(r)

    def run_done(self, res: dict) -> None:
        name = res["name"]
        self.rows[name] = result_row(name, self.configs[name], res["status"], res.get("metrics"), executed=True, message=res.get("message", ""))
        self.result.executed.append(name)
        k = len(self.result.executed)
        if res["status"] == "finished":
            m = res["metrics"]
            self.echo(f"[{k}/{len(self.pending)}] {name}: test {m['test_accuracy']:.4f}  val {m['val_accuracy']:.4f}  ({m['wall_seconds']:.1f} s)")
        else:
            self.echo(f"[{k}/{len(self.pending)}] {name}: {res['status']}: {res.get('message', '')}")
        self.write()

    def write(self) -> None:
        write_results(self.out_dir, [self.rows[n] for n in self.configs])

    def finish(self, seconds: float) -> SweepResult:
        self.result.rows = [self.rows[n] for n in self.configs]
        self.result.wall_seconds = seconds
        return self.result


# ------------------------------------------------------------------- sweep spec files


MAX_SPEC_RUNS = 10_000  # runs in one sweep file (a grid is the product of its lists)


def runs_from_spec(spec: dict, source: str = "the sweep file") -> list[tuple[str, object]]:
    """The runs a sweep file describes (its schema, checked here: one sentence naming
    ``source`` and the field for anything else).

    ``{"base": {TrainConfig keys}, "runs": [{"name": ..., key: value, ...}, ...]}`` lists runs
    explicitly; ``{"base": {...}, "grid": {"lam": [0.001, 0.01], "bn": [true, false]}}`` takes
    every combination (names like ``lam=0.001_bn=true``). Both may be given. Names are single
    folder names (:func:`fastnet.util.names.safe_component`), unique after normalisation.
    """
    import itertools

    if not isinstance(spec, dict) or not ({"runs", "grid"} & set(spec)):
        raise FastnetError(f"{source}: a sweep file is a JSON object with \"runs\" (a list) and/or \"grid\" (an object of lists), and optionally \"base\"")
    base, entries, grid = spec.get("base", {}), spec.get("runs", []), spec.get("grid", {})
    for key, value, kind in (("base", base, dict), ("runs", entries, list), ("grid", grid, dict)):
        if not isinstance(value, kind):
            raise FastnetError(f"{source}: \"{key}\" must be a JSON {'object' if kind is dict else 'list'}, got {type(value).__name__}")
    if unknown := sorted(set(spec) - {"base", "runs", "grid"}):
        raise FastnetError(f"{source}: unknown keys {', '.join(map(repr, unknown))[:200]}; a sweep file has base, runs and grid")
    axes = [v if isinstance(v, list) else [v] for v in grid.values()]
    count = len(entries) + (math.prod(len(a) for a in axes) if grid else 0)
    if count > MAX_SPEC_RUNS:
        raise FastnetError(f"{source} describes {count} runs, more than {MAX_SPEC_RUNS}; split it into several sweeps")
    out = [(_entry_name(entry, i, source), _spec_config(base, entry, source)) for i, entry in enumerate(entries)]
    if grid:
        keys = list(grid)
        for combo in itertools.product(*axes):
            values = dict(zip(keys, combo))
            name = "_".join(f"{k}={json.dumps(v).replace(' ', '').replace(',', '-').strip(chr(34))}" for k, v in values.items())
            out.append((safe_component(name, f"{source}: grid run name"), _spec_config(base, values, source)))
    unique_names([n for n, _ in out], f"{source}: run names")
    return out


def _entry_name(entry, i: int, source: str) -> str:
    """The folder name of entry ``i`` of a sweep file's "runs" (default ``run-00i``)."""
    if not isinstance(entry, dict):
        raise FastnetError(f"{source}: runs[{i}] must be a JSON object of settings, got {type(entry).__name__}")
    return safe_component(entry.get("name", f"run-{i:03d}"), f"{source}: runs[{i}].name")


def _spec_config(base: dict, values: dict, source: str):
    """The validated TrainConfig of ``base`` overlaid with ``values`` (without "name")."""
    from fastnet.training.config import TrainConfig, check_time_limit

    settings = {**base, **{k: v for k, v in values.items() if k != "name"}}
    try:
        cfg = TrainConfig.from_dict(settings).validate()
        check_time_limit(cfg, confirmed=False)  # a sweep file's run is held to the same limit as fastnet-train's
        return cfg
    except (TypeError, FastnetError) as exc:
        raise FastnetError(f"{source}: invalid configuration: {exc}") from None
