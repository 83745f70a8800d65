"""Learning-rate schedules and parameter updates.

The cyclic schedule is a pure function of the update step ``t`` (counted from 0 over the whole
run), as in the assignment: it rises linearly from eta_min to eta_max over n_s steps, falls
back over the next n_s steps, and repeats; one cycle is 2 n_s steps.
"""
from __future__ import annotations

from .errors import ConfigError


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


def sgd_step(params: dict, grads: dict, eta: float, ops) -> None:
    """Plain gradient descent on every parameter that has a gradient, in place."""
    for name, grad in grads.items():
        ops.sgd_update_inplace(params[name], grad, eta)
