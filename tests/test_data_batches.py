"""Batches (scaling, shuffling, binarisation, reproducibility) and the validation split."""

from __future__ import annotations

import numpy as np
import pytest

from npvae.data.batches import Batches
from npvae.data.datasets import Dataset, split_validation
from npvae.errors import ConfigError, DataError


@pytest.fixture
def grey() -> np.ndarray:
    """(50, 784) uint8 images with every grey level present."""
    return np.random.default_rng(0).integers(0, 256, (50, 784), dtype=np.uint8)


def epoch(batches: Batches) -> tuple[np.ndarray, np.ndarray]:
    """One epoch as (indices (N,), rows (N, D)), copied out of the reused buffer."""
    pairs = [(indices.copy(), batch.copy()) for indices, batch in batches.iter_with_indices()]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def test_none_scales_uint8_to_unit_interval_per_batch(grey):
    batches = Batches(grey, 16, np.random.default_rng(1))
    sizes = [len(batch) for batch in batches]
    assert sizes == [16, 16, 16, 2] and len(batches) == 4
    indices, rows = epoch(batches)
    assert sorted(indices.tolist()) == list(range(50))  # every row once
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, grey[indices].astype(np.float32) / np.float32(255))
    assert rows.max() == 1.0 and rows.min() == 0.0


def test_float64_and_float_input(grey):
    as_float = grey.astype(np.float64) / 255
    batches = Batches(as_float, 7, np.random.default_rng(1), dtype=np.float64, shuffle=False)
    indices, rows = epoch(batches)
    assert rows.dtype == np.float64
    np.testing.assert_array_equal(indices, np.arange(50))
    np.testing.assert_array_equal(rows, as_float)


def test_drop_last(grey):
    batches = Batches(grey, 16, np.random.default_rng(1), drop_last=True)
    assert [len(batch) for batch in batches] == [16, 16, 16] and len(batches) == 3


def test_batches_reuse_one_buffer(grey):
    batches = iter(Batches(grey, 10, np.random.default_rng(1)))
    first, second = next(batches), next(batches)
    assert np.shares_memory(first, second)


def test_shuffle_reproducible_from_seed_and_new_each_epoch(grey):
    order_a = epoch(Batches(grey, 8, np.random.default_rng(42)))[0]
    order_b = epoch(Batches(grey, 8, np.random.default_rng(42)))[0]
    np.testing.assert_array_equal(order_a, order_b)
    other_seed = epoch(Batches(grey, 8, np.random.default_rng(43)))[0]
    assert not np.array_equal(order_a, other_seed)
    batches = Batches(grey, 8, np.random.default_rng(42))
    first_epoch, second_epoch = epoch(batches)[0], epoch(batches)[0]
    assert not np.array_equal(first_epoch, second_epoch)
    in_order = epoch(Batches(grey, 8, np.random.default_rng(42), shuffle=False))[0]
    np.testing.assert_array_equal(in_order, np.arange(50))


def by_example(indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows put back in example order."""
    return rows[np.argsort(indices)]


def test_static_binarisation_is_fixed_across_epochs_and_runs(grey):
    batches = Batches(grey, 8, np.random.default_rng(5), binarize="static", static_seed=3)
    first = by_example(*epoch(batches))
    second = by_example(*epoch(batches))
    np.testing.assert_array_equal(first, second)
    assert set(np.unique(first).tolist()) == {0.0, 1.0}
    # Another run, another shuffle seed: the same binary images.
    other_run = Batches(grey, 8, np.random.default_rng(99), binarize="static", static_seed=3)
    np.testing.assert_array_equal(by_example(*epoch(other_run)), first)
    other_draw = Batches(grey, 8, np.random.default_rng(5), binarize="static", static_seed=4)
    assert not np.array_equal(by_example(*epoch(other_draw)), first)
    # Black stays black, white stays white; the mean follows the grey levels.
    assert np.all(first[grey == 0] == 0) and np.all(first[grey == 255] == 1)
    assert abs(first.mean() - grey.mean() / 255) < 0.01


def test_dynamic_binarisation_differs_each_epoch_and_matches_intensity():
    levels = np.array([0, 32, 128, 200, 255], dtype=np.uint8)
    x = np.tile(levels, (40, 20))  # (40, 100): each column one grey level
    batches = Batches(x, 16, np.random.default_rng(7), binarize="dynamic")
    first = by_example(*epoch(batches))
    second = by_example(*epoch(batches))
    assert set(np.unique(first).tolist()) == {0.0, 1.0}
    assert not np.array_equal(first, second)
    n_epochs = 60
    total = first + second
    for _ in range(n_epochs - 2):
        total += by_example(*epoch(batches))
    frequency = total / n_epochs  # (40, 100)
    for column, level in enumerate(levels):
        p = level / 255
        observed = frequency[:, column :: len(levels)].mean()
        n_draws = 40 * 20 * n_epochs
        assert abs(observed - p) <= 5 * np.sqrt(p * (1 - p) / n_draws) + 1e-12, (level, observed)


def test_dynamic_binarisation_resumes_from_generator_state(grey):
    rng = np.random.default_rng(11)
    batches = Batches(grey, 8, rng, binarize="dynamic")
    epoch(batches)
    saved = rng.bit_generator.state
    expected = epoch(batches)
    rng.bit_generator.state = saved
    resumed = epoch(batches)
    np.testing.assert_array_equal(resumed[0], expected[0])
    np.testing.assert_array_equal(resumed[1], expected[1])
    # A fresh run restored to the saved state agrees too.
    fresh_rng = np.random.default_rng(0)
    fresh_rng.bit_generator.state = saved
    fresh = epoch(Batches(grey, 8, fresh_rng, binarize="dynamic"))
    np.testing.assert_array_equal(fresh[1], expected[1])


def test_resume_in_the_middle_of_an_epoch(grey):
    rng = np.random.default_rng(12)
    batches = Batches(grey, 8, rng, binarize="dynamic")
    order = batches.draw_order()
    saved_order, saved_state, uninterrupted = None, None, []
    for index, x in batches.iter_from(order):
        uninterrupted.append(x.copy())
        if index == 2:  # "stop" after batch 2: what a checkpoint would hold
            saved_order, saved_state = order.copy(), rng.bit_generator.state
    resumed_rng = np.random.default_rng(0)
    resumed_rng.bit_generator.state = saved_state
    resumed = Batches(grey, 8, resumed_rng, binarize="dynamic")
    rest = [(index, x.copy()) for index, x in resumed.iter_from(saved_order, 3)]
    assert [index for index, _ in rest] == [3, 4, 5, 6]
    for (_, x), expected in zip(rest, uninterrupted[3:], strict=True):
        np.testing.assert_array_equal(x, expected)


def test_iter_from_rejects_an_order_of_other_data(grey):
    batches = Batches(grey, 8, np.random.default_rng(0))
    with pytest.raises(DataError, match="order of these 50 examples"):
        next(batches.iter_from(np.arange(40)))
    with pytest.raises(DataError, match="order of these 50 examples"):
        next(batches.iter_from(np.arange(50) + 1))
    with pytest.raises(DataError, match="outside the 7 batches"):
        next(batches.iter_from(np.arange(50), 8))
    assert list(batches.iter_from(np.arange(50), 7)) == []  # resumed right at the epoch's end


@pytest.mark.parametrize(
    ("x", "pattern"),
    [
        (np.zeros((2, 28, 28), np.uint8), "2-D"),
        (np.zeros(784, np.uint8), "2-D"),
        (np.zeros((0, 784), np.uint8), "empty"),
        (np.zeros((4, 784), np.int32), "uint8 or float"),
        (np.full((4, 784), np.nan, np.float32), "NaN"),
        (np.full((4, 784), np.inf), "NaN or infinity"),
        ([[0, 1]], "NumPy array"),
    ],
)
def test_bad_images_are_data_errors(x, pattern):
    with pytest.raises(DataError, match=pattern):
        Batches(x, 2, np.random.default_rng(0))


def test_floats_outside_unit_interval_cannot_be_binarised():
    x = np.full((4, 10), 2.0)
    Batches(x, 2, np.random.default_rng(0))  # fine without binarising (e.g. a Gaussian decoder)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        Batches(x, 2, np.random.default_rng(0), binarize="dynamic")


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"batch_size": 0}, "at least 1"),
        ({"batch_size": 2.5}, "integer"),
        ({"binarize": "sometimes"}, "sometimes"),
        ({"dtype": np.int64}, "float32 or float64"),
        ({"batch_size": 100, "drop_last": True}, "no batch"),
    ],
)
def test_bad_options_are_config_errors(grey, options, pattern):
    arguments = {"batch_size": 10} | options
    batch_size = arguments.pop("batch_size")
    with pytest.raises(ConfigError, match=pattern):
        Batches(grey, batch_size, np.random.default_rng(0), **arguments)


# --------------------------------------------------------------------------
# The validation split.


@pytest.fixture
def numbered() -> Dataset:
    """100 training images whose first two pixels spell their index; label = index % 10."""
    index = np.arange(100)
    x_train = np.zeros((100, 784), np.uint8)
    x_train[:, 0], x_train[:, 1] = index // 256, index % 256
    return Dataset(
        name="numbered",
        x_train=x_train,
        y_train=(index % 10).astype(np.uint8),
        x_test=np.zeros((5, 784), np.uint8),
        y_test=np.zeros(5, np.uint8),
        source="test",
    )


def row_ids(x: np.ndarray) -> np.ndarray:
    return x[:, 0].astype(int) * 256 + x[:, 1]


def test_validation_split_is_disjoint_and_complete(numbered):
    split = split_validation(numbered, 20, seed=3)
    train_ids, val_ids = row_ids(split.x_train), row_ids(split.x_val)
    assert len(val_ids) == 20 and len(train_ids) == 80
    assert set(train_ids).isdisjoint(val_ids)
    assert sorted([*train_ids, *val_ids]) == list(range(100))
    np.testing.assert_array_equal(split.y_val, val_ids % 10)  # labels follow their images
    np.testing.assert_array_equal(split.y_train, train_ids % 10)
    assert np.all(np.diff(train_ids) > 0)  # original order kept; Batches shuffles
    assert split.x_test is numbered.x_test


def test_validation_split_reproducible_from_seed(numbered):
    first = row_ids(split_validation(numbered, 20, seed=3).x_val)
    again = row_ids(split_validation(numbered, 20, seed=3).x_val)
    other = row_ids(split_validation(numbered, 20, seed=4).x_val)
    np.testing.assert_array_equal(first, again)
    assert set(first) != set(other)


def test_validation_split_sizes(numbered):
    assert split_validation(numbered, 0, seed=0).x_val.shape == (0, 784)
    for bad in (-1, 100, 101):
        with pytest.raises(ConfigError, match="validation size"):
            split_validation(numbered, bad, seed=0)
