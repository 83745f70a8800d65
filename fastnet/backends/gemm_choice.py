"""Which matrix-multiply provider a run's fused step calls: ``--gemm auto|openblas|openblas-avx512|mkl``.

The providers are :mod:`fastnet.backends.providers`'s (:data:`~fastnet.backends.providers.NAMED`).
:func:`resolve` turns a run's setting into the name of one that is installed, :func:`table`
gives that provider's :data:`~fastnet.backends.providers.GemmTable`, which
:class:`fastnet.training.fused.FusedStep` hands to its plan.

``auto`` is NumPy's OpenBLAS unless another provider could run here (:func:`candidates`: MKL
when installed; OpenBLAS on its AVX-512 kernels where NumPy's runs older ones on an AVX-512
CPU without ``OPENBLAS_CORETYPE`` having asked for them) *and* is measured faster on this CPU for the two products that dominate the step, the
first layer's: the forward (batch x d) @ (d x m1) and the weight gradient folded into the
update, (d x batch) @ (batch x m1) with beta. The measurement (:func:`measure`) runs once per
CPU, shape and dtype, on one thread, the candidates interleaved, and keeps the medians; they
are cached in a small JSON file in the user cache directory (:func:`cache_path`), so later runs
on this machine read them instead of measuring. Another provider must win by :data:`MARGIN` to
be chosen (:func:`pick`): on noise alone auto stays with NumPy's OpenBLAS. With nothing else to
measure, nothing is measured and auto is NumPy's OpenBLAS: the table every compiled product
used before the choice existed, the same bits.

With ``--precision bf16`` the first layer's products are bf16 ones, fastnet's own
(AVX512_BF16) or MKL's -- and MKL's come with ``mkl``. Where both run, auto measures those
two instead (:func:`bf16_choice`, cached alike): MKL if its bf16 products are faster by
:data:`MARGIN`, else a provider other than MKL, so that fastnet's kernels run.

A run records the name it resolved (config.json, metrics.json); a resumed run takes that
name again, since the libraries (and one library's kernels for two cores) round differently.
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
from fastnet.util.cpu import cpu_id

#: The provider names a run can record (what ``auto`` resolves to).
PROVIDER_NAMES: tuple[str, ...] = ("openblas", "openblas-avx512", "mkl")
#: The values of ``--gemm``.
GEMM_NAMES: tuple[str, ...] = ("auto", *PROVIDER_NAMES)
#: Providers whose products run on the caller's thread only (MKL's sequential layer): a run
#: whose step calls BLAS on several threads never takes them.
SEQUENTIAL: frozenset[str] = frozenset({"mkl"})
#: Another provider must take at most this fraction of NumPy's OpenBLAS's median time to be auto's choice.
MARGIN = 0.95
#: The measurement: interleaved rounds per provider, the time one round is made to last, and
#: the fewest steps' products in a round. Seven rounds of 20 ms -- one step each for a
#: 1024-wide first layer -- chose MKL for [1024, 512, 256] on an AMD EPYC (Zen 3) where it is
#: 1.19x slower (scripts/bench_gemm.py); nine rounds of 50 ms cost ~1 s once per CPU and shape.
ROUNDS, ROUND_SECONDS, ROUND_STEPS = 9, 0.05, 2
#: The shape ``fastnet info`` reports auto's choice for: the assignment's run (batch 100, the
#: 3072 pixels, 50 units in the first hidden layer, float32).
DEFAULT_SHAPE = (100, 3072, 50, "float32")

_tables: dict[str, GemmTable | None] = {}


def check_name(name) -> None:
    """ConfigError unless ``name`` is a value of ``--gemm``."""
    if name not in GEMM_NAMES:
        raise ConfigError(f"unknown matrix-multiply provider {name!r} (--gemm); choose one of {', '.join(GEMM_NAMES)}")


def table(name: str) -> GemmTable | None:
    """The table of the provider ``name`` (one of :data:`PROVIDER_NAMES`; found once per
    process), or None if its library is not installed or cannot run here."""
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
    if name == "openblas-avx512":
        return f"--gemm openblas-avx512 cannot run here: {providers.avx512_missing}; choose --gemm auto or openblas"
    return f"--gemm {name}: its library was not found among the loaded libraries; choose --gemm auto"


def candidates() -> tuple[str, ...]:
    """The providers auto measures here: NumPy's OpenBLAS; OpenBLAS on its AVX-512 kernels only
    where they are not NumPy's already (:func:`fastnet.backends.providers.avx512_upgrade`: else
    they would be the same kernels, and a measurement of noise would choose between them) and
    ``OPENBLAS_CORETYPE`` did not ask for NumPy's (a choice auto honours: ``--gemm
    openblas-avx512`` overrides it); MKL when installed."""
    names = ["openblas"] if table("openblas") is not None else []
    if providers.avx512_upgrade() and not providers.coretype_asked() and table("openblas-avx512") is not None:
        names.append("openblas-avx512")
    if table("mkl") is not None:
        names.append("mkl")
    return tuple(names)


def resolve(name: str, *, batch: int, d: int, m1: int, dtype: str = "float32", one_thread: bool = True, measure_fn=None,
            bf16: bool = False, one_core: bool = False) -> str:
    """The provider a run with ``--gemm name`` uses, for its first layer's shape (batch rows, d
    inputs, m1 units) and dtype: one of :data:`PROVIDER_NAMES`. ConfigError, before any work, for
    an unknown name or a provider that cannot run here (with the command that installs it).
    ``one_thread``: whether the run's step calls BLAS on one thread (per core); if not, auto
    leaves out :data:`SEQUENTIAL` providers (MKL runs each product on its caller's thread) and
    chooses among the others by their one-thread times. ``measure_fn``: what measures auto's
    products (:func:`measure`; tests hand in a fake). ``bf16``: a ``--precision bf16`` run, whose
    first-layer products are bf16 (module docstring; ``measure_fn`` then measures those too);
    ``one_core``: its step takes one core (:func:`bf16_choice`)."""
    check_name(name)
    if name != "auto":
        if table(name) is None:
            raise ConfigError(missing_message(name))
        return name
    names = candidates()
    if "openblas" not in names:  # no NumPy OpenBLAS to call by address: whatever else there is
        return names[0] if names else "openblas"
    allowed = [n for n in names if one_thread or n not in SEQUENTIAL]
    if bf16 and "mkl" in allowed and bf16_both_run():
        if bf16_choice(batch, d, m1, measure_fn=measure_fn, one_core=one_core)["choice"] == "mkl":
            return "mkl"
        allowed.remove("mkl")  # MKL's float32 products would bring its bf16 ones along
    if len(allowed) < 2:
        return "openblas"
    return pick(auto_choice(batch, d, m1, dtype, names, measure_fn=measure_fn)["seconds"], allowed)


def pick(seconds: dict[str, float], allowed) -> str:
    """The fastest of ``allowed`` by ``seconds`` if it takes at most :data:`MARGIN` of NumPy's
    OpenBLAS's time, else "openblas"."""
    best = min(allowed, key=lambda n: seconds[n])
    return best if seconds[best] <= MARGIN * seconds["openblas"] else "openblas"


# ------------------------------------------------------------------------- auto, measured

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
    """The CPU (model name, family and model: one name can cover several generations), the
    kernels NumPy's OpenBLAS runs (``OPENBLAS_CORETYPE`` can change them), the dtype ("bf16":
    :func:`bf16_choice`'s products; "bf16 tiles" where fastnet's own run on AMX tiles) and the
    shape."""
    kind = dtype if dtype.startswith("bf16") else np.dtype(dtype).name
    if kind.startswith("bf16") and _fastnet_bf16_on_tiles():
        kind += " tiles"
    return f"{cpu_id()} | openblas {providers.numpy_openblas_core()} | {kind} | {batch}x{d}x{m1}"


def _fastnet_bf16_on_tiles() -> bool:
    """Whether fastnet's bf16 products run on AMX tiles here (kernels/amx_gemm.h)."""
    ck = _bf16_kernels()
    return ck is not None and bool(ck.bf16_amx())


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _measurement() -> list:
    """How :func:`measure` measures, as a cache entry records it (``"rounds"``)."""
    return [ROUNDS, ROUND_SECONDS]


def _valid_entry(entry, names) -> bool:
    """An entry of the cache that holds a time for each of ``names`` and no other, and one of
    them as its choice, measured as :func:`measure` measures now (an entry of a shorter
    measurement is made again)."""
    if not isinstance(entry, dict) or entry.get("choice") not in names or entry.get("rounds") != _measurement():
        return False
    seconds = entry.get("seconds")
    return (isinstance(seconds, dict) and set(seconds) == set(names)
            and all(isinstance(v, (int, float)) and v > 0 for v in seconds.values()))


def auto_choice(batch: int, d: int, m1: int, dtype: str = "float32", names=None, *, measure_fn=None) -> dict:
    """auto's entry for this CPU and shape: {"choice", "seconds": {provider: median}, ...} for
    the providers ``names`` (default :func:`candidates`), read from :func:`cache_path`, else
    measured (``measure_fn``, default :func:`measure`) and written there. An entry measured with
    other providers installed is measured again. A cache that cannot be written only costs the
    next run a measurement."""
    names = tuple(names or candidates())
    return _cached(cache_key(batch, d, m1, dtype), names, lambda: (measure_fn or measure)(batch, d, m1, dtype, names),
                   lambda seconds: pick(seconds, names))


def _cached(key: str, names: tuple[str, ...], measure_now, choose) -> dict:
    """The cache's entry ``key`` if it is valid for ``names``, else ``measure_now()``'s seconds
    with ``choose(seconds)`` as the choice, written to the cache."""
    path = cache_path()
    entry = _read_cache(path).get(key)
    if _valid_entry(entry, names):
        return entry
    seconds = measure_now()
    entry = {"choice": choose(seconds), "seconds": {k: float(v) for k, v in seconds.items()}, "margin": MARGIN,
             "rounds": _measurement(), "mkl_version": providers.mkl_version(), "measured": time.strftime("%Y-%m-%d")}
    try:
        from fastnet.util.files import write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        cache = _read_cache(path)  # again: another process may have added its shapes meanwhile
        cache[key] = entry
        write_json(path, cache)
    except OSError:
        pass
    return entry


# ------------------------------------------------------------------- --precision bf16

#: The bf16 products bf16_choice measures: fastnet's kernels (kernels/bf16_gemm.h) and MKL's.
BF16_NAMES: tuple[str, ...] = ("fastnet", "mkl")


def _bf16_kernels():
    """The extension's fused-step module if it runs fastnet's bf16 kernels on this CPU, else None."""
    try:
        from fastnet.backends import cython_step
    except ImportError:
        return None
    return cython_step if cython_step.bf16_supported() else None


def bf16_both_run() -> bool:
    """Whether fastnet's bf16 kernels (AVX512_BF16) and MKL's bf16 product both run here."""
    return _bf16_kernels() is not None and providers.mkl_bf16_gemm() is not None


def bf16_choice(batch: int, d: int, m1: int, *, measure_fn=None, one_core: bool = False) -> dict:
    """auto's entry for a --precision bf16 run of this shape where :func:`bf16_both_run`:
    {"choice": "fastnet" or "mkl", "seconds": ...}, cached as :func:`auto_choice`'s; MKL's must
    take at most :data:`MARGIN` of fastnet's time (``measure_fn(batch, d, m1, kind, names)``,
    default :func:`measure_bf16`). ``one_core``: a run whose step takes one core, which makes
    the batch's bf16 copies beside the step on the other (kind "bf16 one-core": the products
    timed without them); else the two-core split, which makes them in the step ("bf16")."""
    def choose(seconds):
        return "mkl" if seconds["mkl"] <= MARGIN * seconds["fastnet"] else "fastnet"

    kind = "bf16 one-core" if one_core else "bf16"
    return _cached(cache_key(batch, d, m1, kind), BF16_NAMES,
                   lambda: (measure_fn or measure_bf16)(batch, d, m1, kind, BF16_NAMES), choose)


def bf16_first_layer_products(products: str, batch: int, d: int, m1: int, rng=None, copy_batch: bool = True):
    """``run()``: the first layer's two bf16 products of a step once, as the fused step makes
    them, their operands' rounding included (``copy_batch`` False: but the batch's, which a
    one-core step makes beside it) -- on fastnet's kernels or MKL's product."""
    from fastnet.backends import cython_step as ck

    rng = rng if rng is not None else np.random.default_rng(0)
    X = rng.standard_normal((batch, d)).astype(np.float32)
    W1t = (0.01 * rng.standard_normal((d, m1))).astype(np.float32)
    G = rng.standard_normal((batch, m1)).astype(np.float32)
    S = np.empty((batch, m1), np.float32)
    if products == "fastnet":
        W1p, Xr, Xc, Gc = (np.zeros(shape, np.uint32) for shape in ck.bf16_pairs_shapes(batch, d, m1))
        if not copy_batch:  # the copies as the step's second thread leaves them
            ck.bf16_pairs_products(X, W1t, G, S, W1p, Xr, Xc, Gc)
        return lambda: ck.bf16_pairs_products(X, W1t, G, S, W1p, Xr, Xc, Gc, copy_batch)
    fn = providers.mkl_bf16_gemm()
    X16, W16, G16 = np.zeros((batch, d), np.uint16), np.zeros((d, m1), np.uint16), np.zeros((batch, m1), np.uint16)
    ck.round_bf16(W1t, W16)
    if not copy_batch:
        ck.bf16_library_products(fn, X, W1t, G, S, X16, W16, G16)
    return lambda: ck.bf16_library_products(fn, X, W1t, G, S, X16, W16, G16, copy_batch)


def measure_bf16(batch: int, d: int, m1: int, dtype: str = "bf16", names=BF16_NAMES, rounds: int = ROUNDS) -> dict[str, float]:
    """Seconds per step of the first layer's two bf16 products on each of ``names`` (fastnet's
    kernels, MKL's), interleaved and timed as :func:`measure` times the float32 ones; ``dtype``
    "bf16 one-core": without the batch's copies (:func:`bf16_choice`)."""
    copy_batch = dtype != "bf16 one-core"
    return _time_runs({name: bf16_first_layer_products(name, batch, d, m1, copy_batch=copy_batch) for name in names}, rounds)


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
def measure(batch: int, d: int, m1: int, dtype: str = "float32", names=None, rounds: int = ROUNDS) -> dict[str, float]:
    """Seconds per step of the first layer's two products for each of the providers ``names``
    (default: each one installed): one BLAS thread, the providers interleaved round by round
    (each round ~:data:`ROUND_SECONDS` and at least :data:`ROUND_STEPS` steps), the median of ``rounds``."""
    tables = available()
    return _time_runs({name: first_layer_products(tables[name], batch, d, m1, dtype) for name in (names or tables)}, rounds)


def _time_runs(runs: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each ``runs[name]()`` on one BLAS thread: warmed, then ``rounds``
    interleaved rounds (in alternating order) of ~:data:`ROUND_SECONDS` and at least
    :data:`ROUND_STEPS` calls each."""
    from threadpoolctl import threadpool_limits

    times: dict[str, list[float]] = {name: [] for name in runs}
    with threadpool_limits(1, user_api="blas"):
        for run in runs.values():  # warm: MKL's first call sets itself up, OpenBLAS's its buffers
            run()
            run()
        start = time.perf_counter()
        next(iter(runs.values()))()
        reps = max(ROUND_STEPS, int(ROUND_SECONDS / max(time.perf_counter() - start, 1e-6)))
        order = list(runs)
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                run = runs[name]
                start = time.perf_counter()
                for _ in range(reps):
                    run()
                times[name].append((time.perf_counter() - start) / reps)
    return {name: float(np.median(t)) for name, t in times.items()}


def _openblas_detail() -> str:
    asked = providers.coretype_asked()
    return f"{providers.numpy_openblas_core()} kernels" + (f", as OPENBLAS_CORETYPE={asked} asks" if asked else "")


def _avx512_detail() -> str:
    detail = f"{providers.AVX512_CORE} kernels"
    if "openblas-avx512" in candidates():
        return detail
    if providers.avx512_upgrade():  # left out only because OPENBLAS_CORETYPE chose NumPy's
        why = f"OPENBLAS_CORETYPE={providers.coretype_asked()} chose NumPy's kernels (--gemm openblas-avx512 overrides)"
    else:
        why = "NumPy's OpenBLAS runs AVX-512 kernels already"
    return f"{detail}; auto leaves it out: {why}"


def describe() -> list[str]:
    """Lines for ``fastnet info``: each provider (library, kernels or version; or why it cannot
    run here) and auto's choice for :data:`DEFAULT_SHAPE` (from the cache, or measured now)."""
    lines = []
    for name in PROVIDER_NAMES:
        if table(name) is None:
            why = {"mkl": "not installed (pip install 'fastnet[mkl]')", "openblas-avx512": f"not here: {providers.avx512_missing}"}
            lines.append(f"{name}: {why.get(name, 'not found')}")
            continue
        detail = {"mkl": providers.mkl_version, "openblas": _openblas_detail, "openblas-avx512": _avx512_detail}[name]()
        lines.append(f"{name}: {providers.library_path(name) or 'loaded'}" + (f" ({detail})" if detail else ""))
    batch, d, m1, dtype = DEFAULT_SHAPE
    names = candidates()
    if len(names) < 2:
        lines.append("auto: openblas (nothing else to measure here: MKL not installed, and no other OpenBLAS kernels to try)")
    else:
        entry = auto_choice(batch, d, m1, dtype, names)
        timing = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in entry["seconds"].items())
        lines.append(f"auto: {entry['choice']} for batch {batch} x {d} -> {m1} {dtype} on {cpu_id()} "
                     f"(first layer's two products, 1 thread: {timing}; cached in {cache_path()})")
    return lines
