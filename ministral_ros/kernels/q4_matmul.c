/*
 * int4 matrix products for the CPU decode step: Y[M, N] = X[M, K] @ W[N, K]^T.
 *
 * Numerics: blocks of 32 weights along K share one float16 scale, weight = (nibble - 8) * scale (4.5 bits per
 * weight, the bytes llama.cpp's Q4_0 reads). Activations are quantized per block of 32 to int8 with scale
 * max|x| / 127 (round to nearest even, as onnxruntime's int8-compute MatMulNBits does), so a block's product is
 *   sa * sw * (sum_j q_j * u_j - 8 * sum_j q_j)   with u_j the unsigned nibble,
 * which maps onto VNNI's vpdpbusd (AVX-512) and AVX2's vpmaddubsw (unsigned by signed bytes).
 *
 * Weight layout: K is padded to a multiple of 512 (KS = K_padded / 512 super-blocks of 16 blocks; padding is
 * nibble 8 with scale 0).
 *   quants  uint8   [N, KS, 8, 32]  super-block s, group g (elements 4g..4g+3 of each block), byte 4i + e:
 *                                   low nibble  = block 16s + i,     element 4g + e   (i = 0..7)
 *                                   high nibble = block 16s + i + 8, element 4g + e
 *   scales  float16 [N, KS * 16]    one per block
 * Worked example: weight row n, K index 517 is block 16 (super-block 1, i = 0), element 5 = group 1, e = 1:
 * the low nibble of byte n * KS * 256 + 1 * 256 + 1 * 32 + 0 * 4 + 1. K index 773 (block 24, i = 8, element 5)
 * is the high nibble of the same byte.
 * Unpacking one group's 32 bytes (low nibbles, then high nibbles) gives 64 bytes whose 32-bit lane i holds
 * four elements of block i, so eight vpdpbusd into one register leave block i's whole dot product in lane i:
 * no float work until the super-block ends. Activations are laid out the same way (q4_prepare).
 *
 * Threads: the caller splits the output columns (q4_gemm_columns takes a column range); a call only reads
 * the shared inputs and writes its own columns.
 */
#include "q4_matmul.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Q4_PORTABLE builds only the portable C path, as on a CPU other than x86-64 (tests build it that way). */
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(Q4_PORTABLE)
#include <immintrin.h>
#define Q4_X86 1
#endif

static int forced_isa = -1;

float q4_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {
      float value = ldexpf((float)mantissa, -24);
      memcpy(&bits, &value, sizeof bits);
      bits |= sign;
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float out;
  memcpy(&out, &bits, sizeof out);
  return out;
}

Q4_API int q4_best_isa(void) {
#ifdef Q4_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) {
    return Q4_ISA_AVX512_VNNI;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    return Q4_ISA_AVX2;
  }
#endif
  return Q4_ISA_SCALAR;
}

Q4_API int q4_set_isa(int isa) {
  if (isa < 0) {
    forced_isa = -1;
    return q4_best_isa();
  }
  if (isa > q4_best_isa()) {
    return -1;
  }
  forced_isa = isa;
  return isa;
}

Q4_API int q4_active_isa(void) { return forced_isa >= 0 ? forced_isa : q4_best_isa(); }

int64_t q4_super_blocks(int64_t k) { return (k + Q4_SUPER - 1) / Q4_SUPER; }

size_t q4_activation_bytes(int64_t m, int64_t k) {
  int64_t supers = q4_super_blocks(k);
  /* per row and super-block: 512 int8 values, 16 scales, 16 times 8 * sum; 64 bytes for alignment */
  return (size_t)(m * supers * (Q4_SUPER + 32 * (int64_t)sizeof(float)) + 64);
}

/* Activations per row and super-block: 512 int8 in the weights' lane order (group g, block i, element e at
 * byte 64g + 4i + e), then 16 block scales, then 16 values of 8 * sum(q) as floats. */
static void quantize_activations(const float *x, int64_t m, int64_t k, int8_t *qa, float *sa, float *sum8) {
  int64_t supers = q4_super_blocks(k);
  for (int64_t row = 0; row < m; ++row) {
    const float *xr = x + row * k;
    for (int64_t s = 0; s < supers; ++s) {
      int8_t *dst = qa + (row * supers + s) * Q4_SUPER;
      float *s_dst = sa + (row * supers + s) * 16;
      float *c_dst = sum8 + (row * supers + s) * 16;
      for (int i = 0; i < 16; ++i) {
        int64_t start = (s * 16 + i) * Q4_BLOCK;
        int64_t count = k - start < 0 ? 0 : (k - start < Q4_BLOCK ? k - start : Q4_BLOCK);
        float amax = 0.0f;
        for (int64_t j = 0; j < count; ++j) {
          float magnitude = fabsf(xr[start + j]);
          amax = magnitude > amax ? magnitude : amax;
        }
        float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < Q4_BLOCK; ++j) {
          int value = j < count ? (int)nearbyintf(xr[start + j] * inverse) : 0;
          value = value > 127 ? 127 : (value < -127 ? -127 : value);
          dst[(j / 4) * 64 + i * 4 + (j % 4)] = (int8_t)value;
          sum += value;
        }
        s_dst[i] = amax / 127.0f;
        c_dst[i] = 8.0f * (float)sum;
      }
    }
  }
}

static void columns_scalar(const Q4Problem *p, int64_t col_begin, int64_t col_end) {
  int64_t supers = p->supers;
  for (int64_t n = col_begin; n < col_end; ++n) {
    for (int64_t row = 0; row < p->m; ++row) {
      float total = 0.0f;
      for (int64_t s = 0; s < supers; ++s) {
        const uint8_t *wq = p->quants + (n * supers + s) * (Q4_SUPER / 2);
        const uint16_t *ws = p->scales + (n * supers + s) * 16;
        const int8_t *a = p->qa + (row * supers + s) * Q4_SUPER;
        const float *sa = p->sa + (row * supers + s) * 16;
        const float *sum8 = p->sum8 + (row * supers + s) * 16;
        int dot[16] = {0};
        for (int g = 0; g < 8; ++g) {
          for (int byte = 0; byte < 32; ++byte) {
            int i = byte / 4;
            uint8_t packed = wq[g * 32 + byte];
            dot[i] += (packed & 0x0f) * a[g * 64 + byte];
            dot[i + 8] += (packed >> 4) * a[g * 64 + 32 + byte];
          }
        }
        for (int i = 0; i < 16; ++i) {
          total += q4_half_to_float(ws[i]) * sa[i] * ((float)dot[i] - sum8[i]);
        }
      }
      p->y[row * p->ldy + n] = total;
    }
  }
}

#ifdef Q4_X86
#define Q4_TILE 4
#define Q4_ROW_BLOCK 8

/* AVX2: each group's 32 bytes give blocks 0-7 (low nibbles) and 8-15 (high nibbles) as two 8-lane sums. */
__attribute__((target("avx2,fma,f16c"))) static void columns_avx2(const Q4Problem *p, int64_t col_begin,
                                                                  int64_t col_end) {
  int64_t supers = p->supers;
  const __m256i mask = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t n = col_begin; n < col_end; ++n) {
    for (int64_t row = 0; row < p->m; ++row) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t s = 0; s < supers; ++s) {
        const uint8_t *wq = p->quants + (n * supers + s) * (Q4_SUPER / 2);
        const int8_t *a = p->qa + (row * supers + s) * Q4_SUPER;
        __m256i low_sum = _mm256_setzero_si256();
        __m256i high_sum = _mm256_setzero_si256();
        for (int g = 0; g < 8; ++g) {
          __m256i packed = _mm256_loadu_si256((const __m256i *)(wq + g * 32));
          __m256i low = _mm256_and_si256(packed, mask);
          __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
          __m256i a_low = _mm256_loadu_si256((const __m256i *)(a + g * 64));
          __m256i a_high = _mm256_loadu_si256((const __m256i *)(a + g * 64 + 32));
          low_sum = _mm256_add_epi32(low_sum, _mm256_madd_epi16(_mm256_maddubs_epi16(low, a_low), ones));
          high_sum = _mm256_add_epi32(high_sum, _mm256_madd_epi16(_mm256_maddubs_epi16(high, a_high), ones));
        }
        const uint16_t *ws = p->scales + (n * supers + s) * 16;
        const float *sa = p->sa + (row * supers + s) * 16;
        const float *sum8 = p->sum8 + (row * supers + s) * 16;
        __m256 scale_low = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)ws)), _mm256_loadu_ps(sa));
        __m256 scale_high =
            _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(ws + 8))), _mm256_loadu_ps(sa + 8));
        acc = _mm256_fmadd_ps(scale_low, _mm256_sub_ps(_mm256_cvtepi32_ps(low_sum), _mm256_loadu_ps(sum8)), acc);
        acc = _mm256_fmadd_ps(scale_high, _mm256_sub_ps(_mm256_cvtepi32_ps(high_sum), _mm256_loadu_ps(sum8 + 8)),
                              acc);
      }
      __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
      sum4 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
      sum4 = _mm_add_ss(sum4, _mm_movehdup_ps(sum4));
      p->y[row * p->ldy + n] = _mm_cvtss_f32(sum4);
    }
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c"))) static void columns_avx512(
    const Q4Problem *p, int64_t col_begin, int64_t col_end);

/* The unsigned nibbles of one group (32 bytes) in the activations' lane order. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) static inline __m512i nibbles_avx512(
    const uint8_t *group, __m512i shifts, __m512i mask) {
  __m512i both = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)group));
  return _mm512_and_si512(_mm512_srlv_epi16(both, shifts), mask);
}

/* One activation row (decode): two weight columns at a time, so each activation load serves both and four
 * independent vpdpbusd chains are in flight. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c"))) static void row_avx512(
    const Q4Problem *p, int64_t col_begin, int64_t col_end) {
  int64_t supers = p->supers;
  const __m512i mask = _mm512_set1_epi8(0x0f);
  const __m512i shifts = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
  const int64_t stride = supers * (Q4_SUPER / 2);
  int64_t n = col_begin;
  for (; n + 2 <= col_end; n += 2) {
    const uint8_t *w0 = p->quants + n * stride;
    const uint8_t *w1 = w0 + stride;
    const uint16_t *s0 = p->scales + n * supers * 16;
    const uint16_t *s1 = s0 + supers * 16;
    __m512 acc0 = _mm512_setzero_ps();
    __m512 acc1 = _mm512_setzero_ps();
    for (int64_t s = 0; s < supers; ++s) {
      const int8_t *a = p->qa + s * Q4_SUPER;
      const uint8_t *g0 = w0 + s * (Q4_SUPER / 2);
      const uint8_t *g1 = w1 + s * (Q4_SUPER / 2);
      __m512i d0a = _mm512_setzero_si512(), d0b = _mm512_setzero_si512();
      __m512i d1a = _mm512_setzero_si512(), d1b = _mm512_setzero_si512();
      for (int g = 0; g < 8; g += 2) {
        __m512i a0 = _mm512_loadu_si512((const void *)(a + g * 64));
        __m512i a1 = _mm512_loadu_si512((const void *)(a + g * 64 + 64));
        d0a = _mm512_dpbusd_epi32(d0a, nibbles_avx512(g0 + g * 32, shifts, mask), a0);
        d0b = _mm512_dpbusd_epi32(d0b, nibbles_avx512(g0 + g * 32 + 32, shifts, mask), a1);
        d1a = _mm512_dpbusd_epi32(d1a, nibbles_avx512(g1 + g * 32, shifts, mask), a0);
        d1b = _mm512_dpbusd_epi32(d1b, nibbles_avx512(g1 + g * 32 + 32, shifts, mask), a1);
      }
      __m512 sa = _mm512_loadu_ps(p->sa + s * 16);
      __m512 sum8 = _mm512_loadu_ps(p->sum8 + s * 16);
      __m512 sw0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s0 + s * 16)));
      __m512 sw1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s1 + s * 16)));
      __m512 dot0 = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(d0a, d0b)), sum8);
      __m512 dot1 = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(d1a, d1b)), sum8);
      acc0 = _mm512_fmadd_ps(_mm512_mul_ps(sw0, sa), dot0, acc0);
      acc1 = _mm512_fmadd_ps(_mm512_mul_ps(sw1, sa), dot1, acc1);
    }
    p->y[n] = _mm512_reduce_add_ps(acc0);
    p->y[n + 1] = _mm512_reduce_add_ps(acc1);
  }
  if (n < col_end) {
    Q4Problem single = *p;
    columns_avx512(&single, n, col_end);
  }
}

/*
 * AVX-512 VNNI, several activation rows (prefill): a tile of `rows` activation rows (up to Q4_TILE) by `cols`
 * weight columns (1 or 2), both constants after inlining so every accumulator lives in a register. Each
 * unpacked weight group serves every row of the tile and each activation load every column; per super-block
 * eight vpdpbusd per (row, column) leave each block's dot product in its lane, then one float update.
 */
__attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c"))) static inline void
tile_avx512(const Q4Problem *p, int64_t n, int64_t row0, const int rows, const int cols) {
  int64_t supers = p->supers;
  const __m512i mask = _mm512_set1_epi8(0x0f);
  const __m512i shifts = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
  __m512 acc[Q4_TILE][2];
  for (int t = 0; t < rows; ++t) {
    for (int c = 0; c < cols; ++c) {
      acc[t][c] = _mm512_setzero_ps();
    }
  }
  for (int64_t s = 0; s < supers; ++s) {
    __m512i dot[Q4_TILE][2];
    for (int t = 0; t < rows; ++t) {
      for (int c = 0; c < cols; ++c) {
        dot[t][c] = _mm512_setzero_si512();
      }
    }
    for (int g = 0; g < 8; ++g) {
      __m512i u[2];
      for (int c = 0; c < cols; ++c) {
        u[c] = nibbles_avx512(p->quants + ((n + c) * supers + s) * (Q4_SUPER / 2) + g * 32, shifts, mask);
      }
      for (int t = 0; t < rows; ++t) {
        __m512i a = _mm512_loadu_si512((const void *)(p->qa + ((row0 + t) * supers + s) * Q4_SUPER + g * 64));
        for (int c = 0; c < cols; ++c) {
          dot[t][c] = _mm512_dpbusd_epi32(dot[t][c], u[c], a);
        }
      }
    }
    __m512 sw[2];
    for (int c = 0; c < cols; ++c) {
      sw[c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p->scales + ((n + c) * supers + s) * 16)));
    }
    for (int t = 0; t < rows; ++t) {
      int64_t offset = ((row0 + t) * supers + s) * 16;
      __m512 sa = _mm512_loadu_ps(p->sa + offset);
      __m512 sum8 = _mm512_loadu_ps(p->sum8 + offset);
      for (int c = 0; c < cols; ++c) {
        __m512 value = _mm512_sub_ps(_mm512_cvtepi32_ps(dot[t][c]), sum8);
        acc[t][c] = _mm512_fmadd_ps(_mm512_mul_ps(sw[c], sa), value, acc[t][c]);
      }
    }
  }
  for (int t = 0; t < rows; ++t) {
    for (int c = 0; c < cols; ++c) {
      p->y[(row0 + t) * p->ldy + n + c] = _mm512_reduce_add_ps(acc[t][c]);
    }
  }
}

/* One tile of `cols` columns over the rows [row, end): full tiles of Q4_TILE rows, then the remainder. */
__attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c"))) static inline void
rows_avx512(const Q4Problem *p, int64_t n, int64_t row, int64_t end, const int cols) {
  for (; row + Q4_TILE <= end; row += Q4_TILE) {
    tile_avx512(p, n, row, Q4_TILE, cols);
  }
  switch (end - row) {
    case 3:
      tile_avx512(p, n, row, 3, cols);
      break;
    case 2:
      tile_avx512(p, n, row, 2, cols);
      break;
    case 1:
      tile_avx512(p, n, row, 1, cols);
      break;
    default:
      break;
  }
}

/* Rows in blocks of Q4_ROW_BLOCK, whose int8 activations stay in the core's first-level cache while every
 * column of the range passes over them two at a time. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c"))) static void columns_avx512(
    const Q4Problem *p, int64_t col_begin, int64_t col_end) {
  for (int64_t block = 0; block < p->m; block += Q4_ROW_BLOCK) {
    int64_t block_end = block + Q4_ROW_BLOCK < p->m ? block + Q4_ROW_BLOCK : p->m;
    int64_t n = col_begin;
    for (; n + 2 <= col_end; n += 2) {
      rows_avx512(p, n, block, block_end, 2);
    }
    if (n < col_end) {
      rows_avx512(p, n, block, block_end, 1);
    }
  }
}
#endif

void q4_prepare(Q4Problem *p, const float *x, int64_t m, int64_t k, int64_t n, const uint8_t *quants,
                const uint16_t *scales, float *y, int64_t ldy, void *workspace) {
  int64_t supers = q4_super_blocks(k);
  uint8_t *base = (uint8_t *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
  p->m = m;
  p->k = k;
  p->n = n;
  p->supers = supers;
  p->quants = quants;
  p->scales = scales;
  p->y = y;
  p->ldy = ldy;
  p->qa = (int8_t *)base;
  p->sa = (float *)(base + m * supers * Q4_SUPER);
  p->sum8 = p->sa + m * supers * 16;
  quantize_activations(x, m, k, p->qa, p->sa, p->sum8);
}

void q4_gemm_columns(const Q4Problem *p, int64_t col_begin, int64_t col_end) {
  switch (q4_active_isa()) {
#ifdef Q4_X86
    case Q4_ISA_AVX512_VNNI:
      if (p->m == 1) {
        row_avx512(p, col_begin, col_end);
      } else {
        columns_avx512(p, col_begin, col_end);
      }
      return;
    case Q4_ISA_AVX2:
      columns_avx2(p, col_begin, col_end);
      return;
#endif
    default:
      columns_scalar(p, col_begin, col_end);
  }
}

Q4_API int q4_matmul(const float *x, int64_t m, int64_t k, int64_t n, const uint8_t *quants, const uint16_t *scales,
              float *y, int64_t col_begin, int64_t col_end) {
  void *workspace = malloc(q4_activation_bytes(m, k));
  if (workspace == NULL) {
    return -1;
  }
  Q4Problem problem;
  q4_prepare(&problem, x, m, k, n, quants, scales, y, n, workspace);
  q4_gemm_columns(&problem, col_begin, col_end);
  free(workspace);
  return 0;
}
