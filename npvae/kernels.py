"""The hot functions of a training step, each as a NumPy reference beside its fast form.

``<name>_ref`` is the definition: plain NumPy, with its formula and the section of
``docs/backprop.md`` that derives it.  ``<name>``, right below it, is what layers,
distributions and optimizers call: it checks its arguments, allocates the output and
runs one loop from :mod:`npvae._compiled`, the same computation (to a few ulp) in one
compiled pass; the tests hold it to the reference.  A loop earns its place by beating
the reference at npvae's shapes (``benchmarks/bench_kernels.py``); where it does not
(the KL in float64), the public function runs the reference.

Conventions:

* Arrays are float32 or float64, all float inputs of one call in one dtype, and the
  result in that dtype too.  Elementwise math runs in that dtype; a row sum is
  accumulated in float64 and cast back once, so float32 training never pays for a
  silent upcast of whole arrays.
* Reductions take ``(N, D)`` (rows are examples, columns pixels or latent dimensions)
  and return ``(N,)``.  Elementwise functions take any shape their inputs share.
* Results are new arrays; only ``adam_update`` (on ``param``, ``m`` and ``v``) and
  ``binarize`` given ``out`` write in place.  Inputs are made C-contiguous first.
* NaN in, NaN out: a NaN in any input makes the affected output entry (and so its
  row's sum) NaN, never a silently finite number.
"""

from __future__ import annotations

import math

import numpy as np

from npvae import _compiled
from npvae._checks import FLOAT_DTYPES, float_arrays, paired_arrays
from npvae._jit import USE_NUMBA

# --- Bernoulli log-likelihood from logits ---------------------------------------------


def bernoulli_log_prob_ref(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """``sum_j x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))`` per row: ``(N, D) -> (N,)``.

    Written as ``sum_j x l - softplus(l)`` (minus binary cross-entropy with logits), exact
    and finite for any logit.  ``x``, targets in [0, 1], may have ``n`` rows for ``N`` a
    multiple of ``n``: logit row ``i`` then pairs with ``x`` row ``i mod n`` (``N / n``
    draws per example, sample-major, without copying ``x`` that often).
    See ``docs/backprop.md#bernoulli-log-likelihood``.
    """
    x = _tile_rows(x, len(logits))
    # Subtract max(l, 0) before log1p(exp(-|l|)): for a confident, correct
    # prediction x l - max(l, 0) is exactly 0, and the tiny log1p term survives
    # instead of vanishing into the rounding of a large softplus.
    return np.sum(x * logits - np.maximum(logits, 0) - np.log1p(np.exp(-np.abs(logits))), axis=1)


def _tile_rows(x: np.ndarray, n_rows: int) -> np.ndarray:
    """``x (n, D)`` repeated to ``(n_rows, D)``, row ``i`` being ``x[i mod n]``."""
    return x if len(x) == n_rows else np.tile(x, (n_rows // len(x), 1))


def bernoulli_log_prob(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Compiled :func:`bernoulli_log_prob_ref`: ``(N or n, D), (N, D) -> (N,)``."""
    x, logits = paired_arrays(x, logits)
    log_prob = np.empty(logits.shape[0], dtype=logits.dtype)
    _compiled.bernoulli_log_prob_loop(x, logits, log_prob)
    return log_prob


def bernoulli_log_prob_and_grad_ref(x: np.ndarray, logits: np.ndarray):
    """:func:`bernoulli_log_prob_ref` ``(N,)`` and its gradient ``x - sigmoid(logits)``."""
    return bernoulli_log_prob_ref(x, logits), _tile_rows(x, len(logits)) - sigmoid_ref(logits)


def bernoulli_log_prob_and_grad(x: np.ndarray, logits: np.ndarray):
    """Compiled :func:`bernoulli_log_prob_and_grad_ref`, one pass: ``(log_prob, dlogits)``."""
    x, logits = paired_arrays(x, logits)
    log_prob = np.empty(logits.shape[0], dtype=logits.dtype)
    dlogits = np.empty_like(logits)
    _compiled.bernoulli_log_prob_and_grad_loop(x, logits, log_prob, dlogits)
    return log_prob, dlogits


# --- KL(N(mu, diag exp(log_var)) || N(0, I)), see docs/backprop.md#gaussian-kl -------
# exp(log_var) - 1 is written expm1(log_var): near log_var = 0 the KL of a dimension is
# about log_var**2 / 4, and exp(log_var) - 1 would lose it to rounding (in float32, all
# of it once |log_var| < 3e-4).

#: The dtypes whose KL loops beat the reference: float32, training's.  In float64, the
#: gradient checks' dtype, the general expm1 does not vectorise on AVX2 and the loops run
#: at 0.82-1.01x of NumPy (``benchmarks/README.md``, "Kernels"); float64 runs the reference.
COMPILED_KL_DTYPES = (np.dtype(np.float32),)


def gaussian_kl_per_dim_ref(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """``0.5 (mu^2 + exp(log_var) - 1 - log_var)`` entry by entry (``docs/backprop.md``)."""
    return 0.5 * (mu * mu + np.expm1(log_var) - log_var)


def gaussian_kl_per_dim(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """Compiled :func:`gaussian_kl_per_dim_ref` in float32: for the loss, free bits, reports."""
    mu, log_var = float_arrays(mu=mu, log_var=log_var)
    if mu.dtype not in COMPILED_KL_DTYPES:
        return gaussian_kl_per_dim_ref(mu, log_var)
    out = np.empty_like(mu)
    _compiled.gaussian_kl_per_dim_loop(mu.reshape(-1), log_var.reshape(-1), out.reshape(-1))
    return out


def gaussian_kl_ref(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """KL of a diagonal Gaussian to N(0, I), per row: ``(N, D) x 2 -> (N,)``; see above."""
    return np.sum(gaussian_kl_per_dim_ref(mu, log_var), axis=1)


def gaussian_kl(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """Compiled :func:`gaussian_kl_ref`: the row sums of :func:`gaussian_kl_per_dim`."""
    mu, log_var = float_arrays(2, mu=mu, log_var=log_var)
    return np.sum(gaussian_kl_per_dim(mu, log_var), axis=1)


def gaussian_kl_grad_ref(mu: np.ndarray, log_var: np.ndarray):
    """Gradient of the KL: ``dmu = mu`` (a copy), ``dlog_var = 0.5 (exp(log_var) - 1)``."""
    return mu.copy(), 0.5 * np.expm1(log_var)


def gaussian_kl_grad(mu: np.ndarray, log_var: np.ndarray):
    """Compiled :func:`gaussian_kl_grad_ref` in float32."""
    mu, log_var = float_arrays(mu=mu, log_var=log_var)
    if mu.dtype not in COMPILED_KL_DTYPES:
        return gaussian_kl_grad_ref(mu, log_var)
    dlog_var = np.empty_like(log_var)
    _compiled.half_expm1_loop(log_var.reshape(-1), dlog_var.reshape(-1))
    return mu.copy(), dlog_var


# --- Reparameterised sample z = mu + sigma * eps --------------------------------------


def reparameterize_ref(mu: np.ndarray, log_var: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """``z = mu + exp(log_var / 2) * eps``: a draw from N(mu, diag exp(log_var)), ``(N, D)``.

    ``eps`` is standard normal noise drawn by the caller.  ``docs/backprop.md#reparameterisation``.
    """
    return mu + np.exp(0.5 * log_var) * eps


def reparameterize(mu: np.ndarray, log_var: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Compiled :func:`reparameterize_ref`: ``(N, D) x 3 -> z (N, D)``."""
    mu, log_var, eps = float_arrays(mu=mu, log_var=log_var, eps=eps)
    z = np.empty_like(mu)
    _compiled.reparameterize_loop(
        mu.reshape(-1), log_var.reshape(-1), eps.reshape(-1), z.reshape(-1)
    )
    return z


def reparameterize_backward_ref(dz: np.ndarray, log_var: np.ndarray, eps: np.ndarray):
    """Gradients through the sample for fixed ``eps``, all ``(N, D)``: ``(dmu, dlog_var)``.

    ``dmu = dz`` (a copy) and ``dlog_var = dz * eps * 0.5 * exp(log_var / 2)``.
    """
    return dz.copy(), dz * eps * 0.5 * np.exp(0.5 * log_var)


def reparameterize_backward(dz: np.ndarray, log_var: np.ndarray, eps: np.ndarray):
    """Compiled :func:`reparameterize_backward_ref`: ``(dmu, dlog_var)``, each like ``dz``."""
    dz, log_var, eps = float_arrays(dz=dz, log_var=log_var, eps=eps)
    dlog_var = np.empty_like(dz)
    flat = (dz.reshape(-1), log_var.reshape(-1), eps.reshape(-1), dlog_var.reshape(-1))
    _compiled.reparameterize_backward_loop(*flat)
    return dz.copy(), dlog_var


# --- Row-wise log-sum-exp -------------------------------------------------------------


def logsumexp_ref(a: np.ndarray) -> np.ndarray:
    """``log(sum_j exp(a[i, j]))`` per row, ``(N, D) -> (N,)``; ``docs/backprop.md#log-sum-exp``.

    Shifted by the row maximum, it never overflows.  A row of all ``-inf`` gives ``-inf``,
    a row holding ``+inf`` gives ``+inf``, a row holding NaN gives NaN.
    """
    row_max = np.max(a, axis=1, keepdims=True)
    # An infinite or NaN maximum cannot be subtracted (inf - inf is NaN); with
    # no shift, exp() itself then yields the right 0, inf or NaN.
    shift = np.where(np.isfinite(row_max), row_max, 0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(a - shift), axis=1)) + shift[:, 0]


def logsumexp(a: np.ndarray) -> np.ndarray:
    """Compiled :func:`logsumexp_ref`; rows may be wide (D = 5000).  The row maxima come
    from NumPy (a SIMD pass that keeps NaN): without the ``nnan`` flag LLVM does not
    vectorise a compiled max, which would cost more than all the exponentials."""
    (a,) = float_arrays(2, a=a)
    out = np.empty(a.shape[0], dtype=a.dtype)
    _compiled.logsumexp_loop(a, np.max(a, axis=1), out)
    return out


# --- Adam -----------------------------------------------------------------------------


def adam_update_ref(param, grad, m, v, lr, beta1, beta2, eps, step) -> None:
    """One Adam step, in place on ``param``, ``m`` and ``v`` (one shape, any).

    ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``;
    ``param -= lr * m_hat / (sqrt(v_hat) + eps)`` with the bias-corrected
    ``m_hat = m / (1 - b1^step)`` and ``v_hat = v / (1 - b2^step)``; ``step`` counts
    from 1, this step included.  See ``docs/backprop.md#adam``.

    A moment below the dtype's smallest normal number is set to 0.  Left alone, the
    first moment of a dead ReLU unit (gradient exactly 0) decays into the subnormals and
    stays there (``0.9 * 4 * 2**-149`` rounds back to ``4 * 2**-149`` in float32), and
    x86 arithmetic on subnormals makes an MNIST epoch 4x as long.  Such a moment moves
    its parameter by under ``1e-30 * lr``.
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


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step) -> None:
    """Compiled :func:`adam_update_ref`: one fused pass over flat views, so all four arrays
    must be C-contiguous.  Scalars are cast to their dtype: float32 stays float32."""
    arrays = {"param": param, "grad": grad, "m": m, "v": v}
    for name, array in arrays.items():
        if not (isinstance(array, np.ndarray) and array.flags.c_contiguous):
            raise ValueError(f"adam_update: {name} must be a C-contiguous ndarray (in place)")
    float_arrays(**arrays)
    as_dtype = param.dtype.type
    lr, beta1, beta2, eps = float(lr), float(beta1), float(beta2), float(eps)
    # The bias corrections leave the loop as a step size and 1 / sqrt(1 - beta2**step).
    _compiled.adam_update_loop(
        param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
        as_dtype(lr / (1 - beta1**step)), as_dtype(beta1), as_dtype(1 - beta1), as_dtype(beta2),
        as_dtype(1 - beta2), as_dtype(1 / math.sqrt(1 - beta2**step)), as_dtype(eps),
        as_dtype(np.finfo(param.dtype).tiny),
    )  # fmt: skip


# --- The NaN guard --------------------------------------------------------------------


def all_finite_ref(x: np.ndarray) -> bool:
    """Whether every entry of ``x`` (any shape) is finite: no NaN, no infinity."""
    return bool(np.isfinite(x).all())


def all_finite(x: np.ndarray) -> bool:
    """Compiled :func:`all_finite_ref`: the trainer checks every gradient after each step."""
    (x,) = float_arrays(x=x)
    if USE_NUMBA:
        return bool(_compiled.all_finite_loop(x.reshape(-1)))
    with np.errstate(invalid="ignore"):  # the plain loop's inf * 0 is the point, not a slip
        return bool(_compiled.all_finite_loop(x.reshape(-1)))


# --- Activations (shapes: any; the output, or dx, like the input) ---------------------


def softplus_ref(x: np.ndarray) -> np.ndarray:
    """``log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))``.  ``docs/backprop.md#softplus``."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def softplus(x: np.ndarray) -> np.ndarray:
    """Compiled :func:`softplus_ref`, in float64 too: there it ties NumPy's AVX-512 loops
    on a Xeon and runs 4.4x as fast on an AVX2 EPYC (``benchmarks/README.md``)."""
    (x,) = float_arrays(x=x)
    out = np.empty_like(x)
    _compiled.softplus_loop(x.reshape(-1), out.reshape(-1))
    return out


def sigmoid_ref(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow, via ``exp(-|x|)``.  ``docs/backprop.md#sigmoid``."""
    exp_neg_abs = np.exp(-np.abs(x))
    return np.where(x > 0, 1 / (1 + exp_neg_abs), exp_neg_abs / (1 + exp_neg_abs))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Compiled :func:`sigmoid_ref`."""
    (x,) = float_arrays(x=x)
    out = np.empty_like(x)
    _compiled.sigmoid_loop(x.reshape(-1), out.reshape(-1))
    return out


def tanh_ref(x: np.ndarray) -> np.ndarray:
    """NumPy's ``tanh``.  ``docs/backprop.md#tanh``."""
    return np.tanh(x)


def tanh(x: np.ndarray) -> np.ndarray:
    """Compiled :func:`tanh_ref`, to a few ulp: NumPy's ``tanh`` has no SIMD loop for AVX2
    (on an EPYC 3-4 ns an entry in float32, 14-17 in float64: a tenth of an IWAE step)."""
    (x,) = float_arrays(x=x)
    out = np.empty_like(x)
    _compiled.tanh_loop(x.reshape(-1), out.reshape(-1))
    return out


def tanh_backward_ref(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``dx = dout * (1 - out**2)``, from the tanh's output ``out``.  ``docs/backprop.md#tanh``."""
    return dout * (1 - out * out)


def tanh_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Compiled :func:`tanh_backward_ref`, one pass."""
    dout, out = float_arrays(dout=dout, out=out)
    dx = np.empty_like(dout)
    _compiled.tanh_backward_loop(dout.reshape(-1), out.reshape(-1), dx.reshape(-1))
    return dx


def relu_forward_ref(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``.  ``docs/backprop.md#relu``."""
    return np.maximum(x, 0)


def relu_forward(x: np.ndarray) -> np.ndarray:
    """Compiled :func:`relu_forward_ref`."""
    (x,) = float_arrays(x=x)
    out = np.empty_like(x)
    _compiled.relu_forward_loop(x.reshape(-1), out.reshape(-1))
    return out


def relu_backward_ref(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``dx = dout`` where the output ``out > 0``, else 0 (NaN for NaN).  docs/backprop.md#relu"""
    return dout * np.heaviside(out, 0)


def relu_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Compiled :func:`relu_backward_ref`, one pass."""
    dout, out = float_arrays(dout=dout, out=out)
    dx = np.empty_like(dout)
    _compiled.relu_backward_loop(dout.reshape(-1), out.reshape(-1), dx.reshape(-1))
    return dx


def elu_ref(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """``x`` where ``x > 0``, else ``alpha (exp(x) - 1)``.  ``docs/backprop.md#elu``."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Compiled :func:`elu_ref`."""
    (x,) = float_arrays(x=x)
    out = np.empty_like(x)
    _compiled.elu_loop(x.reshape(-1), x.dtype.type(alpha), out.reshape(-1))
    return out


# --- Binarisation ---------------------------------------------------------------------


def binarize_ref(x: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """One Bernoulli draw per pixel: 1.0 where its intensity exceeds ``uniform``, else 0.0.

    ``x``: uint8 (0..255, scaled by 1/255) or float in [0, 1]; ``uniform``: [0, 1) noise
    of ``x``'s shape, drawn by the caller.  The result is like ``uniform``; NaN for NaN.
    """
    if x.dtype == np.uint8:
        intensity = x.astype(uniform.dtype) / uniform.dtype.type(255)
    else:
        intensity = x
    draw = (intensity > uniform).astype(uniform.dtype)
    draw[np.isnan(intensity) | np.isnan(uniform)] = np.nan
    return draw


def binarize(x: np.ndarray, uniform: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Compiled :func:`binarize_ref`; ``out``, if given, is a contiguous array like
    ``uniform`` to write into (the batcher reuses one buffer for every batch)."""
    x = np.ascontiguousarray(x)
    (uniform,) = float_arrays(uniform=uniform)
    if x.shape != uniform.shape:
        raise ValueError(f"uniform has shape {uniform.shape} but x has {x.shape}")
    if x.dtype != np.uint8 and x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be uint8 or float32/float64, got {x.dtype}")
    if out is None:
        draw = np.empty_like(uniform)
    elif out.shape != uniform.shape or out.dtype != uniform.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous {uniform.dtype} array of shape {uniform.shape}")
    else:
        draw = out
    scale = uniform.dtype.type(255 if x.dtype == np.uint8 else 1)
    _compiled.binarize_loop(x.reshape(-1), scale, uniform.reshape(-1), draw.reshape(-1))
    return draw
