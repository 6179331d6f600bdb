"""Data: the IDX reader, dataset sources, the embedded digits, and batches.

Quick tour, the way a training script uses it::

    import numpy as np
    from npvae.data import Batches, load_dataset, split_validation

    data = load_dataset("mnist", data_dir=args.data_dir)   # or "fashion-mnist", "digits"
    data = split_validation(data, n_val=10_000, seed=seed)
    print(data.summary())                                  # data.source goes in the run record
    rng = np.random.default_rng(seed)
    train = Batches(data.x_train, 100, rng, binarize="dynamic")
    for epoch in range(n_epochs):
        for x in train:             # (B, 784) float32 in {0, 1}; overwritten next batch
            ...
    # resume: save rng.bit_generator.state at an epoch's end, restore it, go on
    # (mid-epoch: draw_order() / iter_from(order, start_batch), see Batches)

Modules, bottom up
------------------
:mod:`npvae.data.idx`
    ``read_idx(path, *, expected_sha256=None) -> np.ndarray``: an IDX file,
    gzip (recognised by its magic bytes) or raw, validated (magic, type code,
    dimensions, byte count, gzip CRC, optional checksum of the decompressed
    bytes).  ``write_idx(path, array, *, compress=None)`` writes one.
    ``decompressed_sha256(path) -> str``.
:mod:`npvae.data.specs`
    :class:`DatasetSpec` (file stems, SHA-256 of the decompressed files,
    mirror URLs), :class:`DataFile`, ``ROLES``; ``file_in(folder, data_file)``
    finds a file stored gzip or raw.
:mod:`npvae.data.download`
    ``download_dataset(spec, target)``: the missing files from the mirrors
    (or ``$NPVAE_MIRROR``), checked, all or nothing.
:mod:`npvae.data.sources`
    ``DATASETS``: name -> :class:`DatasetSpec`.
    ``find_dataset(name, data_dir=None, download=True) -> Path`` searches
    ``data_dir`` (or ``$NPVAE_DATA``), then ``$XDG_CACHE_HOME/npvae/<name>``
    (``~/.cache/...``), then ``/usr/share/datasets/<name>`` (Debian's
    ``dataset-*`` packages), then downloads into the cache.
    ``locate_dataset`` is the same and also says how the folder was found.
:mod:`npvae.data.glyphs`
    ``templates()``: the font glyphs and pen drawings the embedded digits
    start from, rendered once per process.
:mod:`npvae.data.embedded`
    ``make_digits(n_train, n_test, seed) -> (x_train, y_train, x_test,
    y_test)``: handwritten-like digits, (n, 28, 28) uint8 and (n,) uint8,
    each a template distorted like a hand, no file or network.
:mod:`npvae.data.datasets`
    ``load_dataset(name, data_dir=None, download=True, *, verify=True) ->
    Dataset``; ``split_validation(dataset, n_val, seed) -> Dataset``;
    ``DATASET_NAMES``.  :class:`Dataset` holds ``x_train``/``x_val``/``x_test``
    as (N, 784) uint8, ``y_*`` as (N,) uint8, ``name`` and ``source``.
:mod:`npvae.data.batches`
    ``Batches(x, batch_size, rng, *, shuffle=True, binarize="none",
    dtype=np.float32, drop_last=False, static_seed=0)``: iterate for one
    epoch of (B, D) float batches scaled to [0, 1]; ``binarize`` is
    ``"none"``, ``"static"`` (one fixed draw from ``static_seed``) or
    ``"dynamic"`` (a new draw per batch from ``rng``).
    ``iter_with_indices()`` also yields each batch's row indices;
    ``draw_order() -> (N,) int64`` and ``iter_from(order, start_batch=0)``
    (yielding ``(batch_index, batch)``) let a trainer stop and resume in the
    middle of an epoch.  ``binarize_static(x, seed) -> (N, D) uint8 0/1`` is
    the fixed draw on its own (e.g. for validation and test images).

Errors: a bad or missing file raises :class:`npvae.errors.DataError`, a bad
option (unknown dataset or binarisation, batch size, validation size)
:class:`npvae.errors.ConfigError`; both carry one line naming the problem
and what to do.
"""

from npvae.data.batches import BINARIZE_MODES, Batches, binarize_static
from npvae.data.datasets import (
    DATASET_NAMES,
    IMAGE_SHAPE,
    N_CLASSES,
    N_PIXELS,
    Dataset,
    canonical_name,
    load_dataset,
    split_validation,
)
from npvae.data.embedded import make_digits
from npvae.data.idx import read_idx, write_idx
from npvae.data.sources import DATASETS, find_dataset, locate_dataset

__all__ = [
    "BINARIZE_MODES",
    "DATASETS",
    "DATASET_NAMES",
    "IMAGE_SHAPE",
    "N_CLASSES",
    "N_PIXELS",
    "Batches",
    "Dataset",
    "binarize_static",
    "canonical_name",
    "find_dataset",
    "load_dataset",
    "locate_dataset",
    "make_digits",
    "read_idx",
    "split_validation",
    "write_idx",
]
