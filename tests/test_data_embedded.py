"""The embedded digits: deterministic, balanced, MNIST-like, distinct classes that vary."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from npvae.data import datasets, embedded, glyphs
from npvae.data.embedded import make_digits
from npvae.errors import ConfigError


@pytest.fixture(scope="module")
def digits():
    """1,000 train and 500 test images (the test-suite size; the real set is 20,000 + 4,000)."""
    return make_digits(1000, 500, seed=7)


def test_shapes_dtypes_and_balanced_labels(digits):
    x_train, y_train, x_test, y_test = digits
    assert x_train.shape == (1000, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (500, 28, 28) and x_test.dtype == np.uint8
    assert y_train.dtype == np.uint8 and y_test.dtype == np.uint8
    assert np.bincount(y_train, minlength=10).tolist() == [100] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [50] * 10
    assert x_train.max() == 255 and x_train.min() == 0
    # Labels are shuffled, not in runs of one digit.
    assert (np.diff(y_train.astype(int)) != 0).mean() > 0.8


def test_uneven_sizes_are_balanced_within_one():
    _, y_train, _, y_test = make_digits(23, 0, seed=1)
    counts = np.bincount(y_train, minlength=10)
    assert counts.sum() == 23 and counts.max() - counts.min() <= 1
    assert y_test.shape == (0,)


def test_same_seed_same_images_other_seed_other_images(digits):
    again = make_digits(1000, 500, seed=7)
    for first, second in zip(digits, again, strict=True):
        np.testing.assert_array_equal(first, second)
    other_x, other_y, _, _ = make_digits(1000, 0, seed=8)
    assert not np.array_equal(other_x, digits[0])


def test_train_and_test_are_different_draws(digits):
    x_train, _, x_test, _ = digits
    train_rows = {row.tobytes() for row in x_train}
    assert not any(row.tobytes() in train_rows for row in x_test)
    assert len(train_rows) == len(x_train)  # no duplicates within train either


def test_normalised_like_mnist(digits):
    """Centre of mass at the field's centre; the longer side about 20 pixels."""
    images = digits[0].astype(np.float64)
    mass = images.sum((1, 2))
    coords = np.arange(28)
    com_row = (images.sum(2) @ coords) / mass
    com_col = (images.sum(1) @ coords) / mass
    assert abs(com_row.mean() - 14.0) < 0.3 and abs(com_col.mean() - 14.0) < 0.3
    assert np.abs(com_row - 14.0).max() < 2.5 and np.abs(com_col - 14.0).max() < 2.5
    ink = images > 0
    rows, cols = ink.any(2), ink.any(1)
    height = 28 - rows[:, ::-1].argmax(1) - rows.argmax(1)
    width = 28 - cols[:, ::-1].argmax(1) - cols.argmax(1)
    longer = np.maximum(height, width)
    assert 18 <= np.median(longer) <= 21
    assert ((longer >= 15) & (longer <= 24)).mean() > 0.95
    # The outer ring is nearly always blank, as in MNIST's 20-in-28 layout (1.4% touch it).
    ring = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1)
    assert (ring.max(1) > 0).mean() < 0.05
    # Ink coverage near MNIST's (13% of the pixel mass).
    assert 0.09 < images.mean() / 255 < 0.19


def flat(images):
    return images.reshape(len(images), -1).astype(np.float32) / 255


def test_classes_are_distinct(digits):
    """A 1-nearest-neighbour classifier (92% on MNIST at these sizes) must do well."""
    x_train, y_train, x_test, y_test = (flat(digits[0]), digits[1], flat(digits[2]), digits[3])
    distances = (x_test**2).sum(1)[:, None] - 2 * x_test @ x_train.T + (x_train**2).sum(1)[None]
    accuracy = (y_train[distances.argmin(1)] == y_test).mean()
    assert accuracy > 0.85


def test_real_variation_within_each_class(digits):
    """Mean distance to the class mean is about MNIST's (6.2 in [0, 1] pixel units)."""
    x_train, y_train = flat(digits[0]), digits[1]
    for digit in range(10):
        members = x_train[y_train == digit]
        spread = np.linalg.norm(members - members.mean(0), axis=1)
        assert 4.0 < spread.mean() < 8.5, f"digit {digit}: spread {spread.mean():.2f}"
        assert spread.min() > 1.0  # nobody sits on the class mean: no copies of one template


def test_templates_cover_every_digit_and_are_cached():
    templates = glyphs.templates()
    assert glyphs.templates() is templates
    for digit in range(10):
        of_digit = templates.digits == digit
        assert (of_digit & templates.is_pen).sum() >= 2 * glyphs.PEN_DRAWINGS
        assert (of_digit & ~templates.is_pen).sum() >= 20  # most of the 22 fonts
    assert templates.images.shape[1:] == (glyphs.TEMPLATE_SIDE, glyphs.TEMPLATE_SIDE)
    # Zero border: warps that look outside a template read background.
    assert templates.images[:, 0].max() < 1e-3 and templates.images[:, :, -1].max() < 1e-3


def test_vectorised_fast_enough():
    glyphs.templates()
    start = time.perf_counter()
    make_digits(2000, 0, seed=0)
    # About 0.2 s here; a per-pixel Python loop would take minutes.
    assert time.perf_counter() - start < 4.0


def test_the_chunk_size_is_not_part_of_what_a_seed_means(monkeypatch):
    # A block draws all its random numbers first, so working its pixels in chunks of
    # any size gives the same images, bit for bit, as working them all at once.
    chunked = make_digits(600, 0, seed=11)[0]
    monkeypatch.setattr(embedded, "_CHUNK", 10**9)
    whole = make_digits(600, 0, seed=11)[0]
    monkeypatch.setattr(embedded, "_CHUNK", 7)
    small = make_digits(600, 0, seed=11)[0]
    assert np.array_equal(chunked, whole) and np.array_equal(small, whole)


def test_a_block_of_images_needs_little_memory():
    glyphs.templates()
    tracemalloc.start()
    try:
        make_digits(embedded._BLOCK, 0, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 25 MB measured (1.6 MB of it the images); working all 2,048 at once takes 136 MB.
    assert peak < 50e6


def test_negative_size_is_a_config_error():
    with pytest.raises(ConfigError, match="n_test"):
        make_digits(10, -1, seed=0)


def test_load_dataset_digits(monkeypatch):
    monkeypatch.setattr(datasets, "DIGITS_N_TRAIN", 100)
    monkeypatch.setattr(datasets, "DIGITS_N_TEST", 30)
    data = datasets.load_dataset("Digits", data_dir="/nonexistent", download=False)
    assert data.name == "digits"
    assert data.x_train.shape == (100, 784) and data.x_test.shape == (30, 784)
    assert data.x_train.dtype == np.uint8 and data.y_train.shape == (100,)
    assert "embedded" in data.source and str(datasets.DIGITS_SEED) in data.source
    again = datasets.load_dataset("digits")
    np.testing.assert_array_equal(again.x_train, data.x_train)
