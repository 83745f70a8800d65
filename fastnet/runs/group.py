"""A lock-step group of runs (:mod:`fastnet.training.lockstep`) trained into run folders, one
per model, each written as a standalone run's (:class:`fastnet.runs.folder.RunWriter`)."""
from __future__ import annotations

import sys

from fastnet.errors import ConfigError, DivergenceError
from fastnet.training.config import TrainConfig
from fastnet.training.lockstep import check_group, fit_lockstep
from fastnet.training.state import History, Interrupted

# ----------------------------------------------------------------------------- run folders


def run_group_to_folders(cfgs: list[TrainConfig], out_dirs, *, data, overwrite: bool = False, progress: bool = False, plots: bool = True) -> list:
    """Train ``cfgs`` in lock-step on ``data`` (a loaded Dataset) and write run folder
    ``out_dirs[m]`` of each as :func:`fastnet.runs.train.run_to_folder` would.

    Returns, per model, its metrics (a finished run; ``metrics["lockstep"]`` =
    ``{"group": M, "index": m, ...}``) or the exception that ended it (a DivergenceError, or
    the FastnetError of a folder that could not be written); either way its folder is written
    as a standalone run's (status.json for a stopped one). Every folder is locked while the
    group trains. SIGINT/SIGTERM checkpoint every model and raise
    :class:`fastnet.training.state.Interrupted`; any other error marks every unfinished run failed and
    is raised.
    """
    from fastnet.backends import resolve
    from fastnet.runs.folder import RunWriter, make_run_dir, new_runs_in
    from fastnet.training.config import new_network

    cfgs = [cfg.validate() for cfg in cfgs]
    check_group(cfgs)
    outs = [make_run_dir(d) for d in out_dirs]
    if len({o.resolve() for o in outs}) != len(cfgs):
        raise ConfigError("every run of a lock-step group needs a folder of its own")
    with new_runs_in(outs, overwrite) as stop:
        backend = resolve(cfgs[0].backend)
        if progress:
            print(f"fastnet: backend {backend.name} ({backend.version}), {cfgs[0].dtype}, {len(cfgs)} runs in lock-step", file=sys.stderr)
        writers = [RunWriter(out, cfg, data, backend, new_network(cfg, data.X_train.shape[1], len(data.label_names)), History())
                   for out, cfg in zip(outs, cfgs)]
        stopped: dict[int, BaseException] = {}

        def leave(i: int, error: DivergenceError) -> None:  # status.json at once, as a standalone run would write it
            stopped[i] = writers[i].stopped(error)

        try:
            outcomes = fit_lockstep([w.net for w in writers], data, cfgs, backend.ops, [w.history for w in writers], progress,
                                    checkpoints=[w.checkpoint for w in writers], stop=stop, on_leave=leave)
        except BaseException as exc:
            stop_all(writers, stopped, exc)
            raise
        shared = {"group_wall_seconds": sum(o.wall_seconds for o in outcomes),
                  "time_shares": "the group's time divided evenly over the models training during it"}
        return [stopped[i] if outcome.error is not None else finish(writers[i], plots, outcome.wall_seconds, {"lockstep": {"group": len(cfgs), "index": i, **shared}})
                for i, outcome in enumerate(outcomes)]


def stop_all(writers: list, stopped: dict[int, BaseException], exc: BaseException) -> None:
    """The group stopped with ``exc``: each run still training records it as its own stop
    (a signal: each folder's status.json says how to resume it); ``exc``'s message then
    speaks of the group."""
    for i, writer in enumerate(writers):
        if i not in stopped:
            writer.stopped(Interrupted(exc.signum, exc.step) if isinstance(exc, Interrupted) else exc)
    if isinstance(exc, Interrupted):
        exc.message = (f"fastnet: interrupted at step {exc.step}; the {len(writers)} runs trained in lock-step were checkpointed: "
                       f"run the sweep again, or resume each with fastnet-train --resume RUN_DIR")


def finish(writer, plots: bool, wall: float, extra: dict):
    """A finished model's outputs and metrics.json; its metrics, or the exception that
    stopped the writing (recorded in its status.json)."""
    try:
        return writer.finish(plots, wall, None, extra)
    except Exception as exc:  # an OSError (a full disk) or any other failure ends this run only
        return writer.stopped(exc)
