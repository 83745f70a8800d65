"""``--precision bf16``: the fused step's first-layer products on bfloat16 inputs with float32
sums, against a NumPy reference of that arithmetic -- on each implementation that runs here:
fastnet's own kernels (kernels/bf16_gemm.h, AVX512_BF16) and MKL's cblas_gemm_bf16bf16f32
(kernels/bf16_round.h rounds its inputs; an emulation on CPUs without AVX512_BF16 or AMX).

The reference rounds the products' inputs to bf16 (:func:`bf16`, round to nearest, ties to
even, as VCVTNE2PS2BF16) and multiplies them in float64. The kernel sums the same bf16 values
in float32, so the two agree to float32 summation error: relative 1e-5 of the largest entry
over sums of at most 64 terms here (float32's epsilon is 1.2e-7). Had the kernel skipped the
rounding of either input, the difference would be bf16's 2^-9 = 2e-3.

Shapes are odd on purpose (d = 37 inputs, batches of 9 rows, 50 first-layer units): every
pair has a zero partner somewhere and every tile a masked edge. Tests that run fastnet's
kernels skip on a CPU without AVX512_BF16, MKL's where MKL is not installed (CI installs it);
the refusals are tested everywhere.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import small_cfg, stopped_run

import fastnet.runs.train as run_train
from fastnet.backends import load, providers, resolve
from fastnet.data.images import NormalisedImages
from fastnet.util.cpu import cpu_model
from fastnet.errors import ConfigError
from fastnet.model.network import init_network
from fastnet.training.config import TrainConfig
from fastnet.training.fused import FusedStep, fused_step_for
from fastnet.training.lockstep import lockstep_blocker
from fastnet.training.loop import fit

built = load("cython").available
needs_extension = pytest.mark.skipif(not built, reason="the extension is not built: no fused step")
has_bf16 = built and resolve("cython").ops.fused_step.bf16_supported()
needs_bf16 = pytest.mark.skipif(not has_bf16, reason=f"this CPU ({cpu_model()}) has no AVX512_BF16")
has_mkl16 = built and providers.mkl_bf16_gemm() is not None
#: Each implementation of the bf16 products, skipped where it cannot run.
PRODUCTS = [pytest.param("fastnet", marks=needs_bf16),
            pytest.param("mkl", marks=pytest.mark.skipif(not has_mkl16, reason="Intel MKL is not installed (pip install 'fastnet[mkl]')"))]

has_amx = built and resolve("cython").ops.fused_step.bf16_amx()


@pytest.fixture(autouse=True, params=[pytest.param(True, id="tiles", marks=pytest.mark.skipif(not has_amx, reason=f"this CPU ({cpu_model()}) has no AMX-BF16 (or the OS gives no tiles)")),
                                      pytest.param(False, id="vdpbf16")])
def fastnet_kernels(request):
    """Every test on each of fastnet's bf16 kernels this CPU runs: AMX tiles (amx_gemm.h) where
    it has them, AVX512_BF16's VDPBF16PS (bf16_gemm.h) everywhere it has that."""
    if not built:
        yield
        return
    ck = resolve("cython").ops.fused_step
    ck.bf16_amx(request.param)
    try:
        yield
    finally:
        ck.bf16_amx(True)


RTOL = 1e-5  # of the largest entry: float32 sums of <= 64 bf16 products (module docstring)


def bf16(a) -> np.ndarray:
    """``a`` rounded to bfloat16 (nearest, ties to even), as float64: the products' inputs."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def close(got, want) -> bool:
    return float(np.abs(np.asarray(got, np.float64) - want).max()) <= RTOL * float(np.abs(want).max())


def _net(d=37, hidden=(50, 20), seed=1, sigma=None):
    init = dict(init="normal", sigma=sigma) if sigma else {}
    return init_network(d, hidden, 10, bn=True, rng=np.random.default_rng(seed), dtype="float32", **init)


def _batches(d=37, n=9, count=3, seed=2):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, 10, n)) for _ in range(count)]


def _bf16_step(net, products="fastnet") -> FusedStep:
    """The fused step of ``net`` with bf16 products ``products`` (MKL's: with --gemm mkl)."""
    fused = fused_step_for(net, resolve("cython").ops, gemm="mkl" if products == "mkl" else None)
    fused.use_bf16()
    assert fused.bf16 == products
    return fused


def test_bf16_reference_rounds_to_nearest_even():
    one = np.float32(1.0)
    ulp = 2.0 ** -7  # bf16 keeps 7 fraction bits
    assert bf16([one + ulp / 2])[0] == 1.0  # a tie goes to the even neighbour
    assert bf16([one + 3 * ulp / 2])[0] == 1.0 + 2 * ulp
    assert bf16([one + ulp / 2 + 2.0 ** -20])[0] == 1.0 + ulp


@pytest.mark.parametrize("products", PRODUCTS)
def test_the_forward_product_is_bf16_inputs_summed_in_float32(products):
    """Two steps: the second forward product also reads the bf16 copy of W1 that the first
    step's update wrote."""
    net = _net()
    fused = _bf16_step(net, products)
    for X, y in _batches(count=2):
        W1t = fused.W1t.copy()
        fused.step(X, y, 0.01, 0.05)
        assert close(fused.Ss[0], bf16(X) @ bf16(W1t))
    fused.detach()


@pytest.mark.parametrize("products", PRODUCTS)
def test_the_update_is_bf16_inputs_summed_in_float32(products):
    """W1 small and the step large, so that the update's sum X^T G1 can be read back from W1:
    W1 - (eta / n) X^T G1 (lam 0), with G1 the step's own float32 gradient rounded to bf16."""
    net = _net(sigma=1e-4)
    fused = _bf16_step(net, products)
    (X, y), = _batches(count=1)
    eta, n = 5.0, X.shape[0]
    before = fused.W1t.astype(np.float64)
    fused.step(X, y, 0.0, eta)
    got = (before - fused.W1t) / (eta / n)  # W1t's rounding: 1e-4 / 2^24 against sums of 0.1
    assert close(got, bf16(X).T @ bf16(fused.Gs[0]))
    assert not close(got, X.T.astype(np.float64) @ fused.Gs[0].astype(np.float64))  # the rounding is seen
    fused.detach()


def _train(cores, threads, d, products="fastnet"):
    net = _net(d=d)
    fused = _bf16_step(net, products)
    fused.use_cores(cores)
    losses = [fused.step(X, y, 0.01, 0.05, threads=threads) for X, y in _batches(d=d, count=4)]
    fused.detach()
    return losses, [a.copy() for a in net.params().values()], fused._split_small


def _same(run, ref) -> bool:
    return run[0] == ref[0] and all(a.tobytes() == b.tobytes() for a, b in zip(run[1], ref[1]))


@needs_bf16
@pytest.mark.parametrize("d, split_small", [(37, True), (371, False)])
def test_bf16_bits_do_not_depend_on_threads_or_the_step_form(d, split_small):
    """Each entry of the first layer's products is summed by one tile in one order, and each
    of the small layers' products is cut into the same BLAS calls on one thread or two: the
    one-core step and the two-core split on one or two threads give the same bits. With
    d = 37 the first layer is 61 % of the step, so the two-core split also cuts the small
    layers (split_small); with d = 371, 94 %, it does not."""
    ref = _train(1, 1, d)
    assert ref[2] is split_small
    assert _same(_train(2, 1, d), ref) and _same(_train(2, 2, d), ref)


@pytest.mark.parametrize("products", PRODUCTS)
@pytest.mark.parametrize("images", [False, True], ids=["rows", "uint8"])
def test_a_bf16_step_with_the_next_batch_gathered_beside_it_has_the_one_core_bits(products, images):
    """The one-core bf16 step with the next batch gathered on the kernel's second thread
    (FusedStep.gather_beside: what a one-thread run with a spare core takes), and its bf16
    copy for the forward product made there too, gives the very losses and arrays of the
    one-core step, and the batch it gathered is exactly X[idx]. ``uint8``: from images
    normalised as they are gathered, each pair of rows normalised and packed in one pass
    (kernels/normalised_pairs.h) -- an odd d, and an odd batch whose last row is alone."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((60, 37)).astype(np.float32), rng.integers(0, 10, 60)
    if images:
        U = rng.integers(0, 256, (60, 37), dtype=np.uint8)
        X = NormalisedImages(U, U.mean(axis=0), U.std(axis=0) + 1.0, np.float32)
    nets = [_net(), _net()]
    plain, beside = (_bf16_step(net, products) for net in nets)
    beside.gather_beside()
    batches = [rng.permutation(60)[:9] for _ in range(9)]
    # steps 0-3 take the batch gathered beside the step before (and its bf16 copy, made there);
    # steps 4-7 another batch than the one gathered ahead: gathered anew, maybe into the very
    # buffer the copy was made of, which must then not be taken for it
    for t, rows in enumerate([0, 1, 2, 3, 5, 7, 2, 8]):
        ahead = batches[rows + 1] if rows + 1 < len(batches) else batches[0]
        losses = []
        for fused in (plain, beside):
            Xb, yb = fused.gather(X, y, batches[rows])
            assert Xb.tobytes() == X[batches[rows]].tobytes()
            losses.append(fused.step(Xb, yb, 0.01, 0.05, checked=False, ahead=(X, y, ahead)))
        assert losses[0] == losses[1]
    for fused in (plain, beside):
        fused.detach()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(nets[0].params().values(), nets[1].params().values()))


@pytest.mark.parametrize("products", PRODUCTS[1:])
@pytest.mark.parametrize("d", [37, 371])
def test_mkls_bf16_bits_do_not_depend_on_the_load(products, d):
    """MKL's two-core split makes the same calls on one thread as on two (the load guard's
    fallback), so the same bits. (MKL does not promise that a product cut by rows rounds as
    the whole one, so the one-core step is its own run; on the Zen 3 machine it was equal.)"""
    assert _same(_train(2, 1, d, products), _train(2, 2, d, products))


def _bf16_cfg(products, precision="bf16"):
    """A small run on ``products``' bf16 products (fastnet's: NumPy's OpenBLAS for the rest)."""
    return small_cfg(backend="cython", precision=precision, gemm="mkl" if products == "mkl" else "openblas")


@pytest.mark.parametrize("products", PRODUCTS)
def test_a_bf16_run_trains_as_the_float32_run_does(fake, products):
    """bf16 rounds the first layer's inputs only: over 60 steps the losses stay within a few
    per cent of the float32 run's (what is seen: well under 1 %), and it learns."""
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = _bf16_cfg(products, precision)
        net = _net(d=3072, hidden=cfg.hidden)
        history = fit(net, fake, cfg, resolve("cython").ops, progress=False)
        runs[precision] = np.array(history.step_loss)
    assert np.allclose(runs["bf16"], runs["fp32"], rtol=0.05)
    assert not np.array_equal(runs["bf16"], runs["fp32"])
    assert runs["bf16"][-5:].mean() < 0.8 * runs["bf16"][:5].mean()


@pytest.mark.parametrize("products", PRODUCTS)
def test_a_bf16_run_records_its_precision_and_resumes_bit_for_bit(fake, tmp_path, monkeypatch, products):
    cfg = _bf16_cfg(products)
    whole = tmp_path / "whole"
    run_train.run_to_folder(cfg, whole, data=fake, progress=False, plots=False)
    plain = tmp_path / "fp32"
    run_train.run_to_folder(_bf16_cfg(products, "fp32"), plain, data=fake, progress=False, plots=False)
    out = tmp_path / "stopped"
    stopped_run(cfg, out, fake, monkeypatch)
    assert json.loads((out / "config.json").read_text())["train"]["precision"] == "bf16"
    run_train.resume_run(out, data_dir=fake.source, progress=False, plots=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] == "bf16" and metrics["bf16_products"] == products
    tiles = resolve("cython").ops.fused_step.bf16_amx()
    assert metrics.get("bf16_kernel") == ({True: "amx-tiles", False: "avx512-bf16"}[tiles] if products == "fastnet" else None)
    assert "bf16_products" not in json.loads((plain / "metrics.json").read_text())
    a, b = np.load(whole / "model.npz"), np.load(out / "model.npz")
    assert sorted(a.files) == sorted(b.files) and all(a[k].tobytes() == b[k].tobytes() for k in a.files)
    assert np.load(plain / "model.npz")["W1"].tobytes() != a["W1"].tobytes()  # bf16 changed the run


def _guarded(shape, dtype, fill):
    """A C-contiguous array of ``shape`` at the start of a larger buffer filled with ``fill``,
    and the buffer's tail after it (its guard): a kernel that writes past the array changes it."""
    size = int(np.prod(shape))
    buf = np.full(size + 256, fill, dtype)
    return buf[:size].reshape(shape), buf[size:]


@pytest.mark.parametrize("products", PRODUCTS)
@pytest.mark.parametrize("m1", [5, 8, 40, 50])
def test_narrow_first_layers_write_only_their_own_entries(products, m1):
    """First layers narrower than a tile's 32 columns, or ending 1-15 columns into one (5, 8,
    40): the masked halves of a tile must touch nothing (they once wrote 16 columns past C
    there, corrupting the heap). The first layer's two products run twice, as two steps make
    them (the second forward product reads the bf16 copy of W1t the first update wrote); both
    are checked against the reference, and the words after every buffer they write stay as
    they were."""
    from fastnet.backends import cython_step as ck

    rng = np.random.default_rng(3)
    n, d, step = 9, 37, 1e-6  # bf16_*_products' update: W1t -= step X^T G
    X = rng.standard_normal((n, d)).astype(np.float32)
    G = rng.standard_normal((n, m1)).astype(np.float32)
    W1t, w_tail = _guarded((d, m1), np.float32, 7.0)
    W1t[:] = 1e-9 * rng.standard_normal((d, m1))  # small: the update's sum can be read back from W1t
    S, s_tail = _guarded((n, m1), np.float32, 7.0)
    if products == "fastnet":  # zeroed buffers (their padding, on AMX tiles, is zero pairs), guarded tails
        shapes = ck.bf16_pairs_shapes(n, d, m1)
        copy, c_tail = _guarded(shapes[0], np.uint32, 0xDEADBEEF)  # W1t's pairs
        scratch = [_guarded(s, np.uint32, 0xDEADBEEF) for s in shapes[1:]]
        for a in [copy, *(a for a, _ in scratch)]:
            a[...] = 0
        run = lambda: ck.bf16_pairs_products(X, W1t, G, S, copy, *(a for a, _ in scratch))  # noqa: E731
    else:
        copy, c_tail = _guarded((d, m1), np.uint16, 0xBEEF)  # W1t in bf16
        scratch = [_guarded(s, np.uint16, 0xBEEF) for s in ((n, d), (n, m1))]
        ck.round_bf16(W1t, copy)
        run = lambda: ck.bf16_library_products(providers.mkl_bf16_gemm(), X, W1t, G, S, scratch[0][0], copy,  # noqa: E731
                                               scratch[1][0])
    tails = [w_tail, s_tail, c_tail, *(t for _, t in scratch)]
    before = [t.copy() for t in tails]
    W0 = W1t.astype(np.float64)
    run()
    assert close((W0 - W1t) / step, bf16(X).T @ bf16(G))
    W1 = W1t.astype(np.float64)
    run()
    assert close(S, bf16(X) @ bf16(W1))
    assert all(t.tobytes() == b.tobytes() for t, b in zip(tails, before))


@needs_extension
def test_the_library_products_rounding_is_the_references():
    """kernels/bf16_round.h against :func:`bf16`: random values of every magnitude, ties both
    ways, infinities, the largest finite values (which round up to infinity, as they must),
    zeros of both signs, subnormals; NaNs stay NaNs (quiet), even those whose low bits would
    carry into an infinity."""
    from fastnet.backends.cython_step import round_bf16

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(4000) * 10.0 ** rng.integers(-40, 38, 4000),
                        1 + np.array([2.0 ** -8, 3 * 2.0 ** -8, -(2.0 ** -9)]),
                        [np.inf, -np.inf, np.finfo(np.float32).max, 0.0, -0.0, 1e-40, -3e-42]]).astype(np.float32)
    nans = np.array([0x7F800001, 0xFF80FFFF, 0x7FC00000], np.uint32).view(np.float32)
    got = np.empty((1, x.size + nans.size), np.uint16)
    round_bf16(np.concatenate([x, nans])[None, :], got)
    values = (got.astype(np.uint32) << 16).view(np.float32)[0]
    assert values[:x.size].astype(np.float64).tobytes() == bf16(x).tobytes()
    assert np.isnan(values[x.size:]).all()


# ------------------------------------------------------------------ refusals, on every machine

def test_precision_is_checked_with_the_configuration():
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; choose one of fp32, bf16"):
        TrainConfig(precision="fp16").validate()
    with pytest.raises(ConfigError, match="does not combine with --dtype float64"):
        TrainConfig(precision="bf16", dtype="float64").validate()
    assert "precision" not in TrainConfig().to_dict()  # runs made before it read back unchanged
    assert TrainConfig(precision="bf16").to_dict()["precision"] == "bf16"


@pytest.mark.parametrize("kw, why", [
    (dict(backend="numpy"), "runs in the compiled fused step, which this run does not take"),
    (dict(backend="cython", label_smoothing=0.1), "runs in the compiled fused step, which this run does not take"),
])
def test_bf16_where_no_fused_step_runs_is_one_sentence(fake, kw, why):
    if kw["backend"] == "cython" and not built:
        pytest.skip("the extension is not built")
    cfg = small_cfg(precision="bf16", **kw)
    with pytest.raises(ConfigError, match=why):
        fit(_net(d=3072, hidden=cfg.hidden), fake, cfg, resolve(cfg.backend).ops, progress=False)


@needs_extension
def test_bf16_on_a_cpu_without_it_and_without_mkl_names_the_cpu(fake, monkeypatch):
    monkeypatch.setattr(resolve("cython").ops.fused_step, "bf16_supported", lambda: False)
    monkeypatch.setattr(providers, "mkl_bf16_gemm", lambda: None)
    cfg = small_cfg(backend="cython", precision="bf16", gemm="openblas")
    with pytest.raises(ConfigError, match=r"--precision bf16: this CPU \(.+\) has no AVX512_BF16, .+\(pip install 'fastnet\[mkl\]'\) its bf16 product runs them here, emulated"):
        fit(_net(d=3072, hidden=cfg.hidden), fake, cfg, resolve("cython").ops, progress=False)


@pytest.mark.parametrize("products", PRODUCTS[1:])
def test_bf16_on_a_cpu_without_it_runs_on_mkl_and_says_it_is_emulated(monkeypatch, products):
    """Without AVX512_BF16, MKL's bf16 product runs them whatever the provider of the rest;
    the run's first line says that it is an emulation."""
    from fastnet.runs.train import precision_note
    from fastnet.util import cpu

    kernel = resolve("cython").ops.fused_step
    monkeypatch.setattr(kernel, "bf16_supported", lambda: False)
    fused = fused_step_for(_net(), resolve("cython").ops, gemm="openblas")
    fused.use_bf16()
    assert fused.bf16 == "mkl"
    fused.detach()
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert "emulated on MKL's product (this CPU has no AVX512_BF16 or AMX)" in precision_note(TrainConfig(precision="bf16"), kernel, "openblas")
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
    assert precision_note(TrainConfig(precision="bf16"), kernel, "mkl") == ", first-layer products in bf16 (MKL's, on AMX tiles)"
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision_note(TrainConfig(precision="bf16"), kernel, "mkl") == ", first-layer products in bf16 (MKL's)"


@pytest.mark.parametrize("products", PRODUCTS[1:])
def test_a_step_moved_to_or_from_mkl_takes_its_bf16_products_along(products, monkeypatch):
    """use_gemm after use_bf16 (the order fit takes them in) changes whose bf16 products run;
    where fastnet's cannot run, they stay MKL's."""
    fused = fused_step_for(_net(), resolve("cython").ops)
    monkeypatch.setattr(resolve("cython").ops.fused_step, "bf16_supported", lambda: False)
    fused.use_bf16()
    fused.use_gemm("openblas")
    assert fused.bf16 == "mkl"
    fused.use_gemm("mkl")
    assert fused.bf16 == "mkl"
    fused.detach()


def test_numbas_fused_step_has_no_bf16():
    numba = load("numba")
    if not numba.available:
        pytest.skip("numba is not installed")
    fused = fused_step_for(_net(), numba.ops)
    with pytest.raises(ValueError, match="compiled extension's"):
        fused.use_bf16()


def test_bf16_runs_are_not_grouped():
    assert lockstep_blocker(TrainConfig(precision="bf16")) == "bf16 products are not grouped"


@pytest.mark.skipif(not (has_bf16 or has_mkl16), reason=f"this CPU ({cpu_model()}) has no AVX512_BF16, and MKL is not installed")
def test_bf16_steps_take_both_cores_augmented_or_not(fake):
    """The bf16 kernels have no threads of their own: with BLAS on two threads a step whose
    first layer is most of it (split_pays) takes one core, BLAS on one thread, and gathers the
    next batch beside it on the other, augmented in its gather or not (beside_pays); augmented
    between steps (a Python augmentation, such as PCA rows' flips, where float32 keeps BLAS's
    threads), or a network whose small layers weigh, it splits itself."""
    from threadpoolctl import threadpool_limits

    from fastnet.training.stepper import ImageAugment, Stepper
    from fastnet.util.threads import blas_thread_count

    ops = resolve("cython").ops
    in_gather, between = ImageAugment(seed=0, shift=3), (lambda Xb, t: Xb)
    cases = (((50, 20), False, None, 2, False), ((50, 20), False, between, 1, False), ((50, 20), True, between, 2, False),
             ((50, 20), True, in_gather, 1, True), ((50, 20), True, None, 1, True), ((8, 256), True, in_gather, 2, False))
    with threadpool_limits(2, user_api="blas"):
        for hidden, bf16, augment, cores, beside in cases:
            stepper = Stepper(_net(d=3072, hidden=hidden), fake.X_train, fake.y_train, 0.0, ops, augment=augment, bf16=bf16)
            try:
                if stepper.fused.parallel_threads() < 2:
                    pytest.skip("OpenMP has one thread here")
                assert (stepper.cores, stepper.beside) == (cores, beside), (hidden, bf16, augment)
                assert blas_thread_count() == (1 if cores == 2 or beside else 2)
                loss = stepper(np.arange(50), 0.01, 0, np.arange(50, 100))
                assert np.isfinite(loss)
            finally:
                stepper.close()
            assert blas_thread_count() == 2  # given back


@pytest.mark.parametrize("products", PRODUCTS)
def test_an_augmented_one_thread_bf16_run_gathers_beside_its_steps_with_the_same_bits(fake, products):
    """The Stepper as a one-thread run with a core to spare drives it: augmented in the gather,
    each next batch (moved, and its bf16 copy made) on the kernel's second thread -- the same
    losses and arrays as gathering after each step on one thread."""
    import copy

    from threadpoolctl import threadpool_limits

    from fastnet.training.stepper import ImageAugment, Stepper

    ops = resolve("cython").ops
    nets = [_net(d=3072, hidden=(50, 20)) for _ in range(2)]
    nets[1] = copy.deepcopy(nets[0])
    rng = np.random.default_rng(4)
    batches = [rng.permutation(len(fake.y_train))[:20] for _ in range(7)]
    losses = []
    with threadpool_limits(1, user_api="blas"):
        for net, beside in zip(nets, (False, True)):
            stepper = Stepper(net, fake.X_train, fake.y_train, 0.01, ops, augment=ImageAugment(seed=0, shift=3), bf16=True)
            if products == "mkl":
                stepper.fused.use_gemm("mkl")
            stepper.prefetch = stepper.beside = beside  # forced: whether a run prefetches depends on the idle cores
            stepper.fused.gather_beside(beside)
            try:
                losses.append([stepper(batches[t], 0.05, t, batches[t + 1]) for t in range(6)])
            finally:
                stepper.close()
    assert losses[0] == losses[1]
    A, B = nets[0].params(), nets[1].params()
    assert all(A[k].tobytes() == B[k].tobytes() for k in A)


def test_info_says_whether_bf16_runs_here(capsys, monkeypatch):
    from fastnet.backends import gemm_choice
    from fastnet.cli import bf16_note

    def choice(*a, one_core=False):  # MKL's for the two-core step, fastnet's for a one-core one
        return ({"choice": "fastnet", "seconds": {"fastnet": 2e-4, "mkl": 3e-4}} if one_core
                else {"choice": "mkl", "seconds": {"fastnet": 1e-3, "mkl": 5e-4}})

    monkeypatch.setattr(gemm_choice, "bf16_choice", choice)
    note = bf16_note()
    assert note.startswith("yes") == has_bf16
    assert note.startswith("emulated") == (not has_bf16 and has_mkl16)
    if has_bf16 and has_mkl16:  # where both run, the note says which auto takes for each step, and the times it took that from
        assert "--gemm auto takes MKL's" in note and "for the two-core step (fastnet 1.000 ms, mkl 0.500 ms)" in note
        assert "fastnet's kernels for a one-core step, its batch's bf16 copies made beside it (fastnet 0.200 ms, mkl 0.300 ms)" in note
    if built:
        monkeypatch.setattr(resolve("cython").ops.fused_step, "bf16_supported", lambda: False)
        monkeypatch.setattr(providers, "mkl_bf16_gemm", lambda: None)
        assert bf16_note().startswith(f"no: this CPU ({cpu_model()}) has no AVX512_BF16 (with Intel MKL installed")
        monkeypatch.setattr(providers, "mkl_bf16_gemm", lambda: 1)
        assert bf16_note().startswith(f"emulated: this CPU ({cpu_model()}) has no AVX512_BF16, so they run on MKL's bf16 product")
