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

import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from npvae._files import atomic_path
from npvae.errors import CheckpointError

#: The key under which the JSON header is stored.
HEADER_KEY = "__header__"

# An npy header is at most a few hundred bytes (numpy caps what it reads at 10 000).
_MAX_NPY_HEADER = 1 << 16


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
    not a zip, no header) raises :class:`CheckpointError` naming the file.
    Each array's declared size is checked against the bytes really there
    before anything is allocated: members must be stored uncompressed, as
    :func:`save_arrays` writes them (a compressed member could be a zip bomb),
    and each npy header's shape must account for exactly its member's bytes,
    which together fit in the file.  A name twice, a member without the npy
    magic, or an array of Python objects (which only pickle could read) is
    refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; check the path")
    try:
        with open(path, "rb") as file:
            magic = file.read(4)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read it ({_reason(err)})") from None
    if magic != b"PK\x03\x04" and magic != b"PK\x05\x06":
        raise CheckpointError(
            f"{path}: not an npvae file (not a zip archive, as npvae's .npz files are)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = _checked_members(archive, path)
            arrays = {
                member.filename[: -len(".npy")]: _read_member(archive, member, path)
                for member in members
            }
    except CheckpointError:
        raise
    except MemoryError:
        raise CheckpointError(
            f"{path}: too large to read into memory; is it damaged? use another file"
        ) from None
    # zipfile reports some damaged directories as NotImplementedError (a RuntimeError).
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: damaged or truncated ({_reason(err)}); use another checkpoint or re-save"
        ) from None
    if HEADER_KEY not in arrays:
        raise CheckpointError(f"{path}: not an npvae file (no header); was it saved by npvae?")
    raw = arrays.pop(HEADER_KEY)
    header = None
    if raw.dtype == np.uint8 and raw.ndim == 1:
        try:
            header = json.loads(raw.tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged header; use another checkpoint or re-save")
    return arrays, header


def _checked_members(archive: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    """The archive's members, each a stored ``.npy`` named once, their sizes within the file."""
    members = archive.infolist()
    names = [member.filename for member in members]
    seen = set()
    for name in names:
        if name in seen:
            raise CheckpointError(f"{path}: damaged: it holds {name} twice; use another file")
        seen.add(name)
    budget = path.stat().st_size
    for member in members:
        if not member.filename.endswith(".npy"):
            raise CheckpointError(f"{path}: not an npvae file ({member.filename} is no array)")
        if member.compress_type != zipfile.ZIP_STORED or member.compress_size != member.file_size:
            raise CheckpointError(
                f"{path}: {member.filename} is compressed, which npvae never writes; "
                "not an npvae file, or damaged"
            )
        budget -= member.file_size
        if budget < 0:
            raise CheckpointError(
                f"{path}: damaged: its arrays claim more bytes than the file holds "
                f"({member.filename} alone {member.file_size}); use another file"
            )
    return members


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, path: Path) -> np.ndarray:
    """One ``.npy`` member, its header checked against its size before its data is read."""
    name = member.filename
    with archive.open(member) as stream:
        head = io.BytesIO(stream.read(min(member.file_size, _MAX_NPY_HEADER)))
        try:
            version = np.lib.format.read_magic(head)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
            else:
                raise ValueError(f"npy version {version}")
        except (ValueError, SyntaxError, TypeError) as err:
            raise CheckpointError(
                f"{path}: {name} is not a readable array ({_reason(err)}); the file is damaged"
            ) from None
        if dtype.hasobject:
            raise CheckpointError(
                f"{path}: {name} holds Python objects, which npvae never saves and only pickle "
                "could read; not loaded"
            )
        declared = math.prod(shape) * dtype.itemsize
        if head.tell() + declared != member.file_size:
            raise CheckpointError(
                f"{path}: {name} declares shape {list(shape)} of {dtype} ({declared} bytes) "
                f"but holds {member.file_size - head.tell()}; the file is damaged"
            )
        data = bytearray(head.read())
        data += stream.read(declared - len(data))
    order = "F" if fortran else "C"
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order)


def _reason(err: Exception) -> str:
    """A short, single-line reason from a low-level read error."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:120]
