"""``--log tensorboard``: scalars in TensorBoard's event files (``RUN_DIR/tensorboard/``),
written with the tensorboard package's own event writer (no TensorFlow or PyTorch needed).
Tags: ``step/loss``, ``step/eta`` per update step; ``train/loss``, ``val/accuracy``, ... per
evaluation, at its update step."""
from __future__ import annotations

import math
import time
from pathlib import Path

ROW_TAGS = {f"{part}_{what}": f"{part}/{what}" for part in ("train", "val") for what in ("loss", "cost", "accuracy")}


class TensorBoardLogger:
    """A :class:`fastnet.training.loggers.Logger` (by its methods: this module imports nothing of fastnet)."""

    def __init__(self, logdir: Path):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        logdir.mkdir(parents=True, exist_ok=True)
        self.writer = EventFileWriter(str(logdir))

    def _scalars(self, t: int, values: dict) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items() if math.isfinite(v)])
        self.writer.add_event(Event(wall_time=time.time(), step=int(t), summary=summary))

    def step(self, t: int, loss: float, eta: float) -> None:
        self._scalars(t, {"step/loss": loss, "step/eta": eta})

    def evaluation(self, row: dict) -> None:
        self._scalars(row["step"], {tag: row[key] for key, tag in ROW_TAGS.items()} | {"epoch": row["epoch"]})

    def close(self) -> None:
        self.writer.close()
