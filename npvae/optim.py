"""Optimizers, learning-rate schedules and gradient clipping.

An optimizer holds a model's ``params`` dict (name -> array) and, on
:meth:`Optimizer.step`, updates those arrays *in place* from a ``grads`` dict
with the same keys.  The arrays are the model's live parameters, so they are
never rebound; their dtype (float32 or float64) is never changed, and the
optimizer's own state (momentum, Adam's moments) has the same dtype.

Optimizer state is a flat ``dict[str, np.ndarray]`` (``"m/enc.0.W"``,
``"step"``, ``"lr"``, ...) that survives ``np.savez`` and
``np.load(..., allow_pickle=False)``; restoring it and stepping on gives
bit-identical parameters to a run that was never interrupted.

A schedule is a small callable ``schedule(epoch) -> lr`` (``epoch`` 0-based);
the trainer sets ``optimizer.lr = schedule(epoch)`` at the start of each epoch.

The update rules are derived in ``docs/backprop.md#adam``.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from npvae import kernels
from npvae.errors import CheckpointError, ConfigError

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "clip_grad_norm",
    "ConstantLR",
    "StepLR",
    "ExponentialLR",
    "IWAESchedule",
    "make_optimizer",
    "make_schedule",
    "OPTIMIZERS",
    "SCHEDULES",
]


def _check_lr(lr) -> float:
    """Return ``lr`` as a Python float, or raise ConfigError if it is not a finite lr >= 0."""
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise ConfigError(f"learning rate must be a number, got {lr!r}") from None
    if not math.isfinite(lr) or lr < 0.0:
        raise ConfigError(f"learning rate must be finite and >= 0, got {lr!r}")
    return lr


def _check_positive_int(name: str, value) -> int:
    """Return ``value`` as an int >= 1, or raise ConfigError."""
    try:
        whole = int(value)
    except (TypeError, ValueError):
        whole = None
    if whole is None or whole != value or whole < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    return whole


def _check_unit_interval(name: str, value) -> float:
    """Return ``value`` as a float in [0, 1), or raise ConfigError."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
    return value


def _tiled(arrays: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The 1-D array that ``arrays`` fill end to end, in order, if they do; else None.

    A model keeps its parameters like this (``Model.flat_params``), and its
    gradients (``Model.flat_grads``); an optimizer then updates them all in one
    pass instead of one per array.
    """
    base = next(iter(arrays.values())).base
    if base is None or base.ndim != 1:
        return None
    start = address = base.__array_interface__["data"][0]
    for array in arrays.values():
        if array.base is not base or not array.flags.c_contiguous:
            return None
        if array.__array_interface__["data"][0] != address:
            return None
        address += array.nbytes
    return base if address == start + base.nbytes else None


class Optimizer(ABC):
    """Base class: holds ``params``, checks ``grads``, saves and restores state.

    Subclasses fill ``self._buffers`` (buffer kind -> param name -> array of the
    param's shape and dtype) in ``__init__`` and implement ``_update``.  When the
    params are a model's packed ones (views that tile one flat array), the state
    buffers are packed the same way, and a step whose gradients are packed too
    runs ``_update`` once on the three flat arrays.

    Parameters
    ----------
    params : dict[str, np.ndarray]
        The model's live parameters, floating arrays of any shape.  Held by
        reference and updated in place.
    lr : float
        Learning rate, >= 0.  Settable later through the ``lr`` attribute.
    """

    #: Buffer kinds that can never be negative (Adam's second moments), so a loaded
    #: negative one is damage.
    _nonnegative_buffers: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], lr: float):
        if not isinstance(params, Mapping) or not params:
            raise ValueError("params must be a non-empty dict of name -> np.ndarray")
        for name, param in params.items():
            if not isinstance(param, np.ndarray) or param.dtype.kind != "f":
                raise ValueError(f"param {name!r} must be a floating np.ndarray, got {param!r}")
        self.params = params
        self.lr = lr
        #: Number of completed calls to :meth:`step`.
        self.step_count = 0
        self._buffers: dict[str, dict[str, np.ndarray]] = {}
        self._flat_params = _tiled(params)  # None unless the params are packed
        # The flat arrays that the gradients and the state buffers tile, found once:
        # _tiled costs ~50 us a call, and looking up all three each step took 0.15 ms,
        # 4% of a classic VAE step.
        self._seen_grads: tuple[tuple[np.ndarray, ...], np.ndarray | None] = ((), None)
        self._flat_buffers: dict[str, dict[str, np.ndarray]] | None = None

    @property
    def lr(self) -> float:
        """The learning rate used by the next :meth:`step` (a Python float)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        # Stored as a Python float, never a NumPy float64: under NumPy 2's
        # promotion rules a float64 scalar would upcast float32 temporaries.
        self._lr = _check_lr(value)

    def _zeros_like_params(self) -> dict[str, np.ndarray]:
        """A zeroed state buffer per param, packed like the params if they are."""
        if self._flat_params is None:
            return {name: np.zeros_like(param) for name, param in self.params.items()}
        flat, views, offset = np.zeros_like(self._flat_params), {}, 0
        for name, param in self.params.items():
            views[name] = flat[offset : offset + param.size].reshape(param.shape)
            offset += param.size
        return views

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : dict[str, np.ndarray]
            Same keys as ``params``; ``grads[k]`` has the shape of ``params[k]``.
            A gradient of another floating dtype is cast to the param's dtype.
        """
        if grads.keys() != self.params.keys():
            missing = sorted(self.params.keys() - grads.keys())
            extra = sorted(grads.keys() - self.params.keys())
            raise ValueError(f"grads keys differ from params: missing {missing}, extra {extra}")
        checked = {}
        for name, param in self.params.items():
            grad = grads[name]
            if grad.shape != param.shape:
                raise ValueError(
                    f"grad {name!r} has shape {grad.shape}, param has shape {param.shape}"
                )
            checked[name] = np.ascontiguousarray(grad, dtype=param.dtype)
        self.step_count += 1
        flat_grads = None if self._flat_params is None else self._tiled_grads(checked)
        if flat_grads is None:
            self._update(self.params, checked, self._buffers)
        else:  # one pass over all the params, whatever the number of layers
            if self._flat_buffers is None:  # the buffers are ours, made packed, never replaced
                self._flat_buffers = {
                    kind: {"all": _tiled(buffers)} for kind, buffers in self._buffers.items()
                }
            self._update({"all": self._flat_params}, {"all": flat_grads}, self._flat_buffers)

    def _tiled_grads(self, grads: dict[str, np.ndarray]) -> np.ndarray | None:
        """:func:`_tiled` of ``grads``, remembered while they are the same array objects.

        An array's address, size and layout cannot change under it, so the same
        objects always tile the same flat array (or none).
        """
        arrays = tuple(grads.values())
        seen, flat = self._seen_grads
        if len(seen) != len(arrays) or any(a is not b for a, b in zip(seen, arrays)):
            flat = _tiled(grads)
            self._seen_grads = (arrays, flat)
        return flat

    @abstractmethod
    def _update(self, params: dict, grads: dict, buffers: dict) -> None:
        """Apply this rule in place: ``params``, ``grads`` and each ``buffers[kind]`` share keys.

        They are ``self.params``, the checked gradients and ``self._buffers``, or
        one flat array each under the key ``"all"``; ``step_count`` is already counted.
        """

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return a copy of the optimizer state as a flat dict of arrays.

        Returns
        -------
        dict[str, np.ndarray]
            ``"lr"`` (0-d float64), ``"step"`` (0-d int64), and one entry
            ``"<buffer>/<param name>"`` per state buffer, with the param's shape
            and dtype.  Safe for ``np.savez`` / ``np.load(allow_pickle=False)``.
        """
        state = {
            "lr": np.array(self.lr, dtype=np.float64),
            "step": np.array(self.step_count, dtype=np.int64),
        }
        for kind, buffers in self._buffers.items():
            for name, buffer in buffers.items():
                state[f"{kind}/{name}"] = buffer.copy()
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore state saved by :meth:`state_dict` of an identical optimizer.

        Everything is checked before anything is changed, so a bad state leaves
        the optimizer as it was.

        Parameters
        ----------
        state : Mapping[str, np.ndarray]
            As returned by :meth:`state_dict`, or the ``np.load`` of its
            ``np.savez``.

        Raises
        ------
        CheckpointError
            If keys, shapes or dtypes do not match this optimizer and its params.
        """
        state = {key: np.asarray(state[key]) for key in state}
        expected = self.state_dict().keys()
        if state.keys() != expected:
            missing = sorted(expected - state.keys())
            extra = sorted(state.keys() - expected)
            raise CheckpointError(
                f"optimizer state does not fit this {type(self).__name__}: "
                f"missing keys {missing[:5]}, unexpected keys {extra[:5]}; "
                "resume with the same optimizer and model it was saved from"
            )
        lr_array, step_array = state["lr"], state["step"]
        if lr_array.shape != () or lr_array.dtype.kind not in "fiu":
            raise CheckpointError(
                f"optimizer state 'lr' must be a 0-d number, got shape {lr_array.shape} "
                f"dtype {lr_array.dtype}; the checkpoint is damaged"
            )
        if step_array.shape != () or step_array.dtype.kind not in "iu" or step_array < 0:
            raise CheckpointError(
                f"optimizer state 'step' must be a 0-d integer >= 0, got {step_array!r}; "
                "the checkpoint is damaged"
            )
        lr = float(lr_array)
        if not math.isfinite(lr) or lr < 0.0:
            raise CheckpointError(
                f"optimizer state 'lr' is {lr!r}, not a finite lr >= 0; the checkpoint is damaged"
            )
        for kind, buffers in self._buffers.items():
            for name, buffer in buffers.items():
                saved = state[f"{kind}/{name}"]
                if saved.shape != buffer.shape or saved.dtype.kind != "f":
                    raise CheckpointError(
                        f"optimizer state '{kind}/{name}' has shape {saved.shape} dtype "
                        f"{saved.dtype}, expected shape {buffer.shape} dtype {buffer.dtype}; "
                        "resume with the model the checkpoint was saved from"
                    )
        for kind, buffers in self._buffers.items():
            for name in buffers:
                saved = state[f"{kind}/{name}"]
                low = 0.0 if kind in self._nonnegative_buffers else -np.inf
                # NaN fails both comparisons, so it is caught here, not blamed on the lr later.
                if not (np.all(saved >= low) and np.all(saved < np.inf)):
                    rule = "finite and >= 0" if low == 0 else "finite"
                    raise CheckpointError(
                        f"optimizer state '{kind}/{name}' must be {rule}; the checkpoint is damaged"
                    )
        for kind, buffers in self._buffers.items():
            for name, buffer in buffers.items():
                np.copyto(buffer, state[f"{kind}/{name}"], casting="same_kind")
        self.lr = lr
        self.step_count = int(step_array)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr!r}, {len(self.params)} params)"


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum and L2 decay.

    Parameters
    ----------
    params : dict[str, np.ndarray]
        Live parameters, updated in place.
    lr : float
        Learning rate ``eta`` >= 0.
    momentum : float, default 0.0
        Momentum coefficient ``mu`` in [0, 1); 0 is plain SGD.
    nesterov : bool, default False
        Use Nesterov's look-ahead form (needs ``momentum > 0``).
    weight_decay : float, default 0.0
        L2 coefficient ``lambda`` >= 0, added to the gradient.

    Notes
    -----
    With ``d = g + lambda * theta`` (the gradient of the loss plus
    ``lambda/2 * ||theta||^2``) and velocity ``u`` starting at 0::

        plain:     theta <- theta - eta * d
        momentum:  u <- mu * u + d;   theta <- theta - eta * u
        nesterov:  u <- mu * u + d;   theta <- theta - eta * (d + mu * u)

    This is the PyTorch convention (``eta`` multiplies the velocity, not the
    gradient inside it), so changing ``lr`` mid-run does not rescale the
    velocity already built up.  State: ``"velocity/<name>"`` when
    ``momentum > 0``.  See ``docs/backprop.md#adam``.
    """

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        self.momentum = _check_unit_interval("momentum", momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0.0:
            raise ConfigError(f"weight_decay must be finite and >= 0, got {weight_decay!r}")
        if self.nesterov and self.momentum == 0.0:
            raise ConfigError("nesterov=True needs momentum > 0; set momentum (e.g. 0.9)")
        if self.momentum > 0.0:
            self._buffers["velocity"] = self._zeros_like_params()

    def _update(self, params: dict, grads: dict, buffers: dict) -> None:
        lr, mu = self.lr, self.momentum
        for name, param in params.items():
            direction = grads[name]
            if self.weight_decay:
                direction = direction + self.weight_decay * param
            if mu:
                velocity = buffers["velocity"][name]
                velocity *= mu
                velocity += direction
                # As in Adam: a velocity that decays into the subnormals (its gradient is
                # exactly 0) would stay there, and subnormal arithmetic is ~7x slower.
                velocity[np.abs(velocity) < np.finfo(velocity.dtype).tiny] = 0
                direction = direction + mu * velocity if self.nesterov else velocity
            param -= lr * direction

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr!r}, momentum={self.momentum!r}, nesterov={self.nesterov!r}, "
            f"weight_decay={self.weight_decay!r})"
        )


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias-corrected moment estimates.

    Parameters
    ----------
    params : dict[str, np.ndarray]
        Live parameters, updated in place.
    lr : float, default 1e-3
        Step size ``eta`` >= 0.
    beta1 : float, default 0.9
        Decay rate of the first-moment (mean) estimate, in [0, 1).
    beta2 : float, default 0.999
        Decay rate of the second-moment (uncentred variance) estimate, in [0, 1).
    eps : float, default 1e-8
        Added to the root of the second moment so the step stays finite; > 0.

    Notes
    -----
    With ``m, v`` starting at 0 and ``t`` the 1-based step count::

        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        theta <- theta - eta * m_hat / (sqrt(v_hat) + eps)

    For a constant gradient ``m_hat = g`` and ``v_hat = g**2`` exactly, so every
    step moves each coordinate by ``eta * g / (|g| + eps)``, about
    ``eta * sign(g)``.  The update is the fused in-place kernel
    :func:`npvae.kernels.adam_update`.  State: ``"m/<name>"``, ``"v/<name>"``.
    See ``docs/backprop.md#adam``.
    """

    _nonnegative_buffers = ("v",)

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ):
        super().__init__(params, lr)
        self.beta1 = _check_unit_interval("beta1", beta1)
        self.beta2 = _check_unit_interval("beta2", beta2)
        self.eps = float(eps)
        if not math.isfinite(self.eps) or self.eps <= 0.0:
            raise ConfigError(f"eps must be finite and > 0, got {eps!r}")
        for name, param in params.items():
            if not param.flags.c_contiguous:
                # The fused kernel updates each param through a flat view.
                raise ValueError(f"Adam needs C-contiguous params; {name!r} is not")
        self._buffers["m"] = self._zeros_like_params()
        self._buffers["v"] = self._zeros_like_params()

    def _update(self, params: dict, grads: dict, buffers: dict) -> None:
        first_moments, second_moments = buffers["m"], buffers["v"]
        for name, param in params.items():
            kernels.adam_update(
                param,
                grads[name],
                first_moments[name],
                second_moments[name],
                self.lr,
                self.beta1,
                self.beta2,
                self.eps,
                self.step_count,
            )

    def __repr__(self) -> str:
        return f"Adam(lr={self.lr!r}, beta1={self.beta1!r}, beta2={self.beta2!r}, eps={self.eps!r})"


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    Parameters
    ----------
    grads : dict[str, np.ndarray]
        Gradients of any shapes; scaled in place when clipped.
    max_norm : float
        Largest allowed global norm, > 0.

    Returns
    -------
    float
        The global norm *before* clipping, ``sqrt(sum_k sum(grads[k]**2))``.
        NaN if any gradient is NaN, inf if the norm is infinite; in both cases
        the gradients are left untouched so the caller's NaN guard sees them.

    Notes
    -----
    If ``norm > max_norm`` every gradient is multiplied by ``max_norm / norm``,
    which keeps the direction of the full gradient and sets its norm to
    ``max_norm``.
    """
    max_norm = float(max_norm)
    if not math.isfinite(max_norm) or max_norm <= 0.0:
        raise ConfigError(f"max_norm must be finite and > 0, got {max_norm!r}")
    sum_of_squares = 0.0
    for grad in grads.values():
        # Accumulate in float64: squares of float32 gradients above ~1.8e19
        # overflow float32 and would turn a large norm into inf.
        flat = grad.reshape(-1).astype(np.float64, copy=False)
        sum_of_squares += float(np.dot(flat, flat))
    norm = math.sqrt(sum_of_squares)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for grad in grads.values():
            grad *= scale
    return norm


class Schedule(ABC):
    """A learning rate as a function of the 0-based epoch: ``schedule(epoch) -> lr``."""

    def __call__(self, epoch: int) -> float:
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch is 0-based, got {epoch}")
        return self._lr_at(epoch)

    @abstractmethod
    def _lr_at(self, epoch: int) -> float:
        """The learning rate of 0-based ``epoch``."""


class ConstantLR(Schedule):
    """The same learning rate every epoch: ``lr(epoch) = lr``."""

    def __init__(self, lr: float):
        self.lr = _check_lr(lr)

    def _lr_at(self, epoch: int) -> float:
        return self.lr

    def __repr__(self) -> str:
        return f"ConstantLR(lr={self.lr!r})"


class StepLR(Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    Notes
    -----
    ``lr(epoch) = lr * gamma ** (epoch // step_size)``.
    """

    def __init__(self, lr: float, step_size: int, gamma: float):
        self.lr = _check_lr(lr)
        self.step_size = _check_positive_int("step_size", step_size)
        self.gamma = float(gamma)
        if not math.isfinite(self.gamma) or self.gamma <= 0.0:
            raise ConfigError(f"gamma must be finite and > 0, got {gamma!r}")

    def _lr_at(self, epoch: int) -> float:
        return self.lr * self.gamma ** (epoch // self.step_size)

    def __repr__(self) -> str:
        return f"StepLR(lr={self.lr!r}, step_size={self.step_size!r}, gamma={self.gamma!r})"


class ExponentialLR(Schedule):
    """Multiply the learning rate by ``gamma`` every epoch.

    Notes
    -----
    ``lr(epoch) = lr * gamma ** epoch``.
    """

    def __init__(self, lr: float, gamma: float):
        self.lr = _check_lr(lr)
        self.gamma = float(gamma)
        if not math.isfinite(self.gamma) or self.gamma <= 0.0:
            raise ConfigError(f"gamma must be finite and > 0, got {gamma!r}")

    def _lr_at(self, epoch: int) -> float:
        return self.lr * self.gamma**epoch

    def __repr__(self) -> str:
        return f"ExponentialLR(lr={self.lr!r}, gamma={self.gamma!r})"


class IWAESchedule(Schedule):
    """The staged schedule of the IWAE paper (Burda, Grosse & Salakhutdinov, 2015).

    Parameters
    ----------
    lr : float
        Learning rate of the first stage (the paper uses 1e-3 with Adam).
    stages : int, default 8
        Number of stages; the paper uses 8, i.e. 3280 epochs.
    epochs : int, optional
        Stretch or squeeze the stages, keeping their proportions, so that they
        last this many epochs (None: the paper's lengths).

    Notes
    -----
    Stage ``i = 0 .. stages-1`` lasts ``3**i`` epochs at ``lr * 10**(-i/7)``,
    so stage ``i`` starts at epoch ``(3**i - 1) / 2`` (0, 1, 4, 13, 40, ...)
    and the schedule lasts ``total_epochs = (3**stages - 1) / 2`` epochs.
    With ``epochs`` given, epoch ``e`` takes the rate of the paper's epoch
    ``e * total_epochs / epochs``: 820 epochs run the 8 stages at a quarter of
    their length (1 epoch at 1e-3, then 3, 6, 21, 60, 183 and the last 546 at
    1e-4; the second stage, a quarter of an epoch, falls between two epochs).
    Past the end it stays at the last stage's rate.
    """

    def __init__(self, lr: float, stages: int = 8, epochs: int | None = None):
        self.lr = _check_lr(lr)
        self.stages = _check_positive_int("stages", stages)
        #: Sum of all stage lengths, ``sum(3**i for i in range(stages))``.
        self.total_epochs = (3**self.stages - 1) // 2
        #: The epochs the stages are spread over (``total_epochs`` for the paper's own).
        self.epochs = self.total_epochs if epochs is None else _check_positive_int("epochs", epochs)

    def stage(self, epoch: int) -> int:
        """The 0-based stage that ``epoch`` falls in (the last stage past the end)."""
        # Epoch e is at the paper's epoch e * total / epochs; compared in integers, so that
        # the paper's own lengths are exact.
        scaled = epoch * self.total_epochs
        stage, stage_end = 0, 1
        while scaled >= stage_end * self.epochs and stage < self.stages - 1:
            stage += 1
            stage_end += 3**stage
        return stage

    def _lr_at(self, epoch: int) -> float:
        return self.lr * 10.0 ** (-self.stage(epoch) / 7)

    def __repr__(self) -> str:
        fitted = "" if self.epochs == self.total_epochs else f", epochs={self.epochs!r}"
        return f"{type(self).__name__}(lr={self.lr!r}, stages={self.stages!r}{fitted})"


class FittedIWAESchedule(IWAESchedule):
    """:class:`IWAESchedule` with its stages fitted to the run's ``epochs`` (``iwae-fit``)."""

    def __init__(self, lr: float, epochs: int, stages: int = 8):
        super().__init__(lr, stages, epochs)


#: Optimizer names accepted by :func:`make_optimizer`, with their fixed settings.
OPTIMIZERS: dict[str, tuple[type[Optimizer], dict]] = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "adam": (Adam, {}),
}

#: Schedule names accepted by :func:`make_schedule`.
SCHEDULES: dict[str, type[Schedule]] = {
    "constant": ConstantLR,
    "step": StepLR,
    "exponential": ExponentialLR,
    "iwae": IWAESchedule,
    "iwae-fit": FittedIWAESchedule,
}


def _construct(kind: str, name: str, cls: type, args: tuple, kwargs: dict):
    """Call ``cls(*args, **kwargs)``, turning a bad or missing option into a ConfigError."""
    parameters = inspect.signature(cls).parameters
    accepted = [p for p in parameters if p not in ("params", "lr")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"{kind} {name!r} does not take {unknown}; its options are {accepted}")
    missing = [
        p for p in accepted if parameters[p].default is inspect.Parameter.empty and p not in kwargs
    ]
    if missing:
        raise ConfigError(f"{kind} {name!r} needs {missing}; give them as options")
    return cls(*args, **kwargs)


def make_optimizer(name: str, params: dict[str, np.ndarray], lr: float, **kw) -> Optimizer:
    """Build an optimizer by name.

    Parameters
    ----------
    name : {"sgd", "momentum", "nesterov", "adam"}
        ``"momentum"`` and ``"nesterov"`` are :class:`SGD` with ``momentum=0.9``
        (overridable through ``kw``) and Nesterov off / on.
    params : dict[str, np.ndarray]
        Live parameters, updated in place.
    lr : float
        Learning rate.
    **kw
        Further options of the optimizer class (``momentum``, ``weight_decay``,
        ``beta1``, ``beta2``, ``eps``).

    Raises
    ------
    ConfigError
        For an unknown name or option.
    """
    key = str(name).strip().lower()
    if key not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    cls, preset = OPTIMIZERS[key]
    if "nesterov" in kw:
        raise ConfigError("choose Nesterov by name ('nesterov' or 'momentum'), not by option")
    return _construct("optimizer", key, cls, (params, lr), {**preset, **kw})


def make_schedule(name: str, lr: float, **kw) -> Schedule:
    """Build a learning-rate schedule by name.

    Parameters
    ----------
    name : {"constant", "step", "exponential", "iwae", "iwae-fit"}
        :class:`ConstantLR`, :class:`StepLR`, :class:`ExponentialLR`,
        :class:`IWAESchedule` or :class:`FittedIWAESchedule`.
    lr : float
        Initial learning rate.
    **kw
        The schedule's other arguments (``step_size``, ``gamma``, ``stages``, ``epochs``).

    Raises
    ------
    ConfigError
        For an unknown name or option.
    """
    key = str(name).strip().lower()
    if key not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return _construct("schedule", key, SCHEDULES[key], (lr,), kw)
