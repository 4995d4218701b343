/* DSA's pair computations on CPU, called through ctypes by dsa_cpu.py, which builds this
 * file on first use (gcc -O3 -march=native -fopenmp).
 *
 * 1. The pairwise ReLU of the relation MLP, y_ij = sum_d v_d max(a_id - b_jd, 0), and its
 *    backward. Both loops run over a block of rows of `a` against 16-wide runs of columns,
 *    with `b` transposed ([D, N]): every load of b (and of H) serves all rows of the block,
 *    and no horizontal sum is needed per pair. With AVX-512 the blocks are intrinsics: gcc
 *    turns the portable loops' max(t, 0) into a compare and a blend, and keeps the
 *    backward's row sums on the stack, storing them at every step. The portable loops
 *    serve every other CPU.
 * 2. The element-wise terms over the pair matrix (M, P, L_w's terms, (M - P)^2) and their
 *    backward, one pass each over the rows.
 */
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- 1. The pairwise ReLU --------------------------------------------------------- */

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

/* ---- 2. DSA's element-wise pair terms (sigmoid relations) --------------------------- */

/* The pair matrix [rows, cols] = [2n, 2N]: rows (view a, local sample i), columns (view b,
 * global sample j), the local samples at `offset` in the global batch. Column `itself(r)`
 * is row r's own sample in the same view: no L_w term, distance 0 in P. */
typedef struct {
  int64_t rows, cols, local, size, offset; /* 2n, 2N, n, N, offset */
  float bias, inv_prior_temperature, inv_temperature;
} PairShape;

/* e^x for |x| <= 87 within 2 ulp: Cody-Waite reduction and Cephes' polynomial, written so
 * that gcc vectorises it (libm's expf is a scalar call; fminf/fmaxf's NaN rules and a
 * rounding cast also stop the vectoriser). */
static inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 87.0f ? 87.0f : x;
  const float k = nearbyintf(x * 1.44269504088896341f);
  const float r = (x - k * 0.693359375f) + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = ((int32_t)k + 127) << 23; /* 2^k */
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

/* ||x - y|| of unit vectors from their inner product, as pairwise_distances in dsa.py. */
static inline float unit_distance(float gram) {
  const float squared = 2.0f - 2.0f * gram;
  return sqrtf(squared > 1e-12f ? squared : 1e-12f);
}

typedef struct {
  float terms, squares, m;
} SegmentSums;

/* Columns [begin, end) of one row, none of them the row's own sample: M in place of y, and
 * the sums of L_w's terms, of (M - P)^2 and of M. Not inlined: gcc vectorises the loop
 * once here, but not in all three inlined copies. */
__attribute__((noinline)) static void forward_segment(
    float *restrict m, const float *restrict gram_h, const float *restrict gram_p,
    const PairShape *p, float weight, int64_t begin, int64_t end, SegmentSums *sums) {
  float terms = 0.0f, squares = 0.0f, total = 0.0f;
  const float bias = p->bias, inv_prior_temperature = p->inv_prior_temperature;
#pragma omp simd reduction(+ : terms, squares, total)
  for (int64_t c = begin; c < end; ++c) {
    const float mc = sigmoid(m[c] + bias);
    const float prior = exp_approx(-unit_distance(gram_p[c]) * inv_prior_temperature);
    terms += exp_approx(weight * (2.0f * mc - 1.0f) * unit_distance(gram_h[c]));
    squares += (mc - prior) * (mc - prior);
    total += mc;
    m[c] = mc;
  }
  sums->terms += terms;
  sums->squares += squares;
  sums->m += total;
}

static inline int64_t itself_column(const PairShape *p, int64_t r) {
  return r < p->local ? p->offset + r : p->size + p->offset + r - p->local;
}

/* y [rows, cols] -> M = sigmoid(y + bias) in place, and sums[8]: the sum of L_w's terms,
 * the four blocks' sums of (M - P)^2 (11, 12, 21, 22), the sum of M, of M on the positive
 * pairs and of M on the row's own sample. */
void dsa_pairs_forward(float *m, const float *gram_h, const float *gram_p, const float *s,
                       PairShape p, double *sums, int threads) {
  double terms = 0, b11 = 0, b12 = 0, b21 = 0, b22 = 0, total = 0, positive = 0, own = 0;
#pragma omp parallel for num_threads(threads) schedule(static) \
    reduction(+ : terms, b11, b12, b21, b22, total, positive, own)
  for (int64_t r = 0; r < p.rows; ++r) {
    float *mr = m + r * p.cols;
    const float *gh = gram_h + r * p.cols, *gp = gram_p + r * p.cols;
    const int view = r < p.local ? 0 : 1;
    const int64_t itself = itself_column(&p, r);
    const float weight = s[r - view * p.local] * p.inv_temperature; /* s_i / T */
    /* the row's own view around its own sample, then the other view */
    SegmentSums sums_by_view[2] = {{0, 0, 0}, {0, 0, 0}};
    SegmentSums *same = &sums_by_view[view], *other = &sums_by_view[1 - view];
    forward_segment(mr, gh, gp, &p, weight, view * p.size, itself, same);
    forward_segment(mr, gh, gp, &p, weight, itself + 1, (view + 1) * p.size, same);
    forward_segment(mr, gh, gp, &p, weight, (1 - view) * p.size, (2 - view) * p.size, other);
    const float mi = sigmoid(mr[itself] + p.bias); /* P = exp(0) = 1 */
    mr[itself] = mi;
    same->squares += (mi - 1.0f) * (mi - 1.0f);
    same->m += mi;
    terms += sums_by_view[0].terms + sums_by_view[1].terms;
    total += sums_by_view[0].m + sums_by_view[1].m;
    positive += mr[view == 0 ? itself + p.size : itself - p.size];
    own += mi;
    if (view == 0) {
      b11 += sums_by_view[0].squares;
      b12 += sums_by_view[1].squares;
    } else {
      b21 += sums_by_view[0].squares;
      b22 += sums_by_view[1].squares;
    }
  }
  sums[0] = terms;
  sums[1] = b11;
  sums[2] = b12;
  sums[3] = b21;
  sums[4] = b22;
  sums[5] = total;
  sums[6] = positive;
  sums[7] = own;
}

/* The backward of forward_segment for grad_terms * (sum of terms) + grad_block * (sum of
 * (M - P)^2): the gradients with respect to y (before the sigmoid) and to G_h, and the
 * sum of the former (the output bias' gradient). */
__attribute__((noinline)) static float backward_segment(
    const float *restrict m, const float *restrict gram_h, const float *restrict gram_p,
    const PairShape *p, float weight, float grad_terms, float grad_block,
    float *restrict grad_y, float *restrict grad_gram_h, int64_t begin, int64_t end) {
  float bias = 0.0f;
  const float inv_prior_temperature = p->inv_prior_temperature;
#pragma omp simd reduction(+ : bias)
  for (int64_t c = begin; c < end; ++c) {
    const float mc = m[c];
    const float prior = exp_approx(-unit_distance(gram_p[c]) * inv_prior_temperature);
    const float squared = 2.0f - 2.0f * gram_h[c];
    const float distance = sqrtf(squared > 1e-12f ? squared : 1e-12f);
    const float slope = weight * (2.0f * mc - 1.0f);
    const float term = grad_terms * exp_approx(slope * distance);
    const float grad_m = term * 2.0f * weight * distance + 2.0f * grad_block * (mc - prior);
    const float g = grad_m * mc * (1.0f - mc);
    grad_y[c] = g;
    /* d distance / d G = -1 / distance, and nothing where the clamp holds */
    grad_gram_h[c] = (squared >= 1e-12f ? -term * slope : 0.0f) / distance;
    bias += g;
  }
  return bias;
}

/* Gradients of grad_terms * sums[0] + sum over blocks of grad_blocks[b] * sums[1 + b] (the
 * outputs of dsa_pairs_forward) with respect to y and G_h, from M; returns the sum of
 * grad_y, the output bias' gradient. */
double dsa_pairs_backward(const float *m, const float *gram_h, const float *gram_p,
                          const float *s, PairShape p, float grad_terms,
                          const float *grad_blocks, float *grad_y, float *grad_gram_h,
                          int threads) {
  double bias = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bias)
  for (int64_t r = 0; r < p.rows; ++r) {
    const int64_t at = r * p.cols;
    const float *mr = m + at, *gh = gram_h + at, *gp = gram_p + at;
    float *gy = grad_y + at, *gg = grad_gram_h + at;
    const int view = r < p.local ? 0 : 1;
    const int64_t itself = itself_column(&p, r);
    const float weight = s[r - view * p.local] * p.inv_temperature;
    const float same = grad_blocks[2 * view + view], other = grad_blocks[2 * view + 1 - view];
    bias += backward_segment(mr, gh, gp, &p, weight, grad_terms, same, gy, gg,
                             view * p.size, itself);
    bias += backward_segment(mr, gh, gp, &p, weight, grad_terms, same, gy, gg, itself + 1,
                             (view + 1) * p.size);
    bias += backward_segment(mr, gh, gp, &p, weight, grad_terms, other, gy, gg,
                             (1 - view) * p.size, (2 - view) * p.size);
    const float mi = mr[itself]; /* P = 1 and no L_w term: the regulariser only */
    gy[itself] = 2.0f * same * (mi - 1.0f) * mi * (1.0f - mi);
    gg[itself] = 0.0f;
    bias += gy[itself];
  }
  return bias;
}
