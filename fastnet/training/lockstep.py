"""Train the runs of a sweep together, in lock-step, when they differ only in per-model scalars.

A lambda sweep trains M networks of one architecture from one seed: the same initial weights
and the same shuffled mini-batches, differing only in lambda (and possibly in the learning-rate
range). :func:`fit_lockstep` trains such a group as one loop over the mini-batches:

* one gather of each mini-batch, into a buffer kept for the whole run;
* the first layers of all M models as one stacked weight array ``Wt`` of shape (d, M m_1),
  C-contiguous (column block m is model m's W_1 transposed), so that the forward pass of the
  widest layer is one (n, d) @ (d, M m_1) product and its weight gradient one
  (d, n) @ (n, M m_1) product; its batch norm (gamma, beta, running averages), or bias, is
  stacked the same way and goes through the backend's ops once for all M models (batch norm
  works column by column, so the stacked op computes each model's columns exactly as alone);
* layers 2..k of each model as a network of their own, fed the model's block of the first
  layer's output: :func:`fastnet.model.network.forward_train`, ``backward`` (which also gives the
  gradient of that block) and :func:`fastnet.model.optim.sgd_step`, as a standalone step runs them;
* the first layer's update of eq (20)'s gradient step with the per-model scalars as
  per-column factors: W <- (1 - 2 eta_m lam_m) W - (eta_m / n) G^T X.

Each model ends as a standalone :func:`fastnet.training.loop.fit` with its own configuration ends: the
same evaluation rows (respecting ``eval_every`` and ``eval_train_images``), running BN averages
(eqs 38-39), per-step losses and learning rates, checkpoints at the same positions. Not bit for
bit: the stacked products may sum in another order than the per-model ones, and the fused
update rounds differently from ``dW = G^T X / n + 2 lam W; W -= eta dW``; the differences are of
the order of the unit roundoff per step (tests/training/test_lockstep.py states the tolerances).

**Divergence.** A model whose batch loss is not finite leaves the group at that step, exactly as
``fit`` stops: that step's learning rate and loss are in its history, its parameters are those
that produced the loss, and its error names the step, the rate and the first non-finite array.
The others go on (the step is redone for them without it). Likewise for non-finite parameters
found at the end of an epoch.

**Grouping.** :func:`lockstep_blocker` says why a configuration cannot be trained in a group
(plain SGD only, batch norm before the ReLU or none, no skip connections, augmentation,
PreciseBN, label smoothing, MixUp or dropout); :func:`group_key` is equal for configurations
that may share a group (everything but :data:`FREE_FIELDS`); :func:`plan_units` splits a sweep's pending runs into groups and
single runs. :func:`run_group_to_folders` writes each model's run folder as
:func:`fastnet.runs.train.run_to_folder` would, with ``"lockstep"`` in its metrics.

**Time.** The models share every product, so the group's time cannot be attributed finer than
evenly: each interval of the group's loop (training, evaluation, checkpoints) is divided by the
number of models in the group during it. A model's ``train_seconds``, ``eval_seconds`` and
``wall_seconds`` are its shares.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from fastnet.data.images import NormalisedImages
from fastnet.errors import ConfigError, DivergenceError
from fastnet.model.network import (
    EVAL_CHUNK,
    Layer,
    Metrics,
    Network,
    backward,
    forward_eval,
    forward_train,
    l2_penalty,
    running_average,
    update_running_stats,
)
from fastnet.model.optim import sgd_step
from fastnet.training.checkpointer import Checkpointer, Clock
from fastnet.training.config import TrainConfig
from fastnet.training.evaluation import (
    due_within_epoch,
    eval_row,
    progress_line,
    train_eval_rows,
)
from fastnet.training.schedule import Schedule, Step
from fastnet.training.state import History, Interrupted, Position, StopRequest
from fastnet.training.stepper import divergence, locate_nonfinite
from fastnet.util.progress import Progress

#: The settings models of one group may differ in: scalars of the update step only.
FREE_FIELDS = ("lam", "eta_min", "eta_max")
#: The largest group :func:`plan_units` makes (a group's stacked first layer is M times wider).
MAX_GROUP = 8


# ------------------------------------------------------------------------------ grouping


def lockstep_blocker(cfg: TrainConfig) -> str | None:
    """Why ``cfg`` cannot be trained in a lock-step group, or None if it can."""
    if cfg.optimizer != "sgd":
        return f"the {cfg.optimizer} optimiser keeps per-model state; only plain SGD is grouped"
    if cfg.bn and cfg.bn_placement != "before":
        return "batch norm after the ReLU is not grouped"
    if cfg.skip:
        return "skip connections are not grouped"
    if cfg.augment:
        return "augmentation is not grouped"
    if cfg.bn_stats != "ema":
        return "PreciseBN statistics are not grouped"
    if cfg.label_smoothing or cfg.mixup or cfg.dropout:
        return "label smoothing, MixUp and dropout are not grouped"
    if cfg.contrast or cfg.whiten != "none":  # issue 17: each run fits (and stores) its own
        return "input whitening is not grouped"
    if cfg.tta != "none":  # issue 17: the group measures its models itself, without views
        return "test-time augmentation is not grouped"
    if cfg.gemm not in ("auto", "openblas"):  # the group's products go to NumPy's OpenBLAS (accumulate_into)
        return f"the {cfg.gemm} matrix-multiply provider is not grouped"
    if cfg.precision != "fp32":  # the group's first layer is one float32 product for all its models
        return "bf16 products are not grouped"
    return None


def group_key(cfg: TrainConfig) -> str:
    """Equal for two configurations that may train in one group: every setting but FREE_FIELDS."""
    d = cfg.to_dict()
    for name in FREE_FIELDS:
        d.pop(name, None)
    return json.dumps(d, sort_keys=True)


def check_group(cfgs: list[TrainConfig]) -> None:
    """ConfigError unless ``cfgs`` may be trained together."""
    if not cfgs:
        raise ConfigError("a lock-step group needs at least one configuration")
    for cfg in cfgs:
        why = lockstep_blocker(cfg)
        if why:
            raise ConfigError(f"cannot train in lock-step: {why}")
    keys = {group_key(cfg) for cfg in cfgs}
    if len(keys) > 1:
        a, b = (json.loads(k) for k in sorted(keys)[:2])
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise ConfigError(f"cannot train in lock-step: the configurations differ in {', '.join(diff)} (only {', '.join(FREE_FIELDS)} may differ)")


def plan_units(names: list[str], configs: dict, workers: int = 1, lockstep: bool = True, max_group: int = MAX_GROUP) -> list[list[str]]:
    """Split the runs ``names`` into units of work: lock-step groups and single runs.

    Groupable runs with equal :func:`group_key` are split into at least ``workers`` groups
    (so that every worker has one) of at most ``max_group`` runs, as evenly as possible; a
    group of one is a single run. Units keep the order of ``names`` (by first member).
    """
    if not lockstep or max_group < 2:
        return [[n] for n in names]
    buckets: dict[str, list[str]] = {}
    order: list[tuple[str, str | None]] = []  # (first name, bucket key or None)
    for name in names:
        cfg = configs[name]
        if lockstep_blocker(cfg) is not None:
            order.append((name, None))
            continue
        key = group_key(cfg)
        if key not in buckets:
            buckets[key] = []
            order.append((name, key))
        buckets[key].append(name)
    units = []
    for name, key in order:
        if key is None:
            units.append([name])
            continue
        members = buckets[key]
        count = max(min(max(1, workers), len(members)), math.ceil(len(members) / max_group))
        size, extra = divmod(len(members), count)
        start = 0
        for g in range(count):
            end = start + size + (1 if g < extra else 0)
            units.append(members[start:end])
            start = end
    return units


# ---------------------------------------------------------------------------- the group


@dataclass
class Outcome:
    """What :func:`fit_lockstep` made of one model: its history, the DivergenceError that
    stopped it (None: it finished), and its share of the group's wall time."""

    history: History
    error: DivergenceError | None = None
    wall_seconds: float = 0.0


def _accumulating_gemm():
    """``acc(Xb, G, Wt)``: Wt <- Wt - Xb^T G in place through NumPy's own BLAS (the provider's
    gemm with beta = 1, called from the extension or Numba), or None without it.

    NumPy cannot accumulate a product in place; SciPy's ``gemm`` can, but may load a BLAS
    library of its own, and two OpenBLAS thread pools in one process fight over the cores
    (measured on 2 cores: lock-step epochs 2-10 times longer). NumPy's library by address
    has neither problem.
    """
    from fastnet.backends.providers import find_gemm

    table = find_gemm()
    try:  # the extension's gemm (built at install: nothing to compile) ...
        import fastnet.ext._ckernels as _ck  # not ``from fastnet.ext._ckernels import``: see fastnet/ext

        gemm = _ck.gemm
    except (ImportError, AttributeError):  # not built, or an older build
        try:  # ... else Numba's: the same BLAS call, so the same bits (not under NUMBA_DISABLE_JIT)
            from fastnet.backends import blas
        except ImportError:
            blas = None
        gemm = blas.gemm if blas is not None and blas.BLAS is not None else None
    if gemm is None or table is None:  # NumPy's product and a subtraction
        return None
    return lambda Xb, G, Wt: gemm(table, Xb, True, G, False, Wt, -1.0, 1.0)


class _Stack:
    """The first layers of the models in training, stacked column-wise (block p: the model at
    position p of ``members``), and the buffers one step needs."""

    def __init__(self, layers: list[Layer], lams: list[float], bn: bool, batch: int, dtype):
        self.m1 = layers[0].W.shape[0]
        self.bn = bn
        self.dtype = np.dtype(dtype)
        self.Wt = np.ascontiguousarray(np.concatenate([layer.W.T for layer in layers], axis=1))  # (d, M m1)
        cat = (lambda name: np.concatenate([getattr(layer, name) for layer in layers]) if getattr(layers[0], name) is not None else None)
        self.gamma, self.beta, self.b = cat("gamma"), cat("beta"), cat("b")
        self.mu_av, self.v_av = cat("mu_av"), cat("v_av")
        self.lam_col = np.repeat(np.asarray(lams, np.float64), self.m1)
        d, width = self.Wt.shape
        self.Xb = np.empty((batch, d), self.dtype)  # the gathered mini-batch
        self.S1 = np.empty((batch, width), self.dtype)  # first-layer scores of every model
        self.dX1 = np.empty((batch, width), self.dtype)  # dJ/dx^(1) of every model
        self.gemm = _accumulating_gemm()
        self.dW = np.empty((d, width), self.dtype) if self.gemm is None else None  # X^T G, scaled per column

    def step_weights(self, Xb: NDArray, G_scaled: NDArray, decay: NDArray) -> None:
        """Wt <- decay * Wt - Xb^T G_scaled (decay per column). With :func:`_accumulating_gemm`
        BLAS accumulates the product into Wt in place (beta = 1), so that X^T G never exists as
        an array of its own (two passes over Wt fewer)."""
        Wt = self.Wt
        Wt *= decay
        if self.gemm is None:
            np.matmul(Xb.T, G_scaled, out=self.dW)
            Wt -= self.dW
            return
        self.gemm(np.ascontiguousarray(Xb), np.ascontiguousarray(G_scaled), Wt)

    @property
    def size(self) -> int:
        return self.Wt.shape[1] // self.m1

    def cols(self, p: int) -> slice:
        return slice(p * self.m1, (p + 1) * self.m1)

    def layer(self, p: int) -> Layer:
        """Model p's first layer as ordinary C-contiguous arrays (copies)."""
        c = self.cols(p)
        take = (lambda a: None if a is None else a[c].copy())
        return Layer(W=np.ascontiguousarray(self.Wt[:, c].T), b=take(self.b), gamma=take(self.gamma), beta=take(self.beta),
                     mu_av=take(self.mu_av), v_av=take(self.v_av))

    def without(self, drop: list[int], lams: list[float], batch: int) -> "_Stack":
        """The stack of the models left when those at positions ``drop`` leave."""
        keep = [p for p in range(self.size) if p not in drop]
        return _Stack([self.layer(p) for p in keep], lams, self.bn, batch, self.dtype)


class _Lockstep:
    """One step and one evaluation of every model of a group (see the module docstring)."""

    def __init__(self, nets: list[Network], cfgs: list[TrainConfig], ops, batch: int):
        self.nets, self.cfgs, self.ops, self.batch = nets, cfgs, ops, batch
        self.bn, self.eps, self.alpha = nets[0].bn, nets[0].eps, nets[0].alpha
        self.members = list(range(len(nets)))
        # layers 2..k of each model as a network fed by the stack (the very Layer objects of nets)
        self.uppers = [replace(net, layers=net.layers[1:]) for net in nets]
        self.stack = _Stack([net.layers[0] for net in nets], [c.lam for c in cfgs], self.bn, batch, nets[0].dtype)
        self.forward_state = None

    def sync(self) -> None:
        """Give every member's Network its first layer as ordinary arrays (copies of the stack)."""
        for p, i in enumerate(self.members):
            self.nets[i].layers[0] = self.stack.layer(p)

    def leave(self, drop: list[int]) -> None:
        """Models ``drop`` (indices into nets) leave the group: their Networks get their first
        layers back, the stack keeps the others."""
        self.sync()
        positions = [self.members.index(i) for i in drop]
        self.members = [i for i in self.members if i not in drop]
        if self.members:
            self.stack = self.stack.without(positions, [self.cfgs[i].lam for i in self.members], self.batch)

    def gather(self, X: NDArray, idx: NDArray) -> NDArray:
        # mode="clip" (the indices are valid): with the default "raise" numpy gathers into a
        # temporary array first and copies it, which is what this buffer is to avoid
        if isinstance(X, NormalisedImages):  # uint8 images normalised as they are gathered
            return X.take(idx, self.stack.Xb)
        return np.take(X, idx, axis=0, out=self.stack.Xb, mode="clip")

    def forward(self, Xb: NDArray, yb: NDArray) -> list[float]:
        """Forward pass with batch statistics of every member (eqs 12-19); their mean batch
        losses. What the backward pass needs is kept in ``forward_state``."""
        ops, st = self.ops, self.stack
        S1 = np.matmul(Xb, st.Wt, out=st.S1)  # (12) for every model at once, no bias
        if self.bn:
            first = ops.bn_relu_forward_train(S1, st.gamma, st.beta, self.eps)  # (13)-(17), column by column
            X1 = first.X
        else:
            first = None
            X1 = ops.bias_relu_forward(S1, st.b)  # (1)-(2)
        models = [forward_train(self.uppers[i], np.ascontiguousarray(X1[:, st.cols(p)]), yb, ops) for p, i in enumerate(self.members)]  # (12)-(19), layers 2..k
        losses = [float(cache.loss.mean(dtype=np.float64)) for cache in models]
        self.forward_state = (X1, first, models)
        return losses

    def backward_update(self, Xb: NDArray, yb: NDArray, etas: list[float]) -> None:
        """Running averages (eqs 38-39), gradients (eqs 21-37) and the SGD step of every member,
        after :meth:`forward` on the same batch; ``etas[p]`` is member p's learning rate."""
        ops, st = self.ops, self.stack
        X1, first, models = self.forward_state
        self.forward_state = None
        n = Xb.shape[0]
        if self.bn:  # the stacked first layers' averages, column by column as update_running_stats
            st.mu_av = running_average(st.mu_av, first.mu, self.alpha)  # (38)
            st.v_av = running_average(st.v_av, first.v, self.alpha)  # (39)
        for p, i in enumerate(self.members):  # layers 2..k of each model, and the gradient of its block of X1
            upper, cache = self.uppers[i], models[p]
            if self.bn:
                update_running_stats(upper, cache)
            grads = backward(upper, cache, yb, self.cfgs[i].lam, ops, dX0_out=st.dX1[:, st.cols(p)])  # (21)-(37)
            sgd_step(upper.params(), grads, etas[p], ops)
        # The first layer of every model: per-column learning rates and weight decay.
        eta_col = np.repeat(np.asarray(etas, np.float64), st.m1)
        eta_t = eta_col.astype(st.dtype)
        if self.bn:
            bg = ops.bn_relu_backward(st.dX1, X1, first.S_hat, st.gamma, first.v, self.eps)  # (24)-(27) for layer 1
            G1 = bg.G
            st.gamma -= eta_t * bg.dgamma
            st.beta -= eta_t * bg.dbeta
        else:
            G1 = ops.relu_backward(st.dX1, X1)
            st.b -= eta_t * (G1.sum(axis=0) / st.dtype.type(n))  # eq (22)'s bias gradient
        # W <- (1 - 2 eta lam) W - (eta / n) X^T G: eq (20)'s gradient step, columns scaled per model
        G1 *= (eta_col / n).astype(st.dtype)
        st.step_weights(Xb, G1, (1.0 - 2.0 * eta_col * st.lam_col).astype(st.dtype))

    def evaluate(self, X: NDArray, y: NDArray, rows: NDArray | None = None) -> list[Metrics]:
        """Loss, cost and accuracy of every member in test mode (running BN statistics), as
        :func:`fastnet.model.network.evaluate` measures them (``rows``: only these rows of X and y,
        read a chunk at a time, as fit reads its training subset); the first layer of all at once."""
        ops, st = self.ops, self.stack
        n = X.shape[0] if rows is None else len(rows)
        total_loss = [0.0] * len(self.members)
        correct = [0] * len(self.members)
        for start in range(0, n, EVAL_CHUNK):
            chunk = slice(start, start + EVAL_CHUNK) if rows is None else rows[start : start + EVAL_CHUNK]
            Xc, yc = X[chunk], y[chunk]
            S1 = Xc @ st.Wt  # (5) for every model
            if self.bn:
                X1 = ops.bn_relu_forward_eval(S1, st.gamma, st.beta, st.mu_av, st.v_av, self.eps)  # (6)-(8)
            else:
                X1 = ops.bias_relu_forward(S1, st.b)
            for p, i in enumerate(self.members):
                S = forward_eval(self.uppers[i], np.ascontiguousarray(X1[:, st.cols(p)]), ops)  # (5)-(9) of layers 2..k
                total_loss[p] += float(ops.softmax_xent(S, yc).loss.sum(dtype=np.float64))
                correct[p] += int((S.argmax(axis=1) == yc).sum())
        out = []
        for p, i in enumerate(self.members):
            loss = total_loss[p] / n
            out.append(Metrics(loss, loss + l2_penalty(self.nets[i], self.cfgs[i].lam), correct[p] / n))  # nets synced by the caller
        return out


class _GroupRun:
    """What the lock-step loop keeps of its own around :class:`_Lockstep`'s step: the models
    training (``members``), those that leave when they diverge, their histories, learning
    rates, time shares, evaluation rows and checkpoints."""

    def __init__(self, nets, data, cfgs, ops, histories, sched: Schedule, checkpoints, on_leave, progress: bool):
        self.nets, self.data, self.cfgs, self.ops, self.histories, self.sched = nets, data, cfgs, ops, histories, sched
        self.lrs = [sched.lr_of(cfg) for cfg in cfgs]
        self.etas = [lr(0) for lr in self.lrs]  # each model's last learning rate (fit's eta)
        self.rows = train_eval_rows(cfgs[0], data.X_train.shape[0])
        self.outcomes = [Outcome(h) for h in histories]
        self.on_leave = on_leave
        self.group = _Lockstep(nets, cfgs, ops, cfgs[0].batch)
        self.bar = Progress(sched.total, f"train x{len(nets)}", enabled=progress)
        self.clock = Clock(histories)
        self.saver = Checkpointer(nets, checkpoints if checkpoints is not None else [None] * len(nets), self.clock, lams=[c.lam for c in cfgs])

    @property
    def members(self) -> list[int]:
        return self.group.members

    def step(self, step: Step) -> list[float]:
        """Update step ``step.t`` of every member; those whose batch loss is not finite leave
        the group as they were before it, and the others redo it without them. Returns the
        members' batch losses (of the first try)."""
        group, y = self.group, self.data.y_train
        self.etas = [lr(step.t) if i in group.members else eta for i, (lr, eta) in enumerate(zip(self.lrs, self.etas))]
        Xb, yb = group.gather(self.data.X_train, step.idx), y[step.idx]
        losses = group.forward(Xb, yb)
        bad = []
        for p, i in enumerate(group.members):
            self.histories[i].step_eta.append(self.etas[i])
            self.histories[i].step_loss.append(losses[p])
            if not math.isfinite(losses[p]):
                bad.append(i)
        if bad:
            group.sync()
            self.leave({i: locate_nonfinite(self.nets[i], Xb, yb, self.ops) for i in bad}, step.t + 1)
            if not group.members:
                return losses
            Xb = group.gather(self.data.X_train, step.idx)
            group.forward(Xb, yb)
        group.backward_update(Xb, yb, [self.etas[i] for i in group.members])
        return losses

    def leave(self, found: dict[int, str], t: int) -> None:
        """Models ``found`` (index: the array not finite) diverged at step t: they leave the group."""
        self.clock.charge("train", self.members)
        for i, where in found.items():
            self.outcomes[i].error = divergence(t, self.etas[i], where, self.cfgs[i].lam)
        self.group.leave(list(found))
        if self.on_leave is not None:
            for i in found:
                self.on_leave(i, self.outcomes[i].error)

    def record(self, epoch: float, t: int) -> None:
        """Every member's evaluation row after step t, as fit's Evaluator measures it."""
        self.clock.charge("train", self.members)
        group, d = self.group, self.data
        group.sync()
        tr = group.evaluate(d.X_train, d.y_train, self.rows)  # the subset read a chunk at a time, never copied whole
        va = group.evaluate(d.X_val, d.y_val) if len(d.y_val) else [None] * len(tr)
        for p, i in enumerate(group.members):
            row = eval_row(epoch, t, self.lrs[i](max(t - 1, 0)), tr[p], va[p])
            self.histories[i].evals.append(row)
            self.bar.log(progress_line(row, epoch, prefix=f"[{i}] "))
        self.clock.charge("eval", self.members)

    def save(self, position: Position) -> None:
        """fit's checkpoint: members with non-finite parameters leave; the others are checkpointed."""
        self.group.sync()
        bad = self.saver.nonfinite(self.members)
        if bad:
            self.leave(bad, position.t)
        self.saver.save(position, self.members)

    def close(self) -> list[Outcome]:
        """Every Network with ordinary arrays again; the outcomes, with their time shares."""
        self.bar.close()
        self.group.sync()
        self.clock.charge(None, self.members)
        for outcome, wall in zip(self.outcomes, self.clock.wall):
            outcome.wall_seconds = wall
        return self.outcomes


def check_lockstep_inputs(nets: list[Network], data, cfgs: list[TrainConfig], histories: list[History] | None) -> list[History]:
    """ConfigError unless ``nets`` are fresh networks of one group's configurations; the
    histories to fill (new ones if None)."""
    check_group(cfgs)
    histories = histories if histories is not None else [History() for _ in nets]
    if len(histories) != len(nets) or len(cfgs) != len(nets):
        raise ValueError("fit_lockstep needs one configuration and one history per network")
    X, cfg0 = data.X_train, cfgs[0]
    if cfg0.batch > X.shape[0]:
        raise ConfigError(f"batch size {cfg0.batch} is larger than the training set ({X.shape[0]} images)")
    for net in nets:
        if net.k < 2 or net.sizes != nets[0].sizes or net.dtype != X.dtype or net.bn != cfg0.bn or any(layer.mu_av is not None for layer in net.layers):
            raise ConfigError(f"fit_lockstep needs fresh networks of one architecture for inputs of {X.dtype} (and at least one hidden layer)")
    return histories


def fit_lockstep(nets: list[Network], data, cfgs: list[TrainConfig], ops, histories: list[History] | None = None, progress: bool = False, *,
                 checkpoints=None, stop: StopRequest | None = None, on_leave=None) -> list[Outcome]:
    """Train ``nets[m]`` as ``cfgs[m]`` says, all in lock-step, in place (module docstring).

    ``nets`` are fresh networks of their configurations (:func:`fastnet.training.config.new_network`);
    the configurations must form a group (:func:`check_group`). ``checkpoints[m]``, if given,
    is called with model m's :class:`Position` when and where :func:`fastnet.training.loop.fit` calls
    its ``checkpoint`` (the Network then holds its current parameters). ``stop``: as for fit;
    every model still training is checkpointed before :class:`Interrupted` is raised.
    ``on_leave(m, error)``, if given, is called as soon as model m diverges (its Network then
    holds the parameters that produced the non-finite values), while the others go on.

    Returns one :class:`Outcome` per model, in order. A DivergenceError is an outcome, not
    raised; at return every Network holds ordinary C-contiguous arrays.
    """
    histories = check_lockstep_inputs(nets, data, cfgs, histories)
    sched = Schedule(cfgs[0], data.X_train.shape[0])
    run = _GroupRun(nets, data, cfgs, ops, histories, sched, checkpoints, on_leave, progress)
    stop = stop if stop is not None else StopRequest()
    stop.deferring = True
    try:
        run.save(sched.start())
        for epoch in sched.epochs_from(sched.start()):
            if not run.members:
                break
            for step in epoch:
                if stop.signum is not None:
                    run.save(step.position)
                    raise Interrupted(stop.signum, step.t)
                if step.t >= sched.total:
                    break
                losses = run.step(step)
                if not run.members:
                    break
                if due_within_epoch(cfgs[0], step.t + 1, sched.total):
                    run.record((step.t + 1) / sched.per_epoch, step.t + 1)
                run.bar.update(step.t + 1, f"loss {min(losses):.3f}")
            if not run.members:
                break
            run.record(min(epoch.index + 1, epoch.end.t / sched.per_epoch), epoch.end.t)
            run.save(epoch.end)
            if stop.signum is not None:
                raise Interrupted(stop.signum, epoch.end.t)
    finally:
        stop.deferring = False
        outcomes = run.close()
    return outcomes
