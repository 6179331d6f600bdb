"""What every model shares: named parameters, gradients, dtype, save and load.

A model is built from a config (a dict of plain JSON values: sizes, names,
numbers) and a seed.  That config, plus the parameter arrays, is everything
needed to rebuild it, which is what :meth:`Model.save` writes and
:func:`load` reads back (see :mod:`npvae.serialize`: no pickle, atomic).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from npvae.errors import CheckpointError, ConfigError
from npvae.serialize import load_arrays, save_arrays
from npvae.validate import check_model_config

#: Model kinds by the name saved in a file's header; filled by :func:`register`.
REGISTRY: dict[str, type[Model]] = {}

DTYPES = {"float32": np.float32, "float64": np.float64}

#: No trained weight of these models comes near this (they are of order 1 to 10); a
#: larger one in a file is damage, and would overflow float32 activations.
MAX_ABS_PARAM = 1e6


def chunks(x: np.ndarray, size: int):
    """``x (N, ...)`` in consecutive pieces of at most ``size`` rows (none for N = 0).

    Every pass over a data set in npvae goes through it, so that memory does not grow
    with N: the codes, the losses, the importance sampler, the KL per dimension.
    """
    for start in range(0, len(x), size):
        yield x[start : start + size]


def register(cls: type[Model]) -> type[Model]:
    """Class decorator: make ``cls`` loadable by its ``kind`` name."""
    REGISTRY[cls.kind] = cls
    return cls


def resolve_dtype(dtype) -> np.dtype:
    """``"float32"``, ``"float64"`` or the NumPy types themselves -> the dtype."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: use 'float32' or 'float64'")
    return np.dtype(DTYPES[name])


def mlp_parameter_count(sizes) -> int:
    """Weights and biases of an MLP of widths ``sizes``: ``Σ (a·b + b)`` over its layers."""
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes, sizes[1:]))


def _holders(part):
    """Every ``params`` and ``grads`` dict of ``part``, its parts and an MLP's layers."""
    yield part.params
    yield part.grads
    for child in [*getattr(part, "_parts", ()), *getattr(part, "layers", ())]:
        yield from _holders(child)


class Model(ABC):
    """Base class: subclasses build their parts in ``__init__`` and call :meth:`_collect`.

    Attributes
    ----------
    config : dict
        The constructor's keyword arguments, JSON-able; ``type(self)(**config)``
        builds the same architecture.
    params, grads : dict name -> ndarray
        Every trainable array of every part, prefixed by the part's name
        (``"encoder.0.W"``), and the gradients with the same keys.
    flat_params, flat_grads : ndarray (P,)
        All ``P`` parameters in one array, and all gradients in another, in the
        order of ``params``: each array in ``params`` and ``grads`` (and in the
        layers themselves) is a view into these.  An optimizer updates all of
        them in one pass, and :meth:`zero_grad` is one fill, so the work per
        step does not grow with the number of layers.
    """

    kind = "model"
    #: Settings added after files were first saved: a file without one was written before
    #: it existed and meant its default, so it loads with that; any other key is required.
    LATER_SETTINGS: tuple[str, ...] = ()

    def __init__(self, config: dict) -> None:
        self.config = config
        self.dtype = resolve_dtype(config["dtype"])
        config["dtype"] = self.dtype.name  # np.float32 itself is not JSON: save() needs the name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._parts: list = []

    def _collect(self, **parts) -> None:
        """Register the named parts (anything with ``params``, ``grads``, ``zero_grad``).

        Then move every parameter into :attr:`flat_params` and every gradient
        into :attr:`flat_grads`, and point each part (and each layer of an MLP)
        at views into them, so that every name still finds its own array.
        """
        for prefix, part in parts.items():
            self._parts.append(part)
            for name, value in part.params.items():
                self.params[f"{prefix}.{name}"] = value
                self.grads[f"{prefix}.{name}"] = part.grads[name]
        total = sum(param.size for param in self.params.values())
        self.flat_params = np.empty(total, dtype=self.dtype)
        self.flat_grads = np.zeros(total, dtype=self.dtype)
        views, offset = {}, 0
        for name, param in self.params.items():
            end = offset + param.size
            views[id(param)] = self.flat_params[offset:end].reshape(param.shape)
            views[id(param)][...] = param
            views[id(self.grads[name])] = self.flat_grads[offset:end].reshape(param.shape)
            offset = end
        for holder in _holders(self):
            for key, array in holder.items():
                holder[key] = views[id(array)]

    def init_output_bias(self, pixel_mean: np.ndarray) -> None:
        """Start the decoder at the data's mean image, as Burda et al. (2016) do.

        ``pixel_mean (D,)`` in [0, 1]: the mean training image.  A Bernoulli
        decoder's output bias becomes its logit, clipped to [0.001, 0.999] first
        so that a pixel that is always 0 (MNIST's border) gets a finite bias; a
        Gaussian or squared-error decoder's becomes the mean itself.  With the
        weights near 0 at the start, every image then decodes to the mean
        image, not to grey.
        """
        mean = np.asarray(pixel_mean, dtype=np.float64)
        bias = self.decoder.layers[-1].params["b"]
        if mean.shape != bias.shape or not np.all((mean >= 0) & (mean <= 1)):
            raise ConfigError(f"pixel_mean must be ({bias.size},) in [0, 1], got {mean.shape}")
        if self.config.get("likelihood", self.config.get("reconstruction")) == "bernoulli":
            clipped = np.clip(mean, 0.001, 0.999)
            mean = np.log(clipped) - np.log1p(-clipped)
        bias[...] = mean

    def codes(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Each image's code, ``x (N, D)`` to ``(N, d)``: the encoder's output, or q(z|x)'s
        mean where the encoder gives a mean and a log-variance (for the two-layer IWAE, z1's
        and then z2's given z1's mean, as :meth:`encode` gives them).

        ``batch_size`` rows at a time, so the hidden layers' memory does not grow with N.
        """
        parts = [self.encode(piece) for piece in chunks(x, batch_size)] or [self.encode(x)]
        return np.concatenate([code[0] if isinstance(code, tuple) else code for code in parts])

    def zero_grad(self) -> None:
        """Clear every gradient in place: one fill of :attr:`flat_grads`."""
        self.flat_grads.fill(0)

    def _check_input(self, x: np.ndarray, scored: bool = True) -> np.ndarray:
        """``x`` must be ``(N, input_dim)`` of the model's dtype (no silent cast), finite, and
        in [0, 1] where the model scores it with a Bernoulli likelihood (``scored``: False
        for what only the encoder sees, such as a denoising AE's Gaussian-corrupted input).

        The range costs one ``min`` and one ``max`` over the batch, a few microseconds
        against a step's milliseconds.  Whole numbers (the datasets' uint8 pixels, 0..255)
        are refused with the cast that makes them the model's input.
        """
        dim = self.config["input_dim"]
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != dim:
            shape = getattr(x, "shape", type(x).__name__)
            raise ConfigError(f"expected input of shape (N, {dim}), got {shape}")
        if x.dtype != self.dtype:
            raise ConfigError(self._dtype_hint(x))
        if x.size:
            low, high = x.min(), x.max()  # NaN in x makes both NaN
            if not (np.isfinite(low) and np.isfinite(high)):
                what = "NaN" if np.isnan(low) or np.isnan(high) else "infinite values"
                raise ConfigError(f"input holds {what}; the model takes finite numbers")
            if scored and self._bernoulli() and (low < 0 or high > 1):
                raise ConfigError(
                    f"input holds values from {low:g} to {high:g}, but this {self.kind}'s "
                    "Bernoulli likelihood takes values in [0, 1]: scale them first "
                    "(x / 255 for 8-bit pixels)"
                )
        return x

    def _bernoulli(self) -> bool:
        """Whether the likelihood is Bernoulli, whose log p(x|z) means nothing outside [0, 1]."""
        return self.config.get("likelihood", self.config.get("reconstruction")) == "bernoulli"

    def _dtype_hint(self, x: np.ndarray) -> str:
        """What is wrong with ``x``'s dtype, and the cast that mends it, in one line."""
        cast = f"x.astype(np.{self.dtype.name})"
        if x.dtype.kind in "iu":
            binary = x.size == 0 or (x.min() >= 0 and x.max() <= 1)
            how = cast if binary else f"{cast} / 255 (8-bit pixels, 0..255, to [0, 1])"
            return f"input is {x.dtype} (whole numbers) but the model takes {self.dtype}: use {how}"
        if x.dtype.kind == "b":
            return f"input is bool but the model takes {self.dtype}: use {cast}"
        if x.dtype.kind == "f":
            return f"input is {x.dtype} but the model is {self.dtype}: use {cast}"
        return f"input is {x.dtype} but the model takes {self.dtype} numbers"

    def _check_latent(self, z, dim: int) -> np.ndarray:
        """Codes ``z`` as ``(N, dim)`` of the model's dtype (a clear error otherwise)."""
        z = np.asarray(z, dtype=self.dtype)
        if z.ndim != 2 or z.shape[1] != dim:
            raise ConfigError(f"expected codes of shape (N, {dim}), got {z.shape}")
        return z

    def _noise(self, rng: np.random.Generator | None, shape: tuple[int, ...]) -> np.ndarray:
        """Standard normal noise of the model's dtype from ``rng`` (which is required)."""
        if rng is None:
            raise ValueError("pass rng (a numpy.random.Generator) or the noise array itself")
        return rng.standard_normal(shape, dtype=self.dtype)

    def _eps(self, eps, rng, n_samples: int, n: int) -> np.ndarray:
        """The noise ``(S, N, latent_dim)``: drawn from ``rng``, or ``eps`` itself once checked."""
        if eps is None:
            return self._noise(rng, (n_samples, n, self.latent_dim))
        expected = (n, self.latent_dim)
        if eps.ndim != 3 or eps.shape[1:] != expected or eps.dtype != self.dtype:
            raise ConfigError(
                f"eps must be {self.dtype} (S, {n}, {self.latent_dim}), got {eps.dtype}{eps.shape}"
            )
        return eps

    @classmethod
    @abstractmethod
    def parameter_count(cls, config: dict) -> int:
        """How many numbers a model of ``config`` holds, worked out without building it."""

    def describe(self) -> dict:
        """``{"kind": ..., "config": ...}``: what rebuilds this architecture."""
        return {"kind": self.kind, "config": self.config}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the config and parameters to ``path`` (``.npz``), atomically."""
        return save_arrays(path, self.params, {"format": "npvae-model", **self.describe()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Read a model saved by :meth:`save`; ``Model.load`` returns whatever kind is saved.

        Raises :class:`CheckpointError` (naming the file) if the file is
        damaged, holds another kind of model than ``cls``, or its arrays do not
        fit the saved config.
        """
        arrays, header = load_arrays(path)
        return cls._from_saved(path, arrays, header)

    @classmethod
    def _from_saved(cls, path, arrays: dict, header: dict) -> Model:
        """Rebuild from a model file, or from the model inside a training checkpoint."""
        if header.get("format") == "npvae-checkpoint":
            prefix = "model/"
            arrays = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            header = header.get("model", {})
            if not isinstance(header, dict):
                raise CheckpointError(f"{path}: damaged model record; use another checkpoint")
        elif header.get("format") != "npvae-model":
            raise CheckpointError(f"{path}: not an npvae model file")
        kind = header.get("kind")
        if cls is not Model and kind != cls.kind:
            raise CheckpointError(
                f"{path}: holds a '{kind}' model, not '{cls.kind}'; load it with npvae.models.load"
            )
        return rebuild(kind, header.get("config"), arrays, source=path)

    def set_params(self, arrays: dict[str, np.ndarray], source="arrays") -> None:
        """Copy ``arrays`` into the live parameters, checking names, shapes and dtypes."""
        missing = sorted(set(self.params) - set(arrays))
        extra = sorted(set(arrays) - set(self.params))
        if missing or extra:
            raise CheckpointError(
                f"{source}: parameters do not match this {self.kind} "
                f"(missing {missing[:3]}, unexpected {extra[:3]})"
            )
        for name, value in arrays.items():
            target = self.params[name]
            if value.shape != target.shape or value.dtype != target.dtype:
                raise CheckpointError(
                    f"{source}: parameter {name} is {value.dtype}{list(value.shape)}, "
                    f"the model needs {target.dtype}{list(target.shape)}"
                )
        for name, value in arrays.items():
            if value.size and not np.all(np.abs(value) <= MAX_ABS_PARAM):  # NaN fails too
                bad = value[~(np.abs(value) <= MAX_ABS_PARAM)].flat[0]
                raise CheckpointError(
                    f"{source}: parameter {name} holds {float(bad):g} (NaN, infinite, or above "
                    f"{MAX_ABS_PARAM:g} in size); it is damaged, use another file"
                )
        for name, value in arrays.items():
            self.params[name][...] = value

    def __repr__(self) -> str:
        n = sum(p.size for p in self.params.values())
        return f"{type(self).__name__}({n:,} parameters, {self.dtype})"


def rebuild(kind: str, config: dict, arrays: dict[str, np.ndarray], source) -> Model:
    """Build a ``kind`` model from its saved ``config`` and give it ``arrays``.

    The config is checked by the CLI's rules (:func:`npvae.validate.check_model_config`)
    and the number of parameters it describes against the arrays' before anything
    is allocated, so a config of absurd sizes is an error, not a ``MemoryError``.
    """
    if not isinstance(kind, str) or kind not in REGISTRY:
        raise CheckpointError(f"{source}: not an npvae model (kind {kind!r})")
    cls = REGISTRY[kind]
    try:
        config = check_model_config(config, source)
        expected = cls.parameter_count(config)
    except ConfigError as err:
        raise CheckpointError(f"{err}; the file is damaged") from None
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{source}: its config does not build a {kind} ({err})") from None
    held = sum(array.size for array in arrays.values())
    if expected != held:
        raise CheckpointError(
            f"{source}: its config describes a {kind} of {expected} parameters but the file "
            f"holds {held}; the file is damaged"
        )
    try:
        model = cls(**config)
    except (TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{source}: its config does not build a {kind} ({err})") from None
    missing = sorted(set(model.config) - set(config) - set(cls.LATER_SETTINGS))
    if missing:
        raise CheckpointError(f"{source}: its config lacks {missing}; the file is damaged")
    model.set_params(arrays, source=source)
    return model


def load(path: str | os.PathLike) -> Model:
    """Load any saved npvae model, or the model in a checkpoint: ``npvae.models.load(path)``."""
    return Model.load(path)
