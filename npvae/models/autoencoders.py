"""The deterministic autoencoders: undercomplete, sparse, denoising, contractive.

All four share one loss method, :meth:`Autoencoder.loss`, which reads top to
bottom: (corrupt) -> encode -> decode -> reconstruction error -> penalty ->
backward.  The variants differ only in the two steps a subclass overrides:
``_corrupt`` (the denoising AE) and ``_penalty`` (the sparse and contractive
AEs), each a few lines beside its math.  Derivations: ``docs/models.md``.

Shapes: ``x (N, D)`` data, ``code (N, d)``.
"""

from __future__ import annotations

import numpy as np

from npvae import kernels
from npvae.errors import ConfigError
from npvae.layers import sigmoid
from npvae.models.base import Model, mlp_parameter_count, register
from npvae.network import MLP

RECONSTRUCTIONS = ("bernoulli", "squared")


@register
class Autoencoder(Model):
    """Undercomplete autoencoder: an MLP encoder to a d-dimensional code and an MLP back.

    Parameters
    ----------
    input_dim : int
        D.
    hidden : sequence of int
        Hidden widths of the encoder (may be empty); the decoder mirrors them.
    code_dim : int
        d: the encoder outputs one value per code dimension.
    activation : str
        Hidden activation.
    code_activation : str or None
        Activation of the code itself; None leaves it linear.
    reconstruction : {"bernoulli", "squared"}
        Bernoulli cross-entropy from logits (data in [0, 1]), or the squared
        error ``Σ_j (x_j − y_j)²``; either summed over pixels, per example.
    init : {"glorot", "he"}
        Initial weights (see :class:`npvae.models.VAE` for why Glorot is the default).
    dtype : {"float32", "float64"}
    seed : int
    """

    kind = "ae"
    #: The settings a subclass adds to the constructor's (its penalty's, its noise's).
    variant_settings: tuple[str, ...] = ()

    def __init__(
        self,
        input_dim: int = 784,
        hidden=(400,),
        code_dim: int = 32,
        activation: str = "relu",
        code_activation: str | None = None,
        reconstruction: str = "bernoulli",
        init: str = "glorot",
        dtype: str = "float32",
        seed: int = 0,
        **variant,
    ) -> None:
        unknown = sorted(set(variant) - set(self.variant_settings))
        if unknown:
            raise ConfigError(f"{self.kind} has no setting {unknown[0]!r}")
        if reconstruction not in RECONSTRUCTIONS:
            raise ConfigError(
                f"unknown reconstruction {reconstruction!r}: use 'bernoulli' or 'squared'"
            )
        if int(input_dim) < 1 or int(code_dim) < 1:
            raise ConfigError(f"input and code sizes must be positive, got {input_dim}, {code_dim}")
        config = {
            "input_dim": int(input_dim),
            "hidden": [int(width) for width in hidden],
            "code_dim": int(code_dim),
            "activation": activation,
            "code_activation": code_activation,
            "reconstruction": reconstruction,
            "init": init,
            "dtype": dtype,
            "seed": seed,
            **variant,
        }
        super().__init__(config)
        rng = np.random.default_rng(seed)
        sizes = [config["input_dim"], *config["hidden"], config["code_dim"]]
        self.encoder = MLP(
            sizes,
            activation,
            out_activation=code_activation,
            rng=rng,
            dtype=self.dtype,
            init=init,
            input_grad=False,
        )
        self.decoder = MLP(sizes[::-1], activation, rng=rng, dtype=self.dtype, init=init)
        self._collect(encoder=self.encoder, decoder=self.decoder)

    @classmethod
    def parameter_count(cls, config: dict) -> int:
        sizes = [config["input_dim"], *config["hidden"], config["code_dim"]]
        return mlp_parameter_count(sizes) + mlp_parameter_count(sizes[::-1])

    # ----- the verbs ---------------------------------------------------------------

    def encode(self, x: np.ndarray) -> np.ndarray:
        """``x (N, D) -> code (N, d)`` (clean input, no corruption)."""
        # A denoising AE with Gaussian noise is trained to encode x + noise, outside [0, 1].
        return self.encoder.forward(
            self._check_input(x, scored=self.config.get("noise") != "gaussian")
        )

    def decode(self, code: np.ndarray) -> np.ndarray:
        """``code (N, d) -> (N, D)``: pixel probabilities, or values for squared error."""
        out = self.decoder.forward(self._check_latent(code, self.config["code_dim"]))
        return sigmoid(out) if self.config["reconstruction"] == "bernoulli" else out

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """``x (N, D) -> (N, D)``."""
        return self.decode(self.encode(x))

    # ----- the objective -----------------------------------------------------------

    def loss(
        self,
        x: np.ndarray,
        rng: np.random.Generator | None = None,
        *,
        grad: bool = True,
        corrupt: bool | None = None,
        x_tilde: np.ndarray | None = None,
        step: int | None = None,
    ) -> dict:
        """Reconstruction error plus the variant's penalty, averaged over the batch.

        ``loss = mean_n recon(x_n, decoder(encoder(x̃_n))) + penalty(code)``

        where ``x̃`` is ``x`` itself, or its corruption for the denoising AE
        while training.  With ``grad``, the gradient of ``loss`` is written into
        every entry of ``self.grads``.  ``corrupt`` (default: ``grad``)
        says whether the denoising AE corrupts: a gradient check evaluates
        the training loss without gradients by passing ``corrupt=True``.
        ``x_tilde (N, D)``, if given, is the encoder's input in place of ``x``
        or a corruption drawn from ``rng``: the corruption passed as an array,
        so that a check can hold it fixed.
        ``step`` is accepted, and ignored, for one interface with the VAE.

        Returns
        -------
        dict with floats ``loss``, ``recon`` (per example), ``penalty``, and
        ``recon_per_example (N,)``.
        """
        x = self._check_input(x)
        n = len(x)
        if x_tilde is not None:
            inputs = self._check_input(x_tilde, scored=False)  # only the encoder sees it
            if inputs.shape != x.shape:
                raise ValueError(f"x_tilde has shape {inputs.shape}, x has {x.shape}")
        elif grad if corrupt is None else corrupt:
            inputs = self._corrupt(x, rng)
        else:
            inputs = x
        code = self.encoder.forward(inputs)
        out = self.decoder.forward(code)
        if self.config["reconstruction"] == "bernoulli":
            log_px, dlog_px = kernels.bernoulli_log_prob_and_grad(x, out)
            recon, dout = -log_px, dlog_px
            dout *= -1.0 / n  # in place: d mean(recon) / d logits
        else:
            residual = out - x
            recon = np.einsum("nj,nj->n", residual, residual)
            dout = residual * (2.0 / n)
        penalty, dcode_penalty = self._penalty(inputs, code, grad)
        report = {
            "loss": float(recon.mean() + penalty),
            "recon": float(recon.mean()),
            "penalty": float(penalty),
            "recon_per_example": recon,
        }
        if grad:
            dcode = self.decoder.backward(dout)
            if dcode_penalty is not None:
                dcode += dcode_penalty
            self.encoder.backward(dcode)
            self._add_penalty_param_grads(code)
        return report

    def _corrupt(self, x: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """The input the encoder sees while training: ``x`` itself for a plain AE."""
        return x

    def _penalty(self, inputs: np.ndarray, code: np.ndarray, grad: bool):
        """``(penalty, d penalty / d code or None)``; a plain AE has none."""
        return 0.0, None

    def _add_penalty_param_grads(self, code: np.ndarray) -> None:
        """Add the penalty's gradients that bypass the code straight into ``self.grads``
        (the contractive AE's, in its encoder's ``W``), after ``backward`` has written the
        layers' own.  ``code (N, d)``.  Most penalties have none: nothing to do."""


@register
class SparseAutoencoder(Autoencoder):
    """Autoencoder with a sparsity penalty on the code.

    ``sparsity="l1"``: ``weight · mean_n Σ_j |h_nj|``.
    ``sparsity="kl"``: ``weight · Σ_j KL(ρ ‖ ρ̂_j)`` with ``ρ̂_j = mean_n h_nj``,
    the mean activation of code unit j over the batch; needs a sigmoid code
    (ρ̂ must be a probability).  Its gradient flows through the batch mean:
    ``d/dh_nj = weight/N · (−ρ/ρ̂_j + (1−ρ)/(1−ρ̂_j))``.
    """

    kind = "sparse-ae"
    variant_settings = ("sparsity", "sparsity_weight", "target")

    def __init__(
        self,
        *args,
        sparsity: str = "kl",
        sparsity_weight: float = 0.1,
        target: float = 0.05,
        code_activation: str | None = "sigmoid",
        **kwargs,
    ) -> None:
        if sparsity not in ("l1", "kl"):
            raise ConfigError(f"unknown sparsity {sparsity!r}: use 'l1' or 'kl'")
        if sparsity == "kl" and code_activation != "sigmoid":
            raise ConfigError("the KL sparsity penalty needs code_activation='sigmoid'")
        if not 0 < target < 1 or sparsity_weight < 0:
            raise ConfigError("sparsity target must lie in (0, 1) and its weight be >= 0")
        super().__init__(
            *args,
            code_activation=code_activation,
            sparsity=sparsity,
            sparsity_weight=float(sparsity_weight),
            target=float(target),
            **kwargs,
        )

    def _penalty(self, inputs, code, grad):
        weight, n = self.config["sparsity_weight"], len(code)
        if self.config["sparsity"] == "l1":
            penalty = weight * np.abs(code).sum() / n
            return penalty, (np.sign(code) * (weight / n)).astype(self.dtype) if grad else None
        rho = self.config["target"]
        # A unit saturated over the whole batch has rho_hat exactly 0 or 1 in floating
        # point: hold it a rounding step inside, so the penalty and its gradient are
        # large and finite instead of inf and NaN.
        tiny = np.finfo(self.dtype).eps
        rho_hat = np.clip(code.mean(axis=0), tiny, 1 - tiny)  # (d,)
        kl = rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))
        dkl = (-rho / rho_hat + (1 - rho) / (1 - rho_hat)) * (weight / n)  # (d,)
        dcode = np.broadcast_to(dkl, code.shape).astype(self.dtype) if grad else None
        return weight * kl.sum(), dcode


NOISES = ("mask", "gaussian", "salt-pepper")


@register
class DenoisingAutoencoder(Autoencoder):
    """Autoencoder that reconstructs the clean ``x`` from a corrupted copy (Vincent et al., 2008).

    ``noise="mask"``: each input set to 0 with probability ``noise_level``.
    ``noise="gaussian"``: ``x + noise_level · N(0, 1)``.
    ``noise="salt-pepper"``: each input, with probability ``noise_level``, set
    to 0 or 1 (even odds).  Corruption happens in training only (``loss`` with
    ``grad=True``); evaluation and the verbs see clean input.
    """

    kind = "denoising-ae"
    variant_settings = ("noise", "noise_level")

    def __init__(self, *args, noise: str = "mask", noise_level: float = 0.25, **kwargs) -> None:
        if noise not in NOISES:
            raise ConfigError(f"unknown noise {noise!r}: choose one of {', '.join(NOISES)}")
        if noise_level < 0 or (noise != "gaussian" and noise_level > 1):
            raise ConfigError(f"noise_level must be in [0, 1] for {noise} noise")
        super().__init__(*args, noise=noise, noise_level=float(noise_level), **kwargs)

    def corrupt(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A corrupted copy of ``x (N, D)``, drawn from ``rng``."""
        level = self.config["noise_level"]
        if self.config["noise"] == "gaussian":
            return x + rng.standard_normal(x.shape, dtype=self.dtype) * self.dtype.type(level)
        u = rng.random(x.shape, dtype=self.dtype)
        if self.config["noise"] == "mask":
            return np.where(u < level, self.dtype.type(0), x)
        noisy = np.where(u < level / 2, self.dtype.type(0), x)
        return np.where((u >= level / 2) & (u < level), self.dtype.type(1), noisy)

    def _corrupt(self, x, rng):
        if rng is None:
            raise ValueError("the denoising AE draws its corruption from rng: pass one")
        return self.corrupt(x, rng)


CONTRACTIVE_ACTIVATIONS = ("sigmoid", "tanh")


@register
class ContractiveAutoencoder(Autoencoder):
    """Autoencoder plus ``λ ‖J_f(x)‖²_F``, the encoder Jacobian's squared norm (Rifai et al., 2011).

    Supported encoder: one layer, ``h = s(x W + b)`` with ``s`` sigmoid or
    tanh (``hidden=()``), for which the penalty has the closed form

        ``‖J‖²_F = Σ_j s'(a_j)² Σ_i W_ij²``,

    with ``s' = h(1 − h)`` (sigmoid) or ``1 − h²`` (tanh).  Its gradient, by
    hand (``docs/models.md#contractive``): through the code,
    ``d/dh_nj = λ/N · w_j · dg/dh`` with ``g = s'²`` and ``w_j = Σ_i W_ij²``;
    and directly into the weights, ``d/dW_ij = λ/N · 2 W_ij Σ_n g_nj``.
    """

    kind = "contractive-ae"
    variant_settings = ("contraction",)

    def __init__(
        self,
        *args,
        contraction: float = 0.1,
        code_activation: str | None = "sigmoid",
        **kwargs,
    ) -> None:
        hidden = kwargs.get("hidden", args[1] if len(args) > 1 else ())
        if len(hidden) != 0 or code_activation not in CONTRACTIVE_ACTIVATIONS:
            raise ConfigError(
                "the contractive AE supports a one-layer encoder with a sigmoid or tanh code: "
                f"use hidden=() and code_activation 'sigmoid' or 'tanh' "
                f"(got hidden={list(hidden)}, code_activation={code_activation!r})"
            )
        if contraction < 0:
            raise ConfigError(f"contraction must be >= 0, got {contraction}")
        if len(args) > 1:
            args = (args[0], (), *args[2:])
        else:
            kwargs["hidden"] = ()
        super().__init__(
            *args, code_activation=code_activation, contraction=float(contraction), **kwargs
        )
        self._slope_squared_sums: np.ndarray | None = None  # Σ_n g_nj of the last forward

    def jacobian_norm(self, x: np.ndarray) -> np.ndarray:
        """``‖J_f(x_n)‖²_F`` per example, ``(N,)``."""
        return self._slope_squared(self.encode(x)) @ self._column_norms()

    def _column_norms(self) -> np.ndarray:
        """``w_j = Σ_i W_ij²``, ``(d,)``."""
        weight = self.encoder.layers[0].params["W"]
        return np.einsum("ij,ij->j", weight, weight)

    def _slope_squared(self, code: np.ndarray) -> np.ndarray:
        """``g = s'(a)²`` from the code ``h = s(a)``, ``(N, d)``."""
        slope = code * (1 - code) if self.config["code_activation"] == "sigmoid" else 1 - code**2
        return slope * slope

    def _penalty(self, inputs, code, grad):
        lam, n = self.config["contraction"], len(code)
        g = self._slope_squared(code)  # (N, d)
        w = self._column_norms()  # (d,)
        penalty = lam * (g @ w).mean()
        if not grad:
            return penalty, None
        self._slope_squared_sums = g.sum(0)  # (d,), for the weights' direct term after backward
        if self.config["code_activation"] == "sigmoid":
            dg_dh = 2 * code * (1 - code) * (1 - 2 * code)
        else:
            dg_dh = -4 * code * (1 - code**2)
        return penalty, dg_dh * (w * (lam / n))

    def _add_penalty_param_grads(self, code):
        # d/dW_ij of lam mean_n Σ_j g_nj w_j, with w_j = Σ_i W_ij²: through w only.
        lam, n = self.config["contraction"], len(code)
        linear = self.encoder.layers[0]
        linear.grads["W"] += linear.params["W"] * (2 * lam / n) * self._slope_squared_sums
