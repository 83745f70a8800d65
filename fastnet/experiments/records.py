"""The schema of the gradient-check records the experiments write (``gradcheck.json``,
``gradcheck_bonus.json``, made by :func:`fastnet.model.gradcheck.check_record`) and the
report reads: here, between the writer and the reader, because the report imports no model.

A plain checker, as for the run files (:mod:`fastnet.runs.schema`): every violation is one
:class:`fastnet.runs.schema.RunFileError` naming the file and the field.
"""
from __future__ import annotations

import math

from fastnet.runs.schema import RunFileError

MAX_ROWS = 10_000  # one row per parameter array; the standard cases have a few dozen
ERRORS = ("rel_error", "max_rel_error", "max_abs_error")


def _real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _whole(x, lo: int = 0) -> bool:
    return type(x) is int and x >= lo


def _bad(path, field: str, want: str, value) -> RunFileError:
    shown = repr(value)
    return RunFileError(f"{path}: field {field!r} must be {want}, got {shown[:40] + ('...' if len(shown) > 40 else '')}; "
                        f"the record was damaged or edited, delete it and run `fastnet gradcheck` (or the experiment) again")


def check_gradcheck_row(row, path, i: int) -> None:
    """Row ``i`` of a record: the case, its network and one parameter array's check."""
    if not isinstance(row, dict):
        raise _bad(path, f"rows[{i}]", "an object", row)
    for k in ("case", "param"):
        if not isinstance(row.get(k), str):
            raise _bad(path, f"rows[{i}].{k}", "a string", row.get(k))
    for k, ok, want in (("shape", lambda v: isinstance(v, list) and 1 <= len(v) <= 2 and all(_whole(m, 1) for m in v), "a list of sizes"),
                        ("hidden", lambda v: isinstance(v, list) and all(_whole(m, 1) for m in v), "a list of layer sizes"),
                        ("bn", lambda v: isinstance(v, bool), "true or false"),
                        ("lam", lambda v: _real(v) and v >= 0, "a number >= 0"),
                        ("checked", lambda v: _whole(v), "a whole number >= 0"),
                        ("skipped_kinks", lambda v: _whole(v), "a whole number >= 0"),
                        *((k, lambda v: _real(v) and v >= 0, "a finite number >= 0") for k in ERRORS)):
        if not ok(row.get(k)):
            raise _bad(path, f"rows[{i}].{k}", want, row.get(k))


def check_gradcheck_record(d: dict, path) -> dict:
    """``d`` (``gradcheck.json`` or ``gradcheck_bonus.json`` at ``path``) if the report can
    quote it: a non-empty list of rows, the setting's numbers, the worst error that of the rows."""
    rows = d.get("rows")
    if not (isinstance(rows, list) and 1 <= len(rows) <= MAX_ROWS):
        raise _bad(path, "rows", f"a list of 1 to {MAX_ROWS} rows", rows if not isinstance(rows, list) else f"{len(rows)} rows")
    for i, row in enumerate(rows):
        check_gradcheck_row(row, path, i)
    if not (_real(d.get("h")) and d["h"] > 0):
        raise _bad(path, "h", "a positive number", d.get("h"))
    for k in ("d", "n", "K"):
        if d.get(k) is not None and not _whole(d[k], 1):
            raise _bad(path, k, "a whole number >= 1", d[k])
    for k in ("backend", "dtype", "init"):
        if d.get(k) is not None and not isinstance(d[k], str):
            raise _bad(path, k, "a string", d[k])
    if d.get("seconds") is not None and not (_real(d["seconds"]) and d["seconds"] >= 0):
        raise _bad(path, "seconds", "a non-negative number of seconds", d["seconds"])
    worst = d.get("worst_rel_error")
    if worst is not None and not (_real(worst) and worst == max(r["rel_error"] for r in rows)):
        raise _bad(path, "worst_rel_error", "the largest rel_error of the rows", worst)
    return d
