/* The first layer's two bf16 products on AMX tiles, where the CPU has them (--precision bf16).
 *
 * The product of bf16_gemm.h's gemm_pairs -- C = beta C + alpha A B, A (M, P) and B (P, N) in
 * pairs, with the optional rewrite of C's rows as pairs into Cv -- on the tile unit of Intel's
 * AMX (Sapphire Rapids and later): TDPBF16PS multiplies a 16 x 32 bf16 tile by a 32 x 16 one
 * (16 x 16 pairs, "VNNI" layout) into 16 x 16 float32 sums, 16 times the multiply-adds of one
 * VDPBF16PS. A tile row is 16 consecutive words, so both products take A as rows of pairs:
 *
 *   the forward product, S = X W1t (gemm_pairs_amx): A = the batch's pairs of rows
 *     (pairs_of_rows), B = W1t's pairs down its columns;
 *   the update, W1t = keep W1t - step X^T G1, computed as its transpose W1 = G1^T X
 *     (gemm_pairs_amx_t): A = G1's pairs down its columns stored by column
 *     (pairs_of_columns_by_column below: row i holds unit i's pairs of batch rows), B = the
 *     batch's pairs down its columns (pairs_of_columns), the layout a gather makes a pair of
 *     rows at a time while they are in L1 -- where the batch as A, stored by column, was a
 *     transposing pack of the whole batch that cost as much as the product. Each 16 x 16 block
 *     of sums is transposed in registers on its way to W1t's rows.
 *
 * The sums run over P pairs in blocks of 16: the plan pads both operands with zero pairs to a
 * multiple of 16 (StepPlan.use_bf16), so one tile configuration serves a whole product. Four
 * blocks of C's sums are kept in tiles at a time (a row of 16 x 64), so four independent sums
 * are in flight. Every entry is summed by one tile, over its pairs in order, so a result never
 * depends on how the caller cuts C (threads, the two-core split). The unit flushes denormal
 * inputs and results to zero and adds each block's 32 products in its own order: the results
 * are its own, not gemm_pairs' bits, within the same tolerance of the exact sums
 * (tests/training/test_bf16.py).
 *
 * Linux gives a process the tile registers only on request (arch_prctl ARCH_REQ_XCOMP_PERM,
 * Linux 5.16+): fastnet_amx_ready() asks once; without them (another CPU, an older kernel), or
 * after fastnet_amx_use(0), plans keep gemm_pairs.
 */
#ifndef FASTNET_AMX_GEMM_H
#define FASTNET_AMX_GEMM_H

#include <stdlib.h>
#include <string.h>

#include "bf16_gemm.h"

#if FASTNET_BF16_BUILT && defined(__linux__) && (__GNUC__ >= 11)
#define FASTNET_AMX_BUILT 1
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define FASTNET_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define FASTNET_AMX_BUILT 0
#endif

static int fastnet_amx_state = -1;  /* -1: not asked yet; 0: no tiles; 1: tiles granted */
static int fastnet_amx_wanted = 1;  /* fastnet_amx_use(0): gemm_pairs everywhere (tests, benchmarks) */

/* 1 if this CPU has AMX-BF16 and the operating system gave this process its tiles. */
static int fastnet_amx_ready(void) {
#if FASTNET_AMX_BUILT
    if (fastnet_amx_state < 0) {
        unsigned int a, b, c, d;
        int ok = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 22)) && (d & (1u << 24)); /* AMX-BF16, AMX-TILE */
        ok = ok && fastnet_bf16_supported();  /* (the packers are AVX512_BF16's) */
        ok = ok && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
        fastnet_amx_state = ok;
    }
    return fastnet_amx_state;
#else
    return 0;
#endif
}

/* Whether gemm_pairs_fastest takes the tiles: wanted and ready. */
static int fastnet_amx_on(void) { return fastnet_amx_wanted && fastnet_amx_ready(); }

static void fastnet_amx_use(int on) { fastnet_amx_wanted = on; }

#if FASTNET_AMX_BUILT

/* Built at -O2 inside an -O3 extension: GCC's -O3 versions of these loops ran the AMX Xeon's
 * products 1.15x slower (forward 47 against 41 us, update 105 against 90). */
#pragma GCC push_options
#pragma GCC optimize("O2")

/* The palette-1 tile configuration (64 bytes, as LDTILECFG reads it). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} fastnet_tilecfg;

/* Load the configuration of tiles 0-7, rows[t] x words[t] 32-bit words a row (0: unused),
 * unless it is the one loaded now: LDTILECFG zeroes every tile. */
FASTNET_AMX static void fastnet_amx_config(fastnet_tilecfg *now, const int rows[8], const int words[8]) {
    fastnet_tilecfg cfg __attribute__((aligned(64)));
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++)
        if (rows[t] > 0 && words[t] > 0)
            cfg.rows[t] = (uint8_t)rows[t], cfg.colsb[t] = (uint16_t)(4 * words[t]);
    if (memcmp(&cfg, now, sizeof cfg) == 0)
        return;
    *now = cfg;
    __asm__ volatile("" : : "m"(cfg) : "memory");  /* every field stored before LDTILECFG reads them */
    _tile_loadconfig(&cfg);
}

/* OP(t) for the tiles t < nt (a tile is named by a constant). */
#define FASTNET_AMX_EACH(nt, OP) do { if ((nt) > 0) OP(0); if ((nt) > 1) OP(1); if ((nt) > 2) OP(2); if ((nt) > 3) OP(3); } while (0)

/* Rows i0..i0+mr-1 of C by up to four 16-column blocks from j0 (cols[t] columns each; only
 * the last can be narrower), summed over the P pairs (a multiple of 16) in blocks of 16: one A
 * tile (4), then each B tile of the row (5 and 7 in turn, the last block 6), into tiles 0-3.
 * out: 4 x 256 floats, block t's sums at out + 256 t (16 floats a row). */
FASTNET_AMX static void fastnet_amx_rows(fastnet_tilecfg *now, const uint32_t *A, ptrdiff_t lda, const uint32_t *B, ptrdiff_t ldb,
                                         ptrdiff_t P, int mr, int nt, const int cols[4], float *out) {
    int rows[8] = {0}, words[8] = {0};
    for (int t = 0; t < nt; t++)
        rows[t] = mr, words[t] = cols[t];
    rows[4] = mr, words[4] = 16;
    rows[5] = rows[7] = 16, words[5] = words[7] = 16;
    rows[6] = 16, words[6] = cols[nt - 1];
    fastnet_amx_config(now, rows, words);
#define FASTNET_AMX_ZERO(t) _tile_zero(t)
#define FASTNET_AMX_DOT(t) do { \
        if ((t) == nt - 1) { _tile_loadd(6, B + p * ldb + 16 * (t), 4 * ldb); _tile_dpbf16ps(t, 4, 6); } \
        else if ((t) % 2 == 0) { _tile_loadd(5, B + p * ldb + 16 * (t), 4 * ldb); _tile_dpbf16ps(t, 4, 5); } \
        else { _tile_loadd(7, B + p * ldb + 16 * (t), 4 * ldb); _tile_dpbf16ps(t, 4, 7); } } while (0)
#define FASTNET_AMX_STORE(t) _tile_stored(t, out + 256 * (t), 64)
    FASTNET_AMX_EACH(nt, FASTNET_AMX_ZERO);
    for (ptrdiff_t p = 0; p < P; p += 16) {
        _tile_loadd(4, A + p, 4 * lda);
        FASTNET_AMX_EACH(nt, FASTNET_AMX_DOT);
    }
    FASTNET_AMX_EACH(nt, FASTNET_AMX_STORE);
#undef FASTNET_AMX_ZERO
#undef FASTNET_AMX_DOT
#undef FASTNET_AMX_STORE
}

/* r[k] <- column k of the 16 x 16 block whose rows r holds (unpack in pairs, then in fours,
 * then swap 128-bit lanes twice). */
FASTNET_AMX static inline void fastnet_transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/* The update's A for the tiles: out[j * ldo + q] = (A[2q][j], A[2q+1][j]) for columns
 * j = c0..c1-1 and q < rows/2 rounded up (a zero partner for an odd row count): G1's pairs
 * down its columns, as pairs_of_columns makes them, stored by column -- row j of out is a row
 * of tile words. Blocks of 16 pairs by 16 columns, transposed in registers. */
FASTNET_AMX static void pairs_of_columns_by_column(const float *A, ptrdiff_t lda, ptrdiff_t rows, ptrdiff_t c0, ptrdiff_t c1,
                                                   uint32_t *out, ptrdiff_t ldo) {
    ptrdiff_t pairs = (rows + 1) / 2;
    __m512 w[16];
    for (ptrdiff_t j0 = c0; j0 < c1; j0 += 16) {
        __mmask16 cm = fastnet_lanes(c1 - j0);
        for (ptrdiff_t q0 = 0; q0 < pairs; q0 += 16) {
            for (int q = 0; q < 16; q++) {  /* w[q]: pair q0 + q of each of the 16 columns */
                ptrdiff_t r = 2 * (q0 + q);
                __m512 lo = r < rows ? _mm512_maskz_loadu_ps(cm, A + r * lda + j0) : _mm512_setzero_ps();
                __m512 hi = r + 1 < rows ? _mm512_maskz_loadu_ps(cm, A + (r + 1) * lda + j0) : _mm512_setzero_ps();
                w[q] = _mm512_castsi512_ps(fastnet_pair16(lo, hi));
            }
            fastnet_transpose16(w);  /* w[k]: column j0 + k, pairs q0.. */
            __mmask16 qm = fastnet_lanes(pairs - q0);
            for (int k = 0; k < 16 && j0 + k < c1; k++)
                _mm512_mask_storeu_epi32(out + (j0 + k) * ldo + q0, qm, _mm512_castps_si512(w[k]));
        }
    }
}

/* Rows i0..i0+mr-1 of C, columns j0..j0+nc-1, from their sums (16 floats a row): C = beta C +
 * alpha sums as gemm_pairs rounds it, then as pairs into Cv (i0 even). Two rows at a time, the
 * pair Cv takes, straight from memory (an array of 16 registers spilt at -O3: 3x slower). */
FASTNET_AMX static void fastnet_amx_finish(const float *sums, int mr, int nc, float *C, ptrdiff_t ldc, uint32_t *Cv,
                                           ptrdiff_t ldcv, ptrdiff_t i0, ptrdiff_t j0, float alpha, float beta) {
    __mmask16 m = fastnet_lanes(nc);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int r = 0; r < mr; r += 2) {
        int two = r + 1 < mr;  /* else the last row of an odd count, its pair's partner zero */
        float *c0 = C + (i0 + r) * ldc + j0, *c1 = c0 + ldc;
        __m512 x0 = _mm512_mul_ps(va, _mm512_load_ps(sums + 16 * r));
        __m512 x1 = two ? _mm512_mul_ps(va, _mm512_load_ps(sums + 16 * (r + 1))) : _mm512_setzero_ps();
        if (beta != 0.0f) {
            x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c0), x0);
            if (two)
                x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c1), x1);
        }
        _mm512_mask_storeu_ps(c0, m, x0);
        if (two)
            _mm512_mask_storeu_ps(c1, m, x1);
        if (Cv)
            _mm512_mask_storeu_epi32(Cv + ((i0 + r) / 2) * ldcv + j0, m, fastnet_pair16(x0, x1));
    }
}

/* gemm_pairs on tiles, for A as rows of pairs (word (i, p) at A[i * lda + p]) and P a multiple
 * of 16 (the caller pads the sum with zero pairs): C (M, N) = beta C + alpha A B, B (P, N) in
 * pairs down its columns, and with Cv C's new rows again as pairs (M from an even row). */
FASTNET_AMX static void gemm_pairs_amx(const uint32_t *A, ptrdiff_t lda, const uint32_t *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                                       uint32_t *Cv, ptrdiff_t ldcv, ptrdiff_t M, ptrdiff_t N, ptrdiff_t P, float alpha, float beta) {
    /* The sums' buffer is the thread's own, not on the stack: from a stack buffer the finish's
     * loads of the sums just stored from the tiles waited (the 3-layer step on a ready batch,
     * one thread: 482 against 330 us a step on the AMX Xeon). */
    static __thread float out[4 * 256] __attribute__((aligned(64)));
    fastnet_tilecfg now;
    memset(&now, 0, sizeof now);
    for (ptrdiff_t j0 = 0; j0 < N; j0 += 64)  /* 16 rows of A by up to 64 columns of B at a time */
        for (ptrdiff_t i0 = 0; i0 < M; i0 += 16) {
            int mr = (int)(M - i0 < 16 ? M - i0 : 16), nt = 0, cols[4] = {0, 0, 0, 0};
            for (; nt < 4 && j0 + 16 * nt < N; nt++)
                cols[nt] = (int)(N - j0 - 16 * nt < 16 ? N - j0 - 16 * nt : 16);
            fastnet_amx_rows(&now, A + i0 * lda, lda, B + j0, ldb, P, mr, nt, cols, out);
            for (int t = 0; t < nt; t++)
                fastnet_amx_finish(out + 256 * t, mr, cols[t], C, ldc, Cv, ldcv, i0, j0 + 16 * t, alpha, beta);
        }
    _tile_release();  /* the tiles back to their initial state: nothing for the OS to save */
}

/* The update's sums: up to four 16-row blocks of C^T (mr[t] rows each, only the last can be
 * shorter) from row i0 by nc <= 16 columns from j0, summed over the P pairs (a multiple of 16)
 * in blocks of 16: one B tile (4), then each A tile of the column (5 and 7 in turn, the last
 * block 6), into tiles 0-3. out as fastnet_amx_rows': block t's sums at out + 256 t. */
FASTNET_AMX static void fastnet_amx_cols(fastnet_tilecfg *now, const uint32_t *A, ptrdiff_t lda, const uint32_t *B, ptrdiff_t ldb,
                                         ptrdiff_t P, int nt, const int mr[4], int nc, float *out) {
    int rows[8] = {0}, words[8] = {0};
    for (int t = 0; t < nt; t++)
        rows[t] = mr[t], words[t] = nc;
    rows[4] = 16, words[4] = nc;
    rows[5] = rows[7] = 16, words[5] = words[7] = 16;
    rows[6] = mr[nt - 1], words[6] = 16;
    fastnet_amx_config(now, rows, words);
#define FASTNET_AMX_ZERO(t) _tile_zero(t)
#define FASTNET_AMX_DOT(t) do { \
        if ((t) == nt - 1) { _tile_loadd(6, A + 16 * (t) * lda + p, 4 * lda); _tile_dpbf16ps(t, 6, 4); } \
        else if ((t) % 2 == 0) { _tile_loadd(5, A + 16 * (t) * lda + p, 4 * lda); _tile_dpbf16ps(t, 5, 4); } \
        else { _tile_loadd(7, A + 16 * (t) * lda + p, 4 * lda); _tile_dpbf16ps(t, 7, 4); } } while (0)
#define FASTNET_AMX_STORE(t) _tile_stored(t, out + 256 * (t), 64)
    FASTNET_AMX_EACH(nt, FASTNET_AMX_ZERO);
    for (ptrdiff_t p = 0; p < P; p += 16) {
        _tile_loadd(4, B + p * ldb, 4 * ldb);
        FASTNET_AMX_EACH(nt, FASTNET_AMX_DOT);
    }
    FASTNET_AMX_EACH(nt, FASTNET_AMX_STORE);
#undef FASTNET_AMX_ZERO
#undef FASTNET_AMX_DOT
#undef FASTNET_AMX_STORE
}

/* fastnet_amx_finish for sums of C^T: the block (16 floats a row, its row i is C's column
 * i0 + i, its column k C's row j0 + k) transposed in registers, then C's rows j0..j0+nc-1,
 * columns i0..i0+mr-1 = beta C + alpha sums as fastnet_amx_finish rounds them, and as pairs
 * of rows into Cv (j0 even). */
FASTNET_AMX static void fastnet_amx_finish_t(const float *sums, int mr, int nc, float *C, ptrdiff_t ldc, uint32_t *Cv,
                                             ptrdiff_t ldcv, ptrdiff_t i0, ptrdiff_t j0, float alpha, float beta) {
    __m512 r[16];
    __mmask16 m = fastnet_lanes(mr);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int k = 0; k < 16; k++)
        r[k] = _mm512_load_ps(sums + 16 * k);
    fastnet_transpose16(r);  /* r[k]: C's row j0 + k */
    for (int k = 0; k < nc; k += 2) {
        int two = k + 1 < nc;  /* else the last row of an odd count, its pair's partner zero */
        float *c0 = C + (j0 + k) * ldc + i0, *c1 = c0 + ldc;
        __m512 x0 = _mm512_mul_ps(va, r[k]);
        __m512 x1 = two ? _mm512_mul_ps(va, r[k + 1]) : _mm512_setzero_ps();
        if (beta != 0.0f) {
            x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c0), x0);
            if (two)
                x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c1), x1);
        }
        _mm512_mask_storeu_ps(c0, m, x0);
        if (two)
            _mm512_mask_storeu_ps(c1, m, x1);
        if (Cv)
            _mm512_mask_storeu_epi32(Cv + ((j0 + k) / 2) * ldcv + i0, m, fastnet_pair16(x0, x1));
    }
}

/* Rows c0..c1-1 of C (N x M) = beta C + alpha (A B)^T, with C's new rows again as pairs into
 * Cv (c0 even): A (M, P) as rows of pairs (lda words), B (P, N) pairs down its columns (ldb
 * words a row), P a multiple of 16. Every entry is summed by one tile over its pairs in order,
 * as gemm_pairs_amx sums the product's transpose: the same bits, however C's rows are cut. */
FASTNET_AMX static void gemm_pairs_amx_t(const uint32_t *A, ptrdiff_t lda, const uint32_t *B, ptrdiff_t ldb, float *C,
                                         ptrdiff_t ldc, uint32_t *Cv, ptrdiff_t ldcv, ptrdiff_t M, ptrdiff_t c0, ptrdiff_t c1,
                                         ptrdiff_t P, float alpha, float beta) {
    static __thread float out[4 * 256] __attribute__((aligned(64)));  /* (as gemm_pairs_amx's) */
    fastnet_tilecfg now;
    memset(&now, 0, sizeof now);
    for (ptrdiff_t j0 = c0; j0 < c1; j0 += 16) {  /* 16 columns of B by up to 64 rows of A at a time */
        int nc = (int)(c1 - j0 < 16 ? c1 - j0 : 16);
        for (ptrdiff_t i0 = 0; i0 < M; i0 += 64) {
            int nt = 0, mr[4] = {0, 0, 0, 0};
            for (; nt < 4 && i0 + 16 * nt < M; nt++)
                mr[nt] = (int)(M - i0 - 16 * nt < 16 ? M - i0 - 16 * nt : 16);
            fastnet_amx_cols(&now, A + i0 * lda, lda, B + j0, ldb, P, nt, mr, nc, out);
            for (int t = 0; t < nt; t++)
                fastnet_amx_finish_t(out + 256 * t, mr[t], nc, C, ldc, Cv, ldcv, i0 + 16 * t, j0, alpha, beta);
        }
    }
    _tile_release();
}

#pragma GCC pop_options

#endif /* FASTNET_AMX_BUILT */

#if !FASTNET_AMX_BUILT  /* the same names, never called (fastnet_amx_ready() is 0) */
static void pairs_of_columns_by_column(const float *A, ptrdiff_t lda, ptrdiff_t rows, ptrdiff_t c0, ptrdiff_t c1, uint32_t *out,
                                       ptrdiff_t ldo) { (void)A; (void)lda; (void)rows; (void)c0; (void)c1; (void)out; (void)ldo; }
static void gemm_pairs_amx(const uint32_t *A, ptrdiff_t lda, const uint32_t *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                           uint32_t *Cv, ptrdiff_t ldcv, ptrdiff_t M, ptrdiff_t N, ptrdiff_t P, float alpha, float beta) {
    (void)A; (void)lda; (void)B; (void)ldb; (void)C; (void)ldc; (void)Cv; (void)ldcv; (void)M; (void)N; (void)P;
    (void)alpha; (void)beta;
}
static void gemm_pairs_amx_t(const uint32_t *A, ptrdiff_t lda, const uint32_t *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                             uint32_t *Cv, ptrdiff_t ldcv, ptrdiff_t M, ptrdiff_t c0, ptrdiff_t c1, ptrdiff_t P, float alpha,
                             float beta) {
    (void)A; (void)lda; (void)B; (void)ldb; (void)C; (void)ldc; (void)Cv; (void)ldcv; (void)M; (void)c0; (void)c1; (void)P;
    (void)alpha; (void)beta;
}
#endif

#endif /* FASTNET_AMX_GEMM_H */
