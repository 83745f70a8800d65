"""A run trained into its folder: :func:`run_to_folder` starts one, :func:`resume_run` continues
a stopped one from its checkpoint; both write it through :class:`fastnet.runs.folder.RunWriter`."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from fastnet.errors import FastnetError
from fastnet.runs.folder import (
    CHECKPOINT,
    WHITENING,
    RunWriter,
    folders_to_create,
    make_run_dir,
    new_runs_in,
    remove_unstarted,
)
from fastnet.runs.lock import RunLock
from fastnet.runs.schema import (
    RunFileError,
    check_config_record,
    check_history,
    check_status,
    schedule_steps,
)
from fastnet.training.signals import stop_on_signals
from fastnet.util.files import read_json


def run_to_folder(cfg, out_dir, *, data=None, data_dir=None, download=False, overwrite=False, progress=True, plots=True, log=None) -> dict:
    """Train the network ``cfg`` describes and write the whole run folder; returns the metrics.

    ``data`` (a loaded Dataset) is used as is when given, so that sweeps load it once.
    The folder is locked while the run writes it (:class:`RunLock`). A checkpoint is written
    when training starts and after every epoch; SIGINT or SIGTERM stops the run after the
    step in flight, checkpoints it and raises :class:`fastnet.training.state.Interrupted` (exit status
    130 / 143), whose message says how to resume. On divergence, interruption or failure the
    folder keeps config, history, the last good checkpoint and ``status.json`` saying what
    happened; ``metrics.json`` (written last) exists only for a finished run. ``log``: the
    loggers (:mod:`fastnet.training.loggers`), e.g. ``("tensorboard",)``, writing into the folder.
    """
    import numpy as np

    from fastnet.backends import resolve
    from fastnet.data.cifar10 import load_cifar10
    from fastnet.training.config import gemm_for, input_width, new_network
    from fastnet.training.fused import kernel_cuts_small_layers
    from fastnet.training.loggers import check_loggers
    from fastnet.util.threads import blas_thread_count
    from fastnet.training.state import History

    cfg.validate()
    check_loggers(log)
    created = folders_to_create(out_dir)
    try:
        out = make_run_dir(out_dir)
    except BaseException:
        remove_unstarted(created)
        raise
    # Refused by the lock: the folder is another process's run (it may have created it at the
    # same time), so nothing is removed; from here on it is ours.
    with new_runs_in([out], overwrite) as stop:
        try:
            backend = resolve(cfg.backend)
            # auto: measured once per CPU and shape (for a fused step); a provider not installed: refused here
            kernel = getattr(backend.ops, "fused_step", None)
            gemm = gemm_for(cfg, input_width(cfg), fused=kernel is not None, threads=blas_thread_count(),
                            cuts_small=kernel_cuts_small_layers(kernel))
            if progress:
                print(f"fastnet: backend {backend.name} ({backend.version}), {cfg.dtype}{gemm_note(backend, gemm)}{precision_note(cfg, kernel, gemm)}", file=sys.stderr)
            if data is None:
                data = load_cifar10(data_dir, split=cfg.split, n_val=cfg.n_val, dtype=np.dtype(cfg.dtype), download=download, progress=progress)
            else:
                check_given_data(data, cfg)
            data, whiten_seconds = whitened(data, cfg, progress)  # issue 17: the input whitening, fitted on the training rows
            net = new_network(cfg, data.X_train.shape[1], len(data.label_names))
            # config.json is written at the first checkpoint
            return _train(out, cfg, data, backend, net, History(), None, stop, progress, plots, log=log, whiten_seconds=whiten_seconds, gemm=gemm)
        except BaseException:
            remove_unstarted(created)  # a run that failed before its first step leaves nothing behind
            raise


def check_given_data(data, cfg) -> None:
    """ConfigError, in a sentence, unless a data set handed to a run (the API's ``data=``) is
    what the run would load itself: its split, its validation images and its dtype (a run
    records the split it was given, and the compiled step reads rows of the network's dtype)."""
    import numpy as np

    from fastnet.errors import ConfigError

    fix = "load it with fastnet.load_cifar10(..., split=..., n_val=..., dtype=...) as the run's settings say, or change the settings"
    if getattr(data, "split", cfg.split) != cfg.split:
        raise ConfigError(f"the data set given was loaded with split {data.split!r}, and this run's is {cfg.split!r}: {fix}")
    if cfg.split == "a3" and len(data.y_val) != cfg.n_val:
        raise ConfigError(f"the data set given holds {len(data.y_val)} validation images, and this run's n_val is {cfg.n_val}: {fix}")
    if np.dtype(data.X_train.dtype) != np.dtype(cfg.dtype):
        raise ConfigError(f"the data set given holds {np.dtype(data.X_train.dtype)} rows, and this run trains a {cfg.dtype} network: {fix}")


def resume_run(run_dir, *, data_dir=None, download=False, progress=True, plots=True, log=None) -> dict:
    """Continue a stopped run from its ``checkpoint.npz``; returns the metrics when it finishes.

    Takes the configuration from ``config.json`` and the data from where it was loaded (or
    ``data_dir``), checks that checkpoint, configuration and data belong together, and trains
    the remaining steps on the backend the run started with. The finished folder equals that
    of an uninterrupted run: the same parameters bit for bit (same backend and thread count),
    the same history rows (timings aside). Refuses a folder that is not a run, a finished run,
    a diverged one (it would diverge again), and one another process is writing.
    """
    import numpy as np

    from fastnet.backends import resolve
    from fastnet.data.cifar10 import load_cifar10
    from fastnet.training.checkpoint import (
        CheckpointError,
        data_fingerprint,
        load_checkpoint,
    )

    out = Path(run_dir)
    if out.exists() and not out.is_dir():
        raise FastnetError(f"--resume {out}: this is a file, not a run folder")
    if not out.is_dir():
        raise FastnetError(f"--resume {out}: there is no such folder")
    if not (out / "config.json").is_file():
        raise FastnetError(f"--resume {out}: this is not a fastnet run folder (it has no config.json)")
    with RunLock(out), stop_on_signals() as stop:
        if (out / "metrics.json").exists():
            raise FastnetError(f"{out} holds a finished run (it has metrics.json); there is nothing to resume")
        config = read_json(out / "config.json")
        cfg, total = config_from_record(config, out / "config.json"), schedule_steps(config)
        try:
            status = read_json(out / "status.json") if (out / "status.json").exists() else {}
        except FastnetError:
            status = {}  # unreadable, it is only a note of why the run stopped: it must not block the resume
        if status:
            check_status(status, out / "status.json", total)  # readable but edited: one sentence
        if status.get("status") == "diverged":
            raise FastnetError(f"{out} diverged ({status.get('message', 'see status.json')}); resuming would diverge again the same way, so start a new run with a lower --eta-max")
        source, backend_name = (config.get("data") or {}).get("source"), config.get("backend") or cfg.backend
        if not (out / CHECKPOINT).exists():
            raise FastnetError(f"{out} has no {CHECKPOINT}: the run stopped before training started; start it again with --out {shlex.quote(str(out))} --overwrite")
        ckpt = load_checkpoint(out / CHECKPOINT)
        check_checkpoint_position(ckpt, out / CHECKPOINT, total)
        if ckpt.config != cfg.to_dict():
            raise CheckpointError(f"{out / CHECKPOINT} was written with another configuration than {out / 'config.json'}; resume is impossible, start the run again")
        backend = resolve(backend_name)
        gemm = recorded_gemm(config, out)
        data = load_cifar10(data_dir if data_dir is not None else source, split=cfg.split, n_val=cfg.n_val, dtype=np.dtype(cfg.dtype), download=download, progress=progress)
        data, whiten_seconds = whitened(data, cfg, progress, stored=stored_whitening(out, cfg))  # issue 17: loaded, never fitted again
        if ckpt.data and ckpt.data != data_fingerprint(data):
            raise FastnetError(f"the data in {data.source} is not the data {out} was trained on (different images or split"
                               f"{', or another ' + WHITENING if 'whitening' in ckpt.data else ''}); pass --data-dir with the original data")
        if (ckpt.net.sizes != [data.X_train.shape[1], *cfg.hidden, len(data.label_names)] or ckpt.net.dtype != np.dtype(cfg.dtype)
                or ckpt.net.bn != cfg.bn or ckpt.net.bn_placement != cfg.bn_placement or ckpt.net.skip != cfg.skip):
            raise CheckpointError(f"{out / CHECKPOINT} holds a network of sizes {ckpt.net.sizes} ({ckpt.net.dtype}), not the one config.json describes; resume is impossible")
        if progress:
            print(f"fastnet: resuming {out} at step {ckpt.position.t} on backend {backend.name} ({backend.version}), {cfg.dtype}{gemm_note(backend, gemm)}{precision_note(cfg, getattr(backend.ops, 'fused_step', None), gemm)}", file=sys.stderr)
        from fastnet.training.config import new_optimizer

        optimizer = new_optimizer(cfg, ckpt.net)
        try:
            if ckpt.optimizer != optimizer.name:
                raise ValueError(f"it was written by the {ckpt.optimizer!r} optimiser, not {optimizer.name!r}")
            optimizer.load_state(ckpt.optimizer_state)
        except ValueError as exc:
            raise CheckpointError(f"{out / CHECKPOINT} does not hold this run's optimiser state ({exc}); resume is impossible, start the run again") from None
        (out / "status.json").unlink(missing_ok=True)
        return _train(out, cfg, data, backend, ckpt.net, ckpt.history, ckpt.position, stop, progress, plots, optimizer, log, whiten_seconds=whiten_seconds,
                      gemm=gemm)


def gemm_note(backend, gemm: str) -> str:
    """", matrix products by mkl" for the progress line of a run whose fused step calls MKL; ""
    otherwise (OpenBLAS, every run's products before the choice existed)."""
    return f", matrix products by {gemm}" if gemm != "openblas" and getattr(backend.ops, "fused_step", None) is not None else ""


def precision_note(cfg, kernel=None, gemm: str | None = None) -> str:
    """", first-layer products in bf16 (whose)" for the progress line of a --precision bf16 run
    whose fused step ``kernel`` calls the provider ``gemm``, saying when they are an emulation;
    "" otherwise. (A bf16 run that cannot run is refused with its reason when its step is made.)"""
    from fastnet.training.fused import bf16_emulated, bf16_kernel, bf16_products

    if cfg.precision != "bf16":
        return ""
    try:
        products = bf16_products(kernel, gemm)
    except ValueError:
        return ", first-layer products in bf16"
    if bf16_emulated(products):
        return (", first-layer products in bf16, emulated on MKL's product (this CPU has no AVX512_BF16 or AMX): "
                "bf16's arithmetic, not its speed")
    if products == "mkl":
        from fastnet.util.cpu import cpu_flags

        return f", first-layer products in bf16 (MKL's{', on AMX tiles' if 'amx_bf16' in cpu_flags() else ''})"
    return f", first-layer products in bf16 (fastnet's kernels{', on AMX tiles' if bf16_kernel(kernel) == 'amx-tiles' else ''})"


def recorded_gemm(config: dict, out: Path) -> str:
    """The matrix-multiply provider a run recorded (config.json's ``gemm``; "openblas" for a run
    recorded before the choice existed: every product then was OpenBLAS's), checked installed:
    a resume on another provider would round differently."""
    from fastnet.backends import providers
    from fastnet.backends.gemm_choice import table

    name = config.get("gemm") or "openblas"
    if table(name) is None:
        why = {"mkl": "which is not installed here; pip install 'fastnet[mkl]' to resume it",
               "openblas-avx512": f"which cannot run here ({providers.avx512_missing}); resume it on a machine where it can"}
        raise FastnetError(f"{out} was trained with the {name} matrix-multiply provider (config.json 'gemm'), "
                           + why.get(name, "which is not installed here; resume it where it is"))
    return name


def whitened(data, cfg, progress: bool = False, stored=None):
    """The data set a run trains on, and the seconds its input whitening took (None without
    one; issue 17): ``data`` as it is, or its rows put through ``stored`` (a resumed run's
    whitening) or through a whitening fitted on its training rows (:mod:`fastnet.data.whiten`).
    A Dataset already whitened is taken as it is if its whitening has the run's settings."""
    import time

    import numpy as np

    from fastnet.data.whiten import fit_whitening, wanted, whiten_dataset
    from fastnet.errors import ConfigError

    have = getattr(data, "whitening", None)
    if have is not None and have.settings() != whitening_settings(cfg):
        raise ConfigError(f"the data set given is whitened with {have.settings()}, not as the configuration says; pass the data set load_cifar10 gives")
    if have is not None or not wanted(cfg.contrast, cfg.whiten):
        return data, None
    start = time.perf_counter()
    w = stored if stored is not None else fit_whitening(data.X_train, contrast=cfg.contrast, mode=cfg.whiten, eps=cfg.whiten_eps, dims=cfg.whiten_dims)
    data = whiten_dataset(data, w, np.dtype(cfg.dtype))
    seconds = time.perf_counter() - start
    if progress:
        how = f", loaded from {WHITENING}" if stored is not None else f", fitted on the {len(data.y_train)} training images" if w.mode != "none" else ""
        print(f"fastnet: input {w.describe()}{how}, applied in {seconds:.1f} s", file=sys.stderr)
    return data, seconds


def whitening_settings(cfg) -> dict:
    """The whitening settings of a TrainConfig, as :meth:`fastnet.data.whiten.Whitening.settings` names them."""
    return {"contrast": cfg.contrast, "whiten": cfg.whiten, "whiten_eps": cfg.whiten_eps, "whiten_dims": cfg.whiten_dims}


def stored_whitening(out: Path, cfg):
    """The whitening a run in ``out`` started with (``whitening.npz``), checked against ``cfg``;
    None for a run without one. CheckpointError if it is missing, damaged or another's."""
    from fastnet.data.whiten import from_arrays, wanted
    from fastnet.model.files import read_npz
    from fastnet.training.checkpoint import CheckpointError

    if not wanted(cfg.contrast, cfg.whiten):
        return None
    path = out / WHITENING
    try:
        w = from_arrays(read_npz(path))
    except FileNotFoundError:
        raise CheckpointError(f"{out} has no {WHITENING}, the input whitening it trained with; resume is impossible, start the run again") from None
    except ValueError as exc:
        raise CheckpointError(f"{path} is not a usable whitening ({str(exc)[:200]}); resume is impossible, start the run again") from None
    if w.settings() != whitening_settings(cfg):
        raise CheckpointError(f"{path} was written with other whitening settings than {out / 'config.json'}; resume is impossible, start the run again")
    return w


def config_from_record(d: dict, path: Path):
    """The TrainConfig of a config.json record ``d``, the record checked against it
    (:func:`fastnet.runs.schema.check_config_record`); RunFileError naming the field else."""
    from fastnet.training.config import TrainConfig

    check_config_record(d, path)
    try:
        cfg = TrainConfig.from_dict(d["train"]).validate()
    except (FastnetError, TypeError, ValueError, OverflowError) as exc:
        raise RunFileError(f"{path}: field 'train' is not a valid configuration ({str(exc)[:200]}); "
                           f"the file was damaged or edited, train the run again") from None
    check_config_record(d, path, cfg)
    return cfg


def check_checkpoint_position(ckpt, path: Path, total: int | None) -> None:
    """The checkpoint's step and evaluation rows within the schedule config.json describes
    (:func:`fastnet.runs.schema.check_history`); CheckpointError naming the file otherwise."""
    from fastnet.training.checkpoint import CheckpointError

    if total is not None and ckpt.position.t > total:
        raise CheckpointError(f"{path} stands at step {ckpt.position.t}, beyond the schedule of {total} steps in config.json; resume is impossible, start the run again")
    check_history(ckpt.history.evals, f"{path} (its evaluation rows)", ckpt.position.t)


def _train(out: Path, cfg, data, backend, net, history, start, stop, progress: bool, plots: bool, optimizer=None, log=None,
           whiten_seconds: float | None = None, gemm: str = "openblas") -> dict:
    """fit with checkpoints into ``out``, then the outputs; status.json if it stops early.

    ``optimizer``: the one loaded from the checkpoint when resuming (fresh otherwise); its
    state (Adam's moments) goes into every checkpoint; ``log``: the loggers to open into ``out``;
    ``whiten_seconds``: the time of the input whitening, recorded in metrics.json (issue 17);
    ``gemm``: the matrix-multiply provider of the fused step, recorded in config.json and metrics.json."""
    import time

    from fastnet.training.config import new_optimizer
    from fastnet.training.loggers import open_loggers
    from fastnet.training.loop import finish_bn_stats, fit

    resumed_from = start.t if start is not None else None
    optimizer = optimizer if optimizer is not None else new_optimizer(cfg, net)
    writer = RunWriter(out, cfg, data, backend, net, history, optimizer=optimizer, saved_step=resumed_from, gemm=gemm)
    logger = open_loggers(log, out, cfg.to_dict())
    wall = time.perf_counter()
    try:
        fit(net, data, cfg, backend.ops, history, progress=progress, start=start, checkpoint=writer.checkpoint, stop=stop, optimizer=optimizer,
            logger=logger, gemm=gemm)
        bonus_metrics = finish_bn_stats(net, data, cfg, backend.ops)  # PreciseBN: EMA figures, then the final statistics
        if whiten_seconds is not None:
            bonus_metrics["whiten_seconds"] = whiten_seconds
        if cfg.precision == "bf16":  # whose bf16 products ran (fastnet's or MKL's), as the step chose them
            from fastnet.training.fused import bf16_kernel, bf16_products

            bonus_metrics["bf16_products"] = products = bf16_products(backend.ops.fused_step, gemm)
            if products == "fastnet":  # which of fastnet's kernels: their roundings differ
                bonus_metrics["bf16_kernel"] = bf16_kernel(backend.ops.fused_step)
        return writer.finish(plots, time.perf_counter() - wall, resumed_from, bonus_metrics)
    except BaseException as exc:
        stopped = writer.stopped(exc)
        if stopped is not exc:
            raise stopped from None
        raise
    finally:
        logger.close()
