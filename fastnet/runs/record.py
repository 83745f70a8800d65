"""A finished (or stopped) run folder read back as a :class:`RunInfo`: its configuration,
metrics, history and status -- the one loader of run folders for the report and the sweeps."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from fastnet.errors import FastnetError
from fastnet.runs.schema import (
    RunFileError,
    check_config_record,
    check_history,
    check_metrics,
    check_status,
    checked,
    schedule_steps,
)
from fastnet.util.files import read_history, read_json_or_none

# ------------------------------------------------------------------------ reading runs


@dataclass
class RunInfo:
    """One run folder as the report sees it."""

    name: str
    path: Path
    config: dict                      # the TrainConfig as a dict ({} if unreadable)
    metrics: dict | None              # metrics.json, None unless finished
    history: list[dict] = field(default_factory=list)
    status: str = "unfinished"        # finished | diverged | interrupted | failed | unfinished
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    def get(self, key: str, default=math.nan):
        return (self.metrics or {}).get(key, default) if (self.metrics or {}).get(key) is not None else default


def _dedup_steps(rows: list[dict]) -> list[dict]:
    """One evaluation per update step (the last), in step order: an epoch end and an
    --eval-every point can fall on the same step."""
    by_step = {}
    for r in rows:
        by_step[r["step"]] = r
    return [by_step[s] for s in sorted(by_step)]


def is_finished(run_dir) -> bool:
    """A run is finished once it has ``metrics.json``: the writer writes it last."""
    return (Path(run_dir) / "metrics.json").is_file()


def load_run(path) -> RunInfo:
    """The run folder ``path`` as far as it can be read: missing or unreadable JSON records
    leave their part empty (an unreadable metrics.json: not finished); a record that reads but
    breaks its schema (:mod:`fastnet.runs.schema`: config.json, metrics.json, status.json), and
    a history.csv that is not a table of rows fastnet writes, are one RunFileError."""
    path = Path(path)
    record = checked(check_config_record, read_json_or_none(path / "config.json"), path / "config.json")
    total = schedule_steps(record) if record is not None else None
    config = record["train"] if record is not None else {}
    metrics = checked(check_metrics, read_json_or_none(path / "metrics.json"), path / "metrics.json") if is_finished(path) else None
    status, message = ("finished", "") if metrics is not None else ("unfinished", "")
    if metrics is None:
        st = read_json_or_none(path / "status.json")
        if st is not None:
            check_status(st, path / "status.json", total)
            status, message = st.get("status", status), st.get("message", "")
    history = []
    if (path / "history.csv").is_file():
        try:
            rows = read_history(path / "history.csv")
        except FastnetError as exc:  # a history that does not read as a table of numbers
            raise RunFileError(f"{exc}; the file was damaged or edited, train the run again") from None
        history = _dedup_steps(check_history(rows, path / "history.csv", total))
    return RunInfo(path.name, path, config, metrics, history, status, message)


def recorded_threads(run_dir) -> int | None:
    """The BLAS thread count a run started with (``config.json``'s ``threads``), or None for a
    run that did not record one."""
    record = read_json_or_none(Path(run_dir) / "config.json")
    threads = record.get("threads") if isinstance(record, dict) else None
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and 1 <= threads <= 4096 else None
