"""The checker itself: it must pass right gradients and, above all, fail wrong ones."""

import numpy as np

from npvae.gradcheck import (
    TOLERANCE,
    check_gradients,
    check_layer,
    numerical_gradient,
    rel_error,
)
from npvae.gradcheck.__main__ import BREAK_VARIABLE, main
from npvae.layers import Sigmoid, Tanh


def test_numerical_gradient_of_a_known_function():
    x = np.array([0.3, -1.2, 2.0])
    grad = numerical_gradient(lambda: float(np.sum(np.sin(x) * x)), x)
    np.testing.assert_allclose(grad, np.cos(x) * x + np.sin(x), rtol=1e-9)
    np.testing.assert_array_equal(x, [0.3, -1.2, 2.0])  # restored exactly


def test_rel_error_scale():
    assert rel_error(np.ones(3), np.ones(3)) == 0.0
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert abs(rel_error(np.array([1.0]), np.array([-1.0])) - 1.0) < 1e-12


class WrongSigmoid(Sigmoid):
    """A classic mistake: forgets the (1 - s) factor."""

    def backward(self, dout):
        return dout * self._out


class OffByAHair(Tanh):
    """A gradient wrong by one part in 10,000: still far above the bar."""

    def backward(self, dout):
        return super().backward(dout) * (1 + 1e-4)


def test_checker_fails_a_wrong_gradient():
    x = np.random.default_rng(0).normal(size=(4, 5))
    assert check_layer(WrongSigmoid(), x)["x"] > 1e-2
    assert check_layer(OffByAHair(), x)["x"] > 10 * TOLERANCE
    assert check_layer(Tanh(), x)["x"] < TOLERANCE


def test_checker_fails_with_a_step_far_too_coarse():
    x = np.random.default_rng(1).normal(size=(3, 3))
    assert check_layer(Tanh(), x, h=0.5)["x"] > 1e-3


def test_check_gradients_on_named_arrays_and_subsets():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 4)), rng.normal(size=4)

    def loss():
        return float(np.sum(np.tanh(a @ b)))

    t = np.tanh(a @ b)
    analytic = {"a": np.outer(1 - t**2, b), "b": a.T @ (1 - t**2)}
    errors = check_gradients(loss, {"a": a, "b": b}, analytic)
    assert max(errors.values()) < TOLERANCE
    errors = check_gradients(loss, {"a": a}, {"a": analytic["a"] * 1.01}, most=6)
    assert errors["a"] > 1e-3


def test_cli_table_passes_every_rule(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    for name in [
        "Linear",
        "ELU",
        "gaussian_kl_grad",
        "IWAE k=5",
        "IWAE2",
        "ContractiveAutoencoder",
    ]:
        assert name in out
    assert out.strip().endswith("rules pass")


def test_cli_exits_non_zero_on_a_broken_rule(monkeypatch, capsys):
    monkeypatch.setenv(BREAK_VARIABLE, "IWAE k=5")
    assert main(["--only", "IWAE"]) == 1
    out = capsys.readouterr().out
    assert "IWAE k=1" in out and "1 of 4 rules fail" in out  # and the two-layer IWAE2's
    monkeypatch.setenv(BREAK_VARIABLE, "Tanh (tanh)")
    assert main(["--only", "tanh"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_only_with_no_match(capsys):
    assert main(["--only", "no such rule"]) == 2
