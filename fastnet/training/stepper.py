"""How a step is taken: :func:`train_step` op by op, or the fused step through :class:`Stepper`;
and the divergence errors that name the first array that is not finite."""
from __future__ import annotations

import math
import time

import numpy as np
from numpy.typing import NDArray

from fastnet.errors import ConfigError, DivergenceError
from fastnet.model.network import (
    Network,
    backward,
    forward_train,
    update_running_stats,
)
from fastnet.model.optim import (
    decoupled_decay,
    sgd_step,
)
from fastnet.training.config import TrainConfig
from fastnet.training.fused import beside_pays, fused_step_for, splits_itself
from fastnet.training.load_guard import LoadGuard
from fastnet.util.threads import blas_thread_count, idle_cores


def train_step(net: Network, X: NDArray, y: NDArray, lam: float, eta: float, ops, optimizer=None, t: int = 0, *,
               dropout: list[NDArray] | None = None, decoupled: bool = False) -> float:
    """One update of mini-batch gradient descent; returns the batch's mean cross-entropy.

    Forward with batch statistics, running averages (eqs 38-39), backward (eqs 21-37), step
    (``optimizer``: an :mod:`fastnet.model.optim` optimiser, plain SGD if None; ``t``: the update
    step, from 0, which Adam's bias correction needs).
    A non-finite loss is returned without any update, so that the network stays as it was
    when it produced that loss and :func:`locate_nonfinite` can say what went wrong.

    Issue 17 (:mod:`fastnet.training.regularisers`): ``y`` may be soft targets T (n, K), the loss
    then the cross-entropy against them; ``dropout``, a mask per hidden layer; ``decoupled``,
    weight decay apart from the gradient -- W <- (1 - 2 eta lam) W before the optimiser's step
    on the gradient without the L2 term (AdamW).
    """
    cache = forward_train(net, X, y, ops, dropout=dropout)
    loss = float(cache.loss.mean(dtype=np.float64))
    if not math.isfinite(loss):
        return loss
    if net.bn:
        update_running_stats(net, cache)
    grads = backward(net, cache, y, 0.0 if decoupled else lam, ops)
    if decoupled:
        decoupled_decay([layer.W for layer in net.layers], eta, lam)
    if optimizer is None:
        sgd_step(net.params(), grads, eta, ops)
    else:
        optimizer.step(net.params(), grads, eta, t, ops)
    return loss


def divergence(t: int, eta: float, where: str, lam: float | None = None) -> DivergenceError:
    """The error a run stops with when ``where`` (an array, a layer's output) is not finite at
    step t. The advice follows ``lam``: a huge lambda (its decay term 2 * eta * lam alone
    exceeds 1, so every step grows the weights) is lowered, never raised."""
    if lam is not None and (lam > 1 or 2 * eta * lam >= 1):
        advice = f"lower --lam ({lam:g}: the weight decay alone makes every step grow the weights) or --eta-max"
    else:
        advice = "lower --eta-max or raise --lam"
    return DivergenceError(f"training diverged at step {t} (learning rate {eta:.3g}): {where} is not finite; {advice}")


def augmenter(cfg: TrainConfig, whitening=None):
    """``augment(Xb, t)``: the flips and translations of step t, from a generator seeded by
    (seed, 3, t) -- an :class:`ImageAugment`, which the fused step's gather also applies.
    ``whitening`` (issue 17), the one the rows went through: PCA rows are flipped as sign
    changes of their odd components (the same draws; no translation), image-shaped rows as images."""
    if whitening is not None and not whitening.image_shaped:
        from fastnet.data.whiten import flip_batch

        signs = whitening.signs
        return lambda Xb, t: flip_batch(Xb, signs, np.random.default_rng([cfg.seed, 3, t]))
    return ImageAugment(cfg.seed, cfg.augment_shift)


class ImageAugment:
    """Random flips and translations of the images of step t, drawn from a generator seeded by
    (seed, 3, t): ``augment(Xb, t)`` applies them to a batch (:func:`fastnet.data.augment.augment_batch`),
    ``moves(t, n)`` gives the same draws as the fused step's gather applies them while it
    gathers (:func:`fastnet.data.augment.augment_moves`): the same images, bit for bit."""

    def __init__(self, seed: int, shift: int):
        self.seed, self.shift = seed, shift

    def __call__(self, Xb: NDArray, t: int) -> NDArray:
        from fastnet.data.augment import augment_batch

        return augment_batch(Xb, self._rng(t), self.shift)

    def moves(self, t: int, n: int) -> NDArray:
        from fastnet.data.augment import augment_moves

        return augment_moves(self._rng(t), n, self.shift)

    def _rng(self, t: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 3, t])


class Stepper:
    """How :func:`fit` takes a step: ``stepper(idx, eta, t)`` trains on rows ``idx`` of (X, y).

    The compiled whole step of :mod:`fastnet.training.fused` when the backend has one and the
    configuration qualifies (``self.fused``), else :func:`train_step` op by op; the two compute
    the same step. With the fused step and BLAS given two threads, each step runs on
    two cores (``self.cores == 2``: the step's own split, BLAS on one thread in each; the next
    batch, ``next_idx``, gathered during the step; while another process holds the second
    core, the two halves on one thread, ``self.guard``: the same bits); with BLAS on one
    thread and a core it leaves free, the next batch is gathered in a second thread while a
    step runs (``self.prefetch``: the kernel's own thread inside the step's call where it has
    one, ``self.beside``, under the same guard; else a Python thread).
    ``augment(Xb, t)``, if given, transforms each gathered batch -- an :class:`ImageAugment`
    inside the fused step's gather, so augmented batches are gathered ahead too; ``regularise``
    (issue 17), if given, then gives the step its inputs, targets and dropout masks (op by op).
    ``self.Xb`` is the last batch trained on. Call :meth:`close` when training stops (it gives
    the network ordinary C-contiguous arrays back). Benchmarks use it to time what fit runs.
    """

    def __init__(self, net: Network, X: NDArray, y: NDArray, lam: float, ops, optimizer=None, augment=None, regularise=None,
                 bf16: bool = False):
        self.net, self.X, self.y, self.lam, self.ops, self.augment = net, X, y, lam, ops, augment
        self.regularise = regularise  # issue 17: a fastnet.training.regularisers.Regularise, or None
        self.optimizer = optimizer if optimizer is not None and optimizer.name != "sgd" else None
        self.fused = fused_step_for(net, ops, optimizer=optimizer.name if optimizer is not None else "sgd", regularised=regularise is not None)
        if self.fused is not None:
            self.fused.check_labels(y)  # once here; each step then trusts the gathered labels
            if isinstance(X, np.ndarray) and not (X.flags.c_contiguous and X.dtype == net.dtype):
                # the compiled gather reads C-contiguous rows of the network's dtype: a data set
                # built otherwise (through the API) is converted once, as the op path would each batch
                self.X = X = np.ascontiguousarray(X, dtype=net.dtype)
        if bf16:  # --precision bf16 (issue 15)
            use_bf16(self.fused)
        # Two cores for the run (BLAS threads, set by --threads or the idle cores): the fused
        # step splits itself over them, faster than OpenBLAS's two threads with the gather and
        # the small layers between them (scripts/bench_peers.py; measured on two cores only,
        # so more threads keep OpenBLAS's own). One: with a core idle, the next batch is
        # gathered in a second thread (beside BLAS threads or other processes on every core
        # that thread only slows the step down).
        threads = blas_thread_count()
        # the compiled gather serves the run: no augmentation, or one it applies as it gathers
        self.gathers = self.fused is not None and (augment is None or hasattr(augment, "moves"))
        self._moves = (None, None)  # (t, moves) of the batch gathered ahead
        splits = self.fused is not None and splits_itself(net.sizes, augmented=not self.gathers, bf16=bf16,
                                                          cuts_small=self.fused.cuts_small_layers)
        self.cores = 2 if splits and threads == 2 and self.fused.parallel_threads() >= 2 else 1
        # bf16 given two threads: the step on one core, the next batch gathered on the other
        two_beside = (threads == 2 and self.gathers and self.fused.gathers_beside
                      and beside_pays(net.sizes, augmented=False, bf16=bf16))
        self.prefetch = self.gathers and self.cores == 1 and (threads < idle_cores() or two_beside)
        # the prefetch on a second thread of the kernel's, inside the step's call, where it has
        # one: a Python thread woken for each batch cost ~0.1 ms a step (README, issue 15)
        self.beside = self.prefetch and self.fused.gathers_beside
        if self.cores == 2:
            self.fused.use_cores(2)
        if self.beside:
            self.fused.gather_beside(one_blas_thread=two_beside)
        # issue 15: the two-core step (or the gather beside the step) on one thread while the
        # second core is busy
        self.guard = LoadGuard()
        self.Xb = None

    @property
    def spare_cores(self) -> int:
        """Threads that work between steps (evaluation) can use, with BLAS on one thread each:
        2 when the step runs on two cores or prefetches, else 1."""
        return 2 if self.cores == 2 or self.prefetch else 1

    def __call__(self, idx: NDArray, eta: float, t: int = 0, next_idx: NDArray | None = None) -> float:
        """One step on rows ``idx``; ``next_idx``: the rows of the step after, which the fused
        step gathers while this one runs (on its second core, or in a second thread)."""
        fused, X, y = self.fused, self.X, self.y
        if self.gathers:
            moves = self._moves_of(t, idx)  # before step t + 1's, which take its place in the one-slot cache
            ahead = (X, y, next_idx, self._moves_of(t + 1, next_idx)) if next_idx is not None and len(next_idx) == len(idx) else None
            self.Xb, yb = fused.gather(X, y, idx, moves)  # into the step's own buffers
            if self.cores == 2 or self.beside:  # gathered during the step
                return self._guarded(yb, eta, ahead, checked=False)
            if ahead is not None and self.prefetch:
                fused.prefetch(*ahead)
            return fused.step(self.Xb, yb, self.lam, eta, checked=False)
        self.Xb = X[idx] if self.augment is None else self.augment(X[idx], t)
        if fused is not None:
            if self.cores == 2:  # a bf16 step augmented in Python (PCA flips)
                return self._guarded(y[idx], eta, None, checked=True)
            return fused.step(self.Xb, y[idx], self.lam, eta)
        # SGD is stateless: train_step's default; an optimiser with state gets itself and t
        step_kw = {} if self.optimizer is None else {"optimizer": self.optimizer, "t": t}
        if self.regularise is not None:  # ---- regularisers for long runs (issue 17)
            self.Xb, targets, masks = self.regularise(self.Xb, y[idx], t)
            return train_step(self.net, self.Xb, targets, self.lam, eta, self.ops, **step_kw, dropout=masks, decoupled=self.regularise.decoupled)
        return train_step(self.net, self.Xb, y[idx], self.lam, eta, self.ops, **step_kw)

    def _moves_of(self, t: int, idx: NDArray):
        """The augmentation's moves of the batch ``idx`` of step t (None without augmentation),
        drawn once: those of the batch gathered ahead are kept for its own step."""
        if self.augment is None:
            return None
        if self._moves[0] != t:
            self._moves = (t, self.augment.moves(t, len(idx)))
        return self._moves[1]

    def _guarded(self, yb: NDArray, eta: float, ahead, checked: bool) -> float:
        """The fused step on two threads -- its two halves, or the step and the gather beside
        it -- or on one while the load guard says the second core is busy."""
        start = time.perf_counter()
        loss = self.fused.step(self.Xb, yb, self.lam, eta, checked=checked, ahead=ahead, threads=self.guard.threads())
        self.guard.observe(time.perf_counter() - start)
        return loss

    @property
    def form(self) -> str:
        """How each step is taken, in words (metrics.json's ``step_form``): "two-core split",
        "one core, gather beside", "one core, gather in a thread", "one core" or "op by op"."""
        if self.fused is None:
            return "op by op"
        if self.cores == 2:
            return "two-core split"
        return "one core, gather beside" if self.beside else "one core, gather in a thread" if self.prefetch else "one core"

    def close(self, history=None) -> None:
        """Training stopped: the network gets ordinary arrays back; ``history`` (a History),
        if given, counts the steps the load guard ran on one core and records :attr:`form`."""
        if history is not None:
            history.one_core_steps += self.guard.one_core_steps
            history.step_form = self.form
        if self.fused is not None:
            self.fused.detach()


def use_bf16(fused) -> None:
    """``--precision bf16``: the fused step's first-layer products on bf16 inputs; ConfigError,
    in a sentence, where the run takes no fused step or the step or the CPU has no bf16."""
    if fused is None:
        raise ConfigError("--precision bf16 runs in the compiled fused step, which this run does not take (it needs the cython backend, "
                          "plain SGD, hidden layers all BN before ReLU or all plain ReLU, no skips, no label smoothing, MixUp or dropout)")
    try:
        fused.use_bf16()
    except ValueError as e:
        raise ConfigError(f"--precision bf16: {e}") from None


def first_nonfinite(net: Network) -> str | None:
    """The name of the first parameter or running statistic holding NaN or inf, if any."""
    for name, a in {**net.params(), **net.running_stats()}.items():
        if not np.isfinite(a).all():
            return name
    return None


def locate_nonfinite(net: Network, X: NDArray, y: NDArray, ops) -> str:
    """What made the loss of the batch (X, y) non-finite: the first parameter or statistic
    holding NaN or inf, else the first layer whose output overflows (e.g. "the output of
    layer 2 (W2)"). Only called once training has diverged: it runs one more forward pass."""
    where = first_nonfinite(net)
    if where:
        return where
    cache = forward_train(net, X, y, ops)
    for l, lc in enumerate(cache.hidden, start=1):
        if not np.isfinite(lc.X).all():
            return f"the output of layer {l} (W{l})"
    return f"the output of layer {net.k} (W{net.k})"
