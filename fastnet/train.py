"""The mini-batch training loop: shuffling, cyclic learning rate, BN statistics, evaluation.

``fit`` trains a network in place and fills a :class:`History` as it goes, so that a caller
that catches an error (divergence, Ctrl-C) still holds everything measured so far.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError, DivergenceError
from .network import DEFAULT_ALPHA, DEFAULT_EPS, INITS, Network, backward, evaluate, forward_train, init_network, update_running_stats
from .optim import check_cyclic, cyclic_lr, sgd_step
from .progress import Progress


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

    def validate(self) -> "TrainConfig":
        """Refuse impossible settings before any work is done; returns self."""
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
        return self

    def resolved_n_s(self, n_train: int) -> int:
        return int(self.n_s) if self.n_s is not None else max(1, 5 * n_train // self.batch)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


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
    rng = np.random.default_rng([cfg.seed, 1])  # its own stream: independent of the shuffling
    return init_network(d, cfg.hidden, K, bn=cfg.bn, init=cfg.init, sigma=cfg.sigma, dtype=cfg.dtype, eps=cfg.eps, alpha=cfg.alpha, rng=rng)


def train_step(net: Network, X: NDArray, y: NDArray, lam: float, eta: float, ops) -> float:
    """One update of mini-batch gradient descent; returns the batch's mean cross-entropy.

    Forward with batch statistics, running averages (eqs 38-39), backward (eqs 21-37), step.
    """
    cache = forward_train(net, X, y, ops)
    if net.bn:
        update_running_stats(net, cache)
    grads = backward(net, cache, y, lam, ops)
    sgd_step(net.params(), grads, eta, ops)
    return float(cache.loss.mean(dtype=np.float64))


def first_nonfinite(net: Network) -> str | None:
    """The name of the first parameter or running statistic holding NaN or inf, if any."""
    for name, a in {**net.params(), **net.running_stats()}.items():
        if not np.isfinite(a).all():
            return name
    return None


def fit(net: Network, data, cfg: TrainConfig, ops, history: History | None = None, progress: bool = True) -> History:
    """Train ``net`` in place on ``data`` (a fastnet.data.Dataset) as ``cfg`` says.

    The training set is reshuffled every epoch; the cyclic learning rate is updated every step;
    train and validation loss, cost and accuracy are measured (running BN statistics) at the
    end of every epoch, every ``cfg.eval_every`` steps if set, and after the last step.
    Raises DivergenceError at the first non-finite loss or parameter; ``history`` keeps what
    was measured until then.
    """
    history = history if history is not None else History()
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    if cfg.batch > n:
        raise ConfigError(f"batch size {cfg.batch} is larger than the training set ({n} images)")
    n_s = cfg.resolved_n_s(n)
    total = 2 * n_s * cfg.cycles
    per_epoch = n // cfg.batch
    epochs = math.ceil(total / per_epoch)
    rng = np.random.default_rng([cfg.seed, 2])
    bar = Progress(total, "train", enabled=progress)
    t = 0
    start = time.perf_counter()

    def record(epoch: float) -> None:
        nonlocal start
        history.train_seconds += time.perf_counter() - start
        t0 = time.perf_counter()
        tr = evaluate(net, X, y, cfg.lam, ops)
        va = evaluate(net, data.X_val, data.y_val, cfg.lam, ops) if len(data.y_val) else None
        history.eval_seconds += time.perf_counter() - t0
        row = {"epoch": round(epoch, 4), "step": t, "eta": cyclic_lr(max(t - 1, 0), cfg.eta_min, cfg.eta_max, n_s),
               "train_loss": tr.loss, "train_cost": tr.cost, "train_accuracy": tr.accuracy,
               "val_loss": va.loss if va else math.nan, "val_cost": va.cost if va else math.nan,
               "val_accuracy": va.accuracy if va else math.nan}
        history.evals.append(row)
        bar.log(f"epoch {epoch:5.2f}  step {t:6d}  loss {tr.loss:.4f}  cost {tr.cost:.4f}  "
                f"train acc {tr.accuracy:.4f}  val acc {row['val_accuracy']:.4f}")
        start = time.perf_counter()

    try:
        for epoch in range(epochs):
            perm = rng.permutation(n)
            for j in range(per_epoch):
                if t >= total:
                    break
                idx = perm[j * cfg.batch : (j + 1) * cfg.batch]
                eta = cyclic_lr(t, cfg.eta_min, cfg.eta_max, n_s)
                loss = train_step(net, X[idx], y[idx], cfg.lam, eta, ops)
                history.step_eta.append(eta)
                history.step_loss.append(loss)
                t += 1
                if not math.isfinite(loss) or (t % per_epoch == 0 and first_nonfinite(net)):
                    where = first_nonfinite(net) or "the loss"
                    raise DivergenceError(f"training diverged at step {t} (learning rate {eta:.3g}): {where} is not finite; lower --eta-max or raise --lam")
                if cfg.eval_every and t % cfg.eval_every == 0 and t < total:
                    record(t / per_epoch)
                bar.update(t, f"loss {loss:.3f} eta {eta:.2e}")
            record(min(epoch + 1, t / per_epoch))
    finally:
        bar.close()
    return history
