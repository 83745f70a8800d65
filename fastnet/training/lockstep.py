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
  layer's output: :func:`fastnet.network.forward_train`, ``backward`` (which also gives the
  gradient of that block) and :func:`fastnet.optim.sgd_step`, as a standalone step runs them;
* the first layer's update of eq (20)'s gradient step with the per-model scalars as
  per-column factors: W <- (1 - 2 eta_m lam_m) W - (eta_m / n) G^T X.

Each model ends as a standalone :func:`fastnet.train.fit` with its own configuration ends: the
same evaluation rows (respecting ``eval_every`` and ``eval_train_images``), running BN averages
(eqs 38-39), per-step losses and learning rates, checkpoints at the same positions. Not bit for
bit: the stacked products may sum in another order than the per-model ones, and the fused
update rounds differently from ``dW = G^T X / n + 2 lam W; W -= eta dW``; the differences are of
the order of the unit roundoff per step (tests/test_lockstep.py states the tolerances).

**Divergence.** A model whose batch loss is not finite leaves the group at that step, exactly as
``fit`` stops: that step's learning rate and loss are in its history, its parameters are those
that produced the loss, and its error names the step, the rate and the first non-finite array.
The others go on (the step is redone for them without it). Likewise for non-finite parameters
found at the end of an epoch.

**Grouping.** :func:`lockstep_blocker` says why a configuration cannot be trained in a group
(plain SGD only, batch norm before the ReLU or none, no skip connections, augmentation or
PreciseBN); :func:`group_key` is equal for configurations that may share a group (everything
but :data:`FREE_FIELDS`); :func:`plan_units` splits a sweep's pending runs into groups and
single runs. :func:`run_group_to_folders` writes each model's run folder as
:func:`fastnet.runs.run_to_folder` would, with ``"lockstep"`` in its metrics.

**Time.** The models share every product, so the group's time cannot be attributed finer than
evenly: each interval of the group's loop (training, evaluation, checkpoints) is divided by the
number of models in the group during it. A model's ``train_seconds``, ``eval_seconds`` and
``wall_seconds`` are its shares.
"""
from __future__ import annotations

import json
import math
import time
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
from fastnet.model.optim import check_schedule, sgd_step
from fastnet.training.config import TrainConfig, schedule_fn
from fastnet.training.state import History, Interrupted, Position, StopRequest
from fastnet.training.stepper import divergence, first_nonfinite, locate_nonfinite
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
    """``acc(Xb, G, Wt)``: Wt <- Wt - Xb^T G in place through NumPy's own BLAS (the fused
    step's :func:`fastnet.backends.numba_step.gemm`, beta = 1), or None without it.

    NumPy cannot accumulate a product in place; SciPy's ``gemm`` can, but may load a BLAS
    library of its own, and two OpenBLAS thread pools in one process fight over the cores
    (measured on 2 cores: lock-step epochs 2-10 times longer). NumPy's library by address
    has neither problem.
    """
    try:
        from fastnet.backends import numba_step
    except ImportError:  # no Numba: NumPy's product and a subtraction
        return None
    if numba_step.BLAS is None:
        return None
    return lambda Xb, G, Wt: numba_step.gemm(numba_step.BLAS, Xb, True, G, False, Wt, -1.0, 1.0)


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
        :func:`fastnet.network.evaluate` measures them (``rows``: only these rows of X and y,
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


def fit_lockstep(nets: list[Network], data, cfgs: list[TrainConfig], ops, histories: list[History] | None = None, progress: bool = False, *,
                 checkpoints=None, stop: StopRequest | None = None, on_leave=None) -> list[Outcome]:
    """Train ``nets[m]`` as ``cfgs[m]`` says, all in lock-step, in place (module docstring).

    ``nets`` are fresh networks of their configurations (:func:`fastnet.train.new_network`);
    the configurations must form a group (:func:`check_group`). ``checkpoints[m]``, if given,
    is called with model m's :class:`Position` when and where :func:`fastnet.train.fit` calls
    its ``checkpoint`` (the Network then holds its current parameters). ``stop``: as for fit;
    every model still training is checkpointed before :class:`Interrupted` is raised.
    ``on_leave(m, error)``, if given, is called as soon as model m diverges (its Network then
    holds the parameters that produced the non-finite values), while the others go on.

    Returns one :class:`Outcome` per model, in order. A DivergenceError is an outcome, not
    raised; at return every Network holds ordinary C-contiguous arrays.
    """
    check_group(cfgs)
    M = len(nets)
    histories = histories if histories is not None else [History() for _ in nets]
    if len(histories) != M or len(cfgs) != M:
        raise ValueError("fit_lockstep needs one configuration and one history per network")
    cfg0 = cfgs[0]
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    if cfg0.batch > n:
        raise ConfigError(f"batch size {cfg0.batch} is larger than the training set ({n} images)")
    for net in nets:
        if net.k < 2 or net.sizes != nets[0].sizes or net.dtype != X.dtype or net.bn != cfg0.bn or any(layer.mu_av is not None for layer in net.layers):
            raise ConfigError(f"fit_lockstep needs fresh networks of one architecture for inputs of {X.dtype} (and at least one hidden layer)")
    n_s = cfg0.resolved_n_s(n)
    total = 2 * n_s * cfg0.cycles
    check_schedule(cfg0.schedule, cfg0.decay_rate, cfg0.decay_steps, cfg0.warmup, total)
    lrs = [schedule_fn(cfg, n_s, total) for cfg in cfgs]
    train_eval = np.sort(np.random.default_rng([cfg0.seed, 7]).permutation(n)[: cfg0.eval_train_images]) if 0 < cfg0.eval_train_images < n else None
    per_epoch = n // cfg0.batch
    epochs = math.ceil(total / per_epoch)
    rng = np.random.default_rng([cfg0.seed, 2])
    outcomes = [Outcome(h) for h in histories]
    group = _Lockstep(nets, cfgs, ops, cfg0.batch)
    bar = Progress(total, f"train x{M}", enabled=progress)
    stop = stop if stop is not None else StopRequest()
    t = 0
    etas = [lr(0) for lr in lrs]  # each model's last learning rate (fit's eta)
    mark = time.perf_counter()

    def charge(kind: str | None) -> None:
        """Divide the time since the last charge evenly over the models in the group."""
        nonlocal mark
        now = time.perf_counter()
        share = (now - mark) / max(1, len(group.members))
        for i in group.members:
            if kind == "train":
                histories[i].train_seconds += share
            elif kind == "eval":
                histories[i].eval_seconds += share
            outcomes[i].wall_seconds += share
        mark = now

    def diverge(found: dict[int, str]) -> None:
        charge("train")
        for i, where in found.items():
            outcomes[i].error = divergence(t, etas[i], where)
        group.leave(list(found))
        if on_leave is not None:
            for i in found:
                on_leave(i, outcomes[i].error)

    def record(epoch: float) -> None:
        charge("train")
        group.sync()
        tr = group.evaluate(X, y, train_eval)  # the subset read a chunk at a time, never copied whole
        va = group.evaluate(data.X_val, data.y_val) if len(data.y_val) else [None] * len(tr)
        for p, i in enumerate(group.members):
            row = {"epoch": round(epoch, 4), "step": t, "eta": lrs[i](max(t - 1, 0)),
                   "train_loss": tr[p].loss, "train_cost": tr[p].cost, "train_accuracy": tr[p].accuracy,
                   "val_loss": va[p].loss if va[p] else math.nan, "val_cost": va[p].cost if va[p] else math.nan,
                   "val_accuracy": va[p].accuracy if va[p] else math.nan}
            histories[i].evals.append(row)
            bar.log(f"[{i}] epoch {epoch:5.2f}  step {t:6d}  loss {tr[p].loss:.4f}  cost {tr[p].cost:.4f}  "
                    f"train acc {tr[p].accuracy:.4f}  val acc {row['val_accuracy']:.4f}")
        charge("eval")

    def save(epoch: int, j: int, rng_state: dict) -> None:
        """fit's save(): non-finite parameters end a model; the others are checkpointed."""
        charge("train")
        group.sync()
        bad = {i: where for i in group.members if (where := first_nonfinite(nets[i]))}
        if bad:
            diverge(bad)
        if checkpoints is not None:
            for i in group.members:
                if checkpoints[i] is not None:
                    checkpoints[i](Position(t, epoch, j, rng_state))
        charge(None)

    stop.deferring = True
    try:
        save(0, 0, rng.bit_generator.state)
        for epoch in range(epochs):
            if not group.members:
                break
            rng_state = rng.bit_generator.state
            perm = rng.permutation(n)
            for j in range(per_epoch):
                if stop.signum is not None:
                    save(epoch, j, rng_state)
                    raise Interrupted(stop.signum, t)
                if t >= total:
                    break
                idx = perm[j * cfg0.batch : (j + 1) * cfg0.batch]
                etas = [lrs[i](t) if i in group.members else etas[i] for i in range(M)]
                Xb, yb = group.gather(X, idx), y[idx]
                losses = group.forward(Xb, yb)
                t += 1
                bad = {}
                for p, i in enumerate(group.members):
                    histories[i].step_eta.append(etas[i])
                    histories[i].step_loss.append(losses[p])
                    if not math.isfinite(losses[p]):
                        bad[i] = p
                if bad:  # those models stop here, as they were before the step; the others redo it
                    group.sync()
                    diverge({i: locate_nonfinite(nets[i], Xb, yb, ops) for i in bad})
                    if not group.members:
                        break
                    Xb = group.gather(X, idx)
                    group.forward(Xb, yb)
                group.backward_update(Xb, yb, [etas[i] for i in group.members])
                if cfg0.eval_every and t % cfg0.eval_every == 0 and t < total:
                    record(t / per_epoch)
                bar.update(t, f"loss {min(losses):.3f}")
            if not group.members:
                break
            record(min(epoch + 1, t / per_epoch))
            save(epoch + 1, 0, rng.bit_generator.state)
            if stop.signum is not None:
                raise Interrupted(stop.signum, t)
    finally:
        stop.deferring = False
        bar.close()
        group.sync()
        charge(None)
    return outcomes
