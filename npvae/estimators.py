"""The estimators papers report, each a function of a model and test images.

* :func:`evaluate_loss`: the model's own objective and its terms on a data
  set, averaged per example (for a VAE: the negative ELBO, reconstruction and
  KL, in nats).
* :func:`log_likelihood`: the importance-sampled estimate
  ``log p(x) ≈ log (1/S) Σ_s p(x, z_s) / q(z_s|x)`` with ``S`` samples per
  example (Burda et al. use S = 5000), streamed in chunks so that memory is
  bounded whatever ``S`` is (``docs/models.md#importance-sampled-log-likelihood``).
* :func:`importance_sampled`: the same, with the ELBO from the same samples
  and each estimate's Monte Carlo error.
* :func:`active_units`: a latent dimension is active when its posterior mean
  varies with the input, ``Var_x(E_q[z_u]) > 0.01`` (Burda et al., 2016).
* :func:`autoencoder_metrics`: reconstruction error in the model's units, and
  what each variant is judged by (corrupted inputs, the Jacobian's norm, the
  code units' mean activations).

Every function takes float data ``x (N, D)`` of the model's dtype, already
scaled (and binarised, if the model was trained on binary data).
"""

from __future__ import annotations

import copy
import itertools
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from npvae import kernels
from npvae.distributions import DiagonalGaussian
from npvae.models.base import chunks

#: Burda et al.'s (2016) bar: a unit is active when Var_x(E_q[z_u]) exceeds it.
ACTIVE_THRESHOLD = 0.01


#: Decoder rows in one batch of :func:`evaluate_loss`: its 1,000 images, or fewer when
#: each draws k (or L) samples, so that a large k's test loss fits where its step fits.
EVAL_ROWS = 50_000


def loss_batch(model, batch_size: int = 1000) -> int:
    """Images per batch of :func:`evaluate_loss`: ``batch_size``, at most :data:`EVAL_ROWS`
    decoder rows (each image draws the model's k, or L, samples)."""
    draws = int(model.config.get("k", model.config.get("n_samples", 1)))
    return max(1, min(batch_size, EVAL_ROWS // draws))


def evaluate_loss(model, x: np.ndarray, rng: np.random.Generator, batch_size: int = 1000) -> dict:
    """The model's loss and its terms, per example, averaged over ``x (N, D)``.

    Returns a dict of the scalar entries of ``model.loss`` (``loss``, ``recon``,
    and ``kl``, ``elbo`` for a VAE; ``bound`` for an IWAE), each the mean over
    all ``N`` examples, and for a VAE or IWAE ``kl_per_dim (d,)``, the KL of
    each latent dimension averaged over ``x``.
    """
    totals: dict = {}
    for batch in chunks(x, loss_batch(model, batch_size)):
        report = model.loss(batch, rng, grad=False)
        for key, value in report.items():
            if (isinstance(value, float) and key != "beta") or key == "kl_per_dim":
                totals[key] = totals.get(key, 0.0) + np.asarray(value, np.float64) * len(batch)
    means = {key: total / len(x) for key, total in totals.items()}
    return {key: float(v) if np.ndim(v) == 0 else v for key, v in means.items()}


@dataclass
class ImportanceSampled:
    """Per-example results of :func:`importance_sampled`, each ``(N,)`` in nats."""

    log_px: np.ndarray  # log (1/S) Σ_s w_s, the estimate of log p(x)
    elbo: np.ndarray  # (1/S) Σ_s log w_s, the ELBO from the same samples (never above log_px)
    mc_error: np.ndarray  # the estimate's Monte Carlo standard error (delta method)


def importance_sampled(
    model,
    x: np.ndarray,
    rng: np.random.Generator,
    n_samples: int = 5000,
    batch_size: int = 100,
    max_rows: int = 2_000,
    progress=None,
    workers: int = 1,
) -> ImportanceSampled:
    """Importance-sampled ``log p(x)`` of each row of ``x (N, D)``, streamed.

    The proposal is the encoder's q(z|x).  Samples are drawn in chunks of at
    most ``max_rows`` decoder rows (chunk × batch), and their log-weights are
    folded into running sums (log-sum-exp of ``log w`` and of ``2 log w``, and
    the sum of ``log w``), so memory does not grow with ``n_samples``.
    ``progress``, if given, is called with the number of examples finished
    after each batch.  The default ``max_rows`` keeps each chunk's arrays near
    6 MB for MNIST, still large enough for fast matrix products.

    Each batch of ``batch_size`` images draws from a generator of its own,
    seeded from ``rng`` in batch order (:func:`batch_seeds`), so the estimates
    do not depend on ``workers``: that many threads share the batches, each
    with its own copy of the model, on a one-thread BLAS (:func:`_in_threads`),
    and give the bits that ``workers=1`` gives on a one-thread BLAS.

    The Monte Carlo error is the delta method's ``sqrt(Var(w) / S) / mean(w)``
    with the sample variance of the weights: it says how far this estimate
    may be from the one a larger ``S`` would give for the same proposal
    (``docs/models.md#importance-sampled-log-likelihood``).
    """
    batches = list(chunks(x, batch_size))
    seeds = batch_seeds(rng, len(batches))

    def estimate(model, i: int):
        generator = np.random.default_rng(seeds[i])
        return _estimate_batch(model, batches[i], generator, n_samples, max_rows)

    log_px, elbo, mc_error = (np.empty(len(x)) for _ in range(3))
    done = 0
    for batch, results in zip(batches, _in_threads(estimate, model, len(batches), workers)):
        rows = slice(done, done + len(batch))
        log_px[rows], elbo[rows], mc_error[rows] = results
        done += len(batch)
        if progress is not None:
            progress(done)
    return ImportanceSampled(log_px, elbo, mc_error)


def batch_seeds(rng: np.random.Generator, count: int) -> np.ndarray:
    """The seeds of :func:`importance_sampled`'s ``count`` batches, ``(count,)``.

    Batch ``i`` draws its ``eps (S, n, d)`` from ``np.random.default_rng(seeds[i])``,
    chunk after chunk; the seeds are ``rng``'s next ``count`` integers.
    """
    return rng.integers(0, 2**63, size=count)


def _estimate_batch(model, batch: np.ndarray, rng, n_samples: int, max_rows: int):
    """``log_px, elbo, mc_error``, each ``(n,)``, of the images ``batch (n, D)``."""
    n, d = len(batch), model.latent_dim
    chunk = max(1, min(n_samples, max_rows // n))
    lse, lse_squares, total = np.full(n, -np.inf), np.full(n, -np.inf), np.zeros(n)
    for start in range(0, n_samples, chunk):
        size = min(chunk, n_samples - start)
        eps = rng.standard_normal((size, n, d), dtype=model.dtype)
        log_w = np.ascontiguousarray(model.log_importance_weights(batch, eps).T, np.float64)
        lse = np.logaddexp(lse, kernels.logsumexp(log_w))  # log Σ w
        lse_squares = np.logaddexp(lse_squares, kernels.logsumexp(2 * log_w))  # log Σ w²
        total += log_w.sum(axis=1)
    # Var(w) / mean(w)² = S Σw² / (Σw)² − 1, from the running sums without overflow.
    relative_variance = np.maximum(np.expm1(lse_squares - 2 * lse + np.log(n_samples)), 0)
    return lse - np.log(n_samples), total / n_samples, np.sqrt(relative_variance / n_samples)


def _in_threads(work, model, count: int, workers: int):
    """``work(model, i)`` for ``i`` in ``range(count)``, yielded in order.

    With ``workers > 1`` the calls run in up to that many threads, each on its
    own copy of ``model`` (a layer keeps its last input for the backward pass,
    so one model cannot run two forward passes at once), with the BLAS held to
    one thread meanwhile, a single batch too: a float32 product can round
    differently on two BLAS threads than on one, and the estimates should not
    depend on ``workers``.  numpy's products and draws and npvae's kernels
    release the GIL, so every core runs the whole pass, the kernels and draws
    between the products too, which a threaded BLAS would leave on one core.
    """
    if workers <= 1:
        yield from (work(model, i) for i in range(count))
        return
    from threadpoolctl import threadpool_limits

    copies: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(min(workers, count)):
        copies.put(copy.deepcopy(model))

    def task(i: int):
        own = copies.get()
        try:
            return work(own, i)
        finally:
            copies.put(own)

    with threadpool_limits(limits=1, user_api="blas"):
        pool = ThreadPoolExecutor(workers)
        try:
            for future in [pool.submit(task, i) for i in range(count)]:
                yield future.result()
        finally:  # on an error or Ctrl-C, finish only the batches already running
            pool.shutdown(wait=True, cancel_futures=True)


def log_likelihood(
    model,
    x: np.ndarray,
    rng: np.random.Generator,
    n_samples: int = 5000,
    batch_size: int = 100,
    max_rows: int = 2_000,
    progress=None,
    workers: int = 1,
) -> np.ndarray:
    """Importance-sampled ``log p(x)`` per example, ``x (N, D) -> (N,)`` (nats).

    :func:`importance_sampled`'s ``log_px``, with the same arguments.
    """
    sampled = importance_sampled(model, x, rng, n_samples, batch_size, max_rows, progress, workers)
    return sampled.log_px


def standard_error(values: np.ndarray) -> float | None:
    """The standard error of the mean of ``values (N,)``: ``s / sqrt(N)``.

    ``s`` is the sample standard deviation with Bessel's correction (``ddof=1``),
    the usual estimate of the spread of the test images' values; None for
    fewer than two values, which have no spread to estimate.
    """
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return None
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def active_units(
    model, x: np.ndarray, threshold: float = ACTIVE_THRESHOLD, batch_size: int = 1000
) -> tuple[int, np.ndarray]:
    """``(count, variances (d,))``: dimensions whose posterior mean varies over ``x``."""
    variances = _variance(model.codes(x, batch_size))
    return int((variances > threshold).sum()), variances


def posterior_summary(model, x: np.ndarray, batch_size: int = 1000):
    """``(kl_per_dim (d,), mean_variance (d,))`` of q(z|x) over ``x (N, D)``, in one pass.

    The mean over the examples of each dimension's closed-form KL to the prior
    (nats), and the variance over the examples of each posterior mean (what
    :func:`active_units` holds against its threshold).  One stochastic layer only.
    """
    kl_sum, means = 0.0, []
    for piece in chunks(x, batch_size):
        mu, log_var = model.encode(piece)
        kl_sum = kl_sum + DiagonalGaussian.kl_per_dim(mu, log_var).sum(axis=0, dtype=np.float64)
        means.append(mu)
    return kl_sum / len(x), _variance(np.concatenate(means))


def _variance(codes: np.ndarray) -> np.ndarray:
    """Each column's variance over the rows of ``codes (N, d)``, in float64: ``(d,)``."""
    return codes.astype(np.float64).var(axis=0)


# ----- the autoencoders ----------------------------------------------------------------------


def reconstruction_error(model, x: np.ndarray, inputs: np.ndarray | None = None) -> float:
    """Mean reconstruction error of ``x (N, D)`` in the model's own units.

    Cross-entropy in nats per example for a Bernoulli (sigmoid) decoder,
    squared error per example otherwise: the ``recon`` term of its loss,
    without the penalty.  ``inputs (N, D)``, if given, is what the encoder
    sees in place of ``x`` (a denoising AE's corrupted images); the target is
    always ``x``.
    """
    total = 0.0
    sources = itertools.repeat(None) if inputs is None else chunks(inputs, 1000)
    for target, source in zip(chunks(x, 1000), sources):
        report = model.loss(target, grad=False, corrupt=False, x_tilde=source)
        total += report["recon"] * len(target)
    return total / len(x)


def autoencoder_metrics(model, x: np.ndarray, rng: np.random.Generator) -> dict:
    """What each autoencoder is judged by, on test images ``x (N, D)``.

    * every one: ``recon``, the reconstruction error (:func:`reconstruction_error`);
    * denoising: ``recon_corrupted``, the error of reconstructing ``x`` from a
      corruption drawn from ``rng`` (``recon`` is from the clean input);
    * contractive: ``jacobian_frobenius``, the mean of ``‖J_f(x)‖_F`` over ``x``;
    * sparse: ``mean_activation (h,)`` of each code unit over ``x``, beside its
      ``target``.
    """
    metrics: dict = {"recon": reconstruction_error(model, x)}
    if hasattr(model, "corrupt"):
        metrics["recon_corrupted"] = reconstruction_error(model, x, model.corrupt(x, rng))
    if hasattr(model, "jacobian_norm"):
        norms = np.concatenate([model.jacobian_norm(b) for b in chunks(x, 1000)])
        metrics["jacobian_frobenius"] = float(np.sqrt(norms.astype(np.float64)).mean())
    if model.kind == "sparse-ae":
        metrics["mean_activation"] = model.codes(x).astype(np.float64).mean(axis=0)
        if model.config["sparsity"] == "kl":  # the L1 penalty has no target
            metrics["target"] = float(model.config["target"])
    return metrics
