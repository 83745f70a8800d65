"""Loggers: what the training loop reports besides its history, each update step's loss and
learning rate (:meth:`Logger.step`) and each evaluation row (:meth:`Logger.evaluation`), to
TensorBoard (:mod:`fastnet.training.log_tensorboard`) or MLflow
(:mod:`fastnet.training.log_mlflow`). One part handed to the loop, as its checkpointer is:
:func:`fastnet.training.loop.fit` calls the logger it is given, :data:`NO_LOGGER` by default."""
from __future__ import annotations

from pathlib import Path

from fastnet.errors import ConfigError

LOGGERS = ("tensorboard", "mlflow")
EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}  # module, pip extra


class Logger:
    """Does nothing: the interface, and the logger of a run without ``--log``."""

    def step(self, t: int, loss: float, eta: float) -> None:
        """Update step ``t`` (from 1) had mini-batch loss ``loss`` at learning rate ``eta``."""

    def evaluation(self, row: dict) -> None:
        """An evaluation row (:func:`fastnet.training.evaluation.eval_row`) was measured."""

    def close(self) -> None:
        """Write what is buffered."""


NO_LOGGER = Logger()


class Loggers(Logger):
    """Several loggers as one."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers

    def step(self, t: int, loss: float, eta: float) -> None:
        for log in self.loggers:
            log.step(t, loss, eta)

    def evaluation(self, row: dict) -> None:
        for log in self.loggers:
            log.evaluation(row)

    def close(self) -> None:
        for log in self.loggers:
            log.close()


def check_loggers(names) -> tuple[str, ...]:
    """``names`` (None, one name or several) as a tuple; ConfigError for an unknown one or one
    whose library is not installed, before any work."""
    import importlib.util

    names = () if not names else (names,) if isinstance(names, str) else tuple(names)
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"unknown logger {name!r}; choose one of {', '.join(LOGGERS)}")
        module, extra = EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"--log {name} needs the {module} package, which is not installed: pip install 'fastnet[{extra}]'")
    return names


def open_loggers(names, out: Path, config: dict) -> Logger:
    """The loggers ``names`` of a run writing into folder ``out`` (``out/tensorboard/``,
    ``out/mlruns/``), given its settings ``config``; :data:`NO_LOGGER` for none."""
    names = check_loggers(names)
    if not names:
        return NO_LOGGER
    made = []
    for name in names:
        if name == "tensorboard":
            from fastnet.training.log_tensorboard import TensorBoardLogger

            made.append(TensorBoardLogger(Path(out) / "tensorboard"))
        else:
            from fastnet.training.log_mlflow import MlflowLogger

            made.append(MlflowLogger(Path(out) / "mlruns", Path(out).name, config))
    return made[0] if len(made) == 1 else Loggers(made)
