"""Issue 25: every mistake a user can make at a CLI ends in one line, status 2.

Each case runs a command (its ``main(argv)`` in this process, or ``python -m`` in a
subprocess where the entry point itself is what is tested) and checks the status,
that stderr is exactly one line with no traceback, and what the line says: what was
wrong and what to do.  The wording cases check the counts and names the CLIs print.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from train_support import SMALL, SMALL_AE, isolate, one_line, only_run, run_main, use_tiny_mnist

from npvae import __version__, tour
from npvae.app.flags import parse_args, read_toml
from npvae.app.plots import codes_caption
from npvae.data import Dataset, load_dataset
from npvae.errors import ConfigError
from npvae.evaluate.__main__ import main as evaluate_main
from npvae.gradcheck import __main__ as gradcheck

README = Path(__file__).resolve().parents[1] / "README.md"
TOUR_DOC = Path(__file__).resolve().parents[1] / "docs" / "tour.md"


def run(main, argv, capsys) -> tuple[int, str, str]:
    """``main(argv)`` of a CLI in this process: ``(status, stdout, stderr)``."""
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def refused(main, argv, capsys) -> str:
    """Run a command that must be refused; return its one line on stderr."""
    status, out, err = run(main, argv, capsys)
    assert status == 2, (out, err)
    line = one_line(err)
    assert line.startswith("error: ")
    return line


# ----- item 12: the tour's --data-dir and its data hints ---------------------------------


@pytest.mark.parametrize("dataset", [[], ["--dataset", "digits"]], ids=["default", "digits"])
def test_the_tour_refuses_a_data_dir_on_the_embedded_digits(dataset, tmp_path, capsys):
    line = refused(tour.main, [*dataset, "--data-dir", tmp_path], capsys)
    assert "--data-dir has no effect on the embedded digits" in line
    assert "--dataset mnist or fashion-mnist" in line and "leave --data-dir out" in line


def test_the_tour_without_mnist_says_where_it_looked_and_suggests_no_download(
    monkeypatch, tmp_path, capsys
):
    isolate(monkeypatch, tmp_path)
    line = refused(tour.main, ["--dataset", "mnist"], capsys)
    assert line.startswith("error: dataset mnist not found (looked in ")
    assert str(tmp_path / "empty-cache" / "npvae" / "mnist") in line
    assert "pass --data-dir DIR holding its four files" in line
    assert "allow the download" not in line  # the tour cannot download


def test_the_tour_with_a_data_dir_of_mnist_files_uses_them(monkeypatch, tmp_path, capsys):
    folder = use_tiny_mnist(monkeypatch, tmp_path)
    # Only the refusal's first stop is needed: the tour runs whole elsewhere (test_tour.py).
    monkeypatch.setattr(tour, "walk", lambda *args: None)
    status, out, err = run(tour.main, ["--dataset", "mnist", "--data-dir", folder], capsys)
    assert status == 0 and err == ""
    assert "on 8 images of MNIST" in out.splitlines()[0]


# ----- item 15: a negative number after a flag is the flag's value -----------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "-1e-3"], "--lr must be more than 0, got -0.001"),
        (["--lr", "-1E-3"], "--lr must be more than 0, got -0.001"),
        (["--lr", "-.5"], "--lr must be more than 0, got -0.5"),
        (["--lr", "-inf"], "--lr must be a finite number more than 0, got -inf"),
        (["--adam-eps", "-1e-8"], "--adam-eps must be more than 0, got -1e-08"),
        (["--beta", "-2.5e0"], "--beta must be at least 0, got -2.5"),
        (["--clip", "-1e+2"], "--clip must be at least 0, got -100.0"),
        (["--epochs", "-3"], "--epochs must be at least 1, got -3"),
        (["--batch-size", "-1e2"], "--batch-size must be a whole number, got '-1e2'"),
        (["--seed", "-1"], "--seed must be at least 0, got -1"),
        (["--model", "iwae", "--k", "-5"], "--k must be at least 1, got -5"),
        (
            ["--model", "denoising-ae", "--noise-level", "-1e-1"],
            "--noise-level must be at least 0, got -0.1",
        ),
    ],
)
def test_train_reads_a_negative_number_as_the_flags_value(argv, message, tmp_path, capsys):
    from npvae.train import main as train_main

    line = refused(train_main, [*argv, "--out", tmp_path / "runs"], capsys)
    assert line == f"error: {message}"
    assert not (tmp_path / "runs").exists()


def test_a_flag_before_another_flag_still_lacks_its_value(tmp_path, capsys):
    from npvae.train import main as train_main

    line = refused(train_main, ["--lr", "--epochs", "2"], capsys)
    assert "--lr: expected one argument" in line


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (tour.main, ["--seed", "-1e3"], "--seed must be a whole number, got '-1e3'"),
        (tour.main, ["--batch", "-2"], "--batch must be 1 to 256, got -2"),
        (gradcheck.main, ["--seed", "-1e2"], "--seed must be a whole number, got '-1e2'"),
        (gradcheck.main, ["--seed", "-1"], "--seed must be 0 or more, got -1"),
        (evaluate_main, ["RUN", "--k", "-1e3"], "--k must be a whole number, got '-1e3'"),
        (evaluate_main, ["RUN", "--n-test", "-7"], "--n-test must be 0 or more, got -7"),
    ],
    ids=["tour-seed", "tour-batch", "gradcheck-seed-e", "gradcheck-seed", "evaluate-k", "n-test"],
)
def test_every_cli_reads_a_negative_number_as_the_flags_value(main, argv, message, capsys):
    line = refused(main, argv, capsys)
    assert line.startswith(f"error: {message} (see python -m npvae.")
    assert "expected one argument" not in line and "argument --" not in line


# ----- item 16: $NPVAE_DATA that names no folder ------------------------------------------


def test_npvae_data_pointing_nowhere_is_an_error_not_a_fallback(monkeypatch, tmp_path, capsys):
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("NPVAE_DATA", str(tmp_path / "nowhere"))
    out = tmp_path / "runs"
    status, stdout, stderr = run_main([*SMALL, "--epochs", "1", "--out", out], capsys)
    assert status == 2
    line = one_line(stderr)
    assert line == (
        f"error: NPVAE_DATA={tmp_path / 'nowhere'} is not a folder; point it at the folder "
        "holding the datasets (or one dataset's files), or unset it"
    )
    assert "embedded digits" not in stdout + stderr and not out.exists()


def test_npvae_data_naming_a_file_is_an_error_for_the_tour(monkeypatch, tmp_path, capsys):
    isolate(monkeypatch, tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("NPVAE_DATA", str(tmp_path / "a-file"))
    line = refused(tour.main, ["--dataset", "mnist"], capsys)
    assert f"NPVAE_DATA={tmp_path / 'a-file'} is not a folder" in line


def test_npvae_data_is_not_consulted_when_data_dir_is_given(monkeypatch, tmp_path):
    folder = use_tiny_mnist(monkeypatch, tmp_path)
    monkeypatch.setenv("NPVAE_DATA", str(tmp_path / "nowhere"))
    assert load_dataset("mnist", folder, download=False).source == f"{folder} (data_dir)"
    with pytest.raises(ConfigError, match="NPVAE_DATA=.*nowhere is not a folder"):
        load_dataset("mnist", download=False)


def test_python_m_npvae_train_with_npvae_data_nowhere(monkeypatch, tmp_path):
    """The issue's own command, through the real entry point."""
    env = {**isolate(monkeypatch, tmp_path), "NPVAE_DATA": "/nonexistent/npvae-data"}
    done = subprocess.run(
        [sys.executable, "-m", "npvae.train", "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert line.startswith("error: NPVAE_DATA=/nonexistent/npvae-data is not a folder")
    assert not (tmp_path / "runs").exists()


# ----- item 17: --version on every CLI -------------------------------------------------


@pytest.mark.parametrize(
    "module",
    ["npvae.tour", "npvae.gradcheck", "npvae.train", "npvae.evaluate", "npvae.figures", "npvae"],
)
def test_version(module):
    done = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"npvae {__version__}\n", "")


# ----- item 18: wording ---------------------------------------------------------------


def test_salt_and_pepper_is_the_documented_name_and_salt_pepper_stays(tmp_path, capsys):
    assert "salt-and-pepper" in README.read_text()
    from npvae.app.flags import make_parser

    assert "salt-and-pepper" in make_parser().format_help()
    config, _, _ = parse_args(["--model", "denoising-ae", "--noise", "salt-and-pepper"])
    assert config.noise == "salt-pepper"  # what models, config.json and old runs hold
    assert parse_args(["--model", "denoising-ae", "--noise", "salt-pepper"])[0] == config
    toml = tmp_path / "settings.toml"
    toml.write_text('model = "denoising-ae"\nnoise = "salt-and-pepper"\n')
    assert read_toml(toml)["noise"] == "salt-pepper"


def test_a_noise_that_is_neither_names_both(capsys):
    from npvae.train import main as train_main

    line = refused(train_main, ["--model", "denoising-ae", "--noise", "salt"], capsys)
    assert line == (
        "error: --noise 'salt' is not one of: mask, gaussian, salt-pepper (or salt-and-pepper)"
    )
    # The alias meets the same rules as the name: the noise level of a salt-and-pepper is <= 1.
    argv = ["--model", "denoising-ae", "--noise", "salt-and-pepper", "--noise-level", "1.5"]
    line = refused(train_main, argv, capsys)
    assert line == "error: --noise-level must be in [0, 1] for --noise salt-pepper, got 1.5"


def test_a_run_with_salt_and_pepper_records_salt_pepper(monkeypatch, tmp_path, capsys):
    use_tiny_mnist(monkeypatch, tmp_path)
    out = tmp_path / "runs"
    argv = [*SMALL_AE, "--model", "denoising-ae", "--noise", "salt-and-pepper", "--epochs", "1"]
    status, _, stderr = run_main([*argv, "--out", out], capsys)
    assert status == 0, stderr
    assert json.loads((only_run(out) / "config.json").read_text())["noise"] == "salt-pepper"


def test_the_tour_of_one_image_says_image(capsys, monkeypatch):
    status, out, err = run(tour.main, ["--batch", "1", "--seed", "3"], capsys)
    assert status == 0, out
    assert "on 1 image of the embedded digits" in out.splitlines()[0]
    assert "x: 1 image of 784 pixels" in out
    assert "worst of 1 image " in out
    assert "images" not in out.replace("test images", "")


def test_gradcheck_of_one_rule_says_rule(capsys):
    status, out, _ = run(gradcheck.main, ["--only", "Sigmoid (sigmoid)"], capsys)
    rows = [line for line in out.splitlines() if line.endswith("ok")]
    assert status == 0 and len(rows) == 1, out
    assert out.rstrip().endswith("\n1 rule passes")


def test_gradcheck_with_no_rule_is_one_line(capsys):
    line = refused(gradcheck.main, ["--only", "no-such-rule"], capsys)
    assert "no rule's name contains 'no-such-rule'" in line and "without --only" in line


def test_a_data_summary_of_one_test_image():
    import numpy as np

    images = np.zeros((1, 784), dtype=np.uint8)
    labels = np.zeros(1, dtype=np.uint8)
    one = Dataset("fake", images, labels, images, labels, "made here")
    assert one.summary() == "fake: 1 train, 0 validation, 1 test image of 28x28 (made here)"


@pytest.mark.parametrize(
    ("kind", "owner"),
    [
        ("vae", "a VAE's: posterior means"),
        ("iwae", "an IWAE's: posterior means"),
        ("iwae2", "a two-layer IWAE's: posterior means of z1"),
        ("ae", "an autoencoder's: the encoder's outputs"),
    ],
)
def test_the_latent_plot_names_the_model_it_shows(kind, owner):
    assert codes_caption(500, kind).startswith(f"latent codes of 500 test images ({owner}")
    assert codes_caption(1, kind).startswith("latent codes of 1 test image (")


def test_the_latent_plot_of_an_iwae_run_names_the_iwae(monkeypatch, tmp_path):
    import numpy as np

    from npvae.app import plots
    from npvae.models import IWAE

    titles = []
    monkeypatch.setattr(
        plots, "save_figure", lambda fig, path: titles.append(fig.axes[0].get_title())
    )
    model = IWAE(input_dim=16, hidden=[8], latent_dim=2, k=3)
    x = np.random.default_rng(0).random((20, 16)).astype(np.float32)
    plots.make_figures(model, x, None, tmp_path, np.random.default_rng(0))
    latent = [title for title in titles if title.startswith("latent codes")]
    assert latent == ["latent codes of 20 test images (an IWAE's: posterior means)"]


def test_the_stops_docs_tour_md_shows_are_what_the_tour_prints(capsys):
    status, out, _ = run(tour.main, [], capsys)
    assert status == 0
    shown = TOUR_DOC.read_text().split("A stop as it prints")[1].split("```")[1]
    lines = [line for line in shown.splitlines() if line]
    assert len(lines) == 22  # stops 3, 7 and 15, each whole
    missing = [line for line in lines if line not in out.splitlines()]
    assert missing == []
