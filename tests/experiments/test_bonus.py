"""The bonus presets (checked without training), a quick bonus experiment on the synthetic
data that writes its folders, tables and adaptive-BN record, and the report's bonus pages."""
from __future__ import annotations

import json
import shlex

import pytest

from fastnet.cli import build_parser, config_from_args, main
from fastnet.experiments import bonus
from fastnet.experiments.catalogue import BONUS_RUNS


def test_every_preset_is_valid_and_names_its_runs():
    for name in bonus.BONUS_EXPERIMENTS:
        runs = bonus.preset(name)
        assert runs and len({n for n, _ in runs}) == len(runs)
    best_mlp = {run for run, (group, _, _) in BONUS_RUNS.items() if group == "best-mlp"}
    assert {n for n, _ in bonus.preset("bonus")} == set(BONUS_RUNS) - best_mlp  # best-mlp runs alone, in its own presets
    assert {n for name in bonus.ALONE_PRESETS for n, _ in bonus.preset(name)} == best_mlp


def test_presets_change_only_what_they_study():
    base = bonus.config("3layer-BN")
    assert (base.hidden, base.bn, base.lam, base.cycles, base.n_s, base.batch) == ((50, 50), True, 0.005, 2, 2250, 100)
    assert bonus.config("3layer-BN-after").bn_placement == "after"
    precise = bonus.config("3layer-BN-precise")
    assert precise.bn_stats == "precise" and precise.to_dict() | {"bn_stats": "ema"} == base.to_dict() | {"bn_stats": "ema"}
    skip = bonus.config("7layer-BN-skip")
    assert skip.skip and skip.hidden == (50,) * 6
    adam = bonus.config("7layer-BN-adam-cyclic")
    assert adam.optimizer == "adam" and adam.schedule == "cyclic" and adam.eta_max <= 0.01


@pytest.mark.parametrize("run", list(BONUS_RUNS))
def test_the_recorded_command_trains_the_same_configuration(run):
    cfg = bonus.config(run)
    argv = shlex.split(bonus.command(cfg))[1:]
    args = build_parser().parse_args(["train", *argv])
    assert config_from_args(args) == cfg


def test_quick_bonus_experiment_and_report(fake_cifar_dir, tmp_path, capsys):
    out = tmp_path / "exp"
    code = main(["experiment", "bonus-adaptive-bn", "--quick", "--data-dir", str(fake_cifar_dir), "--out", str(out), "--workers", "1", "--no-plots"])
    assert code == 0, capsys.readouterr().err
    folder = out / "bonus"
    rec = json.loads((folder / "bonus.json").read_text())
    assert {r["run"] for r in rec["rows"]} == {"3layer-BN", "9layer-BN"} and rec["quick"] is True
    adaptive = json.loads((folder / "adaptive_bn.json").read_text())
    assert {r["run"] for r in adaptive["rows"]} == {"3layer-BN", "9layer-BN"}
    assert len(adaptive["rows"]) == 2 * 3 * (1 + len(bonus.ADAPTIVE_VARIANTS))  # 2 models x (as is, dimmed, noisy)
    g = json.loads((folder / "gradcheck_bonus.json").read_text())
    assert g["worst_rel_error"] < 1e-6
    assert main(["report", str(out)]) == 0
    from conftest import pdf_pages

    from fastnet.report import pdf as report

    assert pdf_pages(out / "report.pdf") == report.REPORT_PAGES + 6  # the bonus section's pages


def test_seed_statistics():
    rows = [{"run": r, "status": "finished", "test_accuracy": a, "test_accuracy_ema": e}
            for r, a, e in (("3layer-BN", 0.50, float("nan")), ("3layer-BN-seed1", 0.52, float("nan")), ("3layer-BN-seed2", 0.54, float("nan")),
                            ("3layer-BN-precise", 0.51, 0.50), ("3layer-BN-precise-seed1", 0.53, 0.51), ("9layer-BN", 0.4, float("nan")))]
    stats = {r["run"]: r for r in bonus.seed_stats(rows)}
    assert set(stats) == {"3layer-BN", "3layer-BN-precise"}  # one seed only: no spread to report
    assert stats["3layer-BN"]["seeds"] == 3 and stats["3layer-BN"]["mean_test_accuracy"] == pytest.approx(0.52)
    assert stats["3layer-BN"]["std_test_accuracy"] == pytest.approx(0.02)
    assert stats["3layer-BN-precise"]["mean_precise_minus_ema"] == pytest.approx(0.015)
    assert "mean_precise_minus_ema" not in stats["3layer-BN"]


def test_best_mlp_runs_one_at_a_time_and_its_statistics(fake_cifar_dir, tmp_path, capsys, monkeypatch):
    """best-mlp's wall time is what it shows: its runs train in this process, one after the
    other, whatever --workers says; bonus.json then holds the mean and standard error."""
    import math

    import fastnet.experiments.sweep as sweep

    seen = {}
    real = sweep.run_sweep

    def spy(runs, out_dir, **kw):
        seen.update(kw)
        return real(runs, out_dir, **kw)

    monkeypatch.setattr(sweep, "run_sweep", spy)
    out = tmp_path / "exp"
    code = main(["experiment", "best-mlp", "--quick", "--data-dir", str(fake_cifar_dir), "--out", str(out), "--workers", "2", "--no-plots"])
    assert code == 0, capsys.readouterr().err
    assert seen["workers"] == 1 and seen["pool"] is None and seen["lockstep"] is False
    rec = json.loads((out / "bonus" / "bonus.json").read_text())
    best = rec["best_mlp"]
    accs = [r["test_accuracy"] for r in rec["rows"] if r["run"] in bonus.BONUS_PRESETS["best-mlp"]]
    assert best["seeds"] == len(accs) == len(bonus.BEST_MLP_SEEDS)
    assert math.isclose(best["mean_test_accuracy"], sum(accs) / len(accs))
    mean = sum(accs) / len(accs)
    assert math.isclose(best["stderr_test_accuracy"], math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1) / len(accs)))


def test_best_mlp_ablation_compares_final_validation_figures_and_splits_out_tta():
    """The ablation compares each run's final validation figure (with test-time augmentation
    where the run had it) and adds test-time augmentation's own share from the seed-0 run's
    figures with and without it."""
    nan = float("nan")
    key = next(iter(bonus.BEST_MLP_ABLATION))
    rows = [{"run": "best-mlp", "status": "finished", "test_accuracy": 0.64, "val_accuracy": 0.645, "val_accuracy_tta": 0.655,
             "test_accuracy_without_tta": 0.63, "wall_seconds": 590.0},
            {"run": f"best-mlp-without-{key.replace(' ', '-')}", "status": "finished", "test_accuracy": 0.60, "val_accuracy": 0.61,
             "val_accuracy_tta": 0.62, "test_accuracy_without_tta": 0.59, "wall_seconds": 580.0},
            {"run": "best-mlp-seed1", "status": "finished", "test_accuracy": 0.62, "val_accuracy": 0.63, "val_accuracy_tta": nan,
             "test_accuracy_without_tta": nan, "wall_seconds": 600.0}]
    best = bonus.best_mlp_stats(rows)
    assert best["seeds"] == 2 and best["val_accuracies"] == [0.655, 0.63]  # seed 1 had no views: its history's figure
    by = {r["ingredient"]: r for r in best["ablation"]}
    assert by[key]["test_gain"] == pytest.approx(0.04) and by[key]["val_gain"] == pytest.approx(0.035)
    tta = by["test-time augmentation"]
    assert tta["test_gain"] == pytest.approx(0.01) and tta["val_gain"] == pytest.approx(0.01) and tta["test_accuracy"] == 0.63
