"""Layers with hand-written backward passes.

Every layer follows one protocol:

* ``forward(x)`` computes the output and caches what ``backward`` needs;
* ``backward(dout)`` takes dL/d(output), **writes** dL/d(parameter) into
  ``grads`` (in place, over the last pass's: a layer is used once per pass)
  and returns dL/d(input);
* ``params`` and ``grads`` are dicts with the same keys, holding the live
  arrays: an optimizer updates ``params`` in place, and ``backward`` and
  ``zero_grad`` write ``grads`` in place.

Shapes: a batch is ``(N, D)``, rows are examples.  A layer keeps the dtype it
was built with (float32 for training, float64 for gradient checks) and never
casts.  The derivation of every rule is in ``docs/backprop.md``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from npvae import kernels
from npvae.errors import ConfigError


class Layer(ABC):
    """Base class: no parameters, and the bookkeeping every layer shares."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    @abstractmethod
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Compute the output for ``x`` and cache what ``backward`` needs."""

    @abstractmethod
    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Write dL/d(params) into ``grads``; return dL/d(input)."""

    def zero_grad(self) -> None:
        """Set every gradient to zero, in place (the arrays stay the same objects)."""
        for grad in self.grads.values():
            grad.fill(0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linear(Layer):
    """Affine map ``y = x @ W + b``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths.
    init : {"glorot", "he"}
        Glorot (Xavier) uniform, ``U(-a, a)`` with ``a = sqrt(6 / (n_in + n_out))``,
        suits tanh, sigmoid and linear outputs; He normal, ``N(0, 2 / n_in)``,
        suits the ReLU family.  Biases start at zero.
    rng : numpy.random.Generator
        Source of the initial weights.
    dtype : float32 or float64
    input_grad : bool
        When False, ``backward`` skips dL/dx and returns None.  The first layer
        of an encoder never needs it, and it is a whole matrix product.

    Notes
    -----
    Shapes: ``x (N, n_in)``, ``W (n_in, n_out)``, ``b (n_out,)``, ``y (N, n_out)``.
    Backward (``docs/backprop.md#linear``)::

        dW = x.T @ dout        db = dout.sum(0)        dx = dout @ W.T

    ``dW`` and ``db`` are written straight into ``grads`` (``out=``): no
    temporary, and no pass to clear them first.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        init: str = "glorot",
        rng: np.random.Generator,
        dtype=np.float64,
        input_grad: bool = True,
    ) -> None:
        super().__init__()
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ConfigError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
        if init == "glorot":
            limit = np.sqrt(6.0 / (n_in + n_out))
            weight = rng.uniform(-limit, limit, size=(n_in, n_out))
        elif init == "he":
            weight = rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, n_out))
        else:
            raise ConfigError(f"unknown init {init!r}: use 'glorot' or 'he'")
        self.params["W"] = weight.astype(dtype)
        self.params["b"] = np.zeros(n_out, dtype=dtype)
        self.grads["W"] = np.zeros_like(self.params["W"])
        self.grads["b"] = np.zeros_like(self.params["b"])
        self.input_grad = input_grad
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x (N, n_in) -> y (N, n_out)``."""
        self._x = x
        out = x @ self.params["W"]
        out += self.params["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """``dout (N, n_out) -> dx (N, n_in)``; writes ``dW`` and ``db``."""
        np.matmul(self._x.T, dout, out=self.grads["W"])
        np.sum(dout, axis=0, out=self.grads["b"])
        if not self.input_grad:
            return None
        return dout @ self.params["W"].T

    def __repr__(self) -> str:
        n_in, n_out = self.params["W"].shape
        return f"Linear({n_in}, {n_out}, dtype={self.params['W'].dtype})"


class ReLU(Layer):
    """``max(x, 0)``; derivative 1 where the output is positive, else 0.

    See ``docs/backprop.md#relu``.  Shapes: any, output like input.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._out = kernels.relu_forward(x)
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return kernels.relu_backward(dout, self._out)


class LeakyReLU(Layer):
    """``x`` where ``x > 0``, else ``slope * x``.  See ``docs/backprop.md#leaky-relu``.

    Shapes: any, output like input.
    """

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__()
        self.slope = slope

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._positive = x > 0
        return np.where(self._positive, x, x * x.dtype.type(self.slope))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.where(self._positive, dout, dout * dout.dtype.type(self.slope))

    def __repr__(self) -> str:
        return f"LeakyReLU(slope={self.slope})"


class Tanh(Layer):
    """``tanh(x)``; derivative ``1 - tanh(x)**2``.  See ``docs/backprop.md#tanh``.

    Shapes: any, output like input.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._out = kernels.tanh(x)
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return kernels.tanh_backward(dout, self._out)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function ``1 / (1 + exp(-x))``, without overflow for large ``|x|``; any shape."""
    return kernels.sigmoid(x)


class Sigmoid(Layer):
    """``sigmoid(x)``; derivative ``s * (1 - s)``.  See ``docs/backprop.md#sigmoid``.

    Shapes: any, output like input.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._out = sigmoid(x)
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self._out * (1 - self._out)


class Softplus(Layer):
    """``log(1 + exp(x))``; derivative ``sigmoid(x)``.  See ``docs/backprop.md#softplus``.

    Shapes: any, output like input.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return kernels.softplus(x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * sigmoid(self._x)


class ELU(Layer):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``.

    Derivative 1 where ``x > 0``, else ``alpha * exp(x) = out + alpha``.
    See ``docs/backprop.md#elu``.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._positive = x > 0
        self._out = kernels.elu(x, self.alpha)
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        alpha = dout.dtype.type(self.alpha)
        return np.where(self._positive, dout, dout * (self._out + alpha))

    def __repr__(self) -> str:
        return f"ELU(alpha={self.alpha})"


#: Activation names accepted by :func:`make_activation` (and the CLI's ``--activation``).
ACTIVATIONS: dict[str, type[Layer]] = {
    "relu": ReLU,
    "leaky-relu": LeakyReLU,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "softplus": Softplus,
    "elu": ELU,
}

#: The initialisation that suits each activation (He for the ReLU family).
DEFAULT_INIT: dict[str, str] = {
    "relu": "he",
    "leaky-relu": "he",
    "elu": "he",
    "tanh": "glorot",
    "sigmoid": "glorot",
    "softplus": "glorot",
}


def make_activation(name: str) -> Layer:
    """A fresh activation layer by name, e.g. ``make_activation("relu")``."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        known = ", ".join(ACTIVATIONS)
        raise ConfigError(f"unknown activation {name!r}: choose one of {known}") from None
