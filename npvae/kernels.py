"""Hot elementwise and reduction kernels, each beside its NumPy reference.

Every kernel comes in two forms:

``<name>_ref``
    The readable NumPy definition.  It is the specification: the tests hold
    the fast form to it, and ``docs/backprop.md`` derives it.
``<name>``
    What the rest of npvae calls: a small wrapper that checks its arguments,
    allocates the output and runs a plain-loop ``_<name>_kernel`` compiled by
    :func:`npvae._jit.jit`.  With ``NPVAE_USE_NUMBA=0`` the same loops run as
    ordinary (slow) Python and give the same answers.

A compiled kernel earns its place only by beating its reference at the shapes
npvae uses (``benchmarks/bench_kernels.py``, results in
``benchmarks/README.md``).  The KL and reparameterisation functions at first
did not: at latent sizes (128 x 20 or 50) a loop that called libm's scalar
``exp`` and ``expm1`` once per entry was no faster than NumPy, so they ran
their references until 2026-12-04.  With the vectorisable ``exp`` and
``expm1`` below they do in float32 (the KL 5-13x, the sampler 1.4-2.7x); in
float64 the KL loops do not, and the KL functions run their references.

The kernels compute exp, expm1 and log1p themselves, with arithmetic the
compiler vectorises (the section of that name below): libm's scalar
functions, one call per entry, lose to NumPy's SIMD loops on AVX-512, and
NumPy's own ``expm1`` is such a scalar loop.

Conventions shared by every function here:

* Arrays are float32 or float64, and all float inputs of one call share one
  dtype; the result has that dtype too.  Elementwise math runs in the input
  dtype; a row sum is accumulated in float64 and cast back once, so float32
  training never pays for a silent upcast of whole arrays.
* Reductions take 2-D ``(N, D)`` arrays (rows are examples, columns pixels or
  latent dimensions) and return ``(N,)``.  Elementwise functions take any
  shape, as long as their inputs agree.
* NaN in, NaN out: a NaN in any input makes the affected output entry (and
  so its row's sum) NaN, never a silently finite number.  Every branch in a
  kernel is written so that a NaN (for which every comparison is false)
  falls through to arithmetic that returns NaN, and ``_jit`` leaves the
  ``nnan`` fast-math flag out.
* Every kernel is a serial loop.  Parallel loops made a training step about 2%
  slower and tied in the evaluation: OpenBLAS's threads go on spinning after
  each matrix product, and a parallel kernel's workers must wait for those
  cores (``benchmarks/README.md``, "Kernels").
* numba's on-disk cache watches only the file a kernel is defined in, so every
  kernel and everything it calls stays in this module.
"""

from __future__ import annotations

import math

import numpy as np

from npvae._jit import FASTMATH, USE_NUMBA, jit

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _float_arrays(ndim: int | None = None, **arrays: np.ndarray) -> list[np.ndarray]:
    """C-contiguous forms of same-shape, same-dtype float arrays, checked.

    Parameters
    ----------
    ndim : int, optional
        Required number of dimensions (2 for the row reductions).
    **arrays : array_like
        The inputs by argument name (the names go into the error messages).

    Returns
    -------
    list of ndarray, in argument order; an input that already is a
    C-contiguous ndarray comes back unchanged (no copy).

    Raises
    ------
    TypeError
        A dtype is not float32/float64, or the dtypes differ.
    ValueError
        The shapes differ, or the number of dimensions is not ``ndim``.
    """
    checked = [np.ascontiguousarray(array) for array in arrays.values()]
    dtype, shape = checked[0].dtype, checked[0].shape
    # Fast path, taken every training step: identity of the (singleton) dtype
    # objects is cheaper than dtype equality; anything unusual takes the loop.
    if (
        (dtype is _FLOAT_DTYPES[0] or dtype is _FLOAT_DTYPES[1])
        and (ndim is None or len(shape) == ndim)
        and all(array.dtype is dtype and array.shape == shape for array in checked)
    ):
        return checked
    first_name = next(iter(arrays))
    for name, array in zip(arrays, checked):
        if array.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got {array.dtype}")
        if array.dtype != dtype:
            raise TypeError(
                f"{name} is {array.dtype} but {first_name} is {dtype}; "
                "cast both to the model's dtype"
            )
        if ndim is not None and array.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D (N, D), got shape {array.shape}")
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape} but {first_name} has {shape}")
    return checked


# ---------------------------------------------------------------------------
# exp, expm1 and log1p as arithmetic the compiler can vectorise
# ---------------------------------------------------------------------------
# NumPy evaluates exp and log1p over an array with SIMD code.  A compiled loop
# that calls libm's scalar exp and log1p for each entry cannot keep up: on an
# AVX-512 Xeon such a softplus kernel ran at a quarter of NumPy's speed
# (benchmarks/README.md).  So the kernels call these instead: range reduction
# and a short polynomial, plain arithmetic that LLVM turns into vector code.
# They are accurate to a few ulp in float32 and float64, and exact in the
# cases that matter (NaN in, NaN out; exp(-inf) = 0; log1p(0) = 0).
#
# ``isinstance(t, np.float32)`` picks the polynomial degree.  numba settles it
# when it compiles a kernel for one dtype, so the other branch costs nothing;
# with numba off it is an ordinary test.  ``type(t)(c)`` makes each constant
# the dtype of ``t``, so float32 math never slips into float64.
#
# The helpers are compiled with every fast-math flag but ``reassoc``, the
# kernels with all of them (reassociation is what vectorises a row sum).  LLVM
# keeps each instruction's own flags when it inlines, so it cannot turn Cody
# and Waite's two-step subtraction ``(t - k ln2_hi) - k ln2_lo`` into
# ``t - k (ln2_hi + ln2_lo)``, which would throw away the bits the split exists
# to keep.  Contraction into fused multiply-adds stays allowed: it only removes
# roundings (and halves the cost of a polynomial).

#: Fast-math without reassociation: for helpers whose order of operations matters.
_ORDERED: frozenset[str] = FASTMATH - {"reassoc"}


def _ldexp(y, k):
    """``y * 2**k`` for a float ``y`` and a whole-number float ``k`` in [-1100, 1100].

    This plain form runs with numba off; compiled kernels get the overload
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

    @_overload(_ldexp, jit_options={"fastmath": set(_ORDERED), "error_model": "numpy"})
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


@jit(fastmath=_ORDERED)
def _exp_reduced(t):
    """``(k, r, q)`` with ``exp(t) = 2**k (1 + r q)``, for ``t`` up to :func:`_capped`'s cap.

    ``t = k ln2 + r`` with ``k`` whole and ``|r| <= ln2 / 2`` (Cody and Waite:
    ``ln2_hi`` has 9 significant bits, so ``k * ln2_hi`` is exact here), and
    ``q = (exp(r) - 1) / r`` from its Taylor series.  ``t`` below -110 (float32)
    or -760 (float64), where ``exp(t)`` rounds to 0, is clamped there so that
    ``2**k`` stays in :func:`_ldexp`'s range.
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


@jit(fastmath=_ORDERED)
def _exp_nonpositive(t):
    """``exp(t)`` for ``t <= 0`` or NaN, vectorisable: 0 at ``-inf``, NaN for NaN."""
    k, r, q = _exp_reduced(t)
    return _ldexp(type(t)(1.0) + r * q, k)


@jit(fastmath=_ORDERED)
def _expm1_nonpositive(t):
    """``exp(t) - 1`` for ``t <= 0`` or NaN, vectorisable, with full relative accuracy near 0.

    For ``|t| <= ln2 / 2`` (``k = 0``) it is ``r q`` itself, with no ``1 + ... - 1``
    to cancel; below, ``exp(t) <= 0.71`` and subtracting 1 loses nothing.
    """
    k, r, q = _exp_reduced(t)
    T = type(t)
    if k == T(0.0):
        return r * q
    return _ldexp(T(1.0) + r * q, k) - T(1.0)


@jit(fastmath=_ORDERED)
def _capped(t):
    """``t``, or 100 (float32) or 750 (float64) if it is larger; NaN stays NaN.

    ``exp`` overflows to ``inf`` well before either point (at 88.7 and 709.8), and
    below them ``2**k`` stays in :func:`_ldexp`'s range.
    """
    T = type(t)
    highest = T(100.0) if isinstance(t, np.float32) else T(750.0)
    return highest if t > highest else t


@jit(fastmath=_ORDERED)
def _exp(t):
    """``exp(t)`` for any ``t``, vectorisable: ``inf`` where it overflows, 0 at ``-inf``.

    The arithmetic of :func:`_exp_nonpositive`, which holds for positive ``t`` too
    once ``t`` is :func:`_capped`.
    """
    return _exp_nonpositive(_capped(t))


@jit(fastmath=_ORDERED)
def _expm1(t):
    """``exp(t) - 1`` for any ``t``, vectorisable, with full relative accuracy near 0.

    Below ``ln2 / 2`` as :func:`_expm1_nonpositive`.  Above it (``k >= 1``),
    ``2**k (1 + r q) - 1`` is summed as ``2**k (r q + (1 - 2**-k))``: ``1 - 2**-k`` is
    exact, so one addition rounds, where subtracting 1 from ``exp(t)`` (1.41 and up)
    would add up to two more ulps near ``t = ln2 / 2``.  ``t`` is :func:`_capped`.
    """
    k, r, q = _exp_reduced(_capped(t))
    T = type(t)
    # Every lane computes both sides' terms and one scaling, then picks: written as three
    # separate returns, the float32 loop did not vectorise (11x slower).
    one_less = T(1.0) - _ldexp(T(1.0), -k) if k > T(0.0) else T(1.0)
    scaled = _ldexp(r * q + one_less, k)
    if k == T(0.0):
        return r * q
    return scaled if k > T(0.0) else scaled - T(1.0)


@jit(fastmath=_ORDERED)
def _log1p_unit(u):
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
def _sum64(terms):
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
# Bernoulli log-likelihood from logits
# ---------------------------------------------------------------------------


def softplus_ref(x: np.ndarray) -> np.ndarray:
    """``log(1 + exp(x))`` without overflow: ``max(x, 0) + log1p(exp(-|x|))``.

    See ``docs/backprop.md#softplus``.  Shapes: any, output like ``x``.
    """
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def bernoulli_log_prob_ref(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """``sum_j x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))`` per row.

    Written as ``sum_j x l - softplus(l)`` (minus binary cross-entropy with
    logits), which is exact and finite for any logit.
    See ``docs/backprop.md#bernoulli-log-likelihood``.

    Parameters
    ----------
    x : ndarray, shape (N, D), or (n, D) with N a multiple of n
        Targets in [0, 1] (binary or continuous pixels).  With ``n`` rows,
        logit row ``i`` is paired with ``x`` row ``i mod n``: the sample-major
        rows of ``N / n`` draws per example, without copying ``x`` that often.
    logits : ndarray, shape (N, D)

    Returns
    -------
    ndarray, shape (N,)
    """
    x = _tile_rows(x, len(logits))
    # Subtract max(l, 0) before log1p(exp(-|l|)): for a confident, correct
    # prediction x l - max(l, 0) is exactly 0, and the tiny log1p term survives
    # instead of vanishing into the rounding of a large softplus.
    return np.sum(x * logits - np.maximum(logits, 0) - np.log1p(np.exp(-np.abs(logits))), axis=1)


def bernoulli_log_prob_and_grad_ref(x: np.ndarray, logits: np.ndarray):
    """Log-likelihood per row and its gradient ``x - sigmoid(logits)``.

    See ``docs/backprop.md#bernoulli-log-likelihood``.

    Parameters
    ----------
    x : ndarray, shape (N, D), or (n, D) paired as in :func:`bernoulli_log_prob_ref`
    logits : ndarray, shape (N, D)

    Returns
    -------
    log_prob : ndarray, shape (N,)
    dlogits : ndarray, shape (N, D)
        ``d log_prob[i] / d logits[i, j]``.
    """
    return bernoulli_log_prob_ref(x, logits), _tile_rows(x, len(logits)) - sigmoid_ref(logits)


def _tile_rows(x: np.ndarray, n_rows: int) -> np.ndarray:
    """``x (n, D)`` repeated to ``(n_rows, D)``, row ``i`` being ``x[i mod n]``."""
    return x if len(x) == n_rows else np.tile(x, (n_rows // len(x), 1))


def _paired_arrays(x: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x (n, D)`` and ``logits (N, D)`` checked for the row pairing: N a multiple of n."""
    logits = _float_arrays(2, logits=logits)[0]
    x = np.ascontiguousarray(x)
    divides = len(x) == len(logits) or (len(x) > 0 and len(logits) % len(x) == 0)
    if x.ndim == 2 and x.shape[1] == logits.shape[1] and divides:
        return _float_arrays(2, x=x, logits=logits[: len(x)])[0], logits
    _float_arrays(2, x=x, logits=logits)  # raises, naming the mismatch
    raise ValueError(f"x has {len(x)} rows, which do not divide the {len(logits)} rows of logits")


@jit(fastmath=_ORDERED)
def _bernoulli_term(x, logit, exp_neg_abs):
    """One pixel's ``x l - max(l, 0) - log1p(exp(-|l|))``, in exactly this order.

    Not reassociated: for a confident, correct pixel ``x l - max(l, 0)`` is exactly 0 and
    the tiny log1p term is the whole answer; reassociated into
    ``x l - (max(l, 0) + log1p(...))`` it would round away.  The kernels' row
    sums may still reassociate (their own additions carry the flags).
    """
    positive_part = logit if logit > type(logit)(0.0) else type(logit)(0.0)
    return (x * logit - positive_part) - _log1p_unit(exp_neg_abs)


@jit
def _bernoulli_log_prob_kernel(x, logits, log_prob):
    n_rows, n_cols = logits.shape
    terms = np.empty(n_cols, dtype=logits.dtype)  # one row's, summed in float64
    for i in range(n_rows):
        row = i % x.shape[0]  # the example this row of logits draws for
        for j in range(n_cols):
            logit = logits[i, j]
            # exp(-|l|) lies in (0, 1]: it cannot overflow for any logit.
            terms[j] = _bernoulli_term(x[row, j], logit, _exp_nonpositive(-abs(logit)))
        log_prob[i] = _sum64(terms)


@jit
def _bernoulli_log_prob_and_grad_kernel(x, logits, log_prob, dlogits):
    n_rows, n_cols = logits.shape
    zero = logits.dtype.type(0)
    one = logits.dtype.type(1)
    terms = np.empty(n_cols, dtype=logits.dtype)  # one row's, summed in float64
    for i in range(n_rows):
        row = i % x.shape[0]  # the example this row of logits draws for
        for j in range(n_cols):
            logit = logits[i, j]
            exp_neg_abs = _exp_nonpositive(-abs(logit))
            sigmoid_abs = one / (one + exp_neg_abs)
            sigmoid = sigmoid_abs if logit > zero else exp_neg_abs * sigmoid_abs
            terms[j] = _bernoulli_term(x[row, j], logit, exp_neg_abs)
            dlogits[i, j] = x[row, j] - sigmoid
        log_prob[i] = _sum64(terms)


def bernoulli_log_prob(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Compiled :func:`bernoulli_log_prob_ref`: ``(N or n, D), (N, D) -> (N,)``.

    ``x`` may hold ``n`` rows for ``N`` rows of logits, paired as the reference says.
    See ``docs/backprop.md#bernoulli-log-likelihood``.
    """
    x, logits = _paired_arrays(x, logits)
    log_prob = np.empty(logits.shape[0], dtype=logits.dtype)
    _bernoulli_log_prob_kernel(x, logits, log_prob)
    return log_prob


def bernoulli_log_prob_and_grad(x: np.ndarray, logits: np.ndarray):
    """Compiled :func:`bernoulli_log_prob_and_grad_ref`, one pass over the logits.

    See ``docs/backprop.md#bernoulli-log-likelihood``.

    Parameters
    ----------
    x : ndarray, shape (N, D), or (n, D) paired as in :func:`bernoulli_log_prob_ref`
    logits : ndarray, shape (N, D)

    Returns
    -------
    log_prob : ndarray, shape (N,)
    dlogits : ndarray, shape (N, D)
    """
    x, logits = _paired_arrays(x, logits)
    log_prob = np.empty(logits.shape[0], dtype=logits.dtype)
    dlogits = np.empty_like(logits)
    _bernoulli_log_prob_and_grad_kernel(x, logits, log_prob, dlogits)
    return log_prob, dlogits


# ---------------------------------------------------------------------------
# KL(N(mu, diag exp(log_var)) || N(0, I))
# ---------------------------------------------------------------------------
# exp(log_var) - 1 is written expm1(log_var): near log_var = 0 the KL of a
# dimension is about log_var**2 / 4, and exp(log_var) - 1 would lose it to
# rounding (in float32, all of it once |log_var| < 3e-4).


def gaussian_kl_per_dim_ref(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """``0.5 (mu^2 + exp(log_var) - 1 - log_var)`` entry by entry.

    See ``docs/backprop.md#gaussian-kl``.  Shapes: ``mu``, ``log_var`` and the
    result all ``(N, D)`` (any shape works).
    """
    return 0.5 * (mu * mu + np.expm1(log_var) - log_var)


def gaussian_kl_ref(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """KL of a diagonal Gaussian to N(0, I), per row: ``(N, D), (N, D) -> (N,)``.

    See ``docs/backprop.md#gaussian-kl``.
    """
    return np.sum(gaussian_kl_per_dim_ref(mu, log_var), axis=1)


def gaussian_kl_grad_ref(mu: np.ndarray, log_var: np.ndarray):
    """Gradient of the KL: ``dmu = mu``, ``dlog_var = 0.5 (exp(log_var) - 1)``.

    See ``docs/backprop.md#gaussian-kl``.  Shapes: all ``(N, D)``.
    Returns ``(dmu, dlog_var)``; ``dmu`` is a copy, never ``mu`` itself.
    """
    return mu.copy(), 0.5 * np.expm1(log_var)


@jit(fastmath=_ORDERED)
def _kl_term(mu, log_var):
    """One dimension's ``0.5 (mu^2 + (expm1(log_var) - log_var))``, in exactly this order.

    Near ``log_var = 0`` the bracket's second part is about ``log_var^2 / 2``, and
    ``expm1(log_var) - log_var`` is an exact subtraction there (the two are within a
    factor of 2 of each other for ``|log_var| < 1.25``); adding ``mu^2`` first, as the
    reference does, rounds some of it away.
    """
    T = type(mu)
    return T(0.5) * (mu * mu + (_expm1(log_var) - log_var))


#: The dtypes whose KL loops beat the reference.  In float64 the general expm1 does not
#: vectorise on AVX2, and the loops ran at 0.82-1.01x of NumPy (``benchmarks/README.md``,
#: "Kernels"); float64 is the gradient checks' dtype, float32 training's.
_KL_COMPILED = (np.dtype(np.float32),)


@jit
def _gaussian_kl_per_dim_kernel(mu, log_var, out):
    for k in range(mu.size):
        out[k] = _kl_term(mu[k], log_var[k])


@jit
def _half_expm1_kernel(log_var, out):
    half = log_var.dtype.type(0.5)
    for k in range(log_var.size):
        out[k] = half * _expm1(log_var[k])


def gaussian_kl_per_dim(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """Compiled :func:`gaussian_kl_per_dim_ref` (float32): ``(N, D) x 2 -> (N, D)``, any shape.

    For the loss's KL, for free bits and for reporting which latent dimensions are
    in use.  See ``docs/backprop.md#gaussian-kl``.
    """
    mu, log_var = _float_arrays(mu=mu, log_var=log_var)
    if mu.dtype not in _KL_COMPILED:
        return gaussian_kl_per_dim_ref(mu, log_var)
    out = np.empty_like(mu)
    _gaussian_kl_per_dim_kernel(mu.reshape(-1), log_var.reshape(-1), out.reshape(-1))
    return out


def gaussian_kl(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """Compiled :func:`gaussian_kl_ref` (float32): ``(N, D), (N, D) -> (N,)``.

    See ``docs/backprop.md#gaussian-kl``.
    """
    mu, log_var = _float_arrays(2, mu=mu, log_var=log_var)
    return np.sum(gaussian_kl_per_dim(mu, log_var), axis=1)


def gaussian_kl_grad(mu: np.ndarray, log_var: np.ndarray):
    """Compiled :func:`gaussian_kl_grad_ref` (float32): ``(dmu, dlog_var)``, each like ``mu``.

    ``dmu`` is a copy of ``mu``.  See ``docs/backprop.md#gaussian-kl``.
    """
    mu, log_var = _float_arrays(mu=mu, log_var=log_var)
    if mu.dtype not in _KL_COMPILED:
        return gaussian_kl_grad_ref(mu, log_var)
    return mu.copy(), _elementwise(_half_expm1_kernel, log_var)


# ---------------------------------------------------------------------------
# Reparameterised sample z = mu + sigma * eps
# ---------------------------------------------------------------------------


def reparameterize_ref(mu: np.ndarray, log_var: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """``z = mu + exp(log_var / 2) * eps``: a draw from N(mu, diag exp(log_var)).

    See ``docs/backprop.md#reparameterisation``.  Shapes: all ``(N, D)``
    (any shape works); ``eps`` is standard normal noise drawn by the caller.
    """
    return mu + np.exp(0.5 * log_var) * eps


def reparameterize_backward_ref(dz: np.ndarray, log_var: np.ndarray, eps: np.ndarray):
    """Gradients through the sample for fixed ``eps``.

    ``dmu = dz`` and ``dlog_var = dz * eps * 0.5 * exp(log_var / 2)``.
    See ``docs/backprop.md#reparameterisation``.  Shapes: all ``(N, D)``.
    Returns ``(dmu, dlog_var)``; ``dmu`` is a copy, never ``dz`` itself.
    """
    return dz.copy(), dz * eps * 0.5 * np.exp(0.5 * log_var)


@jit
def _reparameterize_kernel(mu, log_var, eps, z):
    half = mu.dtype.type(0.5)
    for k in range(mu.size):
        z[k] = mu[k] + _exp(half * log_var[k]) * eps[k]


@jit
def _reparameterize_backward_kernel(dz, log_var, eps, dlog_var):
    half = dz.dtype.type(0.5)
    for k in range(dz.size):
        dlog_var[k] = dz[k] * eps[k] * half * _exp(half * log_var[k])


def reparameterize(mu: np.ndarray, log_var: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Compiled :func:`reparameterize_ref`: ``(N, D) x 3 -> z (N, D)`` (any shape).

    See ``docs/backprop.md#reparameterisation``.
    """
    mu, log_var, eps = _float_arrays(mu=mu, log_var=log_var, eps=eps)
    z = np.empty_like(mu)
    _reparameterize_kernel(mu.reshape(-1), log_var.reshape(-1), eps.reshape(-1), z.reshape(-1))
    return z


def reparameterize_backward(dz: np.ndarray, log_var: np.ndarray, eps: np.ndarray):
    """Compiled :func:`reparameterize_backward_ref`: ``(dmu, dlog_var)``, each like ``dz``.

    ``dmu`` is a copy of ``dz``.  See ``docs/backprop.md#reparameterisation``.
    """
    dz, log_var, eps = _float_arrays(dz=dz, log_var=log_var, eps=eps)
    dlog_var = np.empty_like(dz)
    flat = (dz.reshape(-1), log_var.reshape(-1), eps.reshape(-1), dlog_var.reshape(-1))
    _reparameterize_backward_kernel(*flat)
    return dz.copy(), dlog_var


# ---------------------------------------------------------------------------
# Row-wise log-sum-exp
# ---------------------------------------------------------------------------


def logsumexp_ref(a: np.ndarray) -> np.ndarray:
    """``log(sum_j exp(a[i, j]))`` per row, shifted by the row maximum so it never overflows.

    A row of all ``-inf`` gives ``-inf``, a row holding ``+inf`` gives
    ``+inf``, a row holding NaN gives NaN.  See ``docs/backprop.md#log-sum-exp``.

    Parameters
    ----------
    a : ndarray, shape (N, D)

    Returns
    -------
    ndarray, shape (N,)
    """
    row_max = np.max(a, axis=1, keepdims=True)
    # An infinite or NaN maximum cannot be subtracted (inf - inf is NaN); with
    # no shift, exp() itself then yields the right 0, inf or NaN.
    shift = np.where(np.isfinite(row_max), row_max, 0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(a - shift), axis=1)) + shift[:, 0]


@jit
def _logsumexp_kernel(a, row_maxes, out):
    n_rows, n_cols = a.shape
    terms = np.empty(n_cols, dtype=a.dtype)  # one row's, summed in float64
    for i in range(n_rows):
        row_max = row_maxes[i]
        # An infinite or NaN maximum is the answer itself (as in the reference).
        if not np.isfinite(row_max):
            out[i] = row_max
            continue
        for j in range(n_cols):
            terms[j] = _exp_nonpositive(a[i, j] - row_max)
        out[i] = np.log(_sum64(terms)) + row_max


def logsumexp(a: np.ndarray) -> np.ndarray:
    """Compiled :func:`logsumexp_ref`: ``(N, D) -> (N,)``; rows may be wide (D = 5000).

    The row maxima come from NumPy (a SIMD pass that keeps NaN): without the
    ``nnan`` fast-math flag LLVM will not vectorise a compiled max, which then
    cost more than all the exponentials.  See ``docs/backprop.md#log-sum-exp``.
    """
    (a,) = _float_arrays(2, a=a)
    out = np.empty(a.shape[0], dtype=a.dtype)
    _logsumexp_kernel(a, np.max(a, axis=1), out)
    return out


# ---------------------------------------------------------------------------
# Adam
# ---------------------------------------------------------------------------


def adam_update_ref(param, grad, m, v, lr, beta1, beta2, eps, step) -> None:
    """One Adam step, in place on ``param``, ``m`` and ``v``.

    ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``;
    ``param -= lr * m_hat / (sqrt(v_hat) + eps)`` with the bias-corrected
    ``m_hat = m / (1 - b1^step)`` and ``v_hat = v / (1 - b2^step)``.
    See ``docs/backprop.md#adam``.

    A moment below the dtype's smallest normal number is set to 0.  Left alone,
    the first moment of a parameter whose gradient has become exactly 0 (a dead
    ReLU unit) decays into the subnormals and stays there, since
    ``0.9 * 4 * 2**-149`` rounds back to ``4 * 2**-149`` in float32; x86
    arithmetic on subnormals is slow enough that Adam took 4x as long per MNIST
    epoch after a few epochs.  Such a moment moves its parameter by under
    ``1e-30 * lr``.

    Parameters
    ----------
    param, grad, m, v : ndarray, one shape (any), one float dtype
    lr, beta1, beta2, eps : float
    step : int
        1-based count of steps taken, this one included.
    """
    lr, beta1, beta2, eps = float(lr), float(beta1), float(beta2), float(eps)
    tiny = np.finfo(param.dtype).tiny
    m *= beta1
    m += (1 - beta1) * grad
    m[np.abs(m) < tiny] = 0
    v *= beta2
    v += (1 - beta2) * grad**2
    v[v < tiny] = 0
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    param -= lr * m_hat / (np.sqrt(v_hat) + eps)


@jit
def _adam_entry(
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
    # No subnormal moments (see adam_update_ref); a NaN compares false and stays.
    zero = type(m)(0.0)
    m = zero if abs(m) < tiny else m
    v = zero if v < tiny else v
    return p - step_size * m / (np.sqrt(v) * root_bias2 + eps), m, v


@jit
def _adam_kernel(param, grad, m, v, *hyper):
    # Serial: the loop is memory-bound (7 arrays' worth of traffic per entry), and on the
    # benchmark machine a second thread ran 784x400 no faster (190 us either way) while
    # waking it cost more than a bias's whole update.
    for k in range(param.size):
        param[k], m[k], v[k] = _adam_entry(param[k], grad[k], m[k], v[k], *hyper)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step) -> None:
    """Compiled :func:`adam_update_ref`: one fused pass, in place, any shape.

    ``param``, ``grad``, ``m`` and ``v`` must share one shape and one float
    dtype and be C-contiguous (they are updated through flat views).  Scalars
    are cast to that dtype, so float32 parameters stay float32 throughout.
    See ``docs/backprop.md#adam``.
    """
    arrays = {"param": param, "grad": grad, "m": m, "v": v}
    for name, array in arrays.items():
        if not (isinstance(array, np.ndarray) and array.flags.c_contiguous):
            raise ValueError(f"adam_update: {name} must be a C-contiguous ndarray (in place)")
    _float_arrays(**arrays)
    as_dtype = param.dtype.type
    lr, beta1, beta2, eps = float(lr), float(beta1), float(beta2), float(eps)
    _adam_kernel(
        param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
        as_dtype(lr / (1 - beta1**step)), as_dtype(beta1), as_dtype(1 - beta1), as_dtype(beta2),
        as_dtype(1 - beta2), as_dtype(1 / math.sqrt(1 - beta2**step)), as_dtype(eps),
        as_dtype(np.finfo(param.dtype).tiny),
    )  # fmt: skip


# ---------------------------------------------------------------------------
# The NaN guard
# ---------------------------------------------------------------------------


def all_finite_ref(x: np.ndarray) -> bool:
    """Whether every entry of ``x`` (any shape) is finite: no NaN, no infinity."""
    return bool(np.isfinite(x).all())


@jit
def _all_finite_kernel(x):
    # x * 0 is 0 for a finite x and NaN for NaN or ±inf, so the sum is 0 exactly when all
    # are finite: one branch-free pass that LLVM vectorises (the fastmath set keeps NaN
    # and inf meaningful, so it may not fold x * 0 to 0).
    zero = x.dtype.type(0)  # of x's dtype: a Python 0 would make the loop float64
    total = zero
    for i in range(x.size):
        total += x[i] * zero
    return total == zero


def all_finite(x: np.ndarray) -> bool:
    """:func:`all_finite_ref`, compiled: the trainer checks every gradient after each step.

    ``x``: a float32 or float64 array, any shape (a model's ``flat_grads`` in one call).
    """
    (x,) = _float_arrays(x=x)
    if USE_NUMBA:
        return bool(_all_finite_kernel(x.reshape(-1)))
    with np.errstate(invalid="ignore"):  # the plain loop's inf * 0 is the point, not a slip
        return bool(_all_finite_kernel(x.reshape(-1)))


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------


def sigmoid_ref(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow, via ``exp(-|x|)``.

    See ``docs/backprop.md#sigmoid``.  Shapes: any, output like ``x``.
    """
    exp_neg_abs = np.exp(-np.abs(x))
    return np.where(x > 0, 1 / (1 + exp_neg_abs), exp_neg_abs / (1 + exp_neg_abs))


def tanh_ref(x: np.ndarray) -> np.ndarray:
    """NumPy's ``tanh``.  See ``docs/backprop.md#tanh``.  Shapes: any, output like ``x``."""
    return np.tanh(x)


def tanh_backward_ref(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``dout * (1 - out**2)``, from the tanh layer's output ``out``.

    See ``docs/backprop.md#tanh``.  Shapes: any, output like ``dout``.
    """
    return dout * (1 - out * out)


def relu_forward_ref(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``.  See ``docs/backprop.md#relu``.  Shapes: any, output like ``x``."""
    return np.maximum(x, 0)


def relu_backward_ref(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``dout`` where the ReLU output ``out > 0``, else 0; NaN where ``out`` is NaN.

    See ``docs/backprop.md#relu``.  Shapes: any, output like ``dout``.
    """
    return dout * np.heaviside(out, 0)


def elu_ref(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """``x`` where ``x > 0``, else ``alpha (exp(x) - 1)``.

    See ``docs/backprop.md#elu``.  Shapes: any, output like ``x``.
    """
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


@jit
def _softplus_kernel(x, out):
    zero = x.dtype.type(0)
    for k in range(x.size):
        value = x[k]
        positive_part = value if value > zero else zero
        out[k] = positive_part + _log1p_unit(_exp_nonpositive(-abs(value)))


@jit
def _sigmoid_kernel(x, out):
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for k in range(x.size):
        exp_neg_abs = _exp_nonpositive(-abs(x[k]))
        sigmoid_abs = one / (one + exp_neg_abs)
        out[k] = sigmoid_abs if x[k] > zero else exp_neg_abs * sigmoid_abs


@jit
def _tanh_kernel(x, out):
    zero = x.dtype.type(0)
    two = x.dtype.type(2)
    for k in range(x.size):
        # tanh|x| = (1 - e^(-2|x|)) / (1 + e^(-2|x|)) = -t / (2 + t) with t = expm1(-2|x|)
        # in [-1, 0]: no cancellation near 0 (t is about -2|x| to full precision), and
        # exactly 1 once e^(-2|x|) rounds to 0.  NaN gives NaN; the sign is x's.
        t = _expm1_nonpositive(-two * abs(x[k]))
        magnitude = -t / (two + t)
        out[k] = -magnitude if x[k] < zero else magnitude


@jit
def _tanh_backward_kernel(dout, out, dx):
    one = out.dtype.type(1)
    for k in range(out.size):
        dx[k] = dout[k] * (one - out[k] * out[k])


@jit
def _relu_forward_kernel(x, out):
    zero = x.dtype.type(0)
    for k in range(x.size):
        out[k] = zero if x[k] < zero else x[k]


@jit
def _relu_backward_kernel(dout, out, dx):
    zero = out.dtype.type(0)
    one = out.dtype.type(1)
    for k in range(out.size):
        # The step function of out: 1, 0, or NaN when out is NaN.
        step = one if out[k] > zero else (zero if out[k] <= zero else out[k])
        dx[k] = dout[k] * step


@jit
def _elu_kernel(x, alpha, out):
    zero = x.dtype.type(0)
    for k in range(x.size):
        value = x[k]
        # Vectorised, both sides are computed and one selected; the expm1 of a
        # positive entry is discarded, so it gets 0 (and a NaN stays NaN).
        negative_part = zero if value > zero else value
        out[k] = value if value > zero else alpha * _expm1_nonpositive(negative_part)


def _elementwise(kernel, x):
    (x,) = _float_arrays(x=x)
    out = np.empty_like(x)
    kernel(x.reshape(-1), out.reshape(-1))
    return out


def _activation_backward(kernel, dout, out):
    """``dx`` from ``kernel(dout, out, dx)`` over flat views: an activation's backward pass
    from its cached output ``out``, any shape."""
    dout, out = _float_arrays(dout=dout, out=out)
    dx = np.empty_like(dout)
    kernel(dout.reshape(-1), out.reshape(-1), dx.reshape(-1))
    return dx


def softplus(x: np.ndarray) -> np.ndarray:
    """Compiled :func:`softplus_ref`.  Shapes: any, output like ``x``.

    In float64 the loop tied with NumPy's AVX-512 exp and log1p on the Xeon (0.94-1.03x)
    and ran 4.4x as fast on the AVX2 EPYC (``benchmarks/README.md``), so it runs in both.
    """
    return _elementwise(_softplus_kernel, x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Compiled :func:`sigmoid_ref`.  Shapes: any, output like ``x``."""
    return _elementwise(_sigmoid_kernel, x)


def tanh(x: np.ndarray) -> np.ndarray:
    """:func:`tanh_ref` compiled, to a few ulp.  Shapes: any, output like ``x``.

    NumPy's ``tanh`` has no SIMD loop for AVX2: on the AMD EPYC it took 3-4 ns an entry in
    float32 and 14-17 in float64, and the IWAE nets spent a tenth of a step in it.
    """
    return _elementwise(_tanh_kernel, x)


def tanh_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Compiled :func:`tanh_backward_ref`, one pass.  Shapes: any, output like ``dout``."""
    return _activation_backward(_tanh_backward_kernel, dout, out)


def relu_forward(x: np.ndarray) -> np.ndarray:
    """Compiled :func:`relu_forward_ref`.  Shapes: any, output like ``x``."""
    return _elementwise(_relu_forward_kernel, x)


def relu_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Compiled :func:`relu_backward_ref`.  Shapes: any, output like ``dout``."""
    return _activation_backward(_relu_backward_kernel, dout, out)


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Compiled :func:`elu_ref`.  Shapes: any, output like ``x``."""
    (x,) = _float_arrays(x=x)
    out = np.empty_like(x)
    _elu_kernel(x.reshape(-1), x.dtype.type(alpha), out.reshape(-1))
    return out


# ---------------------------------------------------------------------------
# Binarisation
# ---------------------------------------------------------------------------


def binarize_ref(x: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """One Bernoulli draw per pixel: 1 where the pixel's intensity exceeds ``uniform``.

    Parameters
    ----------
    x : ndarray, any shape, uint8 (0..255, scaled by 1/255) or float in [0, 1]
    uniform : ndarray, shape of ``x``, float32 or float64
        Uniform [0, 1) noise drawn by the caller.

    Returns
    -------
    ndarray, shape of ``x``, dtype of ``uniform``; 0.0 or 1.0, NaN where
    either input is NaN.
    """
    if x.dtype == np.uint8:
        intensity = x.astype(uniform.dtype) / uniform.dtype.type(255)
    else:
        intensity = x
    draw = (intensity > uniform).astype(uniform.dtype)
    draw[np.isnan(intensity) | np.isnan(uniform)] = np.nan
    return draw


@jit
def _binarize_kernel(x, scale, uniform, draw):
    one = draw.dtype.type(1)
    zero = draw.dtype.type(0)
    nan = draw.dtype.type(np.nan)
    for k in range(x.size):
        intensity = x[k] / scale
        draw[k] = one if intensity > uniform[k] else (zero if intensity <= uniform[k] else nan)


def binarize(x: np.ndarray, uniform: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Compiled :func:`binarize_ref`: ``x`` (any shape, uint8 or float) -> 0/1 floats.

    ``out``, if given, is a contiguous array like ``uniform`` to write into
    (the batcher reuses one buffer for every batch).
    """
    x = np.ascontiguousarray(x)
    (uniform,) = _float_arrays(uniform=uniform)
    if x.shape != uniform.shape:
        raise ValueError(f"uniform has shape {uniform.shape} but x has {x.shape}")
    if x.dtype != np.uint8 and x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be uint8 or float32/float64, got {x.dtype}")
    if out is None:
        draw = np.empty_like(uniform)
    elif out.shape != uniform.shape or out.dtype != uniform.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous {uniform.dtype} array of shape {uniform.shape}")
    else:
        draw = out
    scale = uniform.dtype.type(255 if x.dtype == np.uint8 else 1)
    _binarize_kernel(x.reshape(-1), scale, uniform.reshape(-1), draw.reshape(-1))
    return draw
