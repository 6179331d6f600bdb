"""The IDX reader: round trips, gzip by magic bytes, and every way a file can be bad."""

from __future__ import annotations

import gzip
import hashlib
import tracemalloc

import numpy as np
import pytest
from conftest import MNIST_DIR, NO_MNIST

from npvae.data.idx import decompressed_sha256, read_idx, write_idx
from npvae.data.sources import DATASETS, file_in
from npvae.errors import DataError


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """A hand-built IDX file, independent of write_idx."""
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)


def test_reads_raw_file(tmp_path, images):
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(images))
    result = read_idx(path)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, images)
    assert result.flags.writeable


def test_gzip_is_recognised_by_magic_bytes_not_name(tmp_path, images):
    no_suffix = tmp_path / "compressed-but-no-suffix"
    no_suffix.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(no_suffix), images)
    raw_with_gz_name = tmp_path / "raw-but-named.gz"
    raw_with_gz_name.write_bytes(idx_bytes(images))
    np.testing.assert_array_equal(read_idx(raw_with_gz_name), images)


@pytest.mark.parametrize(
    ("dtype", "code"),
    [("u1", 0x08), ("i1", 0x09), (">i2", 0x0B), (">i4", 0x0C), (">f4", 0x0D), (">f8", 0x0E)],
)
def test_big_endian_types_come_back_native(tmp_path, dtype, code):
    values = np.array([[-3, 0, 1], [7, 100, -128]]).astype(np.dtype(dtype).newbyteorder("="))
    if np.dtype(dtype).kind == "u":
        values = np.abs(values)
    path = tmp_path / "values"
    path.write_bytes(idx_bytes(values.astype(dtype), type_code=code))
    result = read_idx(path)
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, values)


def test_write_idx_round_trip(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "labels.gz", labels)
    assert (tmp_path / "labels.gz").read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(tmp_path / "labels.gz"), labels)
    floats = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    write_idx(tmp_path / "floats", floats)
    np.testing.assert_array_equal(read_idx(tmp_path / "floats"), floats)


def test_checksum_of_decompressed_bytes(tmp_path, images):
    content = idx_bytes(images)
    digest = hashlib.sha256(content).hexdigest()
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(content))
    assert decompressed_sha256(path) == digest
    np.testing.assert_array_equal(read_idx(path, expected_sha256=digest), images)
    with pytest.raises(DataError, match=r"images\.gz: does not match the expected checksum"):
        read_idx(path, expected_sha256="0" * 64)


def bad_files(images: np.ndarray) -> dict[str, tuple[bytes, str]]:
    """name -> (file contents, pattern the error must match)."""
    good = idx_bytes(images)
    compressed = gzip.compress(good)
    middle = len(compressed) // 2
    flipped = compressed[:middle] + bytes([compressed[middle] ^ 0xFF]) + compressed[middle + 1 :]
    return {
        "empty": (b"", "too short"),
        "header_cut": (good[:10], "header"),
        "data_cut": (good[:-100], "truncated"),
        "bad_magic": (b"\x08\x03" + good[2:], "not an IDX file"),
        "unknown_type": (good[:2] + b"\x07" + good[3:], "data type code 0x07"),
        "zero_dims": (b"\x00\x00\x08\x00", "dimensions"),
        "extra_bytes": (good + b"\x00" * 7, "7 bytes more"),
        "gz_truncated": (compressed[: len(compressed) - 30], "gzip|truncated"),
        "gz_corrupt": (flipped, "gzip|truncated|bytes more"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "header_cut",
        "data_cut",
        "bad_magic",
        "unknown_type",
        "zero_dims",
        "extra_bytes",
        "gz_truncated",
        "gz_corrupt",
    ],
)
def test_bad_file_gives_one_line_data_error_naming_it(tmp_path, images, case):
    content, pattern = bad_files(images)[case]
    path = tmp_path / f"{case}-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=pattern) as caught:
        read_idx(path)
    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file") as caught:
        read_idx(tmp_path / "nowhere.gz")
    assert "nowhere.gz" in str(caught.value)


def test_gzip_with_bad_crc_is_caught(tmp_path, images):
    compressed = bytearray(gzip.compress(idx_bytes(images)))
    compressed[-8] ^= 0x01  # the CRC32 in the trailer
    path = tmp_path / "bad-crc.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(DataError, match="bad-crc.gz.*gzip"):
        read_idx(path)


@pytest.mark.skipif(MNIST_DIR is None, reason=NO_MNIST)
def test_real_mnist_files():
    labels = read_idx(
        file_in(MNIST_DIR, DATASETS["mnist"].files["test_labels"]),
        expected_sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    )
    assert labels.shape == (10_000,)
    assert labels.dtype == np.uint8
    assert np.bincount(labels).tolist()[:3] == [980, 1135, 1032]
    images = read_idx(file_in(MNIST_DIR, DATASETS["mnist"].files["test_images"]))
    assert images.shape == (10_000, 28, 28)
    assert images.dtype == np.uint8
    assert images.max() == 255


# ----- a header that lies about its dimensions --------------------------------------------

#: MNIST's four files in miniature: (item shape the loader expects, the array).
FOUR_FILES = {
    "train-images-idx3-ubyte": ((28, 28), np.arange(12 * 784, dtype=np.uint8).reshape(12, 28, 28)),
    "train-labels-idx1-ubyte": ((), np.arange(12, dtype=np.uint8) % 10),
    "t10k-images-idx3-ubyte": ((28, 28), np.arange(5 * 784, dtype=np.uint8).reshape(5, 28, 28)),
    "t10k-labels-idx1-ubyte": ((), np.arange(5, dtype=np.uint8) % 10),
}


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("stem", FOUR_FILES)
def test_every_value_of_the_dimension_byte_is_caught_before_allocating(stem, compress, tmp_path):
    """Byte 3 (the number of dimensions) set to each of 0..255, for each of the four files.

    The one right value reads the file; every other is a one-line DataError naming the
    file, raised before the payload is allocated (the peak of traced memory stays small,
    where a header of 2 or 3 dimensions read as sizes would ask for gigabytes).
    """
    item_shape, array = FOUR_FILES[stem]
    good = idx_bytes(array)
    path = tmp_path / (stem + (".gz" if compress else ""))
    for value in range(256):
        content = good[:3] + bytes([value]) + good[4:]
        path.write_bytes(gzip.compress(content, compresslevel=1) if compress else content)
        if value == array.ndim:
            np.testing.assert_array_equal(read_idx(path, item_shape=item_shape), array)
            continue
        # Memory is traced where the dimensions could be read as sizes (1 to 8 of them).
        traced = 1 <= value <= 8
        if traced:
            tracemalloc.start()
        try:
            with pytest.raises(DataError) as caught:
                read_idx(path, item_shape=item_shape)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            if traced:
                tracemalloc.stop()
        message = str(caught.value)
        dimensions = "1 dimension;" if value == 1 else f"{value} dimensions;"
        assert message.startswith(f"{path}: IDX header (byte 3) says {dimensions}")
        assert "\n" not in message
        assert peak < 1 << 20, value


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize(
    ("dims", "fault"),
    [
        ((12, 28, 29), "expected images of shape (n, 28, 28)"),
        ((2**31, 28, 28), "header promises"),  # 1.6 TB promised, 9 KB there
        ((13, 28, 28), "header promises"),  # one image more than the file holds
        ((11, 28, 28), "header promises"),  # one fewer
    ],
)
def test_sizes_that_do_not_match_the_file_are_caught_before_allocating(
    dims, fault, compress, tmp_path
):
    array = FOUR_FILES["train-images-idx3-ubyte"][1]
    content = idx_bytes(array)
    content = content[:4] + np.asarray(dims, ">u4").tobytes() + content[16:]
    path = tmp_path / ("images.gz" if compress else "images")
    path.write_bytes(gzip.compress(content) if compress else content)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as caught:
            read_idx(path, item_shape=(28, 28))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value).startswith(f"{path}: ") and fault in str(caught.value)
    assert peak < 1 << 20
