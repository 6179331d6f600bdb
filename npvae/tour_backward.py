"""The backward stops of ``python -m npvae.tour`` (7 to 12), and Adam's step.

Each stop takes one stage of ``VAE.loss``'s backward pass, or of ``Adam.step``, with
the model's own layers and kernels, and checks it against centred finite
differences of the loss or a second computation.  The forward stops and the
:class:`npvae.tour_stops.Tour` they all read are in ``npvae/tour_stops.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from npvae.distributions import DiagonalGaussian
from npvae.gradcheck import rel_error
from npvae.optim import Adam

if TYPE_CHECKING:
    from npvae.tour_stops import Tour


# ----- the backward stops --------------------------------------------------------------


def the_output_gradient(tour: Tour, logits, dlogits, kl_term: float) -> np.ndarray:
    """Stop 7: ``dout (N, D)``, d loss / d logits, checked by finite differences."""
    n = len(tour.x)
    dout = dlogits * np.full(n, -1.0 / n)[:, None]  # (N, D): d loss / d log p(x_n|z_n) = -1/N
    tour.guide.stop(
        "Backward starts at the output: d loss / d logits",
        "d log p(x|z) / d l = x - sigmoid(l);  each image's term is weighted -1/N",
        "dout *= per_row[:, None]   (per_row = -1/N; dout came with log_px from the kernel)",
        "backprop.md#bernoulli-log-likelihood",
    )
    tour.guide.show("dout", dout)
    tour.gradient("logits", dout, lambda: tour.loss_from_logits(logits, kl_term), logits)
    return dout


def back_through_the_decoder(tour: Tour, dout, z: np.ndarray, kl_term: float) -> np.ndarray:
    """Stop 8: ``dz (N, d)``, and the decoder's dW and db, written by its backward."""
    dz = tour.model.decoder.backward(dout)  # (N, d)
    tour.guide.stop(
        "Back through the decoder: each Linear writes dW, db and returns dx",
        "dW = x.T dout;  db = sum_n dout;  dx = dout W.T;  relu: dx = dout where out > 0",
        "dz = self.decoder.backward(dout)",
        "backprop.md#linear",
    )
    tour.guide.show("dz", dz)
    tour.guide.show("dW4", tour.model.grads["decoder.2.W"])
    tour.gradient("z", dz, lambda: tour.loss_from_z(z, kl_term), z)
    return dz


def back_through_the_sampler(tour: Tour, dz, mu, log_var) -> tuple[np.ndarray, np.ndarray]:
    """Stop 9: ``dmu, dlog_var (N, d)``: the sampler's backward plus the KL's gradient."""
    guide, n, d = tour.guide, len(tour.x), tour.model.latent_dim
    dmu_z, dlog_var_z = DiagonalGaussian.sample_backward(dz, log_var, tour.eps_rows)  # (N, d)
    dmu_kl, dlog_var_kl = DiagonalGaussian.kl_grad(mu, log_var)  # (N, d)
    kl_weight = np.full(d, 1.0 / n)  # (d,): d loss / d KL_nj = beta / N
    dmu = dmu_z + dmu_kl * kl_weight  # (N, d)
    dlog_var = dlog_var_z + dlog_var_kl * kl_weight  # (N, d)
    guide.stop(
        "Through the sampler, and the KL's own gradient",
        "dmu = dz + mu / N;  dlog_var = dz * eps * exp(log_var / 2) / 2 "
        "+ (exp(log_var) - 1) / (2 N)",
        "DiagonalGaussian.sample_backward(dz, log_var, eps); DiagonalGaussian.kl_grad(mu, log_var)",
        "backprop.md#reparameterisation",
    )
    guide.show("dmu", dmu)
    guide.show("dlog_var", dlog_var)
    tour.gradient("mu", dmu, lambda: tour.loss_from_latents(mu, log_var), mu)
    tour.gradient("log_var", dlog_var, lambda: tour.loss_from_latents(mu, log_var), log_var)
    return dmu, dlog_var


def back_through_the_encoder(tour: Tour, dmu, dlog_var, h: np.ndarray) -> None:
    """Stop 10: ``dh (N, H)`` from both heads, and on through the encoder."""
    model = tour.model
    dh = model.mu_head.backward(dmu)  # (N, H)
    dh += model.log_var_head.backward(dlog_var)
    model.encoder.backward(dh)
    tour.guide.stop(
        "Through the two heads, which share h, and the encoder",
        "dh = dmu Wmu.T + dlog_var Wlv.T   (h feeds both heads, so their gradients add)",
        "dh = self.mu_head.backward(dmu); dh += self.log_var_head.backward(dlog_var); ...",
        "backprop.md#linear",
    )
    tour.guide.show("dh", dh)
    tour.guide.show("dW1", model.grads["encoder.0.W"])
    tour.gradient("h", dh, lambda: tour.loss_from_h(h), h)


# ----- every parameter, and the update -------------------------------------------------


def every_parameter(tour: Tour) -> None:
    """Stop 11: each parameter's gradient by finite differences of the whole loss, and
    the gradients ``VAE.loss`` writes, bit for bit."""
    model, probe = tour.model, tour.probe
    tour.guide.stop(
        "Every parameter's gradient, against the loss itself",
        "d loss / d theta for all 10 arrays (W and b of 5 Linear layers)",
        "self.grads, views into self.flat_grads, written once per step",
        "backprop.md#checking-gradients",
    )
    for name, param in probe.params.items():
        tour.gradient(name, model.grads[name], tour.whole_loss, param)
    probe.loss(tour.x, eps=tour.eps)  # the probe's own gradients; the toured model's stay
    differ = int(np.count_nonzero(probe.flat_grads != model.flat_grads))
    tour.guide.check(
        "VAE.loss writes the same gradients",
        differ == 0,
        f"{differ} of {model.flat_grads.size:,} entries differ",
    )


def adams_first_step(tour: Tour, loss: float) -> None:
    """Stop 12: one Adam step; each parameter's move checked, and the loss went down."""
    model, guide = tour.model, tour.guide
    before = model.flat_params.copy()  # (P,)
    adam = Adam(model.params, lr=1e-3)
    adam.step(model.grads)
    guide.stop(
        "Adam's first step",
        "m = 0.1 g;  v = 0.001 g^2;  theta -= lr m_hat / (sqrt(v_hat) + eps), "
        "m_hat = m / 0.1, v_hat = v / 0.001",
        "adam = Adam(model.params, lr=1e-3); adam.step(model.grads)",
        "backprop.md#adam",
    )
    g = model.flat_grads  # (P,)
    moved = model.flat_params - before  # (P,)
    largest = int(np.argmax(np.abs(g)))
    guide.say(
        f"the largest gradient, {g[largest]:+.3e}, moved its weight by {moved[largest]:+.3e}: "
        "on the first step m_hat = g and v_hat = g^2"
    )
    expected = -adam.lr * g / (np.abs(g) + adam.eps)  # (P,)
    error = rel_error(moved, expected)
    guide.check(
        "so every parameter moved by -lr g / (|g| + eps), about lr against its gradient's sign",
        error < 1e-9,
        f"relative error {error:.1e} (bar 1e-9)",
    )
    after = model.loss(tour.x, eps=tour.eps, grad=False)["loss"]
    guide.check(
        "the loss on this batch and noise went down",
        after < loss,
        f"{loss:.6f} -> {after:.6f} nats",
    )
