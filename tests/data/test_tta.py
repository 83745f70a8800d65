"""Test-time augmentation (issue 17): the views of fastnet/data/augment.py, the averaged
predictions of fastnet/model/network.py's evaluate and predict, and runs that use them
(metrics.json records the test accuracy with and without, and the validation accuracy with;
``fastnet evaluate`` and ``load_run`` apply the run's own views)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import fastnet
from fastnet.backends import load
from fastnet.cli import main, train_main
from fastnet.data.augment import augment_batch, flipped, shifted, tta_views
from fastnet.errors import ConfigError
from fastnet.model.network import evaluate, forward_eval, init_network, predict
from fastnet.training.config import TrainConfig
from fastnet.training.lockstep import lockstep_blocker

OPS = load("numpy").ops


def images(n=6, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, 3072)).astype(dtype)


def test_flip_is_a_mirror_and_its_own_inverse():
    X = images()
    F = flipped(X)
    assert np.array_equal(F.reshape(-1, 3, 32, 32), X.reshape(-1, 3, 32, 32)[..., ::-1])
    assert np.array_equal(flipped(F), X)


@pytest.mark.parametrize("dy, dx", [(1, 0), (-1, 0), (0, 1), (0, -1), (2, -1)])
def test_shift_is_augment_batchs_translation(dy, dx):
    """The same pixels as augment_batch's move by (dy, dx) with its zero border: built here
    from a padded copy, the way augment_batch cuts its crops."""
    X = images()
    pad = np.zeros((len(X), 3, 36, 36), X.dtype)
    pad[:, :, 2:34, 2:34] = X.reshape(-1, 3, 32, 32)
    want = pad[:, :, 2 - dy : 34 - dy, 2 - dx : 34 - dx].reshape(len(X), -1)
    assert np.array_equal(shifted(X, dy, dx), want)


def test_shift_matches_augment_batch_on_its_own_draws():
    """augment_batch with shift 1 and no flip moves each image by one of the 9 offsets; one of
    shifted's moves reproduces each image exactly."""
    X = images(20, seed=3)
    A = augment_batch(X, np.random.default_rng(5), shift=1, flip=False)
    moves = [shifted(X, dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for i in range(len(X)):
        assert any(np.array_equal(A[i], m[i]) for m in moves)


def test_views_per_mode():
    X = images()
    assert tta_views("none") is None
    flip = tta_views("flip")(X)
    assert len(flip) == 2 and flip[0] is X and np.array_equal(flip[1], flipped(X))
    ten = tta_views("flip-shift")(X)
    assert len(ten) == 10
    assert np.array_equal(ten[2], shifted(X, 1, 0)) and np.array_equal(ten[3], flipped(shifted(X, 1, 0)))
    assert len({v.tobytes() for v in ten}) == 10  # ten different views
    with pytest.raises(ConfigError, match="choose one of none, flip, flip-shift"):
        tta_views("mirror")
    with pytest.raises(ConfigError, match="3072 values"):
        tta_views("flip")(np.zeros((2, 100), np.float32))


@pytest.fixture(scope="module")
def net():
    return init_network(3072, (20, 15), 10, bn=False, rng=np.random.default_rng(0), dtype=np.float64)


def test_one_view_is_plain_evaluation(net):
    """A single view (the rows themselves) gives the plain figures: the same accuracy and, in
    float64, the loss to 1e-12 relative (the averaged path takes the softmax in its own
    expression, -log of the normalised probability, instead of log-sum-exp)."""
    X, y = images(300, dtype=np.float64), np.arange(300) % 10
    plain = evaluate(net, X, y, 0.0, OPS, chunk=128)
    one = evaluate(net, X, y, 0.0, OPS, chunk=128, views=lambda Xc: [Xc])
    assert one.accuracy == plain.accuracy
    assert one.loss == pytest.approx(plain.loss, rel=1e-12)


def test_views_average_the_probabilities(net):
    """evaluate's accuracy and loss and predict's classes equal the mean probability over the
    views computed here, row by row, in chunks of any size."""
    X, y = images(300, seed=1, dtype=np.float64), np.arange(300) % 10
    views = tta_views("flip-shift")
    P = []
    for V in views(X):
        S = forward_eval(net, V, OPS)
        E = np.exp(S - S.max(axis=1, keepdims=True))
        P.append(E / E.sum(axis=1, keepdims=True))
    P = np.mean(P, axis=0)
    m = evaluate(net, X, y, 0.0, OPS, chunk=128, views=views)
    assert m.accuracy == np.mean(P.argmax(axis=1) == y)
    assert m.loss == pytest.approx(-np.log(P[np.arange(300), y]).mean(), rel=1e-12)
    assert np.array_equal(predict(net, X, OPS, chunk=70, views=views), P.argmax(axis=1))


def test_config_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match="unknown test-time augmentation 'x'"):
        TrainConfig(tta="x").validate()
    with pytest.raises(ConfigError, match="PCA-whitened rows are not images"):
        TrainConfig(tta="flip", whiten="pca").validate()
    assert TrainConfig(tta="flip", whiten="zca").validate().tta == "flip"
    assert lockstep_blocker(TrainConfig(tta="flip").validate()) == "test-time augmentation is not grouped"


def test_a_run_records_both_and_evaluate_applies_the_runs_views(fake_cifar_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out), "--n-val", "300", "--hidden", "16", "--n-s", "30", "--cycles", "1",
                       "--batch", "50", "--threads", "1", "--augment", "--tta", "flip-shift", "--no-plots", "-q", "--backend", "numpy"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["tta"] == "flip-shift"
    metrics = json.loads((out / "metrics.json").read_text())
    run = fastnet.load_run(out)
    data = fastnet.load_cifar10(fake_cifar_dir, n_val=300, progress=False)
    without = evaluate(run.network, data.X_test, data.y_test, 0.0, OPS).accuracy
    with_views = evaluate(run.network, data.X_test, data.y_test, 0.0, OPS, views=tta_views("flip-shift")).accuracy
    assert metrics["test_accuracy"] == with_views and metrics["test_accuracy_without_tta"] == without
    val = evaluate(run.network, data.X_val, data.y_val, 0.0, OPS, views=tta_views("flip-shift")).accuracy
    assert metrics["val_accuracy_tta"] == val
    assert metrics["val_accuracy"] == run.history[-1]["val_accuracy"]  # the rows: without views
    assert run.evaluate(data.X_test, data.y_test)["accuracy"] == with_views
    assert np.mean(run.predict(data.X_test) == data.y_test) == with_views
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data-dir", str(fake_cifar_dir)]) == 0
    assert f"test accuracy {with_views:.4f}" in capsys.readouterr().out
