/* int4 (q4 block 32) matrix products: layout and entry points are described in q4_matmul.c. */
#ifndef MINISTRAL_ROS_Q4_MATMUL_H
#define MINISTRAL_ROS_Q4_MATMUL_H

#include <stddef.h>
#include <stdint.h>

/* What the shared library exports (it is built with hidden visibility): the entry points below. */
#if defined(__GNUC__)
#define Q4_API __attribute__((visibility("default")))
#else
#define Q4_API
#endif

#define Q4_BLOCK 32
#define Q4_SUPER 512 /* 16 blocks */
#define Q4_ISA_SCALAR 0
#define Q4_ISA_AVX2 1
#define Q4_ISA_AVX512_VNNI 2

/* One product's operands once its activations are quantized (q4_prepare); columns are computed by
 * q4_gemm_columns over any split of [0, n). */
typedef struct Q4Problem {
  int64_t m, k, n, supers;
  const uint8_t *quants;
  const uint16_t *scales;
  float *y;
  int64_t ldy;
  int8_t *qa;
  float *sa, *sum8;
} Q4Problem;

int64_t q4_super_blocks(int64_t k);
float q4_half_to_float(uint16_t h);
size_t q4_activation_bytes(int64_t m, int64_t k);
void q4_prepare(Q4Problem *p, const float *x, int64_t m, int64_t k, int64_t n, const uint8_t *quants,
                const uint16_t *scales, float *y, int64_t ldy, void *workspace);
void q4_gemm_columns(const Q4Problem *p, int64_t col_begin, int64_t col_end);

/* Whole product on the calling thread for columns [col_begin, col_end); 0, or -1 if out of memory. */
Q4_API int q4_matmul(const float *x, int64_t m, int64_t k, int64_t n, const uint8_t *quants, const uint16_t *scales,
              float *y, int64_t col_begin, int64_t col_end);

Q4_API int q4_best_isa(void);
Q4_API int q4_active_isa(void);
/* Force an instruction set (-1: the best this CPU has); returns the one in use, or -1 if unsupported. */
Q4_API int q4_set_isa(int isa);

#endif
