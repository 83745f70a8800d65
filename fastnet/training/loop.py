"""The mini-batch training loop, a short sequence of named parts: the batches and learning rates
of the schedule (:mod:`fastnet.training.schedule`), a step (:class:`fastnet.training.stepper.Stepper`),
the evaluation rows with their BN statistics (:mod:`fastnet.training.evaluation`) and the
checkpoints with the time accounting (:mod:`fastnet.training.checkpointer`).

``fit`` trains a network in place and fills a :class:`History` as it goes, so that a caller
that catches an error (divergence, Ctrl-C) still holds everything measured so far. Given a
``checkpoint`` callback it reports its :class:`Position` when training starts, at the end of
every epoch and when a :class:`StopRequest` (set by SIGINT/SIGTERM) stops it between two
steps; started again from such a position (``start=``), it continues exactly: same
permutations, same steps, same parameters bit for bit.

Bonus settings (Exercise 4; all off by default, and left out of ``to_dict`` while at their
defaults, so configurations written before they existed read back unchanged):
``bn_placement`` / ``skip`` (the architecture, see :mod:`fastnet.model.network`), ``optimizer``
with ``beta1``, ``beta2``, ``adam_eps`` and ``schedule`` with ``decay_rate``, ``decay_steps``,
``warmup`` (:mod:`fastnet.model.optim`), ``augment`` / ``augment_shift`` (:mod:`fastnet.data.augment`)
and ``bn_stats`` = "precise" with ``precise_every``, ``precise_images``
(:mod:`fastnet.model.bn_stats`); ``eval_train_images`` measures the training metrics on a fixed
subset. Everything random in them is drawn from generators seeded by the
run's seed and the update step, so a bonus run also resumes bit for bit (Adam's moments are
checkpointed).

Regularisers for long runs (issue 17; :mod:`fastnet.training.regularisers`), off by default in
the same way: ``label_smoothing``, ``mixup``, ``dropout`` and ``decay`` = "decoupled".
"""
from __future__ import annotations

import math

from fastnet.errors import ConfigError
from fastnet.model.network import Network, evaluate
from fastnet.training.checkpointer import Checkpointer, Clock
from fastnet.training.config import TrainConfig, gemm_for, new_optimizer
from fastnet.training.evaluation import Evaluator, due_within_epoch
from fastnet.training.loggers import NO_LOGGER, Logger
from fastnet.training.regularisers import regulariser
from fastnet.training.schedule import Schedule, Step
from fastnet.training.state import History, Interrupted, Position, StopRequest
from fastnet.training.stepper import Stepper, augmenter, divergence, locate_nonfinite
from fastnet.util.progress import Progress
from fastnet.util.threads import blas_thread_count


def fit(net: Network, data, cfg: TrainConfig, ops, history: History | None = None, progress: bool = True, *,
        start: Position | None = None, checkpoint=None, stop: StopRequest | None = None, optimizer=None, logger: Logger = NO_LOGGER,
        gemm: str | None = None) -> History:
    """Train ``net`` in place on ``data`` (a fastnet.data.cifar10.Dataset) as ``cfg`` says.

    The training set is reshuffled every epoch; the learning rate (cyclic by default) is
    updated every step; train and validation loss, cost and accuracy are measured (running BN
    statistics) at the end of every epoch, every ``cfg.eval_every`` steps if set, and after
    the last step.

    Bonus settings: ``cfg.augment`` flips and translates each mini-batch on the fly (a
    generator seeded by (seed, t)); ``cfg.bn_stats == "precise"`` measures every evaluation
    with PreciseBN statistics re-estimated on ``cfg.precise_images`` training images (also
    every ``cfg.precise_every`` steps), while the exponential averages go on untouched (so
    training, and every checkpoint, are those of the "ema" run); each such row also holds
    ``val_accuracy_ema``. :func:`finish_bn_stats` installs the final PreciseBN statistics.

    Parameters
    ----------
    start : Position, optional
        Continue from here (``net`` and ``history`` as they were there) instead of step 0.
    checkpoint : callable(Position), optional
        Called with the current position when training starts (unless resuming), after every
        epoch's evaluation, and before stopping for ``stop``; never with non-finite parameters.
    stop : StopRequest, optional
        Looked at before every step and after every epoch; once its ``signum`` is set, fit
        checkpoints and raises :class:`Interrupted`.
    optimizer : an optimiser of :mod:`fastnet.model.optim`, optional
        The one to step with (its state is the caller's to checkpoint); a fresh one of
        ``cfg.optimizer`` if None. Resuming an Adam run needs the one loaded from its checkpoint.
    logger : fastnet.training.loggers.Logger, optional
        Told every step's loss and learning rate and every evaluation row (TensorBoard,
        MLflow); the caller opens and closes it.
    gemm : str, optional
        The fused step's matrix-multiply provider, "openblas" or "mkl"; None: ``cfg.gemm`` (:func:`use_gemm`).

    Raises DivergenceError at the first non-finite loss (checked every step) or parameter
    (checked every epoch and before a checkpoint), naming the step, the learning rate and the
    first array that is not finite; ``history`` keeps what was measured until then, and no
    checkpoint of the diverged state is made.
    """
    history = history if history is not None else History()
    sched = Schedule(cfg, data.X_train.shape[0])
    optimizer = optimizer if optimizer is not None else fresh_optimizer(cfg, net, start)
    pos = sched.check(start) if start is not None else sched.start()
    clock = Clock([history])
    save = Checkpointer([net], [checkpoint], clock, lams=[cfg.lam])
    stepper = Stepper(net, data.X_train, data.y_train, cfg.lam, ops, optimizer, augmenter(cfg, getattr(data, "whitening", None)) if cfg.augment else None,
                      regularise=regulariser(cfg, net), bf16=cfg.precision == "bf16")
    use_gemm(stepper, cfg, gemm)
    bar = Progress(sched.total, "train", enabled=progress)
    evaluator = Evaluator(data, cfg, ops, sched, clock, bar, threads=stepper.spare_cores, logger=logger)
    stop = stop if stop is not None else StopRequest()
    eta = sched.last_eta(pos.t)  # the learning rate a divergence found before the next step is reported with
    stop.deferring = True
    try:
        if start is None:
            save(pos, eta)
        for epoch in sched.epochs_from(pos):
            for step in epoch:
                if stop.signum is not None:
                    save(step.position, eta)
                    raise Interrupted(stop.signum, step.t)
                if step.t >= sched.total:
                    break
                eta = sched.lr(step.t)
                take_step(stepper, step, eta, history)
                logger.step(step.t + 1, history.step_loss[-1], eta)
                if due_within_epoch(cfg, step.t + 1, sched.total):
                    evaluator.record(net, history, (step.t + 1) / sched.per_epoch, step.t + 1)
                bar.update(step.t + 1, f"loss {history.step_loss[-1]:.3f} eta {eta:.2e}")
            evaluator.record(net, history, min(epoch.index + 1, epoch.end.t / sched.per_epoch), epoch.end.t)
            save(epoch.end, eta)  # checks the parameters first
            if stop.signum is not None:
                raise Interrupted(stop.signum, epoch.end.t)
    finally:
        stop.deferring = False
        bar.close()
        stepper.close(history)
    return history


def use_gemm(stepper: Stepper, cfg: TrainConfig, gemm: str | None) -> None:
    """Hand the fused step (if the stepper has one) its matrix-multiply provider: ``gemm``, or
    ``cfg.gemm`` resolved for the network (:func:`gemm_for`); a provider that is not installed
    closes the stepper and raises."""
    try:
        if stepper.fused is None:
            return
        one = 1 if stepper.cores == 2 else blas_thread_count()  # the threads each product runs on
        stepper.fused.use_gemm(gemm if gemm is not None else gemm_for(cfg, stepper.net.sizes[0], threads=one))
    except BaseException:
        stepper.close()
        raise



def take_step(stepper: Stepper, step: Step, eta: float, history: History) -> None:
    """Update step ``step.t`` at learning rate ``eta``; its rate and loss go into ``history``.
    DivergenceError if the loss is not finite (the step then made no update: the network is
    as it was, and the error names what overflowed)."""
    loss = stepper(step.idx, eta, step.t, step.next_idx)
    history.step_eta.append(eta)
    history.step_loss.append(loss)
    if not math.isfinite(loss):
        raise divergence(step.t + 1, eta, locate_nonfinite(stepper.net, stepper.Xb, stepper.y[step.idx], stepper.ops), stepper.lam)


def fresh_optimizer(cfg: TrainConfig, net: Network, start: Position | None):
    """A new optimiser of ``cfg.optimizer``; ConfigError when resuming a run whose optimiser
    has state (Adam's moments), which must come from the checkpoint."""
    if start is not None and start.t > 0 and cfg.optimizer != "sgd":
        raise ConfigError(f"resuming a {cfg.optimizer} run at step {start.t} needs its optimiser state from the checkpoint; pass optimizer=")
    return new_optimizer(cfg, net)


def finish_bn_stats(net: Network, data, cfg: TrainConfig, ops) -> dict:
    """After training with ``bn_stats == "precise"``: measure validation and test accuracy with
    the exponential averages (for the comparison), then install the PreciseBN statistics of
    the end of training (the ones the last evaluation used). Returns the EMA figures
    (``val_accuracy_ema``, ``test_accuracy_ema``, ...); {} for "ema"."""
    if cfg.bn_stats != "precise":
        return {}
    from fastnet.model.bn_stats import install_stats, precise_estimate

    out = {}
    for part, Xp, yp in (("val", data.X_val, data.y_val), ("test", data.X_test, data.y_test)):
        if len(yp):
            m = evaluate(net, Xp, yp, cfg.lam, ops)
            out[f"{part}_accuracy_ema"], out[f"{part}_loss_ema"] = m.accuracy, m.loss
    n = data.X_train.shape[0]
    install_stats(net, precise_estimate(net, data.X_train, cfg, ops, 2 * cfg.resolved_n_s(n) * cfg.cycles))
    return out
