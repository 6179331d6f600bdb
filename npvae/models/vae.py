"""The variational autoencoder (Kingma & Welling, 2014).

The encoder maps ``x (N, D)`` through an MLP to a hidden ``h`` and from there
to two heads, ``mu`` and ``log_var`` ``(N, d)``: the mean and log-variance of
q(z|x) = N(mu, diag(exp(log_var))).  A code is drawn as
``z = mu + exp(log_var / 2) * eps`` with ``eps ~ N(0, I)`` (the
reparameterisation), and the decoder maps ``z`` to the parameters of p(x|z):
Bernoulli logits, or Gaussian means.  Derivation: ``docs/models.md#vae``.

How to read it: ``VAE.loss`` is the whole story in one method, top to bottom:
the forward pass (encoder, sampler, decoder), the loss terms, then the backward
pass along the same path in reverse to every parameter.  The IWAE
(``npvae/models/iwae.py``) takes the same forward path and differs in its terms
and in the gradients those terms send back.
"""

from __future__ import annotations

import numpy as np

from npvae.distributions import DiagonalGaussian, make_likelihood
from npvae.errors import ConfigError
from npvae.layers import Linear
from npvae.models.base import Model, mlp_parameter_count, register
from npvae.network import MLP
from npvae.validate import check_range, check_sizes


def repeat_rows(array: np.ndarray, times: int) -> np.ndarray:
    """``(N, k) -> (times * N, k)``: one row per sample, sample-major (row ``s N + n``)."""
    return array if times == 1 else np.tile(array, (times, 1))


def fold_rows(rows: np.ndarray, n: int) -> np.ndarray:
    """``(S * N, k) -> (N, k)``: the sum over each example's samples; undoes :func:`repeat_rows`."""
    return rows.reshape(-1, n, rows.shape[1]).sum(axis=0)


class PosteriorMeanVerbs:
    """``reconstruct`` and ``interpolate`` for a model whose ``encode`` gives ``(mu, log_var)``
    and whose ``decode`` takes codes shaped like ``mu``: both decode posterior means."""

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decode the posterior mean: ``x (N, D) -> (N, D)``, deterministic."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    def interpolate(self, x_a: np.ndarray, x_b: np.ndarray, steps: int = 10) -> np.ndarray:
        """Decode ``steps`` evenly spaced points between the posterior means of two images.

        ``x_a, x_b (D,)`` -> ``(steps, D)``; the first row decodes ``x_a``'s code.
        """
        mu, _ = self.encode(np.stack([np.ravel(x_a), np.ravel(x_b)]).astype(self.dtype))
        t = np.linspace(0, 1, steps, dtype=self.dtype)[:, None]
        return self.decode((1 - t) * mu[0] + t * mu[1])


@register
class VAE(PosteriorMeanVerbs, Model):
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
    recon_weight : float
        Weight of the reconstruction term (1 gives the ELBO).  With 0 only the
        KL is trained, which ``python -m npvae.figures compare`` uses to show
        every code collapsing onto the prior; not a training flag.
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
        recon_weight: float = 1.0,
    ) -> None:
        if beta < 0 or warmup_steps < 0 or free_bits < 0 or recon_weight < 0:
            raise ConfigError("beta, warmup_steps, free_bits and recon_weight must be zero or more")
        check_range("samples", n_samples, "n_samples")
        config = dict(locals())
        config.pop("self")
        self._build(config)

    def _build(self, config: dict) -> None:
        """Make the encoder, the two heads, the decoder and the likelihood from ``config``."""
        check_sizes(config["input_dim"], config["hidden"], config["latent_dim"])
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

    @classmethod
    def parameter_count(cls, config: dict) -> int:
        input_dim, hidden, latent_dim = config["input_dim"], config["hidden"], config["latent_dim"]
        heads = 2 * (hidden[-1] * latent_dim + latent_dim) if hidden else 0
        learned = config["likelihood"] == "gaussian" and config["learned_var"]
        return (
            mlp_parameter_count([input_dim, *hidden])
            + heads
            + mlp_parameter_count([latent_dim, *hidden[::-1], input_dim])
            + (input_dim if learned else 0)
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

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws from the model: ``z ~ N(0, I)``, decoded to ``(n, D)`` means."""
        return self.decode(rng.standard_normal((n, self.latent_dim), dtype=self.dtype))

    def beta_at(self, step: int | None) -> float:
        """The KL weight at training step ``step`` (None: after warm-up)."""
        beta, warmup = self.config["beta"], self.config["warmup_steps"]
        if step is None or warmup == 0:
            return float(beta)
        return float(beta) * min(1.0, step / warmup)

    # ----- the objective -----------------------------------------------------------

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

        ``x (N, D)`` in the model's dtype; ``rng`` draws ``eps (L, N, d)``, or pass ``eps``
        to hold the noise fixed; ``step`` sets the KL warm-up (None: fully warmed up);
        ``grad`` fills ``self.grads``.  The objective and its gradient: ``docs/models.md#vae``.

        Returns a dict of floats ``loss``, ``recon``, ``kl``, ``elbo`` (per example, nats;
        ``elbo = −(recon + kl)`` whatever beta is), ``beta``, and arrays
        ``recon_per_example (N,)``, ``kl_per_example (N,)``, ``kl_per_dim (d,)``.
        """
        x = self._check_input(x)
        n = len(x)
        eps = self._eps(eps, rng, self.config["n_samples"], n)
        n_samples = len(eps)  # L

        # Forward: q(z|x), L draws of z for each example, p(x|z).  The draws are rows,
        # sample-major: row l N + n is draw l of example n.
        h = self.encoder.forward(x)
        mu, log_var = self.mu_head.forward(h), self.log_var_head.forward(h)  # (N, d)
        log_var_rows = repeat_rows(log_var, n_samples)
        eps_rows = eps.reshape(n_samples * n, self.latent_dim)
        z = DiagonalGaussian.sample(repeat_rows(mu, n_samples), log_var_rows, eps_rows)  # (L N, d)
        out = self.decoder.forward(z)  # (L N, D): logits, or means
        # x (N, D) is paired with the L N rows of out by the likelihood, not tiled L times.
        if grad:
            log_px, dout = self.likelihood.log_prob_and_grad(x, out)  # dout: d log p / d out
        else:
            log_px = self.likelihood.log_prob(x, out)  # (L N,)

        # The loss: reconstruction averaged over the draws, KL in closed form.
        recon = -log_px.reshape(n_samples, n).mean(axis=0)  # (N,)
        kl_dim = DiagonalGaussian.kl_per_dim(mu, log_var)  # (N, d)
        kl_dim_mean = kl_dim.mean(axis=0)  # (d,)
        floor = self.config["free_bits"]
        kl_term = np.maximum(kl_dim_mean, floor).sum() if floor > 0 else kl_dim_mean.sum()
        beta, recon_weight = self.beta_at(step), self.config["recon_weight"]
        loss = recon_weight * recon.mean() + beta * kl_term
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

        # Backward: the same path in reverse, each part writing its own gradients once.
        # d loss / d log p(x|z) is −r / (L N) for every row; d loss / d KL_j is beta / N
        # for each dimension above its free-bits floor.
        n_rows = n_samples * n
        per_row = np.full(n_rows, -recon_weight / n_rows, dtype=self.dtype)  # (L N,)
        dout *= per_row[:, None]  # in place: the kernel's fresh array is ours to reuse
        self.likelihood.write_grads(x, out, per_row)  # a learned variance, if any
        dz = self.decoder.backward(dout)  # (L N, d)
        dmu_rows, dlog_var_rows = DiagonalGaussian.sample_backward(dz, log_var_rows, eps_rows)
        kl_weight = np.full(self.latent_dim, beta / n, dtype=self.dtype)  # (d,)
        if floor > 0:
            kl_weight[kl_dim_mean <= floor] = 0
        dmu_kl, dlog_var_kl = DiagonalGaussian.kl_grad(mu, log_var)
        dmu = fold_rows(dmu_rows, n) + dmu_kl * kl_weight  # (N, d)
        dlog_var = fold_rows(dlog_var_rows, n) + dlog_var_kl * kl_weight
        dh = self.mu_head.backward(dmu)
        dh += self.log_var_head.backward(dlog_var)
        self.encoder.backward(dh)
        return report

    def log_importance_weights(self, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """``log w = log p(x|z) + log p(z) − log q(z|x)`` for ``eps (S, N, d)``: ``(S, N)``.

        No gradients; the evaluation streams these for the importance-sampled
        log-likelihood ``log (1/S) Σ_s w_s``.
        """
        x = self._check_input(x)
        n = len(x)
        eps = self._eps(eps, None, 0, n)  # (S, N, d)
        h = self.encoder.forward(x)
        mu, log_var = self.mu_head.forward(h), self.log_var_head.forward(h)  # (N, d)
        # z = mu + exp(log_var / 2) * eps, broadcast over the S draws instead of tiling
        # mu, log_var and x S times: this is the evaluation's hot loop (S up to 5000).
        z = (eps * np.exp(log_var / 2) + mu).reshape(-1, self.latent_dim)  # (S N, d)
        log_w = self.likelihood.log_prob(x, self.decoder.forward(z))  # x paired, not tiled
        log_w += DiagonalGaussian.prior_log_prob(z)
        log_w -= DiagonalGaussian.log_prob_of_sample(eps, log_var).reshape(-1)
        return log_w.reshape(len(eps), n)
