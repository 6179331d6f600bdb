"""Argument checks for :mod:`npvae.kernels`' public functions.

The compiled loops trust their arguments: flat or ``(N, D)`` C-contiguous arrays of one
float dtype.  These checks make sure of it before a loop runs, and turn a wrong dtype or
shape into one error that names the argument.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_arrays(ndim: int | None = None, **arrays: np.ndarray) -> list[np.ndarray]:
    """``arrays`` (by argument name, for the errors) as C-contiguous arrays, in order.

    TypeError unless all are float32 or all float64; ValueError unless they share one
    shape of ``ndim`` dimensions (if given).  A C-contiguous input comes back uncopied.
    """
    checked = [np.ascontiguousarray(array) for array in arrays.values()]
    dtype, shape = checked[0].dtype, checked[0].shape
    # Fast path, taken every training step: identity of the (singleton) dtype
    # objects is cheaper than dtype equality; anything unusual takes the loop.
    if (
        (dtype is FLOAT_DTYPES[0] or dtype is FLOAT_DTYPES[1])
        and (ndim is None or len(shape) == ndim)
        and all(array.dtype is dtype and array.shape == shape for array in checked)
    ):
        return checked
    first_name = next(iter(arrays))
    for name, array in zip(arrays, checked):
        if array.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got {array.dtype}")
        if array.dtype != dtype:
            raise TypeError(
                f"{name} is {array.dtype} but {first_name} is {dtype}; "
                "cast both to the model's dtype"
            )
        if ndim is not None and array.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D (N, D), got shape {array.shape}")
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape} but {first_name} has {shape}")
    return checked


def paired_arrays(x: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x (n, D)`` and ``logits (N, D)`` checked for the row pairing: N a multiple of n."""
    logits = float_arrays(2, logits=logits)[0]
    x = np.ascontiguousarray(x)
    divides = len(x) == len(logits) or (len(x) > 0 and len(logits) % len(x) == 0)
    if x.ndim == 2 and x.shape[1] == logits.shape[1] and divides:
        return float_arrays(2, x=x, logits=logits[: len(x)])[0], logits
    float_arrays(2, x=x, logits=logits)  # raises, naming the mismatch
    raise ValueError(f"x has {len(x)} rows, which do not divide the {len(logits)} rows of logits")
