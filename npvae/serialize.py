"""Named arrays plus a JSON header in one ``.npz`` file: written atomically, read without pickle.

This is the one file format of npvae: a saved model and a training checkpoint
are both such files.  The header is JSON (a model's config, an epoch number,
the versions) stored as the bytes of a uint8 array under :data:`HEADER_KEY`, so
``numpy.load(..., allow_pickle=False)`` reads all of it and nothing in the
file can execute code.

Writing goes to a temporary file beside the target, is flushed to disk, and
is renamed over the target only when complete: a crash or ``kill -9`` at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from npvae._files import atomic_path
from npvae.errors import CheckpointError

#: The key under which the JSON header is stored.
HEADER_KEY = "__header__"


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], header: dict) -> Path:
    """Write ``arrays`` and the JSON-able ``header`` to ``path`` atomically.

    Returns the path written.  Raises :class:`CheckpointError` if the folder
    cannot be written (the message names it).
    """
    path = Path(path)
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    if HEADER_KEY in payload:
        raise ValueError(f"{HEADER_KEY!r} is reserved for the header")
    payload[HEADER_KEY] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary, open(temporary, "wb") as file:
            np.savez(file, **payload)
    except OSError as err:
        raise CheckpointError(
            f"cannot write {path}: {err.strerror or err}; choose a writable folder with free space"
        ) from None
    return path


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a file written by :func:`save_arrays`: ``(arrays, header)``.

    Every way the file can be unreadable (missing, truncated, bytes flipped,
    not an npz, no header) raises :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; check the path")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: a single array, not an npvae file (.npz)")
        with archive:
            arrays = {name: archive[name] for name in archive.files}
    except CheckpointError:
        raise
    # zipfile reports some damaged directories as NotImplementedError (a RuntimeError).
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: damaged or truncated ({_reason(err)}); use another checkpoint or re-save"
        ) from None
    if HEADER_KEY not in arrays:
        raise CheckpointError(f"{path}: not an npvae file (no header); was it saved by npvae?")
    try:
        header = json.loads(arrays.pop(HEADER_KEY).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged header; use another checkpoint or re-save")
    return arrays, header


def _reason(err: Exception) -> str:
    """A short, single-line reason from a low-level read error."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:120]
