/* The first layer's two products in bfloat16 (--precision bf16): bf16 inputs, float32 sums.
 *
 * AVX512_BF16's VDPBF16PS multiplies 16 pairs of bf16 values and adds each pair's two
 * products into a float32 lane: one instruction does twice the multiply-adds of a float32 FMA,
 * and the inputs are half the bytes. Its operands hold *pairs along the sum*: element (i, p)
 * of A is (a[i][2p], a[i][2p+1]) as one 32-bit word, element (p, j) of B is (b[2p][j],
 * b[2p+1][j]). Here every matrix is kept in that form ("pairs", uint32), made by the two
 * packers below:
 *
 *   pairs_of_rows:    (rows, cols) float -> (rows, cols/2) words, pairs along each row;
 *   pairs_of_columns: (rows, cols) float -> (rows/2, cols) words, pairs down each column
 *                     (the layout VNNI instructions call "VNNI").
 *
 * An odd length is padded with a zero partner. Rounding is to nearest, ties to even
 * (VCVTNE2PS2BF16), as every bf16 library rounds.
 *
 * The product, gemm_pairs, is C = beta C + alpha A B with A (M, P) and B (P, N) in pairs:
 * tiles of up to 8 rows by 32 columns (16 float32 accumulators of 16 lanes), each output
 * entry summed by one tile in a fixed order, so a result never depends on threads or on how
 * the caller cuts C. With a non-NULL Cv it also writes C's new rows again as pairs down the
 * columns (the next forward product's B): the update and the bf16 copy of W1t in one pass.
 *
 * Everything is compiled for AVX-512 with BF16 by function attributes, so the extension itself
 * stays portable; fastnet_bf16_supported() tells at run time whether this CPU runs it.
 */
#ifndef FASTNET_BF16_GEMM_H
#define FASTNET_BF16_GEMM_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__) && (__GNUC__ >= 10)
#define FASTNET_BF16_BUILT 1
#include <immintrin.h>
#define FASTNET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define FASTNET_BF16_BUILT 0
#endif

/* 1 if this CPU (and its operating system) runs the kernels below. */
static int fastnet_bf16_supported(void) {
#if FASTNET_BF16_BUILT
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

#if FASTNET_BF16_BUILT

/* Mask of the first n lanes: none for n <= 0 (the second half of a tile or block narrower
 * than 16 columns; a shift by a negative count would be undefined), all 16 from n = 16. */
static inline __mmask16 fastnet_lanes(ptrdiff_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* 32 bf16 values = (lo[0], hi[0], lo[1], hi[1], ...): one register of 16 pairs. */
FASTNET_BF16 static inline __m512i fastnet_pair16(__m512 lo, __m512 hi) {
    /* cvtne2ps gives (lo[0..15], hi[0..15]) as 16-bit values 0..15 and 16..31 when its
     * arguments are (hi, lo); the permutation interleaves them. */
    const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                           23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
    return _mm512_permutexvar_epi16(order, both);
}

/* out (rows/2 rounded up, cols) words: out[p][j] = (A[2p][j], A[2p+1][j]), lda floats a row. */
FASTNET_BF16 static void pairs_of_columns(const float *A, ptrdiff_t lda, ptrdiff_t rows, ptrdiff_t cols,
                                          uint32_t *out, ptrdiff_t ldo) {
    for (ptrdiff_t p = 0; 2 * p < rows; p++) {
        const float *r0 = A + 2 * p * lda;
        const float *r1 = 2 * p + 1 < rows ? r0 + lda : NULL;
        for (ptrdiff_t j = 0; j < cols; j += 16) {
            __mmask16 m = fastnet_lanes(cols - j);
            __m512 lo = _mm512_maskz_loadu_ps(m, r0 + j);
            __m512 hi = r1 ? _mm512_maskz_loadu_ps(m, r1 + j) : _mm512_setzero_ps();
            _mm512_mask_storeu_epi32(out + p * ldo + j, m, fastnet_pair16(lo, hi));
        }
    }
}

/* out (rows, cols/2 rounded up) words: out[i][q] = (A[i][2q], A[i][2q+1]). */
FASTNET_BF16 static void pairs_of_rows(const float *A, ptrdiff_t lda, ptrdiff_t rows, ptrdiff_t cols,
                                       uint32_t *out, ptrdiff_t ldo) {
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
    for (ptrdiff_t i = 0; i < rows; i++) {
        const float *a = A + i * lda;
        for (ptrdiff_t c = 0; c < cols; c += 32) {  /* 32 floats -> 16 words */
            __m512 x0 = _mm512_maskz_loadu_ps(fastnet_lanes(cols - c), a + c);
            __m512 x1 = _mm512_maskz_loadu_ps(fastnet_lanes(cols - c - 16), a + c + 16);
            __m512 lo = _mm512_permutex2var_ps(x0, evens, x1);   /* a[c], a[c+2], ... */
            __m512 hi = _mm512_permutex2var_ps(x0, odds, x1);    /* a[c+1], a[c+3], ... */
            ptrdiff_t words = (cols - c + 1) / 2;
            _mm512_mask_storeu_epi32(out + i * ldo + c / 2, fastnet_lanes(words), fastnet_pair16(lo, hi));
        }
    }
}

/* One tile: rows i0..i0+R-1 of C, columns j0..j0+31 (n0 of them real). A's word (i, p) is at
 * A[i * a_row + p * a_pair]. R is a constant where this is inlined, so acc stays in registers. */
FASTNET_BF16 static inline __attribute__((always_inline)) void fastnet_tile(
        int R, const uint32_t *A, ptrdiff_t a_row, ptrdiff_t a_pair, const uint32_t *B, ptrdiff_t ldb,
        float *C, ptrdiff_t ldc, uint32_t *Cv, ptrdiff_t ldcv, ptrdiff_t P, ptrdiff_t n0,
        float alpha, float beta, ptrdiff_t even_row, int first, int last) {
    __m512 acc[8][2];
    __mmask16 m0 = fastnet_lanes(n0), m1 = fastnet_lanes(n0 - 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {  /* a later block of the sum goes on from C's partial sums */
        acc[r][0] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m0, C + r * ldc);
        acc[r][1] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m1, C + r * ldc + 16);
    }
    for (ptrdiff_t p = 0; p < P; p++) {
        __m512bh b0 = (__m512bh)_mm512_maskz_loadu_epi32(m0, B + p * ldb);
        __m512bh b1 = (__m512bh)_mm512_maskz_loadu_epi32(m1, B + p * ldb + 16);
        const uint32_t *a = A + p * a_pair;
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512bh ar = (__m512bh)_mm512_set1_epi32((int)a[r * a_row]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], ar, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], ar, b1);
        }
    }
    if (!last) {  /* partial sums, exact in float32: the next block starts from them */
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            _mm512_mask_storeu_ps(C + r * ldc, m0, acc[r][0]);
            _mm512_mask_storeu_ps(C + r * ldc + 16, m1, acc[r][1]);
        }
        return;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        float *c = C + r * ldc;
        __m512 c0 = _mm512_mul_ps(va, acc[r][0]), c1 = _mm512_mul_ps(va, acc[r][1]);
        if (beta != 0.0f) {  /* beta C + alpha AB, as ?gemm rounds it: one fma per entry */
            c0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, c), c0);
            c1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16), c1);
        }
        _mm512_mask_storeu_ps(c, m0, c0);
        _mm512_mask_storeu_ps(c + 16, m1, c1);
        acc[r][0] = c0;  /* the new rows, for Cv */
        acc[r][1] = c1;
    }
    if (Cv) {  /* rows (2q, 2q+1) of C as pairs: R is even, or the last row of C is alone */
#pragma GCC unroll 8
        for (int r = 0; r < R; r += 2) {
            uint32_t *v = Cv + ((even_row + r) / 2) * ldcv;
            __m512 h0 = r + 1 < R ? acc[r + 1][0] : _mm512_setzero_ps();
            __m512 h1 = r + 1 < R ? acc[r + 1][1] : _mm512_setzero_ps();
            _mm512_mask_storeu_epi32(v, m0, fastnet_pair16(acc[r][0], h0));
            _mm512_mask_storeu_epi32(v + 16, m1, fastnet_pair16(acc[r][1], h1));
        }
    }
}

/* Tile (i, j) of C with the sum over pairs p0..p0+P-1: the tile of R = min(8, M - i) rows. */
FASTNET_BF16 static void fastnet_tile_at(const uint32_t *A, ptrdiff_t a_row, ptrdiff_t a_pair, const uint32_t *B,
                                         ptrdiff_t ldb, float *C, ptrdiff_t ldc, uint32_t *Cv, ptrdiff_t ldcv,
                                         ptrdiff_t M, ptrdiff_t N, ptrdiff_t i, ptrdiff_t j, ptrdiff_t p0, ptrdiff_t P,
                                         float alpha, float beta, int first, int last) {
    ptrdiff_t n0 = N - j < 32 ? N - j : 32;
    const uint32_t *a = A + i * a_row + p0 * a_pair;
    const uint32_t *b = B + p0 * ldb + j;
    float *c = C + i * ldc + j;
    uint32_t *cv = Cv ? Cv + j : NULL;
#define FASTNET_TILE(R) fastnet_tile(R, a, a_row, a_pair, b, ldb, c, ldc, cv, ldcv, P, n0, alpha, beta, i, first, last)
    switch (M - i < 8 ? M - i : 8) {
    case 8: FASTNET_TILE(8); break;
    case 7: FASTNET_TILE(7); break;
    case 6: FASTNET_TILE(6); break;
    case 5: FASTNET_TILE(5); break;
    case 4: FASTNET_TILE(4); break;
    case 3: FASTNET_TILE(3); break;
    case 2: FASTNET_TILE(2); break;
    default: FASTNET_TILE(1); break;
    }
#undef FASTNET_TILE
}

/* Pairs of the sum per block of a long product: a block of B's 32 columns (16 KiB) stays in
 * the first-level cache while every row tile of A's block passes over it. */
#define FASTNET_PAIR_BLOCK 128

/* C (M, N) = beta C + alpha A B, A (M, P) and B (P, N) in pairs (module comment); A's word
 * (i, p) at A[i * a_row + p * a_pair], B's (p, j) at B[p * ldb + j]. With Cv, C's rows also
 * go to Cv as pairs down the columns (row i of C in word row i/2 of Cv): M must then start
 * at an even row of the matrix Cv describes.
 *
 * Two orders, one arithmetic: a long sum with beta 0 (the forward product) runs block by
 * block of the sum, keeping each block's partial sums in C, which continues the same float32
 * accumulation exactly; a short one (the update, summing over the batch) sweeps C's rows in
 * order, once, so the large W1t streams through the caches as the memory prefers. */
FASTNET_BF16 static void gemm_pairs(const uint32_t *A, ptrdiff_t a_row, ptrdiff_t a_pair, const uint32_t *B,
                                    ptrdiff_t ldb, float *C, ptrdiff_t ldc, uint32_t *Cv, ptrdiff_t ldcv,
                                    ptrdiff_t M, ptrdiff_t N, ptrdiff_t P, float alpha, float beta) {
    if (beta == 0.0f && Cv == NULL && P > FASTNET_PAIR_BLOCK) {
        for (ptrdiff_t p0 = 0; p0 < P; p0 += FASTNET_PAIR_BLOCK) {
            ptrdiff_t np = P - p0 < FASTNET_PAIR_BLOCK ? P - p0 : FASTNET_PAIR_BLOCK;
            for (ptrdiff_t j = 0; j < N; j += 32)
                for (ptrdiff_t i = 0; i < M; i += 8)
                    fastnet_tile_at(A, a_row, a_pair, B, ldb, C, ldc, NULL, 0, M, N, i, j, p0, np, alpha, beta,
                                    p0 == 0, p0 + np == P);
        }
        return;
    }
    for (ptrdiff_t i = 0; i < M; i += 8)
        for (ptrdiff_t j = 0; j < N; j += 32)
            fastnet_tile_at(A, a_row, a_pair, B, ldb, C, ldc, Cv, ldcv, M, N, i, j, 0, P, alpha, beta, 1, 1);
}

#else /* not built: the same names, never called (fastnet_bf16_supported() is 0) */

static void pairs_of_columns(const float *A, ptrdiff_t lda, ptrdiff_t rows, ptrdiff_t cols, uint32_t *out,
                             ptrdiff_t ldo) { (void)A; (void)lda; (void)rows; (void)cols; (void)out; (void)ldo; }
static void pairs_of_rows(const float *A, ptrdiff_t lda, ptrdiff_t rows, ptrdiff_t cols, uint32_t *out,
                          ptrdiff_t ldo) { (void)A; (void)lda; (void)rows; (void)cols; (void)out; (void)ldo; }
static void gemm_pairs(const uint32_t *A, ptrdiff_t a_row, ptrdiff_t a_pair, const uint32_t *B, ptrdiff_t ldb,
                       float *C, ptrdiff_t ldc, uint32_t *Cv, ptrdiff_t ldcv, ptrdiff_t M, ptrdiff_t N, ptrdiff_t P,
                       float alpha, float beta) {
    (void)A; (void)a_row; (void)a_pair; (void)B; (void)ldb; (void)C; (void)ldc; (void)Cv; (void)ldcv;
    (void)M; (void)N; (void)P; (void)alpha; (void)beta;
}

#endif /* FASTNET_BF16_BUILT */
#endif /* FASTNET_BF16_GEMM_H */
