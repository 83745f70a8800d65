"""Where a run's time goes, and its checkpoints: the divergence check of the parameters, then
the caller's checkpoint callback.

``history.train_seconds`` counts training only: the time of evaluations goes to
``eval_seconds`` and that of checkpoints to neither (:class:`Clock`). Models trained together
(lock-step) share every interval evenly.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from fastnet.model.network import Network
from fastnet.training.state import History, Position
from fastnet.training.stepper import divergence, first_nonfinite


class Clock:
    """Charges each interval since the last charge to training, evaluation or nothing (None),
    divided evenly over the models (indices into ``histories``) training during it; every
    interval also counts in the models' ``wall`` seconds. Starts when made."""

    def __init__(self, histories: Sequence[History]):
        self.histories = histories
        self.wall = [0.0] * len(histories)
        self.mark = time.perf_counter()

    def charge(self, kind: str | None, members: Sequence[int] | None = None) -> None:
        now = time.perf_counter()
        members = range(len(self.histories)) if members is None else members
        share = (now - self.mark) / max(1, len(members))
        for i in members:
            if kind == "train":
                self.histories[i].train_seconds += share
            elif kind == "eval":
                self.histories[i].eval_seconds += share
            self.wall[i] += share
        self.mark = now


class Checkpointer:
    """The checkpoints of models ``nets``: ``callbacks[i](position)`` (None: none for model i)
    is called only with finite parameters, its time charged to no one on ``clock``."""

    def __init__(self, nets: Sequence[Network], callbacks: Sequence[Callable[[Position], None] | None], clock: Clock,
                 lams: Sequence[float] | None = None):
        self.nets, self.callbacks, self.clock = nets, callbacks, clock
        self.lams = lams  # each model's lambda, for the advice of a divergence

    def nonfinite(self, members: Sequence[int]) -> dict[int, str]:
        """The models of ``members`` with a parameter or statistic not finite, and its name."""
        return {i: where for i in members if (where := first_nonfinite(self.nets[i]))}

    def save(self, position: Position, members: Sequence[int]) -> None:
        """Call the checkpoint callbacks of ``members`` (parameters already checked)."""
        self.clock.charge("train", members)
        for i in members:
            if self.callbacks[i] is not None:
                self.callbacks[i](position)
        self.clock.charge(None, members)

    def __call__(self, position: Position, eta: float) -> None:
        """One model's checkpoint (:func:`fastnet.training.loop.fit`): DivergenceError, naming
        the step, the learning rate ``eta`` and the first array not finite, instead of a
        checkpoint of non-finite parameters."""
        bad = self.nonfinite([0])
        if bad:
            raise divergence(position.t, eta, bad[0], self.lams[0] if self.lams else None)
        if self.callbacks[0] is not None:
            self.save(position, [0])
