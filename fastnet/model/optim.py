"""Learning-rate schedules and parameter updates.

The cyclic schedule is a pure function of the update step ``t`` (counted from 0 over the whole
run), as in the assignment: it rises linearly from eta_min to eta_max over n_s steps, falls
back over the next n_s steps, and repeats; one cycle is 2 n_s steps.

Bonus (Exercise 4.2a): learning-rate decay and Adam.

* :func:`learning_rate` -- every schedule, a pure function of ``t`` (so a resumed run takes
  the same rates): ``cyclic`` (above), ``step`` (eta_max times decay_rate every decay_steps
  steps), ``exponential`` (eta_max * decay_rate^(t / decay_steps), smoothly), ``cosine``
  (from eta_max down to eta_min over the run). The decaying schedules may start with a
  linear warm-up from eta_min to eta_max over ``warmup`` steps. Whatever the schedule, a run
  is 2 n_s cycles update steps long.
* :class:`SGD` and :class:`Adam` -- the update rules behind one interface: ``step(params,
  grads, eta, t, ops)`` with ``t`` the update step counted from 0, and ``state()`` /
  ``load_state()`` for the checkpoint (Adam's moment estimates; SGD has none). Adam's bias
  corrections use t + 1, the number of updates made including this one, so they are fixed by
  the position in the run and need not be stored.

Issue 17: decoupled weight decay (:func:`decays_apart`, :func:`decoupled_decay`).
"""
from __future__ import annotations

import math

import numpy as np

from fastnet.errors import ConfigError

SCHEDULES = ("cyclic", "step", "exponential", "cosine")
OPTIMIZERS = ("sgd", "adam")
#: Adam moves every weight by about eta per step whatever its gradient's scale (the update is
#: m_hat / sqrt(v_hat), of size ~1), so the SGD range (eta_max = 0.1) would wreck a network.
ADAM_MAX_ETA = 1e-2


def cyclic_lr(t: int, eta_min: float, eta_max: float, n_s: int) -> float:
    """The cyclic learning rate at update step t (triangular, period 2 n_s)."""
    phase = t % (2 * n_s)
    if phase <= n_s:
        return eta_min + phase / n_s * (eta_max - eta_min)
    return eta_max - (phase - n_s) / n_s * (eta_max - eta_min)


def check_cyclic(eta_min: float, eta_max: float, n_s: int, cycles: int) -> None:
    """Refuse an impossible cyclic schedule before any work is done."""
    if not (eta_min >= 0 and eta_max > 0):
        raise ConfigError(f"learning rates must be non-negative and eta_max positive (eta_min={eta_min}, eta_max={eta_max})")
    if eta_min > eta_max:
        raise ConfigError(f"eta_min ({eta_min}) is larger than eta_max ({eta_max})")
    if n_s < 1:
        raise ConfigError(f"n_s must be at least 1, got {n_s}")
    if cycles < 1:
        raise ConfigError(f"cycles must be at least 1, got {cycles}")


def default_decay_steps(schedule: str, total: int) -> int:
    """decay_steps when not given: ``step`` decays twice (three plateaus), ``exponential``
    reaches eta_max * decay_rate at the last step."""
    return max(1, total // 3) if schedule == "step" else max(1, total)


def learning_rate(t: int, schedule: str, eta_min: float, eta_max: float, n_s: int, total: int,
                  decay_rate: float = 0.1, decay_steps: int | None = None, warmup: int = 0) -> float:
    """The learning rate of update step t (from 0) of a run of ``total`` steps.

    cyclic : :func:`cyclic_lr` (``warmup`` must be 0: the cycle rises from eta_min itself).
    step : eta_max * decay_rate ** floor(t' / decay_steps).
    exponential : eta_max * decay_rate ** (t' / decay_steps).
    cosine : eta_min + (eta_max - eta_min) (1 + cos(pi t' / (total - warmup))) / 2.

    t' = t - warmup; during the first ``warmup`` steps the rate rises linearly from eta_min to
    eta_max. decay_steps defaults to :func:`default_decay_steps`.
    """
    if schedule == "cyclic":
        return cyclic_lr(t, eta_min, eta_max, n_s)
    if t < warmup:
        return eta_min + t / warmup * (eta_max - eta_min)
    t -= warmup
    if schedule == "cosine":
        span = max(1, total - warmup)
        return eta_min + (eta_max - eta_min) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
    steps = decay_steps if decay_steps is not None else default_decay_steps(schedule, total - warmup)
    if schedule == "step":
        return eta_max * decay_rate ** (t // steps)
    if schedule == "exponential":
        return eta_max * decay_rate ** (t / steps)
    raise ConfigError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def check_schedule(schedule: str, decay_rate: float, decay_steps: int | None, warmup: int, total: int | None) -> None:
    """Refuse an impossible schedule (``total``: the run's length in steps, if known yet)."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if not 0 < decay_rate <= 1:
        raise ConfigError(f"decay_rate must be in (0, 1], got {decay_rate}")
    if decay_steps is not None and decay_steps < 1:
        raise ConfigError(f"decay_steps must be at least 1, got {decay_steps}")
    if warmup < 0:
        raise ConfigError(f"warmup must be a non-negative number of steps, got {warmup}")
    if warmup and schedule == "cyclic":
        raise ConfigError("--warmup is for the step, exponential and cosine schedules; the cyclic one already rises from eta_min")
    if total is not None and warmup >= total:
        raise ConfigError(f"a warm-up of {warmup} steps leaves nothing of a run of {total} steps")


def check_adam(beta1: float, beta2: float, adam_eps: float, eta_min: float, eta_max: float) -> None:
    """Refuse Adam settings that cannot work, before any work is done.

    Adam with any schedule, the cyclic one included, is allowed when eta_max <= ADAM_MAX_ETA.
    """
    for name, b in (("beta1", beta1), ("beta2", beta2)):
        if not 0 <= b < 1:
            raise ConfigError(f"Adam's {name} must be in [0, 1), got {b}")
    if not adam_eps > 0:
        raise ConfigError(f"Adam's epsilon must be positive, got {adam_eps}")
    if eta_max > ADAM_MAX_ETA:
        raise ConfigError(f"Adam with eta_max {eta_max:g}: Adam moves every weight by about eta per step whatever the gradient's scale, "
                          f"so rates above {ADAM_MAX_ETA:g} wreck the network; give --eta-max between 1e-4 and {ADAM_MAX_ETA:g} (e.g. 3e-3) "
                          f"and an --eta-min below it")


def sgd_step(params: dict, grads: dict, eta: float, ops) -> None:
    """Plain gradient descent on every parameter that has a gradient, in place."""
    for name, grad in grads.items():
        ops.sgd_update_inplace(params[name], grad, eta)


class SGD:
    """Mini-batch gradient descent, the assignment's update (eq 20's gradient times eta)."""

    name = "sgd"

    def step(self, params: dict, grads: dict, eta: float, t: int, ops) -> None:
        sgd_step(params, grads, eta, ops)

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict) -> None:
        if state:
            raise ValueError(f"plain SGD keeps no state, but the checkpoint holds {sorted(state)[:3]}")


class Adam:
    """Adam (Kingma & Ba 2015): per-parameter first and second moment estimates ``m``, ``v``.

    The gradient is eq (20)'s, the L2 term 2 lam W included: lambda stays an L2 penalty (not
    AdamW's decoupled weight decay), so the cost minimised is the assignment's.
    """

    name = "adam"

    def __init__(self, params: dict, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.m = {name: np.zeros_like(p) for name, p in params.items()}
        self.v = {name: np.zeros_like(p) for name, p in params.items()}

    def step(self, params: dict, grads: dict, eta: float, t: int, ops) -> None:
        """Update every parameter with a gradient; t = update step counted from 0."""
        for name, grad in grads.items():
            ops.adam_update_inplace(params[name], grad, self.m[name], self.v[name], eta, self.beta1, self.beta2, self.eps, t + 1)

    def state(self) -> dict[str, np.ndarray]:
        """The moments as ``{"m.W1": ..., "v.W1": ...}`` (the checkpoint stores them as ``opt.*``)."""
        return {**{f"m.{k}": a for k, a in self.m.items()}, **{f"v.{k}": a for k, a in self.v.items()}}

    def load_state(self, state: dict) -> None:
        """Take the moments of :meth:`state`; ValueError unless they match the parameters exactly."""
        want = set(self.state())
        if set(state) != want:
            raise ValueError(f"its Adam state holds {sorted(state)[:4]}, expected the moments {sorted(want)[:4]}...")
        for key, a in state.items():
            which, name = key.split(".", 1)
            target = (self.m if which == "m" else self.v)[name]
            if not isinstance(a, np.ndarray) or a.shape != target.shape or a.dtype != target.dtype:
                raise ValueError(f"its Adam moment {key} is not an array of shape {target.shape} and dtype {target.dtype}")
            if not np.isfinite(a).all() or (which == "v" and (a < 0).any()):
                raise ValueError(f"its Adam moment {key} holds NaN, inf or (for v) negative values")
            target[...] = a


# ---- decoupled weight decay (issue 17)
#: "l2": lambda ||W||^2 in the cost, eq (20), its gradient 2 lam W in every update (the
#: assignment's); "decoupled": weight decay applied to the weights directly, outside the
#: optimiser's moments (AdamW, Loshchilov & Hutter 2019): W <- W - eta (update + 2 lam W).
DECAYS = ("l2", "decoupled")


def decays_apart(decay: str, optimizer: str) -> bool:
    """Whether the weight decay is applied apart from the gradient (AdamW), not through it.

    Only with an optimiser that keeps moments: for plain SGD, W - eta (g + 2 lam W) is the l2
    step itself, one formula, so "decoupled" takes the l2 step's very arithmetic (bit for bit
    the same run, the fused step included)."""
    return decay == "decoupled" and optimizer != "sgd"


def decoupled_decay(weights, eta: float, lam: float) -> None:
    """W <- (1 - 2 eta lam) W in place for each weight matrix W (not biases, gamma, beta: eq 20
    penalises the weights only). Taken before the optimiser's step, which does not read W, it
    makes that step W - eta (update + 2 lam W) with the W of before the step, as AdamW."""
    for W in weights:
        W *= W.dtype.type(1 - 2 * eta * lam)


def make_optimizer(name: str, params: dict, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
    """A fresh optimiser by name ("sgd" or "adam") for the parameters ``params``."""
    if name == "sgd":
        return SGD()
    if name == "adam":
        return Adam(params, beta1, beta2, eps)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
