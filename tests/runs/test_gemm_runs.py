"""``--gemm`` in run folders: the provider a run resolved is recorded in config.json and
metrics.json and taken again on resume; one that is not installed is one sentence, exit 2.

The runs take the extension's fused step (the provider only matters there); auto's choice is
made by fake timings, never by a real measurement."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import small_cfg, stopped_run

import fastnet.runs.train as run_train
from fastnet.backends import gemm_choice, load, providers
from fastnet.cli import main, train_main
from fastnet.errors import FastnetError
from fastnet.training.fused import FusedStep

pytestmark = pytest.mark.skipif(not load("cython").available, reason="the extension is not built: no fused step")
needs_mkl = pytest.mark.skipif(gemm_choice.table("mkl") is None, reason="Intel MKL is not installed (pip install 'fastnet[mkl]')")


@pytest.fixture
def fake_auto(monkeypatch, tmp_path):
    """auto's measurement replaced: ``fake_auto(winner)`` makes the named provider the faster."""
    monkeypatch.setenv("FASTNET_GEMM_CACHE", str(tmp_path / "gemm_choice.json"))
    monkeypatch.setattr(providers, "avx512_upgrade", lambda: False)  # OpenBLAS and MKL only

    def make(winner):
        (tmp_path / "gemm_choice.json").unlink(missing_ok=True)
        monkeypatch.setattr(gemm_choice, "measure", lambda *a: {"openblas": 1.0, "mkl": 0.5} if winner == "mkl" else {"openblas": 1.0, "mkl": 2.0})

    return make


@pytest.fixture
def used(monkeypatch):
    """The providers every fused step was handed, in order."""
    names = []
    real = FusedStep.use_gemm

    def spy(self, name):
        names.append(name)
        real(self, name)

    monkeypatch.setattr(FusedStep, "use_gemm", spy)
    return names


def _records(out):
    return json.loads((out / "config.json").read_text()), json.loads((out / "metrics.json").read_text())


def test_without_mkl_a_run_records_openblas_and_its_settings_are_unchanged(fake, tmp_path, monkeypatch, used):
    monkeypatch.setitem(gemm_choice._tables, "mkl", None)
    monkeypatch.setattr(providers, "avx512_upgrade", lambda: False)  # and NumPy's OpenBLAS on the CPU's best kernels
    out = tmp_path / "run"
    run_train.run_to_folder(small_cfg(backend="cython"), out, data=fake, progress=False, plots=False)
    config, metrics = _records(out)
    assert "gemm" not in config["train"]  # at its default, left out as before --gemm existed
    assert config["gemm"] == metrics["gemm"] == "openblas" and used == ["openblas"]


@needs_mkl
@pytest.mark.parametrize("setting, winner, resolved", [("mkl", "openblas", "mkl"), ("auto", "mkl", "mkl"), ("auto", "openblas", "openblas"),
                                                        ("openblas", "mkl", "openblas")])
def test_a_run_records_the_provider_it_resolved(fake, tmp_path, fake_auto, used, setting, winner, resolved):
    fake_auto(winner)
    out = tmp_path / "run"
    run_train.run_to_folder(small_cfg(backend="cython", gemm=setting), out, data=fake, progress=False, plots=False)
    config, metrics = _records(out)
    assert config["train"].get("gemm", "auto") == setting  # what was asked for
    assert config["gemm"] == metrics["gemm"] == resolved  # what ran: never "auto"
    assert used == [resolved]


@needs_mkl
def test_a_resumed_run_takes_the_provider_it_recorded(fake, tmp_path, fake_auto, used, monkeypatch):
    """Started on auto = MKL, interrupted, resumed after auto would choose OpenBLAS: MKL again, and
    the finished model is bit for bit that of the run never interrupted."""
    cfg = small_cfg(backend="cython")
    fake_auto("mkl")
    whole = tmp_path / "whole"
    run_train.run_to_folder(cfg, whole, data=fake, progress=False, plots=False)
    out = tmp_path / "stopped"
    stopped_run(cfg, out, fake, monkeypatch)
    assert json.loads((out / "config.json").read_text())["gemm"] == "mkl"
    fake_auto("openblas")  # what a new run would now choose
    run_train.resume_run(out, data_dir=fake.source, progress=False, plots=False)
    assert used == ["mkl", "mkl", "mkl"]
    assert _records(out)[1]["gemm"] == "mkl"
    a, b = np.load(whole / "model.npz"), np.load(out / "model.npz")
    assert sorted(a.files) == sorted(b.files) and all(a[k].tobytes() == b[k].tobytes() for k in a.files)


def test_a_run_recorded_before_gemm_existed_resumes_on_openblas(tmp_path, monkeypatch):
    assert run_train.recorded_gemm({"train": {}}, tmp_path) == "openblas"
    monkeypatch.setitem(gemm_choice._tables, "mkl", None)
    with pytest.raises(FastnetError, match=r"trained with the mkl matrix-multiply provider.*pip install 'fastnet\[mkl\]' to resume it"):
        run_train.recorded_gemm({"train": {}, "gemm": "mkl"}, tmp_path)


def test_gemm_mkl_without_mkl_is_one_sentence_and_exit_2(fake_cifar_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(gemm_choice._tables, "mkl", None)
    out = tmp_path / "run"
    code = train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out), "--hidden", "20", "--n-s", "6", "--cycles", "1", "--batch", "50",
                       "--n-val", "300", "--backend", "cython", "--gemm", "mkl", "-q", "--no-plots"])
    err = capsys.readouterr().err
    assert code == 2 and "--gemm mkl needs Intel MKL" in err and "pip install 'fastnet[mkl]'" in err and "Traceback" not in err
    assert not out.exists()  # refused before any work


def test_info_lists_the_providers(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FASTNET_GEMM_CACHE", str(tmp_path / "gemm_choice.json"))
    monkeypatch.setattr(gemm_choice, "measure", lambda *a: {"openblas": 1.0, "mkl": 2.0})
    monkeypatch.setattr(providers, "avx512_upgrade", lambda: False)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "matrix-multiply providers of the fused step (--gemm):" in out and "  openblas: " in out
    assert "  auto: openblas" in out
    assert ("  mkl: not installed" in out) == (gemm_choice.table("mkl") is None)


def test_the_cli_offers_every_provider():
    import argparse

    from fastnet.cli import add_train_arguments

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    action = next(a for a in parser._actions if "--gemm" in a.option_strings)
    assert tuple(action.choices) == gemm_choice.GEMM_NAMES


def test_lockstep_groups_refuse_the_providers_it_does_not_call():
    from fastnet.training.config import TrainConfig
    from fastnet.training.lockstep import lockstep_blocker

    for name in ("mkl", "openblas-avx512"):
        assert lockstep_blocker(TrainConfig(gemm=name)) == f"the {name} matrix-multiply provider is not grouped"
    assert lockstep_blocker(TrainConfig(gemm="openblas")) is None
