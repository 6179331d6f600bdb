"""The IWAE's bound is log((1/k) Σ_i w_i), the weights computed by hand from the model's arrays.

A bound off by a sign in its ``- log k``, or a weight missing a term, gives
another number here; the bound's inequalities alone (k = 1 is the ELBO, the
bound rises with k) would let some such slips through.
"""

from __future__ import annotations

import numpy as np
import pytest

from npvae.models import IWAE


def log_weights_by_hand(model, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """``log w (k, N)`` = log p(x|z) + log p(z) − log q(z|x), in plain NumPy from the
    model's parameters: z = mu + exp(log_var / 2) eps, a Bernoulli decoder on logits."""
    p = model.params

    def layer(name, h):
        return h @ p[f"{name}.W"] + p[f"{name}.b"]

    h = np.tanh(layer("encoder.0", x))  # (N, H)
    mu, log_var = layer("mu_head", h), layer("log_var_head", h)  # (N, d)
    z = mu + np.exp(log_var / 2) * eps  # (k, N, d)
    logits = layer("decoder.2", np.tanh(layer("decoder.0", z)))  # (k, N, D)
    log_px = (x * logits - np.logaddexp(0, logits)).sum(axis=-1)  # (k, N)
    log_pz = (-0.5 * z**2 - 0.5 * np.log(2 * np.pi)).sum(axis=-1)
    log_qz = (-0.5 * eps**2 - 0.5 * log_var - 0.5 * np.log(2 * np.pi)).sum(axis=-1)
    return log_px + log_pz - log_qz


@pytest.mark.parametrize("k", [1, 2, 5, 13])
def test_the_bound_is_the_log_mean_of_the_weights(k):
    rng = np.random.default_rng(k)
    model = IWAE(input_dim=12, hidden=[7], latent_dim=3, k=k, activation="tanh",
                 dtype="float64", seed=k)  # fmt: skip
    x = (rng.random((6, 12)) < 0.4).astype(np.float64)
    eps = rng.standard_normal((k, 6, 3))
    log_w = log_weights_by_hand(model, x, eps)  # (k, 6)
    by_hand = np.log(np.mean(np.exp(log_w), axis=0))  # log (1/k) Σ_i w_i, (6,)
    report = model.loss(x, eps=eps, grad=False)
    np.testing.assert_allclose(report["bound_per_example"], by_hand, rtol=1e-12)
    assert report["bound"] == pytest.approx(by_hand.mean(), rel=1e-12)
    np.testing.assert_allclose(model.log_importance_weights(x, eps), log_w, rtol=1e-12)
