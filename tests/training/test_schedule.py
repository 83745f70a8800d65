"""The schedule's steps: a run resumed from any position takes exactly the steps left."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from fastnet.errors import ConfigError
from fastnet.training.config import TrainConfig
from fastnet.training.schedule import Schedule
from fastnet.training.state import Position


def steps_from(sched: Schedule, pos: Position) -> list[tuple]:
    out = []
    for epoch in sched.epochs_from(pos):
        for step in epoch:
            if step.t >= sched.total:
                break
            out.append((step.epoch, step.j, step.t, step.idx.tolist(), None if step.next_idx is None else step.next_idx.tolist()))
    return out


@pytest.mark.parametrize("n_s", [3, 5])  # 5: the last epoch is cut short
def test_resuming_at_any_step_takes_the_remaining_steps(n_s):
    sched = Schedule(TrainConfig(batch=4, n_s=n_s, cycles=1, seed=3), 10)  # 2 batches per epoch
    assert (sched.per_epoch, sched.total) == (2, 2 * n_s)
    whole = steps_from(sched, sched.start())
    assert [s[2] for s in whole] == list(range(sched.total))
    assert whole[-1][4] is None  # nothing to gather after the last step
    positions = [sched.start()] + [epoch.end for epoch in sched.epochs_from(sched.start())]
    for epoch in sched.epochs_from(sched.start()):
        positions += [step.position for step in epoch if step.t < sched.total]
    for pos in positions:
        assert steps_from(sched, sched.check(pos)) == whole[pos.t:]


def test_each_epoch_is_a_permutation_and_its_end_is_the_next_start():
    sched = Schedule(TrainConfig(batch=3, n_s=4, cycles=1), 9)
    epochs = list(sched.epochs_from(sched.start()))
    assert len(epochs) == sched.epochs == 3
    for a, b in itertools.pairwise(epochs):
        assert sorted(a.perm.tolist()) == list(range(9))
        assert a.end.rng_state == b.rng_state and (a.end.epoch, a.end.j) == (b.index, 0)
    assert epochs[-1].end.t == sched.total


def test_learning_rate_and_refusals():
    sched = Schedule(TrainConfig(batch=10, n_s=5), 100)
    assert sched.lr(0) == pytest.approx(1e-5) and sched.lr(5) == pytest.approx(0.1)
    assert sched.last_eta(0) == sched.lr(0) and sched.last_eta(6) == sched.lr(5)
    with pytest.raises(ConfigError, match="larger than the training set"):
        Schedule(TrainConfig(batch=200), 100)
    with pytest.raises(ConfigError, match="cannot continue at step 3"):
        sched.check(Position(t=3, epoch=1, j=0, rng_state=sched.start().rng_state))
    assert np.array_equal(next(iter(next(sched.epochs_from(sched.start())))).idx.shape, (10,))
