"""The bonus architectures: which parameters each layer has, the refusals, train/eval
consistency, and model files that round-trip (and old ones that still load)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastnet.backends import resolve
from fastnet.errors import ConfigError
from fastnet.model.files import ModelFileError, load_network, save_network
from fastnet.model.network import (
    forward_eval,
    forward_train,
    init_network,
    update_running_stats,
)
from fastnet.training.config import TrainConfig

OPS = resolve("numpy").ops


def net_of(hidden, **kw):
    return init_network(10, hidden, 4, dtype=np.float64, rng=np.random.default_rng(0), **kw)


def test_bn_after_relu_layers_have_bias_gamma_and_beta():
    net = net_of([8, 6], bn=True, bn_placement="after")
    assert set(net.params()) == {"W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"}


def test_skip_blocks_have_a_bare_middle_layer():
    net = net_of([8, 5, 8, 7, 8], bn=True, skip=True)
    assert net.kinds() == ["bn_relu", "mid", "bn_relu", "mid", "bn_relu"] and net.skips() == {3: 1, 5: 3}
    assert "b2" not in net.params() and "gamma2" not in net.params() and "b4" not in net.params()  # eq (40): no bias, no BN
    assert {"gamma3", "beta3", "gamma5", "beta5"} <= set(net.params())


@pytest.mark.parametrize("hidden, match", [([8, 5, 7], "hidden layers 1 and 3 need equal widths, got 8 and 7"),
                                           ([8, 5, 8, 4, 6], "hidden layers 3 and 5 need equal widths, got 8 and 6"),
                                           ([8, 8], "at least 3 hidden layers")])
def test_skip_widths_are_enforced_with_one_sentence(hidden, match):
    with pytest.raises(ConfigError, match=match):
        net_of(hidden, bn=True, skip=True)
    with pytest.raises(ConfigError, match=match):
        TrainConfig(hidden=tuple(hidden), skip=True).validate()


def test_bn_after_without_bn_is_refused():
    with pytest.raises(ConfigError, match="needs batch norm"):
        TrainConfig(bn=False, bn_placement="after").validate()
    with pytest.raises(ConfigError, match="placement"):
        TrainConfig(bn_placement="sideways").validate()


def test_skip_adds_the_input_of_the_block():
    """s^(3) = W3 max(W2 x1, 0) + x1 (eq 40): with W3 = 0, layer 3 sees x1 itself."""
    net = net_of([6, 5, 6], bn=True, skip=True)
    net.layers[2].W[:] = 0
    X = np.random.default_rng(1).standard_normal((9, 10))
    cache = forward_train(net, X, np.zeros(9, int), OPS)
    x1 = cache.hidden[0].X
    expected = OPS.bn_relu_forward_train(x1.copy(), net.layers[2].gamma, net.layers[2].beta, net.eps).X
    np.testing.assert_allclose(cache.hidden[2].X, expected, rtol=1e-12)


@pytest.mark.parametrize("kw", [dict(bn=True), dict(bn=True, bn_placement="after"), dict(bn=True, skip=True),
                                dict(bn=False, skip=True), dict(bn=True, skip=True, bn_placement="after")],
                         ids=["bn", "after", "skip", "skip-noBN", "skip-after"])
@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
def test_eval_with_the_batch_statistics_is_train_mode(kw, backend):
    """forward_eval with running statistics set to one batch's own equals forward_train on
    that batch: the eval path of every kind computes what the train path does."""
    ops = resolve(backend).ops
    net = net_of([8, 6, 8, 5, 8], **kw)
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((20, 10)), rng.integers(0, 4, 20)
    net.alpha = 0.0  # the running averages become the batch's statistics
    cache = forward_train(net, X, y, ops)
    update_running_stats(net, cache)
    S = forward_eval(net, X, ops)
    P = np.exp(S - S.max(1, keepdims=True))
    np.testing.assert_allclose(P / P.sum(1, keepdims=True), cache.P, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(bn=True, bn_placement="after"), dict(bn=True, skip=True), dict(bn=False, skip=True)])
def test_model_files_round_trip(kw, tmp_path):
    net = init_network(12, [6, 5, 6], 4, rng=np.random.default_rng(0), **kw)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((10, 12)).astype(np.float32)
    if net.bn:
        update_running_stats(net, forward_train(net, X, rng.integers(0, 4, 10), OPS))
    save_network(tmp_path / "m.npz", net, np.zeros(12), np.ones(12))
    back, _, _ = load_network(tmp_path / "m.npz")
    assert (back.bn_placement, back.skip, back.kinds()) == (net.bn_placement, net.skip, net.kinds())
    assert back.params().keys() == net.params().keys() and back.running_stats().keys() == net.running_stats().keys()
    np.testing.assert_array_equal(forward_eval(back, X, OPS), forward_eval(net, X, OPS))


def _rewrite_meta(path, **changes):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def test_a_model_file_from_before_the_bonus_loads_as_the_assignment_network(tmp_path):
    net = init_network(12, [6, 5], 4, rng=np.random.default_rng(0))
    save_network(tmp_path / "m.npz", net, np.zeros(12), np.ones(12))
    _rewrite_meta(tmp_path / "m.npz", bn_placement=None, skip=None)
    back, _, _ = load_network(tmp_path / "m.npz")
    assert back.bn_placement == "before" and back.skip is False


@pytest.mark.parametrize("changes, what", [(dict(bn_placement="sideways"), "bn_placement"), (dict(skip="yes"), "skip"),
                                           (dict(skip=True, sizes=[12, 6, 5, 7, 4]), "equal widths"),
                                           (dict(bn_placement="after"), "lacks b1")])
def test_inconsistent_bonus_meta_is_refused(tmp_path, changes, what):
    net = init_network(12, [6, 5, 6], 4, rng=np.random.default_rng(0))
    save_network(tmp_path / "m.npz", net, np.zeros(12), np.ones(12))
    _rewrite_meta(tmp_path / "m.npz", **changes)
    with pytest.raises(ModelFileError, match=what):
        load_network(tmp_path / "m.npz")
