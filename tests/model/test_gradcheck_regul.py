"""The regularisers for long runs (issue 17) against centred finite differences, in float64.

Label smoothing and MixUp (a fixed lambda and permutation) as soft targets, dropout with fixed
masks, decoupled weight decay (the gradient without the L2 term against the cost without
lam ||W||^2), and all at once: ``fastnet.model.gradcheck.REGUL_CASES``, held to the bounds of
the assignment's networks (1e-6 relative to each array's largest gradient entry, 1e-4 per
entry; measured: worst 3e-9 and 8e-6). The check can fail: a backward pass that forgets the
dropout mask or the soft targets is caught.
"""
import pytest

from fastnet.backends import resolve
from fastnet.model import gradcheck as gc
from fastnet.model import network

OPS = resolve("numpy").ops


@pytest.mark.parametrize("case", gc.REGUL_CASES, ids=lambda c: gc.case_name(**c))
def test_regulariser_gradients_match_finite_differences(case):
    checks = gc.run_case(ops=OPS, **case)
    for c in checks:
        assert c.checked > 0
        assert c.rel_error <= 1e-6, f"{gc.case_name(**case)} {c.name}{c.worst_index}: {c.rel_error:.2e}"
        assert c.max_rel_error <= 1e-4, f"{gc.case_name(**case)} {c.name}{c.worst_index}: {c.max_rel_error:.2e}"


@pytest.mark.parametrize("backend", ["numba", "cython"])
def test_regulariser_gradients_on_the_compiled_backends(backend):
    b = resolve(backend)
    if b.name != backend:
        pytest.skip(f"{backend} unavailable")
    assert max(c.rel_error for c in gc.run_case(ops=b.ops, **gc.REGUL_CASES[-1])) <= 1e-6


def test_forgetting_the_dropout_mask_is_caught(monkeypatch):
    """A backward pass that does not multiply by the mask (the forward pass still drops) fails the check."""
    real_backward = network.backward

    def backward_without_mask(net, cache, y, lam, ops, **kw):
        cache.hidden = [lc._replace(D=None, X_D=None) if lc.D is not None else lc for lc in cache.hidden]
        return real_backward(net, cache, y, lam, ops, **kw)

    monkeypatch.setattr(gc, "backward", backward_without_mask)
    checks = gc.run_case(ops=OPS, hidden=[20, 15], bn=False, lam=0.1, dropout=0.3)
    assert max(c.rel_error for c in checks) > 1e-2


def test_hard_labels_in_the_backward_pass_are_caught(monkeypatch):
    """Gradients of the hard labels against the cost of smoothed targets fail the check."""
    real_backward = network.backward

    def backward_with_hard_labels(net, cache, y, lam, ops, **kw):
        return real_backward(net, cache, y.argmax(axis=1), lam, ops, **kw)

    monkeypatch.setattr(gc, "backward", backward_with_hard_labels)
    checks = gc.run_case(ops=OPS, hidden=[20], bn=False, lam=0.0, label_smoothing=0.3)
    assert max(c.rel_error for c in checks) > 1e-2


def test_the_regul_cases_exercise_what_they_claim():
    names = [gc.case_name(**c) for c in gc.REGUL_CASES]
    assert len(set(names)) == len(names)
    for key in ("label_smoothing", "mixup_lam", "dropout", "decay"):
        assert any(key in c for c in gc.REGUL_CASES), key
    assert any(c.get("skip") for c in gc.REGUL_CASES if c.get("dropout"))  # dropout through a skip connection
    assert gc.case_name(**gc.REGUL_CASES[-1]) == "3-layer BN lam=0.1 ls=0.1 mix=0.3 drop=0.3 decoupled"
