"""npvae.kernels: every fast form against its NumPy reference, at the edges, and in meaning.

CI runs this file twice, with numba and with ``NPVAE_USE_NUMBA=0`` (the same
loops as plain Python), so example counts stay modest.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npvae import _compiled, kernels
from npvae.gradcheck import numerical_gradient, rel_error

DTYPES = [np.float32, np.float64]
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
LOG_2PI = math.log(2 * math.pi)


def normal(rng, shape, dtype, scale=1.0):
    return (rng.normal(size=shape) * scale).astype(dtype)


def pixels(rng, shape, dtype):
    """Grey levels in [0, 1], a quarter of them exactly 0 or 1."""
    x = rng.random(shape)
    x[rng.random(shape) < 0.25] = rng.integers(0, 2)
    return x.astype(dtype)


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def assert_matches(actual, desired, dtype, scale=1.0):
    """Equal within the dtype's tolerance, and of exactly that dtype and shape."""
    assert actual.dtype == np.dtype(dtype)
    assert actual.shape == desired.shape
    rtol = RTOL[np.dtype(dtype)]
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


# name -> builds the arguments from (rng, shape, dtype, scale)
CASES = {
    "bernoulli_log_prob": lambda r, s, t, k: (pixels(r, s, t), normal(r, s, t, k)),
    "bernoulli_log_prob_and_grad": lambda r, s, t, k: (pixels(r, s, t), normal(r, s, t, k)),
    "logsumexp": lambda r, s, t, k: (normal(r, s, t, k),),
    "softplus": lambda r, s, t, k: (normal(r, s, t, k),),
    "sigmoid": lambda r, s, t, k: (normal(r, s, t, k),),
    "elu": lambda r, s, t, k: (normal(r, s, t, k),),
    "tanh": lambda r, s, t, k: (normal(r, s, t, k),),
    "tanh_backward": lambda r, s, t, k: (normal(r, s, t), np.tanh(normal(r, s, t, k))),
    "relu_forward": lambda r, s, t, k: (normal(r, s, t, k),),
    "relu_backward": lambda r, s, t, k: (normal(r, s, t), np.maximum(normal(r, s, t, k), 0)),
    "binarize": lambda r, s, t, k: (pixels(r, s, t), r.random(s).astype(t)),
    # log_var's spread is capped at 5: beyond about +-88, exp overflows float32 (the
    # +-30 edge has its own test).
    "gaussian_kl": lambda r, s, t, k: (normal(r, s, t), normal(r, s, t, min(k, 5))),
    "gaussian_kl_per_dim": lambda r, s, t, k: (normal(r, s, t), normal(r, s, t, min(k, 5))),
    "gaussian_kl_grad": lambda r, s, t, k: (normal(r, s, t), normal(r, s, t, min(k, 5))),
    "reparameterize": lambda r, s, t, k: (
        normal(r, s, t),
        normal(r, s, t, min(k, 5)),
        normal(r, s, t),
    ),
    "reparameterize_backward": lambda r, s, t, k: (
        normal(r, s, t),
        normal(r, s, t, min(k, 5)),
        normal(r, s, t),
    ),
}

shapes = st.tuples(st.integers(1, 64), st.integers(1, 100))


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=15)
@given(
    shape=shapes,
    dtype=st.sampled_from(DTYPES),
    scale=st.sampled_from([0.1, 1.0, 5.0, 30.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_equals_reference(name, shape, dtype, scale, seed):
    args = CASES[name](np.random.default_rng(seed), shape, dtype, scale)
    fast = as_tuple(getattr(kernels, name)(*args))
    reference = as_tuple(getattr(kernels, name + "_ref")(*args))
    assert len(fast) == len(reference)
    # Absolute slack for results near 0 from large terms (e.g. log-sum-exp's shift).
    input_scale = 1.0 + max(float(np.max(np.abs(a))) for a in args)
    for actual, desired in zip(fast, reference):
        assert_matches(actual, desired, dtype, scale=input_scale)


def test_binarize_uint8_equals_reference_exactly():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (16, 50)).astype(np.uint8)
    for dtype in DTYPES:
        uniform = rng.random(grey.shape).astype(dtype)
        draw = kernels.binarize(grey, uniform)
        assert draw.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(draw, kernels.binarize_ref(grey, uniform))


# --------------------------------------------------------------------------- exp, expm1, log1p
# npvae._compiled's own exp, expm1 and log1p (range reduction and a polynomial, so
# that the loops vectorise) are held to NumPy's, in ulps of the result, over their whole
# domains: exp and expm1 on [-120, 0] (down through float32's subnormals to 0),
# log1p on [0, 1] including tiny arguments.

ULPS = 4


def _ulp_errors(helper, args, reference):
    """|helper(a) - reference(a)| in ulps of the reference, for each a (a float array)."""
    got = np.array([helper(a) for a in args], dtype=args.dtype)
    want = reference(args.astype(np.float64)).astype(args.dtype)
    tiny = np.finfo(args.dtype).smallest_subnormal
    return np.abs(got.astype(np.float64) - want) / np.maximum(np.spacing(np.abs(want)), tiny)


def _sweep(low, high, dtype, n=3000):
    """Points spread over [low, high], with both ends."""
    rng = np.random.default_rng(0)
    return np.concatenate([[low, high], rng.uniform(low, high, n)]).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_nonpositive_within_a_few_ulps(dtype):
    args = np.concatenate([_sweep(-120, 0, dtype), _sweep(-1, 0, dtype), [-1e-30, -0.0]])
    args = args.astype(dtype)
    assert _ulp_errors(_compiled.exp_nonpositive, args, np.exp).max() <= ULPS


@pytest.mark.parametrize("dtype", DTYPES)
def test_expm1_nonpositive_within_a_few_ulps_also_near_zero(dtype):
    near_zero = -(10.0 ** -np.linspace(1, 30, 200))
    args = np.concatenate([_sweep(-120, 0, dtype), _sweep(-0.4, 0, dtype), near_zero])
    args = args.astype(dtype)
    assert _ulp_errors(_compiled.expm1_nonpositive, args, np.expm1).max() <= ULPS


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["exp", "expm1"])
def test_exp_and_expm1_within_a_few_ulps_on_both_sides_of_zero(dtype, name):
    """The general forms (the KL and the sampler's), up to where exp overflows."""
    top = 88.0 if dtype == np.float32 else 709.0
    near_zero = 10.0 ** -np.linspace(1, 30, 200)
    args = [_sweep(-120, top, dtype), _sweep(-2, 2, dtype), _sweep(0.3, 0.4, dtype)]
    args = np.concatenate([*args, near_zero, -near_zero, [0.0, -0.0]]).astype(dtype)
    helper, reference = getattr(_compiled, name), getattr(np, name)
    assert _ulp_errors(helper, args, reference).max() <= ULPS


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_and_expm1_overflow_to_inf_and_keep_nan(dtype):
    T = np.dtype(dtype).type
    beyond = [T(89.0) if dtype == np.float32 else T(710.0), T(1e4), T(np.inf)]
    with np.errstate(over="ignore"):  # with numba off, NumPy's ldexp says it overflowed
        for value in beyond:
            assert _compiled.exp(value) == np.inf and _compiled.expm1(value) == np.inf
    assert _compiled.exp(T(-np.inf)) == 0 and _compiled.expm1(T(-np.inf)) == -1
    assert np.isnan(_compiled.exp(T(np.nan))) and np.isnan(_compiled.expm1(T(np.nan)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_log1p_unit_within_a_few_ulps_also_for_tiny_arguments(dtype):
    tiny = 10.0 ** -np.linspace(1, 37, 200)
    args = np.concatenate([_sweep(0, 1, dtype), [np.sqrt(2) - 1, 0.0], tiny]).astype(dtype)
    assert _ulp_errors(_compiled.log1p_unit, args, np.log1p).max() <= ULPS


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_within_a_few_ulps_over_its_whole_range(dtype):
    """Against tanh in extended precision: near 0 (relative accuracy down to the
    subnormals), through the bend, and out where it rounds to +-1."""
    tiny = 10.0 ** -np.linspace(1, 37, 200)
    args = np.concatenate([_sweep(-30, 30, dtype), _sweep(-1, 1, dtype), tiny, -tiny])
    args = np.concatenate([args, [0.0, 1e4, -1e4]]).astype(dtype)
    got = kernels.tanh(args).astype(np.longdouble)
    want = np.tanh(args.astype(np.longdouble))
    spacing = np.spacing(np.abs(want).astype(dtype)).astype(np.longdouble)
    assert float(np.max(np.abs(got - want) / spacing)) <= ULPS
    special = np.array([np.inf, -np.inf, np.nan], dtype)
    np.testing.assert_array_equal(kernels.tanh(special), [1, -1, np.nan])


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_helpers_at_the_special_values(dtype):
    T = np.dtype(dtype).type
    assert _compiled.exp_nonpositive(T(-np.inf)) == 0
    assert _compiled.exp_nonpositive(T(-1e4)) == 0
    assert _compiled.expm1_nonpositive(T(-np.inf)) == -1
    assert _compiled.log1p_unit(T(0)) == 0
    for helper in (_compiled.exp_nonpositive, _compiled.expm1_nonpositive, _compiled.log1p_unit):
        assert np.isnan(helper(T(np.nan)))


# --------------------------------------------------------------------------- extremes


@pytest.mark.parametrize("dtype", DTYPES)
def test_bernoulli_extreme_logits_reach_the_exact_limit(dtype):
    logits = np.array([[1e4, -1e4, 1e4, -1e4, 0.0]], dtype=dtype)
    x = np.array([[1.0, 0.0, 0.5, 0.5, 0.3]], dtype=dtype)
    # x*l - softplus(l), with softplus(+-1e4) = max(l, 0) exactly and softplus(0) = log 2
    expected = np.array([0.0 + 0.0 - 5000.0 - 5000.0 - math.log(2)])
    expected_grad = np.array([[0.0, 0.0, -0.5, 0.5, -0.2]])
    log_prob, dlogits = kernels.bernoulli_log_prob_and_grad(x, logits)
    for result in (log_prob, kernels.bernoulli_log_prob(x, logits)):
        assert np.all(np.isfinite(result))
        assert_matches(result, expected.astype(dtype), dtype, scale=1e4)
    assert_matches(dlogits, expected_grad.astype(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softplus", "sigmoid", "elu", "tanh"])
def test_activations_at_extreme_inputs_equal_their_references(dtype, name):
    x = np.array([-1e4, -200, -100, -30, -1, -1e-30, 0, 1e-30, 1, 30, 100, 200, 1e4], dtype)
    with np.errstate(over="ignore", under="ignore"):
        expected = getattr(kernels, name + "_ref")(x)
    result = getattr(kernels, name)(x)
    assert np.all(np.isfinite(result)) and result.dtype == np.dtype(dtype)
    # Among the subnormals (softplus(-100) is 4e-44 in float32) only absolute error counts.
    tiny = np.finfo(dtype).smallest_subnormal
    np.testing.assert_allclose(result, expected, rtol=RTOL[np.dtype(dtype)], atol=4 * tiny)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bernoulli_confident_predictions_keep_their_tiny_loss(dtype):
    # Every pixel predicted right with |logit| in [15, 40]: the log-likelihood is
    # -sum log1p(exp(-|l|)), about 1e-7..1e-18 per pixel.  A softplus that rounds
    # 1 + exp(-|l|) (or a compiler that folds (1 + e) - 1 into e) loses it.
    rng = np.random.default_rng(1)
    logits = (rng.uniform(15, 40, (4, 30)) * rng.choice([-1, 1], (4, 30))).astype(dtype)
    x = (logits > 0).astype(dtype)
    exact = -np.sum(np.log1p(np.exp(-np.abs(logits.astype(np.float64)))), axis=1)
    assert_matches(kernels.bernoulli_log_prob(x, logits), exact.astype(dtype), dtype, scale=0)
    assert_matches(
        kernels.bernoulli_log_prob_and_grad(x, logits)[0], exact.astype(dtype), dtype, scale=0
    )
    softplus_exact = np.log1p(np.exp(-np.abs(logits.astype(np.float64))))
    assert_matches(kernels.softplus(-np.abs(logits)), softplus_exact.astype(dtype), dtype, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_functions_stay_finite_at_log_var_30(dtype):
    mu = np.array([[0.5, -0.5]], dtype=dtype)
    log_var = np.array([[30.0, -30.0]], dtype=dtype)
    expected_per_dim = np.array(
        [[0.5 * (0.25 + math.expm1(30.0) - 30.0), 0.5 * (0.25 + math.expm1(-30.0) + 30.0)]]
    )
    assert_matches(kernels.gaussian_kl_per_dim(mu, log_var), expected_per_dim.astype(dtype), dtype)
    assert_matches(
        kernels.gaussian_kl(mu, log_var), expected_per_dim.sum(axis=1).astype(dtype), dtype
    )
    eps = np.array([[1.0, -1.0]], dtype=dtype)
    outputs = [
        *kernels.gaussian_kl_grad(mu, log_var),
        kernels.reparameterize(mu, log_var, eps),
        *kernels.reparameterize_backward(eps, log_var, eps),
    ]
    for output in outputs:
        assert output.dtype == np.dtype(dtype)
        assert np.all(np.isfinite(output))
    z = kernels.reparameterize(mu, log_var, eps)
    expected_z = np.array([[0.5 + math.exp(15.0), -0.5 - math.exp(-15.0)]])
    assert_matches(z, expected_z.astype(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_special_rows(dtype):
    inf, nan = np.inf, np.nan
    a = np.array(
        [
            [-inf, -inf, -inf],
            [inf, 0.0, -inf],
            [nan, 0.0, 1.0],
            [-inf, nan, -inf],
            [1e4, 1e4, -inf],
            [-1e4, -1e4, -1e4],
        ],
        dtype=dtype,
    )
    expected = np.array([-inf, inf, nan, nan, 1e4 + math.log(2), -1e4 + math.log(3)])
    for logsumexp in (kernels.logsumexp, kernels.logsumexp_ref):
        result = logsumexp(a)
        assert result.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
        np.testing.assert_allclose(result, expected.astype(dtype), rtol=RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 5])
def test_logsumexp_wide_rows(dtype, rows):
    a = normal(np.random.default_rng(2), (rows, 5000), dtype, scale=3.0)
    exact = np.log(np.sum(np.exp(a.astype(np.float64)), axis=1))
    assert_matches(kernels.logsumexp(a), exact.astype(dtype), dtype, scale=10.0)


# --------------------------------------------------------------------------- NaN in, NaN out


def nan_cases():
    """(function name, argument builder, which arguments may carry a NaN)."""
    for name, make in CASES.items():
        yield name, make, range(len(make(np.random.default_rng(0), (2, 2), np.float64, 1.0)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, make, positions", list(nan_cases()), ids=list(CASES))
def test_nan_in_any_input_gives_nan_in_its_row(dtype, name, make, positions):
    rng = np.random.default_rng(3)
    for position in positions:
        args = [np.array(a) for a in make(rng, (4, 5), dtype, 1.0)]
        args[position][2, 3] = np.nan
        outputs = as_tuple(getattr(kernels, name)(*args))
        assert any(np.isnan(output[2]).any() for output in outputs), (name, position)
        for output in outputs:
            assert not np.isnan(np.delete(output, 2, axis=0)).any(), (name, position)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("position", range(4))
def test_adam_nan_in_any_array_gives_nan_param(dtype, position):
    rng = np.random.default_rng(4)
    arrays = [normal(rng, (3, 4), dtype), normal(rng, (3, 4), dtype)]
    arrays += [np.zeros((3, 4), dtype), np.abs(normal(rng, (3, 4), dtype))]
    arrays[position][1, 2] = np.nan
    kernels.adam_update(*arrays, 1e-3, 0.9, 0.999, 1e-8, 3)
    param = arrays[0]
    assert np.isnan(param[1, 2])
    assert not np.isnan(np.delete(param, 1, axis=0)).any()


# --------------------------------------------------------------------------- gradients (float64)


small_shapes = st.tuples(st.integers(1, 6), st.integers(1, 10))
gradient_cases = settings(max_examples=10, deadline=None)


@gradient_cases
@given(shape=small_shapes, seed=st.integers(0, 2**32 - 1))
def test_bernoulli_dlogits_matches_finite_differences(shape, seed):
    rng = np.random.default_rng(seed)
    x = pixels(rng, shape, np.float64)
    logits = normal(rng, shape, np.float64, 2.0)
    row_weights = rng.normal(size=shape[0])
    _, dlogits = kernels.bernoulli_log_prob_and_grad(x, logits)
    numeric = numerical_gradient(
        lambda: np.sum(row_weights * kernels.bernoulli_log_prob(x, logits)), logits, h=1e-5
    )
    assert rel_error(row_weights[:, None] * dlogits, numeric) < 1e-7


@gradient_cases
@given(shape=small_shapes, seed=st.integers(0, 2**32 - 1))
def test_gaussian_kl_grad_matches_finite_differences(shape, seed):
    rng = np.random.default_rng(seed)
    mu, log_var = normal(rng, shape, np.float64), normal(rng, shape, np.float64)
    row_weights = rng.normal(size=shape[0])
    dmu, dlog_var = kernels.gaussian_kl_grad(mu, log_var)

    def loss():
        return np.sum(row_weights * kernels.gaussian_kl(mu, log_var))

    assert rel_error(row_weights[:, None] * dmu, numerical_gradient(loss, mu)) < 1e-7
    assert rel_error(row_weights[:, None] * dlog_var, numerical_gradient(loss, log_var)) < 1e-7


@gradient_cases
@given(shape=small_shapes, seed=st.integers(0, 2**32 - 1))
def test_reparameterize_backward_matches_finite_differences(shape, seed):
    rng = np.random.default_rng(seed)
    mu, log_var, eps, dz = (normal(rng, shape, np.float64) for _ in range(4))
    dmu, dlog_var = kernels.reparameterize_backward(dz, log_var, eps)

    def loss():
        return np.sum(dz * kernels.reparameterize(mu, log_var, eps))

    assert rel_error(dmu, numerical_gradient(loss, mu)) < 1e-7
    assert rel_error(dlog_var, numerical_gradient(loss, log_var)) < 1e-7


def test_reparameterize_check_can_fail():
    """sigma's derivative without the chain rule's 1/2 is caught by the same check."""
    rng = np.random.default_rng(7)
    mu, log_var, eps, dz = (normal(rng, (3, 4), np.float64) for _ in range(4))

    def loss():
        return np.sum(dz * kernels.reparameterize(mu, log_var, eps))

    wrong = dz * eps * np.exp(0.5 * log_var)
    assert rel_error(wrong, numerical_gradient(loss, log_var)) > 1e-2


@gradient_cases
@given(shape=small_shapes, seed=st.integers(0, 2**32 - 1))
def test_logsumexp_gradient_is_the_softmax(shape, seed):
    """d logsumexp(a)_i / d a_ij = softmax(a_i)_j: the IWAE's normalised weights."""
    rng = np.random.default_rng(seed)
    a = normal(rng, shape, np.float64, 3.0)
    row_weights = rng.normal(size=shape[0])
    softmax = np.exp(a - kernels.logsumexp(a)[:, None])
    np.testing.assert_allclose(softmax.sum(axis=1), 1.0, rtol=1e-12)
    numeric = numerical_gradient(lambda: np.sum(row_weights * kernels.logsumexp(a)), a)
    assert rel_error(row_weights[:, None] * softmax, numeric) < 1e-7


# --------------------------------------------------------------------------- meaning


def latent_samples(count=20000):
    rng = np.random.default_rng(8)
    mu = np.array([0.5, -1.0, 2.0])
    log_var = np.array([-1.0, 0.0, 1.5])
    eps = rng.standard_normal((count, 3))
    z = kernels.reparameterize(np.tile(mu, (count, 1)), np.tile(log_var, (count, 1)), eps)
    return mu, log_var, z


def test_reparameterized_samples_have_mean_mu_and_variance_exp_log_var():
    mu, log_var, z = latent_samples()
    count = z.shape[0]
    variance = np.exp(log_var)
    assert np.all(np.abs(z.mean(axis=0) - mu) < 5 * np.sqrt(variance / count))
    assert np.all(np.abs(z.var(axis=0, ddof=1) - variance) < 5 * variance * np.sqrt(2 / count))


def test_gaussian_kl_equals_monte_carlo_estimate():
    mu, log_var, z = latent_samples()
    log_q = -0.5 * np.sum(LOG_2PI + log_var + (z - mu) ** 2 / np.exp(log_var), axis=1)
    log_p = -0.5 * np.sum(LOG_2PI + z**2, axis=1)
    estimates = log_q - log_p
    standard_error = estimates.std(ddof=1) / np.sqrt(len(estimates))
    closed_form = kernels.gaussian_kl(mu[None, :], log_var[None, :])[0]
    assert abs(estimates.mean() - closed_form) < 4 * standard_error


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bernoulli_pairs_each_row_of_logits_with_its_example(dtype):
    """x (n, D) against S n rows of logits: row i reads x[i mod n], as if x were tiled."""
    rng = np.random.default_rng(4)
    x = (rng.random((3, 7)) < 0.5).astype(dtype)
    logits = normal(rng, (4 * 3, 7), dtype, 3.0)
    tiled = np.tile(x, (4, 1))
    expected = kernels.bernoulli_log_prob_ref(tiled, logits)
    np.testing.assert_array_equal(kernels.bernoulli_log_prob_ref(x, logits), expected)
    np.testing.assert_array_equal(
        kernels.bernoulli_log_prob(x, logits), kernels.bernoulli_log_prob(tiled, logits)
    )
    assert_matches(kernels.bernoulli_log_prob(x, logits), expected, dtype)
    log_prob, dlogits = kernels.bernoulli_log_prob_and_grad(x, logits)
    tiled_log_prob, tiled_dlogits = kernels.bernoulli_log_prob_and_grad(tiled, logits)
    np.testing.assert_array_equal(log_prob, tiled_log_prob)
    np.testing.assert_array_equal(dlogits, tiled_dlogits)
    np.testing.assert_allclose(
        dlogits, kernels.bernoulli_log_prob_and_grad_ref(x, logits)[1], rtol=1e-6
    )
    with pytest.raises(ValueError, match="shape"):
        kernels.bernoulli_log_prob(np.tile(x, (2, 1))[:5], logits)  # 5 rows do not divide 12
    with pytest.raises(ValueError, match="shape"):
        kernels.bernoulli_log_prob(np.tile(x, (5, 1)), logits)  # more rows of x than of logits
    with pytest.raises(ValueError, match="shape"):
        kernels.bernoulli_log_prob(x[:, :5], logits)  # another width


def test_bernoulli_log_prob_is_the_log_of_the_probabilities():
    rng = np.random.default_rng(9)
    logits = normal(rng, (5, 8), np.float64, 2.0)
    x = (rng.random((5, 8)) < 0.5).astype(np.float64)
    probability = 1 / (1 + np.exp(-logits))
    naive = np.sum(np.log(np.where(x == 1, probability, 1 - probability)), axis=1)
    np.testing.assert_allclose(kernels.bernoulli_log_prob(x, logits), naive, rtol=1e-10)
    np.testing.assert_allclose(kernels.sigmoid(logits), probability, rtol=1e-12)


def test_logsumexp_is_log_sum_exp_on_safe_inputs():
    a = normal(np.random.default_rng(10), (6, 40), np.float64)
    expected = np.log(np.sum(np.exp(a), axis=1))
    np.testing.assert_allclose(kernels.logsumexp(a), expected, rtol=1e-12)


def test_binarize_draws_ones_with_probability_grey_over_255():
    rng = np.random.default_rng(11)
    grey = np.full((200, 500), 64, dtype=np.uint8)
    draws = kernels.binarize(grey, rng.random(grey.shape, dtype=np.float32))
    p = 64 / 255
    assert abs(draws.mean() - p) < 5 * math.sqrt(p * (1 - p) / draws.size)


# --------------------------------------------------------------------------- Adam


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 4), (6,)])
def test_adam_update_equals_reference_over_steps(dtype, shape):
    rng = np.random.default_rng(12)
    param = normal(rng, shape, dtype)
    fast = {"param": param, "m": np.zeros(shape, dtype), "v": np.zeros(shape, dtype)}
    reference = {name: array.copy() for name, array in fast.items()}
    for step in range(1, 6):
        grad = normal(rng, shape, dtype)
        for update, state in ((kernels.adam_update, fast), (kernels.adam_update_ref, reference)):
            update(state["param"], grad, state["m"], state["v"], 1e-2, 0.9, 0.999, 1e-8, step)
    for name in fast:
        assert_matches(fast[name], reference[name], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("update", ["adam_update", "adam_update_ref"])
def test_adam_moments_of_a_dead_unit_reach_zero_not_the_subnormals(dtype, update):
    """A gradient that turns exactly 0 lets m decay: it must end at 0, never subnormal."""
    param, m, v = np.ones(4, dtype), np.zeros(4, dtype), np.zeros(4, dtype)
    grad = np.array([1.0, -1e-3, 1e-20, 0.0], dtype)
    tiny = np.finfo(dtype).tiny
    for step in range(1, 8001):
        getattr(kernels, update)(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-8, step)
        assert not np.any((m != 0) & (np.abs(m) < tiny)), (step, m)
        assert not np.any((v != 0) & (v < tiny)), (step, v)
        grad[:] = 0
    assert np.all(m == 0) and np.all(np.isfinite(param))


def test_adam_first_step_moves_each_param_by_lr_against_its_gradient():
    rng = np.random.default_rng(13)
    param = normal(rng, (4, 4), np.float32)
    grad = normal(rng, (4, 4), np.float32)
    before = param.copy()
    m, v = np.zeros_like(param), np.zeros_like(param)
    kernels.adam_update(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-8, 1)
    assert param.dtype == np.float32
    np.testing.assert_allclose(param - before, -1e-3 * np.sign(grad), rtol=1e-3)


def test_adam_refuses_arrays_it_cannot_update_in_place():
    every_other_column = np.zeros((4, 6))[:, ::2]
    grad, m, v = np.zeros((4, 3)), np.zeros((4, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.adam_update(every_other_column, grad, m, v, 1e-3, 0.9, 0.999, 1e-8, 1)


# --------------------------------------------------------------------------- argument checks


def test_mixed_dtypes_are_refused_not_upcast():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="logits is float64 but x is float32"):
        kernels.bernoulli_log_prob(x, np.zeros((2, 3)))


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        kernels.gaussian_kl(np.zeros((2, 3)), np.zeros((2, 4)))


def test_integer_arrays_are_refused():
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.logsumexp(np.zeros((2, 3), dtype=np.int64))


def test_reductions_need_two_dimensions():
    with pytest.raises(ValueError, match="2-D"):
        kernels.logsumexp(np.zeros(5))


def test_non_contiguous_inputs_give_the_same_answer():
    a = normal(np.random.default_rng(14), (6, 8), np.float64)
    np.testing.assert_allclose(kernels.logsumexp(a.T), kernels.logsumexp_ref(a.T), rtol=1e-12)


# --------------------------------------------------------------------------- numba's cache

_CALL_EVERY_KERNEL = """
import json, numpy as np
from npvae import _compiled, kernels
for dtype in (np.float32, np.float64):
    x = np.full((2, 3), 0.5, dtype)
    kernels.bernoulli_log_prob(x, x); kernels.bernoulli_log_prob_and_grad(x, x)
    kernels.logsumexp(x); kernels.softplus(x); kernels.sigmoid(x); kernels.elu(x)
    kernels.relu_forward(x); kernels.relu_backward(x, x); kernels.binarize(x, x)
    kernels.tanh(x); kernels.tanh_backward(x, x)
    kernels.adam_update(x.copy(), x, x.copy(), x.copy(), 1e-3, 0.9, 0.999, 1e-8, 1)
stats = [f.stats for f in vars(_compiled).values() if hasattr(f, "stats") and f.stats.cache_path]
print(json.dumps({"hits": sum(sum(s.cache_hits.values()) for s in stats),
                  "misses": sum(sum(s.cache_misses.values()) for s in stats)}))
"""


@pytest.mark.skipif(not kernels.USE_NUMBA, reason="numba is off: nothing is compiled or cached")
def test_a_new_process_loads_every_kernel_from_the_cache_instead_of_compiling():
    """The first use of a kernel in a new process is a cache load, not a recompile."""
    import json
    import subprocess
    import sys

    def run() -> dict:
        done = subprocess.run(
            [sys.executable, "-c", _CALL_EVERY_KERNEL], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    run()  # compiles whatever is not cached yet (a fresh clone) and writes the cache
    second = run()
    assert second["misses"] == 0, second
    # Twelve kernels in two dtypes, each loaded from the cache.
    assert second["hits"] >= 24, second


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("position", [0, 777, 999])
def test_all_finite_equals_reference(dtype, bad, position):
    rng = np.random.default_rng(5)
    x = normal(rng, (1000,), dtype, scale=1e3)
    x[:3] = np.finfo(dtype).max, np.finfo(dtype).tiny, -np.finfo(dtype).max  # still finite
    if bad is not None:
        x[position] = bad
    assert kernels.all_finite(x) is kernels.all_finite_ref(x) is (bad is None)
    assert kernels.all_finite(x.reshape(10, 100)) is (bad is None)  # any shape


def test_the_compiled_files_record_of_the_jit_options_is_current():
    """numba's cache is keyed on _compiled.py only: a change to _jit's options must change it."""
    from npvae import _compiled, _jit

    assert _compiled.COMPILED_WITH == {**_jit.NJIT_OPTIONS, "fastmath": sorted(_jit.FASTMATH)}
