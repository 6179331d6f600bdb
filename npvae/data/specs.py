"""What a downloadable IDX dataset is: its four roles, its files, and how a file is stored.

A :class:`DatasetSpec` names a dataset, gives one :class:`DataFile` (a file
name and the SHA-256 of its decompressed bytes) per role in :data:`ROLES`,
and lists the mirrors it downloads from.  A file sits in a folder
gzip-compressed (``<stem>.gz``) or raw (``<stem>``); :func:`file_in` finds
either.  The table of known datasets is :data:`npvae.data.sources.DATASETS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The four roles every IDX dataset has, in the order they are fetched.
ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset.

    Attributes
    ----------
    stem : str
        File name without ``.gz``, e.g. ``"train-images-idx3-ubyte"``.
    sha256 : str
        Hex SHA-256 of the decompressed file.
    """

    stem: str
    sha256: str


@dataclass(frozen=True)
class DatasetSpec:
    """A downloadable IDX dataset.

    Attributes
    ----------
    name : str
        The name users type (``--dataset``); also the folder name.
    files : dict[str, DataFile]
        One file per role in :data:`ROLES`.
    mirrors : tuple[str, ...]
        Base URLs tried in order; a file's URL is ``base + stem + ".gz"``.
    """

    name: str
    files: dict[str, DataFile]
    mirrors: tuple[str, ...]


def file_in(folder: Path, data_file: DataFile) -> Path | None:
    """The path of ``data_file`` in ``folder``, gzip or raw, or None if absent."""
    for candidate in (folder / f"{data_file.stem}.gz", folder / data_file.stem):
        if candidate.is_file():
            return candidate
    return None


__all__ = ["ROLES", "DataFile", "DatasetSpec", "file_in"]
