"""Analytic gradients against centred finite differences, in float64.

For every entry theta_i of every parameter, the numerical gradient is
``(J(theta + h e_i) - J(theta - h e_i)) / 2h`` with J the mini-batch cost of eq (20) under
*batch* BN statistics (as the analytic gradient is).

Two errors are reported per parameter array:

* ``rel_error`` = max_i |g_a,i - g_n,i| / max_i max(|g_a,i|, |g_n,i|): the largest
  discrepancy relative to the array's largest gradient entry. This is the figure the tests
  hold to 1e-6: it measures the error at the scale of the gradient and is not swamped by
  entries that are zero up to rounding.
* ``max_rel_error`` = max_i |g_a,i - g_n,i| / max(|g_a,i| + |g_n,i|, floor), the per-entry
  relative error of the assignment's earlier parts (``floor`` = 1e-8 only avoids 0/0). For
  entries of size ~1e-6 it reaches ~1e-6 from rounding alone (below), so it is shown and held
  only to a looser bound.

Step size: the truncation error of a centred difference is ~h^2 |J'''| / 6 and its rounding
error ~eps_64 |J| / h with eps_64 = 2.2e-16 and |J| ~ 2.3; h = 1e-5, near the optimum
eps_64^(1/3), keeps both around 1e-11..1e-10 absolute. Measured over the standard cases: worst
``rel_error`` 2e-8, 2e-9, 1e-8 for h = 1e-4, 1e-5, 1e-6.

Entries whose perturbation flips a ReLU (the cost is not differentiable there) are skipped and
counted: a kink inside [theta - h, theta + h] makes the difference quotient meaningless.

Regularisers for long runs (issue 17, :data:`REGUL_CASES`, ``fastnet gradcheck --regul``): the
cost is then the cross-entropy against soft targets (label smoothing; MixUp with a fixed
lambda and permutation, its inputs mixed once), with fixed dropout masks, and for decoupled
weight decay the gradient the optimiser is given, without the 2 lam W term, against the cost
without lam ||W||^2 (the decay itself, W <- (1 - 2 eta lam) W, is no gradient: tests/model/
test_optim.py checks it). Held to the same bounds as the standard cases.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from fastnet.model.network import (
    Network,
    backward,
    batch_cost,
    forward_train,
    init_network,
)
from fastnet.model.regularise import dropout_masks, mixup, smoothed_targets

H = 1e-5
FLOOR = 1e-8


@dataclass
class ParamCheck:
    """The comparison for one parameter array."""

    name: str
    shape: tuple
    rel_error: float
    max_rel_error: float
    max_abs_error: float
    worst_index: tuple
    checked: int
    skipped_kinks: int


def _masks(net: Network, X, y, ops, dropout=None) -> list[np.ndarray]:
    """Every ReLU's pattern: x^(l) > 0, or max(0, s) > 0 (``H``) where BN follows the ReLU."""
    return [(lc.H if lc.H is not None else lc.X) > 0 for lc in forward_train(net, X, y, ops, dropout=dropout).hidden]


def check_gradients(net: Network, X, y, lam: float, ops, h: float = H, floor: float = FLOOR, *, dropout=None) -> list[ParamCheck]:
    """Compare every analytic gradient entry with its centred difference (float64 only).

    ``y``: labels or soft targets; ``dropout``: fixed masks, one per hidden layer (issue 17)."""
    if net.dtype != np.float64 or X.dtype != np.float64:
        raise ValueError("gradient checks run in float64: build the network and data with dtype=float64")
    analytic = backward(net, forward_train(net, X, y, ops, dropout=dropout), y, lam, ops)
    base_masks = _masks(net, X, y, ops, dropout)
    results = []
    for name, theta in net.params().items():
        g_a = analytic[name]
        g_n = np.zeros_like(theta)
        skipped = np.zeros(theta.shape, bool)
        for i in np.ndindex(theta.shape):
            old = theta[i]
            theta[i] = old + h
            j_plus, m_plus = batch_cost(net, X, y, lam, ops, dropout=dropout), _masks(net, X, y, ops, dropout)
            theta[i] = old - h
            j_minus, m_minus = batch_cost(net, X, y, lam, ops, dropout=dropout), _masks(net, X, y, ops, dropout)
            theta[i] = old
            g_n[i] = (j_plus - j_minus) / (2 * h)
            skipped[i] = any((a != b).any() or (a != c).any() for a, b, c in zip(base_masks, m_plus, m_minus))
        abs_err = np.abs(g_a - g_n)
        rel = np.where(skipped, 0.0, abs_err / np.maximum(np.abs(g_a) + np.abs(g_n), floor))
        worst = np.unravel_index(int(np.argmax(rel)), rel.shape)
        abs_used = np.where(skipped, 0.0, abs_err)
        scale = max(float(np.abs(g_a).max()), float(np.abs(g_n).max()), floor)
        results.append(ParamCheck(name, theta.shape, float(abs_used.max()) / scale, float(rel.max()), float(abs_used.max()), tuple(int(i) for i in worst), int((~skipped).sum()), int(skipped.sum())))
    return results


# The assignment's checks: 2-, 3- and 4-layer networks on reduced inputs (d ~ 10), with and
# without batch norm, lambda = 0 and lambda > 0, mini-batch > 1.
STANDARD_CASES = [
    {"hidden": hidden, "bn": bn, "lam": lam}
    for hidden in ([20], [20, 15], [20, 15, 12])
    for bn in (False, True)
    for lam in (0.0, 0.1)
]


# The bonus variants (Exercise 4): batch norm after the ReLU (4.1a) and skip connections of
# eqs (40)-(41) (4.2c), alone and combined with each other and with no BN. Skip networks have
# equal widths where a skip adds (hidden layers 1 and 3, 3 and 5); the middle layers differ,
# and the 6-hidden-layer case ends with a layer outside any block.
BONUS_CASES = (
    [{"hidden": hidden, "bn": True, "lam": lam, "bn_placement": "after"} for hidden in ([20], [20, 15], [20, 15, 12]) for lam in (0.0, 0.1)]
    + [{"hidden": [12, 10, 12], "bn": True, "lam": lam, "skip": True} for lam in (0.0, 0.1)]
    + [{"hidden": [12, 10, 12, 9, 12, 11], "bn": True, "lam": 0.1, "skip": True},
       {"hidden": [12, 10, 12, 9, 12], "bn": False, "lam": 0.1, "skip": True},
       {"hidden": [12, 10, 12, 9, 12], "bn": True, "lam": 0.1, "skip": True, "bn_placement": "after"}]
)


# ---- regularisers for long runs (issue 17): label smoothing, MixUp with a fixed lambda (its
# permutation drawn from the case's generator), dropout with fixed masks (p = 0.3 drops about
# a third of every hidden layer's outputs), decoupled weight decay, and all of them together.
REGUL_CASES = (
    [{"hidden": hidden, "bn": bn, "lam": 0.1, "label_smoothing": 0.1} for hidden, bn in (([20, 15], True), ([20], False))]
    + [{"hidden": [20, 15], "bn": True, "lam": 0.1, "mixup_lam": 0.3},
       {"hidden": [20, 15], "bn": True, "lam": 0.1, "mixup_lam": 0.3, "label_smoothing": 0.1}]
    + [{"hidden": hidden, "bn": bn, "lam": 0.1, "dropout": 0.3} for hidden, bn in (([20, 15, 12], True), ([20, 15], False))]
    + [{"hidden": [12, 10, 12], "bn": True, "lam": 0.1, "dropout": 0.3, "skip": True},
       {"hidden": [20, 15], "bn": True, "lam": 0.1, "dropout": 0.3, "bn_placement": "after"},
       {"hidden": [20, 15], "bn": True, "lam": 0.1, "decay": "decoupled"},
       {"hidden": [20, 15], "bn": True, "lam": 0.1, "label_smoothing": 0.1, "mixup_lam": 0.3, "dropout": 0.3, "decay": "decoupled"}]
)


def run_case(hidden, bn: bool, lam: float, ops, d: int = 10, n: int = 16, K: int = 10, seed: int = 0,
             bn_placement: str = "before", skip: bool = False, label_smoothing: float = 0.0, mixup_lam: float | None = None,
             dropout: float = 0.0, decay: str = "l2") -> list[ParamCheck]:
    """One standard check on random data: d inputs, n samples, K classes, He initialisation.

    Issue 17: ``label_smoothing`` eps and ``mixup_lam`` (a fixed MixUp lambda, the batch mixed
    once with a permutation drawn here) make the targets soft; ``dropout`` p draws fixed
    masks; ``decay`` "decoupled" checks the gradient without the L2 term (what Adam is given
    under decoupled decay) against the cost without lam ||W||^2."""
    rng = np.random.default_rng(seed)
    net = init_network(d, hidden, K, bn=bn, init="he", dtype=np.float64, rng=rng, bn_placement=bn_placement, skip=skip)
    if bn:  # start gamma, beta away from 1, 0 so that their gradients are exercised generally
        for layer in (L for L in net.layers[:-1] if L.gamma is not None):  # mid layers of skip blocks have none
            layer.gamma += 0.3 * rng.standard_normal(layer.gamma.shape)
            layer.beta += 0.3 * rng.standard_normal(layer.beta.shape)
    for layer in net.layers:
        if layer.b is not None:
            layer.b += 0.1 * rng.standard_normal(layer.b.shape)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, K, n)
    masks = dropout_masks(rng, n, hidden, dropout, np.float64) if dropout else None
    if label_smoothing or mixup_lam is not None:
        y = smoothed_targets(y, K, label_smoothing, np.float64)
    if mixup_lam is not None:
        X, y = mixup(X, y, mixup_lam, rng.permutation(n))
    return check_gradients(net, X, y, 0.0 if decay == "decoupled" else lam, ops, dropout=masks)


def check_cases(cases, ops) -> list[tuple[dict, ParamCheck]]:
    """Run every case of ``cases`` (dicts of :func:`run_case`'s keywords, as
    :data:`STANDARD_CASES`): one ``(case, check)`` per parameter array, in order."""
    return [(case, check) for case in cases for check in run_case(ops=ops, **case)]


def check_row(case: dict, c: ParamCheck) -> dict:
    """One row of a gradient-check record: the case's name and settings, and the check."""
    return {"case": case_name(**case), **{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in case.items()},
            "param": c.name, "shape": list(c.shape), "rel_error": c.rel_error, "max_rel_error": c.max_rel_error,
            "max_abs_error": c.max_abs_error, "checked": c.checked, "skipped_kinks": c.skipped_kinks}


def check_record(cases, ops, backend: str, **extra) -> dict:
    """Run ``cases`` and return their JSON record (``gradcheck.json``, ``gradcheck_bonus.json``):
    the setting (backend name, float64, h, the random data's d, n, K), ``extra`` entries, one
    :func:`check_row` per parameter array, the worst ``rel_error`` and the seconds taken."""
    t0 = time.perf_counter()
    rows = [check_row(case, c) for case, c in check_cases(cases, ops)]
    return {"backend": backend, "dtype": "float64", "h": H, "d": 10, "n": 16, "K": 10, **extra, "rows": rows,
            "worst_rel_error": max(r["rel_error"] for r in rows), "seconds": time.perf_counter() - t0}


def format_table(rows: list[tuple[str, ParamCheck]]) -> str:
    """A plain-text table of (case, check) rows."""
    head = ("network", "param", "shape", "rel err", "entry rel", "abs err", "checked", "kinks")
    w = max([36, *(len(case) for case, _ in rows)])  # the issue-17 cases have longer names
    lines = [f"%-{w}s %-7s %-7s %9s %9s %9s %7s %5s" % head]
    for case, c in rows:
        shape = "x".join(map(str, c.shape))
        lines.append(f"%-{w}s %-7s %-7s %9.1e %9.1e %9.1e %7d %5d" % (case, c.name, shape, c.rel_error, c.max_rel_error, c.max_abs_error, c.checked, c.skipped_kinks))
    return "\n".join(lines)


def case_name(hidden, bn: bool, lam: float, bn_placement: str = "before", skip: bool = False, label_smoothing: float = 0.0,
              mixup_lam: float | None = None, dropout: float = 0.0, decay: str = "l2") -> str:
    extra = (" BN-after" if bn_placement == "after" else "") + (" skip" if skip else "")
    regul = ((f" ls={label_smoothing:g}" if label_smoothing else "") + (f" mix={mixup_lam:g}" if mixup_lam is not None else "")
             + (f" drop={dropout:g}" if dropout else "") + (" decoupled" if decay == "decoupled" else ""))
    return f"{len(hidden) + 1}-layer {'BN' if bn else 'no BN'}{extra} lam={lam:g}{regul}"
