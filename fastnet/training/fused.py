"""The fused training step: a whole SGD step in one compiled call, on buffers made once.

:func:`fastnet.training.stepper.train_step` is the step written like the equations, op by op over a
backend; it is the truth, and it serves every configuration. For the configurations most
runs use -- plain SGD on a network whose hidden layers are all batch norm + ReLU (BN before
the ReLU, the assignment's) or all ReLU, without skip connections -- a backend may offer a
compiled step that does the same arithmetic in one call (``ops.fused_step``: the extension's,
:mod:`fastnet.backends.cython_step`, compiled at install, and Numba's,
:mod:`fastnet.backends.numba_step`; both offer the same names). :class:`FusedStep` holds its
buffers; ``fit`` uses it
whenever :func:`fused_step_for` returns one. tests/training/test_fused.py holds the two paths equal.

What the fused step changes, measured in ``scripts/bench_peers.py``:

* Python runs once per step instead of ~5 times per layer (on the 9-layer network the per-op
  calls cost more than their arithmetic);
* the first layer's weights live transposed, (d, m_1) C-contiguous, the orientation in which
  BLAS runs the step's two 100 x 3072 x 50 products fastest; ``net.layers[0].W`` is their
  transposed view while the step is attached and an ordinary array again after
  :meth:`FusedStep.detach`;
* the weight gradient never exists as a separate array pass: W = (1 - 2 eta lam) W - (eta/n) G^T X;
* the mini-batch is gathered into a reused buffer; nothing is allocated per step; an augmented
  one (flips and translations, :func:`fastnet.data.augment.augment_moves`) is moved as it is
  gathered, so it too is gathered ahead, during the step before;
* its products call the CBLAS ?gemm of the provider handed to it (``gemm``: NumPy's OpenBLAS
  by default, Intel MKL with ``--gemm``; :mod:`fastnet.backends.gemm_choice`), by the table
  given to the kernel's plan, never a module global;
* on two cores (:meth:`FusedStep.use_cores`) the step splits itself: the first layer's two
  products in halves, one per core, BLAS on one thread in each, and the small layers on one
  core while the other gathers the next batch -- instead of OpenBLAS's two threads, which
  leave the gather and the small layers serial between the products; where the first layer
  is not most of the step (:func:`split_pays`), the extension's step cuts the small layers'
  products in halves too (:func:`splits_itself`);
* with ``--precision bf16`` (:meth:`FusedStep.use_bf16`, the extension's step only) the first
  layer's two products take bf16 inputs and sum in float32: on fastnet's own kernels
  (kernels/bf16_gemm.h, AVX512_BF16), or on MKL's ``cblas_gemm_bf16bf16f32`` with ``--gemm
  mkl`` and on CPUs without AVX512_BF16 (:func:`bf16_products`); the weights stay float32, and every other product is BLAS's, as before. Its steps take two
  cores whenever BLAS has two threads, augmented or not; where the first layer is not most of
  the step (:func:`split_pays`), the small layers' products are cut in halves too.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np
from numpy.typing import NDArray

from fastnet.data.augment import IMAGE_SHAPE, MAX_SHIFT
from fastnet.data.images import NormalisedImages
from fastnet.model.network import Network
from fastnet.util.cpu import cpu_model


def fused_step_for(net: Network, ops, *, optimizer: str = "sgd", regularised: bool = False,
                   gemm: str | None = None) -> "FusedStep | None":
    """A :class:`FusedStep` for ``net`` when ``ops`` offers one and the network qualifies, else None.

    Qualifies: plain SGD, at least one hidden layer, hidden layers all ``bn_relu`` or all
    ``relu`` (no batch norm after the ReLU, no skip connections), float32 or float64, and
    not ``regularised`` (issue 17: label smoothing, MixUp or dropout; the compiled step knows
    labels and no masks). ``gemm``: the matrix-multiply provider (:meth:`FusedStep.use_gemm`).
    """
    kernel = getattr(ops, "fused_step", None)
    if kernel is None or optimizer != "sgd" or net.k < 2 or net.skip or regularised:
        return None
    kinds = set(net.kinds())
    if kinds not in ({"bn_relu"}, {"relu"}) or net.dtype not in (np.float32, np.float64):
        return None
    return FusedStep(net, kernel, gemm)


#: The two implementations of the bf16 products: fastnet's own kernels (kernels/amx_gemm.h on
#: AMX tiles where the CPU has them, else kernels/bf16_gemm.h, AVX512_BF16's VDPBF16PS) and MKL's
#: cblas_gemm_bf16bf16f32 (AMX tiles or AVX512_BF16 where the CPU has them, an emulation in
#: float32 elsewhere).
BF16_PRODUCTS = ("fastnet", "mkl")


def bf16_products(kernel, gemm: str | None) -> str:
    """Whose bf16 products a fused step of ``kernel`` whose products go to the provider
    ``gemm`` runs: MKL's with ``--gemm mkl``; else fastnet's own where this CPU runs them
    (AVX512_BF16), and MKL's, emulated, where it does not but MKL is installed. ValueError, in
    a sentence, where neither can run (or the kernel has no bf16 products)."""
    from fastnet.backends import providers

    supported = getattr(kernel, "bf16_supported", None)
    if supported is None:
        raise ValueError("bf16 products are the compiled extension's (--backend cython); this backend's fused step has none")
    mkl = providers.mkl_bf16_gemm() is not None
    if gemm == "mkl":
        if not mkl:
            raise ValueError("this MKL has no cblas_gemm_bf16bf16f32; choose --gemm auto or openblas")
        return "mkl"
    if supported():
        return "fastnet"
    if mkl:
        return "mkl"
    raise ValueError(f"this CPU ({cpu_model()}) has no AVX512_BF16, which fastnet's bf16 kernels need "
                     "(Intel Cooper Lake or Sapphire Rapids and later, AMD Zen 4 and later); "
                     "with Intel MKL installed (pip install 'fastnet[mkl]') its bf16 product runs them here, emulated")


def bf16_kernel(kernel) -> str:
    """Which of fastnet's bf16 kernels a plan of ``kernel`` made now runs: "amx-tiles"
    (kernels/amx_gemm.h) or "avx512-bf16" (kernels/bf16_gemm.h); their roundings differ."""
    tiles = getattr(kernel, "bf16_amx", None)
    return "amx-tiles" if tiles is not None and tiles() else "avx512-bf16"


def bf16_emulated(products: str) -> bool:
    """Whether bf16 products ``products`` run emulated on this CPU: MKL's without AVX512_BF16 or
    AMX-BF16 to run them on (the same arithmetic -- bf16 inputs, float32 sums -- at float32's
    speed or below)."""
    from fastnet.util.cpu import cpu_flags

    return products == "mkl" and not ({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


#: The two-core split pays when the first layer's products are at least this share of the
#: step's multiply-adds: the layers above it run on one core while the other only gathers.
#: [50, 50]: 98 %, the split 1.1-1.3x faster than OpenBLAS's two threads (README, bench_peers);
#: [1024, 512, 256]: 83 %, the split 15 % slower (17.0 against 14.75 s an epoch, medians of 3
#: interleaved rounds, 2026-12-02, AMD EPYC Zen 1) -- unless its small layers' products are
#: cut in halves too (:func:`splits_itself`).
SPLIT_SHARE = 0.9


def split_pays(sizes) -> bool:
    """Whether the two-core split (:meth:`FusedStep.use_cores`) beats BLAS's own two threads on
    a network of layer ``sizes`` (d, m_1, ..., K): its first layer's products are
    :data:`SPLIT_SHARE` of the step's work or more (asked by :func:`splits_itself`, and by
    bf16 steps for whether to cut their small layers too)."""
    first = sizes[0] * sizes[1]
    return first >= SPLIT_SHARE * sum(a * b for a, b in zip(sizes, sizes[1:]))


def kernel_cuts_small_layers(kernel) -> bool:
    """Whether a fused-step kernel module (``ops.fused_step``, or None) can cut the layers
    above the first in halves too on two cores (``split_small``: the extension's; Numba's
    step cannot)."""
    return bool(getattr(kernel, "CUTS_SMALL_LAYERS", False))


def beside_pays(sizes, *, augmented: bool, bf16: bool) -> bool:
    """Whether a fused step given two BLAS threads runs on one core, BLAS on one thread, with
    the next batch gathered beside it on the other (:meth:`FusedStep.gather_beside`), rather
    than as its own split: in bf16 where its first layer is most of the step (:func:`split_pays`)
    and the batch is gathered by the kernel (not ``augmented`` in Python). Its first layer's
    products on AMX tiles are then short enough that the split's halves spend what they save
    waiting on each other: [50, 50] BN, 2026-12-04, Xeon with AMX, 2 threads, 0.14 s an epoch
    beside against 0.17 s split (README, "bf16 on two threads"). A wide network's small layers
    still gain from the split's halves ([1024, 512, 256]: 2.6 s split, 3.9 s beside)."""
    return bf16 and not augmented and split_pays(sizes)


def splits_itself(sizes, *, augmented: bool, bf16: bool, cuts_small: bool = False) -> bool:
    """Whether a fused step given two BLAS threads runs on two cores as its own split (BLAS on
    one thread in each) rather than on one core with BLAS's two threads: in bf16 unless
    :func:`beside_pays` (its first-layer kernels have no threads of their own); else unless the batch is ``augmented``
    in Python between steps (PCA rows' flips: image augmentation is applied by the gather,
    which the split runs on its spare core), where :func:`split_pays` or the kernel
    ``cuts_small`` -- the layers above the first cut in halves too (the extension's
    ``split_small``; :attr:`FusedStep.cuts_small_layers`). Measured on [1024, 512, 256] (Zen 5,
    2026-12-02): cut so, the split runs an epoch as fast as BLAS's two threads, and beside a
    busy core its load guard's one thread makes it 1.6x faster than they are. The stepper and
    the provider choice (:func:`fastnet.training.config.gemm_for`) both ask it."""
    if bf16:
        return not beside_pays(sizes, augmented=augmented, bf16=bf16)
    return not augmented and (split_pays(sizes) or cuts_small)


class FusedStep:
    """The buffers of the fused step for one network and batch size (made on first use).

    The network's arrays are updated in place: the step holds the very arrays of
    ``net.layers`` (the first layer's as its transpose), so the network is always current.
    ``gemm``: the matrix-multiply provider its products call (:meth:`use_gemm`).
    """

    def __init__(self, net: Network, kernel, gemm: str | None = None):
        self.net = net
        self.kernel = kernel
        self.gemm = gemm
        self.bf16: str | None = None  # whose bf16 products run (use_bf16), or None: float32
        self._split_small = False
        self.plan = None
        self.dtype = net.dtype
        layers = net.layers
        for layer in layers:  # the kernel needs C-contiguous arrays: make them the layer's own
            for name in ("W", "b", "gamma", "beta", "mu_av", "v_av"):
                a = getattr(layer, name)
                if a is not None:
                    setattr(layer, name, np.ascontiguousarray(a))
        W1 = layers[0].W
        self.W1t = np.ascontiguousarray(W1.T)  # (d, m_1)
        layers[0].W = self.W1t.T  # the network's view of it: (m_1, d), F-contiguous
        self.bn = net.bn
        sizes = net.sizes
        hidden = sizes[1:-1]
        dt = self.dtype
        # Tuples of arrays, not numba.typed.List: a homogeneous tuple is indexed by a runtime
        # index as cheaply, and needs no list methods compiled (not cached) at every start.
        self.Ws = tuple([layer.W for layer in layers[1:]])
        # biases of every layer; batch-norm hidden layers have none: zeros the kernel ignores
        self.bs = tuple([layer.b if layer.b is not None else np.zeros(layer.W.shape[0], dt) for layer in layers])
        if self.bn:
            self.gammas = tuple([layer.gamma for layer in layers[:-1]])
            self.betas = tuple([layer.beta for layer in layers[:-1]])
            fresh = layers[0].mu_av is None
            self.mu_avs = tuple([layer.mu_av if not fresh else np.zeros(m, dt) for layer, m in zip(layers, hidden)])
            self.v_avs = tuple([layer.v_av if not fresh else np.zeros(m, dt) for layer, m in zip(layers, hidden)])
            self.first = fresh  # the first batch initialises the running averages (eqs 38-39)
        else:
            self.gammas = self.betas = self.mu_avs = self.v_avs = (np.zeros(1, dt),)
            self.first = False
        self.widths = hidden
        self.n = None
        self._pending = None  # (future or None, (X, y, idx, moves), Xb, yb) of a batch gathered ahead
        self._pool = None
        self.cores = 1
        self.beside = False  # one core: the next batch gathered on a second thread of the kernel's (gather_beside)
        # bf16 beside: the plan's two pairs of buffers for a batch's bf16 copies, the pair this
        # step takes, and the batch whose copies the last step made beside it (_batch_copies)
        self._copies, self._copy_turn, self._copied = None, 0, None
        self._limits = None
        self._checked = (None,) * 7  # what _check_rows checked last: X, its array, y, the array's strides and shape, y's shape, X's dtype
        self._no_rows = np.zeros(0, np.intp)
        # what the two-core step last gathered from (its types, reused when nothing is ahead)
        self._source = (*self._source_of(np.zeros((0, net.sizes[0]), self.dtype)), self._no_rows)

    def _buffers(self, n: int) -> None:
        """The per-step arrays for a batch of n rows."""
        dt, sizes = self.dtype, self.net.sizes
        outs = sizes[1:]
        self.n = n
        self.Ss = tuple([np.empty((n, m), dt) for m in outs])
        self.Gs = tuple([np.empty((n, m), dt) for m in outs])
        self.Xs = tuple([np.empty((n, m), dt) for m in self.widths])
        self.dXs = tuple([np.empty((n, m), dt) for m in self.widths])
        per_hidden = self.widths if self.bn else [1]
        self.S_hats = tuple([np.empty((n, m), dt) for m in self.widths]) if self.bn else (np.empty((1, 1), dt),)
        self.mus = tuple([np.empty(m, dt) for m in per_hidden])
        self.vs = tuple([np.empty(m, dt) for m in per_hidden])
        self.dgammas = tuple([np.empty(m, dt) for m in per_hidden])
        self.dbetas = tuple([np.empty(m, dt) for m in per_hidden])
        self.P = np.empty((n, sizes[-1]), dt)
        self.loss = np.empty(n, dt)
        self._Xbs = [np.empty((n, sizes[0]), dt) for _ in range(2)]
        self._ybs = [np.empty(n, np.intp) for _ in range(2)]
        self._turn = 0
        self.plan = self._plan()

    def use_gemm(self, name: str | None) -> None:
        """Call the products of every following step through the provider ``name`` ("openblas",
        "openblas-avx512", "mkl": :func:`fastnet.backends.gemm_choice.table`; None: the kernel's own table, the
        first provider found -- NumPy's OpenBLAS). ValueError if its library is not installed."""
        if name is not None:
            self._table(name)  # refused now, not at the first step
        if self.bf16:  # MKL's bf16 products with MKL's, else as before
            self.bf16 = bf16_products(self.kernel, name)
        self.gemm = name
        if self.plan is not None:
            self.plan = self._plan()

    def use_bf16(self, on: bool = True) -> None:
        """Run the first layer's two products of every following step on bf16 inputs with
        float32 sums (``--precision bf16``), or in float32 again: on the products
        :func:`bf16_products` names for this step's provider (:attr:`bf16`). ValueError, in a
        sentence, where that cannot run: a kernel without bf16 products (Numba's), a float64
        network, or a CPU without AVX512_BF16 and no MKL."""
        if on:
            products = bf16_products(self.kernel, self.gemm)
            if self.dtype != np.float32:
                raise ValueError("bf16 products train float32 networks (--dtype float32)")
        self.bf16 = products if on else None
        self._cut_small_layers()  # (measured in the README, issue 15)
        if self.plan is not None:
            self.plan = self._plan()

    def _table(self, name: str | None):
        if name is None:
            return self.kernel.BLAS
        from fastnet.backends.gemm_choice import table

        tab = table(name)
        if tab is None:
            raise ValueError(f"the matrix-multiply provider {name!r} is not installed")
        return tab

    def _plan(self):
        """The kernel's plan of the step's arrays, with the table of :attr:`gemm`'s provider."""
        k = self.kernel
        self._copies, self._copied = None, None  # (their layout is the new plan's)
        plan = k.StepPlan(self._table(self.gemm), self.W1t, self.Ws, self.bs, self.gammas, self.betas, self.mu_avs, self.v_avs,
                          self.Ss, self.Xs, self.S_hats, self.mus, self.vs, self.Gs, self.dXs, self.dgammas,
                          self.dbetas, self.P, self.loss, self.bn)
        (d, m1), n = self.W1t.shape, self.n
        if self.bf16 == "mkl":  # plain bf16 copies of the operands (kernels/bf16_round.h); W1t's made now
            from fastnet.backends.providers import mkl_bf16_gemm

            plan.use_bf16_gemm(mkl_bf16_gemm(), np.empty((n, d), np.uint16), np.empty((d, m1), np.uint16),
                               np.empty((n, m1), np.uint16))
        elif self.bf16:  # the operands as bf16 pairs (kernels/bf16_gemm.h, amx_gemm.h); W1t's copy is made from W1t now
            plan.use_bf16(*(np.zeros(shape, np.uint32) for shape in k.bf16_pairs_shapes(n, d, m1)))
        return plan

    def parallel_threads(self) -> int:
        """The threads the kernel's two-core step may run on now (Numba's or OpenMP's)."""
        return self.kernel.parallel_threads()

    def use_cores(self, cores: int) -> None:
        """Take each step on ``cores`` (1 or 2) cores: with 2, :meth:`step` runs the kernel's
        ``sgd_step_parallel`` on two of Numba's threads, each calling BLAS on one thread (set
        here for the process until :meth:`detach`), and gathers the batch given as ``ahead``
        on whichever core is free. With 1, BLAS keeps its threads."""
        if cores not in (1, 2):
            raise ValueError(f"the fused step runs on 1 or 2 cores, not {cores!r}")
        if cores == self.cores:
            return
        if cores == 2:
            from threadpoolctl import threadpool_limits

            self._limits = threadpool_limits(1, user_api="blas")
        else:
            self._release_limits()
        self.cores = cores
        self._cut_small_layers()

    @property
    def gathers_beside(self) -> bool:
        """Whether the kernel can take the one-core step while a second of its threads gathers
        the next batch (the extension's ``fused_sgd_step_beside``; Numba's step cannot, and
        :meth:`prefetch` gathers in a Python thread instead)."""
        return hasattr(self.kernel, "fused_sgd_step_beside")

    def gather_beside(self, on: bool = True, *, one_blas_thread: bool = False) -> None:
        """On one core, gather the batch given to :meth:`step` as ``ahead`` on a second thread
        of the kernel's during the step (``threads=2``), not after it: the same step, the same
        batch. ``one_blas_thread``: BLAS on one thread for the process until :meth:`detach`,
        the second core being the gather's (a run given two threads, :func:`beside_pays`).
        ValueError where the kernel cannot (:attr:`gathers_beside`)."""
        if on and not self.gathers_beside:
            raise ValueError("this kernel's step gathers no batch beside it")
        if on and one_blas_thread and self._limits is None:
            from threadpoolctl import threadpool_limits

            self._limits = threadpool_limits(1, user_api="blas")
        elif not on and self.cores == 1:
            self._release_limits()
        self.beside = on

    @property
    def cuts_small_layers(self) -> bool:
        """Whether the kernel's two-core step can cut the layers above the first in halves too
        (:func:`kernel_cuts_small_layers`)."""
        return kernel_cuts_small_layers(self.kernel)

    def _cut_small_layers(self) -> None:
        """Cut the small layers' products in halves where the first layer is not most of the
        step (:func:`split_pays`): on two cores, and in bf16 on one core alike (the same BLAS
        calls, so the same bits; float32 on one core keeps its single calls)."""
        self._split_small = self.cuts_small_layers and not split_pays(self.net.sizes) and (bool(self.bf16) or self.cores == 2)

    def _release_limits(self) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None

    def gather(self, X: NDArray, y: NDArray, idx: NDArray, moves: NDArray | None = None) -> tuple[NDArray, NDArray]:
        """The mini-batch X[idx], y[idx] in the step's own buffers (valid until the next
        gather but one: there are two, so a prefetch never writes the batch in use); with
        ``moves`` (augmentation: :func:`fastnet.data.augment.augment_moves` of the batch), each
        row flipped and translated as its move says -- exactly ``augment_batch`` of X[idx]."""
        pending, self._pending = self._pending, None
        if pending is not None:
            future, (p_X, p_y, p_idx, p_moves), Xb, yb = pending
            if future is not None:
                future.result()  # re-raises what the gather thread raised
            if p_X is X and p_y is y and _same(p_idx, idx) and _same(p_moves, moves):
                return Xb, yb  # checked by prefetch
        self._copied = None  # a buffer gathered anew: no bf16 copy made beside a step holds it
        self._check_rows(X, y, idx, moves)
        if self.n != len(idx):
            self._buffers(len(idx))
        Xb, yb = self._spare()
        self._gather_call(X, y, idx, moves, Xb, yb)()
        return Xb, yb

    def prefetch(self, X: NDArray, y: NDArray, idx: NDArray, moves: NDArray | None = None) -> None:
        """Start gathering the mini-batch ``idx`` (moved by ``moves``, as :meth:`gather`) in a
        second thread; the next :meth:`gather` of the same rows waits for it instead of
        gathering. The compiled gather and step release the GIL, so on a machine with a core
        to spare the gather of batch t + 1 costs nothing while step t runs."""
        self._check_rows(X, y, idx, moves)
        self._settle()
        self._copied = None
        if self.n != len(idx):
            self._buffers(len(idx))
        if self._pool is None:
            self._start_pool()
        Xb, yb = self._spare()
        self._pending = (self._pool.submit(self._gather_call(X, y, idx, moves, Xb, yb)), (X, y, idx, moves), Xb, yb)

    def _settle(self) -> None:
        """Drop the batch gathered ahead, once its gather has finished."""
        if self._pending is not None:
            if self._pending[0] is not None:
                self._pending[0].result()
            self._pending = None

    _NO_STATS = np.zeros(0)

    @classmethod
    def _source_of(cls, X) -> tuple:
        """What the compiled gathers read of X: (array, mean, inv_std, normalise) -- uint8
        images normalised as they are gathered (``load_cifar10``'s training set), or a float
        array as it is."""
        if isinstance(X, NormalisedImages):
            return X.pixels, X.mean, X.inv_std, True
        return X, cls._NO_STATS, cls._NO_STATS, False

    def _gather_call(self, X, y, idx, moves, Xb, yb):
        """The compiled gather of rows ``idx`` (moved by ``moves`` if not None) into (Xb, yb),
        ready to call."""
        k = self.kernel
        A, mean, inv_std, normalise = self._source_of(X)
        y, idx = np.asarray(y, np.intp), np.asarray(idx, np.intp)  # (no copy on 64-bit machines)
        if moves is not None:
            return partial(k.gather_moved_rows, A, mean, inv_std, normalise, y, idx, moves, *IMAGE_SHAPE[1:], Xb, yb)
        if normalise:
            return partial(k.gather_normalised_rows, A, mean, inv_std, y, idx, Xb, yb)
        return partial(k.gather_rows, A, y, idx, Xb, yb)

    def _check_rows(self, X: NDArray, y: NDArray, idx: NDArray, moves: NDArray | None = None) -> None:
        """The compiled gather reads X[idx[i]] unchecked: refuse what would read out of bounds
        (cheap: the batch's indices, X's dtype and layout, and the moves' shape and range).
        The labels are checked once, by :meth:`check_labels`; a source (X, y) once while it is
        the last one checked and keeps its shape (asked each step)."""
        A = X.pixels if isinstance(X, NormalisedImages) else X
        last = self._checked
        if not (X is last[0] and A is last[1] and y is last[2] and getattr(A, "strides", None) == last[3]
                and getattr(A, "shape", None) == last[4] and getattr(y, "shape", None) == last[5] and getattr(X, "dtype", None) == last[6]):
            self._check_source(X, y)
            self._checked = (X, A, y, A.strides, A.shape, y.shape, X.dtype)
        if not (isinstance(idx, np.ndarray) and idx.ndim == 1 and idx.dtype.kind in "iu" and len(idx) >= 2):
            raise ValueError("the rows of a batch are a 1-D integer array of at least 2 indices")
        if idx.min() < 0 or idx.max() >= X.shape[0]:
            raise ValueError(f"batch row indices must lie in 0..{X.shape[0] - 1}")
        if moves is not None:
            self._check_moves(idx, moves)

    def _check_source(self, X: NDArray, y: NDArray) -> None:
        """The source the gathers read: X's dtype, layout and width, and a label per row."""
        d = self.net.sizes[0]
        if isinstance(X, NormalisedImages):
            U = X.pixels
            ok = X.dtype == self.dtype and U.ndim == 2 and U.shape[1] == d and U.flags.c_contiguous and U.dtype == np.uint8
        else:
            ok = isinstance(X, np.ndarray) and X.dtype == self.dtype and X.ndim == 2 and X.shape[1] == d and X.flags.c_contiguous
        if not ok:
            raise ValueError(f"the fused step gathers from a C-contiguous (N, {d}) {self.dtype} array or NormalisedImages, got {getattr(X, 'shape', X)!r}")
        if not (isinstance(y, np.ndarray) and y.shape == (X.shape[0],) and y.dtype.kind in "iu"):
            raise ValueError(f"the fused step needs {X.shape[0]} integer labels, one per row of X")

    def _check_moves(self, idx: NDArray, moves: NDArray) -> None:
        """The moves of an augmented batch: its rows are images, one move each, within MAX_SHIFT."""
        d = self.net.sizes[0]
        if d != np.prod(IMAGE_SHAPE):
            raise ValueError(f"augmented rows are {'x'.join(map(str, IMAGE_SHAPE))} images, not rows of {d} values")
        if not (isinstance(moves, np.ndarray) and moves.dtype == np.int64 and moves.shape == (len(idx), 3) and moves.flags.c_contiguous):
            raise ValueError(f"the moves of an augmented batch are a C-contiguous ({len(idx)}, 3) int64 array (data.augment.augment_moves)")
        if len(moves) and np.abs(moves[:, :2]).max() > MAX_SHIFT:
            raise ValueError(f"augmentation moves images by at most {MAX_SHIFT} pixels")

    def check_labels(self, y: NDArray) -> None:
        """ValueError unless every label of ``y`` is a class of the network (0..K-1): the
        compiled step indexes the scores with them unchecked."""
        K = self.net.sizes[-1]
        if len(y) and (y.min() < 0 or y.max() >= K):
            raise ValueError(f"labels must lie in 0..{K - 1}")

    def _spare(self) -> tuple[NDArray, NDArray]:
        """The buffer pair not handed out last."""
        self._turn ^= 1
        return self._Xbs[self._turn], self._ybs[self._turn]

    def step(self, Xb: NDArray, yb: NDArray, lam: float, eta: float, *, checked: bool = True,
             ahead: tuple | None = None, threads: int = 2) -> float:
        """One SGD step on (Xb, yb) -- like ``train_step(net, Xb, yb, lam, eta, ops)``; returns
        the batch's mean cross-entropy, and leaves the network untouched if it is not finite.

        The compiled step trusts its arrays, so they are checked here (shape, dtype, labels in
        0..K-1), except for ``checked=False`` with the buffers :meth:`gather` filled from a
        data set whose labels were checked when it was loaded.

        ``ahead = (X, y, idx)`` or ``(X, y, idx, moves)``: the next batch (moved as
        :meth:`gather` moves it), which the next :meth:`gather` of those rows then returns at
        once; gathered during the step on two cores, else after it.

        ``threads`` (on two cores): 1 runs the step's two halves one after the other on one
        thread -- the same bits, for a machine whose second core is busy
        (:mod:`fastnet.training.load_guard`); on one core with :meth:`gather_beside`, 2
        gathers ``ahead`` on a second thread during the step, 1 after it on this one.
        """
        if checked:
            d, K = self.net.sizes[0], self.net.sizes[-1]
            Xb = np.ascontiguousarray(Xb, dtype=self.dtype)
            yb = np.asarray(yb)
            if Xb.ndim != 2 or Xb.shape[1] != d or Xb.shape[0] < 2 or yb.shape != (Xb.shape[0],) or yb.dtype.kind not in "iu":
                raise ValueError(f"a fused step needs a batch of shape (n >= 2, {d}) and n integer labels, got {Xb.shape} and {yb.shape} {yb.dtype}")
            if yb.min() < 0 or yb.max() >= K:
                raise ValueError(f"labels must lie in 0..{K - 1}")
            yb = np.ascontiguousarray(yb, dtype=np.intp)
        n = Xb.shape[0]
        if self.n != n:
            self._buffers(n)
        if ahead is not None:
            ahead = (*ahead, None) if len(ahead) == 3 else tuple(ahead)
            self._check_rows(*ahead)
            if len(ahead[2]) != n:
                raise ValueError(f"the batch gathered ahead must have the {n} rows of this one")
            self._settle()
        dt = self.dtype.type
        k = self.kernel
        args = (self.plan, Xb, yb, self.first, dt(eta), dt(1 - 2 * eta * lam), dt(eta / n), self.net.eps, self.net.alpha)
        # the buffers the next batch goes to (when none is ahead, the spare pair: nothing written)
        Xn, yn = self._spare() if ahead is not None else (self._Xbs[self._turn ^ 1], self._ybs[self._turn ^ 1])
        beside = self.cores == 1 and self.beside and ahead is not None and threads == 2
        if self.cores == 2:
            idx, moved = self._next_rows(ahead)
            split_small = (True,) if self._split_small else ()  # the extension's only: Numba's step takes no such argument
            loss = k.fused_sgd_step_parallel(args[0], 2, *args[1:], *self._source, idx, Xn, yn, threads, *split_small, **moved)
        elif beside:  # the one-core step's very calls, the next batch gathered on a second thread
            idx, moved = self._next_rows(ahead)
            copy = self._batch_copies(Xb)  # a bf16 step: the next batch's bf16 copies made there too
            loss = k.fused_sgd_step_beside(*args, 2 if self._split_small else 1, *self._source, idx, Xn, yn, **moved,
                                           **({} if copy is None else {"next_copy": copy}))
            self._copied = Xn if copy is not None else None
        else:  # split_small's products cut alike on one core: the same BLAS calls, the same bits
            loss = k.fused_sgd_step(*args, 2) if self._split_small else k.fused_sgd_step(*args)
        if not beside:
            self._copied = None  # (the step made its batch's copy itself, as ever)
        if self.cores != 2 and ahead is not None and not beside:
            self._gather_call(*ahead, Xn, yn)()
        if ahead is not None:
            self._pending = (None, ahead, Xn, yn)
        if math.isfinite(loss):
            self._installed_stats()
        return float(loss)

    def _batch_copies(self, Xb: NDArray) -> int | None:
        """Before a bf16 step that gathers beside it: which of the plan's two pairs of buffers
        the next batch's bf16 copies go to (None for a float32 step). This step's own are in
        the other pair if the batch is the one gathered with them (``self._copied``), else the
        step makes them there."""
        if not self.bf16 or not self.gathers_beside:
            return None
        if self._copies is None:  # made once per plan: two pairs of buffers, zeroed
            shape, size, cols = self.plan.batch_copy_shape()
            self._copies = [(np.zeros(shape, np.uint16 if size == 2 else np.uint32),
                             None if cols is None else np.zeros(cols, np.uint32)) for _ in range(2)]
            self.plan.use_batch_copies(self._copies)
            self._copy_turn = 0
        ready = self._copied is not None and self._copied is Xb
        if ready:  # the copies gathered with this batch are in the pair written last
            self._copy_turn ^= 1
        self.plan.take_batch_copy(self._copy_turn, ready)
        return self._copy_turn ^ 1

    def _next_rows(self, ahead) -> tuple[NDArray, dict]:
        """The rows (and moves) of the batch ``ahead`` as the kernels that gather it during a
        step take them; ``self._source`` becomes what they gather from."""
        if ahead is None:  # nothing to gather: no rows, of the last source's types (no new compilation)
            return self._no_rows, {}
        X, y, idx, moves = ahead
        self._source = (*self._source_of(X), np.asarray(y, np.intp))
        moved = {} if moves is None else dict(next_moves=moves, height=IMAGE_SHAPE[1], width=IMAGE_SHAPE[2])
        return idx, moved

    def _start_pool(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fastnet-helper")

    def _installed_stats(self) -> None:
        """After the first finite step: the running averages it set become the network's."""
        if self.first:
            self.first = False
            for layer, mu, v in zip(self.net.layers, self.mu_avs, self.v_avs):
                layer.mu_av, layer.v_av = mu, v

    def detach(self) -> None:
        """Give the network an ordinary C-contiguous first layer again (after training); stop
        the gather thread."""
        if self._pending is not None:
            if self._pending[0] is not None:
                self._pending[0].cancel() or self._pending[0].exception()
            self._pending = None
        self._release_limits()
        self.cores = 1
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.net.layers[0].W = np.ascontiguousarray(self.W1t.T)


def _same(a: NDArray | None, b: NDArray | None) -> bool:
    """Whether two index (or move) arrays, or None, are one, or hold the same values (of one
    dtype: their bytes, ~10x faster than np.array_equal on a batch's indices; it is asked
    each step)."""
    if a is b:
        return True
    if a is None or b is None or a.shape != b.shape:
        return False
    return a.tobytes() == b.tobytes() if a.dtype == b.dtype else bool(np.array_equal(a, b))
