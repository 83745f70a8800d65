"""The matrix-multiply providers (fastnet/backends/providers.py) and the choice between them
(fastnet/backends/gemm_choice.py, ``--gemm``).

Tolerances of a product against ``np.dot`` (which rounds in its own order): float32 1e-5 of the
largest entry -- a K-term sum of products of standard normals rounds by ~sqrt(K) * 6e-8, 3.3e-6
for K = 3072, the deepest product of a step; float64 1e-12 (the same bound with eps 1.1e-16 is
6e-15, so 1e-12 leaves room for any blocking order).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastnet.backends import gemm_choice, providers
from fastnet.errors import ConfigError

NO_MKL = "Intel MKL is not installed (pip install 'fastnet[mkl]'; CI installs it with .[dev,mkl])"
needs_mkl = pytest.mark.skipif(gemm_choice.table("mkl") is None, reason=NO_MKL)
needs_avx512 = pytest.mark.skipif(gemm_choice.table("openblas-avx512") is None,
                                  reason=f"OpenBLAS on AVX-512 kernels cannot run here: {providers.avx512_missing}")
PROVIDERS = [pytest.param("openblas"), pytest.param("openblas-avx512", marks=needs_avx512), pytest.param("mkl", marks=needs_mkl)]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", [(100, 3072, 50), (100, 50, 50), (7, 5, 3)])
def test_each_providers_gemm_by_address_is_the_product(name, dtype, m, k, n):
    """S = X W (beta 0) and the weight-gradient update W = 0.5 W - 0.25 X^T G (beta 0.5), through
    the provider's ?gemm at its address, as the fused step calls them."""
    tab = gemm_choice.table(name)
    assert tab.dtype == np.int64 and tab.shape == (3,) and tab[2] in (0, 1)
    call = gemm_choice.gemm_caller(tab, dtype)
    rng = np.random.default_rng(0)
    X, W, G = (rng.standard_normal(s).astype(dtype) for s in ((m, k), (k, n), (m, n)))
    S = np.full((m, n), np.nan, dtype)
    call(X, False, W, S, 1.0, 0.0)  # beta 0: what C held (NaN) is never read
    expected = np.dot(X, W)
    assert np.abs(S - expected).max() <= TOL[dtype] * np.abs(expected).max()
    W2 = W.copy()
    call(X, True, G, W2, -0.25, 0.5)
    expected = 0.5 * W - 0.25 * np.dot(X.T, G)
    assert np.abs(W2 - expected).max() <= TOL[dtype] * np.abs(expected).max()


@needs_mkl
def test_the_mkl_table_is_lp64_and_the_extension_calls_it_alike():
    tab = gemm_choice.table("mkl")
    assert tab[2] == 0  # MKL_Set_Interface_Layer(LP64): 32-bit integers
    ext = pytest.importorskip("fastnet.ext._ckernels", reason="the extension is not built")
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((9, 40)).astype(np.float32), rng.standard_normal((40, 6)).astype(np.float32)
    C, D = np.zeros((9, 6), np.float32), np.zeros((9, 6), np.float32)
    ext.gemm(tab, A, False, B, False, C, 1.0, 0.0)
    gemm_choice.gemm_caller(tab, np.float32)(A, False, B, D, 1.0, 0.0)
    assert C.tobytes() == D.tobytes()  # the same MKL call, the same bits


@needs_mkl
def test_mkl_runs_each_product_on_its_callers_thread():
    """The sequential layer: one thread whatever limits are set (the fused step splits itself
    over the cores), as threadpoolctl reports it."""
    from threadpoolctl import threadpool_info, threadpool_limits

    lib = providers._load_mkl()
    pools = [p for p in threadpool_info() if p.get("internal_api") == "mkl"]
    assert pools and pools[0]["threading_layer"] == "sequential" and pools[0]["num_threads"] == 1
    with threadpool_limits(2, user_api="blas"):
        assert lib.MKL_Get_Max_Threads() == 1


@needs_mkl
def test_mkl_gives_the_same_bits_for_arrays_at_any_alignment():
    """CNR (MKL_CBWR_AUTO): two runs whose buffers the allocator placed differently round alike."""
    rng = np.random.default_rng(2)
    A0, B0 = rng.standard_normal((100, 3072)).astype(np.float32), rng.standard_normal((3072, 50)).astype(np.float32)
    call = gemm_choice.gemm_caller(gemm_choice.table("mkl"), np.float32)
    results = []
    for offset in (0, 4, 16, 36):  # bytes past a 64-byte boundary
        arrays = []
        for a in (A0, B0, np.zeros((100, 50), np.float32)):
            buf = np.empty(a.nbytes + 128, np.uint8)
            start = (-buf.ctypes.data) % 64 + offset
            v = buf[start:start + a.nbytes].view(np.float32).reshape(a.shape)
            v[...] = a
            arrays.append(v)
        A, B, C = arrays
        call(A, False, B, C, 1.0, 0.0)
        results.append(C.tobytes())
    assert len(set(results)) == 1


def test_find_gemm_still_prefers_numpys_openblas():
    """The default of every compiled product is what it was before MKL was a provider."""
    found = providers.find_gemm()
    assert found is not None and np.array_equal(found, providers.numpy_cblas())
    assert list(providers.NAMED) == list(gemm_choice.PROVIDER_NAMES)


def test_the_run_schema_knows_the_providers():
    from fastnet.runs.schema import GEMMS

    assert GEMMS == gemm_choice.PROVIDER_NAMES


# ------------------------------------------------------------------------------- the choice


def test_a_provider_asked_for_but_not_installed_is_one_sentence(monkeypatch):
    monkeypatch.setitem(gemm_choice._tables, "mkl", None)
    with pytest.raises(ConfigError, match=r"--gemm mkl needs Intel MKL.*pip install 'fastnet\[mkl\]'"):
        gemm_choice.resolve("mkl", batch=100, d=3072, m1=50)
    with pytest.raises(ConfigError, match="unknown matrix-multiply provider 'blis'"):
        gemm_choice.resolve("blis", batch=100, d=3072, m1=50)


def test_with_nothing_else_to_run_auto_is_openblas_and_measures_nothing(monkeypatch):
    monkeypatch.setitem(gemm_choice._tables, "mkl", None)
    monkeypatch.setattr(providers, "avx512_upgrade", lambda: False)

    def measure(*args):
        raise AssertionError("nothing to choose between: nothing may be measured")

    assert gemm_choice.candidates() == ("openblas",)
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, measure_fn=measure) == "openblas"
    assert gemm_choice.resolve("openblas", batch=100, d=3072, m1=50, measure_fn=measure) == "openblas"


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """auto's cache in tmp_path; NumPy's OpenBLAS 'installed' (a placeholder table: nothing is called)."""
    monkeypatch.setitem(gemm_choice._tables, "openblas", np.zeros(3, np.int64))
    monkeypatch.setenv("FASTNET_GEMM_CACHE", str(tmp_path / "gemm_choice.json"))
    return tmp_path / "gemm_choice.json"


@pytest.fixture
def two_providers(cache, monkeypatch):
    """NumPy's OpenBLAS and MKL 'installed', and no AVX-512 kernels NumPy's OpenBLAS lacks."""
    monkeypatch.setitem(gemm_choice._tables, "mkl", np.ones(3, np.int64))
    monkeypatch.setattr(providers, "avx512_upgrade", lambda: False)
    return cache


@pytest.fixture
def three_providers(two_providers, monkeypatch):
    """As :func:`two_providers`, on a CPU whose AVX-512 kernels NumPy's OpenBLAS does not run (Zen 5)."""
    monkeypatch.setitem(gemm_choice._tables, "openblas-avx512", np.full(3, 2, np.int64))
    monkeypatch.setattr(providers, "avx512_upgrade", lambda: True)
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    return two_providers


def test_auto_measures_once_per_shape_and_reads_the_cache_after(two_providers):
    calls = []

    def fake(batch, d, m1, dtype, names):
        calls.append((batch, d, m1, dtype, names))
        return {"openblas": 2.0e-3, "mkl": 1.0e-3}

    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, measure_fn=fake) == "mkl"
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, measure_fn=fake) == "mkl"
    assert calls == [(100, 3072, 50, "float32", ("openblas", "mkl"))]  # the second run read the file
    import json

    from fastnet.util.cpu import cpu_id

    cached = json.loads(two_providers.read_text())
    (key, entry), = cached.items()
    assert key == gemm_choice.cache_key(100, 3072, 50, "float32") and cpu_id() in key
    assert entry["choice"] == "mkl" and entry["seconds"] == {"openblas": 2.0e-3, "mkl": 1.0e-3}
    # another shape (or dtype) is measured on its own, beside the first in the same file
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=1024, measure_fn=lambda *a: {"openblas": 1.0, "mkl": 1.5}) == "openblas"
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, dtype="float64", measure_fn=lambda *a: {"openblas": 1.0, "mkl": 1.5}) == "openblas"
    assert len(json.loads(two_providers.read_text())) == 3


def test_auto_keeps_openblas_for_a_step_on_several_blas_threads(two_providers):
    """MKL runs sequential: a run whose step calls BLAS on several threads keeps OpenBLAS's."""
    def measure(*args):
        raise AssertionError("nothing may be measured")

    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, one_thread=False, measure_fn=measure) == "openblas"
    from fastnet.training.config import TrainConfig, gemm_for

    # PCA rows' flips are applied in Python between steps: one core, OpenBLAS on two threads
    # (image augmentation is applied by the split step's gather: see tests/training/test_fused.py)
    flipped_pca = TrainConfig(augment=True, augment_shift=0, whiten="pca").validate()
    assert gemm_for(flipped_pca, 3072, threads=2) == "openblas"
    assert gemm_for(TrainConfig().validate(), 3072, threads=4) == "openblas"


def test_auto_keeps_openblas_unless_another_wins_by_the_margin(two_providers):
    just_faster = {"openblas": 1.0, "mkl": 1.0 * (gemm_choice.MARGIN + 0.02)}
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, measure_fn=lambda *a: just_faster) == "openblas"


def test_auto_takes_the_fastest_of_three_and_avx512_openblas_on_several_threads(three_providers):
    """Where NumPy's OpenBLAS runs older kernels than the CPU has, the AVX-512 copy is measured
    too; it threads, so a run whose step calls BLAS on two threads may take it (MKL not)."""
    assert gemm_choice.candidates() == ("openblas", "openblas-avx512", "mkl")
    calls = []

    def fake(batch, d, m1, dtype, names):
        calls.append(names)
        return {"openblas": 3.0, "openblas-avx512": 2.0, "mkl": 1.0}

    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, measure_fn=fake) == "mkl"
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, one_thread=False, measure_fn=fake) == "openblas-avx512"
    assert calls == [("openblas", "openblas-avx512", "mkl")]  # one measurement serves both
    from fastnet.training.config import TrainConfig, gemm_for

    flipped_pca = TrainConfig(augment=True, augment_shift=0, whiten="pca").validate()  # augmented between steps: BLAS's threads
    assert gemm_for(flipped_pca, 3072, threads=2) == "openblas-avx512"
    assert gemm_for(TrainConfig().validate(), 3072, threads=2) == "mkl"  # the split step: one BLAS thread per core


def test_auto_honours_an_openblas_coretype_that_asked_for_numpys_kernels(three_providers, monkeypatch):
    """OPENBLAS_CORETYPE=Haswell (set, say, so that results agree across CPUs) chose NumPy's
    kernels: auto does not measure the AVX-512 copy against them; --gemm still takes it."""
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setattr(gemm_choice, "measure", lambda *a: {"openblas": 1.0, "mkl": 2.0})
    assert gemm_choice.candidates() == ("openblas", "mkl")
    assert gemm_choice.resolve("openblas-avx512", batch=100, d=3072, m1=50) == "openblas-avx512"
    line = next(x for x in gemm_choice.describe() if x.startswith("openblas-avx512: "))
    assert "auto leaves it out: OPENBLAS_CORETYPE=Haswell chose NumPy's kernels" in line


def test_a_cache_entry_measured_with_other_providers_is_measured_again(three_providers, monkeypatch):
    """An entry from before the AVX-512 copy was installed (openblas and mkl only) does not
    answer for three providers: they are measured."""
    monkeypatch.setattr(providers, "avx512_upgrade", lambda: False)
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, measure_fn=lambda *a: {"openblas": 1.0, "mkl": 2.0}) == "openblas"
    monkeypatch.setattr(providers, "avx512_upgrade", lambda: True)
    measured = {"openblas": 1.0, "openblas-avx512": 0.5, "mkl": 2.0}
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, measure_fn=lambda *a: measured) == "openblas-avx512"


def test_a_damaged_cache_is_measured_again(two_providers):
    two_providers.write_text("{not json")
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, measure_fn=lambda *a: {"openblas": 2.0, "mkl": 1.0}) == "mkl"
    two_providers.write_text('{"%s": {"choice": "blis"}}' % gemm_choice.cache_key(100, 3072, 50, "float32"))
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, measure_fn=lambda *a: {"openblas": 1.0, "mkl": 2.0}) == "openblas"
    two_providers.write_text('{"%s": {"choice": "mkl", "seconds": {"openblas": 1.0, "mkl": -1}}}' % gemm_choice.cache_key(100, 3072, 50, "float32"))
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, measure_fn=lambda *a: {"openblas": 1.0, "mkl": 2.0}) == "openblas"


def test_an_entry_of_the_shorter_measurement_is_measured_again(two_providers):
    """Entries written before the measurement took 9 rounds of >= 2 steps (7 of one step chose
    MKL for a 1024-wide layer where it is slower) carry no "rounds" and are measured again;
    the new entry is then read back without measuring."""
    key = gemm_choice.cache_key(100, 3072, 1024, "float32")
    two_providers.write_text(json.dumps({key: {"choice": "mkl", "seconds": {"openblas": 2.5e-2, "mkl": 2.4e-2}, "margin": 0.95}}))
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=1024, measure_fn=lambda *a: {"openblas": 1.8e-2, "mkl": 2.2e-2}) == "openblas"
    entry = json.loads(two_providers.read_text())[key]
    assert entry["rounds"] == [gemm_choice.ROUNDS, gemm_choice.ROUND_SECONDS] and entry["choice"] == "openblas"

    def must_not_measure(*a):
        raise AssertionError("a current entry was measured again")

    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=1024, measure_fn=must_not_measure) == "openblas"


@needs_mkl
def test_the_measurement_times_each_provider_on_a_small_shape(monkeypatch):
    """The real measurement runs and returns a positive median per provider (no speed is asserted)."""
    monkeypatch.setattr(gemm_choice, "ROUND_SECONDS", 0.001)
    seconds = gemm_choice.measure(20, 64, 8, "float32", ("openblas", "mkl"), rounds=3)
    assert set(seconds) == {"openblas", "mkl"} and all(s > 0 for s in seconds.values())


def _bf16_fake(bf16_seconds, fp32_seconds, seen):
    def fake(batch, d, m1, dtype, names):
        seen.append((dtype, tuple(names)))
        return bf16_seconds if dtype == "bf16" else fp32_seconds
    return fake


def test_auto_for_bf16_measures_the_bf16_products_where_both_run(two_providers, monkeypatch):
    """--precision bf16 where fastnet's kernels and MKL's both run: auto measures the bf16
    products, not the float32 ones, once per shape; MKL's faster by the margin makes it mkl."""
    monkeypatch.setattr(gemm_choice, "bf16_both_run", lambda: True)
    seen = []
    fake = _bf16_fake({"fastnet": 1.0, "mkl": 0.5}, {"openblas": 1.0, "mkl": 2.0}, seen)
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, bf16=True, measure_fn=fake) == "mkl"
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, bf16=True, measure_fn=fake) == "mkl"
    assert seen == [("bf16", ("fastnet", "mkl"))]
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, measure_fn=fake) == "openblas"  # float32: its own entry
    assert seen[1:] == [("float32", ("openblas", "mkl"))]


def test_auto_for_a_one_core_bf16_step_times_the_products_without_the_batchs_copies(two_providers, monkeypatch):
    """A one-core step makes the batch's bf16 copies beside it (fused_sgd_step_beside): auto
    times the products without them ("bf16 one-core"), an entry of its own, and can choose
    otherwise than for the two-core step."""
    monkeypatch.setattr(gemm_choice, "bf16_both_run", lambda: True)
    seen = []

    def fake(batch, d, m1, dtype, names):
        seen.append(dtype)
        if dtype == "bf16 one-core":
            return {"fastnet": 0.5, "mkl": 1.0}
        return {"fastnet": 1.0, "mkl": 0.5} if dtype == "bf16" else {"openblas": 1.0, "mkl": 2.0}

    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, bf16=True, one_core=True, measure_fn=fake) == "openblas"
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, bf16=True, measure_fn=fake) == "mkl"
    assert seen == ["bf16 one-core", "bf16"]
    assert "bf16 one-core" in gemm_choice.cache_key(100, 3072, 50, "bf16 one-core")


def test_auto_for_bf16_leaves_mkl_out_where_fastnets_bf16_kernels_win(two_providers, monkeypatch):
    """MKL's float32 products are faster here, but with them would come MKL's bf16 ones, which
    are not: a bf16 run stays off MKL (and with one provider left measures no float32)."""
    monkeypatch.setattr(gemm_choice, "bf16_both_run", lambda: True)
    seen = []
    fake = _bf16_fake({"fastnet": 1.0, "mkl": 0.97}, {"openblas": 1.0, "mkl": 0.5}, seen)
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, bf16=True, measure_fn=fake) == "openblas"
    assert seen == [("bf16", ("fastnet", "mkl"))]
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, measure_fn=fake) == "mkl"


def test_auto_for_bf16_where_only_one_runs_chooses_as_for_float32(two_providers, monkeypatch):
    """Without AVX512_BF16 MKL's bf16 products run whatever the provider (fastnet.training.fused.bf16_products):
    nothing bf16 is measured, and the float32 choice stands."""
    monkeypatch.setattr(gemm_choice, "bf16_both_run", lambda: False)
    seen = []
    fake = _bf16_fake({}, {"openblas": 1.0, "mkl": 2.0}, seen)
    assert gemm_choice.resolve("auto", batch=100, d=3072, m1=50, bf16=True, measure_fn=fake) == "openblas"
    assert seen == [("float32", ("openblas", "mkl"))]


@needs_mkl
def test_the_bf16_measurement_times_mkls_bf16_products(monkeypatch):
    """The real bf16 measurement runs MKL's bf16 products (and fastnet's kernels where the CPU has
    AVX512_BF16) and returns a positive median each (no speed is asserted)."""
    from fastnet.backends import cython_step

    monkeypatch.setattr(gemm_choice, "ROUND_SECONDS", 0.001)
    names = ("fastnet", "mkl") if cython_step.bf16_supported() else ("mkl",)
    seconds = gemm_choice.measure_bf16(20, 64, 8, names=names, rounds=3)
    assert set(seconds) == set(names) and all(s > 0 for s in seconds.values())


def test_info_lists_the_providers_and_autos_choice(two_providers, monkeypatch):
    monkeypatch.setattr(gemm_choice, "measure", lambda *a: {"openblas": 1.0, "mkl": 2.0})
    lines = gemm_choice.describe()
    assert lines[0].startswith("openblas: ") and lines[1].startswith("openblas-avx512: ") and lines[2].startswith("mkl: ")
    assert lines[-1].startswith("auto: openblas for batch 100 x 3072 -> 50 float32")
    monkeypatch.setitem(gemm_choice._tables, "mkl", None)
    lines = gemm_choice.describe()
    assert "mkl: not installed (pip install 'fastnet[mkl]')" in lines and lines[-1].startswith("auto: openblas (nothing else to measure")


# ------------------------------------------------------------------ OpenBLAS on AVX-512 kernels


def test_avx512_openblas_is_offered_only_where_numpys_chose_older_kernels(monkeypatch):
    from fastnet.util import cpu

    monkeypatch.setattr(cpu, "has_avx512", lambda: True)
    for core, upgrade in (("Haswell", True), ("Zen", True), ("SkylakeX", False), ("Cooperlake", False), ("SAPPHIRERAPIDS", False)):
        monkeypatch.setattr(providers, "numpy_openblas_core", lambda core=core: core)
        assert providers.avx512_upgrade() is upgrade, core
    monkeypatch.setattr(cpu, "has_avx512", lambda: False)
    assert providers.avx512_upgrade() is False  # an AVX2 CPU: Haswell is its best


def test_avx512_openblas_refused_in_a_sentence(monkeypatch):
    monkeypatch.setitem(gemm_choice._tables, "openblas-avx512", None)
    monkeypatch.setattr(providers, "avx512_missing", "this CPU (Test CPU) has no AVX-512")
    with pytest.raises(ConfigError, match=r"--gemm openblas-avx512 cannot run here: this CPU \(Test CPU\) has no AVX-512; choose --gemm auto"):
        gemm_choice.resolve("openblas-avx512", batch=100, d=3072, m1=50)


def test_without_avx512_the_provider_says_so(monkeypatch):
    """In a fresh process (the library loads once per process): a CPU reported without AVX-512
    gets no table, and the reason names the CPU."""
    import subprocess
    import sys

    code = ("from fastnet.util import cpu\ncpu.has_avx512 = lambda: False\nfrom fastnet.backends import providers\n"
            "assert providers.openblas_avx512_cblas() is None\nprint(providers.avx512_missing)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "has no AVX-512" in out


@needs_avx512
def test_avx512_openblas_runs_its_avx512_kernels_on_numpys_thread_count():
    """In a fresh process: loaded inside a thread limit, on the SkylakeX kernels, with the
    limit's thread count; and NumPy's own OpenBLAS keeps the kernels it had."""
    import subprocess
    import sys

    code = ("import numpy\nfrom threadpoolctl import threadpool_limits, threadpool_info\nfrom fastnet.backends import providers\n"
            "before = providers.numpy_openblas_core()\n"
            "with threadpool_limits(1, user_api='blas'):\n    assert providers.openblas_avx512_cblas() is not None\n"
            "    pools = {i['filepath']: i for i in threadpool_info()}\n    mine = pools[providers._avx512_path]\n"
            "    print(mine['architecture'], mine['num_threads'], providers.numpy_openblas_core() == before)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.split() == ["SkylakeX", "1", "True"]


@needs_mkl
def test_mkl_loaded_inside_a_thread_limit_still_runs_on_one_thread():
    """--threads 2 (or a threadpool_limits block) is in force before a run loads MKL, and
    threadpoolctl only sets the libraries already loaded: MKL must not depend on it. In a fresh
    process, where MKL is not loaded yet."""
    import subprocess
    import sys

    code = ("import numpy\nfrom threadpoolctl import threadpool_limits\nfrom fastnet.backends import providers\n"
            "with threadpool_limits(2, user_api='blas'):\n    assert providers.mkl_cblas() is not None\n"
            "    print(providers._load_mkl().MKL_Get_Max_Threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "1"
