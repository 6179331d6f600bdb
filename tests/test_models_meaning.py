"""The models mean what they say: tests no gradient check can replace.

A sampler that uses exp(log_var) as the standard deviation, or a KL that forgets
a term, passes a gradient check (forward and backward agree); these tests pin
the quantities themselves to independent computations, and train small models
to show that each objective does what it is for.
"""

import numpy as np
import pytest

from npvae.distributions import LOG_2PI, DiagonalGaussian
from npvae.models import (
    IWAE,
    VAE,
    Autoencoder,
    ContractiveAutoencoder,
    DenoisingAutoencoder,
    SparseAutoencoder,
)
from npvae.optim import Adam

# ----------------------------------------------------------------------------- helpers


def _train(model, data, steps, lr=1e-2, batch=64, seed=0):
    """``steps`` Adam steps on minibatches drawn with replacement from ``data``."""
    rng = np.random.default_rng(seed)
    optimizer = Adam(model.params, lr=lr)
    for _ in range(steps):
        model.loss(data[rng.integers(0, len(data), batch)], rng)
        optimizer.step(model.grads)
    return model


def _two_factor_bits(n, rng, dim=12):
    """Binary data from two hidden Gaussian factors: bits ~ Bernoulli(sigmoid(u A))."""
    loadings = np.random.default_rng(100).normal(size=(2, dim)) * 2.5
    probabilities = 1 / (1 + np.exp(-(rng.normal(size=(n, 2)) @ loadings)))
    return (rng.random((n, dim)) < probabilities).astype(np.float64)


def _bars(n, rng, side=4):
    """side x side images: each row bar and each column bar is on with probability 1/4."""
    rows = rng.random((n, side)) < 0.25
    cols = rng.random((n, side)) < 0.25
    return (rows[:, :, None] | cols[:, None, :]).reshape(n, side * side).astype(np.float32)


def _log_mean_exp(a, axis=0):
    top = a.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.mean(np.exp(a - top), axis=axis))


def _normal_log_pdf(x, mean, var):
    return -0.5 * np.log(2 * np.pi * var) - (x - mean) ** 2 / (2 * var)


def _twin_vae_and_iwae(**kwargs):
    settings = {"input_dim": 8, "hidden": [6], "latent_dim": 2, "activation": "tanh"}
    settings.update(dtype="float64", seed=3, **kwargs)
    return VAE(**settings), IWAE(**settings, k=1)


# ----------------------------------------------------------------------------- IWAE and ELBO


def test_vae_and_iwae_built_alike_have_identical_weights():
    vae, iwae = _twin_vae_and_iwae()
    assert list(vae.params) == list(iwae.params)
    for name in vae.params:
        np.testing.assert_array_equal(vae.params[name], iwae.params[name], err_msg=name)


def test_iwae_with_one_sample_is_the_elbo_for_the_same_eps():
    """L_1 = log p(x|z) + log p(z) - log q(z|x), with the densities written out here."""
    vae, iwae = _twin_vae_and_iwae()
    rng = np.random.default_rng(4)
    x = (rng.random((6, 8)) < 0.5).astype(np.float64)
    eps = rng.standard_normal((1, 6, 2))

    bound = iwae.loss(x, eps=eps, grad=False)["bound_per_example"]
    log_px = -vae.loss(x, eps=eps, grad=False)["recon_per_example"]
    mu, log_var = vae.encode(x)
    z = mu + np.exp(0.5 * log_var) * eps[0]
    log_pz = _normal_log_pdf(z, 0.0, 1.0).sum(axis=1)
    log_qz = _normal_log_pdf(z, mu, np.exp(log_var)).sum(axis=1)
    np.testing.assert_allclose(bound, log_px + log_pz - log_qz, rtol=1e-12)
    # And the same through the VAE's own importance weights.
    np.testing.assert_allclose(vae.log_importance_weights(x, eps)[0], bound, rtol=1e-12)


def test_iwae_with_one_sample_averages_to_the_analytic_kl_elbo():
    """E_eps[L_1] = E_eps[log p(x|z)] - KL(q || p): the two differ only in how the KL is had."""
    vae, iwae = _twin_vae_and_iwae()
    rng = np.random.default_rng(5)
    x = (rng.random((5, 8)) < 0.5).astype(np.float64)
    draws = 4000
    rows = np.tile(x, (draws, 1))  # draw s of example n is row s * 5 + n
    eps = rng.standard_normal((1, len(rows), 2))
    bound = iwae.loss(rows, eps=eps, grad=False)["bound_per_example"].reshape(draws, 5)
    report = vae.loss(rows, eps=eps, grad=False)
    elbo = -(report["recon_per_example"] + report["kl_per_example"]).reshape(draws, 5)

    difference = bound - elbo  # log p(z) - log q(z|x) + KL: zero mean
    standard_error = difference.std(axis=0) / np.sqrt(draws)
    assert np.all(standard_error < 0.05)  # precise enough to mean something
    assert np.all(np.abs(difference.mean(axis=0)) < 4 * standard_error), (
        difference.mean(axis=0),
        standard_error,
    )


@pytest.mark.slow
def test_iwae_bound_rises_with_k_and_stays_below_the_log_likelihood():
    rng = np.random.default_rng(0)
    train, held = _two_factor_bits(256, rng), _two_factor_bits(64, rng)
    model = IWAE(
        input_dim=12, hidden=[16], latent_dim=2, activation="tanh", k=5, dtype="float64", seed=0
    )
    _train(model, train, steps=300, seed=1)

    # L_k for k = 1, 5, 50: every held example 20 times, independent noise per k.
    repeats = 20
    rows = np.tile(held, (repeats, 1))
    bounds = {}
    for k in (1, 5, 50):
        eps = rng.standard_normal((k, len(rows), 2))
        bounds[k] = model.loss(rows, eps=eps, grad=False)["bound_per_example"]

    # log p(x) two independent ways: importance sampling with 5,000 draws, and a
    # grid integral of p(x|z) p(z) over the 2-d latent space.
    log_w = model.log_importance_weights(held, rng.standard_normal((5000, len(held), 2)))
    log_px_sampled = _log_mean_exp(log_w)
    grid = np.linspace(-7, 7, 281)
    z = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
    logits = model.decoder.forward(z)  # (G, 12)
    log_px_given_z = held @ logits.T - np.logaddexp(0, logits).sum(axis=1)  # (N, G)
    log_pz = -0.5 * (z**2).sum(axis=1) - LOG_2PI
    cell = 2 * np.log(grid[1] - grid[0])
    log_px_grid = _log_mean_exp((log_px_given_z + log_pz + cell).T) + np.log(len(z))

    difference = log_px_sampled - log_px_grid
    assert abs(difference.mean()) < 0.02 and np.abs(difference).max() < 0.3, difference

    def gap(a, b):
        """Mean and standard error of a - b, row by row."""
        d = a - b
        return d.mean(), d.std() / np.sqrt(len(d))

    exact = np.tile(log_px_grid, repeats)
    for smaller, larger in ((1, 5), (5, 50)):
        mean, error = gap(bounds[larger], bounds[smaller])
        assert mean > 5 * error, (smaller, larger, mean, error)
    for k in (1, 5):
        mean, error = gap(exact, bounds[k])
        assert mean > 5 * error, (k, mean, error)
    mean, error = gap(exact, bounds[50])  # about 0.005 nats: it must not be above
    assert mean > -3 * error, (mean, error)


# ----------------------------------------------------------------------------- VAE internals


def _vae_with_spread_variances():
    """A float64 VAE whose log-variances sit far from 0, where exp(lv) and exp(lv/2) differ."""
    vae = VAE(input_dim=8, hidden=[6], latent_dim=3, activation="tanh", dtype="float64", seed=7)
    vae.log_var_head.params["b"][:] = [-1.5, 0.8, 1.6]
    vae.mu_head.params["b"][:] = [0.5, -1.0, 0.0]
    return vae


def test_vae_sampler_draws_with_variance_exp_log_var():
    vae = _vae_with_spread_variances()
    rng = np.random.default_rng(8)
    x = (rng.random((4, 8)) < 0.5).astype(np.float64)
    mu, log_var = vae.encode(x)

    # The loss decodes z = mu + exp(log_var / 2) eps: its reconstruction term is
    # -log p(x|z) at exactly that z ...
    eps = rng.standard_normal((1, 4, 3))
    recon = vae.loss(x, eps=eps, grad=False)["recon_per_example"]

    def neg_log_px(z):
        logits = vae.decoder.forward(z)
        return np.logaddexp(0, logits).sum(axis=1) - (x * logits).sum(axis=1)

    np.testing.assert_allclose(recon, neg_log_px(mu + np.exp(0.5 * log_var) * eps[0]), rtol=1e-12)
    # ... and not at the z of the classic bug (exp(log_var) as the standard deviation).
    wrong = neg_log_px(mu + np.exp(log_var) * eps[0])
    assert np.abs(recon - wrong).max() > 1e-2

    # Many draws for one example through the sampler the loss calls: mean mu,
    # variance exp(log_var).
    draws = 40_000
    noise = rng.standard_normal((draws, 3))
    rows = np.repeat(mu[:1], draws, 0), np.repeat(log_var[:1], draws, 0)
    z = DiagonalGaussian.sample(*rows, noise)
    np.testing.assert_allclose(z.var(axis=0), np.exp(log_var[0]), rtol=0.03)
    np.testing.assert_allclose(z.mean(axis=0), mu[0], atol=0.05)


def test_vae_kl_reports_add_up():
    vae = _vae_with_spread_variances()
    rng = np.random.default_rng(9)
    x = (rng.random((5, 8)) < 0.5).astype(np.float64)
    report = vae.loss(x, eps=rng.standard_normal((1, 5, 3)), grad=False)
    mu, log_var = vae.encode(x)
    by_hand = 0.5 * (mu**2 + np.exp(log_var) - 1 - log_var)  # (N, d)

    np.testing.assert_allclose(report["kl_per_example"], by_hand.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(report["kl_per_dim"], by_hand.mean(axis=0), rtol=1e-12)
    assert report["kl_per_dim"].sum() == pytest.approx(report["kl"], rel=1e-12)
    assert report["kl"] == pytest.approx(by_hand.sum(axis=1).mean(), rel=1e-12)
    assert report["elbo"] == pytest.approx(-(report["recon"] + report["kl"]), rel=1e-12)
    assert report["loss"] == pytest.approx(report["recon"] + report["kl"], rel=1e-12)

    # The analytic KL is E_q[log q(z|x) - log p(z)]: check it by sampling for one example.
    noise = rng.standard_normal((50_000, 3))
    z = mu[0] + np.exp(0.5 * log_var[0]) * noise
    estimate = (_normal_log_pdf(z, mu[0], np.exp(log_var[0])) - _normal_log_pdf(z, 0, 1)).sum(1)
    error = estimate.std() / np.sqrt(len(estimate))
    assert abs(estimate.mean() - report["kl_per_example"][0]) < 4 * error


def test_beta_weights_the_kl_but_not_the_elbo():
    x = (np.random.default_rng(10).random((4, 8)) < 0.5).astype(np.float64)
    eps = np.random.default_rng(11).standard_normal((1, 4, 2))
    reports = {
        beta: VAE(input_dim=8, hidden=[6], latent_dim=2, beta=beta, dtype="float64", seed=2).loss(
            x, eps=eps, grad=False
        )
        for beta in (1.0, 4.0)
    }
    one, four = reports[1.0], reports[4.0]
    assert four["elbo"] == one["elbo"] and four["kl"] == one["kl"]
    assert four["loss"] == pytest.approx(one["recon"] + 4.0 * one["kl"], rel=1e-12)


def test_warmup_schedule():
    vae = VAE(input_dim=8, hidden=[6], latent_dim=2, beta=3.0, warmup_steps=100)
    assert vae.beta_at(0) == 0.0
    assert vae.beta_at(50) == pytest.approx(1.5)
    assert vae.beta_at(25) == pytest.approx(0.75)
    assert vae.beta_at(100) == 3.0 and vae.beta_at(10_000) == 3.0
    assert vae.beta_at(None) == 3.0
    assert VAE(input_dim=8, hidden=[6], latent_dim=2, beta=3.0).beta_at(0) == 3.0  # no warm-up
    assert IWAE(input_dim=8, hidden=[6], latent_dim=2).beta_at(0) == 1.0

    x = np.zeros((3, 8), np.float32)
    eps = np.zeros((1, 3, 2), np.float32)
    midway = vae.loss(x, eps=eps, step=50, grad=False)
    assert midway["beta"] == pytest.approx(1.5)
    assert midway["loss"] == pytest.approx(midway["recon"] + 1.5 * midway["kl"], rel=1e-5)
    assert vae.loss(x, eps=eps, step=0, grad=False)["loss"] == pytest.approx(midway["recon"])


def test_free_bits_stop_the_kl_gradient_of_dimensions_under_the_floor():
    """Per latent dimension j, the heads' column j gets KL gradient only if KL_j > floor."""
    rng = np.random.default_rng(12)
    x = (rng.random((6, 8)) < 0.5).astype(np.float64)
    eps = rng.standard_normal((1, 6, 3))
    settings = {"input_dim": 8, "hidden": [6], "latent_dim": 3, "activation": "tanh"}
    settings.update(dtype="float64", seed=13)

    def gradients(**kwargs):
        model = VAE(**settings, **kwargs)
        model.mu_head.params["b"][:] = [0.0, 0.9, 1.8]  # KL per dimension well apart
        report = model.loss(x, eps=eps)
        return report, {name: grad.copy() for name, grad in model.grads.items()}

    probe, _ = gradients()
    kl_per_dim = probe["kl_per_dim"]
    floor = float(np.sort(kl_per_dim)[:2].mean())
    under = kl_per_dim < floor
    assert under.sum() == 1

    beta = 50.0  # the KL gradient dwarfs the reconstruction's
    _, free = gradients(beta=beta, free_bits=floor)
    _, full = gradients(beta=beta)
    _, recon_only = gradients(beta=0.0)
    for head in ("mu_head", "log_var_head"):
        for part, columns in ((f"{head}.W", np.s_[:, under]), (f"{head}.b", np.s_[under])):
            np.testing.assert_allclose(free[part][columns], recon_only[part][columns], atol=1e-12)
            assert np.abs(full[part][columns] - recon_only[part][columns]).max() > 1e-2
        over = ~under
        for part, columns in ((f"{head}.W", np.s_[:, over]), (f"{head}.b", np.s_[over])):
            np.testing.assert_allclose(free[part][columns], full[part][columns], atol=1e-12)
            assert np.abs(full[part][columns] - recon_only[part][columns]).max() > 1e-2
    # The decoder never sees the KL.
    for name in free:
        if name.startswith("decoder"):
            np.testing.assert_allclose(free[name], recon_only[name], atol=1e-12)


# ----------------------------------------------------------------------------- autoencoders


@pytest.mark.slow
def test_one_code_dimension_cannot_hold_two_factor_data():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(2, 8))

    def data(n):
        return np.tanh(rng.uniform(-1, 1, size=(n, 2)) @ mixing).astype(np.float32)

    train, test = data(512), data(256)
    variance = ((test - test.mean(axis=0)) ** 2).sum(axis=1).mean()
    errors = {}
    for code_dim in (1, 2):
        model = Autoencoder(
            input_dim=8,
            hidden=[16],
            code_dim=code_dim,
            activation="tanh",
            reconstruction="squared",
            seed=0,
        )
        _train(model, train, steps=600)
        errors[code_dim] = model.loss(test, grad=False)["recon"] / variance
    assert errors[2] < 0.03, errors  # two code units: almost all of the variance
    assert errors[1] > 0.1, errors  # one: a clear part of it stays unexplained
    assert errors[1] > 10 * errors[2], errors


@pytest.mark.slow
def test_kl_sparsity_drives_the_mean_activation_to_the_target():
    rng = np.random.default_rng(1)
    train, test = _bars(512, rng), _bars(256, rng)
    target = 0.1
    mean_activation = {}
    for weight in (0.0, 10.0):
        model = SparseAutoencoder(
            input_dim=16,
            hidden=[],
            code_dim=8,
            sparsity="kl",
            sparsity_weight=weight,
            target=target,
            seed=0,
        )
        _train(model, train, steps=300)
        mean_activation[weight] = model.encode(test).mean(axis=0)
    distance = {weight: np.abs(mean - target) for weight, mean in mean_activation.items()}
    assert np.all(distance[10.0] < 0.05), mean_activation
    assert np.all(mean_activation[0.0] > 0.3), mean_activation  # not sparse on its own
    assert distance[10.0].max() < distance[0.0].min() / 5, mean_activation


@pytest.mark.slow
def test_denoising_autoencoder_restores_masked_input_better_than_a_plain_one():
    rng = np.random.default_rng(2)
    train, test = _bars(512, rng), _bars(256, rng)
    masked = np.where(rng.random(test.shape) < 0.3, np.float32(0), test)
    errors = {}
    for cls, extra in ((Autoencoder, {}), (DenoisingAutoencoder, {"noise_level": 0.3})):
        model = cls(input_dim=16, hidden=[32], code_dim=16, activation="tanh", seed=0, **extra)
        _train(model, train, steps=600)
        errors[cls.kind] = ((model.reconstruct(masked) - test) ** 2).sum(axis=1).mean()
    assert errors["denoising-ae"] < 0.7 * errors["ae"], errors


@pytest.mark.slow
def test_contractive_penalty_lowers_the_jacobian_norm():
    rng = np.random.default_rng(3)
    train, test = _bars(512, rng), _bars(256, rng)
    norms = {}
    for contraction in (0.0, 1.0):
        model = ContractiveAutoencoder(
            input_dim=16, hidden=(), code_dim=8, contraction=contraction, seed=0
        )
        _train(model, train, steps=300)
        norms[contraction] = model.jacobian_norm(test).mean()
    assert norms[1.0] < 0.6 * norms[0.0], norms


@pytest.mark.parametrize("code_activation", ["sigmoid", "tanh"])
def test_jacobian_norm_is_the_encoder_jacobian_and_the_penalty_uses_it(code_activation):
    model = ContractiveAutoencoder(
        input_dim=6,
        hidden=(),
        code_dim=3,
        code_activation=code_activation,
        contraction=0.7,
        dtype="float64",
        seed=4,
    )
    x = np.random.default_rng(5).random((4, 6))
    h = 1e-6
    jacobians = np.stack(
        [(model.encode(x + h * e) - model.encode(x - h * e)) / (2 * h) for e in np.eye(6)],
        axis=1,
    )  # (N, D, d)
    by_differences = (jacobians**2).sum(axis=(1, 2))
    np.testing.assert_allclose(model.jacobian_norm(x), by_differences, rtol=1e-7)
    report = model.loss(x, grad=False)
    assert report["penalty"] == pytest.approx(0.7 * by_differences.mean(), rel=1e-7)


def test_sparsity_penalties_by_their_formulas():
    x = (np.random.default_rng(6).random((5, 8)) < 0.5).astype(np.float64)
    settings = {"input_dim": 8, "hidden": [6], "code_dim": 3, "dtype": "float64", "seed": 1}
    kl = SparseAutoencoder(**settings, sparsity_weight=0.4, target=0.2)
    rho_hat = kl.encode(x).mean(axis=0)
    expected = 0.4 * np.sum(0.2 * np.log(0.2 / rho_hat) + 0.8 * np.log(0.8 / (1 - rho_hat)))
    assert kl.loss(x, grad=False)["penalty"] == pytest.approx(expected, rel=1e-12)

    l1 = SparseAutoencoder(**settings, sparsity="l1", code_activation="tanh", sparsity_weight=0.4)
    expected = 0.4 * np.abs(l1.encode(x)).sum(axis=1).mean()
    report = l1.loss(x, grad=False)
    assert report["penalty"] == pytest.approx(expected, rel=1e-12)
    assert report["loss"] == pytest.approx(report["recon"] + report["penalty"], rel=1e-12)


@pytest.mark.parametrize("noise", ["mask", "salt-pepper", "gaussian"])
def test_denoising_corruption_matches_its_description(noise):
    model = DenoisingAutoencoder(
        input_dim=50, hidden=[4], code_dim=2, noise=noise, noise_level=0.3, dtype="float64"
    )
    x = np.full((400, 50), 0.5)
    noisy = model.corrupt(x, np.random.default_rng(7))
    assert noisy.shape == x.shape and noisy.dtype == x.dtype
    changed = noisy != x
    if noise == "gaussian":
        assert changed.all()
        assert (noisy - x).std() == pytest.approx(0.3, rel=0.02)
        return
    # 20,000 pixels: the fraction hit is within 0.01 of 0.3 (about 3 standard errors).
    assert changed.mean() == pytest.approx(0.3, abs=0.01)
    if noise == "mask":
        assert np.all(noisy[changed] == 0)
    else:
        assert set(np.unique(noisy[changed])) == {0.0, 1.0}
        assert (noisy[changed] == 1).mean() == pytest.approx(0.5, abs=0.03)
    # Clean input everywhere but in training: the verbs and the evaluation loss.
    report = model.loss(x[:5], grad=False)
    np.testing.assert_array_equal(model.reconstruct(x[:5]), model.decode(model.encode(x[:5])))
    assert report["loss"] == model.loss(x[:5], np.random.default_rng(8), grad=False)["loss"]


def test_denoising_corruption_can_be_passed_as_an_array():
    model = DenoisingAutoencoder(input_dim=12, hidden=[5], code_dim=2, dtype="float64", seed=1)
    x = np.random.default_rng(0).random((6, 12))
    drawn = model.loss(x, np.random.default_rng(3))
    drawn_grads = {name: grad.copy() for name, grad in model.grads.items()}
    x_tilde = model.corrupt(x, np.random.default_rng(3))
    given = model.loss(x, x_tilde=x_tilde)
    assert given["loss"] == drawn["loss"]
    for name, grad in model.grads.items():
        np.testing.assert_array_equal(grad, drawn_grads[name], err_msg=name)
    # The clean target stays x: reconstructing x_tilde itself is another loss.
    assert model.loss(x_tilde, x_tilde=x_tilde)["loss"] != given["loss"]
    with pytest.raises(ValueError, match="x_tilde has shape"):
        model.loss(x, x_tilde=x_tilde[:3])


def test_kl_sparsity_of_a_saturated_unit_is_finite():
    model = SparseAutoencoder(input_dim=4, hidden=[], code_dim=2, dtype="float32", seed=0)
    # Pre-activations of 40 saturate the float32 sigmoid to exactly 1 for every example.
    model.params["encoder.0.W"][...] = 10.0
    x = np.ones((8, 4), dtype=np.float32)
    assert np.all(model.encode(x) == 1.0)
    with np.errstate(all="raise"):
        report = model.loss(x)
    assert np.isfinite(report["loss"]) and report["penalty"] > 1.0
    assert all(np.isfinite(grad).all() for grad in model.grads.values())


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_codes_are_the_encoders_output_in_batches(kind):
    """``codes`` is the encoder's output (q(z|x)'s mean for a VAE), a batch at a time."""
    settings = dict(input_dim=6, hidden=[5], dtype="float64", seed=0)
    if kind == "vae":
        model = VAE(latent_dim=3, **settings)
    else:
        model = Autoencoder(code_dim=3, **settings)
    x = np.random.default_rng(1).random((23, 6))
    whole = model.encode(x)
    whole = whole[0] if kind == "vae" else whole
    np.testing.assert_allclose(model.codes(x, batch_size=5), whole, rtol=1e-12)
    assert model.codes(x[:0]).shape == (0, 3)
