"""Evaluation rows, their line, and the clock that keeps evaluation out of the training time."""
from __future__ import annotations

import math
import time

from fastnet.model.network import Metrics
from fastnet.training.checkpointer import Clock
from fastnet.training.config import TrainConfig
from fastnet.training.evaluation import (
    EmaStats,
    due_within_epoch,
    eval_row,
    progress_line,
    train_eval_rows,
)
from fastnet.training.state import History


def test_a_row_without_validation_set_and_its_line():
    row = eval_row(1 / 3, 30, 0.01, Metrics(1.5, 1.6, 0.4), None)
    assert list(row)[:3] == ["epoch", "step", "eta"] and row["epoch"] == 0.3333 and math.isnan(row["val_accuracy"])
    assert progress_line(row, 1 / 3) == "epoch  0.33  step     30  loss 1.5000  cost 1.6000  train acc 0.4000  val acc nan"
    ema = eval_row(1.0, 90, 0.01, Metrics(1.5, 1.6, 0.4), Metrics(1.0, 1.1, 0.5), {"val_accuracy_ema": 0.45})
    assert progress_line(ema, 1.0, "[2] ").startswith("[2] epoch  1.00") and progress_line(ema, 1.0).endswith("val acc 0.5000 (EMA stats 0.4500)")
    assert EmaStats().extra(None) == {}


def test_when_rows_are_measured_within_an_epoch():
    cfg = TrainConfig(eval_every=10)
    assert [t for t in range(1, 41) if due_within_epoch(cfg, t, 40)] == [10, 20, 30]
    precise = TrainConfig(bn_stats="precise", precise_every=15)
    assert [t for t in range(1, 41) if due_within_epoch(precise, t, 40)] == [15, 30]
    assert not any(due_within_epoch(TrainConfig(), t, 40) for t in range(1, 41))
    assert train_eval_rows(TrainConfig(), 100) is None and len(train_eval_rows(TrainConfig(eval_train_images=10), 100)) == 10


def test_clock_shares_intervals_and_leaves_checkpoints_out():
    h = [History(), History()]
    clock = Clock(h)
    time.sleep(0.01)
    clock.charge("train")
    time.sleep(0.01)
    clock.charge("eval", [1])
    time.sleep(0.01)
    clock.charge(None)
    assert h[0].train_seconds == h[1].train_seconds > 0 and h[0].eval_seconds == 0 < h[1].eval_seconds
    assert clock.wall[1] > clock.wall[0] > h[0].train_seconds
