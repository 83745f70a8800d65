"""The public Python API (fastnet/api/): the same runs and sentences as the command line, a
Run read back, help that lists every setting, and an import of fastnet that stays light."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastnet
from fastnet.cli import main, train_main
from fastnet.errors import ConfigError, FastnetError
from fastnet.training.config import CONFIG_FIELDS
from fastnet.training.state import Interrupted
from fastnet.util.threads import blas_threads

# One BLAS thread in both: the idle cores (the default) may differ between two runs of a test
SMALL = dict(n_val=300, hidden=(16,), n_s=12, cycles=1, batch=50, backend="numpy", threads=1)
CONFIG = {k: v for k, v in SMALL.items() if k != "threads"}  # the settings alone (as in sweep files)
FLAGS = ["--n-val", "300", "--hidden", "16", "--n-s", "12", "--cycles", "1", "--batch", "50", "--backend", "numpy", "-q", "--threads", "1"]


def arrays(path):
    with np.load(path / "model.npz") as z:
        return {k: z[k] for k in z.files}


def test_import_is_light_and_lists_the_api():
    code = "import sys, fastnet; print(sorted(m for m in ('numpy', 'numba', 'matplotlib', 'fastnet.api') if m in sys.modules)); print(dir(fastnet))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ}).stdout.splitlines()
    assert out[0] == "[]"
    for name in ("train", "resume", "Run", "load_run", "load_cifar10", "gradcheck", "experiment", "sweep", "report"):
        assert name in out[1] and name in fastnet.__all__
    assert callable(fastnet.report)


def test_help_lists_every_setting_with_default_and_meaning():
    import inspect

    doc, sig = fastnet.train.__doc__, inspect.signature(fastnet.train)
    for name in CONFIG_FIELDS:
        assert f"\n    {name} : " in doc and name in sig.parameters, name
    assert "lam : float, default 0.005\n        L2 regularisation lambda, eq (20)." in doc
    assert sig.parameters["hidden"].default == (50, 50) and sig.parameters["bn"].default is True
    assert "{settings}" not in doc


@pytest.mark.parametrize("settings, flags", [
    ({"lam": -1.0}, {"lam": -1.0}),
    ({"eta_min": 0.2, "eta_max": 0.1}, {"eta_min": 0.2, "eta_max": 0.1}),
    ({"hidden": (50, 0)}, {"hidden": [50, 0]}),
    ({"lam": "x"}, {"lam": "x"}),
    ({"lamb": 1}, {"lamb": 1}),
])
def test_bad_settings_get_the_command_lines_sentence(settings, flags, tmp_path, capsys, fake_cifar_dir):
    (tmp_path / "c.json").write_text(json.dumps(flags))
    assert train_main(["--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "cli"), "-q"]) == 2
    cli = capsys.readouterr().err.strip().removeprefix("fastnet: error: ")
    with pytest.raises(FastnetError) as info:
        fastnet.train(data=fake_cifar_dir, out=tmp_path / "api", **settings)
    assert str(info.value) == cli
    assert not (tmp_path / "api").exists()
    with pytest.raises(ConfigError, match="threads must be a whole number >= 1, got 0"):
        fastnet.train(data=fake_cifar_dir, threads=0)


def test_train_equals_the_command_line_bit_for_bit(fake_cifar_dir, tmp_path, capsys):
    assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(tmp_path / "cli")] + FLAGS) == 0
    printed = capsys.readouterr().out
    run = fastnet.train(data=fake_cifar_dir, out=tmp_path / "api", progress=False, **SMALL)
    cli = fastnet.load_run(tmp_path / "cli")
    assert run.history == cli.history and run.steps == cli.steps and len(run.history) == 1
    assert run.test_accuracy == cli.test_accuracy and f"test accuracy {run.test_accuracy:.4f}" in printed
    a, b = arrays(run.path), arrays(cli.path)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert run.config == cli.config and run.status == "finished"


@pytest.mark.parametrize("loaded, match", [(dict(split="a2"), "split 'a2'"), (dict(n_val=200), "200 validation images"),
                                           (dict(n_val=300, dtype="float64"), "float64 rows")])
def test_a_data_set_unlike_the_runs_settings_is_refused_before_the_run(fake_cifar_dir, tmp_path, loaded, match):
    """A data set handed over (data=) must be what the run would load: else its records would
    name another split, or its step would read rows of another dtype."""
    data = fastnet.load_cifar10(fake_cifar_dir, **loaded)
    with pytest.raises(ConfigError, match=match):
        fastnet.train(data=data, out=tmp_path / "run", progress=False, plots=False, **SMALL)
    assert not (tmp_path / "run").exists()  # nothing left behind


def test_a_run_read_back(fake_cifar_dir, tmp_path):
    data = fastnet.load_cifar10(fake_cifar_dir, n_val=300)
    run = fastnet.train(data=data, out=None, progress=False, plots=False, **SMALL)
    assert run.path.is_dir() and (run.path / "metrics.json").is_file()  # out=None: a temporary run folder
    again = fastnet.load_run(run.path)
    assert again.evaluate(data.X_test, data.y_test)["accuracy"] == run.test_accuracy == again.metrics["test_accuracy"]
    pred = again.predict(data.X_test)
    assert pred.shape == (300,) and np.mean(pred == data.y_test) == run.test_accuracy
    frame = run.history_frame()
    assert list(frame["step"]) == [r["step"] for r in run.history]
    fig = run.plot()
    assert len(fig.axes) == 3 and fig._repr_png_().startswith(b"\x89PNG")
    assert "test accuracy" in repr(run) and run.network.sizes == [3072, 16, 10]
    with pytest.raises(FastnetError, match="not a fastnet run folder"):
        fastnet.load_run(tmp_path)


def test_ctrl_c_stops_a_run_that_resume_finishes_as_if_uninterrupted(fake_cifar_dir, tmp_path):
    # 30 steps an epoch, 20 epochs: long enough to interrupt; one BLAS thread for both runs (the
    # fused step's products are cut by the thread count), which the resume takes from config.json
    settings = dict(SMALL, n_s=300, batch=20)
    whole = fastnet.train(data=fake_cifar_dir, out=tmp_path / "whole", progress=False, plots=False, **settings)
    out = tmp_path / "stopped"

    def interrupt():
        while not (out / "checkpoint.npz").exists():
            time.sleep(0.001)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # what a notebook's "interrupt kernel" sends

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(Interrupted) as info:
        fastnet.train(data=fake_cifar_dir, out=out, progress=False, plots=False, **settings)
    assert f"fastnet.resume({str(out)!r})" in str(info.value) and not (out / "metrics.json").exists()
    assert json.loads((out / "config.json").read_text())["threads"] == 1
    with blas_threads(2):   # the load when it resumes does not matter
        done = fastnet.resume(out, progress=False, plots=False)
    assert done.history == whole.history and done.test_accuracy == whole.test_accuracy
    a, b = arrays(done.path), arrays(whole.path)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_sweep_returns_results_and_resumes(fake_cifar_dir, tmp_path, capsys):
    configs = {f"lam={lam:g}": dict(CONFIG, lam=lam) for lam in (0.001, 0.01)}
    result = fastnet.sweep(configs, tmp_path / "sw", data_dir=fake_cifar_dir, workers=1, plots=False)
    assert [r["status"] for r in result.rows] == ["finished"] * 2 and sorted(result.executed) == sorted(configs)
    for row in result.rows:
        alone = fastnet.load_run(tmp_path / "sw" / row["name"])
        assert row["test_accuracy"] == alone.test_accuracy and alone.config.lam == configs[row["name"]]["lam"]
    again = fastnet.sweep(configs, tmp_path / "sw", data_dir=fake_cifar_dir, workers=1, plots=False)
    assert again.executed == [] and sorted(again.skipped) == sorted(configs)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"base": {**CONFIG, "hidden": [16]}, "grid": {"lam": [0.001, 0.01]}}))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "cli"), "--data-dir", str(fake_cifar_dir), "--workers", "1", "--no-plots"]) == 0
    cli = {r["lam"]: r["test_accuracy"] for r in fastnet.sweep(spec, tmp_path / "cli", data_dir=fake_cifar_dir, workers=1).rows}
    assert cli == {r["lam"]: r["test_accuracy"] for r in result.rows}


@pytest.fixture()
def two_cases(monkeypatch):
    """Two of the standard gradient checks (all of them take ~15 s)."""
    from fastnet.model import gradcheck

    monkeypatch.setattr(gradcheck, "STANDARD_CASES", gradcheck.STANDARD_CASES[:2])


def test_gradcheck_returns_the_table_the_command_prints(capsys, two_cases):
    result = fastnet.gradcheck("numpy")
    assert result.passed and result.worst < 1e-6 and len(result.rows) >= 4
    assert main(["gradcheck", "--backend", "numpy"]) == 0
    assert capsys.readouterr().out.strip() == str(result)


def test_experiment_and_report(fake_cifar_dir, tmp_path, two_cases):
    record = fastnet.experiment("a2-default", tmp_path / "exp", data_dir=fake_cifar_dir, quick=True, workers=1, plots=False, backend="numpy")
    assert record["rows"][0]["status"] == "finished"
    pdf = fastnet.report(tmp_path / "exp")
    assert pdf.is_file() and pdf.suffix == ".pdf"


def test_a_run_records_its_thread_count_for_its_resume(tmp_path):
    from fastnet.runs.record import recorded_threads

    (tmp_path / "config.json").write_text(json.dumps({"threads": 1}))
    assert recorded_threads(tmp_path) == 1
    for bad in ('{"threads": "2"}', '{"threads": true}', '{"threads": 0}', '[]'):
        (tmp_path / "config.json").write_text(bad)
        assert recorded_threads(tmp_path) is None   # not recorded, or not a count: the idle cores again


def test_the_thread_limit_reaches_numpys_blas_even_before_numpy_is_imported():
    """``--threads`` is set before anything imports NumPy (the CLI imports lazily): the limit
    must still hold for NumPy's BLAS, loaded first for it."""
    code = ("import sys; from fastnet.util.threads import blas_threads\n"
            "with blas_threads(1):\n"
            "    from threadpoolctl import threadpool_info\n"
            "    print(sorted({p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[1]"


def test_the_default_thread_count_keeps_a_lower_limit_already_set():
    """Without --threads a run takes the idle cores, but never more threads than BLAS was given
    (OPENBLAS_NUM_THREADS=1, or a worker pinned to one thread)."""
    code = ("from fastnet.util.threads import blas_threads\n"
            "with blas_threads(None):\n"
            "    from threadpoolctl import threadpool_info\n"
            "    print(sorted({p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}))")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[1]"
