"""Sweeps: run folders, results tables, resuming after a kill, process pools and Dask."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastnet.errors import FastnetError
from fastnet.experiments.sweep import RESULT_FIELDS, run_sweep, runs_from_spec
from fastnet.training.config import TrainConfig

SMALL = dict(hidden=(16,), bn=True, n_s=10, cycles=1, batch=50, n_val=300, backend="numpy")


def small_runs(n: int, **kw) -> list[tuple[str, TrainConfig]]:
    return [(f"lam={lam:g}", TrainConfig(**{**SMALL, **kw}, lam=lam)) for lam in [0.001 * (i + 1) for i in range(n)]]


def log_events(out: Path) -> list[tuple[str, str]]:
    """(event, run name) of every line of sweep.log."""
    return [tuple(line.split()[1:3]) for line in (out / "sweep.log").read_text().splitlines()]


def test_serial_sweep_writes_every_run_and_the_tables(fake_cifar_dir, tmp_path):
    runs = small_runs(2)
    result = run_sweep(runs, tmp_path, data_dir=fake_cifar_dir, workers=1, plots=False, echo=lambda s: None)
    assert result.executed == [n for n, _ in runs] or sorted(result.executed) == sorted(n for n, _ in runs)
    for name, cfg in runs:
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        recorded = json.loads((tmp_path / name / "config.json").read_text())["train"]
        assert recorded["lam"] == cfg.lam
        row = result.by_name()[name]
        assert row["status"] == "finished" and row["test_accuracy"] == metrics["test_accuracy"]
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(RESULT_FIELDS) and len(csv_lines) == 3
    md = (tmp_path / "results.md").read_text()
    assert all(name in md for name, _ in runs)


def test_finished_runs_are_skipped_and_unfinished_ones_redone(fake_cifar_dir, tmp_path):
    runs = small_runs(2)
    (done_name, _), (half_name, _) = runs
    run_sweep(runs[:1], tmp_path, data_dir=fake_cifar_dir, workers=1, plots=False, echo=lambda s: None)
    # an interrupted run: the folder has its config and a partial history, no metrics.json
    half = tmp_path / half_name
    half.mkdir()
    (half / "config.json").write_text(json.dumps({"train": runs[1][1].to_dict()}))
    (half / "history.csv").write_text("epoch,step\n")
    before = (tmp_path / done_name / "metrics.json").stat().st_mtime_ns
    result = run_sweep(runs, tmp_path, data_dir=fake_cifar_dir, workers=1, plots=False, echo=lambda s: None)
    assert result.skipped == [done_name] and result.executed == [half_name]
    assert (tmp_path / done_name / "metrics.json").stat().st_mtime_ns == before
    assert (half / "metrics.json").is_file()
    assert [r["status"] for r in result.rows] == ["finished", "finished"]
    assert ("skipped", done_name) in log_events(tmp_path) and ("started", half_name) in log_events(tmp_path)


def test_a_finished_run_with_another_configuration_is_refused(fake_cifar_dir, tmp_path):
    runs = small_runs(1)
    run_sweep(runs, tmp_path, data_dir=fake_cifar_dir, workers=1, plots=False, echo=lambda s: None)
    changed = [(runs[0][0], TrainConfig(**{**SMALL, "cycles": 2}, lam=runs[0][1].lam))]
    with pytest.raises(FastnetError, match="another configuration.*cycles"):
        run_sweep(changed, tmp_path, data_dir=fake_cifar_dir, workers=1, plots=False, echo=lambda s: None)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_a_diverging_run_is_a_result_not_a_crash(fake_cifar_dir, tmp_path):
    runs = [("fine", TrainConfig(**SMALL, lam=0.001)), ("wild", TrainConfig(**{**SMALL, "bn": False, "init": "normal", "sigma": 50.0, "eta_min": 10.0, "eta_max": 1e4}, lam=0.0))]
    result = run_sweep(runs, tmp_path, data_dir=fake_cifar_dir, workers=1, plots=False, echo=lambda s: None)
    status = {r["name"]: r["status"] for r in result.rows}
    assert status == {"fine": "finished", "wild": "diverged"}
    assert "diverged" in result.by_name()["wild"]["message"]
    assert not (tmp_path / "wild" / "metrics.json").exists()


def test_duplicate_names_are_refused(tmp_path):
    runs = small_runs(1) * 2
    with pytest.raises(FastnetError, match="unique"):
        run_sweep(runs, tmp_path, workers=1)


def test_process_pool_workers_train_with_one_blas_thread(fake_cifar_dir, tmp_path):
    runs = small_runs(2)
    result = run_sweep(runs, tmp_path, data_dir=fake_cifar_dir, workers=2, plots=False, echo=lambda s: None)
    assert sorted(result.executed) == sorted(n for n, _ in runs)
    pids = {line.split("pid=")[1].split()[0] for line in (tmp_path / "sweep.log").read_text().splitlines() if " started " in line}
    assert pids and str(os.getpid()) not in pids  # trained in worker processes, not here
    for name, _ in runs:
        env = json.loads((tmp_path / name / "metrics.json").read_text())["environment"]
        threads = [pool["num_threads"] for pool in env.get("blas_threads", [])]
        assert threads and all(t == 1 for t in threads), threads


def test_a_killed_sweep_resumes_with_only_the_missing_runs(fake_cifar_dir, tmp_path):
    runs = small_runs(4, n_s=40)
    spec = tmp_path / "sweep.json"
    base = {k: (list(v) if isinstance(v, tuple) else v) for k, v in SMALL.items()}
    spec.write_text(json.dumps({"base": {**base, "n_s": 40}, "runs": [{"name": n, "lam": c.lam} for n, c in runs]}))
    out = tmp_path / "out"
    # --no-lockstep: the runs finish one by one (in a lock-step group they would all finish
    # together); resuming a group is tests/training/test_lockstep.py's
    cmd = [sys.executable, "-m", "fastnet.cli", "sweep", str(spec), "--out", str(out), "--workers", "1", "--data-dir", str(fake_cifar_dir), "--no-plots", "--no-lockstep"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any((out / n / "metrics.json").exists() for n, _ in runs):
            assert proc.poll() is None, "the sweep ended before any run finished"
            assert time.monotonic() < deadline, "no run finished in 120 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this test started, by its id
        proc.wait()
    finished = {n for n, _ in runs if (out / n / "metrics.json").exists()}
    missing = [n for n, _ in runs if n not in finished]
    assert finished and missing, "the kill must fall between the first and the last run"
    mtimes = {n: (out / n / "metrics.json").stat().st_mtime_ns for n in finished}
    logged_before = len(log_events(out))

    result = run_sweep(runs, out, data_dir=fake_cifar_dir, workers=1, plots=False, echo=lambda s: None)
    assert sorted(result.executed) == sorted(missing)
    assert sorted(result.skipped) == sorted(finished)
    assert {n: (out / n / "metrics.json").stat().st_mtime_ns for n in finished} == mtimes
    assert all((out / n / "metrics.json").exists() for n, _ in runs)
    started_after_restart = [name for event, name in log_events(out)[logged_before:] if event == "started"]
    assert sorted(started_after_restart) == sorted(missing)


def test_a_dask_cluster_on_loopback_runs_the_sweep(fake_cifar_dir, tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'fastnet[dask]')")
    runs = small_runs(3)
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        result = run_sweep(runs, tmp_path, data_dir=fake_cifar_dir, scheduler=cluster.scheduler_address, plots=False, echo=lambda s: None)
        again = run_sweep(runs, tmp_path, data_dir=fake_cifar_dir, scheduler=cluster.scheduler_address, plots=False, echo=lambda s: None)
    assert sorted(result.executed) == sorted(n for n, _ in runs)
    assert [r["status"] for r in result.rows] == ["finished"] * 3
    pids = {line.split("pid=")[1].split()[0] for line in (tmp_path / "sweep.log").read_text().splitlines() if " started " in line}
    assert pids and str(os.getpid()) not in pids
    assert again.executed == [] and sorted(again.skipped) == sorted(n for n, _ in runs)


def test_an_unreachable_scheduler_is_one_clear_error(tmp_path):
    pytest.importorskip("distributed", reason="dask.distributed is not installed")
    with pytest.raises(FastnetError, match="dask scheduler"):
        run_sweep(small_runs(1), tmp_path, scheduler="tcp://127.0.0.1:9", plots=False, echo=lambda s: None, connect_timeout=2)


def test_sweep_files_list_runs_and_grids():
    runs = runs_from_spec({"base": {"hidden": [16], "n_s": 10}, "runs": [{"name": "a", "lam": 0.1}], "grid": {"lam": [0.001, 0.01], "bn": [True, False]}})
    names = [n for n, _ in runs]
    assert names == ["a", "lam=0.001_bn=true", "lam=0.001_bn=false", "lam=0.01_bn=true", "lam=0.01_bn=false"]
    cfg = dict(runs)["lam=0.01_bn=false"]
    assert cfg.lam == 0.01 and cfg.bn is False and cfg.hidden == (16,) and cfg.n_s == 10
    with pytest.raises(FastnetError):
        runs_from_spec({"base": {}})
    with pytest.raises(FastnetError, match="nonsense"):
        runs_from_spec({"runs": [{"nonsense": 1}]})
