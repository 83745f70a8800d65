/* One image row normalised as the data loader normalises it (fastnet/data/normalise.py):
 * out[j] = (double(u[j]) - mean[j]) * inv_std[j], rounded once to out's type.
 *
 * The gather of every fused step runs this on each pixel of the next batch (307,200 a batch
 * of 100), on the spare core or, on two threads, between the products. Built for baseline
 * x86-64 the loop converts and multiplies two doubles an instruction (~0.7 ns a pixel, 212 us
 * a batch on the AMX Xeon); it is also built for AVX-512 and AVX2 and the CPU's build is
 * taken at load (cpu_clones.h: 104 us a batch there). A subtraction, then a multiplication, each rounded in
 * double, then one rounding to out's type: no step can be fused or reordered, so every build
 * gives the same bits.
 */
#ifndef FASTNET_NORMALISE_ROW_H
#define FASTNET_NORMALISE_ROW_H

#include <stddef.h>

#include "cpu_clones.h"

FASTNET_CLONES static void normalise_row_f(const unsigned char *u, const double *mean, const double *inv_std,
                                           float *out, ptrdiff_t d) {
    for (ptrdiff_t j = 0; j < d; j++)
        out[j] = (float)(((double)u[j] - mean[j]) * inv_std[j]);
}

FASTNET_CLONES static void normalise_row_d(const unsigned char *u, const double *mean, const double *inv_std,
                                           double *out, ptrdiff_t d) {
    for (ptrdiff_t j = 0; j < d; j++)
        out[j] = ((double)u[j] - mean[j]) * inv_std[j];
}

#endif /* FASTNET_NORMALISE_ROW_H */
