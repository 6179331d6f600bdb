"""Every model's hand-written gradient against centred finite differences, in float64.

Each check holds the noise fixed: the VAE and IWAE get ``eps=``, the
autoencoders a freshly seeded generator on every call (the denoising AE with
``corrupt=True`` so that the gradient-free evaluation still corrupts).  Hidden
activations are smooth (tanh, softplus, sigmoid, elu), so the bar is the
house one: relative error below 1e-7 for every parameter array.
"""

import numpy as np
import pytest
from gradient_support import assert_proven, errors_with_one_gradient_broken, gradient_errors

from npvae.gradcheck import TOLERANCE
from npvae.models import (
    IWAE,
    VAE,
    Autoencoder,
    ContractiveAutoencoder,
    DenoisingAutoencoder,
    SparseAutoencoder,
)

INPUT_DIM, BATCH = 8, 4
TINY = {"input_dim": INPUT_DIM, "dtype": "float64"}


def _binary_batch(seed=0):
    return (np.random.default_rng(seed).random((BATCH, INPUT_DIM)) < 0.5).astype(np.float64)


def _real_batch(seed=0):
    return np.random.default_rng(seed).normal(size=(BATCH, INPUT_DIM))


# ----------------------------------------------------------------------------- autoencoders

# name -> (class, keyword arguments beyond hidden=[5] and code_dim=3,
#          the keyword that switches the penalty off (or None), the data)
AUTOENCODERS = {
    "ae-bernoulli-tanh": (Autoencoder, dict(activation="tanh"), None, _binary_batch),
    "ae-squared-softplus-tanh-code": (
        Autoencoder,
        dict(activation="softplus", code_activation="tanh", reconstruction="squared"),
        None,
        _real_batch,
    ),
    "ae-no-hidden-sigmoid-code": (
        Autoencoder,
        dict(hidden=[], code_activation="sigmoid"),
        None,
        _binary_batch,
    ),
    "sparse-l1-linear-code": (
        SparseAutoencoder,
        dict(activation="elu", sparsity="l1", code_activation=None, sparsity_weight=0.7),
        "sparsity_weight",
        _binary_batch,
    ),
    "sparse-l1-tanh-code": (
        SparseAutoencoder,
        dict(activation="tanh", sparsity="l1", code_activation="tanh", sparsity_weight=0.7),
        "sparsity_weight",
        _binary_batch,
    ),
    "sparse-kl": (
        SparseAutoencoder,
        dict(activation="tanh", sparsity="kl", sparsity_weight=0.5, target=0.2),
        "sparsity_weight",
        _binary_batch,
    ),
    "denoising-mask": (
        DenoisingAutoencoder,
        dict(activation="tanh", noise="mask", noise_level=0.4),
        None,
        _binary_batch,
    ),
    "denoising-gaussian": (
        DenoisingAutoencoder,
        dict(activation="softplus", noise="gaussian", noise_level=0.5, reconstruction="squared"),
        None,
        _real_batch,
    ),
    "denoising-salt-pepper": (
        DenoisingAutoencoder,
        dict(activation="sigmoid", noise="salt-pepper", noise_level=0.5),
        None,
        _binary_batch,
    ),
    "contractive-sigmoid": (
        ContractiveAutoencoder,
        dict(hidden=(), code_activation="sigmoid", contraction=2.0),
        "contraction",
        _binary_batch,
    ),
    "contractive-tanh": (
        ContractiveAutoencoder,
        dict(hidden=(), code_activation="tanh", contraction=0.5, reconstruction="squared"),
        "contraction",
        _real_batch,
    ),
}


@pytest.mark.parametrize("case", sorted(AUTOENCODERS))
def test_autoencoder_gradients(case):
    cls, extra, penalty_switch, make_batch = AUTOENCODERS[case]
    kwargs = {"hidden": [5], "code_dim": 3, **extra}
    model = cls(**TINY, **kwargs, seed=1)
    x = make_batch(seed=2)

    def loss_of(grad):
        return model.loss(x, np.random.default_rng(3), grad=grad, corrupt=True)

    errors, report, analytic = gradient_errors(model, loss_of)
    assert_proven(errors)

    if isinstance(model, DenoisingAutoencoder):
        # The check covered the corruption: it changes the input ...
        assert not np.array_equal(model.corrupt(x, np.random.default_rng(3)), x)
        # ... and the loss without it differs.
        assert model.loss(x, grad=False)["loss"] != report["loss"]
    if penalty_switch is not None:
        # The penalty is there and moves the gradient, so the check above covered it.
        assert report["penalty"] > 0
        plain = cls(**TINY, **{**kwargs, penalty_switch: 0.0}, seed=1)
        plain.loss(x, np.random.default_rng(3))
        moved = max(
            np.abs(analytic[name] - plain.grads[name]).max() / np.abs(analytic[name]).max()
            for name in analytic
        )
        assert moved > 1e-2, f"the penalty barely changes the gradient ({moved:.1e})"


# ----------------------------------------------------------------------------- VAE

# name -> (keyword arguments, the step passed to loss, data)
VAES = {
    "bernoulli-tanh": ({"activation": "tanh"}, None, _binary_batch),
    "two-hidden-layers-sigmoid": ({"hidden": [5, 4], "activation": "sigmoid"}, None, _binary_batch),
    "beta-2.5-softplus": ({"activation": "softplus", "beta": 2.5}, None, _binary_batch),
    "beta-0.3-elu": ({"activation": "elu", "beta": 0.3}, None, _binary_batch),
    "warmup-midway": ({"activation": "tanh", "beta": 2.0, "warmup_steps": 10}, 5, _binary_batch),
    "warmup-early": ({"activation": "tanh", "warmup_steps": 100}, 7, _binary_batch),
    "n-samples-3": ({"activation": "softplus", "n_samples": 3}, None, _binary_batch),
    "recon-weight-0.3": (
        {"activation": "tanh", "recon_weight": 0.3, "beta": 1.5},
        None,
        _binary_batch,
    ),
    "recon-weight-0-kl-only": (
        {"activation": "softplus", "recon_weight": 0.0},
        None,
        _binary_batch,
    ),
    "recon-weight-0.3-gaussian-learned-var": (
        dict(activation="tanh", likelihood="gaussian", learned_var=True, recon_weight=0.3),
        None,
        _real_batch,
    ),
    "gaussian-fixed-var": (
        {"activation": "tanh", "likelihood": "gaussian", "init_log_var": -0.7},
        None,
        _real_batch,
    ),
    "gaussian-learned-var": (
        dict(
            activation="elu", likelihood="gaussian", learned_var=True, init_log_var=0.4, n_samples=2
        ),
        None,
        _real_batch,
    ),
}


def _eps(model, n_samples, seed=4):
    return np.random.default_rng(seed).standard_normal((n_samples, BATCH, model.latent_dim))


@pytest.mark.parametrize("case", sorted(VAES))
def test_vae_gradients(case):
    kwargs, step, make_batch = VAES[case]
    model = VAE(**TINY, **{"hidden": [5], "latent_dim": 3, **kwargs}, seed=1)
    x = make_batch(seed=2)
    eps = _eps(model, model.config["n_samples"])

    def loss_of(grad):
        return model.loss(x, eps=eps, step=step, grad=grad)

    errors, report, _ = gradient_errors(model, loss_of)
    assert_proven(errors)
    assert report["beta"] == model.beta_at(step)
    if model.config["learned_var"]:
        assert "likelihood.log_var" in errors


def test_vae_gradient_with_noise_drawn_from_a_generator():
    """The other way of holding the noise fixed: a generator re-seeded on every call."""
    model = VAE(**TINY, hidden=[5], latent_dim=2, activation="tanh", n_samples=2, seed=5)
    x = _binary_batch(seed=6)

    def loss_of(grad):
        return model.loss(x, np.random.default_rng(7), grad=grad)

    errors, _, _ = gradient_errors(model, loss_of)
    assert_proven(errors)


def test_recon_weight_scales_the_reconstruction_term_and_its_gradient(tmp_path):
    """loss = r · recon + beta · KL; r = 0 leaves the decoder without gradient."""
    x = _binary_batch(seed=2)
    settings = {**TINY, "hidden": [5], "latent_dim": 3, "activation": "tanh", "seed": 1}
    plain, weighted, kl_only = (VAE(**settings, recon_weight=r) for r in (1.0, 0.3, 0.0))
    eps = _eps(plain, 1)
    reports = [model.loss(x, eps=eps) for model in (plain, weighted, kl_only)]
    for report, r in zip(reports, (1.0, 0.3, 0.0)):
        assert report["loss"] == pytest.approx(r * report["recon"] + report["kl"], rel=1e-12)
        assert report["elbo"] == pytest.approx(-(report["recon"] + report["kl"]), rel=1e-12)
    assert reports[1]["recon"] == reports[0]["recon"]  # the same forward pass
    decoder = [name for name in plain.grads if name.startswith("decoder.")]
    for name in decoder:
        np.testing.assert_allclose(weighted.grads[name], 0.3 * plain.grads[name], rtol=1e-12)
        assert not kl_only.grads[name].any(), name
    assert VAE.load(kl_only.save(tmp_path / "kl-only.npz")).config["recon_weight"] == 0.0


def _spread_kl(model):
    """Push the three latent dimensions' KL apart (mean offsets 0, 0.9, 1.8)."""
    model.mu_head.params["b"][:] = [0.0, 0.9, 1.8]


def test_vae_gradients_with_free_bits_some_dims_under_the_floor():
    x = _binary_batch(seed=2)
    settings = {**TINY, "hidden": [5], "latent_dim": 3, "activation": "tanh", "seed": 1}
    probe = VAE(**settings)
    _spread_kl(probe)
    eps = _eps(probe, 1)
    kl_per_dim = np.sort(probe.loss(x, eps=eps, grad=False)["kl_per_dim"])
    floor = float(kl_per_dim[:2].mean())  # one dimension under the floor, two above

    model = VAE(**settings, free_bits=floor, beta=1.5)
    _spread_kl(model)
    errors, report, _ = gradient_errors(model, lambda grad: model.loss(x, eps=eps, grad=grad))
    assert_proven(errors)

    kl_per_dim = report["kl_per_dim"]
    under, over = kl_per_dim < floor, kl_per_dim > floor
    assert under.sum() == 1 and over.sum() == 2, (kl_per_dim, floor)
    # Far enough from the kink of max(floor, KL) that no difference step crosses it.
    assert np.abs(kl_per_dim - floor).min() > 1e-3
    expected = report["recon"] + 1.5 * np.maximum(kl_per_dim, floor).sum()
    assert report["loss"] == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- IWAE


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_iwae_gradients(k, activation):
    model = IWAE(**TINY, hidden=[5], latent_dim=3, activation=activation, k=k, seed=1)
    x = _binary_batch(seed=2)
    eps = _eps(model, k)
    errors, report, _ = gradient_errors(model, lambda grad: model.loss(x, eps=eps, grad=grad))
    assert_proven(errors)
    assert report["loss"] == -report["bound"]


def test_iwae_gradients_gaussian_learned_variance():
    model = IWAE(
        **TINY,
        hidden=[5],
        latent_dim=2,
        activation="elu",
        likelihood="gaussian",
        learned_var=True,
        init_log_var=-0.3,
        k=3,
        seed=8,
    )
    x = _real_batch(seed=9)
    eps = _eps(model, 3)
    errors, _, _ = gradient_errors(model, lambda grad: model.loss(x, eps=eps, grad=grad))
    assert_proven(errors)
    assert "likelihood.log_var" in errors


def test_the_check_has_teeth_at_model_scale():
    """A gradient wrong by one part in 10,000 in one parameter array is reported as wrong."""
    model = IWAE(**TINY, hidden=[5], latent_dim=3, activation="tanh", k=2, seed=1)
    x = _binary_batch(seed=2)
    eps = _eps(model, 2)
    errors = errors_with_one_gradient_broken(
        model, lambda grad: model.loss(x, eps=eps, grad=grad), "log_var_head.W"
    )
    assert errors["log_var_head.W"] > 10 * TOLERANCE
    assert errors["mu_head.W"] < TOLERANCE
