"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is one npz file (see :mod:`npvae.serialize`: no pickle, written
atomically) holding

* the model: its kind, config and parameters (``model/<name>`` arrays), so
  ``npvae.models.load(checkpoint)`` gives the trained model directly;
* the optimizer's state (``optim/<name>`` arrays: Adam's moments, the step),
  checked here by :func:`check_optimizer_state` before an optimizer copies it in;
* the state of the run's random generator, so dynamic binarisation, shuffling
  and the VAE's noise continue as if the run had never stopped;
* the epoch and step reached, the run's resolved config, and the best
  validation loss so far.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npvae.errors import CheckpointError
from npvae.models.base import Model, rebuild
from npvae.serialize import load_arrays, save_arrays

FORMAT = "npvae-checkpoint"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    model: Model
    optimizer_state: dict[str, np.ndarray]
    rng_state: dict
    epoch: int  # epochs completed
    step: int  # optimizer steps taken
    config: dict  # the run's resolved config
    extra: dict = field(default_factory=dict)  # e.g. best validation loss
    run_arrays: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. an epoch's order


def save_checkpoint(
    path: str | os.PathLike,
    model: Model,
    optimizer,
    rng: np.random.Generator,
    *,
    epoch: int,
    step: int,
    config: dict,
    extra: dict | None = None,
    run_arrays: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a checkpoint to ``path`` atomically; returns the path.

    ``extra`` is JSON-able run state; ``run_arrays`` are arrays of the run's
    own (stored as ``run/<name>``).
    """
    arrays = {f"model/{name}": value for name, value in model.params.items()}
    arrays.update({f"optim/{name}": value for name, value in optimizer.state_dict().items()})
    arrays.update({f"run/{name}": value for name, value in (run_arrays or {}).items()})
    header = {
        "format": FORMAT,
        "model": model.describe(),
        "rng": rng.bit_generator.state,
        "epoch": int(epoch),
        "step": int(step),
        "config": config,
        "extra": extra or {},
    }
    return save_arrays(path, arrays, header)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint; a damaged file or one of another format raises CheckpointError."""
    arrays, header = load_arrays(path)
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a training checkpoint (a saved model?)")
    for key, kind in (("model", dict), ("rng", dict), ("config", dict), ("extra", dict)):
        if not isinstance(header.get(key), kind):
            got = "missing" if key not in header else f"a {type(header[key]).__name__}"
            raise CheckpointError(f"{path}: damaged checkpoint: its {key} record is {got}")
    for key in ("epoch", "step"):
        value = header.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(
                f"{path}: damaged checkpoint: {key} is {value!r}, not a whole number >= 0"
            )
    stray = sorted(k for k in arrays if not k.startswith(("model/", "optim/", "run/")))
    if stray:
        raise CheckpointError(f"{path}: damaged checkpoint: unexpected arrays {stray[:3]}")
    model_arrays = {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}
    optim_arrays = {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")}
    run_arrays = {k[4:]: v for k, v in arrays.items() if k.startswith("run/")}
    model = rebuild(header["model"].get("kind"), header["model"].get("config"), model_arrays, path)
    return Checkpoint(
        model=model,
        optimizer_state=check_optimizer_state(optim_arrays, model.params, path),
        rng_state=header["rng"],
        epoch=header["epoch"],
        step=header["step"],
        config=header["config"],
        extra=header["extra"],
        run_arrays=run_arrays,
    )


def check_optimizer_state(
    state: dict[str, np.ndarray], params: dict[str, np.ndarray], source
) -> dict[str, np.ndarray]:
    """``state``, an optimizer's ``state_dict``, if whole for ``params``; else CheckpointError.

    ``"lr"`` must be a 0-d number, finite and >= 0; ``"step"`` a 0-d integer >= 0;
    every other array ``"<kind>/<param name>"``, one per param of each kind, with
    the param's shape, floating and finite, and Adam's second moments (``"v"``,
    means of squares) >= 0.  Which kinds an optimizer keeps is its own to check,
    in ``load_state_dict``.
    """
    state = {key: np.asarray(value) for key, value in state.items()}
    kinds = {key.split("/", 1)[0] for key in state if "/" in key}
    expected = {"lr", "step"} | {f"{kind}/{name}" for kind in kinds for name in params}
    if state.keys() != expected:
        missing, extra = sorted(expected - state.keys()), sorted(state.keys() - expected)
        raise CheckpointError(
            f"{source}: optimizer state does not fit the model: missing keys {missing[:5]}, "
            f"unexpected keys {extra[:5]}; resume with the model it was saved from"
        )
    lr, step = state.pop("lr"), state.pop("step")
    if lr.shape != () or lr.dtype.kind not in "fiu" or not (math.isfinite(lr) and lr >= 0):
        raise CheckpointError(
            f"{source}: optimizer state 'lr' must be a finite number >= 0, got {lr!r}; "
            "the checkpoint is damaged"
        )
    if step.shape != () or step.dtype.kind not in "iu" or step < 0:
        raise CheckpointError(
            f"{source}: optimizer state 'step' must be a 0-d integer >= 0, got {step!r}; "
            "the checkpoint is damaged"
        )
    for key, saved in state.items():
        kind, name = key.split("/", 1)
        if saved.shape != params[name].shape or saved.dtype.kind != "f":
            raise CheckpointError(
                f"{source}: optimizer state '{key}' has shape {saved.shape} dtype {saved.dtype}, "
                f"expected shape {params[name].shape} floating; resume with the model the "
                "checkpoint was saved from"
            )
        low = 0.0 if kind == "v" else -np.inf
        # NaN fails both comparisons, so it is caught here.
        if not (np.all(saved >= low) and np.all(saved < np.inf)):
            rule = "finite and >= 0" if low == 0 else "finite"
            raise CheckpointError(
                f"{source}: optimizer state '{key}' must be {rule}; the checkpoint is damaged"
            )
    return {"lr": lr, "step": step, **state}


def restore_rng(state: dict, source) -> np.random.Generator:
    """A ``numpy.random.Generator`` continuing from a saved ``bit_generator.state``."""
    try:
        # Only numpy's bit generators: the name comes from a file, so it must not pick
        # any other attribute of numpy.random.
        if state["bit_generator"] not in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"):
            raise ValueError(state["bit_generator"])
        bit_generator = getattr(np.random, state["bit_generator"])()
        bit_generator.state = state
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        raise CheckpointError(f"{source}: damaged random-generator state") from None
    return np.random.Generator(bit_generator)
