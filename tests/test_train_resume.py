"""Exact resume: a run stopped and continued ends bit-identical to one that never stopped.

Two settings: a VAE on grey levels with a validation split (randomness: the
shuffle and the VAE's noise), and a denoising AE on dynamically binarised
images (randomness also in the data and the corruption).
"""

from __future__ import annotations

import json
import os
import signal
import time
from types import SimpleNamespace

import numpy as np
import pytest
from train_support import (
    SMALL,
    SMALL_AE,
    assert_same_run,
    isolate,
    one_line,
    only_run,
    read_metrics,
    run_main,
    tiny_spec,
    write_tiny_mnist,
)

from npvae import estimators, train
from npvae.app.checkpoint import load_checkpoint
from npvae.data import datasets, sources
from npvae.models import VAE, DenoisingAutoencoder

SETTINGS = {
    "vae": (VAE, [*SMALL, "--model", "vae", "--val-size", "32"]),
    "denoising-ae-dynamic": (
        DenoisingAutoencoder, [*SMALL_AE, "--model", "denoising-ae", "--binarize", "dynamic"]
    ),
}  # fmt: skip

#: The runs compared bit for bit fix their thread count: with ``auto`` each invocation
#: decides from the load it sees, and a product split between 2 threads rounds differently
#: from one on 1 (npvae/app/_threads.py).  A CI run once saw the straight run and the resumed
#: one decide differently, and differ in encoder.0.W.
THREADS = ["--threads", "1"]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    folder = tmp_path / "data"
    monkeypatch.setitem(sources.DATASETS, "mnist", tiny_spec(write_tiny_mnist(folder)))
    return folder


def start_args(tiny, out, setting, epochs):
    return ["--dataset", "mnist", "--data-dir", tiny, "--out", out,
            *SETTINGS[setting][1], *THREADS, "--epochs", epochs]  # fmt: skip


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


def test_examples_per_second_counts_only_this_processs_share_of_a_resumed_epoch(
    tiny, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        interrupt_training_call(patch, VAE, call=4 + 2)  # epoch 2, after its 2nd batch
        assert run_main(start_args(tiny, out, "vae", 3), capsys)[0] == 130
    run = only_run(out)
    ticks = iter(range(1000))  # every epoch takes exactly one "second"
    clock = SimpleNamespace(perf_counter=lambda: float(next(ticks)), strftime=time.strftime)
    monkeypatch.setattr(train, "time", clock)
    status, _, stderr = run_main(["--resume", run], capsys)
    assert status == 0, stderr
    rows = read_metrics(run)
    # 224 training images in batches of 64, 64, 64, 32: the resumed process trained the
    # last two batches of epoch 2 and all of epoch 3.
    assert [(row["seconds"], row["examples_per_second"]) for row in rows[1:]] == [
        ("1.0", "96.0"),
        ("1.0", "224.0"),
    ]


def test_a_signal_during_the_last_evaluation_stops_before_the_results(
    tiny, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "runs"
    original, calls = estimators.evaluate_loss, []

    def evaluate_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # epoch 2's test loss (no validation split here)
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(estimators, "evaluate_loss", evaluate_loss)
        status, _, stderr = run_main(start_args(tiny, out, "denoising-ae-dynamic", 2), capsys)
    assert status == 130
    run = only_run(out)
    assert one_line(stderr) == (
        "stopped by SIGINT at the end of epoch 2; checkpoint written; "
        f"continue with: python -m npvae.train --resume {run}"
    )
    saved = load_checkpoint(run / "checkpoints" / "last.npz")
    assert (saved.epoch, saved.step) == (2, 8) and not saved.extra.get("partial")
    assert not (run / "results.json").exists()

    status, stdout, stderr = run_main(["--resume", run], capsys)
    assert status == 0, stderr
    assert "epoch 3" not in stdout and (run / "results.json").is_file()
    assert [row["epoch"] for row in read_metrics(run)] == ["1", "2"]


def test_resume_with_fewer_or_as_many_epochs_as_done(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    assert run_main(start_args(tiny, out, "vae", 2), capsys)[0] == 0
    run = only_run(out)
    files = {name: (run / name).read_bytes() for name in ("config.json", "metrics.csv")}

    status, stdout, stderr = run_main(["--resume", run, "--epochs", 1], capsys)
    assert status == 2 and stdout == ""
    assert one_line(stderr) == (
        f"error: {run} already has 2 epochs; to train on, give --epochs more than 2"
    )
    status, stdout, stderr = run_main(["--resume", run, "--epochs", 2], capsys)
    assert status == 0 and stderr == ""
    assert stdout.startswith(f"nothing to do: {run} already has its 2 epochs")
    assert {name: (run / name).read_bytes() for name in files} == files


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[:-20],  # cut inside the last row
        lambda text: "\x00\x89garbage\n",
        lambda text: "".join(text.splitlines(keepends=True)[:2]),  # epoch 2's row is gone
    ],
    ids=["truncated", "garbage", "missing-row"],
)
def test_damaged_metrics_on_resume_is_an_error(damage, tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    assert run_main(start_args(tiny, out, "vae", 2), capsys)[0] == 0
    metrics = only_run(out) / "metrics.csv"
    metrics.write_text(damage(metrics.read_text()))
    damaged = metrics.read_bytes()
    status, _, stderr = run_main(["--resume", only_run(out), "--epochs", 3], capsys)
    line = one_line(stderr)
    assert status == 2
    assert line.startswith(f"error: {metrics} is missing or damaged") and "cannot resume" in line
    assert metrics.read_bytes() == damaged


# ----- the data a resumed run trains on --------------------------------------------------


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No MNIST anywhere and no network; the embedded digits made small (2 batches of 64)."""
    isolate(monkeypatch, tmp_path)
    monkeypatch.setattr(datasets, "DIGITS_N_TRAIN", 128)
    monkeypatch.setattr(datasets, "DIGITS_N_TEST", 64)


def test_a_run_on_the_fallback_digits_resumes_on_them_when_mnist_appears(
    offline, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "runs"
    status, stdout, stderr = run_main(["--out", out, *SMALL, "--epochs", 1], capsys)
    assert status == 0, stderr
    assert "training on the embedded digits" in stderr
    run = only_run(out)
    mnist = tmp_path / "mnist"
    monkeypatch.setitem(sources.DATASETS, "mnist", tiny_spec(write_tiny_mnist(mnist)))
    monkeypatch.setenv("NPVAE_DATA", str(mnist))  # "auto" would now choose MNIST

    status, stdout, stderr = run_main(["--resume", run, "--epochs", 2], capsys)
    assert status == 0, stderr
    assert "data: digits: 128 train" in stdout
    assert load_checkpoint(run / "checkpoints" / "last.npz").step == 2 * 2
    assert json.loads((run / "config.json").read_text())["dataset_used"] == "digits"


def test_a_run_on_other_embedded_digits_does_not_resume(offline, tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    assert run_main(["--out", out, *SMALL, "--epochs", 1], capsys)[0] == 0
    monkeypatch.setattr(datasets, "DIGITS_N_TRAIN", 256)  # as an npvae that makes other digits
    status, _, stderr = run_main(["--resume", only_run(out), "--epochs", 2], capsys)
    line = one_line(stderr)
    assert status == 2
    assert line.startswith("error: this run trained on embedded (make_digits n_train=128")


def test_a_run_on_mnist_does_not_fall_back_to_the_digits_when_mnist_is_gone(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["--data-dir", tiny, "--out", out, *SMALL, "--epochs", 1]  # --dataset auto
    assert run_main(argv, capsys)[0] == 0
    run = only_run(out)
    assert json.loads((run / "config.json").read_text())["dataset_used"] == "mnist"
    for path in tiny.iterdir():
        path.unlink()
    status, stdout, stderr = run_main(["--resume", run, "--epochs", 2], capsys)
    line = one_line(stderr)
    assert status == 2
    assert line.startswith("error: this run trained on mnist, which cannot be loaded now")
    assert "embedded digits" not in stdout
    assert load_checkpoint(run / "checkpoints" / "last.npz").epoch == 1


# ----- resuming with new settings, or from best.npz --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "change",
    [["--lr", "5e-4"], ["--schedule", "step", "--lr-step", "2", "--lr-gamma", "0.5"]],
    ids=["lr", "schedule"],
)
def test_a_rate_changed_at_epoch_2_is_bit_identical_to_that_schedule_from_the_start(
    change, tiny, tmp_path, capsys
):
    """That schedule: 1e-3 for epochs 1 and 2, 5e-4 after, which the step schedule gives.

    Schedules count epochs from the run's start, so a step schedule given at
    epoch 2 halves the rate for epoch 3 as it would have in a run that began with it.
    """
    straight_out = tmp_path / "straight"
    argv = start_args(tiny, straight_out, "vae", 4)
    schedule = ["--schedule", "step", "--lr-step", "2", "--lr-gamma", "0.5"]
    assert run_main([*argv, *schedule], capsys)[0] == 0
    out = tmp_path / "changed"
    assert run_main(start_args(tiny, out, "vae", 2), capsys)[0] == 0
    run = only_run(out)
    status, stdout, stderr = run_main(["--resume", run, "--epochs", 4, *change], capsys)
    assert status == 0, stderr
    assert_same_run(only_run(straight_out), run)
    assert [row["lr"] for row in read_metrics(run)] == ["0.001", "0.001", "0.0005", "0.0005"]
    record = json.loads((run / "config.json").read_text())
    if change[0] == "--lr":
        assert record["changes"] == [{"epoch": 3, "epochs": [2, 4], "lr": [1e-3, 5e-4]}]
        assert record["lr"] == 5e-4 and record["lr_step"] is None
    else:
        assert record["changes"] == [
            {"epoch": 3, "epochs": [2, 4], "schedule": ["constant", "step"],
             "lr_step": [None, 2], "lr_gamma": [None, 0.5]}
        ]  # fmt: skip
        assert (record["schedule"], record["lr_step"], record["lr_gamma"]) == ("step", 2, 0.5)


def test_resume_records_evaluation_and_figure_changes(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    assert run_main(start_args(tiny, out, "vae", 1), capsys)[0] == 0
    run = only_run(out)
    argv = ["--resume", run, "--epochs", 2, "--ll-samples", 3, "--ll-examples", 8]
    status, _, stderr = run_main(argv, capsys)
    assert status == 0, stderr
    record = json.loads((run / "config.json").read_text())
    assert record["changes"] == [
        {"epoch": 2, "epochs": [1, 2], "ll_samples": [10, 3], "ll_examples": [32, 8]}
    ]
    results = json.loads((run / "results.json").read_text())
    assert results["log_likelihood"]["k"] == 3
    assert results["log_likelihood"]["images"] == 8


def test_a_damaged_last_checkpoint_points_to_best_and_from_best_goes_on(tiny, tmp_path, capsys):
    straight = straight_run(tiny, tmp_path, "vae", capsys)  # 4 epochs
    out = tmp_path / "damaged"
    assert run_main(start_args(tiny, out, "vae", 3), capsys)[0] == 0
    run = only_run(out)
    best = load_checkpoint(run / "checkpoints" / "best.npz")
    assert best.epoch == 3  # the loss still falls on these tiny runs: best is the last
    last = run / "checkpoints" / "last.npz"
    last.write_bytes(last.read_bytes()[:1000])
    status, _, stderr = run_main(["--resume", run, "--epochs", 4], capsys)
    assert status == 2
    line = one_line(stderr)
    assert "last.npz: damaged or truncated" in line and line.endswith("add --from best")

    status, _, stderr = run_main(["--resume", run, "--epochs", 4, "--from", "best"], capsys)
    assert status == 0, stderr
    assert_same_run(straight, run)
    record = json.loads((run / "config.json").read_text())
    assert record["changes"] == [{"epoch": 4, "epochs": [3, 4], "from": ["best.npz"]}]


def test_resume_takes_a_checkpoint_file_and_drops_the_epochs_after_it(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    assert run_main(start_args(tiny, out, "vae", 2), capsys)[0] == 0
    run = only_run(out)
    best = run / "checkpoints" / "best.npz"
    # The first epoch's state, kept as a user might keep one: runs are deterministic,
    # so a 1-epoch run of the same settings ends in exactly that state.
    kept = run / "checkpoints" / "epoch1.npz"
    straight = tmp_path / "straight"
    assert run_main(start_args(tiny, straight, "vae", 1), capsys)[0] == 0
    kept.write_bytes((only_run(straight) / "checkpoints" / "last.npz").read_bytes())
    status, stdout, stderr = run_main(["--resume", kept, "--epochs", 3], capsys)
    assert status == 0, stderr
    assert "epoch 2/3" in stdout and "epoch 1/3" not in stdout
    assert [row["epoch"] for row in read_metrics(run)] == ["1", "2", "3"]
    assert load_checkpoint(run / "checkpoints" / "last.npz").epoch == 3
    assert best.is_file()


def test_a_change_mid_epoch_is_recorded_with_its_batch(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        interrupt_training_call(patch, VAE, call=4 + 2)  # epoch 2, after its 2nd batch
        assert run_main(start_args(tiny, out, "vae", 3), capsys)[0] == 130
    run = only_run(out)
    status, _, stderr = run_main(["--resume", run, "--lr", "5e-4"], capsys)
    assert status == 0, stderr
    record = json.loads((run / "config.json").read_text())
    assert record["changes"] == [{"epoch": 2, "batch": 2, "lr": [1e-3, 5e-4]}]
    assert [row["lr"] for row in read_metrics(run)] == ["0.001", "0.0005", "0.0005"]


def test_resume_may_say_where_the_same_files_are_now(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    assert run_main(start_args(tiny, out, "vae", 1), capsys)[0] == 0
    run = only_run(out)
    moved = tmp_path / "moved"
    tiny.rename(moved)
    status, _, stderr = run_main(["--resume", run, "--epochs", 2], capsys)
    assert status == 2 and "cannot be loaded now" in one_line(stderr)
    status, _, stderr = run_main(["--resume", run, "--epochs", 2, "--data-dir", moved], capsys)
    assert status == 0, stderr
    record = json.loads((run / "config.json").read_text())
    assert record["data_dir"] == str(moved)
    assert record["changes"] == [
        {"epoch": 2, "epochs": [1, 2], "data_dir": [str(tiny), str(moved)]}
    ]
