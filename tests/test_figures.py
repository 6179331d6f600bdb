"""``python -m npvae.figures``: every subcommand on a tiny trained run, user errors, and compare.

Two runs are trained once for the module on the tiny MNIST of
``train_support`` (256 training images): a 784-32-2 VAE and a denoising AE.
Every figure is read back as an image and checked to be of a sensible size
and not blank.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from train_support import SMALL, SMALL_AE, isolate, one_line, only_run, tiny_spec, write_tiny_mnist

from npvae.app import runs
from npvae.data import make_digits, sources
from npvae.figures import compare, stochastic
from npvae.figures.__main__ import main
from npvae.models import VAE
from npvae.train import main as train_main

SUBCOMMANDS = ["recon", "samples", "latent", "manifold", "interpolate", "kl", "curves", "encode"]


def assert_real_png(path: Path, min_side: int = 150) -> np.ndarray:
    """``path`` reads back as an image at least ``min_side`` pixels each way, not blank."""
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_side, image.shape
    assert image[..., :3].std() > 0.01, "blank image"
    rgb = (image[..., :3] * 255).astype(np.uint32)
    colours = rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]
    assert len(np.unique(colours)) > 2, "fewer than three colours"
    return image


def no_leftovers(folder: Path) -> list[str]:
    """Files in ``folder`` (temporary ``.name.*`` ones included)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """``(data folder, VAE run folder, denoising AE run folder)``, trained once."""
    root = tmp_path_factory.mktemp("figures")
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, root)
        data = root / "data"
        patch.setitem(sources.DATASETS, "mnist", tiny_spec(write_tiny_mnist(data)))
        common = ["--dataset", "mnist", "--data-dir", str(data), "--epochs", "2"]
        assert train_main([*common, *SMALL, "--out", str(root / "vae")]) == 0
        dae = [*common, *SMALL_AE, "--out", str(root / "dae"), "--model", "denoising-ae"]
        assert train_main(dae) == 0
        yield data, only_run(root / "vae"), only_run(root / "dae")


def run_cli(argv, capsys) -> tuple[int, str, str]:
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ----- every subcommand ------------------------------------------------------------------


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_each_subcommand_draws_a_real_png_from_a_run(command, tiny_runs, tmp_path, capsys):
    _, vae_run, _ = tiny_runs
    out = tmp_path / f"{command}.png"
    status, stdout, stderr = run_cli([command, vae_run, "--out", out], capsys)
    assert status == 0, stderr
    assert f"wrote {out}" in stdout
    assert_real_png(out)
    assert no_leftovers(tmp_path) == [out.name]
    if command == "encode":  # and it says so: five draws of z, each different
        line = next(text for text in stdout.splitlines() if text.startswith("stochastic enc"))
        draws = line.split("z = ")[1]
        assert draws.count("(") == 5 and len(set(draws.split(") ("))) == 5, line


def test_the_latent_map_encodes_its_images_once_and_twice_only_for_the_kl_projection(
    tiny_runs, tmp_path, capsys, monkeypatch
):
    _, vae_run, _ = tiny_runs
    encoded = []
    original = VAE.encode

    def counting(self, x):
        encoded.append(len(x))
        return original(self, x)

    monkeypatch.setattr(VAE, "encode", counting)
    rows = {}
    for projection in ("pca", "kl"):
        encoded.clear()
        out = tmp_path / f"latent-{projection}.png"
        status, _, stderr = run_cli(
            ["latent", vae_run, "--projection", projection, "--out", out], capsys
        )
        assert status == 0, stderr
        rows[projection] = sum(encoded)
    assert rows["pca"] > 0 and rows["kl"] == 2 * rows["pca"]


def test_default_path_is_the_run_folders_figures_folder(tiny_runs, capsys):
    _, vae_run, _ = tiny_runs
    status, _, stderr = run_cli(["kl", vae_run, "--checkpoint", "last"], capsys)
    assert status == 0, stderr
    assert_real_png(vae_run / "figures" / "kl.png")
    # Training's own figures at the top of the folder are not replaced.
    assert not (vae_run / "kl.png").exists()


def test_denoising_ae_recon_and_what_it_cannot_draw(tiny_runs, tmp_path, capsys):
    _, _, dae_run = tiny_runs
    status, _, stderr = run_cli(["recon", dae_run, "--out", tmp_path / "r.png"], capsys)
    assert status == 0, stderr
    assert_real_png(tmp_path / "r.png")
    for command in ("kl", "samples", "manifold", "encode"):
        status, _, stderr = run_cli([command, dae_run, "--out", tmp_path / "x.png"], capsys)
        assert status == 2 and "VAE or IWAE" in one_line(stderr), (command, stderr)
    status, _, stderr = run_cli(["latent", dae_run, "--projection", "kl"], capsys)
    assert status == 2 and "has no KL" in one_line(stderr)
    assert no_leftovers(tmp_path) == ["r.png"]


def test_a_two_layer_iwae_draws_what_it_has_and_refuses_the_rest(tiny_runs, tmp_path, capsys):
    """recon, samples, latent (PCA), interpolate and curves; not the closed-form KL's figures."""
    data, _, _ = tiny_runs
    common = ["--dataset", "mnist", "--data-dir", data, "--epochs", "1", "--out", tmp_path]
    layers = ["--model", "iwae2", "--k", "2", "--hidden2", "8", "--latent2", "3"]
    status = train_main([str(arg) for arg in [*common, *SMALL, *layers, "--no-figures"]])
    assert status == 0
    run = only_run(tmp_path)
    for command in ("recon", "samples", "latent", "interpolate", "curves"):
        status, _, stderr = run_cli([command, run, "--out", tmp_path / f"{command}.png"], capsys)
        assert status == 0, (command, stderr)
        assert_real_png(tmp_path / f"{command}.png")
    refused = [["kl"], ["encode"], ["manifold"], ["latent", "--projection", "kl"]]
    for argv in refused:
        status, _, stderr = run_cli([*argv[:1], run, *argv[1:]], capsys)
        assert status == 2 and "one stochastic layer" in one_line(stderr), (argv, stderr)


def test_a_bare_model_file_with_its_dataset(tiny_runs, tmp_path, capsys):
    data, vae_run, _ = tiny_runs
    model_file = runs.open_saved(vae_run).model.save(tmp_path / "model.npz")
    argv = ["latent", model_file, "--dataset", "mnist", "--data-dir", data]
    status, stdout, stderr = run_cli(argv, capsys)
    assert status == 0, stderr
    assert_real_png(tmp_path / "model-latent.png")
    status, _, stderr = run_cli(["curves", model_file], capsys)
    assert status == 2 and "needs a run folder" in one_line(stderr)


# ----- user errors: one line, exit 2, no file -----------------------------------------------


def test_missing_damaged_or_misused_runs_are_one_line_and_exit_2(tiny_runs, tmp_path, capsys):
    _, vae_run, _ = tiny_runs
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes((vae_run / "checkpoints" / "best.npz").read_bytes()[:300])
    out = tmp_path / "out"
    cases = [
        (["recon", tmp_path / "nowhere", "--out", out / "a.png"], "no such run"),
        (["recon", damaged, "--out", out / "a.png"], "damaged.npz"),
        (["recon", tmp_path, "--out", out / "a.png"], "not a run folder"),
        (["latent", vae_run, "--projection", "tsne"], "invalid choice"),
        (["recon", vae_run, "--checkpoint", "first"], "--checkpoint"),
        (["recon", vae_run, "--dataset", "digits"], "bare model file"),
        (["encode", vae_run, "--index", "100000", "--out", out / "a.png"], "--index"),
        (["wobble", vae_run], "invalid choice"),
        ([], "required"),
    ]
    for argv, expected in cases:
        status, _, stderr = run_cli(argv, capsys)
        assert status == 2, (argv, stderr)
        assert expected in one_line(stderr), (argv, stderr)
    assert no_leftovers(out) == []
    assert not (vae_run / "figures" / "reconstructions.png").exists()


def test_python_m_npvae_figures_runs_and_reports_a_missing_run_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "npvae.figures", "kl", str(tmp_path / "no-run")],
        capture_output=True,
        text=True,
    )
    # It failed once under heavy load and never again: say what came out if it does.
    assert done.returncode == 2 and done.stdout == "", (done.returncode, done.stdout, done.stderr)
    assert "no such run folder or file" in one_line(done.stderr)


def test_a_damaged_metrics_file_is_one_line(tiny_runs, tmp_path, capsys):
    _, vae_run, _ = tiny_runs
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "checkpoints").mkdir()
    for name in ("config.json", "checkpoints/best.npz"):
        (copy / name).write_bytes((vae_run / name).read_bytes())
    (copy / "metrics.csv").write_text("epoch,train_loss\n1,not a number\n")
    status, _, stderr = run_cli(["curves", copy], capsys)
    assert status == 2 and "metrics.csv is missing or damaged" in one_line(stderr)
    assert not (copy / "figures").exists()


# ----- the stochastic encoding ---------------------------------------------------------------


def test_encode_many_draws_from_the_posterior():
    model = VAE(input_dim=16, hidden=[8], latent_dim=3, seed=0)
    x = np.random.default_rng(0).random((5, 16)).astype(np.float32)
    encoding = stochastic.encode_many(model, x, None, 2, 4000, np.random.default_rng(1))
    mu, log_var = (row[2] for row in model.encode(x))
    np.testing.assert_allclose(encoding.mu, mu)
    assert encoding.z.shape == (4000, 3)
    # A different z each time, spread as q(z|x) says: sd exp(log_var / 2).
    assert len(np.unique(encoding.z[:, 0])) == 4000
    np.testing.assert_allclose(encoding.z.std(axis=0), np.exp(log_var / 2), rtol=0.05)
    np.testing.assert_allclose(encoding.z.mean(axis=0), mu, atol=0.1 * np.exp(log_var / 2).max())
    assert "encoded 5 times" in stochastic.describe(encoding)


# ----- compare -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three():
    """The three objectives at a small scale: 512 embedded digits, 3 epochs, 784-32-2."""
    x_train, _, x_test, y_test = make_digits(512, 200, seed=3)
    x_test = runs.prepare_images(x_test.reshape(200, -1), "none", 0, np.float32)
    trained = compare.train_three(
        x_train.reshape(512, -1), x_test, epochs=3, hidden=(32,), lr=3e-3, batch_size=64
    )
    return trained, y_test


def test_compare_the_three_latent_spaces_differ_as_the_seed_says(three):
    (recon_only, kl_only, both), _ = three
    assert recon_only.model.config["beta"] == 0 and kl_only.model.config["recon_weight"] == 0
    # KL only: every code collapses onto the prior's mean.
    assert kl_only.spread < 0.1 and kl_only.kl < 0.05
    # Reconstruction only: the codes spread far beyond the prior, and pay for it in KL.
    assert recon_only.spread > 3 and recon_only.kl > 10 * both.kl
    # Both: near the prior (its spread is about sqrt(2) in 2-d), and it reconstructs.
    assert 0.5 < both.spread < recon_only.spread
    assert both.recon < kl_only.recon - 100


def test_compare_cli_on_the_tiny_data(tiny_runs, tmp_path, capsys, monkeypatch):
    data, _, _ = tiny_runs
    monkeypatch.setattr(compare, "train_three", _small_train_three(compare.train_three))
    argv = ["compare", "--dataset", "mnist", "--data-dir", data, "--epochs", "1",
            "--out", tmp_path / "c.png"]  # fmt: skip
    status, stdout, stderr = run_cli(argv, capsys)
    assert status == 0, stderr
    image = assert_real_png(tmp_path / "c.png", min_side=400)
    assert image.shape[1] > 1.8 * image.shape[0]  # three panels side by side
    assert_real_png(tmp_path / "stochastic.png")
    assert no_leftovers(tmp_path) == ["c.png", "stochastic.png"]
    for name, _ in compare.OBJECTIVES:
        assert f"training: {name}" in stdout  # stderr is no terminal: a line per model
    assert "stochastic encoding: test image 0" in stdout
    status, _, stderr = run_cli(["compare", "--epochs", "0"], capsys)
    assert status == 2 and "--epochs" in one_line(stderr)


def _small_train_three(train_three):
    """``train_three`` with a small hidden layer, for speed; the rest as the CLI calls it."""

    def small(*args, **kwargs):
        return train_three(*args, **{**kwargs, "hidden": (16,)})

    return small


def test_the_parser_is_thin():
    """Every run subcommand has a drawing function, and the other way round."""
    from npvae.figures import __main__ as cli
    from npvae.figures import saved

    assert set(cli.HELP) == set(saved.DRAWERS) == set(saved.FILE_NAMES)
    assert isinstance(cli.make_parser(), argparse.ArgumentParser)
