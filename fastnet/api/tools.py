"""The other commands from Python: :func:`load_cifar10`, :func:`gradcheck`, :func:`experiment`,
:func:`sweep` and :func:`report`, each what its ``fastnet`` command does, returning its result."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from fastnet.errors import ConfigError


def load_cifar10(data_dir=None, *, split: str = "a3", n_val: int = 5000, dtype: str = "float32", download: bool = False, progress: bool = True):
    """CIFAR-10 split and normalised by the training set's statistics, as a run loads it.

    Parameters
    ----------
    data_dir : str, Path or None
        As ``--data-dir`` (None: ``$FASTNET_DATA`` or ``~/.cache/fastnet``).
    split : {"a3", "a2"}
        a3: batches 1-5 minus ``n_val`` for training; a2: batch 1 train, batch 2 validation.
    n_val : int
        Validation images held out of batches 1-5 for split a3.
    dtype : {"float32", "float64"}
    download : bool
        Download the official archive (md5-checked) if the data is not found.
    progress : bool
        Show the download's progress.

    Returns
    -------
    Dataset
        ``X_train``, ``y_train``, ``X_val``, ``y_val``, ``X_test``, ``y_test``, ``mean``,
        ``std``, ``label_names``; ``train(data=...)`` takes it.
    """
    import numpy as np

    from fastnet.data.cifar10 import load_cifar10 as load

    return load(data_dir, split=split, n_val=n_val, dtype=np.dtype(dtype) if dtype in ("float32", "float64") else dtype,
                download=download, progress=progress)


@dataclass
class GradcheckResult:
    """Analytic against numerical gradients: one row per parameter array of every network
    checked (``rows``, dicts), the backend, and the worst relative error. ``str()`` is the
    table ``fastnet gradcheck`` prints."""

    backend: str
    h: float
    rows: list[dict] = field(default_factory=list)
    table: str = ""

    @property
    def worst(self) -> float:
        """The worst relative error (w.r.t. each array's largest gradient)."""
        return max((r["rel_error"] for r in self.rows), default=0.0)

    @property
    def passed(self) -> bool:
        """Whether every array is within 1e-6 (the bound the tests hold)."""
        return self.worst <= 1e-6

    def __str__(self) -> str:
        return (f"backend: {self.backend}; float64; centred differences, h = {self.h:g}; d = 10, batch 16\n{self.table}\n"
                f"worst relative error (w.r.t. each array's largest gradient): {self.worst:.2e}")

    def frame(self):
        """The rows as a pandas DataFrame (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame(self.rows)


def gradcheck(backend: str = "numpy", *, bonus: bool = False, regul: bool = False) -> GradcheckResult:
    """Analytic gradients against centred finite differences in float64: 2-4 layers, with and
    without BN, lambda 0 and 0.1 (``bonus``: also BN after the ReLU and skip connections;
    ``regul``: also the regularisers for long runs of issue 17 -- label smoothing, MixUp,
    dropout, decoupled weight decay).

    Parameters
    ----------
    backend : {"numpy", "numba", "cython", "auto"}
    bonus : bool
    regul : bool

    Returns
    -------
    GradcheckResult
    """
    from fastnet.backends import resolve
    from fastnet.model import gradcheck as gc

    b = resolve(backend)
    cases = gc.STANDARD_CASES + (gc.BONUS_CASES if bonus else []) + (gc.REGUL_CASES if regul else [])
    checks = gc.check_cases(cases, b.ops)
    table = gc.format_table([(gc.case_name(**case), check) for case, check in checks])
    return GradcheckResult(b.name, gc.H, [gc.check_row(case, check) for case, check in checks], table)


def _backend(backend: str | None) -> str:
    return backend or os.environ.get("FASTNET_BACKEND") or "auto"


def experiment(name: str, out="experiments", *, data_dir=None, workers: int | None = None, scheduler: str | None = None, quick: bool = False,
               backend: str | None = None, full_n_s: bool = False, plots: bool = True, lockstep: bool = True) -> dict:
    """Run one of the assignment's experiments (or ``"all"``, ``"bonus"``...) into ``out``, as
    ``fastnet experiment NAME`` does: resumable (finished runs are kept), in parallel.

    Parameters
    ----------
    name : str
        a2-default, ex2-3layer, ex2-9layer, ex3-3layer-bn, ex3-9layer-bn, lambda-search,
        final-3cycles, init-sensitivity, gradcheck, all, bonus or one of the bonus presets.
    out : str or Path
        The experiment folder.
    data_dir, workers, scheduler, quick, backend, full_n_s, plots, lockstep
        As the command's flags (``--no-plots`` is ``plots=False``, ``--no-lockstep``
        ``lockstep=False``; backend None: ``$FASTNET_BACKEND``, else auto).

    Returns
    -------
    dict
        The experiment's record (``experiment.json`` and ``rows``, a result row per run; for
        ``"all"``, ``{name: record}``).
    """
    from fastnet.experiments.assignment import run_experiment

    _check_workers(workers)
    return run_experiment(name, out, data_dir=data_dir, workers=workers, scheduler=scheduler, quick=quick, backend=_backend(backend),
                          full_n_s=full_n_s, plots=plots, lockstep=lockstep)


def _check_workers(workers) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")


def _runs(configs) -> list:
    """``(name, TrainConfig)`` pairs from what :func:`sweep` takes."""
    from fastnet.experiments.sweep import runs_from_spec
    from fastnet.util.files import read_json

    if isinstance(configs, (str, os.PathLike)):
        return runs_from_spec(read_json(configs))
    if isinstance(configs, dict) and ({"runs", "grid"} & set(configs)):
        return runs_from_spec(configs)
    if isinstance(configs, dict):
        return runs_from_spec({"runs": [{**settings, "name": name} for name, settings in configs.items()]})
    pairs = []
    for i, entry in enumerate(configs):
        if isinstance(entry, dict):
            pairs += runs_from_spec({"runs": [{"name": f"run-{i:03d}", **entry}]})
        else:
            pairs.append(entry)
    return pairs


def sweep(configs, out="sweep", *, data_dir=None, workers: int | None = None, scheduler: str | None = None, backend: str | None = None,
          plots: bool = True, lockstep: bool = True):
    """Train every run of ``configs`` into ``out/<name>/``, as ``fastnet sweep`` does: runs
    already finished there are skipped (so a stopped sweep resumes), the others trained in
    parallel (lock-step groups where they differ only in lambda or the learning-rate range).

    Parameters
    ----------
    configs : dict, list or path
        ``{name: {setting: value}}``; a list of ``(name, TrainConfig)`` pairs or of settings
        dicts (named ``run-000``, ... unless they hold ``"name"``); a sweep spec
        (``{"base": {...}, "grid": {"lam": [...]}}`` and/or ``"runs"``), or its JSON file.
    out : str or Path
        The sweep folder: a run folder per run, ``results.csv``, ``results.md``, ``sweep.log``.
    data_dir : str, Path or None
        Where CIFAR-10 is (each worker process loads it once).
    workers : int or None
        Processes training at once (default: the cores); 1 trains in this process.
    scheduler : str or None
        Address of a dask.distributed scheduler, e.g. ``"tcp://127.0.0.1:8786"``.
    backend : str or None
        Kernel backend of every run (None: each run's own setting).
    plots, lockstep : bool
        Each run's PNG figures; lock-step groups.

    Returns
    -------
    SweepResult
        ``rows`` (one result dict per run, in order: name, status, test/val accuracy, ...),
        ``executed``, ``skipped``, ``failed``; ``frame()`` as a pandas DataFrame.
    """
    from fastnet.experiments.sweep import run_sweep

    _check_workers(workers)
    runs = _runs(configs)
    if backend:
        runs = [(name, replace(cfg, backend=backend)) for name, cfg in runs]
    return run_sweep(runs, out, data_dir=data_dir, workers=workers, scheduler=scheduler, plots=plots, lockstep=lockstep)


def report(folder, out=None) -> Path:
    """The PDF report (items i-v) and ``summary.md`` of an experiment folder, as ``fastnet
    report`` writes them (the gradient checks of item (i) are computed first if missing).

    Returns
    -------
    Path
        The PDF.
    """
    from fastnet.experiments.assignment import ensure_gradcheck
    from fastnet.report.pdf import build_report
    from fastnet.report.readings import check_experiment_dir

    check_experiment_dir(folder)  # an empty folder: one sentence, nothing written
    ensure_gradcheck(folder)  # item (i) computed here when missing: the report only reads
    return build_report(folder, out=out)
