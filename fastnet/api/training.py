"""Training from Python: :func:`train` a new run, :func:`resume` a stopped one. Both train into
a run folder through :mod:`fastnet.runs.train`, as ``fastnet-train`` does, so the numbers are
the command line's and a run stopped by Ctrl-C (a notebook's "interrupt kernel" is the same
SIGINT) is checkpointed and resumable."""
from __future__ import annotations

import tempfile
from pathlib import Path

from fastnet.api.run import Run
from fastnet.api.settings import check_threads, train_config, with_settings


def _resume_hint(exc: KeyboardInterrupt, out) -> None:
    """Add how to resume from Python to the message of a stopped run."""
    message = getattr(exc, "message", None)
    if message and "resume" in message:
        exc.message = f"{message} (from Python: fastnet.resume({str(out)!r}))"


@with_settings
def train(*, data=None, out=None, overwrite: bool = False, download: bool = False, threads: int | None = None, config=None,
          progress: bool = True, plots: bool = True, log=None, **settings) -> Run:
    """Train a network on CIFAR-10 and write its run folder; the settings are ``fastnet-train``'s.

    Every setting is a keyword named as the flag (``--eta-max`` is ``eta_max``), validated as
    the command line validates it: an impossible value raises :class:`fastnet.errors.ConfigError`
    (a :class:`~fastnet.errors.FastnetError`) with the command line's sentence, before any work.

    Parameters
    ----------
    {settings}
    data : str, Path, Dataset or None
        Where CIFAR-10 is (as ``--data-dir``: the ``cifar-10-batches-py`` folder, a folder
        containing it or its archive; None: ``$FASTNET_DATA`` or ``~/.cache/fastnet``), or a
        :class:`fastnet.data.cifar10.Dataset` already loaded (its split, validation images
        and dtype must be the run's settings: else ConfigError, before the run starts).
    out : str, Path or None
        The run folder. None: a new temporary folder (``Run.path``; ``Run.save(dest)`` copies
        it), so that every run has its checkpoints, can be resumed after Ctrl-C and is the
        command line's run exactly.
    overwrite : bool
        Allow ``out`` to be a folder that already holds a run.
    download : bool
        Download the official archive (md5-checked) if the data is not found.
    threads : int or None
        BLAS threads (None: the cores idle at the start).
    config : str, Path or None
        A JSON file of settings (keys as in config.json); keywords given here override it.
    progress : bool
        A progress bar (a widget in Jupyter) and a line per evaluation.
    plots : bool
        Write loss.png, cost.png and accuracy.png into the folder.
    log : str, list of str or None
        Also log every step's loss and learning rate and every evaluation to ``"tensorboard"``
        (``out/tensorboard/``) and/or ``"mlflow"`` (a file store in ``out/mlruns/``); each
        needs its library (``pip install 'fastnet[tensorboard]'``, ``'fastnet[mlflow]'``).

    Returns
    -------
    Run
        The finished run.

    Raises
    ------
    FastnetError
        Bad settings, missing or bad data, a folder that cannot be written or already holds a
        run; :class:`~fastnet.errors.DivergenceError` if the cost becomes NaN or inf.
    KeyboardInterrupt
        (``fastnet.training.state.Interrupted``) Ctrl-C or SIGTERM: the run stopped after the
        step in flight, checkpointed; its message says how to resume.
    """
    cfg = train_config(settings, config)
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="fastnet-run-"))
    try:
        return train_into(cfg, out, data=data, download=download, overwrite=overwrite, threads=threads, progress=progress, plots=plots, log=log)
    except KeyboardInterrupt as exc:
        _resume_hint(exc, out)
        raise


def train_into(cfg, out, *, data=None, download: bool = False, overwrite: bool = False, threads: int | None = None, progress: bool = True,
               plots: bool = True, log=None) -> Run:
    """:func:`train` for a TrainConfig ``cfg`` already made (``fastnet-train``'s), into ``out``."""
    from fastnet.data.cifar10 import Dataset
    from fastnet.runs.train import run_to_folder
    from fastnet.util.threads import blas_threads

    threads = check_threads(threads)
    dataset = data if isinstance(data, Dataset) else None
    with blas_threads(threads):
        run_to_folder(cfg, out, data=dataset, data_dir=None if dataset is not None else data, download=download,
                      overwrite=overwrite, progress=progress, plots=plots, log=log)
    return Run(out)


def resume(path, *, data=None, download: bool = False, threads: int | None = None, progress: bool = True, plots: bool = True, log=None) -> Run:
    """Continue a stopped run from its checkpoint, with its own configuration.

    Parameters
    ----------
    path : str or Path
        The run folder (of an interrupted or failed run).
    data : str, Path or None
        Where CIFAR-10 is, if not where the run found it.
    download, progress, plots, log
        As for :func:`train` (the loggers append to the run's logs).
    threads : int or None
        BLAS threads; None: the count the run started with (recorded in its ``config.json``),
        so that the resumed steps compute what the uninterrupted run computes.

    Returns
    -------
    Run
        The finished run, equal to the run had it not stopped (same backend and threads).
    """
    try:
        return resume_into(path, data=data, download=download, threads=threads, progress=progress, plots=plots, log=log)
    except KeyboardInterrupt as exc:
        _resume_hint(exc, path)
        raise


def resume_into(path, *, data=None, download: bool = False, threads: int | None = None, progress: bool = True, plots: bool = True,
                log=None) -> Run:
    """:func:`resume` without the hint for Python in the message of a run stopped again
    (``fastnet-train --resume``'s)."""
    from fastnet.runs.record import recorded_threads
    from fastnet.runs.train import resume_run
    from fastnet.util.threads import blas_threads

    threads = check_threads(threads) or recorded_threads(path)  # the run's own count: the same bits
    with blas_threads(threads):
        resume_run(path, data_dir=data, download=download, progress=progress, plots=plots, log=log)
    return Run(path)
