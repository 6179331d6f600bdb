"""Every layer's backward pass against finite differences, in float64."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npvae.errors import ConfigError
from npvae.gradcheck import TOLERANCE, check_layer
from npvae.layers import (
    ACTIVATIONS,
    ELU,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Softplus,
    Tanh,
    make_activation,
)

shapes = st.tuples(st.integers(1, 8), st.integers(1, 12))
seeds = st.integers(0, 2**32 - 1)


def away_from_kink(x: np.ndarray, margin: float = 0.05) -> np.ndarray:
    """Move entries out of (-margin, margin): the ReLU family has a kink at 0."""
    return np.where(x >= 0, x + margin, x - margin)


@given(shape=shapes, n_out=st.integers(1, 10), seed=seeds, init=st.sampled_from(["glorot", "he"]))
def test_linear_gradients(shape, n_out, seed, init):
    rng = np.random.default_rng(seed)
    layer = Linear(shape[1], n_out, init=init, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.normal(size=n_out)
    errors = check_layer(layer, rng.normal(size=shape), seed=seed)
    assert set(errors) == {"x", "W", "b"}
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("layer_type", [ReLU, LeakyReLU, Tanh, Sigmoid, Softplus, ELU])
@given(shape=shapes, seed=seeds)
def test_activation_gradients(layer_type, shape, seed):
    rng = np.random.default_rng(seed)
    x = away_from_kink(rng.normal(scale=2.0, size=shape))
    errors = check_layer(layer_type(), x, seed=seed)
    assert errors["x"] < TOLERANCE, errors


def test_linear_backward_writes_its_gradients_over_the_last_passs():
    """Each backward pass writes dW and db whatever the arrays held, NaN included, into the
    same arrays (the model's flat views); zero_grad clears them."""
    rng = np.random.default_rng(0)
    layer = Linear(3, 2, rng=rng)
    arrays = dict(layer.grads)
    x, dout = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    layer.forward(x)
    for grad in layer.grads.values():
        grad.fill(np.nan)
    layer.backward(dout)
    np.testing.assert_allclose(layer.grads["W"], x.T @ dout, rtol=1e-14)
    np.testing.assert_allclose(layer.grads["b"], dout.sum(axis=0), rtol=1e-14)
    layer.backward(2 * dout)
    np.testing.assert_allclose(layer.grads["W"], 2 * x.T @ dout, rtol=1e-14)
    assert all(layer.grads[name] is arrays[name] for name in arrays)
    layer.zero_grad()
    assert not layer.grads["W"].any() and not layer.grads["b"].any()


def test_linear_without_input_grad_returns_none_but_fills_params():
    rng = np.random.default_rng(1)
    layer = Linear(3, 2, rng=rng, input_grad=False)
    layer.forward(rng.normal(size=(4, 3)))
    assert layer.backward(np.ones((4, 2))) is None
    np.testing.assert_allclose(layer.grads["b"], [4.0, 4.0])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_keep_their_dtype(name, dtype):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 6)).astype(dtype)
    layer = make_activation(name)
    out = layer.forward(x)
    assert out.dtype == dtype
    assert layer.backward(np.ones_like(out)).dtype == dtype
    linear = Linear(6, 3, rng=rng, dtype=dtype)
    assert linear.forward(x).dtype == dtype
    assert linear.backward(np.ones((5, 3), dtype=dtype)).dtype == dtype
    assert linear.grads["W"].dtype == dtype


def test_activation_values():
    x = np.array([[-2.0, 0.5]])
    np.testing.assert_allclose(ReLU().forward(x), [[0.0, 0.5]])
    np.testing.assert_allclose(LeakyReLU(0.1).forward(x), [[-0.2, 0.5]])
    np.testing.assert_allclose(ELU().forward(x), [[np.expm1(-2.0), 0.5]])
    np.testing.assert_allclose(Softplus().forward(x), np.log1p(np.exp(x)))
    np.testing.assert_allclose(Sigmoid().forward(x), 1 / (1 + np.exp(-x)))


def test_sigmoid_and_softplus_do_not_overflow():
    x = np.array([[-1000.0, 1000.0]])
    with np.errstate(over="raise"):
        np.testing.assert_allclose(Sigmoid().forward(x), [[0.0, 1.0]])
        np.testing.assert_allclose(Softplus().forward(x), [[0.0, 1000.0]])


def test_initialisations_have_the_promised_scale():
    rng = np.random.default_rng(3)
    he = Linear(500, 400, init="he", rng=rng).params["W"]
    glorot = Linear(500, 400, init="glorot", rng=rng).params["W"]
    assert abs(he.std() - np.sqrt(2 / 500)) < 0.02 * np.sqrt(2 / 500)
    assert abs(glorot.std() - np.sqrt(2 / 900)) < 0.02 * np.sqrt(2 / 900)


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="unknown activation 'swish'"):
        make_activation("swish")
    with pytest.raises(ConfigError, match="unknown init"):
        Linear(2, 2, init="lecun", rng=np.random.default_rng())


@pytest.mark.parametrize("dtype", [np.float16, np.int64, np.complex128])
def test_linear_refuses_a_dtype_other_than_float32_and_float64(dtype):
    with pytest.raises(ConfigError, match="dtype must be float32 or float64"):
        Linear(3, 2, rng=np.random.default_rng(0), dtype=dtype)
