/* FASTNET_CLONES: build a loop once per instruction set and take the CPU's at load (GCC's
 * target_clones, resolved by an ifunc): AVX-512 (x86-64-v4; AVX-512F before GCC 12, 1.4x
 * slower for the bf16 packs, which want BW's 16-bit lanes), AVX2 and baseline x86-64. For the
 * few loops that stay slow in the extension's portable baseline build (kernels/bf16_round.h,
 * kernels/normalise_row.h), and only for loops whose arithmetic no instruction set can change
 * (nothing to fuse into an FMA or to reorder), so every build gives the same bits. Elsewhere
 * (other compilers, other machines) the loop is built once, as the rest of the extension. */
#ifndef FASTNET_CPU_CLONES_H
#define FASTNET_CPU_CLONES_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define FASTNET_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 6
#define FASTNET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTNET_CLONES
#endif

#endif /* FASTNET_CPU_CLONES_H */
