"""Which matrix-multiply provider a run's fused step calls: ``--gemm auto|openblas|mkl``.

The providers are :mod:`fastnet.backends.providers`'s (:data:`~fastnet.backends.providers.NAMED`).
:func:`resolve` turns a run's setting into the name of one that is installed, :func:`table`
gives that provider's :data:`~fastnet.backends.providers.GemmTable`, which
:class:`fastnet.training.fused.FusedStep` hands to its plan.

``auto`` is OpenBLAS unless MKL is installed *and* measured faster on this CPU for the two
products that dominate the step, the first layer's: the forward (batch x d) @ (d x m1) and the
weight gradient folded into the update, (d x batch) @ (batch x m1) with beta. The measurement
(:func:`measure`) runs once per CPU model, shape and dtype, on one thread, the providers
interleaved, and keeps the median; its result is cached in a small JSON file in the user cache
directory (:func:`cache_path`), so later runs on this machine read it instead of measuring.
MKL must win by :data:`MARGIN` to be chosen: on noise alone auto stays with OpenBLAS, never
slower than what runs without MKL. Without MKL nothing is measured and auto is OpenBLAS: the
table every compiled product used before the choice existed, the same bits.

A run records the name it resolved (config.json, metrics.json); a resumed run takes that
name again, since the two libraries round differently.
"""
from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path

import numpy as np

from fastnet.backends import providers
from fastnet.backends.providers import GemmTable
from fastnet.errors import ConfigError

#: The values of ``--gemm``.
GEMM_NAMES: tuple[str, ...] = ("auto", "openblas", "mkl")
#: The provider names a run can record (what ``auto`` resolves to).
PROVIDER_NAMES: tuple[str, ...] = ("openblas", "mkl")
#: MKL must take at most this fraction of OpenBLAS's median time to be auto's choice.
MARGIN = 0.95
#: The measurement: interleaved rounds per provider, and the time one round is made to last.
ROUNDS, ROUND_SECONDS = 7, 0.02
#: The shape ``fastnet info`` reports auto's choice for: the assignment's run (batch 100, the
#: 3072 pixels, 50 units in the first hidden layer, float32).
DEFAULT_SHAPE = (100, 3072, 50, "float32")

_tables: dict[str, GemmTable | None] = {}


def check_name(name) -> None:
    """ConfigError unless ``name`` is a value of ``--gemm``."""
    if name not in GEMM_NAMES:
        raise ConfigError(f"unknown matrix-multiply provider {name!r} (--gemm); choose one of {', '.join(GEMM_NAMES)}")


def table(name: str) -> GemmTable | None:
    """The table of the provider ``name`` ("openblas" or "mkl"; found once per process), or None
    if its library is not installed."""
    if name not in PROVIDER_NAMES:
        raise ValueError(f"no matrix-multiply provider {name!r}; choose one of {', '.join(PROVIDER_NAMES)}")
    if name not in _tables:
        _tables[name] = providers.NAMED[name]()
    return _tables[name]


def available() -> dict[str, GemmTable]:
    """The providers whose library is installed, by name."""
    return {name: t for name in PROVIDER_NAMES if (t := table(name)) is not None}


def missing_message(name: str) -> str:
    if name == "mkl":
        return ("--gemm mkl needs Intel MKL, which is not installed here: pip install 'fastnet[mkl]' "
                "(or choose --gemm auto or openblas)")
    return f"--gemm {name}: its library was not found among the loaded libraries; choose --gemm auto"


def resolve(name: str, *, batch: int, d: int, m1: int, dtype: str = "float32", one_thread: bool = True, measure_fn=None) -> str:
    """The provider a run with ``--gemm name`` uses, for its first layer's shape (batch rows, d
    inputs, m1 units) and dtype: "openblas" or "mkl". ConfigError, before any work, for an
    unknown name or a provider that is not installed (with the command that installs it).
    ``one_thread``: whether the run's step calls BLAS on one thread (per core); if not, auto is
    OpenBLAS unmeasured -- MKL runs sequential (:mod:`fastnet.backends.providers`), OpenBLAS on
    the run's threads. ``measure_fn``: what measures auto's products (:func:`measure`; tests
    hand in a fake)."""
    check_name(name)
    if name != "auto":
        if table(name) is None:
            raise ConfigError(missing_message(name))
        return name
    if table("mkl") is None or table("openblas") is None or not one_thread:
        return "openblas" if table("openblas") is not None else "mkl" if table("mkl") is not None else "openblas"
    return auto_choice(batch, d, m1, dtype, measure_fn=measure_fn)["choice"]


# ------------------------------------------------------------------------- auto, measured


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s), or the machine's architecture if it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def cache_path() -> Path:
    """The JSON file of auto's measurements: ``$FASTNET_GEMM_CACHE`` if set (the tests' own),
    else in the user cache directory (platformdirs)."""
    if os.environ.get("FASTNET_GEMM_CACHE"):
        return Path(os.environ["FASTNET_GEMM_CACHE"])
    try:
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir("fastnet"))
    except ImportError:  # platformdirs is a dependency; a broken install still gets a sensible place
        root = Path.home() / ".cache" / "fastnet"
    return root / "gemm_choice.json"


def cache_key(batch: int, d: int, m1: int, dtype: str) -> str:
    return f"{cpu_model()} | {np.dtype(dtype).name} | {batch}x{d}x{m1}"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _valid_entry(entry) -> bool:
    return isinstance(entry, dict) and entry.get("choice") in PROVIDER_NAMES


def auto_choice(batch: int, d: int, m1: int, dtype: str = "float32", *, measure_fn=None) -> dict:
    """auto's entry for this CPU and shape: {"choice", "seconds": {provider: median}, ...}, read
    from :func:`cache_path`, else measured (``measure_fn``, default :func:`measure`) and written
    there. A cache that cannot be written only costs the next run a measurement."""
    path, key = cache_path(), cache_key(batch, d, m1, dtype)
    entry = _read_cache(path).get(key)
    if _valid_entry(entry):
        return entry
    seconds = (measure_fn or measure)(batch, d, m1, dtype)
    choice = "mkl" if seconds["mkl"] <= MARGIN * seconds["openblas"] else "openblas"
    entry = {"choice": choice, "seconds": {k: float(v) for k, v in seconds.items()}, "margin": MARGIN,
             "mkl_version": providers.mkl_version(), "measured": time.strftime("%Y-%m-%d")}
    try:
        from fastnet.util.files import write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        cache = _read_cache(path)  # again: another process may have added its shapes meanwhile
        cache[key] = entry
        write_json(path, cache)
    except OSError:
        pass
    return entry


_GEMM_TYPES = {np.float32: ctypes.c_float, np.float64: ctypes.c_double}


def gemm_caller(tab: GemmTable, dtype):
    """``call(A, trans_a, B, C, alpha, beta, trans_b=False)``: C = alpha op(A) op(B) + beta C by
    the table's ?gemm (row-major, C-contiguous arrays), through ctypes -- for the measurement
    and scripts/bench_gemm.py, which must work with or without Numba and the extension; the
    call costs both providers the same."""
    dt = np.dtype(dtype).type
    real, it = _GEMM_TYPES[dt], ctypes.c_int64 if tab[2] else ctypes.c_int
    P = ctypes.c_void_p
    fn = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, it, it, it, real, P, it, P, it, real, P, it)(
        int(tab[0] if dt is np.float32 else tab[1]))

    def call(A, trans_a, B, C, alpha, beta, trans_b=False):
        m, n = C.shape
        k = A.shape[0] if trans_a else A.shape[1]
        fn(101, 112 if trans_a else 111, 112 if trans_b else 111, m, n, k, alpha, A.ctypes.data, A.shape[1], B.ctypes.data, B.shape[1],
           beta, C.ctypes.data, n)

    return call


def first_layer_products(tab: GemmTable, batch: int, d: int, m1: int, dtype, rng=None):
    """``run()``: the first layer's two products of a step once, by the table's ?gemm: S = X W1t
    and W1t = keep W1t - step X^T G (as the fused step computes them)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    X = rng.standard_normal((batch, d)).astype(dtype)
    W1t = (0.01 * rng.standard_normal((d, m1))).astype(dtype)
    G = rng.standard_normal((batch, m1)).astype(dtype)
    S = np.empty((batch, m1), dtype)
    call = gemm_caller(tab, dtype)

    def run():
        call(X, False, W1t, S, 1.0, 0.0)
        call(X, True, G, W1t, -1e-6, 1.0)

    return run


#: OpenBLAS 0.3.31 runs a step's small products ~1.5x faster once its process has made one
#: product ~1024 wide, or one on two threads (AMD EPYC Zen 1: the [50] first layer's two products
#: 3.0 ms in a fresh process, 1.95 ms after; MKL 2.5 ms either way). A run whose step calls BLAS
#: on one thread per core makes neither (its evaluations run on one BLAS thread too), so auto
#: measures in the process as it is at the start of the run, as its steps will find OpenBLAS:
#: real runs of [50, 50] on one thread took 3.6 / 3.2 s on MKL against 4.7 / 4.0 s on OpenBLAS
#: (900 steps, two runs each, 2026-12-02). Runs whose step calls BLAS on several threads never
#: consider MKL (:func:`resolve`'s ``threads``).
def measure(batch: int, d: int, m1: int, dtype: str = "float32", rounds: int = ROUNDS) -> dict[str, float]:
    """Seconds per step of the first layer's two products for each installed provider: one
    BLAS thread, the providers interleaved round by round (each round long enough to time,
    ~:data:`ROUND_SECONDS`), the median of ``rounds``."""
    from threadpoolctl import threadpool_limits

    runs = {name: first_layer_products(tab, batch, d, m1, dtype) for name, tab in available().items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with threadpool_limits(1, user_api="blas"):
        for run in runs.values():  # warm: MKL's first call sets itself up
            run()
        start = time.perf_counter()
        next(iter(runs.values()))()
        reps = max(1, int(ROUND_SECONDS / max(time.perf_counter() - start, 1e-6)))
        order = list(runs)
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                run = runs[name]
                start = time.perf_counter()
                for _ in range(reps):
                    run()
                times[name].append((time.perf_counter() - start) / reps)
    return {name: float(np.median(t)) for name, t in times.items()}


def describe() -> list[str]:
    """Lines for ``fastnet info``: each provider found (library, version) and auto's choice for
    :data:`DEFAULT_SHAPE` (from the cache, or measured now)."""
    lines = []
    for name in PROVIDER_NAMES:
        if table(name) is None:
            lines.append(f"{name}: not installed" + (" (pip install 'fastnet[mkl]')" if name == "mkl" else ""))
            continue
        version = providers.mkl_version() if name == "mkl" else None
        lines.append(f"{name}: {providers.library_path(name) or 'loaded'}" + (f" ({version})" if version else ""))
    batch, d, m1, dtype = DEFAULT_SHAPE
    if table("mkl") is None:
        lines.append("auto: openblas (MKL not installed; nothing measured)")
    else:
        entry = auto_choice(batch, d, m1, dtype)
        secs = entry.get("seconds") or {}
        timing = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in secs.items()) if isinstance(secs, dict) else ""
        lines.append(f"auto: {entry['choice']} for batch {batch} x {d} -> {m1} {dtype} on {cpu_model()} "
                     f"(first layer's two products, 1 thread: {timing}; cached in {cache_path()})")
    return lines
