"""The matrix-multiply provider of compiled code (fastnet/backends/blas.py)."""
from __future__ import annotations

import numpy as np
import pytest

blas = pytest.importorskip("fastnet.backends.blas", reason="numba is not installed")
pytestmark = pytest.mark.skipif(blas.BLAS is None, reason="no CBLAS ?gemm found in the loaded libraries")


def test_the_table_is_the_first_provider_that_finds_one(monkeypatch):
    from fastnet.backends import providers

    assert blas.BLAS.dtype == np.int64 and blas.BLAS.shape == (3,) and blas.BLAS[2] in (0, 1)
    monkeypatch.setattr(providers, "PROVIDERS", (lambda: None, providers.numpy_cblas))
    assert np.array_equal(providers.find_gemm(), blas.BLAS)
    monkeypatch.setattr(providers, "PROVIDERS", (lambda: None,))
    assert providers.find_gemm() is None


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True)])
def test_gemm_is_alpha_op_a_op_b_plus_beta_c(dtype, tol, trans_a, trans_b):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((7, 5) if trans_a else (5, 7)).astype(dtype)
    B = rng.standard_normal((3, 7) if trans_b else (7, 3)).astype(dtype)
    C = rng.standard_normal((5, 3)).astype(dtype)
    expected = -0.5 * ((A.T if trans_a else A) @ (B.T if trans_b else B)) + 0.25 * C
    D = C.copy()
    blas.gemm(blas.BLAS, A, trans_a, B, trans_b, C, -0.5, 0.25)
    np.testing.assert_allclose(C, expected, rtol=tol, atol=tol)
    ext = pytest.importorskip("fastnet.ext._ckernels", reason="the extension is not built")
    ext.gemm(blas.BLAS, A, trans_a, B, trans_b, D, -0.5, 0.25)  # the extension's: the same BLAS call
    assert D.tobytes() == C.tobytes()


def test_gemm_writes_a_block_of_columns_in_place():
    """C may be a block of columns of a C-contiguous array (its rows unit-stride), as the
    two-core step cuts the update of the first layer."""
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((4, 6)), rng.standard_normal((6, 8))
    big = np.zeros((4, 10))
    blas.gemm(blas.BLAS, A, False, B[:, 2:5], False, big[:, 3:6], 1.0, 0.0)
    np.testing.assert_allclose(big[:, 3:6], A @ B[:, 2:5], rtol=1e-12)
    assert not big[:, :3].any() and not big[:, 6:].any()
    ext = pytest.importorskip("fastnet.ext._ckernels", reason="the extension is not built")
    other = np.zeros((4, 10))
    ext.gemm(blas.BLAS, A, False, B[:, 2:5], False, other[:, 3:6], 1.0, 0.0)
    assert other.tobytes() == big.tobytes()
    with pytest.raises(ValueError, match="shapes"):
        ext.gemm(blas.BLAS, A, False, B, True, other, 1.0, 0.0)
