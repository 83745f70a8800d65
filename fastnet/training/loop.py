"""The mini-batch training loop: shuffling, learning-rate schedule, BN statistics, evaluation.

``fit`` trains a network in place and fills a :class:`History` as it goes, so that a caller
that catches an error (divergence, Ctrl-C) still holds everything measured so far. Given a
``checkpoint`` callback it reports its :class:`Position` when training starts, at the end of
every epoch and when a :class:`StopRequest` (set by SIGINT/SIGTERM) stops it between two
steps; started again from such a position (``start=``), it continues exactly: same
permutations, same steps, same parameters bit for bit.

Bonus settings (Exercise 4; all off by default, and left out of ``to_dict`` while at their
defaults, so configurations written before they existed read back unchanged):
``bn_placement`` / ``skip`` (the architecture, see :mod:`fastnet.network`), ``optimizer``
with ``beta1``, ``beta2``, ``adam_eps`` and ``schedule`` with ``decay_rate``, ``decay_steps``,
``warmup`` (:mod:`fastnet.optim`), ``augment`` / ``augment_shift`` (:mod:`fastnet.augment`)
and ``bn_stats`` = "precise" with ``precise_every``, ``precise_images``
(:mod:`fastnet.bn_stats`); ``eval_train_images`` measures the training metrics on a fixed
subset. Everything random in them is drawn from generators seeded by the
run's seed and the update step, so a bonus run also resumes bit for bit (Adam's moments are
checkpointed).
"""
from __future__ import annotations

import contextlib
import math
import time

import numpy as np

from fastnet.errors import ConfigError, DivergenceError
from fastnet.model.network import (
    Network,
    evaluate,
)
from fastnet.model.optim import (
    check_schedule,
)
from fastnet.training.config import TrainConfig, new_optimizer, schedule_fn
from fastnet.training.state import History, Interrupted, Position, StopRequest
from fastnet.training.stepper import (
    Stepper,
    augmenter,
    divergence,
    first_nonfinite,
    locate_nonfinite,
)
from fastnet.util.progress import Progress


def fit(net: Network, data, cfg: TrainConfig, ops, history: History | None = None, progress: bool = True, *,
        start: Position | None = None, checkpoint=None, stop: StopRequest | None = None, optimizer=None) -> History:
    """Train ``net`` in place on ``data`` (a fastnet.data.Dataset) as ``cfg`` says.

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
    optimizer : an optimiser of :mod:`fastnet.optim`, optional
        The one to step with (its state is the caller's to checkpoint); a fresh one of
        ``cfg.optimizer`` if None. Resuming an Adam run needs the one loaded from its checkpoint.

    Raises DivergenceError at the first non-finite loss (checked every step) or parameter
    (checked every epoch and before a checkpoint), naming the step, the learning rate and the
    first array that is not finite; ``history`` keeps what was measured until then, and no
    checkpoint of the diverged state is made.
    """
    history = history if history is not None else History()
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    if cfg.batch > n:
        raise ConfigError(f"batch size {cfg.batch} is larger than the training set ({n} images)")
    n_s = cfg.resolved_n_s(n)
    total = 2 * n_s * cfg.cycles
    check_schedule(cfg.schedule, cfg.decay_rate, cfg.decay_steps, cfg.warmup, total)
    lr = schedule_fn(cfg, n_s, total)
    if optimizer is None:
        if start is not None and start.t > 0 and cfg.optimizer != "sgd":
            raise ConfigError(f"resuming a {cfg.optimizer} run at step {start.t} needs its optimiser state from the checkpoint; pass optimizer=")
        optimizer = new_optimizer(cfg, net)
    precise = cfg.bn_stats == "precise"
    # Training metrics on a fixed random subset when asked (evaluating all 45,000 images every
    # epoch costs a third of an epoch's training for a wide network); sorted: order is irrelevant.
    train_eval = np.sort(np.random.default_rng([cfg.seed, 7]).permutation(n)[: cfg.eval_train_images]) if 0 < cfg.eval_train_images < n else None
    per_epoch = n // cfg.batch
    epochs = math.ceil(total / per_epoch)
    rng = np.random.default_rng([cfg.seed, 2])
    pos = start if start is not None else Position(rng_state=rng.bit_generator.state)
    if pos.j >= per_epoch or pos.epoch > epochs or pos.t != min(total, pos.epoch * per_epoch + pos.j):
        raise ConfigError(f"cannot continue at step {pos.t} (epoch {pos.epoch}, batch {pos.j}): the schedule has {total} steps of {per_epoch} per epoch")
    rng.bit_generator.state = pos.rng_state
    bar = Progress(total, "train", enabled=progress)
    t = pos.t
    eta = lr(max(t - 1, 0))
    start_time = time.perf_counter()
    if stop is None:
        stop = StopRequest()

    def record(epoch: float) -> None:
        nonlocal start_time
        history.train_seconds += time.perf_counter() - start_time
        t0 = time.perf_counter()
        extra = {}
        if precise:
            from fastnet.model.bn_stats import precise_estimate, using_stats

            if len(data.y_val):
                extra["val_accuracy_ema"] = evaluate(net, data.X_val, data.y_val, cfg.lam, ops).accuracy
            ctx = using_stats(net, precise_estimate(net, X, cfg, ops, t))
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            # The training subset is gathered a chunk at a time, never copied whole; with BLAS on
            # one thread and a core to spare, evaluation takes both cores itself.
            threads = stepper.spare_cores
            tr = evaluate(net, X, y, cfg.lam, ops, rows=train_eval, threads=threads)
            va = evaluate(net, data.X_val, data.y_val, cfg.lam, ops, threads=threads) if len(data.y_val) else None
        history.eval_seconds += time.perf_counter() - t0
        row = {"epoch": round(epoch, 4), "step": t, "eta": lr(max(t - 1, 0)),
               "train_loss": tr.loss, "train_cost": tr.cost, "train_accuracy": tr.accuracy,
               "val_loss": va.loss if va else math.nan, "val_cost": va.cost if va else math.nan,
               "val_accuracy": va.accuracy if va else math.nan, **extra}
        history.evals.append(row)
        bar.log(f"epoch {epoch:5.2f}  step {t:6d}  loss {tr.loss:.4f}  cost {tr.cost:.4f}  "
                f"train acc {tr.accuracy:.4f}  val acc {row['val_accuracy']:.4f}"
                + (f" (EMA stats {extra['val_accuracy_ema']:.4f})" if "val_accuracy_ema" in extra else ""))
        start_time = time.perf_counter()

    def diverged(where: str) -> DivergenceError:
        return divergence(t, eta, where)

    def save(epoch: int, j: int, rng_state: dict) -> None:
        nonlocal start_time
        where = first_nonfinite(net)
        if where:
            raise diverged(where)
        if checkpoint is not None:
            history.train_seconds += time.perf_counter() - start_time
            checkpoint(Position(t, epoch, j, rng_state))
            start_time = time.perf_counter()

    stepper = Stepper(net, X, y, cfg.lam, ops, optimizer, augmenter(cfg) if cfg.augment else None)
    stop.deferring = True
    try:
        if start is None:
            save(0, 0, pos.rng_state)
        for epoch in range(pos.epoch, epochs):
            rng_state = rng.bit_generator.state  # before the permutation: a checkpoint redraws it
            perm = rng.permutation(n)
            for j in range(pos.j if epoch == pos.epoch else 0, per_epoch):
                if stop.signum is not None:
                    save(epoch, j, rng_state)
                    raise Interrupted(stop.signum, t)
                if t >= total:
                    break
                idx = perm[j * cfg.batch : (j + 1) * cfg.batch]
                eta = lr(t)
                loss = stepper(idx, eta, t, perm[(j + 1) * cfg.batch : (j + 2) * cfg.batch] if t + 1 < total else None)
                history.step_eta.append(eta)
                history.step_loss.append(loss)
                t += 1
                if not math.isfinite(loss):  # the step made no update: the network is as it was
                    raise diverged(locate_nonfinite(net, stepper.Xb, y[idx], ops))
                due = (cfg.eval_every and t % cfg.eval_every == 0) or (precise and cfg.precise_every and t % cfg.precise_every == 0)
                if due and t < total:
                    record(t / per_epoch)
                bar.update(t, f"loss {loss:.3f} eta {eta:.2e}")
            record(min(epoch + 1, t / per_epoch))
            save(epoch + 1, 0, rng.bit_generator.state)  # checks the parameters first
            if stop.signum is not None:
                raise Interrupted(stop.signum, t)
    finally:
        stop.deferring = False
        bar.close()
        stepper.close()
    return history


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
