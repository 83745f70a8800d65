"""TODO docstring for runs.group."""
from __future__ import annotations

import sys

from fastnet.errors import ConfigError, DivergenceError
from fastnet.training.config import TrainConfig
from fastnet.training.lockstep import check_group, fit_lockstep
from fastnet.training.state import History, Interrupted, Position

# ----------------------------------------------------------------------------- run folders


def run_group_to_folders(cfgs: list[TrainConfig], out_dirs, *, data, overwrite: bool = False, progress: bool = False, plots: bool = True) -> list:
    """Train ``cfgs`` in lock-step on ``data`` (a loaded Dataset) and write run folder
    ``out_dirs[m]`` of each as :func:`fastnet.runs.run_to_folder` would.

    Returns, per model, its metrics (a finished run; ``metrics["lockstep"]`` =
    ``{"group": M, "index": m, ...}``) or the exception that ended it (a DivergenceError, or
    the FastnetError of a folder that could not be written); either way its folder is written
    as a standalone run's (status.json for a stopped one). Every folder is locked while the
    group trains. SIGINT/SIGTERM checkpoint every model and raise
    :class:`fastnet.train.Interrupted`; any other error marks every unfinished run failed and
    is raised.
    """
    from contextlib import ExitStack

    from fastnet.backends import resolve
    from fastnet.runs.folder import (
        CHECKPOINT,
        begin_folder,
        guard_writes,
        make_run_dir,
        record_stop,
        run_metrics,
        write_config,
        write_error,
        write_outputs,
    )
    from fastnet.runs.lock import RunLock
    from fastnet.training.checkpoint import data_fingerprint, save_checkpoint
    from fastnet.training.config import new_network
    from fastnet.training.signals import stop_on_signals
    from fastnet.util.files import write_json

    cfgs = [cfg.validate() for cfg in cfgs]
    check_group(cfgs)
    M = len(cfgs)
    outs = [make_run_dir(d) for d in out_dirs]
    if len({o.resolve() for o in outs}) != M:
        raise ConfigError("every run of a lock-step group needs a folder of its own")
    with ExitStack() as locks:
        for out in outs:
            locks.enter_context(RunLock(out))
        stop = locks.enter_context(stop_on_signals())
        for out in outs:
            begin_folder(out, overwrite)
        backend = resolve(cfgs[0].backend)
        if progress:
            print(f"fastnet: backend {backend.name} ({backend.version}), {cfgs[0].dtype}, {M} runs in lock-step", file=sys.stderr)
        for out, cfg in zip(outs, cfgs):
            write_config(out, cfg, data, backend)
        nets = [new_network(cfg, data.X_train.shape[1], len(data.label_names)) for cfg in cfgs]
        histories = [History() for _ in cfgs]
        fingerprint = data_fingerprint(data)
        saved: list[int | None] = [None] * M

        def checkpointer(i: int):
            config = cfgs[i].to_dict()

            def checkpoint(position: Position) -> None:
                save_checkpoint(outs[i] / CHECKPOINT, nets[i], histories[i], position, config, data=fingerprint, optimizer="sgd", optimizer_state={})
                saved[i] = position.t

            return checkpoint

        stopped: dict[int, BaseException] = {}

        def leave(i: int, error: DivergenceError) -> None:  # status.json at once, as a standalone run would write it
            stopped[i] = record_stop(outs[i], error, histories[i], saved[i])

        try:
            outcomes = fit_lockstep(nets, data, cfgs, backend.ops, histories, progress, checkpoints=[checkpointer(i) for i in range(M)], stop=stop,
                                    on_leave=leave)
        except BaseException as exc:
            for i in range(M):
                if i in stopped:
                    continue
                mine = exc
                if isinstance(exc, OSError):
                    mine = write_error(outs[i], exc, saved[i])
                elif isinstance(exc, Interrupted):
                    mine = Interrupted(exc.signum, exc.step)
                record_stop(outs[i], mine, histories[i], saved[i])
            if isinstance(exc, Interrupted):
                exc.message = (f"fastnet: interrupted at step {exc.step}; the {M} runs trained in lock-step were checkpointed: "
                               f"run the sweep again, or resume each with fastnet-train --resume RUN_DIR")
            raise
        results: list = []
        for i, (out, cfg, outcome) in enumerate(zip(outs, cfgs, outcomes)):
            if outcome.error is not None:
                results.append(stopped[i])
                continue
            try:
                test, last = write_outputs(out, cfg, data, backend, nets[i], histories[i], plots)
                lockstep = {"group": M, "index": i, "group_wall_seconds": sum(o.wall_seconds for o in outcomes),
                            "time_shares": "the group's time divided evenly over the models training during it"}
                metrics = run_metrics(cfg, data, backend, histories[i], test, last, outcome.wall_seconds, None, {"lockstep": lockstep})
                guard_writes(out, lambda: write_json(out / "metrics.json", metrics), saved[i])
            except OSError as exc:
                results.append(record_stop(out, write_error(out, exc, saved[i]), histories[i], saved[i]))
                continue
            except Exception as exc:  # e.g. guard_writes' FastnetError
                results.append(record_stop(out, exc, histories[i], saved[i]))
                continue
            results.append(metrics)
        return results
