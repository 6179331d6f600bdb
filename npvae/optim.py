"""Optimizers (SGD, Adam) that update a model's parameters in place, and gradient clipping.

``step(grads)`` updates each array of ``params`` in place from the gradient of
the same name, shape and dtype; the state (velocity, moments) has those shapes
and dtype.  A model's ``params`` and ``grads`` are views of two flat arrays;
given those, an optimizer packs its state alike and ``step()`` applies the rule
once, to the flat arrays, with the same result bit for bit::

    adam = Adam(vae.params, lr=1e-3)
    adam.step(vae.grads)  # the rule once per parameter array
    adam = Adam(vae.params, lr=1e-3, flat=(vae.flat_params, vae.flat_grads))
    adam.step()  # the rule once, on all of them

``state_dict`` is a flat dict of arrays (``"m/enc.0.W"``, ``"step"``, ``"lr"``)
for ``np.savez``; a saved one is checked where it is read
(``npvae.app.checkpoint.check_optimizer_state``).  Schedules are in
:mod:`npvae.schedules`; the rules are derived in ``docs/backprop.md#adam``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from npvae import kernels
from npvae._options import check_lr, check_positive, check_unit_interval, construct
from npvae.errors import CheckpointError, ConfigError

__all__ = ["Optimizer", "SGD", "Adam", "clip_grad_norm", "make_optimizer", "OPTIMIZERS"]


class Optimizer(ABC):
    """Base class: holds ``params`` and the state; steps, saves and restores.

    ``params``: the model's live floating arrays, updated in place.  ``lr`` >= 0,
    settable later.  ``flat``: ``(flat_params, flat_grads)``, each (P,), the
    arrays that ``params`` and the gradients view in order (the model's own).
    A subclass names its state buffers in ``state_kinds`` and writes its rule
    in ``_update``.
    """

    state_kinds: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], lr: float, flat=None):
        if not isinstance(params, Mapping) or not params:
            raise ValueError("params must be a non-empty dict of name -> np.ndarray")
        for name, param in params.items():
            if not isinstance(param, np.ndarray) or param.dtype.kind != "f":
                raise ValueError(f"param {name!r} must be a floating np.ndarray, got {param!r}")
        self.params = params
        self.lr = lr
        #: Number of completed calls to :meth:`step`.
        self.step_count = 0
        self.flat = None if flat is None else _check_flat(params, flat)
        #: kind -> param name -> buffer; packed into ``self._flat_state[kind]`` with ``flat``.
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self._flat_state: dict[str, np.ndarray] = {}
        for kind in self.state_kinds:
            if self.flat is None:
                self.state[kind] = {name: np.zeros_like(p) for name, p in params.items()}
            else:
                self._flat_state[kind] = np.zeros_like(self.flat[0])
                self.state[kind] = _views(self._flat_state[kind], params)

    @property
    def lr(self) -> float:
        """The learning rate used by the next :meth:`step` (a Python float)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        # A Python float, never a NumPy float64: under NumPy 2's promotion rules a
        # float64 scalar would upcast float32 temporaries.
        self._lr = check_lr(value)

    def step(self, grads: dict[str, np.ndarray] | None = None) -> None:
        """Update every parameter in place: ``grads[k]`` has the shape and dtype of
        ``params[k]``; None takes the ``flat_grads`` given at construction."""
        if grads is None and self.flat is None:
            raise ValueError("step() needs grads, or flat=(flat_params, flat_grads) at build")
        self.step_count += 1
        if grads is None:  # the rule once, on the flat arrays
            self._update(*self.flat, **self._flat_state)
            return
        for name, param in self.params.items():
            self._update(param, grads[name], **{k: b[name] for k, b in self.state.items()})

    @abstractmethod
    def _update(self, param: np.ndarray, grad: np.ndarray, **buffers: np.ndarray) -> None:
        """The rule, in place on ``param`` and ``buffers`` (one array each, or one flat each)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of the state: ``"lr"`` (0-d float64), ``"step"`` (0-d int64), and
        ``"<kind>/<name>"`` per buffer (the param's shape and dtype)."""
        state = {
            "lr": np.array(self.lr, dtype=np.float64),
            "step": np.array(self.step_count, dtype=np.int64),
        }
        for kind, buffers in self.state.items():
            for name, buffer in buffers.items():
                state[f"{kind}/{name}"] = buffer.copy()
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Copy in a :meth:`state_dict` (a dict, or the ``np.load`` of its ``np.savez``).

        Its values are checked where a file is read; here only that its keys
        are this optimizer's (CheckpointError if not, changing nothing).
        """
        expected = {"lr", "step"} | {f"{k}/{name}" for k in self.state for name in self.params}
        if set(state.keys()) != expected:
            missing, extra = sorted(expected - set(state.keys())), sorted(state.keys() - expected)
            raise CheckpointError(
                f"optimizer state does not fit this {type(self).__name__}: missing keys "
                f"{missing[:5]}, unexpected keys {extra[:5]}; resume with the same optimizer "
                "and model it was saved from"
            )
        for kind, buffers in self.state.items():
            for name, buffer in buffers.items():
                np.copyto(buffer, state[f"{kind}/{name}"], casting="same_kind")
        self.lr = float(state["lr"])
        self.step_count = int(state["step"])


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum and L2 decay.

    With ``d = g + weight_decay * theta`` (the gradient of the loss plus
    ``weight_decay / 2 * ||theta||^2``) and the velocity ``u`` starting at 0::

        plain:     theta <- theta - lr * d
        momentum:  u <- momentum * u + d;   theta <- theta - lr * u
        nesterov:  u <- momentum * u + d;   theta <- theta - lr * (d + momentum * u)

    ``lr`` multiplies the velocity, not the gradient inside it (PyTorch's
    convention), so changing ``lr`` mid-run does not rescale the velocity built
    up.  ``momentum`` is in [0, 1) (0: plain SGD); ``nesterov`` needs
    ``momentum > 0``; ``weight_decay`` >= 0.  State: ``"velocity/<name>"`` when
    ``momentum > 0``.
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, flat=None):
        self.momentum = check_unit_interval("momentum", momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
        if self.nesterov and self.momentum == 0.0:
            raise ConfigError("nesterov=True needs momentum > 0; set momentum (e.g. 0.9)")
        self.state_kinds = ("velocity",) if self.momentum > 0.0 else ()
        super().__init__(params, lr, flat)

    def _update(self, param, grad, velocity=None):
        direction = grad + self.weight_decay * param if self.weight_decay else grad
        if velocity is not None:
            velocity *= self.momentum
            velocity += direction
            # As Adam's moments: a velocity whose gradient is exactly 0 would decay into
            # the subnormals and stay there, where arithmetic is ~7x slower.
            velocity[np.abs(velocity) < np.finfo(velocity.dtype).tiny] = 0
            direction = direction + self.momentum * velocity if self.nesterov else velocity
        param -= self.lr * direction

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr!r}, momentum={self.momentum!r}, nesterov={self.nesterov!r}, "
            f"weight_decay={self.weight_decay!r})"
        )


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias-corrected moment estimates.

    With ``m, v`` starting at 0 and ``t`` the 1-based step count::

        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g**2
        theta <- theta - lr * m_hat / (sqrt(v_hat) + eps),
                 m_hat = m / (1 - beta1**t),  v_hat = v / (1 - beta2**t)

    For a constant gradient ``m_hat = g`` and ``v_hat = g**2`` exactly, so every
    step moves each coordinate by ``lr * g / (|g| + eps)``, about ``lr * sign(g)``.
    ``beta1``, ``beta2`` in [0, 1) are the decay rates of the mean and the
    uncentred variance; ``eps`` > 0 keeps the step finite.  Params must be
    C-contiguous.  State: ``"m/<name>"``, ``"v/<name>"``.
    """

    state_kinds = ("m", "v")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, flat=None):
        self.beta1 = check_unit_interval("beta1", beta1)
        self.beta2 = check_unit_interval("beta2", beta2)
        self.eps = check_positive("eps", eps)
        for name, param in params.items():
            if not param.flags.c_contiguous:  # the kernel updates through flat views
                raise ValueError(f"Adam needs C-contiguous params; {name!r} is not")
        super().__init__(params, lr, flat)

    def _update(self, param, grad, m, v):
        # The rule above, compiled; kernels.adam_update_ref is the same rule in NumPy.
        step = self.step_count
        kernels.adam_update(param, grad, m, v, self.lr, self.beta1, self.beta2, self.eps, step)

    def __repr__(self) -> str:
        return f"Adam(lr={self.lr!r}, beta1={self.beta1!r}, beta2={self.beta2!r}, eps={self.eps!r})"


def _check_flat(params: dict[str, np.ndarray], flat) -> tuple[np.ndarray, np.ndarray]:
    """``flat`` as ``(flat_params, flat_grads)`` if the params are views of it, else ValueError."""
    flat_params, flat_grads = flat
    size = sum(param.size for param in params.values())
    for array in (flat_params, flat_grads):
        if not isinstance(array, np.ndarray) or array.shape != (size,):
            raise ValueError(f"flat needs two arrays of shape ({size},), the params' total size")
    if not all(param.base is flat_params for param in params.values()):
        raise ValueError("flat[0] must be the array the params are views of (model.flat_params)")
    return flat_params, flat_grads


def _views(flat: np.ndarray, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Views of ``flat`` with the shapes of ``like``'s arrays, end to end, in order."""
    views, offset = {}, 0
    for name, array in like.items():
        views[name] = flat[offset : offset + array.size].reshape(array.shape)
        offset += array.size
    return views


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm`` > 0.

    Returns the norm before clipping, ``sqrt(sum_k sum(grads[k]**2))``.  If it
    is above ``max_norm``, every gradient is multiplied in place by
    ``max_norm / norm``: the direction is kept, the norm becomes ``max_norm``.
    A NaN or infinite norm is returned with the gradients untouched, for the
    caller's NaN guard to see.
    """
    max_norm = check_positive("max_norm", max_norm)
    sum_of_squares = 0.0
    for grad in grads.values():
        # In float64: squares of float32 gradients above ~1.8e19 overflow float32.
        flat = grad.reshape(-1).astype(np.float64, copy=False)
        sum_of_squares += float(np.dot(flat, flat))
    norm = math.sqrt(sum_of_squares)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for grad in grads.values():
            grad *= scale
    return norm


#: Optimizer names accepted by :func:`make_optimizer`, with their fixed settings.
OPTIMIZERS: dict[str, tuple[type[Optimizer], dict]] = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "adam": (Adam, {}),
}


def make_optimizer(name: str, params: dict[str, np.ndarray], lr: float, flat=None, **kw):
    """The optimizer called ``name`` ("sgd", "momentum", "nesterov", "adam") over ``params``.

    ``"momentum"`` and ``"nesterov"`` are :class:`SGD` with ``momentum=0.9``
    (``kw`` may change it), Nesterov off and on.  ``flat`` as in
    :class:`Optimizer`; ``kw``: the class's other options (``momentum``,
    ``weight_decay``, ``beta1``, ``beta2``, ``eps``).  ConfigError for an
    unknown name or option.
    """
    key = str(name).strip().lower()
    if key not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    cls, preset = OPTIMIZERS[key]
    if "nesterov" in kw:
        raise ConfigError("choose Nesterov by name ('nesterov' or 'momentum'), not by option")
    return construct("optimizer", key, cls, (params, lr), {**preset, **kw}, flat=flat)
