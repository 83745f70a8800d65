"""The bonus training features on the synthetic CIFAR-10: schedules, Adam, augmentation,
PreciseBN and adaptive BN -- their settings refused up front, their results exact (PreciseBN's
aggregation, augmentation's pixels), and every one of them resumable bit for bit."""
from __future__ import annotations

import json
import math
import os
import signal

import numpy as np
import pytest
from conftest import StopAt, small_cfg

import fastnet.training.loop as loop_mod
import fastnet.training.stepper as train_mod
from fastnet.backends import resolve
from fastnet.cli import main
from fastnet.data.augment import augment_batch
from fastnet.errors import ConfigError
from fastnet.model.bn_stats import precise_stats, using_stats
from fastnet.model.network import (
    evaluate,
    forward_train,
    hidden_forward_train,
    init_network,
    update_running_stats,
)
from fastnet.model.optim import learning_rate
from fastnet.runs.evaluate import adaptive_stats
from fastnet.runs.train import resume_run, run_to_folder
from fastnet.training.checkpoint import load_checkpoint, save_checkpoint
from fastnet.training.config import TrainConfig, new_network, new_optimizer
from fastnet.training.loop import fit
from fastnet.training.state import History, Interrupted

OPS = resolve("numpy").ops


# ------------------------------------------------------------------------------ schedules


def test_decaying_schedules():
    lr = lambda t, s, **kw: learning_rate(t, s, 1e-4, 1e-2, 100, 300, **kw)  # noqa: E731
    assert lr(0, "cosine") == pytest.approx(1e-2) and lr(300, "cosine") == pytest.approx(1e-4)
    assert lr(150, "cosine") == pytest.approx((1e-2 + 1e-4) / 2)
    assert [lr(t, "step") for t in (0, 99, 100, 199, 200, 299)] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4])
    assert lr(300, "exponential") == pytest.approx(1e-3) and lr(150, "exponential") == pytest.approx(1e-2 * 0.1 ** 0.5)
    assert lr(0, "step", decay_rate=0.5, decay_steps=10) == 1e-2 and lr(25, "step", decay_rate=0.5, decay_steps=10) == pytest.approx(2.5e-3)
    # warm-up: linear from eta_min to eta_max, then the schedule over the remaining steps
    assert lr(0, "cosine", warmup=50) == pytest.approx(1e-4) and lr(25, "cosine", warmup=50) == pytest.approx((1e-4 + 1e-2) / 2)
    assert lr(50, "cosine", warmup=50) == pytest.approx(1e-2) and lr(300, "cosine", warmup=50) == pytest.approx(1e-4)
    assert lr(100, "cyclic") == pytest.approx(1e-2)  # the assignment's schedule is unchanged


@pytest.mark.parametrize("kw, match", [
    (dict(optimizer="adam", eta_max=0.1), "Adam with eta_max 0.1"),  # the SGD default would wreck the network
    (dict(optimizer="adam", eta_max=0.003, beta1=1.0), "beta1"),
    (dict(optimizer="adam", eta_max=0.003, adam_eps=0.0), "epsilon"),
    (dict(optimizer="rmsprop"), "unknown optimizer"),
    (dict(schedule="linear"), "unknown schedule"),
    (dict(schedule="cyclic", warmup=10), "cyclic one already rises"),
    (dict(schedule="cosine", warmup=60), "leaves nothing"),
    (dict(schedule="step", decay_rate=0.0), "decay_rate"),
    (dict(bn=False, bn_stats="precise"), "no batch norm"),
    (dict(bn_stats="precise", precise_images=10), "at least one batch"),
    (dict(augment_shift=9), "augment_shift"),
    (dict(augment="yes"), "augment must be true or false"),
])
def test_bonus_settings_are_refused_up_front(kw, match):
    with pytest.raises(ConfigError, match=match):
        small_cfg(**kw)


def test_adam_with_the_cyclic_schedule_is_allowed_in_adams_range():
    cfg = small_cfg(optimizer="adam", eta_min=1e-5, eta_max=3e-3)
    assert cfg.schedule == "cyclic" and cfg.optimizer == "adam"


def test_bonus_settings_at_their_defaults_stay_out_of_the_configuration():
    """Configurations and finished runs from before the bonus compare equal to today's."""
    d = TrainConfig().to_dict()
    assert "optimizer" not in d and "skip" not in d and "bn_stats" not in d
    assert TrainConfig.from_dict(d).to_dict() == d
    d = small_cfg(optimizer="adam", eta_max=3e-3, augment=True).to_dict()
    assert d["optimizer"] == "adam" and d["augment"] is True and "beta1" not in d
    assert TrainConfig.from_dict(d).validate() == small_cfg(optimizer="adam", eta_max=3e-3, augment=True)


# ---------------------------------------------------------------------------- augmentation


def naive_augment(X, seed, shift):
    """The same draws as augment_batch, applied one image at a time with explicit loops."""
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    dy, dx, flip = rng.integers(0, 2 * shift + 1, n) - shift, rng.integers(0, 2 * shift + 1, n) - shift, rng.random(n) < 0.5
    out = np.zeros_like(X).reshape(n, 3, 32, 32)
    imgs = X.reshape(n, 3, 32, 32)
    for i in range(n):
        for r in range(32):
            for c in range(32):
                sr, sc = r + dy[i], c + dx[i]
                if 0 <= sr < 32 and 0 <= sc < 32:
                    out[i, :, r, 31 - c if flip[i] else c] = imgs[i, :, sr, sc]
    return out.reshape(n, 3072), dy, dx, flip


def test_augmentation_moves_and_mirrors_the_pixels():
    X = np.random.default_rng(0).standard_normal((40, 3072)).astype(np.float32)
    got = augment_batch(X, np.random.default_rng(7), shift=3)
    want, dy, dx, flip = naive_augment(X, 7, 3)
    assert got.flags.c_contiguous and got.dtype == X.dtype
    np.testing.assert_array_equal(got, want)
    assert len(set(zip(dy, dx))) > 10 and 0 < flip.sum() < 40  # the test bites


def test_augmentation_without_moves_is_the_identity_and_leaves_its_input():
    X = np.random.default_rng(1).standard_normal((5, 3072))
    before = X.copy()
    np.testing.assert_array_equal(augment_batch(X, np.random.default_rng(0), shift=0, flip=False), X)
    augment_batch(X, np.random.default_rng(0), shift=4)
    np.testing.assert_array_equal(X, before)


# ------------------------------------------------------------------------------ PreciseBN


def test_precise_stats_of_the_first_layer_are_those_of_all_rows_pooled():
    """The first layer's scores do not depend on the batching: PreciseBN's mean and variance
    there are exactly the pooled ones (law of total variance), whatever the batch size."""
    net = init_network(30, [12, 9], 5, dtype=np.float64, rng=np.random.default_rng(0))
    X = np.random.default_rng(1).standard_normal((230, 30)) + 0.5
    S = X @ net.layers[0].W.T
    for batch in (10, 23, 50, 230):
        stats = precise_stats(net, X, batch, OPS)
        np.testing.assert_allclose(stats[0][0], S.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(stats[0][1], S.var(0), rtol=1e-11)


def test_precise_stats_of_deeper_layers_aggregate_the_training_mode_batches():
    net = init_network(30, [12, 9], 5, dtype=np.float64, rng=np.random.default_rng(0))
    X = np.random.default_rng(2).standard_normal((120, 30))
    stats = precise_stats(net, X, 40, OPS)
    mus, vs = zip(*[(c[1].mu, c[1].v) for c in (hidden_forward_train(net, X[i : i + 40], OPS) for i in (0, 40, 80))])
    mu = np.mean(mus, 0)
    np.testing.assert_allclose(stats[1][0], mu, rtol=1e-12)
    np.testing.assert_allclose(stats[1][1], np.mean(vs, 0) + np.mean((np.array(mus) - mu) ** 2, 0), rtol=1e-12)


def test_using_stats_restores_the_running_averages():
    net = init_network(30, [12], 5, dtype=np.float64, rng=np.random.default_rng(0))
    X = np.random.default_rng(2).standard_normal((40, 30))
    update_running_stats(net, forward_train(net, X, np.zeros(40, int), OPS))
    mu = net.layers[0].mu_av
    with using_stats(net, precise_stats(net, X + 1, 20, OPS)):
        assert not np.array_equal(net.layers[0].mu_av, mu)
    assert net.layers[0].mu_av is mu


def test_precise_training_is_the_ema_training_measured_with_precise_statistics(fake):
    """PreciseBN changes only what evaluation uses: the parameters and exponential averages
    are those of the EMA run bit for bit, and each history row carries both accuracies."""
    ema_cfg = small_cfg(hidden=(20, 16, 20), bn=True)
    pre_cfg = small_cfg(hidden=(20, 16, 20), bn=True, bn_stats="precise", precise_images=400, precise_every=10)
    nets = {}
    hist = {}
    for name, cfg in (("ema", ema_cfg), ("precise", pre_cfg)):
        nets[name] = new_network(cfg, 3072, 10)
        hist[name] = fit(nets[name], fake, cfg, OPS, progress=False)
    for k, a in {**nets["ema"].params(), **nets["ema"].running_stats()}.items():
        assert a.tobytes() == {**nets["precise"].params(), **nets["precise"].running_stats()}[k].tobytes(), k
    rows = {r["step"]: r for r in hist["precise"].evals}
    assert sorted(rows) == [10, 20, 24, 30, 40, 48, 50, 60]  # every 10 steps and every epoch end
    for r in hist["ema"].evals:
        assert rows[r["step"]]["val_accuracy_ema"] == r["val_accuracy"]
    # finish_bn_stats: EMA figures for the record, then the final PreciseBN statistics installed
    out = loop_mod.finish_bn_stats(nets["precise"], fake, pre_cfg, OPS)
    assert out["val_accuracy_ema"] == hist["ema"].evals[-1]["val_accuracy"] and "test_accuracy_ema" in out
    assert evaluate(nets["precise"], fake.X_val, fake.y_val, 0, OPS).accuracy == rows[60]["val_accuracy"]


# --------------------------------------------------------------------- resume, bit for bit


BONUS_CFG = dict(hidden=(20, 16, 20), skip=True, bn_placement="after", optimizer="adam", eta_min=1e-4, eta_max=3e-3,
                 schedule="cosine", warmup=8, augment=True, augment_shift=2, bn_stats="precise", precise_images=200, precise_every=10)


def snapshot(net, history, optimizer):
    return ({k: a.tobytes() for k, a in {**net.params(), **net.running_stats(), **optimizer.state()}.items()},
            history.evals, history.step_eta, history.step_loss)


@pytest.mark.parametrize("k", [1, 17, 24, 47])
def test_a_run_with_every_bonus_feature_resumes_bit_for_bit(fake, tmp_path, k):
    cfg = small_cfg(**BONUS_CFG)
    net = new_network(cfg, 3072, 10)
    opt = new_optimizer(cfg, net)
    want = snapshot(net, fit(net, fake, cfg, OPS, progress=False, optimizer=opt), opt)

    net, history = new_network(cfg, 3072, 10), History()
    opt = new_optimizer(cfg, net)
    path = tmp_path / "checkpoint.npz"

    def checkpoint(position, net=net, history=history, opt=opt):
        save_checkpoint(path, net, history, position, cfg.to_dict(), optimizer=opt.name, optimizer_state=opt.state())

    with pytest.raises(Interrupted):
        fit(net, fake, cfg, OPS, history, progress=False, checkpoint=checkpoint, stop=StopAt(history, k), optimizer=opt)
    ck = load_checkpoint(path)
    assert ck.optimizer == "adam" and set(ck.optimizer_state) == {f"{w}.{p}" for w in "mv" for p in ck.net.params()}
    opt2 = new_optimizer(cfg, ck.net)
    opt2.load_state(ck.optimizer_state)
    fit(ck.net, fake, cfg, OPS, ck.history, progress=False, start=ck.position, optimizer=opt2)
    assert snapshot(ck.net, ck.history, opt2) == want


def test_resuming_adam_without_its_state_is_refused(fake, tmp_path):
    cfg = small_cfg(optimizer="adam", eta_max=3e-3)
    net, history = new_network(cfg, 3072, 10), History()
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(Interrupted):
        fit(net, fake, cfg, OPS, history, progress=False, stop=StopAt(history, 5),
            checkpoint=lambda p: save_checkpoint(path, net, history, p, cfg.to_dict()))
    ck = load_checkpoint(path)
    with pytest.raises(ConfigError, match="optimiser state"):
        fit(ck.net, fake, cfg, OPS, ck.history, progress=False, start=ck.position)


def test_run_folder_interrupted_and_resumed_equals_uninterrupted(fake, fake_cifar_dir, tmp_path, monkeypatch):
    """Through run_to_folder / resume_run (what --resume does): Adam's moments go into the
    checkpoint and come back; the finished model equals an uninterrupted run's."""
    cfg = small_cfg(**BONUS_CFG)
    m1 = run_to_folder(cfg, tmp_path / "whole", data=fake, progress=False, plots=False)
    real_step = train_mod.train_step
    calls = {"n": 0}

    def interrupting(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 30:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kw)

    monkeypatch.setattr(train_mod, "train_step", interrupting)
    with pytest.raises(Interrupted):
        run_to_folder(cfg, tmp_path / "cut", data=fake, progress=False, plots=False)
    monkeypatch.setattr(train_mod, "train_step", real_step)
    with np.load(tmp_path / "cut" / "checkpoint.npz") as z:
        assert any(f.startswith("opt.m.") for f in z.files)
    m2 = resume_run(tmp_path / "cut", data_dir=fake_cifar_dir, progress=False, plots=False)
    assert m2["resumed_from_step"] == 30 and m2["test_accuracy"] == m1["test_accuracy"]
    assert m1["test_accuracy_ema"] == m2["test_accuracy_ema"]
    with np.load(tmp_path / "whole" / "model.npz") as a, np.load(tmp_path / "cut" / "model.npz") as b:
        assert a.files == b.files and all(a[f].tobytes() == b[f].tobytes() for f in a.files)
    header = (tmp_path / "cut" / "history.csv").read_text().splitlines()[0]
    assert header.endswith("val_accuracy_ema")


# ----------------------------------------------------------------------- adaptive BN, CLI


def test_adaptive_stats_pool_and_subset(fake):
    cfg = small_cfg()
    net = new_network(cfg, 3072, 10)
    fit(net, fake, cfg, OPS, progress=False)
    stats, used = adaptive_stats(net, fake.X_test, 50, OPS)
    assert used == len(fake.y_test)
    np.testing.assert_allclose(stats[0][0], (fake.X_test @ net.layers[0].W.T).mean(0), rtol=1e-4, atol=1e-5)
    _, used = adaptive_stats(net, fake.X_test, 50, OPS, images=60, copies=3)
    assert used == 60


def test_cli_bonus_flags_and_adaptive_evaluation(fake_cifar_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data-dir", str(fake_cifar_dir), "--out", str(out), "--n-val", "300", "--hidden", "20,16,20",
                 "--batch", "50", "--n-s", "24", "--cycles", "1", "--skip", "--optimizer", "adam", "--eta-max", "3e-3",
                 "--schedule", "cosine", "--augment", "--bn-stats", "precise", "--precise-images", "300", "-q", "--no-plots",
                 "--backend", "numpy"])
    assert code == 0, capsys.readouterr().err
    train = json.loads((out / "config.json").read_text())["train"]
    assert (train["skip"], train["optimizer"], train["schedule"], train["augment"], train["bn_stats"]) == (True, "adam", "cosine", True, "precise")
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["test_accuracy_ema"])
    capsys.readouterr()
    assert main(["evaluate", str(out), "--adaptive-bn", "--augment", "--copies", "2", "--adaptive-images", "100"]) == 0
    said = capsys.readouterr().out
    assert "with adaptive BN (statistics of 100 test images + 2 augmented copies)" in said
    assert main(["evaluate", str(out), "--augment"]) == 2
    assert "go with --adaptive-bn" in capsys.readouterr().err
    assert main(["train", "--data-dir", str(fake_cifar_dir), "--out", str(tmp_path / "x"), "--optimizer", "adam", "-q"]) == 2
    assert "Adam with eta_max 0.1" in capsys.readouterr().err


def test_training_metrics_on_a_subset_change_nothing_else(fake):
    full, sub = small_cfg(), small_cfg(eval_train_images=300)
    nets = [new_network(c, 3072, 10) for c in (full, sub)]
    hists = [fit(net, fake, c, OPS, progress=False) for net, c in zip(nets, (full, sub))]
    for k, a in nets[0].params().items():
        assert a.tobytes() == nets[1].params()[k].tobytes()
    assert [r["val_accuracy"] for r in hists[0].evals] == [r["val_accuracy"] for r in hists[1].evals]
    assert [r["train_accuracy"] for r in hists[0].evals] != [r["train_accuracy"] for r in hists[1].evals]
    assert all(round(r["train_accuracy"] * 300, 6).is_integer() for r in hists[1].evals)  # of 300 images
