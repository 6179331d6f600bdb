"""The linear probe (npvae/probe.py): its gradient, proven, and what its numbers mean."""

from __future__ import annotations

import numpy as np
import pytest
from gradient_support import assert_proven, errors_with_one_gradient_broken, gradient_errors

from npvae.data import make_digits
from npvae.errors import ConfigError
from npvae.gradcheck import TOLERANCE
from npvae.gradcheck.__main__ import BREAK_VARIABLE, main
from npvae.probe import LinearProbe, column_moments

PROBE_ROW = "LinearProbe (softmax cross-entropy, L2)"


def random_probe(rng, n_features=5, n_classes=4, l2=0.1) -> LinearProbe:
    """A probe away from zero: random weights, standardisation and penalty."""
    probe = LinearProbe(n_features, n_classes, l2=l2)
    for value in probe.params.values():
        value[...] = rng.normal(size=value.shape)
    probe.mean, probe.std = rng.normal(size=n_features), rng.uniform(0.5, 2.0, size=n_features)
    return probe


# ----- the gradient, against centred differences in float64 -------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_the_gradient_is_proven(seed, l2):
    rng = np.random.default_rng(seed)
    probe = random_probe(rng, l2=l2)
    x, labels = rng.normal(scale=2.0, size=(7, 5)), rng.integers(4, size=7)
    x[0] += 40.0  # a row with large logits: the stable softmax's gradient, too

    def loss_of(grad):
        return {"loss": probe.loss(x, labels, grad=grad)}

    errors, _, _ = gradient_errors(probe, loss_of)
    assert_proven(errors)
    for name in probe.params:  # and the check catches one part in 10^4 in either array
        assert errors_with_one_gradient_broken(probe, loss_of, name)[name] > 10 * TOLERANCE


def test_the_gradcheck_table_has_the_probe_and_can_fail(monkeypatch, capsys):
    assert main(["--only", "LinearProbe"]) == 0
    out = capsys.readouterr().out
    assert PROBE_ROW in out and "1 rule passes" in out
    monkeypatch.setenv(BREAK_VARIABLE, PROBE_ROW)
    assert main(["--only", "LinearProbe"]) == 1
    assert "FAIL" in capsys.readouterr().out


# ----- what the numbers mean ---------------------------------------------------------------


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_at_zero_weights_the_loss_is_log_c_per_example(n_classes):
    rng = np.random.default_rng(n_classes)
    probe = LinearProbe(6, n_classes, l2=0.5)  # the penalty is 0 at W = 0
    probe.mean, probe.std = rng.normal(size=6), rng.uniform(0.5, 2.0, size=6)
    x, labels = rng.normal(size=(9, 6)), rng.integers(n_classes, size=9)
    assert probe.loss(x, labels) == pytest.approx(np.log(n_classes), rel=1e-12)
    np.testing.assert_allclose(probe.probabilities(x), 1.0 / n_classes, rtol=1e-12)


def test_probabilities_sum_to_one_even_for_huge_logits():
    rng = np.random.default_rng(3)
    probe = random_probe(rng, n_features=4, n_classes=5)
    x = rng.normal(size=(8, 4)) * np.array([[1.0], [1e3], [1e5], [-1e5], [1], [1], [1], [1]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow
        probabilities = probe.probabilities(x)
    assert np.all(np.isfinite(probabilities)) and np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(probe.predict(x), np.argmax(probabilities, axis=1))


def test_it_separates_linearly_separable_data():
    """Three classes cut out of the plane by a random linear rule, with a margin."""
    rng = np.random.default_rng(4)
    W, b = rng.normal(size=(2, 3)), rng.normal(size=3)
    x = rng.uniform(-5.0, 5.0, size=(4000, 2)) * np.array([1.0, 100.0])  # unequal scales
    scores = np.sort((x / np.array([1.0, 100.0])) @ W + b, axis=1)
    keep = scores[:, -1] - scores[:, -2] > 0.3  # a margin, so the classes are separable
    x, labels = x[keep][:1000], np.argmax((x[keep][:1000] / [1.0, 100.0]) @ W + b, axis=1)
    assert np.bincount(labels, minlength=3).min() > 50  # three real classes
    probe = LinearProbe(2, 3, l2=0.0).fit(x, labels, steps=2400, lr=0.05, seed=0)
    assert probe.accuracy(x, labels) == 1.0


def test_raw_pixels_of_the_embedded_digits_are_read_well():
    """Measured: 93.65% of 2,000 test digits (seeds 1, 2: 93.3%, 93.35%); chance is 10%,
    and the same probe fitted to shuffled labels gets 7.8%."""
    x_train, y_train, x_test, y_test = make_digits(5000, 2000, seed=11)
    pixels_train, pixels_test = x_train.reshape(5000, 784), x_test.reshape(2000, 784)
    probe = LinearProbe(784, 10).fit(pixels_train, y_train, steps=400, seed=0)
    assert probe.accuracy(pixels_test, y_test) > 0.90


def test_a_fit_is_deterministic_given_its_seed():
    rng = np.random.default_rng(5)
    x, labels = rng.normal(size=(300, 4)), rng.integers(3, size=300)
    fits = [LinearProbe(4, 3).fit(x, labels, steps=7, seed=seed) for seed in (7, 7, 8)]
    for name in fits[0].params:
        np.testing.assert_array_equal(fits[0].params[name], fits[1].params[name])
    assert not np.array_equal(fits[0].params["W"], fits[2].params["W"])


def test_standardisation_uses_the_training_sets_moments():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, size=(10_000, 3), dtype=np.uint8)
    x[:, 2] = 17  # a constant column is centred, not divided by 0
    mean, std = column_moments(x, rows=999)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=0), rtol=1e-12, atol=1e-12)
    probe = LinearProbe(3, 2).fit(x, (x[:, 0] > 128).astype(int), steps=5, seed=0)
    np.testing.assert_array_equal(probe.std[2], 1.0)
    assert np.all(np.isfinite(probe.standardise(x)))


def test_bad_inputs_are_one_clear_error():
    probe = LinearProbe(3, 2)
    x = np.zeros((4, 3))
    with pytest.raises(ConfigError, match="labels must be in 0..1"):
        probe.fit(x, np.array([0, 1, 2, 0]))
    with pytest.raises(ConfigError, match=r"needs x \(N, 3\)"):
        probe.fit(np.zeros((4, 5)), np.zeros(4, dtype=int))
    with pytest.raises(ConfigError, match="2 or more classes"):
        LinearProbe(3, 1)


def test_cross_entropy_is_the_loss_without_its_penalty_and_fit_takes_its_steps(monkeypatch):
    rng = np.random.default_rng(7)
    probe = random_probe(rng, l2=0.3)
    x, labels = rng.normal(size=(9, 5)), rng.integers(4, size=9)
    penalty = 0.15 * np.sum(probe.params["W"] ** 2)
    assert probe.cross_entropy(x, labels) == pytest.approx(probe.loss(x, labels) - penalty)
    calls = []
    monkeypatch.setattr(LinearProbe, "loss", lambda self, *args: calls.append(len(args[0])))
    LinearProbe(5, 4).fit(rng.normal(size=(300, 5)), rng.integers(4, size=300), steps=7)
    assert calls == [128, 128, 44, 128, 128, 44, 128]  # three passes, the third cut short
