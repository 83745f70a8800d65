"""The regularisers for long runs (issue 17) as a part of the step: label smoothing, MixUp,
dropout and decoupled weight decay, made from a configuration by :func:`regulariser`.

:class:`Regularise` turns the batch a step trains on -- gathered and, with ``augment``,
augmented -- into what :func:`fastnet.training.stepper.train_step` takes: the inputs (MixUp
mixes them), the targets (labels, or soft targets with label smoothing or MixUp) and the
dropout masks. Its random numbers come from generators seeded by (seed, tag, t), the update
step t, like the augmentation's (tag 3): :data:`MIXUP_TAG` for MixUp's lambda and permutation,
:data:`DROPOUT_TAG` for the masks. So a run is reproducible, resumes bit for bit (nothing is
stored in the checkpoint), and turning one option on does not change another's draws.

A configuration with every option off has no part (``regulariser`` returns None) and its
steps are exactly those of before (the fused step included). Nothing here runs at test time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fastnet.model.network import Network
from fastnet.model.optim import decays_apart
from fastnet.model.regularise import dropout_masks, mixup, mixup_draw, smoothed_targets
from fastnet.training.config import TrainConfig

MIXUP_TAG = 17
DROPOUT_TAG = 18


@dataclass(frozen=True)
class Regularise:
    """The options of one run (see the module docstring) and the network's K and hidden widths."""

    seed: int
    K: int
    widths: tuple[int, ...]
    label_smoothing: float = 0.0
    mixup: float = 0.0
    dropout: float = 0.0
    decoupled: bool = False  # weight decay apart from Adam's moments (never for plain SGD)

    def __call__(self, Xb: NDArray, yb: NDArray, t: int) -> tuple[NDArray, NDArray, list[NDArray] | None]:
        """(inputs, targets, dropout masks or None) of update step t for the batch (Xb, yb).

        The targets are the labels themselves unless label smoothing or MixUp is on; then soft
        targets T (n, K) of Xb's dtype: smoothed, then mixed, so MixUp mixes smoothed rows."""
        targets = yb
        if self.label_smoothing or self.mixup:
            targets = smoothed_targets(yb, self.K, self.label_smoothing, Xb.dtype)
        if self.mixup:
            lam, perm = mixup_draw(np.random.default_rng([self.seed, MIXUP_TAG, t]), len(yb), self.mixup)
            Xb, targets = mixup(Xb, targets, lam, perm)
        masks = None
        if self.dropout:
            masks = dropout_masks(np.random.default_rng([self.seed, DROPOUT_TAG, t]), len(yb), self.widths, self.dropout, Xb.dtype)
        return Xb, targets, masks


def regulariser(cfg: TrainConfig, net: Network) -> Regularise | None:
    """The part for ``cfg``'s regularisers, or None when all are off (decoupled decay with plain
    SGD counts as off: it is the l2 step, :func:`fastnet.model.optim.decays_apart`)."""
    decoupled = decays_apart(cfg.decay, cfg.optimizer)
    if not (cfg.label_smoothing or cfg.mixup or cfg.dropout or decoupled):
        return None
    return Regularise(cfg.seed, net.sizes[-1], tuple(net.hidden), cfg.label_smoothing, cfg.mixup, cfg.dropout, decoupled)
