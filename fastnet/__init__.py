"""fastnet: fast k-layer fully-connected networks with batch normalization on CIFAR-10.

The mathematics follows the DD2424 Assignment 3 specification (equations cited by number in
`fastnet.backends.reference`). From Python::

    import fastnet
    run = fastnet.train(hidden=(50, 50), lam=0.005, cycles=1)   # -> fastnet.Run
    run.test_accuracy, run.history, run.plot()

Importing fastnet is cheap: the API (:mod:`fastnet.api`), NumPy, Numba, the compiled extension
and matplotlib are loaded only when first needed (PEP 562 ``__getattr__``).
"""
from __future__ import annotations

import types

import fastnet.report as _report_layer  # cheap: the package's __init__ imports nothing
from fastnet.util.version import VERSION as __version__

_API = ("train", "resume", "Run", "load_run", "load_cifar10", "gradcheck", "GradcheckResult", "experiment", "sweep")
__all__ = ["GradcheckResult", "Run", "__version__", "experiment", "gradcheck", "load_cifar10", "load_run", "report", "resume", "sweep", "train"]


def __getattr__(name: str):
    if name in _API:
        import fastnet.api

        value = getattr(fastnet.api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _ReportLayer(types.ModuleType):
    """``fastnet.report`` is the report layer's package and, called, :func:`fastnet.api.report`:
    a subpackage binds its name in ``fastnet`` when imported, so the function could not keep
    the name otherwise."""

    def __call__(self, folder, out=None):
        """The PDF report and summary.md of an experiment folder: :func:`fastnet.api.report`."""
        from fastnet.api import report

        return report(folder, out=out)


_report_layer.__class__ = _ReportLayer
report = _report_layer
