"""``python -m npvae.train``: flags, the run folder, user errors and the MNIST fallback.

Runs use a tiny MNIST (256 train / 64 test images, see ``train_support``) and
a 784-32-2 VAE, so each takes well under a second once numba's cache is warm.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_support import (
    LOSS_COLUMNS,
    SMALL,
    SMALL_AE,
    isolate,
    one_line,
    only_run,
    read_metrics,
    run_main,
    use_tiny_mnist,
)

import npvae
from npvae.app.checkpoint import load_checkpoint
from npvae.app.config import Config
from npvae.app.runfolder import METRICS
from npvae.data import datasets, sources

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A folder holding the tiny MNIST, which ``load_dataset("mnist")`` accepts here."""
    return use_tiny_mnist(monkeypatch, tmp_path)


def tiny_args(tiny, out, *extra) -> list[str]:
    return ["--dataset", "mnist", "--data-dir", tiny, "--out", out, *SMALL, *extra]


# ----- --help ----------------------------------------------------------------------------


def test_help_documents_every_flag_with_its_default():
    done = subprocess.run(
        [sys.executable, "-m", "npvae.train", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    options = " ".join(done.stdout.split("options:", 1)[1].split())  # one line, single spaces
    for flag in ("--config FILE", "--resume RUN_DIR"):
        assert flag in options
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        expected = "none" if field.default is None else str(field.default)
        expected = field.metadata.get("default", expected)  # a default said in words
        found = re.search(re.escape(flag) + r"[ ,].*?\(default: ([^)]*)\)", options)
        assert found is not None, f"{flag} is not in --help"
        assert found.group(1) == expected, (flag, found.group(1), expected)


# ----- the run folder --------------------------------------------------------------------


@pytest.mark.slow
def test_run_folder_holds_config_metrics_checkpoints_results_and_figures(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = tiny_args(tiny, out, "--epochs", "2", "--val-size", "32", "--figures")
    status, stdout, stderr = run_main(argv, capsys)
    assert status == 0, stderr
    run = only_run(out)
    assert f"run folder: {run}" in stdout
    assert re.fullmatch(
        r"done: test loss [\d.]+ \(reconstruction [\d.]+ \+ KL [\d.]+\), "
        r"log p\(x\) ≈ -[\d.]+ ± [\d.]+ \(\d+ samples, \d+ images\), \d+ active units",
        stdout.strip().splitlines()[-1],
    )

    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "mnist" and config["dataset_used"] == "mnist"
    assert str(tiny) in config["data_source"]
    assert (config["n_train"], config["n_val"], config["n_test"]) == (224, 32, 64)
    assert config["hidden"] == [32] and config["latent"] == 2 and config["epochs"] == 2
    import numba

    assert config["versions"] == {
        "npvae": npvae.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
    }
    assert set(f.name for f in dataclasses.fields(Config)) <= set(config)

    rows = read_metrics(run)
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    assert list(rows[0]) == METRICS
    for row in rows:
        for key in ("train_loss", "train_recon", "train_kl", "val_loss", "test_loss", "seconds"):
            assert np.isfinite(float(row[key])), (key, row)
        assert float(row["examples_per_second"]) > 0
        assert float(row["train_loss"]) == pytest.approx(
            float(row["train_recon"]) + float(row["train_kl"]), rel=1e-6
        )

    last = load_checkpoint(run / "checkpoints" / "last.npz")
    best = load_checkpoint(run / "checkpoints" / "best.npz")
    assert last.epoch == 2 and 1 <= best.epoch <= 2
    assert last.step == 2 * 4  # 224 images in batches of 64: 4 steps per epoch
    assert last.config["latent"] == 2

    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 2
    assert np.isfinite(results["test"]["loss"])
    assert results["log_likelihood"]["k"] == 10
    assert results["log_likelihood"]["images"] == 32
    assert np.isfinite(results["log_likelihood"]["nats"])
    assert 0 <= results["active_units"]["count"] <= 2
    assert len(results["active_units"]["variances"]) == 2
    assert results["evaluation"]["weights"] == str(run / "checkpoints" / "last.npz")

    figures = [
        "reconstructions.png", "samples.png", "latent.png",
        "interpolations.png", "curves.png", "manifold.png",
    ]  # fmt: skip
    for name in figures:
        assert (run / "figures" / name).read_bytes()[:8] == PNG_SIGNATURE, name
    assert not list(run.glob("*.png"))  # every figure in one place
    hidden = [p.name for p in run.rglob(".*")]
    assert hidden == [".lock"]  # no temporary files; the lock stays, released


def test_no_figures_writes_none_and_an_autoencoder_has_no_kl(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["--dataset", "mnist", "--data-dir", tiny, "--out", out, *SMALL_AE, "--model", "ae"]
    status, _, stderr = run_main([*argv, "--epochs", "1"], capsys)
    assert status == 0, stderr
    run = only_run(out)
    assert not list(run.rglob("*.png"))
    row = read_metrics(run)[0]
    assert row["train_kl"] == "" and row["test_kl"] == "" and row["val_loss"] == ""
    results = json.loads((run / "results.json").read_text())
    assert "log_likelihood" not in results  # only for the generative models


def test_metrics_has_the_columns_a_reader_needs():
    needed = ["epoch", "train_loss", "train_recon", "train_kl", "val_loss", "test_loss",
              "seconds", "examples_per_second"]  # fmt: skip
    assert set(needed) <= set(METRICS)
    assert set(LOSS_COLUMNS) == set(METRICS) - {"seconds", "examples_per_second"}


# ----- user errors: one line, "error:", status 2 -----------------------------------------


def _truncate_a_file(folder):
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])


BAD_FLAGS = [
    (["--epochs", "-1"], "--epochs"),
    (["--latent", "0"], "--latent"),
    (["--k", "0"], "--k"),
    (["--lr", "0"], "--lr"),
    (["--model", "gan"], "gan"),
    (["--activation", "swish"], "swish"),
    (["--batch-size", "abc"], "--batch-size"),
    (["--dataset", "cifar10"], "cifar10"),
    (["--latent-size", "3"], "--latent-size"),
]


@pytest.mark.parametrize(("argv", "named"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_is_one_error_line_and_status_2(argv, named, tmp_path, monkeypatch, capsys):
    isolate(monkeypatch, tmp_path)
    status, _, stderr = run_main([*argv, "--out", tmp_path / "runs"], capsys)
    line = one_line(stderr)
    assert status == 2
    assert line.startswith("error: ") and named in line
    assert not (tmp_path / "runs").exists()


def test_a_real_process_prints_the_error_without_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "npvae.train", "--activation", "swish", "--out", tmp_path],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert one_line(done.stderr).startswith("error: --activation 'swish' is not one of")
    assert done.stdout == ""


def test_missing_data_dir_is_an_error(tmp_path, monkeypatch, capsys):
    """A --data-dir that does not exist is a mistake, not a reason to look elsewhere."""
    isolate(monkeypatch, tmp_path)  # the real MNIST checksums, no network, empty cache
    argv = ["--dataset", "mnist", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "runs"]
    status, _, stderr = run_main(argv, capsys)
    line = one_line(stderr)
    assert status == 2
    assert line.startswith("error: --data-dir ") and "nowhere is not a folder" in line


def test_truncated_data_file_is_an_error(tiny, tmp_path, capsys):
    _truncate_a_file(tiny)
    status, _, stderr = run_main(tiny_args(tiny, tmp_path / "runs"), capsys)
    line = one_line(stderr)
    assert status == 2
    assert line.startswith("error: ") and "train-images-idx3-ubyte.gz" in line


def test_unwritable_out_is_an_error(tiny, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    status, _, stderr = run_main(tiny_args(tiny, blocker / "runs"), capsys)
    line = one_line(stderr)
    assert status == 2
    assert line.startswith("error: cannot create a run folder") and "--out" in line


def test_resume_of_a_folder_that_is_not_a_run_is_an_error(tmp_path, capsys):
    (tmp_path / "not-a-run").mkdir()
    status, _, stderr = run_main(["--resume", tmp_path / "not-a-run"], capsys)
    line = one_line(stderr)
    assert status == 2
    assert line.startswith("error: ") and "not a run folder" in line


def test_resume_may_change_only_what_leaves_the_model_and_data(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    assert run_main(tiny_args(tiny, out, "--epochs", "1"), capsys)[0] == 0
    status, _, stderr = run_main(["--resume", only_run(out), "--latent", "3"], capsys)
    assert status == 2
    assert one_line(stderr).startswith(
        "error: --resume keeps the saved model and data, so --latent cannot be given with it"
    )


def test_damaged_checkpoint_on_resume_is_an_error(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    assert run_main(tiny_args(tiny, out, "--epochs", "1"), capsys)[0] == 0
    last = only_run(out) / "checkpoints" / "last.npz"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    status, _, stderr = run_main(["--resume", only_run(out), "--epochs", "2"], capsys)
    line = one_line(stderr)
    assert status == 2
    assert line.startswith("error: ") and "last.npz" in line and "damaged" in line


@pytest.mark.parametrize(
    ("text", "named"),
    [("latent = 3\nlatnet = 4\n", "unknown key 'latnet'"), ("latent = = 3\n", "not valid TOML")],
    ids=["unknown-key", "invalid-toml"],
)
def test_bad_config_file_is_an_error(text, named, tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text(text)
    status, _, stderr = run_main(["--config", path, "--out", tmp_path / "runs"], capsys)
    line = one_line(stderr)
    assert status == 2
    assert line.startswith(f"error: {path}") and named in line


def test_config_file_settings_reach_the_run(tiny, tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('model = "ae"\nbatch-size = 32\nlatent = 3\nepochs = 5\n')
    out = tmp_path / "runs"
    argv = ["--dataset", "mnist", "--data-dir", tiny, "--out", out, *SMALL_AE]
    status, _, stderr = run_main([*argv, "--config", path, "--epochs", 1], capsys)
    assert status == 0, stderr
    config = json.loads((only_run(out) / "config.json").read_text())
    assert (config["model"], config["batch_size"], config["epochs"]) == ("ae", 64, 1)
    assert config["latent"] == 2  # the flags in SMALL_AE win over the file too
    assert config["ll_samples"] is None and config["k"] is None  # no effect on an ae


# ----- no MNIST: the embedded digits -----------------------------------------------------


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No MNIST anywhere and no network; the embedded digits made small to keep this fast."""
    isolate(monkeypatch, tmp_path)
    monkeypatch.setattr(datasets, "DIGITS_N_TRAIN", 256)
    monkeypatch.setattr(datasets, "DIGITS_N_TEST", 64)


def test_without_mnist_the_default_trains_on_the_embedded_digits(offline, tmp_path, capsys):
    out = tmp_path / "runs"
    status, stdout, stderr = run_main(["--out", out, *SMALL, "--epochs", "1"], capsys)
    assert status == 0, stderr
    assert "MNIST is not available" not in stdout  # a warning: stderr, not the run's lines
    notices = [line for line in stderr.splitlines() if line.startswith("MNIST is not available")]
    assert len(notices) == 1
    assert "training on the embedded digits" in notices[0]
    config = json.loads((only_run(out) / "config.json").read_text())
    assert config["dataset"] == "auto" and config["dataset_used"] == "digits"
    assert config["n_train"] == 256


@pytest.mark.parametrize(
    "failure, reason",
    [
        ("... and the download failed: http://m/a.gz: connection refused", "the download failed"),
        ("... download failed: http://m/a.gz: checksum mismatch (...)", "failed their checksums"),
    ],
    ids=["offline", "corrupt-download"],
)
def test_the_fallback_line_says_why_mnist_is_missing(failure, reason, monkeypatch, capsys):
    from npvae.app import runs

    real = runs.load_dataset

    def load_dataset(name, data_dir=None):
        if name == "mnist":
            raise runs.DataError(failure)
        return real(name, data_dir)

    monkeypatch.setattr(runs, "load_dataset", load_dataset)
    monkeypatch.setattr(datasets, "DIGITS_N_TRAIN", 64)
    monkeypatch.setattr(datasets, "DIGITS_N_TEST", 16)
    data = runs.load_data(runs.Config(val_size=0))
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert captured.out == ""
    assert line.startswith("MNIST is not available (no local copy, and ") and reason in line
    assert data.name == "digits"


def test_without_mnist_an_explicit_mnist_is_an_error(offline, tmp_path, capsys):
    argv = ["--dataset", "mnist", "--out", tmp_path / "runs", *SMALL, "--epochs", "1"]
    status, stdout, stderr = run_main(argv, capsys)
    line = one_line(stderr)
    assert status == 2
    assert line.startswith("error: dataset mnist not found") and "download failed" in line
    assert "embedded digits" not in stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_python_m_npvae_train_falls_back_to_the_digits_end_to_end(tmp_path, monkeypatch):
    """The real entry point, the real embedded set (20 000 images), one quick epoch."""
    if (sources.SYSTEM_DATA_DIR / "mnist").exists():
        pytest.skip(f"{sources.SYSTEM_DATA_DIR / 'mnist'} exists, so MNIST is available here")
    env = isolate(monkeypatch, tmp_path)
    out = tmp_path / "runs"
    argv = ["--out", out, *SMALL, "--batch-size", "500", "--epochs", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "npvae.train", *map(str, argv)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "MNIST is not available" not in done.stdout
    notices = done.stderr.splitlines()
    assert len(notices) == 1 and notices[0].startswith("MNIST is not available")
    assert "embedded digits" in notices[0]
    run = only_run(out)
    config = json.loads((run / "config.json").read_text())
    assert config["dataset_used"] == "digits" and config["n_train"] == 20_000
    assert load_checkpoint(run / "checkpoints" / "last.npz").step == 40
    assert (run / "results.json").is_file()


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist (apt-get install)"
)
def test_fashion_mnist_comes_from_debians_folder():
    """--dataset fashion-mnist finds Debian's package, checks it, and loads all of it."""
    from npvae.app.config import Config
    from npvae.app.runs import load_data

    data = load_data(Config(dataset="fashion-mnist", val_size=1000))
    assert data.name == "fashion-mnist" and "system" in data.source
    assert data.x_train.shape == (59_000, 784) and data.x_val.shape == (1000, 784)
    assert data.x_test.shape == (10_000, 784) and data.x_train.dtype == np.uint8
    # Fashion-MNIST is not MNIST: its mean ink differs by far more than noise.
    assert data.x_test.mean() > 60
