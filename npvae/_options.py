"""The checks on the options of an optimizer or a schedule, and building one by name.

Each check returns the value in its one type or raises ConfigError in one line;
:mod:`npvae.optim` and :mod:`npvae.schedules` share them.
"""

from __future__ import annotations

import inspect
import math

from npvae.errors import ConfigError


def check_lr(lr) -> float:
    """Return ``lr`` as a Python float, or raise ConfigError if it is not a finite lr >= 0."""
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise ConfigError(f"learning rate must be a number, got {lr!r}") from None
    if not math.isfinite(lr) or lr < 0.0:
        raise ConfigError(f"learning rate must be finite and >= 0, got {lr!r}")
    return lr


def check_positive_int(name: str, value) -> int:
    """Return ``value`` as an int >= 1, or raise ConfigError."""
    try:
        whole = int(value)
    except (TypeError, ValueError):
        whole = None
    if whole is None or whole != value or whole < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    return whole


def check_unit_interval(name: str, value) -> float:
    """Return ``value`` as a float in [0, 1), or raise ConfigError."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
    return value


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float > 0 (>= 0 with ``allow_zero``), or raise ConfigError."""
    number = float(value)
    if not math.isfinite(number) or number < 0.0 or (number == 0.0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be finite and {bound}, got {value!r}")
    return number


def construct(kind: str, name: str, cls: type, args: tuple, options: dict, **fixed):
    """``cls(*args, **options, **fixed)``, a bad or missing option turned into a ConfigError.

    ``args`` fill the leading ``params`` and ``lr``; ``fixed`` are set by the caller,
    not chosen as options, so they are not offered as such.
    """
    parameters = inspect.signature(cls).parameters
    accepted = [p for p in parameters if p not in ("params", "lr", *fixed)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"{kind} {name!r} does not take {unknown}; its options are {accepted}")
    missing = [
        p for p in accepted if parameters[p].default is inspect.Parameter.empty and p not in options
    ]
    if missing:
        raise ConfigError(f"{kind} {name!r} needs {missing}; give them as options")
    return cls(*args, **options, **fixed)
