"""The IWAE's backward stops of ``python -m npvae.tour`` (17 to 20): the bound's gradient.

Each draw's gradient takes the VAE's path (``npvae/tour_backward.py``), weighted by
its normalised importance weight, and the two terms of ``log w`` that the VAE has
in closed form add their own: ``log p(z)``'s to z, ``log q(z|x)``'s to log_var.
Each stop is checked against centred finite differences of the negative bound, and
the last against ``IWAE.loss`` and against the weighted sum of per-draw gradients.
The forward stops and :class:`npvae.tour_iwae.IwaeTour` are in ``npvae/tour_iwae.py``.
Derivation: ``docs/models.md#iwae``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from npvae.distributions import DiagonalGaussian
from npvae.gradcheck import rel_error
from npvae.models.vae import fold_rows, repeat_rows

if TYPE_CHECKING:
    from npvae.tour_iwae import IwaeTour


# ----- the backward stops --------------------------------------------------------------


def the_output_gradient(tour: IwaeTour, log_w, logits, dlogits, z, log_qz) -> tuple:
    """Stop 17: ``per_row (k N,)``, d loss / d log w, the normalised weights times -1/N;
    then ``dout (k N, D)``, d loss / d logits.  Both by finite differences.

    Returns ``(per_row, dout)``.
    """
    k, n = tour.k, len(tour.x)
    normalised = np.exp(log_w - log_w.max(axis=0))  # (k, N)
    normalised *= -1 / n / normalised.sum(axis=0)
    per_row = normalised.reshape(k * n)  # d loss / d log w, one per row of z
    dout = dlogits * per_row[:, None]  # (k N, D)
    tour.guide.stop(
        "Backward starts at the log weights: a draw counts by its normalised weight",
        "d loss / d log w_i = -w~_i / N  (the softmax is log-sum-exp's gradient);  "
        "d loss / d l = -w~_i / N (x - sigmoid(l)), where the VAE had -1/N",
        "normalised *= -1 / n / normalised.sum(axis=0); per_row = normalised.reshape(k * n); "
        "dout *= per_row[:, None]",
        "backprop.md#log-sum-exp",
    )
    tour.guide.show("per_row", per_row)
    tour.guide.show("dout", dout)
    tour.gradient("log w", per_row.reshape(k, n), lambda: tour.loss_from_log_w(log_w), log_w)
    log_prior_ratio = DiagonalGaussian.prior_log_prob(z) - log_qz  # (k N,)
    tour.gradient("logits", dout, lambda: tour.loss_from_logits(logits, log_prior_ratio), logits)
    return per_row, dout


def back_through_the_decoder(tour: IwaeTour, dout, z, per_row, log_qz) -> np.ndarray:
    """Stop 18: ``dz (k N, d)``: the decoder's backward as in the VAE, plus log p(z)'s own
    gradient, which reaches z without passing through the decoder."""
    dz = tour.model.decoder.backward(dout)  # (k N, d)
    dz += per_row[:, None] * -z  # d log p(z) / dz = -z
    tour.guide.stop(
        "Back through the decoder, and log p(z)'s own gradient",
        "dz = (the decoder's backward of dout, as in stop 8) + per_row * (-z),  "
        "since d log p(z) / dz = -z",
        "dz = self.decoder.backward(dout); dz += per_row[:, None] * -z",
        "models.md#iwae",
    )
    tour.guide.show("dz", dz)
    tour.gradient("z", dz, lambda: tour.loss_from_z(z, log_qz), z)
    return dz


def back_through_the_sampler(tour: IwaeTour, dz, per_row, mu, log_var) -> tuple:
    """Stop 19: ``dmu, dlog_var (N, d)``: each image's k draws summed, and log q's own
    gradient, +1/2 in log_var for each draw and none in mu."""
    guide, k, n = tour.guide, tour.k, len(tour.x)
    log_var_rows = repeat_rows(log_var, k)  # (k N, d)
    dmu_rows, dlog_var_rows = DiagonalGaussian.sample_backward(dz, log_var_rows, tour.eps_rows)
    dlog_var_q = 0.5 * per_row.reshape(k, n).sum(axis=0)[:, None]  # (N, 1)
    dmu = fold_rows(dmu_rows, n)  # (N, d)
    dlog_var = fold_rows(dlog_var_rows, n) + dlog_var_q  # (N, d)
    guide.stop(
        "Through the sampler, and log q's own gradient",
        "dmu = sum_i dz_i;  dlog_var = sum_i dz_i * eps_i * exp(log_var / 2) / 2 "
        "+ 0.5 sum_i per_row_i,  as -log q = 0.5 sum_j (eps_j^2 + log 2 pi + log_var_j)",
        "DiagonalGaussian.sample_backward(dz, log_var_rows, eps_rows); "
        "dlog_var_q = 0.5 * per_row.reshape(k, n).sum(axis=0)[:, None]",
        "models.md#iwae",
    )
    guide.show("dmu", dmu)
    guide.show("dlog_var", dlog_var)
    guide.say(
        f"an image's weights sum to 1, so log q adds 0.5 sum_i (-w~_i / N) = -1/(2N) = "
        f"{-0.5 / n:+.4f} to every log_var, whatever the weights, and nothing to mu"
    )
    tour.gradient("mu", dmu, lambda: tour.loss_from_latents(mu, log_var), mu)
    tour.gradient("log_var", dlog_var, lambda: tour.loss_from_latents(mu, log_var), log_var)
    return dmu, dlog_var


def the_weighted_sum(tour: IwaeTour, dmu, dlog_var, w_tilde: np.ndarray) -> None:
    """Stop 20: the heads and the encoder, as in the VAE; then the gradients ``IWAE.loss``
    writes, bit for bit, and x_0's gradient as the weighted sum of its draws' gradients."""
    model, probe, guide, k = tour.model, tour.probe, tour.guide, tour.k
    dh = model.mu_head.backward(dmu)  # (N, H)
    dh += model.log_var_head.backward(dlog_var)
    model.encoder.backward(dh)
    guide.stop(
        "The bound's gradient: each draw's gradient, weighted by w~",
        "grad L_k(x) = sum_i w~_i grad log w_i,  where a plain average would take "
        "(1/k) sum_i grad log w_i",
        "dh = self.mu_head.backward(dmu); dh += self.log_var_head.backward(dlog_var); "
        "self.encoder.backward(dh)",
        "models.md#iwae",
    )
    guide.show("dW1", model.grads["encoder.0.W"])
    probe.loss(tour.x, eps=tour.eps)  # the probe's own gradients; the toured model's stay
    differ = int(np.count_nonzero(probe.flat_grads != model.flat_grads))
    guide.check(
        "IWAE.loss writes the same gradients",
        differ == 0,
        f"{differ} of {model.flat_grads.size:,} entries differ",
    )
    x0, eps0 = tour.x[:1], tour.eps[:, :1]  # (1, D), (k, 1, d)
    probe.loss(x0, eps=eps0)
    whole = probe.flat_grads.copy()  # (P,): d(-L_k(x_0)) / d theta
    weighted, plain = np.zeros_like(whole), np.zeros_like(whole)
    for i in range(k):
        probe.loss(x0, eps=eps0[i : i + 1])  # one draw: the loss is -log w_i
        weighted += w_tilde[i, 0] * probe.flat_grads
        plain += probe.flat_grads / k
    shown = ", ".join(f"{w:.3f}" for w in w_tilde[:8, 0]) + (", ..." if k > 8 else "")
    guide.say(f"x_0's weights w~: {shown}")
    error, error_plain = rel_error(whole, weighted), rel_error(whole, plain)
    guide.check(
        f"for x_0, IWAE.loss on its {k} draws is sum_i w~_i (IWAE.loss on draw i alone), "
        f"in all {whole.size:,} gradients",
        error < 1e-10,
        f"relative error {error:.1e} (bar 1e-10; with 1/k for w~ it would be {error_plain:.1e})",
    )
