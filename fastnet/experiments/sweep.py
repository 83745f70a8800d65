"""Run many trainings: a list of ``(name, TrainConfig)`` becomes run folders ``OUT/name/``.

Three ways to execute the same list, chosen by :func:`run_sweep`:

* ``workers=1``: one after the other in this process;
* ``workers=N > 1``: a :class:`concurrent.futures.ProcessPoolExecutor` of ``N`` processes
  started with ``spawn``, each with its BLAS / OpenMP / Numba threads pinned to 1 (so that N
  runs share N cores instead of fighting over them; see :func:`pin_threads`);
* ``scheduler="tcp://host:port"``: the runs are submitted to an existing
  ``dask.distributed`` cluster; each task writes its folder where this call asked, so the
  cluster's workers must see that path (one machine, or a shared file system).

In every case a process loads each data set it needs once and keeps it (:func:`load_data`).

**Lock-step groups** (``lockstep=True``, the default): pending runs that differ only in
lambda or the learning-rate range, and are otherwise groupable (plain SGD, batch norm before
the ReLU or none; :mod:`fastnet.lockstep`), are trained together as one task -- one shared
gather of each mini-batch and one wide first-layer product for all of them -- split into at
least one group per worker (so 8 lambdas on 2 workers are 2 groups of 4). Each run still gets
its own folder, as if trained alone. ``lockstep=False`` (``--no-lockstep``) trains every run
on its own.

**Resumable.** A run whose folder holds ``metrics.json`` (written last by
:func:`fastnet.runs.run_to_folder`) is finished and skipped; a folder without it is an
interrupted run and is done again from scratch (the unfinished runs of a lock-step group are
grouped again, among themselves). A finished run whose recorded configuration
differs from the requested one is refused rather than silently reused.

The results of all runs, skipped or executed, are written after every completed run to
``OUT/results.csv`` and ``OUT/results.md``; ``OUT/sweep.log`` records which runs each
invocation started, finished, skipped or lost (one line each).

This module imports nothing heavy at import time, so that a spawned worker can pin its
threads before numpy is loaded.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastnet.errors import DivergenceError, FastnetError

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")

RESULT_FIELDS = (
    "name", "status", "executed", "test_accuracy", "val_accuracy", "train_accuracy",
    "test_loss", "val_loss", "train_loss", "wall_seconds", "steps", "epochs",
    "hidden", "bn", "init", "sigma", "lam", "eta_min", "eta_max", "n_s", "cycles", "batch",
    "split", "backend", "message",
)
MARKDOWN_FIELDS = ("name", "status", "test_accuracy", "val_accuracy", "train_accuracy", "hidden", "bn", "init", "sigma", "lam", "n_s", "cycles", "wall_seconds")

_DATA_CACHE: dict = {}


# ------------------------------------------------------------------------- in a worker


def pin_threads() -> None:
    """Limit BLAS, OpenMP and Numba to one thread in this process.

    The environment variables take effect for libraries loaded afterwards (a spawned worker
    runs this before it imports numpy); ``threadpoolctl`` limits the pools already loaded.
    """
    for name in THREAD_ENV:
        os.environ[name] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # not as a context manager: stays in force
    if "numba" in sys.modules:
        try:
            sys.modules["numba"].set_num_threads(1)
        except Exception:  # pragma: no cover - numba without a threading layer
            pass


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
    """Train the runs ``names`` together in lock-step (:func:`fastnet.lockstep.run_group_to_folders`),
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


def _task(unit: list[str], args: dict) -> tuple:
    """(function, arguments) that train ``unit``: one run alone, or a lock-step group."""
    if len(unit) == 1:
        return execute_run, args[unit[0]]
    a = [args[n] for n in unit]
    return execute_group, (list(unit), [x[1] for x in a], [x[2] for x in a], a[0][3], a[0][4], a[0][5])


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


def is_finished(run_dir) -> bool:
    return (Path(run_dir) / "metrics.json").is_file()


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


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def run_sweep(runs, out_dir, *, data_dir=None, workers: int | None = None, scheduler: str | None = None,
              plots: bool = True, echo=None, connect_timeout: float = 20.0, pool=None, lockstep: bool = True,
              max_group: int | None = None) -> SweepResult:
    """Train every ``(name, TrainConfig)`` of ``runs`` into ``out_dir/name`` unless finished.

    Parameters
    ----------
    runs : list of (str, TrainConfig)
        Names are folder paths relative to ``out_dir`` (``/`` allowed), unique.
    out_dir : path
        Where the run folders, ``results.csv``, ``results.md`` and ``sweep.log`` go.
    data_dir : path or None
        Passed to :func:`fastnet.data.load_cifar10` in whichever process trains.
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
    pool : concurrent.futures.Executor or None
        A pool from :func:`worker_pool` to train in (kept open), so that successive sweeps
        reuse its processes and the data they loaded. Overrides ``workers``.
    lockstep : bool
        Train groupable runs that differ only in lambda / learning-rate range together, in
        lock-step groups (module docstring); False trains every run on its own.
    max_group : int or None
        The largest lock-step group (default :data:`fastnet.lockstep.MAX_GROUP`).

    Returns
    -------
    SweepResult
        Rows in the order of ``runs``. Runs that failed are rows with status ``"failed"``
        and a message; a sweep never stops at one bad run.
    """
    from fastnet.training.config import TrainConfig

    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "sweep.log"
    names = [name for name, _ in runs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise FastnetError(f"run names must be unique; repeated: {', '.join(dup)}")
    configs = {}
    for name, cfg in runs:
        if not isinstance(cfg, TrainConfig):
            cfg = TrainConfig.from_dict(cfg)
        configs[name] = cfg.validate()

    result = SweepResult(out_dir)
    start = time.perf_counter()
    rows: dict[str, dict] = {}
    pending = []
    for name in names:
        run_dir = out_dir / name
        cfg = configs[name]
        if is_finished(run_dir):
            _check_same_config(run_dir, cfg)
            from fastnet.util.files import read_json

            rows[name] = result_row(name, cfg, "finished", read_json(run_dir / "metrics.json"), executed=False)
            result.skipped.append(name)
            _log(log_path, "skipped", name, "finished before")
        else:
            pending.append(name)
            rows[name] = result_row(name, cfg, "pending", None, executed=False)
    if result.skipped:
        echo(f"sweep: {len(result.skipped)} of {len(names)} runs already finished in {out_dir}; {len(pending)} to do")
    pending.sort(key=lambda n: -_estimated_cost(configs[n]))  # longest first: less idle time at the end

    def done(res: dict) -> None:
        name = res["name"]
        cfg = configs[name]
        rows[name] = result_row(name, cfg, res["status"], res.get("metrics"), executed=True, message=res.get("message", ""))
        result.executed.append(name)
        k = len(result.executed)
        if res["status"] == "finished":
            m = res["metrics"]
            echo(f"[{k}/{len(pending)}] {name}: test {m['test_accuracy']:.4f}  val {m['val_accuracy']:.4f}  ({m['wall_seconds']:.1f} s)")
        else:
            echo(f"[{k}/{len(pending)}] {name}: {res['status']}: {res.get('message', '')}")
        write_results(out_dir, [rows[n] for n in names])

    write_results(out_dir, [rows[n] for n in names])
    if pending:
        from fastnet.training.lockstep import MAX_GROUP, plan_units

        args = {n: (n, configs[n].to_dict(), str(out_dir / n), None if data_dir is None else str(data_dir), plots, str(log_path)) for n in pending}
        n_workers = pool._max_workers if pool is not None and not scheduler else (workers or default_workers())
        units = plan_units(pending, configs, n_workers, lockstep, max_group or MAX_GROUP)
        units.sort(key=lambda u: -sum(_estimated_cost(configs[n]) for n in u))  # longest first (stable)
        grouped = [u for u in units if len(u) > 1]
        if grouped:
            echo(f"sweep: {sum(map(len, grouped))} runs in {len(grouped)} lock-step group(s) of {', '.join(str(len(u)) for u in grouped)}")
        if scheduler:
            _run_dask(scheduler, units, args, done, echo, connect_timeout)
        elif pool is not None:
            echo(f"sweep: {len(pending)} runs on {pool._max_workers} worker processes (BLAS threads pinned to 1)")
            _submit_all(pool, units, args, done, log_path)
        else:
            n_workers = min(n_workers, len(units))
            if n_workers <= 1:
                for unit in units:
                    fn, a = _task(unit, args)
                    res = fn(*a)
                    for r in (res if isinstance(res, list) else [res]):
                        done(r)
            else:
                _run_pool(n_workers, units, args, done, echo, log_path)
    result.rows = [rows[n] for n in names]
    result.wall_seconds = time.perf_counter() - start
    return result


def worker_pool(workers: int | None = None):
    """A process pool for sweeps: ``workers`` processes (default: the cores), started with
    ``spawn`` and pinned to one BLAS thread each. Use as a context manager."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: pins threads before numpy loads
    return ProcessPoolExecutor(max_workers=workers or default_workers(), mp_context=ctx, initializer=pin_threads)


def _submit_all(pool, units, args, done, log_path) -> None:
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    futures = {}
    for unit in units:
        fn, a = _task(unit, args)
        futures[pool.submit(fn, *a, True)] = unit
    try:
        for fut in as_completed(futures):
            try:
                res = fut.result()
            except BrokenProcessPool as exc:
                res = [{"name": n, "status": "failed", "message": f"worker process died ({exc})"} for n in futures[fut]]
                for n in futures[fut]:
                    _log(log_path, "lost", n)
            for r in (res if isinstance(res, list) else [res]):
                done(r)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise


def _run_pool(n_workers: int, units, args, done, echo, log_path) -> None:
    echo(f"sweep: {sum(map(len, units))} runs on {n_workers} worker processes (BLAS threads pinned to 1)")
    pool = worker_pool(n_workers)
    try:
        _submit_all(pool, units, args, done, log_path)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_dask(address: str, units, args, done, echo, connect_timeout: float = 20.0) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise FastnetError("--scheduler needs dask.distributed; install it with: pip install 'fastnet[dask]'") from None
    try:
        client = Client(address, timeout=f"{connect_timeout}s")
    except (OSError, TimeoutError) as exc:
        raise FastnetError(f"cannot reach the dask scheduler at {address} ({exc})") from None
    try:
        n = len(client.scheduler_info().get("workers", {}))
        echo(f"sweep: {sum(map(len, units))} runs on the dask cluster {address} ({n} workers)")
        client.run(pin_threads)
        futures = []
        for unit in units:
            fn, a = _task(unit, args)
            futures.append(client.submit(fn, *a, True, key=f"fastnet-run-{unit[0]}-{len(unit)}-{os.getpid()}-{time.time_ns()}", pure=False))
        members = {f.key: unit for f, unit in zip(futures, units)}
        for fut in as_completed(futures):
            try:
                res = fut.result()
            except Exception as exc:  # the task itself never raises; this is the cluster failing
                res = [{"name": n, "status": "failed", "message": f"dask: {type(exc).__name__}: {exc}"} for n in members[fut.key]]
            for r in (res if isinstance(res, list) else [res]):
                done(r)
    finally:
        client.close()


# ------------------------------------------------------------------- sweep spec files


def runs_from_spec(spec: dict) -> list[tuple[str, object]]:
    """The runs a sweep file describes.

    ``{"base": {TrainConfig keys}, "runs": [{"name": ..., key: value, ...}, ...]}`` lists runs
    explicitly; ``{"base": {...}, "grid": {"lam": [0.001, 0.01], "bn": [true, false]}}`` takes
    every combination (names like ``lam=0.001_bn=true``). Both may be given.
    """
    import itertools

    from fastnet.training.config import TrainConfig

    if not isinstance(spec, dict) or not ({"runs", "grid"} & set(spec)):
        raise FastnetError("a sweep file is a JSON object with \"runs\" (a list) and/or \"grid\" (an object of lists), and optionally \"base\"")
    base = dict(spec.get("base", {}))
    out = []

    def make(values: dict):
        try:
            return TrainConfig.from_dict({**base, **values}).validate()
        except TypeError as exc:
            raise FastnetError(f"invalid configuration in the sweep file: {exc}") from None

    for i, entry in enumerate(spec.get("runs", [])):
        entry = dict(entry)
        name = str(entry.pop("name", f"run-{i:03d}"))
        out.append((name, make(entry)))
    grid = spec.get("grid", {})
    if grid:
        keys = list(grid)
        for combo in itertools.product(*(grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys)):
            values = dict(zip(keys, combo))
            name = "_".join(f"{k}={json.dumps(v).replace(' ', '').replace(',', '-').strip(chr(34))}" for k, v in values.items())
            out.append((name, make(values)))
    return out
