"""The IWAE with two stochastic layers: its gradients, its meaning, and its file.

* Every parameter's gradient against centred differences in float64 (h = 1e-5,
  the house bar of 1e-7), for k = 1 (the ELBO) and k = 3, with the noise fixed.
* The bound against an independent forward pass written out here from the
  parameters (tanh layers, Gaussian and Bernoulli log-densities, the densities
  of q evaluated at z, not through eps); the bound rising from k = 1 to k = 10;
  log_importance_weights against the loss's own log-weights and the evaluator;
  a model of zero weights whose log-weights are known by hand.
* Save and load, float32, bad settings, and overfitting a tiny batch.
"""

import numpy as np
import pytest
from gradient_support import assert_proven, errors_with_one_gradient_broken, gradient_errors

import npvae.models
from npvae import estimators
from npvae.errors import CheckpointError, ConfigError
from npvae.gradcheck import TOLERANCE
from npvae.models import IWAE2
from npvae.optim import Adam

INPUT_DIM, BATCH = 8, 4
# Widths that differ everywhere, so that a reversed or swapped size cannot pass.
TINY = {
    "input_dim": INPUT_DIM,
    "hidden1": [6, 5],
    "latent1": 4,
    "hidden2": [5, 3],
    "latent2": 3,
    "activation": "tanh",
}


def _model(dtype="float64", seed=1, **kwargs):
    return IWAE2(**{**TINY, **kwargs}, dtype=dtype, seed=seed)


def _binary_batch(n=BATCH, seed=2, dim=INPUT_DIM):
    return (np.random.default_rng(seed).random((n, dim)) < 0.5).astype(np.float64)


def _eps(model, k, n=BATCH, seed=4):
    return np.random.default_rng(seed).standard_normal((k, n, model.latent_dim), dtype=model.dtype)


def _spread_variances(model):
    """Log-variance biases far from 0, where exp(lv) and exp(lv / 2) differ clearly."""
    for head, low, high in (
        ("log_var1_head", -1.5, 1.2),
        ("log_var2_head", -1.0, 1.5),
        ("prior_log_var1_head", -0.8, 1.0),
    ):
        bias = model.params[f"{head}.b"]
        bias[...] = np.linspace(low, high, bias.size)
    model.params["mu1_head.b"][...] = np.linspace(-1, 1, model.config["latent1"])
    return model


def _normal_log_pdf(x, mean, var):
    return -0.5 * np.log(2 * np.pi * var) - (x - mean) ** 2 / (2 * var)


def _log_mean_exp(a, axis=0):
    top = a.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.mean(np.exp(a - top), axis=axis))


def _reference_terms(model, x, eps):
    """Each term of log w, ``(S, N)``, and the draws z1, z2 ``(S, N, d)``, from the
    parameters alone (a tanh, Bernoulli model), the densities of q taken at z."""
    p, d1 = model.params, model.config["latent1"]
    n_hidden1, n_hidden2 = len(model.config["hidden1"]), len(model.config["hidden2"])

    def linear(name, h):
        return h @ p[f"{name}.W"] + p[f"{name}.b"]

    def mlp(name, h, n_linear, tanh_out):
        for i in range(n_linear):  # an MLP's Linear layers sit at 0, 2, 4, ...
            h = linear(f"{name}.{2 * i}", h)
            if i < n_linear - 1 or tanh_out:
                h = np.tanh(h)
        return h

    h1 = mlp("encoder1", x, n_hidden1, True)
    mu1, var1 = linear("mu1_head", h1), np.exp(linear("log_var1_head", h1))
    names = ("log_px", "log_pz1", "log_pz2", "log_qz1", "log_qz2", "z1", "z2")
    terms = {name: [] for name in names}
    for draw in eps:
        z1 = mu1 + np.sqrt(var1) * draw[:, :d1]
        h2 = mlp("encoder2", z1, n_hidden2, True)
        mu2, var2 = linear("mu2_head", h2), np.exp(linear("log_var2_head", h2))
        z2 = mu2 + np.sqrt(var2) * draw[:, d1:]
        g = mlp("prior_net", z2, n_hidden2, True)
        prior_mu1, prior_var1 = (
            linear("prior_mu1_head", g),
            np.exp(linear("prior_log_var1_head", g)),
        )
        logits = mlp("decoder", z1, n_hidden1 + 1, False)
        terms["log_px"].append((x * logits - np.logaddexp(0, logits)).sum(axis=1))
        terms["log_pz1"].append(_normal_log_pdf(z1, prior_mu1, prior_var1).sum(axis=1))
        terms["log_pz2"].append(_normal_log_pdf(z2, 0.0, 1.0).sum(axis=1))
        terms["log_qz1"].append(_normal_log_pdf(z1, mu1, var1).sum(axis=1))
        terms["log_qz2"].append(_normal_log_pdf(z2, mu2, var2).sum(axis=1))
        terms["z1"].append(z1)
        terms["z2"].append(z2)
    return {name: np.array(values) for name, values in terms.items()}


# ----------------------------------------------------------------------------- gradients


def _reference_log_weights(model, x, eps):
    """log w ``(S, N)`` from :func:`_reference_terms`."""
    terms = _reference_terms(model, x, eps)
    log_w = terms["log_px"] + terms["log_pz1"] + terms["log_pz2"]
    return log_w - terms["log_qz1"] - terms["log_qz2"]


# name -> (keyword arguments, data)
GRADIENT_CASES = {
    "k1-elbo": ({"k": 1}, _binary_batch),
    "k3": ({"k": 3}, _binary_batch),
    "k3-softplus": ({"k": 3, "activation": "softplus"}, _binary_batch),
    "k3-vae-objective": ({"k": 3, "objective": "vae"}, _binary_batch),
    "k2-gaussian-learned-var": (
        {"k": 2, "likelihood": "gaussian", "learned_var": True, "init_log_var": -0.3},
        lambda: np.random.default_rng(2).normal(size=(BATCH, INPUT_DIM)),
    ),
}


@pytest.mark.parametrize("case", sorted(GRADIENT_CASES))
def test_iwae2_gradients(case):
    kwargs, make_batch = GRADIENT_CASES[case]
    model = _spread_variances(_model(**kwargs))
    x = make_batch()
    eps = _eps(model, model.config["k"])
    errors, report, analytic = gradient_errors(
        model, lambda grad: model.loss(x, eps=eps, grad=grad)
    )
    assert_proven(errors)
    assert report["loss"] == -report["bound"]
    # No array is checked vacuously: each gets a gradient, through every path.
    silent = [name for name, grad in analytic.items() if not np.abs(grad).max() > 1e-6]
    assert not silent, silent
    if model.config["learned_var"]:
        assert "likelihood.log_var" in errors


@pytest.mark.parametrize("case", sorted(GRADIENT_CASES))
def test_a_loss_writes_every_gradient_whatever_they_held(case):
    """Every part writes its own gradients once: NaN left in them never reaches a step."""
    kwargs, make_batch = GRADIENT_CASES[case]
    model = _model(**kwargs)
    x, eps = make_batch(), _eps(model, model.config["k"])
    model.zero_grad()
    model.loss(x, eps=eps)
    clean = model.flat_grads.copy()
    model.flat_grads.fill(np.nan)
    model.loss(x, eps=eps)
    np.testing.assert_array_equal(model.flat_grads, clean)


def test_iwae2_gradient_with_noise_drawn_from_a_generator():
    model = _model(k=2, seed=5)
    x = _binary_batch(seed=6)
    errors, _, _ = gradient_errors(
        model, lambda grad: model.loss(x, np.random.default_rng(7), grad=grad)
    )
    assert_proven(errors)


def test_the_check_has_teeth_on_this_model():
    """A gradient wrong by one part in 10,000 in one array is reported as wrong."""
    model = _model(k=3)
    x, eps = _binary_batch(), _eps(model, 3)
    errors = errors_with_one_gradient_broken(
        model, lambda grad: model.loss(x, eps=eps, grad=grad), "prior_log_var1_head.W"
    )
    assert errors["prior_log_var1_head.W"] > 10 * TOLERANCE
    assert errors["prior_mu1_head.W"] < TOLERANCE


def test_the_normalised_weights_matter():
    """For k > 1 the gradient is not the average of the k one-sample gradients."""
    model = _spread_variances(_model(k=3))
    x, eps = _binary_batch(), _eps(model, 3)
    model.loss(x, eps=eps)
    weighted = model.flat_grads.copy()
    average = np.zeros_like(weighted)
    for draw in eps:
        model.loss(x, eps=draw[None])
        average += model.flat_grads / 3
    assert np.abs(weighted - average).max() > 1e-2 * np.abs(weighted).max()


def test_the_vae_objective_is_the_average_of_one_sample_elbos():
    """objective="vae": the loss and every gradient are the mean of the k one-sample ones,
    which the bound's are not (above); with one draw the two objectives are the same."""
    model = _spread_variances(_model(k=3, objective="vae"))
    x, eps = _binary_batch(), _eps(model, 3)
    report = model.loss(x, eps=eps)
    gradient = model.flat_grads.copy()
    losses, average = [], np.zeros_like(gradient)
    for draw in eps:
        losses.append(model.loss(x, eps=draw[None])["loss"])
        average += model.flat_grads / 3
    assert report["loss"] == pytest.approx(np.mean(losses), rel=1e-12)
    np.testing.assert_allclose(gradient, average, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(report["bound_per_example"], report["log_weights"].mean(axis=0))
    bound = _spread_variances(_model(k=3))
    assert bound.loss(x, eps=eps, grad=False)["loss"] < report["loss"]  # L_k above the ELBO
    one = _spread_variances(_model(k=1))
    np.testing.assert_array_equal(
        _spread_variances(_model(k=1, objective="vae")).loss(x, eps=eps[:1])["loss"],
        one.loss(x, eps=eps[:1])["loss"],
    )


# ----------------------------------------------------------------------------- meaning


def test_one_sample_bound_is_the_elbo_term_by_term():
    model = _spread_variances(_model(k=1))
    rng = np.random.default_rng(8)
    x = _binary_batch(n=6, seed=9)
    eps = rng.standard_normal((1, 6, model.latent_dim))
    report = model.loss(x, eps=eps, grad=False)
    terms = {name: value[0] for name, value in _reference_terms(model, x, eps).items()}

    elbo = terms["log_px"] + terms["log_pz1"] + terms["log_pz2"] - terms["log_qz1"]
    elbo -= terms["log_qz2"]
    np.testing.assert_allclose(report["bound_per_example"], elbo, rtol=1e-12)
    assert report["loss"] == pytest.approx(-elbo.mean(), rel=1e-12)
    assert report["elbo"] == pytest.approx(report["bound"], rel=1e-12)
    np.testing.assert_allclose(report["recon_per_example"], -terms["log_px"], rtol=1e-12)
    kl = terms["log_qz1"] + terms["log_qz2"] - terms["log_pz1"] - terms["log_pz2"]
    np.testing.assert_allclose(report["kl_per_example"], kl, rtol=1e-12)
    assert report["kl_per_dim"].shape == (model.latent_dim,)
    assert report["kl_per_dim"].sum() == pytest.approx(report["kl"], rel=1e-12)


def test_k_sample_bound_is_the_log_mean_of_the_reference_weights():
    model = _spread_variances(_model(k=3))
    x = _binary_batch(n=5, seed=10)
    eps = np.random.default_rng(11).standard_normal((3, 5, model.latent_dim))
    report = model.loss(x, eps=eps, grad=False)
    log_w = _reference_log_weights(model, x, eps)
    np.testing.assert_allclose(report["log_weights"], log_w, rtol=1e-12)
    np.testing.assert_allclose(report["bound_per_example"], _log_mean_exp(log_w), rtol=1e-12)
    np.testing.assert_allclose(report["elbo"], log_w.mean(), rtol=1e-12)
    # With the gradients asked for, the same numbers (to rounding: that path takes
    # log p(z1|z2) and log p(x|z1) from the kernels that give their gradients too).
    again = model.loss(x, eps=eps)
    assert again["loss"] == pytest.approx(report["loss"], rel=1e-14)
    np.testing.assert_allclose(again["log_weights"], report["log_weights"], rtol=1e-14)


def test_log_importance_weights_are_the_losss_log_weights():
    model = _spread_variances(_model(k=4))
    x = _binary_batch(n=3, seed=12)
    eps = np.random.default_rng(13).standard_normal((4, 3, model.latent_dim))
    log_w = model.log_importance_weights(x, eps)
    assert log_w.shape == (4, 3)
    np.testing.assert_allclose(log_w, model.loss(x, eps=eps, grad=False)["log_weights"], rtol=1e-12)


def test_the_evaluator_streams_this_models_weights():
    """estimators.importance_sampled draws eps (chunk, N, latent_dim) for this model too."""
    model = _spread_variances(_model())
    x = _binary_batch(n=3, seed=14)
    sampled = estimators.importance_sampled(
        model, x, np.random.default_rng(15), n_samples=50, batch_size=3, max_rows=21
    )
    (seed,) = estimators.batch_seeds(np.random.default_rng(15), 1)  # the one batch's draws
    eps = np.random.default_rng(seed).standard_normal((50, 3, model.latent_dim))
    log_w = _reference_log_weights(model, x, eps)
    np.testing.assert_allclose(sampled.log_px, _log_mean_exp(log_w), rtol=1e-12)
    np.testing.assert_allclose(sampled.elbo, log_w.mean(axis=0), rtol=1e-12)
    count, variances = estimators.active_units(model, x)
    assert variances.shape == (model.latent_dim,) and 0 <= count <= model.latent_dim


def test_bound_rises_from_one_sample_to_ten():
    """E[L_10] >= E[L_1], and both stay under log p(x) (estimated with 20,000 samples).

    Each example is repeated 2,000 times with fresh noise for each k, so the mean
    gap between the two bounds comes with a standard error from the same rows.
    The bar of 5 standard errors makes a pass by luck of the seed unlikely (one
    in a few million for a true gap of 0).  A log k left out of L_10 would lift
    it about 2.3 nats, above log p(x), which the last check would catch.
    """
    model = _spread_variances(_model())
    rng = np.random.default_rng(16)
    held = _binary_batch(n=3, seed=17)
    repeats = 2000
    rows = np.tile(held, (repeats, 1))  # row r * 3 + n is a repeat of example n
    bounds = {}
    for k in (1, 10):
        eps = rng.standard_normal((k, len(rows), model.latent_dim))
        bounds[k] = model.loss(rows, eps=eps, grad=False)["bound_per_example"]

    gap = bounds[10] - bounds[1]
    error = gap.std() / np.sqrt(len(gap))
    assert gap.mean() > 5 * error, (gap.mean(), error)

    log_px = _log_mean_exp(
        model.log_importance_weights(held, rng.standard_normal((20_000, 3, model.latent_dim)))
    )
    for k in (1, 10):
        per_example = bounds[k].reshape(repeats, 3)
        below = log_px - per_example.mean(axis=0)
        standard_error = per_example.std(axis=0) / np.sqrt(repeats)
        assert np.all(below > -3 * standard_error), (k, below, standard_error)


def test_zero_parameters_give_a_weight_of_two_to_the_minus_d():
    """All zero: q and p are N(0, I) at every layer, so log w = log p(x|z1) = −D log 2."""
    model = _model(k=3)
    model.flat_params.fill(0)
    x = _binary_batch()
    eps = _eps(model, 3)
    expected = np.full((3, BATCH), -INPUT_DIM * np.log(2))
    np.testing.assert_allclose(model.log_importance_weights(x, eps), expected, rtol=1e-14)
    report = model.loss(x, eps=eps)
    assert report["loss"] == pytest.approx(INPUT_DIM * np.log(2), rel=1e-14)
    assert report["kl"] == pytest.approx(0, abs=1e-14)


def test_zero_weights_with_biases_give_log_weights_by_hand():
    """Every weight 0: each Gaussian's parameters are its head's biases, the logits the
    decoder's last bias, and log w is a sum of one-dimensional log-densities."""
    model = _model(k=2)
    for name, param in model.params.items():
        param[...] = 0 if name.endswith(".W") else np.linspace(-0.9, 1.1, param.size)
    b = {name[: -len(".b")]: value for name, value in model.params.items() if name.endswith(".b")}
    x = _binary_batch()
    eps = _eps(model, 2)
    eps1, eps2 = eps[..., :4], eps[..., 4:]

    z1 = b["mu1_head"] + np.exp(b["log_var1_head"] / 2) * eps1  # (2, N, 4)
    z2 = b["mu2_head"] + np.exp(b["log_var2_head"] / 2) * eps2  # (2, N, 3)
    logits = b["decoder.4"]  # (8,): the same for every z1
    log_px = x @ logits - np.log1p(np.exp(logits)).sum()  # (N,)
    log_pz1 = _normal_log_pdf(z1, b["prior_mu1_head"], np.exp(b["prior_log_var1_head"]))
    log_pz2 = _normal_log_pdf(z2, 0, 1)
    log_qz1 = -0.5 * (np.log(2 * np.pi) + b["log_var1_head"] + eps1**2)
    log_qz2 = -0.5 * (np.log(2 * np.pi) + b["log_var2_head"] + eps2**2)
    expected = log_px + (log_pz1 - log_qz1).sum(-1) + (log_pz2 - log_qz2).sum(-1)
    np.testing.assert_allclose(model.log_importance_weights(x, eps), expected, rtol=1e-12)
    np.testing.assert_allclose(model.loss(x, eps=eps)["log_weights"], expected, rtol=1e-12)


def test_verbs_and_sampling_follow_the_generative_path():
    model = _spread_variances(_model())
    x = _binary_batch()
    mu, log_var = model.encode(x)
    assert mu.shape == log_var.shape == (BATCH, model.latent_dim)
    # decode reads z1 only: x depends on z2 through z1.
    moved = mu.copy()
    moved[:, 4:] += 3.0
    np.testing.assert_array_equal(model.decode(moved), model.decode(mu))
    np.testing.assert_array_equal(model.reconstruct(x), model.decode(mu))
    line = model.interpolate(x[0], x[1], steps=5)
    assert line.shape == (5, INPUT_DIM)
    np.testing.assert_allclose(line[[0, -1]], model.decode(mu[:2]), rtol=1e-12)
    np.testing.assert_allclose(line[2], model.decode((mu[:1] + mu[1:2]) / 2)[0], rtol=1e-12)
    # encode gives q(z1|x), then q(z2|z1) at z1 = mu1: the draws at eps = 0 are the
    # means, and log q there is −0.5 Σ (log 2π + log_var).
    terms = _reference_terms(model, x, np.zeros((1, BATCH, model.latent_dim)))
    np.testing.assert_allclose(mu, np.hstack([terms["z1"][0], terms["z2"][0]]), rtol=1e-12)
    for log_q, columns in (
        (terms["log_qz1"][0], np.s_[:, :4]),
        (terms["log_qz2"][0], np.s_[:, 4:]),
    ):
        expected = -0.5 * (np.log(2 * np.pi) + log_var[columns]).sum(axis=1)
        np.testing.assert_allclose(log_q, expected, rtol=1e-12)

    # sample: z2 ~ N(0, I), then z1 ~ p(z1|z2), both from rng in that order.
    rng = np.random.default_rng(18)
    z2 = rng.standard_normal((5, 3))
    eps1 = rng.standard_normal((5, 4))
    g = model.prior_net.forward(z2)
    mean, log_var1 = model.prior_mu1_head.forward(g), model.prior_log_var1_head.forward(g)
    z1 = mean + np.exp(log_var1 / 2) * eps1
    expected = 1 / (1 + np.exp(-model.decoder.forward(z1)))
    np.testing.assert_allclose(model.sample(5, np.random.default_rng(18)), expected, rtol=1e-12)


def test_init_output_bias_sets_the_pixel_decoders_bias():
    model = _model()
    mean = np.linspace(0.0, 1.0, INPUT_DIM)
    model.init_output_bias(mean)
    clipped = np.clip(mean, 0.001, 0.999)
    expected = np.log(clipped / (1 - clipped))
    np.testing.assert_allclose(model.params["decoder.4.b"], expected, rtol=1e-12)


# ----------------------------------------------------------------------------- as a user meets it


def test_parameter_count_and_the_papers_sizes():
    model = _model()
    assert IWAE2.parameter_count(model.config) == sum(p.size for p in model.params.values())
    paper = IWAE2.parameter_count(IWAE2().config)
    mlp = lambda sizes: sum(a * b + b for a, b in zip(sizes, sizes[1:]))  # noqa: E731
    by_hand = (
        mlp([784, 200, 200]) + 2 * (200 * 100 + 100)  # q(z1|x)
        + mlp([100, 100, 100]) + 2 * (100 * 50 + 50)  # q(z2|z1)
        + mlp([50, 100, 100]) + 2 * (100 * 100 + 100)  # p(z1|z2)
        + mlp([100, 200, 200, 784])  # p(x|z1)
    )  # fmt: skip
    assert paper == by_hand


def test_float32_training_stays_float32():
    model = _model(dtype="float32", k=3)
    x = _binary_batch().astype(np.float32)
    optimizer = Adam(model.params, lr=1e-3)
    for seed in range(2):
        report = model.loss(x, np.random.default_rng(seed))
        optimizer.step(model.grads)
    arrays = {**model.params, **{f"grad {k}": v for k, v in model.grads.items()}}
    arrays.update({f"report {k}": v for k, v in report.items() if isinstance(v, np.ndarray)})
    mu, log_var = model.encode(x)
    arrays.update(mu=mu, log_var=log_var, decoded=model.decode(mu), recon=model.reconstruct(x))
    arrays["sample"] = model.sample(3, np.random.default_rng(0))
    eps = np.zeros((2, BATCH, model.latent_dim), np.float32)
    arrays["log_importance_weights"] = model.log_importance_weights(x, eps)
    leaks = {name: str(a.dtype) for name, a in arrays.items() if a.dtype != np.float32}
    assert not leaks, leaks
    scalars = {k: v for k, v in report.items() if not isinstance(v, np.ndarray)}
    assert all(type(v) is float and np.isfinite(v) for v in scalars.values()), scalars


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k": 0},
        {"latent1": 0},
        {"latent2": 0},
        {"hidden1": []},
        {"hidden2": [4, 0]},
        {"objective": "elbo"},
    ],
)
def test_bad_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError) as err:
        _model(**kwargs)
    assert "\n" not in str(err.value)


def test_bad_input_and_noise_are_config_errors():
    model = _model(dtype="float32")
    x = _binary_batch().astype(np.float32)
    with pytest.raises(ConfigError, match="float64"):
        model.loss(x.astype(np.float64), np.random.default_rng(0))
    with pytest.raises(ConfigError, match=str(INPUT_DIM)):
        model.encode(np.zeros((2, INPUT_DIM + 1), np.float32))
    for eps in (np.zeros((1, BATCH, 4), np.float32), np.zeros((BATCH, 7), np.float32)):
        with pytest.raises(ConfigError, match="eps"):
            model.loss(x, eps=eps)
    with pytest.raises(ConfigError, match="float64"):
        model.log_importance_weights(x, np.zeros((1, BATCH, 7)))
    with pytest.raises(ConfigError):
        model.decode(np.zeros((2, 4), np.float32))  # z1 alone: decode takes (z1, z2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("objective", ["iwae", "vae"])
def test_save_load_round_trip_is_bit_identical(dtype, objective, tmp_path):
    model = _model(dtype=dtype, k=2, likelihood="gaussian", learned_var=True, objective=objective)
    x = _binary_batch().astype(model.dtype)
    optimizer = Adam(model.params, lr=0.05)
    for seed in range(3):  # off the initialisation, so a match means the arrays were read
        model.loss(x, np.random.default_rng(seed))
        optimizer.step(model.grads)
    path = model.save(tmp_path / "model.npz")
    eps = _eps(model, 2)
    for loaded in (IWAE2.load(path), npvae.models.load(path)):
        assert type(loaded) is IWAE2 and loaded.config == model.config
        for name in model.params:
            np.testing.assert_array_equal(loaded.params[name], model.params[name], err_msg=name)
        # Like with like: without gradients the Gaussian's log p takes another (equally
        # right) order of float32 operations than with them.
        for grad in (False, True):
            assert (
                loaded.loss(x, eps=eps, grad=grad)["loss"]
                == model.loss(x, eps=eps, grad=grad)["loss"]
            )
        np.testing.assert_array_equal(
            loaded.sample(2, np.random.default_rng(4)), model.sample(2, np.random.default_rng(4))
        )


def test_a_file_whose_sizes_do_not_fit_its_arrays_is_a_checkpoint_error(tmp_path):
    from npvae.serialize import load_arrays, save_arrays

    path = _model().save(tmp_path / "model.npz")
    arrays, header = load_arrays(path)
    header["config"]["latent2"] = 2
    save_arrays(path, arrays, header)
    with pytest.raises(CheckpointError, match="parameters"):
        npvae.models.load(path)


@pytest.mark.slow
def test_overfits_a_batch_of_32():
    model = IWAE2(
        input_dim=32, hidden1=[32, 32], latent1=8, hidden2=[16, 16], latent2=4, k=5, seed=0
    )
    x = (np.random.default_rng(0).random((32, 32)) < 0.3).astype(np.float32)
    eps = np.random.default_rng(1).standard_normal((5, 32, 12), dtype=np.float32)
    before = model.loss(x, eps=eps, grad=False)["loss"]
    optimizer = Adam(model.params, lr=1e-2)
    rng = np.random.default_rng(2)
    for _ in range(300):
        model.loss(x, rng)
        optimizer.step(model.grads)
    after = model.loss(x, eps=eps, grad=False)["loss"]
    assert after < 0.5 * before, (before, after)
