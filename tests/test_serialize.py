"""npvae.serialize: named arrays plus a JSON header, written atomically, read without pickle."""

import errno
import io
import json
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest

import npvae.serialize
from npvae.errors import CheckpointError
from npvae.serialize import HEADER_KEY, load_arrays, save_arrays

ARRAYS = {
    "encoder.0.W": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "encoder.0.b": np.array([1e-38, -0.0, np.inf, np.nan], dtype=np.float32),
    "decoder.0.W": np.random.default_rng(0).normal(size=(4, 3)),
    "step": np.array(12345, dtype=np.int64),
    "empty": np.zeros((0, 5), dtype=np.float64),
}
HEADER = {"format": "npvae-model", "kind": "vae", "config": {"hidden": [400, 200], "beta": 0.5}}


def _assert_one_line_naming(err, path):
    message = str(err.value)
    assert str(path) in message, message
    assert "\n" not in message, message


def test_round_trip_keeps_every_array_exactly(tmp_path):
    path = save_arrays(tmp_path / "a.npz", ARRAYS, HEADER)
    assert path == tmp_path / "a.npz"
    arrays, header = load_arrays(path)
    assert header == HEADER
    assert sorted(arrays) == sorted(ARRAYS)
    for name, value in ARRAYS.items():
        assert arrays[name].dtype == value.dtype and arrays[name].shape == value.shape, name
        np.testing.assert_array_equal(arrays[name], value, err_msg=name)


def test_the_file_is_a_plain_npz_with_no_pickle_inside(tmp_path):
    path = save_arrays(tmp_path / "a.npz", ARRAYS, HEADER)
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted([*ARRAYS, HEADER_KEY])
        header = archive[HEADER_KEY]
        assert header.dtype == np.uint8
        assert json.loads(header.tobytes().decode()) == HEADER


def test_path_may_be_a_string_and_missing_folders_are_made(tmp_path):
    target = tmp_path / "runs" / "today" / "model.npz"
    save_arrays(str(target), ARRAYS, HEADER)
    assert load_arrays(str(target))[1] == HEADER


def test_the_header_key_is_reserved(tmp_path):
    with pytest.raises(ValueError, match=HEADER_KEY):
        save_arrays(tmp_path / "a.npz", {HEADER_KEY: np.zeros(1)}, HEADER)
    assert os.listdir(tmp_path) == []


def test_overwriting_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "a.npz"
    save_arrays(path, ARRAYS, HEADER)
    save_arrays(path, {"only": np.ones(2)}, {"format": "other"})
    arrays, header = load_arrays(path)
    assert list(arrays) == ["only"] and header == {"format": "other"}
    assert os.listdir(tmp_path) == ["a.npz"]


# ----------------------------------------------------------------------------- writing fails


def test_a_folder_that_cannot_exist_is_a_checkpoint_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "sub" / "a.npz"
    with pytest.raises(CheckpointError) as err:
        save_arrays(target, ARRAYS, HEADER)
    _assert_one_line_naming(err, target)
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_folder_is_a_checkpoint_error(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(CheckpointError) as err:
            save_arrays(folder / "a.npz", ARRAYS, HEADER)
        _assert_one_line_naming(err, folder / "a.npz")
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


def _fail_while_writing(monkeypatch, exception):
    def savez(*args, **kwargs):
        raise exception

    monkeypatch.setattr(npvae.serialize.np, "savez", savez)


@pytest.mark.parametrize(
    "exception",
    [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
    ids=["disk-full", "interrupted"],
)
def test_a_write_that_fails_midway_keeps_the_old_file_and_no_temporary(
    exception, tmp_path, monkeypatch
):
    path = save_arrays(tmp_path / "a.npz", ARRAYS, HEADER)
    old = path.read_bytes()
    _fail_while_writing(monkeypatch, exception)
    with pytest.raises((type(exception), CheckpointError)):
        save_arrays(path, {"new": np.zeros(3)}, {"format": "new"})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["a.npz"]
    assert path.read_bytes() == old


def test_a_full_disk_is_a_checkpoint_error(tmp_path, monkeypatch):
    """Like an unwritable folder, a write that fails for lack of space is the user's to fix."""
    _fail_while_writing(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(CheckpointError) as err:
        save_arrays(tmp_path / "a.npz", ARRAYS, HEADER)
    _assert_one_line_naming(err, tmp_path / "a.npz")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- reading fails


def test_a_missing_file_or_a_folder_is_a_checkpoint_error(tmp_path):
    for path in (tmp_path / "absent.npz", tmp_path):
        with pytest.raises(CheckpointError) as err:
            load_arrays(path)
        _assert_one_line_naming(err, path)


def test_truncation_at_any_length_is_a_checkpoint_error(tmp_path):
    raw = save_arrays(tmp_path / "a.npz", ARRAYS, HEADER).read_bytes()
    damaged = tmp_path / "cut.npz"
    for length in range(0, len(raw), 37):
        damaged.write_bytes(raw[:length])
        with pytest.raises(CheckpointError) as err:
            load_arrays(damaged)
        _assert_one_line_naming(err, damaged)


def _npy_bytes():
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_text("hello, not an archive"),
        lambda p: p.write_bytes(pickle.dumps({"W": [1.0, 2.0]})),
        lambda p: p.write_bytes(_npy_bytes()),  # a .npy, not an .npz, whatever its name says
        lambda p: np.savez(p, W=np.zeros(3)),  # an npz without a header
        lambda p: np.savez(p, **{HEADER_KEY: np.frombuffer(b"{not json", np.uint8)}),
        lambda p: np.savez(p, **{HEADER_KEY: np.frombuffer(b"[1, 2]", np.uint8)}),
        lambda p: np.savez(p, **{HEADER_KEY: np.frombuffer(b"\xff\xfe", np.uint8)}),
        lambda p: np.savez(p, **{HEADER_KEY: np.array([1.5, 2.5])}),
    ],
    ids=[
        "text",
        "pickle",
        "npy",
        "no-header",
        "header-not-json",
        "header-not-an-object",
        "header-not-utf8",
        "header-not-bytes",
    ],
)
def test_foreign_files_are_checkpoint_errors(make, tmp_path):
    path = tmp_path / "file.npz"
    make(path)
    with pytest.raises(CheckpointError) as err:
        load_arrays(path)
    _assert_one_line_naming(err, path)


class _Tripwire:
    """Unpickling this creates a file: proof that the loader ran pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_an_object_array_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "pickle-ran"
    header = np.frombuffer(json.dumps(HEADER).encode(), np.uint8)
    path = tmp_path / "object.npz"
    np.savez(path, W=np.array([_Tripwire(marker)], dtype=object), **{HEADER_KEY: header})
    with pytest.raises(CheckpointError) as err:
        load_arrays(path)
    _assert_one_line_naming(err, path)
    assert not marker.exists()


def test_a_saved_file_has_the_permissions_of_a_new_file(tmp_path):
    """Not the 0600 of a bare temporary file: others may read a model if the umask lets them."""
    old = os.umask(0o027)
    try:
        path = save_arrays(tmp_path / "a.npz", ARRAYS, HEADER)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
