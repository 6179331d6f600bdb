"""Tests for npvae.optim: update rules, convergence, dtype, the packed one-pass update,
state round-trip, gradient clipping and the factory."""

import math

import numpy as np
import pytest

from npvae.errors import CheckpointError, ConfigError
from npvae.optim import SGD, Adam, clip_grad_norm, make_optimizer
from npvae.schedules import ExponentialLR

OPTIMIZER_NAMES = ["sgd", "momentum", "nesterov", "adam"]

# Step sizes at which each optimizer converges on the quadratic below; the
# quadratic's Hessian has eigenvalues in [1, 10], so plain SGD is stable below 0.2.
QUADRATIC_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 0.02}


# ---------------------------------------------------------------- helpers


def _quadratic(dtype=np.float64):
    """A (10, 10) SPD matrix with eigenvalues 1..10, b (10,), and x* = A^-1 b."""
    rng = np.random.default_rng(0)
    orthogonal, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    hessian = orthogonal @ np.diag(np.linspace(1.0, 10.0, 10)) @ orthogonal.T
    linear = rng.standard_normal(10)
    solution = np.linalg.solve(hessian, linear)
    return hessian.astype(dtype), linear.astype(dtype), solution


def _new_params(dtype=np.float64):
    """Two params of different shapes that together hold a 10-vector x."""
    return {"enc.0.W": np.zeros((2, 3), dtype=dtype), "enc.0.b": np.zeros(4, dtype=dtype)}


def _flatten(params):
    return np.concatenate([params["enc.0.W"].ravel(), params["enc.0.b"]])


def _quadratic_grads(params, hessian, linear):
    """Gradient A x - b of 0.5 x^T A x - b^T x, split back into the param shapes."""
    grad = hessian @ _flatten(params) - linear
    return {"enc.0.W": grad[:6].reshape(2, 3), "enc.0.b": grad[6:]}


def _adam_reference(grads_per_step, lr, beta1, beta2, eps):
    """Adam on one scalar, written out step by step from Kingma & Ba (Algorithm 1)."""
    theta, m, v = 0.0, 0.0, 0.0
    history = []
    for t, g in enumerate(grads_per_step, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        theta = theta - lr * m_hat / (math.sqrt(v_hat) + eps)
        history.append((theta, m, v))
    return history


# ---------------------------------------------------------------- Adam closed form


def test_adam_first_step_is_lr_times_sign_of_constant_gradient():
    lr = 0.01
    grad = np.array([3.0, -0.5, 1e-3, -200.0])
    params = {"w": np.zeros(4)}
    opt = Adam(params, lr=lr)
    previous = params["w"].copy()
    for _ in range(3):
        opt.step({"w": grad.copy()})
        update = params["w"] - previous
        previous = params["w"].copy()
        # Bias correction makes m_hat = g and v_hat = g^2 at every step, so each
        # step is lr * g / (|g| + eps); without it step 1 would be ~3.2 * lr.
        np.testing.assert_allclose(update, -lr * grad / (np.abs(grad) + 1e-8), rtol=1e-12)
        np.testing.assert_allclose(update, -lr * np.sign(grad), rtol=1e-4)


def test_adam_first_three_steps_match_hand_computed_reference():
    lr, beta1, beta2, eps = 0.1, 0.9, 0.999, 1e-8
    grads_per_step = [1.0, -2.0, 0.5]
    # Step 1 by hand: m = 0.1, v = 0.001, m_hat = 1, v_hat = 1, theta = -0.1 / (1 + 1e-8).
    reference = _adam_reference(grads_per_step, lr, beta1, beta2, eps)
    assert reference[0][0] == pytest.approx(-0.1 / (1 + 1e-8), rel=1e-15)

    params = {"w": np.zeros(1, dtype=np.float64)}
    opt = Adam(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps)
    for g, (theta, m, v) in zip(grads_per_step, reference, strict=True):
        opt.step({"w": np.array([g])})
        state = opt.state_dict()
        assert params["w"][0] == pytest.approx(theta, rel=1e-12)
        assert state["m/w"][0] == pytest.approx(m, rel=1e-12)
        assert state["v/w"][0] == pytest.approx(v, rel=1e-12)
    assert opt.state_dict()["step"] == 3


# ---------------------------------------------------------------- SGD rules


def test_sgd_variants_match_their_update_rules_by_hand():
    lr, mu, decay = 0.1, 0.9, 0.01
    g1, g2 = 2.0, -1.0
    results = {}
    for name, kw in [
        ("plain", {}),
        ("momentum", {"momentum": mu}),
        ("nesterov", {"momentum": mu, "nesterov": True}),
        ("decay", {"weight_decay": decay}),
    ]:
        params = {"w": np.array([1.0])}
        opt = SGD(params, lr=lr, **kw)
        opt.step({"w": np.array([g1])})
        opt.step({"w": np.array([g2])})
        results[name] = params["w"][0]
    # plain: 1 - 0.1*2 - 0.1*(-1)
    assert results["plain"] == pytest.approx(0.9, rel=1e-14)
    # momentum: u1 = 2, theta1 = 0.8; u2 = 0.9*2 - 1 = 0.8, theta2 = 0.72
    assert results["momentum"] == pytest.approx(0.72, rel=1e-14)
    # nesterov: u1 = 2, theta1 = 1 - 0.1*(2 + 1.8) = 0.62;
    #           u2 = 0.8, theta2 = 0.62 - 0.1*(-1 + 0.72) = 0.648
    assert results["nesterov"] == pytest.approx(0.648, rel=1e-14)
    # decay: d1 = 2 + 0.01 = 2.01, theta1 = 0.799; d2 = -1 + 0.00799, theta2 = 0.898201
    assert results["decay"] == pytest.approx(0.898201, rel=1e-14)


# ---------------------------------------------------------------- convergence


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_optimizer_minimises_spd_quadratic(name):
    hessian, linear, solution = _quadratic()
    params = _new_params()
    opt = make_optimizer(name, params, QUADRATIC_LR[name])
    start_error = np.abs(_flatten(params) - solution).max()
    for _ in range(500):
        opt.step(_quadratic_grads(params, hessian, linear))
    error = np.abs(_flatten(params) - solution).max()
    assert start_error > 0.1
    assert error < 1e-6, f"{name}: max |x - x*| = {error:.2e} after 500 steps"


# ---------------------------------------------------------------- in place, dtype


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_float32_params_and_state_stay_float32_and_in_place(name):
    hessian, linear, _ = _quadratic(np.float32)
    params = _new_params(np.float32)
    arrays_before = dict(params)
    opt = make_optimizer(name, params, 0.01)
    opt.lr = np.float64(0.01)  # as a schedule built from NumPy values might set it
    assert type(opt.lr) is float
    for _ in range(5):
        opt.step(_quadratic_grads(params, hessian, linear))
    for key, param in params.items():
        assert param is arrays_before[key], "a param array was rebound, not updated in place"
        assert param.dtype == np.float32
        assert np.any(param != 0)
    for key, value in opt.state_dict().items():
        if key not in ("lr", "step"):
            assert value.dtype == np.float32, f"state {key} is {value.dtype}"


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_of_a_dead_parameter_reaches_zero_not_the_subnormals(nesterov):
    """Like Adam's moments: a velocity whose gradient turned 0 ends at 0, never subnormal."""
    params = {"w": np.ones(3, np.float32)}
    optimizer = SGD(params, lr=1e-3, momentum=0.9, nesterov=nesterov)
    grads = {"w": np.array([1.0, 1e-3, 1e-30], np.float32)}
    tiny = np.finfo(np.float32).tiny
    for _ in range(3000):
        optimizer.step(grads)
        velocity = optimizer.state_dict()["velocity/w"]
        assert not np.any((velocity != 0) & (np.abs(velocity) < tiny)), velocity
        grads["w"][:] = 0
    assert np.all(optimizer.state_dict()["velocity/w"] == 0)


@pytest.mark.parametrize("name", ["adam", "sgd-momentum", "sgd-nesterov-decay"])
def test_a_packed_model_is_updated_in_one_pass_bit_identical_to_one_per_array(name, monkeypatch):
    from npvae.models import VAE

    make = {
        "adam": lambda p, **f: Adam(p, lr=1e-3, **f),
        "sgd-momentum": lambda p, **f: SGD(p, lr=1e-2, momentum=0.9, **f),
        "sgd-nesterov-decay": lambda p, **f: SGD(
            p, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-3, **f
        ),
    }[name]
    packed = VAE(input_dim=20, hidden=[8], latent_dim=3, seed=1)
    separate = VAE(input_dim=20, hidden=[8], latent_dim=3, seed=1)
    opt_packed = make(packed.params, flat=(packed.flat_params, packed.flat_grads))
    opt_separate = make(separate.params)
    calls, real = [], type(opt_packed)._update

    def spy(self, param, grad, **buffers):
        calls.append(param.shape)
        real(self, param, grad, **buffers)

    monkeypatch.setattr(type(opt_packed), "_update", spy)
    x = (np.random.default_rng(0).random((16, 20)) < 0.4).astype(np.float32)
    rng_packed, rng_separate = np.random.default_rng(1), np.random.default_rng(1)
    shapes = [param.shape for param in separate.params.values()]
    for _ in range(10):
        packed.loss(x, rng_packed)
        opt_packed.step()  # the model's packed gradient: one pass
        separate.loss(x, rng_separate)
        opt_separate.step({k: g.copy() for k, g in separate.grads.items()})  # one per array
    assert calls == [packed.flat_params.shape, *shapes] * 10
    for key in packed.params:
        np.testing.assert_array_equal(packed.params[key], separate.params[key], err_msg=key)
    state_packed, state_separate = opt_packed.state_dict(), opt_separate.state_dict()
    assert state_packed.keys() == state_separate.keys()
    for key in state_packed:
        np.testing.assert_array_equal(state_packed[key], state_separate[key], err_msg=key)


def test_a_packed_optimizer_steps_on_the_gradients_it_is_given(monkeypatch):
    # Built with flat, step() takes the packed gradient in one pass, and step(grads) takes
    # the arrays given, one at a time, into the same (packed) state.
    from npvae.models import VAE

    model = VAE(input_dim=20, hidden=[8], latent_dim=3, seed=1)
    twin = VAE(input_dim=20, hidden=[8], latent_dim=3, seed=1)
    optimizer = Adam(model.params, lr=1e-3, flat=(model.flat_params, model.flat_grads))
    reference = Adam(twin.params, lr=1e-3)
    calls, real = [], Adam._update

    def spy(self, param, grad, **buffers):
        if self is optimizer:
            calls.append(param.shape)
        real(self, param, grad, **buffers)

    monkeypatch.setattr(Adam, "_update", spy)
    x = (np.random.default_rng(0).random((16, 20)) < 0.4).astype(np.float32)
    rng, twin_rng = np.random.default_rng(1), np.random.default_rng(1)
    for packed in (True, False, True, False):
        model.loss(x, rng)
        optimizer.step() if packed else optimizer.step(
            {k: g.copy() for k, g in model.grads.items()}
        )
        twin.loss(x, twin_rng)
        reference.step({k: g.copy() for k, g in twin.grads.items()})
    shapes = [param.shape for param in model.params.values()]
    assert calls == [model.flat_params.shape, *shapes] * 2
    for key in model.params:
        np.testing.assert_array_equal(model.params[key], twin.params[key], err_msg=key)


def test_flat_that_does_not_fit_the_params_is_refused_at_construction():
    from npvae.models import VAE

    model, other = (
        VAE(input_dim=20, hidden=[8], latent_dim=3, seed=1),
        VAE(input_dim=20, hidden=[8], latent_dim=3, seed=1),
    )
    with pytest.raises(ValueError, match="model.flat_params"):
        Adam(model.params, flat=(other.flat_params, model.flat_grads))
    with pytest.raises(ValueError, match="shape"):
        SGD(model.params, 0.1, flat=(model.flat_params, model.flat_grads[:-1]))
    with pytest.raises(ValueError, match="flat"):
        Adam(model.params).step()  # no grads and nothing packed to take them from


# ---------------------------------------------------------------- state round-trip


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_state_round_trip_through_npz_is_bit_identical(name, dtype, tmp_path):
    hessian, linear, _ = _quadratic(dtype)
    schedule = ExponentialLR(QUADRATIC_LR[name], gamma=0.9)
    total_steps, saved_at = 12, 5

    def run(params, opt, steps):
        for t in steps:
            opt.lr = schedule(t // 3)
            opt.step(_quadratic_grads(params, hessian, linear))

    params = _new_params(dtype)
    uninterrupted = make_optimizer(name, params, schedule(0))
    run(params, uninterrupted, range(total_steps))

    first_params = _new_params(dtype)
    first = make_optimizer(name, first_params, schedule(0))
    run(first_params, first, range(saved_at))
    np.savez(tmp_path / "params.npz", **first_params)
    np.savez(tmp_path / "optim.npz", **first.state_dict())

    with np.load(tmp_path / "params.npz", allow_pickle=False) as saved:
        resumed_params = {key: saved[key] for key in saved.files}
    resumed = make_optimizer(name, resumed_params, 123.0)
    with np.load(tmp_path / "optim.npz", allow_pickle=False) as saved:
        resumed.load_state_dict(saved)
    assert resumed.lr == first.lr
    run(resumed_params, resumed, range(saved_at, total_steps))

    for key in params:
        assert resumed_params[key].dtype == dtype
        np.testing.assert_array_equal(resumed_params[key], params[key])
    for key, value in uninterrupted.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value)


def test_state_dict_is_a_copy():
    params = {"w": np.zeros(3)}
    opt = Adam(params, lr=0.1)
    opt.step({"w": np.ones(3)})
    state = opt.state_dict()
    opt.step({"w": np.ones(3)})
    assert state["step"] == 1
    assert not np.array_equal(state["m/w"], opt.state_dict()["m/w"])


def test_plain_sgd_state_does_not_load_into_momentum():
    plain_state = make_optimizer("sgd", _new_params(), 0.1).state_dict()
    assert set(plain_state) == {"lr", "step"}
    with pytest.raises(CheckpointError, match="velocity/enc.0.W"):
        make_optimizer("momentum", _new_params(), 0.1).load_state_dict(plain_state)


# ---------------------------------------------------------------- clipping


def test_clip_grad_norm_scales_to_exactly_max_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]]), "c": np.array([12.0])}
    original = {key: value.copy() for key, value in grads.items()}
    arrays_before = dict(grads)
    norm = clip_grad_norm(grads, max_norm=2.0)
    assert norm == pytest.approx(13.0, rel=1e-15)
    clipped_norm = math.sqrt(sum(float(np.sum(g**2)) for g in grads.values()))
    assert clipped_norm == pytest.approx(2.0, rel=1e-14)
    for key in grads:
        assert grads[key] is arrays_before[key]
        np.testing.assert_allclose(grads[key], original[key] * 2.0 / 13.0, rtol=1e-15)


def test_clip_grad_norm_leaves_small_grads_alone():
    grads = {"a": np.array([0.3, -0.4]), "b": np.zeros((2, 2))}
    original = {key: value.copy() for key, value in grads.items()}
    assert clip_grad_norm(grads, max_norm=1.0) == pytest.approx(0.5, rel=1e-15)
    for key in grads:
        np.testing.assert_array_equal(grads[key], original[key])


def test_clip_grad_norm_returns_nan_for_nan_grads():
    grads = {"a": np.array([1.0, np.nan]), "b": np.array([100.0])}
    norm = clip_grad_norm(grads, max_norm=1.0)
    assert math.isnan(norm)
    assert grads["b"][0] == 100.0, "NaN norm must not scale the other grads"


def test_clip_grad_norm_float32_does_not_overflow_or_upcast():
    grads = {"a": np.array([3e20, 4e20], dtype=np.float32)}
    norm = clip_grad_norm(grads, max_norm=1.0)
    assert norm == pytest.approx(5e20, rel=1e-6)
    assert grads["a"].dtype == np.float32
    np.testing.assert_allclose(grads["a"], [0.6, 0.8], rtol=1e-6)


def test_clip_grad_norm_rejects_nonpositive_max_norm():
    with pytest.raises(ConfigError):
        clip_grad_norm({"a": np.ones(2)}, max_norm=0.0)


# ---------------------------------------------------------------- factories


def test_make_optimizer_names_select_the_right_rule():
    adam = make_optimizer("adam", _new_params(), 0.01, beta2=0.99)
    assert isinstance(adam, Adam) and adam.beta2 == 0.99
    plain = make_optimizer("sgd", _new_params(), 0.1)
    assert isinstance(plain, SGD) and plain.momentum == 0.0 and not plain.nesterov
    heavy_ball = make_optimizer("momentum", _new_params(), 0.1, momentum=0.5)
    assert heavy_ball.momentum == 0.5 and not heavy_ball.nesterov
    nesterov = make_optimizer("Nesterov", _new_params(), 0.1)
    assert nesterov.momentum == 0.9 and nesterov.nesterov


def test_unknown_name_raises_config_error_listing_valid_names():
    with pytest.raises(ConfigError) as raised:
        make_optimizer("rmsprop", _new_params(), 0.1)
    message = str(raised.value)
    assert "\n" not in message
    for name in OPTIMIZER_NAMES:
        assert repr(name) in message


@pytest.mark.parametrize(
    "build",
    [
        lambda: make_optimizer("adam", _new_params(), 0.1, momentum=0.9),
        lambda: make_optimizer("sgd", _new_params(), 0.1, nesterov=True),
        lambda: make_optimizer("adam", _new_params(), -0.1),
        lambda: make_optimizer("momentum", _new_params(), 0.1, momentum=1.0),
        lambda: SGD(_new_params(), 0.1, nesterov=True),
        lambda: Adam(_new_params(), eps=0.0),
    ],
)
def test_bad_options_raise_config_error(build):
    with pytest.raises(ConfigError) as raised:
        build()
    assert "\n" not in str(raised.value)


def test_adam_rejects_non_contiguous_params_up_front():
    with pytest.raises(ValueError, match="C-contiguous"):
        Adam({"w": np.zeros((3, 4)).T}, lr=0.1)
