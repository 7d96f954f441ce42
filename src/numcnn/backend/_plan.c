/*
 * numcnn's inference plans: a whole model's forward pass (or a run of its layers) as one call,
 * given a compact table of fused operations that numcnn.inference prepares once per batch size.
 *
 * Included by each instruction-set variant after _kernels.c (it uses its vector type vf, VL,
 * load/store/splat, thread_count and BLOCK_CHANNELS), so it is built for every variant.
 *
 * Every activation lives batch-last, CHWN: the number (ci, row, col, s) of a map sits at
 *
 *     base + ci * cs + row * rs + col * n + s
 *
 * with cs and rs the channel and row strides of its buffer. A buffer may be larger than its map
 * by a zero frame (the padding of the convolutions that read it): the producer writes the
 * interior only, so the frame stays zero and no padded copy is ever made. A vector of features
 * (after Flatten) is the map (F, 1, 1, n), so a Linear layer is a 1x1 convolution on it.
 *
 * Operations (struct plan_op; fields not named are unused):
 *
 *   PLAN_CONV     y[o,p,q,s] = act(b[o] + sum_{ci,i,j} w[o,ci,i,j] x[ci, p*sh+i*dh, q*sw+j*dw, s]
 *                              + r[o,p,q,s])
 *                 batch norm already folded into w and b; r, the residual, optional. Two ways:
 *                 mode 0 ("rows", stride 1 along the width, rows of >= 64 numbers): every output
 *                 row's ow*n numbers are one vector run, blocks of FOB channels x PLAN_FNV
 *                 vectors in registers; mode 1 ("channels", a single image, any stride):
 *                 vectorised over the output channels, blocks of 2 vectors of channels x 6
 *                 positions; mode 2 ("columns", a strided convolution of >= 64 samples): the
 *                 rows kernel along each output position's run of samples; mode 3 ("Winograd",
 *                 3x3, stride 1, even output map): F(2x2, 3x3), see plan_conv_winograd.
 *   PLAN_MAXPOOL  y[c,p,q,s] = act(max_{i,j} x[c, p*sh+i, q*sw+j, s])
 *   PLAN_AVGPOOL  y[c,p,q,s] = act(sum_{i,j} x[c, p*sh+i, q*sw+j, s] / (kh*kw)), no padding
 *   PLAN_EWISE    y = act(x + r) (r optional): a residual sum not fused into a convolution,
 *                 or an activation on its own
 * act: 0 none, 1 ReLU, 2 tanh, 3 leaky ReLU, 4 sigmoid, 5 ELU (the code in the low 8 bits, a
 * parameter's float bits in the high 32: see plan_act).
 *   PLAN_COPY     any 4-D strides to any 4-D strides: the input into the first map (NCHW to
 *                 CHWN, into a frame), the last map out to the caller's NCHW array
 *   PLAN_MEAN     y[c,0,0,s] = mean_{p,q} x[c,p,q,s] (global average pooling)
 *   PLAN_CHECK    the model's weights unchanged since the plan was made: memcmp of a snapshot
 *   PLAN_ZERO_FRAME  zeroes the frame (kh rows at the top, kw at the bottom, sh columns on the
 *                 left, sw on the right) of a map's buffer y of c x h x w positions (frame
 *                 included): for a buffer that maps of other layouts share
 *
 * numcnn_plan_run returns 0; 1 when a PLAN_CHECK found the weights changed; 2 when a kernel's
 * scratch memory could not be had; 3 when the input copy of a table with Winograd operations
 * (its mode 1) met a NaN or an infinity, which Winograd's transforms would spread over whole
 * tiles (nothing after it ran in these cases). With a times array it records each operation's
 * wall time (seconds).
 */
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define PLAN_FOB BLOCK_CHANNELS /* rows mode: output channels per register block */
#if VL == 16
#define PLAN_FNV 3 /* rows mode: vectors of positions per register block (24 sums) */
#else
#define PLAN_FNV 2 /* rows mode: vectors of positions per register block */
#endif
#define PLAN_TILE 128            /* pooled rows mode (wide batches): samples per task */
#define PLAN_COLUMN_TILE 1024    /* columns mode: samples per task (measured: ResNet's strided
                                  * convolutions at batch 500 10% faster than with 128) */
#define PLAN_ROW_TILE 1008       /* rows mode: positions per task (a long run along the row:
                                  * the hardware prefetchers follow it) */
#define PLAN_SOV 2              /* channels mode: vectors of output channels per block */
#define PLAN_SNP 6              /* channels mode: positions per block */

enum { PLAN_CONV = 1, PLAN_MAXPOOL = 2, PLAN_EWISE = 3, PLAN_COPY = 4, PLAN_MEAN = 5,
       PLAN_CHECK = 6, PLAN_AVGPOOL = 7, PLAN_ZERO_FRAME = 8 };
enum { PLAN_FROM_INPUT = 1, PLAN_TO_OUTPUT = 2 }; /* PLAN_COPY's ends */

/* One operation, every field an int64 (addresses too): plan_kernels.py's PlanOp mirrors it. */
typedef struct {
    long kind, act, mode, ends;
    long c, oc, h, w, n, oh, ow;         /* input channels and map, output channels and map */
    long kh, kw, sh, sw, dh, dw;         /* kernel, stride, dilation */
    long x, xcs, xrs, xcol, xs;          /* input: address, channel/row/column/sample strides */
    long y, ycs, yrs, ycol, ys;          /* output */
    long r, rcs, rrs;                    /* residual (same column/sample strides as y) */
    long wgt, bias;                      /* packed weights, bias (padded with zeros) */
    long ph, pw;                         /* PLAN_CONV: max pooling ph x pw fused (1 x 1: none) */
} plan_op;

int numcnn_plan_block_channels(void) { return PLAN_FOB; }

/* Threads. An OpenMP team ends in a barrier: every thread must have run before the call returns.
 * On a busy machine (this project's: six agents on two cores) a second thread waits for a core
 * for a scheduler time slice, about 12 ms, so a 20 us convolution on two threads took 6 ms
 * (measured: convnet-bn at batch 1, 167 images/s against 10,000 on one thread) and 50-MFLOP
 * convolutions at batch 1,000 took 12 or 24 ms. A plan's operation therefore takes a second
 * thread only when its work is large enough to hide such a wait: plan_min_parallel_flops for a
 * convolution, PLAN_MIN_PARALLEL_NUMBERS for a pass over memory (1M numbers, about 0.4 ms on
 * one core: the ResNet's input copy at batch 500 took 1.4 ms on one thread, 0.8 on two). */
static long plan_min_parallel_flops = 100000000L; /* about 0.5-1 ms on one core */
#define PLAN_MIN_PARALLEL_NUMBERS (1L << 20)

/* NUMCNN_PLAN_PARALLEL_MFLOP (read by numcnn/backend/plan_kernels.py) sets it; 0: always. */
void numcnn_plan_set_parallel_flops(long flops) { plan_min_parallel_flops = flops; }

static int plan_threads(long tasks, long flops)
{
    return flops < plan_min_parallel_flops ? 1 : thread_count(tasks, flops, 0);
}
long numcnn_plan_op_size(void) { return (long)sizeof(plan_op); }

typedef int plan_vi __attribute__((vector_size(VL * sizeof(float))));

/* ReLU keeps NaN, as PyTorch (and numcnn's relu) do */
ALWAYS_INLINE vf plan_relu(vf s)
{
    plan_vi keep = (s > splat(0.0f)) | (s != s);
    return (vf)((plan_vi)s & keep);
}

/* a float in every lane, as one broadcast (splat's "0 + a" costs an addition first) */
ALWAYS_INLINE vf plan_bcast(float a)
{
    vf v = {a};
    return __builtin_shuffle(v, (plan_vi){0});
}

ALWAYS_INLINE float plan_relu1(float s) { return s > 0.0f || s != s ? s : 0.0f; }

/* tanh in float32 without libm, so that the compiler vectorises it (glibc's tanhf, one call
 * per number, made a fused convolution 20 times slower than its sums): Cephes' tanhf, a
 * polynomial below |x| = 0.625 and 1 - 2 / (exp(2|x|) + 1) above, with Cephes' expf (the power
 * of two put into the exponent bits); within 2 ulp of tanh. NaN stays NaN. */
ALWAYS_INLINE float plan_tanh1(float x)
{
    float a = x < 0.0f ? -x : x;
    float z = x * x;
    float small = x + x * z * ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z
                                 - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z
                               - 3.33332819422e-1f);
    float t = 2.0f * (a < 44.0f ? a : 44.0f); /* exp(88) is near float's top */
    float fx = __builtin_floorf(t * 1.44269504088896341f + 0.5f);
    float r = t - fx * 0.693359375f + fx * 2.12194440e-4f;
    float r2 = r * r;
    float e = ((((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                  + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * r2
               + r + 1.0f);
    union { float f; int i; } scale = {.i = ((int)fx + 127) << 23};
    float large = 1.0f - 2.0f / (e * scale.f + 1.0f);
    large = x < 0.0f ? -large : large;
    return a < 0.625f ? small : (x != x ? x : large);
}

/* where mask (all ones or zeros per lane): a, else b */
ALWAYS_INLINE vf plan_select(plan_vi mask, vf a, vf b)
{
    return (vf)((mask & (plan_vi)a) | (~mask & (plan_vi)b));
}

/* plan_tanh1 on every lane, written with vector operations (GCC would not vectorise the
 * scalar loop) */
ALWAYS_INLINE vf plan_tanh(vf x)
{
    const plan_vi sign = (plan_vi){0} + (int)0x80000000;
    vf a = (vf)((plan_vi)x & ~sign), z = x * x;
    vf small = x + x * z * ((((splat(-5.70498872745e-3f) * z + 2.06390887954e-2f) * z
                              - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z
                            - 3.33332819422e-1f);
    vf t = plan_select(a < splat(44.0f), a, splat(44.0f)) * 2.0f;
    plan_vi k = __builtin_convertvector(t * 1.44269504088896341f + 0.5f, plan_vi); /* t >= 0:
                                                                      truncation is floor */
    vf fx = __builtin_convertvector(k, vf);
    vf r = t - fx * 0.693359375f + fx * 2.12194440e-4f, r2 = r * r;
    vf e = ((((((splat(1.9875691500e-4f) * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
               + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * r2
            + r + 1.0f);
    vf scale = (vf)((k + 127) << 23);
    vf large = 1.0f - 2.0f / (e * scale + 1.0f);
    large = (vf)((plan_vi)large | ((plan_vi)x & sign));
    return plan_select(x != x, x, plan_select(a < splat(0.625f), small, large));
}

/* exp(x) for x <= 0 (Cephes' expf: the power of two put into the exponent bits, a polynomial for
 * the rest; within 2 ulp), 0 below -87.3; NaN stays NaN */
ALWAYS_INLINE vf plan_exp_nonpositive(vf x)
{
    vf t = plan_select(x > splat(-87.3f), x, splat(-87.3f));
    vf z = t * 1.44269504088896341f + 0.5f;
    plan_vi k = __builtin_convertvector(z, plan_vi); /* toward zero: one too many when z < 0 */
    vf fx = __builtin_convertvector(k, vf);
    plan_vi over = fx > z;
    k += over; /* -1 where the truncation went up */
    fx = __builtin_convertvector(k, vf);
    vf r = t - fx * 0.693359375f + fx * 2.12194440e-4f, r2 = r * r;
    vf e = ((((((splat(1.9875691500e-4f) * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
               + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * r2
            + r + 1.0f);
    vf scale = (vf)((k + 127) << 23);
    vf out = plan_select(x > splat(-87.3f), e * scale, splat(0.0f));
    return plan_select(x != x, x, out);
}

/* The activation of an operation, its code in the low 8 bits of act and its parameter (a
 * float) in the high 32: 0 none, 1 ReLU, 2 tanh, 3 leaky ReLU (slope alpha >= 0), 4 sigmoid,
 * 5 ELU (alpha >= 0); all non-decreasing, so they commute with the maximum of a max pooling. */
#define PLAN_ACT_CODE(act) ((int)((act) & 0xff))
ALWAYS_INLINE float plan_act_alpha(long act)
{
    union { unsigned u; float f; } bits = {.u = (unsigned)((unsigned long)act >> 32)};
    return bits.f;
}

ALWAYS_INLINE vf plan_act(vf s, long act)
{
    switch (PLAN_ACT_CODE(act)) {
    case 1:
        return plan_relu(s);
    case 2:
        return plan_tanh(s);
    case 3: /* x > 0 ? x : alpha x (NaN: alpha NaN) */
        return plan_select(s > splat(0.0f), s, s * plan_act_alpha(act));
    case 4: { /* exp(min(x, 0)) / (1 + exp(-|x|)), as numcnn's sigmoid: nothing overflows */
        const plan_vi sign = (plan_vi){0} + (int)0x80000000;
        vf e = plan_exp_nonpositive((vf)((plan_vi)s | sign)); /* exp(-|x|) */
        vf num = plan_select(s > splat(0.0f), splat(1.0f), e);
        return plan_select(s != s, s, num / (1.0f + e));
    }
    case 5: /* x > 0 ? x : alpha (exp(x) - 1); NaN: exp(NaN) is NaN */
        return plan_select(s > splat(0.0f), s,
                           plan_act_alpha(act) * (plan_exp_nonpositive(s) - 1.0f));
    default:
        return s;
    }
}

ALWAYS_INLINE float plan_act1(float s, long act)
{
    switch (PLAN_ACT_CODE(act)) {
    case 1:
        return plan_relu1(s);
    case 2:
        return plan_tanh1(s);
    case 3:
        return s > 0.0f ? s : s * plan_act_alpha(act);
    case 4: {
        float e = expf(-fabsf(s));
        return s != s ? s : (s > 0.0f ? 1.0f : e) / (1.0f + e);
    }
    case 5:
        return s > 0.0f || s != s ? s : plan_act_alpha(act) * expm1f(s);
    default:
        return s;
    }
}

/* max pooling's maximum: a NaN wins, as in PyTorch */
ALWAYS_INLINE vf plan_max(vf m, vf a)
{
    plan_vi take = (a > m) | (a != a);
    return (vf)(((plan_vi)a & take) | ((plan_vi)m & ~take));
}

ALWAYS_INLINE float plan_max1(float m, float a) { return a > m || a != a ? a : m; }

/* ---- convolution, rows mode ---------------------------------------------------------------- */

/* FOB channels x nv vectors of positions; stores the first ob channels. */
ALWAYS_INLINE void plan_rows_block(const float *x, long c, long xcs, long kh, long kw,
                                   long row_step, long tap_step, const float *wp,
                                   const float *bias, int ob, int nv, float *y, long ycs,
                                   const float *r, long rcs, long act, int combine)
{
    vf acc[PLAN_FOB][PLAN_FNV];
    for (int b = 0; b < PLAN_FOB; b++)
        for (int v = 0; v < nv; v++)
            acc[b][v] = splat(bias[b]);
    for (long ci = 0; ci < c; ci++) {
        for (long i = 0; i < kh; i++) {
            const float *xi = x + ci * xcs + i * row_step;
            const float *wi = wp + (ci * kh + i) * kw * PLAN_FOB;
            for (long j = 0; j < kw; j++) {
                const float *xj = xi + j * tap_step;
                vf xv[PLAN_FNV];
                for (int v = 0; v < nv; v++)
                    xv[v] = load(xj + v * VL);
                for (int b = 0; b < PLAN_FOB; b++) {
                    vf wv = plan_bcast(wi[j * PLAN_FOB + b]);
                    for (int v = 0; v < nv; v++)
                        acc[b][v] += wv * xv[v];
                }
            }
        }
    }
    for (int b = 0; b < ob; b++)
        for (int v = 0; v < nv; v++) {
            vf s = acc[b][v];
            if (r)
                s += load(r + b * rcs + v * VL);
            s = plan_act(s, act);
            if (combine) /* max pooling: the maximum with the rows before */
                s = plan_max(load(y + b * ycs + v * VL), s);
            store(y + b * ycs + v * VL, s);
        }
}

/* A run of len (>= VL) positions for one block of channels: whole register blocks, then single
 * vectors, then the last vector again, overlapping (the same sums; storing or taking the maximum
 * twice changes nothing). Kept out of line so that each caller's registers stay its own: inlined
 * into the pooled kernels, GCC spilled the input vectors of the inner loop to the stack. */
static __attribute__((noinline)) void plan_rows_run(const float *x, long len, long c, long xcs,
                                                    long kh, long kw, long row_step,
                                                    long tap_step, const float *wp,
                                                    const float *bias, int ob, float *y,
                                                    long ycs, const float *r, long rcs, long act,
                                                    int combine)
{
    long l = 0;
    for (; l + PLAN_FNV * VL <= len; l += PLAN_FNV * VL)
        plan_rows_block(x + l, c, xcs, kh, kw, row_step, tap_step, wp, bias, ob, PLAN_FNV,
                        y + l, ycs, r ? r + l : NULL, rcs, act, combine);
    for (; l + VL <= len; l += VL)
        plan_rows_block(x + l, c, xcs, kh, kw, row_step, tap_step, wp, bias, ob, 1, y + l, ycs,
                        r ? r + l : NULL, rcs, act, combine);
    if (l < len)
        plan_rows_block(x + len - VL, c, xcs, kh, kw, row_step, tap_step, wp, bias, ob, 1,
                        y + len - VL, ycs, r ? r + len - VL : NULL, rcs, act, combine);
}

/* A store that bypasses the caches (non-temporal): for output maps too large to stay in them,
 * it saves reading each line before writing it. p must be aligned to a whole vector. */
#if VL == 16 && defined(__AVX512F__)
#define plan_stream(p, v) _mm512_stream_ps((p), (__m512)(v))
#define PLAN_CAN_STREAM 1
#elif VL == 8 && defined(__AVX__)
#define plan_stream(p, v) _mm256_stream_ps((p), (__m256)(v))
#define PLAN_CAN_STREAM 1
#elif VL == 4 && defined(__SSE__)
#define plan_stream(p, v) _mm_stream_ps((p), (__m128)(v))
#define PLAN_CAN_STREAM 1
#else
#define plan_stream(p, v) store((p), (v))
#define PLAN_CAN_STREAM 0
#endif
static long plan_stream_bytes = 8L << 20;
void numcnn_plan_set_stream_bytes(long bytes) { plan_stream_bytes = bytes; }

/* Whether a convolution's output may be written with plan_stream: a map of at least
 * plan_stream_bytes whose every vector is aligned (lanes a multiple of 16, aligned buffer). */
static int plan_streams(const plan_op *op)
{
    return PLAN_CAN_STREAM && plan_stream_bytes > 0 && op->n % 16 == 0 && op->y % 64 == 0
           && op->ycs % 16 == 0 && op->yrs % 16 == 0
           && op->oc * op->oh * op->ow * op->n * (long)sizeof(float) >= plan_stream_bytes;
}

#ifndef PLAN_AHEAD
#define PLAN_AHEAD (2 * PLAN_FNV * VL) /* rows mode: prefetch distance along a row (floats) */
#endif

/* FOB channels x nv vectors of positions, summing over the taps t0 <= t < t1 (a chunk of whole
 * input channels): tap t reads the input at x + off[t] and the weights wp[t * FOB + b]. The
 * first chunk starts from the bias, the others from the partial sums already in y; the last
 * adds the residual and applies the activation. One flat loop over the taps, so that the
 * register block is not reloaded between the kernel's rows and channels. */
ALWAYS_INLINE void plan_rows_chunk(const float *x, const long *off, long t0, long t1,
                                   const float *wp, const float *bias, int ob, int nv, float *y,
                                   long ycs, const float *r, long rcs, long act, int first,
                                   int last, long ahead, int stream)
{
    vf acc[PLAN_FOB][PLAN_FNV];
    for (int b = 0; b < PLAN_FOB; b++)
        for (int v = 0; v < nv; v++)
            acc[b][v] = first || b >= ob ? plan_bcast(bias[b]) : load(y + b * ycs + v * VL);
    for (long t = t0; t < t1; t++) {
        const float *xt = x + off[t], *wt = wp + t * PLAN_FOB;
        if (ahead) /* the same taps of a piece further along the row, into the cache */
            for (int v = 0; v < nv; v++)
                __builtin_prefetch(xt + ahead + v * VL);
        vf xv[PLAN_FNV];
        for (int v = 0; v < nv; v++)
            xv[v] = load(xt + v * VL);
        for (int b = 0; b < PLAN_FOB; b++) {
            vf wv = plan_bcast(wt[b]);
            for (int v = 0; v < nv; v++)
                acc[b][v] += wv * xv[v];
        }
    }
    for (int b = 0; b < ob; b++)
        for (int v = 0; v < nv; v++) {
            vf s = acc[b][v];
            if (last) {
                if (r)
                    s += load(r + b * rcs + v * VL);
                s = plan_act(s, act);
            }
            if (stream && last)
                plan_stream(y + b * ycs + v * VL, s);
            else
                store(y + b * ycs + v * VL, s);
        }
}

/* One piece of nv vectors of positions, every block of output channels, chunk by chunk of the
 * input channels (cc channels, ct = cc * kh * kw taps): the chunk's inputs stay in the L1 cache
 * while every block of output channels reads them. */
static __attribute__((noinline)) void plan_rows_piece(const plan_op *op, const long *off,
                                                      const float *x, float *y, const float *r,
                                                      int nv, long ct, int stream)
{
    const float *wgt = (const float *)op->wgt, *bias = (const float *)op->bias;
    long oc = op->oc, taps = op->c * op->kh * op->kw, blocks = (oc + PLAN_FOB - 1) / PLAN_FOB;
    long act = op->act;
    if (r) /* the residual of the piece after this one, into the cache while this one runs */
        for (long o = 0; o < oc; o++)
            for (int v = 0; v < nv; v++)
                __builtin_prefetch(r + o * op->rcs + nv * VL + v * VL);
    for (long t0 = 0; t0 < taps; t0 += ct) {
        long t1 = taps - t0 < ct ? taps : t0 + ct;
        int first = t0 == 0, last = t1 == taps;
        for (long blk = 0; blk < blocks; blk++) {
            long o0 = blk * PLAN_FOB;
            int ob = (int)(oc - o0 < PLAN_FOB ? oc - o0 : PLAN_FOB);
            const float *wp = wgt + blk * taps * PLAN_FOB;
            const float *rb = r ? r + o0 * op->rcs : NULL;
            if (nv == PLAN_FNV && blk == 0)
                plan_rows_chunk(x, off, t0, t1, wp, bias + o0, ob, PLAN_FNV, y + o0 * op->ycs,
                                op->ycs, rb, op->rcs, act, first, last, PLAN_AHEAD, stream);
            else if (nv == PLAN_FNV)
                plan_rows_chunk(x, off, t0, t1, wp, bias + o0, ob, PLAN_FNV, y + o0 * op->ycs,
                                op->ycs, rb, op->rcs, act, first, last, 0, stream);
            else
                plan_rows_chunk(x, off, t0, t1, wp, bias + o0, ob, 1, y + o0 * op->ycs,
                                op->ycs, rb, op->rcs, act, first, last, 0, stream);
        }
    }
}

#ifndef PLAN_L1_FLOATS
#define PLAN_L1_FLOATS 8192 /* rows mode: input floats a chunk of channels may keep in L1 */
#endif

/* The taps of a convolution: tap (ci, i, j) reads the input at off[t] from a position's first
 * number; and the taps per chunk of input channels whose inputs for one piece fit in L1. */
static long *plan_tap_offsets(const plan_op *op, long *chunk_taps)
{
    long c = op->c, kh = op->kh, kw = op->kw, n = op->n;
    long *off = malloc((size_t)(c * kh * kw) * sizeof(long));
    if (!off)
        return NULL;
    for (long ci = 0, t = 0; ci < c; ci++)
        for (long i = 0; i < kh; i++)
            for (long j = 0; j < kw; j++, t++)
                off[t] = ci * op->xcs + i * op->dh * op->xrs + j * op->dw * n;
    /* chunks of input channels of equal size, each within the L1 budget */
    long cc = PLAN_L1_FLOATS / (kh * kw * PLAN_FNV * VL);
    cc = cc < 1 ? 1 : cc > c ? c : cc;
    long chunks = (c + cc - 1) / cc;
    *chunk_taps = (c + chunks - 1) / chunks * kh * kw;
    return off;
}

/* A run of len >= VL positions (one vector run in input and output alike): whole pieces, then
 * single vectors, then the last vector again, overlapping (its first chunk overwrites the
 * partial sums, so the positions done before come out the same). */
static void plan_rows_lanes(const plan_op *op, const long *off, const float *x, float *y,
                            const float *r, long len, long ct, int stream)
{
    long piece = PLAN_FNV * VL, l = 0;
    for (; l + piece <= len; l += piece)
        plan_rows_piece(op, off, x + l, y + l, r ? r + l : NULL, PLAN_FNV, ct, stream);
    for (; l + VL <= len; l += VL)
        plan_rows_piece(op, off, x + l, y + l, r ? r + l : NULL, 1, ct, stream);
    if (l < len)
        plan_rows_piece(op, off, x + len - VL, y + len - VL, r ? r + len - VL : NULL, 1, ct,
                        stream);
#if PLAN_CAN_STREAM
    if (stream)
        _mm_sfence(); /* the streamed stores visible before another thread reads */
#endif
}

static int plan_conv_rows(const plan_op *op)
{
    const float *x = (const float *)op->x, *res = (const float *)op->r;
    float *y = (float *)op->y;
    long oc = op->oc, oh = op->oh, len = op->ow * op->n, tile = PLAN_ROW_TILE, ct;
    long tiles = len / tile > 0 ? len / tile : 1, tasks = tiles * oh;
    long *off = plan_tap_offsets(op, &ct);
    if (!off)
        return 2;
    int nthreads = plan_threads(tasks, 2 * oc * oh * len * op->c * op->kh * op->kw);
    int stream = plan_streams(op);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel for schedule(dynamic) num_threads(nthreads)
    for (long task = 0; task < tasks; task++) {
        long t = task / oh, p = task % oh;
        long l0 = t * tile, l1 = t == tiles - 1 ? len : l0 + tile;
        plan_rows_lanes(op, off, x + p * op->sh * op->xrs + l0, y + p * op->yrs + l0,
                        res ? res + p * op->rrs + l0 : NULL, l1 - l0, ct, stream);
    }
    free(off);
    return 0;
}

/* ---- convolution, Winograd mode ------------------------------------------------------------ */

/* Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional
 * Neural Networks", CVPR 2016) for 3x3 convolutions of stride 1 without dilation, on maps of
 * even height and width: each 2x2 block of outputs (a tile) of output channel o is
 *
 *     Y = A^T [ sum_ci U[o,ci] (.) V[ci] ] A,   U = G g G^T (made once), V = B^T d B,
 *
 * d the tile's 4x4 input patch, (.) the product number by number: 16 products per input
 * channel for 4 outputs where the direct sum takes 36 (2.25 times fewer). The transforms
 * (matrices of 0, +-1 and, in G, 1/2) are additions. Vectorised along a tile's samples
 * (CHWN: contiguous); a unit is a tile and nv vectors of samples: its V (16 x c x nv vectors)
 * and its sums M (16 x OCP x nv vectors) live in a scratch of the thread, in the L1/L2 cache.
 * U is packed (16, blocks, c, FOB) by plan_kernels.pack_winograd. */
#ifndef PLAN_WNV
#define PLAN_WNV PLAN_FNV
#endif
#define PLAN_WS (PLAN_WNV * VL) /* samples per unit */

/* M[xi] = U[xi] V[xi] for the points xi < points: per point, FOB output channels x nv vectors of
 * samples in registers, summed over the input channels (the rows kernel's register block). */
ALWAYS_INLINE void plan_wino_products(const plan_op *op, const float *v, float *m, int points,
                                      int nv)
{
    const float *u = (const float *)op->wgt;
    long c = op->c, oc = op->oc;
    long blocks = (oc + PLAN_FOB - 1) / PLAN_FOB, ocp = blocks * PLAN_FOB;
    for (int xi = 0; xi < points; xi++)
        for (long blk = 0; blk < blocks; blk++) {
            const float *ub = u + (xi * blocks + blk) * c * PLAN_FOB, *vx = v + xi * c * PLAN_WS;
            vf acc[PLAN_FOB][PLAN_FNV];
            for (int b = 0; b < PLAN_FOB; b++)
                for (int k = 0; k < nv; k++)
                    acc[b][k] = splat(0.0f);
            for (long ci = 0; ci < c; ci++) {
                vf xv[PLAN_FNV];
                for (int k = 0; k < nv; k++)
                    xv[k] = load(vx + ci * PLAN_WS + k * VL);
                for (int b = 0; b < PLAN_FOB; b++) {
                    vf wv = plan_bcast(ub[ci * PLAN_FOB + b]);
                    for (int k = 0; k < nv; k++)
                        acc[b][k] += wv * xv[k];
                }
            }
            float *mb = m + (xi * ocp + blk * PLAN_FOB) * PLAN_WS;
            for (int b = 0; b < PLAN_FOB; b++)
                for (int k = 0; k < nv; k++)
                    store(mb + b * PLAN_WS + k * VL, acc[b][k]);
        }
}

ALWAYS_INLINE void plan_wino_unit(const plan_op *op, const float *x, float *y, const float *r,
                                  float *v, float *m, int nv)
{
    const float *bias = (const float *)op->bias;
    long c = op->c, oc = op->oc, n = op->n, xcs = op->xcs, xrs = op->xrs;
    long ocp = (oc + PLAN_FOB - 1) / PLAN_FOB * PLAN_FOB;
    long act = op->act;
    /* V = B^T d B, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
    for (long ci = 0; ci < c; ci++)
        for (int k = 0; k < nv; k++) {
            const float *xc = x + ci * xcs + k * VL;
            vf d[4][4], t[4][4];
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++)
                    d[a][b] = load(xc + a * xrs + b * n);
            for (int b = 0; b < 4; b++) {
                t[0][b] = d[0][b] - d[2][b];
                t[1][b] = d[1][b] + d[2][b];
                t[2][b] = d[2][b] - d[1][b];
                t[3][b] = d[1][b] - d[3][b];
            }
            for (int a = 0; a < 4; a++) {
                float *va = v + ((a * 4) * c + ci) * PLAN_WS + k * VL;
                store(va, t[a][0] - t[a][2]);
                store(va + c * PLAN_WS, t[a][1] + t[a][2]);
                store(va + 2 * c * PLAN_WS, t[a][2] - t[a][1]);
                store(va + 3 * c * PLAN_WS, t[a][1] - t[a][3]);
            }
        }
    plan_wino_products(op, v, m, 16, nv);
    /* Y = A^T M A + bias (+ residual), A^T = [1 1 1 0; 0 1 -1 -1] */
    for (long o = 0; o < oc; o++)
        for (int k = 0; k < nv; k++) {
            vf mm[4][4], s2[2][4], yv[2][2];
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++)
                    mm[a][b] = load(m + ((a * 4 + b) * ocp + o) * PLAN_WS + k * VL);
            for (int b = 0; b < 4; b++) {
                s2[0][b] = mm[0][b] + mm[1][b] + mm[2][b];
                s2[1][b] = mm[1][b] - mm[2][b] - mm[3][b];
            }
            vf bo = plan_bcast(bias[o]);
            for (int a = 0; a < 2; a++) {
                yv[a][0] = s2[a][0] + s2[a][1] + s2[a][2] + bo;
                yv[a][1] = s2[a][1] - s2[a][2] - s2[a][3] + bo;
            }
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    vf out = yv[a][b];
                    if (r)
                        out += load(r + o * op->rcs + a * op->rrs + b * n + k * VL);
                    store(y + o * op->ycs + a * op->yrs + b * n + k * VL, plan_act(out, act));
                }
        }
}


/* F(4x4, 3x3): 4x4 outputs per tile from a 6x6 patch, 36 products per input channel where the
 * direct sum takes 144 (4 times fewer); output maps whose height and width are multiples of 4.
 * The transforms (Lavin and Gray, section 4.2):
 *     B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
 *            0 4 0 -5 0 1],
 *     A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1],
 * G in plan_kernels.pack_winograd. Each is applied along one axis, then the other. */
ALWAYS_INLINE void plan_bt6(const vf d[6], vf t[6])
{
    vf a = d[4] - 4.0f * d[2], b = d[3] - 4.0f * d[1];
    vf c = d[4] - d[2], e = 2.0f * (d[3] - d[1]);
    t[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
    t[1] = a + b;
    t[2] = a - b;
    t[3] = c + e;
    t[4] = c - e;
    t[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
}

ALWAYS_INLINE void plan_at6(const vf m[6], vf y[4])
{
    vf p = m[1] + m[2], q = m[1] - m[2], u = m[3] + m[4], w = m[3] - m[4];
    y[0] = m[0] + p + u;
    y[1] = q + 2.0f * w;
    y[2] = p + 4.0f * u;
    y[3] = q + 8.0f * w + m[5];
}

ALWAYS_INLINE void plan_wino4_unit(const plan_op *op, const float *x, float *y, const float *r,
                                   float *v, float *m, int nv)
{
    const float *bias = (const float *)op->bias;
    long c = op->c, oc = op->oc, n = op->n, xcs = op->xcs, xrs = op->xrs;
    long ocp = (oc + PLAN_FOB - 1) / PLAN_FOB * PLAN_FOB;
    long act = op->act;
    for (long ci = 0; ci < c; ci++)
        for (int k = 0; k < nv; k++) {
            const float *xc = x + ci * xcs + k * VL;
            vf t[6][6];
            for (int b = 0; b < 6; b++) { /* B^T d, column by column */
                vf col[6], out[6];
                for (int a = 0; a < 6; a++)
                    col[a] = load(xc + a * xrs + b * n);
                plan_bt6(col, out);
                for (int a = 0; a < 6; a++)
                    t[a][b] = out[a];
            }
            for (int a = 0; a < 6; a++) { /* (B^T d) B, row by row */
                vf out[6];
                plan_bt6(t[a], out);
                for (int b = 0; b < 6; b++)
                    store(v + ((a * 6 + b) * c + ci) * PLAN_WS + k * VL, out[b]);
            }
        }
    plan_wino_products(op, v, m, 36, nv);
    for (long o = 0; o < oc; o++)
        for (int k = 0; k < nv; k++) {
            vf s4[4][6];
            for (int b = 0; b < 6; b++) { /* A^T M, column by column */
                vf col[6], out[4];
                for (int a = 0; a < 6; a++)
                    col[a] = load(m + ((a * 6 + b) * ocp + o) * PLAN_WS + k * VL);
                plan_at6(col, out);
                for (int a = 0; a < 4; a++)
                    s4[a][b] = out[a];
            }
            vf bo = plan_bcast(bias[o]);
            for (int a = 0; a < 4; a++) { /* (A^T M) A + bias (+ residual), row by row */
                vf out[4];
                plan_at6(s4[a], out);
                for (int b = 0; b < 4; b++) {
                    vf yv = out[b] + bo;
                    if (r)
                        yv += load(r + o * op->rcs + a * op->rrs + b * n + k * VL);
                    store(y + o * op->ycs + a * op->yrs + b * n + k * VL, plan_act(yv, act));
                }
            }
        }
}

/* A tile's units over all its samples: whole units, then single vectors, then the last vector
 * again, overlapping (the same outputs). tile: 2 for F(2x2, 3x3), 4 for F(4x4, 3x3). */
#define PLAN_WINO_UNITS(UNIT)                                                                \
    for (; s + PLAN_WS <= n; s += PLAN_WS)                                                   \
        UNIT(op, x + s, y + s, r ? r + s : NULL, v, m, PLAN_WNV);                            \
    for (; s + VL <= n; s += VL)                                                             \
        UNIT(op, x + s, y + s, r ? r + s : NULL, v, m, 1);                                   \
    if (s < n)                                                                               \
        UNIT(op, x + n - VL, y + n - VL, r ? r + n - VL : NULL, v, m, 1);

static __attribute__((noinline)) void plan_wino_units(const plan_op *op, int tile,
                                                      const float *x, float *y, const float *r,
                                                      float *v, float *m)
{
    long n = op->n, s = 0;
    if (tile == 4) {
        PLAN_WINO_UNITS(plan_wino4_unit)
    } else {
        PLAN_WINO_UNITS(plan_wino_unit)
    }
}

static int plan_conv_winograd(const plan_op *op, int tile)
{
    const float *x = (const float *)op->x, *res = (const float *)op->r;
    float *y = (float *)op->y;
    long points = (tile + 2) * (tile + 2);
    long c = op->c, oc = op->oc, n = op->n, th = op->oh / tile, tw = op->ow / tile;
    long ocp = (oc + PLAN_FOB - 1) / PLAN_FOB * PLAN_FOB, tasks = th * tw;
    int nthreads = plan_threads(tasks, 2 * oc * op->oh * op->ow * n * c * 9);
    int failed = 0;
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        float *v = alloc_aligned((size_t)(points * c * PLAN_WS) * sizeof(float));
        float *m = alloc_aligned((size_t)(points * ocp * PLAN_WS) * sizeof(float));
        failed = !v || !m;
#pragma omp for schedule(dynamic)
        for (long task = 0; task < tasks; task++) {
            if (failed)
                continue;
            long ty = task / tw * tile, tx = task % tw * tile;
            plan_wino_units(op, tile, x + ty * op->xrs + tx * n, y + ty * op->yrs + tx * n,
                            res ? res + ty * op->rrs + tx * n : NULL, v, m);
        }
        free(v);
        free(m);
    }
    return failed ? 2 : 0;
}

/* Samples per task of the columns and pooled modes: about tile, in whole lines of 16 floats (so
 * that, the lanes being a multiple of 16, every block starts on a cache line). */
static long plan_sample_span(long n, long tile)
{
    long sblocks = (n + tile - 1) / tile, span = (n + sblocks - 1) / sblocks;
    return n % 16 == 0 ? (span + 15) / 16 * 16 : span;
}

/* "Columns" mode: a strided convolution of a batch (stride along the width, so that a row's
 * positions are not one run): for every output position (p, q) the batch's samples are one
 * contiguous run in the input and the output alike, so the rows kernel runs along them. A task
 * is one position and a block of samples. */
static int plan_conv_columns(const plan_op *op)
{
    const float *x = (const float *)op->x, *res = (const float *)op->r;
    float *y = (float *)op->y;
    long oc = op->oc, n = op->n, oh = op->oh, ow = op->ow, ct;
    long span = plan_sample_span(n, PLAN_COLUMN_TILE), sblocks = (n + span - 1) / span;
    long tasks = oh * ow * sblocks;
    long *off = plan_tap_offsets(op, &ct);
    if (!off)
        return 2;
    int nthreads = plan_threads(tasks, 2 * oc * oh * ow * n * op->c * op->kh * op->kw);
    int stream = plan_streams(op);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel for schedule(dynamic) num_threads(nthreads)
    for (long task = 0; task < tasks; task++) {
        long sb = task % sblocks, q = task / sblocks % ow, p = task / sblocks / ow;
        long s0 = sb * span, len = s0 + span < n ? span : n - s0;
        plan_rows_lanes(op, off, x + p * op->sh * op->xrs + q * op->sw * n + s0,
                        y + p * op->yrs + q * n + s0,
                        res ? res + p * op->rrs + q * n + s0 : NULL, len, ct, stream);
    }
    free(off);
    return 0;
}

/* Rows mode with max pooling fused, for batches of at least 64: a task is one pooled output
 * position (pr, u) and a block of samples; each block of channels computes the ph x pw conv
 * positions of the window over those samples (contiguous runs of the batch) into a small
 * scratch (the first stores, the others keep the maximum) and stores the result. Only the
 * inputs of one window and block of samples are live, whatever the batch size. */
static int plan_conv_rows_pool_wide(const plan_op *op)
{
    const float *x = (const float *)op->x, *wgt = (const float *)op->wgt;
    const float *bias = (const float *)op->bias;
    float *y = (float *)op->y;
    long c = op->c, oc = op->oc, kh = op->kh, kw = op->kw, n = op->n, ph = op->ph, pw = op->pw;
    long pooled_h = op->oh / ph, pooled_w = op->ow / pw;
    long span = plan_sample_span(n, PLAN_TILE), sblocks = (n + span - 1) / span;
    long tasks = pooled_h * pooled_w * sblocks;
    long taps = c * kh * kw, blocks = (oc + PLAN_FOB - 1) / PLAN_FOB;
    long row_step = op->dh * op->xrs, tap_step = op->dw * n;
    long act = op->act;
    int failed = 0;
    int nthreads = plan_threads(tasks, 2 * oc * op->oh * op->ow * n * taps);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel num_threads(nthreads)
    {
        float *scratch = alloc_aligned((size_t)(PLAN_FOB * span) * sizeof(float));
        if (!scratch)
            failed = 1;
#pragma omp for schedule(dynamic)
        for (long task = 0; task < tasks; task++) {
            if (!scratch)
                continue;
            long sb = task % sblocks, u = task / sblocks % pooled_w;
            long pr = task / sblocks / pooled_w;
            long s0 = sb * span, len = s0 + span < n ? span : n - s0;
            for (long blk = 0; blk < blocks; blk++) {
                long o0 = blk * PLAN_FOB;
                int ob = (int)(oc - o0 < PLAN_FOB ? oc - o0 : PLAN_FOB);
                const float *wp = wgt + blk * taps * PLAN_FOB, *bs = bias + o0;
                for (long i = 0; i < ph; i++)
                    for (long j = 0; j < pw; j++) {
                        const float *xs = x + (pr * ph + i) * op->sh * op->xrs
                                          + (u * pw + j) * n + s0;
                        int combine = i > 0 || j > 0;
                        plan_rows_run(xs, len, c, op->xcs, kh, kw, row_step, tap_step, wp, bs,
                                      PLAN_FOB, scratch, span, NULL, 0, act, combine);
                    }
                for (int b = 0; b < ob; b++)
                    memcpy(y + (o0 + b) * op->ycs + pr * op->yrs + u * n + s0,
                           scratch + b * span, (size_t)len * sizeof(float));
            }
        }
        free(scratch);
    }
    return failed ? 2 : 0;
}

/* Rows mode with max pooling fused (ph x pw windows, stride = window): a task is a tile of
 * whole windows along the row and one pooled row; each block of channels sums the ph conv rows
 * of the window into a scratch tile (the first stores, the others keep the maximum), then pools
 * its columns into the output. The conv map itself is never written to memory. ReLU commutes
 * with the maximum, so it is applied to the conv rows as they are made. */
static int plan_conv_rows_pool(const plan_op *op)
{
    const float *x = (const float *)op->x, *wgt = (const float *)op->wgt;
    const float *bias = (const float *)op->bias;
    float *y = (float *)op->y;
    long c = op->c, oc = op->oc, kh = op->kh, kw = op->kw, n = op->n, ph = op->ph, pw = op->pw;
    long pooled_h = op->oh / ph, pooled_w = op->ow / pw, window = pw * n;
    long per_tile = 256 / window > 0 ? 256 / window : 1; /* pooled columns per task */
    if (per_tile > pooled_w)
        per_tile = pooled_w;
    /* the last tile takes the columns left over, so that no tile is shorter than a vector
     * (the whole row, pooled_w * window, is at least 64 positions in rows mode) */
    long tiles = pooled_w / per_tile, tasks = tiles * pooled_h;
    long taps = c * kh * kw, blocks = (oc + PLAN_FOB - 1) / PLAN_FOB;
    long row_step = op->dh * op->xrs, tap_step = op->dw * n;
    long span = (pooled_w - (tiles - 1) * per_tile) * window; /* the longest tile, the last */
    long act = op->act;
    int failed = 0;
    int nthreads = plan_threads(tasks, 2 * oc * op->oh * op->ow * n * taps);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel num_threads(nthreads)
    {
        float *scratch = alloc_aligned((size_t)(PLAN_FOB * span) * sizeof(float));
        if (!scratch)
            failed = 1;
#pragma omp for schedule(dynamic)
        for (long task = 0; task < tasks; task++) {
            if (!scratch)
                continue;
            long t = task / pooled_h, pr = task % pooled_h;
            long u0 = t * per_tile, u1 = t == tiles - 1 ? pooled_w : u0 + per_tile;
            long l0 = u0 * window, len = (u1 - u0) * window; /* conv positions of the tile */
            for (long blk = 0; blk < blocks; blk++) {
                long o0 = blk * PLAN_FOB;
                int ob = (int)(oc - o0 < PLAN_FOB ? oc - o0 : PLAN_FOB);
                const float *wp = wgt + blk * taps * PLAN_FOB, *bs = bias + o0;
                for (long i = 0; i < ph; i++) {
                    const float *xrow = x + (pr * ph + i) * op->sh * op->xrs + l0;
                    int combine = i > 0;
                    plan_rows_run(xrow, len, c, op->xcs, kh, kw, row_step, tap_step, wp, bs,
                                  PLAN_FOB, scratch, span, NULL, 0, act, combine);
                }
                for (int b = 0; b < ob; b++) {
                    float *yo = y + (o0 + b) * op->ycs + pr * op->yrs + u0 * n;
                    const float *sc = scratch + b * span;
                    for (long u = 0; u < u1 - u0; u++) {
                        const float *su = sc + u * window;
                        float *yu = yo + u * n;
                        for (long s = 0; s < n; s++)
                            yu[s] = su[s];
                        for (long j = 1; j < pw; j++)
#pragma omp simd
                            for (long s = 0; s < n; s++)
                                yu[s] = plan_max1(yu[s], su[j * n + s]);
                    }
                }
            }
        }
        free(scratch);
    }
    return failed ? 2 : 0;
}

/* ---- convolution, channels mode ------------------------------------------------------------ */

/* np positions x ov vectors of output channels, summed over the taps. */
ALWAYS_INLINE void plan_channels_block(const float *const *xs, int np, long c, long xcs,
                                       long kh, long kw, long row_step, long tap_step,
                                       const float *wp, long ocp, int ov,
                                       vf acc[PLAN_SNP][PLAN_SOV])
{
    for (int pp = 0; pp < np; pp++)
        for (int v = 0; v < ov; v++)
            acc[pp][v] = splat(0.0f);
    for (long ci = 0; ci < c; ci++)
        for (long i = 0; i < kh; i++)
            for (long j = 0; j < kw; j++) {
                long off = ci * xcs + i * row_step + j * tap_step;
                const float *wt = wp + ((ci * kh + i) * kw + j) * ocp;
                vf wv[PLAN_SOV];
                for (int v = 0; v < ov; v++)
                    wv[v] = load(wt + v * VL);
                for (int pp = 0; pp < np; pp++) {
                    vf xv = plan_bcast(xs[pp][off]);
                    for (int v = 0; v < ov; v++)
                        acc[pp][v] += wv[v] * xv;
                }
            }
}

static void plan_conv_channels(const plan_op *op)
{
    const float *x = (const float *)op->x, *wgt = (const float *)op->wgt;
    const float *bias = (const float *)op->bias, *res = (const float *)op->r;
    float *y = (float *)op->y;
    long c = op->c, oc = op->oc, kh = op->kh, kw = op->kw, n = op->n, ow = op->ow;
    long ocp = (oc + VL - 1) / VL * VL, taps = c * kh * kw, positions = op->oh * ow * n;
    long blocks = (positions + PLAN_SNP - 1) / PLAN_SNP;
    long oblocks = (ocp / VL + PLAN_SOV - 1) / PLAN_SOV;
    long row_step = op->dh * op->xrs, tap_step = op->dw * op->xcol;
    long act = op->act;
    int nthreads = plan_threads(blocks, 2 * oc * positions * taps);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel for schedule(dynamic, 8) num_threads(nthreads)
    for (long blk = 0; blk < blocks; blk++) {
        const float *xs[PLAN_SNP];
        long yoff[PLAN_SNP], roff[PLAN_SNP];
        int valid = (int)(positions - blk * PLAN_SNP < PLAN_SNP ? positions - blk * PLAN_SNP
                                                                : PLAN_SNP);
        for (int pp = 0; pp < valid; pp++) {
            long k = blk * PLAN_SNP + pp;
            long s = k % n, q = k / n % ow, p = k / n / ow;
            xs[pp] = x + p * op->sh * op->xrs + q * op->sw * op->xcol + s * op->xs;
            yoff[pp] = p * op->yrs + q * op->ycol + s * op->ys;
            roff[pp] = p * op->rrs + q * op->ycol + s * op->ys;
        }
        for (long ob = 0; ob < oblocks; ob++) {
            long o0 = ob * PLAN_SOV * VL;
            int ov = (int)((ocp - o0) / VL < PLAN_SOV ? (ocp - o0) / VL : PLAN_SOV);
            vf acc[PLAN_SNP][PLAN_SOV];
            const float *wp = wgt + o0;
            if (valid == PLAN_SNP && ov == PLAN_SOV)
                plan_channels_block(xs, PLAN_SNP, c, op->xcs, kh, kw, row_step, tap_step, wp,
                                    ocp, PLAN_SOV, acc);
            else if (valid == PLAN_SNP)
                plan_channels_block(xs, PLAN_SNP, c, op->xcs, kh, kw, row_step, tap_step, wp,
                                    ocp, 1, acc);
            else
                for (int pp = 0; pp < valid; pp++)
                    for (int v = 0; v < ov; v++) {
                        vf one[PLAN_SNP][PLAN_SOV];
                        plan_channels_block(xs + pp, 1, c, op->xcs, kh, kw, row_step, tap_step,
                                            wp + v * VL, ocp, 1, one);
                        acc[pp][v] = one[0][0];
                    }
            for (int pp = 0; pp < valid; pp++)
                for (int v = 0; v < ov; v++) {
                    vf sum = acc[pp][v] + load(bias + o0 + v * VL);
                    if (res) /* the residual, one channel at a time (strided) */
                        for (int k = 0; k < VL && o0 + v * VL + k < oc; k++)
                            sum[k] += res[(o0 + v * VL + k) * op->rcs + roff[pp]];
                    sum = plan_act(sum, act); /* a whole vector at once (tanh vectorised) */
                    for (int k = 0; k < VL; k++) {
                        long o = o0 + v * VL + k;
                        if (o >= oc)
                            break;
                        y[o * op->ycs + yoff[pp]] = sum[k];
                    }
                }
        }
    }
}

/* Channels mode with max pooling fused: a block is the ph*pw conv positions of one window
 * (at most PLAN_SNP), reduced to their maximum before the bias, the ReLU and the store; the
 * conv map is never written. */
static int plan_conv_channels_pool(const plan_op *op)
{
    const float *x = (const float *)op->x, *wgt = (const float *)op->wgt;
    const float *bias = (const float *)op->bias;
    float *y = (float *)op->y;
    long c = op->c, oc = op->oc, kh = op->kh, kw = op->kw, n = op->n, ph = op->ph, pw = op->pw;
    long pooled_h = op->oh / ph, pooled_w = op->ow / pw, window = ph * pw;
    if (window > PLAN_SNP)
        return -3;
    long ocp = (oc + VL - 1) / VL * VL, taps = c * kh * kw, outputs = pooled_h * pooled_w * n;
    long oblocks = (ocp / VL + PLAN_SOV - 1) / PLAN_SOV;
    long row_step = op->dh * op->xrs, tap_step = op->dw * op->xcol;
    long act = op->act;
    int nthreads = plan_threads(outputs, 2 * oc * outputs * window * taps);
    UNUSED_WITHOUT_OPENMP(nthreads);
#pragma omp parallel for schedule(dynamic, 4) num_threads(nthreads)
    for (long k = 0; k < outputs; k++) {
        long s = k % n, u = k / n % pooled_w, pr = k / n / pooled_w;
        const float *xs[PLAN_SNP];
        for (long i = 0; i < ph; i++)
            for (long j = 0; j < pw; j++)
                xs[i * pw + j] = x + (pr * ph + i) * op->sh * op->xrs
                                 + (u * pw + j) * op->sw * op->xcol + s * op->xs;
        long yoff = pr * op->yrs + u * op->ycol + s * op->ys;
        for (long ob = 0; ob < oblocks; ob++) {
            long o0 = ob * PLAN_SOV * VL;
            int ov = (int)((ocp - o0) / VL < PLAN_SOV ? (ocp - o0) / VL : PLAN_SOV);
            vf acc[PLAN_SNP][PLAN_SOV];
            const float *wp = wgt + o0;
            if (window == 4 && ov == PLAN_SOV)
                plan_channels_block(xs, 4, c, op->xcs, kh, kw, row_step, tap_step, wp, ocp,
                                    PLAN_SOV, acc);
            else if (window == 4)
                plan_channels_block(xs, 4, c, op->xcs, kh, kw, row_step, tap_step, wp, ocp, 1,
                                    acc);
            else
                for (int v = 0; v < ov; v++) {
                    vf one[PLAN_SNP][PLAN_SOV] = {{{0}}};
                    plan_channels_block(xs, (int)window, c, op->xcs, kh, kw, row_step,
                                        tap_step, wp + v * VL, ocp, 1, one);
                    for (long pp = 0; pp < window; pp++)
                        acc[pp][v] = one[pp][0];
                }
            for (int v = 0; v < ov; v++) {
                vf m = acc[0][v];
                for (long pp = 1; pp < window; pp++)
                    m = plan_max(m, acc[pp][v]);
                m += load(bias + o0 + v * VL);
                m = plan_act(m, act);
                for (int kk = 0; kk < VL; kk++) {
                    long o = o0 + v * VL + kk;
                    if (o >= oc)
                        break;
                    y[o * op->ycs + yoff] = m[kk];
                }
            }
        }
    }
    return 0;
}

/* ---- the layers between the convolutions ------------------------------------------------- */

static int plan_pass_threads(long size)
{
    return size < PLAN_MIN_PARALLEL_NUMBERS ? 1 : thread_count(size / 8192 + 1, size * 32, 0);
}

static void plan_max_pool(const plan_op *op)
{
    const float *x = (const float *)op->x;
    float *y = (float *)op->y;
    long n = op->n, oh = op->oh, ow = op->ow, tasks = op->c * oh;
    long act = op->act;
#pragma omp parallel for schedule(dynamic, 4) \
    num_threads(plan_pass_threads(op->c * op->h * op->w * n))
    for (long task = 0; task < tasks; task++) {
        long ch = task / oh, p = task % oh;
        const float *xr = x + ch * op->xcs + p * op->sh * op->xrs;
        float *yr = y + ch * op->ycs + p * op->yrs;
        if (n == 1) { /* a single image: the window's maximum directly */
            for (long q = 0; q < ow; q++) {
                const float *xq = xr + q * op->sw;
                float m = xq[0];
                for (long i = 0; i < op->kh; i++)
                    for (long j = (i == 0); j < op->kw; j++)
                        m = plan_max1(m, xq[i * op->xrs + j]);
                yr[q] = plan_act1(m, act);
            }
            continue;
        }
        for (long q = 0; q < ow; q++) {
            const float *xq = xr + q * op->sw * n;
            float *yq = yr + q * n;
            for (long s = 0; s < n; s++) /* the window's first position, to start with */
                yq[s] = xq[s];
            for (long i = 0; i < op->kh; i++)
                for (long j = (i == 0); j < op->kw; j++) {
                    const float *xij = xq + i * op->xrs + j * n;
#pragma omp simd
                    for (long s = 0; s < n; s++) {
                        float v = xij[s];
                        yq[s] = v > yq[s] || v != v ? v : yq[s];
                    }
                }
            if (act)
                for (long s = 0; s < n; s++)
                    yq[s] = plan_act1(yq[s], act);
        }
    }
}

/* Average pooling over windows without padding: y = act(sum of the window / (kh*kw)). */
static void plan_avg_pool(const plan_op *op)
{
    const float *x = (const float *)op->x;
    float *y = (float *)op->y;
    long n = op->n, oh = op->oh, ow = op->ow, tasks = op->c * oh;
    long act = op->act;
    float inv = 1.0f / (float)(op->kh * op->kw);
#pragma omp parallel for schedule(dynamic, 4) \
    num_threads(plan_pass_threads(op->c * op->h * op->w * n))
    for (long task = 0; task < tasks; task++) {
        long ch = task / oh, p = task % oh;
        const float *xr = x + ch * op->xcs + p * op->sh * op->xrs;
        float *yr = y + ch * op->ycs + p * op->yrs;
        if (n == 1) { /* a single image: the window's numbers summed directly */
            for (long q = 0; q < ow; q++) {
                const float *xq = xr + q * op->sw;
                float sum = 0.0f;
                for (long i = 0; i < op->kh; i++)
                    for (long j = 0; j < op->kw; j++)
                        sum += xq[i * op->xrs + j];
                yr[q] = plan_act1(sum * inv, act);
            }
            continue;
        }
        for (long q = 0; q < ow; q++) {
            const float *xq = xr + q * op->sw * n;
            float *yq = yr + q * n;
            for (long s = 0; s < n; s++)
                yq[s] = 0.0f;
            for (long i = 0; i < op->kh; i++)
                for (long j = 0; j < op->kw; j++) {
                    const float *xij = xq + i * op->xrs + j * n;
#pragma omp simd
                    for (long s = 0; s < n; s++)
                        yq[s] += xij[s];
                }
            for (long s = 0; s < n; s++)
                yq[s] = plan_act1(yq[s] * inv, act);
        }
    }
}

static void plan_ewise(const plan_op *op)
{
    const float *x = (const float *)op->x, *r = (const float *)op->r;
    float *y = (float *)op->y;
    long run = op->w * op->n, tasks = op->c * op->h;
    long act = op->act;
#pragma omp parallel for schedule(dynamic, 4) num_threads(plan_pass_threads(tasks * run))
    for (long task = 0; task < tasks; task++) {
        long ch = task / op->h, p = task % op->h;
        const float *xr = x + ch * op->xcs + p * op->xrs;
        const float *rr = r ? r + ch * op->rcs + p * op->rrs : NULL;
        float *yr = y + ch * op->ycs + p * op->yrs;
        if (rr) {
#pragma omp simd
            for (long l = 0; l < run; l++) {
                float s = xr[l] + rr[l];
                yr[l] = plan_act1(s, act);
            }
        } else {
#pragma omp simd
            for (long l = 0; l < run; l++)
                yr[l] = plan_act1(xr[l], act);
        }
    }
}

/* Any 4-D strides to any 4-D strides (see PLAN_COPY). Returns 1 when op->mode is 1 (the input copy of a table with Winograd operations) and a
 * number copied was NaN or infinite, else 0. */
static int plan_copy(const plan_op *op, const float *input, const long *in_strides,
                     float *output)
{
    const float *x = op->ends & PLAN_FROM_INPUT ? input : (const float *)op->x;
    float *y = op->ends & PLAN_TO_OUTPUT ? output : (float *)op->y;
    long xs = op->xs, xcs = op->xcs, xrs = op->xrs, xcol = op->xcol;
    if (op->ends & PLAN_FROM_INPUT) { /* (n, c, h, w) strides of the caller's array */
        xs = in_strides[0], xcs = in_strides[1], xrs = in_strides[2], xcol = in_strides[3];
    }
    long n = op->n, w = op->w, tasks = op->c * op->h;
    int check = op->mode == 1, nonfinite = 0;
    /* blocks of 16 samples by the row's columns: both sides read or written in short runs */
#pragma omp parallel for schedule(dynamic, 4) num_threads(plan_pass_threads(tasks * w * n)) \
    reduction(| : nonfinite)
    for (long task = 0; task < tasks; task++) {
        long ch = task / op->h, p = task % op->h;
        const float *xr = x + ch * xcs + p * xrs;
        float *yr = y + ch * op->ycs + p * op->yrs;
        float probe = 0.0f; /* x - x is 0 for a finite x, NaN for NaN and infinities */
        for (long s0 = 0; s0 < n; s0 += 16) {
            long s1 = s0 + 16 < n ? s0 + 16 : n;
            for (long q = 0; q < w; q++)
                for (long s = s0; s < s1; s++) {
                    float v = xr[q * xcol + s * xs];
                    yr[q * op->ycol + s * op->ys] = v;
                    probe += v - v;
                }
        }
        if (check && probe != 0.0f)
            nonfinite = 1;
    }
    return nonfinite;
}

static void plan_mean(const plan_op *op)
{
    const float *x = (const float *)op->x;
    float *y = (float *)op->y;
    long n = op->n;
    float inv = 1.0f / (float)(op->h * op->w);
#pragma omp parallel for schedule(dynamic) num_threads(plan_pass_threads(op->c * op->h * op->w * n))
    for (long ch = 0; ch < op->c; ch++) {
        float *yc = y + ch * op->ycs;
        if (n < VL) { /* a few samples: a sum per sample, without a vector loop per position */
            for (long s = 0; s < n; s++) {
                float sum = 0.0f;
                for (long p = 0; p < op->h; p++)
                    for (long q = 0; q < op->w; q++)
                        sum += x[ch * op->xcs + p * op->xrs + q * n + s];
                yc[s] = sum * inv;
            }
            continue;
        }
        for (long s = 0; s < n; s++)
            yc[s] = 0.0f;
        for (long p = 0; p < op->h; p++)
            for (long q = 0; q < op->w; q++) {
                const float *xq = x + ch * op->xcs + p * op->xrs + q * n;
#pragma omp simd
                for (long s = 0; s < n; s++)
                    yc[s] += xq[s];
            }
        for (long s = 0; s < n; s++)
            yc[s] *= inv;
    }
}

static void plan_zero_frame(const plan_op *op)
{
    float *y = (float *)op->y;
    long n = op->n, h = op->h, w = op->w;
    for (long ch = 0; ch < op->c; ch++) {
        float *yc = y + ch * op->ycs;
        for (long p = 0; p < h; p++) {
            float *row = yc + p * op->yrs;
            if (p < op->kh || p >= h - op->kw) {
                memset(row, 0, (size_t)(w * n) * sizeof(float));
            } else {
                memset(row, 0, (size_t)(op->sh * n) * sizeof(float));
                memset(row + (w - op->sw) * n, 0, (size_t)(op->sw * n) * sizeof(float));
            }
        }
    }
}

static double plan_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int numcnn_plan_run(const plan_op *ops, long count, const float *input, const long *in_strides,
                    float *output, double *times)
{
    for (long k = 0; k < count; k++) {
        const plan_op *op = ops + k;
        double start = times ? plan_now() : 0.0;
        switch (op->kind) {
        case PLAN_CONV:
            if (op->ph * op->pw > 1) {
                int status = op->mode == 1 ? plan_conv_channels_pool(op)
                             : op->n >= 64 ? plan_conv_rows_pool_wide(op)
                                           : plan_conv_rows_pool(op);
                if (status != 0)
                    return status;
            } else if (op->mode == 0 || op->mode == 3 || op->mode == 4) {
                int status = op->mode == 0 ? plan_conv_rows(op)
                                           : plan_conv_winograd(op, op->mode == 3 ? 2 : 4);
                if (status != 0)
                    return status;
            } else if (op->mode == 2) {
                int status = plan_conv_columns(op);
                if (status != 0)
                    return status;
            } else {
                plan_conv_channels(op);
            }
            break;
        case PLAN_MAXPOOL:
            plan_max_pool(op);
            break;
        case PLAN_AVGPOOL:
            plan_avg_pool(op);
            break;
        case PLAN_EWISE:
            plan_ewise(op);
            break;
        case PLAN_COPY:
            if (plan_copy(op, input, in_strides, output))
                return 3; /* a non-finite input for Winograd: the caller runs the direct sums */
            break;
        case PLAN_MEAN:
            plan_mean(op);
            break;
        case PLAN_ZERO_FRAME:
            plan_zero_frame(op);
            break;
        case PLAN_CHECK:
            if (memcmp((const void *)op->x, (const void *)op->y, (size_t)op->n) != 0)
                return 1;
            break;
        default:
            return -1;
        }
        if (times)
            times[k] = plan_now() - start;
    }
    return 0;
}
