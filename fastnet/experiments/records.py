"""The schemas of the records the experiments write and the report reads: the gradient-check
records (``gradcheck.json``, ``gradcheck_bonus.json``, made by
:func:`fastnet.model.gradcheck.check_record`), ``experiment.json``, ``lambda_search.json``
and ``all.json`` (written in :mod:`fastnet.experiments.assignment`). Here, between the
writer and the reader, because the report imports no model.

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


def _bad(path, field: str, want: str, value, redo: str = "`fastnet gradcheck` (or the experiment)") -> RunFileError:
    shown = repr(value)
    return RunFileError(f"{path}: field {field!r} must be {want}, got {shown[:40] + ('...' if len(shown) > 40 else '')}; "
                        f"the record was damaged or edited, delete it and run {redo} again")


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


# ------------------------------------------------- experiment.json, lambda_search.json, all.json

MAX_LIST = 100_000   # runs, names or invocations in one record; the assignment has a few dozen
_EXPERIMENT = "the experiment"


def _is_list(v, item) -> bool:
    return isinstance(v, list) and len(v) <= MAX_LIST and all(item(x) for x in v)


def _fraction_or_none(v) -> bool:   # an accuracy; a run without one is written as null or NaN
    return v is None or (isinstance(v, float) and math.isnan(v)) or (_real(v) and 0 <= v <= 1)


def _check_fields(d, path, checks, prefix: str = "", required=()) -> None:
    """Each ``(field, ok, want)`` of ``checks`` on ``d``: a missing field is fine unless it is
    in ``required``; a present one must pass ``ok``."""
    for k, ok, want in checks:
        if (k in d or k in required) and not ok(d.get(k)):
            raise _bad(path, prefix + k, want, d.get(k), _EXPERIMENT)


def _section(d, path, key: str) -> dict:
    v = d.get(key, {})
    if not isinstance(v, dict):
        raise _bad(path, key, "an object", v, _EXPERIMENT)
    return v


def _objects(d: dict, key: str, what: str, path) -> list:
    """``d[key]`` (default []) if it is a list of at most MAX_LIST objects; else one sentence."""
    items = d.get(key, [])
    if not _is_list(items, lambda x: True):
        raise _bad(path, key, f"a list of at most {MAX_LIST} {what}", items, _EXPERIMENT)
    for i, x in enumerate(items):
        if not isinstance(x, dict):
            raise _bad(path, f"{key}[{i}]", "an object", x, _EXPERIMENT)
    return items


def check_experiment_record(d: dict, path) -> dict:
    """``d`` (an ``experiment.json`` at ``path``) if the report can read it: the runs it lists
    (in order) are objects with a name, the flags and times are of their kind."""
    runs = _objects(d, "runs", "runs", path)
    for i, r in enumerate(runs):
        if not (isinstance(r.get("name"), str) and r["name"]):
            raise _bad(path, f"runs[{i}].name", "a run name", r.get("name"), _EXPERIMENT)
        if "config" in r and not isinstance(r["config"], dict):
            raise _bad(path, f"runs[{i}].config", "an object", r["config"], _EXPERIMENT)
    names = lambda v: _is_list(v, lambda x: isinstance(x, str))
    seconds = lambda v: _real(v) and v >= 0
    _check_fields(d, path, (
        ("experiment", lambda v: isinstance(v, str), "a string"), ("title", lambda v: isinstance(v, str), "a string"),
        ("quick", lambda v: isinstance(v, bool), "true or false"), ("full_n_s", lambda v: isinstance(v, bool), "true or false"),
        *((k, names, "a list of run names") for k in ("executed", "skipped", "failed", "diverged")),
        ("compute_seconds", seconds, "a non-negative number of seconds"), ("elapsed_seconds", seconds, "a non-negative number of seconds"),
        ("best_lam", seconds, "a finite number >= 0"), ("finished_at", lambda v: isinstance(v, str), "a date and time")))
    return d


def check_lambda_search_record(d: dict, path) -> dict:
    """``d`` (a ``lambda_search.json`` at ``path``) if the report can quote it: the training
    settings, both stages' values and log10 ranges (low <= high), and the best runs' lambda
    (>= 0) and accuracies (0..1)."""
    lam = lambda v: _real(v) and v >= 0
    whole = lambda v: _whole(v, 1)
    text = lambda v: isinstance(v, str)
    _check_fields(d, path, (("quick", lambda v: isinstance(v, bool), "true or false"), ("criterion", text, "a string")))
    _check_fields(_section(d, path, "training"), path, (
        ("cycles", whole, "a whole number >= 1"), ("n_s", whole, "a whole number >= 1"), ("batch", whole, "a whole number >= 1"),
        ("eta_min", lambda v: _real(v) and v > 0, "a positive number"), ("eta_max", lambda v: _real(v) and v > 0, "a positive number"),
        ("init", text, "a string")), "training.")
    for stage in ("coarse", "fine"):
        sec = _section(d, path, stage)
        _check_fields(sec, path, (
            ("method", text, "a string"), ("values", lambda v: _is_list(v, lam), "a list of lambdas >= 0"),
            ("log10_range", lambda v: isinstance(v, list) and len(v) == 2 and all(_real(x) and abs(x) <= 308 for x in v) and v[0] <= v[1],
             "[low, high], two log10 values with low <= high"),
            ("seed", lambda v: type(v) is int, "a whole number"), ("around", lam, "a lambda >= 0")), f"{stage}.")
    for key, fields in (("best", ("val_accuracy", "test_accuracy")), ("best_coarse", ("val_accuracy",))):
        if key not in d:
            continue
        _check_fields(_section(d, path, key), path, (
            ("lam", lam, "a lambda >= 0"), ("run", text, "a run name"),
            *((k, _fraction_or_none, "an accuracy between 0 and 1") for k in fields)), f"{key}.", required=("lam", *fields))
    return d


def _check_invocation(c, path, prefix: str) -> None:
    _check_fields(c, path, (
        ("wall_seconds", lambda v: _real(v) and v >= 0, "a non-negative number of seconds"),
        ("executed", lambda v: _whole(v), "a whole number >= 0"), ("runs", lambda v: _whole(v), "a whole number >= 0"),
        ("workers", lambda v: v is None or _whole(v, 1), "a whole number >= 1 or null"),
        ("scheduler", lambda v: v is None or isinstance(v, str), "an address or null"),
        ("finished_at", lambda v: isinstance(v, str), "a date and time")), prefix)


def check_all_record(d: dict, path) -> dict:
    """``d`` (an ``all.json`` at ``path``) if the report can sum its wall time: the last
    invocation's fields at the top and every invocation's in ``invocations``."""
    _check_fields(d, path, (("quick", lambda v: isinstance(v, bool), "true or false"),
                            ("experiments", lambda v: _is_list(v, lambda x: isinstance(x, str)), "a list of experiment names")))
    _check_invocation(d, path, "")
    for i, c in enumerate(_objects(d, "invocations", "invocations", path)):
        _check_invocation(c, path, f"invocations[{i}].")
    return d
