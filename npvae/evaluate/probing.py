"""``python -m npvae.evaluate RUN --probe``: how much of the label a line reads off the codes.

:func:`probe_saved` fits :class:`npvae.probe.LinearProbe` to the codes of
the training set (q(z|x)'s mean for a VAE or IWAE, the encoder's output for an
autoencoder: :meth:`Model.codes`) and reports the accuracy on the test set's
codes; the same probe on the same images' pixels is the baseline beside it.
Images are prepared as the model sees them (binarised once with the
evaluation's seed, or grey levels), and the probe is seeded by the same seed.
"""

from __future__ import annotations

import time

import numpy as np

from npvae.app.runs import DATASET_TITLES
from npvae.data import binarize_static
from npvae.data.datasets import N_CLASSES
from npvae.errors import DataError
from npvae.models.base import chunks
from npvae.probe import LinearProbe
from npvae.validate import counted

#: The probe's settings, the same for codes and pixels: 20 passes over the training set,
#: or 2,000 steps if that is more, so that a small set is fitted too.  On MNIST's pixels
#: they give 92.5% test accuracy (9,380 steps, about 8 s on one idle core).
PROBE_SETTINGS = {"passes": 20, "min_steps": 2_000, "batch_size": 128, "lr": 1e-3, "l2": 1e-4}

#: Images encoded at a time: their float copy stays a few MB whatever the dataset's size.
ENCODE_ROWS = 5_000


def pixels_as_seen(images: np.ndarray, binarize: str, seed: int) -> np.ndarray:
    """uint8 ``images (N, D)`` as the model sees them, still one byte a pixel: binarised
    once with ``seed`` (0 or 1, as :func:`npvae.app.runs.prepare_images` draws them), or
    the grey levels as they are (0 to 255)."""
    return images if binarize == "none" else binarize_static(images, seed)


def codes_of(model, pixels: np.ndarray, binarize: str) -> np.ndarray:
    """The model's codes ``(N, d)`` of :func:`pixels_as_seen`'s ``pixels (N, D)``."""
    scale = np.float32(255 if binarize == "none" else 1)
    return np.concatenate(
        [
            model.codes((piece / scale).astype(model.dtype, copy=False))
            for piece in chunks(pixels, ENCODE_ROWS)
        ]
    )


def fit_and_score(train, y_train, test, y_test, seed: int) -> dict:
    """Fit a probe to ``train (N, F)`` and ``y_train (N,)``; score it on ``test (M, F)``.

    Returns its steps, accuracies and test cross-entropy, JSON-able.
    """
    settings = PROBE_SETTINGS
    per_pass = -(-len(train) // settings["batch_size"])  # steps in one pass over train
    steps = max(settings["min_steps"], settings["passes"] * per_pass)
    probe = LinearProbe(train.shape[1], N_CLASSES, l2=settings["l2"])
    probe.fit(
        train, y_train, steps=steps, batch_size=settings["batch_size"], lr=settings["lr"], seed=seed
    )
    return {
        "features": int(train.shape[1]),
        "steps": steps,
        "test_accuracy": probe.accuracy(test, y_test),
        "train_accuracy": probe.accuracy(train, y_train),
        "test_cross_entropy": probe.cross_entropy(test, y_test),
    }


def probe_saved(saved, data, binarize: str, seed: int, n_test: int) -> dict:
    """The probe's record for ``saved.model`` (a :class:`npvae.app.runs.SavedRun`).

    ``data`` is the run's :class:`npvae.data.Dataset`: all its training images,
    its first ``n_test`` test images.  Raises :class:`DataError` if it has no labels.
    """
    x_test, y_test = data.x_test[:n_test], data.y_test[:n_test]
    if len(data.y_train) != len(data.x_train) or len(y_test) != len(x_test):
        raise DataError(
            f"{data.name} has no labels for its images; the probe needs a labelled dataset"
        )
    started = time.perf_counter()
    train_pixels = pixels_as_seen(data.x_train, binarize, seed)  # (N_train, D) uint8
    test_pixels = pixels_as_seen(x_test, binarize, seed)  # (N_test, D) uint8
    train_codes = codes_of(saved.model, train_pixels, binarize)  # (N_train, d)
    test_codes = codes_of(saved.model, test_pixels, binarize)  # (N_test, d)
    probe = {
        **PROBE_SETTINGS,
        "seed": seed,
        "train_images": len(train_pixels),
        "codes": fit_and_score(train_codes, data.y_train, test_codes, y_test, seed),
        "pixels": fit_and_score(train_pixels, data.y_train, test_pixels, y_test, seed),
    }
    probe["seconds"] = round(time.perf_counter() - started, 2)
    return {
        "model": saved.title(),
        "weights": str(saved.source.absolute()),
        "checkpoint": saved.checkpoint,
        "epoch": saved.epoch,
        "step": saved.step,
        "n_test": len(x_test),
        "seed": seed,
        "probe": probe,
    }


def format_probe(record: dict) -> str:
    """The probe's record as the lines a person reads (no trailing newline)."""
    probe = record["probe"]
    dataset = DATASET_TITLES.get(record.get("dataset"), record.get("dataset", "?"))
    binarized = record.get("binarize_seed")
    how = "grey levels" if binarized is None else f"binarised once with seed {binarized}"
    lines = [
        record["model"],
        f"  weights      {record['weights']}",
        f"  images       {counted(probe['train_images'], 'training image')} and "
        f"{counted(record['n_test'], 'test image')} of {dataset}, {how}",
        f"  linear probe softmax regression on standardised features, seed {probe['seed']}:",
        f"               {counted(probe['codes']['steps'], 'step')} of Adam, lr {probe['lr']:g}, "
        f"batch {probe['batch_size']}, L2 {probe['l2']:g} ({probe['seconds']:.1f} s)",
        f"    {'':<10} {'features':>8}   {'test accuracy':>14}   {'train accuracy':>14}"
        "   test cross-entropy (nats)",
    ]
    for name in ("codes", "pixels"):
        row = probe[name]
        lines.append(
            f"    {name:<10} {row['features']:>8}   {row['test_accuracy']:>14.2%}"
            f"   {row['train_accuracy']:>14.2%}   {row['test_cross_entropy']:>8.4f}"
        )
    return "\n".join(lines)
