"""Files: the one atomic writer (fsync, rename, fsync of the folder) and the JSON / CSV
formats of a run folder built on it, with their readers."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from fastnet.errors import FastnetError
from fastnet.util.reader import read_text


@contextmanager
def atomic_file(path, mode: str = "w") -> Iterator[IO]:
    """The one way fastnet writes a file: open ``path.tmp``; on a clean exit flush it to the
    disk (fsync), rename it over ``path`` and make the rename durable (fsync of the folder).

    On any failure (a full disk, an interruption) the ``.tmp`` file is removed and ``path`` is
    left as it was, so a reader never sees a half-written file under the final name.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with open(tmp, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path, text: str) -> None:
    """``text`` into ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as f:
        f.write(text)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path, data: dict) -> None:
    atomic_write(Path(path), json.dumps(_json_safe(data), indent=2, sort_keys=True) + "\n")


def read_json(path) -> dict:
    """The JSON object in ``path``; a missing, unreadable or non-object file is one FastnetError."""
    path = Path(path)
    try:
        data = json.loads(read_text(path, "json", ValueError))
    except FileNotFoundError:
        raise FastnetError(f"{path} does not exist") from None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: [[[[... nested too deeply
        raise FastnetError(f"{path} is not readable JSON ({str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise FastnetError(f"{path} does not hold a JSON object")
    return data


def read_json_or_none(path) -> dict | None:
    """The JSON object in ``path``, or None when the file is missing or is not one (for the
    optional records a report or a sweep reads: a damaged one counts as absent)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return read_json(path)
    except FastnetError:
        return None


def write_csv(path, rows: list[dict], fields) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    atomic_write(Path(path), buf.getvalue())


def read_history(path) -> list[dict]:
    """history.csv back as a list of dicts of floats (empty cells become NaN); a file that
    is not such a table is one FastnetError naming the row and the column."""
    path = Path(path)
    try:
        text = read_text(path, "csv", FastnetError)
    except FileNotFoundError:
        raise FastnetError(f"{path} does not exist") from None
    rows = []
    try:
        for i, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
            if None in row or None in row.values():
                raise FastnetError(f"{path}: row {i} has {'more' if None in row else 'fewer'} cells than the header")
            rows.append({k: _cell(v, path, i, k) for k, v in row.items()})
    except csv.Error as exc:
        raise FastnetError(f"{path} is not a readable CSV table ({exc})") from None
    return rows


def _cell(text: str, path: Path, row: int, column: str) -> float:
    """One number of a CSV table (empty: NaN); FastnetError naming the cell otherwise."""
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise FastnetError(f"{path}: row {row}, column {column[:40]!r} holds {text[:40]!r}, not a number") from None


def atomic_savez(path, arrays: dict) -> None:
    """``np.savez`` (uncompressed) into ``path`` through :func:`atomic_file`."""
    with atomic_file(path, "wb") as f:
        np.savez(f, **arrays)


def fsync_dir(folder) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
