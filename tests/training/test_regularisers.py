"""The regularisers for long runs (issue 17) in training, on the synthetic CIFAR-10: off, every
run is the one of before bit for bit; on, each does what it says, only in training; refused
with one sentence when impossible; resumed bit for bit; set from the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import StopAt, small_cfg

from fastnet.backends import load, resolve
from fastnet.cli import build_parser, config_from_args, train_main
from fastnet.errors import ConfigError
from fastnet.model.network import evaluate, forward_train, l2_penalty
from fastnet.model.regularise import mixup, smoothed_targets
from fastnet.runs.evaluate import evaluate_run
from fastnet.runs.train import run_to_folder
from fastnet.training.checkpoint import load_checkpoint, save_checkpoint
from fastnet.training.config import TrainConfig, new_network, new_optimizer
from fastnet.training.lockstep import lockstep_blocker
from fastnet.training.loop import fit
from fastnet.training.regularisers import DROPOUT_TAG, MIXUP_TAG, regulariser
from fastnet.training.state import History, Interrupted
from fastnet.training.stepper import Stepper, augmenter
from fastnet.util.threads import blas_threads

OPS = resolve("numpy").ops
FUSED = [pytest.param(name, marks=pytest.mark.skipif(not load(name).available, reason=f"{name} unavailable")) for name in ("cython",)]
OFF = dict(label_smoothing=0.0, mixup=0.0, dropout=0.0, decay="l2")


def trained(cfg, fake, ops=OPS, optimizer=None):
    net = new_network(cfg, 3072, 10)
    optimizer = optimizer if optimizer is not None else new_optimizer(cfg, net)
    with blas_threads(1):
        history = fit(net, fake, cfg, ops, progress=False, optimizer=optimizer)
    return net, history, optimizer


def snapshot(net, history, optimizer=None):
    state = optimizer.state() if optimizer is not None else {}
    return ({k: a.tobytes() for k, a in {**net.params(), **net.running_stats(), **state}.items()},
            history.evals, history.step_eta, history.step_loss)


# ---------------------------------------------------------------------- off: as before


def test_at_their_defaults_the_options_are_left_out_and_add_no_part():
    assert TrainConfig(**OFF).to_dict() == TrainConfig().to_dict()
    cfg = small_cfg(**OFF)
    net = new_network(cfg, 3072, 10)
    assert regulariser(cfg, net) is None
    assert regulariser(small_cfg(decay="decoupled"), net) is None  # with sgd: the l2 step itself
    d = small_cfg(label_smoothing=0.1, mixup=0.2, dropout=0.3, decay="decoupled", optimizer="adam", eta_max=3e-3).to_dict()
    assert (d["label_smoothing"], d["mixup"], d["dropout"], d["decay"]) == (0.1, 0.2, 0.3, "decoupled")
    assert TrainConfig.from_dict(d).validate().to_dict() == d


def test_options_given_at_their_defaults_train_the_same_run_bit_for_bit(fake):
    """(The same run as before the options existed: checked against main's code by hashing the
    parameters and losses of such runs, numpy and cython, SGD, Adam, augmentation, skips.)"""
    assert snapshot(*trained(small_cfg(**OFF), fake)[:2]) == snapshot(*trained(small_cfg(), fake)[:2])


@pytest.mark.parametrize("backend", FUSED)
def test_the_fused_step_stays_when_off_and_steps_aside_when_on(fake, backend):
    ops = load(backend).ops
    for kw, fused in ((OFF, True), (dict(decay="decoupled"), True), (dict(label_smoothing=0.1), False), (dict(mixup=0.2), False), (dict(dropout=0.1), False)):
        cfg = small_cfg(backend=backend, **kw)
        net = new_network(cfg, 3072, 10)
        stepper = Stepper(net, fake.X_train, fake.y_train, cfg.lam, ops, new_optimizer(cfg, net), regularise=regulariser(cfg, net))
        assert (stepper.fused is not None) is fused, kw
        stepper.close()


# ------------------------------------------------------------------ decoupled decay


@pytest.mark.parametrize("backend", ["numpy", *FUSED])
def test_decoupled_with_sgd_is_the_l2_run_bit_for_bit(fake, backend):
    ops = load(backend).ops
    l2 = trained(small_cfg(backend=backend), fake, ops)
    dec = trained(small_cfg(backend=backend, decay="decoupled"), fake, ops)
    assert snapshot(*dec[:2]) == snapshot(*l2[:2])


def test_decoupled_with_adam_is_another_run_and_reports_the_same_cost(fake):
    """Adam's moments no longer see 2 lam W; the cost column stays eq (20)'s J, lam ||W||^2 in."""
    kw = dict(optimizer="adam", eta_min=1e-4, eta_max=3e-3, lam=0.01)
    net_l2, h_l2, _ = trained(small_cfg(**kw), fake)
    net_dec, h_dec, _ = trained(small_cfg(decay="decoupled", **kw), fake)
    assert not np.array_equal(net_l2.layers[0].W, net_dec.layers[0].W)
    assert h_dec.step_loss[0] == h_l2.step_loss[0]  # the first loss is before any update
    row = h_dec.evals[-1]
    with blas_threads(1):  # as the run measured it
        m = evaluate(net_dec, fake.X_val, fake.y_val, 0.01, OPS)
    assert (row["val_loss"], row["val_cost"]) == (m.loss, m.cost) and m.cost == m.loss + l2_penalty(net_dec, 0.01) > m.loss


# --------------------------------------------------------------- each option's effect


def step_once(cfg, fake, t=5):
    """Stepper(...) at step t on the first batch, and what train_step saw: (loss, net before)."""
    net = new_network(cfg, 3072, 10)
    before = new_network(cfg, 3072, 10)
    stepper = Stepper(net, fake.X_train, fake.y_train, cfg.lam, OPS, new_optimizer(cfg, net),
                      augmenter(cfg) if cfg.augment else None, regularise=regulariser(cfg, net))
    idx = np.arange(cfg.batch)
    loss = stepper(idx, 0.01, t)
    return loss, stepper, before, idx


def test_label_smoothing_trains_against_the_smoothed_targets(fake):
    cfg = small_cfg(label_smoothing=0.2)
    loss, _, before, idx = step_once(cfg, fake)
    T = smoothed_targets(fake.y_train[idx], 10, 0.2, np.float32)
    want = forward_train(before, fake.X_train[idx], T, OPS).loss.mean(dtype=np.float64)
    assert loss == want
    hard = forward_train(before, fake.X_train[idx], fake.y_train[idx], OPS).loss.mean(dtype=np.float64)
    assert loss != hard


def test_mixup_mixes_the_augmented_batch_with_lambda_and_permutation_of_the_step(fake):
    cfg = small_cfg(mixup=0.4, label_smoothing=0.1, augment=True)
    t = 7
    loss, stepper, before, idx = step_once(cfg, fake, t)
    rng = np.random.default_rng([cfg.seed, MIXUP_TAG, t])
    lam, perm = rng.beta(0.4, 0.4), rng.permutation(cfg.batch)
    Xa = augmenter(cfg)(fake.X_train[idx], t)  # augmentation first, then MixUp
    Xm, Tm = mixup(Xa, smoothed_targets(fake.y_train[idx], 10, 0.1, np.float32), lam, perm)
    np.testing.assert_array_equal(stepper.Xb, Xm)
    assert loss == forward_train(before, Xm, Tm, OPS).loss.mean(dtype=np.float64)
    assert 0 < lam < 1 and not np.array_equal(Xm, Xa)


def test_dropout_masks_come_from_the_step_and_nothing_drops_at_test_time(fake):
    cfg = small_cfg(dropout=0.3)
    t = 3
    loss, _, before, idx = step_once(cfg, fake, t)
    from fastnet.model.regularise import dropout_masks

    masks = dropout_masks(np.random.default_rng([cfg.seed, DROPOUT_TAG, t]), cfg.batch, cfg.hidden, 0.3, np.float32)
    assert loss == forward_train(before, fake.X_train[idx], fake.y_train[idx], OPS, dropout=masks).loss.mean(dtype=np.float64)
    net, history, _ = trained(cfg, fake)
    last = history.evals[-1]
    with blas_threads(1):  # as the run measured it
        m = evaluate(net, fake.X_val, fake.y_val, cfg.lam, OPS)  # test mode: no masks, no scaling
        assert evaluate(net, fake.X_val, fake.y_val, cfg.lam, OPS) == m
    assert (last["val_accuracy"], last["val_loss"]) == (m.accuracy, m.loss)


@pytest.mark.parametrize("kw", [dict(label_smoothing=0.1), dict(mixup=0.2), dict(dropout=0.1)])
def test_each_option_changes_training_and_still_learns(fake, kw):
    _, base_hist, _ = trained(small_cfg(), fake)
    net, hist, _ = trained(small_cfg(**kw), fake)
    assert hist.step_loss != base_hist.step_loss and np.isfinite(hist.step_loss).all()
    assert evaluate(net, fake.X_test, fake.y_test, 0.0, OPS).accuracy > 0.3  # 10 classes: chance is 0.1


# ------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kw, sentence", [
    (dict(label_smoothing=1.0), "label_smoothing must be in [0, 1) (0: off), got 1"),
    (dict(label_smoothing=-0.1), "label_smoothing must be in [0, 1) (0: off), got -0.1"),
    (dict(mixup=-1.0), "mixup is the alpha of Beta(alpha, alpha) and must be >= 0 (0: off), got -1"),
    (dict(dropout=1.0), "dropout is a probability in [0, 1) (0: off), got 1"),
    (dict(dropout=-0.5), "dropout is a probability in [0, 1) (0: off), got -0.5"),
    (dict(decay="adamw"), "unknown decay 'adamw'; choose one of l2, decoupled"),
    (dict(dropout="0.1"), "dropout must be a number, got \"0.1\""),
    (dict(mixup=float("inf")), "mixup must be a finite number, got Infinity"),
    (dict(decay=2), "decay must be a string, got 2"),
])
def test_bad_values_are_refused_with_one_sentence(kw, sentence):
    with pytest.raises(ConfigError) as info:
        small_cfg(**kw)
    assert str(info.value) == sentence


def test_lockstep_groups_none_of_the_batch_options():
    for kw in (dict(label_smoothing=0.1), dict(mixup=0.2), dict(dropout=0.1)):
        assert lockstep_blocker(small_cfg(**kw)) == "label smoothing, MixUp and dropout are not grouped"
    assert lockstep_blocker(small_cfg(decay="decoupled")) is None  # with sgd: the l2 step


# --------------------------------------------------------------------- resume, bit for bit


@pytest.mark.parametrize("kw", [
    dict(label_smoothing=0.1),
    dict(mixup=0.3),
    dict(dropout=0.2),
    dict(decay="decoupled", optimizer="adam", eta_min=1e-4, eta_max=3e-3),
    dict(label_smoothing=0.1, mixup=0.3, dropout=0.2, decay="decoupled", optimizer="adam", eta_min=1e-4, eta_max=3e-3, augment=True),
], ids=["smoothing", "mixup", "dropout", "decoupled-adam", "all"])
@pytest.mark.parametrize("k", [17, 24])
def test_a_run_with_each_option_resumes_bit_for_bit(fake, tmp_path, kw, k):
    cfg = small_cfg(**kw)
    want = snapshot(*trained(cfg, fake))

    net, history = new_network(cfg, 3072, 10), History()
    opt = new_optimizer(cfg, net)
    path = tmp_path / "checkpoint.npz"

    def checkpoint(position):
        save_checkpoint(path, net, history, position, cfg.to_dict(), optimizer=opt.name, optimizer_state=opt.state())

    with blas_threads(1), pytest.raises(Interrupted):
        fit(net, fake, cfg, OPS, history, progress=False, checkpoint=checkpoint, stop=StopAt(history, k), optimizer=opt)
    ck = load_checkpoint(path)
    cfg2 = TrainConfig.from_dict(ck.config).validate()
    assert cfg2 == cfg
    opt2 = new_optimizer(cfg2, ck.net)
    opt2.load_state(ck.optimizer_state)
    with blas_threads(1):
        fit(ck.net, fake, cfg2, OPS, ck.history, progress=False, start=ck.position, optimizer=opt2)
    assert snapshot(ck.net, ck.history, opt2) == want


# ---------------------------------------------------------------------------- the CLI


def test_the_flags_set_the_options():
    args = build_parser().parse_args(["train", "--label-smoothing", "0.1", "--mixup", "0.2", "--dropout", "0.3", "--decay", "decoupled",
                                      "--optimizer", "adam", "--eta-max", "0.003", "--eta-min", "1e-4"])
    cfg = config_from_args(args)
    assert (cfg.label_smoothing, cfg.mixup, cfg.dropout, cfg.decay) == (0.1, 0.2, 0.3, "decoupled")
    cfg = config_from_args(build_parser().parse_args(["train"]))
    assert (cfg.label_smoothing, cfg.mixup, cfg.dropout, cfg.decay) == (0.0, 0.0, 0.0, "l2")
    helptext = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for flag in ("--label-smoothing", "--mixup", "--dropout", "--decay {l2,decoupled}"):
        assert flag in helptext


def test_bad_flags_exit_2_with_the_sentence(tmp_path, capsys, fake_cifar_dir):
    assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(tmp_path / "r"), "--dropout", "1", "-q"]) == 2
    assert capsys.readouterr().err.strip() == "fastnet: error: dropout is a probability in [0, 1) (0: off), got 1"
    with pytest.raises(SystemExit) as info:
        train_main(["--decay", "adamw"])
    assert info.value.code == 2
    assert not (tmp_path / "r").exists()


def test_a_run_folder_records_the_options_and_evaluate_gives_its_test_accuracy(fake, fake_cifar_dir, tmp_path):
    cfg = small_cfg(dropout=0.2, label_smoothing=0.1)
    with blas_threads(1):
        metrics = run_to_folder(cfg, tmp_path / "run", data=fake, progress=False, plots=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    saved = saved.get("train", saved)
    assert saved["dropout"] == 0.2 and saved["label_smoothing"] == 0.1 and "mixup" not in saved and "decay" not in saved
    again = evaluate_run(tmp_path / "run", data_dir=fake_cifar_dir, backend="numpy")
    assert again["test_accuracy"] == metrics["test_accuracy"]


def test_gradcheck_regul_adds_the_regulariser_cases(monkeypatch, capsys):
    from fastnet.cli import main
    from fastnet.model import gradcheck as gc

    monkeypatch.setattr(gc, "STANDARD_CASES", [])
    monkeypatch.setattr(gc, "REGUL_CASES", [{"hidden": [6], "bn": False, "lam": 0.1, "label_smoothing": 0.1, "dropout": 0.3}])
    assert main(["gradcheck", "--regul"]) == 0
    out = capsys.readouterr().out
    assert "2-layer no BN lam=0.1 ls=0.1 drop=0.3" in out and "worst relative error" in out
