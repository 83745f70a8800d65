"""The report: figures, summary.md and report.pdf from run folders, missing parts tolerated."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import pdf_pages

from fastnet.cli import main
from fastnet.experiments import assignment as ex
from fastnet.report import figures, readings, summary
from fastnet.report import pdf as report
from fastnet.runs.record import RunInfo
from fastnet.util.plotting import pyplot


@pytest.fixture(scope="module")
def quick_dir(fake_cifar_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    ex.run_experiment("all", out, data_dir=fake_cifar_dir, workers=1, quick=True, backend="numpy", plots=False, echo=lambda s: None)
    return out


def test_report_of_every_experiment(quick_dir, capsys):
    assert main(["report", str(quick_dir)]) == 0
    pdf = quick_dir / "report.pdf"
    assert capsys.readouterr().out.strip() == str(pdf)
    assert pdf.read_bytes().startswith(b"%PDF") and pdf_pages(pdf) == report.REPORT_PAGES
    summary = (quick_dir / "summary.md").read_text()
    for name in ex.EXPERIMENTS:
        assert f"| {name} |" in summary
    for name in ("ex2-3layer", "ex3-3layer-bn", "ex2-9layer"):
        (run, _), = ex.preset(name)
        acc = json.loads((quick_dir / name / run / "metrics.json").read_text())["test_accuracy"]
        row = next(line for line in summary.splitlines() if line.startswith(f"| {name} |"))
        assert f"{100 * acc:.2f} %" in row and "(quick)" in row
    assert "~52 %" in summary and "~53.5 %" in summary and "missing" not in summary
    n_runs = sum(len(json.loads((quick_dir / n / "experiment.json").read_text())["runs"]) for n in ex.EXPERIMENTS)
    assert f"trained {n_runs} runs in" in summary and "in one invocation" in summary
    for png in ("bn-vs-nobn-3layer.png", "bn-vs-nobn-9layer.png", "lambda-search.png", "init-sensitivity.png"):
        assert (quick_dir / "figures" / png).stat().st_size > 10_000


def test_missing_experiments_are_reported_missing(fake_cifar_dir, tmp_path):
    ex.run_experiment("ex3-3layer-bn", tmp_path, data_dir=fake_cifar_dir, workers=1, quick=True, backend="numpy", plots=False, echo=lambda s: None)
    assert main(["report", str(tmp_path)]) == 0
    pdf = tmp_path / "report.pdf"
    assert pdf_pages(pdf) == report.REPORT_PAGES
    rows = {r["experiment"]: r for r in summary.summary_rows(tmp_path)}
    assert rows["ex3-3layer-bn"]["state"] == "finished (quick)"
    assert all(rows[n]["state"] == "missing" for n in ex.EXPERIMENTS if n != "ex3-3layer-bn")
    assert (tmp_path / "gradcheck" / "gradcheck.json").is_file()  # computed at report time


def test_report_of_no_folder_is_one_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_gradient_page_quotes_the_recorded_errors(quick_dir):
    g = json.loads((quick_dir / "gradcheck" / "gradcheck.json").read_text())
    g["rows"][5]["rel_error"] = 3.21e-7   # a number no real check produced: it must be what the page shows
    plt = pyplot()
    fig = report._page_gradcheck(plt, g)
    text = " ".join(t.get_text() for t in fig.texts)
    plt.close(fig)
    assert "3.21e-07" in text and "bug free" in text
    g["rows"][5]["rel_error"] = 2e-3
    fig = report._page_gradcheck(plt, g)
    text = " ".join(t.get_text() for t in fig.texts)
    plt.close(fig)
    assert "ABOVE 1e-6" in text and "bug free" not in text


def fake_run(sigma: float, bn: bool, acc: float) -> RunInfo:
    return RunInfo(f"s{sigma}-{bn}", Path("."), {"sigma": sigma, "bn": bn}, {"test_accuracy": acc})


def test_the_init_comment_is_made_from_the_numbers():
    runs = {r.name: r for r in [fake_run(0.1, True, 0.52), fake_run(0.1, False, 0.50), fake_run(1e-3, True, 0.51),
                                fake_run(1e-3, False, 0.10), fake_run(1e-4, True, 0.50), fake_run(1e-4, False, 0.10)]}
    text = summary.init_comment(readings.init_groups(runs))
    assert "sigma = 0.0001: with BN 50.00 %, without BN 10.00 %." in text
    assert "With BN the test accuracy varies by 2.0 percentage points" in text
    assert "Without BN, sigma = 0.001, 0.0001 stayed at chance level" in text
    assert "less sensitive" in text
    flipped = {r.name: r for r in [fake_run(0.1, True, 0.10), fake_run(0.1, False, 0.50), fake_run(1e-3, True, 0.50), fake_run(1e-3, False, 0.49)]}
    assert "did not reduce the sensitivity" in summary.init_comment(readings.init_groups(flipped))


def test_figures_have_labelled_axes(quick_dir):
    plt = pyplot()
    fig, ax = plt.subplots()
    runs = readings.load_experiment(quick_dir / "lambda-search")
    figures.plot_lambda_search(readings.search_points(runs), ax, json.loads((quick_dir / "lambda-search" / "lambda_search.json").read_text()))
    assert ax.get_xscale() == "log" and "lambda" in ax.get_xlabel() and "validation accuracy" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("coarse" in s for s in labels) and any("fine" in s for s in labels) and any("best" in s for s in labels)
    plt.close(fig)
    fig, (a1, a2) = plt.subplots(1, 2)
    figures.plot_bn_overlay(readings.bn_pair(quick_dir, "ex2-3layer", "ex3-3layer-bn"), a1, a2)
    assert a1.get_xlabel() == "update step" and "loss" in a1.get_ylabel() and len(a1.lines) == 4
    plt.close(fig)
