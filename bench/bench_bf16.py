"""The first layer's two products of a step in bf16 (``--precision bf16``) on each kernel this
CPU runs, beside the same two products in float32: (100 x 3072) @ (3072 x 50) forward and the
update W1t <- W1t - step X^T G1, their operands' rounding and packing included, as auto's
measurement makes them (``fastnet.backends.gemm_choice.bf16_first_layer_products``).

Kernels: fastnet's on AMX tiles (kernels/amx_gemm.h) and on AVX512_BF16's VDPBF16PS
(kernels/bf16_gemm.h, ``bf16_amx(False)``), MKL's ``cblas_gemm_bf16bf16f32``; float32 on
NumPy's OpenBLAS and on MKL. Each is skipped with its reason where it cannot run.

Run: ``pytest bench/bench_bf16.py --benchmark-only`` (one BLAS thread, as the conftest sets).
"""
from __future__ import annotations

import numpy as np
import pytest

from fastnet.backends import load, providers

BATCH, D, M1 = 100, 3072, 50
KERNELS = ("fastnet-tiles", "fastnet-vdpbf16", "mkl-bf16", "openblas-fp32", "mkl-fp32")


def _bf16_kernels():
    cython = load("cython")
    return cython.ops.fused_step if cython.available else None


def _run(kernel: str):
    """``run()`` for ``kernel``, or pytest.skip with the reason it cannot run here (fastnet's
    two kernels: with bf16_amx set by the caller, which the buffers' layout and the products
    follow)."""
    from fastnet.backends import gemm_choice

    if kernel.endswith("fp32"):
        tab = gemm_choice.table(kernel.split("-")[0])
        if tab is None:
            pytest.skip(f"{kernel.split('-')[0]} is not installed")
        return gemm_choice.first_layer_products(tab, BATCH, D, M1, np.float32)
    ck = _bf16_kernels()
    if ck is None:
        pytest.skip("the extension is not built: no bf16 products")
    if kernel == "mkl-bf16":
        if providers.mkl_bf16_gemm() is None:
            pytest.skip("Intel MKL is not installed (pip install 'fastnet[mkl]')")
        return gemm_choice.bf16_first_layer_products("mkl", BATCH, D, M1)
    if not ck.bf16_supported():
        pytest.skip("this CPU has no AVX512_BF16")
    if kernel == "fastnet-tiles" and not ck.bf16_amx():
        pytest.skip("this CPU has no AMX-BF16 (or the OS gives no tiles)")
    return gemm_choice.bf16_first_layer_products("fastnet", BATCH, D, M1)


@pytest.mark.parametrize("kernel", KERNELS)
def test_first_layer_products(benchmark, kernel):
    ck = _bf16_kernels()
    if ck is not None:
        ck.bf16_amx(kernel != "fastnet-vdpbf16")
    try:
        run = _run(kernel)
        run()
        run()
        benchmark.group = f"first layer's two products, {BATCH} x {D} -> {M1}"
        benchmark(run)
    finally:
        if ck is not None:
            ck.bf16_amx(True)
