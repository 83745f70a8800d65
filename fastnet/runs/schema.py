"""The schemas of a run folder's records: ``metrics.json``, ``status.json`` and the
``config.json`` wrapper, each a small plain checker beside the writer that makes the files
(:mod:`fastnet.runs.folder`).

Plain functions rather than a validation library: the files are flat, a handful of fields
each, and what must hold is cross-field sense (accuracies in [0, 1], steps within the
schedule) that a declarative schema would state as custom validators anyway; a dependency
would add a second way of saying one sentence. Every violation is one
:class:`RunFileError` naming the file and the field.
"""
from __future__ import annotations

import math
from pathlib import Path

from fastnet.errors import FastnetError
from fastnet.util.parse import MAX_INT

ACCURACIES = ("test_accuracy", "val_accuracy", "train_accuracy")
LOSSES = ("test_loss", "val_loss", "train_loss", "test_cost", "val_cost", "train_cost")
SECONDS = ("train_seconds", "eval_seconds", "wall_seconds")
COUNTS = ("epochs", "steps", "n_s")
STATUSES = ("interrupted", "diverged", "failed")
BACKENDS = ("auto", "numpy", "numba", "cython")  # fastnet.training.config.BACKEND_NAMES, held equal by a test
GEMMS = ("openblas", "openblas-avx512", "mkl")  # fastnet.backends.gemm_choice.PROVIDER_NAMES (report imports no backends), held equal by a test


class RunFileError(FastnetError):
    """A record of a run folder holds what fastnet never writes there."""


def _real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _bad(path, field: str, want: str, value) -> RunFileError:
    shown = repr(value)
    return RunFileError(f"{path}: field {field!r} must be {want}, got {shown[:40] + ('...' if len(shown) > 40 else '')}; "
                        f"the file was damaged or edited, train the run again")


def check_metrics(d: dict, path) -> dict:
    """``d`` (metrics.json at ``path``) if it is that of a finished run; RunFileError else."""
    for k in ACCURACIES:
        if k in d and not (_real(d[k]) and 0 <= d[k] <= 1):
            raise _bad(path, k, "a number in [0, 1]", d[k])
    if "test_accuracy" not in d:
        raise _bad(path, "test_accuracy", "present", None)
    for k in LOSSES:
        if d.get(k) is not None and not (_real(d[k]) and d[k] >= 0):
            raise _bad(path, k, "a non-negative number or null", d[k])
    for k in SECONDS:
        if d.get(k) is not None and not (_real(d[k]) and d[k] >= 0):
            raise _bad(path, k, "a non-negative number of seconds", d[k])
    for k in COUNTS:
        if d.get(k) is not None and not (_real(d[k]) and d[k] >= 0):
            raise _bad(path, k, "a non-negative number", d[k])
    for k in ("backend", "gemm", "dtype", "status"):
        if d.get(k) is not None and not isinstance(d[k], str):
            raise _bad(path, k, "a string", d[k])
    n_s, steps = d.get("n_s"), d.get("steps")
    if _real(n_s) and _real(steps) and n_s >= 1 and steps > 2 * n_s * 10_000:
        raise _bad(path, "steps", f"within the schedule of n_s = {n_s}", steps)
    return d


def check_status(d: dict, path, total: int | None = None) -> dict:
    """``d`` (status.json at ``path``): why an unfinished run stopped; its steps within the
    schedule's ``total`` when known, the checkpoint no later than the last step."""
    if d.get("status") not in STATUSES:
        raise _bad(path, "status", f"one of {', '.join(STATUSES)}", d.get("status"))
    if not isinstance(d.get("message", ""), str):
        raise _bad(path, "message", "a string", d.get("message"))
    for k in ("steps", "checkpoint_step"):
        if d.get(k) is not None and not (type(d[k]) is int and d[k] >= 0):
            raise _bad(path, k, "a whole number >= 0 or null", d[k])
        if total is not None and d.get(k) is not None and d[k] > total:
            raise _bad(path, k, f"within the schedule of {total} steps", d[k])
    if d.get("steps") is not None and d.get("checkpoint_step") is not None and d["checkpoint_step"] > d["steps"]:
        raise _bad(path, "checkpoint_step", f"no later than the steps done ({d['steps']})", d["checkpoint_step"])
    return d


def _whole(x, lo: int = 0) -> bool:
    return type(x) is int and lo <= x <= MAX_INT


def check_config_record(d: dict, path, cfg=None) -> dict:
    """``d`` (config.json at ``path``) if it holds what the writer
    (:func:`fastnet.runs.folder.write_config`) puts there; RunFileError naming the field else.
    ``cfg``: its ``train`` settings as a checked TrainConfig, when the caller has one (the
    report does not: it never imports training), for the cross-field checks. Records of older
    runs, with ``train`` alone, are accepted."""
    if not isinstance(d.get("train"), dict):
        raise _bad(path, "train", "an object of settings", d.get("train"))
    if d.get("data") is not None and not isinstance(d["data"], dict):
        raise _bad(path, "data", "an object", d["data"])
    data = d.get("data") or {}
    for k in ("source", "split"):
        if data.get(k) is not None and not isinstance(data[k], str):
            raise _bad(path, f"data.{k}", "a string", data[k])
    for k in ("n_train", "n_val", "n_test"):
        if data.get(k) is not None and not _whole(data[k], 1 if k == "n_train" else 0):
            raise _bad(path, f"data.{k}", "a whole number of images", data[k])
    if d.get("backend") is not None and d["backend"] not in BACKENDS:
        raise _bad(path, "backend", f"one of {', '.join(BACKENDS)}", d["backend"])
    if d.get("gemm") is not None and d["gemm"] not in GEMMS:
        raise _bad(path, "gemm", f"one of {', '.join(GEMMS)}", d["gemm"])
    n_s = d.get("n_s_resolved")
    if n_s is not None and not _whole(n_s, 1):
        raise _bad(path, "n_s_resolved", "a whole number of steps >= 1", n_s)
    if cfg is not None:
        if data.get("split") is not None and data["split"] != cfg.split:
            raise _bad(path, "data.split", f"the split of the settings ({cfg.split!r})", data["split"])
        if n_s is not None and data.get("n_train") is not None and n_s != cfg.resolved_n_s(data["n_train"]):
            raise _bad(path, "n_s_resolved", f"the half-cycle of the settings ({cfg.resolved_n_s(data['n_train'])})", n_s)
    return d


def schedule_steps(d: dict) -> int | None:
    """The update steps of the whole schedule of a checked config.json record, if it says."""
    train = d.get("train") or {}
    n_s = d.get("n_s_resolved") if d.get("n_s_resolved") is not None else train.get("n_s")
    cycles = train.get("cycles", 2)
    return 2 * n_s * cycles if _whole(n_s, 1) and _whole(cycles, 1) else None


def _column_ok(column: str, x: float) -> bool:
    if math.isnan(x):
        return column not in ("epoch", "step")
    if column in ("epoch", "step", "eta"):
        return math.isfinite(x) and x >= 0
    if "accuracy" in column:
        return 0 <= x <= 1
    if "loss" in column or "cost" in column:
        return x >= 0  # +inf: the evaluation of a diverging network
    return x > -math.inf


def check_history(rows: list, path, total: int | None = None) -> list:
    """``rows`` (history.csv at ``path`` as read, or a checkpoint's evaluation rows) if each
    is a row fastnet writes: epoch and step present, numbers of their column's range, steps
    whole, epochs and steps never decreasing, no step beyond the schedule's ``total``."""
    last_epoch, last_step = 0.0, 0
    for i, row in enumerate(rows, start=1):
        where = f"row {i}"
        if not isinstance(row, dict) or "epoch" not in row or "step" not in row:
            raise _bad(path, f"{where}, epoch and step", "present", row if not isinstance(row, dict) else sorted(row)[:5])
        for column, x in row.items():
            x = math.nan if x is None else x
            if not (isinstance(column, str) and isinstance(x, (int, float)) and not isinstance(x, bool) and _column_ok(column, float(x))):
                raise _bad(path, f"{where}, column {str(column)[:40]}", "a number of that column's range", x)
        epoch, step = float(row["epoch"]), float(row["step"])
        if step != int(step) or (total is not None and step > total):
            raise _bad(path, f"{where}, step", "a whole step within the schedule" + (f" of {total} steps" if total else ""), row["step"])
        if epoch < last_epoch or step < last_step:
            raise _bad(path, f"{where}, epoch and step", "no smaller than those of the row before", (row["epoch"], row["step"]))
        last_epoch, last_step = epoch, int(step)
    return rows


def checked(check, d: dict | None, path: Path) -> dict | None:
    """``check(d, path)`` for a record that was read, None for one that was not."""
    return None if d is None else check(d, path)
