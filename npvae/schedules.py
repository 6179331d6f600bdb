"""Learning-rate schedules: ``schedule(epoch) -> lr``, ``epoch`` 0-based.

The trainer sets ``optimizer.lr = schedule(epoch)`` at the start of each epoch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from npvae._options import check_lr, check_positive, check_positive_int, construct
from npvae.errors import ConfigError

__all__ = [
    "Schedule",
    "ConstantLR",
    "StepLR",
    "ExponentialLR",
    "IWAESchedule",
    "FittedIWAESchedule",
    "make_schedule",
    "SCHEDULES",
]


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
        self.lr = check_lr(lr)

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
        self.lr = check_lr(lr)
        self.step_size = check_positive_int("step_size", step_size)
        self.gamma = check_positive("gamma", gamma)

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
        self.lr = check_lr(lr)
        self.gamma = check_positive("gamma", gamma)

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
        self.lr = check_lr(lr)
        self.stages = check_positive_int("stages", stages)
        #: Sum of all stage lengths, ``sum(3**i for i in range(stages))``.
        self.total_epochs = (3**self.stages - 1) // 2
        #: The epochs the stages are spread over (``total_epochs`` for the paper's own).
        self.epochs = self.total_epochs if epochs is None else check_positive_int("epochs", epochs)

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


#: Schedule names accepted by :func:`make_schedule`.
SCHEDULES: dict[str, type[Schedule]] = {
    "constant": ConstantLR,
    "step": StepLR,
    "exponential": ExponentialLR,
    "iwae": IWAESchedule,
    "iwae-fit": FittedIWAESchedule,
}


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
    return construct("schedule", key, SCHEDULES[key], (lr,), kw)
