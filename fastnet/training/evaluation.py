"""One evaluation row of a run: train and validation loss, cost and accuracy, and its line.

A row is measured in test mode with population BN statistics, which a :class:`BNStats`
provides: the exponential averages the network trains with (:class:`EmaStats`, eqs 38-39)
or PreciseBN estimates at the step evaluated (:class:`PreciseStats`; such a row also holds
``val_accuracy_ema``, the validation accuracy with the averages, for the comparison).
:class:`Evaluator` measures the rows of :func:`fastnet.training.loop.fit`; the lock-step loop
measures its models itself and builds the same rows with :func:`eval_row`.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
from numpy.typing import NDArray

from fastnet.model.network import Metrics, Network, evaluate
from fastnet.training.config import TrainConfig
from fastnet.training.loggers import NO_LOGGER, Logger


def train_eval_rows(cfg: TrainConfig, n: int) -> NDArray | None:
    """The training rows the training metrics are measured on: a fixed random subset of
    ``cfg.eval_train_images`` rows, sorted (order is irrelevant), or None for all ``n``.
    Evaluating all 45,000 images every epoch costs a third of an epoch's training for a wide
    network."""
    if 0 < cfg.eval_train_images < n:
        return np.sort(np.random.default_rng([cfg.seed, 7]).permutation(n)[: cfg.eval_train_images])
    return None


def due_within_epoch(cfg: TrainConfig, t: int, total: int) -> bool:
    """Whether a row is measured after update step t besides the end of epochs: every
    ``cfg.eval_every`` steps, and every ``cfg.precise_every`` steps of a PreciseBN run (not
    after the last step: the epoch's end measures that)."""
    every = (cfg.eval_every and t % cfg.eval_every == 0) or (cfg.bn_stats == "precise" and cfg.precise_every and t % cfg.precise_every == 0)
    return bool(every) and t < total


def eval_row(epoch: float, t: int, eta: float, tr: Metrics, va: Metrics | None, extra: dict | None = None) -> dict:
    """A row of ``history.evals`` (the columns of history.csv): ``va`` None (no validation
    set) gives NaN validation figures."""
    return {"epoch": round(epoch, 4), "step": t, "eta": eta,
            "train_loss": tr.loss, "train_cost": tr.cost, "train_accuracy": tr.accuracy,
            "val_loss": va.loss if va else math.nan, "val_cost": va.cost if va else math.nan,
            "val_accuracy": va.accuracy if va else math.nan, **(extra or {})}


def progress_line(row: dict, epoch: float, prefix: str = "") -> str:
    """The line a row is logged with (``epoch`` unrounded; ``prefix``: e.g. "[2] ", a
    lock-step group's model)."""
    ema = f" (EMA stats {row['val_accuracy_ema']:.4f})" if "val_accuracy_ema" in row else ""
    return (f"{prefix}epoch {epoch:5.2f}  step {row['step']:6d}  loss {row['train_loss']:.4f}  cost {row['train_cost']:.4f}  "
            f"train acc {row['train_accuracy']:.4f}  val acc {row['val_accuracy']:.4f}{ema}")


class EmaStats:
    """Evaluate with the running averages the network trains with (eqs 38-39)."""

    def extra(self, net: Network) -> dict:
        """Figures a row holds besides the standard ones: none."""
        return {}

    def using(self, net: Network, t: int):
        """A context in which ``net`` evaluates with these statistics at step t."""
        return contextlib.nullcontext()


class PreciseStats:
    """Evaluate with PreciseBN statistics re-estimated at the step evaluated, on
    ``cfg.precise_images`` training images (:mod:`fastnet.model.bn_stats`); the averages go
    on untouched, so training, and every checkpoint, are those of the "ema" run."""

    def __init__(self, data, cfg: TrainConfig, ops):
        self.data, self.cfg, self.ops = data, cfg, ops

    def extra(self, net: Network) -> dict:
        """``val_accuracy_ema``: the validation accuracy with the averages (if there is a validation set)."""
        d = self.data
        return {"val_accuracy_ema": evaluate(net, d.X_val, d.y_val, self.cfg.lam, self.ops).accuracy} if len(d.y_val) else {}

    def using(self, net: Network, t: int):
        from fastnet.model.bn_stats import precise_estimate, using_stats

        return using_stats(net, precise_estimate(net, self.data.X_train, self.cfg, self.ops, t))


def bn_stats_for(cfg: TrainConfig, data, ops):
    """The statistics ``cfg.bn_stats`` asks evaluations to use."""
    return PreciseStats(data, cfg, ops) if cfg.bn_stats == "precise" else EmaStats()


class Evaluator:
    """The evaluation rows of a run of ``cfg`` on ``data``: :meth:`record` measures one (its
    time charged to evaluation on ``clock``), appends it to the history and logs it on ``bar``.

    ``threads``: what evaluation may use (a stepper's ``spare_cores``); ``logger``: told every
    row (:mod:`fastnet.training.loggers`).
    """

    def __init__(self, data, cfg: TrainConfig, ops, schedule, clock, bar, threads: int = 1, logger: Logger = NO_LOGGER):
        self.data, self.lam, self.ops, self.schedule, self.clock, self.bar, self.threads = data, cfg.lam, ops, schedule, clock, bar, threads
        self.logger = logger
        self.rows = train_eval_rows(cfg, data.X_train.shape[0])
        self.stats = bn_stats_for(cfg, data, ops)

    def measure(self, net: Network, epoch: float, t: int) -> dict:
        """The row of ``net`` after update step t (``epoch``: epochs done, fractional)."""
        d = self.data
        extra = self.stats.extra(net)
        with self.stats.using(net, t):
            # The training subset is gathered a chunk at a time, never copied whole; with BLAS on
            # one thread and a core to spare, evaluation takes both cores itself.
            tr = evaluate(net, d.X_train, d.y_train, self.lam, self.ops, rows=self.rows, threads=self.threads)
            va = evaluate(net, d.X_val, d.y_val, self.lam, self.ops, threads=self.threads) if len(d.y_val) else None
        return eval_row(epoch, t, self.schedule.last_eta(t), tr, va, extra)

    def record(self, net: Network, history, epoch: float, t: int) -> None:
        """Measure the row, add it to ``history.evals`` and log it."""
        self.clock.charge("train")
        row = self.measure(net, epoch, t)
        self.clock.charge("eval")
        history.evals.append(row)
        self.logger.evaluation(row)
        self.bar.log(progress_line(row, epoch))
        self.clock.charge(None)
