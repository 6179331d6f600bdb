"""The variational autoencoder (Kingma & Welling, 2014) and its k-sample bound, the IWAE.

The encoder maps ``x (N, D)`` through an MLP to a hidden ``h`` and from there
to two heads, ``mu`` and ``log_var`` ``(N, d)``: the mean and log-variance of
q(z|x) = N(mu, diag(exp(log_var))).  A code is drawn as
``z = mu + exp(log_var / 2) * eps`` with ``eps ~ N(0, I)`` (the
reparameterisation), and the decoder maps ``z`` to the parameters of p(x|z):
Bernoulli logits, or Gaussian means.  Derivations: ``docs/models.md#vae`` and
``docs/models.md#iwae``.

How to read it: ``VAE._forward`` runs encoder, sampler and decoder;
``VAE._backward`` takes the same path back to every parameter; each model's
``loss`` computes its terms and the gradients they send into that path.  The
VAE and the IWAE share the two passes and differ only in their ``loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npvae import kernels
from npvae.distributions import DiagonalGaussian, make_likelihood
from npvae.errors import ConfigError
from npvae.layers import Linear
from npvae.models.base import Model, register
from npvae.network import MLP


@dataclass
class _Samples:
    """One forward pass through encoder, sampler and decoder, for ``S`` samples per example.

    Rows of the sample arrays are ordered sample-major: row ``s * N + n`` is
    sample ``s`` of example ``n``.
    """

    mu: np.ndarray  # (N, d)
    log_var: np.ndarray  # (N, d)
    eps: np.ndarray  # (S * N, d)
    log_var_rows: np.ndarray  # (S * N, d): log_var repeated for each sample
    x_rows: np.ndarray  # (S * N, D): x repeated for each sample
    z: np.ndarray  # (S * N, d)
    out: np.ndarray  # (S * N, D): logits or means
    log_px: np.ndarray  # (S * N,): log p(x | z)
    dlog_px: np.ndarray | None  # (S * N, D): d log p(x|z) / d out, when asked for


def _check_common(input_dim, hidden, latent_dim) -> None:
    if int(input_dim) < 1 or int(latent_dim) < 1:
        raise ConfigError(
            f"input and latent sizes must be positive, got {input_dim} and {latent_dim}"
        )
    if len(hidden) == 0 or min(hidden) < 1:
        raise ConfigError(f"hidden sizes must be one or more positive widths, got {list(hidden)}")


@register
class VAE(Model):
    """Variational autoencoder with a Gaussian encoder and a Bernoulli or Gaussian decoder.

    Parameters
    ----------
    input_dim : int
        Pixels per example, D.
    hidden : sequence of int
        Hidden widths of the encoder; the decoder mirrors them.
    latent_dim : int
        d, the size of z.
    activation : str
        Hidden activation (``npvae.layers.ACTIVATIONS``).
    likelihood : {"bernoulli", "gaussian"}
        p(x|z).  Bernoulli for binary (or [0, 1]) pixels; Gaussian for continuous data.
    learned_var, init_log_var :
        Gaussian only: learn a per-pixel log-variance, or hold it at ``init_log_var``.
    beta : float
        Weight of the KL term (1 gives the ELBO; other values the beta-VAE).
    warmup_steps : int
        The KL weight rises linearly from 0 to ``beta`` over this many steps (0: off).
    free_bits : float
        A floor, in nats, on each dimension's batch-averaged KL (Kingma et al.,
        2016): dimensions under it get no KL gradient.  0 turns it off.
    n_samples : int
        L, the samples of z per example in the Monte Carlo reconstruction term.
    init : {"glorot", "he"}
        Initial weights of every layer.  Glorot by default: on MNIST the classic
        784-400-20 ReLU VAE reached 105.6 nats after 10 epochs from Glorot and
        106.1 from He (``benchmarks/README.md``).
    dtype : {"float32", "float64"}
    seed : int
        Seed of the initial weights.
    """

    kind = "vae"

    def __init__(
        self,
        input_dim: int = 784,
        hidden=(400,),
        latent_dim: int = 20,
        activation: str = "relu",
        likelihood: str = "bernoulli",
        learned_var: bool = False,
        init_log_var: float = 0.0,
        beta: float = 1.0,
        warmup_steps: int = 0,
        free_bits: float = 0.0,
        n_samples: int = 1,
        init: str = "glorot",
        dtype: str = "float32",
        seed: int = 0,
    ) -> None:
        if beta < 0 or warmup_steps < 0 or free_bits < 0:
            raise ConfigError("beta, warmup_steps and free_bits must be zero or more")
        if n_samples < 1:
            raise ConfigError(f"n_samples must be at least 1, got {n_samples}")
        config = dict(locals())
        config.pop("self")
        self._build(config)

    def _build(self, config: dict) -> None:
        """Make the encoder, the two heads, the decoder and the likelihood from ``config``."""
        _check_common(config["input_dim"], config["hidden"], config["latent_dim"])
        config["hidden"] = [int(width) for width in config["hidden"]]
        Model.__init__(self, config)
        input_dim, hidden, latent_dim = config["input_dim"], config["hidden"], config["latent_dim"]
        activation, dtype, init = config["activation"], self.dtype, config.get("init", "glorot")
        rng = np.random.default_rng(config["seed"])
        self.encoder = MLP(
            [input_dim, *hidden],
            activation,
            out_activation=activation,
            rng=rng,
            dtype=dtype,
            init=init,
            input_grad=False,
        )
        self.mu_head = Linear(hidden[-1], latent_dim, init=init, rng=rng, dtype=dtype)
        self.log_var_head = Linear(hidden[-1], latent_dim, init=init, rng=rng, dtype=dtype)
        self.decoder = MLP(
            [latent_dim, *hidden[::-1], input_dim], activation, rng=rng, dtype=dtype, init=init
        )
        self.likelihood = make_likelihood(
            config["likelihood"],
            input_dim,
            learned_var=config["learned_var"],
            init_log_var=config["init_log_var"],
            dtype=dtype,
        )
        self._collect(
            encoder=self.encoder,
            mu_head=self.mu_head,
            log_var_head=self.log_var_head,
            decoder=self.decoder,
            likelihood=self.likelihood,
        )

    @property
    def latent_dim(self) -> int:
        return self.config["latent_dim"]

    # ----- the verbs ---------------------------------------------------------------

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x (N, D) -> (mu, log_var)``, each ``(N, d)``: the parameters of q(z|x)."""
        h = self.encoder.forward(self._check_input(x))
        return self.mu_head.forward(h), self.log_var_head.forward(h)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """``z (N, d) -> (N, D)``: pixel probabilities (Bernoulli) or means (Gaussian)."""
        z = self._check_latent(z, self.latent_dim)
        return self.likelihood.mean(self.decoder.forward(z))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decode the posterior mean: ``x (N, D) -> (N, D)``, deterministic."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws from the model: ``z ~ N(0, I)``, decoded to ``(n, D)`` means."""
        return self.decode(rng.standard_normal((n, self.latent_dim), dtype=self.dtype))

    def interpolate(self, x_a: np.ndarray, x_b: np.ndarray, steps: int = 10) -> np.ndarray:
        """Decode ``steps`` evenly spaced points between the posterior means of two images.

        ``x_a, x_b (D,)`` -> ``(steps, D)``; the first row decodes ``x_a``'s code.
        """
        mu, _ = self.encode(np.stack([np.ravel(x_a), np.ravel(x_b)]).astype(self.dtype))
        t = np.linspace(0, 1, steps, dtype=self.dtype)[:, None]
        return self.decode((1 - t) * mu[0] + t * mu[1])

    def beta_at(self, step: int | None) -> float:
        """The KL weight at training step ``step`` (None: after warm-up)."""
        beta, warmup = self.config["beta"], self.config["warmup_steps"]
        if step is None or warmup == 0:
            return float(beta)
        return float(beta) * min(1.0, step / warmup)

    # ----- the objective -----------------------------------------------------------

    def _forward(self, x: np.ndarray, eps: np.ndarray, grad: bool) -> _Samples:
        """Encoder, sampler and decoder for ``eps (S, N, d)``; caches for ``backward``."""
        n, d = len(x), self.latent_dim
        if eps.ndim != 3 or eps.shape[1:] != (n, d) or eps.dtype != self.dtype:
            raise ConfigError(f"eps must be {self.dtype} (S, {n}, {d}), got {eps.dtype}{eps.shape}")
        n_samples = eps.shape[0]
        h = self.encoder.forward(x)
        mu, log_var = self.mu_head.forward(h), self.log_var_head.forward(h)
        eps_rows = eps.reshape(n_samples * n, d)
        if n_samples == 1:
            mu_rows, log_var_rows, x_rows = mu, log_var, x
        else:
            mu_rows, log_var_rows = np.tile(mu, (n_samples, 1)), np.tile(log_var, (n_samples, 1))
            x_rows = np.tile(x, (n_samples, 1))
        z = DiagonalGaussian.sample(mu_rows, log_var_rows, eps_rows)
        out = self.decoder.forward(z)
        if grad:
            log_px, dlog_px = self.likelihood.log_prob_and_grad(x_rows, out)
        else:
            log_px, dlog_px = self.likelihood.log_prob(x_rows, out), None
        return _Samples(mu, log_var, eps_rows, log_var_rows, x_rows, z, out, log_px, dlog_px)

    def _backward(self, s: _Samples, dlog_px: np.ndarray, dz_extra, dmu, dlog_var) -> None:
        """Backpropagate from the sample level to every parameter.

        ``dlog_px (S*N,)`` is d(loss)/d(log p(x|z)) per row; ``dz_extra (S*N, d)``
        or None is any gradient reaching ``z`` other than through the decoder;
        ``dmu``, ``dlog_var (N, d)`` are the gradients reaching the encoder's heads
        directly (from the KL, or log q).
        """
        n = len(s.mu)
        dout = s.dlog_px
        dout *= dlog_px[:, None]  # in place: the kernel's fresh array is ours to reuse
        self.likelihood.accumulate_grads(s.x_rows, s.out, dlog_px)
        dz = self.decoder.backward(dout)
        if dz_extra is not None:
            dz += dz_extra
        dmu_rows, dlog_var_rows = DiagonalGaussian.sample_backward(dz, s.log_var_rows, s.eps)
        dmu += dmu_rows.reshape(-1, n, self.latent_dim).sum(axis=0)
        dlog_var += dlog_var_rows.reshape(-1, n, self.latent_dim).sum(axis=0)
        dh = self.mu_head.backward(dmu)
        dh += self.log_var_head.backward(dlog_var)
        self.encoder.backward(dh)

    def loss(
        self,
        x: np.ndarray,
        rng: np.random.Generator | None = None,
        *,
        eps: np.ndarray | None = None,
        step: int | None = None,
        grad: bool = True,
    ) -> dict:
        """The negative ELBO, averaged over the batch, and (if ``grad``) its gradients.

        ``loss = mean_n [ −(1/L) Σ_l log p(x_n | z_nl) ] + beta_t · Σ_j max(λ, mean_n KL_nj)``

        with ``z_nl = mu_n + exp(log_var_n / 2) * eps_nl``, the KL in closed form,
        ``beta_t`` the warmed-up weight and λ the free-bits floor (0: no floor).

        Parameters
        ----------
        x : ndarray (N, D), the model's dtype
        rng : numpy.random.Generator
            Draws ``eps``; or pass ``eps (L, N, d)`` itself to hold the noise fixed.
        step : int, optional
            The training step, for the KL warm-up (None: fully warmed up).
        grad : bool
            Fill ``self.grads`` with the gradient of ``loss`` (they are zeroed first).

        Returns
        -------
        dict with floats ``loss``, ``recon``, ``kl``, ``elbo`` (per example, nats;
        ``elbo = −(recon + kl)`` whatever beta is), ``beta``, and arrays
        ``recon_per_example (N,)``, ``kl_per_example (N,)``, ``kl_per_dim (d,)``.
        """
        x = self._check_input(x)
        n, d = x.shape[0], self.latent_dim
        if eps is None:
            eps = self._noise(rng, (self.config["n_samples"], n, d))
        s = self._forward(x, eps, grad)
        n_samples = eps.shape[0]

        recon = -s.log_px.reshape(n_samples, n).mean(axis=0)  # (N,)
        kl_dim = DiagonalGaussian.kl_per_dim(s.mu, s.log_var)  # (N, d)
        kl_dim_mean = kl_dim.mean(axis=0)  # (d,)
        floor = self.config["free_bits"]
        kl_term = np.maximum(kl_dim_mean, floor).sum() if floor > 0 else kl_dim_mean.sum()
        beta = self.beta_at(step)
        loss = recon.mean() + beta * kl_term
        kl = kl_dim.sum(axis=1)
        report = {
            "loss": float(loss),
            "recon": float(recon.mean()),
            "kl": float(kl.mean()),
            "elbo": float(-(recon + kl).mean()),
            "beta": beta,
            "recon_per_example": recon,
            "kl_per_example": kl,
            "kl_per_dim": kl_dim_mean,
        }
        if not grad:
            return report

        self.zero_grad()
        # Reconstruction: d loss / d log p(x|z_nl) = −1 / (L N) for every row.
        dlog_px = np.full(n_samples * n, -1.0 / (n_samples * n), dtype=self.dtype)
        # KL: each dimension above its floor gets beta / N times its gradient.
        weight = np.full(self.latent_dim, beta / n, dtype=self.dtype)  # (d,)
        if floor > 0:
            weight[kl_dim_mean <= floor] = 0
        dmu_kl, dlog_var_kl = DiagonalGaussian.kl_grad(s.mu, s.log_var)
        self._backward(s, dlog_px, None, dmu_kl * weight, dlog_var_kl * weight)
        return report

    def log_importance_weights(self, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """``log w = log p(x|z) + log p(z) − log q(z|x)`` for ``eps (S, N, d)``: ``(S, N)``.

        No gradients; the evaluation streams these for the importance-sampled
        log-likelihood ``log (1/S) Σ_s w_s``.
        """
        x = self._check_input(x)
        s = self._forward(x, eps, grad=False)
        log_w = s.log_px + DiagonalGaussian.prior_log_prob(s.z)
        log_w -= DiagonalGaussian.log_prob_of_sample(s.eps, s.log_var_rows)
        return log_w.reshape(eps.shape[0], len(x))


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
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
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
        n, d = x.shape[0], self.latent_dim
        if eps is None:
            eps = self._noise(rng, (self.config["k"], n, d))
        k = eps.shape[0]
        s = self._forward(x, eps, grad)

        log_pz = DiagonalGaussian.prior_log_prob(s.z)  # (k N,)
        log_qz = DiagonalGaussian.log_prob_of_sample(s.eps, s.log_var_rows)  # (k N,)
        log_w = (s.log_px + log_pz - log_qz).reshape(k, n)
        bound = kernels.logsumexp(np.ascontiguousarray(log_w.T)) - self.dtype.type(np.log(k))

        recon = -s.log_px.reshape(k, n).mean(axis=0)
        kl_dim = DiagonalGaussian.kl_per_dim(s.mu, s.log_var)
        kl = kl_dim.sum(axis=1)
        report = {
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
        if not grad:
            return report

        self.zero_grad()
        # d loss / d log w_i = −w̃_i / N, with w̃ the normalised weights: a softmax over the
        # k samples of each example, so that they sum to 1 to the last bit of the dtype.
        normalised = np.exp(log_w - log_w.max(axis=0))  # (k, N)
        normalised *= self.dtype.type(-1 / n) / normalised.sum(axis=0)
        dlog_w = normalised.reshape(k * n)
        # log w_i = log p(x|z_i) + log p(z_i) − log q(z_i|x); with z = mu + sigma eps:
        # d log p(z)/dz = −z, and −log q = 0.5 Σ (eps² + log 2π + log_var) gives +0.5 per log_var.
        dz_prior = dlog_w[:, None] * -s.z
        dlog_var_q = 0.5 * dlog_w.reshape(k, n).sum(axis=0)[:, None]
        dmu = np.zeros_like(s.mu)
        dlog_var = np.broadcast_to(dlog_var_q, s.log_var.shape).astype(self.dtype)
        self._backward(s, dlog_w, dz_prior, dmu, dlog_var)
        return report
