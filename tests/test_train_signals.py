"""How a real training process stops: divergence, SIGTERM / SIGINT, and ``kill -9``.

Each test starts the trainer as a subprocess (see ``train_support.Spawned``)
on the tiny MNIST, so these are the slowest tests of the trainer.
"""

from __future__ import annotations

import json
import random
import re
import signal
import time

import numpy as np
import pytest
from train_support import (
    SMALL,
    Spawned,
    assert_same_run,
    loss_columns,
    one_line,
    only_run,
    read_metrics,
    run_main,
    tiny_mnist_everywhere,
)

from npvae.app import memory
from npvae.app.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

BATCHES_PER_EPOCH = 4  # 256 images in batches of 64


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """``(data folder, checksums, environment)`` for in-process and spawned runs alike."""
    return tiny_mnist_everywhere(monkeypatch, tmp_path)


def tiny_args(folder, out, *extra):
    # One thread: runs compared bit for bit must not decide their thread count from the load
    # each one happens to see (see THREADS in test_train_resume.py).
    return ["--dataset", "mnist", "--data-dir", folder, "--out", out, *SMALL, "--threads", "1",
            *extra]  # fmt: skip


def wait_for(path, process: Spawned, timeout: float = 120) -> None:
    """Poll until ``path`` exists; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.process.poll() is None, f"ended early:\n{process.stderr}"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.02)


def run_folder(out, process: Spawned):
    """Wait for the run folder (made whole, with its step-0 checkpoint); returns it."""
    deadline = time.monotonic() + 120
    while not (out.exists() and any(not p.name.startswith(".") for p in out.iterdir())):
        assert process.process.poll() is None, f"ended early:\n{process.stderr}"
        assert time.monotonic() < deadline, "no run folder after 120 s"
        time.sleep(0.02)
    return only_run(out)


def first_checkpoint(out, process: Spawned):
    """Wait for the first epoch's checkpoint (best.npz: training is under way); the run folder."""
    run = run_folder(out, process)
    wait_for(run / "checkpoints" / "best.npz", process)
    return run


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    folder, checksums, env = tiny
    out = tmp_path / "runs"
    # Adam at lr 1e-3 trains epoch 1; the step schedule then multiplies the rate by a
    # million, and epoch 2 overflows within a few batches.
    argv = tiny_args(folder, out, "--epochs", 3, "--schedule", "step", "--lr-step", 1,
                     "--lr-gamma", 1e6)  # fmt: skip
    process = Spawned(argv, checksums, env, tmp_path / "logs")
    try:
        status = process.wait()
    finally:
        process.stop()
    assert status == 3
    line = one_line(process.stderr)
    run = only_run(out)
    assert re.fullmatch(
        r"the (loss|gradient) became NaN or infinite at epoch 2, batch \d+ \(learning rate 1000\); "
        r"go on from the last good checkpoint at a lower rate: "
        rf"python -m npvae.train --resume {re.escape(str(run))} --lr 0.0001, "
        r"or clip gradients \(--clip 1\) in a new run",
        line,
    ), line
    last = load_checkpoint(run / "checkpoints" / "last.npz")
    assert (last.epoch, last.step) == (1, BATCHES_PER_EPOCH)
    assert all(np.isfinite(value).all() for value in last.model.params.values())
    assert load_checkpoint(run / "checkpoints" / "best.npz").epoch == 1
    assert [row["epoch"] for row in read_metrics(run)] == ["1"]
    assert not (run / "results.json").exists()
    assert not list((run / "checkpoints").glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_after_the_batch_with_a_checkpoint_that_resumes_exactly(
    signum, tiny, tmp_path, capsys
):
    folder, checksums, env = tiny
    out = tmp_path / "runs"
    process = Spawned(tiny_args(folder, out, "--epochs", 100_000), checksums, env, tmp_path / "log")
    try:
        run = first_checkpoint(out, process)
        process.process.send_signal(signum)
        status = process.wait(timeout=60)
    finally:
        process.stop()
    assert status == 130
    line = one_line(process.stderr)
    name = signal.Signals(signum).name
    stopped = re.fullmatch(
        rf"stopped by {name} at (?:epoch (\d+), batch (\d+)|the end of epoch (\d+)); "
        rf"checkpoint written; continue with: python -m npvae.train --resume (.+)",
        line,
    )
    assert stopped, line
    if stopped.group(3):  # the signal came during an epoch's evaluation or checkpoint
        done, batch = int(stopped.group(3)), 0
    else:
        done, batch = int(stopped.group(1)) - 1, int(stopped.group(2))
    assert stopped.group(4) == str(run)
    saved = load_checkpoint(run / "checkpoints" / "last.npz")
    assert saved.epoch == done
    assert saved.step == done * BATCHES_PER_EPOCH + batch
    assert saved.extra.get("partial", {}).get("batch", 0) == batch

    # Continue to the end of the epoch after the stopped one, and compare with a
    # run that was never stopped.
    status, _, stderr = run_main(["--resume", run, "--epochs", done + 2], capsys)
    assert status == 0, stderr
    straight_out = tmp_path / "straight"
    status, _, stderr = run_main(tiny_args(folder, straight_out, "--epochs", done + 2), capsys)
    assert status == 0, stderr
    assert_same_run(only_run(straight_out), run)


def test_kill_9_leaves_a_loadable_checkpoint_and_resume_cleans_up(tiny, tmp_path, capsys):
    folder, checksums, env = tiny
    out = tmp_path / "runs"
    delay = random.uniform(0.0, 0.5)
    process = Spawned(tiny_args(folder, out, "--epochs", 100_000), checksums, env, tmp_path / "log")
    try:
        run = first_checkpoint(out, process)
        time.sleep(delay)
        process.process.send_signal(signal.SIGKILL)
        status = process.wait(timeout=60)
    finally:
        process.stop()
    assert status == -signal.SIGKILL
    checkpoints = run / "checkpoints"
    saved = load_checkpoint(checkpoints / "last.npz")  # whatever the moment, it is whole
    assert saved.epoch >= 0, f"killed after {delay:.3f} s"  # a run has a checkpoint at step 0
    assert saved.step == saved.epoch * BATCHES_PER_EPOCH and not saved.extra.get("partial")
    load_checkpoint(checkpoints / "best.npz")
    # What a kill during a save leaves behind (save_arrays' temporary-file name).
    (checkpoints / ".last.npz.k1ll9d").write_bytes(b"half a checkpoint")

    epochs = saved.epoch + 1
    status, _, stderr = run_main(["--resume", run, "--epochs", epochs], capsys)
    assert status == 0, stderr
    assert not list(checkpoints.glob(".*")), "resume left a temporary file"
    assert [int(row[0]) for row in loss_columns(run)] == list(range(1, epochs + 1))
    straight_out = tmp_path / "straight"
    status, _, stderr = run_main(tiny_args(folder, straight_out, "--epochs", epochs), capsys)
    assert status == 0, stderr
    assert_same_run(only_run(straight_out), run)


def test_kill_9_as_soon_as_the_run_folder_appears_leaves_a_run_that_resumes(tiny, tmp_path, capsys):
    folder, checksums, env = tiny
    out = tmp_path / "runs"
    process = Spawned(tiny_args(folder, out, "--epochs", 2), checksums, env, tmp_path / "log")
    try:
        run = run_folder(out, process)
        process.process.send_signal(signal.SIGKILL)
        status = process.wait(timeout=60)
    finally:
        process.stop()
    assert status == -signal.SIGKILL
    saved = load_checkpoint(run / "checkpoints" / "last.npz")  # there from the start
    status, _, stderr = run_main(["--resume", run], capsys)
    assert status == 0, stderr
    assert saved.epoch <= 2 and (run / "results.json").is_file()
    straight = tmp_path / "straight"
    assert run_main(tiny_args(folder, straight, "--epochs", 2), capsys)[0] == 0
    assert_same_run(only_run(straight), run)


def test_divergence_in_the_first_epoch_leaves_a_run_that_resumes_at_a_lower_rate(
    tiny, tmp_path, capsys
):
    folder, _, _ = tiny
    out = tmp_path / "runs"
    status, _, stderr = run_main(tiny_args(folder, out, "--epochs", 2, "--lr", 1e6), capsys)
    assert status == 3
    run = only_run(out)
    assert re.fullmatch(
        r"the (loss|gradient) became NaN or infinite at epoch 1, batch \d+ "
        r"\(learning rate 1e\+06\); go on from the last good checkpoint at a lower rate: "
        rf"python -m npvae.train --resume {re.escape(str(run))} --lr 100000, "
        r"or clip gradients \(--clip 1\) in a new run",
        one_line(stderr),
    )
    saved = load_checkpoint(run / "checkpoints" / "last.npz")
    assert (saved.epoch, saved.step) == (0, 0)  # the checkpoint start() writes at step 0
    status, _, stderr = run_main(["--resume", run, "--lr", 1e-3], capsys)
    assert status == 0, stderr
    straight = tmp_path / "straight"
    status, _, stderr = run_main(tiny_args(folder, straight, "--epochs", 2), capsys)
    assert status == 0, stderr
    assert_same_run(only_run(straight), run)  # as if it had started at 1e-3
    changes = json.loads((run / "config.json").read_text())["changes"]
    assert changes == [{"epoch": 1, "lr": [1e6, 1e-3]}]


def test_a_model_too_big_for_memory_is_an_error_before_the_run_folder(tiny, tmp_path, capsys):
    folder, _, _ = tiny
    out = tmp_path / "runs"
    # 784 x 10^11 weights: far beyond any machine's memory and address space.
    status, _, stderr = run_main(tiny_args(folder, out, "--hidden", 10**11), capsys)
    assert status == 2
    line = one_line(stderr)
    assert line.startswith("error: the model needs about ")
    assert "(157,600,000,000,788 parameters" in line and line.endswith(
        "reduce --hidden or --latent"
    )
    assert not out.exists()


def test_a_batch_too_big_for_memory_is_an_error_and_leaves_a_whole_run_folder(
    tiny, tmp_path, capsys, monkeypatch
):
    folder, _, _ = tiny
    out = tmp_path / "runs"
    # Where the memory available cannot be read, nothing is refused before the run, and
    # the step's own MemoryError must still end in one line and a run that can resume.
    monkeypatch.setattr(memory, "available_bytes", lambda: None)
    # 10^15 importance samples of a batch: petabytes, beyond any address space.
    argv = tiny_args(folder, out, "--model", "iwae", "--k", 10**15)
    status, _, stderr = run_main(argv, capsys)
    assert status == 2
    line = one_line(stderr)
    assert line.startswith("error: a batch does not fit in memory; reduce --batch-size, --k")
    run = only_run(out)
    assert sorted(path.name for path in run.rglob("*")) == [
        ".lock", "checkpoints", "config.json", "last.npz", "metrics.csv",
    ]  # fmt: skip
    assert json.loads((run / "config.json").read_text())["k"] == 10**15
    assert read_metrics(run) == []
