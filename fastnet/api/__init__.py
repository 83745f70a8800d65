"""L7 the public Python API, over every layer below: :func:`train` and :func:`resume` (a run
folder each), :class:`Run` and :func:`load_run`, :func:`load_cifar10`, :func:`gradcheck`,
:func:`experiment`, :func:`sweep` and :func:`report`. ``fastnet/__init__.py`` exports them
lazily; the command line (``fastnet.cli``) is a thin layer over them."""
from __future__ import annotations

from fastnet.api.run import Run, load_run
from fastnet.api.tools import (
    GradcheckResult,
    experiment,
    gradcheck,
    load_cifar10,
    report,
    sweep,
)
from fastnet.api.training import resume, resume_into, train, train_into

__all__ = ["GradcheckResult", "Run", "experiment", "gradcheck", "load_cifar10", "load_run", "report", "resume", "resume_into", "sweep", "train",
           "train_into"]
