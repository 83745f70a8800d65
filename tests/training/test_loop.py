import numpy as np
import pytest

from fastnet.backends import resolve
from fastnet.data.cifar10 import load_cifar10
from fastnet.errors import ConfigError, DivergenceError
from fastnet.model.network import evaluate
from fastnet.training.config import TrainConfig, new_network
from fastnet.training.loop import fit
from fastnet.training.state import History

OPS = resolve("numpy").ops


@pytest.fixture(scope="module")
def fake(fake_cifar_dir):
    return load_cifar10(fake_cifar_dir, n_val=300, progress=False)


def small(**kw):
    base = dict(hidden=(20, 20), n_s=30, cycles=1, batch=50, eta_max=0.05, n_val=300)
    return TrainConfig(**(base | kw)).validate()


def train(cfg, data):
    net = new_network(cfg, data.X_train.shape[1], 10)
    return net, fit(net, data, cfg, OPS, progress=False)


def test_fit_runs_the_whole_schedule_and_learns(fake):
    cfg = small()
    net, h = train(cfg, fake)
    assert h.steps == 2 * cfg.n_s * cfg.cycles
    assert len(h.step_eta) == h.steps and max(h.step_eta) == pytest.approx(cfg.eta_max)
    assert h.evals[-1]["step"] == h.steps
    # the synthetic classes differ in mean: anything learnt is far above chance (0.1)
    assert evaluate(net, fake.X_test, fake.y_test, cfg.lam, OPS).accuracy > 0.3


def test_same_seed_same_network_different_seed_different(fake):
    a, _ = train(small(seed=3), fake)
    b, _ = train(small(seed=3), fake)
    c, _ = train(small(seed=4), fake)
    for name, p in a.params().items():
        np.testing.assert_array_equal(p, b.params()[name])
    assert not np.array_equal(a.params()["W1"], c.params()["W1"])


def test_default_n_s_is_five_epochs():
    assert TrainConfig().resolved_n_s(45000) == 2250  # the assignment's 5 * 45,000 / 100


def test_divergence_stops_with_step_and_keeps_history(fake):
    cfg = small(bn=False, eta_min=1e4, eta_max=1e6, lam=0.0)
    net = new_network(cfg, 3072, 10)
    history = History()
    with pytest.raises(DivergenceError, match=r"step \d+ \(learning rate"):
        fit(net, fake, cfg, OPS, history, progress=False)
    assert 0 < history.steps < 2 * cfg.n_s


def test_batch_larger_than_the_training_set_is_refused(fake):
    with pytest.raises(ConfigError, match="larger than the training set"):
        train(small(batch=100_000), fake)


@pytest.mark.parametrize("kw", [dict(hidden=(0,)), dict(lam=-1.0), dict(eta_min=1.0, eta_max=0.1), dict(batch=1), dict(init="normal"), dict(dtype="float16")])
def test_impossible_configurations_are_refused(kw):
    with pytest.raises(ConfigError):
        TrainConfig(**kw).validate()
