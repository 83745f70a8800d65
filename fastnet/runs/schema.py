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

ACCURACIES = ("test_accuracy", "val_accuracy", "train_accuracy")
LOSSES = ("test_loss", "val_loss", "train_loss", "test_cost", "val_cost", "train_cost")
SECONDS = ("train_seconds", "eval_seconds", "wall_seconds")
COUNTS = ("epochs", "steps", "n_s")
STATUSES = ("interrupted", "diverged", "failed")


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
    for k in ("backend", "dtype", "status"):
        if d.get(k) is not None and not isinstance(d[k], str):
            raise _bad(path, k, "a string", d[k])
    n_s, steps = d.get("n_s"), d.get("steps")
    if _real(n_s) and _real(steps) and n_s >= 1 and steps > 2 * n_s * 10_000:
        raise _bad(path, "steps", f"within the schedule of n_s = {n_s}", steps)
    return d


def check_status(d: dict, path) -> dict:
    """``d`` (status.json at ``path``): why an unfinished run stopped."""
    if d.get("status") not in STATUSES:
        raise _bad(path, "status", f"one of {', '.join(STATUSES)}", d.get("status"))
    if not isinstance(d.get("message", ""), str):
        raise _bad(path, "message", "a string", d.get("message"))
    for k in ("steps", "checkpoint_step"):
        if d.get(k) is not None and not (type(d[k]) is int and d[k] >= 0):
            raise _bad(path, k, "a whole number >= 0 or null", d[k])
    return d


def check_config_record(d: dict, path) -> dict:
    """``d`` (config.json at ``path``): the wrapper around the TrainConfig (whose own checks
    are :meth:`fastnet.training.config.TrainConfig.validate`)."""
    if not isinstance(d.get("train"), dict):
        raise _bad(path, "train", "an object of settings", d.get("train"))
    if d.get("data") is not None and not isinstance(d["data"], dict):
        raise _bad(path, "data", "an object", d["data"])
    data = d.get("data") or {}
    if data.get("source") is not None and not isinstance(data["source"], str):
        raise _bad(path, "data.source", "a path", data["source"])
    if d.get("backend") is not None and not isinstance(d["backend"], str):
        raise _bad(path, "backend", "a backend name", d["backend"])
    return d


def checked(check, d: dict | None, path: Path) -> dict | None:
    """``check(d, path)`` for a record that was read, None for one that was not."""
    return None if d is None else check(d, path)
