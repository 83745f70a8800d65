import numpy as np
import pytest

from fastnet.backends import resolve
from fastnet.errors import ConfigError
from fastnet.model.files import ModelFileError, load_network, save_network
from fastnet.model.network import (
    evaluate,
    forward_eval,
    forward_train,
    init_network,
    update_running_stats,
)

OPS = resolve("numpy").ops


def make(bn=True, hidden=(6, 5), d=8, K=4, dtype=np.float64, seed=0):
    return init_network(d, hidden, K, bn=bn, dtype=dtype, rng=np.random.default_rng(seed))


def test_shapes_and_parameter_names():
    net = make(bn=True)
    assert net.sizes == [8, 6, 5, 4]
    assert [p.shape for p in net.params().values()] == [(6, 8), (6,), (6,), (5, 6), (5,), (5,), (4, 5), (4,)]
    assert list(net.params()) == ["W1", "gamma1", "beta1", "W2", "gamma2", "beta2", "W3", "b3"]
    assert list(make(bn=False).params()) == ["W1", "b1", "W2", "b2", "W3", "b3"]


def test_he_xavier_normal_scales():
    rng = np.random.default_rng(0)
    he = init_network(2000, [500], 10, init="he", rng=rng)
    xa = init_network(2000, [500], 10, init="xavier", rng=rng)
    no = init_network(2000, [500], 10, init="normal", sigma=1e-3, rng=rng)
    # 1e6 draws: the sample std is within ~0.2 % of the true one
    assert he.layers[0].W.std() == pytest.approx(np.sqrt(2 / 2000), rel=0.01)
    assert xa.layers[0].W.std() == pytest.approx(np.sqrt(1 / 2000), rel=0.01)
    assert no.layers[0].W.std() == pytest.approx(1e-3, rel=0.01)


def test_float32_and_float64_start_from_the_same_numbers():
    a, b = make(dtype=np.float32), make(dtype=np.float64)
    np.testing.assert_array_equal(a.layers[0].W, b.layers[0].W.astype(np.float32))


@pytest.mark.parametrize("kwargs", [dict(hidden=[0]), dict(init="bogus"), dict(init="normal", sigma=None), dict(alpha=1.0), dict(eps=0.0)])
def test_bad_networks_are_refused(kwargs):
    args = dict(hidden=[5], init="he", sigma=None, alpha=0.9, eps=1e-8) | kwargs
    with pytest.raises(ConfigError):
        init_network(4, args.pop("hidden"), 3, rng=np.random.default_rng(0), **args)


def test_eval_mode_equals_train_mode_when_running_stats_are_the_batch_stats():
    net = make(bn=True)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((32, 8)), rng.integers(0, 4, 32)
    cache = forward_train(net, X, y, OPS)
    update_running_stats(net, cache)  # first batch: averages := batch statistics
    S = forward_eval(net, X, OPS)
    P = np.exp(S - S.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    np.testing.assert_allclose(P, cache.P, rtol=1e-12, atol=1e-14)


def test_running_averages_follow_eqs_38_39():
    net = make(bn=True)
    net.alpha = 0.8
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 16)
    c1 = forward_train(net, rng.standard_normal((16, 8)), y, OPS)
    update_running_stats(net, c1)
    np.testing.assert_array_equal(net.layers[0].mu_av, c1.hidden[0].mu)
    c2 = forward_train(net, rng.standard_normal((16, 8)) + 1, y, OPS)
    update_running_stats(net, c2)
    np.testing.assert_allclose(net.layers[0].mu_av, 0.8 * c1.hidden[0].mu + 0.2 * c2.hidden[0].mu)
    np.testing.assert_allclose(net.layers[1].v_av, 0.8 * c1.hidden[1].v + 0.2 * c2.hidden[1].v)


def test_evaluation_never_touches_running_statistics():
    net = make(bn=True)
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((20, 8)), rng.integers(0, 4, 20)
    update_running_stats(net, forward_train(net, X, y, OPS))
    before = {k: v.copy() for k, v in net.running_stats().items()}
    evaluate(net, X * 5, y, 0.1, OPS)
    for k, v in net.running_stats().items():
        np.testing.assert_array_equal(v, before[k])


def test_eval_before_any_training_step_is_a_clear_error():
    with pytest.raises(ConfigError, match="running BN statistics"):
        forward_eval(make(bn=True), np.zeros((3, 8)), OPS)


def test_model_round_trip(tmp_path):
    net = make(bn=True, dtype=np.float32)
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((20, 8)).astype(np.float32), rng.integers(0, 4, 20)
    update_running_stats(net, forward_train(net, X, y, OPS))
    save_network(tmp_path / "m.npz", net, np.zeros(8), np.ones(8))
    back, mean, std = load_network(tmp_path / "m.npz")
    assert back.sizes == net.sizes and back.bn and back.dtype == np.float32
    np.testing.assert_array_equal(forward_eval(back, X, OPS), forward_eval(net, X, OPS))
    np.testing.assert_array_equal(mean, np.zeros(8))
    assert not list(tmp_path.glob("*.tmp"))


def test_model_files_that_do_not_fit_are_refused(tmp_path):
    net = make(bn=False)
    save_network(tmp_path / "ok.npz", net)
    z = dict(np.load(tmp_path / "ok.npz"))
    z["W2"] = np.zeros((3, 3))  # from another network
    np.savez(tmp_path / "other.npz", **z)
    with pytest.raises(ModelFileError, match="W2 has shape"):
        load_network(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_network(tmp_path / "junk.npz")
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelFileError):
        load_network(tmp_path / "pickled.npz")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_network(tmp_path / "missing.npz")


def test_the_l2_term_does_not_depend_on_the_blas_thread_count():
    """Runs resumed with another thread count must write the same cost (a BLAS dot product
    split over threads rounds differently)."""
    from threadpoolctl import threadpool_limits

    from fastnet.model.network import init_network, l2_penalty

    net = init_network(3072, [50, 50], 10, rng=np.random.default_rng(0))
    values = set()
    for threads in (1, 2, 4):
        with threadpool_limits(threads, user_api="blas"):
            values.add(l2_penalty(net, 0.005))
    assert len(values) == 1
