"""Mini-batches: gather, scale to [0, 1], binarise.

:class:`Batches` turns a uint8 image array into float mini-batches, one epoch
per ``for`` loop.  The data stays uint8; each batch is gathered and scaled
into a buffer that is reused from batch to batch, so an epoch allocates
nothing.  Binarisation, for a Bernoulli decoder:

``"none"``
    Grey levels ``x / 255`` in [0, 1].
``"static"``
    One Bernoulli draw per pixel, made once when the Batches is built, from
    ``static_seed`` (not from ``rng``): every epoch, every run and every
    resumed run sees the same binary images, like the fixed binarised MNIST
    of Larochelle & Murray (2011).
``"dynamic"``
    A fresh Bernoulli draw for every batch, from ``rng``, as in the IWAE paper
    (Burda et al., 2016): an endless supply of binary images whose mean is
    the grey level.

Randomness comes only from the ``numpy.random.Generator`` passed in, in a
fixed order: at the start of each epoch one ``permutation`` (if shuffling),
then for each batch one ``random`` draw of the batch's shape (if dynamic).
So saving ``rng.bit_generator.state`` at the end of an epoch and restoring it
reproduces the rest of the run exactly.  To stop and resume in the middle of
an epoch, drive the epoch yourself: ``order = batches.draw_order()``, then
``for index, x in batches.iter_from(order, start_batch)``; save ``order``, the
next batch index and the generator's state, and pass them back on resume.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from npvae import kernels
from npvae.errors import ConfigError, DataError
from npvae.validate import counted

#: The binarisation modes :class:`Batches` accepts.
BINARIZE_MODES = ("none", "static", "dynamic")

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def binarize_static(x: np.ndarray, seed: int) -> np.ndarray:
    """One fixed Bernoulli draw of every pixel.

    Parameters
    ----------
    x : np.ndarray
        (N, D) uint8 grey levels (probability ``x / 255``) or floats in [0, 1].
    seed : int
        Seed of the draw.

    Returns
    -------
    np.ndarray
        (N, D) uint8 of 0s and 1s.
    """
    rng = np.random.default_rng(seed)
    binary = np.empty(x.shape, dtype=np.uint8)
    # Row blocks keep the temporary uniform draws small for a 60,000-image set.
    block = 4096
    for start in range(0, len(x), block):
        rows = x[start : start + block]
        uniform = rng.random(rows.shape, dtype=np.float32)
        if rows.dtype == np.uint8:
            threshold = rows.astype(np.float32) / np.float32(255)
        else:
            threshold = rows
        np.less(uniform, threshold, out=binary[start : start + block], casting="unsafe")
    return binary


class Batches:
    """Iterate over shuffled, scaled, optionally binarised mini-batches.

    Parameters
    ----------
    x : np.ndarray
        (N, D) images: uint8 grey levels (scaled by 1/255), or float32/64
        already in [0, 1] (finite; in [0, 1] when binarising).
    batch_size : int
        Rows per batch, >= 1.  The last batch of an epoch is smaller unless
        ``drop_last``.
    rng : numpy.random.Generator
        Source of the epoch shuffles and of the dynamic binarisation.
    shuffle : bool
        Draw a new order every epoch; otherwise rows go in order.
    binarize : {"none", "static", "dynamic"}
        See the module docstring.
    dtype : numpy dtype
        float32 (default) or float64, the dtype of the batches.
    drop_last : bool
        Skip the last, smaller batch of each epoch.
    static_seed : int
        Seed of the ``"static"`` draw; ignored otherwise.

    Raises
    ------
    DataError
        If ``x`` is not 2-D, empty, of an unsupported dtype, or holds NaN,
        infinity, or (when binarising) values outside [0, 1].
    ConfigError
        If ``batch_size``, ``binarize`` or ``dtype`` is not allowed.

    Notes
    -----
    Each yielded batch is a view of a buffer that the next batch overwrites;
    copy it (``batch.copy()``) to keep it.
    """

    def __init__(
        self,
        x: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
        *,
        shuffle: bool = True,
        binarize: str = "none",
        dtype=np.float32,
        drop_last: bool = False,
        static_seed: int = 0,
    ):
        self.dtype = np.dtype(dtype)
        self.binarize = binarize
        _check_options(batch_size, binarize, self.dtype)
        _check_images(x, binarizing=binarize != "none")
        if drop_last and len(x) < batch_size:
            raise ConfigError(
                f"batch size {batch_size} is larger than the {counted(len(x), 'example')} and "
                "drop_last is on, so there would be no batch; lower the batch size"
            )
        self.batch_size = int(batch_size)
        self.rng = rng
        self.shuffle = shuffle
        self.drop_last = drop_last
        # What the batches are gathered from: grey levels, or the fixed 0/1 draw.
        self._source = binarize_static(x, static_seed) if binarize == "static" else x
        self._scale = x.dtype == np.uint8 and binarize != "static"
        shape = (min(self.batch_size, len(x)), x.shape[1])
        self._gathered = np.empty(shape, dtype=self._source.dtype)
        self._out = np.empty(shape, dtype=self.dtype)
        self._uniform = np.empty(shape, dtype=self.dtype) if binarize == "dynamic" else None

    @property
    def n_examples(self) -> int:
        """N, the rows of ``x``."""
        return len(self._source)

    @property
    def n_features(self) -> int:
        """D, the columns of ``x`` (784 for 28x28 images)."""
        return self._source.shape[1]

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(self.n_examples, self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def __iter__(self) -> Iterator[np.ndarray]:
        """One epoch of batches, each (B, D) of ``dtype`` in [0, 1] (or {0, 1})."""
        for _, batch in self.iter_with_indices():
            yield batch

    def iter_with_indices(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch, yielding ``(indices, batch)``.

        Yields
        ------
        indices : np.ndarray
            (B,) int64 rows of ``x`` in this batch (e.g. to fetch labels).
        batch : np.ndarray
            (B, D) of ``dtype``; a view of a reused buffer.
        """
        order = self.draw_order()
        for batch_index in range(len(self)):
            indices = self._batch_rows(order, batch_index)
            yield indices, self._make_batch(indices)

    def draw_order(self) -> np.ndarray:
        """The row order of one epoch: a permutation from ``rng``, or 0..N-1.

        Together with :meth:`iter_from` this lets a trainer stop in the
        middle of an epoch and resume it: save the order, the next batch
        index and ``rng.bit_generator.state``; restore them; go on.

        Returns
        -------
        np.ndarray
            (N,) int64.
        """
        if self.shuffle:
            return self.rng.permutation(self.n_examples)
        return np.arange(self.n_examples)

    def iter_from(
        self, order: np.ndarray, start_batch: int = 0
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The batches of an epoch in ``order``, from batch ``start_batch`` on.

        Parameters
        ----------
        order : np.ndarray
            (N,) row order, from :meth:`draw_order` (possibly saved and loaded).
        start_batch : int
            Index of the first batch to yield, ``0 <= start_batch <= len(self)``.

        Yields
        ------
        batch_index : int
            Position of the batch in the epoch.
        batch : np.ndarray
            (B, D) of ``dtype``; a view of a reused buffer.

        Raises
        ------
        DataError
            If ``order`` is not a row order of these N examples, or
            ``start_batch`` is out of range (a resumed run on other data).
        """
        order = np.asarray(order)
        n_examples = self.n_examples
        if (
            order.shape != (n_examples,)
            or order.dtype.kind not in "iu"
            or (n_examples and (order.min() < 0 or order.max() >= n_examples))
        ):
            raise DataError(
                f"saved batch order (shape {order.shape}, dtype {order.dtype}) is not an order "
                f"of these {counted(n_examples, 'example')}; resume with the data the run "
                "started on"
            )
        if not 0 <= start_batch <= len(self):
            raise DataError(
                f"batch {start_batch} is outside the {counted(len(self), 'batch', 'batches')} "
                "of an epoch; "
                "resume with the batch size and data the run started on"
            )
        for batch_index in range(start_batch, len(self)):
            yield batch_index, self._make_batch(self._batch_rows(order, batch_index))

    def _batch_rows(self, order: np.ndarray, batch_index: int) -> np.ndarray:
        start = batch_index * self.batch_size
        return order[start : start + self.batch_size]

    def _make_batch(self, indices: np.ndarray) -> np.ndarray:
        size = len(indices)
        gathered = self._gathered[:size]
        out = self._out[:size]
        np.take(self._source, indices, axis=0, out=gathered)
        if self.binarize == "dynamic":
            # One fused pass: scale the grey levels and compare with fresh uniforms.
            uniform = self._uniform[:size]
            self.rng.random(out=uniform, dtype=self.dtype)
            return kernels.binarize(gathered, uniform, out=out)
        if self._scale:
            np.divide(gathered, self.dtype.type(255), out=out)
        else:
            out[...] = gathered
        return out


def _check_options(batch_size, binarize: str, dtype: np.dtype) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ConfigError(f"batch size must be an integer, got {batch_size!r}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if binarize not in BINARIZE_MODES:
        raise ConfigError(
            f"unknown binarisation {binarize!r}; choose one of: {', '.join(BINARIZE_MODES)}"
        )
    if dtype not in _FLOAT_DTYPES:
        raise ConfigError(f"batch dtype must be float32 or float64, got {dtype}")


def _check_images(x, binarizing: bool) -> None:
    if not isinstance(x, np.ndarray):
        raise DataError(f"images must be a NumPy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise DataError(
            f"images must be 2-D (N, D), got shape {x.shape}; flatten them with "
            "x.reshape(len(x), -1)"
        )
    if len(x) == 0 or x.shape[1] == 0:
        raise DataError(f"images array is empty (shape {x.shape})")
    if x.dtype == np.uint8:
        return
    if x.dtype not in _FLOAT_DTYPES:
        raise DataError(f"images must be uint8 or float32/float64, got {x.dtype}")
    if not np.isfinite(x).all():
        raise DataError("images contain NaN or infinity; clean the data before batching")
    if binarizing and (x.min() < 0 or x.max() > 1):
        raise DataError(
            f"images to binarise must lie in [0, 1], found values in "
            f"[{x.min():g}, {x.max():g}]; scale them or use binarize='none'"
        )


__all__ = ["BINARIZE_MODES", "Batches", "binarize_static"]
