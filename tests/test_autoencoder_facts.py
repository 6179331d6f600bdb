"""The autoencoder family does what its papers say, each fact next to a model that fails it.

* Undercomplete, linear, squared error: the decoder's columns span the data's top
  principal subspace (Baldi and Hornik, 1989).
* Denoising, masking 30%: it reconstructs clean held-out images from corrupted ones
  better than a plain autoencoder of the same size and training (Vincent et al., 2008).
* Contractive: at a comparable reconstruction error its encoder's Jacobian is
  smaller, and the more so the larger the penalty's weight (Rifai et al., 2011).
* Sparse: with the KL penalty each code unit's mean activation sits at the target
  rho; the L1 penalty drives most activations to zero.

Each is trained briefly on data the test makes (a Gaussian cloud, or 3,000 of the
embedded digits), with fixed seeds; a few seconds in all.
"""

from __future__ import annotations

import numpy as np
import pytest

from npvae import estimators
from npvae.data import make_digits
from npvae.models import (
    Autoencoder,
    ContractiveAutoencoder,
    DenoisingAutoencoder,
    SparseAutoencoder,
)
from npvae.optim import Adam


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Small products: one thread is as fast, and on a loaded machine two wait for each other."""
    import npvae

    with npvae.threads(1):
        yield


def fit(model, x: np.ndarray, epochs: int, lr: float = 3e-3, batch: int = 100):
    """Train ``model`` on ``x (N, D)`` with Adam, shuffled minibatches; returns it."""
    rng = np.random.default_rng(0)
    adam = Adam(model.params, lr=lr)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            model.loss(x[order[start : start + batch]], rng)
            adam.step(model.grads)
    return model


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """``(train (3000, 784), test (500, 784))`` float32 grey levels in [0, 1]."""
    x_train, _, x_test, _ = make_digits(3000, 500, seed=11)
    scale = np.float32(255)
    return (
        x_train.reshape(len(x_train), -1).astype(np.float32) / scale,
        x_test.reshape(len(x_test), -1).astype(np.float32) / scale,
    )


# ----- undercomplete and linear: principal component analysis --------------------------------


def largest_principal_angle(a: np.ndarray, b: np.ndarray) -> float:
    """The largest angle, in degrees, between the spans of the columns of ``a`` and ``b``."""
    qa, qb = np.linalg.qr(a)[0], np.linalg.qr(b)[0]
    cosines = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1, 1)
    return float(np.degrees(np.arccos(cosines.min())))


def test_a_linear_autoencoder_spans_the_top_principal_subspace():
    rng = np.random.default_rng(0)
    dims, code = 10, 3
    basis = np.linalg.qr(rng.standard_normal((dims, dims)))[0]
    spread = np.array([3.0, 2.0, 1.5] + [0.1] * (dims - code))
    x = (rng.standard_normal((1000, dims)) * spread) @ basis.T + 0.5  # (1000, 10), mean 0.5
    centred = x - x.mean(axis=0)
    top = np.linalg.svd(centred, full_matrices=False)[2][:code].T  # (10, 3): PCA's subspace
    model = Autoencoder(input_dim=dims, hidden=(), code_dim=code, code_activation=None,
                        reconstruction="squared", dtype="float64", seed=1)  # fmt: skip
    decoder_columns = lambda: model.params["decoder.0.W"].T  # noqa: E731  (10, 3)
    assert largest_principal_angle(decoder_columns(), top) > 10  # untrained: anywhere
    fit(model, x, epochs=300, lr=1e-2)
    assert largest_principal_angle(decoder_columns(), top) < 1.0


# ----- denoising ----------------------------------------------------------------------------


def test_a_denoising_autoencoder_repairs_masked_images_better_than_a_plain_one(digits):
    x_train, x_test = digits
    corrupted = np.where(np.random.default_rng(9).random(x_test.shape) < 0.3, 0, x_test)
    corrupted = corrupted.astype(np.float32)  # 30% of each held-out image's pixels set to 0
    common = dict(input_dim=784, hidden=(), code_dim=64, code_activation="sigmoid", seed=3)

    def repair_error(model) -> float:
        return estimators.reconstruction_error(model, x_test, corrupted)  # nats per image

    plain = repair_error(fit(Autoencoder(**common), x_train, epochs=30))
    masked = repair_error(
        fit(DenoisingAutoencoder(**common, noise="mask", noise_level=0.3), x_train, epochs=30)
    )
    assert masked < 0.97 * plain
    # Without noise in training it is a plain autoencoder, and repairs no better.
    clean = repair_error(
        fit(DenoisingAutoencoder(**common, noise="mask", noise_level=0.0), x_train, epochs=30)
    )
    assert not clean < 0.97 * plain


# ----- contractive --------------------------------------------------------------------------


def test_the_contractive_penalty_shrinks_the_jacobian_at_a_comparable_error(digits):
    x_train, x_test = digits
    measured = {}
    for weight in (0.0, 0.1, 1.0):  # weight 0: a plain autoencoder with a sigmoid code
        model = ContractiveAutoencoder(input_dim=784, code_dim=64, code_activation="sigmoid",
                                       contraction=weight, seed=3)  # fmt: skip
        fit(model, x_train, epochs=15)
        metrics = estimators.autoencoder_metrics(model, x_test, np.random.default_rng(0))
        measured[weight] = metrics["jacobian_frobenius"], metrics["recon"]
    (plain, plain_error), (mild, mild_error), (strong, strong_error) = measured.values()
    assert mild < 0.8 * plain and strong < 0.8 * mild  # it grows with the weight
    assert max(mild_error, strong_error) < 1.05 * plain_error  # at a comparable error
    assert not plain < 0.8 * plain  # the weight-0 model is the plain one: no contraction


# ----- sparse -------------------------------------------------------------------------------


def mean_activations(model, x: np.ndarray) -> np.ndarray:
    return model.codes(x).astype(np.float64).mean(axis=0)  # (64,)


def test_the_kl_penalty_holds_each_unit_at_its_target(digits):
    x_train, x_test = digits
    target = 0.05

    def within_tenth(weight: float) -> bool:
        model = SparseAutoencoder(input_dim=784, hidden=(), code_dim=64, sparsity="kl",
                                  target=target, sparsity_weight=weight, seed=3)  # fmt: skip
        means = mean_activations(fit(model, x_train, epochs=20), x_test)
        return bool(np.all(np.abs(means - target) <= 0.1 * target))

    assert within_tenth(1000.0)
    assert not within_tenth(0.0)  # no penalty: the units sit wherever the data puts them


def test_the_l1_penalty_drives_most_activations_to_zero(digits):
    x_train, x_test = digits

    def share_near_zero(weight: float) -> float:
        model = SparseAutoencoder(
            input_dim=784, hidden=(), code_dim=64, sparsity="l1", sparsity_weight=weight,
            code_activation="relu", seed=3,
        )  # fmt: skip
        return float((np.abs(fit(model, x_train, epochs=15).codes(x_test)) < 0.01).mean())

    assert share_near_zero(1.0) > 0.5
    assert share_near_zero(0.0) < 0.5
