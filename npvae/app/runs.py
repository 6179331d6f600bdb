"""A run folder, opened again: its model, its config and its data, as training had them.

``python -m npvae.train`` writes a run folder; ``--resume``, ``python -m
npvae.evaluate`` and ``python -m npvae.figures`` read one back through here,
so all three find the data the same way and prepare test images the same way.

A run folder ``runs/<time>-<model>/`` holds ``config.json`` (the resolved
config plus ``dataset_used``, ``data_source`` and the versions),
``metrics.csv``, ``checkpoints/last.npz`` and ``best.npz``, ``results.json``
and the figures.  :func:`open_saved` takes such a folder, one of its
checkpoints, or a bare model file written by ``Model.save``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from npvae.app.checkpoint import load_checkpoint
from npvae.app.config import Config, from_dict
from npvae.data import binarize_static, load_dataset, split_validation
from npvae.data.datasets import EMBEDDED_NAME
from npvae.errors import CheckpointError, ConfigError, DataError
from npvae.models.base import Model
from npvae.serialize import load_arrays

CHECKPOINTS = ("best", "last")

#: The figures draw from the first this many test images (the latent map shows them all).
FIGURE_IMAGES = 5000

#: Model kinds as a title names them.
TITLES = {
    "vae": "VAE",
    "iwae": "IWAE",
    "iwae2": "two-layer IWAE",
    "ae": "autoencoder",
    "sparse-ae": "sparse autoencoder",
    "denoising-ae": "denoising autoencoder",
    "contractive-ae": "contractive autoencoder",
}

DATASET_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "digits": "embedded digits"}


@dataclass
class SavedRun:
    """A model read back from disk, with what is known of the run that made it."""

    model: Model
    source: Path  # the file the weights came from
    folder: Path | None  # the run folder, or None for a bare model file
    config: Config | None  # the run's resolved config (None for a bare model file)
    record: dict  # config.json's contents ({} for a bare model file)
    epoch: int | None  # epochs the weights had trained (None if unknown)
    checkpoint: str  # "best", "last" or "file"
    step: int | None = None  # optimizer steps taken (None if unknown)

    @property
    def dataset(self) -> str | None:
        """The dataset the run trained on (None for a bare model file)."""
        return self.record.get("dataset_used") if self.record else None

    def title(self) -> str:
        """``"VAE 784-400-20 on MNIST, epoch 10"``: for figure titles and tables."""
        return run_title(self.model, self.dataset, self.epoch, best=self.checkpoint == "best")


def run_title(model: Model, dataset: str | None, epoch: int | None, best: bool = False) -> str:
    """``"VAE 784-400-20 on MNIST, epoch 10"``: a model, its dataset and its epochs, named."""
    name = TITLES.get(model.kind, model.kind)
    if model.config.get("objective") == "vae":  # the two-layer model on the mean of its ELBOs
        name = "two-layer VAE"
    text = f"{name} {architecture(model)}"
    if dataset:
        text += f" on {DATASET_TITLES.get(dataset, dataset)}"
    if epoch is not None:
        text += f", epoch {epoch}" + (" (best)" if best else "")
    return text


def architecture(model: Model) -> str:
    """``"784-400-20"``: the widths from the input to the code (to z2, for the two-layer IWAE)."""
    config = model.config
    if "latent2" in config:  # x to z1, then z1 to z2: "784-200-200-100-100-100-50"
        widths = [config["input_dim"], *config["hidden1"], config["latent1"], *config["hidden2"]]
        return "-".join(str(width) for width in [*widths, config["latent2"]])
    code = config.get("latent_dim", config.get("code_dim"))
    return "-".join(str(width) for width in [config["input_dim"], *config["hidden"], code])


def open_saved(target: str | Path, checkpoint: str = "best") -> SavedRun:
    """Open a run folder (its ``checkpoint``), a checkpoint file, or a model file.

    Raises :class:`CheckpointError` or :class:`ConfigError` (one line naming
    the path) when ``target`` is missing, damaged or not npvae's.
    """
    target = Path(target)
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint must be one of: {', '.join(CHECKPOINTS)}")
    if target.is_dir():
        path = target / "checkpoints" / f"{checkpoint}.npz"
        if not (target / "config.json").is_file() and not path.is_file():
            raise ConfigError(f"{target} is not a run folder (no config.json, no checkpoints)")
        if not path.is_file():
            other = "last" if checkpoint == "best" else "best"
            raise CheckpointError(
                f"{target} has no {path.name} yet; "
                f"try --checkpoint {other}, or train the run to the end of an epoch"
            )
        return _from_checkpoint(path, target, checkpoint)
    if not target.exists():
        raise ConfigError(f"{target}: no such run folder or file; check the path")
    arrays, header = load_arrays(target)
    if header.get("format") == "npvae-checkpoint":
        folder = target.parent.parent if target.parent.name == "checkpoints" else None
        return _from_checkpoint(target, folder, target.stem if target.stem in CHECKPOINTS else "")
    model = Model._from_saved(target, arrays, header)
    return SavedRun(model, target, None, None, {}, None, "file")


def _from_checkpoint(path: Path, folder: Path | None, which: str) -> SavedRun:
    saved = load_checkpoint(path)
    config = from_dict(saved.config, path)
    record = {}
    if folder is not None and (folder / "config.json").is_file():
        try:
            record = json.loads((folder / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{folder / 'config.json'} is damaged") from None
        if not isinstance(record, dict):
            raise CheckpointError(f"{folder / 'config.json'} is damaged")
    return SavedRun(
        saved.model, path, folder, config, record, saved.epoch, which or "file", saved.step
    )


# ----- data, found as training finds it -----------------------------------------------------


def load_data(config: Config):
    """The dataset ``config`` names, with the automatic MNIST-else-digits choice and the split."""
    if config.data_dir is not None and not Path(config.data_dir).expanduser().is_dir():
        raise ConfigError(f"--data-dir {config.data_dir} is not a folder; check the path")
    if config.dataset == "auto" and config.data_dir is None:
        try:
            data = load_dataset("mnist", config.data_dir)
        except DataError as err:
            if "checksum mismatch" in str(err):
                reason = "no local copy, and the downloaded files failed their checksums"
            elif "download" in str(err):
                reason = "no local copy, and the download failed"
            else:
                reason = err
            print(
                f"MNIST is not available ({reason}); training on the embedded digits instead",
                file=sys.stderr,
            )
            data = load_dataset("digits")
    else:
        # With --data-dir the user said where the data is: no fallback, no download.
        name = "mnist" if config.dataset == "auto" else config.dataset
        data = load_dataset(name, config.data_dir)
    if config.val_size:
        data = split_validation(data, config.val_size, config.seed)
    return data


def recorded_data(config: Config, record: dict):
    """The dataset a run trained on, exactly: no automatic choice, no fallback."""
    used = record.get("dataset_used", config.dataset)
    try:
        data = load_data(replace(config, dataset=used))
    except (DataError, ConfigError) as err:
        hint = "; if its files have moved, give --data-dir DIR" if used != EMBEDDED_NAME else ""
        raise DataError(
            f"this run trained on {used}, which cannot be loaded now: {err}{hint}"
        ) from None
    # Files are checked against their checksums; the embedded set is defined by its source.
    if used == EMBEDDED_NAME and data.source != record.get("data_source", data.source):
        raise DataError(
            f"this run trained on {record['data_source']}, but this npvae makes {data.source}"
        )
    return data


def test_binarize_seed(config: Config) -> int:
    """The seed of the one fixed binarisation of a run's validation and test images."""
    return config.seed + 1


def prepare_images(images: np.ndarray, binarize: str, seed: int, dtype) -> np.ndarray:
    """uint8 ``images (N, D)`` as the model sees them: ``(N, D)`` floats of ``dtype``.

    Scaled to [0, 1]; for a model trained on binarised data (``binarize`` not
    ``"none"``), binarised once with ``seed``, so an evaluation is reproducible.
    """
    if binarize != "none":
        return binarize_static(images, seed).astype(dtype)
    # float32 is already the model's dtype in the usual case: no second copy.
    return (images / np.float32(255)).astype(dtype, copy=False)
