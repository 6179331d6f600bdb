"""``python -m npvae.tour``: its checks pass on a right step and fail on a wrong one."""

from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST_DIR, NO_MNIST

from npvae import tour, tour_backward, tour_stops
from npvae.data import make_digits
from npvae.distributions import DiagonalGaussian
from npvae.layers import Linear, ReLU
from npvae.models import VAE


def run(capsys, *argv):
    status = tour.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_default_tour_passes_every_check(capsys):
    status, out, err = run(capsys)
    assert status == 0, out
    assert "All 23 checks pass." in out
    assert out.count("  ok\n") == 23 and "FAIL" not in out and err == ""
    stops = [line for line in out.splitlines() if line[:3].rstrip(". ").isdigit()]
    assert len(stops) == 12
    for section in ("backprop.md#linear", "backprop.md#adam", "models.md#vae"):
        assert f"docs/{section}" in out


def test_the_stops_docs_tour_md_shows_are_what_it_prints(capsys):
    text = (Path(__file__).resolve().parents[1] / "docs" / "tour.md").read_text()
    shown = text.split("A stop as it prints")[1].split("```")[1].splitlines()[1:]
    assert len([line for line in shown if line.startswith(("3. ", "7. "))]) == 2
    status, out, _ = run(capsys)
    assert status == 0
    printed = out.splitlines()
    missing = [line for line in shown if line and line not in printed]
    assert missing == [], "docs/tour.md shows lines the tour does not print"
    start = printed.index(shown[0])
    assert printed[start : start + 7] == shown[:7]


STOPS = (
    (tour_stops, "the_batch"),
    (tour_stops, "the_encoder"),
    (tour_stops, "the_reparameterisation"),
    (tour_stops, "the_decoder"),
    (tour_stops, "the_kl"),
    (tour_stops, "the_loss"),
    (tour_backward, "the_output_gradient"),
    (tour_backward, "back_through_the_decoder"),
    (tour_backward, "back_through_the_sampler"),
    (tour_backward, "back_through_the_encoder"),
    (tour_backward, "every_parameter"),
    (tour_backward, "adams_first_step"),
)


def test_walk_is_the_twelve_stops_in_order(monkeypatch):
    called = []

    def counted_stop(module, name):
        real = getattr(module, name)

        def stop(*args):
            called.append(name)
            return real(*args)

        return stop

    for module, name in STOPS:
        monkeypatch.setattr(module, name, counted_stop(module, name))
    x = make_digits(2, 0, 0)[0].reshape(2, -1) / 255.0
    model = VAE(**tour.ARCHITECTURE, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    guide = tour.Guide(write=lambda line: None)
    tour.walk(model, x, rng.standard_normal((1, 2, model.latent_dim)), guide, rng)
    assert called == [name for _, name in STOPS] and guide.stops == 12 and guide.failures == []


@pytest.mark.parametrize(("batch", "seed"), [(1, 3), (64, 7)])
def test_other_batches_and_seeds_pass(capsys, batch, seed):
    # Seed 7 at batch 64 nudges some entries across a ReLU kink: they are set aside.
    status, out, _ = run(capsys, "--batch", str(batch), "--seed", str(seed))
    assert status == 0, out
    assert ("set aside at a kink" in out) == (seed == 7)


def test_the_sections_it_names_exist():
    docs = Path(__file__).resolve().parents[1] / "docs"
    for doc, anchor in (
        ("backprop.md", "## Linear"),
        ("backprop.md", "## Reparameterisation"),
        ("backprop.md", "## Bernoulli log-likelihood"),
        ("backprop.md", "## Gaussian KL"),
        ("backprop.md", "## Adam"),
        ("backprop.md", "## Checking gradients"),
        ("models.md", "## VAE"),
    ):
        assert anchor in (docs / doc).read_text().splitlines()


def test_a_wrong_kl_gradient_fails_its_finite_differences(capsys, monkeypatch):
    right = DiagonalGaussian.kl_grad

    def off_by_a_hair(mu, log_var):
        dmu, dlog_var = right(mu, log_var)
        return dmu * 1.001, dlog_var

    monkeypatch.setattr(DiagonalGaussian, "kl_grad", staticmethod(off_by_a_hair))
    status, out, _ = run(capsys)
    assert status == 1
    failed = [line for line in out.splitlines() if line.endswith("FAIL")]
    assert any("d loss / d mu by finite differences" in line for line in failed), out
    assert "checks FAIL" in out.splitlines()[-1]


def test_a_sampler_with_the_wrong_variance_fails(capsys, monkeypatch):
    def variance_for_sigma(mu, log_var, eps):
        return mu + np.exp(log_var) * eps  # exp(log_var) where exp(log_var / 2) belongs

    monkeypatch.setattr(DiagonalGaussian, "sample", staticmethod(variance_for_sigma))
    status, out, _ = run(capsys)
    assert status == 1
    assert any(
        "z has mean mu and variance exp(log_var)" in line and line.endswith("FAIL")
        for line in out.splitlines()
    ), out


def test_a_kink_is_set_aside_and_a_smooth_entry_is_not():
    layer = ReLU()
    x = np.array([[1.0, 2e-6, -3.0, 0.5]])  # entry 1 is within h of the kink at 0
    f = lambda: float(np.sum(layer.forward(x) ** 2))  # noqa: E731
    kinks = lambda: [layer._out > 0]  # noqa: E731
    _, entries, numeric, set_aside = tour._differences(f, x, np.random.default_rng(0), kinks)
    assert set_aside == 1
    assert sorted(int(entry[1]) for entry in entries) == [0, 2, 3]
    np.testing.assert_allclose(numeric[np.argsort([e[1] for e in entries])], [2.0, 0.0, 1.0])


def test_a_loss_of_many_nats_loosens_the_bar_by_its_rounding_only():
    lines = []
    guide = tour.Guide(write=lines.append)
    layer = Linear(3, 2, rng=np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).normal(size=(4, 3))
    w = layer.params["W"]

    def f():
        return 1e6 + float(np.sum(layer.forward(x)))

    analytic = np.tile(x.sum(axis=0)[:, None], (1, 2))
    guide.gradient("W", analytic, f, w, np.random.default_rng(2), lambda: [])
    assert guide.failures == [], lines
    bar = float(lines[-1].split("(bar ")[1].split(")")[0])
    rounding = np.finfo(np.float64).eps * 1e6 / (tour.STEP * np.abs(analytic).max())
    assert bar == pytest.approx(10 * rounding, rel=1e-2) and bar > tour.TOLERANCE
    guide.gradient("W", analytic * 1.001, f, w, np.random.default_rng(2), lambda: [])
    assert guide.failures == ["d loss / d W by finite differences, h = 1e-05"]


def test_pause_waits_before_every_stop_but_the_first_until_input_ends():
    calls = []

    def wait():
        calls.append(1)
        return len(calls) < 3  # input ends at the third stop that waits

    guide = tour.Guide(write=lambda line: None, wait=wait)
    for _ in range(7):
        guide.stop("title", "formula", "code", "doc")
    assert len(calls) == 3 and guide.stops == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "0"], "--batch must be 1 to 256, got 0"),
        (["--batch", "100000"], "--batch must be 1 to 256, got 100000"),
        (["--seed", "-1"], "--seed must be 0 or more"),
        (["--seed", "one"], "--seed must be a whole number"),
        (["--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["--dataset", "mnist", "--data-dir", "/nonexistent/npvae"], "dataset mnist not found"),
    ],
)
def test_a_bad_flag_is_one_line_and_status_2(capsys, argv, message):
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


@pytest.mark.skipif(MNIST_DIR is None, reason=NO_MNIST)
def test_on_mnist(capsys):
    status, out, _ = run(capsys, "--dataset", "mnist", "--data-dir", str(MNIST_DIR))
    assert status == 0, out
    assert "on 8 images of MNIST" in out


def test_python_m_npvae_lists_every_command_and_each_exists(capsys):
    import importlib
    import re

    from npvae.__main__ import main as package_main

    assert package_main([]) == 0
    listed = re.findall(r"python -m (npvae\.\w+)", capsys.readouterr().out)
    assert "npvae.tour" in listed and len(listed) == 5
    for name in listed:  # a package (evaluate, figures) runs its __main__, a module itself
        module = importlib.import_module(name)
        if hasattr(module, "__path__"):
            module = importlib.import_module(f"{name}.__main__")
        assert callable(module.main), name
