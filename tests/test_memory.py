"""Issue 25, item 4: a run too large for memory is refused before it starts, in one line.

The estimates are checked for their shape (linear in k and in the batch, twice as
large in float64), against a measured peak, and for the refusal's words with a
fake amount of available memory.  The command lines ask for hundreds of GiB, so a
refusal is all they can get; nothing large is ever allocated.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from train_support import SMALL, one_line, only_run, run_main, use_tiny_mnist

from npvae.app import memory
from npvae.app import run as app_run
from npvae.app.build import build_model, optimizer_for
from npvae.app.config import Config
from npvae.errors import ConfigError
from npvae.models import IWAE, VAE

GIB = 2**30
PAPER_NET = {"hidden": [200, 200], "latent": 50, "activation": "tanh"}


def step_bytes(n_train=60_000, n_eval=10_000, **settings) -> int:
    """The estimated peak of one training step, by default on MNIST's 60,000 and 10,000 images."""
    config = Config(**settings)
    [step, *_] = memory.training_needs(config, n_train, n_eval, 784)
    assert step.what == "one training step needs"
    return step.nbytes


# ----- the estimate ---------------------------------------------------------------------------


def test_a_step_grows_linearly_with_k_and_with_the_batch():
    by_k = [step_bytes(model="iwae", k=k, batch_size=100, **PAPER_NET) for k in (10, 20, 30)]
    assert by_k[2] - by_k[1] == by_k[1] - by_k[0] > 0
    # ten more draws of 100 images: at least the decoder's output and its gradient, 784 wide
    assert by_k[1] - by_k[0] >= 2 * 100 * 10 * 784 * 4
    by_batch = [step_bytes(model="iwae", k=5, batch_size=b, **PAPER_NET) for b in (100, 200, 300)]
    assert by_batch[2] - by_batch[1] == by_batch[1] - by_batch[0] > 0


def test_float64_doubles_the_step():
    # 100 training images, no test set: the data's share (its uint8 copy) is negligible
    single = step_bytes(100, 0, model="iwae", k=50, batch_size=100, **PAPER_NET)
    double = step_bytes(100, 0, model="iwae", k=50, batch_size=100, dtype="float64", **PAPER_NET)
    assert 1.99 < double / single <= 2


def test_a_batch_is_at_most_the_training_set():
    config = Config(model="iwae", k=5, batch_size=10_000_000, **PAPER_NET)
    [step, *_] = memory.training_needs(config, 1_000, 500, 784)
    assert "batch 1000 x k 5 rows" in step.rows


@pytest.mark.parametrize(
    "settings",
    [
        {"model": "iwae", "k": 10, "batch_size": 40, "hidden": [64, 32], "activation": "tanh"},
        {"model": "iwae2", "k": 4, "batch_size": 40, "hidden": [64], "hidden2": [16]},
        {"model": "vae", "samples": 3, "batch_size": 60, "likelihood": "gaussian"},
        {"model": "denoising-ae", "batch_size": 200, "ll_samples": 0, "ll_examples": 0},
    ],
    ids=["iwae", "iwae2", "gaussian-vae", "denoising-ae"],
)
def test_the_estimate_is_above_the_measured_peak_and_not_far_above(settings):
    """tracemalloc over the model's making and one loss + Adam step, as in the module's table."""
    config = Config(**settings)
    rng = np.random.default_rng(0)
    x = (rng.random((config.batch_size, 784)) < 0.3).astype(np.float32)
    warm = build_model(config, 784)  # compiles or loads the kernels outside the measure
    warm.loss(x[:2], rng)
    tracemalloc.start()
    try:
        model = build_model(config, 784)
        optimizer = optimizer_for(config, model.params)
        model.loss(x, rng)
        optimizer.step(model.grads)
        _, measured = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [step, *_] = memory.training_needs(config, config.batch_size, 0, 784)
    # the estimate also counts the batch's buffers and the data, which x stands in for here
    assert measured <= step.nbytes <= 2.5 * measured


def test_the_test_loss_after_each_epoch_takes_fewer_images_as_k_grows():
    """1000 images at once, each with k draws, up to EVAL_ROWS rows: k = 5000 takes 10."""
    config = Config(model="iwae", k=5000, batch_size=1, **PAPER_NET)
    loss = memory.training_needs(config, 60_000, 10_000, 784)[1]
    assert loss.what == "the test loss after each epoch needs"
    assert "10 images x k 5000 rows" in loss.rows and loss.nbytes < GIB
    config = Config(model="iwae", k=50, batch_size=1, **PAPER_NET)
    loss = memory.training_needs(config, 60_000, 10_000, 784)[1]
    assert "1000 images x k 50 rows" in loss.rows


def test_the_importance_sampler_needs_no_more_memory_for_a_larger_k():
    """It streams chunks of at most CHUNK_ROWS decoder rows: a huge --k costs time only."""
    model = VAE(hidden=[32], latent_dim=2)
    usual = memory.evaluation_needs(model, 1000, 5000)
    huge = memory.evaluation_needs(model, 1000, 10**9)
    assert [need.nbytes for need in usual] == [need.nbytes for need in huge]
    assert "5000 rows" in huge[-1].rows


def test_each_thread_of_the_importance_sampler_holds_its_own_chunk():
    model = VAE(hidden=[32], latent_dim=2)
    one, two = (
        memory.evaluation_needs(model, 1000, 5000),
        memory.evaluation_needs(model, 1000, 5000, 2),
    )
    assert two[0].nbytes == one[0].nbytes  # the test loss runs once, on the BLAS's threads
    assert two[-1].nbytes == 2 * one[-1].nbytes
    assert "2 threads with 5000 rows each" in two[-1].rows and "--threads" in two[-1].flags


# ----- the memory available, and the refusal ---------------------------------------------------


def test_available_is_the_smaller_of_meminfo_and_the_cgroup(monkeypatch):
    monkeypatch.setattr(memory, "_mem_available", lambda: 8 * GIB)
    monkeypatch.setattr(memory, "_cgroup_room", lambda: 2 * GIB)
    assert memory.available_bytes() == 2 * GIB
    monkeypatch.setattr(memory, "_cgroup_room", lambda: None)
    assert memory.available_bytes() == 8 * GIB
    monkeypatch.setattr(memory, "_mem_available", lambda: None)
    assert memory.available_bytes() is None


def test_a_cgroup_v2_limit_less_its_use_is_the_room(tmp_path):
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("73741824\n")
    assert memory._cgroup_room(tmp_path) == 1_000_000_000
    (tmp_path / "memory.max").write_text("max\n")
    assert memory._cgroup_room(tmp_path) is None


def test_a_cgroup_v1_limit_counts_and_its_unlimited_value_does_not(tmp_path):
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory._cgroup_room(tmp_path) is None
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(f"{4 * GIB}\n")
    (tmp_path / "memory" / "memory.usage_in_bytes").write_text(f"{GIB}\n")
    assert memory._cgroup_room(tmp_path) == 3 * GIB


def test_a_config_above_the_margin_is_refused_in_one_line_naming_the_flag(monkeypatch):
    config = Config(model="iwae", k=100_000, batch_size=128, **PAPER_NET)
    needs = memory.training_needs(config, 60_000, 10_000, 784)
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 * GIB)
    with pytest.raises(ConfigError) as refused:
        memory.refuse(needs)
    line = str(refused.value)
    assert "\n" not in line
    assert line.startswith("one training step needs about ")
    assert "(batch 128 x k 100000 rows through the decoder)" in line
    assert "16.0 GiB is available, of which a run may take 80%; lower --k or --batch-size" in line


def test_the_step_is_named_with_both_of_its_flags(monkeypatch):
    config = Config(model="iwae", k=1000, batch_size=20_000, **PAPER_NET)
    needs = memory.training_needs(config, 20_000, 4_000, 784)
    words = r"^one training step needs about [\d.]+ GiB \(batch 20000 x k 1000 rows through the "
    words += r"decoder\) and 64.0 GiB is available, .*; lower --k or --batch-size$"
    with pytest.raises(ConfigError, match=words):
        memory.refuse(needs, available=64 * GIB)


def test_the_margin_is_eighty_percent_of_what_is_available(monkeypatch):
    need = memory.Need(800, "one training step needs", "rows", "lower --k")
    memory.refuse([need], available=1000)  # exactly 80%: allowed
    with pytest.raises(ConfigError):
        memory.refuse([need], available=999)
    monkeypatch.setattr(memory, "available_bytes", lambda: None)  # unknown: nothing is refused
    memory.refuse([memory.Need(10**18, "one training step needs", "rows", "lower --k")])
    assert memory.SAFETY == 0.8


# ----- the command lines ---------------------------------------------------------------------


def refused_or_skip(needs) -> None:
    """Skip where the machine could hold it (then the command would really train)."""
    available = memory.available_bytes()
    if available is None or max(need.nbytes for need in needs) <= memory.SAFETY * available:
        pytest.skip(f"this machine has {available} bytes available: the run would fit")


def command(*argv, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=timeout
    )


def test_train_refuses_a_huge_k_before_making_a_run_folder(tmp_path):
    config = Config(model="iwae", k=100_000)
    refused_or_skip(memory.training_needs(config, 20_000, 4_000, 784))
    out = tmp_path / "runs"
    done = command(
        "-m", "npvae.train", "--model", "iwae", "--k", "100000", "--dataset", "digits",
        "--no-figures", "--out", out,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert line.startswith("error: ") and "GiB" in line and "lower --k" in line
    assert "k 100000" in line
    assert not out.exists() or not any(out.iterdir())
    assert done.stdout == ""


def test_train_refuses_a_batch_whose_step_does_not_fit(tmp_path):
    config = Config(model="iwae", k=1000, batch_size=10_000_000)
    refused_or_skip(memory.training_needs(config, 20_000, 4_000, 784))
    out = tmp_path / "runs"
    done = command(
        "-m", "npvae.train", "--model", "iwae", "--k", "1000", "--batch-size", "10000000",
        "--dataset", "digits", "--no-figures", "--out", out,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert line.startswith("error: one training step needs about ")
    assert "(batch 20000 x k 1000 rows through the decoder)" in line
    assert line.endswith("lower --k or --batch-size")
    assert not out.exists() or not any(out.iterdir())


def test_evaluate_refuses_a_model_whose_own_k_does_not_fit(tmp_path):
    """The test loss draws the model's k per image: 10^7 rows for even one image."""
    model = IWAE(hidden=[8], latent_dim=2, k=10**7)  # small weights, an enormous k
    refused_or_skip(memory.evaluation_needs(model, 1000, 10))
    path = model.save(tmp_path / "iwae.npz")
    done = command("-m", "npvae.evaluate", path, "--dataset", "digits", "--k", "10")
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert line.startswith("error: evaluating needs about ")
    assert "(1 test image x k 10000000 rows through the decoder at once)" in line
    assert line.endswith("this model's k is too large to evaluate here")
    assert not (tmp_path / "iwae.eval.json").exists()


# ----- in this process: the check comes before the model and before any write -----------------


def test_a_refused_start_builds_no_model_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    tiny = use_tiny_mnist(monkeypatch, tmp_path)
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**20)  # 1 MiB
    monkeypatch.setattr(app_run, "build_model", pytest.fail)  # where the run looks it up
    out = tmp_path / "runs"
    argv = ["--dataset", "mnist", "--data-dir", tiny, "--out", out, *SMALL, "--epochs", "1"]
    status, stdout, stderr = run_main(argv, capsys)
    assert status == 2 and stdout == ""
    assert "needs about" in one_line(stderr) and "0.0 GiB is available" in stderr
    assert not out.exists() or not any(out.iterdir())


def test_a_refused_resume_writes_nothing(tmp_path, monkeypatch, capsys):
    tiny = use_tiny_mnist(monkeypatch, tmp_path)
    out = tmp_path / "runs"
    argv = ["--dataset", "mnist", "--data-dir", tiny, "--out", out, *SMALL, "--epochs", "1"]
    assert run_main(argv, capsys)[0] == 0
    run = only_run(out)

    def digest():
        # the lock names whichever process holds it: not part of the run's record
        files = sorted(path for path in run.rglob("*") if path.is_file() and path.name != ".lock")
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}

    before = digest()
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**20)
    status, _, stderr = run_main(["--resume", run, "--epochs", "2"], capsys)
    assert status == 2
    assert "needs about" in one_line(stderr) and "0.0 GiB is available" in stderr
    assert digest() == before
