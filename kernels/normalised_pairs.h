/* A pair of image rows normalised and packed as a bf16 step's two copies of its batch, in one
 * pass: what normalise_row_f (normalise_row.h), then pairs_of_rows and pairs_of_columns
 * (bf16_gemm.h) make of them, with the same arithmetic, so the same bits.
 *
 * The gather beside a one-core bf16 step makes both copies of each row of the next batch: the
 * forward product's (pairs along the row) and the update's (pairs of rows down the columns).
 * Apart, the three loops read the normalisation's mean and 1/std (16 bytes a pixel) once a
 * row and the float rows back twice; here each 32 columns of both rows are normalised in
 * registers from one read of their mean and 1/std, and every copy is written from there.
 * Per pixel the arithmetic is normalise_row_f's -- a subtraction, then a multiplication, each
 * rounded in double, then one rounding to float32 (VCVTPD2PS, to nearest as the scalar cast)
 * -- and each bf16 word fastnet_pair16's, as the packers round.
 */
#ifndef FASTNET_NORMALISED_PAIRS_H
#define FASTNET_NORMALISED_PAIRS_H

#include <stddef.h>
#include <stdint.h>

#include "bf16_gemm.h"

#if FASTNET_BF16_BUILT

/* 16 pixels u[0..n) (n <= 16; the rest 0) normalised: (float)(((double)u - mean) * inv_std). */
FASTNET_BF16 static inline __m512 fastnet_normalised16(const uint8_t *u, const double *mean, const double *inv_std,
                                                      ptrdiff_t n) {
    __mmask16 m = fastnet_lanes(n);
    __m512i w = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, u));
    __mmask8 m0 = (__mmask8)(m & 0xFF), m1 = (__mmask8)(m >> 8);
    __m512d lo = _mm512_mul_pd(_mm512_sub_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(w)), _mm512_maskz_loadu_pd(m0, mean)),
                               _mm512_maskz_loadu_pd(m0, inv_std));
    __m512d hi = _mm512_mul_pd(_mm512_sub_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(w, 1)),
                                             _mm512_maskz_loadu_pd(m1, mean + 8)),
                               _mm512_maskz_loadu_pd(m1, inv_std + 8));
    __m256 flo = _mm512_cvtpd_ps(lo), fhi = _mm512_cvtpd_ps(hi);
    __m512d both = _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(flo)), _mm256_castps_pd(fhi), 1);
    return _mm512_maskz_mov_ps(m, _mm512_castpd_ps(both));
}

/* Rows u0 and u1 (u1 NULL: u0 is the batch's last row, alone) of d pixels: the float rows to
 * x0, x1 (if x0 is not NULL), each row's pairs along it to p0, p1 (pairs_of_rows' words), and
 * the two rows' pairs down the columns to cols (pairs_of_columns' word row: u1's half 0 when
 * it is NULL). */
FASTNET_BF16 static void normalised_pairs(const uint8_t *u0, const uint8_t *u1, const double *mean, const double *inv_std,
                                          ptrdiff_t d, float *x0, float *x1, uint32_t *p0, uint32_t *p1, uint32_t *cols) {
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
    for (ptrdiff_t c = 0; c < d; c += 32) {
        ptrdiff_t n = d - c;
        __mmask16 m0 = fastnet_lanes(n), m1 = fastnet_lanes(n - 16), mw = fastnet_lanes((n + 1) / 2);
        __m512 a0 = fastnet_normalised16(u0 + c, mean + c, inv_std + c, n);
        __m512 a1 = fastnet_normalised16(u0 + c + 16, mean + c + 16, inv_std + c + 16, n - 16);
        __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
        if (u1) {
            b0 = fastnet_normalised16(u1 + c, mean + c, inv_std + c, n);
            b1 = fastnet_normalised16(u1 + c + 16, mean + c + 16, inv_std + c + 16, n - 16);
        }
        if (x0) {
            _mm512_mask_storeu_ps(x0 + c, m0, a0);
            _mm512_mask_storeu_ps(x0 + c + 16, m1, a1);
            if (u1) {
                _mm512_mask_storeu_ps(x1 + c, m0, b0);
                _mm512_mask_storeu_ps(x1 + c + 16, m1, b1);
            }
        }
        /* pairs along each row: (x[c], x[c+1]), (x[c+2], x[c+3]), ... */
        _mm512_mask_storeu_epi32(p0 + c / 2, mw, fastnet_pair16(_mm512_permutex2var_ps(a0, evens, a1),
                                                                _mm512_permutex2var_ps(a0, odds, a1)));
        if (u1)
            _mm512_mask_storeu_epi32(p1 + c / 2, mw, fastnet_pair16(_mm512_permutex2var_ps(b0, evens, b1),
                                                                    _mm512_permutex2var_ps(b0, odds, b1)));
        /* pairs down the columns: (u0's x[j], u1's x[j]) */
        _mm512_mask_storeu_epi32(cols + c, m0, fastnet_pair16(a0, b0));
        _mm512_mask_storeu_epi32(cols + c + 16, m1, fastnet_pair16(a1, b1));
    }
}

#else /* not built: never called (fastnet_bf16_supported() is 0) */

static void normalised_pairs(const uint8_t *u0, const uint8_t *u1, const double *mean, const double *inv_std,
                             ptrdiff_t d, float *x0, float *x1, uint32_t *p0, uint32_t *p1, uint32_t *cols) {
    (void)u0; (void)u1; (void)mean; (void)inv_std; (void)d; (void)x0; (void)x1; (void)p0; (void)p1; (void)cols;
}

#endif /* FASTNET_BF16_BUILT */
#endif /* FASTNET_NORMALISED_PAIRS_H */
