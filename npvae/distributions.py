"""The distributions of a VAE, with the gradients of their log-densities.

* :class:`DiagonalGaussian` is the encoder's q(z|x) = N(mu, diag(exp(log_var))):
  reparameterised sampling, its closed-form KL to the prior N(0, I), and the
  log-densities that importance weights need.
* :class:`Bernoulli` and :class:`Gaussian` are the decoder's p(x|z), computed
  from the decoder's raw output (logits, or means).  Each returns the log
  likelihood per example and its gradient with respect to that output, in one
  pass.

All log-densities are summed over dimensions, one number per example (nats).
Shapes: ``x (N, D)`` data, ``mu, log_var, eps, z (N, d)`` latents.  The
derivations are in ``docs/backprop.md``.
"""

from __future__ import annotations

import numpy as np

from npvae import kernels
from npvae.errors import ConfigError

LOG_2PI = float(np.log(2 * np.pi))


class DiagonalGaussian:
    """q(z|x) = N(mu, diag(exp(log_var))), and its relation to the prior N(0, I).

    Stateless: every method takes the arrays it needs.
    """

    @staticmethod
    def sample(mu: np.ndarray, log_var: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """Reparameterised draw ``z = mu + exp(log_var / 2) * eps``, all ``(N, d)``.

        See ``docs/backprop.md#reparameterisation``.
        """
        return kernels.reparameterize(mu, log_var, eps)

    @staticmethod
    def sample_backward(
        dz: np.ndarray, log_var: np.ndarray, eps: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``dz (N, d) -> (dmu, dlog_var)``, each ``(N, d)``, for fixed ``eps``.

        See ``docs/backprop.md#reparameterisation``.
        """
        return kernels.reparameterize_backward(dz, log_var, eps)

    @staticmethod
    def kl_per_dim(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
        """KL(q ‖ N(0, I)) of each dimension, ``(N, d)``: ``0.5 (mu² + e^lv − 1 − lv)``.

        See ``docs/backprop.md#gaussian-kl``.
        """
        return kernels.gaussian_kl_per_dim(mu, log_var)

    @staticmethod
    def kl_grad(mu: np.ndarray, log_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradients of each dimension's KL: ``(mu, 0.5 (exp(log_var) − 1))``, ``(N, d)``.

        See ``docs/backprop.md#gaussian-kl``.
        """
        return kernels.gaussian_kl_grad(mu, log_var)

    @staticmethod
    def log_prob_of_sample(eps: np.ndarray, log_var: np.ndarray) -> np.ndarray:
        """log q(z|x) at ``z = mu + sigma * eps``, per row: ``(..., d) -> (...)``.

        With ``z`` written through ``eps`` the mean drops out:
        ``log q = −0.5 Σ (eps² + log 2π + log_var)``.
        """
        d = eps.shape[-1]
        return -0.5 * (np.einsum("...j,...j->...", eps, eps) + log_var.sum(-1) + d * LOG_2PI)

    @staticmethod
    def prior_log_prob(z: np.ndarray) -> np.ndarray:
        """log N(z; 0, I) per row, ``(..., d) -> (...)``; its gradient is ``−z``."""
        d = z.shape[-1]
        return -0.5 * (np.einsum("...j,...j->...", z, z) + d * LOG_2PI)

    @staticmethod
    def log_prob(z: np.ndarray, mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
        """log N(z; mu, diag(exp(log_var))) per row, all ``(..., d)`` -> ``(...)``.

        For a ``z`` that is not written through its own ``eps``: a conditional
        prior's density at a draw from somewhere else (the two-layer model's
        p(z1|z2)).  ``−0.5 Σ_j [log 2π + log_var_j + (z_j − mu_j)² e^{−log_var_j}]``.
        See ``docs/models.md#two-stochastic-layers``.
        """
        diff = z - mu
        return -0.5 * (
            np.einsum("...j,...j->...", diff * diff, np.exp(-log_var))
            + log_var.sum(-1)
            + z.shape[-1] * LOG_2PI
        )

    @staticmethod
    def log_prob_and_grad(
        z: np.ndarray, mu: np.ndarray, log_var: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`log_prob` and its gradients, in one pass: ``(log_p, dmu, dlog_var)``.

        ``log_p (...)``; ``dmu = (z − mu) e^{−log_var}`` and
        ``dlog_var = 0.5 ((z − mu)² e^{−log_var} − 1)``, each ``(..., d)``.  The
        gradient with respect to ``z`` is ``−dmu``.
        See ``docs/models.md#two-stochastic-layers``.
        """
        diff = z - mu
        scaled = diff * np.exp(-log_var)  # (z − mu) / sigma²
        squares = diff * scaled  # (z − mu)² / sigma²
        log_p = -0.5 * (squares.sum(-1) + log_var.sum(-1) + z.shape[-1] * LOG_2PI)
        squares -= 1
        squares *= 0.5
        return log_p, scaled, squares


class Bernoulli:
    """p(x|z) = Π Bernoulli(x_j; sigmoid(logit_j)), for data in [0, 1].

    The decoder outputs logits; working in logits keeps the log-likelihood
    finite and exact for any logit (see ``docs/backprop.md#bernoulli-log-likelihood``).
    """

    name = "bernoulli"

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def log_prob(self, x: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """``log p(x|z)`` per row of ``logits (N, D)``: ``(N,)``.

        ``x`` is ``(N, D)``, or ``(n, D)`` for ``N = S n`` sample-major rows (row
        ``i`` is a draw for example ``i mod n``), read in place, not tiled.
        """
        return kernels.bernoulli_log_prob(x, logits)

    def log_prob_and_grad(self, x: np.ndarray, logits: np.ndarray):
        """``(log p (N,), d log p / d logits (N, D))``; the gradient is ``x − sigmoid(logits)``.

        ``x`` is ``(N, D)`` or ``(n, D)``, paired with the rows as in :meth:`log_prob`.
        """
        return kernels.bernoulli_log_prob_and_grad(x, logits)

    def write_grads(self, x: np.ndarray, out: np.ndarray, weight: np.ndarray) -> None:
        """No parameters of its own: nothing to do."""

    def mean(self, logits: np.ndarray) -> np.ndarray:
        """Pixel probabilities ``sigmoid(logits)``, ``(N, D)``."""
        return kernels.sigmoid(logits)

    def zero_grad(self) -> None:
        """No parameters of its own: nothing to do."""


class Gaussian:
    """p(x|z) = N(x; mean, diag(exp(log_var))), for continuous data.

    The decoder outputs the means.  The per-pixel log-variance ``log_var``
    (shape ``(D,)``) is either fixed at ``init_log_var`` or, with
    ``learned=True``, a parameter trained with the rest (then it is in
    ``params`` under ``"log_var"``).

    Notes
    -----
    ``log p = −0.5 Σ_j [log 2π + log_var_j + (x_j − m_j)² e^{−log_var_j}]``;
    ``d log p / d m = (x − m) e^{−log_var}``;
    ``d log p / d log_var = 0.5 [(x − m)² e^{−log_var} − 1]``.
    """

    name = "gaussian"

    def __init__(self, dim: int, *, learned: bool, init_log_var: float, dtype) -> None:
        self.learned = learned
        log_var = np.full(dim, init_log_var, dtype=dtype)
        self.params = {"log_var": log_var} if learned else {}
        self.grads = {"log_var": np.zeros_like(log_var)} if learned else {}
        self._fixed_log_var = log_var

    @property
    def log_var(self) -> np.ndarray:
        """The per-pixel log-variance ``(D,)``: the parameter itself when it is learned.

        Read through ``params`` on every use, since a model may move its parameters
        into one flat array (:meth:`npvae.models.base.Model._collect`).
        """
        return self.params["log_var"] if self.learned else self._fixed_log_var

    @staticmethod
    def _residuals(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """``x − mean``, ``(N, D)``, each row of ``mean`` against its example in ``x``.

        ``x`` is ``(N, D)``, or ``(n, D)`` for ``N = S n`` sample-major rows, as for
        :class:`Bernoulli`: broadcast over the ``S`` draws, not tiled.
        """
        return (x - mean.reshape(-1, *x.shape)).reshape(mean.shape)

    def log_prob(self, x: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """``log p(x|z)`` per row of ``mean (N, D)``: ``(N,)``; ``x`` as for :class:`Bernoulli`."""
        precision = np.exp(-self.log_var)
        sq = self._residuals(x, mean) ** 2
        return -0.5 * (sq @ precision + self.log_var.sum() + x.shape[1] * LOG_2PI)

    def log_prob_and_grad(self, x: np.ndarray, mean: np.ndarray):
        """``(log p (N,), d log p / d mean (N, D))``; ``x`` as for :meth:`log_prob`.

        See ``docs/backprop.md#gaussian-likelihood``.
        """
        precision = np.exp(-self.log_var)
        diff = self._residuals(x, mean)
        log_p = -0.5 * ((diff * diff) @ precision + self.log_var.sum() + x.shape[1] * LOG_2PI)
        return log_p, diff * precision

    def write_grads(self, x: np.ndarray, mean: np.ndarray, weight: np.ndarray) -> None:
        """Write ``Σ_n weight_n · d log p_n / d log_var`` into ``grads["log_var"]``, as a
        layer's ``backward`` writes its own.

        See ``docs/backprop.md#gaussian-likelihood``.

        ``weight (N,)`` is d(loss)/d(log p_n) for each row of ``mean (N, D)``; ``x`` as
        for :meth:`log_prob`.
        """
        if not self.learned:
            return
        diff = self._residuals(x, mean)
        dlog_var = 0.5 * (diff * diff * np.exp(-self.log_var) - 1)
        np.matmul(weight, dlog_var, out=self.grads["log_var"])

    def mean(self, mean: np.ndarray) -> np.ndarray:
        """The decoder's output is already the mean."""
        return mean

    def zero_grad(self) -> None:
        for grad in self.grads.values():
            grad.fill(0)


def make_likelihood(name: str, dim: int, *, learned_var: bool, init_log_var: float, dtype):
    """``"bernoulli"`` or ``"gaussian"`` as a likelihood object for ``dim`` pixels."""
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(dim, learned=learned_var, init_log_var=init_log_var, dtype=dtype)
    raise ConfigError(f"unknown likelihood {name!r}: use 'bernoulli' or 'gaussian'")
