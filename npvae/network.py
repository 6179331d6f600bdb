"""``MLP``: a stack of layers run forward, then backward in reverse.

It has the same protocol as a single layer (``forward``, ``backward``,
``params``, ``grads``, ``zero_grad``), so a model treats an encoder, a decoder
or one ``Linear`` alike.  Parameter names are ``"<index>.<name>"`` after the
layer's position, e.g. ``"0.W"``, ``"2.b"``; a model prefixes them again
(``"enc.0.W"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from npvae.layers import DEFAULT_INIT, Layer, Linear, make_activation
from npvae.validate import check_widths


class MLP(Layer):
    """A multilayer perceptron: ``Linear -> activation -> ... -> Linear [-> out]``.

    Parameters
    ----------
    sizes : sequence of int
        Widths from input to output, e.g. ``(784, 400, 20)``: two ``Linear``
        layers with one activation between them.
    activation : str
        Hidden activation, a name from :data:`npvae.layers.ACTIVATIONS`.
    out_activation : str or None
        Activation after the last ``Linear``; None leaves the output affine
        (logits, means, log-variances).
    rng : numpy.random.Generator
        Source of the initial weights.
    dtype : float32 or float64
    init : {"glorot", "he"} or None
        None picks what suits the activation that follows each ``Linear`` (He
        for the ReLU family, Glorot otherwise and for an affine output).
    input_grad : bool
        False skips dL/dx in the first layer (see :class:`Linear`); then
        ``backward`` returns None.

    Shapes: ``x (N, sizes[0]) -> out (N, sizes[-1])``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "relu",
        out_activation: str | None = None,
        *,
        rng: np.random.Generator,
        dtype=np.float64,
        init: str | None = None,
        input_grad: bool = True,
    ) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        check_widths(sizes, "MLP sizes", least=2)
        hidden_init = init or DEFAULT_INIT.get(activation, "glorot")
        last_init = init or DEFAULT_INIT.get(out_activation, "glorot")
        self.sizes = sizes
        self.activation = activation
        self.out_activation = out_activation
        self.layers: list[Layer] = []
        n_linear = len(sizes) - 1
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == n_linear - 1
            self.layers.append(
                Linear(
                    n_in,
                    n_out,
                    init=last_init if last else hidden_init,
                    rng=rng,
                    dtype=dtype,
                    input_grad=input_grad or i > 0,
                )
            )
            if not last:
                self.layers.append(make_activation(activation))
            elif out_activation is not None:
                self.layers.append(make_activation(out_activation))
        for index, layer in enumerate(self.layers):
            for name in layer.params:
                self.params[f"{index}.{name}"] = layer.params[name]
                self.grads[f"{index}.{name}"] = layer.grads[name]

    @property
    def dtype(self) -> np.dtype:
        return self.layers[0].params["W"].dtype

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x (N, sizes[0]) -> (N, sizes[-1])``, caching each layer's input."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """``dout (N, sizes[-1]) -> dx (N, sizes[0])`` (None if ``input_grad`` is False)."""
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"MLP([{inner}])"
