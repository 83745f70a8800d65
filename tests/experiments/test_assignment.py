"""Experiment presets: the assignment's settings (checked without training), and quick runs
that write the expected folders, the lambda-search record and resume."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from fastnet.cli import main
from fastnet.errors import FastnetError
from fastnet.experiments import assignment as ex

EXERCISE_SETTING = dict(batch=100, eta_min=1e-5, eta_max=1e-1, lam=0.005, cycles=2, n_s=2250, split="a3", n_val=5000)


def settings(cfg) -> dict:
    return {k: getattr(cfg, k) for k in EXERCISE_SETTING}


@pytest.mark.parametrize("name, hidden, bn", [
    ("ex2-3layer", (50, 50), False),
    ("ex2-9layer", (50, 30, 20, 20, 10, 10, 10, 10), False),
    ("ex3-3layer-bn", (50, 50), True),
    ("ex3-9layer-bn", (50, 30, 20, 20, 10, 10, 10, 10), True),
])
def test_exercise_presets_are_the_assignments_setting(name, hidden, bn):
    (run_name, cfg), = ex.preset(name)
    assert cfg.hidden == hidden and cfg.bn is bn and cfg.init == "he"
    assert settings(cfg) == EXERCISE_SETTING          # n_s = 5 * 45,000 / 100
    assert cfg.n_s == 5 * 45_000 // cfg.batch


def test_the_assignment_2_default_preset():
    (_, cfg), = ex.preset("a2-default")
    assert (cfg.hidden, cfg.bn, cfg.split) == ((50,), False, "a2")
    assert (cfg.batch, cfg.eta_min, cfg.eta_max, cfg.n_s, cfg.lam, cfg.cycles) == (100, 1e-5, 1e-1, 500, 0.01, 1)


def test_lambda_search_grid_and_fine_draw():
    coarse = ex.preset("lambda-search")
    lams = [cfg.lam for _, cfg in coarse]
    assert len(lams) == 8 and math.isclose(lams[0], 1e-5) and math.isclose(lams[-1], 1e-1)
    assert np.allclose(np.diff(np.log10(lams)), 4 / 7)          # evenly spaced in log10
    for _, cfg in coarse:
        assert (cfg.hidden, cfg.bn, cfg.cycles, cfg.n_s, cfg.batch) == ((50, 50), True, 2, 900, 100)
    best = lams[3]
    fine = ex.fine_lambdas(best)
    lo, hi = ex.fine_range(best)
    assert len(fine) == 8 and fine == sorted(fine) and fine == ex.fine_lambdas(best)  # seeded
    assert all(lo <= math.log10(v) <= hi for v in fine)
    assert hi - lo < 4                                            # narrower than the coarse range
    assert lo < math.log10(best) < hi


def test_final_and_init_presets():
    (_, final), = ex.preset("final-3cycles", best_lam=0.00123)
    assert (final.lam, final.cycles, final.n_s, final.bn, final.hidden) == (0.00123, 3, 2250, True, (50, 50))
    with pytest.raises(FastnetError, match="best lambda"):
        ex.preset("final-3cycles")
    runs = ex.preset("init-sensitivity")
    grid = {(cfg.sigma, cfg.bn) for _, cfg in runs}
    assert grid == {(s, bn) for s in (1e-1, 1e-3, 1e-4) for bn in (True, False)} and len(runs) == 6
    assert all(cfg.init == "normal" and cfg.n_s == 900 and cfg.lam == 0.005 and cfg.cycles == 2 for _, cfg in runs)
    assert all(cfg.n_s == 2250 for _, cfg in ex.preset("init-sensitivity", full_n_s=True))


def test_unknown_experiment_exits_2(capsys):
    assert main(["experiment", "no-such-thing", "--quick"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


@pytest.fixture(scope="module")
def quick_all(fake_cifar_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments")
    code = main(["experiment", "all", "--quick", "--out", str(out), "--data-dir", str(fake_cifar_dir), "--workers", "1", "--backend", "numpy", "--no-plots"])
    assert code == 0
    return out


def test_quick_all_writes_every_experiment_and_run(quick_all):
    for name in ex.EXPERIMENTS:
        record = json.loads((quick_all / name / "experiment.json").read_text())
        assert record["quick"] is True and record["failed"] == []
        for run in record["runs"]:
            folder = quick_all / name / run["name"]
            assert (folder / "metrics.json").is_file(), folder
            assert json.loads((folder / "config.json").read_text())["train"] == run["config"]
        assert (quick_all / name / "results.csv").is_file() and (quick_all / name / "results.md").is_file()
    expected = {n for n, _ in ex.preset("init-sensitivity", quick=True, backend="numpy")}
    assert {p.name for p in (quick_all / "init-sensitivity").iterdir() if p.is_dir()} == expected
    assert (quick_all / "gradcheck" / "gradcheck.json").is_file() and (quick_all / "all.json").is_file()


def test_quick_runs_keep_the_presets_structure(quick_all):
    for name in ("ex2-9layer", "ex3-3layer-bn", "a2-default"):
        (run_name, full), = ex.preset(name)
        cfg = json.loads((quick_all / name / run_name / "config.json").read_text())["train"]
        assert tuple(cfg["hidden"]) == full.hidden and cfg["bn"] == full.bn and cfg["lam"] == full.lam
        assert cfg["n_s"] == ex.QUICK["n_s"]


def test_lambda_search_records_ranges_values_and_best(quick_all):
    search = json.loads((quick_all / "lambda-search" / "lambda_search.json").read_text())
    assert search["coarse"]["log10_range"] == [-5.0, -1.0]
    assert search["coarse"]["values"] == ex.coarse_lambdas(quick=True)
    with open(quick_all / "lambda-search" / "lambda_search.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    coarse = [r for r in rows if r["stage"] == "coarse"]
    fine = [r for r in rows if r["stage"] == "fine"]
    assert len(coarse) == len(search["coarse"]["values"]) and len(fine) == len(search["fine"]["values"])
    best_coarse = max(coarse, key=lambda r: (float(r["val_accuracy"]), -float(r["lam"])))
    assert math.isclose(search["fine"]["around"], float(best_coarse["lam"]))
    lo, hi = search["fine"]["log10_range"]
    assert all(lo <= math.log10(float(r["lam"])) <= hi for r in fine)
    best = max(rows, key=lambda r: (float(r["val_accuracy"]), -float(r["lam"])))
    assert math.isclose(search["best"]["lam"], float(best["lam"]))
    assert math.isclose(search["best"]["val_accuracy"], float(best["val_accuracy"]))
    final = json.loads((quick_all / "final-3cycles" / "experiment.json").read_text())
    (run,) = final["runs"]
    assert run["config"]["lam"] == search["best"]["lam"] and run["config"]["cycles"] == 3


def test_running_again_trains_nothing(quick_all, fake_cifar_dir):
    records = ex.run_experiment("all", quick_all, data_dir=fake_cifar_dir, workers=1, quick=True, backend="numpy", plots=False, echo=lambda s: None)
    for name in ex.EXPERIMENTS:
        assert records[name]["executed"] == [], name
        assert len(records[name]["skipped"]) == len(records[name]["runs"])
    calls = json.loads((quick_all / "all.json").read_text())["invocations"]
    assert [c["executed"] for c in calls] == [sum(len(records[n]["runs"]) for n in ex.EXPERIMENTS), 0]


def test_a_quick_search_does_not_feed_a_full_final_run(quick_all, fake_cifar_dir):
    with pytest.raises(FastnetError, match="--quick"):
        ex.run_experiment("final-3cycles", quick_all, data_dir=fake_cifar_dir, workers=1, quick=False, backend="numpy", echo=lambda s: None)
