"""Benchmarks: ``pytest bench --benchmark-only`` from the repository root runs them.

pytest collects only ``test_*.py`` by default and the project's ini (pyproject.toml) points
at ``tests/``; a ``pytest.ini`` here would move the rootdir for ``pytest bench``. So this
conftest collects the ``bench_*.py`` files of this folder itself (their functions are named
``test_*`` like any test, so the usual ``-k`` selection works).

Every benchmark goes through the ``measure`` fixture, which calls the function twice before
timing it (Numba compiles, or loads its cache, on the first call; caches and allocator warm up
on the second) and records the *minimum* time per group: on a shared machine the other
processes only ever add time, so the minimum is the least noisy estimate of what the code
costs (pytest-benchmark's own tables show the median and the rest). At the end, the groups
are printed as ratios to the NumPy reference (``numpy``), from this one run. With ``--benchmark-disable``
the benchmarks run once each, as smoke tests, and no table is printed.

BLAS runs single-threaded here (``FASTNET_BENCH_BLAS_THREADS``, default 1, applied through
threadpoolctl when it is installed): the kernels are single-threaded, and OpenBLAS's threads on
a (100 x 3072) @ (3072 x 50) product gain little and, on a busy 2-core machine, lose 15x
(measured: 0.46 ms with 1 thread, 7.0 ms with 2, load average 4.7).

Useful: ``pytest bench --benchmark-only -k "bn_fused"``, ``--benchmark-max-time=0.2``.
"""
from __future__ import annotations

import os
import platform
from collections import defaultdict

import pytest
from machine import cpu_model

from fastnet import backends

BACKENDS = ("numpy", "numba", "cython")
BLAS_THREADS = int(os.environ.get("FASTNET_BENCH_BLAS_THREADS", "1"))
_results: dict[str, dict[str, float]] = defaultdict(dict)


def pytest_collect_file(file_path, parent):
    # A file named on the command line is collected by pytest itself whatever its name.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


_blas_limited = False


@pytest.fixture(scope="session", autouse=True)
def _single_threaded_blas():
    global _blas_limited
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        _blas_limited = True
        yield


@pytest.fixture(params=BACKENDS)
def backend_name(request) -> str:
    backend = backends.load(request.param)
    if not backend.available:
        pytest.skip(f"{request.param} backend unavailable: {backend.reason}")
    return request.param


@pytest.fixture
def ops(backend_name):
    """The backend's ops namespace, exactly as the network sees it."""
    return backends.load(backend_name).ops


@pytest.fixture
def measure(benchmark, backend_name):
    """``measure(fn, *args)``: warm up outside the timer, then benchmark ``fn(*args)``.

    ``warmup`` replaces the two warm-up calls (for functions too long to run twice more);
    ``rounds`` fixes the number of timed rounds (one call each) instead of calibrating.
    """

    def run(fn, *args, warmup=None, rounds=None):
        if warmup is None:
            fn(*args)
            fn(*args)
        else:
            warmup()
        if rounds is None:
            result = benchmark(fn, *args)
        else:
            result = benchmark.pedantic(fn, args=args, rounds=rounds, iterations=1)
        if benchmark.stats is not None:
            _results[benchmark.group or benchmark.name][backend_name] = benchmark.stats.stats.min
        return result

    return run


def pytest_terminal_summary(terminalreporter):
    if not _results:
        return
    tr = terminalreporter
    tr.section("fastnet: speed-up over the NumPy reference (ratio of minimum times, this run)")
    blas = f"BLAS threads {BLAS_THREADS}" if _blas_limited else "BLAS threads not limited (no threadpoolctl)"
    tr.write_line(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, python {platform.python_version()}, {blas}; "
                  f"{', '.join(backends.load(b).describe() for b in BACKENDS)}")
    tr.write_line(f"{'group':52s} " + " ".join(f"{b:>16s}" for b in BACKENDS))
    for group in sorted(_results):
        row = _results[group]
        base = row.get("numpy")
        cells = []
        for b in BACKENDS:
            if b not in row:
                cells.append(f"{'-':>16s}")
            elif base is None:
                cells.append(f"{row[b] * 1e6:>13.1f} us")
            else:
                cells.append(f"{row[b] * 1e6:>8.1f}us {base / row[b]:>5.2f}x")
        tr.write_line(f"{group:52s} " + " ".join(cells))
