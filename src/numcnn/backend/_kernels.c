/*
 * numcnn's optional compiled kernels: the convolution computed directly on the batch-last
 * layout, without an im2col matrix, and the element-wise layers between convolutions in one pass
 * each. The NumPy code in numcnn/functional/ is the reference; these kernels compute the same
 * sums (tests compare both, and both with PyTorch), only in another order and without the column
 * matrix in memory.
 *
 * Layout (what numcnn.functional.conv calls "rows"): an activation is (c, h, w, n), batch
 * innermost. For a convolution with stride 1 along the width, the numbers of one output row,
 * (q, s) for q < ow and s < n, lie contiguously, and so do the input numbers they read for one
 * kernel tap: output (p, q, s) reads xp[ci, p*sh + i*dh, q + j*dw, s], which for fixed (ci, i, j)
 * is the contiguous run starting at (p*sh + i*dh, j*dw, 0). A row of ow*n numbers is therefore
 * one long vector, and the convolution is, for every output row,
 *
 *     y[o, p, l] = b[o] + sum_{ci, i, j} w[o, ci, i, j] * xp[ci, p*sh + i*dh, l + j*dw*n]
 *
 *     dL/dw[o, ci, i, j] = sum_{p, l} g[o, p, l] * xp[ci, p*sh + i*dh, l + j*dw*n]
 *
 * for l < ow*n. The input gradient (stride 1) is the first formula again, applied to the padded
 * output gradient with the mirrored kernel (numcnn/backend/kernels.py builds those). Rows too
 * short for a vector (a single image) have a forward kernel of their own that vectorises over the
 * output channels instead.
 *
 * The sums are register-blocked: FOB output channels times FNV vectors of positions stay in
 * registers while the loop runs over (ci, i, j) (8 x 48 with AVX-512). Written with GCC/Clang
 * vector extensions, so the compiler picks the instructions (the variant's -m flags at build time; the
 * vector width VL follows). OpenMP, where the compiler has it, splits the work over the cores.
 *
 * The file is built once per instruction-set variant (baseline x86-64, AVX2, AVX-512; see setup.py
 * and numcnn/backend/_lib.py, which loads the best one the CPU runs), each as an extension module
 * so that setuptools can build and install it, and loaded with ctypes: the functions below take
 * plain pointers and sizes, and ctypes releases the GIL while they run.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* floats per vector: what the instruction set the compiler targets holds in one register */
#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
/* Register blocks are sized for AVX-512's 32 vector registers; AVX2 and SSE have 16, so their
 * blocks hold half as many output channels. */
#if VL == 16
#define BLOCK_CHANNELS 8
#else
#define BLOCK_CHANNELS 4
#endif
#ifndef FOB
#define FOB BLOCK_CHANNELS /* forward: output channels per register block */
#endif
/* With AVX-512's 32 registers the forward block is 8 channels x 3 vectors (24 sums; 3 loads and
 * 8 broadcasts per 24 FMAs) in tiles of 192 positions (4 blocks): measured 1.2-1.5x faster than
 * 8 x 2 in tiles of 128 on the presets' and the ResNet's layers (AMD Zen 5, one core: 197-239
 * against 127-206 GFLOP/s). AVX2 and SSE (16 registers) keep 4 x 2 in tiles of 128. */
#if VL == 16
#define FNV_DEFAULT 3
#define TILE_DEFAULT 192
#else
#define FNV_DEFAULT 2
#define TILE_DEFAULT 128
#endif
#ifndef FNV
#define FNV FNV_DEFAULT /* forward: vectors of positions per register block */
#endif
#ifndef TILE
#define TILE TILE_DEFAULT /* forward: positions per task */
#endif

typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef float vfu __attribute__((vector_size(VL * sizeof(float)), aligned(4)));

static inline vf load(const float *p) { return *(const vfu *)p; }
static inline void store(float *p, vf v) { *(vfu *)p = v; }
static inline vf splat(float a) { return (vf){0} + a; }
static inline float hsum(vf v)
{
    float s = 0.0f;
    for (int k = 0; k < VL; k++)
        s += v[k];
    return s;
}

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Memory for vectors: 64-byte aligned, the size rounded up to whole 64-byte lines (as
 * aligned_alloc asks). */
static void *alloc_aligned(size_t bytes)
{
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

#ifdef _OPENMP
#define UNUSED_WITHOUT_OPENMP(x)
#else
#define UNUSED_WITHOUT_OPENMP(x) (void)(x)
#endif

/* How many floats a vector holds here (16 with AVX-512): numcnn picks kernels by it. */
int numcnn_vector_floats(void) { return VL; }

/* At most this many threads, when set (> 0): numcnn sets 1 in a process forked from one whose
 * OpenMP threads have run, since the child has none of them (GNU OpenMP would wait on them
 * forever). */
static int max_threads = 0;

void numcnn_set_max_threads(int n) { max_threads = n; }

static int thread_count(long tasks, long flops, int threads)
{
#ifdef _OPENMP
    if (threads <= 0)
        threads = omp_get_max_threads();
    if (max_threads > 0 && threads > max_threads)
        threads = max_threads;
    /* below ~2 MFLOP a second thread costs more to wake than it saves */
    if (flops < 2000000L)
        threads = 1;
    if (threads > tasks)
        threads = (int)tasks;
    return threads < 1 ? 1 : threads;
#else
    (void)tasks; (void)flops; (void)threads;
    return 1;
#endif
}

/* ---- forward ------------------------------------------------------------------------------ */

/* One block: ob (<= FOB) output channels times nv vectors of positions, summed over
 * (ci, i, j). x points at the input row of this output row (p*sh) and the first position; wp at
 * the packed weights of this channel block, (c, kh, kw, FOB). */
ALWAYS_INLINE void fwd_block(const float *x, long c, long xch, long kh, long kw, long row_step,
                             long tap_step, const float *wp, const float *bias, int ob, int nv,
                             float *y, long ych)
{
    vf acc[FOB][FNV];
    for (int b = 0; b < ob; b++)
        for (int v = 0; v < nv; v++)
            acc[b][v] = splat(bias ? bias[b] : 0.0f);
    for (long ci = 0; ci < c; ci++) {
        for (long i = 0; i < kh; i++) {
            const float *xi = x + ci * xch + i * row_step;
            const float *wi = wp + (ci * kh + i) * kw * FOB;
            for (long j = 0; j < kw; j++) {
                const float *xj = xi + j * tap_step;
                vf xv[FNV];
                for (int v = 0; v < nv; v++)
                    xv[v] = load(xj + v * VL);
                for (int b = 0; b < ob; b++) {
                    vf wv = splat(wi[j * FOB + b]);
                    for (int v = 0; v < nv; v++)
                        acc[b][v] += wv * xv[v];
                }
            }
        }
    }
    for (int b = 0; b < ob; b++)
        for (int v = 0; v < nv; v++)
            store(y + b * ych + v * VL, acc[b][v]);
}

/* The same sum one position at a time, for rows shorter than one vector. */
static void fwd_scalar(const float *x, long c, long xch, long kh, long kw, long row_step,
                       long tap_step, const float *wp, const float *bias, int ob, long len,
                       float *y, long ych)
{
    for (int b = 0; b < ob; b++)
        for (long l = 0; l < len; l++) {
            float s = bias ? bias[b] : 0.0f;
            for (long ci = 0; ci < c; ci++)
                for (long i = 0; i < kh; i++)
                    for (long j = 0; j < kw; j++)
                        s += wp[((ci * kh + i) * kw + j) * FOB + b]
                             * x[ci * xch + i * row_step + j * tap_step + l];
            y[b * ych + l] = s;
        }
}

/* A full block of FOB channels, or the channels left over one at a time. */
#define FWD_CASES(NV)                                                                        \
    if (ob == FOB) {                                                                         \
        fwd_block(xs, c, xch, kh, kw, row_step, tap_step, wp, bs, FOB, NV, ys, ych);         \
    } else {                                                                                 \
        for (int b = 0; b < ob; b++)                                                         \
            fwd_block(xs, c, xch, kh, kw, row_step, tap_step, wp + b, bs ? bs + b : NULL, 1, \
                      NV, ys + b * ych, ych);                                                \
    }

/* y[o, p, l] = b[o] + sum_{ci, i, j} w[o, ci, i, j] * x[g*c + ci, p*sh + i*dh, l + j*tap_step]
 * for output channel o of group g = o / (oc / groups).
 *
 * x: input, channel stride xch and row stride xrow (in floats), rows contiguous; c is the number
 * of input channels per group (all of them for groups = 1);
 * w: (oc, c, kh, kw) contiguous; bias: (oc,) or NULL; y: (oc, oh, len) contiguous.
 * tap_step is dw*n: how far one kernel column moves along a row. Groups: the register blocks of
 * output channels are cut within each group (a group of 2 channels fills 2 of a block's FOB),
 * and each block reads its group's input channels, which in the batch-last layout are one
 * contiguous block. Returns 0, or -1 when out of memory. */
int numcnn_conv_forward_grouped_f32(const float *x, long c, long xch, long xrow, const float *w,
                                    long oc, long groups, long kh, long kw, const float *bias,
                                    float *y, long oh, long len, long sh, long dh,
                                    long tap_step, int threads)
{
    long ocg = oc / groups, gblocks = (ocg + FOB - 1) / FOB, blocks = groups * gblocks;
    long taps = c * kh * kw;
    /* (blocks, c, kh, kw, FOB), each group's blocks in turn */
    float *packed = calloc((size_t)(blocks * taps * FOB), sizeof(float));
    if (!packed)
        return -1;
    for (long o = 0; o < oc; o++) {
        long blk = (o / ocg) * gblocks + (o % ocg) / FOB, lane = (o % ocg) % FOB;
        for (long t = 0; t < taps; t++)
            packed[(blk * taps + t) * FOB + lane] = w[o * taps + t];
    }
    /* Tasks: (lane tile, output row), rows innermost, so that consecutive tasks share kh - 1
     * input rows; within a task every block of output channels reads the same input tile,
     * which stays in cache (tiles of TILE lanes; the last tile of a row takes the remainder). */
    long tile = TILE;
    if (oh < 4) { /* few rows (a single image on its padded grid): tiles of a quarter row, so
                   * that every thread has some, when that is shorter than TILE */
        long quarter = len / 4 / (FNV * VL) * (FNV * VL);
        if (quarter < TILE)
            tile = quarter > FNV * VL ? quarter : FNV * VL;
    }
    long tiles = len / tile > 0 ? len / tile : 1;
    long tasks = tiles * oh, row_step = dh * xrow, ych = oh * len;
    int nthreads = thread_count(tasks, 2 * oc * oh * len * taps, threads);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long task = 0; task < tasks; task++) {
        long t = task / oh, p = task % oh;
        long l0 = t * tile, l1 = t == tiles - 1 ? len : l0 + tile;
        for (long blk = 0; blk < blocks; blk++) {
            long g = blk / gblocks, og = (blk % gblocks) * FOB, o0 = g * ocg + og;
            int ob = (int)(ocg - og < FOB ? ocg - og : FOB);
            const float *xrow0 = x + g * c * xch + p * sh * xrow;
            const float *wp = packed + blk * taps * FOB, *bs = bias ? bias + o0 : NULL;
            float *yrow = y + o0 * ych + p * len;
            long l = l0;
            for (; l + FNV * VL <= l1; l += FNV * VL) {
                const float *xs = xrow0 + l;
                float *ys = yrow + l;
                FWD_CASES(FNV)
            }
            for (; l + VL <= l1; l += VL) {
                const float *xs = xrow0 + l;
                float *ys = yrow + l;
                FWD_CASES(1)
            }
            if (l < l1) {
                if (l1 - l0 >= VL) { /* the tile's last vector again, overlapping: same sums */
                    const float *xs = xrow0 + l1 - VL;
                    float *ys = yrow + l1 - VL;
                    FWD_CASES(1)
                } else {
                    fwd_scalar(xrow0 + l, c, xch, kh, kw, row_step, tap_step, wp, bs, ob,
                               l1 - l, yrow + l, ych);
                }
            }
        }
    }
    free(packed);
    return 0;
}

/* A stride along the width, read directly: the row of output positions (q, s) is no longer
 * one run of the input, but each column q is (n numbers at q*sw*n): vectorised along the batch,
 * a register block being FNV vectors of (column, batch) positions at offsets of their own (the
 * last vector of a column overlapping the one before when VL does not divide n; n >= VL).
 *
 *     y[o, p, q, s] = b[o] + sum_{ci,i,j} w[o,ci,i,j] * x[g*c + ci, p*sh + i*dh,
 *                                                         (q*sw + j*dw)*n + s]
 *
 * y: (oc, oh, ow, n); col_step = sw*n, tap_step = dw*n; the rest as in
 * numcnn_conv_forward_grouped_f32. Tasks: (row, tile of TILE / VL vectors); every block of
 * output channels of a task reads the same input tile. Returns 0, or -1 when out of memory. */
ALWAYS_INLINE void fwd_block_at(const float *x, const long *xo, long c, long xch, long kh,
                                long kw, long row_step, long tap_step, const float *wp,
                                const float *bias, int ob, int nv, float *y, const long *yo,
                                long ych)
{
    vf acc[FOB][FNV];
    for (int b = 0; b < ob; b++)
        for (int v = 0; v < nv; v++)
            acc[b][v] = splat(bias ? bias[b] : 0.0f);
    for (long ci = 0; ci < c; ci++) {
        for (long i = 0; i < kh; i++) {
            const float *xi = x + ci * xch + i * row_step;
            const float *wi = wp + (ci * kh + i) * kw * FOB;
            for (long j = 0; j < kw; j++) {
                const float *xj = xi + j * tap_step;
                vf xv[FNV];
                for (int v = 0; v < nv; v++)
                    xv[v] = load(xj + xo[v]);
                for (int b = 0; b < ob; b++) {
                    vf wv = splat(wi[j * FOB + b]);
                    for (int v = 0; v < nv; v++)
                        acc[b][v] += wv * xv[v];
                }
            }
        }
    }
    for (int b = 0; b < ob; b++)
        for (int v = 0; v < nv; v++)
            store(y + b * ych + yo[v], acc[b][v]);
}

int numcnn_conv_forward_grouped_strided_f32(const float *x, long c, long xch, long xrow,
                                            const float *w, long oc, long groups, long kh,
                                            long kw, const float *bias, float *y, long oh,
                                            long ow, long n, long sh, long dh, long col_step,
                                            long tap_step)
{
    long ocg = oc / groups, gblocks = (ocg + FOB - 1) / FOB, blocks = groups * gblocks;
    long taps = c * kh * kw;
    float *packed = calloc((size_t)(blocks * taps * FOB), sizeof(float));
    if (!packed)
        return -1;
    for (long o = 0; o < oc; o++) {
        long blk = (o / ocg) * gblocks + (o % ocg) / FOB, lane = (o % ocg) % FOB;
        for (long t = 0; t < taps; t++)
            packed[(blk * taps + t) * FOB + lane] = w[o * taps + t];
    }
    long per_col = (n + VL - 1) / VL, vectors = ow * per_col;
    long tile = TILE / VL / FNV * FNV; /* vectors per task, whole register blocks */
    long tiles = (vectors + tile - 1) / tile, tasks = tiles * oh;
    long row_step = dh * xrow, ych = oh * ow * n;
    int nthreads = thread_count(tasks, 2 * oc * oh * ow * n * taps, 0);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long task = 0; task < tasks; task++) {
        long t = task / oh, p = task % oh;
        long k0 = t * tile, k1 = k0 + tile < vectors ? k0 + tile : vectors;
        for (long blk = 0; blk < blocks; blk++) {
            long g = blk / gblocks, og = (blk % gblocks) * FOB, o0 = g * ocg + og;
            int ob = (int)(ocg - og < FOB ? ocg - og : FOB);
            const float *xrow0 = x + g * c * xch + p * sh * xrow;
            const float *wp = packed + blk * taps * FOB, *bs = bias ? bias + o0 : NULL;
            float *yrow = y + o0 * ych + p * ow * n;
            for (long k = k0; k < k1; k += FNV) {
                int nv = (int)(k1 - k < FNV ? k1 - k : FNV);
                long xo[FNV], yo[FNV];
                for (int v = 0; v < nv; v++) {
                    long q = (k + v) / per_col, s0 = (k + v) % per_col * VL;
                    if (s0 > n - VL)
                        s0 = n - VL; /* the column's last vector, overlapping */
                    xo[v] = q * col_step + s0;
                    yo[v] = q * n + s0;
                }
                if (ob == FOB && nv == FNV) {
                    fwd_block_at(xrow0, xo, c, xch, kh, kw, row_step, tap_step, wp, bs, FOB,
                                 FNV, yrow, yo, ych);
                } else {
                    for (int b = 0; b < ob; b++)
                        for (int v = 0; v < nv; v++)
                            fwd_block_at(xrow0, xo + v, c, xch, kh, kw, row_step, tap_step,
                                         wp + b, bs ? bs + b : NULL, 1, 1, yrow + b * ych,
                                         yo + v, ych);
                }
            }
        }
    }
    free(packed);
    return 0;
}

/* One group: numcnn_conv_forward_grouped_f32 with groups = 1. */
int numcnn_conv_forward_f32(const float *x, long c, long xch, long xrow, const float *w,
                            long oc, long kh, long kw, const float *bias, float *y, long oh,
                            long len, long sh, long dh, long tap_step, int threads)
{
    return numcnn_conv_forward_grouped_f32(x, c, xch, xrow, w, oc, 1, kh, kw, bias, y, oh, len,
                                           sh, dh, tap_step, threads);
}

/* ---- depthwise: few channels per group ---------------------------------------------------- */
/* A depthwise convolution (one input channel per group, MobileNet's 3x3) has no sum over
 * channels to block output channels on: each output channel reads its own input channel. Here
 * a task is one output channel, whose rows run in order (the kh input rows of one output row
 * are those of the row before but one, still in L1), each row vectorised along its ow*n
 * positions with DNV independent vector sums (the FMA latency hidden: each sum takes kh*kw
 * FMAs in a chain). The same kernel takes a few input channels per group (cg, e.g. the width
 * phases of a strided depthwise convolution, or the input gradient of a channel multiplier):
 *
 *     y[o, p, l] = b[o] + sum_{ci < cg, i, j} w[o, ci, i, j] * x[g*cg + ci, p*sh + i*dh,
 *                                                                 l + j*tap_step]
 *
 * with g = o / ocg. */
#define DNV 8

ALWAYS_INLINE void dw_block(const float *x, long cg, long xch, long kh, long kw, long row_step,
                            long tap_step, const float *w, float b, int nv, float *y)
{
    vf acc[DNV];
    for (int v = 0; v < nv; v++)
        acc[v] = splat(b);
    for (long ci = 0; ci < cg; ci++)
        for (long i = 0; i < kh; i++) {
            const float *xi = x + ci * xch + i * row_step;
            const float *wi = w + (ci * kh + i) * kw;
            for (long j = 0; j < kw; j++) {
                vf wv = splat(wi[j]);
                const float *xj = xi + j * tap_step;
                for (int v = 0; v < nv; v++)
                    acc[v] += wv * load(xj + v * VL);
            }
        }
    for (int v = 0; v < nv; v++)
        store(y + v * VL, acc[v]);
}

/* x, xch, xrow, tap_step as in numcnn_conv_forward_grouped_f32; cg input channels per group,
 * ocg output channels per group; w: (oc, cg, kh, kw); y: (oc, oh, len). */
void numcnn_conv_depthwise_f32(const float *x, long cg, long xch, long xrow, const float *w,
                               long oc, long ocg, long kh, long kw, const float *bias, float *y,
                               long oh, long len, long sh, long dh, long tap_step)
{
    long taps = cg * kh * kw, row_step = dh * xrow;
    int nthreads = thread_count(oc, 2 * oc * oh * len * taps, 0);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long o = 0; o < oc; o++) {
        const float *xg = x + (o / ocg) * cg * xch, *wo = w + o * taps;
        float b = bias ? bias[o] : 0.0f;
        for (long p = 0; p < oh; p++) {
            const float *xr = xg + p * sh * xrow;
            float *yr = y + (o * oh + p) * len;
            long l = 0;
            for (; l + DNV * VL <= len; l += DNV * VL)
                dw_block(xr + l, cg, xch, kh, kw, row_step, tap_step, wo, b, DNV, yr + l);
            for (; l + 2 * VL <= len; l += 2 * VL)
                dw_block(xr + l, cg, xch, kh, kw, row_step, tap_step, wo, b, 2, yr + l);
            if (l + VL <= len) {
                dw_block(xr + l, cg, xch, kh, kw, row_step, tap_step, wo, b, 1, yr + l);
                l += VL;
            }
            if (l < len && len >= VL) { /* the row's last vector again, overlapping */
                dw_block(xr + len - VL, cg, xch, kh, kw, row_step, tap_step, wo, b, 1,
                         yr + len - VL);
            } else {
                for (; l < len; l++) { /* a row shorter than a vector */
                    float s = b;
                    for (long ci = 0; ci < cg; ci++)
                        for (long i = 0; i < kh; i++)
                            for (long j = 0; j < kw; j++)
                                s += w[o * taps + (ci * kh + i) * kw + j]
                                     * xr[ci * xch + i * row_step + j * tap_step + l];
                    yr[l] = s;
                }
            }
        }
    }
}

/* A stride along the width breaks the row into runs of n numbers (one output column of the
 * batch, q*n ... q*n + n - 1, reads the input column q*sw): vectorised along the batch instead,
 * DNV vectors of (column, batch) positions per block, each at its own offset. Every column
 * takes ceil(n / VL) vectors, the last overlapping the one before when VL does not divide n
 * (n >= VL). Output (p, q, s) reads x[., p*sh + i*dh, (q*sw + j*dw)*n + s].
 *
 * y: (oc, oh, ow, n); the other arguments as in numcnn_conv_depthwise_f32, col_step = sw*n. */
ALWAYS_INLINE void dw_block_at(const float *x, const long *xo, long cg, long xch, long kh,
                               long kw, long row_step, long tap_step, const float *w, float b,
                               int nv, float *y, const long *yo)
{
    vf acc[DNV];
    for (int v = 0; v < nv; v++)
        acc[v] = splat(b);
    for (long ci = 0; ci < cg; ci++)
        for (long i = 0; i < kh; i++) {
            const float *xi = x + ci * xch + i * row_step;
            const float *wi = w + (ci * kh + i) * kw;
            for (long j = 0; j < kw; j++) {
                vf wv = splat(wi[j]);
                const float *xj = xi + j * tap_step;
                for (int v = 0; v < nv; v++)
                    acc[v] += wv * load(xj + xo[v]);
            }
        }
    for (int v = 0; v < nv; v++)
        store(y + yo[v], acc[v]);
}

void numcnn_conv_depthwise_strided_f32(const float *x, long cg, long xch, long xrow,
                                       const float *w, long oc, long ocg, long kh, long kw,
                                       const float *bias, float *y, long oh, long ow, long n,
                                       long sh, long dh, long col_step, long tap_step)
{
    long taps = cg * kh * kw, row_step = dh * xrow, per_col = (n + VL - 1) / VL;
    long vectors = ow * per_col;
    int nthreads = thread_count(oc, 2 * oc * oh * ow * n * taps, 0);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long o = 0; o < oc; o++) {
        const float *xg = x + (o / ocg) * cg * xch, *wo = w + o * taps;
        float b = bias ? bias[o] : 0.0f;
        for (long p = 0; p < oh; p++) {
            const float *xr = xg + p * sh * xrow;
            float *yr = y + (o * oh + p) * ow * n;
            for (long v0 = 0; v0 < vectors; v0 += DNV) {
                int nv = (int)(vectors - v0 < DNV ? vectors - v0 : DNV);
                long xo[DNV], yo[DNV];
                for (int v = 0; v < nv; v++) {
                    long q = (v0 + v) / per_col, s0 = (v0 + v) % per_col * VL;
                    if (s0 > n - VL)
                        s0 = n - VL; /* the column's last vector, overlapping */
                    xo[v] = q * col_step + s0;
                    yo[v] = q * n + s0;
                }
                if (nv == DNV)
                    dw_block_at(xr, xo, cg, xch, kh, kw, row_step, tap_step, wo, b, DNV, yr, yo);
                else
                    for (int v = 0; v < nv; v++)
                        dw_block_at(xr, xo + v, cg, xch, kh, kw, row_step, tap_step, wo, b, 1,
                                    yr, yo + v);
            }
        }
    }
}

/* Its weight gradient, vectorised along the batch likewise (n >= VL; the positions past the
 * last whole vector of each column one at a time, so that none is counted twice):
 *
 *     dw[o, ci, i, j] = sum_{p, q, s} g[o, p, q, s] * x[g*cg + ci, p*sh + i*dh,
 *                                                       (q*sw + j*dw)*n + s]
 *
 * A task is one (o, ci, i); up to DWJ kernel columns at a time share each load of g. */
ALWAYS_INLINE void dws_wgrad_cols(const float *g, long oh, long ow, long n, const float *x,
                                  long xrow, long sh, long col_step, long tap_step, int nj,
                                  float *out)
{
    vf acc[2][4];
    float tail[4];
    for (int a = 0; a < nj; a++) {
        acc[0][a] = acc[1][a] = splat(0.0f);
        tail[a] = 0.0f;
    }
    long full = n - n % VL;
    for (long p = 0; p < oh; p++)
        for (long q = 0; q < ow; q++) {
            const float *gq = g + (p * ow + q) * n, *xq = x + p * sh * xrow + q * col_step;
            long s = 0;
            for (; s + 2 * VL <= full; s += 2 * VL) {
                vf g0 = load(gq + s), g1 = load(gq + s + VL);
                for (int a = 0; a < nj; a++) {
                    acc[0][a] += g0 * load(xq + a * tap_step + s);
                    acc[1][a] += g1 * load(xq + a * tap_step + s + VL);
                }
            }
            for (; s < full; s += VL) {
                vf g0 = load(gq + s);
                for (int a = 0; a < nj; a++)
                    acc[0][a] += g0 * load(xq + a * tap_step + s);
            }
            for (; s < n; s++)
                for (int a = 0; a < nj; a++)
                    tail[a] += gq[s] * xq[a * tap_step + s];
        }
    for (int a = 0; a < nj; a++)
        out[a] = hsum(acc[0][a] + acc[1][a]) + tail[a];
}

void numcnn_conv_depthwise_strided_weight_grad_f32(const float *g, const float *x, long cg,
                                                   long xch, long xrow, long oc, long ocg,
                                                   long kh, long kw, float *dw, long oh,
                                                   long ow, long n, long sh, long dh,
                                                   long col_step, long tap_step)
{
    long tasks = oc * cg * kh;
    int nthreads = thread_count(tasks, 2 * oc * cg * kh * kw * oh * ow * n, 0);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long task = 0; task < tasks; task++) {
        long o = task / (cg * kh), ci = task / kh % cg, i = task % kh;
        const float *go = g + o * oh * ow * n;
        const float *xi = x + ((o / ocg) * cg + ci) * xch + i * dh * xrow;
        float *out = dw + ((o * cg + ci) * kh + i) * kw;
        for (long j0 = 0; j0 < kw; j0 += 4) {
            int nj = (int)(kw - j0 < 4 ? kw - j0 : 4);
            const float *xj = xi + j0 * tap_step;
            switch (nj) { /* each width its own unrolled copy */
            case 1: dws_wgrad_cols(go, oh, ow, n, xj, xrow, sh, col_step, tap_step, 1, out + j0);
                break;
            case 2: dws_wgrad_cols(go, oh, ow, n, xj, xrow, sh, col_step, tap_step, 2, out + j0);
                break;
            case 3: dws_wgrad_cols(go, oh, ow, n, xj, xrow, sh, col_step, tap_step, 3, out + j0);
                break;
            default: dws_wgrad_cols(go, oh, ow, n, xj, xrow, sh, col_step, tap_step, 4, out + j0);
            }
        }
    }
}

/* The input gradient of a depthwise convolution (any stride and dilation), gathered: each
 * input pixel sums what the outputs its taps reached send back,
 *
 *     dx[ch, hh, ww, s] = sum_{o' < ocg, i, j} w[g*ocg + o', ci, i, j] * gr[g*ocg + o', p, q, s]
 *         over the taps with p*sh + i*dh = hh + top and q*sw + j*dw = ww + left
 *         (0 <= p < oh, 0 <= q < ow), ch = g*cg + ci,
 *
 * vectorised along the batch (n >= VL: each pixel's ceil(n/VL) vectors, the last overlapping;
 * the same sums written twice), written straight into the unpadded (c, h, w, n) gradient. One
 * task is one input channel, so nothing is added to by two threads. Returns 0, or -1 when out
 * of memory. Measured against the stride-1 way (the forward kernel on the framed gradient):
 * faster with a stride (3x3 stride 2, 64 channels, one AMD EPYC core: 0.4-0.65 against
 * 0.65-3.4 ms at batch 16-64), not at stride 1, which keeps that way. */
ALWAYS_INLINE void dw_igrad_pixel(const float *gr, const float *w, long ch, long cg, long ocg,
                                  long kh, long kw, long oh, long ow, long n, int ni,
                                  const long *ti, const long *tp, int nj, const long *tj,
                                  const long *tq, long s0, int nv, float *out)
{
    vf acc[DNV];
    for (int v = 0; v < nv; v++)
        acc[v] = splat(0.0f);
    long grp = ch / cg, ci = ch % cg;
    for (long o = grp * ocg; o < (grp + 1) * ocg; o++)
        for (int a = 0; a < ni; a++) {
            const float *wi = w + ((o * cg + ci) * kh + ti[a]) * kw;
            const float *gp = gr + (o * oh + tp[a]) * ow * n + s0;
            for (int b = 0; b < nj; b++) {
                vf wv = splat(wi[tj[b]]);
                const float *gq = gp + tq[b] * n;
                for (int v = 0; v < nv; v++)
                    acc[v] += wv * load(gq + v * VL);
            }
        }
    for (int v = 0; v < nv; v++)
        store(out + v * VL, acc[v]);
}

/* The taps (k, its output index) that reach input position pos + pad along one axis:
 * pos + pad = index*stride + k*dilation, 0 <= index < out. Returns how many. */
static int axis_taps(long pos, long pad, long k, long out, long stride, long dilation,
                     long *taps, long *index)
{
    int count = 0;
    for (long t = 0; t < k; t++) {
        long u = pos + pad - t * dilation;
        if (u >= 0 && u % stride == 0 && u / stride < out) {
            taps[count] = t;
            index[count++] = u / stride;
        }
    }
    return count;
}

int numcnn_conv_depthwise_input_grad_f32(const float *gr, const float *w, long oc, long ocg,
                                         long cg, long kh, long kw, float *dx, long c, long h,
                                         long wd, long n, long oh, long ow, long sh, long sw,
                                         long dh, long dwl, long top, long left)
{
    (void)oc;
    /* the taps of every input row and column, worked out once (no division in the sums) */
    long *rows = malloc((size_t)(2 * h * kh + 2 * wd * kw) * sizeof(long));
    int *counts = malloc((size_t)(h + wd) * sizeof(int));
    if (!rows || !counts) {
        free(rows);
        free(counts);
        return -1;
    }
    long *cols = rows + 2 * h * kh;
    for (long hh = 0; hh < h; hh++)
        counts[hh] = axis_taps(hh, top, kh, oh, sh, dh, rows + 2 * hh * kh,
                               rows + (2 * hh + 1) * kh);
    for (long ww = 0; ww < wd; ww++)
        counts[h + ww] = axis_taps(ww, left, kw, ow, sw, dwl, cols + 2 * ww * kw,
                                   cols + (2 * ww + 1) * kw);
    int nthreads = thread_count(c, 2 * c * ocg * h * wd * n * kh * kw / (sh * sw), 0);
    UNUSED_WITHOUT_OPENMP(nthreads);
    long whole = n / VL; /* whole vectors per pixel; then the last, overlapping, if n % VL */
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long ch = 0; ch < c; ch++)
        for (long hh = 0; hh < h; hh++) {
            int ni = counts[hh];
            const long *ti = rows + 2 * hh * kh, *tp = ti + kh;
            for (long ww = 0; ww < wd; ww++) {
                int nj = counts[h + ww];
                const long *tj = cols + 2 * ww * kw, *tq = tj + kw;
                float *out = dx + ((ch * h + hh) * wd + ww) * n;
                long v = 0;
#define DW_IGRAD(NV, S0)                                                                     \
    dw_igrad_pixel(gr, w, ch, cg, ocg, kh, kw, oh, ow, n, ni, ti, tp, nj, tj, tq, S0, NV,     \
                   out + (S0))
                for (; v + DNV <= whole; v += DNV)
                    DW_IGRAD(DNV, v * VL);
                for (; v + 4 <= whole; v += 4)
                    DW_IGRAD(4, v * VL);
                for (; v + 2 <= whole; v += 2)
                    DW_IGRAD(2, v * VL);
                for (; v < whole; v++)
                    DW_IGRAD(1, v * VL);
                if (n % VL)
                    DW_IGRAD(1, n - VL);
#undef DW_IGRAD
            }
        }
    free(rows);
    free(counts);
    return 0;
}

/* Its weight gradient:
 *
 *     dw[o, ci, i, j] = sum_{p, l} g[o, p, l] * x[g*cg + ci, p*sh + i*dh, l + j*tap_step]
 *
 * A task is one (o, ci, i): the output gradient's rows against the input rows they met, up to
 * DWJ kernel columns at a time, two vectors of positions per step (2 * nj independent sums). */
#define DWJ 4

ALWAYS_INLINE void dw_wgrad_cols(const float *g, long oh, long len, const float *x, long xrow,
                                 long sh, long tap_step, int nj, float *out)
{
    vf acc[2][DWJ];
    float tail[DWJ];
    for (int a = 0; a < nj; a++) {
        acc[0][a] = acc[1][a] = splat(0.0f);
        tail[a] = 0.0f;
    }
    long full = len - len % (2 * VL), vecs = len - len % VL;
    for (long p = 0; p < oh; p++) {
        const float *gp = g + p * len, *xp = x + p * sh * xrow;
        long l = 0;
        for (; l < full; l += 2 * VL) {
            vf g0 = load(gp + l), g1 = load(gp + l + VL);
            for (int a = 0; a < nj; a++) {
                acc[0][a] += g0 * load(xp + a * tap_step + l);
                acc[1][a] += g1 * load(xp + a * tap_step + l + VL);
            }
        }
        for (; l < vecs; l += VL) {
            vf g0 = load(gp + l);
            for (int a = 0; a < nj; a++)
                acc[0][a] += g0 * load(xp + a * tap_step + l);
        }
        for (; l < len; l++)
            for (int a = 0; a < nj; a++)
                tail[a] += gp[l] * xp[a * tap_step + l];
    }
    for (int a = 0; a < nj; a++)
        out[a] = hsum(acc[0][a] + acc[1][a]) + tail[a];
}

void numcnn_conv_depthwise_weight_grad_f32(const float *g, const float *x, long cg, long xch,
                                           long xrow, long oc, long ocg, long kh, long kw,
                                           float *dw, long oh, long len, long sh, long dh,
                                           long tap_step)
{
    long tasks = oc * cg * kh;
    int nthreads = thread_count(tasks, 2 * oc * cg * kh * kw * oh * len, 0);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long task = 0; task < tasks; task++) {
        long o = task / (cg * kh), ci = task / kh % cg, i = task % kh;
        const float *go = g + o * oh * len;
        const float *xi = x + ((o / ocg) * cg + ci) * xch + i * dh * xrow;
        float *out = dw + ((o * cg + ci) * kh + i) * kw;
        for (long j0 = 0; j0 < kw; j0 += DWJ) {
            int nj = (int)(kw - j0 < DWJ ? kw - j0 : DWJ);
            const float *xj = xi + j0 * tap_step;
            switch (nj) { /* each width its own unrolled copy */
            case 1: dw_wgrad_cols(go, oh, len, xj, xrow, sh, tap_step, 1, out + j0); break;
            case 2: dw_wgrad_cols(go, oh, len, xj, xrow, sh, tap_step, 2, out + j0); break;
            case 3: dw_wgrad_cols(go, oh, len, xj, xrow, sh, tap_step, 3, out + j0); break;
            default: dw_wgrad_cols(go, oh, len, xj, xrow, sh, tap_step, DWJ, out + j0);
            }
        }
    }
}

/* ---- forward, few positions per row (a single image) ---------------------------------------- */
/* With a batch of one, a row holds ow numbers (14 for a 14-pixel map), less than a vector: this
 * kernel vectorises over the output channels instead. The weights are packed (c, kh, kw, oc),
 * channels innermost and padded to whole vectors; a register block is SOV vectors of channels
 * times SNP output positions, each position a broadcast input value per tap. Any stride. */

#define SOV 2 /* vectors of output channels per register block */
#define SNP 6 /* output positions per register block */

ALWAYS_INLINE void small_block(const float *const *xs, long c, long xch, long kh, long kw,
                               long row_step, long tap_step, const float *wp, long ocp, int ov,
                               vf acc[SNP][SOV])
{
    for (int pp = 0; pp < SNP; pp++)
        for (int v = 0; v < ov; v++)
            acc[pp][v] = splat(0.0f);
    for (long ci = 0; ci < c; ci++)
        for (long i = 0; i < kh; i++)
            for (long j = 0; j < kw; j++) {
                long off = ci * xch + i * row_step + j * tap_step;
                const float *wt = wp + ((ci * kh + i) * kw + j) * ocp;
                vf wv[SOV];
                for (int v = 0; v < ov; v++)
                    wv[v] = load(wt + v * VL);
                for (int pp = 0; pp < SNP; pp++) {
                    vf xv = splat(xs[pp][off]);
                    for (int v = 0; v < ov; v++)
                        acc[pp][v] += wv[v] * xv;
                }
            }
}

/* y[o, p, q, s] = b[o] + sum_{ci,i,j} w[o,ci,i,j] * x[ci, p*sh + i*dh, q*sw + j*dw, s]
 * x: (c, hp, wp, n) contiguous; y: (oc, oh, ow, n) contiguous. Returns 0, or -1 when out of
 * memory. */
int numcnn_conv_forward_small_f32(const float *x, long c, long hp, long wp, long n,
                                  const float *w, long oc, long kh, long kw, const float *bias,
                                  float *y, long oh, long ow, long sh, long sw, long dh, long dw)
{
    long ocp = (oc + VL - 1) / VL * VL, taps = c * kh * kw, positions = oh * ow * n;
    float *packed = alloc_aligned((size_t)(taps * ocp) * sizeof(float)); /* (taps, ocp) */
    if (!packed)
        return -1;
    for (long t = 0; t < taps; t++)
        for (long o = 0; o < ocp; o++)
            packed[t * ocp + o] = o < oc ? w[o * taps + t] : 0.0f;
    long xch = hp * wp * n, xrow = wp * n, blocks = (positions + SNP - 1) / SNP;
    long oblocks = (ocp / VL + SOV - 1) / SOV;
    int nthreads = thread_count(blocks, 2 * oc * positions * taps, 0);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long blk = 0; blk < blocks; blk++) {
        const float *xs[SNP];
        long pos[SNP];
        for (int pp = 0; pp < SNP; pp++) {
            long k = blk * SNP + pp;
            pos[pp] = k < positions ? k : positions - 1; /* past the end: repeat the last */
            long s = pos[pp] % n, q = pos[pp] / n % ow, p = pos[pp] / n / ow;
            xs[pp] = x + p * sh * xrow + q * sw * n + s;
        }
        int valid = (int)(positions - blk * SNP < SNP ? positions - blk * SNP : SNP);
        for (long ob = 0; ob < oblocks; ob++) {
            long o0 = ob * SOV * VL;
            int ov = (int)((ocp - o0) / VL < SOV ? (ocp - o0) / VL : SOV);
            vf acc[SNP][SOV];
            if (ov == SOV)
                small_block(xs, c, xch, kh, kw, dh * xrow, dw * n, packed + o0, ocp, SOV, acc);
            else
                small_block(xs, c, xch, kh, kw, dh * xrow, dw * n, packed + o0, ocp, 1, acc);
            for (int pp = 0; pp < valid; pp++)
                for (int v = 0; v < ov; v++)
                    for (int k = 0; k < VL; k++) {
                        long o = o0 + v * VL + k;
                        if (o < oc)
                            y[o * positions + pos[pp]] = acc[pp][v][k] + (bias ? bias[o] : 0.0f);
                    }
        }
    }
    free(packed);
    return 0;
}

/* ---- weight gradient ---------------------------------------------------------------------- */

/* Weight gradient: a register block of WOB output channels times WCJ (input channel, kernel
 * column) runs; each step loads WOB + WCJ vectors for WOB * WCJ FMAs. With AVX-512's 32
 * registers 4 x 6 (24 sums, 10 loads per 24 FMAs) measured 1.5-2x faster than 8 x 2 (16 sums,
 * 10 loads per 16 FMAs) on the ResNet's 3x3 layers at 16-64 channels (AMD Zen 5, one core:
 * 110-190 against 52-100 GFLOP/s); AVX2 and SSE, with 16 registers, keep 4 x 2. */
#if VL == 16
#define WOB_DEFAULT 4
#define WCJ_DEFAULT 6
#else
#define WOB_DEFAULT BLOCK_CHANNELS
#define WCJ_DEFAULT 2
#endif
#ifndef WOB
#define WOB WOB_DEFAULT /* weight gradient: output channels per register block */
#endif
#ifndef WCJ
#define WCJ WCJ_DEFAULT /* weight gradient: (input channel, kernel column) runs per block */
#endif

/* sums[a][b] += sum_l g[b][l] * x[a][l] for b < ob output channels, a < ncol input rows (one
 * per (input channel, kernel column) pair), over one output row: cols columns of len
 * positions, column q of g at q*len and of x at q*col_step (one column of the whole row,
 * cols = 1, for stride 1 along the width; with a stride read directly, one column per output
 * column, len = n). */
ALWAYS_INLINE void wgrad_block(const float *g, long gch, const float *const *xs, long len,
                               long cols, long col_step, int ob, int ncol, vf sums[][WOB],
                               float tails[][WOB])
{
    vf acc[WCJ][WOB];
    for (int a = 0; a < ncol; a++)
        for (int b = 0; b < ob; b++)
            acc[a][b] = splat(0.0f);
    long full = len - len % VL;
    for (long q = 0; q < cols; q++) {
        const float *gq = g + q * len;
        long xq = q * col_step;
        for (long l = 0; l < full; l += VL) {
            vf gv[WOB];
            for (int b = 0; b < ob; b++)
                gv[b] = load(gq + b * gch + l);
            for (int a = 0; a < ncol; a++) {
                vf xv = load(xs[a] + xq + l);
                for (int b = 0; b < ob; b++)
                    acc[a][b] += gv[b] * xv;
            }
        }
        for (long l = full; l < len; l++)
            for (int a = 0; a < ncol; a++)
                for (int b = 0; b < ob; b++)
                    tails[a][b] += gq[b * gch + l] * xs[a][xq + l];
    }
    for (int a = 0; a < ncol; a++)
        for (int b = 0; b < ob; b++)
            sums[a][b] += acc[a][b];
}

/* dw[o, ci, i, j] = sum_{p, l} g[o, p, l] * x[g*c + ci, p*sh + i*dh, l + j*tap_step]
 *
 * g: output gradient (oc, oh, len) contiguous; x as in numcnn_conv_forward_grouped_f32;
 * dw: (oc, c, kh, kw) contiguous, overwritten. Returns 0, or -1 when out of memory.
 *
 * With groups, c is the number of input channels per group and output channel o of group
 * g = o / (oc / groups) reads x[g*c + ci, ...]; the blocks of output channels are cut within
 * each group.
 *
 * A task is one block of WOB output channels and one kernel row i. For every output row p it
 * reads that row of g (kept in cache) against every input row it met, c*kw shifted runs, a
 * register block of (WCJ runs) x (WOB channels) at a time; the vector sums are reduced once,
 * at the end. */
/* wgrad_block with cols = 1 (no stride along the width: one run per row) as its own inlined
 * copy, the loop over columns gone: with cols a run-time value GCC kept the loop and the main
 * weight gradient ran 1.8 times slower (convnet-bn's training step: 14,000 -> 12,000 img/s). */
#define WGRAD_BLOCK(g_, gch_, xs_, len_, ...)                                                \
    do {                                                                                     \
        if (cols == 1)                                                                       \
            wgrad_block(g_, gch_, xs_, len_, 1, 0, __VA_ARGS__);                             \
        else                                                                                 \
            wgrad_block(g_, gch_, xs_, len_, cols, col_step, __VA_ARGS__);                   \
    } while (0)

static int wgrad_grouped(const float *g, const float *x, long c, long xch, long xrow, long oc,
                         long groups, long kh, long kw, float *dw, long oh, long len, long cols,
                         long col_step, long sh, long dh, long tap_step, int threads)
{
    long ocg = oc / groups, gblocks = (ocg + WOB - 1) / WOB, oblocks = groups * gblocks;
    long columns = c * kw, grow = cols * len, gch = oh * grow;
    long tasks = oblocks * kh;
    int nthreads = thread_count(tasks, 2 * oc * c * kh * kw * oh * grow, threads);
    UNUSED_WITHOUT_OPENMP(nthreads);
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long task = 0; task < tasks; task++) {
        long obk = task / kh, i = task % kh, grp = obk / gblocks, og = (obk % gblocks) * WOB;
        long o0 = grp * ocg + og;
        int ob = (int)(ocg - og < WOB ? ocg - og : WOB);
        const float *xg = x + grp * c * xch; /* the group's input channels */
        vf (*sums)[WOB] = alloc_aligned((size_t)columns * sizeof(vf[WOB]));
        float (*tails)[WOB] = calloc((size_t)columns, sizeof(float[WOB]));
        if (!sums || !tails) {
            free(sums);
            free(tails);
            failed = 1;
            continue;
        }
        for (long col = 0; col < columns; col++)
            for (int b = 0; b < WOB; b++)
                sums[col][b] = splat(0.0f);
        for (long p = 0; p < oh; p++) {
            const float *gp = g + o0 * gch + p * grow;
            const float *xp = xg + (p * sh + i * dh) * xrow;
            for (long col0 = 0; col0 < columns; col0 += WCJ) {
                int ncol = (int)(columns - col0 < WCJ ? columns - col0 : WCJ);
                const float *xs[WCJ];
                for (int a = 0; a < ncol; a++) {
                    long ci = (col0 + a) / kw, j = (col0 + a) % kw;
                    xs[a] = xp + ci * xch + j * tap_step;
                }
                vf(*sm)[WOB] = sums + col0;
                float(*tl)[WOB] = tails + col0;
                if (ob == WOB && ncol == WCJ) {
                    WGRAD_BLOCK(gp, gch, xs, len, WOB, WCJ, sm, tl);
                } else if (ob == WOB) {
                    /* the last, partial block of runs (c*kw not a multiple of WCJ): a block of
                     * its own width, each width its own unrolled copy */
                    switch (ncol) {
#define WGRAD_COLUMNS(K)                                                                     \
    case K:                                                                                  \
        WGRAD_BLOCK(gp, gch, xs, len, WOB, K, sm, tl);                                       \
        break;
                        WGRAD_COLUMNS(1)
#if WCJ > 2
                        WGRAD_COLUMNS(2)
#endif
#if WCJ > 3
                        WGRAD_COLUMNS(3)
#endif
#if WCJ > 4
                        WGRAD_COLUMNS(4)
#endif
#if WCJ > 5
                        WGRAD_COLUMNS(5)
#endif
#undef WGRAD_COLUMNS
                    default:
                        for (int a = 0; a < ncol; a++)
                            WGRAD_BLOCK(gp, gch, xs + a, len, WOB, 1, sm + a,
                                        tl + a);
                    }
                } else {
                    /* the last, partial block of output channels: one channel at a time; its
                     * sums go to column b of a scratch block, then into place */
                    for (int b = 0; b < ob; b++) {
                        vf one[WCJ][WOB];
                        float one_tail[WCJ][WOB];
                        for (int a = 0; a < ncol; a++) {
                            one[a][0] = splat(0.0f);
                            one_tail[a][0] = 0.0f;
                        }
                        for (int a = 0; a < ncol; a++)
                            WGRAD_BLOCK(gp + b * gch, gch, xs + a, len,
                                        1, 1, one + a, one_tail + a);
                        for (int a = 0; a < ncol; a++) {
                            sm[a][b] += one[a][0];
                            tl[a][b] += one_tail[a][0];
                        }
                    }
                }
            }
        }
        for (long col = 0; col < columns; col++) {
            long ci = col / kw, j = col % kw;
            for (int b = 0; b < ob; b++)
                dw[(((o0 + b) * c + ci) * kh + i) * kw + j] = hsum(sums[col][b]) + tails[col][b];
        }
        free(sums);
        free(tails);
    }
    return failed ? -1 : 0;
}

int numcnn_conv_weight_grad_grouped_f32(const float *g, const float *x, long c, long xch,
                                        long xrow, long oc, long groups, long kh, long kw,
                                        float *dw, long oh, long len, long sh, long dh,
                                        long tap_step, int threads)
{
    return wgrad_grouped(g, x, c, xch, xrow, oc, groups, kh, kw, dw, oh, len, 1, 0, sh, dh,
                         tap_step, threads);
}

/* With a stride along the width, read directly (as numcnn_conv_forward_grouped_strided_f32):
 *
 *     dw[o, ci, i, j] = sum_{p, q, s} g[o, p, q, s] * x[g*c + ci, p*sh + i*dh,
 *                                                       (q*sw + j*dw)*n + s]
 *
 * g: (oc, oh, ow, n); col_step = sw*n, tap_step = dw*n. Each output column's n positions are
 * a run (vectors of the batch, the rest one at a time). Returns 0, or -1 when out of memory. */
int numcnn_conv_weight_grad_grouped_strided_f32(const float *g, const float *x, long c,
                                                long xch, long xrow, long oc, long groups,
                                                long kh, long kw, float *dw, long oh, long ow,
                                                long n, long sh, long dh, long col_step,
                                                long tap_step)
{
    return wgrad_grouped(g, x, c, xch, xrow, oc, groups, kh, kw, dw, oh, n, ow, col_step, sh,
                         dh, tap_step, 0);
}

/* One group: numcnn_conv_weight_grad_grouped_f32 with groups = 1. */
int numcnn_conv_weight_grad_f32(const float *g, const float *x, long c, long xch, long xrow,
                                long oc, long kh, long kw, float *dw, long oh, long len,
                                long sh, long dh, long tap_step, int threads)
{
    return numcnn_conv_weight_grad_grouped_f32(g, x, c, xch, xrow, oc, 1, kh, kw, dw, oh, len,
                                               sh, dh, tap_step, threads);
}

/* ---- element-wise layers ------------------------------------------------------------------ */
/* These read and write memory once, split over the cores; NumPy's equivalents make a pass per
 * operation on one core. Sizes and channel blocks are independent of the layout: numcnn hands
 * over arrays whose memory is contiguous, each channel one block where it matters. */

static int elementwise_threads(long size)
{
    /* memory-bound: below ~64k numbers one core is as fast */
    return thread_count(size / 8192 + 1, size * 32, 0);
}

/* y = max(x, 0); NaN stays NaN, as in PyTorch. */
void numcnn_relu_f32(const float *x, float *y, long size)
{
#pragma omp parallel for simd schedule(static) num_threads(elementwise_threads(size))
    for (long k = 0; k < size; k++)
        y[k] = x[k] > 0.0f || x[k] != x[k] ? x[k] : 0.0f;
}

/* NCHW -> CHWN with padding: y[ci, top + hi, left + wi, s] = x[s, ci, hi, wi], into a (c, hp, wp,
 * n) array whose frame the caller zeroes. NumPy's copy through the transposed view reads x with
 * a stride of c*h*w floats for every number it writes (a 12 KiB jump for a 3x32x32 image); here
 * each task is one input row (ci, hi) of every sample, read 16 samples at a time (16 short runs
 * of w floats) and written as w runs of the batch. */
void numcnn_to_chwn_f32(const float *x, long n, long c, long h, long w, float *y, long top,
                        long left, long hp, long wp)
{
    long chw = c * h * w, rows = c * h;
#pragma omp parallel for schedule(static) num_threads(elementwise_threads(n * chw))
    for (long r = 0; r < rows; r++) {
        long ci = r / h, hi = r % h;
        float *dst = y + ((ci * hp + hi + top) * wp + left) * n;
        const float *src = x + r * w;
        for (long s0 = 0; s0 < n; s0 += 16) {
            long s1 = s0 + 16 < n ? s0 + 16 : n;
            for (long wi = 0; wi < w; wi++)
                for (long s = s0; s < s1; s++)
                    dst[wi * n + s] = src[s * chw + wi];
        }
    }
}

/* y = a + b: a residual sum (and its backward, the sum of the two branches' gradients). */
void numcnn_add_f32(const float *a, const float *b, float *y, long size)
{
#pragma omp parallel for simd schedule(static) num_threads(elementwise_threads(size))
    for (long k = 0; k < size; k++)
        y[k] = a[k] + b[k];
}

/* dx = 0 where y <= 0, else dy (y is the forward output; a NaN passes the gradient, as in
 * PyTorch). */
void numcnn_relu_backward_f32(const float *y, const float *dy, float *dx, long size)
{
#pragma omp parallel for simd schedule(static) num_threads(elementwise_threads(size))
    for (long k = 0; k < size; k++)
        dx[k] = y[k] <= 0.0f ? 0.0f : dy[k];
}

/* Batch norm in training, each channel one contiguous block of `count` numbers:
 *   mean = sum(x) / N,  var = sum((x - mean)^2) / N,  invstd = 1 / sqrt(var + eps)
 *   y = (x - mean) * (invstd * weight) + bias
 * Sums in double. weight, bias may be NULL (1 and 0). Writes mean and var (biased), (c,) each,
 * in double, for the running statistics and the backward pass. */
void numcnn_batch_norm_f32(const float *x, long c, long count, const float *weight,
                           const float *bias, double eps, float *y, double *mean_out,
                           double *var_out)
{
#pragma omp parallel for schedule(static) num_threads(thread_count(c, c * count * 8, 0))
    for (long ch = 0; ch < c; ch++) {
        const float *xc = x + ch * count;
        float *yc = y + ch * count;
        double sum = 0.0, sq = 0.0;
#pragma omp simd reduction(+ : sum)
        for (long k = 0; k < count; k++)
            sum += xc[k];
        double mean = sum / count;
        float mean_f = (float)mean;
#pragma omp simd reduction(+ : sq)
        for (long k = 0; k < count; k++) {
            float d = xc[k] - mean_f;
            sq += (double)d * d;
        }
        double var = sq / count;
        float scale = (float)(1.0 / sqrt(var + eps)) * (weight ? weight[ch] : 1.0f);
        float shift = bias ? bias[ch] : 0.0f;
#pragma omp simd
        for (long k = 0; k < count; k++)
            yc[k] = (xc[k] - mean_f) * scale + shift;
        mean_out[ch] = mean;
        var_out[ch] = var;
    }
}

/* Its backward pass, per channel (xhat = (x - mean) * invstd, scale = invstd * weight):
 *   dbias = sum(dy),  dweight = sum(dy * xhat)
 *   dx = scale * (dy - dbias / N - xhat * dweight / N)
 * dweight and dbias are written (c,) in double. */
void numcnn_batch_norm_backward_f32(const float *x, const float *dy, long c, long count,
                                    const double *mean, const double *invstd,
                                    const float *weight, float *dx, double *dweight_out,
                                    double *dbias_out)
{
#pragma omp parallel for schedule(static) num_threads(thread_count(c, c * count * 8, 0))
    for (long ch = 0; ch < c; ch++) {
        const float *xc = x + ch * count, *dyc = dy + ch * count;
        float *dxc = dx + ch * count;
        float mean_f = (float)mean[ch];
        double sum_dy = 0.0, dot = 0.0;
#pragma omp simd reduction(+ : sum_dy, dot)
        for (long k = 0; k < count; k++) {
            sum_dy += dyc[k];
            dot += (double)dyc[k] * (xc[k] - mean_f);
        }
        double inv = invstd[ch], scale = inv * (weight ? weight[ch] : 1.0f);
        /* dx = scale*dy - (x - mean) * (scale * inv^2 * dot / N) - scale * sum_dy / N */
        float a = (float)scale, b = (float)(scale * inv * inv * dot / count);
        float d = (float)(scale * sum_dy / count);
#pragma omp simd
        for (long k = 0; k < count; k++)
            dxc[k] = a * dyc[k] - (xc[k] - mean_f) * b - d;
        dweight_out[ch] = dot * inv;
        dbias_out[ch] = sum_dy;
    }
}

/* Batch norm outside training, with the running statistics: per channel
 *   y = (x - mean) * (weight / sqrt(var + eps)) + bias
 * each channel one contiguous block of `count` numbers; weight, bias may be NULL (1 and 0). */
void numcnn_batch_norm_eval_f32(const float *x, long c, long count, const float *mean,
                                const float *var, const float *weight, const float *bias,
                                double eps, float *y)
{
#pragma omp parallel for schedule(static) num_threads(thread_count(c, c * count * 8, 0))
    for (long ch = 0; ch < c; ch++) {
        const float *xc = x + ch * count;
        float *yc = y + ch * count;
        float scale = (float)((weight ? weight[ch] : 1.0) / sqrt((double)var[ch] + eps));
        float shift = bias ? bias[ch] : 0.0f, mean_f = mean[ch];
#pragma omp simd
        for (long k = 0; k < count; k++)
            yc[k] = (xc[k] - mean_f) * scale + shift;
    }
}

/* Max pooling over non-overlapping kh x kw blocks, batch last: x (c, h, w, n) -> y (c, oh, ow, n)
 * with y[., p, q, s] the maximum of x[., p*kh + i, q*kw + j, s], scanned row by row; the winner
 * (i*kw + j) goes to arg, unless arg is NULL (no backward pass to come). As in PyTorch, the first
 * of tied maxima wins and a NaN wins (the last NaN, if several). Rows and columns past oh*kh,
 * ow*kw are left out. Vectorised along the batch. */

/* one output row: y[q*n + s] (and arg) from the block rows starting at x0, for q < ow, s < n */
ALWAYS_INLINE void max_pool_row(const float *x0, long w, long n, long kh, long kw, long ow,
                                float *y, unsigned char *arg)
{
    for (long q = 0; q < ow; q++) /* the block's first position, (0, 0), to start with */
        memcpy(y + q * n, x0 + q * kw * n, (size_t)n * sizeof(float));
    if (arg)
        memset(arg, 0, (size_t)(ow * n));
    for (long i = 0; i < kh; i++)
        for (long j = (i == 0); j < kw; j++) {
            const float *xij = x0 + (i * w + j) * n;
            unsigned char code = (unsigned char)(i * kw + j);
            for (long q = 0; q < ow; q++) {
                const float *xq = xij + q * kw * n;
                float *yq = y + q * n;
                if (arg) {
                    unsigned char *aq = arg + q * n;
#pragma omp simd
                    for (long s = 0; s < n; s++) {
                        float v = xq[s];
                        int take = v > yq[s] || v != v;
                        yq[s] = take ? v : yq[s];
                        aq[s] = take ? code : aq[s];
                    }
                } else {
#pragma omp simd
                    for (long s = 0; s < n; s++) {
                        float v = xq[s];
                        yq[s] = v > yq[s] || v != v ? v : yq[s];
                    }
                }
            }
        }
}

void numcnn_max_pool_f32(const float *x, long c, long h, long w, long n, long kh, long kw,
                         float *y, unsigned char *arg, long oh, long ow)
{
    long tasks = c * oh;
#pragma omp parallel for schedule(static) num_threads(elementwise_threads(c * h * w * n))
    for (long task = 0; task < tasks; task++) {
        long ch = task / oh, p = task % oh;
        const float *x0 = x + (ch * h + p * kh) * w * n;
        float *yp = y + (ch * oh + p) * ow * n;
        unsigned char *ap = arg ? arg + (ch * oh + p) * ow * n : NULL;
        max_pool_row(x0, w, n, kh, kw, ow, yp, ap);
    }
}

/* Its backward pass: dx[., p*kh + i, q*kw + j, s] = dy[., p, q, s] where (i, j) won, else 0;
 * the rows and columns the blocks left out get 0. */
void numcnn_max_pool_backward_f32(const float *dy, const unsigned char *arg, long c, long h,
                                  long w, long n, long kh, long kw, float *dx, long oh, long ow)
{
    long tasks = c * h;
#pragma omp parallel for schedule(static) num_threads(elementwise_threads(c * h * w * n))
    for (long task = 0; task < tasks; task++) {
        long ch = task / h, r = task % h, p = r / kh, i = r % kh;
        float *dxr = dx + (ch * h + r) * w * n;
        if (p >= oh) {
            memset(dxr, 0, (size_t)(w * n) * sizeof(float));
            continue;
        }
        for (long col = 0; col < w; col++) {
            long q = col / kw, j = col % kw;
            float *dxc = dxr + col * n;
            if (q >= ow) {
                memset(dxc, 0, (size_t)n * sizeof(float));
                continue;
            }
            const float *dyq = dy + ((ch * oh + p) * ow + q) * n;
            const unsigned char *aq = arg + ((ch * oh + p) * ow + q) * n;
            unsigned char code = (unsigned char)(i * kw + j);
#pragma omp simd
            for (long s = 0; s < n; s++)
                dxc[s] = aq[s] == code ? dyq[s] : 0.0f;
        }
    }
}

/* ---- which variant the CPU can run ----------------------------------------------------------- */
/* 3: AVX-512 (F, BW, DQ, VL) and FMA; 2: AVX2 and FMA; 1: the x86-64 baseline (or another
 * architecture). libgcc's checks include the operating system's support (XGETBV), so a variant
 * whose registers the OS does not save is never chosen. numcnn asks this of the baseline build
 * and loads the highest variant built (numcnn/backend/_lib.py). */
int numcnn_cpu_level(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("fma"))
        return 3;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 2;
#endif
    return 1;
}

/* ---- a module, so that setuptools builds and installs this file ---------------------------- */
/* The file is compiled once per instruction-set variant, each as its own extension module
 * (numcnn.backend._kernels_baseline, _kernels_avx2, _kernels_avx512; see setup.py): the small
 * file of each variant defines NUMCNN_MODULE and includes this one. */
#include <Python.h>

#ifndef NUMCNN_MODULE
#define NUMCNN_MODULE _kernels_baseline
#endif
#define NUMCNN_CAT_(a, b) a##b
#define NUMCNN_CAT(a, b) NUMCNN_CAT_(a, b)
#define NUMCNN_STR_(a) #a
#define NUMCNN_STR(a) NUMCNN_STR_(a)

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT, NUMCNN_STR(NUMCNN_MODULE),
    "numcnn's compiled convolution kernels, loaded with ctypes (see numcnn/backend/_kernels.c).",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC NUMCNN_CAT(PyInit_, NUMCNN_MODULE)(void) { return PyModule_Create(&kernels_module); }
