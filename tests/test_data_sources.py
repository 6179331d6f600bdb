"""Finding and downloading datasets, against a local HTTP server: no test touches the internet.

Each test builds a small fake dataset ("fake": 12 training and 6 test images
of 28x28) out of synthetic IDX files, registers it in the dataset table with
its checksums, and isolates every place the search looks: ``data_dir``,
``$NPVAE_DATA``, ``$XDG_CACHE_HOME`` and the system folder all point into
``tmp_path``.  Downloads come from an ``http.server`` on 127.0.0.1 started and
stopped by the test, through ``$NPVAE_MIRROR``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import socket
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST_DIR, NO_MNIST

from npvae.data import datasets, download, sources
from npvae.data.datasets import load_dataset
from npvae.data.idx import read_idx
from npvae.data.sources import DataFile, DatasetSpec, find_dataset, locate_dataset
from npvae.errors import ConfigError, DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def fake_contents(seed: int = 0) -> dict[str, bytes]:
    """Role -> decompressed IDX bytes of a tiny dataset."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": idx_bytes(rng.integers(0, 256, (12, 28, 28))),
        "train_labels": idx_bytes(np.arange(12) % 10),
        "test_images": idx_bytes(rng.integers(0, 256, (6, 28, 28))),
        "test_labels": idx_bytes(np.arange(6) % 10),
    }


def write_files(folder: Path, contents: dict[str, bytes], roles=None) -> Path:
    """Write (gzip) the given roles' files into folder; return folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for role in roles or contents:
        (folder / f"{STEMS[role]}.gz").write_bytes(gzip.compress(contents[role]))
    return folder


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Point every searched place into tmp_path; register the "fake" dataset."""
    contents = fake_contents()
    spec = DatasetSpec(
        name="fake",
        files={
            role: DataFile(STEMS[role], hashlib.sha256(data).hexdigest())
            for role, data in contents.items()
        },
        mirrors=("http://127.0.0.1:9/unused/",),
    )
    monkeypatch.setitem(sources.DATASETS, "fake", spec)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(sources, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.delenv("NPVAE_DATA", raising=False)
    monkeypatch.delenv("NPVAE_MIRROR", raising=False)
    return {
        "contents": contents,
        "spec": spec,
        "cache": tmp_path / "xdg-cache" / "npvae" / "fake",
        "cache_root": tmp_path / "xdg-cache",
        "system": tmp_path / "system" / "fake",
        "tmp": tmp_path,
    }


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; yields (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def free_port() -> int:
    """A local port with nothing listening on it (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_cache_untouched(places):
    leftovers = list(places["cache_root"].rglob("*")) if places["cache_root"].exists() else []
    assert leftovers == []


# --------------------------------------------------------------------------
# Where find_dataset looks, and in which order.


def test_lookup_order_data_dir_env_cache_system(places, monkeypatch):
    contents = places["contents"]
    data_dir = write_files(places["tmp"] / "mine", contents)
    env_dir = write_files(places["tmp"] / "env", contents)
    write_files(places["cache"], contents)
    write_files(places["system"], contents)
    monkeypatch.setenv("NPVAE_DATA", str(env_dir))

    assert locate_dataset("fake", data_dir, download=False) == (data_dir, "data_dir")
    assert locate_dataset("fake", None, download=False) == (env_dir, "NPVAE_DATA")
    monkeypatch.delenv("NPVAE_DATA")
    assert locate_dataset("fake", None, download=False) == (places["cache"], "cache")
    for path in places["cache"].iterdir():
        path.unlink()
    assert locate_dataset("fake", None, download=False) == (places["system"], "system")


def test_data_dir_may_be_the_parent_of_a_name_folder(places):
    parent = places["tmp"] / "datasets"
    write_files(parent / "fake", places["contents"])
    assert find_dataset("fake", parent, download=False) == parent / "fake"


def register_other(monkeypatch) -> dict[str, bytes]:
    """Register a second fake dataset, "other"; return its contents."""
    contents = fake_contents(seed=1)
    monkeypatch.setitem(
        sources.DATASETS, "other", DatasetSpec("other", spec_for(contents).files, ())
    )
    return contents


def test_npvae_data_is_a_root_with_a_folder_per_dataset(places, monkeypatch):
    root = places["tmp"] / "datasets"
    write_files(root / "fake", places["contents"])
    write_files(root / "other", register_other(monkeypatch))
    write_files(places["system"], places["contents"])
    monkeypatch.setenv("NPVAE_DATA", str(root))
    assert locate_dataset("fake", download=False) == (root / "fake", "NPVAE_DATA")
    assert locate_dataset("other", download=False) == (root / "other", "NPVAE_DATA")


def test_name_folder_comes_before_the_files_beside_it(places, monkeypatch):
    root = write_files(places["tmp"] / "datasets", register_other(monkeypatch))
    write_files(root / "fake", places["contents"])
    assert find_dataset("fake", root, download=False) == root / "fake"
    monkeypatch.setenv("NPVAE_DATA", str(root))
    assert find_dataset("fake", download=False) == root / "fake"


def test_npvae_data_of_another_dataset_is_skipped(places, monkeypatch):
    # The audit's case: NPVAE_DATA=<mnist files>, --dataset fashion-mnist.
    env_dir = write_files(places["tmp"] / "other-files", register_other(monkeypatch))
    monkeypatch.setenv("NPVAE_DATA", str(env_dir))
    write_files(places["system"], places["contents"])
    assert locate_dataset("fake", download=False) == (places["system"], "system")
    assert load_dataset("fake", download=False).source == f"{places['system']} (system)"
    write_files(places["cache"], places["contents"])
    assert locate_dataset("fake", download=False) == (places["cache"], "cache")
    assert locate_dataset("other", download=False) == (env_dir, "NPVAE_DATA")


def test_npvae_data_of_another_dataset_is_skipped_for_the_download(places, server, monkeypatch):
    served, url = server
    write_files(served, places["contents"])
    monkeypatch.setenv("NPVAE_MIRROR", url)
    env_dir = write_files(places["tmp"] / "other-files", register_other(monkeypatch))
    monkeypatch.setenv("NPVAE_DATA", str(env_dir))
    assert locate_dataset("fake") == (places["cache"], f"downloaded from {url}")


def test_skipped_npvae_data_folder_is_named_when_nothing_is_found(places, monkeypatch):
    env_dir = write_files(places["tmp"] / "other-files", register_other(monkeypatch))
    monkeypatch.setenv("NPVAE_DATA", str(env_dir))
    with pytest.raises(DataError) as caught:
        find_dataset("fake", download=False)
    assert f"{env_dir} (holds other)" in str(caught.value)


def test_damaged_file_in_npvae_data_is_an_error_naming_it(places, monkeypatch):
    contents = dict(places["contents"])
    damaged = bytearray(contents["test_images"])
    damaged[100] ^= 0xFF  # of no known dataset: damaged, not another dataset's
    contents["test_images"] = bytes(damaged)
    env_dir = write_files(places["tmp"] / "damaged", contents)
    monkeypatch.setenv("NPVAE_DATA", str(env_dir))
    write_files(places["system"], places["contents"])
    with pytest.raises(DataError) as caught:
        load_dataset("fake", download=False)
    message = str(caught.value)
    assert message.startswith(f"{env_dir / 't10k-images-idx3-ubyte.gz'}: does not match")
    assert "damaged" in message and "delete" not in message


def test_data_dir_of_another_dataset_says_so_plainly(places, monkeypatch):
    folder = write_files(places["tmp"] / "other-files", register_other(monkeypatch))
    write_files(places["system"], places["contents"])  # an explicit folder is not passed over
    with pytest.raises(DataError) as caught:
        load_dataset("fake", folder, download=False)
    assert str(caught.value) == (
        f"{folder / 't10k-images-idx3-ubyte.gz'} is not fake (its checksum is other's); "
        "point --data-dir at the fake files"
    )


def test_raw_files_are_found_too(places):
    folder = places["tmp"] / "raw"
    folder.mkdir()
    for role, data in places["contents"].items():
        (folder / STEMS[role]).write_bytes(data)
    assert find_dataset("fake", folder, download=False) == folder
    assert load_dataset("fake", folder, download=False).x_train.shape == (12, 784)


def test_incomplete_data_dir_names_the_missing_files_and_looks_no_further(places):
    """The user said where the data is: another copy elsewhere is not what they asked for."""
    partial = write_files(places["tmp"] / "partial", places["contents"], ["train_images"])
    write_files(places["system"], places["contents"])
    with pytest.raises(DataError) as caught:
        find_dataset("fake", partial)
    assert str(caught.value) == (
        f"{partial}: no {STEMS['train_labels']}(.gz), {STEMS['test_images']}(.gz), "
        f"{STEMS['test_labels']}(.gz) for dataset fake; add the missing files or point "
        "--data-dir elsewhere"
    )


def test_incomplete_folder_elsewhere_is_skipped_and_reported(places, monkeypatch):
    partial = write_files(places["tmp"] / "partial", places["contents"], ["train_images"])
    monkeypatch.setenv("NPVAE_DATA", str(partial))
    write_files(places["system"], places["contents"])
    assert find_dataset("fake", download=False) == places["system"]
    (places["system"] / f"{STEMS['test_labels']}.gz").unlink()
    with pytest.raises(DataError, match=f"only 1 of 4 files; no {STEMS['train_labels']}"):
        find_dataset("fake", download=False)


def test_an_explicit_data_dir_never_leads_to_a_download(places, server, monkeypatch):
    served, url = server
    write_files(served, places["contents"])  # a download would succeed
    monkeypatch.setenv("NPVAE_MIRROR", url)
    empty = places["tmp"] / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as caught:
        find_dataset("fake", empty)
    assert str(caught.value).startswith(f"dataset fake not found in {empty} (looked in ")
    assert_cache_untouched(places)


def test_xdg_cache_home_is_honoured_and_relative_values_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.cache_dir("mnist") == tmp_path / "xdg" / "npvae" / "mnist"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    assert sources.cache_dir("mnist") == tmp_path / "home" / ".cache" / "npvae" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert sources.cache_dir("mnist") == tmp_path / "home" / ".cache" / "npvae" / "mnist"


def test_not_found_without_download_says_where_and_what_to_do(places):
    with pytest.raises(DataError) as caught:
        find_dataset("fake", download=False)
    message = str(caught.value)
    assert "\n" not in message
    for place in (places["cache"], places["system"]):
        assert str(place) in message
    assert "--data-dir" in message


def test_an_explicit_data_dir_is_the_only_place_looked_in(places):
    write_files(places["cache"], places["contents"])  # a copy elsewhere is not what was asked
    absent = places["tmp"] / "absent"
    with pytest.raises(DataError) as caught:
        find_dataset("fake", absent)
    message = str(caught.value)
    assert message == (
        f"dataset fake not found in {absent} (looked in {absent / 'fake'}, {absent}); "
        "point --data-dir at the folder holding its four files"
    )


def test_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError, match="mnist"):
        load_dataset("mnits")


# --------------------------------------------------------------------------
# Downloads from a local server.


def test_download_fills_the_cache_and_is_then_found_there(places, server, monkeypatch):
    served, url = server
    write_files(served, places["contents"])
    monkeypatch.setenv("NPVAE_MIRROR", url)

    folder, how = locate_dataset("fake")
    assert folder == places["cache"]
    assert how == f"downloaded from {url}"
    names = sorted(path.name for path in folder.iterdir())
    assert names == sorted(f"{stem}.gz" for stem in STEMS.values())  # no temporaries left
    for role, data in places["contents"].items():
        assert (
            read_idx(folder / f"{STEMS[role]}.gz").tobytes()
            == data[16 if "images" in role else 8 :]
        )

    monkeypatch.setenv("NPVAE_MIRROR", f"http://127.0.0.1:{free_port()}/")
    assert locate_dataset("fake") == (places["cache"], "cache")
    data = load_dataset("fake")
    assert data.x_train.shape == (12, 784)
    assert data.y_test.tolist() == [0, 1, 2, 3, 4, 5]
    assert "cache" in data.source


def test_mirror_placeholder_is_the_dataset_name(places, server, monkeypatch):
    served, url = server
    write_files(served / "fake", places["contents"])
    monkeypatch.setenv("NPVAE_MIRROR", url + "{name}")
    assert find_dataset("fake") == places["cache"]


def test_next_mirror_is_tried_when_one_is_dead(places, server, monkeypatch):
    served, url = server
    write_files(served, places["contents"])
    dead = f"http://127.0.0.1:{free_port()}/"
    monkeypatch.setitem(
        sources.DATASETS, "fake", DatasetSpec("fake", places["spec"].files, (dead, url))
    )
    assert locate_dataset("fake") == (places["cache"], f"downloaded from {url}")


def test_only_missing_files_are_downloaded(places, server, monkeypatch):
    served, url = server
    write_files(places["cache"], places["contents"], ["train_images", "train_labels"])
    write_files(served, places["contents"], ["test_images", "test_labels"])
    monkeypatch.setenv("NPVAE_MIRROR", url)
    assert find_dataset("fake") == places["cache"]
    assert len(list(places["cache"].iterdir())) == 4


def test_corrupted_download_is_rejected_and_leaves_nothing(places, server, monkeypatch):
    served, url = server
    contents = dict(places["contents"])
    damaged = bytearray(contents["test_images"])
    damaged[100] ^= 0xFF  # still a well-formed IDX file: only the checksum can tell
    contents["test_images"] = bytes(damaged)
    write_files(served, contents)
    monkeypatch.setenv("NPVAE_MIRROR", url)

    with pytest.raises(DataError) as caught:
        find_dataset("fake")
    message = str(caught.value)
    assert "checksum mismatch" in message
    assert "t10k-images-idx3-ubyte.gz" in message
    assert "NPVAE_MIRROR" in message
    assert "\n" not in message
    assert_cache_untouched(places)


def test_missing_file_on_server_is_an_http_error(places, server, monkeypatch):
    served, url = server
    write_files(served, places["contents"], ["train_images", "train_labels", "test_images"])
    monkeypatch.setenv("NPVAE_MIRROR", url)
    with pytest.raises(DataError, match="HTTP 404"):
        find_dataset("fake")
    assert_cache_untouched(places)


def test_failed_download_keeps_files_that_were_already_cached(places, monkeypatch):
    write_files(places["cache"], places["contents"], ["train_images"])
    monkeypatch.setenv("NPVAE_MIRROR", f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(DataError):
        find_dataset("fake")
    assert [path.name for path in places["cache"].iterdir()] == [f"{STEMS['train_images']}.gz"]


def test_dead_server_fails_fast_and_leaves_nothing(places, monkeypatch):
    monkeypatch.setenv("NPVAE_MIRROR", f"http://127.0.0.1:{free_port()}/")
    start = time.monotonic()
    with pytest.raises(DataError, match="cannot connect") as caught:
        find_dataset("fake")
    assert time.monotonic() - start < 3.0
    message = str(caught.value)
    assert "looked in" in message and "--data-dir" in message and "connect" in message
    assert_cache_untouched(places)


def test_silent_server_times_out(places, monkeypatch):
    # Listening but never answering: the connection succeeds, the reply never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("NPVAE_MIRROR", f"http://127.0.0.1:{silent.getsockname()[1]}/")
        monkeypatch.setattr(download, "TIMEOUT_SECONDS", 0.3)
        start = time.monotonic()
        with pytest.raises(DataError, match="no answer within 0.3 s"):
            find_dataset("fake")
        assert time.monotonic() - start < 3.0
    assert_cache_untouched(places)


def test_download_false_never_connects(places, server, monkeypatch):
    served, url = server
    write_files(served, places["contents"])
    monkeypatch.setenv("NPVAE_MIRROR", url)
    with pytest.raises(DataError, match="not found .*; pass --data-dir DIR holding") as caught:
        find_dataset("fake", download=False)
    assert "allow the download" not in str(caught.value)  # its callers cannot download
    assert_cache_untouched(places)


# --------------------------------------------------------------------------
# load_dataset's checks of what it reads.


def spec_for(contents: dict[str, bytes]) -> DatasetSpec:
    files = {
        role: DataFile(STEMS[role], hashlib.sha256(data).hexdigest())
        for role, data in contents.items()
    }
    return DatasetSpec("fake", files, ())


def test_file_of_no_known_dataset_fails_the_checksum_without_delete_it(places):
    folder = write_files(places["tmp"] / "wrong", fake_contents(seed=1))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: does not match") as caught:
        load_dataset("fake", folder, download=False)
    message = str(caught.value)
    assert "may be damaged or another version" in message and "delete" not in message


def test_images_of_the_wrong_shape_are_named(places, monkeypatch):
    contents = dict(places["contents"])
    contents["train_images"] = idx_bytes(np.zeros((12, 20, 20)))
    monkeypatch.setitem(sources.DATASETS, "fake", spec_for(contents))
    folder = write_files(places["tmp"] / "small", contents)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*\(n, 28, 28\)"):
        load_dataset("fake", folder, download=False)


def test_label_count_must_match_image_count(places, monkeypatch):
    contents = dict(places["contents"])
    contents["test_labels"] = idx_bytes(np.arange(5))
    monkeypatch.setitem(sources.DATASETS, "fake", spec_for(contents))
    folder = write_files(places["tmp"] / "short", contents)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: 5 labels for 6 images"):
        load_dataset("fake", folder, download=False)


def test_swapped_files_are_caught_without_checksums(places):
    contents = dict(places["contents"])
    contents["train_images"], contents["train_labels"] = (
        contents["train_labels"],
        contents["train_images"],
    )
    folder = write_files(places["tmp"] / "swapped", contents)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*images file"):
        load_dataset("fake", folder, download=False, verify=False)


# --------------------------------------------------------------------------
# The real files, where this machine has them.


@pytest.mark.skipif(MNIST_DIR is None, reason=NO_MNIST)
def test_real_mnist_through_npvae_data(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # The parent of a folder called mnist: mnist/ is found in it; else the folder itself.
    root = MNIST_DIR.parent if MNIST_DIR.name == "mnist" else MNIST_DIR
    monkeypatch.setenv("NPVAE_DATA", str(root))
    data = load_dataset("mnist", download=False)
    assert data.x_train.shape == (60_000, 784) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (10_000, 784)
    assert np.bincount(data.y_train).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949,
    ]  # fmt: skip
    assert str(MNIST_DIR) in data.source and "NPVAE_DATA" in data.source


@pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason=f"{FASHION_DIR} absent (apt-get install dataset-fashion-mnist provides it)",
)
def test_real_fashion_mnist_from_the_system_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NPVAE_DATA", raising=False)
    data = load_dataset("fashion-mnist", download=False)
    assert data.x_train.shape == (60_000, 784)
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    assert data.source == f"{FASHION_DIR} (system)"


def test_dataset_table_has_fallback_mirrors_and_checksums(monkeypatch):
    monkeypatch.delenv("NPVAE_MIRROR", raising=False)
    for name in ("mnist", "fashion-mnist"):
        bases = sources.mirrors_for(sources.DATASETS[name])
        assert len(bases) >= 2  # a fallback
        assert all(
            base.startswith(("https://", "http://")) and base.endswith("/") for base in bases
        )
        assert all(len(f.sha256) == 64 for f in sources.DATASETS[name].files.values())
    assert datasets.DATASET_NAMES == ("mnist", "fashion-mnist", "digits")
