"""A run is a folder: configuration, history, metrics, model and figures, written atomically.

Layout::

    RUN_DIR/config.json    the TrainConfig and where the data came from
    RUN_DIR/history.csv    one row per evaluation (epoch ends, and every --eval-every steps)
    RUN_DIR/steps.csv      one row per update step: learning rate and batch loss
    RUN_DIR/metrics.json   final figures: test/val/train accuracy, times, backend, dtype, ...
    RUN_DIR/model.npz      parameters, running BN statistics, input normalisation (no pickles)
    RUN_DIR/*.png          loss, cost and accuracy, train vs validation
    RUN_DIR/checkpoint.npz the state to continue from (see fastnet.training.checkpoint): written when
                           training starts, after every epoch and when SIGINT/SIGTERM stops it
    RUN_DIR/status.json    why an unfinished run stopped: interrupted, diverged or failed
    RUN_DIR/whitening.npz  a run with input whitening (issue 17): the whitening fitted when it started,
                           which a resume loads instead of fitting again (model.npz holds it too)
    RUN_DIR/.lock          locked (flock) by the process writing the folder, with its pid, while it runs

Every file is written to ``NAME.tmp`` and renamed into place, so an interrupted run never
leaves a half-written file under a final name. ``metrics.json`` is written last: its presence
marks a finished run.

A stopped run continues with :func:`resume_run` (``fastnet-train --resume RUN_DIR``) and ends
bitwise as it would have without the stop. Only one process writes a folder at a time: the
second is refused while the first holds ``.lock`` (:class:`RunLock`, an flock the system
releases when the process dies).
"""
from __future__ import annotations

import os
import shlex
import signal
from contextlib import ExitStack, contextmanager
from pathlib import Path

from fastnet.errors import DivergenceError, FastnetError
from fastnet.util.files import atomic_savez, write_csv, write_json
from fastnet.util.names import safe_component

HISTORY_FIELDS = ("epoch", "step", "eta", "train_loss", "train_cost", "train_accuracy", "val_loss", "val_cost", "val_accuracy")


def prepare_run_dir(path, overwrite: bool = False) -> Path:
    """Create the run folder; refuse one that already holds a run unless ``overwrite``."""
    path = make_run_dir(path)
    check_fresh(path, overwrite)
    return path


#: What fastnet itself writes into a run folder: a folder holding anything else (and no
#: config.json) is the user's, and fastnet does not write into it.
RUN_FILES = ("config.json", "history.csv", "steps.csv", "metrics.json", "model.npz", "checkpoint.npz", "status.json", ".lock",
             "whitening.npz")


def is_own_entry(name: str) -> bool:
    """A name fastnet writes in a run folder (its files, figures, temporaries)."""
    return name in RUN_FILES or name.endswith((".png", ".tmp")) or name.startswith(".write-test-")


def make_run_dir(path) -> Path:
    """Create the folder (and its parents) and check that files can be written in it.

    Only an empty folder, one that holds a run (``config.json``) or only fastnet's own files
    is accepted; its last name must be a plain folder name
    (:func:`fastnet.util.names.safe_component`: not ``.``, ``..`` or empty).
    """
    path = Path(path)
    safe_component(path.name, "--out folder", whole=str(path))
    if path.is_symlink() and not path.exists():
        raise FastnetError(f"--out {path} is a link to nothing; remove it or choose another --out")
    if path.exists() and not path.is_dir():
        raise FastnetError(f"--out {path} is a file, not a folder")
    if path.is_dir() and not (path / "config.json").exists():
        foreign = sorted(e for e in os.listdir(path) if not is_own_entry(e))
        if foreign:
            raise FastnetError(f"--out {path} holds files that are not a fastnet run ({', '.join(foreign[:3])[:120]}"
                               f"{', ...' if len(foreign) > 3 else ''}); fastnet writes only into an empty folder or one of its runs, choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise FastnetError(f"cannot write to the run folder {path} ({exc.strerror or exc}); choose another --out") from None
    return path


def check_fresh(path: Path, overwrite: bool) -> None:
    """Refuse a folder that already holds a run (config.json) unless ``overwrite``."""
    if (path / "config.json").exists() and not overwrite:
        hint = "; it can be continued with fastnet-train --resume " + shlex.quote(str(path)) if not (path / "metrics.json").exists() and (path / CHECKPOINT).exists() else ""
        raise FastnetError(f"{path} already holds a run; choose another --out or pass --overwrite{hint}")
CHECKPOINT = "checkpoint.npz"
WHITENING = "whitening.npz"  # issue 17: the input whitening of a run that has one


def write_history(run_dir, history) -> None:
    """history.csv and steps.csv from a train.History (columns beyond HISTORY_FIELDS, such as
    PreciseBN runs' ``val_accuracy_ema``, are appended when the rows have them)."""
    run_dir = Path(run_dir)
    extra = [k for k in dict.fromkeys(k for row in history.evals for k in row) if k not in HISTORY_FIELDS]
    write_csv(run_dir / "history.csv", history.evals, (*HISTORY_FIELDS, *extra))
    steps = [{"step": i + 1, "eta": e, "batch_loss": l} for i, (e, l) in enumerate(zip(history.step_eta, history.step_loss))]
    write_csv(run_dir / "steps.csv", steps, ("step", "eta", "batch_loss"))


def environment() -> dict:
    """Versions and threads, recorded with every run (a run is reproducible per backend and
    thread count)."""
    import platform

    import numpy

    from fastnet.util.version import VERSION as __version__

    env = {"fastnet": __version__, "python": platform.python_version(), "numpy": numpy.__version__, "cpus": os.cpu_count()}
    from threadpoolctl import threadpool_info

    env["blas_threads"] = [{"api": p.get("internal_api"), "num_threads": p.get("num_threads")} for p in threadpool_info()]
    return env


def begin_folder(out: Path, overwrite: bool) -> None:
    """In a locked folder: refuse an existing run unless ``overwrite``. Nothing of an old run
    is touched yet: :meth:`RunWriter.checkpoint` replaces it once the new run starts
    (:func:`replace_old_run`), so a new run that fails before that loses nothing."""
    check_fresh(out, overwrite)


def replace_old_run(out: Path) -> None:
    """The new run in ``out`` has started: remove what marks an old run as finished or
    stopped (its checkpoint is about to be replaced)."""
    for stale in ("metrics.json", "status.json", WHITENING):
        (out / stale).unlink(missing_ok=True)


def folders_to_create(path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    path = Path(path).absolute()
    return [p for p in (path, *path.parents) if not p.exists()]


def remove_unstarted(created: list[Path]) -> None:
    """After a run failed before it started: remove the folders of :func:`folders_to_create`
    if they hold nothing but fastnet's leftovers (a lock, temporaries); a run that started
    (it has a checkpoint) is kept."""
    for folder in created:
        try:
            entries = os.listdir(folder)
            if CHECKPOINT in entries or any(not (e == ".lock" or e.endswith(".tmp")) for e in entries):
                return
            for e in entries:
                (folder / e).unlink(missing_ok=True)
            folder.rmdir()
        except OSError:
            return


@contextmanager
def new_runs_in(outs: list[Path], overwrite: bool):
    """Folders ``outs`` locked (:class:`fastnet.runs.lock.RunLock`) and cleared for new runs
    (:func:`begin_folder`) while the block runs, SIGINT/SIGTERM deferred to a step boundary
    inside it; yields the StopRequest the signals set. The locks go when the block ends."""
    from fastnet.runs.lock import RunLock
    from fastnet.training.signals import stop_on_signals

    with ExitStack() as held:
        for out in outs:
            held.enter_context(RunLock(out))
        stop = held.enter_context(stop_on_signals())
        for out in outs:
            begin_folder(out, overwrite)
        yield stop


def write_config(out: Path, cfg, data, backend, gemm: str = "openblas") -> None:
    """``config.json``: the TrainConfig, where the data came from, the backend, the
    matrix-multiply provider ``gemm`` the run resolved (``--gemm auto`` recorded as what it
    chose) and the BLAS thread count in force (a resume takes both again: the fused step's
    products are cut by the thread count and rounded by the provider)."""
    from fastnet.util.threads import blas_thread_count

    n_train = data.X_train.shape[0]
    record = {"train": cfg.to_dict(), "n_s_resolved": cfg.resolved_n_s(n_train),
              "data": {"source": data.source, "split": data.split, "n_train": n_train, "n_val": len(data.y_val), "n_test": len(data.y_test)},
              "backend": backend.name, "gemm": gemm, "threads": blas_thread_count()}
    guard_writes(out, lambda: write_json(out / "config.json", record), None)


def write_error(out: Path, exc: OSError, last_checkpoint: int | None) -> FastnetError:
    """One sentence for an OSError while writing the run folder (a full disk, a removed folder)."""
    if last_checkpoint is not None:
        what = f"the last checkpoint (step {last_checkpoint}) is kept: free some space and resume with: fastnet-train --resume {shlex.quote(str(out))}"
    else:
        what = "free some space or choose another --out"
    return FastnetError(f"cannot write to the run folder {out} ({exc.strerror or exc}); {what}")


def guard_writes(out: Path, work, last_checkpoint):
    """Run ``work``; an OSError becomes the FastnetError of :func:`write_error`."""
    try:
        return work()
    except OSError as exc:
        raise write_error(out, exc, last_checkpoint) from None


def write_outputs(out: Path, cfg, data, backend, net, history, plots: bool):
    """After training: history.csv, steps.csv, model.npz, the test evaluation and the figures.
    Returns (test Metrics, the last history row, further figures for metrics.json: with
    test-time augmentation, the test accuracy without it and the validation accuracy with it).
    OSError passes through."""
    from fastnet.model.files import save_network
    from fastnet.data.augment import tta_views
    from fastnet.model.network import evaluate

    write_history(out, history)
    whitening = getattr(data, "whitening", None)
    save_network(out / "model.npz", net, data.mean, data.std, inputs=whitening.to_arrays() if whitening is not None else None)
    test = evaluate(net, data.X_test, data.y_test, cfg.lam, backend.ops, views=tta_views(cfg.tta))
    figures = {}
    if cfg.tta != "none":  # issue 17: what test-time augmentation adds, measured in the same run
        figures["test_accuracy_without_tta"] = evaluate(net, data.X_test, data.y_test, cfg.lam, backend.ops).accuracy
        if len(data.y_val):  # the figure a search compares (the history's rows are measured without views: cheap, every epoch)
            figures["val_accuracy_tta"] = evaluate(net, data.X_val, data.y_val, cfg.lam, backend.ops, views=tta_views(cfg.tta)).accuracy
    if plots:
        from fastnet.runs.figures import plot_run

        plot_run(history.evals, out, title=describe(cfg))
    return test, history.evals[-1], figures


def record_stop(out: Path, exc: BaseException, history, saved_step: int | None) -> BaseException:
    """A run stopped by ``exc`` (divergence, a signal, a failure): write what it measured and
    ``status.json`` saying why, and return the exception to raise, its message saying how to
    go on (resume from the last checkpoint, step ``saved_step``)."""
    from fastnet.training.state import Interrupted

    resume = f"fastnet-train --resume {shlex.quote(str(out))}"
    if isinstance(exc, KeyboardInterrupt):
        if not isinstance(exc, Interrupted):
            exc = Interrupted(signal.SIGINT)
        if exc.step is not None:
            exc.message = f"fastnet: interrupted at step {exc.step}; resume with: {resume}"
        elif saved_step is not None:
            exc.message = f"fastnet: interrupted; resume with: {resume} (continues from the checkpoint at step {saved_step})"
    elif isinstance(exc, DivergenceError) and saved_step is not None:
        exc.args = (f"{exc}; the history and the last good checkpoint (step {saved_step}) are kept in {out}",)
    reason = "diverged" if isinstance(exc, DivergenceError) else "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    try:
        write_history(out, history)
        write_json(out / "status.json", {"status": reason, "message": str(exc), "steps": history.steps, "checkpoint_step": saved_step})
    except OSError:
        pass  # the disk may be full: the checkpoint is what matters, and it is intact
    return exc


def run_metrics(cfg, data, backend, history, test, last: dict, wall: float, resumed_from: int | None, extra: dict | None = None,
                gemm: str = "openblas") -> dict:
    """The contents of ``metrics.json`` of a finished run (``gemm``: its matrix-multiply provider)."""
    return {
        "test_accuracy": test.accuracy, "test_loss": test.loss, "test_cost": test.cost,
        "val_accuracy": last["val_accuracy"], "val_loss": last["val_loss"], "val_cost": last["val_cost"],
        "train_accuracy": last["train_accuracy"], "train_loss": last["train_loss"], "train_cost": last["train_cost"],
        "train_seconds": history.train_seconds, "eval_seconds": history.eval_seconds, "wall_seconds": wall,
        "one_core_steps": history.one_core_steps, "step_form": history.step_form,
        "epochs": last["epoch"], "steps": history.steps, "n_s": cfg.resolved_n_s(data.X_train.shape[0]),
        "backend": backend.name, "backend_version": backend.version, "gemm": gemm, "dtype": cfg.dtype,
        "precision": cfg.precision, "environment": environment(), "status": "finished", "resumed_from_step": resumed_from,
        **(extra or {}),
    }


def describe(cfg) -> str:
    """A short title for a configuration, e.g. '3-layer [50, 50] BN lam=0.005' (bonus settings
    appended where used, e.g. '... BN-after skip adam cosine aug preciseBN zca ls=0.1 tta-flip')."""
    tags = [tag for tag, on in (("BN-after", cfg.bn_placement == "after"), ("skip", cfg.skip), (cfg.optimizer, cfg.optimizer != "sgd"),
                                (cfg.schedule, cfg.schedule != "cyclic"), ("aug", cfg.augment), ("preciseBN", cfg.bn_stats == "precise"),
                                # issue 17's options, named where used
                                ("contrast", cfg.contrast), (cfg.whiten, cfg.whiten != "none"), (f"ls={cfg.label_smoothing:g}", cfg.label_smoothing),
                                (f"mixup={cfg.mixup:g}", cfg.mixup), (f"dropout={cfg.dropout:g}", cfg.dropout), (f"tta-{cfg.tta}", cfg.tta != "none"),
                                ("bf16", cfg.precision == "bf16")) if on]
    return f"{len(cfg.hidden) + 1}-layer {list(cfg.hidden)} {'BN' if cfg.bn else 'no BN'} lam={cfg.lam:g}" + "".join(" " + t for t in tags)


class RunWriter:
    """The one writer of a run folder ``out`` that a network trains into (a run of
    :func:`fastnet.runs.train.run_to_folder` or :func:`~fastnet.runs.train.resume_run`, or one
    model of a lock-step group): its checkpoints, what it leaves when it stops early, and the
    outputs of a finished run, ``metrics.json`` last.

    ``optimizer``: the one training ``net`` (its state goes into every checkpoint; None:
    plain SGD, which has none); ``saved_step``: the step of the checkpoint already in the
    folder (a resumed run), if any; ``gemm``: the matrix-multiply provider of its fused step
    (recorded in config.json and metrics.json; a lock-step group's products are OpenBLAS's).
    """

    def __init__(self, out: Path, cfg, data, backend, net, history, *, optimizer=None, saved_step: int | None = None,
                 gemm: str = "openblas"):
        from fastnet.training.checkpoint import data_fingerprint

        self.out, self.cfg, self.data, self.backend, self.net, self.history = out, cfg, data, backend, net, history
        self.optimizer = optimizer
        self.gemm = gemm
        self.saved_step = saved_step
        self.started = saved_step is not None  # a resumed run started long ago
        self.config = cfg.to_dict()
        self.fingerprint = data_fingerprint(data)

    def checkpoint(self, position) -> None:
        """``checkpoint.npz`` at ``position`` (the training loop's checkpoint callback). The
        first one of a new run is where it starts: ``config.json`` is written and an old run
        in the folder (``--overwrite``) is replaced, not before."""
        from fastnet.training.checkpoint import save_checkpoint

        if not self.started:
            write_config(self.out, self.cfg, self.data, self.backend, self.gemm)
            replace_old_run(self.out)
            if getattr(self.data, "whitening", None) is not None:  # issue 17: a resume loads it, never fits it again
                atomic_savez(self.out / WHITENING, self.data.whitening.to_arrays())
            self.started = True
        opt = self.optimizer
        save_checkpoint(self.out / CHECKPOINT, self.net, self.history, position, self.config, data=self.fingerprint,
                        optimizer=opt.name if opt is not None else "sgd", optimizer_state=opt.state() if opt is not None else {})
        self.saved_step = position.t

    def stopped(self, exc: BaseException) -> BaseException:
        """The run stopped with ``exc`` before it finished: :func:`record_stop` (an OSError
        first becomes the sentence of :func:`write_error`); returns the exception to raise."""
        if isinstance(exc, OSError):
            exc = write_error(self.out, exc, self.saved_step)
        if not self.started:  # nothing of this run is in the folder: leave it as it was
            return exc
        return record_stop(self.out, exc, self.history, self.saved_step)

    def finish(self, plots: bool, wall: float, resumed_from: int | None = None, extra: dict | None = None) -> dict:
        """The outputs of the finished run (:func:`write_outputs`), then ``metrics.json``;
        returns the metrics. OSError passes through (:meth:`stopped` makes it a sentence)."""
        test, last, figures = write_outputs(self.out, self.cfg, self.data, self.backend, self.net, self.history, plots)
        metrics = run_metrics(self.cfg, self.data, self.backend, self.history, test, last, wall, resumed_from, {**figures, **(extra or {})}, gemm=self.gemm)
        write_json(self.out / "metrics.json", metrics)
        return metrics
