"""Exact resume: a run stopped and continued ends bit-identical to one that never stopped.

Two settings: a VAE on grey levels with a validation split (randomness: the
shuffle and the VAE's noise), and a denoising AE on dynamically binarised
images (randomness also in the data and the corruption).
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from train_support import (
    SMALL,
    assert_same_run,
    isolate,
    one_line,
    only_run,
    run_main,
    tiny_spec,
    write_tiny_mnist,
)

from npvae.checkpoint import load_checkpoint
from npvae.data import sources
from npvae.models import VAE, DenoisingAutoencoder

SETTINGS = {
    "vae": (VAE, ["--model", "vae", "--val-size", "32"]),
    "denoising-ae-dynamic": (
        DenoisingAutoencoder, ["--model", "denoising-ae", "--binarize", "dynamic"]
    ),
}  # fmt: skip


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    folder = tmp_path / "data"
    monkeypatch.setitem(sources.DATASETS, "mnist", tiny_spec(write_tiny_mnist(folder)))
    return folder


def start_args(tiny, out, setting, epochs):
    return ["--dataset", "mnist", "--data-dir", tiny, "--out", out, *SMALL,
            *SETTINGS[setting][1], "--epochs", epochs]  # fmt: skip


def interrupt_training_call(monkeypatch, model_class, call: int) -> None:
    """Send this process SIGINT during the ``call``-th training step (counting from 1).

    The trainer's handler only raises a flag, so the batch in progress
    finishes and the loop stops after it: a deterministic mid-epoch stop
    through the real signal path.
    """
    original = model_class.loss
    calls = 0

    def loss(self, x, rng=None, **options):
        nonlocal calls
        if options.get("grad", True):
            calls += 1
            if calls == call:
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, x, rng, **options)

    monkeypatch.setattr(model_class, "loss", loss)


def straight_run(tiny, tmp_path, setting, capsys):
    out = tmp_path / f"straight-{setting}"
    status, _, stderr = run_main(start_args(tiny, out, setting, 4), capsys)
    assert status == 0, stderr
    return only_run(out)


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS)
def test_resume_after_two_epochs_is_bit_identical(setting, tiny, tmp_path, capsys):
    straight = straight_run(tiny, tmp_path, setting, capsys)
    out = tmp_path / "stopped"
    status, _, stderr = run_main(start_args(tiny, out, setting, 2), capsys)
    assert status == 0, stderr
    run = only_run(out)
    assert load_checkpoint(run / "checkpoints" / "last.npz").epoch == 2
    status, stdout, stderr = run_main(["--resume", run, "--epochs", 4], capsys)
    assert status == 0, stderr
    assert "epoch 3/4" in stdout and "epoch 1/4" not in stdout
    assert_same_run(straight, run)


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS)
def test_resume_after_a_mid_epoch_interrupt_is_bit_identical(
    setting, tiny, tmp_path, capsys, monkeypatch
):
    straight = straight_run(tiny, tmp_path, setting, capsys)
    model_class = SETTINGS[setting][0]
    batches = 4  # 256 images (224 after the validation split) in batches of 64
    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        interrupt_training_call(patch, model_class, call=batches + 2)
        status, _, stderr = run_main(start_args(tiny, out, setting, 4), capsys)
    assert status == 130
    line = one_line(stderr)
    assert line.startswith("stopped by SIGINT at epoch 2, batch 2; checkpoint written")
    run = only_run(out)
    assert f"--resume {run}" in line
    saved = load_checkpoint(run / "checkpoints" / "last.npz")
    assert (saved.epoch, saved.step) == (1, batches + 2)
    assert saved.extra["partial"]["batch"] == 2
    n_train = 224 if setting == "vae" else 256
    assert np.array_equal(np.sort(saved.run_arrays["order"]), np.arange(n_train))
    assert not (run / "results.json").exists()

    status, stdout, stderr = run_main(["--resume", run, "--epochs", 4], capsys)
    assert status == 0, stderr
    assert stdout.count("epoch 2/4") == 1
    assert_same_run(straight, run)


def test_signal_handlers_are_restored_when_the_run_stops(tiny, tmp_path, capsys, monkeypatch):
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with monkeypatch.context() as patch:
        interrupt_training_call(patch, VAE, call=1)
        status, _, _ = run_main(start_args(tiny, tmp_path / "runs", "vae", 2), capsys)
    assert status == 130
    after = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    assert after == before


def test_resume_finds_data_through_npvae_data_again(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA", str(tiny))
    out = tmp_path / "runs"
    argv = ["--dataset", "mnist", "--out", out, *SMALL, "--epochs", 1]  # no --data-dir
    assert run_main(argv, capsys)[0] == 0
    run = only_run(out)
    status, _, stderr = run_main(["--resume", run, "--epochs", 2], capsys)
    assert status == 0, stderr
    assert load_checkpoint(run / "checkpoints" / "last.npz").config["data_dir"] is None
