"""The IWAE with two stochastic layers (Burda, Grosse & Salakhutdinov, 2016, appendix).

Inference, bottom up: ``x (N, D)`` -> MLP -> q(z1|x) = N(mu1, diag e^{log_var1}),
``z1 (N, d1)`` -> MLP -> q(z2|z1) = N(mu2, diag e^{log_var2}), ``z2 (N, d2)``.
Generation, top down: p(z2) = N(0, I); ``z2`` -> MLP -> p(z1|z2) = N(prior_mu1,
diag e^{prior_log_var1}); ``z1`` -> MLP -> p(x|z1), Bernoulli logits (or Gaussian
means).  Both draws are reparameterised, ``z1 = mu1 + e^{log_var1/2} eps1`` and
``z2 = mu2(z1) + e^{log_var2(z1)/2} eps2``, and every term of

    ``log w = log p(x|z1) + log p(z1|z2) + log p(z2) − log q(z1|x) − log q(z2|z1)``

is had by sampling, with no closed-form KL, as in the paper.  The objective is
the k-sample bound ``L_k = mean_n [log (1/k) Σ_i w_i]``; k = 1 is the ELBO of the
same model (the paper's two-layer VAE).  With ``objective="vae"`` it is instead the
average of k one-sample ELBOs, ``mean_n [(1/k) Σ_i log w_i]``: the paper's "VAE, k",
which spends what the bound spends on k draws but weights them equally.  Derivation
of the backward pass: ``docs/models.md#two-stochastic-layers``.

The noise of one sample is one row ``eps (d1 + d2,)``: ``eps1`` in its first
``d1`` columns, ``eps2`` in the rest; :attr:`IWAE2.latent_dim` is ``d1 + d2``,
so the evaluation draws ``eps (S, N, latent_dim)`` for this model as for the VAE.

One model, one file of about 400 lines: its forward pass, its backward pass (which
mirrors the forward step by step) and its evaluation path are read side by side
with ``docs/models.md``, and splitting them would part each step from its inverse.
"""

from __future__ import annotations

import numpy as np

from npvae import kernels
from npvae.distributions import DiagonalGaussian, make_likelihood
from npvae.layers import Linear
from npvae.models.base import Model, mlp_parameter_count, register
from npvae.models.iwae import bound_report, log_weight_grads
from npvae.models.vae import PosteriorMeanVerbs, fold_rows, repeat_rows
from npvae.network import MLP
from npvae.validate import check_choice, check_range, check_sizes


def _kl_per_dim(eps1, log_var1_rows, z1, prior_mu1, prior_log_var1, eps2, log_var2, z2):
    """The sampled KL term of each unit, ``(k N, d1 + d2)``, from the draws of
    :meth:`IWAE2.loss`: log q(z1|x) − log p(z1|z2), then log q(z2|z1) − log p(z2)."""

    def per_dim(log_density, *arrays):  # (k N, d) each -> (k N, d): one term per sum
        return log_density(*(array[..., None] for array in arrays))

    return np.concatenate(
        [
            per_dim(DiagonalGaussian.log_prob_of_sample, eps1, log_var1_rows)
            - per_dim(DiagonalGaussian.log_prob, z1, prior_mu1, prior_log_var1),
            per_dim(DiagonalGaussian.log_prob_of_sample, eps2, log_var2)
            - per_dim(DiagonalGaussian.prior_log_prob, z2),
        ],
        axis=1,
    )


def _report(bound, log_w, log_px, log_ratio, kl_dim) -> dict:
    """What :meth:`IWAE2.loss` returns, from ``bound (N,)``, ``log_w (k, N)`` and the
    terms of each draw: ``log_px (k N,)``, ``log_ratio (k N,)`` = log q(z1|x) +
    log q(z2|z1) − log p(z1|z2) − log p(z2), and ``kl_dim (k N, d1 + d2)``."""
    k, n = log_w.shape
    recon = -log_px.reshape(k, n).mean(axis=0)  # (N,)
    kl = log_ratio.reshape(k, n).mean(axis=0)  # (N,)
    return {**bound_report(bound, recon, kl, kl_dim), "log_weights": log_w}


@register
class IWAE2(PosteriorMeanVerbs, Model):
    """The IWAE with two stochastic layers, z1 and z2 (the paper's MNIST model).

    Parameters
    ----------
    input_dim : int
        Pixels per example, D.
    hidden1 : sequence of int
        Widths of the deterministic layers between x and z1: the encoder of
        q(z1|x) runs through them, the decoder of p(x|z1) through them reversed.
    latent1 : int
        d1, the size of z1.
    hidden2 : sequence of int
        Widths between z1 and z2: the encoder of q(z2|z1) runs through them,
        the network of p(z1|z2) through them reversed.
    latent2 : int
        d2, the size of z2.
    activation : str
        Hidden activation (``npvae.layers.ACTIVATIONS``); the paper's is tanh.
    likelihood, learned_var, init_log_var :
        p(x|z1), as for :class:`npvae.models.VAE`.
    k : int
        Samples per example in the bound (1: the ELBO).
    objective : {"iwae", "vae"}
        What the k draws estimate: the bound L_k (``"iwae"``), or the average of k
        one-sample ELBOs (``"vae"``, the paper's "VAE, k"); the same for k = 1.
    init : {"glorot", "he"}
    dtype : {"float32", "float64"}
    seed : int
        Seed of the initial weights.

    The defaults are the paper's: 784-200-200-100 and 100-100-100-50, tanh, k = 5.
    """

    kind = "iwae2"
    LATER_SETTINGS = ("objective",)  # files before it trained the bound, its default

    def __init__(
        self,
        input_dim: int = 784,
        hidden1=(200, 200),
        latent1: int = 100,
        hidden2=(100, 100),
        latent2: int = 50,
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        learned_var: bool = False,
        init_log_var: float = 0.0,
        k: int = 5,
        init: str = "glorot",
        dtype: str = "float32",
        seed: int = 0,
        objective: str = "iwae",
    ) -> None:
        check_range("k", k, "k")
        check_choice("objective", objective, "objective")
        check_sizes(input_dim, hidden1, latent1, names=("input_dim", "hidden1", "latent1"))
        check_sizes(latent1, hidden2, latent2, names=("latent1", "hidden2", "latent2"))
        config = dict(locals())
        config.pop("self")
        config["hidden1"] = [int(width) for width in hidden1]
        config["hidden2"] = [int(width) for width in hidden2]
        Model.__init__(self, config)
        hidden1, hidden2 = config["hidden1"], config["hidden2"]
        dtype, rng = self.dtype, np.random.default_rng(seed)

        def mlp(sizes, out_activation=None, input_grad=True):
            return MLP(
                sizes,
                activation,
                out_activation=out_activation,
                rng=rng,
                dtype=dtype,
                init=init,
                input_grad=input_grad,
            )

        def head(n_in, n_out):
            return Linear(n_in, n_out, init=init, rng=rng, dtype=dtype)

        # q(z1|x): x never needs a gradient, so the first layer skips it.
        self.encoder1 = mlp([input_dim, *hidden1], activation, input_grad=False)
        self.mu1_head = head(hidden1[-1], latent1)
        self.log_var1_head = head(hidden1[-1], latent1)
        # q(z2|z1): z1 is a sample that depends on the parameters below it.
        self.encoder2 = mlp([latent1, *hidden2], activation)
        self.mu2_head = head(hidden2[-1], latent2)
        self.log_var2_head = head(hidden2[-1], latent2)
        # p(z1|z2), the prior of z1.
        self.prior_net = mlp([latent2, *hidden2[::-1]], activation)
        self.prior_mu1_head = head(hidden2[0], latent1)
        self.prior_log_var1_head = head(hidden2[0], latent1)
        # p(x|z1); ``decoder`` is the name Model.init_output_bias looks for.
        self.decoder = mlp([latent1, *hidden1[::-1], input_dim])
        self.likelihood = make_likelihood(
            likelihood, input_dim, learned_var=learned_var, init_log_var=init_log_var, dtype=dtype
        )
        self._collect(
            encoder1=self.encoder1,
            mu1_head=self.mu1_head,
            log_var1_head=self.log_var1_head,
            encoder2=self.encoder2,
            mu2_head=self.mu2_head,
            log_var2_head=self.log_var2_head,
            prior_net=self.prior_net,
            prior_mu1_head=self.prior_mu1_head,
            prior_log_var1_head=self.prior_log_var1_head,
            decoder=self.decoder,
            likelihood=self.likelihood,
        )

    @classmethod
    def parameter_count(cls, config: dict) -> int:
        input_dim, hidden1, latent1 = config["input_dim"], config["hidden1"], config["latent1"]
        hidden2, latent2 = config["hidden2"], config["latent2"]
        learned = config["likelihood"] == "gaussian" and config["learned_var"]
        return (
            mlp_parameter_count([input_dim, *hidden1])
            + 2 * (hidden1[-1] * latent1 + latent1)
            + mlp_parameter_count([latent1, *hidden2])
            + 2 * (hidden2[-1] * latent2 + latent2)
            + mlp_parameter_count([latent2, *hidden2[::-1]])
            + 2 * (hidden2[0] * latent1 + latent1)
            + mlp_parameter_count([latent1, *hidden1[::-1], input_dim])
            + (input_dim if learned else 0)
        )

    @property
    def latent_dim(self) -> int:
        """``d1 + d2``: the stochastic units, z1 then z2, and the noise of one sample."""
        return self.config["latent1"] + self.config["latent2"]

    def beta_at(self, step: int | None) -> float:
        return 1.0

    # ----- the verbs ---------------------------------------------------------------

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x (N, D) -> (mu, log_var)``, each ``(N, d1 + d2)``: q(z1|x), then q(z2|z1 = mu1).

        The first ``d1`` columns are q(z1|x)'s parameters; the last ``d2`` are
        q(z2|z1)'s at z1's mean, the deterministic path (not the average of
        q(z2|z1) over z1's draws).
        """
        h1 = self.encoder1.forward(self._check_input(x))
        mu1, log_var1 = self.mu1_head.forward(h1), self.log_var1_head.forward(h1)
        h2 = self.encoder2.forward(mu1)
        mu2, log_var2 = self.mu2_head.forward(h2), self.log_var2_head.forward(h2)
        return np.concatenate([mu1, mu2], axis=1), np.concatenate([log_var1, log_var2], axis=1)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """``z (N, d1 + d2) -> (N, D)``: pixel probabilities (or means) of p(x|z1).

        x depends on z2 only through z1, so the last ``d2`` columns are not read.
        """
        z = self._check_latent(z, self.latent_dim)
        return self.likelihood.mean(self.decoder.forward(z[:, : self.config["latent1"]]))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws from the model: z2 ~ N(0, I), z1 ~ p(z1|z2), decoded to ``(n, D)`` means."""
        z2 = self._noise(rng, (n, self.config["latent2"]))
        g = self.prior_net.forward(z2)
        mu1, log_var1 = self.prior_mu1_head.forward(g), self.prior_log_var1_head.forward(g)
        z1 = DiagonalGaussian.sample(mu1, log_var1, self._noise(rng, mu1.shape))
        return self.likelihood.mean(self.decoder.forward(z1))

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
        """The negative objective (the k-sample bound, or with ``objective="vae"`` the
        average of k one-sample ELBOs), averaged over the batch, and its gradients.

        Parameters as for :meth:`npvae.models.VAE.loss`; ``eps`` is ``(k, N, d1 + d2)``,
        eps1 in its first ``d1`` columns and eps2 in the rest, and ``step`` is not used
        (no warm-up).

        Returns
        -------
        dict with floats ``loss`` (= −``bound``), ``bound``, ``recon`` (−log p(x|z1)),
        ``kl`` (log q(z1|x) + log q(z2|z1) − log p(z1|z2) − log p(z2)) and
        ``elbo`` (= −(recon + kl)), each per example and averaged over the k
        samples, and arrays ``bound_per_example (N,)``, ``recon_per_example (N,)``,
        ``kl_per_example (N,)``, ``kl_per_dim (d1 + d2,)`` (the sampled KL term of
        each unit of z1 and z2, averaged over samples and examples; they sum to
        ``kl``) and ``log_weights (k, N)``.
        """
        x = self._check_input(x)
        n = len(x)
        eps = self._eps(eps, rng, self.config["k"], n)
        k, d1 = len(eps), self.config["latent1"]
        eps_rows = eps.reshape(k * n, self.latent_dim)  # row i N + n: draw i of example n
        eps1 = np.ascontiguousarray(eps_rows[:, :d1])  # (k N, d1)
        eps2 = np.ascontiguousarray(eps_rows[:, d1:])  # (k N, d2)

        # Forward: up through q(z1|x) and q(z2|z1), down through p(z1|z2) and p(x|z1).
        log_var1_rows, z1 = self._draw_z1(x, eps1, k)  # (k N, d1), (k N, d1)
        log_var2, z2 = self._draw_z2(z1, eps2)  # (k N, d2), (k N, d2)
        g = self.prior_net.forward(z2)  # (k N, hidden2[0])
        prior_mu1 = self.prior_mu1_head.forward(g)  # (k N, d1)
        prior_log_var1 = self.prior_log_var1_head.forward(g)  # (k N, d1)
        out = self.decoder.forward(z1)  # (k N, D): logits, or means
        if grad:  # x (N, D) is paired with the k N rows of out, not tiled
            log_px, dout = self.likelihood.log_prob_and_grad(x, out)  # (k N,), (k N, D)
            log_pz1, dprior_mu1, dprior_log_var1 = DiagonalGaussian.log_prob_and_grad(
                z1, prior_mu1, prior_log_var1
            )  # (k N,), (k N, d1), (k N, d1): d log p(z1|z2) / d its mean and log-variance
        else:
            log_px = self.likelihood.log_prob(x, out)  # (k N,)
            log_pz1 = DiagonalGaussian.log_prob(z1, prior_mu1, prior_log_var1)  # (k N,)

        # The objective: log w_i per draw, then log (1/k) Σ_i w_i by log-sum-exp (the
        # bound), or (1/k) Σ_i log w_i (the average of k one-sample ELBOs).
        log_pz2 = DiagonalGaussian.prior_log_prob(z2)  # (k N,)
        log_qz1 = DiagonalGaussian.log_prob_of_sample(eps1, log_var1_rows)  # (k N,)
        log_qz2 = DiagonalGaussian.log_prob_of_sample(eps2, log_var2)  # (k N,)
        log_w = (log_px + log_pz1 + log_pz2 - log_qz1 - log_qz2).reshape(k, n)
        if self.config["objective"] == "vae":
            bound = log_w.mean(axis=0)  # (N,)
        else:
            bound = kernels.logsumexp(np.ascontiguousarray(log_w.T)) - self.dtype.type(np.log(k))
        kl_dim = _kl_per_dim(
            eps1, log_var1_rows, z1, prior_mu1, prior_log_var1, eps2, log_var2, z2
        )  # (k N, d1 + d2)
        report = _report(bound, log_w, log_px, log_qz1 + log_qz2 - log_pz1 - log_pz2, kl_dim)
        if not grad:
            return report

        # Backward: d loss / d log w_i = −w̃_i / N, w̃ the softmax of each example's k
        # log-weights (for the average of ELBOs, w̃_i = 1/k); every term of log w_i then
        # sends its gradient back, scaled by that.
        per_row = self._per_draw(log_w).reshape(k * n)  # (k N,): d loss / d log w
        weight = per_row[:, None]  # (k N, 1)
        # log p(x|z1): through the decoder to z1.
        dout *= weight  # in place: the kernel's fresh array is ours to reuse
        self.likelihood.write_grads(x, out, per_row)  # a learned variance, if any
        dz1 = self.decoder.backward(dout)  # (k N, d1)
        # log p(z1|z2) and log p(z2), to z1 and z2; then back down q(z2|z1) and q(z1|x).
        dz2 = self._prior_backward(dz1, dprior_mu1, dprior_log_var1, z2, weight)  # (k N, d2)
        dz1 += self._draw_z2_backward(dz2, log_var2, eps2, weight)  # z1 also feeds q(z2|z1)
        self._draw_z1_backward(dz1, log_var1_rows, eps1, per_row.reshape(k, n))
        return report

    def _per_draw(self, log_w: np.ndarray) -> np.ndarray:
        """d loss / d log w of each draw, ``(k, N)`` from ``log_w (k, N)``: −w̃ / N."""
        k, n = log_w.shape
        if self.config["objective"] == "vae":
            return np.full((k, n), -1 / (k * n), dtype=self.dtype)
        return log_weight_grads(log_w, self.dtype)

    # The two stochastic layers of the inference network, forward and backward.

    def _draw_z1(self, x: np.ndarray, eps1: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """q(z1|x) once per example of ``x (N, D)``, then k draws for ``eps1 (k N, d1)``:
        ``(log_var1_rows, z1)``, each ``(k N, d1)``, rows sample-major."""
        h1 = self.encoder1.forward(x)  # (N, hidden1[-1])
        mu1, log_var1 = self.mu1_head.forward(h1), self.log_var1_head.forward(h1)  # (N, d1)
        log_var1_rows = repeat_rows(log_var1, k)  # (k N, d1)
        z1 = DiagonalGaussian.sample(repeat_rows(mu1, k), log_var1_rows, eps1)  # (k N, d1)
        return log_var1_rows, z1

    def _draw_z2(self, z1: np.ndarray, eps2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """q(z2|z1) for each draw ``z1 (k N, d1)``, then one draw for ``eps2 (k N, d2)``:
        ``(log_var2, z2)``, each ``(k N, d2)``."""
        h2 = self.encoder2.forward(z1)  # (k N, hidden2[-1])
        mu2, log_var2 = self.mu2_head.forward(h2), self.log_var2_head.forward(h2)  # (k N, d2)
        z2 = DiagonalGaussian.sample(mu2, log_var2, eps2)  # (k N, d2)
        return log_var2, z2

    def _prior_backward(self, dz1, dprior_mu1, dprior_log_var1, z2, weight) -> np.ndarray:
        """Back from log p(z1|z2) + log p(z2), scaled by ``weight (k N, 1)``: ``dz2 (k N, d2)``.

        Scales ``dprior_mu1, dprior_log_var1 (k N, d1)`` and adds p(z1|z2)'s own term
        (d/dz1 = −d/dmean) to ``dz1 (k N, d1)``, in place; log N(z2; 0, I) adds −z2.
        """
        dprior_mu1 *= weight  # (k N, d1)
        dprior_log_var1 *= weight
        dz1 -= dprior_mu1
        dg = self.prior_mu1_head.backward(dprior_mu1)  # (k N, hidden2[0])
        dg += self.prior_log_var1_head.backward(dprior_log_var1)
        dz2 = self.prior_net.backward(dg)  # (k N, d2)
        dz2 -= weight * z2
        return dz2

    def _draw_z2_backward(self, dz2, log_var2, eps2, weight) -> np.ndarray:
        """Back through ``z2 = mu2 + e^{log_var2/2} eps2`` and q(z2|z1) to ``z1``: ``(k N, d1)``.

        −log q(z2|z1) = 0.5 Σ (eps2² + log 2π + log_var2) adds ``weight / 2`` to log_var2.
        """
        dmu2, dlog_var2 = DiagonalGaussian.sample_backward(dz2, log_var2, eps2)  # (k N, d2)
        dlog_var2 += 0.5 * weight
        dh2 = self.mu2_head.backward(dmu2)  # (k N, hidden2[-1])
        dh2 += self.log_var2_head.backward(dlog_var2)
        return self.encoder2.backward(dh2)  # (k N, d1)

    def _draw_z1_backward(self, dz1, log_var1_rows, eps1, per_draw) -> None:
        """Back through ``z1 = mu1 + e^{log_var1/2} eps1`` and q(z1|x) to the encoder.

        ``per_draw (k, N)`` is d loss / d log w; −log q(z1|x) adds half of it to log_var1,
        summed over each example's k draws as the copies are folded back.
        """
        n = per_draw.shape[1]
        dmu1_rows, dlog_var1_rows = DiagonalGaussian.sample_backward(dz1, log_var1_rows, eps1)
        dmu1 = fold_rows(dmu1_rows, n)  # (N, d1)
        dlog_var1 = fold_rows(dlog_var1_rows, n) + 0.5 * per_draw.sum(axis=0)[:, None]  # (N, d1)
        dh1 = self.mu1_head.backward(dmu1)  # (N, hidden1[-1])
        dh1 += self.log_var1_head.backward(dlog_var1)
        self.encoder1.backward(dh1)

    def log_importance_weights(self, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """``log w`` for ``eps (S, N, d1 + d2)``: ``(S, N)``, with no gradients.

        ``log w = log p(x|z1) + log p(z1|z2) + log p(z2) − log q(z1|x) − log q(z2|z1)``,
        the terms of :meth:`loss`, computed here on their own path: z1 by
        broadcasting over the S draws and x paired with its rows, not tiled (the
        evaluation's hot loop, as in :meth:`npvae.models.VAE.log_importance_weights`).
        """
        x = self._check_input(x)
        n = len(x)
        eps = self._eps(eps, None, 0, n)  # (S, N, d1 + d2)
        d1 = self.config["latent1"]
        eps1 = eps[..., :d1]  # (S, N, d1)
        eps2 = eps[..., d1:].reshape(-1, self.config["latent2"])  # (S N, d2)
        h1 = self.encoder1.forward(x)
        mu1, log_var1 = self.mu1_head.forward(h1), self.log_var1_head.forward(h1)  # (N, d1)
        z1 = (eps1 * np.exp(log_var1 / 2) + mu1).reshape(-1, d1)  # (S N, d1)
        h2 = self.encoder2.forward(z1)
        mu2, log_var2 = self.mu2_head.forward(h2), self.log_var2_head.forward(h2)  # (S N, d2)
        z2 = eps2 * np.exp(log_var2 / 2) + mu2  # (S N, d2)
        g = self.prior_net.forward(z2)
        prior_mu1 = self.prior_mu1_head.forward(g)  # (S N, d1)
        prior_log_var1 = self.prior_log_var1_head.forward(g)  # (S N, d1)
        log_w = self.likelihood.log_prob(x, self.decoder.forward(z1))  # (S N,), x paired
        log_w += DiagonalGaussian.log_prob(z1, prior_mu1, prior_log_var1)
        log_w += DiagonalGaussian.prior_log_prob(z2)
        log_w -= DiagonalGaussian.log_prob_of_sample(eps1, log_var1).reshape(-1)
        log_w -= DiagonalGaussian.log_prob_of_sample(eps2, log_var2)
        return log_w.reshape(len(eps), n)
