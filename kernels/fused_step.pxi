# The fused training step, compiled ahead of time: a whole SGD step in one call (included by
# _ckernels.pyx, whose row kernels it runs). The same algorithm as fastnet/backends/numba_step.py
# -- read that module's docstring for the layout and the folded weight update -- with the
# network held in a table of layers (StepPlan) instead of tuples, so one compiled function
# serves every depth and width, and nothing is compiled when a run starts.
#
# Matrix products go to the CBLAS ?gemm of a provider (fastnet/backends/providers.py), called
# by address, as the Numba step does. The two-core form runs the step's three phases as
# OpenMP loops of two iterations: the first layer's forward product in halves by rows of the
# batch, then the small layers on one thread while the other gathers the next batch, then the
# first layer's update in halves by rows of W1t. BLAS must run on one thread (the caller sets it).
#
# With bf16 (StepPlan.use_bf16, --precision bf16) the first layer's two products run on the
# kernels of bf16_gemm.h instead of BLAS: the batch, W1t and the first layer's score gradient
# as bf16 pairs, the sums and the weights in float32. W1t's bf16 copy is rewritten by the
# update itself. Each entry of a product is summed by one tile in one order, so the bits do
# not depend on how the rows are shared between threads. Or (StepPlan.use_bf16_gemm) they run
# on a library's bf16 product, MKL's cblas_gemm_bf16bf16f32, called by address like ?gemm: the
# batch, W1t and the score gradient as plain bf16 matrices (bf16_round.h), W1t's copy again
# rewritten after each share of the update.

cimport openmp
from cython.parallel cimport prange

cdef extern from *:
    """
    static inline long long fastnet_fetch_add(long long *p, long long v) {
        return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
    }
    """
    long long fastnet_fetch_add(long long* p, long long v) noexcept nogil

cdef extern from *:
    """
    static inline void fastnet_wait_for(long long *p, long long v) {  /* until *p >= v */
        while (__atomic_load_n(p, __ATOMIC_ACQUIRE) < v) {
    #if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
    #endif
        }
    }
    """
    void fastnet_wait_for(long long* p, long long v) noexcept nogil

cdef extern from *:
    """
    static inline void fastnet_publish(long long *p, long long v) {  /* what was written before is seen with v */
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline long long fastnet_read(long long *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    """
    void fastnet_publish(long long* p, long long v) noexcept nogil
    long long fastnet_read(long long* p) noexcept nogil

cdef extern from "bf16_gemm.h":
    int fastnet_bf16_supported() noexcept nogil
    void pairs_of_rows(const float* A, Py_ssize_t lda, Py_ssize_t rows, Py_ssize_t cols, unsigned int* out,
                       Py_ssize_t ldo) noexcept nogil
    void pairs_of_columns(const float* A, Py_ssize_t lda, Py_ssize_t rows, Py_ssize_t cols, unsigned int* out,
                          Py_ssize_t ldo) noexcept nogil
    void gemm_pairs(const unsigned int* A, Py_ssize_t a_row, Py_ssize_t a_pair, const unsigned int* B,
                    Py_ssize_t ldb, float* C, Py_ssize_t ldc, unsigned int* Cv, Py_ssize_t ldcv, Py_ssize_t M,
                    Py_ssize_t N, Py_ssize_t P, float alpha, float beta) noexcept nogil


cdef extern from "amx_gemm.h":
    int fastnet_amx_ready() noexcept nogil
    int fastnet_amx_on() noexcept nogil
    void fastnet_amx_use(int on) noexcept nogil
    void pairs_of_columns_by_column(const float* A, Py_ssize_t lda, Py_ssize_t rows, Py_ssize_t c0, Py_ssize_t c1,
                                    unsigned int* out, Py_ssize_t ldo) noexcept nogil
    void gemm_pairs_amx(const unsigned int* A, Py_ssize_t lda, const unsigned int* B, Py_ssize_t ldb, float* C,
                        Py_ssize_t ldc, unsigned int* Cv, Py_ssize_t ldcv, Py_ssize_t M, Py_ssize_t N, Py_ssize_t P,
                        float alpha, float beta) noexcept nogil
    void gemm_pairs_amx_t(const unsigned int* A, Py_ssize_t lda, const unsigned int* B, Py_ssize_t ldb, float* C,
                          Py_ssize_t ldc, unsigned int* Cv, Py_ssize_t ldcv, Py_ssize_t M, Py_ssize_t c0, Py_ssize_t c1,
                          Py_ssize_t P, float alpha, float beta) noexcept nogil


cdef extern from "normalised_pairs.h":
    void normalised_pairs(const unsigned char* u0, const unsigned char* u1, const double* mean, const double* inv_std,
                          Py_ssize_t d, float* x0, float* x1, unsigned int* p0, unsigned int* p1,
                          unsigned int* cols) noexcept nogil

cdef extern from "normalise_row.h":
    void normalise_row_f(const unsigned char* u, const double* mean, const double* inv_std, float* out,
                         Py_ssize_t d) noexcept nogil
    void normalise_row_d(const unsigned char* u, const double* mean, const double* inv_std, double* out,
                         Py_ssize_t d) noexcept nogil


cdef inline void _normalise_row(const unsigned char* u, const double* mean, const double* inv_std, floating* out,
                                Py_ssize_t d) noexcept nogil:
    """out[j] = (u[j] - mean[j]) * inv_std[j] in double, rounded to out's type (normalise_row.h)."""
    if floating is float:
        normalise_row_f(u, mean, inv_std, out, d)
    else:
        normalise_row_d(u, mean, inv_std, out, d)


cdef extern from "bf16_round.h":
    void bf16_rows(const float* A, Py_ssize_t lda, Py_ssize_t rows, Py_ssize_t cols, unsigned short* out,
                   Py_ssize_t ldo) noexcept nogil


def round_bf16(const float[:, ::1] A, unsigned short[:, ::1] out):
    """out = A rounded to bf16 (nearest, ties to even; bf16_round.h), as the bits of each value."""
    if out.shape[0] != A.shape[0] or out.shape[1] != A.shape[1]:
        raise ValueError("out must have A's shape")
    if A.shape[0] and A.shape[1]:
        with nogil:
            bf16_rows(&A[0, 0], A.shape[1], A.shape[0], A.shape[1], &out[0, 0], out.shape[1])


def bf16_supported():
    """Whether this CPU runs the bf16 products (AVX-512 with AVX512_BF16, as the build allows)."""
    return bool(fastnet_bf16_supported())

# cblas_?gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), with
# 32- or 64-bit integers (the enums stay int in both).
ctypedef void (*sgemm32_t)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                           float, float*, int) noexcept nogil
ctypedef void (*sgemm64_t)(int, int, int, long long, long long, long long, float, const float*, long long,
                           const float*, long long, float, float*, long long) noexcept nogil
# cblas_gemm_bf16bf16f32 (MKL, LP64): ?gemm's arguments with A and B as bf16 (uint16) matrices.
ctypedef void (*bf16gemm_t)(int, int, int, int, int, int, float, const unsigned short*, int, const unsigned short*, int,
                            float, float*, int) noexcept nogil
ctypedef void (*dgemm32_t)(int, int, int, int, int, int, double, const double*, int, const double*, int,
                           double, double*, int) noexcept nogil
ctypedef void (*dgemm64_t)(int, int, int, long long, long long, long long, double, const double*, long long,
                           const double*, long long, double, double*, long long) noexcept nogil

cdef enum:
    ROW_MAJOR = 101
    NO_TRANS = 111
    TRANS = 112
    GATHER_BLOCK = 4  # rows a thread claims at a time (even: _gather_share's pairs of rows)
    UPDATE_BLOCK = 64  # rows of W1t a thread claims at a time in a shared update (even; 16s on tiles)
    UPDATE_PENDING = 0  # plan.update_state: G1 not packed yet,
    UPDATE_GO = 1       # packed: claim blocks of the update,
    UPDATE_SKIP = 2     # or no update (a loss that is not finite); above GO, so fastnet_wait_for(GO) ends on either


cdef struct Layer:
    # layer l of k (0-based); m its width, m_in its input's. Addresses of C-contiguous arrays
    # of the plan's dtype; hidden-layer fields are NULL on the output layer.
    Py_ssize_t m, m_in
    char* W       # layer 0: W1t (d, m); else W (m, m_in)
    char* b       # (m,): zeros the step ignores on batch-norm hidden layers
    char* S       # (n, m) scores
    char* G       # (n, m) gradient of the scores
    char* X       # (n, m) output of a hidden layer
    char* dX      # (n, m) gradient of that output
    char* S_hat   # (n, m), batch norm only (as the six below)
    char* gamma
    char* beta
    char* mu_av
    char* v_av
    char* mu
    char* v
    char* dgamma
    char* dbeta


cdef char* _addr(object a) except NULL:
    return <char*> <size_t> a.ctypes.data


cdef _check_copy(buf, shape, int size):
    if buf is None or buf.dtype.kind != "u" or buf.dtype.itemsize != size or buf.shape != shape or not buf.flags.c_contiguous:
        raise ValueError(f"a batch's bf16 copy is C-contiguous uint{8 * size} of shape {shape}")


cdef inline Py_ssize_t _padded(Py_ssize_t pairs, bint amx) noexcept nogil:
    """Pairs of a sum as the plan stores them: AMX tiles sum 16 at a time (zero pairs after)."""
    return (pairs + 15) // 16 * 16 if amx else pairs


def bf16_amx(on=None):
    """Whether plans made from now on run fastnet's bf16 products on AMX tiles (the CPU has
    AMX-BF16 and the OS gave this process its tiles); ``on=False`` keeps them on AVX512_BF16
    (VDPBF16PS) even there, ``True`` allows the tiles again."""
    if on is not None:
        fastnet_amx_use(1 if on else 0)
    return bool(fastnet_amx_on())


def bf16_pairs_shapes(Py_ssize_t n, Py_ssize_t d, Py_ssize_t m1):
    """The shapes of StepPlan.use_bf16's buffers (W1p, Xr, Xc, Gc) for a batch of n rows of d
    inputs and m1 first-layer units, on the products :func:`bf16_amx` says plans take now."""
    cdef bint amx = fastnet_amx_on()
    cdef Py_ssize_t dpk = _padded((d + 1) // 2, amx), npk = _padded((n + 1) // 2, amx)
    return (dpk, m1), (n, dpk), (npk, d), ((m1, npk) if amx else (npk, m1))


cdef class StepPlan:
    """The arrays of one fused step (the FusedStep's buffers and the network's parameters), as
    a table of addresses, with the gemm provider's addresses. Keeps the arrays alive."""
    cdef Layer* layers
    cdef int k
    cdef Py_ssize_t n, d, K, width
    cdef bint bn, wide
    cdef char* W1t
    cdef char* P
    cdef char* loss
    cdef double* scratch          # 3 * width doubles per thread, 2 threads
    cdef double result
    cdef long long counter        # rows of the next batch claimed
    cdef long long update_state, update_counter  # a shared update (_shared_update): UPDATE_*, rows of W1t claimed
    cdef size_t gemm_fn
    cdef bint ilp64
    cdef list arrays
    # bf16 (use_bf16): the first layer's operands as pairs of bf16 (bf16_gemm.h); dp2, np2:
    # d and n halved, rounded up
    # On AMX tiles (amx_gemm.h) the sums are padded with zero pairs to multiples of 16: dpk,
    # npk (else dp2, np2), and Gc holds the same pairs stored by column, (m1, npk)
    cdef bint bf16, amx
    cdef unsigned int* W1p        # (dpk, m1): W1t, pairs down its columns
    cdef unsigned int* Xr         # (n, dpk): the batch, pairs along its rows
    cdef unsigned int* Xc         # (npk, d): the batch, pairs down its columns
    cdef unsigned int* Gc         # (npk, m1): the first layer's score gradient, pairs down its columns (AMX: (m1, npk))
    cdef Py_ssize_t dp2, np2, dpk, npk
    # or a library's bf16 product (use_bf16_gemm: bf16_fn its address, 0 for the pairs above),
    # on plain bf16 copies
    cdef size_t bf16_fn
    cdef unsigned short* X16      # (n, d): the batch
    cdef unsigned short* W16      # (d, m1): W1t
    cdef unsigned short* G16      # (n, m1): the first layer's score gradient
    # two pairs of buffers for a batch's bf16 copies (use_batch_copies: X16's, or Xr's and Xc's,
    # that a one-core step's second thread fills for the next step); batch_ready: this step's
    # batch's copies are already in the pair taken (take_batch_copy)
    cdef list batch_copies
    cdef unsigned short* copy16[2]
    cdef unsigned int* copy_rows[2]
    cdef unsigned int* copy_cols[2]
    cdef bint batch_ready
    # the small layers' products in small_parts shares of C's rows on small_threads threads
    # (fused_sgd_step_parallel's split_small; 1 everywhere else)
    cdef int small_parts, small_threads

    def __cinit__(self):
        self.layers = NULL
        self.scratch = NULL
        self.bf16_fn = 0
        self.small_parts = 1
        self.small_threads = 1

    def __dealloc__(self):
        free(self.layers)
        free(self.scratch)

    def __init__(self, blas, W1t, Ws, bs, gammas, betas, mu_avs, v_avs, Ss, Xs, S_hats, mus, vs, Gs, dXs,
                 dgammas, dbetas, P, loss, bint bn):
        """The arguments of numba_step.sgd_step after (Xb, yb), up to ``bn``, as FusedStep makes them;
        ``blas`` a provider's table (int64 [sgemm, dgemm, ilp64])."""
        cdef int l
        self.k = len(Ss)
        self.n, self.d, self.K = Ss[0].shape[0], W1t.shape[0], Ss[self.k - 1].shape[1]
        self.bn = bn
        self.wide = W1t.dtype.itemsize == 8
        self.gemm_fn = <size_t> int(blas[1] if self.wide else blas[0])
        self.ilp64 = bool(blas[2])
        self.arrays = [W1t, Ws, bs, gammas, betas, mu_avs, v_avs, Ss, Xs, S_hats, mus, vs, Gs, dXs, dgammas, dbetas, P, loss]
        for a in [W1t, P, loss, *Ws, *bs, *Ss, *Gs, *Xs, *dXs, *(S_hats + mus + vs + dgammas + dbetas + gammas + betas if bn else ())]:
            if a.dtype != W1t.dtype or not a.flags.c_contiguous:
                raise ValueError("a fused step's arrays are C-contiguous, all of one float dtype")
        self.layers = <Layer*> calloc(self.k, sizeof(Layer))
        if self.layers == NULL:
            raise MemoryError()
        self.W1t, self.P, self.loss = _addr(W1t), _addr(P), _addr(loss)
        self.width = 1
        for l in range(self.k):
            L = &self.layers[l]
            L.m = Ss[l].shape[1]
            L.m_in = self.d if l == 0 else Ss[l - 1].shape[1]
            if Ss[l].shape[0] != self.n or Gs[l].shape != Ss[l].shape or bs[l].shape[0] != L.m:
                raise ValueError(f"layer {l + 1} of the fused step has buffers of the wrong shape")
            L.W = self.W1t if l == 0 else _addr(Ws[l - 1])
            if l > 0 and Ws[l - 1].shape != (L.m, L.m_in):
                raise ValueError(f"layer {l + 1}'s weights are {Ws[l - 1].shape}, not {(L.m, L.m_in)}")
            L.b, L.S, L.G = _addr(bs[l]), _addr(Ss[l]), _addr(Gs[l])
            self.width = max(self.width, L.m)
            if l == self.k - 1:
                continue
            if Xs[l].shape != Ss[l].shape or dXs[l].shape != Ss[l].shape:
                raise ValueError(f"hidden layer {l + 1} of the fused step has buffers of the wrong shape")
            L.X, L.dX = _addr(Xs[l]), _addr(dXs[l])
            if bn:
                for a in (gammas[l], betas[l], mu_avs[l], v_avs[l], mus[l], vs[l], dgammas[l], dbetas[l]):
                    if a.shape != (L.m,):
                        raise ValueError(f"hidden layer {l + 1}'s batch-norm arrays must have {L.m} entries")
                L.S_hat, L.gamma, L.beta = _addr(S_hats[l]), _addr(gammas[l]), _addr(betas[l])
                L.mu_av, L.v_av, L.mu, L.v = _addr(mu_avs[l]), _addr(v_avs[l]), _addr(mus[l]), _addr(vs[l])
                L.dgamma, L.dbeta = _addr(dgammas[l]), _addr(dbetas[l])
        if P.shape != (self.n, self.K) or loss.shape != (self.n,) or W1t.shape[1] != self.layers[0].m:
            raise ValueError("the fused step's output buffers or first layer have the wrong shape")
        self.scratch = <double*> malloc(2 * 3 * max(self.width, self.K) * sizeof(double))
        if self.scratch == NULL:
            raise MemoryError()

    def use_bf16(self, W1p, Xr, Xc, Gc):
        """Run the first layer's two products in bf16 from now on, on these zeroed uint32
        buffers of :func:`bf16_pairs_shapes` (the fields' comments); W1p is filled from W1t
        here, and kept current by every update. On AMX tiles where :func:`bf16_amx` says so.
        Float32 plans only, on a CPU that runs them (:func:`bf16_supported`)."""
        cdef Py_ssize_t m1 = self.layers[0].m
        if self.wide:
            raise ValueError("bf16 products train float32 networks")
        if not fastnet_bf16_supported():
            raise RuntimeError("this CPU has no AVX512_BF16 (or the extension was built without it)")
        self.amx = fastnet_amx_on()
        self.dp2, self.np2 = (self.d + 1) // 2, (self.n + 1) // 2
        self.dpk, self.npk = _padded(self.dp2, self.amx), _padded(self.np2, self.amx)
        for a, shape in zip((W1p, Xr, Xc, Gc), bf16_pairs_shapes(self.n, self.d, m1)):
            if a.dtype.char not in "IL" or a.dtype.itemsize != 4 or a.shape != shape or not a.flags.c_contiguous:
                raise ValueError(f"a bf16 buffer must be C-contiguous uint32 of shape {shape}, got {a.dtype} {a.shape}")
        self.arrays += [W1p, Xr, Xc, Gc]
        self.W1p, self.Xr, self.Xc, self.Gc = <unsigned int*> _addr(W1p), <unsigned int*> _addr(Xr), \
            <unsigned int*> _addr(Xc), <unsigned int*> _addr(Gc)
        with nogil:
            pairs_of_columns(<float*> self.W1t, m1, self.d, m1, self.W1p, m1)
        self.bf16_fn = 0
        self.bf16 = True


    def batch_copy_shape(self):
        """(shape, bytes per element) of the forward product's bf16 copy of a batch -- X16's
        (uint16, library products) or Xr's (uint32 pairs, fastnet's) -- and the shape of the
        update's (Xc's, uint32 pairs; None for library products, which read X16 again)."""
        if not self.bf16:
            raise ValueError("the plan takes no bf16 products")
        if self.bf16_fn:
            return (self.n, self.d), 2, None
        return (self.n, self.dpk), 4, (self.npk, self.d)

    def use_batch_copies(self, copies):
        """Two pairs (buf, cols) of buffers of :meth:`batch_copy_shape` (cols None for library
        products), zeroed once (their padding, on AMX tiles, stays zero pairs), for the batch's
        bf16 copies from now on: :meth:`take_batch_copy` says which pair a step takes."""
        shape, size, cols_shape = self.batch_copy_shape()
        if len(copies) != 2:
            raise ValueError("a plan's batch copies are two pairs of buffers")
        for i, (buf, cols) in enumerate(copies):
            _check_copy(buf, shape, size)
            if cols_shape is not None:
                _check_copy(cols, cols_shape, 4)
            if self.bf16_fn:
                self.copy16[i] = <unsigned short*> _addr(buf)
            else:
                self.copy_rows[i], self.copy_cols[i] = <unsigned int*> _addr(buf), <unsigned int*> _addr(cols)
        self.batch_copies = list(copies)  # (kept alive with the plan)

    def take_batch_copy(self, int i, bint ready):
        """The next step's bf16 copies of its batch go to (``ready``: are already in) pair i of
        :meth:`use_batch_copies`."""
        if self.batch_copies is None or i not in (0, 1):
            raise ValueError("take_batch_copy needs use_batch_copies' pairs, 0 or 1")
        if self.bf16_fn:
            self.X16 = self.copy16[i]
        else:
            self.Xr, self.Xc = self.copy_rows[i], self.copy_cols[i]
        self.batch_ready = ready

    def use_bf16_gemm(self, size_t fn, X16, W16, G16):
        """Run the first layer's two products in bf16 from now on through the library product at
        ``fn`` (cblas_gemm_bf16bf16f32's signature, 32-bit integers), on these uint16 buffers
        (shapes in the fields' comments); W16 is filled from W1t here and kept current by every
        update. Float32 plans only; runs on any CPU the library runs on."""
        cdef Py_ssize_t m1 = self.layers[0].m
        if self.wide:
            raise ValueError("bf16 products train float32 networks")
        if fn == 0:
            raise ValueError("no bf16 product at address 0")
        for a, shape in ((X16, (self.n, self.d)), (W16, (self.d, m1)), (G16, (self.n, m1))):
            if a.dtype.char != "H" or a.shape != shape or not a.flags.c_contiguous:
                raise ValueError(f"a bf16 buffer must be C-contiguous uint16 of shape {shape}, got {a.dtype} {a.shape}")
        self.dp2, self.np2 = (self.d + 1) // 2, (self.n + 1) // 2  # the update's shares, as the pairs' (even rows)
        self.arrays += [X16, W16, G16]
        self.X16, self.W16, self.G16 = <unsigned short*> _addr(X16), <unsigned short*> _addr(W16), \
            <unsigned short*> _addr(G16)
        with nogil:
            bf16_rows(<float*> self.W1t, m1, self.d, m1, self.W16, m1)
        self.bf16_fn = fn
        self.bf16 = True


cdef void _bf16_forward(StepPlan plan, const float* Xb, int p, int parts) noexcept nogil:
    """Share p of (12) in bf16: rows r0..r1 of the batch to pairs, then S1's rows r0..r1 = X W1t."""
    cdef Py_ssize_t d = plan.d, m1 = plan.layers[0].m, r0 = plan.n * p // parts, r1 = plan.n * (p + 1) // parts
    if plan.bf16_fn:
        if not plan.batch_ready:
            bf16_rows(Xb + r0 * d, d, r1 - r0, d, plan.X16 + r0 * d, d)
        (<bf16gemm_t> <void*> plan.bf16_fn)(ROW_MAJOR, NO_TRANS, NO_TRANS, <int> (r1 - r0), <int> m1, <int> d, 1,
                                            plan.X16 + r0 * d, <int> d, plan.W16, <int> m1, 0,
                                            <float*> plan.layers[0].S + r0 * m1, <int> m1)
        return
    if not plan.batch_ready:
        pairs_of_rows(Xb + r0 * d, d, r1 - r0, d, plan.Xr + r0 * plan.dpk, plan.dpk)
    if plan.amx:
        gemm_pairs_amx(plan.Xr + r0 * plan.dpk, plan.dpk, plan.W1p, m1, <float*> plan.layers[0].S + r0 * m1, m1, NULL, 0,
                       r1 - r0, m1, plan.dpk, 1, 0)
        return
    gemm_pairs(plan.Xr + r0 * plan.dpk, plan.dpk, 1, plan.W1p, m1, <float*> plan.layers[0].S + r0 * m1, m1, NULL, 0,
               r1 - r0, m1, plan.dpk, 1, 0)  # (dpk = dp2 off the tiles)


cdef void _bf16_pack_for_update(StepPlan plan, const float* Xb, int p, int parts) noexcept nogil:
    """Share p of the batch as pairs down its columns (the update's A, summed over the batch):
    the columns the update's share p then reads. (A library product reads the batch's bf16
    copy that the forward product made, and a batch gathered beside a one-core step has its
    copy made with it: nothing to do.)"""
    cdef Py_ssize_t c0, c1
    if plan.bf16_fn or plan.batch_ready:
        return
    c0, c1 = _update_rows(plan, p, parts)
    pairs_of_columns(Xb + c0, plan.d, plan.n, c1 - c0, plan.Xc + c0, plan.d)


cdef void _bf16_pack_gradient(StepPlan plan) noexcept nogil:
    """The first layer's score gradient G1 as the update's bf16 operand."""
    cdef Py_ssize_t n = plan.n, m1 = plan.layers[0].m
    if plan.bf16_fn:
        bf16_rows(<float*> plan.layers[0].G, m1, n, m1, plan.G16, m1)
    elif plan.amx:  # the tiles' A: stored by column
        pairs_of_columns_by_column(<float*> plan.layers[0].G, m1, n, 0, m1, plan.Gc, plan.npk)
    else:
        pairs_of_columns(<float*> plan.layers[0].G, m1, n, m1, plan.Gc, m1)


cdef void _bf16_update(StepPlan plan, int p, int parts, float keep, float step) noexcept nogil:
    """Share p of the first layer's update in bf16 (:func:`_bf16_update_rows`)."""
    cdef Py_ssize_t c0, c1
    c0, c1 = _update_rows(plan, p, parts)
    _bf16_update_rows(plan, c0, c1, keep, step)


cdef void _shared_update(StepPlan plan, float keep, float step) noexcept nogil:
    """The first layer's bf16 update on fastnet's products, UPDATE_BLOCK rows of W1t at a time
    claimed from plan.update_counter, once the thread that packs G1 says UPDATE_GO (or nothing,
    on UPDATE_SKIP): every thread that calls it takes a share. Each entry is summed by one
    tile, so the bits are the one-share update's however the rows fall."""
    cdef Py_ssize_t c0
    fastnet_wait_for(&plan.update_state, UPDATE_GO)
    if fastnet_read(&plan.update_state) != UPDATE_GO:
        return
    while True:
        c0 = fastnet_fetch_add(&plan.update_counter, UPDATE_BLOCK)
        if c0 >= plan.d:
            return
        _bf16_update_rows(plan, c0, min(c0 + UPDATE_BLOCK, plan.d), keep, step)


cdef void _bf16_update_rows(StepPlan plan, Py_ssize_t c0, Py_ssize_t c1, float keep, float step) noexcept nogil:
    """Rows c0..c1 of the first layer's update in bf16: W1t = keep W1t - step X^T G1 (c0 even,
    so that W1p's word rows c0/2.. are rewritten whole), with G1 packed by the caller."""
    cdef Py_ssize_t d = plan.d, m1 = plan.layers[0].m
    if plan.bf16_fn:  # op(A) = X16[:, c0:c1]^T, then those rows of W1t again as bf16
        (<bf16gemm_t> <void*> plan.bf16_fn)(ROW_MAJOR, TRANS, NO_TRANS, <int> (c1 - c0), <int> m1, <int> plan.n, -step,
                                            plan.X16 + c0, <int> d, plan.G16, <int> m1, keep,
                                            <float*> plan.W1t + c0 * m1, <int> m1)
        bf16_rows(<float*> plan.W1t + c0 * m1, m1, c1 - c0, m1, plan.W16 + c0 * m1, m1)
        return
    if plan.amx:  # as its transpose, G1^T X (amx_gemm.h)
        gemm_pairs_amx_t(plan.Gc, plan.npk, plan.Xc, d, <float*> plan.W1t, m1, plan.W1p, m1, m1, c0, c1, plan.npk,
                         -step, keep)
        return
    gemm_pairs(plan.Xc + c0, 1, d, plan.Gc, m1, <float*> plan.W1t + c0 * m1, m1, plan.W1p + (c0 // 2) * m1, m1,
               c1 - c0, m1, plan.np2, -step, keep)


cdef inline (Py_ssize_t, Py_ssize_t) _update_rows(StepPlan plan, int p, int parts) noexcept nogil:
    """Share p of W1t's rows in the update: c0..c1, c0 even (W1p's word rows c0/2.. whole)."""
    return min(plan.d, 2 * (plan.dp2 * p // parts)), min(plan.d, 2 * (plan.dp2 * (p + 1) // parts))


def bf16_pairs_products(const float[:, ::1] X, float[:, ::1] W1t, const float[:, ::1] G, float[:, ::1] S,
                        unsigned int[:, ::1] W1p, unsigned int[:, ::1] Xr, unsigned int[:, ::1] Xc,
                        unsigned int[:, ::1] Gc, bint copy_batch=True):
    """The first layer's two bf16 products of a step on fastnet's kernels, once, as the fused
    step makes them, packing included: S = X W1t, then W1t -= 1e-6 X^T G with W1p rewritten.
    ``copy_batch`` False leaves out the batch's two bf16 copies (Xr, Xc: made beside a
    one-core step, fused_sgd_step_beside). Buffers as StepPlan.use_bf16's; for auto's
    measurement (fastnet/backends/gemm_choice.py). The caller checks the CPU (bf16_supported)
    and the shapes."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m1 = W1t.shape[1], dp2 = (d + 1) // 2, np2 = (n + 1) // 2
    cdef Py_ssize_t dpk = Xr.shape[1], npk = Xc.shape[0]
    if (Gc.shape[0], Gc.shape[1]) != bf16_pairs_shapes(n, d, m1)[3]:
        raise ValueError("the buffers are not bf16_pairs_shapes' for the products plans take now")
    if fastnet_amx_on():  # the tiles' layouts (bf16_pairs_shapes)
        with nogil:
            if copy_batch:
                pairs_of_rows(&X[0, 0], d, n, d, &Xr[0, 0], dpk)
            gemm_pairs_amx(&Xr[0, 0], dpk, &W1p[0, 0], m1, &S[0, 0], m1, NULL, 0, n, m1, dpk, 1, 0)
            if copy_batch:
                pairs_of_columns(&X[0, 0], d, n, d, &Xc[0, 0], d)
            pairs_of_columns_by_column(&G[0, 0], m1, n, 0, m1, &Gc[0, 0], npk)
            gemm_pairs_amx_t(&Gc[0, 0], npk, &Xc[0, 0], d, &W1t[0, 0], m1, &W1p[0, 0], m1, m1, 0, d, npk, -1e-6, 1)
        return
    with nogil:
        if copy_batch:
            pairs_of_rows(&X[0, 0], d, n, d, &Xr[0, 0], dp2)
        gemm_pairs(&Xr[0, 0], dp2, 1, &W1p[0, 0], m1, &S[0, 0], m1, NULL, 0, n, m1, dp2, 1, 0)
        if copy_batch:
            pairs_of_columns(&X[0, 0], d, n, d, &Xc[0, 0], d)
        pairs_of_columns(&G[0, 0], m1, n, m1, &Gc[0, 0], m1)
        gemm_pairs(&Xc[0, 0], 1, d, &Gc[0, 0], m1, &W1t[0, 0], m1, &W1p[0, 0], m1, d, m1, np2, -1e-6, 1)


def bf16_library_products(size_t fn, const float[:, ::1] X, float[:, ::1] W1t, const float[:, ::1] G,
                          float[:, ::1] S, unsigned short[:, ::1] X16, unsigned short[:, ::1] W16,
                          unsigned short[:, ::1] G16, bint copy_batch=True):
    """The same two products on the library bf16 product at ``fn`` (StepPlan.use_bf16_gemm's),
    rounding included: S = X W1t, then W1t -= 1e-6 X^T G and W16 rounded from it again;
    ``copy_batch`` False leaves out the batch's rounding (X16), made beside a one-core step."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], m1 = W1t.shape[1]
    if fn == 0:
        raise ValueError("no bf16 product at address 0")
    with nogil:
        if copy_batch:
            bf16_rows(&X[0, 0], d, n, d, &X16[0, 0], d)
        (<bf16gemm_t> <void*> fn)(ROW_MAJOR, NO_TRANS, NO_TRANS, <int> n, <int> m1, <int> d, 1, &X16[0, 0], <int> d,
                                  &W16[0, 0], <int> m1, 0, &S[0, 0], <int> m1)
        bf16_rows(&G[0, 0], m1, n, m1, &G16[0, 0], m1)
        (<bf16gemm_t> <void*> fn)(ROW_MAJOR, TRANS, NO_TRANS, <int> d, <int> m1, <int> n, -1e-6, &X16[0, 0], <int> d,
                                  &G16[0, 0], <int> m1, 1, &W1t[0, 0], <int> m1)
        bf16_rows(&W1t[0, 0], m1, d, m1, &W16[0, 0], m1)


cdef inline void _gemm(StepPlan plan, const floating* A, Py_ssize_t lda, bint ta, const floating* B, Py_ssize_t ldb,
                       bint tb, floating* C, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       floating alpha, floating beta) noexcept nogil:
    """C (m, n) = alpha op(A) op(B) + beta C, row-major, k the inner dimension."""
    cdef int ta_ = TRANS if ta else NO_TRANS
    cdef int tb_ = TRANS if tb else NO_TRANS
    if floating is float:
        if plan.ilp64:
            (<sgemm64_t> <void*> plan.gemm_fn)(ROW_MAJOR, ta_, tb_, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
        else:
            (<sgemm32_t> <void*> plan.gemm_fn)(ROW_MAJOR, ta_, tb_, <int> m, <int> n, <int> k, alpha, A, <int> lda, B, <int> ldb,
                                       beta, C, <int> ldc)
    else:
        if plan.ilp64:
            (<dgemm64_t> <void*> plan.gemm_fn)(ROW_MAJOR, ta_, tb_, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
        else:
            (<dgemm32_t> <void*> plan.gemm_fn)(ROW_MAJOR, ta_, tb_, <int> m, <int> n, <int> k, alpha, A, <int> lda, B, <int> ldb,
                                       beta, C, <int> ldc)


cdef void _gemm_split(StepPlan plan, const floating* A, Py_ssize_t lda, bint ta, const floating* B, Py_ssize_t ldb,
                      bint tb, floating* C, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      floating alpha, floating beta) noexcept nogil:
    """_gemm with C's m rows in plan.small_parts shares, each its own BLAS call, on
    plan.small_threads threads: every entry is the same dot product however many threads run
    the shares, so the bits do not depend on them."""
    cdef int p, parts = plan.small_parts
    cdef Py_ssize_t r0, r1
    if parts == 1:
        _gemm(plan, A, lda, ta, B, ldb, tb, C, ldc, m, n, k, alpha, beta)
        return
    for p in prange(parts, num_threads=plan.small_threads, schedule="static", chunksize=1):
        r0, r1 = m * p // parts, m * (p + 1) // parts
        _gemm(plan, A + (r0 if ta else r0 * lda), lda, ta, B, ldb, tb, C + r0 * ldc, ldc, r1 - r0, n, k, alpha, beta)


cdef inline void _ema(floating* av, const floating* x, Py_ssize_t m, double alpha, bint first) noexcept nogil:
    """Running average of eqs (38)-(39), av = alpha av + (1 - alpha) x; the first batch sets it."""
    cdef Py_ssize_t j
    for j in range(m):
        av[j] = x[j] if first else <floating> (alpha * av[j] + (1 - alpha) * x[j])


cdef inline void _bias_step(floating* b, const floating* G, Py_ssize_t n, Py_ssize_t m, floating eta) noexcept nogil:
    """b -= eta * db with db = (1/n) G^T 1, eqs (22)/(28); the column sums in double."""
    cdef Py_ssize_t i, j
    cdef double s
    for j in range(m):
        s = 0
        for i in range(n):
            s += G[i * m + j]
        b[j] = <floating> (b[j] - eta * (s / n))


cdef double _step_core(StepPlan plan, const Py_ssize_t* y, bint first, floating eta, floating keep, floating step,
                       double eps, double alpha, double* scratch) noexcept nogil:
    """From the first layer's scores to the gradient of those scores, updating every other
    parameter (as numba_step.step_core); returns the mean cross-entropy, nothing updated if
    it is not finite."""
    cdef Py_ssize_t i, j, n = plan.n
    cdef int l, k = plan.k
    cdef Layer* L
    cdef Layer* below
    cdef floating* out
    cdef floating* b
    cdef floating* g
    cdef floating* bt
    cdef double total = 0, mean_loss
    for l in range(k - 1):  # forward: (12)-(17) with batch norm, (1)-(2) without
        L = &plan.layers[l]
        if plan.bn:
            _bn_forward_train_rows(<floating*> L.S, <floating*> L.gamma, <floating*> L.beta, eps, <floating*> L.X,
                                   <floating*> L.S_hat, <floating*> L.mu, <floating*> L.v, n, L.m, True, scratch)
        else:
            _bias_relu_rows(<floating*> L.S, <floating*> L.b, <floating*> L.X, n, L.m)
        _gemm_split(plan, <floating*> L.X, L.m, False, <floating*> plan.layers[l + 1].W, L.m, True,
                    <floating*> plan.layers[l + 1].S, plan.layers[l + 1].m, n, plan.layers[l + 1].m, L.m, 1, 0)  # X W^T
    L = &plan.layers[k - 1]
    out, b = <floating*> L.S, <floating*> L.b
    for i in range(n):  # (18): the output layer's bias
        for j in range(L.m):
            out[i * L.m + j] += b[j]
    _softmax_xent_rows(out, y, <floating*> plan.P, <floating*> plan.loss, n, L.m, scratch)  # (19)
    for i in range(n):
        total += (<floating*> plan.loss)[i]
    mean_loss = total / n
    if not (mean_loss - mean_loss == 0):  # NaN or infinite
        return mean_loss
    if plan.bn:  # (38)-(39)
        for l in range(k - 1):
            L = &plan.layers[l]
            _ema(<floating*> L.mu_av, <floating*> L.mu, L.m, alpha, first)
            _ema(<floating*> L.v_av, <floating*> L.v, L.m, alpha, first)
    _softmax_xent_backward_rows(<floating*> plan.P, y, <floating*> plan.layers[k - 1].G, n, plan.K)  # (21)
    for l in range(k - 1, 0, -1):  # backward and update, top down: (21)-(37)
        L, below = &plan.layers[l], &plan.layers[l - 1]
        # (23)/(29), before W changes: dX = G W
        _gemm_split(plan, <floating*> L.G, L.m, False, <floating*> L.W, L.m_in, False, <floating*> below.dX, below.m,
                    n, below.m, L.m, 1, 0)
        # W = keep W - step G^T X: (22)/(28) and the update in one product
        _gemm_split(plan, <floating*> L.G, L.m, True, <floating*> below.X, below.m, False, <floating*> L.W, L.m_in,
                    L.m, L.m_in, n, -step, keep)
        if l == k - 1 or not plan.bn:
            _bias_step(<floating*> L.b, <floating*> L.G, n, L.m, eta)
        if plan.bn:  # (24)-(27), (30)-(37) fused with the ReLU mask
            _bn_backward_rows(<floating*> below.dX, <floating*> below.X, <floating*> below.S_hat,
                              <floating*> below.gamma, <floating*> below.v, eps, <floating*> below.G,
                              <floating*> below.dgamma, <floating*> below.dbeta, n, below.m, True, scratch)
            g, bt = <floating*> below.gamma, <floating*> below.beta
            for j in range(below.m):
                g[j] -= eta * (<floating*> below.dgamma)[j]
                bt[j] -= eta * (<floating*> below.dbeta)[j]
        else:
            _relu_backward_rows(<floating*> below.dX, <floating*> below.X, <floating*> below.G, n, below.m)  # (24)/(30)
    if not plan.bn:
        _bias_step(<floating*> plan.layers[0].b, <floating*> plan.layers[0].G, n, plan.layers[0].m, eta)
    return mean_loss


def fused_sgd_step(StepPlan plan, const floating[:, ::1] Xb, const Py_ssize_t[::1] yb, bint first,
                   floating eta, floating keep, floating step, double eps, double alpha, int small_parts=1):
    """One SGD step on (Xb, yb) on one core, in place: numba_step.sgd_step's contract (the
    arrays are the plan's; ``eta``, ``keep`` = 1 - 2 eta lambda, ``step`` = eta / n in their
    dtype). Returns the mean cross-entropy; a non-finite one updates nothing.

    ``small_parts``: each product of the layers above the first in that many BLAS calls, one
    after the other, as :func:`fused_sgd_step_parallel` cuts them with ``split_small``. A BLAS
    need not round an entry alike in calls of other row counts (OpenBLAS's AVX2 kernels, which
    it runs on AMD Zen 5, do not), so the same calls are what give the two forms the same bits."""
    cdef Py_ssize_t n = plan.n, d = plan.d, m1 = plan.layers[0].m
    cdef double loss
    if Xb.shape[0] != n or Xb.shape[1] != d or yb.shape[0] != n or (sizeof(floating) == 8) != plan.wide:
        raise ValueError(f"the batch must be ({n}, {d}) of the plan's dtype with {n} labels")
    if small_parts not in (1, 2):
        raise ValueError("the small layers' products are cut in 1 or 2 parts")
    plan.small_parts, plan.small_threads = small_parts, 1
    with nogil:
        loss = _one_core_step(plan, &Xb[0, 0], &yb[0], first, eta, keep, step, eps, alpha)
        plan.small_parts = 1
        plan.batch_ready = False
    return loss


cdef double _one_core_step(StepPlan plan, const floating* Xb, const Py_ssize_t* yb, bint first, floating eta,
                           floating keep, floating step, double eps, double alpha, bint share_update=False) noexcept nogil:
    """The whole step on the calling thread (:func:`fused_sgd_step`); with ``share_update`` (bf16
    on fastnet's products) all but the first layer's update, which it leaves to
    :func:`_shared_update` with G1 packed."""
    cdef Py_ssize_t n = plan.n, d = plan.d, m1 = plan.layers[0].m
    cdef double loss
    if floating is float and plan.bf16:
        _bf16_forward(plan, Xb, 0, 1)
        _bf16_pack_for_update(plan, Xb, 0, 1)
    else:
        _gemm(plan, Xb, d, False, <floating*> plan.W1t, m1, False, <floating*> plan.layers[0].S, m1,
              n, m1, d, 1, 0)  # (12): X W1^T, W1^T stored
    loss = _step_core(plan, yb, first, eta, keep, step, eps, alpha, plan.scratch)
    if loss - loss == 0:  # the first layer: no input gradient
        if floating is float and plan.bf16:
            _bf16_pack_gradient(plan)
            if not share_update:
                _bf16_update(plan, 0, 1, keep, step)
        else:
            _gemm(plan, Xb, d, True, <floating*> plan.layers[0].G, m1, False, <floating*> plan.W1t, m1,
                  d, m1, n, -step, keep)
    if share_update:
        fastnet_publish(&plan.update_state, UPDATE_GO if loss - loss == 0 else UPDATE_SKIP)
    return loss


def fused_sgd_step_beside(StepPlan plan, const floating[:, ::1] Xb, const Py_ssize_t[::1] yb, bint first,
                          floating eta, floating keep, floating step, double eps, double alpha, int small_parts,
                          source, const double[::1] mean, const double[::1] inv_std, bint normalise,
                          const Py_ssize_t[::1] y, const Py_ssize_t[::1] next_idx,
                          floating[:, ::1] Xn, Py_ssize_t[::1] yn,
                          const long long[:, ::1] next_moves=None, Py_ssize_t height=0, Py_ssize_t width=0,
                          int next_copy=-1):
    """:func:`fused_sgd_step` on this thread -- the same calls, so the same bits -- while a
    second OpenMP thread gathers rows ``next_idx`` of ``source`` into (Xn, yn), as
    :func:`fused_sgd_step_parallel` gathers them (this thread takes a share if it finishes
    first). One parallel region: its second thread spins between steps and starts at once,
    where a Python thread woken for each batch took ~0.1 ms to start on the AMX Xeon and
    slowed the step it ran beside (README, issue 15). With bf16 on fastnet's products the
    first layer's update is shared too: both threads claim its blocks of rows once G1 is
    packed (:func:`_shared_update`; the same bits as one share).

    ``next_copy`` (a bf16 plan): the pair of StepPlan.use_batch_copies' buffers the next
    batch's bf16 copies go to -- the forward product's, made row by row as it is gathered,
    and (fastnet's pairs) the update's, a pair of rows at a time -- for the next step to take
    (StepPlan.take_batch_copy): mostly off this thread, the same values."""
    cdef Py_ssize_t n = plan.n, d = plan.d, n_next = next_idx.shape[0]
    cdef int p
    cdef NextBatch nb
    cdef unsigned short* copy16 = NULL
    cdef unsigned int* pairs = NULL
    cdef unsigned int* cols = NULL
    cdef bint share = floating is float and plan.bf16 and plan.bf16_fn == 0  # (a library's product: its own cuts)
    if Xb.shape[0] != n or Xb.shape[1] != d or yb.shape[0] != n or (sizeof(floating) == 8) != plan.wide:
        raise ValueError(f"the batch must be ({n}, {d}) of the plan's dtype with {n} labels")
    if small_parts not in (1, 2):
        raise ValueError("the small layers' products are cut in 1 or 2 parts")
    if Xn.shape[0] != n_next or Xn.shape[1] != d or yn.shape[0] != n_next:
        raise ValueError("the next batch's buffers must hold its rows")
    if next_copy >= 0 and n_next:
        if plan.batch_copies is None or next_copy > 1 or n_next != n:
            raise ValueError("a batch's bf16 copies go to one of use_batch_copies' pairs, of a batch of the plan's size")
        if plan.bf16_fn:
            copy16 = plan.copy16[next_copy]
        else:
            pairs, cols = plan.copy_rows[next_copy], plan.copy_cols[next_copy]
    _next_batch(&nb, source, mean, inv_std, normalise, plan.wide, n_next, d, next_moves, height, width)
    plan.counter = plan.update_counter = 0
    plan.update_state = UPDATE_PENDING
    plan.small_parts, plan.small_threads = small_parts, 1
    with nogil:
        for p in prange(2, num_threads=2, schedule="static", chunksize=1):
            if p == 0:  # the step; its update, once G1 is packed, in blocks both threads claim
                plan.result = _one_core_step(plan, &Xb[0, 0], &yb[0], first, eta, keep, step, eps, alpha, share)
                if share:
                    _shared_update(plan, <float> keep, <float> step)
            if n_next:
                _gather_share(<const floating*> nb.X, nb.U, nb.mean, nb.inv_std, d, &y[0], &next_idx[0], n_next,
                              &Xn[0, 0], &yn[0], &plan.counter, nb.moves, nb.height, nb.width, copy16, pairs, plan.dpk,
                              cols)
            if share and p == 1:
                _shared_update(plan, <float> keep, <float> step)
        plan.small_parts = 1
        plan.batch_ready = False
    return plan.result


cdef enum:
    MAX_IMAGE_WIDTH = 256  # the row buffer of _move_in_place


cdef void _move_in_place(floating* img, const long long* move, Py_ssize_t d, Py_ssize_t H, Py_ssize_t W) noexcept nogil:
    """Move the image in ``img`` (d values: planes of H x W) as augmentation does
    (data.augment.augment_moves), in place: at (c, h, w) the pixel that was at
    (c, h + oy, w' + ox), w' = W - 1 - w if flipped else w; 0 where that lies outside.
    Rows are taken in the order that reads each source row before it is overwritten, through
    a buffer of one row."""
    cdef Py_ssize_t c, h, k, w, sh, plane = H * W
    cdef Py_ssize_t oy = move[0], ox = move[1]
    cdef bint flipped = move[2] != 0
    cdef floating row[MAX_IMAGE_WIDTH]
    cdef floating* dst
    # the columns w whose source column lies inside the image (clamped: a move off the image
    # leaves none): a straight or mirrored copy between zeros, so the inner loops have no branch
    cdef Py_ssize_t w0 = min(W, max(0, ox if flipped else -ox))
    cdef Py_ssize_t w1 = max(w0, min(W, W + ox if flipped else W - ox))
    cdef Py_ssize_t src0 = W - 1 + ox if flipped else ox  # the source column of w = 0
    for c in range(d // plane):
        for k in range(H):
            h = k if oy >= 0 else H - 1 - k  # top down when the source rows lie below (oy >= 0), else bottom up
            sh = h + oy
            dst = img + c * plane + h * W
            if sh < 0 or sh >= H:  # a row of the zero padding
                for w in range(W):
                    dst[w] = 0
                continue
            for w in range(W):
                row[w] = img[c * plane + sh * W + w]
            for w in range(w0):
                dst[w] = 0
            for w in range(w1, W):
                dst[w] = 0
            if flipped:
                for w in range(w0, w1):
                    dst[w] = row[src0 - w]
            else:
                for w in range(w0, w1):
                    dst[w] = row[src0 + w]


cdef struct NextBatch:
    # what the fused step's gather of the next batch reads (_next_batch)
    const unsigned char* U        # uint8 images, normalised as gathered (NULL: rows of X)
    const char* X                 # rows of the plan's dtype
    const double* mean
    const double* inv_std
    const long long* moves        # augmentation's moves, or NULL
    Py_ssize_t height, width


cdef int _next_batch(NextBatch* nb, source, const double[::1] mean, const double[::1] inv_std, bint normalise, bint wide,
                     Py_ssize_t n_next, Py_ssize_t d, const long long[:, ::1] next_moves, Py_ssize_t height,
                     Py_ssize_t width) except -1:
    """Fill ``nb`` for a gather of n_next rows of ``source`` (uint8 images if ``normalise``,
    else rows of float64 if ``wide``, of float32 if not), moved by ``next_moves`` if any:
    the checks the two- and one-core steps make of the batch they gather during the step."""
    cdef const unsigned char[:, ::1] pixels
    cdef const float[:, ::1] rows32
    cdef const double[:, ::1] rows64
    nb.U = nb.X = NULL
    nb.mean = nb.inv_std = NULL
    nb.moves = NULL
    nb.height, nb.width = height, width
    if not n_next:
        return 0
    if normalise:
        pixels = source
        nb.U, nb.mean, nb.inv_std = &pixels[0, 0], &mean[0], &inv_std[0]
    elif wide:
        rows64 = source
        nb.X = <const char*> &rows64[0, 0]
    else:
        rows32 = source
        nb.X = <const char*> &rows32[0, 0]
    if next_moves is not None and next_moves.shape[0]:
        _check_moves(next_moves, n_next, d, height, width)
        nb.moves = &next_moves[0, 0]
    return 0


cdef void _gather_share(const floating* X, const unsigned char* U, const double* mean, const double* inv_std,
                        Py_ssize_t d, const Py_ssize_t* y, const Py_ssize_t* idx, Py_ssize_t n,
                        floating* Xn, Py_ssize_t* yn, long long* counter,
                        const long long* moves=NULL, Py_ssize_t H=0, Py_ssize_t W=0,
                        unsigned short* copy16=NULL, unsigned int* pairs=NULL, Py_ssize_t ldp=0,
                        unsigned int* cols=NULL) noexcept nogil:
    """Gather rows idx of X (or of the uint8 images U, normalised as data.normalise does:
    (double(u) - mean) * inv_std rounded once) into (Xn, yn) -- each then moved as its row of
    ``moves`` says (augmentation, :func:`_move_in_place`),
    if given, and copied as the forward product's bf16 operand, if given (``copy16``: rounded,
    as for a library product; ``pairs``: fastnet's pairs of the row, ``ldp`` words a row) and
    as the update's, if given (``cols``: the batch's pairs down its columns, d words a row,
    made from each pair of rows while it is in cache; images not moved: each pair normalised
    and packed in one pass, normalised_pairs.h) -- a block of rows at a time claimed from
    ``counter``: every thread that calls it takes a share. (A block's first row is even, so the
    pairs of rows never straddle two blocks.)"""
    cdef Py_ssize_t i, i0, i1, j, r
    while True:
        i0 = fastnet_fetch_add(counter, GATHER_BLOCK)
        if i0 >= n:
            return
        i1 = min(i0 + GATHER_BLOCK, n)
        if floating is float and U != NULL and moves == NULL and pairs != NULL and cols != NULL:
            # a pair of images at a time, both copies made as each is normalised (normalised_pairs.h)
            for i in range(i0, i1, 2):
                yn[i] = y[idx[i]]
                if i + 1 < i1:
                    yn[i + 1] = y[idx[i + 1]]
                normalised_pairs(U + idx[i] * d, U + idx[i + 1] * d if i + 1 < i1 else NULL, mean, inv_std, d,
                                 Xn + i * d, Xn + (i + 1) * d, pairs + i * ldp, pairs + (i + 1) * ldp, cols + (i // 2) * d)
            continue
        for i in range(i0, i1):
            r = idx[i]
            yn[i] = y[r]
            if U != NULL:
                _normalise_row(U + r * d, mean, inv_std, Xn + i * d, d)
            else:
                for j in range(d):
                    Xn[i * d + j] = X[r * d + j]
            if moves != NULL:
                _move_in_place(Xn + i * d, moves + 3 * i, d, H, W)
            if floating is float:  # the forward product's bf16 copy of the row, as it would make it
                if copy16 != NULL:
                    bf16_rows(Xn + i * d, d, 1, d, copy16 + i * d, d)
                elif pairs != NULL:
                    pairs_of_rows(Xn + i * d, d, 1, d, pairs + i * ldp, ldp)
        if floating is float and cols != NULL:
            for i in range(i0, i1, 2):
                pairs_of_columns(Xn + i * d, d, min(2, i1 - i), d, cols + (i // 2) * d, d)


def fused_sgd_step_parallel(StepPlan plan, int parts, const floating[:, ::1] Xb, const Py_ssize_t[::1] yb, bint first,
                            floating eta, floating keep, floating step, double eps, double alpha,
                            source, const double[::1] mean, const double[::1] inv_std, bint normalise,
                            const Py_ssize_t[::1] y, const Py_ssize_t[::1] next_idx,
                            floating[:, ::1] Xn, Py_ssize_t[::1] yn, int threads=0, bint split_small=False,
                            const long long[:, ::1] next_moves=None, Py_ssize_t height=0, Py_ssize_t width=0):
    """:func:`fused_sgd_step` cut in ``parts`` (1 or 2) on ``threads`` threads (0: one per
    part), gathering rows ``next_idx`` of ``source`` (uint8 images if ``normalise``, else an
    array of the plan's dtype; the caller checked the indices) into (Xn, yn) meanwhile. The
    products are cut where no sum is: the forward one by rows of the batch, the update by rows
    of W1t, so each entry is the same BLAS dot product as on one core. Two parts on one thread
    run one after the other: the same products, so the same bits as on two threads (the
    fallback of a loaded machine, fastnet/training/load_guard.py).

    ``split_small``: the layers above the first are cut too (each product by rows of its
    result, :func:`_gemm_split`) instead of running on one thread beside the gather, which then
    follows the update: for networks whose first layer is not most of the step (a wide one, or
    any in bf16, whose first layer costs half as much).

    ``next_moves`` (augmentation): the next batch's rows moved as :func:`gather_moved_rows`
    moves them, as images of ``height`` x ``width``."""
    cdef Py_ssize_t n = plan.n, d = plan.d, m1 = plan.layers[0].m, r0, r1, c0, c1, n_next = next_idx.shape[0]
    cdef int p
    cdef NextBatch nb
    if Xb.shape[0] != n or Xb.shape[1] != d or yb.shape[0] != n or (sizeof(floating) == 8) != plan.wide:
        raise ValueError(f"the batch must be ({n}, {d}) of the plan's dtype with {n} labels")
    if parts not in (1, 2):
        raise ValueError("the fused step is cut in 1 or 2 parts")
    if threads == 0:
        threads = parts
    if threads not in (1, 2):
        raise ValueError("the fused step runs on 1 or 2 threads")
    if n_next and (Xn.shape[0] != n_next or Xn.shape[1] != d or yn.shape[0] != n_next):
        raise ValueError("the next batch's buffers must hold its rows")
    _next_batch(&nb, source, mean, inv_std, normalise, plan.wide, n_next, d, next_moves, height, width)
    plan.counter = 0
    with nogil:
        for p in prange(parts, num_threads=threads, schedule="static", chunksize=1):  # (12) by rows of the batch
            if floating is float and plan.bf16:
                _bf16_forward(plan, &Xb[0, 0], p, parts)
                if split_small:
                    _bf16_pack_for_update(plan, &Xb[0, 0], p, parts)
            else:
                r0, r1 = n * p // parts, n * (p + 1) // parts
                _gemm(plan, &Xb[r0, 0], d, False, <floating*> plan.W1t, m1, False, <floating*> plan.layers[0].S + r0 * m1,
                      m1, r1 - r0, m1, d, 1, 0)
        if split_small:  # the small layers from this thread, each product in shares on every thread
            plan.small_parts, plan.small_threads = parts, threads
            plan.result = _step_core(plan, &yb[0], first, eta, keep, step, eps, alpha, plan.scratch)
            plan.small_parts = plan.small_threads = 1
            if floating is float and plan.bf16 and plan.result - plan.result == 0:
                _bf16_pack_gradient(plan)
        else:
            for p in prange(parts, num_threads=threads, schedule="static", chunksize=1):
                if p == 0:  # the small layers on one thread; the next batch on every thread free
                    plan.result = _step_core(plan, &yb[0], first, eta, keep, step, eps, alpha, plan.scratch)
                    if floating is float and plan.bf16 and plan.result - plan.result == 0:
                        _bf16_pack_gradient(plan)
                if floating is float and plan.bf16 and p == parts - 1:
                    _bf16_pack_for_update(plan, &Xb[0, 0], 0, 1)
                if n_next:
                    _gather_share(<const floating*> nb.X, nb.U, nb.mean, nb.inv_std, d, &y[0], &next_idx[0], n_next,
                                  &Xn[0, 0], &yn[0], &plan.counter, nb.moves, nb.height, nb.width)
        for p in prange(parts, num_threads=threads, schedule="static", chunksize=1):  # the update by rows of W1t
            if plan.result - plan.result == 0:
                if floating is float and plan.bf16:
                    _bf16_update(plan, p, parts, keep, step)
                else:
                    c0, c1 = d * p // parts, d * (p + 1) // parts
                    _gemm(plan, &Xb[0, c0], d, True, <floating*> plan.layers[0].G, m1, False,
                          <floating*> plan.W1t + c0 * m1, m1, c1 - c0, m1, n, -step, keep)
            if split_small and n_next:
                _gather_share(<const floating*> nb.X, nb.U, nb.mean, nb.inv_std, d, &y[0], &next_idx[0], n_next,
                              &Xn[0, 0], &yn[0], &plan.counter, nb.moves, nb.height, nb.width)
        plan.batch_ready = False
    return plan.result


def gather_rows(const floating[:, ::1] X, const Py_ssize_t[::1] y, const Py_ssize_t[::1] idx,
                floating[:, ::1] Xb, Py_ssize_t[::1] yb):
    """Xb[i] = X[idx[i]], yb[i] = y[idx[i]] (the caller checked the indices)."""
    cdef long long counter = 0
    if idx.shape[0]:
        with nogil:
            _gather_share(&X[0, 0], NULL, NULL, NULL, X.shape[1], &y[0], &idx[0], idx.shape[0], &Xb[0, 0], &yb[0],
                          &counter)


def gather_normalised_rows(const unsigned char[:, ::1] U, const double[::1] mean, const double[::1] inv_std,
                           const Py_ssize_t[::1] y, const Py_ssize_t[::1] idx, floating[:, ::1] Xb, Py_ssize_t[::1] yb):
    """Xb[i] = (U[idx[i]] - mean) * inv_std, yb[i] = y[idx[i]]: data.normalise's arithmetic."""
    cdef long long counter = 0
    cdef const floating* no_rows = NULL
    if idx.shape[0]:
        with nogil:
            _gather_share(no_rows, &U[0, 0], &mean[0], &inv_std[0], U.shape[1], &y[0], &idx[0], idx.shape[0],
                          &Xb[0, 0], &yb[0], &counter)


cdef _check_moves(const long long[:, ::1] moves, Py_ssize_t n, Py_ssize_t d, Py_ssize_t height, Py_ssize_t width):
    if moves.shape[0] != n or moves.shape[1] != 3:
        raise ValueError(f"the moves of an augmented gather are ({n}, 3): one (oy, ox, flipped) per row")
    if height <= 0 or width <= 0 or d % (height * width):
        raise ValueError(f"rows of {d} values are not images of {height} x {width}")
    if width > MAX_IMAGE_WIDTH:
        raise ValueError(f"augmentation moves images up to {MAX_IMAGE_WIDTH} pixels wide, not {width}")


def gather_moved_rows(source, const double[::1] mean, const double[::1] inv_std, bint normalise,
                      const Py_ssize_t[::1] y, const Py_ssize_t[::1] idx, const long long[:, ::1] moves,
                      Py_ssize_t height, Py_ssize_t width, floating[:, ::1] Xb, Py_ssize_t[::1] yb):
    """The augmented mini-batch: Xb[i] = row idx[i] of ``source`` (uint8 images normalised as
    :func:`gather_normalised_rows` if ``normalise``, else rows of Xb's dtype) moved by
    ``moves[i]`` -- (oy, ox, flipped), data.augment.augment_moves -- as an image of
    ``height`` x ``width``; yb[i] = y[idx[i]]. Exactly data.augment.augment_batch of the rows
    with the same draws (the caller checked the indices)."""
    cdef long long counter = 0
    cdef const unsigned char[:, ::1] pixels
    cdef const floating[:, ::1] rows
    cdef const unsigned char* U = NULL
    cdef const floating* X = NULL
    cdef Py_ssize_t d = Xb.shape[1]
    if normalise:
        pixels = source
        U = &pixels[0, 0]
    else:
        rows = source
        X = &rows[0, 0]
    _check_moves(moves, idx.shape[0], d, height, width)
    if idx.shape[0]:
        with nogil:
            _gather_share(X, U, &mean[0] if normalise else NULL, &inv_std[0] if normalise else NULL, d, &y[0], &idx[0],
                          idx.shape[0], &Xb[0, 0], &yb[0], &counter, &moves[0, 0], height, width)


def normalise_rows(const unsigned char[:, ::1] U, const Py_ssize_t[:] rows, const double[:] mean,
                   const double[:] inv_std, floating[:, :] out):
    """out[i] = (U[rows[i]] - mean) * inv_std in double, stored in out's dtype (any strides):
    data.normalise's normalise_rows, compiled ahead of time."""
    cdef Py_ssize_t i, j, r, d = U.shape[1]
    with nogil:
        for i in range(rows.shape[0]):
            r = rows[i]
            for j in range(d):
                out[i, j] = <floating> ((<double> U[r, j] - mean[j]) * inv_std[j])


def gemm(blas, floating[:, :] A, bint trans_a, floating[:, :] B, bint trans_b, floating[:, :] C,
         double alpha, double beta):
    """C = alpha op(A) op(B) + beta C through the provider's ?gemm (``blas``: its table), as
    fastnet.backends.blas.gemm does from Numba: each array's rows of unit-stride elements
    (C-contiguous, or a block of columns of such an array)."""
    cdef Py_ssize_t m = C.shape[0], n = C.shape[1], k = A.shape[0] if trans_a else A.shape[1]
    cdef Py_ssize_t size = sizeof(floating)
    cdef StepPlan plan = StepPlan.__new__(StepPlan)
    if (A.shape[1] if trans_a else A.shape[0]) != m or (B.shape[0] if trans_b else B.shape[1]) != n \
            or (B.shape[1] if trans_b else B.shape[0]) != k:
        raise ValueError("gemm: the shapes of A, B and C do not match")
    for s in (A.strides[1], B.strides[1], C.strides[1]):
        if s != size:
            raise ValueError("gemm: each row's elements must be contiguous")
    plan.gemm_fn = <size_t> int(blas[1] if size == 8 else blas[0])
    plan.ilp64 = bool(blas[2])
    with nogil:
        _gemm(plan, &A[0, 0], A.strides[0] // size, trans_a, &B[0, 0], B.strides[0] // size, trans_b,
              &C[0, 0], C.strides[0] // size, m, n, k, <floating> alpha, <floating> beta)


def parallel_threads():
    """The threads the two-core step's OpenMP loops may use now (OMP_NUM_THREADS, else the cores)."""
    return openmp.omp_get_max_threads()
