"""The importance-weighted autoencoder (Burda, Grosse & Salakhutdinov, 2016).

The VAE's encoder, sampler and decoder (:class:`npvae.models.vae.VAE`) trained on
the k-sample bound ``L_k(x) = log (1/k) Σ_i p(x, z_i) / q(z_i|x)`` in place of the
ELBO.  ``IWAE.loss`` reads like ``VAE.loss``: the same forward path, the bound, then
the backward pass with each draw weighted by its normalised importance weight.
Derivation: ``docs/models.md#iwae``.
"""

from __future__ import annotations

import numpy as np

from npvae import kernels
from npvae.distributions import DiagonalGaussian
from npvae.models.base import register
from npvae.models.vae import VAE, fold_rows, repeat_rows
from npvae.validate import check_range


@register
class IWAE(VAE):
    """Importance-weighted autoencoder (Burda, Grosse & Salakhutdinov, 2016).

    The same encoder and decoder as :class:`VAE`; the objective is the k-sample bound

        ``L_k(x) = log (1/k) Σ_i p(x, z_i) / q(z_i|x)``,  ``z_i ~ q(z|x)``,

    which is the ELBO for k = 1 and rises towards log p(x) as k grows.  Its
    gradient weights each sample's gradient by its normalised importance weight
    (``docs/models.md#iwae``).  Parameters as for :class:`VAE`, with ``k`` in
    place of the VAE's objective settings.
    """

    kind = "iwae"

    def __init__(
        self,
        input_dim: int = 784,
        hidden=(400,),
        latent_dim: int = 20,
        activation: str = "relu",
        likelihood: str = "bernoulli",
        learned_var: bool = False,
        init_log_var: float = 0.0,
        k: int = 5,
        init: str = "glorot",
        dtype: str = "float32",
        seed: int = 0,
    ) -> None:
        check_range("k", k, "k")
        config = dict(locals())
        config.pop("self")
        self._build(config)

    def beta_at(self, step: int | None) -> float:
        return 1.0

    def loss(
        self,
        x: np.ndarray,
        rng: np.random.Generator | None = None,
        *,
        eps: np.ndarray | None = None,
        step: int | None = None,
        grad: bool = True,
    ) -> dict:
        """The negative k-sample bound, averaged over the batch, and its gradients.

        Parameters as for :meth:`VAE.loss`; ``eps`` is ``(k, N, d)``.

        Returns
        -------
        dict with floats ``loss`` (= −``bound``), ``bound``, ``recon``, ``kl`` and
        ``elbo`` (the single-sample terms, for comparison with a VAE), and arrays
        ``bound_per_example (N,)``, ``recon_per_example``, ``kl_per_example``,
        ``kl_per_dim``.
        """
        x = self._check_input(x)
        n = len(x)
        eps = self._eps(eps, rng, self.config["k"], n)
        k = len(eps)

        # Forward, as in the VAE: q(z|x), k draws of z per example (rows sample-major), p(x|z).
        h = self.encoder.forward(x)
        mu, log_var = self.mu_head.forward(h), self.log_var_head.forward(h)  # (N, d)
        log_var_rows = repeat_rows(log_var, k)
        eps_rows = eps.reshape(k * n, self.latent_dim)
        z = DiagonalGaussian.sample(repeat_rows(mu, k), log_var_rows, eps_rows)  # (k N, d)
        out = self.decoder.forward(z)  # (k N, D)
        if grad:
            log_px, dout = self.likelihood.log_prob_and_grad(x, out)  # x paired, not tiled
        else:
            log_px = self.likelihood.log_prob(x, out)  # (k N,)

        # The bound: log w_i = log p(x|z_i) + log p(z_i) − log q(z_i|x), and
        # L_k = log (1/k) Σ_i w_i, by log-sum-exp over each example's k weights.
        log_pz = DiagonalGaussian.prior_log_prob(z)  # (k N,)
        log_qz = DiagonalGaussian.log_prob_of_sample(eps_rows, log_var_rows)  # (k N,)
        log_w = (log_px + log_pz - log_qz).reshape(k, n)
        bound = kernels.logsumexp(np.ascontiguousarray(log_w.T)) - self.dtype.type(np.log(k))

        recon = -log_px.reshape(k, n).mean(axis=0)
        kl_dim = DiagonalGaussian.kl_per_dim(mu, log_var)
        kl = kl_dim.sum(axis=1)
        report = bound_report(bound, recon, kl, kl_dim)
        if not grad:
            return report

        # Backward: d loss / d log w_i = −w̃_i / N, with w̃ the normalised weights, a softmax
        # over each example's k draws (so they sum to 1 to the last bit of the dtype).  Each
        # draw's gradient is then that of one VAE sample, scaled by −w̃_i / N.
        per_row = log_weight_grads(log_w, self.dtype).reshape(k * n)  # d loss / d log w
        dout *= per_row[:, None]  # in place: the kernel's fresh array is ours to reuse
        self.likelihood.write_grads(x, out, per_row)
        dz = self.decoder.backward(dout)  # (k N, d)
        dz += per_row[:, None] * -z  # log p(z): d/dz = −z
        dmu_rows, dlog_var_rows = DiagonalGaussian.sample_backward(dz, log_var_rows, eps_rows)
        # −log q(z|x) = 0.5 Σ_j (eps² + log 2π + log_var) at z = mu + sigma eps: mu drops
        # out, and each log_var gets +0.5 from every draw of its example.
        dlog_var_q = 0.5 * per_row.reshape(k, n).sum(axis=0)[:, None]  # (N, 1)
        dmu = fold_rows(dmu_rows, n)  # (N, d)
        dlog_var = fold_rows(dlog_var_rows, n) + dlog_var_q
        dh = self.mu_head.backward(dmu)
        dh += self.log_var_head.backward(dlog_var)
        self.encoder.backward(dh)
        return report


def log_weight_grads(log_w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """d loss / d log w of the negative bound, ``(k, N)`` from ``log_w (k, N)``: −w̃ / N, with
    w̃ the softmax of each example's k log-weights (the IWAEs of one and two layers)."""
    normalised = np.exp(log_w - log_w.max(axis=0))  # (k, N)
    normalised *= dtype.type(-1 / log_w.shape[1]) / normalised.sum(axis=0)
    return normalised


def bound_report(bound, recon, kl, kl_dim) -> dict:
    """What an IWAE's ``loss`` returns, from the bound ``L_k (N,)`` and the mean terms of
    each example's draws: ``recon (N,)``, ``kl (N,)`` and ``kl_dim (M, d)`` (its rows
    averaged).  The one-sample ELBO's terms are reported beside the bound."""
    return {
        "loss": float(-bound.mean()),
        "bound": float(bound.mean()),
        "recon": float(recon.mean()),
        "kl": float(kl.mean()),
        "elbo": float(-(recon + kl).mean()),
        "beta": 1.0,
        "bound_per_example": bound,
        "recon_per_example": recon,
        "kl_per_example": kl,
        "kl_per_dim": kl_dim.mean(axis=0),
    }
