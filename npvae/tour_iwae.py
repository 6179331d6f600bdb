"""The IWAE's forward stops of ``python -m npvae.tour`` (13 to 16): the k-sample bound.

After the VAE's step the tour takes the same network, with the weights it started
from, as an IWAE: k draws of z for each image, their importance weights ``w_i``,
the bound ``L_k = log (1/k) Σ_i w_i``, and its gradient, in which each draw's
gradient counts by its normalised weight ``w̃_i``, not by ``1/k``.  Each stop
computes one stage of ``IWAE.loss`` with the model's own layers and kernels, prints
it through the guide, and checks it as the VAE's stops do (``npvae/tour_stops.py``):
a forward quantity against a second computation, a backward one against finite
differences.  :func:`npvae.tour.walk_iwae` calls them in order; the backward stops
are in ``npvae/tour_iwae_backward.py``.  Derivation: ``docs/models.md#iwae``.
"""

from __future__ import annotations

import numpy as np

from npvae import kernels
from npvae.distributions import DiagonalGaussian
from npvae.gradcheck import rel_error
from npvae.models import IWAE
from npvae.models.vae import repeat_rows
from npvae.tour_stops import DRAWS, STANDARD_ERRORS, Tour, z_scores
from npvae.validate import counted


class IwaeTour(Tour):
    """What the IWAE's stops read: as :class:`npvae.tour_stops.Tour`, with ``eps (k, N, d)``.

    ``loss_from_*`` is the negative bound as a function of each array the backward
    pass meets, with the terms of ``log w`` that do not depend on it held fixed.
    """

    model: IWAE

    @property
    def k(self) -> int:
        return len(self.eps)

    def loss_from_log_w(self, log_w: np.ndarray) -> float:
        """``-mean_n L_k(x_n)`` from ``log_w (k, N)``, as ``IWAE.loss`` computes it."""
        bound = kernels.logsumexp(np.ascontiguousarray(log_w.T)) - np.log(len(log_w))
        return float(-bound.mean())

    def loss_from_logits(self, logits: np.ndarray, log_prior_ratio: np.ndarray) -> float:
        """``log_prior_ratio (k N,)`` is ``log p(z) - log q(z|x)``, held fixed."""
        log_px = self.model.likelihood.log_prob(self.x, logits)  # (k N,)
        return self.loss_from_log_w((log_px + log_prior_ratio).reshape(self.k, len(self.x)))

    def loss_from_z(self, z: np.ndarray, log_qz: np.ndarray) -> float:
        """``log_qz (k N,)`` is held fixed: written through eps, it does not depend on z."""
        log_prior_ratio = DiagonalGaussian.prior_log_prob(z) - log_qz
        return self.loss_from_logits(self.probe.decoder.forward(z), log_prior_ratio)

    def loss_from_latents(self, mu: np.ndarray, log_var: np.ndarray) -> float:
        log_var_rows = repeat_rows(log_var, self.k)  # (k N, d)
        z = DiagonalGaussian.sample(repeat_rows(mu, self.k), log_var_rows, self.eps_rows)
        return self.loss_from_z(z, DiagonalGaussian.log_prob_of_sample(self.eps_rows, log_var_rows))


# ----- the forward stops ---------------------------------------------------------------


def the_k_draws(tour: IwaeTour) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stop 13: the encoder as in the VAE, then ``z (k N, d)``, k draws for each image;
    their layout written out, and the moments of many draws laid out the same way.

    Returns ``(mu (N, d), log_var (N, d), z (k N, d))``.
    """
    model, guide, k, n = tour.model, tour.guide, tour.k, len(tour.x)
    h = model.encoder.forward(tour.x)  # (N, H)
    mu, log_var = model.mu_head.forward(h), model.log_var_head.forward(h)  # (N, d)
    z = DiagonalGaussian.sample(repeat_rows(mu, k), repeat_rows(log_var, k), tour.eps_rows)
    guide.stop(
        "The IWAE: the same encoder, and k draws of z for each image",
        f"z_i = mu + exp(log_var / 2) * eps_i,  i = 1..{k};  row i N + n of z is draw i of x_n",
        "z = DiagonalGaussian.sample(repeat_rows(mu, k), log_var_rows, eps_rows)   # (k N, d)",
        "models.md#iwae",
    )
    guide.show("eps", tour.eps)
    guide.show("z", z)
    written = (mu + np.exp(log_var / 2) * tour.eps).reshape(k * n, -1)  # (k N, d)
    error = rel_error(z, written)
    guide.check(
        "row i N + n is mu_n + exp(log_var_n / 2) eps_in, written out in NumPy",
        error < 1e-14,
        f"relative error {error:.1e} (bar 1e-14)",
    )
    images = [0, n - 1] if n > 1 else [0]
    many = len(images) * (DRAWS // len(images))
    draws = DiagonalGaussian.sample(
        repeat_rows(mu[images], many // len(images)),
        repeat_rows(log_var[images], many // len(images)),
        tour.rng.standard_normal((many, model.latent_dim)),
    ).reshape(-1, len(images), model.latent_dim)  # (draws an image, images, d)
    worst = max(
        max(score.max() for score in z_scores(draws[:, j], mu[i], np.exp(log_var[i])))
        for j, i in enumerate(images)
    )
    names = " and ".join(f"x_{i}" for i in images)
    guide.check(
        f"over {many:,} draws laid out so, those of {names} have mean mu and variance exp(log_var)",
        worst < STANDARD_ERRORS,
        f"worst of {2 * len(images) * model.latent_dim} moments {worst:.1f} standard errors "
        f"off (bar {STANDARD_ERRORS:g})",
    )
    return mu, log_var, z


def the_log_weights(tour: IwaeTour, mu, log_var, z) -> tuple[np.ndarray, ...]:
    """Stop 14: ``log_w (k, N)``, each draw's log importance weight; its ``log q`` written
    out, and the whole of it against the evaluator's ``log_importance_weights``.

    Returns ``(logits (k N, D), dlogits (k N, D), log_qz (k N,), log_w (k, N))``.
    """
    model, guide, k, n = tour.model, tour.guide, tour.k, len(tour.x)
    logits = model.decoder.forward(z)  # (k N, D)
    log_px, dlogits = model.likelihood.log_prob_and_grad(tour.x, logits)  # (k N,), (k N, D)
    log_pz = DiagonalGaussian.prior_log_prob(z)  # (k N,)
    log_var_rows = repeat_rows(log_var, k)  # (k N, d)
    log_qz = DiagonalGaussian.log_prob_of_sample(tour.eps_rows, log_var_rows)  # (k N,)
    log_w = (log_px + log_pz - log_qz).reshape(k, n)
    guide.stop(
        "The log importance weights: how well a draw explains x, against how likely q made it",
        "log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),  "
        "log q = -0.5 sum_j (eps_j^2 + log 2 pi + log_var_j)",
        "log_w = (log_px + log_pz - log_qz).reshape(k, n)",
        "models.md#iwae",
    )
    guide.show("log p(x|z)", log_px)
    guide.show("log w", log_w)
    guide.say(
        f"their mean, {log_w.mean():.3f} nats, estimates the ELBO: stop 5's KL, sampled here "
        "as E_q[log q(z|x) - log p(z)]"
    )
    diff = z - repeat_rows(mu, k)  # (k N, d)
    density = -0.5 * np.sum(diff**2 / np.exp(log_var_rows) + np.log(2 * np.pi) + log_var_rows, 1)
    error = rel_error(log_qz, density)
    guide.check(
        "log q from eps equals the density at z, -0.5 sum_j ((z - mu)^2 / exp(log_var) "
        "+ log 2 pi + log_var)",
        error < 1e-12,
        f"relative error {error:.1e} (bar 1e-12)",
    )
    evaluated = tour.probe.log_importance_weights(tour.x, tour.eps)  # (k, N)
    error = rel_error(log_w, evaluated)
    guide.check(
        "IWAE.log_importance_weights, the evaluator's path (z broadcast, not tiled), agrees",
        error < 1e-12,
        f"relative error {error:.1e} (bar 1e-12)",
    )
    return logits, dlogits, log_qz, log_w


def the_bound(tour: IwaeTour, log_w: np.ndarray) -> np.ndarray:
    """Stop 15: ``bound (N,)``, ``L_k = log (1/k) Σ_i w_i`` by log-sum-exp; checked against
    the weights' mean taken by hand, against its place between their mean and maximum
    in log space, and against ``IWAE.loss``."""
    guide, k = tour.guide, tour.k
    bound = kernels.logsumexp(np.ascontiguousarray(log_w.T)) - np.log(k)  # (N,)
    guide.stop(
        "The bound: the log of the mean importance weight, in log space",
        "L_k = log (1/k) sum_i w_i = logsumexp_i(log w_i) - log k;  loss = -mean_n L_k(x_n)",
        "bound = kernels.logsumexp(log_w.T) - log(k)",
        "models.md#iwae",
    )
    guide.show("L_k", bound)
    guide.say(
        f"over the batch, L_k {bound.mean():.3f} against mean_i log w_i {log_w.mean():.3f} "
        f"nats: {bound.mean() - log_w.mean():.3f} tighter; in expectation ELBO <= L_k <= log p(x)"
    )
    # An untrained decoder makes every pixel about a coin toss, log w about -D log 2 = -543:
    # w = e^-543 = 1e-236 is small, but float64 holds it (down to 1e-308), so no shift.
    by_hand = np.log(np.mean(np.exp(log_w), axis=0))  # (N,)
    error = rel_error(bound, by_hand)
    guide.check(
        "it equals log((1/k) sum_i w_i), w_i = exp(log w_i), taken by hand in NumPy",
        error < 1e-12,
        f"relative error {error:.1e} (bar 1e-12; the smallest w is {np.exp(log_w).min():.1e})",
    )
    # log-mean-exp lies between the mean and the maximum of its arguments: a + log k in
    # place of - log k would leave the maximum behind for any k > 1.
    slack = 1e-12 * np.abs(log_w).max()
    below = np.count_nonzero(bound < log_w.mean(axis=0) - slack)
    above = np.count_nonzero(bound > log_w.max(axis=0) + slack)
    guide.check(
        "for every image, mean_i log w_i <= L_k <= max_i log w_i",
        below + above == 0,
        f"{below} below the mean, {above} above the maximum, of {counted(len(bound), 'image')}",
    )
    loss = float(-bound.mean())
    reported = tour.probe.loss(tour.x, eps=tour.eps, grad=False)["loss"]
    guide.check(
        "IWAE.loss gives the same number",
        reported == loss,
        f"IWAE.loss {reported:.17g}, the tour {loss:.17g}",
    )
    return bound


def the_normalised_weights(tour: IwaeTour, log_w: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Stop 16: ``w̃ (k, N)``, each image's weights over their sum: a softmax over its k
    draws; checked to sum to 1, and against ``w_i / (k exp(L_k))``, from the bound."""
    guide, k = tour.guide, tour.k
    shifted = np.exp(log_w - log_w.max(axis=0))  # (k, N): w_i / max_j w_j
    w_tilde = shifted / shifted.sum(axis=0)  # (k, N)
    guide.stop(
        "The normalised importance weights: how much each draw counts",
        "w~_i = w_i / sum_j w_j = softmax_i(log w_i),  taken as exp(log w_i - max_j log w_j) "
        "/ its sum",
        "normalised = np.exp(log_w - log_w.max(axis=0))   (then divided by its column sums)",
        "backprop.md#log-sum-exp",
    )
    guide.show("w~", w_tilde)
    effective = 1 / np.sum(w_tilde**2, axis=0)  # (N,)
    guide.say(
        f"an image's heaviest draw carries {w_tilde.max(axis=0).mean():.0%} of its weight on "
        f"average; effective draws 1 / sum_i w~_i^2: {effective.mean():.2f} of k = {k}"
    )
    worst = float(np.abs(w_tilde.sum(axis=0) - 1).max())
    guide.check(
        "each image's k weights sum to 1",
        worst < 1e-12,
        f"worst |sum - 1| {worst:.1e} (bar 1e-12)",
    )
    from_bound = np.exp(log_w - np.log(k) - bound)  # (k, N)
    error = rel_error(w_tilde, from_bound)
    guide.check(
        "they equal w_i / (k exp(L_k)) = exp(log w_i - log k - L_k), from the bound",
        error < 1e-10,
        f"relative error {error:.1e} (bar 1e-10)",
    )
    return w_tilde
