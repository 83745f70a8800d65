"""Backends: one table of ops, three implementations, and the rule that picks one.

``OPS`` (the one table, :mod:`fastnet.backends.ops`) lists every op; each backend module
(``reference``, ``numba_ops``, ``cython_ops``) exports exactly those names with the
reference's signatures. ``resolve(name)`` returns a :class:`Backend` whose ``ops`` namespace
the network calls; an op a backend lacks is taken from the reference, with one
:class:`FastnetBackendNotice` saying so.

Selection: ``"numpy" | "numba" | "cython"`` or ``"auto"``; the environment variable
``FASTNET_BACKEND`` replaces the default ``"auto"``. ``auto`` takes the first available backend
of :data:`AUTO_ORDER`. ``FASTNET_REQUIRE_CYTHON=1`` turns a missing compiled extension into an
error instead of a fallback.

Loaders are lazy: ``import fastnet.backends`` imports neither Numba nor the extension.
"""
from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace

from fastnet.backends.ops import OPS
from fastnet.errors import BackendError

NAMES: tuple[str, ...] = ("numpy", "numba", "cython")

AUTO_ORDER: tuple[str, ...] = ("cython", "numba", "numpy")
"""The order ``auto`` tries: the first available backend is used.

Rule: the backend with the fastest training *epoch* comes first; when two are within a few
per cent of each other there, the one that starts faster wins; the NumPy reference is last.

The extension comes first: its fused whole step (:mod:`fastnet.backends.cython_step`,
kernels/fused_step.pxi) runs an epoch as fast as Numba's (:mod:`fastnet.backends.numba_step`)
-- both are one compiled call per step around the same BLAS products -- and it is compiled at
install, so a run never waits for a compiler, at any depth. Measured side by side with
``scripts/bench_fused.py`` (epochs of 450 steps on the real data, 5 interleaved rounds,
medians; AMD EPYC family 23 "Zen", AVX2, 2 cores, numba 0.68.1, gcc -O3 baseline x86-64;
2026-12-01):

=======================  ===============  ===============
extension / Numba        1 core           2 cores
=======================  ===============  ===============
3-layer [50, 50] BN      1.07             1.03
9-layer BN               1.03             0.99
=======================  ===============  ===============

Numba's start, by contrast: ~0.4 s to load its cached step, and after an install (or for each
new network depth) tens of seconds of compilation -- 35 s for the 3-layer network on that
machine. Numba stays available (``--backend numba``) with its own results; the NumPy
reference is last.
"""

MODULES = {
    "numpy": "fastnet.backends.reference",
    "numba": "fastnet.backends.numba_ops",
    "cython": "fastnet.backends.cython_ops",
}

#: Backends that also compile a whole SGD step (see :mod:`fastnet.training.fused`):
#: ``ops.fused_step`` is this module (``BLAS``, ``gather_rows``, ``sgd_step``, ...), or None for
#: the others and when its matrix-multiply provider (:mod:`fastnet.backends.blas`) found none.
_FUSED_STEP = {"numba": "fastnet.backends.numba_step", "cython": "fastnet.backends.cython_step"}


class FastnetBackendNotice(UserWarning):
    """A backend was unavailable, or lacked an op, and another was used instead."""


@dataclass(frozen=True)
class Backend:
    """A backend as resolved: its ops (None when unavailable) and why it is unavailable."""

    name: str
    ops: SimpleNamespace | None
    reason: str | None = None
    version: str | None = None
    fallback_ops: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return self.ops is not None

    def describe(self) -> str:
        if not self.available:
            return f"{self.name}: unavailable ({self.reason})"
        extra = f", reference ops for {', '.join(self.fallback_ops)}" if self.fallback_ops else ""
        fused = getattr(self.ops, "fused_step", None)
        start = f"; fused step {fused.start_cost()}" if fused is not None else ""
        return f"{self.name}: available ({self.version or 'no version'}{extra}){start}"


_cache: dict[str, Backend] = {}
_noticed: set[str] = set()


def notice(key: str, message: str) -> None:
    """Emit a FastnetBackendNotice once per cause per process."""
    if key not in _noticed:
        _noticed.add(key)
        warnings.warn(message, FastnetBackendNotice, stacklevel=3)


def _version(name: str, module: ModuleType) -> str:
    if name == "numba":
        import numba

        return f"numba {numba.__version__}"
    if name == "cython":
        return getattr(module, "VERSION", "compiled extension")
    import numpy

    return f"numpy {numpy.__version__}"


def load(name: str) -> Backend:
    """Import a backend by name (cached); an import failure becomes ``reason``, not an error."""
    if name not in MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of: auto, {', '.join(NAMES)}")
    if name in _cache:
        return _cache[name]
    try:
        module = importlib.import_module(MODULES[name])
    except ImportError as exc:  # numba missing, extension not built, ...
        backend = Backend(name, None, reason=str(exc) or type(exc).__name__)
    else:
        reference = importlib.import_module(MODULES["numpy"])
        missing = tuple(op for op in OPS if not hasattr(module, op))
        ops = SimpleNamespace(**{op: getattr(module, op, None) or getattr(reference, op) for op in OPS})
        fused = importlib.import_module(_FUSED_STEP[name]) if name in _FUSED_STEP else None
        ops.fused_step = fused if fused is not None and fused.BLAS is not None else None  # no CBLAS found: op by op
        backend = Backend(name, ops, version=_version(name, module), fallback_ops=missing)
    _cache[name] = backend
    return backend


def _require_cython() -> bool:
    return os.environ.get("FASTNET_REQUIRE_CYTHON", "") == "1"


def _raise_if_extension_missing() -> None:
    backend = load("cython")
    if not backend.available:
        raise BackendError(f"the compiled extension fastnet.ext._ckernels is missing ({backend.reason}) and FASTNET_REQUIRE_CYTHON=1; reinstall with a C compiler: pip install -e .")


def resolve(name: str | None = None) -> Backend:
    """The backend to use for ``name`` ("auto", "numpy", "numba", "cython"; None = default).

    The default is ``$FASTNET_BACKEND`` or "auto". A named backend that is unavailable falls
    back to the next of :data:`AUTO_ORDER` with a notice; an unknown name is a ValueError.
    Under ``FASTNET_REQUIRE_CYTHON=1`` a missing extension raises :class:`BackendError`
    whenever the extension is asked for ("cython"), could be chosen ("auto", wherever cython
    stands in :data:`AUTO_ORDER`), or would be fallen back on.
    """
    if name is None:
        name = os.environ.get("FASTNET_BACKEND", "") or "auto"
    name = name.strip().lower()
    if name != "auto" and name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; choose one of: auto, {', '.join(NAMES)}")
    if name in ("auto", "cython") and _require_cython():
        # Checked up front: "auto" may be satisfied before reaching cython in AUTO_ORDER, and
        # the strict mode exists to catch a build that silently went without the extension.
        _raise_if_extension_missing()
    candidates = AUTO_ORDER if name == "auto" else (name,) + tuple(n for n in AUTO_ORDER if n != name)
    for candidate in candidates:
        backend = load(candidate)
        if backend.available:
            if backend.fallback_ops:
                notice(f"ops:{candidate}", f"fastnet: backend {candidate} lacks {', '.join(backend.fallback_ops)}; using the NumPy reference for those")
            return backend
        if candidate == "cython" and _require_cython():
            _raise_if_extension_missing()
        if name != "auto" or candidate != "numpy":
            notice(f"missing:{candidate}", f"fastnet: backend {candidate} unavailable ({backend.reason}); trying the next one")
    raise BackendError("no backend could be loaded")  # the NumPy reference always loads


def info() -> list[Backend]:
    """Every backend, loaded, for ``fastnet info``."""
    return [load(n) for n in NAMES]
