"""fastnet.backends.numba_cache: whether Numba's cache holds a kernel for this CPU."""
from __future__ import annotations

import importlib.util
import sys

import pytest

numba = pytest.importorskip("numba")

from fastnet.backends.numba_cache import cached_for_this_cpu, readiness  # noqa: E402

SOURCE = """
from numba import njit

@njit(cache=True)
def twice(x):
    return 2 * x

@njit
def uncached(x):
    return x
"""


def _module(tmp_path, source=SOURCE):
    path = tmp_path / "fresh_kernels.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("fresh_kernels", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.pop("fresh_kernels", None)
    spec.loader.exec_module(module)
    return module


def test_a_kernel_is_ready_once_compiled_and_cached(tmp_path):
    m = _module(tmp_path)
    assert cached_for_this_cpu(m.twice) is False   # never compiled: the first run would compile it
    assert m.twice(3) == 6
    assert cached_for_this_cpu(m.twice) is True
    assert cached_for_this_cpu(_module(tmp_path).twice) is True   # a new process would load it
    assert readiness([m.twice, m.twice]) == (2, 2)


def test_an_uncached_kernel_is_unknown_not_ready(tmp_path):
    m = _module(tmp_path)
    assert cached_for_this_cpu(m.uncached) is None
    assert readiness([m.uncached]) == (0, 1)


def test_an_edited_kernel_is_not_ready(tmp_path):
    m = _module(tmp_path)
    m.twice(1)
    # another length: Python's own bytecode cache goes by size and mtime (to the second)
    assert cached_for_this_cpu(_module(tmp_path, SOURCE.replace("2 * x", "x + x + 0")).twice) is False
