# cython: language_level=3
# distutils: extra_compile_args = -fno-trapping-math -fno-math-errno
"""Compiled loops for fastnet's Cython backend (fastnet.ext._ckernels).

Loops only: validation and allocation happen in fastnet/backends/cython_ops.py, which passes
C-contiguous arrays of one float dtype and outputs it has allocated. Every kernel is fused over
``floating`` (float32 / float64); inputs are ``const floating[:, ::1]`` (read-only arrays are
fine), outputs ``floating[:, ::1]``. The arithmetic is that of fastnet/backends/numba_ops.py:
rows outer, columns inner, column sums accumulated in double, two-pass variance, element-wise
work in the array dtype, and NaN passed through (``0 if x < 0 else x``, ``G * (X > 0)``).

Compiler flags. The directives (boundscheck, wraparound, cdivision, initializedcheck) are set
in setup.py. The line above adds two flags that change no result: -fno-trapping-math (the
comparisons in the ReLU loops may then be if-converted, so gcc vectorises them: 3x faster at
(100, 50)) and -fno-math-errno (sqrt/exp/log need not set errno). Not -ffast-math: it would
let the compiler assume NaN away. Each inner loop works on row pointers, which gcc vectorises.
"""
from cython cimport floating
from libc.math cimport exp, log, sqrt, sqrtf
from libc.stdlib cimport calloc, free, malloc

# Bumped whenever a kernel's signature changes; cython_ops.py refuses another build.
VERSION = "fastnet.ext._ckernels 9"


cdef double* _scratch(Py_ssize_t m) except NULL:
    """Room for m doubles (or m floatings) of per-column scratch; the caller frees it."""
    cdef double* p = <double*> malloc((m if m > 0 else 1) * sizeof(double))
    if p == NULL:
        raise MemoryError()
    return p


cdef inline void _bias_relu_rows(const floating* Z, const floating* b, floating* X,
                                 Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating s
    cdef const floating* z_row
    cdef floating* x_row
    for i in range(n):
        z_row = Z + i * m
        x_row = X + i * m
        for j in range(m):
            s = z_row[j] + b[j]  # (1), in the array dtype like the reference
            x_row[j] = 0 if s < 0 else s  # (2); NaN passes through


def bias_relu_forward(const floating[:, ::1] Z, const floating[::1] b, floating[:, ::1] X):
    """X = max(0, Z + b), eqs (1)-(2)."""
    with nogil:
        _bias_relu_rows(&Z[0, 0], &b[0], &X[0, 0], Z.shape[0], Z.shape[1])


cdef inline void _relu_backward_rows(const floating* G, const floating* X, floating* out,
                                     Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const floating* g_row
    cdef const floating* x_row
    cdef floating* o_row
    for i in range(n):
        g_row = G + i * m
        x_row = X + i * m
        o_row = out + i * m
        for j in range(m):
            o_row[j] = g_row[j] * (x_row[j] > 0)


def relu_backward(const floating[:, ::1] G, const floating[:, ::1] X, floating[:, ::1] out):
    """out = G * (X > 0), eqs (24)/(30); a product, so NaN * 0 stays NaN like the reference."""
    with nogil:
        _relu_backward_rows(&G[0, 0], &X[0, 0], &out[0, 0], G.shape[0], G.shape[1])


# ------------------------------------------ batch norm, with and without the ReLU (bonus: after it)
# Each body below works on raw row-major pointers (n rows of m) and per-column scratch the
# caller owns, so the op wrappers here and the fused step (fused_step.pxi) run the very same
# loops. Each pair of kernels is one body with a ``relu`` flag that each caller passes as a
# constant (the compiler folds it, or hoists the test out of the loops). Plain C arithmetic
# without -ffast-math, so sharing a body changes no result.


cdef inline void _bn_forward_train_rows(const floating* S, const floating* gamma, const floating* beta,
                                        double eps, floating* X, floating* S_hat, floating* mu, floating* v,
                                        Py_ssize_t n, Py_ssize_t m, bint relu, double* scratch) noexcept nogil:
    """Eqs (13)-(17) on S (n, m); ``scratch``: room for 3 m doubles."""
    cdef Py_ssize_t i, j
    cdef floating d, x
    cdef const floating* s_row
    cdef floating* x_row
    cdef floating* h_row
    cdef double* mean = scratch
    cdef double* ssq = scratch + m
    cdef floating* inv_sd = <floating*> (scratch + 2 * m)
    for j in range(m):
        mean[j] = 0
        ssq[j] = 0
    for i in range(n):  # (13), summed in double
        s_row = S + i * m
        for j in range(m):
            mean[j] += s_row[j]
    for j in range(m):
        mu[j] = <floating> (mean[j] / n)
    for i in range(n):  # (14): a second pass over S - mu, never E[s^2] - E[s]^2
        s_row = S + i * m
        for j in range(m):
            d = s_row[j] - mu[j]  # see numba_ops: rounding mu costs (mu - mu')^2 only
            ssq[j] += d * d
    for j in range(m):
        v[j] = <floating> (ssq[j] / n)  # biased, as eq (14)
        inv_sd[j] = <floating> (1.0 / sqrt(ssq[j] / n + eps))  # (11)
    # (15) and (16)-(17) as two loops over each row, not one: each reads and writes few enough
    # arrays that the compiler can check them for overlap and vectorise it (one loop over five
    # input and two output arrays it left scalar, ~80 % of the step outside its products)
    for i in range(n):
        s_row = S + i * m
        h_row = S_hat + i * m
        x_row = X + i * m
        for j in range(m):
            h_row[j] = (s_row[j] - mu[j]) * inv_sd[j]  # (15)
        for j in range(m):
            x = gamma[j] * h_row[j] + beta[j]  # (16)
            x_row[j] = (0 if x < 0 else x) if relu else x  # (17); NaN passes through


cdef inline int _bn_forward_train(const floating[:, ::1] S, const floating[::1] gamma, const floating[::1] beta,
                                  double eps, floating[:, ::1] X, floating[:, ::1] S_hat,
                                  floating[::1] mu, floating[::1] v, bint relu) except -1:
    cdef Py_ssize_t m = S.shape[1]
    cdef double* scratch = _scratch(3 * m)
    with nogil:
        _bn_forward_train_rows(&S[0, 0], &gamma[0], &beta[0], eps, &X[0, 0], &S_hat[0, 0], &mu[0], &v[0],
                               S.shape[0], m, relu, scratch)
    free(scratch)
    return 0


def bn_relu_forward_train(const floating[:, ::1] S, const floating[::1] gamma, const floating[::1] beta,
                          double eps, floating[:, ::1] X, floating[:, ::1] S_hat,
                          floating[::1] mu, floating[::1] v):
    """Batch statistics, normalisation, scale-shift and ReLU in one call: eqs (13)-(17)."""
    _bn_forward_train(S, gamma, beta, eps, X, S_hat, mu, v, True)


def bn_forward_train(const floating[:, ::1] S, const floating[::1] gamma, const floating[::1] beta,
                     double eps, floating[:, ::1] X, floating[:, ::1] S_hat,
                     floating[::1] mu, floating[::1] v):
    """Batch statistics, normalisation and scale-shift, no ReLU: eqs (13)-(16)."""
    _bn_forward_train(S, gamma, beta, eps, X, S_hat, mu, v, False)


cdef inline int _bn_forward_eval(const floating[:, ::1] S, const floating[::1] gamma, const floating[::1] beta,
                                 const floating[::1] mu, const floating[::1] v, double eps, floating[:, ::1] X,
                                 bint relu) except -1:
    cdef Py_ssize_t i, j, n = S.shape[0], m = S.shape[1]
    cdef floating x
    cdef const floating* s_row
    cdef floating* x_row
    cdef floating* scale = NULL
    try:
        scale = <floating*> _scratch(m)
        with nogil:
            for j in range(m):
                scale[j] = <floating> (gamma[j] / sqrt(v[j] + eps))  # gamma * (v + eps)^-1/2
            for i in range(n):
                s_row = &S[i, 0]
                x_row = &X[i, 0]
                for j in range(m):
                    # (S - mu) first: folding mu into the shift would cancel when |mu| >> sd.
                    x = (s_row[j] - mu[j]) * scale[j] + beta[j]  # (6), (7)
                    x_row[j] = (0 if x < 0 else x) if relu else x  # (8)
    finally:
        free(scale)
    return 0


def bn_relu_forward_eval(const floating[:, ::1] S, const floating[::1] gamma, const floating[::1] beta,
                         const floating[::1] mu, const floating[::1] v, double eps, floating[:, ::1] X):
    """Normalisation by fixed statistics, scale-shift and ReLU: eqs (6)-(8), (11)."""
    _bn_forward_eval(S, gamma, beta, mu, v, eps, X, True)


def bn_forward_eval(const floating[:, ::1] S, const floating[::1] gamma, const floating[::1] beta,
                    const floating[::1] mu, const floating[::1] v, double eps, floating[:, ::1] X):
    """Normalisation by fixed statistics and scale-shift, no ReLU: eqs (6)-(7), (11)."""
    _bn_forward_eval(S, gamma, beta, mu, v, eps, X, False)


cdef inline void _bn_backward_rows(const floating* G, const floating* X, const floating* S_hat,
                                   const floating* gamma, const floating* v, double eps,
                                   floating* G_out, floating* dgamma, floating* dbeta,
                                   Py_ssize_t n, Py_ssize_t m, bint relu, double* scratch) noexcept nogil:
    """Eqs (24)-(27), (30)-(37) on G (n, m); ``scratch``: room for 3 m doubles."""
    cdef Py_ssize_t i, j
    cdef floating g
    cdef const floating* g_row
    cdef const floating* x_row
    cdef const floating* h_row
    cdef floating* o_row
    cdef double* sum_g = scratch
    cdef double* sum_gs = scratch + m
    cdef floating* scale = <floating*> (scratch + 2 * m)
    for j in range(m):
        sum_g[j] = 0
        sum_gs[j] = 0
    for i in range(n):  # the two column sums of (25), in double
        g_row = G + i * m
        x_row = X + i * m
        h_row = S_hat + i * m
        for j in range(m):
            g = g_row[j] * (x_row[j] > 0) if relu else g_row[j]  # (24)/(30); NaN * 0 stays NaN
            sum_g[j] += g
            sum_gs[j] += g * h_row[j]
    for j in range(m):
        dbeta[j] = <floating> (sum_g[j] / n)  # (25)
        dgamma[j] = <floating> (sum_gs[j] / n)  # (25)
        scale[j] = <floating> (gamma[j] / sqrt(v[j] + eps))  # gamma * sigma1, (26), (31)
    for i in range(n):
        g_row = G + i * m
        x_row = X + i * m
        h_row = S_hat + i * m
        o_row = G_out + i * m
        for j in range(m):
            g = g_row[j] * (x_row[j] > 0) if relu else g_row[j]
            o_row[j] = scale[j] * (g - dbeta[j] - h_row[j] * dgamma[j])  # (37)


cdef inline int _bn_backward(const floating[:, ::1] G, const floating[:, ::1] X, const floating[:, ::1] S_hat,
                             const floating[::1] gamma, const floating[::1] v, double eps,
                             floating[:, ::1] G_out, floating[::1] dgamma, floating[::1] dbeta,
                             bint relu) except -1:
    cdef Py_ssize_t m = G.shape[1]
    cdef double* scratch = _scratch(3 * m)
    with nogil:
        _bn_backward_rows(&G[0, 0], &X[0, 0], &S_hat[0, 0], &gamma[0], &v[0], eps, &G_out[0, 0], &dgamma[0],
                          &dbeta[0], G.shape[0], m, relu, scratch)
    free(scratch)
    return 0


def bn_relu_backward(const floating[:, ::1] G, const floating[:, ::1] X, const floating[:, ::1] S_hat,
                     const floating[::1] gamma, const floating[::1] v, double eps,
                     floating[:, ::1] G_out, floating[::1] dgamma, floating[::1] dbeta):
    """ReLU mask, dgamma, dbeta and BatchNormBackPass in two sweeps: eqs (24)-(27), (30)-(37).

    G_out = sigma1 * gamma * (Gm - dbeta - S_hat * dgamma) with Gm = G * (X > 0); this equals
    eqs (31)-(37) (the derivation is beside numba_ops._bn_backward).
    """
    _bn_backward(G, X, S_hat, gamma, v, eps, G_out, dgamma, dbeta, True)


def bn_backward(const floating[:, ::1] G, const floating[:, ::1] S_hat, const floating[::1] gamma,
                const floating[::1] v, double eps, floating[:, ::1] G_out,
                floating[::1] dgamma, floating[::1] dbeta):
    """dgamma, dbeta and BatchNormBackPass without a ReLU mask: eqs (25)-(27), (31)-(37).

    G_out = sigma1 * gamma * (G - dbeta - S_hat * dgamma), as bn_relu_backward with Gm = G
    (G stands in for X, which is not read).
    """
    _bn_backward(G, G, S_hat, gamma, v, eps, G_out, dgamma, dbeta, False)


cdef inline void _softmax_xent_rows(const floating* S, const Py_ssize_t* y, floating* P, floating* loss,
                                    Py_ssize_t n, Py_ssize_t K, double* e) noexcept nogil:
    """Eqs (4)/(19) and the cross-entropy on S (n, K); ``e``: room for K doubles."""
    cdef Py_ssize_t i, j
    cdef double mx, total, inv_total
    cdef const floating* s_row
    cdef floating* p_row
    for i in range(n):
        s_row = S + i * K
        p_row = P + i * K
        mx = s_row[0]
        for j in range(1, K):
            if s_row[j] > mx:
                mx = s_row[j]
        total = 0
        for j in range(K):
            e[j] = exp(s_row[j] - mx)  # <= 1, and exactly 1 at the maximum: total >= 1
            total += e[j]
        inv_total = 1.0 / total
        for j in range(K):
            p_row[j] = <floating> (e[j] * inv_total)
        loss[i] = <floating> (log(total) - (s_row[y[i]] - mx))


def softmax_xent(const floating[:, ::1] S, const Py_ssize_t[::1] y, floating[:, ::1] P, floating[::1] loss):
    """Max-shifted softmax, eqs (4)/(19), and loss = log(sum_j exp(z_j)) - z_y with z = s - max."""
    cdef Py_ssize_t K = S.shape[1]
    cdef double* e = _scratch(K)
    with nogil:
        _softmax_xent_rows(&S[0, 0], &y[0], &P[0, 0], &loss[0], S.shape[0], K, e)
    free(e)


cdef inline void _softmax_xent_backward_rows(const floating* P, const Py_ssize_t* y, floating* G,
                                             Py_ssize_t n, Py_ssize_t K) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(n):
        for j in range(K):
            G[i * K + j] = P[i * K + j]
        G[i * K + y[i]] -= 1


def softmax_xent_backward(const floating[:, ::1] P, const Py_ssize_t[::1] y, floating[:, ::1] G):
    """G = -(Y - P), eq (21)."""
    with nogil:
        _softmax_xent_backward_rows(&P[0, 0], &y[0], &G[0, 0], P.shape[0], P.shape[1])


def sgd_update(floating[::1] theta, const floating[::1] grad, floating eta):
    """theta -= eta * grad on flat views; eta in theta's dtype, as the reference."""
    cdef Py_ssize_t k, n = theta.shape[0]
    cdef floating* th = &theta[0]
    cdef const floating* gr = &grad[0]
    with nogil:
        for k in range(n):
            th[k] -= eta * gr[k]


# ------------------------------------------------------------------------- Adam (bonus)


def adam_update(floating[::1] theta, const floating[::1] grad, floating[::1] m, floating[::1] v,
                floating beta1, floating omb1, floating beta2, floating omb2,
                floating step, floating c2, floating eps):
    """One Adam step on flat views, scalars in theta's dtype (omb = 1 - beta, step = eta /
    (1 - beta1^t), c2 = 1 / (1 - beta2^t)): the arithmetic of numba_ops.adam_update_kernel.

    Plain pointers, so gcc sees four streams it can vectorise (behind one aliasing check),
    and sqrtf for float32: libm's sqrt would round-trip every element through double. 6x
    faster than memoryview indexing with sqrt at (50, 3072).
    """
    cdef Py_ssize_t k, n = theta.shape[0]
    cdef floating g, mk, vk, root
    cdef floating* th = &theta[0]
    cdef const floating* gr = &grad[0]
    cdef floating* mm = &m[0]
    cdef floating* vv = &v[0]
    with nogil:
        for k in range(n):
            g = gr[k]
            mk = beta1 * mm[k] + omb1 * g
            vk = beta2 * vv[k] + omb2 * (g * g)
            mm[k] = mk
            vv[k] = vk
            if floating is float:
                root = sqrtf(vk * c2)
            else:
                root = sqrt(vk * c2)
            th[k] -= step * mk / (root + eps)


# ------------------------------------------------------------------------- the fused step

include "fused_step.pxi"
