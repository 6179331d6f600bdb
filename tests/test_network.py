"""The MLP: wiring, names, and gradients through the whole stack."""

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from npvae.errors import ConfigError
from npvae.gradcheck import TOLERANCE, check_layer
from npvae.layers import Linear, ReLU, Sigmoid
from npvae.network import MLP


@pytest.mark.parametrize("activation", ["tanh", "softplus", "elu", "sigmoid"])
@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4), seed=st.integers(0, 10**6))
@example(sizes=[5, 5, 5, 5], seed=5)  # ELU: a pre-activation 1e-6 from 0 once failed the bar
def test_mlp_gradients(activation, sizes, seed):
    rng = np.random.default_rng(seed)
    mlp = MLP(sizes, activation, rng=rng)
    x = rng.normal(size=(3, sizes[0]))
    if activation == "elu":
        # ELU's second derivative jumps at 0: a centred difference across it is only
        # first-order accurate, so keep every hidden pre-activation clear of 0.
        assume(np.abs(np.concatenate(_hidden_pre_activations(mlp, x))).min(initial=1.0) > 1e-3)
    errors = check_layer(mlp, x, seed=seed)
    assert max(errors.values()) < TOLERANCE, errors


def _hidden_pre_activations(mlp, x):
    """The flattened inputs of every activation layer of ``mlp`` for input ``x``."""
    found = [np.zeros(0)]  # a single-Linear MLP has none
    for layer in mlp.layers:
        if not isinstance(layer, Linear):
            found.append(x.ravel())
        x = layer.forward(x)
    return found


def test_mlp_layout_and_names():
    mlp = MLP([5, 4, 3, 2], "relu", out_activation="sigmoid", rng=np.random.default_rng(0))
    kinds = [type(layer).__name__ for layer in mlp.layers]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear", "Sigmoid"]
    assert list(mlp.params) == ["0.W", "0.b", "2.W", "2.b", "4.W", "4.b"]
    assert mlp.params["2.W"] is mlp.layers[2].params["W"]
    assert mlp.grads["4.b"] is mlp.layers[4].grads["b"]
    assert isinstance(mlp.layers[1], ReLU) and isinstance(mlp.layers[-1], Sigmoid)


def test_mlp_zero_grad_clears_every_layer():
    rng = np.random.default_rng(1)
    mlp = MLP([4, 3, 2], "tanh", rng=rng)
    mlp.forward(rng.normal(size=(2, 4)))
    mlp.backward(np.ones((2, 2)))
    assert all(g.any() for g in mlp.grads.values())
    mlp.zero_grad()
    assert not any(g.any() for g in mlp.grads.values())


def test_mlp_float32_end_to_end():
    rng = np.random.default_rng(2)
    mlp = MLP([6, 5, 4], "relu", rng=rng, dtype=np.float32)
    out = mlp.forward(rng.random((3, 6), dtype=np.float32))
    dx = mlp.backward(np.ones_like(out))
    assert out.dtype == dx.dtype == np.float32
    assert all(p.dtype == np.float32 for p in mlp.params.values())


@pytest.mark.parametrize("sizes", [[5], [5, 0, 2], []])
def test_bad_sizes_are_config_errors(sizes):
    with pytest.raises(ConfigError, match="MLP sizes"):
        MLP(sizes, rng=np.random.default_rng())
