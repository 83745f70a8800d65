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
