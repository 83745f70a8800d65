"""What the report reads from an experiment folder: its run folders (through
:mod:`fastnet.runs.record`), the lambda search's and the experiments' own records, grouped as
the pages need them."""
from __future__ import annotations

from pathlib import Path

from fastnet.errors import FastnetError
from fastnet.experiments.records import (
    check_experiment_record,
    check_lambda_search_record,
)
from fastnet.runs.record import RunInfo, load_run
from fastnet.util.files import read_json


def first_run(runs: dict[str, RunInfo]) -> RunInfo | None:
    return next(iter(runs.values()), None)


def bn_pair(root: Path, no_bn: str, bn: str) -> dict[bool, RunInfo | None]:
    return {False: first_run(load_experiment(root / no_bn)), True: first_run(load_experiment(root / bn))}


def search_record(root: Path) -> dict | None:
    """The lambda search's record (``lambda-search/lambda_search.json``), None if there is
    none; one sentence (FastnetError) if it is unreadable or holds what fastnet never writes."""
    p = root / "lambda-search" / "lambda_search.json"
    return check_lambda_search_record(read_json(p), p) if p.exists() else None


def experiment_record(root: Path, name: str) -> dict:
    """``root/name/experiment.json``, ``{}`` if there is none; one sentence (FastnetError) if
    it is unreadable or holds what fastnet never writes."""
    p = root / name / "experiment.json"
    return check_experiment_record(read_json(p), p) if p.exists() else {}


def run_state(run: RunInfo | None) -> str:
    if run is None:
        return "missing"
    return "finished" if run.finished else run.status


def search_points(runs: dict[str, RunInfo]) -> list[dict]:
    """(stage, lambda, validation accuracy, test accuracy, name) of every finished search run."""
    pts = []
    for name, run in runs.items():
        if not run.finished or "lam" not in run.config:
            continue
        pts.append({"stage": name.split("-", 1)[0], "lam": float(run.config["lam"]), "val_accuracy": run.get("val_accuracy"),
                    "test_accuracy": run.get("test_accuracy"), "name": name})
    return sorted(pts, key=lambda p: p["lam"])


def init_groups(runs: dict[str, RunInfo]) -> dict[float, dict[bool, RunInfo]]:
    """init-sensitivity runs grouped by sigma, then by BN."""
    groups: dict[float, dict[bool, RunInfo]] = {}
    for run in runs.values():
        if run.config.get("sigma") is None:
            continue
        groups.setdefault(float(run.config["sigma"]), {})[bool(run.config.get("bn"))] = run
    return dict(sorted(groups.items(), reverse=True))


def load_experiment(exp_dir) -> dict[str, RunInfo]:
    """The run folders of one experiment, in the order experiment.json lists them (else by
    name); ``{}`` when the folder does not exist."""

    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        return {}
    names = [r["name"] for r in experiment_record(exp_dir.parent, exp_dir.name).get("runs", [])]
    found = sorted(p.name for p in exp_dir.iterdir() if p.is_dir() and (p / "config.json").is_file())
    names = [n for n in names if n in found] + [n for n in found if n not in names]
    return {n: load_run(exp_dir / n) for n in names}


def check_experiment_dir(root) -> Path:
    """``root`` if it is a folder holding at least one run (``*/config.json`` or
    ``*/*/config.json``); else one sentence, before anything is computed or written."""
    root = Path(root)
    if not root.is_dir():
        raise FastnetError(f"{root} is not a folder; run `fastnet experiment all --out {root}` first")
    if not any(True for _ in root.glob("*/config.json")) and not any(True for _ in root.glob("*/*/config.json")):
        raise FastnetError(f"{root} holds no fastnet runs, so there is nothing to report; run `fastnet experiment all --out {root}` first")
    return root
