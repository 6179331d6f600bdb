"""Evaluation as the literature reports it.

* :func:`evaluate_loss`: the model's own objective and its terms on a data
  set, averaged per example (for a VAE: the negative ELBO, reconstruction and
  KL, in nats).
* :func:`log_likelihood`: the importance-sampled estimate
  ``log p(x) ≈ log (1/S) Σ_s p(x, z_s) / q(z_s|x)`` with ``S`` samples per
  example (Burda et al. use S = 5000), streamed in chunks so that memory is
  bounded whatever ``S`` is (``docs/models.md#importance-sampled-log-likelihood``).
* :func:`active_units`: a latent dimension is active when its posterior mean
  varies with the input, ``Var_x(E_q[z_u]) > 0.01`` (Burda et al., 2016).

Every function takes float data ``x (N, D)`` of the model's dtype, already
scaled (and binarised, if the model was trained on binary data).
"""

from __future__ import annotations

import numpy as np

from npvae import kernels


def _batches(x: np.ndarray, batch_size: int):
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


def evaluate_loss(model, x: np.ndarray, rng: np.random.Generator, batch_size: int = 1000) -> dict:
    """The model's loss and its terms, per example, averaged over ``x (N, D)``.

    Returns a dict of the scalar entries of ``model.loss`` (``loss``, ``recon``,
    and ``kl``, ``elbo`` for a VAE), each the mean over all ``N`` examples.
    """
    totals: dict[str, float] = {}
    for batch in _batches(x, batch_size):
        report = model.loss(batch, rng, grad=False)
        for key, value in report.items():
            if isinstance(value, float) and key != "beta":
                totals[key] = totals.get(key, 0.0) + value * len(batch)
    return {key: total / len(x) for key, total in totals.items()}


def log_likelihood(
    model,
    x: np.ndarray,
    rng: np.random.Generator,
    n_samples: int = 5000,
    batch_size: int = 100,
    max_rows: int = 2_000,
    progress=None,
) -> np.ndarray:
    """Importance-sampled ``log p(x)`` per example, ``x (N, D) -> (N,)`` (nats).

    The proposal is the encoder's q(z|x).  Samples are drawn in chunks of at
    most ``max_rows`` decoder rows (chunk × batch), and their log-weights are
    folded into a running log-sum-exp, so memory does not grow with
    ``n_samples``.  ``progress``, if given, is called with the number of
    examples finished after each batch.  The default ``max_rows`` keeps each
    chunk's arrays near 6 MB for MNIST, still large enough for fast matrix products.
    """
    d = model.latent_dim
    estimates = np.empty(len(x))
    done = 0
    for batch in _batches(x, batch_size):
        n = len(batch)
        chunk = max(1, min(n_samples, max_rows // n))
        running = np.full(n, -np.inf)
        for start in range(0, n_samples, chunk):
            size = min(chunk, n_samples - start)
            eps = rng.standard_normal((size, n, d), dtype=model.dtype)
            log_w = model.log_importance_weights(batch, eps)  # (size, n)
            chunk_lse = kernels.logsumexp(np.ascontiguousarray(log_w.T, dtype=np.float64))
            running = np.logaddexp(running, chunk_lse)
        estimates[done : done + n] = running - np.log(n_samples)
        done += n
        if progress is not None:
            progress(done)
    return estimates


def active_units(
    model, x: np.ndarray, threshold: float = 0.01, batch_size: int = 1000
) -> tuple[int, np.ndarray]:
    """``(count, variances (d,))``: dimensions whose posterior mean varies over ``x``."""
    means = np.concatenate([model.encode(batch)[0] for batch in _batches(x, batch_size)])
    variances = means.astype(np.float64).var(axis=0)
    return int((variances > threshold).sum()), variances
