"""npvae.evaluate: batched losses, the streamed importance-sampled log p(x), active units."""

from __future__ import annotations

import time

import numpy as np
import pytest

from npvae import evaluate
from npvae.errors import ConfigError
from npvae.models import VAE, Autoencoder


def small_vae(latent_dim: int = 1, seed: int = 0) -> VAE:
    return VAE(input_dim=6, hidden=[5], latent_dim=latent_dim, dtype="float64", seed=seed)


def binary_data(n: int, dim: int = 6, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, dim)) < 0.4).astype(np.float64)


def exact_log_px(model: VAE, x: np.ndarray) -> np.ndarray:
    """``log p(x) = log ∫ p(x|z) N(z; 0, 1) dz`` by quadrature over a fine 1-d grid: (N,)."""
    grid = np.linspace(-12.0, 12.0, 24_001)
    step = grid[1] - grid[0]
    probs = model.decode(grid[:, None])  # (G, D), the decoder's Bernoulli means
    log_p, log_1mp = np.log(probs), np.log1p(-probs)
    log_px_given_z = x @ log_p.T + (1 - x) @ log_1mp.T  # (N, G), independent of the kernels
    log_prior = -0.5 * (grid**2 + np.log(2 * np.pi))
    joint = log_px_given_z + log_prior
    peak = joint.max(axis=1, keepdims=True)
    return (peak + np.log(np.exp(joint - peak).sum(axis=1, keepdims=True) * step))[:, 0]


def elbo(model: VAE, x: np.ndarray, rng, n_samples: int = 20_000) -> np.ndarray:
    """The ELBO per example, ``E_q[log w]``, by Monte Carlo: (N,)."""
    eps = rng.standard_normal((n_samples, len(x), model.latent_dim))
    return model.log_importance_weights(x, eps).mean(axis=0)


# ----- log_likelihood: streaming ---------------------------------------------------------


def test_chunked_estimate_equals_one_shot_with_the_same_noise(monkeypatch):
    """Chunks of samples draw the same numbers in the same order as one big draw.

    The noise of one batch is drawn as ``(chunk, n, d)`` blocks one after the
    other; in C order these are consecutive slices of the one ``(S, n, d)``
    draw, so only the batch size (not ``max_rows``) decides which example gets
    which noise.  The estimates then agree to rounding.
    """
    model, x = small_vae(latent_dim=2), binary_data(7)
    shapes = []
    original = VAE.log_importance_weights

    def spy(self, batch, eps):
        shapes.append(eps.shape)
        return original(self, batch, eps)

    monkeypatch.setattr(VAE, "log_importance_weights", spy)
    done = []
    chunked = evaluate.log_likelihood(
        model, x, np.random.default_rng(3), n_samples=37, batch_size=3, max_rows=10,
        progress=done.append,
    )  # fmt: skip
    assert max(size * n for size, n, _ in shapes) <= 10  # memory bounded by max_rows
    assert sum(size for size, n, _ in shapes if n == 3) == 2 * 37  # two full batches...
    assert sum(size for size, n, _ in shapes if n == 1) == 37  # ...and the last example
    assert len(shapes) > 3 and done == [3, 6, 7]

    shapes.clear()
    one_shot = evaluate.log_likelihood(
        model, x, np.random.default_rng(3), n_samples=37, batch_size=3, max_rows=10**6
    )
    assert shapes == [(37, 3, 2), (37, 3, 2), (37, 1, 2)]
    assert chunked.shape == (7,)
    np.testing.assert_allclose(chunked, one_shot, rtol=1e-13, atol=0)

    other_noise = evaluate.log_likelihood(
        model, x, np.random.default_rng(4), n_samples=37, batch_size=3, max_rows=10
    )
    assert np.abs(other_noise - chunked).max() > 1e-6  # the comparison above can fail


def test_threads_give_the_same_estimates_as_one():
    """Each batch draws from its own generator, so the estimate does not depend on workers."""
    model, x = small_vae(latent_dim=2), binary_data(11)
    runs = {}
    for workers in (1, 2, 3):
        done = []
        runs[workers] = evaluate.importance_sampled(
            model, x, np.random.default_rng(3), n_samples=40, batch_size=2, max_rows=16,
            progress=done.append, workers=workers,
        )  # fmt: skip
        assert done == [2, 4, 6, 8, 10, 11]  # in order, whatever thread finished first
    for workers in (2, 3):
        for field in ("log_px", "elbo", "mc_error"):
            np.testing.assert_array_equal(getattr(runs[workers], field), getattr(runs[1], field))
    other = evaluate.log_likelihood(model, x, np.random.default_rng(4), n_samples=40, workers=2)
    assert np.abs(other - runs[1].log_px).max() > 1e-6  # the comparison above can fail


def test_threads_leave_the_blas_and_the_model_as_they_were():
    from threadpoolctl import threadpool_info

    model, x = small_vae(latent_dim=2), binary_data(6)
    weights = {name: value.copy() for name, value in model.params.items()}
    before = [pool["num_threads"] for pool in threadpool_info()]
    evaluate.log_likelihood(
        model, x, np.random.default_rng(0), n_samples=8, batch_size=2, workers=2
    )
    assert [pool["num_threads"] for pool in threadpool_info()] == before
    for name, value in model.params.items():
        np.testing.assert_array_equal(value, weights[name])


def test_an_error_in_a_thread_reaches_the_caller():
    model = small_vae(latent_dim=2)
    with pytest.raises(ConfigError, match="input is float32 but the model is float64"):
        evaluate.log_likelihood(
            model, binary_data(6).astype(np.float32), np.random.default_rng(0), n_samples=8,
            batch_size=2, workers=2,
        )  # fmt: skip


def test_float32_model_gives_float64_estimates():
    model = VAE(input_dim=6, hidden=[5], latent_dim=2, seed=0)
    estimates = evaluate.log_likelihood(
        model, binary_data(4).astype(np.float32), np.random.default_rng(0), n_samples=50
    )
    assert estimates.dtype == np.float64 and np.isfinite(estimates).all()


# ----- log_likelihood: meaning -----------------------------------------------------------


def test_importance_sampling_bounds_tighten_towards_the_exact_log_px():
    # This model (seed 1) has an ELBO well below log p(x): room to tighten (asserted below).
    model, x = small_vae(latent_dim=1, seed=1), binary_data(5, seed=3)
    # A proposal wider than the posterior keeps the weights tame: their relative
    # variance is at most about 1.2 here, so S samples give a standard error of about
    # sqrt(1.2 / S) nats (0.005 for S = 50 000), and the ELBO is 1-2.5 nats below.
    model.log_var_head.params["W"][...] = 0.0
    model.log_var_head.params["b"][...] = np.log(4.0)
    exact = exact_log_px(model, x)
    lower = elbo(model, x, np.random.default_rng(0))
    assert np.all(lower < exact - 1.0)

    rng = np.random.default_rng(1)
    few = np.mean([evaluate.log_likelihood(model, x, rng, n_samples=5) for _ in range(400)], 0)
    many = evaluate.log_likelihood(model, x, rng, n_samples=50_000)
    # E[log mean of S weights] rises with S from the ELBO (S = 1) towards log p(x).
    assert np.all(lower + 1.0 < few) and np.all(few < exact - 0.05)
    np.testing.assert_allclose(many, exact, atol=0.025)  # 4 standard errors


def test_elbo_from_importance_weights_matches_the_models_loss():
    """Both ways of writing the ELBO (analytic KL in the loss, log w here) agree."""
    model, x = small_vae(latent_dim=2, seed=4), binary_data(6, seed=5)
    from_weights = elbo(model, x, np.random.default_rng(1), n_samples=100_000).mean()
    eps = np.random.default_rng(2).standard_normal((20_000, len(x), 2))
    from_loss = model.loss(x, eps=eps, grad=False)["elbo"]
    assert from_weights == pytest.approx(from_loss, abs=0.02)


# ----- evaluate_loss ---------------------------------------------------------------------


def test_evaluate_loss_in_batches_equals_one_batch():
    """Per-batch means weighted by batch size; the noise stream is the same either way."""
    model, x = small_vae(latent_dim=2), binary_data(10)
    batched = evaluate.evaluate_loss(model, x, np.random.default_rng(6), batch_size=3)
    whole = model.loss(x, np.random.default_rng(6), grad=False)
    assert set(batched) == {"loss", "recon", "kl", "elbo", "kl_per_dim"}
    for key in batched:
        np.testing.assert_allclose(batched[key], whole[key], rtol=1e-12, err_msg=key)
    assert batched["kl_per_dim"].shape == (2,)
    assert batched["kl_per_dim"].sum() == pytest.approx(batched["kl"], rel=1e-12)


def test_evaluate_loss_of_an_autoencoder_has_no_kl():
    model = Autoencoder(input_dim=6, hidden=[5], code_dim=2, dtype="float64")
    result = evaluate.evaluate_loss(model, binary_data(5), np.random.default_rng(0))
    assert "kl" not in result and result["loss"] == pytest.approx(result["recon"])


# ----- active units ----------------------------------------------------------------------


def test_active_units_counts_dimensions_whose_posterior_mean_varies():
    model = VAE(input_dim=20, hidden=[16], latent_dim=4, dtype="float64", seed=0)
    dead = [1, 3]
    model.mu_head.params["W"][:, dead] = 0.0  # these means ignore the input...
    model.mu_head.params["b"][dead] = 0.7  # ...and sit at a constant
    model.mu_head.params["W"][:, [0, 2]] *= 10.0
    x = np.random.default_rng(0).random((200, 20))
    count, variances = evaluate.active_units(model, x, batch_size=64)
    assert count == 2 and variances.shape == (4,)
    assert np.all(variances[dead] < 1e-20) and np.all(variances[[0, 2]] > 0.01)
    mu, _ = model.encode(x)
    np.testing.assert_allclose(variances, mu.var(axis=0), rtol=1e-12)
    assert evaluate.active_units(model, x, threshold=variances.max() + 1)[0] == 0


def test_a_unit_just_under_the_threshold_is_inactive():
    model = VAE(input_dim=20, hidden=[16], latent_dim=2, dtype="float64", seed=0)
    x = np.random.default_rng(1).random((100, 20))
    _, variances = evaluate.active_units(model, x)
    # Scale dimension 0 to a variance of 0.009 and dimension 1 to 0.011 around 0.01.
    model.mu_head.params["W"][:, 0] *= np.sqrt(0.009 / variances[0])
    model.mu_head.params["W"][:, 1] *= np.sqrt(0.011 / variances[1])
    count, scaled = evaluate.active_units(model, x)
    np.testing.assert_allclose(scaled, [0.009, 0.011], rtol=1e-9)
    assert count == 1


# ----- importance sampling against an exact log p(x) -------------------------------------


def linear_gaussian_vae(seed: int = 0) -> tuple[VAE, np.ndarray, np.ndarray]:
    """A VAE whose decoder is linear, so ``p(x) = N(c, A Aᵀ + σ² I)`` exactly.

    The decoder is ``z -> relu(z W1 + b1) W2 + b2``; with ``b1`` at 50 every
    hidden unit stays positive for any z the prior or the encoder puts mass
    on (|z W1| < 50), so the ReLU is the identity there and the mean is
    ``z A + c`` with ``A = W1 W2``, ``c = b1 W2 + b2`` (set to 0.2).  Returns the model and
    ``(mean (D,), covariance (D, D))`` of p(x).
    """
    model = VAE(
        input_dim=5, hidden=[4], latent_dim=2, likelihood="gaussian", init_log_var=np.log(0.3),
        activation="relu", dtype="float64", seed=seed,
    )  # fmt: skip
    first, last = model.decoder.layers[0], model.decoder.layers[-1]
    first.params["b"][:] = 50.0
    last.params["b"][:] = 0.2 - first.params["b"] @ last.params["W"]  # so that c = 0.2
    a = first.params["W"] @ last.params["W"]  # (d, D)
    c = first.params["b"] @ last.params["W"] + last.params["b"]  # (D,)
    return model, c, a.T @ a + 0.3 * np.eye(5)


def gaussian_log_density(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``log N(x; mean, cov)`` per row of ``x (N, D)``, by a Cholesky factor: (N,)."""
    factor = np.linalg.cholesky(cov)
    white = np.linalg.solve(factor, (x - mean).T)  # (D, N)
    log_det = 2 * np.log(np.diag(factor)).sum()
    return -0.5 * ((white**2).sum(axis=0) + log_det + len(mean) * np.log(2 * np.pi))


def test_the_estimate_matches_a_linear_gaussian_models_exact_log_px():
    model, mean, cov = linear_gaussian_vae()
    # The proposal q = N(0, 2 I), wider than the prior and so than any posterior, bounds the
    # weights p(x|z) p(z) / q(z): their variance is finite and the delta method's error is
    # a true standard error.  (With the untrained encoder's q the weights are heavy-tailed:
    # over 40 seeds, 14 put an estimate more than 4 of its own errors from the truth.)
    for head, value in ((model.mu_head, 0.0), (model.log_var_head, np.log(2.0))):
        head.params["W"][...] = 0.0
        head.params["b"][...] = value
    x = np.random.default_rng(0).multivariate_normal(mean, cov, size=40)
    exact = gaussian_log_density(x, mean, cov)
    sampled = evaluate.importance_sampled(model, x, np.random.default_rng(1), n_samples=5000)
    gap = sampled.log_px - exact
    # Each estimate within 4.5 of its own Monte Carlo errors (its bias is far smaller; the
    # largest of 200 seeds' 8,000 estimates was 4.24 errors off)...
    assert np.all(np.abs(gap) < 4.5 * sampled.mc_error), (gap, sampled.mc_error)
    # ...and the test-set mean within 3 of its standard errors of the exact mean.
    assert abs(gap.mean()) < 3 * np.sqrt(np.mean(sampled.mc_error**2) / len(x))
    # q is far from the posterior, so the ELBO is well below log p(x) (about 10 nats here).
    assert (exact - sampled.elbo).mean() > 0.5


def test_the_estimate_rises_towards_the_exact_log_px_as_k_grows():
    model, mean, cov = linear_gaussian_vae(seed=3)
    x = np.random.default_rng(2).multivariate_normal(mean, cov, size=200)
    exact = gaussian_log_density(x, mean, cov).mean()
    estimates = [
        evaluate.log_likelihood(model, x, np.random.default_rng(k), n_samples=k).mean()
        for k in (1, 10, 100, 1000)
    ]
    # The bias shrinks like 1/k: at k = 100 and 1000 it is below the noise of a mean over 200
    # images, so their order (and the sign of the last gap) is left to chance (over 30
    # seeds, 4 had k = 1000 below k = 100 and 6 had it above the exact value).
    assert estimates[:3] == sorted(estimates[:3]), estimates
    assert estimates[0] < exact - 0.5  # k = 1 is the ELBO
    assert abs(exact - estimates[-1]) < 0.05 * (exact - estimates[0])


def test_the_estimate_is_never_below_the_elbo_of_the_same_samples():
    """log mean w >= mean log w for every example and every k (Jensen), draw by draw."""
    model, x = small_vae(latent_dim=2), binary_data(30)
    for k in (1, 2, 7, 300):
        sampled = evaluate.importance_sampled(
            model, x, np.random.default_rng(k), n_samples=k, batch_size=7, max_rows=50
        )
        assert np.all(sampled.log_px >= sampled.elbo - 1e-12), k
        if k == 1:  # one sample: the two are the same number, and the error is 0
            np.testing.assert_allclose(sampled.log_px, sampled.elbo, rtol=1e-12)
            assert np.all(sampled.mc_error == 0)
        else:
            assert np.all(sampled.log_px > sampled.elbo)
    # The ELBO of the same samples is the mean log-weight, computed independently here.
    (seed,) = evaluate.batch_seeds(np.random.default_rng(5), 1)  # one batch of 30 images
    eps = np.random.default_rng(seed).standard_normal((40, 30, 2))
    log_w = model.log_importance_weights(x, eps)
    sampled = evaluate.importance_sampled(model, x, np.random.default_rng(5), n_samples=40)
    np.testing.assert_allclose(sampled.elbo, log_w.mean(axis=0), rtol=1e-12)


def test_a_stopped_estimate_leaves_the_batches_not_yet_begun(monkeypatch):
    """An error in progress (as Ctrl-C would be) ends the pass without running the rest."""
    model, x = small_vae(latent_dim=2), binary_data(40)
    calls = []
    original = VAE.log_importance_weights

    def slow(self, batch, eps):
        calls.append(len(batch))
        time.sleep(0.05)  # so that batches are still waiting when the first one ends
        return original(self, batch, eps)

    def stop(done):
        raise KeyboardInterrupt

    monkeypatch.setattr(VAE, "log_importance_weights", slow)
    with pytest.raises(KeyboardInterrupt):
        evaluate.importance_sampled(
            model, x, np.random.default_rng(0), n_samples=4, batch_size=1, progress=stop,
            workers=2,
        )  # fmt: skip
    assert 1 <= len(calls) <= 4  # the first, and the few begun before it ended; not all 40
