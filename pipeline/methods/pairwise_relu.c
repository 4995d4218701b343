/* DSA's pairwise ReLU on CPU: y_ij = sum_d v_d max(a_id - b_jd, 0) and its backward.
 *
 * Built by pairwise_relu.py (gcc -O3 -march=native -fopenmp) and called through ctypes.
 * Both loops run over a block of ROWS rows of `a` against 16-wide runs of columns, with
 * `b` transposed ([D, N]): every load of b (and of H) serves ROWS rows, and no horizontal
 * sum is needed per pair. torch.compile's loops take one row at a time and reduce over d
 * per pair: forward and backward at 512 x 512 x 64 take 3.0 ms there, 1.7 ms here
 * (benchmarks/method_step_time.py, 2-core AVX-512 CPU).
 *
 * With AVX-512 the blocks are written with intrinsics: gcc turns the portable loops'
 * max(t, 0) into a compare and a blend, and keeps the backward's row sums on the stack,
 * storing them at every step. The portable loops serve every other CPU.
 */
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 4
#define LANES 16

/* y[i, j0:j0+LANES] for ROWS rows, summed over d in registers. */
#if defined(__AVX512F__)
static inline void forward_block(const float *restrict a, const float *restrict bt,
                                 const float *restrict v, float *restrict y, int64_t i0,
                                 int64_t j0, int64_t m, int64_t d) {
  __m512 y0 = _mm512_setzero_ps(), y1 = y0, y2 = y0, y3 = y0;
  const __m512 zero = _mm512_setzero_ps();
  const float *a0 = a + i0 * d, *a1 = a0 + d, *a2 = a1 + d, *a3 = a2 + d;
  for (int64_t k = 0; k < d; ++k) {
    const __m512 b = _mm512_loadu_ps(bt + k * m + j0), vk = _mm512_set1_ps(v[k]);
    y0 = _mm512_fmadd_ps(vk, _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(a0[k]), b), zero), y0);
    y1 = _mm512_fmadd_ps(vk, _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(a1[k]), b), zero), y1);
    y2 = _mm512_fmadd_ps(vk, _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(a2[k]), b), zero), y2);
    y3 = _mm512_fmadd_ps(vk, _mm512_max_ps(_mm512_sub_ps(_mm512_set1_ps(a3[k]), b), zero), y3);
  }
  _mm512_storeu_ps(y + i0 * m + j0, y0);
  _mm512_storeu_ps(y + (i0 + 1) * m + j0, y1);
  _mm512_storeu_ps(y + (i0 + 2) * m + j0, y2);
  _mm512_storeu_ps(y + (i0 + 3) * m + j0, y3);
}
#else
static inline void forward_block(const float *restrict a, const float *restrict bt,
                                 const float *restrict v, float *restrict y, int64_t i0,
                                 int64_t j0, int64_t m, int64_t d) {
  float y0[LANES] = {0}, y1[LANES] = {0}, y2[LANES] = {0}, y3[LANES] = {0};
  const float *a0 = a + i0 * d, *a1 = a0 + d, *a2 = a1 + d, *a3 = a2 + d;
  for (int64_t k = 0; k < d; ++k) {
    const float *b = bt + k * m + j0;
    const float vk = v[k];
#pragma omp simd
    for (int l = 0; l < LANES; ++l) {
      const float t0 = a0[k] - b[l], t1 = a1[k] - b[l], t2 = a2[k] - b[l], t3 = a3[k] - b[l];
      y0[l] += vk * (t0 > 0.0f ? t0 : 0.0f);
      y1[l] += vk * (t1 > 0.0f ? t1 : 0.0f);
      y2[l] += vk * (t2 > 0.0f ? t2 : 0.0f);
      y3[l] += vk * (t3 > 0.0f ? t3 : 0.0f);
    }
  }
  memcpy(y + i0 * m + j0, y0, sizeof y0);
  memcpy(y + (i0 + 1) * m + j0, y1, sizeof y1);
  memcpy(y + (i0 + 2) * m + j0, y2, sizeof y2);
  memcpy(y + (i0 + 3) * m + j0, y3, sizeof y3);
}

#endif

/* The same, one pair at a time: the rows and columns that do not fill a block. */
static void forward_pairs(const float *a, const float *bt, const float *v, float *y,
                          int64_t i_begin, int64_t i_end, int64_t j_begin, int64_t m,
                          int64_t d) {
  for (int64_t i = i_begin; i < i_end; ++i)
    for (int64_t j = j_begin; j < m; ++j) {
      float sum = 0.0f;
      for (int64_t k = 0; k < d; ++k) {
        const float t = a[i * d + k] - bt[k * m + j];
        sum += v[k] * (t > 0.0f ? t : 0.0f);
      }
      y[i * m + j] = sum;
    }
}

/* y [n, m] = sum_d v[d] * max(a[i, d] - bt[d, j], 0); a [n, d], bt [d, m]. */
void pairwise_relu_forward(const float *a, const float *bt, const float *v, float *y,
                           int64_t n, int64_t m, int64_t d, int threads) {
  const int64_t blocks = (n + ROWS - 1) / ROWS, full_columns = m - m % LANES;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t i0 = block * ROWS;
    if (i0 + ROWS > n) {
      forward_pairs(a, bt, v, y, i0, n, 0, m, d);
      continue;
    }
    for (int64_t j0 = 0; j0 < full_columns; j0 += LANES) forward_block(a, bt, v, y, i0, j0, m, d);
    forward_pairs(a, bt, v, y, i0, i0 + ROWS, full_columns, m, d);
  }
}

/* For BACKWARD_ROWS rows with values ak at one d: row_sums[r * d] = sum_j g_rj [ak_r > b_j]
 * and column_sums[j] += sum_r g_rj [ak_r > b_j]; g holds those rows of the gradient. */
#if defined(__AVX512F__)
#define BACKWARD_ROWS 8 /* twice the forward's: halves the loads and stores of column_sums */
/* LANES columns from j (those in `valid`): the masked load zeroes the gradient where the
 * ReLU is off, so no separate blend is needed. */
static inline void backward_lanes(const __m512 *a, __m512 *sums, const float *restrict g,
                                  const float *restrict column, float *restrict column_sums,
                                  int64_t j, int64_t m, __mmask16 valid) {
  const __m512 b = _mm512_maskz_loadu_ps(valid, column + j);
  __m512 total = _mm512_setzero_ps();
  for (int r = 0; r < BACKWARD_ROWS; ++r) {
    const __mmask16 on = _mm512_mask_cmp_ps_mask(valid, b, a[r], _CMP_LT_OQ);
    const __m512 w = _mm512_maskz_loadu_ps(on, g + r * m + j);
    sums[r] = _mm512_add_ps(sums[r], w);
    total = _mm512_add_ps(total, w);
  }
  const __m512 previous = _mm512_maskz_loadu_ps(valid, column_sums + j);
  _mm512_mask_storeu_ps(column_sums + j, valid, _mm512_add_ps(previous, total));
}

static inline void backward_block(const float *ak, const float *restrict g,
                                  const float *restrict column, float *restrict column_sums,
                                  float *restrict row_sums, int64_t m, int64_t d) {
  __m512 a[BACKWARD_ROWS], sums[BACKWARD_ROWS];
  for (int r = 0; r < BACKWARD_ROWS; ++r) {
    a[r] = _mm512_set1_ps(ak[r]);
    sums[r] = _mm512_setzero_ps();
  }
  int64_t j = 0;
  for (; j + LANES <= m; j += LANES) backward_lanes(a, sums, g, column, column_sums, j, m, 0xFFFF);
  if (j < m)
    backward_lanes(a, sums, g, column, column_sums, j, m, (__mmask16)((1u << (m - j)) - 1));
  for (int r = 0; r < BACKWARD_ROWS; ++r) row_sums[r * d] = _mm512_reduce_add_ps(sums[r]);
}
#else
#define BACKWARD_ROWS 4
static inline void backward_block(const float *ak, const float *restrict g,
                                  const float *restrict column, float *restrict column_sums,
                                  float *restrict row_sums, int64_t m, int64_t d) {
  const float a0 = ak[0], a1 = ak[1], a2 = ak[2], a3 = ak[3];
  const float *g0 = g, *g1 = g0 + m, *g2 = g1 + m, *g3 = g2 + m;
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t j = 0; j < m; ++j) {
    const float b = column[j];
    const float w0 = a0 > b ? g0[j] : 0.0f, w1 = a1 > b ? g1[j] : 0.0f;
    const float w2 = a2 > b ? g2[j] : 0.0f, w3 = a3 > b ? g3[j] : 0.0f;
    s0 += w0;
    s1 += w1;
    s2 += w2;
    s3 += w3;
    column_sums[j] += (w0 + w1) + (w2 + w3);
  }
  row_sums[0] = s0;
  row_sums[d] = s1;
  row_sums[2 * d] = s2;
  row_sums[3 * d] = s3;
}
#endif

/* With the mask [a_id > b_jd]: row_sums [n, d] = sum_j g_ij mask, column_sums_t [d, m] =
 * sum_i g_ij mask; g [n, m]. Each thread sums columns into its own buffer, added at the end.
 * Returns 0, or 1 when those buffers cannot be allocated.
 */
int pairwise_relu_backward(const float *a, const float *bt, const float *g, float *row_sums,
                           float *column_sums_t, int64_t n, int64_t m, int64_t d,
                           int threads) {
  float *partial = calloc((size_t)threads * d * m, sizeof(float));
  if (partial == NULL) return 1;
#pragma omp parallel num_threads(threads)
  {
    float *columns = partial + (int64_t)omp_get_thread_num() * d * m;
#pragma omp for schedule(static)
    for (int64_t i0 = 0; i0 < n; i0 += BACKWARD_ROWS) {
      const int64_t rows = n - i0 < BACKWARD_ROWS ? n - i0 : BACKWARD_ROWS;
      for (int64_t k = 0; k < d; ++k) {
        const float *column = bt + k * m;
        float *sums = columns + k * m;
        if (rows == BACKWARD_ROWS) {
          float ak[BACKWARD_ROWS];
          for (int r = 0; r < BACKWARD_ROWS; ++r) ak[r] = a[(i0 + r) * d + k];
          backward_block(ak, g + i0 * m, column, sums, &row_sums[i0 * d + k], m, d);
        } else {
          for (int64_t i = i0; i < i0 + rows; ++i) {
            const float ai = a[i * d + k], *gi = g + i * m;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int64_t j = 0; j < m; ++j) {
              const float w = ai > column[j] ? gi[j] : 0.0f;
              s += w;
              sums[j] += w;
            }
            row_sums[i * d + k] = s;
          }
        }
      }
    }
  }
  const int64_t size = d * m;
  for (int64_t x = 0; x < size; ++x) {
    float total = 0.0f;
    for (int t = 0; t < threads; ++t) total += partial[t * size + x];
    column_sums_t[x] = total;
  }
  free(partial);
  return 0;
}
