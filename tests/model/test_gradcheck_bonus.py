"""The bonus architectures' backward passes against centred finite differences, in float64.

Batch norm after the ReLU (Exercise 4.1a) and the skip connections of eqs (40)-(41)
(Exercise 4.2c), alone and combined: ``fastnet.model.gradcheck.BONUS_CASES``, held to the same
bounds as the assignment's networks (1e-6 relative to each array's largest gradient entry;
measured ~1e-9). The check can fail: a backward pass that forgets the skip's gradient is caught.
"""
import numpy as np
import pytest

from fastnet.backends import resolve
from fastnet.model import gradcheck as gc
from fastnet.model.network import init_network, layer_kinds

OPS = resolve("numpy").ops


def expected_names(case) -> set[str]:
    hidden = case["hidden"]
    k = len(hidden) + 1
    kinds = layer_kinds(k, case["bn"], case.get("bn_placement", "before"), case.get("skip", False))
    names = {f"W{l}" for l in range(1, k + 1)} | {f"b{k}"}
    for l, kind in enumerate(kinds, start=1):
        if kind in ("relu", "relu_bn"):
            names.add(f"b{l}")
        if kind in ("bn_relu", "relu_bn"):
            names |= {f"gamma{l}", f"beta{l}"}
    return names


@pytest.mark.parametrize("case", gc.BONUS_CASES, ids=lambda c: gc.case_name(**c))
def test_bonus_gradients_match_finite_differences(case):
    checks = gc.run_case(ops=OPS, **case)
    assert {c.name for c in checks} == expected_names(case)  # every parameter is checked
    for c in checks:
        assert c.checked > 0
        assert c.rel_error <= 1e-6, f"{gc.case_name(**case)} {c.name}{c.worst_index}: {c.rel_error:.2e}"
        assert c.max_rel_error <= 1e-4, f"{gc.case_name(**case)} {c.name}{c.worst_index}: {c.max_rel_error:.2e}"


@pytest.mark.parametrize("backend", ["numba", "cython"])
@pytest.mark.parametrize("case", [gc.BONUS_CASES[5], gc.BONUS_CASES[-1]], ids=lambda c: gc.case_name(**c))
def test_bonus_gradients_on_the_compiled_backends(backend, case):
    b = resolve(backend)
    if b.name != backend:
        pytest.skip(f"{backend} unavailable")
    assert max(c.rel_error for c in gc.run_case(ops=b.ops, **case)) <= 1e-6


def test_kinds_of_the_checked_networks():
    """The cases exercise what they claim: BN after the ReLU, and skips ending at 3 and 5 with
    a trailing layer outside any block."""
    assert layer_kinds(4, True, "after") == ["relu_bn"] * 3
    assert layer_kinds(7, True, "before", skip=True) == ["bn_relu", "mid", "bn_relu", "mid", "bn_relu", "bn_relu"]
    net = init_network(10, [12, 10, 12, 9, 12, 11], 10, bn=True, skip=True, dtype=np.float64, rng=np.random.default_rng(0))
    assert net.skips() == {3: 1, 5: 3}


def test_forgetting_the_skip_gradient_is_caught(monkeypatch):
    """A backward pass that does not add dJ/ds^(l+1) at the start of the skip fails the check."""
    import fastnet.model.gradcheck as mod

    real_backward = mod.backward

    def without_skip_gradient(net, cache, y, lam, ops):
        skips = net.skips()
        net.skips = lambda: {}  # backward sees no skips; the forward pass had them
        try:
            # kinds stay those of the skip network (they are computed from net.skip)
            return real_backward(net, cache, y, lam, ops)
        finally:
            del net.skips
            assert net.skips() == skips

    monkeypatch.setattr(mod, "backward", without_skip_gradient)
    checks = {c.name: c.rel_error for c in gc.run_case([12, 10, 12], True, 0.0, OPS, skip=True)}
    assert checks["W1"] > 1e-3 and checks["gamma1"] > 1e-3
    assert checks["W3"] <= 1e-6  # layers after the skip's start are unaffected
