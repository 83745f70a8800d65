"""--log tensorboard / --log mlflow: the logs read back with each library's own reader."""
from __future__ import annotations

import pytest

from fastnet.cli import train_main
from fastnet.errors import ConfigError
from fastnet.training.loggers import check_loggers

SMALL = ["--n-val", "300", "--hidden", "16", "--n-s", "12", "--cycles", "1", "--batch", "50", "--backend", "numpy", "-q", "--no-plots",
         "--eval-every", "6"]


def train(fake_cifar_dir, out, *logs):
    assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out), *[a for log in logs for a in ("--log", log)]] + SMALL) == 0
    import fastnet

    return fastnet.load_run(out)


def test_tensorboard_events_hold_every_step_and_evaluation(fake_cifar_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'fastnet[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(fake_cifar_dir, tmp_path / "run", "tensorboard")
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    loss = events.Scalars("step/loss")
    assert [e.step for e in loss] == [s["step"] for s in run.steps] == list(range(1, 25))
    assert [e.value for e in loss] == pytest.approx([s["batch_loss"] for s in run.steps], rel=1e-6)  # float32 in the events
    assert [e.value for e in events.Scalars("step/eta")] == pytest.approx([s["eta"] for s in run.steps], rel=1e-6)
    acc = events.Scalars("val/accuracy")
    assert [e.step for e in acc] == [r["step"] for r in run.history] and len(acc) == len(run.history) >= 4
    assert [e.value for e in acc] == pytest.approx([r["val_accuracy"] for r in run.history], rel=1e-6)


def test_mlflow_file_store_holds_params_steps_and_evaluations(fake_cifar_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'fastnet[mlflow]')")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    run = train(fake_cifar_dir, tmp_path / "run", "mlflow", "tensorboard")
    client = MlflowClient(tracking_uri=(run.path / "mlruns").resolve().as_uri())
    [logged] = client.search_runs([client.get_experiment_by_name("fastnet").experiment_id])
    assert logged.info.run_name == "run" and logged.info.status == "FINISHED"
    assert logged.data.params["lam"] == "0.005" and logged.data.params["hidden"] == "[16]"
    loss = sorted(client.get_metric_history(logged.info.run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in loss] == list(range(1, 25)) and [m.value for m in loss] == [s["batch_loss"] for s in run.steps]
    val = sorted(client.get_metric_history(logged.info.run_id, "val_accuracy"), key=lambda m: (m.step, m.timestamp))
    assert [(m.step, m.value) for m in val] == [(r["step"], r["val_accuracy"]) for r in run.history]
    assert (run.path / "tensorboard").is_dir()  # both at once


def test_an_unknown_or_missing_logger_is_refused_before_any_work(monkeypatch):
    with pytest.raises(ConfigError, match="unknown logger 'wandb'"):
        check_loggers(["wandb"])
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"--log mlflow needs the mlflow package, which is not installed: pip install 'fastnet\[mlflow\]'"):
        check_loggers("mlflow")
