"""Read IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension,
then the array in C order, big-endian::

    bytes 0-1   0x00 0x00
    byte  2     type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64)
    byte  3     number of dimensions, ndim
    4 * ndim    the dimensions, uint32 big-endian
    the rest    prod(dims) items of the type above

Files are read gzip-compressed or raw; which one is decided by the first two
bytes (the gzip magic ``1f 8b``), not by the file name, because mirrors and
users rename files.  Every way a file can be wrong (missing, truncated, corrupt
gzip, bad magic, unknown type, too few or too many bytes) raises
:class:`~npvae.errors.DataError` with the file's path and what is wrong.

The data is streamed straight into the output array, so reading a file never
holds more than one copy of it in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from npvae.errors import DataError
from npvae.validate import counted

#: IDX type code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

GZIP_MAGIC = b"\x1f\x8b"

# Reading in pieces of this size keeps a corrupt gzip stream from being
# decompressed whole before we notice, and bounds the temporary memory.
_CHUNK_BYTES = 1 << 20

# No IDX file in the wild has more dimensions than this; a larger count means
# the "header" is really something else.
_MAX_NDIM = 8

# Deflate cannot shrink data more than about 1032 to 1, so a gzip file decompresses to at
# most this many times its size: a header promising more is lying.
_MAX_DEFLATE_RATIO = 1040

# gzip signals damage with any of these, depending on where the damage is.
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


class _HashingReader:
    """Wrap a binary stream; feed every byte read into an optional hash."""

    def __init__(self, stream: BinaryIO, hasher=None):
        self.stream = stream
        self.hasher = hasher

    def readinto(self, buffer: memoryview) -> int:
        n_read = self.stream.readinto(buffer)
        if self.hasher is not None and n_read:
            self.hasher.update(buffer[:n_read])
        return n_read

    def read_exact(self, n_bytes: int) -> bytes:
        """Read up to ``n_bytes``; fewer only at the end of the stream."""
        buffer = bytearray(n_bytes)
        view = memoryview(buffer)
        filled = 0
        while filled < n_bytes:
            n_read = self.readinto(view[filled:])
            if not n_read:
                break
            filled += n_read
        return bytes(buffer[:filled])


def open_maybe_gzip(path: Path) -> BinaryIO:
    """Open ``path`` for reading, decompressing on the fly if it is gzip.

    Parameters
    ----------
    path : Path
        The file to open.

    Returns
    -------
    BinaryIO
        A stream of the (decompressed) bytes.  The caller closes it.

    Raises
    ------
    DataError
        If the file cannot be opened.
    """
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot open ({err.strerror or err})") from None
    magic = raw.read(2)
    raw.seek(0)
    if magic == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


def read_idx(
    path: str | Path,
    *,
    expected_sha256: str | None = None,
    item_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a NumPy array.

    Parameters
    ----------
    path : str or Path
        The file.  gzip is recognised by its magic bytes, whatever the name.
    expected_sha256 : str, optional
        Hex SHA-256 of the *decompressed* file.  If given, the bytes are
        hashed as they are read and a mismatch raises DataError; this is how
        a file of the wrong dataset, or one damaged in a way the format
        cannot show, is caught.
    item_shape : tuple of int, optional
        The shape of one item, if the caller knows it: ``()`` for a labels
        file, ``(28, 28)`` for MNIST's images.  The header must then have
        ``1 + len(item_shape)`` dimensions, the last ones ``item_shape``.

    Returns
    -------
    np.ndarray
        Shape ``dims`` from the header, in native byte order: uint8 for
        images and labels (type code 0x08), else the type the header names.

    Raises
    ------
    DataError
        If the file is missing, not IDX, truncated, longer than its header
        says, a corrupt gzip stream, of other dimensions than ``item_shape``
        asks, or (with ``expected_sha256``) not the expected file.  The header
        is checked against the file's size before anything is allocated.  The
        message names the file and the problem.
    """
    path = Path(path)
    hasher = hashlib.sha256() if expected_sha256 is not None else None
    stream = open_maybe_gzip(path)
    try:
        with stream:
            size = _data_size(stream, path)
            array = _read_stream(_HashingReader(stream, hasher), path, size, item_shape)
    except _GZIP_ERRORS as err:
        raise DataError(
            f"{path}: corrupt gzip data ({err}); delete the file and fetch it again"
        ) from None
    except MemoryError:
        raise DataError(
            f"{path}: its header declares an array too large for memory; the file is damaged, "
            "fetch it again"
        ) from None
    except OSError as err:
        raise DataError(f"{path}: read failed ({err})") from None
    if hasher is not None and hasher.hexdigest() != expected_sha256.lower():
        # The file may be valid (another version of the data, or a file of
        # another dataset among these), so the message must not say delete it.
        raise DataError(
            f"{path}: does not match the expected checksum (SHA-256 of the decompressed "
            f"contents is {hasher.hexdigest()[:16]}..., expected {expected_sha256[:16]}...); "
            "it may be damaged or another version; point --data-dir at the right files"
        )
    return array


@dataclass(frozen=True)
class _Size:
    """What a file says about its (decompressed) length before it is read."""

    exact: int | None  # a raw file's length
    modulo_4gib: int | None  # a gzip file's trailer: the length modulo 2**32
    at_most: int  # a bound no honest file exceeds


def _data_size(stream: BinaryIO, path: Path) -> _Size:
    """The file's length, or for gzip its trailer's length mod 2**32 and deflate's bound."""
    if not isinstance(stream, gzip.GzipFile):
        size = os.fstat(stream.fileno()).st_size
        return _Size(size, None, size)
    raw = stream.fileobj
    compressed = os.fstat(raw.fileno()).st_size
    position = raw.tell()
    raw.seek(max(compressed - 4, 0))
    trailer = raw.read(4)
    raw.seek(position)
    modulo = int.from_bytes(trailer, "little") if len(trailer) == 4 else None
    return _Size(None, modulo, _MAX_DEFLATE_RATIO * compressed + _CHUNK_BYTES)


def _read_stream(
    reader: _HashingReader, path: Path, size: _Size, item_shape: tuple[int, ...] | None
) -> np.ndarray:
    """Parse the header, check it against the file, then stream the payload into an array."""
    magic = reader.read_exact(4)
    if len(magic) < 4:
        raise DataError(
            f"{path}: file is {counted(len(magic), 'byte')} long, too short for an IDX header"
        )
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (magic number {magic.hex()} does not start with 0000)"
        )
    type_code, ndim = magic[2], magic[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX data type code 0x{type_code:02X} (known: {known})")
    if item_shape is not None and ndim != 1 + len(item_shape):
        raise DataError(
            f"{path}: IDX header (byte 3) says {counted(ndim, 'dimension')}; expected "
            f"{_kind_text(item_shape)}; is this {_kind_file(item_shape)}? "
            "if so it is damaged: fetch it again"
        )
    if not 1 <= ndim <= _MAX_NDIM:
        raise DataError(
            f"{path}: IDX header says {counted(ndim, 'dimension')}, expected 1 to {_MAX_NDIM}"
        )
    dims_bytes = reader.read_exact(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise DataError(f"{path}: file ends inside the IDX header (truncated)")
    shape = tuple(int(d) for d in np.frombuffer(dims_bytes, dtype=">u4"))
    shape_text = "x".join(map(str, shape))
    if item_shape is not None and shape[1:] != tuple(item_shape):
        raise DataError(
            f"{path}: IDX header says shape ({', '.join(map(str, shape))}); expected "
            f"{_kind_text(item_shape)}; is this {_kind_file(item_shape)}?"
        )
    file_dtype = IDX_DTYPES[type_code]
    n_expected = math.prod(shape) * file_dtype.itemsize  # Python ints: no overflow
    total = 4 + 4 * ndim + n_expected
    promise = f"header promises {shape_text} {file_dtype.name} ({counted(n_expected, 'data byte')})"
    if size.exact is not None and total != size.exact:
        held = size.exact - 4 - 4 * ndim
        fault = (
            "truncated"
            if held < n_expected
            else f"{counted(held - n_expected, 'byte')} more than that"
        )
        raise DataError(f"{path}: {promise} but the file holds {held}: {fault}; fetch it again")
    if size.exact is None and (total > size.at_most or total % 2**32 != size.modulo_4gib):
        raise DataError(
            f"{path}: {promise} but its gzip trailer says otherwise (truncated, or a damaged "
            "header); fetch it again"
        )

    array = np.empty(shape, dtype=file_dtype)
    view = memoryview(array.reshape(-1).view(np.uint8))
    filled = 0
    while filled < n_expected:
        n_read = reader.readinto(view[filled : filled + _CHUNK_BYTES])
        if not n_read:
            raise DataError(
                f"{path}: truncated: {promise} but the file holds only {filled}; fetch it again"
            )
        filled += n_read
    # Reading to the end also makes gzip check its CRC and length trailer.
    extra = reader.read_exact(_CHUNK_BYTES)
    if extra:
        n_extra = len(extra)
        while True:
            more = reader.read_exact(_CHUNK_BYTES)
            if not more:
                break
            n_extra += len(more)
        raise DataError(
            f"{path}: {counted(n_extra, 'byte')} more than the header's shape "
            f"{shape_text} accounts for (wrong header or joined files)"
        )
    return array.astype(file_dtype.newbyteorder("="), copy=False)


def _kind_text(item_shape: tuple[int, ...]) -> str:
    """``"labels of shape (n,)"`` or ``"images of shape (n, 28, 28)"``."""
    if not item_shape:
        return "labels of shape (n,)"
    return f"images of shape (n, {', '.join(map(str, item_shape))})"


def _kind_file(item_shape: tuple[int, ...]) -> str:
    return "a labels file" if not item_shape else "an images file"


def decompressed_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's contents after gzip decompression (if gzip).

    Parameters
    ----------
    path : str or Path
        A gzip-compressed or raw file.

    Returns
    -------
    str
        64 lowercase hex digits.

    Raises
    ------
    DataError
        If the file is missing or its gzip stream is corrupt.
    """
    path = Path(path)
    hasher = hashlib.sha256()
    stream = open_maybe_gzip(path)
    try:
        with stream:
            reader = _HashingReader(stream, hasher)
            buffer = memoryview(bytearray(_CHUNK_BYTES))
            while reader.readinto(buffer):
                pass
    except _GZIP_ERRORS as err:
        raise DataError(f"{path}: corrupt gzip data ({err})") from None
    return hasher.hexdigest()


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (the inverse of :func:`read_idx`).

    Used by the tests to make small files, and handy for exporting data.

    Parameters
    ----------
    path : str or Path
        Destination.  Compressed with gzip if ``compress`` is True, or if it
        is None and the name ends in ``.gz``.
    array : np.ndarray
        Any shape with 1 to 8 dimensions, of a dtype IDX can hold
        (uint8, int8, int16, int32, float32, float64).
    compress : bool, optional
        Force gzip on or off.

    Raises
    ------
    DataError
        If the dtype or the number of dimensions cannot be stored in IDX.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DataError(f"{path}: IDX cannot store dtype {array.dtype}")
    if not 1 <= array.ndim <= _MAX_NDIM:
        raise DataError(f"{path}: IDX cannot store a {array.ndim}-dimensional array")
    header = bytes([0, 0, codes[native], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=IDX_DTYPES[codes[native]]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    opener = gzip.open if compress else open
    with opener(path, "wb") as out:
        out.write(header)
        out.write(payload)


def is_gzip_bytes(head: bytes) -> bool:
    """True if ``head`` (the first bytes of a file) is a gzip magic number."""
    return head[:2] == GZIP_MAGIC


__all__ = [
    "IDX_DTYPES",
    "decompressed_sha256",
    "is_gzip_bytes",
    "open_maybe_gzip",
    "read_idx",
    "write_idx",
]
