"""Helpers for the tests of ``python -m npvae.train``: a tiny MNIST, and ways to run the CLI.

The tiny dataset is 256 training and 64 test images of embedded digits,
written as the four MNIST IDX files.  ``load_dataset("mnist")`` checks each
file's SHA-256 against the real MNIST's, so the tests replace the checksums in
``npvae.data.sources.DATASETS["mnist"]`` with the tiny files' own: the check
still runs, it just checks these files.

In-process runs (:func:`run_main`) patch the table with pytest's
``monkeypatch``.  A subprocess cannot see that patch, so it is started as
``python -c LAUNCHER`` (:class:`Spawned`), which patches the same table and then calls
``npvae.train.main`` exactly as ``python -m npvae.train`` does.  Nothing in
the product is changed for the tests.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from npvae.app.checkpoint import load_checkpoint
from npvae.data import make_digits, sources, write_idx
from npvae.data.idx import decompressed_sha256

N_TRAIN, N_TEST = 256, 64

#: Flags for a small, fast autoencoder (the log-likelihood settings are refused there).
SMALL_AE = ["--hidden", "32", "--latent", "2", "--batch-size", "64", "--no-figures"]

#: Flags for a small, fast VAE or IWAE (the brief's defaults for these tests).
SMALL = [*SMALL_AE, "--ll-samples", "10", "--ll-examples", "32"]

#: The columns of metrics.csv that must not depend on timing.
LOSS_COLUMNS = [
    "epoch", "lr", "train_loss", "train_recon", "train_kl", "val_loss",
    "test_loss", "test_recon", "test_kl",
]  # fmt: skip

LAUNCHER = """
import json, sys
from dataclasses import replace
from npvae.data import sources
checksums = json.loads(sys.argv[1])
spec = sources.DATASETS["mnist"]
files = {role: replace(f, sha256=checksums[role]) for role, f in spec.files.items()}
sources.DATASETS["mnist"] = replace(spec, files=files)
from npvae.train import main
raise SystemExit(main(sys.argv[2:]))
"""


@functools.cache
def tiny_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train (256, 28, 28), y_train (256,), x_test (64, 28, 28), y_test (64,))`` uint8."""
    return make_digits(N_TRAIN, N_TEST, seed=7)


def write_tiny_mnist(folder: Path) -> dict[str, str]:
    """Write the tiny dataset as gzip IDX files in ``folder``; returns role -> SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = sources.DATASETS["mnist"]
    checksums = {}
    for role, array in zip(sources.ROLES, tiny_arrays()):
        path = folder / f"{spec.files[role].stem}.gz"
        write_idx(path, array)
        checksums[role] = decompressed_sha256(path)
    return checksums


def tiny_spec(checksums: dict[str, str]) -> sources.DatasetSpec:
    """The MNIST spec with the tiny files' checksums (and no mirrors)."""
    spec = sources.DATASETS["mnist"]
    files = {
        role: dataclasses.replace(data_file, sha256=checksums[role])
        for role, data_file in spec.files.items()
    }
    return dataclasses.replace(spec, files=files, mirrors=())


def use_tiny_mnist(monkeypatch, tmp_path: Path) -> Path:
    """Isolate the test (:func:`isolate`) and make the tiny MNIST the one MNIST found.

    Returns the folder holding its files, for ``--data-dir``.
    """
    isolate(monkeypatch, tmp_path)
    folder = tmp_path / "data"
    monkeypatch.setitem(sources.DATASETS, "mnist", tiny_spec(write_tiny_mnist(folder)))
    return folder


def free_port() -> int:
    """A TCP port nobody listens on (closed right after it is found)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def isolate(monkeypatch, tmp_path: Path) -> dict[str, str]:
    """No network, no user cache, no system folder: only the data a test writes is found.

    Returns the environment a subprocess should get.
    """
    cache = tmp_path / "empty-cache"
    cache.mkdir(exist_ok=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("NPVAE_MIRROR", f"http://127.0.0.1:{free_port()}/")
    monkeypatch.delenv("NPVAE_DATA", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DATA_DIR", tmp_path / "no-system-datasets")
    return dict(os.environ)


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``npvae.train.main(argv)`` in this process: ``(status, stdout, stderr)``."""
    from npvae.train import main

    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


class Spawned:
    """The trainer in a subprocess that sees the tiny dataset's checksums.

    Its stdout and stderr go to files in ``log_dir`` (a pipe nobody reads
    could fill up and stall a long run).
    """

    def __init__(self, argv: list, checksums: dict[str, str], env: dict, log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = log_dir / "stdout.txt", log_dir / "stderr.txt"
        command = [sys.executable, "-c", LAUNCHER, json.dumps(checksums), *map(str, argv)]
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen(command, stdout=out, stderr=err, env=env)

    def wait(self, timeout: float = 120) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Kill the process if it still runs (for a ``finally``)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


def only_run(out: Path) -> Path:
    """The one run folder under ``out`` (a hidden one is a run folder still being made)."""
    runs = [path for path in out.iterdir() if path.is_dir() and not path.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


def read_metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def loss_columns(run: Path) -> list[list[str]]:
    """metrics.csv without the timing columns, as strings (exact comparison)."""
    return [[row[key] for key in LOSS_COLUMNS] for row in read_metrics(run)]


def one_line(stderr: str) -> str:
    """Assert ``stderr`` is exactly one non-empty line with no traceback; return it."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def assert_same_run(run_a, run_b):
    """Bit-identical parameters, optimizer state and generator; identical loss columns."""
    a = load_checkpoint(run_a / "checkpoints" / "last.npz")
    b = load_checkpoint(run_b / "checkpoints" / "last.npz")
    assert (a.epoch, a.step) == (b.epoch, b.step)
    assert sorted(a.model.params) == sorted(b.model.params)
    for name in a.model.params:
        assert np.array_equal(a.model.params[name], b.model.params[name]), name
    assert sorted(a.optimizer_state) == sorted(b.optimizer_state)
    for name in a.optimizer_state:
        assert np.array_equal(a.optimizer_state[name], b.optimizer_state[name]), name
    assert a.rng_state == b.rng_state
    assert a.extra == b.extra and not a.run_arrays and not b.run_arrays
    assert loss_columns(run_a) == loss_columns(run_b)
    assert numbers_of(run_a / "results.json") == numbers_of(run_b / "results.json")


def numbers_of(results_json) -> dict:
    """results.json less what names the run folder or times the machine."""
    results = json.loads(results_json.read_text())
    assert results["evaluation"].pop("weights").startswith(str(results_json.parent))
    if "log_likelihood" in results:
        assert results["log_likelihood"].pop("seconds") >= 0
    return results


def tiny_mnist_everywhere(monkeypatch, tmp_path: Path) -> tuple[Path, dict[str, str], dict]:
    """``(data folder, checksums, environment)``: the tiny MNIST, found by this process
    (patched spec) and by spawned ones (:class:`Spawned` passes the checksums)."""
    env = isolate(monkeypatch, tmp_path)
    folder = tmp_path / "data"
    checksums = write_tiny_mnist(folder)
    monkeypatch.setitem(sources.DATASETS, "mnist", tiny_spec(checksums))
    return folder, checksums, env


def train_run(tiny: Path, out, capsys, *extra, epochs: int = 2) -> tuple[str, Path]:
    """Train a small model on the tiny MNIST in this process: ``(stdout, run folder)``."""
    model = extra[extra.index("--model") + 1] if "--model" in extra else "vae"
    small = SMALL if model in ("vae", "iwae", "iwae2") else SMALL_AE  # no --ll-samples: AE
    argv = ["--dataset", "mnist", "--data-dir", tiny, "--out", out, *small, "--epochs", epochs]
    status, stdout, stderr = run_main([*argv, *extra], capsys)
    assert status == 0, stderr
    return stdout, only_run(Path(out))


def evaluations(run: Path) -> dict:
    """The records ``python -m npvae.evaluate`` has written into ``RUN/eval.json``, by key."""
    return json.loads((run / "eval.json").read_text())["evaluations"]


def run_evaluate(argv: list, capsys) -> tuple[int, str, str]:
    """``npvae.evaluate``'s ``main(argv)`` in this process: ``(status, stdout, stderr)``."""
    from npvae.evaluate.__main__ import main

    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err
