/* float32 -> bfloat16 for a library's bf16 product (MKL's cblas_gemm_bf16bf16f32, which takes
 * plain bf16 matrices; --precision bf16 with --gemm mkl, and on CPUs without AVX512_BF16).
 *
 * Round to nearest, ties to even, as VCVTNE2PS2BF16 and every bf16 library round: add 0x7FFF
 * plus the lowest kept bit, then keep the upper 16 bits. A NaN stays a NaN (its quiet bit is
 * set first, so the carry cannot turn it into an infinity). Portable C, integer arithmetic
 * only: the compiler vectorises the loop for whatever the build targets.
 */
#ifndef FASTNET_BF16_ROUND_H
#define FASTNET_BF16_ROUND_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cpu_clones.h"

static inline uint16_t fastnet_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)((u | 0x00400000u) >> 16);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* out[i][j] = bf16(A[i][j]) for rows x cols, lda and ldo the row strides. The loop is built
 * once per instruction set and the CPU's is taken at load (cpu_clones.h): baseline x86-64 has
 * no unsigned 32-to-16-bit pack, and its build ran at ~0.5 ns an entry (the batch's 307,200:
 * 142 us on the AMX Xeon, more than MKL's bf16 product saved), the AVX-512 build at 51 us.
 * Integer arithmetic: every build gives the same bits. */
FASTNET_CLONES static void bf16_rows(const float *A, ptrdiff_t lda, ptrdiff_t rows, ptrdiff_t cols, uint16_t *out, ptrdiff_t ldo) {
    for (ptrdiff_t i = 0; i < rows; i++) {
        const float *a = A + i * lda;
        uint16_t *o = out + i * ldo;
        for (ptrdiff_t j = 0; j < cols; j++)
            o[j] = fastnet_bf16(a[j]);
    }
}

#endif /* FASTNET_BF16_ROUND_H */
