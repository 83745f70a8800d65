"""``--log mlflow``: a run in MLflow (experiment "fastnet", run name the run folder's), through
``mlflow.tracking.MlflowClient``: at ``$MLFLOW_TRACKING_URI`` if set (a tracking server or
database), else in a file store in the run folder, ``RUN_DIR/mlruns/`` (MLflow 3 asks for
``MLFLOW_ALLOW_FILE_STORE=true`` to write one; it is set for this process when unset). Logged: the settings as
parameters, ``loss`` and ``eta`` per update step, ``train_loss``, ``val_accuracy``, ... per
evaluation. Step metrics are buffered and sent in batches at every evaluation and at the end
(one file write per metric per batch: logging each step alone costs ~1 ms)."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

BATCH = 1000  # MLflow's most metrics per log_batch call
ROW_KEYS = tuple(f"{part}_{what}" for part in ("train", "val") for what in ("loss", "cost", "accuracy"))


class MlflowLogger:
    """A :class:`fastnet.training.loggers.Logger` (by its methods: this module imports nothing of fastnet)."""

    def __init__(self, store: Path, name: str, config: dict):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            store.mkdir(parents=True, exist_ok=True)
            uri = store.resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name("fastnet")
        experiment = found.experiment_id if found else self.client.create_experiment("fastnet")
        self.run_id = self.client.create_run(experiment, run_name=name).info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in config.items()])
        self.pending: list = []

    def _add(self, key: str, value: float, t: int) -> None:
        from mlflow.entities import Metric

        if math.isfinite(value):
            self.pending.append(Metric(key, float(value), int(time.time() * 1000), int(t)))

    def flush(self) -> None:
        for i in range(0, len(self.pending), BATCH):
            self.client.log_batch(self.run_id, metrics=self.pending[i:i + BATCH])
        self.pending = []

    def step(self, t: int, loss: float, eta: float) -> None:
        self._add("loss", loss, t)
        self._add("eta", eta, t)

    def evaluation(self, row: dict) -> None:
        for key in ROW_KEYS:
            self._add(key, row[key], row["step"])
        self.flush()

    def close(self) -> None:
        self.flush()
        self.client.set_terminated(self.run_id)
