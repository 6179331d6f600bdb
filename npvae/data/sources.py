"""Where the IDX datasets come from: the table of datasets and the search for their files.

:func:`find_dataset` looks for a dataset's four files in this order and
returns the first folder that holds all of them:

1. ``data_dir`` (the CLI's ``--data-dir``) if given, else ``$NPVAE_DATA``
   if set; ``<dir>/<name>`` is tried first, then ``<dir>`` itself, so one
   ``$NPVAE_DATA`` can hold a folder per dataset;
2. the user's cache, ``$XDG_CACHE_HOME/npvae/<name>`` (``~/.cache`` when
   ``XDG_CACHE_HOME`` is unset, empty or relative, as the XDG spec says);
3. the system folder Debian's dataset packages install to,
   ``/usr/share/datasets/<name>`` (``apt install dataset-fashion-mnist``);
4. a download from the dataset's mirrors into the cache folder of step 2.

When ``data_dir`` is given, the user has said where the data is: only step 1
is searched, a folder there with some of the files but not all is an error
naming the missing ones, and nothing found is an error, never a download.
A ``$NPVAE_DATA`` that is set but names no folder is a mistake to fix, not a
place to pass over: it is a :class:`~npvae.errors.ConfigError` naming the
variable, which a caller falling back to other data does not catch.

A file may be stored gzip-compressed (``<stem>.gz``) or raw (``<stem>``).
Checksums are SHA-256 of the *decompressed* bytes, since mirrors and Debian
recompress the files and the gzip bytes differ from one copy to the next.

A folder of step 1 whose test images are another known dataset's (their
checksum says whose) is the wrong folder: ``--data-dir`` names it for this
run, so that is an error saying so; ``$NPVAE_DATA`` is a default for every
dataset, so its folder is skipped and the search goes on.  Anything else
wrong with a file (damage, another version) shows when
:func:`npvae.data.datasets.load_dataset` checks every file as it reads it.

Step 4 is :func:`npvae.data.download.download_dataset`: all or nothing,
from each mirror in turn (or ``$NPVAE_MIRROR``), every file checked.

The cache folder is found by hand rather than with platformdirs: the rule is
the three lines of :func:`cache_dir`, the XDG spec's own (a relative
``XDG_CACHE_HOME`` is ignored), and a dependency would not make them shorter.
"""

from __future__ import annotations

import os
from pathlib import Path

# Re-exported names keep their home module: patch TIMEOUT_SECONDS in npvae.data.download.
from npvae.data.download import MIRROR_ENV, TIMEOUT_SECONDS, download_dataset, mirrors_for
from npvae.data.idx import decompressed_sha256
from npvae.data.specs import ROLES, DataFile, DatasetSpec, file_in
from npvae.errors import ConfigError, DataError

#: Where Debian's ``dataset-*`` packages install (``/usr/share/datasets/<name>``).
SYSTEM_DATA_DIR = Path("/usr/share/datasets")

#: Environment variable naming a folder to search first: a root holding
#: ``<name>/`` folders, or (like ``--data-dir``) one dataset's files.
DATA_ENV = "NPVAE_DATA"


def _idx_files(train_images: str, train_labels: str, test_images: str, test_labels: str):
    """The standard MNIST-style file names with the given checksums."""
    return {
        "train_images": DataFile("train-images-idx3-ubyte", train_images),
        "train_labels": DataFile("train-labels-idx1-ubyte", train_labels),
        "test_images": DataFile("t10k-images-idx3-ubyte", test_images),
        "test_labels": DataFile("t10k-labels-idx1-ubyte", test_labels),
    }


#: The datasets :func:`find_dataset` knows, by name.  Tests add fake ones.
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        files=_idx_files(
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    # Checksums computed from Debian's dataset-fashion-mnist and matching the
    # ones published alongside the upstream files (zalandoresearch/fashion-mnist).
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        files=_idx_files(
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
    ),
}


def cache_dir(name: str) -> Path:
    """The user's cache folder for dataset ``name`` (which may not exist yet).

    Returns
    -------
    Path
        ``$XDG_CACHE_HOME/npvae/<name>``, or ``~/.cache/npvae/<name>``.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "npvae" / name


def dataset_files(folder: Path, spec: DatasetSpec) -> dict[str, Path]:
    """Map each role to its file in ``folder``.

    Raises
    ------
    DataError
        If a file is missing from ``folder``.
    """
    found = {}
    for role, data_file in spec.files.items():
        path = file_in(folder, data_file)
        if path is None:
            raise DataError(f"{folder}: no {data_file.stem}(.gz) for dataset {spec.name}")
        found[role] = path
    return found


def _holds_all(folder: Path, spec: DatasetSpec) -> bool:
    return all(file_in(folder, data_file) is not None for data_file in spec.files.values())


def search_path(name: str, data_dir: str | Path | None = None) -> list[tuple[Path, str]]:
    """The folders :func:`find_dataset` searches, in order, with a label each.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    data_dir : str or Path, optional
        The user's folder; when None, ``$NPVAE_DATA`` is used if set.

    Returns
    -------
    list of (Path, str)
        ``(folder, label)`` where label is ``"data_dir"``, ``"NPVAE_DATA"``,
        ``"cache"`` or ``"system"``.

    Raises
    ------
    ConfigError
        If ``data_dir`` is None and ``$NPVAE_DATA`` is set to something that
        is not a folder.
    """
    places: list[tuple[Path, str]] = []
    if data_dir is not None:
        user_dir, label = Path(data_dir).expanduser(), "data_dir"
    elif os.environ.get(DATA_ENV):
        user_dir, label = Path(os.environ[DATA_ENV]).expanduser(), DATA_ENV
        if not user_dir.is_dir():
            # The user set it to be searched; passing over it would hide their typo.
            raise ConfigError(
                f"{DATA_ENV}={os.environ[DATA_ENV]} is not a folder; point it at the folder "
                f"holding the datasets (or one dataset's files), or unset it"
            )
    else:
        user_dir, label = None, None
    if user_dir is not None:
        places += [(user_dir / name, label), (user_dir, label)]
    if label == "data_dir":
        return places  # the user said where the data is: nowhere else
    places.append((cache_dir(name), "cache"))
    places.append((SYSTEM_DATA_DIR / name, "system"))
    return places


def find_dataset(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Find (or fetch) the folder holding dataset ``name``'s four IDX files.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`, e.g. ``"mnist"`` or ``"fashion-mnist"``.
    data_dir : str or Path, optional
        Searched first (``<data_dir>/<name>``, then ``<data_dir>``); else
        ``$NPVAE_DATA``.
    download : bool
        If no folder holds the files, download them into the cache.

    Returns
    -------
    Path
        A folder where every file of ``DATASETS[name].files`` exists (as
        ``<stem>.gz`` or ``<stem>``).  In ``data_dir`` and ``$NPVAE_DATA``
        the test images' checksum is checked, to tell another dataset's
        folder; :func:`npvae.data.datasets.load_dataset` checks every file
        while reading it.

    Raises
    ------
    DataError
        If ``data_dir`` holds another dataset's files, or a file there or in
        ``$NPVAE_DATA`` is corrupt gzip; or if the files are nowhere and
        cannot be downloaded: one line listing the folders searched, the
        download failure, and what to do.
    ConfigError
        If ``data_dir`` is None and ``$NPVAE_DATA`` is set but is no folder.
    """
    return locate_dataset(name, data_dir, download)[0]


def locate_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = True
) -> tuple[Path, str]:
    """Like :func:`find_dataset`, also saying how the folder was found.

    Returns
    -------
    folder : Path
    how : str
        ``"data_dir"``, ``"NPVAE_DATA"``, ``"cache"``, ``"system"``, or
        ``"downloaded from <base URL>"``.
    """
    spec = _spec(name)
    places = search_path(name, data_dir)
    owners: dict[Path, str] = {}  # user folders skipped: whose files they hold
    for folder, label in places:
        if not _holds_all(folder, spec):
            if label == "data_dir" and _missing(folder, spec) != list(spec.files.values()):
                # The user pointed at this folder and it holds part of the dataset.
                absent = ", ".join(f"{data_file.stem}(.gz)" for data_file in _missing(folder, spec))
                raise DataError(
                    f"{folder}: no {absent} for dataset {name}; add the missing "
                    f"file{'s' if ', ' in absent else ''} or point --data-dir elsewhere"
                )
            continue
        if label not in ("data_dir", DATA_ENV):
            return folder, label
        wrong = _other_dataset(folder, spec)
        if wrong is None:
            return folder, label
        path, owner = wrong
        if label == "data_dir":
            raise DataError(
                f"{path} is not {name} (its checksum is {owner}'s); "
                f"point --data-dir at the {name} files"
            )
        owners[folder] = owner
    searched = ", ".join(_describe(folder, spec, owners.get(folder)) for folder, _ in places)
    if data_dir is not None:
        # The user said where the data is; a download into the cache would overrule them.
        raise DataError(
            f"dataset {name} not found in {data_dir} (looked in {searched}); "
            f"point --data-dir at the folder holding its four files"
        )
    if not download:
        # The callers that do not download are commands with no way to (the tour, a
        # benchmark), so the hint is what they can do: say where the files are.
        raise DataError(
            f"dataset {name} not found (looked in {searched}); pass --data-dir DIR holding "
            f"its four files, or set {DATA_ENV} to that folder"
        )
    target = cache_dir(name)
    try:
        mirror = download_dataset(spec, target)
    except DataError as err:
        raise DataError(
            f"dataset {name} not found (looked in {searched}) and the download failed: {err}; "
            f"pass --data-dir DIR holding its files, connect to the internet, "
            f"or set {MIRROR_ENV} to a mirror's base URL"
        ) from None
    return target, f"downloaded from {mirror}"


def _other_dataset(folder: Path, spec: DatasetSpec) -> tuple[Path, str] | None:
    """``(file, dataset name)`` if ``folder``'s test images are another known dataset's.

    One file tells which dataset a folder holds; the test images are small
    (7.5 MB for MNIST) and, unlike labels, never shared between datasets.
    """
    data_file = spec.files["test_images"]
    path = file_in(folder, data_file)
    digest = decompressed_sha256(path)
    if digest == data_file.sha256:
        return None
    for other in DATASETS.values():
        if other is not spec and any(known.sha256 == digest for known in other.files.values()):
            return path, other.name
    return None


def _missing(folder: Path, spec: DatasetSpec) -> list[DataFile]:
    """The files of ``spec`` that ``folder`` lacks (gzip or raw)."""
    return [data_file for data_file in spec.files.values() if file_in(folder, data_file) is None]


def _describe(folder: Path, spec: DatasetSpec, owner: str | None = None) -> str:
    """A folder's path, flagged if it holds some but not all of the files, or another dataset's."""
    if owner is not None:
        return f"{folder} (holds {owner})"
    n_present = sum(file_in(folder, data_file) is not None for data_file in spec.files.values())
    if n_present:
        absent = ", ".join(data_file.stem for data_file in _missing(folder, spec))
        return f"{folder} (only {n_present} of {len(spec.files)} files; no {absent})"
    return str(folder)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise DataError(f"no downloadable dataset called {name!r} (known: {known})")
    return DATASETS[name]


__all__ = [
    "DATASETS",
    "DATA_ENV",
    "MIRROR_ENV",
    "ROLES",
    "SYSTEM_DATA_DIR",
    "TIMEOUT_SECONDS",
    "DataFile",
    "DatasetSpec",
    "cache_dir",
    "dataset_files",
    "download_dataset",
    "file_in",
    "find_dataset",
    "locate_dataset",
    "mirrors_for",
    "search_path",
]
