"""npvae.distributions: each log-density against its textbook formula, each gradient
against finite differences (float64), and the KL against a Monte Carlo estimate."""

import numpy as np
import pytest

from npvae.distributions import (
    LOG_2PI,
    Bernoulli,
    DiagonalGaussian,
    Gaussian,
    make_likelihood,
)
from npvae.errors import ConfigError
from npvae.gradcheck import TOLERANCE, check_gradients


def _normal_log_pdf(x, mean, var):
    """log N(x; mean, var) entry by entry, written out."""
    return -0.5 * np.log(2 * np.pi * var) - (x - mean) ** 2 / (2 * var)


# ----------------------------------------------------------------------------- Gaussian p(x|z)


def _gaussian_case(seed=0, n=4, dim=6, learned=True, init_log_var=0.3):
    rng = np.random.default_rng(seed)
    lik = Gaussian(dim, learned=learned, init_log_var=init_log_var, dtype=np.float64)
    lik.log_var[:] += rng.normal(scale=0.5, size=dim)  # a different variance per pixel
    x = rng.normal(size=(n, dim))
    mean = rng.normal(size=(n, dim))
    return lik, x, mean


def test_gaussian_log_prob_matches_the_formula():
    lik, x, mean = _gaussian_case()
    expected = _normal_log_pdf(x, mean, np.exp(lik.log_var)).sum(axis=1)
    np.testing.assert_allclose(lik.log_prob(x, mean), expected, rtol=1e-12)
    log_p, _ = lik.log_prob_and_grad(x, mean)
    np.testing.assert_allclose(log_p, expected, rtol=1e-12)


def test_gaussian_gradients_by_finite_differences():
    lik, x, mean = _gaussian_case(seed=1)
    weight = np.random.default_rng(2).normal(size=len(x))  # d loss / d log p_n

    def loss():
        return float(weight @ lik.log_prob(x, mean))

    _, dmean = lik.log_prob_and_grad(x, mean)
    lik.zero_grad()
    lik.write_grads(x, mean, weight)
    analytic = {"mean": weight[:, None] * dmean, "log_var": lik.grads["log_var"].copy()}
    errors = check_gradients(loss, {"mean": mean, "log_var": lik.params["log_var"]}, analytic)
    assert max(errors.values()) < TOLERANCE, errors


def test_gaussian_writes_its_gradient_and_fixed_variance_has_no_parameters():
    lik, x, mean = _gaussian_case(seed=3)
    weight = np.ones(len(x))
    lik.zero_grad()
    lik.write_grads(x, mean, weight)
    once = lik.grads["log_var"].copy()
    assert once.any()
    lik.grads["log_var"].fill(np.nan)
    lik.write_grads(x, mean, 2 * weight)
    np.testing.assert_allclose(lik.grads["log_var"], 2 * once, rtol=1e-14)

    fixed, x, mean = _gaussian_case(learned=False, init_log_var=-1.0)
    assert fixed.params == {} and fixed.grads == {}
    fixed.write_grads(x, mean, weight)  # nothing to write into, and no error
    expected = _normal_log_pdf(x, mean, np.exp(fixed.log_var)).sum(axis=1)
    np.testing.assert_allclose(fixed.log_prob(x, mean), expected, rtol=1e-12)
    assert fixed.mean(mean) is mean


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_each_likelihood_pairs_s_draws_with_their_examples_as_if_tiled(likelihood):
    # The models hand x (n, D) beside S n sample-major rows (row i draws for x[i mod n]).
    lik, x, _ = _gaussian_case(seed=5, n=3)
    out = np.random.default_rng(6).normal(size=(4 * len(x), x.shape[1]))  # S = 4
    if likelihood == "bernoulli":
        lik, x = Bernoulli(), (x > 0).astype(np.float64)
    tiled = np.tile(x, (4, 1))
    weight = np.random.default_rng(7).normal(size=len(out))
    np.testing.assert_array_equal(lik.log_prob(x, out), lik.log_prob(tiled, out))
    for got, expected in zip(lik.log_prob_and_grad(x, out), lik.log_prob_and_grad(tiled, out)):
        np.testing.assert_array_equal(got, expected)
    lik.zero_grad()
    lik.write_grads(x, out, weight)
    paired = {name: grad.copy() for name, grad in lik.grads.items()}
    lik.zero_grad()
    lik.write_grads(tiled, out, weight)
    assert paired.keys() == lik.grads.keys()
    for name in paired:
        np.testing.assert_array_equal(paired[name], lik.grads[name])


# ----------------------------------------------------------------------------- Bernoulli p(x|z)


def test_bernoulli_log_prob_matches_the_formula_and_stays_finite():
    rng = np.random.default_rng(4)
    x = (rng.random((5, 7)) < 0.4).astype(np.float64)
    logits = rng.normal(scale=3, size=(5, 7))
    p = 1 / (1 + np.exp(-logits))
    expected = (x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=1)
    lik = Bernoulli()
    np.testing.assert_allclose(lik.log_prob(x, logits), expected, rtol=1e-10)
    np.testing.assert_allclose(lik.mean(logits), p, rtol=1e-12)

    # Extreme logits: log sigmoid(l) = -softplus(-l), exact and finite.
    huge = np.array([[800.0, -800.0, 800.0]])
    bits = np.array([[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(lik.log_prob(bits, huge), [-800.0], rtol=1e-12)
    assert lik.params == {} and lik.grads == {}


def test_bernoulli_gradient_by_finite_differences():
    rng = np.random.default_rng(5)
    x = rng.random((4, 6))  # grey levels in [0, 1] are allowed too
    logits = rng.normal(size=(4, 6))
    weight = rng.normal(size=4)
    _, dlogits = Bernoulli().log_prob_and_grad(x, logits)

    def loss():
        return float(weight @ Bernoulli().log_prob(x, logits))

    errors = check_gradients(loss, {"logits": logits}, {"logits": weight[:, None] * dlogits})
    assert errors["logits"] < TOLERANCE


# ----------------------------------------------------------------------------- q(z|x)


def _posterior(seed=6, n=5, d=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(scale=0.8, size=(n, d)), rng.normal(size=(n, d))


def test_sample_is_mean_plus_standard_deviation_times_eps():
    mu, log_var, eps = _posterior()
    z = DiagonalGaussian.sample(mu, log_var, eps)
    np.testing.assert_allclose(z, mu + np.sqrt(np.exp(log_var)) * eps, rtol=1e-12)


def test_samples_have_variance_exp_log_var():
    """The numpy-ml bug: a sampler that uses exp(log_var) as the standard deviation."""
    mu = np.array([[0.5, -1.0, 2.0]])
    log_var = np.array([[-1.5, 0.0, 1.2]])  # variances far from their square roots
    eps = np.random.default_rng(7).standard_normal((40_000, 3))
    z = DiagonalGaussian.sample(np.repeat(mu, len(eps), 0), np.repeat(log_var, len(eps), 0), eps)
    # The sample variance of 40,000 normals is within ~1.5% (2 sigma) of the truth.
    np.testing.assert_allclose(z.var(axis=0), np.exp(log_var[0]), rtol=0.03)
    np.testing.assert_allclose(z.mean(axis=0), mu[0], atol=0.05)


def test_sample_backward_by_finite_differences():
    mu, log_var, eps = _posterior(seed=8)
    dz = np.random.default_rng(9).normal(size=mu.shape)
    dmu, dlog_var = DiagonalGaussian.sample_backward(dz, log_var, eps)

    def loss():
        return float(np.sum(DiagonalGaussian.sample(mu, log_var, eps) * dz))

    errors = check_gradients(loss, {"mu": mu, "log_var": log_var}, {"mu": dmu, "log_var": dlog_var})
    assert max(errors.values()) < TOLERANCE, errors


def test_kl_per_dim_formula_and_gradient():
    mu, log_var, _ = _posterior(seed=10)
    kl = DiagonalGaussian.kl_per_dim(mu, log_var)
    np.testing.assert_allclose(kl, 0.5 * (mu**2 + np.exp(log_var) - 1 - log_var), rtol=1e-12)
    assert np.all(kl >= 0)
    at_prior = DiagonalGaussian.kl_per_dim(np.zeros((2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(at_prior, 0)
    dmu, dlog_var = DiagonalGaussian.kl_grad(mu, log_var)

    def loss():
        return float(DiagonalGaussian.kl_per_dim(mu, log_var).sum())

    errors = check_gradients(loss, {"mu": mu, "log_var": log_var}, {"mu": dmu, "log_var": dlog_var})
    assert max(errors.values()) < TOLERANCE, errors


def test_kl_matches_monte_carlo():
    """KL(q || p) = E_q[log q(z) - log p(z)], estimated with 50,000 draws per row."""
    mu, log_var, _ = _posterior(seed=11, n=3)
    rng = np.random.default_rng(12)
    for row in range(len(mu)):
        eps = rng.standard_normal((50_000, mu.shape[1]))
        z = mu[row] + np.exp(0.5 * log_var[row]) * eps
        log_q = _normal_log_pdf(z, mu[row], np.exp(log_var[row])).sum(axis=1)
        log_p = _normal_log_pdf(z, 0.0, 1.0).sum(axis=1)
        estimate = log_q - log_p
        standard_error = estimate.std() / np.sqrt(len(estimate))
        analytic = DiagonalGaussian.kl_per_dim(mu[row : row + 1], log_var[row : row + 1]).sum()
        gap = estimate.mean() - analytic
        assert abs(gap) < 4 * standard_error, (row, gap, standard_error)


def test_log_prob_of_sample_is_the_density_of_z():
    mu, log_var, eps = _posterior(seed=13)
    z = mu + np.exp(0.5 * log_var) * eps
    direct = _normal_log_pdf(z, mu, np.exp(log_var)).sum(axis=1)
    log_q = DiagonalGaussian.log_prob_of_sample(eps, log_var)
    np.testing.assert_allclose(log_q, direct, rtol=1e-12)
    # Any leading shape: (S, N, d) -> (S, N).
    stacked = DiagonalGaussian.log_prob_of_sample(np.stack([eps, eps]), np.stack([log_var] * 2))
    np.testing.assert_allclose(stacked, np.stack([direct, direct]), rtol=1e-12)


def test_prior_log_prob():
    z = np.random.default_rng(14).normal(size=(2, 4, 3))
    direct = _normal_log_pdf(z, 0.0, 1.0).sum(axis=-1)
    np.testing.assert_allclose(DiagonalGaussian.prior_log_prob(z), direct, rtol=1e-12)
    np.testing.assert_allclose(DiagonalGaussian.prior_log_prob(np.zeros((1, 3))), [-1.5 * LOG_2PI])


def test_conditional_gaussian_log_prob_matches_the_formula():
    """log N(z; mu, diag exp(log_var)) for a z drawn elsewhere (not from this mu and log_var)."""
    mu, log_var, z = _posterior(seed=18)
    expected = _normal_log_pdf(z, mu, np.exp(log_var)).sum(axis=1)
    np.testing.assert_allclose(DiagonalGaussian.log_prob(z, mu, log_var), expected, rtol=1e-12)
    log_p, _, _ = DiagonalGaussian.log_prob_and_grad(z, mu, log_var)
    np.testing.assert_allclose(log_p, expected, rtol=1e-12)
    # At mu = 0, log_var = 0 it is the prior; any leading shape: (S, N, d) -> (S, N).
    zeros = np.zeros_like(z)
    np.testing.assert_allclose(
        DiagonalGaussian.log_prob(z, zeros, zeros), DiagonalGaussian.prior_log_prob(z), rtol=1e-12
    )
    stacked = DiagonalGaussian.log_prob(
        np.stack([z, z]), np.stack([mu, mu]), np.stack([log_var] * 2)
    )
    np.testing.assert_allclose(stacked, np.stack([expected, expected]), rtol=1e-12)


def test_conditional_gaussian_gradients_by_finite_differences():
    mu, log_var, z = _posterior(seed=19)
    weight = np.random.default_rng(20).normal(size=len(z))  # d loss / d log p_n
    _, dmu, dlog_var = DiagonalGaussian.log_prob_and_grad(z, mu, log_var)

    def loss():
        return float(weight @ DiagonalGaussian.log_prob(z, mu, log_var))

    analytic = {"z": -dmu * weight[:, None], "mu": dmu * weight[:, None]}
    analytic["log_var"] = dlog_var * weight[:, None]
    errors = check_gradients(loss, {"z": z, "mu": mu, "log_var": log_var}, analytic)
    assert max(errors.values()) < TOLERANCE, errors


def test_float32_in_float32_out():
    mu, log_var, eps = (a.astype(np.float32) for a in _posterior(seed=15))
    x = np.random.default_rng(16).random((5, 4)).astype(np.float32)
    logits = np.random.default_rng(17).normal(size=(5, 4)).astype(np.float32)
    gaussian = Gaussian(4, learned=True, init_log_var=0.0, dtype=np.float32)
    outputs = [
        DiagonalGaussian.sample(mu, log_var, eps),
        *DiagonalGaussian.sample_backward(eps, log_var, eps),
        DiagonalGaussian.kl_per_dim(mu, log_var),
        *DiagonalGaussian.kl_grad(mu, log_var),
        DiagonalGaussian.log_prob_of_sample(eps, log_var),
        DiagonalGaussian.prior_log_prob(mu),
        DiagonalGaussian.log_prob(eps, mu, log_var),
        *DiagonalGaussian.log_prob_and_grad(eps, mu, log_var),
        *Bernoulli().log_prob_and_grad(x, logits),
        Bernoulli().mean(logits),
        *gaussian.log_prob_and_grad(x, logits),
        gaussian.log_prob(x, logits),
    ]
    gaussian.write_grads(x, logits, np.ones(5, np.float32))
    outputs.append(gaussian.grads["log_var"])
    assert [a.dtype for a in outputs] == [np.float32] * len(outputs)


def test_make_likelihood():
    bernoulli = make_likelihood(
        "bernoulli", 3, learned_var=False, init_log_var=0.0, dtype=np.float32
    )
    assert isinstance(bernoulli, Bernoulli)
    gaussian = make_likelihood("gaussian", 3, learned_var=True, init_log_var=-2.0, dtype=np.float64)
    assert isinstance(gaussian, Gaussian)
    np.testing.assert_array_equal(gaussian.params["log_var"], [-2.0] * 3)
    with pytest.raises(ConfigError, match="poisson"):
        make_likelihood("poisson", 3, learned_var=False, init_log_var=0.0, dtype=np.float32)
