"""The batches and learning rates of a run's schedule, from a position in it.

A run of ``cfg.cycles`` cycles takes ``2 n_s cycles`` update steps (eq 34's cyclic schedule,
or the bonus schedules over the same steps) in epochs of ``n // batch`` mini-batches. Each
epoch draws a new permutation of the training set from one generator seeded by (seed, 2);
its state *before* the draw is what a checkpoint keeps (:class:`Position`), so that a
resumed run draws the same permutation again and skips the mini-batches already done.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fastnet.errors import ConfigError
from fastnet.model.optim import check_schedule
from fastnet.training.config import TrainConfig, schedule_fn
from fastnet.training.state import Position


@dataclass(frozen=True)
class Step:
    """Mini-batch ``j`` of ``epoch``: update step ``t`` (from 0) trains on rows ``idx``;
    ``next_idx`` are the rows of the step after (None after the last step of the run), which
    a stepper may gather while this one runs. ``rng_state``: the shuffling generator's state
    before this epoch's permutation (a checkpoint taken before this step keeps it)."""

    epoch: int
    j: int
    t: int
    idx: NDArray
    next_idx: NDArray | None
    rng_state: dict

    @property
    def position(self) -> Position:
        """Where the run stands before this step."""
        return Position(self.t, self.epoch, self.j, self.rng_state)


@dataclass(frozen=True)
class Epoch:
    """One pass over a permutation of the training set, from mini-batch ``first_j`` on.
    Iterating gives its :class:`Step` s; the last one may lie at or past the end of the
    schedule (``step.t >= schedule.total``): a run stops there. ``end``: the position after it."""

    schedule: Schedule
    index: int
    first_j: int
    perm: NDArray
    rng_state: dict  # before perm was drawn
    end: Position

    def __iter__(self) -> Iterator[Step]:
        s, b = self.schedule, self.schedule.batch
        for j in range(self.first_j, s.per_epoch):
            t = min(s.total, self.index * s.per_epoch + j)
            nxt = self.perm[(j + 1) * b : (j + 2) * b] if t + 1 < s.total else None
            yield Step(self.index, j, t, self.perm[j * b : (j + 1) * b], nxt, self.rng_state)


class Schedule:
    """The steps, epochs and learning rates of ``cfg`` on ``n`` training images.

    ``total`` update steps in ``epochs`` epochs of ``per_epoch`` mini-batches; ``lr(t)``: the
    learning rate of update step t (from 0). ConfigError for a batch larger than the training
    set or a schedule that does not fit the run's length.
    """

    def __init__(self, cfg: TrainConfig, n: int):
        if cfg.batch > n:
            raise ConfigError(f"batch size {cfg.batch} is larger than the training set ({n} images)")
        self.n, self.batch, self.seed = n, cfg.batch, cfg.seed
        self.n_s = cfg.resolved_n_s(n)
        self.total = 2 * self.n_s * cfg.cycles
        check_schedule(cfg.schedule, cfg.decay_rate, cfg.decay_steps, cfg.warmup, self.total)
        self.lr = schedule_fn(cfg, self.n_s, self.total)
        self.per_epoch = n // cfg.batch
        self.epochs = math.ceil(self.total / self.per_epoch)

    def lr_of(self, cfg: TrainConfig):
        """The learning rate of another configuration over this schedule's steps (lock-step
        models share the steps but not the rates)."""
        return schedule_fn(cfg, self.n_s, self.total)

    def last_eta(self, t: int) -> float:
        """The learning rate of the step that led to step t (step 0's before any step)."""
        return self.lr(max(t - 1, 0))

    def start(self) -> Position:
        """The position before the first step."""
        return Position(rng_state=np.random.default_rng([self.seed, 2]).bit_generator.state)

    def check(self, pos: Position) -> Position:
        """``pos`` if a run of this schedule can continue from it, else ConfigError."""
        if pos.j >= self.per_epoch or pos.epoch > self.epochs or pos.t != min(self.total, pos.epoch * self.per_epoch + pos.j):
            raise ConfigError(f"cannot continue at step {pos.t} (epoch {pos.epoch}, batch {pos.j}): the schedule has {self.total} steps of {self.per_epoch} per epoch")
        return pos

    def epochs_from(self, pos: Position) -> Iterator[Epoch]:
        """The epochs from ``pos`` to the end, each with its permutation (redrawn for the epoch
        ``pos`` is in, from the generator state it holds)."""
        rng = np.random.default_rng([self.seed, 2])
        rng.bit_generator.state = pos.rng_state
        for epoch in range(pos.epoch, self.epochs):
            before = rng.bit_generator.state  # a checkpoint within the epoch redraws the permutation from here
            perm = rng.permutation(self.n)
            end = Position(min(self.total, (epoch + 1) * self.per_epoch), epoch + 1, 0, rng.bit_generator.state)
            yield Epoch(self, epoch, pos.j if epoch == pos.epoch else 0, perm, before, end)
