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
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError, DivergenceError
from .engine import fused_step_for
from .network import DEFAULT_ALPHA, DEFAULT_EPS, INITS, PLACEMENTS, Network, backward, check_architecture, evaluate, forward_train, init_network, update_running_stats
from .optim import OPTIMIZERS, check_adam, check_cyclic, check_schedule, learning_rate, make_optimizer, sgd_step
from .progress import Progress
from .threads import blas_thread_count, idle_cores, numba_threads


@dataclass
class TrainConfig:
    """Every hyper-parameter of a run. Defaults: the assignment's Exercise 3 setting."""

    hidden: tuple[int, ...] = (50, 50)
    bn: bool = True
    init: str = "he"
    sigma: float | None = None
    lam: float = 0.005
    eta_min: float = 1e-5
    eta_max: float = 1e-1
    n_s: int | None = None  # None: 5 * n_train / batch, i.e. 2250 for 45,000 images
    cycles: int = 2
    batch: int = 100
    alpha: float = DEFAULT_ALPHA
    eps: float = DEFAULT_EPS
    seed: int = 0
    dtype: str = "float32"
    backend: str = "auto"
    split: str = "a3"
    n_val: int = 5000
    eval_every: int = 0  # also evaluate every this many steps (0: only at the end of epochs)
    # ---- bonus (Exercise 4); see the module docstring
    bn_placement: str = "before"  # "after": batch norm after the ReLU
    skip: bool = False  # skip connections, eqs (40)-(41)
    optimizer: str = "sgd"  # or "adam"
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    schedule: str = "cyclic"  # cyclic | step | exponential | cosine
    decay_rate: float = 0.1
    decay_steps: int | None = None  # None: optim.default_decay_steps
    warmup: int = 0
    augment: bool = False  # random flips and translations of the training images
    augment_shift: int = 3  # largest translation, pixels
    bn_stats: str = "ema"  # or "precise": PreciseBN population statistics
    precise_every: int = 0  # precise: also re-estimate and evaluate every this many steps
    precise_images: int = 10_000  # precise: training images per estimate
    eval_train_images: int = 0  # measure training loss/accuracy on this many training images (0: all)

    def validate(self) -> "TrainConfig":
        """Refuse impossible settings before any work is done; returns self.

        Values may come from a JSON file, so their types are checked first: ``{"lam": "x"}``
        gets a sentence, not a TypeError deep inside the training loop.
        """
        self._check_types()
        if not self.hidden or any(int(m) < 1 for m in self.hidden):
            raise ConfigError(f"hidden layer sizes must be positive integers, got {list(self.hidden)}")
        if self.init not in INITS:
            raise ConfigError(f"unknown initialisation {self.init!r}; choose one of {', '.join(INITS)}")
        if self.init == "normal" and (self.sigma is None or not self.sigma > 0):
            raise ConfigError("--init normal needs a positive --sigma")
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ConfigError(f"lambda must be a non-negative number, got {self.lam}")
        check_cyclic(self.eta_min, self.eta_max, self.n_s if self.n_s is not None else 1, self.cycles)
        if self.batch < 2 and self.bn:
            raise ConfigError(f"batch norm needs mini-batches of at least 2 samples, got --batch {self.batch}")
        if self.batch < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch}")
        if not 0 <= self.alpha < 1:
            raise ConfigError(f"alpha must be in [0, 1), got {self.alpha}")
        if not self.eps > 0:
            raise ConfigError(f"eps must be positive, got {self.eps}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.eval_every < 0:
            raise ConfigError(f"eval_every must be non-negative, got {self.eval_every}")
        if self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed}")
        if self.backend not in BACKEND_NAMES:
            raise ConfigError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
        self._validate_bonus()
        return self

    def _validate_bonus(self) -> None:
        """The bonus settings (Exercise 4): refused before any work, one sentence each."""
        if self.bn_placement not in PLACEMENTS:
            raise ConfigError(f"unknown batch-norm placement {self.bn_placement!r}; choose one of {', '.join(PLACEMENTS)}")
        check_architecture([1, *self.hidden, 2], self.bn, self.bn_placement, self.skip)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.optimizer == "adam":
            check_adam(self.beta1, self.beta2, self.adam_eps, self.eta_min, self.eta_max)
        total = 2 * self.n_s * self.cycles if self.n_s is not None else None
        check_schedule(self.schedule, self.decay_rate, self.decay_steps, self.warmup, total)
        if not 0 <= self.augment_shift <= 8:
            raise ConfigError(f"augment_shift must be 0..8 pixels, got {self.augment_shift}")
        if self.bn_stats not in BN_STATS:
            raise ConfigError(f"unknown bn_stats {self.bn_stats!r}; choose one of {', '.join(BN_STATS)}")
        if self.bn_stats == "precise" and not self.bn:
            raise ConfigError("--bn-stats precise re-estimates batch-norm statistics; the network has no batch norm (--no-bn)")
        if self.precise_every < 0:
            raise ConfigError(f"precise_every must be non-negative, got {self.precise_every}")
        if self.eval_train_images < 0:
            raise ConfigError(f"eval_train_images must be non-negative (0: all), got {self.eval_train_images}")
        if self.bn_stats == "precise" and self.precise_images < max(2, self.batch):
            raise ConfigError(f"precise_images must be at least one batch ({self.batch}), got {self.precise_images}")

    def _check_types(self) -> None:
        """ConfigError naming the first field whose value has the wrong type or is not finite."""
        def bad(name, want):
            value = getattr(self, name)
            return ConfigError(f"{name} must be {want}, got {json_repr(value)}")

        hidden = self.hidden
        if not isinstance(hidden, (tuple, list)) or not all(_is_int(m) for m in hidden):
            raise bad("hidden", "a list of positive integers such as [50, 50]")
        self.hidden = tuple(int(m) for m in hidden)
        for f in fields(self):
            name, value = f.name, getattr(self, f.name)
            kind = _FIELD_KINDS.get(name)
            if kind is None or (value is None and name in _OPTIONAL):
                continue
            if kind is bool and not isinstance(value, bool):
                raise bad(name, "true or false")
            if kind is int and not _is_int(value):
                raise bad(name, "a whole number")
            if kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise bad(name, "a number")
                if not math.isfinite(value):
                    raise bad(name, "a finite number")
                setattr(self, name, float(value))
            if kind is str and not isinstance(value, str):
                raise bad(name, "a string")

    def resolved_n_s(self, n_train: int) -> int:
        return int(self.n_s) if self.n_s is not None else max(1, 5 * n_train // self.batch)

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict; bonus settings only where they differ from their
        defaults (so the assignment's runs keep the configuration they always had)."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        for name, default in BONUS_DEFAULTS.items():
            if d[name] == default and type(d[name]) is type(default):
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        return cls(**d)  # types are checked by validate()


_FIELD_KINDS = {"bn": bool, "init": str, "sigma": float, "lam": float, "eta_min": float, "eta_max": float,
                "n_s": int, "cycles": int, "batch": int, "alpha": float, "eps": float, "seed": int,
                "dtype": str, "backend": str, "split": str, "n_val": int, "eval_every": int,
                "bn_placement": str, "skip": bool, "optimizer": str, "beta1": float, "beta2": float, "adam_eps": float,
                "schedule": str, "decay_rate": float, "decay_steps": int, "warmup": int, "augment": bool,
                "augment_shift": int, "bn_stats": str, "precise_every": int, "precise_images": int, "eval_train_images": int}
_OPTIONAL = ("sigma", "n_s", "decay_steps")
BONUS_FIELDS = ("bn_placement", "skip", "optimizer", "beta1", "beta2", "adam_eps", "schedule", "decay_rate", "decay_steps",
                "warmup", "augment", "augment_shift", "bn_stats", "precise_every", "precise_images", "eval_train_images")
BONUS_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.name in BONUS_FIELDS}
BN_STATS = ("ema", "precise")
BACKEND_NAMES = ("auto", "numpy", "numba", "cython")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def json_repr(value) -> str:
    """A value as it would appear in a JSON file, cut short (a hostile file can hold anything)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class History:
    """What a run measured. ``evals``: one row per evaluation; ``steps``: one per update."""

    evals: list[dict] = field(default_factory=list)
    step_eta: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.step_loss)


def new_network(cfg: TrainConfig, d: int, K: int) -> Network:
    """The network a configuration describes, initialised from its seed."""
    sizes = [d, *cfg.hidden, K]
    n_params = sum(a * b for a, b in zip(sizes, sizes[1:]))
    need = 4 * n_params * np.dtype(cfg.dtype).itemsize  # parameters, gradients, float64 draws
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        have = None
    if have and need > have:
        raise ConfigError(f"a network with hidden layers {list(cfg.hidden)} has {n_params:,} weights and needs about {need / 2**30:.0f} GB, more than this machine's {have / 2**30:.0f} GB; choose smaller --hidden sizes")
    rng = np.random.default_rng([cfg.seed, 1])  # its own stream: independent of the shuffling
    return init_network(d, cfg.hidden, K, bn=cfg.bn, init=cfg.init, sigma=cfg.sigma, dtype=cfg.dtype, eps=cfg.eps, alpha=cfg.alpha, rng=rng,
                        bn_placement=cfg.bn_placement, skip=cfg.skip)


def new_optimizer(cfg: TrainConfig, net: Network):
    """The optimiser a configuration describes, fresh (Adam's moments at zero)."""
    return make_optimizer(cfg.optimizer, net.params(), cfg.beta1, cfg.beta2, cfg.adam_eps)


def schedule_fn(cfg: TrainConfig, n_s: int, total: int):
    """The learning rate as a function of the update step t (from 0), for this run."""
    return lambda t: learning_rate(t, cfg.schedule, cfg.eta_min, cfg.eta_max, n_s, total, cfg.decay_rate, cfg.decay_steps, cfg.warmup)


@dataclass
class Position:
    """Where a run stands in its schedule: with the parameters and history, enough to go on.

    ``t`` update steps are done; ``epoch`` (0-based) is the epoch in progress and ``j`` the
    mini-batches of it already done (``j = 0``: it has not started; ``epoch`` = the number of
    epochs: the schedule is complete). ``rng_state`` is the shuffling generator's
    ``bit_generator.state`` before ``epoch``'s permutation was drawn, so that the permutation
    can be drawn again.
    """

    t: int = 0
    epoch: int = 0
    j: int = 0
    rng_state: dict | None = None


class StopRequest:
    """A flag a signal handler sets; :func:`fit` looks at it between two steps.

    ``signum`` is the signal received (None: none yet). While ``deferring`` is true (fit sets
    it around its loop) a handler only records the signal, so the step in flight finishes and
    the state can be checkpointed; otherwise, or at a second signal, it stops at once.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = False


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run. ``exit_code`` is 128 + the signal number (130, 143);
    ``message`` is the line the command line prints; ``step`` the step checkpointed, if any."""

    def __init__(self, signum: int, step: int | None = None, message: str | None = None):
        super().__init__(signum)
        self.signum, self.step = signum, step
        self.exit_code = 128 + int(signum)
        self.message = message or (f"fastnet: interrupted at step {step}" if step is not None else "fastnet: interrupted")

    def __str__(self) -> str:
        return self.message


def train_step(net: Network, X: NDArray, y: NDArray, lam: float, eta: float, ops, optimizer=None, t: int = 0) -> float:
    """One update of mini-batch gradient descent; returns the batch's mean cross-entropy.

    Forward with batch statistics, running averages (eqs 38-39), backward (eqs 21-37), step
    (``optimizer``: an :mod:`fastnet.optim` optimiser, plain SGD if None; ``t``: the update
    step, from 0, which Adam's bias correction needs).
    A non-finite loss is returned without any update, so that the network stays as it was
    when it produced that loss and :func:`locate_nonfinite` can say what went wrong.
    """
    cache = forward_train(net, X, y, ops)
    loss = float(cache.loss.mean(dtype=np.float64))
    if not math.isfinite(loss):
        return loss
    if net.bn:
        update_running_stats(net, cache)
    grads = backward(net, cache, y, lam, ops)
    if optimizer is None:
        sgd_step(net.params(), grads, eta, ops)
    else:
        optimizer.step(net.params(), grads, eta, t, ops)
    return loss


def divergence(t: int, eta: float, where: str) -> DivergenceError:
    """The error a run stops with when ``where`` (an array, a layer's output) is not finite at step t."""
    return DivergenceError(f"training diverged at step {t} (learning rate {eta:.3g}): {where} is not finite; lower --eta-max or raise --lam")


def _augmenter(cfg: TrainConfig):
    """``augment(Xb, t)``: the flips and translations of step t, from a generator seeded by (seed, t)."""
    from .augment import augment_batch

    def augment(Xb: NDArray, t: int) -> NDArray:
        return augment_batch(Xb, np.random.default_rng([cfg.seed, 3, t]), cfg.augment_shift)

    return augment


class Stepper:
    """How :func:`fit` takes a step: ``stepper(idx, eta, t)`` trains on rows ``idx`` of (X, y).

    The compiled whole step of :mod:`fastnet.engine` when the backend has one and the
    configuration qualifies (``self.fused``), else :func:`train_step` op by op; the two compute
    the same step. With the fused step and BLAS given two threads, each step runs on
    two cores (``self.cores == 2``: the step's own split, BLAS on one thread in each; the next
    batch, ``next_idx``, gathered during the step); with BLAS on one thread and a core it
    leaves free, the next batch is gathered in a second thread while a step runs
    (``self.prefetch``).
    ``augment(Xb, t)``, if given, transforms each gathered batch.
    ``self.Xb`` is the last batch trained on. Call :meth:`close` when training stops (it gives
    the network ordinary C-contiguous arrays back). Benchmarks use it to time what fit runs.
    """

    def __init__(self, net: Network, X: NDArray, y: NDArray, lam: float, ops, optimizer=None, augment=None):
        self.net, self.X, self.y, self.lam, self.ops, self.augment = net, X, y, lam, ops, augment
        self.optimizer = optimizer if optimizer is not None and optimizer.name != "sgd" else None
        self.fused = fused_step_for(net, ops, optimizer=optimizer.name if optimizer is not None else "sgd")
        if self.fused is not None:
            self.fused.check_labels(y)  # once here; each step then trusts the gathered labels
        # Two cores for the run (BLAS threads, set by --threads or the idle cores): the fused
        # step splits itself over them, faster than OpenBLAS's two threads with the gather and
        # the small layers between them (scripts/bench_peers.py; measured on two cores only,
        # so more threads keep OpenBLAS's own). One: with a core idle, the next batch is
        # gathered in a second thread (beside BLAS threads or other processes on every core
        # that thread only slows the step down).
        threads = blas_thread_count()
        compiled = self.fused is not None and self.augment is None
        self.cores = 2 if compiled and threads == 2 and numba_threads() >= 2 else 1
        self.prefetch = compiled and self.cores == 1 and threads < idle_cores()
        if self.cores == 2:
            self.fused.use_cores(2)
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
        ahead = (X, y, next_idx) if next_idx is not None and len(next_idx) == len(idx) else None
        if fused is not None and self.augment is None:
            self.Xb, yb = fused.gather(X, y, idx)  # into the step's own buffers
            if self.cores == 2:  # gathered during the step
                return fused.step(self.Xb, yb, self.lam, eta, checked=False, ahead=ahead)
            if ahead is not None and self.prefetch:
                fused.prefetch(*ahead)
            return fused.step(self.Xb, yb, self.lam, eta, checked=False)
        self.Xb = X[idx] if self.augment is None else self.augment(X[idx], t)
        if fused is not None:
            return fused.step(self.Xb, y[idx], self.lam, eta)
        # SGD is stateless: train_step's default; an optimiser with state gets itself and t
        step_kw = {} if self.optimizer is None else {"optimizer": self.optimizer, "t": t}
        return train_step(self.net, self.Xb, y[idx], self.lam, eta, self.ops, **step_kw)

    def close(self) -> None:
        if self.fused is not None:
            self.fused.detach()


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
            from .bn_stats import precise_estimate, using_stats

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

    stepper = Stepper(net, X, y, cfg.lam, ops, optimizer, _augmenter(cfg) if cfg.augment else None)
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
    from .bn_stats import install_stats, precise_estimate

    out = {}
    for part, Xp, yp in (("val", data.X_val, data.y_val), ("test", data.X_test, data.y_test)):
        if len(yp):
            m = evaluate(net, Xp, yp, cfg.lam, ops)
            out[f"{part}_accuracy_ema"], out[f"{part}_loss_ema"] = m.accuracy, m.loss
    n = data.X_train.shape[0]
    install_stats(net, precise_estimate(net, data.X_train, cfg, ops, 2 * cfg.resolved_n_s(n) * cfg.cycles))
    return out
