"""The schema of gradient-check records (fastnet.experiments.records): a record as
fastnet.model.gradcheck writes it passes; each edit that would break the report's pages is
one RunFileError naming the file and the field."""
from __future__ import annotations

import copy
import json

import pytest

from fastnet.experiments.records import check_gradcheck_record
from fastnet.runs.schema import RunFileError


@pytest.fixture(scope="module")
def record() -> dict:
    from fastnet.backends import resolve
    from fastnet.model import gradcheck as gc

    return json.loads(json.dumps(gc.check_record(gc.STANDARD_CASES[:1], resolve("numpy").ops, "numpy")))


def test_a_written_record_passes(record):
    assert check_gradcheck_record(copy.deepcopy(record), "gradcheck.json") == record


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(rows=[]), "'rows'"), (lambda d: d.update(rows="x"), "'rows'"), (lambda d: d.pop("rows"), "'rows'"),
    (lambda d: d["rows"].append(1), "rows[4]"), (lambda d: d["rows"][0].update(rel_error=None), "rows[0].rel_error"),
    (lambda d: d["rows"][0].update(rel_error="1e-9"), "rows[0].rel_error"), (lambda d: d["rows"][0].update(max_abs_error=-1), "max_abs_error"),
    (lambda d: d["rows"][0].update(checked=1.5), "rows[0].checked"), (lambda d: d["rows"][1].update(shape=[0]), "rows[1].shape"),
    (lambda d: d["rows"][0].update(case=3), "rows[0].case"), (lambda d: d["rows"][0].update(hidden="50"), "rows[0].hidden"),
    (lambda d: d["rows"][0].update(bn=1), "rows[0].bn"), (lambda d: d.update(h=None), "'h'"), (lambda d: d.update(h=-1e-5), "'h'"),
    (lambda d: d.update(K=True), "'K'"), (lambda d: d.update(backend=[1]), "'backend'"), (lambda d: d.update(seconds=-1), "'seconds'"),
    (lambda d: d.update(worst_rel_error=0.5), "worst_rel_error")])
def test_each_edit_is_one_sentence_naming_the_field(record, edit, field):
    d = copy.deepcopy(record)
    edit(d)
    with pytest.raises(RunFileError, match=r"^gradcheck\.json: field .*" + field.replace("[", r"\[").replace("]", r"\]")) as info:
        check_gradcheck_record(d, "gradcheck.json")
    assert "\n" not in str(info.value)


def test_the_report_refuses_an_edited_record(record, tmp_path):
    from fastnet.report.summary import gradcheck_record

    (tmp_path / "gradcheck").mkdir()
    d = copy.deepcopy(record)
    d["rows"][0]["rel_error"] = "small"
    (tmp_path / "gradcheck" / "gradcheck.json").write_text(json.dumps(d))
    with pytest.raises(RunFileError, match="rel_error"):
        gradcheck_record(tmp_path)
    (tmp_path / "gradcheck" / "gradcheck.json").write_text(json.dumps(record))
    assert gradcheck_record(tmp_path) == record


# ------------------------------------------------- experiment.json, lambda_search.json, all.json
# as fastnet.experiments.assignment writes them (json round trip: what the report reads)

EXPERIMENT = {"experiment": "bn-vs-nobn-3layer", "title": "t", "quick": True, "full_n_s": False,
              "runs": [{"name": "bn", "config": {"lam": 0.005}}, {"name": "no-bn", "config": {}}],
              "executed": ["bn"], "skipped": ["no-bn"], "failed": [], "diverged": [], "compute_seconds": 12.5,
              "finished_at": "2025-01-01T00:00:00", "elapsed_seconds": 13.0}
SEARCH = {"quick": True, "network": [50, 50], "bn": True, "criterion": "validation accuracy at the end of training",
          "training": {"cycles": 2, "n_s": 900, "batch": 100, "eta_min": 1e-5, "eta_max": 1e-1, "init": "he"},
          "coarse": {"method": "grid", "log10_range": [-5, -1], "values": [1e-5, 1e-3, 1e-1]},
          "fine": {"method": "draw", "seed": 7, "around": 1e-3, "log10_range": [-3.5, -2.5], "values": [5e-4, 2e-3]},
          "best": {"lam": 2e-3, "val_accuracy": 0.52, "test_accuracy": float("nan"), "run": "fine-1"},
          "best_coarse": {"lam": 1e-3, "val_accuracy": 0.51, "run": "coarse-1"}}
CALL = {"wall_seconds": 60.0, "finished_at": "2025-01-01T00:00:00", "workers": 2, "scheduler": None, "executed": 3, "runs": 9}
ALL = {"experiments": ["bn-vs-nobn-3layer"], "quick": True, **CALL, "invocations": [CALL, {**CALL, "executed": 0}]}


def _kinds():
    from fastnet.experiments.records import (
        check_all_record,
        check_experiment_record,
        check_lambda_search_record,
    )

    return {"experiment.json": (check_experiment_record, EXPERIMENT), "lambda_search.json": (check_lambda_search_record, SEARCH),
            "all.json": (check_all_record, ALL)}


@pytest.mark.parametrize("name", ["experiment.json", "lambda_search.json", "all.json"])
def test_a_written_experiment_record_passes(name):
    check, good = _kinds()[name]
    d = json.loads(json.dumps(good))
    assert check(copy.deepcopy(d), name) == d


@pytest.mark.parametrize("name, edit, field", [
    ("experiment.json", lambda d: d.update(runs={"bn": 1}), "'runs'"),
    ("experiment.json", lambda d: d["runs"].append("bn"), "runs[2]"),
    ("experiment.json", lambda d: d["runs"][0].update(name=["bn"]), "runs[0].name"),
    ("experiment.json", lambda d: d.update(quick="yes"), "'quick'"),
    ("experiment.json", lambda d: d.update(compute_seconds=-1), "'compute_seconds'"),
    ("lambda_search.json", lambda d: d.update(training=[1]), "'training'"),
    ("lambda_search.json", lambda d: d["training"].update(eta_min="1e-5"), "training.eta_min"),
    ("lambda_search.json", lambda d: d["coarse"].update(log10_range=[-1, -5]), "coarse.log10_range"),
    ("lambda_search.json", lambda d: d["fine"].update(log10_range=[1e400, 0]), "fine.log10_range"),
    ("lambda_search.json", lambda d: d["fine"].update(values=["a"]), "fine.values"),
    ("lambda_search.json", lambda d: d["best_coarse"].update(val_accuracy=52), "best_coarse.val_accuracy"),
    ("lambda_search.json", lambda d: d["best"].pop("lam"), "best.lam"),
    ("all.json", lambda d: d.update(wall_seconds="60"), "'wall_seconds'"),
    ("all.json", lambda d: d.update(invocations={}), "'invocations'"),
    ("all.json", lambda d: d["invocations"][1].update(executed=-3), "invocations[1].executed"),
    ("all.json", lambda d: d["invocations"][0].update(workers=0), "invocations[0].workers"),
])
def test_each_experiment_record_edit_is_one_sentence(name, edit, field):
    check, good = _kinds()[name]
    d = copy.deepcopy(good)
    edit(d)
    with pytest.raises(RunFileError) as info:
        check(d, f"/x/{name}")
    msg = str(info.value)
    assert msg.startswith(f"/x/{name}: field ") and field in msg and msg.count(". ") == 0 and "\n" not in msg


def test_the_report_refuses_edited_experiment_records(tmp_path):
    from fastnet.report import readings, summary

    for rel, good, key, bad in (("e/experiment.json", EXPERIMENT, "runs", "bn"), ("lambda-search/lambda_search.json", SEARCH, "best", 3),
                                ("all.json", ALL, "invocations", [1])):
        p = tmp_path / rel
        p.parent.mkdir(exist_ok=True)
        p.write_text(json.dumps({**good, key: bad}))
    with pytest.raises(RunFileError, match=f"{tmp_path / 'e' / 'experiment.json'}: field 'runs'"):
        readings.load_experiment(tmp_path / "e")
    with pytest.raises(RunFileError, match="lambda_search.json: field 'best'"):
        readings.search_record(tmp_path)
    with pytest.raises(RunFileError, match="all.json: field 'invocations"):
        summary.all_wall_time(tmp_path)
    (tmp_path / "all.json").write_text(json.dumps(ALL))
    assert "trained 3 runs" in summary.all_wall_time(tmp_path)
