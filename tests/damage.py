"""Surgery on npz files for the tests of damaged models and checkpoints.

Each helper rewrites a file written by :func:`npvae.serialize.save_arrays` with
one thing changed: a member's bytes, the JSON header, one array.  They use
``zipfile`` and ``np.save`` directly, so they can make files npvae never would.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np

from npvae.serialize import HEADER_KEY


def npy_header_claiming(shape, dtype: str = "<f4") -> bytes:
    """An npy 1.0 header declaring ``shape`` (its data is not there)."""
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {tuple(shape)}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def rezip(path, members: list[tuple[str, bytes]], compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)


def members(path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def replace_member(path, name: str, data: bytes) -> None:
    rezip(path, [(n, data if n == name else d) for n, d in members(path)])


def drop_member(path, name: str) -> None:
    rezip(path, [(n, d) for n, d in members(path) if n != name])


def duplicate_first_member(path) -> None:
    """Append a second copy of the first member (with zeros for data) under the same name."""
    first_name, first_data = members(path)[0]
    rezip(path, [*members(path), (first_name, first_data[:-4] + bytes(4))])


def edit_header(path, edit) -> None:
    """Apply ``edit(header_dict)`` to the file's JSON header."""
    found = dict(members(path))
    header = json.loads(np.load(io.BytesIO(found[f"{HEADER_KEY}.npy"])).tobytes().decode())
    edit(header)
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(json.dumps(header).encode(), np.uint8))
    replace_member(path, f"{HEADER_KEY}.npy", buffer.getvalue())


def edit_array(path, name: str, edit) -> None:
    """Apply ``edit(array)`` (in place) to the array stored under ``name``."""
    found = dict(members(path))
    array = np.load(io.BytesIO(found[f"{name}.npy"])).copy()
    edit(array)
    buffer = io.BytesIO()
    np.save(buffer, array)
    replace_member(path, f"{name}.npy", buffer.getvalue())
