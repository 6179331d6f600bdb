"""The forward stops of ``python -m npvae.tour`` (1 to 6), and the :class:`Tour` every stop reads.

Each stop computes one stage of ``VAE.loss``'s forward pass with the model's own
layers and kernels; prints the stage through the guide (:class:`npvae.tour.Guide`);
and checks it in a way that could fail.  A stop takes what the stops before it
computed and returns what the stops after it need; :func:`npvae.tour.walk` calls
them in order.  The backward stops and Adam's step are in ``npvae/tour_backward.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from npvae.distributions import DiagonalGaussian
from npvae.gradcheck import rel_error
from npvae.layers import ReLU
from npvae.models import VAE
from npvae.validate import counted

if TYPE_CHECKING:
    from npvae.tour import Guide

#: Draws of z for the checks of the sampler and of the closed-form KL.
DRAWS = 100_000
#: How far a Monte Carlo estimate may be from its exact value, in standard errors.
STANDARD_ERRORS = 5.0


class Tour:
    """What every stop reads: the model being stepped, ``x (N, D)``, the noise
    ``eps (k, N, d)`` (k = 1 for the VAE), the guide, and ``rng``, which draws what
    the checks need.  ``eps_rows (k N, d)`` is the noise one row per draw of z.

    The finite differences run through ``probe``, a second model with the same
    weights, so the toured model's layers keep the inputs they cached for its
    backward pass.  ``loss_from_*`` is the loss as a function of each array the
    backward pass meets, each built on the one after it.
    """

    def __init__(self, model: VAE, x: np.ndarray, eps: np.ndarray, guide: Guide, rng) -> None:
        self.model, self.x, self.eps, self.guide, self.rng = model, x, eps, guide, rng
        self.eps_rows = eps.reshape(-1, model.latent_dim)  # (k N, d), row i N + n: draw i of x_n
        self.probe = probe = type(model)(**model.config)
        probe.flat_params[...] = model.flat_params
        layers = (*probe.encoder.layers, *probe.decoder.layers)
        self.relus = [layer for layer in layers if isinstance(layer, ReLU)]

    def kinks(self) -> list[np.ndarray]:
        """Which of the probe's ReLU units passed their input in its last forward pass."""
        return [layer._out > 0 for layer in self.relus]

    def gradient(self, name: str, analytic: np.ndarray, f, array: np.ndarray) -> None:
        """Check ``analytic``, d ``f()`` / d ``array``, by finite differences."""
        self.guide.gradient(name, analytic, f, array, self.rng, self.kinks)

    def loss_from_logits(self, logits: np.ndarray, kl_term: float) -> float:
        return -self.model.likelihood.log_prob(self.x, logits).mean() + kl_term

    def loss_from_z(self, z: np.ndarray, kl_term: float) -> float:
        return self.loss_from_logits(self.probe.decoder.forward(z), kl_term)

    def loss_from_latents(self, mu: np.ndarray, log_var: np.ndarray) -> float:
        kl_term = DiagonalGaussian.kl_per_dim(mu, log_var).mean(axis=0).sum()
        return self.loss_from_z(DiagonalGaussian.sample(mu, log_var, self.eps_rows), kl_term)

    def loss_from_h(self, h: np.ndarray) -> float:
        probe = self.probe
        return self.loss_from_latents(probe.mu_head.forward(h), probe.log_var_head.forward(h))

    def whole_loss(self) -> float:
        return self.probe.loss(self.x, eps=self.eps, grad=False)["loss"]


# ----- the forward stops ---------------------------------------------------------------


def the_batch(tour: Tour) -> None:
    """Stop 1: ``x (N, D)``, grey levels in [0, 1]."""
    x = tour.x
    tour.guide.stop(
        "The batch",
        f"x: {counted(len(x), 'image')} of {x.shape[1]} pixels, grey levels scaled to [0, 1]",
        "for x in Batches(x_train, batch_size, rng): ...",
        "models.md#vae",
    )
    tour.guide.show("x", x)


def the_encoder(tour: Tour) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stop 2: ``h (N, H)``, then the heads ``mu, log_var (N, d)``; h checked written out."""
    model, x, guide = tour.model, tour.x, tour.guide
    h = model.encoder.forward(x)  # (N, H)
    mu, log_var = model.mu_head.forward(h), model.log_var_head.forward(h)  # (N, d)
    guide.stop(
        "The encoder: q(z|x) = N(mu, diag(exp(log_var)))",
        "h = relu(x W1 + b1);  mu = h Wmu + bmu;  log_var = h Wlv + blv",
        "h = self.encoder.forward(x); mu, log_var = self.mu_head.forward(h), ...",
        "backprop.md#linear",
    )
    guide.show("h", h)
    guide.show("mu", mu)
    guide.show("log_var", log_var)
    guide.say(f"{np.mean(h > 0):.0%} of the {h.size} hidden values are positive (ReLU passes them)")
    first = model.encoder.layers[0].params
    direct = np.maximum(x @ first["W"] + first["b"], 0)  # (N, H)
    guide.check(
        "h is relu(x W1 + b1) written out in NumPy",
        np.array_equal(h, direct),
        f"{np.count_nonzero(h != direct)} of {h.size} entries differ",
    )
    return h, mu, log_var


def the_reparameterisation(tour: Tour, mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """Stop 3: ``z (N, d)``; over :data:`DRAWS` draws, its mean and variance are checked."""
    guide, d = tour.guide, tour.model.latent_dim
    z = DiagonalGaussian.sample(mu, log_var, tour.eps_rows)  # (N, d)
    guide.stop(
        "The reparameterisation: a draw from q(z|x) that gradients can pass through",
        "z = mu + exp(log_var / 2) * eps,  eps ~ N(0, I) drawn before the step",
        "z = DiagonalGaussian.sample(mu, log_var, eps)",
        "backprop.md#reparameterisation",
    )
    guide.show("eps", tour.eps_rows)
    guide.show("z", z)
    many = tour.rng.standard_normal((DRAWS, d))  # (DRAWS, d)
    draws = DiagonalGaussian.sample(
        np.tile(mu[:1], (DRAWS, 1)), np.tile(log_var[:1], (DRAWS, 1)), many
    )  # (DRAWS, d): image 0's z, DRAWS times
    mean_z, variance_z = z_scores(draws, mu[0], np.exp(log_var[0]))  # (d,), (d,)
    worst = max(mean_z.max(), variance_z.max())
    guide.check(
        f"over {DRAWS:,} draws for image 0, z has mean mu and variance exp(log_var)",
        worst < STANDARD_ERRORS,
        f"worst of {2 * d} moments {worst:.1f} standard errors off (bar {STANDARD_ERRORS:g})",
    )
    return z


def the_decoder(tour: Tour, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stop 4: ``logits (N, D)``, ``log p(x|z) (N,)`` and ``dlogits (N, D)``, d log p / d
    logits; log p(x|z) checked against the textbook formula."""
    model, x, guide = tour.model, tour.x, tour.guide
    logits = model.decoder.forward(z)  # (N, D)
    log_px, dlogits = model.likelihood.log_prob_and_grad(x, logits)  # (N,), (N, D)
    guide.stop(
        "The decoder and the reconstruction term: log p(x|z) for Bernoulli pixels",
        "logits = relu(z W3 + b3) W4 + b4;  log p(x|z) = sum_j x_j l_j - softplus(l_j)",
        "out = self.decoder.forward(z); log_px, dout = self.likelihood.log_prob_and_grad(x, out)",
        "backprop.md#bernoulli-log-likelihood",
    )
    guide.show("logits", logits)
    guide.show("log p(x|z)", log_px)
    guide.say(
        f"an untrained decoder's logits are near 0, every pixel a coin toss: "
        f"{x.shape[1]} log 2 = {x.shape[1] * np.log(2):.1f} nats an image"
    )
    p = 1 / (1 + np.exp(-logits))  # (N, D)
    textbook = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=1)  # (N,)
    error = rel_error(log_px, textbook)
    guide.check(
        "it equals sum_j x log p + (1 - x) log(1 - p) with p = sigmoid(l)",
        error < 1e-12,
        f"relative error {error:.1e} (bar 1e-12)",
    )
    return logits, log_px, dlogits


def the_kl(tour: Tour, mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """Stop 5: ``kl_dim (N, d)`` in closed form, checked against a Monte Carlo estimate."""
    guide, n, d = tour.guide, len(tour.x), tour.model.latent_dim
    kl_dim = DiagonalGaussian.kl_per_dim(mu, log_var)  # (N, d)
    kl = kl_dim.sum(axis=1)  # (N,)
    guide.stop(
        "The KL term, in closed form",
        "KL(q(z|x) || N(0, I)) = 0.5 sum_j (mu_j^2 + exp(log_var_j) - 1 - log_var_j)",
        "kl_dim = DiagonalGaussian.kl_per_dim(mu, log_var)",
        "backprop.md#gaussian-kl",
    )
    guide.show("KL", kl)
    # The KL is E_q[log q(z|x) - log p(z)]: estimate it from draws of z for every image.
    z_many = mu + np.exp(log_var / 2) * tour.rng.standard_normal((DRAWS // n, n, d))
    log_ratio = DiagonalGaussian.log_prob(z_many, mu, log_var) - DiagonalGaussian.prior_log_prob(
        z_many
    )  # (DRAWS // N, N)
    standard_error = log_ratio.std(axis=0, ddof=1) / np.sqrt(len(log_ratio))  # (N,)
    worst = np.max(np.abs(log_ratio.mean(axis=0) - kl) / standard_error)
    guide.check(
        f"a Monte Carlo estimate, E_q[log q(z|x) - log p(z)] over {DRAWS // n:,} draws an image",
        worst < STANDARD_ERRORS,
        f"worst of {counted(n, 'image')} {worst:.1f} standard errors off (bar {STANDARD_ERRORS:g})",
    )
    return kl_dim


def the_loss(tour: Tour, log_px: np.ndarray, kl_dim: np.ndarray) -> tuple[float, float]:
    """Stop 6: ``(loss, kl_term)``; the loss checked, to the last bit, against VAE.loss."""
    recon = -log_px  # (N,)
    kl_term = kl_dim.mean(axis=0).sum()
    loss = recon.mean() + kl_term
    tour.guide.stop(
        "The loss: the negative ELBO, averaged over the batch",
        "loss = mean_n [ -log p(x_n|z_n) ] + sum_j mean_n KL_nj",
        "loss = recon_weight * recon.mean() + beta * kl_term   (both weights 1 here)",
        "models.md#vae",
    )
    tour.guide.say(f"reconstruction {recon.mean():.3f} + KL {kl_term:.3f} = loss {loss:.3f} nats")
    reported = tour.whole_loss()
    tour.guide.check(
        "VAE.loss gives the same number",
        reported == loss,
        f"VAE.loss {reported:.17g}, the tour {loss:.17g}",
    )
    return loss, kl_term


# ----- a helper of the Monte Carlo checks ---------------------------------------------


def z_scores(samples: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> tuple:
    """How many standard errors the draws' mean and variance are from ``mean`` and
    ``variance``, per column of ``samples (M, d)``: ``(mean's (d,), variance's (d,))``."""
    m = len(samples)
    mean_error = (samples.mean(axis=0) - mean) / np.sqrt(variance / m)
    # The sample variance of M normals has a relative standard error of sqrt(2 / (M - 1)).
    variance_error = (samples.var(axis=0, ddof=1) / variance - 1) / np.sqrt(2 / (m - 1))
    return np.abs(mean_error), np.abs(variance_error)
