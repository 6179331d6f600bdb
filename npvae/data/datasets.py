"""Datasets by name, as uint8 arrays ready for :class:`~npvae.data.batches.Batches`.

``load_dataset("mnist")`` finds (or downloads) the IDX files through
:mod:`npvae.data.sources`, reads them with :mod:`npvae.data.idx`, checks
every file's checksum and shape, and returns a :class:`Dataset` whose images
are flattened to ``(N, 784)`` uint8.  ``load_dataset("digits")`` generates
the embedded set (:mod:`npvae.data.embedded`) instead: no file, no network.

Pixels stay uint8 (one byte each: MNIST's training set is 47 MB, not 188 MB
as float32); :class:`~npvae.data.batches.Batches` scales them per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from npvae.data import embedded, sources
from npvae.data.idx import read_idx
from npvae.errors import ConfigError, DataError
from npvae.validate import counted

#: Height and width of every image in every dataset here.
IMAGE_SHAPE = (28, 28)

#: Pixels per flattened image.
N_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

#: Number of classes (labels are 0 to 9) in every dataset here.
N_CLASSES = 10

#: Name of the embedded dataset.
EMBEDDED_NAME = "digits"

#: The names :func:`load_dataset` accepts.
DATASET_NAMES: tuple[str, ...] = (*sources.DATASETS, EMBEDDED_NAME)

#: Size and seed of the embedded set as ``load_dataset("digits")`` makes it.
#: Fixed, so that "digits" is one dataset, the same in every run.
DIGITS_N_TRAIN = 20_000
DIGITS_N_TEST = 4_000
DIGITS_SEED = 20240601


def _empty_images() -> np.ndarray:
    return np.zeros((0, N_PIXELS), dtype=np.uint8)


def _empty_labels() -> np.ndarray:
    return np.zeros(0, dtype=np.uint8)


@dataclass(frozen=True)
class Dataset:
    """Images and labels of one dataset, split into train / validation / test.

    Attributes
    ----------
    name : str
        ``"mnist"``, ``"fashion-mnist"`` or ``"digits"``.
    x_train : np.ndarray
        (N_train, 784) uint8, row-major 28x28 images, 0 = background.
    y_train : np.ndarray
        (N_train,) uint8 labels in 0..9.
    x_test : np.ndarray
        (N_test, 784) uint8.
    y_test : np.ndarray
        (N_test,) uint8.
    source : str
        Where the data came from (a folder and how it was found, or the
        generator's settings), for the run's config record.
    x_val : np.ndarray
        (N_val, 784) uint8; empty until :func:`split_validation`.
    y_val : np.ndarray
        (N_val,) uint8.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    x_val: np.ndarray = field(default_factory=_empty_images)
    y_val: np.ndarray = field(default_factory=_empty_labels)

    def summary(self) -> str:
        """One line: name, split sizes and source."""
        return (
            f"{self.name}: {len(self.x_train)} train, {len(self.x_val)} validation, "
            f"{counted(len(self.x_test), 'test image')} of 28x28 ({self.source})"
        )


def canonical_name(name: str) -> str:
    """``"Fashion_MNIST"`` -> ``"fashion-mnist"``; raise ConfigError if unknown.

    Raises
    ------
    ConfigError
        If the name is not one of :data:`DATASET_NAMES`.
    """
    canonical = name.strip().lower().replace("_", "-")
    known = (*sources.DATASETS, EMBEDDED_NAME)  # the live table: tests add fake datasets
    if canonical not in known:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(known)}")
    return canonical


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    *,
    verify: bool = True,
) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        ``"mnist"``, ``"fashion-mnist"`` or ``"digits"`` (case and ``_`` vs
        ``-`` do not matter).
    data_dir : str or Path, optional
        Folder to search first (the CLI's ``--data-dir``); see
        :func:`npvae.data.sources.find_dataset` for the full search order.
        Ignored for ``"digits"``.
    download : bool
        Allow downloading into the user's cache if the files are not found.
    verify : bool
        Check each file's SHA-256 (of the decompressed bytes) while reading
        it; this catches a damaged file or one of another dataset.

    Returns
    -------
    Dataset
        With ``x_train`` (N, 784) uint8 and an empty validation split.

    Raises
    ------
    ConfigError
        If ``name`` is not a known dataset, or ``$NPVAE_DATA`` (searched when
        ``data_dir`` is None) is set but names no folder.
    DataError
        If the files are not found and cannot be downloaded, or a file is
        truncated, corrupt, of the wrong kind or shape; the message names it.
    """
    name = canonical_name(name)
    if name == EMBEDDED_NAME:
        x_train, y_train, x_test, y_test = embedded.make_digits(
            DIGITS_N_TRAIN, DIGITS_N_TEST, DIGITS_SEED
        )
        source = (
            f"embedded (make_digits n_train={DIGITS_N_TRAIN} n_test={DIGITS_N_TEST} "
            f"seed={DIGITS_SEED})"
        )
        return Dataset(
            name=name,
            x_train=x_train.reshape(len(x_train), N_PIXELS),
            y_train=y_train,
            x_test=x_test.reshape(len(x_test), N_PIXELS),
            y_test=y_test,
            source=source,
        )

    spec = sources.DATASETS[name]
    folder, how = sources.locate_dataset(name, data_dir, download)
    paths = sources.dataset_files(folder, spec)

    def read(role: str) -> np.ndarray:
        expected = spec.files[role].sha256 if verify else None
        # The header is checked against what the role needs before anything is allocated.
        item_shape = IMAGE_SHAPE if role.endswith("images") else ()
        return read_idx(paths[role], expected_sha256=expected, item_shape=item_shape)

    x_train, y_train = _checked_pair(read("train_images"), read("train_labels"), paths, "train")
    x_test, y_test = _checked_pair(read("test_images"), read("test_labels"), paths, "test")
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        source=f"{folder} ({how})",
    )


def _checked_pair(
    images: np.ndarray, labels: np.ndarray, paths: dict[str, Path], split: str
) -> tuple[np.ndarray, np.ndarray]:
    """Check images (n, 28, 28) uint8 and labels (n,) uint8 in 0..9; flatten images."""
    images_path, labels_path = paths[f"{split}_images"], paths[f"{split}_labels"]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{images_path}: expected uint8 images of shape (n, 28, 28), "
            f"found {images.dtype} {images.shape}; is this an images file?"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{labels_path}: expected a 1-D uint8 array of labels, "
            f"found {labels.dtype} {labels.shape}; is this a labels file?"
        )
    if len(labels) != len(images):
        raise DataError(
            f"{labels_path}: {counted(len(labels), 'label')} for "
            f"{counted(len(images), 'image')} in "
            f"{images_path.name}; the two files do not belong together"
        )
    if len(labels) and labels.max() >= N_CLASSES:
        raise DataError(f"{labels_path}: label {labels.max()} is outside 0..{N_CLASSES - 1}")
    return images.reshape(len(images), N_PIXELS), labels


def split_validation(dataset: Dataset, n_val: int, seed: int) -> Dataset:
    """Hold ``n_val`` random training images out as a validation split.

    Parameters
    ----------
    dataset : Dataset
        Its training split is divided; any existing validation split is
        replaced (so call this once, on a freshly loaded dataset).
    n_val : int
        Images to hold out, ``0 <= n_val < len(dataset.x_train)``.
    seed : int
        Chooses which images; the same seed gives the same split.

    Returns
    -------
    Dataset
        ``x_train`` (N - n_val, 784) and ``x_val`` (n_val, 784), disjoint,
        each in the original order of the training set.

    Raises
    ------
    ConfigError
        If ``n_val`` is negative or leaves no training images.
    """
    n_train = len(dataset.x_train)
    if not 0 <= n_val < n_train:
        raise ConfigError(
            f"validation size {n_val} must be at least 0 and below the "
            f"{counted(n_train, 'training image')} of {dataset.name}"
        )
    order = np.random.default_rng(seed).permutation(n_train)
    val_index = np.sort(order[:n_val])
    train_index = np.sort(order[n_val:])
    return replace(
        dataset,
        x_train=dataset.x_train[train_index],
        y_train=dataset.y_train[train_index],
        x_val=dataset.x_train[val_index],
        y_val=dataset.y_train[val_index],
    )


__all__ = [
    "DATASET_NAMES",
    "DIGITS_N_TEST",
    "DIGITS_N_TRAIN",
    "DIGITS_SEED",
    "EMBEDDED_NAME",
    "IMAGE_SHAPE",
    "N_CLASSES",
    "N_PIXELS",
    "Dataset",
    "canonical_name",
    "load_dataset",
    "split_validation",
]
