"""What ``--resume`` checks before a run goes on: where, which flags, and the saved position.

:func:`npvae.app.run.resume` reads a run folder with these, in this order:
:func:`locate` finds the folder and its checkpoint (``last.npz``, ``best.npz``
with ``--from best``, or a checkpoint file named directly);
:func:`check_flags` refuses flags that would change the model or its data;
:func:`check_position` checks every field of the checkpoint's run state
(epoch, step, best, the interrupted epoch's record and batch order) against
the data, before a single step is taken; :func:`changes` lists what the new
flags change, for ``config.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npvae.app import runfolder
from npvae.app.config import Config, record
from npvae.app.flags import ResumeRequest
from npvae.errors import CheckpointError, ConfigError
from npvae.validate import counted

#: The settings a resumed run may change: none of them changes the model or its data
#: (``data_dir`` says where the same files are now: they are checked by their checksums).
RESUMABLE = ("epochs", "threads", "lr", "schedule", "lr_step", "lr_gamma", "figures", "ll_samples",
             "ll_examples", "data_dir")  # fmt: skip

_SUMS = ("loss", "recon", "kl")


@dataclass(frozen=True)
class Place:
    """A run folder and the checkpoint to continue from."""

    folder: Path
    checkpoint: Path

    @property
    def config_json(self) -> Path:
        return self.folder / runfolder.CONFIG


def locate(request: ResumeRequest) -> Place:
    """The run folder and checkpoint ``--resume PATH [--from last|best]`` names.

    PATH is a run folder, or a checkpoint file inside one's ``checkpoints``.
    Raises ConfigError saying which of them is missing.
    """
    path = Path(request.path)
    if path.is_file():
        if request.checkpoint is not None:
            raise ConfigError(f"--resume {path} names a checkpoint file already; leave out --from")
        if path.parent.name != runfolder.CHECKPOINTS:
            raise ConfigError(
                f"--resume {path}: a checkpoint file must be in a run folder's checkpoints/; "
                "give the run folder instead"
            )
        place = Place(path.parent.parent, path)
    elif not path.exists():
        raise ConfigError(f"--resume {path}: no such folder; check the path")
    elif not path.is_dir():
        raise ConfigError(f"--resume {path}: not a folder or a checkpoint file")
    else:
        place = Place(path, runfolder.checkpoint_path(path, request.checkpoint or "last"))
    if not place.config_json.is_file():
        has = "has checkpoints but " if (place.folder / runfolder.CHECKPOINTS).is_dir() else ""
        raise ConfigError(
            f"{place.folder} is not a run folder that can resume: it {has}has no config.json"
        )
    if not place.checkpoint.is_file():
        hint = ""
        if place.checkpoint.name == "last.npz" and (place.checkpoint.parent / "best.npz").is_file():
            hint = "; to go on from best.npz, add --from best"
        raise ConfigError(f"{place.folder} has no checkpoint {place.checkpoint.name}{hint}")
    return place


def hint_best(path: Path) -> str:
    """``"; to go on from best.npz, add --from best"`` when that is a way on from ``path``."""
    if path.name == "last.npz" and (path.parent / "best.npz").is_file():
        return "; to go on from best.npz, add --from best"
    return ""


def check_flags(given: dict) -> None:
    """Refuse every given setting but those of :data:`RESUMABLE`, naming them as typed."""
    labels = getattr(given, "labels", {name: name for name in given})
    refused = [labels[name] for name in given if name not in RESUMABLE]
    if refused:
        allowed = ", ".join(
            "--figures/--no-figures" if name == "figures" else "--" + name.replace("_", "-")
            for name in RESUMABLE
        )
        raise ConfigError(
            f"--resume keeps the saved model and data, so {', '.join(refused)} cannot be "
            f"given with it; only {allowed} may change"
        )


def check_epochs(config: Config, saved, place: Place, given: dict) -> bool:
    """Check ``--epochs`` against the checkpoint's; True when there is nothing to do.

    ``--epochs`` may not go below the epochs done.  Equal to them, only missing
    results are made (after a stop in the final evaluation), and then a new rate
    would act on nothing; with the results made, nothing is left to do and any
    change is refused.  A checkpoint other than ``last.npz`` needs epochs to train:
    ``results.json`` belongs to the last one.
    """
    folder, path = place.folder, place.checkpoint
    if config.epochs < saved.epoch or (config.epochs == saved.epoch and saved.extra.get("partial")):
        raise ConfigError(
            f"{folder} already has {counted(saved.epoch, 'epoch')}; "
            f"to train on, give --epochs more than {saved.epoch}"
        )
    if config.epochs > saved.epoch:
        return False
    if path.name != "last.npz":
        raise ConfigError(
            f"{path.name} has {counted(saved.epoch, 'epoch')}; to train on from it, give --epochs "
            f"more than {saved.epoch} (to evaluate it: python -m npvae.evaluate {path})"
        )
    finished = runfolder.has_results(folder)
    labels = getattr(given, "labels", {})
    idle = [
        labels.get(name, name)
        for name in given
        if name != "epochs" and (finished or name in ("lr", "schedule", "lr_step", "lr_gamma"))
    ]
    if idle:
        raise ConfigError(
            f"{folder} has no epochs left to train{' and has its results' if finished else ''}, "
            f"so {', '.join(idle)} would change nothing; "
            f"to train on, give --epochs more than {saved.epoch}"
        )
    return finished


def _whole(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_position(saved, n_train: int, batch_size: int, path: Path) -> tuple[float, dict]:
    """``(best, partial)`` from a checkpoint's run state, every field checked; else CheckpointError.

    ``saved`` is a :class:`npvae.app.checkpoint.Checkpoint` whose ``epoch`` and ``step``
    are whole numbers >= 0.  ``partial`` is ``{}`` at an epoch's end, else the
    interrupted epoch's ``batch`` and ``n`` (batches and examples done), ``sums``
    (running sums of ``loss``, ``recon``, maybe ``kl``) and ``order`` (the
    epoch's permutation of the ``n_train`` examples, ``(n_train,)`` integers).
    """

    def damaged(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}; the checkpoint is damaged{hint_best(path)}")

    extra = saved.extra
    unknown = sorted(set(extra) - {"best", "partial"})
    if unknown:
        raise damaged(f"unknown run state {unknown}")
    if "best" not in extra:
        raise damaged("no best loss")
    best = extra["best"]
    if not isinstance(best, int | float) or isinstance(best, bool) or math.isnan(best):
        raise damaged(f"best loss {best!r} is not a number")
    n_batches = -(-n_train // batch_size)
    partial = extra.get("partial") or {}
    if not isinstance(partial, dict):
        raise damaged(f"the interrupted epoch's record is {type(partial).__name__}, not a table")
    order = saved.run_arrays.get("order")
    if set(saved.run_arrays) - {"order"}:
        raise damaged(f"unknown run arrays {sorted(set(saved.run_arrays) - {'order'})}")
    if partial:
        if set(partial) != {"batch", "sums", "n"}:
            raise damaged(f"the interrupted epoch's record has keys {sorted(partial)}")
        batch, n, sums = partial["batch"], partial["n"], partial["sums"]
        if not _whole(batch, 1) or batch > n_batches:
            raise damaged(f"interrupted after batch {batch!r}, not one of 1 to {n_batches}")
        if not _whole(n) or n != min(batch * batch_size, n_train):
            raise damaged(
                f"{n!r} examples done in {counted(batch, 'batch', 'batches')} of {batch_size}"
            )
        numbers = isinstance(sums, dict) and all(
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            for value in sums.values()
        )
        # The loop keeps all three sums for every model (0 where it has no KL).
        if not numbers or set(sums) != set(_SUMS):
            raise damaged(f"the interrupted epoch's sums {sums!r} are not loss, recon and kl")
        if order is None:
            raise damaged("no batch order for the interrupted epoch")
        if order.shape != (n_train,) or order.dtype.kind not in "iu":
            indices = counted(n_train, "index", "indices")
            raise damaged(f"batch order is {order.dtype}{list(order.shape)}, not {indices}")
        if not np.array_equal(np.sort(order), np.arange(n_train)):
            raise damaged(
                f"batch order is not a permutation of the {counted(n_train, 'training example')}"
            )
        partial = {**partial, "sums": dict(sums), "order": order}
    elif order is not None:
        raise damaged("a batch order but no interrupted epoch")
    done = saved.epoch * n_batches + (partial["batch"] if partial else 0)
    if saved.step != done:
        raise damaged(
            f"step {saved.step} does not match epoch {saved.epoch} "
            f"(and batch {partial.get('batch', 0)}) of {counted(n_batches, 'batch', 'batches')}: "
            f"{done} expected"
        )
    return float(best), partial


def changes(saved: Config, new: Config) -> dict:
    """The resumable settings ``new`` changes, as recorded: name -> [old, new].

    A setting with no effect is recorded as null, so a schedule switched on
    shows its step and factor appearing (``[None, 2]``), not staying the same.
    """
    before, after = record(saved), record(new)
    return {name: [before[name], after[name]] for name in RESUMABLE if before[name] != after[name]}
