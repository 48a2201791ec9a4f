"""C source of the CPU kernel (built by cpu_kernel.py with the system C compiler, loaded through ctypes).

Plain C on raw pointers, no torch headers: a cold build takes 1-3 s (0.9-1.4 s idle on the 2-core CI machine before the
AVX2 path's <immintrin.h>, which adds ~0.8 s), where
the torch.compile (inductor C++) version this replaced took 12 s cold and 3-7 s per process even with inductor's
disk cache. One call steps a whole
list of tensors inside ONE OpenMP parallel region (work split evenly by element count across threads), so the
per-tensor cost is a few pointer loads, and a loaded machine sees one thread barrier per step, not one per tensor.

Arithmetic: the exponent in the reference formula's operation order, with floating-point contraction disabled at
build time (-ffp-contract=off), so it is bit-identical to the reference; exp() is a branch-free polynomial (below)
so the loops vectorize: within 2.34 ulp of the exactly rounded value for a clamp c <= 87 (every float in
[-87, 87] measured: 2.34 ulp with FMA, 2.31 without; the results are within 2.7e-7 of the reference's; the
AVX2 path's table exp: 1.14 ulp), within
1.02 ulp over the whole float range otherwise. The exp's FMAs are explicit (fmaf where the target has FMA).
Speed: with a full-precision exp the step is about as much compute as memory traffic on a 2-vCPU Zen 3 (the
generic loop below: ~11 cycles per 8 floats in cache, as long as the memory floor x.mul_(m) takes over memory), so
the hot loop carries nothing it does not need: sign(x) * g is one and + one xor, the beta select and the
wide-range exp are compiled out where they cannot matter, and the polynomial is one degree lower for c <= 87.
Where the build targets AVX2 + FMA (x86 with -march=native), fp32 weights with their own sign, c <= 87 and beta
everywhere (the default HAM step) take a hand-vectorised loop instead: a table exp (two fewer multiply-adds,
1.14 ulp) and a software prefetch, measured side by side at 1.13-1.33x the floor against the generic loop's
1.23-1.45x on that host (loaded) (issue 21; figures in results/benchmarks/ham_step.md). Everything else, and every build
without AVX2 + FMA (the portable fallback: plain -O3, or -fopenmp-simd), uses the generic loops. On AVX-512 CPUs
the build asks for 512-bit vectors for the generic loops (gcc's default stops at 256); the AVX2 path stays 256-bit
there (no AVX-512 host was available to time a 512-bit one).
-fno-trapping-math lets the compiler turn the selects into vector blends (AVX2); it changes no value.
fp32 is loaded/stored as is; bf16/fp16 are converted to fp32 and rounded back once, to nearest even.
"""

SOURCE = r"""
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2 };
enum { SIGN_SELF = 0, SIGN_I8 = 1, SIGN_F32 = 2 };

static inline float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t bits_from_f32(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* Fused multiply-add where the target has it (exp() only; the formula itself is never contracted). */
#if defined(__FMA__) || defined(__aarch64__)
#define FMA(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define FMA(a, b, c) ((a) * (b) + (c))
#endif

/* exp(x) for float, branch-free so the loops vectorize: x = n*ln2 + r with |r| <= ln2/2 (n rounded to nearest
   by adding a shifter of 1.5*2^23; ln2 split into an exact 9-bit high part and a low part, so r is exact for
   the |n| <= 150 used here), e^r = 1 + r + r^2 q(r), then times 2^n.
   exp_narrow, for x in [-87, 87] (n + 127 in [1, 254]): q of degree 3, minimax relative error 1.04e-7 on
   |r| <= ln2/2 (fitted for this kernel); the shifter carries the exponent bias, so 2^n is the rounded sum's own
   bits shifted into the exponent field. Max error 2.34 ulp against the exactly rounded exp (measured over every
   float in [-87, 87]; 2.31 without FMA; tests check [-c, c]).
   exp_wide, for x already clamped to [-104, 89] (below e^-104 the result is 0, above e^89 it is inf, as in
   torch): q of degree 4 (relative error 3e-9, within 1.02 ulp over the whole float range), 2^n applied as two
   factors so that subnormal results and overflow to inf both come out right. NaN propagates through both. */
static inline float exp_narrow(float x) {
    const float shifter = 12582912.0f + 127.0f;
    float t = FMA(x, 1.44269502f, shifter);
    float n = t - shifter;
    float r = FMA(-n, 0.693359375f, x);
    r = FMA(-n, -2.12194440e-4f, r);
    float q = FMA(8.31487868e-3f, r, 4.18904647e-2f);
    q = FMA(q, r, 1.66670874e-1f);
    q = FMA(q, r, 4.99992311e-1f);
    float p = FMA(q, r * r, r);                                /* e^r - 1 */
    float scale = f32_from_bits(bits_from_f32(t) << 23);      /* 2^n */
    return FMA(p, scale, scale);
}

static inline float exp_wide(float x) {
    const float shifter = 12582912.0f;
    float n = FMA(x, 1.44269502f, shifter) - shifter;
    float r = FMA(-n, 0.693359375f, x);
    r = FMA(-n, -2.12194440e-4f, r);
    float q = FMA(1.38146058e-3f, r, 8.36871099e-3f);
    q = FMA(q, r, 4.16683890e-2f);
    q = FMA(q, r, 1.66665211e-1f);
    q = FMA(q, r, 4.99999940e-1f);
    float p = FMA(q, r * r, r) + 1.0f;
    int32_t ni = (int32_t)n;
    int32_t n1 = ni >> 1;
    int32_t n2 = ni - n1;
    float s1 = f32_from_bits((uint32_t)(n1 + 127) << 23);
    float s2 = f32_from_bits((uint32_t)(n2 + 127) << 23);
    return (p * s1) * s2;
}

static inline float load_bf16(const uint16_t *p, int64_t i) { return f32_from_bits((uint32_t)p[i] << 16); }
static inline uint16_t to_bf16(float f) {  /* round to nearest even; NaN stays a (quiet) NaN */
    uint32_t u = bits_from_f32(f);
    uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    uint32_t nan = (u >> 16) | 0x40u;
    return (uint16_t)(f != f ? nan : rounded);
}

/* IEEE half <-> float in integer/float bit operations (compilers turn _Float16 casts into per-element library
   calls on most x86 targets, which do not vectorize). Exact for every half; float -> half rounds to nearest
   even, overflows to inf, keeps NaN a NaN and rounds into the subnormal range correctly. */
static inline float load_f16(const uint16_t *p, int64_t i) {
    uint32_t h = p[i];
    uint32_t em = h & 0x7FFFu;
    float normal = f32_from_bits((em << 13) + (112u << 23));                  /* rebias exponent 15 -> 127 */
    float sub = f32_from_bits((em << 13) + (113u << 23)) - 6.103515625e-05f;  /* 2^-14 * (1 + m/1024) - 2^-14 */
    float special = f32_from_bits((em << 13) | 0x7F800000u | (em > 0x7C00u ? 0x400000u : 0u)); /* inf, quiet NaN */
    float mag = em < 0x400u ? sub : (em >= 0x7C00u ? special : normal);
    return f32_from_bits(bits_from_f32(mag) | ((h & 0x8000u) << 16));
}
static inline uint16_t to_f16(float f) {
    uint32_t u = bits_from_f32(f);
    uint32_t a = u & 0x7FFFFFFFu;
    uint32_t sign = (u >> 16) & 0x8000u;
    /* normal range: drop 13 mantissa bits with round-to-nearest-even; a carry correctly bumps the exponent */
    uint32_t normal = (a - (112u << 23) + 0xFFFu + ((a >> 13) & 1u)) >> 13;
    /* below 2^-14: adding 0.5 makes the FPU round to a multiple of 2^-24, the half subnormal step */
    uint32_t sub = bits_from_f32(f32_from_bits(a) + 0.5f) - 0x3F000000u;
    uint32_t h = a < 0x38800000u ? sub : normal;
    h = a >= 0x477FF000u ? 0x7C00u : h;  /* rounds to >= 65520: inf */
    h = a > 0x7F800000u ? 0x7E00u : h;   /* NaN */
    return (uint16_t)(h | sign);
}

typedef struct { float neg_lr, alpha, beta, beta_no_grad, lo, hi; int narrow, select_beta; } Coef;

/* sign(s) * g exactly as the reference's product: g with its sign bit flipped where s < 0, and 0 * g where
   s == 0 (0, or NaN for an inf/NaN g): bit operations and one select, no compares-and-multiply by +-1. */
static inline float sign_times(float s, float g) {
    float t = f32_from_bits(bits_from_f32(g) ^ (bits_from_f32(s) & 0x80000000u));
    return s != 0.0f ? t : 0.0f * g;
}

/* The same where s is the parameter itself and the factor is finite (exp_narrow): where x == 0 the result
   x * factor is 0 whatever g is, so the select is not needed (only an infinite g at x == 0 differs from the
   reference: 0 here, NaN there). */
static inline float sign_times_self(float s, float g) {
    return f32_from_bits(bits_from_f32(g) ^ (bits_from_f32(s) & 0x80000000u));
}

/* x * exp(clamp(-lr * (alpha * sign(s) * g + b), -c, c)) with b = beta, or beta_no_grad where g == 0; the
   exponent in the reference's operation order, clamped also to the exp's valid range (changes no result).
   NARROW (exp_narrow, clamp <= 87) and SELECT (beta differs where g == 0) are compile-time constants in each of
   the three loops a segment function holds (narrow without / with the select, wide with it: with
   beta_no_grad == beta the select changes nothing), so the common loops have one exp and no select they do not
   need. Only the common kinds (SPECIALIZE: fp32 and bf16 weights, int8 signs of the "signed" variant) get all
   three; the others have the wide loop only (right for every c, as fast as before), so the build stays small. */
#define SEGMENT(NAME, T, LOAD, STORE, SIGN, SELF, SPECIALIZE)                                  \
static inline __attribute__((always_inline)) void NAME##_loop(                                \
        T *restrict x, const T *restrict g, const void *sp, int64_t lo, int64_t hi,          \
        const Coef *k, const int NARROW, const int SELECT) {                                  \
    const int8_t *s8 = (const int8_t *)sp; const float *s32 = (const float *)sp;             \
    (void)s8; (void)s32;                                                                      \
    const float neg_lr = k->neg_lr, alpha = k->alpha, beta = k->beta, beta0 = k->beta_no_grad; \
    const float elo = k->lo, ehi = k->hi;                                                     \
    _Pragma("omp simd")                                                                       \
    for (int64_t i = lo; i < hi; ++i) {                                                       \
        float xv = LOAD(x, i);                                                                \
        float gv = LOAD(g, i);                                                                \
        float b = SELECT && gv == 0.0f ? beta0 : beta;                                        \
        float sg = SELF && NARROW ? sign_times_self(SIGN, gv) : sign_times(SIGN, gv);         \
        float e = neg_lr * (alpha * sg + b);                                                  \
        e = e < elo ? elo : e;                                                                \
        e = e > ehi ? ehi : e;                                                                \
        STORE(x, i, xv * (NARROW ? exp_narrow(e) : exp_wide(e)));                             \
    }                                                                                         \
}                                                                                             \
static void NAME(void *xp, const void *gp, const void *sp, int64_t lo, int64_t hi, const Coef *k) { \
    T *x = (T *)xp; const T *g = (const T *)gp;                                               \
    if (!SPECIALIZE || !k->narrow) NAME##_loop(x, g, sp, lo, hi, k, 0, 1);                    \
    else if (k->select_beta) NAME##_loop(x, g, sp, lo, hi, k, 1, 1);                          \
    else NAME##_loop(x, g, sp, lo, hi, k, 1, 0);                                              \
}

#define LD_F32(p, i) ((p)[i])
#define ST_F32(p, i, v) ((p)[i] = (v))
#define LD_BF16(p, i) load_bf16((p), (i))
#define ST_BF16(p, i, v) ((p)[i] = to_bf16(v))
#define LD_F16(p, i) load_f16((p), (i))
#define ST_F16(p, i, v) ((p)[i] = to_f16(v))

SEGMENT(seg_f32_self, float, LD_F32, ST_F32, xv, 1, 1)
SEGMENT(seg_f32_i8, float, LD_F32, ST_F32, (float)s8[i], 0, 1)
SEGMENT(seg_f32_f32, float, LD_F32, ST_F32, s32[i], 0, 0)
SEGMENT(seg_bf16_self, uint16_t, LD_BF16, ST_BF16, xv, 1, 1)
SEGMENT(seg_bf16_i8, uint16_t, LD_BF16, ST_BF16, (float)s8[i], 0, 1)
SEGMENT(seg_bf16_f32, uint16_t, LD_BF16, ST_BF16, s32[i], 0, 0)

SEGMENT(seg_f16_self, uint16_t, LD_F16, ST_F16, xv, 1, 0)
SEGMENT(seg_f16_i8, uint16_t, LD_F16, ST_F16, (float)s8[i], 0, 0)
SEGMENT(seg_f16_f32, uint16_t, LD_F16, ST_F16, s32[i], 0, 0)

/* The common case on x86 with AVX2 + FMA (fp32 weights, sign of the weight itself, c <= 87, beta everywhere), in
   intrinsics: gcc's code for the generic loop above spends ~11 cycles per 8 floats on this host, as long as the
   memory floor, and the two then overlap badly. Two changes bring it to the floor (issue 21):
   - exp8_narrow: a table exp. x = (8n + j) ln2/8 + r with |r| <= ln2/16 (n, j from one rounding, whose sum also
     carries n's exponent bias and j as its low 3 bits); 2^(j/8) comes from an 8-entry table held in one register
     (vpermd: one shuffle, no gather), 2^n from the rounded sum's own bits; on the small interval e^r needs only
     1 + r + c2 r^2 + c3 r^3 (c2, c3 fitted for this kernel: relative error 2.6e-8). Two fewer multiply-adds than
     exp_narrow, and more accurate: within 1.14 ulp of the exactly rounded value for x in [-87, 87] (measured over
     every float there against double exp, at 3.7537465; exp_narrow: 2.34; tests check [-c, c]).
   - a software prefetch 1 KiB ahead of both streams: with a compute-heavy loop the hardware prefetcher alone
     leaves the memory idle part of the time.
   The tail of a range (fewer than 8 elements) uses masked loads/stores with the same arithmetic, so an element's
   result never depends on where a thread's range starts or ends (bit-identical for any thread count). */
#if defined(HAM_TABLE_EXP) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HAM_AVX2_PATH 1
static inline __m256 exp8_narrow(__m256 e) {
    const __m256 shifter = _mm256_set1_ps(12582912.0f + 1016.0f);  /* 1.5 * 2^23 + 8 * 127 */
    __m256 t = _mm256_fmadd_ps(e, _mm256_set1_ps(11.5415602f), shifter);  /* 8 / ln2 */
    __m256 m = _mm256_sub_ps(t, shifter);
    __m256 r = _mm256_fnmadd_ps(m, _mm256_set1_ps(0.086669921875f), e);    /* ln2/8 split: high part exact */
    r = _mm256_fnmadd_ps(m, _mm256_set1_ps(-2.65243050e-5f), r);
    __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(0.166668594f), r, _mm256_set1_ps(0.500064552f));
    __m256 p = _mm256_fmadd_ps(q, _mm256_mul_ps(r, r), r);                  /* e^r - 1 */
    /* bits(2^(j/8)) - (127 << 23) - (j << 20): added to bits(t) << 20 = ((n + 127) << 23) | (j << 20) */
    const __m256i tab = _mm256_setr_epi32(0, -289342, -509968, -655657, -719629, -694486, -572163, -343865);
    __m256i ti = _mm256_castps_si256(t);
    __m256 scale = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_slli_epi32(ti, 20),
                                                        _mm256_permutevar8x32_epi32(tab, ti)));  /* 2^(n + j/8) */
    return _mm256_fmadd_ps(p, scale, scale);
}
/* the exponent exactly as the reference orders it (and + xor = sign(x) * g; no contraction), clamped, then x * exp */
static inline __m256 step8_f32_self(__m256 xv, __m256 gv, __m256 nl, __m256 al, __m256 be, __m256 lo, __m256 hi) {
    __m256 sg = _mm256_xor_ps(gv, _mm256_and_ps(xv, _mm256_set1_ps(-0.0f)));
    __m256 e = _mm256_mul_ps(nl, _mm256_add_ps(_mm256_mul_ps(al, sg), be));
    e = _mm256_min_ps(hi, _mm256_max_ps(lo, e));  /* operand order: a NaN e is kept (max/min return the 2nd) */
    return _mm256_mul_ps(xv, exp8_narrow(e));
}
static void seg_f32_self_avx2(float *restrict x, const float *restrict g, int64_t lo, int64_t hi, const Coef *k) {
    const __m256 nl = _mm256_set1_ps(k->neg_lr), al = _mm256_set1_ps(k->alpha), be = _mm256_set1_ps(k->beta);
    const __m256 elo = _mm256_set1_ps(k->lo), ehi = _mm256_set1_ps(k->hi);
    int64_t i = lo;
    for (; i + 8 <= hi; i += 8) {
        _mm_prefetch((const char *)(x + i + 256), _MM_HINT_T0);
        _mm_prefetch((const char *)(g + i + 256), _MM_HINT_T0);
        _mm256_storeu_ps(x + i, step8_f32_self(_mm256_loadu_ps(x + i), _mm256_loadu_ps(g + i), nl, al, be, elo, ehi));
    }
    if (i < hi) {
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(hi - i)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 xv = _mm256_maskload_ps(x + i, mask), gv = _mm256_maskload_ps(g + i, mask);
        _mm256_maskstore_ps(x + i, mask, step8_f32_self(xv, gv, nl, al, be, elo, ehi));
    }
}
#endif

/* fp32 weights, sign of the weight: the AVX2 path where it applies, the generic loops otherwise */
static void seg_f32_self_dispatch(void *xp, const void *gp, const void *sp, int64_t lo, int64_t hi, const Coef *k) {
#ifdef HAM_AVX2_PATH
    if (k->narrow && !k->select_beta) {
        seg_f32_self_avx2((float *)xp, (const float *)gp, lo, hi, k);
        return;
    }
#endif
    seg_f32_self(xp, gp, sp, lo, hi, k);
}

typedef void (*segment_fn)(void *, const void *, const void *, int64_t, int64_t, const Coef *);

static segment_fn pick(int dtype, int sign_kind) {
    static const segment_fn table[3][3] = {
        {seg_f32_self_dispatch, seg_f32_i8, seg_f32_f32},
        {seg_bf16_self, seg_bf16_i8, seg_bf16_f32},
        {seg_f16_self, seg_f16_i8, seg_f16_f32},
    };
    if (dtype < 0 || dtype > 2 || sign_kind < 0 || sign_kind > 2) return 0;
    return table[dtype][sign_kind];
}

int ham_supports(int dtype, int sign_kind) { return pick(dtype, sign_kind) != 0; }
int ham_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* What this build is: compiler version, the flags it was built with (passed in as HAM_FLAGS) and the vector ISA
   the compiler targeted (its predefined macros), for benchmark host lines. */
#ifndef HAM_FLAGS
#define HAM_FLAGS "?"
#endif
#ifndef __VERSION__
#define __VERSION__ "?"
#endif
const char *ham_build_info(void) {
    return "compiler=" __VERSION__ "; flags=" HAM_FLAGS "; isa="
#if defined(__AVX512F__)
        "avx512f "
#endif
#if defined(__AVX2__)
        "avx2 "
#endif
#if defined(__AVX__) && !defined(__AVX2__)
        "avx "
#endif
#if defined(__FMA__)
        "fma "
#endif
#if defined(__SSE2__) && !defined(__AVX__)
        "sse2 "
#endif
#if defined(__ARM_FEATURE_SVE)
        "sve "
#endif
#if defined(__ARM_NEON)
        "neon "
#endif
#if defined(__aarch64__) && !defined(__FMA__)
        "fma "
#endif
        "; fp32 path="
#ifdef HAM_AVX2_PATH
        "avx2 intrinsics (table exp, prefetch)"
#else
        "generic C"
#endif
        "; openmp="
#ifdef _OPENMP
        "yes";
#else
        "no";
#endif
}

/* Step n tensors in place. offsets[i] = elements before tensor i (offsets[n] = total). The element range is
   split evenly across threads (boundaries rounded to 64 elements); each thread walks the tensors its range
   covers. Returns 0, or -1 for an unsupported dtype/sign kind (nothing touched). */
int ham_step(int64_t n, void **xs, const void **gs, const void **ss, const int64_t *offsets, int dtype,
             int sign_kind, double lr, double alpha, double beta, double clamp, int beta_where_grad,
             int n_threads) {
    segment_fn seg = pick(dtype, sign_kind);
    if (!seg) return -1;
    Coef k;
    k.neg_lr = -(float)lr;
    k.alpha = (float)alpha;
    k.beta = (float)beta;
    k.beta_no_grad = beta_where_grad ? 0.0f : (float)beta;
    k.lo = clamp < 104.0 ? -(float)clamp : -104.0f;
    k.hi = clamp < 89.0 ? (float)clamp : 89.0f;
    k.narrow = clamp <= 87.0;
    k.select_beta = k.beta_no_grad != k.beta;
    const int64_t total = offsets[n];
    /* n_threads is the caller's (torch.get_num_threads() at call time); each thread gets >= 2^16 elements, so a
       small model's step stays on one thread instead of paying a fork/join for little work */
    if (n_threads > total >> 16) n_threads = (int)(total >> 16);
    if (n_threads < 1) n_threads = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
#endif
    {
        int tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        int64_t start = (total / nt) * tid & ~(int64_t)63;
        int64_t stop = tid == nt - 1 ? total : ((total / nt) * (tid + 1) & ~(int64_t)63);
        int64_t i = 0;
        while (i < n && offsets[i + 1] <= start) ++i;
        for (; i < n && offsets[i] < stop; ++i) {
            int64_t lo = start > offsets[i] ? start - offsets[i] : 0;
            int64_t hi = (stop < offsets[i + 1] ? stop : offsets[i + 1]) - offsets[i];
            if (hi > lo) seg(xs[i], gs[i], ss ? ss[i] : 0, lo, hi, &k);
        }
    }
    return 0;
}
"""
