"""All of npvae's compiled code: the loops behind :mod:`npvae.kernels`, and what they call.

This module is the speed path, not the reading path.  Each rule a student came to learn
is in :mod:`npvae.kernels` as a NumPy reference (``*_ref``), beside the public function
that checks its arguments, allocates the output and calls one loop from here.  The loops
write into the arrays they are given and return nothing (``all_finite_loop`` returns its
answer); they take flat C-contiguous views unless they say ``(N, D)``.

Why one file, longer than the house's 400 lines: numba's on-disk cache watches only the
file a function is defined in.  A loop whose helper lived in another module would load
stale machine code from the cache after that helper changed.  So every ``@jit`` function,
and everything one calls, is here; :mod:`npvae.app._warm` watches this file's age.

With ``NPVAE_USE_NUMBA=0``, :func:`npvae._jit.jit` returns each function unchanged and
the same loops run as plain (slow) Python with the same answers.

The loops compute exp, expm1 and log1p themselves, with arithmetic the compiler
vectorises (the first section): libm's scalar functions, one call per entry, lose to
NumPy's SIMD loops on AVX-512, and NumPy's own ``expm1`` is such a scalar loop.

NaN in, NaN out: every branch is written so that a NaN (for which every comparison is
false) falls through to arithmetic that returns NaN, and :mod:`npvae._jit` leaves the
``nnan`` fast-math flag out.
"""

from __future__ import annotations

import math

import numpy as np

from npvae._jit import FASTMATH, USE_NUMBA, jit

#: The options npvae._jit compiles these loops with (NJIT_OPTIONS, FASTMATH).  numba's
#: on-disk cache is keyed on this file, not on them: a cache made before they changed would
#: load the old machine code (loops that held the GIL ran two evaluator threads one at a
#: time).  So this line changes with them, and tests/test_kernels.py holds the two equal.
COMPILED_WITH = {
    "error_model": "numpy",
    "nogil": True,
    "fastmath": ["afn", "arcp", "contract", "nsz", "reassoc"],
}

# ---------------------------------------------------------------------------
# exp, expm1 and log1p as arithmetic the compiler can vectorise
# ---------------------------------------------------------------------------
# NumPy evaluates exp and log1p over an array with SIMD code.  A compiled loop
# that calls libm's scalar exp and log1p for each entry cannot keep up: on an
# AVX-512 Xeon such a softplus kernel ran at a quarter of NumPy's speed
# (benchmarks/README.md).  So the loops call these instead: range reduction
# and a short polynomial, plain arithmetic that LLVM turns into vector code.
# They are accurate to a few ulp in float32 and float64, and exact in the
# cases that matter (NaN in, NaN out; exp(-inf) = 0; log1p(0) = 0).
#
# ``isinstance(t, np.float32)`` picks the polynomial degree.  numba settles it
# when it compiles a loop for one dtype, so the other branch costs nothing;
# with numba off it is an ordinary test.  ``type(t)(c)`` makes each constant
# the dtype of ``t``, so float32 math never slips into float64.
#
# The helpers are compiled with every fast-math flag but ``reassoc``, the
# loops with all of them (reassociation is what vectorises a row sum).  LLVM
# keeps each instruction's own flags when it inlines, so it cannot turn Cody
# and Waite's two-step subtraction ``(t - k ln2_hi) - k ln2_lo`` into
# ``t - k (ln2_hi + ln2_lo)``, which would throw away the bits the split exists
# to keep.  Contraction into fused multiply-adds stays allowed: it only removes
# roundings (and halves the cost of a polynomial).

#: Fast-math without reassociation: for helpers whose order of operations matters.
ORDERED: frozenset[str] = FASTMATH - {"reassoc"}


def ldexp(y, k):
    """``y * 2**k`` for a float ``y`` and a whole-number float ``k`` in [-1100, 1100].

    This plain form runs with numba off; compiled loops get the overload
    below, which builds ``2**k`` from its exponent bits (``np.ldexp`` compiles
    to a scalar library call that stops vectorisation).
    """
    if k != k:  # NaN: y is NaN too, and NaN * anything is NaN
        return y * k
    return np.ldexp(y, int(k))


if USE_NUMBA:
    from llvmlite import ir as _llvm_ir
    from numba import types as _types
    from numba.extending import intrinsic as _intrinsic
    from numba.extending import overload as _overload

    @_intrinsic
    def _float_from_bits(typingctx, bits):
        """Reinterpret an int32 (int64) as the float32 (float64) with those bits."""
        result = _types.float32 if bits == _types.int32 else _types.float64
        llvm_type = _llvm_ir.FloatType() if bits == _types.int32 else _llvm_ir.DoubleType()

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_type)

        return result(bits), codegen

    @_overload(ldexp, jit_options={"fastmath": set(ORDERED), "error_model": "numpy"})
    def _ldexp_compiled(y, k):
        # 2**j for a whole j is the float with exponent field j + bias and a zero
        # mantissa.  k goes in two halves, each within the normal exponents, so that
        # results down among the subnormals (and below, to 0) come out right.
        # The bits (j + bias) * 2**mantissa_bits are built as a float (exact: a small
        # whole number times a power of 2) and converted once to an integer of the
        # float's width, which vectorises; numba's integer arithmetic would be int64.
        if y == _types.float32:
            int_type, bias, step = np.int32, 127.0, 2.0**23
        else:
            int_type, bias, step = np.int64, 1023.0, 2.0**52

        def compiled(y, k):
            T = type(y)
            half = np.floor(k * T(0.5))
            rest = k - half
            scaled = y * _float_from_bits(int_type((half + T(bias)) * T(step)))
            return scaled * _float_from_bits(int_type((rest + T(bias)) * T(step)))

        return compiled


#: Taylor coefficients of ``(exp(r) - 1) / r = sum_n r**n / (n + 1)!``, highest first:
#: degree 7 (float32) and 13 (float64) for exp, whose first omitted term for
#: ``|r| <= ln2 / 2`` is under 6e-9 and 5e-18 of the result (an ulp: 6e-8, 1.1e-16).
_EXP_COEFFS_32 = tuple(1 / math.factorial(n + 1) for n in range(6, -1, -1))
_EXP_COEFFS_64 = tuple(1 / math.factorial(n + 1) for n in range(12, -1, -1))
#: ``atanh(s) / s = sum_n s**(2n) / (2n + 1)``, highest first, for ``s**2 <= 0.0295``:
#: first omitted term under 3e-9 (float32) and 3e-17 (float64).
_ATANH_COEFFS_32 = tuple(1 / (2 * n + 1) for n in range(4, -1, -1))
_ATANH_COEFFS_64 = tuple(1 / (2 * n + 1) for n in range(9, -1, -1))


@jit(fastmath=ORDERED)
def exp_reduced(t):
    """``(k, r, q)`` with ``exp(t) = 2**k (1 + r q)``, for ``t`` up to :func:`capped`'s cap.

    ``t = k ln2 + r`` with ``k`` whole and ``|r| <= ln2 / 2`` (Cody and Waite:
    ``ln2_hi`` has 9 significant bits, so ``k * ln2_hi`` is exact here), and
    ``q = (exp(r) - 1) / r`` from its Taylor series.  ``t`` below -110 (float32)
    or -760 (float64), where ``exp(t)`` rounds to 0, is clamped there so that
    ``2**k`` stays in :func:`ldexp`'s range.
    """
    T = type(t)
    single = isinstance(t, np.float32)
    lowest = T(-110.0) if single else T(-760.0)
    if t < lowest:
        t = lowest
    k = np.floor(t * T(1.4426950408889634) + T(0.5))
    r = (t - k * T(0.693359375)) - k * T(-2.1219444005469057e-4)
    q = T(0.0)
    for c in _EXP_COEFFS_32 if single else _EXP_COEFFS_64:
        q = q * r + T(c)
    return k, r, q


@jit(fastmath=ORDERED)
def exp_nonpositive(t):
    """``exp(t)`` for ``t <= 0`` or NaN, vectorisable: 0 at ``-inf``, NaN for NaN."""
    k, r, q = exp_reduced(t)
    return ldexp(type(t)(1.0) + r * q, k)


@jit(fastmath=ORDERED)
def expm1_nonpositive(t):
    """``exp(t) - 1`` for ``t <= 0`` or NaN, vectorisable, with full relative accuracy near 0.

    For ``|t| <= ln2 / 2`` (``k = 0``) it is ``r q`` itself, with no ``1 + ... - 1``
    to cancel; below, ``exp(t) <= 0.71`` and subtracting 1 loses nothing.
    """
    k, r, q = exp_reduced(t)
    T = type(t)
    if k == T(0.0):
        return r * q
    return ldexp(T(1.0) + r * q, k) - T(1.0)


@jit(fastmath=ORDERED)
def capped(t):
    """``t``, or 100 (float32) or 750 (float64) if it is larger; NaN stays NaN.

    ``exp`` overflows to ``inf`` well before either point (at 88.7 and 709.8), and
    below them ``2**k`` stays in :func:`ldexp`'s range.
    """
    T = type(t)
    highest = T(100.0) if isinstance(t, np.float32) else T(750.0)
    return highest if t > highest else t


@jit(fastmath=ORDERED)
def exp(t):
    """``exp(t)`` for any ``t``, vectorisable: ``inf`` where it overflows, 0 at ``-inf``.

    The arithmetic of :func:`exp_nonpositive`, which holds for positive ``t`` too
    once ``t`` is :func:`capped`.
    """
    return exp_nonpositive(capped(t))


@jit(fastmath=ORDERED)
def expm1(t):
    """``exp(t) - 1`` for any ``t``, vectorisable, with full relative accuracy near 0.

    Below ``ln2 / 2`` as :func:`expm1_nonpositive`.  Above it (``k >= 1``),
    ``2**k (1 + r q) - 1`` is summed as ``2**k (r q + (1 - 2**-k))``: ``1 - 2**-k`` is
    exact, so one addition rounds, where subtracting 1 from ``exp(t)`` (1.41 and up)
    would add up to two more ulps near ``t = ln2 / 2``.  ``t`` is :func:`capped`.
    """
    k, r, q = exp_reduced(capped(t))
    T = type(t)
    # Every lane computes both sides' terms and one scaling, then picks: written as three
    # separate returns, the float32 loop does not vectorise (11x slower).
    one_less = T(1.0) - ldexp(T(1.0), -k) if k > T(0.0) else T(1.0)
    scaled = ldexp(r * q + one_less, k)
    if k == T(0.0):
        return r * q
    return scaled if k > T(0.0) else scaled - T(1.0)


@jit(fastmath=ORDERED)
def log1p_unit(u):
    """``log(1 + u)`` for ``0 <= u <= 1`` or NaN, vectorisable, to a few ulp.

    ``log(1 + u) = 2 atanh(s)`` with ``s = u / (2 + u)``, and the series of
    ``atanh(s) / s`` converges fast for small ``s``.  Above ``u = sqrt(2) - 1`` it
    is ``ln2 + log((1 + u) / 2)``, the same with ``s = (u - 1) / (u + 3)``; so
    ``|s| <= 0.172`` for every ``u``.  A tiny ``u`` keeps its relative accuracy
    (``s = u / 2`` to rounding), which the Bernoulli log-likelihood of a
    confident pixel needs.
    """
    T = type(u)
    high = u > T(0.41421356237309503)
    s = (u - T(1.0)) / (u + T(3.0)) if high else u / (T(2.0) + u)
    s2 = s * s
    series = T(0.0)
    for c in _ATANH_COEFFS_32 if isinstance(u, np.float32) else _ATANH_COEFFS_64:
        series = series * s2 + T(c)
    return (T(0.6931471805599453) if high else T(0.0)) + T(2.0) * s * series


@jit
def sum64(terms):
    """``sum(terms)`` of a 1-D array, accumulated in float64.

    The row reductions write a row's terms into a buffer and sum it here: a
    float64 total inside the loop that computes the terms halves that loop's
    speed, while this separate loop vectorises on its own.
    """
    total = np.float64(0)
    for j in range(terms.size):
        total += terms[j]
    return total


# ---------------------------------------------------------------------------
# Bernoulli log-likelihood from logits: x (n, D), logits (N, D), row i reads x[i mod n]
# ---------------------------------------------------------------------------


@jit(fastmath=ORDERED)
def bernoulli_term(x, logit, exp_neg_abs):
    """One pixel's ``x l - max(l, 0) - log1p(exp(-|l|))``, in exactly this order.

    Not reassociated: for a confident, correct pixel ``x l - max(l, 0)`` is exactly 0 and
    the tiny log1p term is the whole answer; reassociated into
    ``x l - (max(l, 0) + log1p(...))`` it would round away.  The loops' row
    sums may still reassociate (their own additions carry the flags).
    """
    positive_part = logit if logit > type(logit)(0.0) else type(logit)(0.0)
    return (x * logit - positive_part) - log1p_unit(exp_neg_abs)


@jit
def bernoulli_log_prob_loop(x, logits, log_prob):
    n_rows, n_cols = logits.shape
    terms = np.empty(n_cols, dtype=logits.dtype)  # one row's, summed in float64
    for i in range(n_rows):
        row = i % x.shape[0]  # the example this row of logits draws for
        for j in range(n_cols):
            logit = logits[i, j]
            # exp(-|l|) lies in (0, 1]: it cannot overflow for any logit.
            terms[j] = bernoulli_term(x[row, j], logit, exp_nonpositive(-abs(logit)))
        log_prob[i] = sum64(terms)


@jit
def bernoulli_log_prob_and_grad_loop(x, logits, log_prob, dlogits):
    n_rows, n_cols = logits.shape
    zero = logits.dtype.type(0)
    one = logits.dtype.type(1)
    terms = np.empty(n_cols, dtype=logits.dtype)  # one row's, summed in float64
    for i in range(n_rows):
        row = i % x.shape[0]  # the example this row of logits draws for
        for j in range(n_cols):
            logit = logits[i, j]
            exp_neg_abs = exp_nonpositive(-abs(logit))
            sigmoid_abs = one / (one + exp_neg_abs)
            sigmoid = sigmoid_abs if logit > zero else exp_neg_abs * sigmoid_abs
            terms[j] = bernoulli_term(x[row, j], logit, exp_neg_abs)
            dlogits[i, j] = x[row, j] - sigmoid
        log_prob[i] = sum64(terms)


# ---------------------------------------------------------------------------
# Gaussian KL and the reparameterised sample
# ---------------------------------------------------------------------------


@jit(fastmath=ORDERED)
def kl_term(mu, log_var):
    """One dimension's ``0.5 (mu^2 + (expm1(log_var) - log_var))``, in exactly this order.

    Near ``log_var = 0`` the bracket's second part is about ``log_var^2 / 2``, and
    ``expm1(log_var) - log_var`` is an exact subtraction there (the two are within a
    factor of 2 of each other for ``|log_var| < 1.25``); adding ``mu^2`` first, as the
    reference does, rounds some of it away.
    """
    T = type(mu)
    return T(0.5) * (mu * mu + (expm1(log_var) - log_var))


@jit
def gaussian_kl_per_dim_loop(mu, log_var, out):
    for k in range(mu.size):
        out[k] = kl_term(mu[k], log_var[k])


@jit
def half_expm1_loop(log_var, out):
    half = log_var.dtype.type(0.5)
    for k in range(log_var.size):
        out[k] = half * expm1(log_var[k])


@jit
def reparameterize_loop(mu, log_var, eps, z):
    half = mu.dtype.type(0.5)
    for k in range(mu.size):
        z[k] = mu[k] + exp(half * log_var[k]) * eps[k]


@jit
def reparameterize_backward_loop(dz, log_var, eps, dlog_var):
    half = dz.dtype.type(0.5)
    for k in range(dz.size):
        dlog_var[k] = dz[k] * eps[k] * half * exp(half * log_var[k])


# ---------------------------------------------------------------------------
# Row-wise log-sum-exp: a (N, D), its row maxima (N,), out (N,)
# ---------------------------------------------------------------------------


@jit
def logsumexp_loop(a, row_maxes, out):
    n_rows, n_cols = a.shape
    terms = np.empty(n_cols, dtype=a.dtype)  # one row's, summed in float64
    for i in range(n_rows):
        row_max = row_maxes[i]
        # An infinite or NaN maximum is the answer itself (as in the reference).
        if not np.isfinite(row_max):
            out[i] = row_max
            continue
        for j in range(n_cols):
            terms[j] = exp_nonpositive(a[i, j] - row_max)
        out[i] = np.log(sum64(terms)) + row_max


# ---------------------------------------------------------------------------
# Adam, in place
# ---------------------------------------------------------------------------


@jit
def adam_entry(
    p, g, m, v, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, root_bias2, eps, tiny
):
    """One entry's Adam step: the new ``(param, m, v)``.

    ``lr m_hat / (sqrt(v_hat) + eps)`` with the bias corrections taken out of the loop:
    ``step_size = lr / (1 - beta1**t)`` and ``sqrt(v_hat) = sqrt(v) * root_bias2``, where
    ``root_bias2 = 1 / sqrt(1 - beta2**t)``.  One square root and one division per entry,
    not three divisions (``benchmarks/README.md``); the same value to a few ulp.
    """
    m = beta1 * m + one_minus_beta1 * g
    v = beta2 * v + one_minus_beta2 * (g * g)
    # No subnormal moments (see kernels.adam_update_ref); a NaN compares false and stays.
    zero = type(m)(0.0)
    m = zero if abs(m) < tiny else m
    v = zero if v < tiny else v
    return p - step_size * m / (np.sqrt(v) * root_bias2 + eps), m, v


@jit
def adam_update_loop(param, grad, m, v, *hyper):
    # Serial: the loop is memory-bound (7 arrays' worth of traffic per entry), and on the
    # benchmark machine a second thread ran 784x400 no faster (190 us either way) while
    # waking it cost more than a bias's whole update.
    for k in range(param.size):
        param[k], m[k], v[k] = adam_entry(param[k], grad[k], m[k], v[k], *hyper)


# ---------------------------------------------------------------------------
# The NaN guard
# ---------------------------------------------------------------------------


@jit
def all_finite_loop(x):
    # x * 0 is 0 for a finite x and NaN for NaN or ±inf, so the sum is 0 exactly when all
    # are finite: one branch-free pass that LLVM vectorises (the fastmath set keeps NaN
    # and inf meaningful, so it may not fold x * 0 to 0).
    zero = x.dtype.type(0)  # of x's dtype: a Python 0 would make the loop float64
    total = zero
    for i in range(x.size):
        total += x[i] * zero
    return total == zero


# ---------------------------------------------------------------------------
# Activations: x -> out, or (dout, out) -> dx from the layer's cached output
# ---------------------------------------------------------------------------


@jit
def softplus_loop(x, out):
    zero = x.dtype.type(0)
    for k in range(x.size):
        value = x[k]
        positive_part = value if value > zero else zero
        out[k] = positive_part + log1p_unit(exp_nonpositive(-abs(value)))


@jit
def sigmoid_loop(x, out):
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for k in range(x.size):
        exp_neg_abs = exp_nonpositive(-abs(x[k]))
        sigmoid_abs = one / (one + exp_neg_abs)
        out[k] = sigmoid_abs if x[k] > zero else exp_neg_abs * sigmoid_abs


@jit
def tanh_loop(x, out):
    zero = x.dtype.type(0)
    two = x.dtype.type(2)
    for k in range(x.size):
        # tanh|x| = (1 - e^(-2|x|)) / (1 + e^(-2|x|)) = -t / (2 + t) with t = expm1(-2|x|)
        # in [-1, 0]: no cancellation near 0 (t is about -2|x| to full precision), and
        # exactly 1 once e^(-2|x|) rounds to 0.  NaN gives NaN; the sign is x's.
        t = expm1_nonpositive(-two * abs(x[k]))
        magnitude = -t / (two + t)
        out[k] = -magnitude if x[k] < zero else magnitude


@jit
def tanh_backward_loop(dout, out, dx):
    one = out.dtype.type(1)
    for k in range(out.size):
        dx[k] = dout[k] * (one - out[k] * out[k])


@jit
def relu_forward_loop(x, out):
    zero = x.dtype.type(0)
    for k in range(x.size):
        out[k] = zero if x[k] < zero else x[k]


@jit
def relu_backward_loop(dout, out, dx):
    zero = out.dtype.type(0)
    one = out.dtype.type(1)
    for k in range(out.size):
        # The step function of out: 1, 0, or NaN when out is NaN.
        step = one if out[k] > zero else (zero if out[k] <= zero else out[k])
        dx[k] = dout[k] * step


@jit
def elu_loop(x, alpha, out):
    zero = x.dtype.type(0)
    for k in range(x.size):
        value = x[k]
        # Vectorised, both sides are computed and one selected; the expm1 of a
        # positive entry is discarded, so it gets 0 (and a NaN stays NaN).
        negative_part = zero if value > zero else value
        out[k] = value if value > zero else alpha * expm1_nonpositive(negative_part)


# ---------------------------------------------------------------------------
# Binarisation: x uint8 or float, scale 255 or 1, uniform noise -> 0/1 draws
# ---------------------------------------------------------------------------


@jit
def binarize_loop(x, scale, uniform, draw):
    one = draw.dtype.type(1)
    zero = draw.dtype.type(0)
    nan = draw.dtype.type(np.nan)
    for k in range(x.size):
        intensity = x[k] / scale
        draw[k] = one if intensity > uniform[k] else (zero if intensity <= uniform[k] else nan)
