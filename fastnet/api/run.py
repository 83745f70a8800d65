"""A run folder as a Python object: :class:`Run` (its configuration, history, metrics, network,
predictions, figures) and :func:`load_run`."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fastnet.data.augment import tta_views
from fastnet.errors import FastnetError


class Run:
    """A run folder written by :func:`fastnet.train` or ``fastnet-train``, read back.

    Attributes
    ----------
    path : Path
        The run folder.
    config : TrainConfig
        Every setting of the run.
    history : list of dict
        One row per evaluation (``history.csv``): epoch, step, eta, train/val loss, cost and
        accuracy.
    steps : list of dict
        One row per update step (``steps.csv``): step, eta, batch_loss.
    metrics : dict or None
        ``metrics.json`` (test accuracy, times, backend, ...); None for an unfinished run.
    status : str
        finished, interrupted, diverged, failed or unfinished.
    """

    def __init__(self, path):
        from fastnet.runs.record import load_run as read_folder
        from fastnet.training.config import TrainConfig
        from fastnet.util.files import read_history, read_json_or_none

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise FastnetError(f"{self.path} is not a fastnet run folder (it has no config.json)")
        info = read_folder(self.path)
        self.config = TrainConfig.from_dict(info.config)
        self.metrics, self.status, self.message = info.metrics, info.status, info.message
        self.history = read_history(self.path / "history.csv") if (self.path / "history.csv").is_file() else []
        self.steps = read_history(self.path / "steps.csv") if (self.path / "steps.csv").is_file() else []
        self.backend = (read_json_or_none(self.path / "config.json") or {}).get("backend") or self.config.backend

    def __repr__(self) -> str:
        from fastnet.runs.folder import describe

        acc = f", test accuracy {self.test_accuracy:.4f}" if self.metrics else f", {self.status}"
        return f"Run({str(self.path)!r}: {describe(self.config)}{acc})"

    @property
    def test_accuracy(self) -> float | None:
        """The test accuracy measured when the run finished (None if it did not)."""
        return None if self.metrics is None else self.metrics["test_accuracy"]

    def history_frame(self):
        """The history as a pandas DataFrame (pandas must be installed)."""
        try:
            import pandas as pd
        except ImportError:
            raise FastnetError("Run.history_frame needs pandas, which is not installed: pip install pandas (or use Run.history, a list of dicts)") from None
        return pd.DataFrame(self.history)

    @cached_property
    def _model(self):
        """(network, mean, std, whitening or None) of model.npz."""
        from fastnet.runs.evaluate import load_model_inputs

        if not (self.path / "model.npz").is_file():
            raise FastnetError(f"{self.path} holds no model.npz: the run did not finish ({self.status}); resume it with fastnet.resume({str(self.path)!r})")
        return load_model_inputs(self.path / "model.npz")

    @property
    def network(self):
        """The trained :class:`fastnet.model.network.Network` (parameters and BN statistics)."""
        return self._model[0]

    @cached_property
    def _ops(self):
        from fastnet.backends import resolve

        return resolve(self.backend).ops

    def inputs(self, X) -> NDArray:
        """``X`` as the network takes it: uint8 pixels (n, 3072) are normalised by the training
        set's mean and std stored with the model; float rows (as :func:`fastnet.load_cifar10`
        gives them) are taken as already normalised. A run with input whitening (issue 17)
        then puts both through the whitening stored with the model, as its training did."""
        net, mean, std, whitening = self._model
        if whitening is not None:
            return self._whitened(X, mean, std, whitening)
        if not isinstance(X, np.ndarray):
            return X  # a Dataset's NormalisedImages: normalised as it is read
        if X.ndim != 2 or X.shape[1] != net.sizes[0]:
            raise FastnetError(f"expected an array of shape (n, {net.sizes[0]}), got {X.shape}")
        if X.dtype == np.uint8:
            return np.ascontiguousarray(((X - mean) / std).astype(net.dtype))
        return np.ascontiguousarray(X, dtype=net.dtype)

    def _whitened(self, X, mean, std, whitening) -> NDArray:
        from fastnet.runs.evaluate import pixel_inputs

        net = self.network
        if X.ndim != 2 or X.shape[1] != whitening.n_in:
            raise FastnetError(f"expected images of shape (n, {whitening.n_in}) (the whitening applies to them), got {X.shape}")
        if isinstance(X, np.ndarray) and X.dtype == np.uint8:
            return pixel_inputs(X, mean, std, net.dtype, whitening)
        return whitening.transform(X, net.dtype)

    def predict(self, X) -> NDArray:
        """The class (0..9) the network gives each row of ``X`` (see :meth:`inputs`), with the
        run's test-time augmentation (issue 17) if it had one."""
        from fastnet.model.network import predict

        return predict(self.network, self.inputs(X), self._ops, views=tta_views(self.config.tta))

    def evaluate(self, X, y) -> dict:
        """Loss, cost (with the run's lambda) and accuracy on ``X``, ``y`` in test mode, with the
        run's test-time augmentation (issue 17) if it had one."""
        from fastnet.model.network import evaluate

        m = evaluate(self.network, self.inputs(X), np.asarray(y), self.config.lam, self._ops, views=tta_views(self.config.tta))
        return {"accuracy": m.accuracy, "loss": m.loss, "cost": m.cost, "n": len(y)}

    def plot(self):
        """Loss, cost and accuracy, training against validation, as one matplotlib Figure
        (shown inline in a notebook; ``fig.savefig(...)`` to keep it)."""
        from fastnet.runs.figures import curves_figure
        from fastnet.runs.folder import describe

        return curves_figure(self.history, title=describe(self.config))

    def save(self, dest) -> Path:
        """Copy the run folder to ``dest`` (which must not exist); returns it."""
        import shutil

        return Path(shutil.copytree(self.path, dest))


def load_run(path) -> Run:
    """The run folder ``path`` as a :class:`Run`.

    Parameters
    ----------
    path : str or Path
        A folder written by :func:`fastnet.train`, ``fastnet-train`` or a sweep.

    Returns
    -------
    Run
    """
    return Run(path)
