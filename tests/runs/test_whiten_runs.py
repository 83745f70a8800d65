"""Runs with input whitening (issue 17): the run folder and model file hold the whitening,
``fastnet evaluate`` and ``fastnet.load_run`` apply it to the test images as training did,
the fused step gathers the float rows, and a stopped run resumes bit for bit with the
whitening it started with (loaded, never fitted again).

Every run here trains on one BLAS thread (``--threads 1``): bitwise equality holds for one
backend and thread count. A whitening of 3072 values costs a few seconds to fit (two
1536 x 1536 eigendecompositions), so the runs are module fixtures, shared.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import fastnet
import fastnet.data.whiten as whiten_mod
import fastnet.training.stepper as train_mod
from fastnet.backends import load, resolve
from fastnet.cli import main, train_main
from fastnet.data.batches import load_batch
from fastnet.data.cifar10 import load_cifar10
from fastnet.data.whiten import fit_whitening, whiten_dataset
from fastnet.errors import ConfigError, FastnetError
from fastnet.model.files import ModelFileError, load_model, load_network, save_network
from fastnet.runs.evaluate import evaluate_adaptive, load_model_inputs
from fastnet.training.config import TrainConfig
from fastnet.training.fused import FusedStep
from fastnet.training.lockstep import lockstep_blocker
from fastnet.training.loop import fit
from fastnet.training.stepper import Stepper

# 1200 training rows / batch 50 = 24 steps per epoch; 60 steps = 2.5 epochs
SMALL = ["--n-val", "300", "--hidden", "16", "--n-s", "30", "--cycles", "1", "--batch", "50", "--eval-every", "7", "--threads", "1",
         "--no-plots", "-q"]
ZCA = ["--contrast", "--whiten", "zca", "--augment", "--backend", "numpy"]
COMPILED = "cython" if load("cython").available else "numba"


def train(fake_cifar_dir, out: Path, flags) -> int:
    return train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out)] + SMALL + flags)


@pytest.fixture(scope="module")
def zca_run(fake_cifar_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("zca") / "run"
    assert train(fake_cifar_dir, out, ZCA) == 0
    return out


@pytest.fixture(scope="module")
def pca_run(fake_cifar_dir, tmp_path_factory):
    """PCA to 100 values on a compiled backend, without augmentation: the fused step gathers its batches."""
    out = tmp_path_factory.mktemp("pca") / "run"
    assert train(fake_cifar_dir, out, ["--whiten", "pca", "--whiten-dims", "100", "--backend", COMPILED]) == 0
    return out


def model_arrays(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_the_run_folder_and_model_hold_the_whitening(zca_run, pca_run):
    for run, width in ((zca_run, 3072), (pca_run, 100)):
        assert (run / "whitening.npz").is_file()
        train = json.loads((run / "config.json").read_text())["train"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["whiten_seconds"] > 0
        net, mean, std, whitening = load_model_inputs(run / "model.npz")
        assert whitening.settings() == {k: train.get(k, d) for k, d in (("contrast", False), ("whiten", "none"), ("whiten_eps", 10.0), ("whiten_dims", None))}
        assert net.sizes[0] == whitening.width == width and mean.shape == std.shape == (3072,)
        stored = model_arrays(run / "whitening.npz")
        in_model = {k: a for k, a in model_arrays(run / "model.npz").items() if k.startswith("whiten.")}
        assert stored.keys() == in_model.keys() and all(stored[k].tobytes() == in_model[k].tobytes() for k in stored)
        with pytest.raises(ModelFileError, match="holds an input whitening"):
            load_network(run / "model.npz")  # the 3-tuple would drop it


def test_model_files_without_whitening_load_as_before(zca_run, tmp_path):
    net, mean, std, _ = load_model_inputs(zca_run / "model.npz")
    save_network(tmp_path / "plain.npz", net, mean, std)
    assert not any(k.startswith("whiten.") for k in model_arrays(tmp_path / "plain.npz"))
    back, m2, s2 = load_network(tmp_path / "plain.npz")
    assert back.sizes == net.sizes and np.array_equal(m2, mean)
    assert load_model(tmp_path / "plain.npz")[3] == {} and load_model_inputs(tmp_path / "plain.npz")[3] is None


@pytest.mark.parametrize("which", ["zca_run", "pca_run"])
def test_evaluate_gives_the_recorded_test_accuracy(which, request, capsys):
    run = request.getfixturevalue(which)
    recorded = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    assert main(["evaluate", str(run)]) == 0
    assert f"test accuracy {recorded:.4f} on 300 images (recorded at training: {recorded:.4f})" in capsys.readouterr().out


def test_load_run_applies_the_whitening_to_pixels_and_normalised_rows(zca_run, fake_cifar_dir):
    run = fastnet.load_run(zca_run)
    U, y = load_batch(fake_cifar_dir / "cifar-10-batches-py" / "test_batch")
    assert run.evaluate(U, y)["accuracy"] == run.test_accuracy  # pixels: exactly the run's test rows
    data = load_cifar10(fake_cifar_dir, n_val=300, progress=False)
    assert np.array_equal(run.predict(data.X_test), run.predict(U))
    with pytest.raises(FastnetError, match=r"expected images of shape \(n, 3072\)"):
        run.predict(U[:, :100])


def test_the_test_rows_are_those_the_run_measured(zca_run, fake_cifar_dir):
    """The stored whitening applied to the test images gives, bit for bit, the rows a fresh
    whitening of the same data gives (the fit is deterministic for one thread count: the run's,
    one; the BLAS products of the fit are cut by it)."""
    from threadpoolctl import threadpool_limits

    data = load_cifar10(fake_cifar_dir, n_val=300, progress=False)
    _, _, _, stored = load_model_inputs(zca_run / "model.npz")
    with threadpool_limits(1, user_api="blas"):
        fresh = fit_whitening(data.X_train, contrast=True, mode="zca", eps=10.0)
    assert fresh.sha256() == stored.sha256()
    assert np.array_equal(stored.transform(data.X_test), whiten_dataset(data, fresh).X_test)


def test_a_stopped_whitened_run_resumes_bit_for_bit_without_fitting_again(zca_run, fake_cifar_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real, count = train_mod.train_step, [0]

    def step(*args):
        count[0] += 1
        if count[0] == 31:  # mid-epoch, between two --eval-every evaluations
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(train_mod, "train_step", step)
    assert train(fake_cifar_dir, out, ZCA) == 130
    monkeypatch.undo()
    assert "interrupted at step 31" in capsys.readouterr().err

    def no_fit(*args, **kw):
        raise AssertionError("a resumed run fits its whitening again")

    monkeypatch.setattr(whiten_mod, "fit_whitening", no_fit)
    saved = (out / "whitening.npz").read_bytes()
    (out / "whitening.npz").unlink()  # missing: refused in one sentence
    assert train_main(["--resume", str(out), "-q"]) == 2
    assert "has no whitening.npz, the input whitening it trained with" in capsys.readouterr().err
    other = whiten_mod.from_arrays({k: a for k, a in model_arrays(zca_run / "model.npz").items() if k.startswith("whiten.")})
    other = whiten_mod.Whitening(**{**vars(other), "mean": other.mean + 1e-3})  # same settings, another whitening
    np.savez(out / "whitening.npz", **other.to_arrays())
    assert train_main(["--resume", str(out), "-q"]) == 2
    assert "or another whitening.npz" in capsys.readouterr().err
    (out / "whitening.npz").write_bytes(saved)
    assert train_main(["--resume", str(out), "-q", "--no-plots"]) == 0
    a, b = model_arrays(zca_run / "model.npz"), model_arrays(out / "model.npz")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), f"model.npz {k} differs"
    for name in ("history.csv", "steps.csv"):
        assert (zca_run / name).read_text() == (out / name).read_text(), name
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == 31


def test_the_fused_step_gathers_whitened_float_rows(fake_cifar_dir):
    """Contrast-normalised rows (float arrays, no eigendecomposition to wait for): the stepper
    takes the compiled step, which gathers through ``gather_rows``; two epochs equal the op-by-op
    fit in float64 (tests/training/test_fused.py's tolerance)."""
    data = load_cifar10(fake_cifar_dir, n_val=300, dtype=np.float64, progress=False)
    data = whiten_dataset(data, fit_whitening(data.X_train, contrast=True, mode="none"))
    assert isinstance(data.X_train, np.ndarray) and data.X_train.dtype == np.float64
    cfg = TrainConfig(hidden=(16, 16), batch=50, n_s=24, cycles=1, dtype="float64", contrast=True).validate()
    ops = resolve(COMPILED).ops
    net = fastnet.training.config.new_network(cfg, 3072, 10)
    stepper = Stepper(net, data.X_train, data.y_train, cfg.lam, ops)
    assert stepper.fused is not None and FusedStep._source_of(data.X_train)[3] is False  # the float-array gather
    stepper.close()
    nets = []
    for o in (ops, SimpleNamespace(**{**vars(ops), "fused_step": None})):
        nets.append(fastnet.training.config.new_network(cfg, 3072, 10))
        fit(nets[-1], data, cfg, o, progress=False)
    for k, A in nets[0].params().items():
        B = nets[1].params()[k]
        assert np.abs(A - B).max() <= 1e-12 * np.abs(A).max(), k


def test_a_dataset_whitened_otherwise_is_refused(fake_cifar_dir, tmp_path):
    data = load_cifar10(fake_cifar_dir, n_val=300, progress=False)
    contrasted = whiten_dataset(data, fit_whitening(data.X_train, contrast=True, mode="none"))
    with pytest.raises(ConfigError, match="the data set given is whitened with"):
        fastnet.train(data=contrasted, out=tmp_path / "r", n_val=300, hidden=(8,), n_s=2, cycles=1, progress=False, plots=False)
    assert not (tmp_path / "r").exists()


def test_whitened_runs_train_alone_not_in_lock_step():
    assert lockstep_blocker(TrainConfig(whiten="zca")) == "input whitening is not grouped"
    assert lockstep_blocker(TrainConfig(contrast=True)) == "input whitening is not grouped"
    assert lockstep_blocker(TrainConfig()) is None


def test_adaptive_bn_translates_zca_images_but_not_pca_components(zca_run, pca_run):
    r = evaluate_adaptive(zca_run, copies=1)
    assert r["copies"] == 1 and 0 <= r["adaptive_test_accuracy"] <= 1
    with pytest.raises(FastnetError, match="PCA components, not images"):
        evaluate_adaptive(pca_run, copies=1)
