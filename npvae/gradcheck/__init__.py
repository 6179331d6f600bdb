"""Finite-difference gradient checks, for tests and for a student at the prompt.

The idea in three lines: nudge one entry of an array by ``+h`` and ``-h``,
evaluate the scalar loss both times, and the centred difference
``(f(x + h) - f(x - h)) / 2h`` approximates the derivative with error O(h^2).
Do that for every entry and compare with the hand-written backward pass.

>>> import numpy as np
>>> from npvae.layers import Tanh
>>> from npvae.gradcheck import check_layer
>>> errors = check_layer(Tanh(), np.random.default_rng(0).normal(size=(3, 4)))
>>> errors["x"] < 1e-7
True

Run ``python -m npvae.gradcheck`` for the table of every layer, kernel, loss
and model in npvae (``npvae/gradcheck/__main__.py``).  Checks run in float64:
in float32 the rounding error of ``f`` divided by ``2h`` swamps the quantity
being measured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

#: Default finite-difference step: the sweet spot between truncation error
#: (O(h^2)) and cancellation (O(eps_machine / h)) in float64.
STEP = 1e-5

#: Relative error below which a gradient on a smooth function counts as proven.
TOLERANCE = 1e-7


def rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``max|a - b| / max(1e-8, max(|a| + |b|))``: 0 when equal, about 1 when unrelated.

    The denominator is taken over the whole array (not entry by entry), so an
    entry whose true gradient is 0 does not turn rounding noise into a large
    ratio.  About 1e-7 or less is a correct gradient in float64; 1e-2 is a bug.
    """
    a = np.asarray(analytic, dtype=np.float64)
    b = np.asarray(numeric, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: analytic {a.shape}, numeric {b.shape}")
    if a.size == 0:
        return 0.0
    scale = max(1e-8, float(np.max(np.abs(a) + np.abs(b))))
    return float(np.max(np.abs(a - b)) / scale)


def numerical_gradient(
    f: Callable[[], float],
    x: np.ndarray,
    h: float = STEP,
    entries: Iterable[tuple[int, ...]] | None = None,
) -> np.ndarray:
    """Centred-difference gradient of ``f()`` with respect to the array ``x``.

    Parameters
    ----------
    f : callable with no arguments
        Returns a scalar and reads ``x`` (which is changed in place, one entry
        at a time, and restored exactly afterwards).
    x : ndarray, any shape
    h : float
        The step.
    entries : iterable of index tuples, optional
        Only these entries; the others are left NaN.  Default: all.

    Returns
    -------
    ndarray, shape of ``x``, float64
    """
    grad = np.full(x.shape, np.nan if entries is not None else 0.0)
    for index in entries if entries is not None else np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + h
        f_plus = float(f())
        x[index] = saved - h
        f_minus = float(f())
        x[index] = saved
        grad[index] = (f_plus - f_minus) / (2 * h)
    return grad


def _pick_entries(shape: tuple[int, ...], most: int | None, rng) -> list[tuple[int, ...]]:
    """All entries of an array of ``shape``, or ``most`` of them drawn at random."""
    size = int(np.prod(shape))
    if most is None or size <= most:
        return list(np.ndindex(shape))
    flat = rng.choice(size, size=most, replace=False)
    return [np.unravel_index(i, shape) for i in np.sort(flat)]


def check_gradients(
    f: Callable[[], float],
    arrays: Mapping[str, np.ndarray],
    analytic: Mapping[str, np.ndarray],
    h: float = STEP,
    most: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Compare hand-written gradients of a scalar function with finite differences.

    Parameters
    ----------
    f : callable with no arguments
        The scalar function (a loss), reading the arrays in ``arrays``.
    arrays : dict name -> ndarray
        The inputs to differentiate with respect to (changed in place and
        restored).
    analytic : dict name -> ndarray
        The gradient claimed for each name, same shapes.
    most : int, optional
        Check at most this many entries per array, drawn at random from ``seed``.

    Returns
    -------
    dict name -> relative error (see :func:`rel_error`)
    """
    rng = np.random.default_rng(seed)
    errors = {}
    for name, x in arrays.items():
        entries = _pick_entries(x.shape, most, rng)
        numeric = numerical_gradient(f, x, h, entries)
        picked = tuple(np.array(entries, dtype=np.intp).reshape(len(entries), x.ndim).T)
        errors[name] = rel_error(np.asarray(analytic[name])[picked], numeric[picked])
    return errors


def check_layer(
    layer,
    x: np.ndarray,
    dout: np.ndarray | None = None,
    h: float = STEP,
    seed: int = 0,
    most: int | None = None,
) -> dict[str, float]:
    """Check a layer's input and parameter gradients through a vector-Jacobian product.

    The scalar checked is ``sum(layer.forward(x) * dout)`` for a fixed random
    ``dout``: its gradient is exactly what ``backward(dout)`` returns (for
    ``x``) and writes into ``grads`` (for each parameter).

    Parameters
    ----------
    layer : object with ``forward``, ``backward``, ``params``, ``grads``, ``zero_grad``
    x : ndarray (N, D_in), float64
    dout : ndarray (N, D_out), optional
        Default: standard normal from ``seed``.

    Returns
    -------
    dict with key ``"x"`` and one key per parameter -> relative error
    """
    f, arrays, analytic = layer_problem(layer, x, dout, seed)
    return check_gradients(f, arrays, analytic, h=h, most=most, seed=seed)


def layer_problem(layer, x, dout=None, seed: int = 0):
    """``(f, arrays, analytic)`` of :func:`check_layer`: the scalar, its inputs, its gradients."""
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    if dout is None:
        dout = rng.normal(size=layer.forward(x).shape)
    layer.zero_grad()
    layer.forward(x)
    dx = layer.backward(dout)
    analytic = {name: grad.copy() for name, grad in layer.grads.items()}
    arrays = dict(layer.params)
    if dx is not None:
        analytic["x"] = dx
        arrays = {"x": x, **arrays}

    def f() -> float:
        return float(np.sum(layer.forward(x) * dout))

    return f, arrays, analytic
