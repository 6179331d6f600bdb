"""``benchmarks/probe_table.py``: its table says what the probe records say, and the whole
script runs on real MNIST in small (skipped, with where it looked, when MNIST is absent)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MNIST_DIR, NO_MNIST

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def probe_table(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("probe_table")


def record(model: str, codes: float, pixels: float) -> dict:
    return {
        "model": f"{model} on mnist",
        "command": ["python", "-m", "npvae.train", "--model", model],
        "train_seconds": 12.3,
        "probe": {
            "codes": {"test_accuracy": codes, "train_accuracy": codes + 0.01},
            "pixels": {"test_accuracy": pixels, "train_accuracy": pixels + 0.01},
        },
    }


def test_the_table_has_a_row_a_model_then_the_pixels(probe_table):
    text = probe_table.table([record("ae", 0.9061, 0.9254), record("vae", 0.8984, 0.9254)])
    rows = text.splitlines()[2:]
    assert [row.split("|")[1].strip() for row in rows] == [
        "ae",
        "vae",
        "raw pixels (784, grey levels)",
    ]
    assert "| 90.61% | 91.61% | 12 |" in rows[0] and "| 92.54% | 93.54% | |" in rows[2]


def test_the_pixels_probe_must_agree_between_runs(probe_table):
    with pytest.raises(AssertionError, match="differs between runs"):
        probe_table.table([record("ae", 0.9, 0.9254), record("vae", 0.9, 0.9250)])


def test_every_model_gets_the_same_code_size_and_epochs(probe_table):
    args = probe_table.parse_args(["--data-dir", "D", "--code", "7", "--epochs", "3"])
    for model in probe_table.MODELS:
        command = probe_table.train_command(model, args)
        assert command[command.index("--latent") + 1] == "7"
        assert command[command.index("--epochs") + 1] == "3"
        assert command.count("--hidden") == 1


@pytest.mark.skipif(MNIST_DIR is None, reason=NO_MNIST)
def test_the_script_trains_probes_and_prints_the_table(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "probe_table.py"), "--data-dir", str(MNIST_DIR)]
        + ["--models", "ae", "--epochs", "1", "--code", "4", "--hidden", "16"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    [ae] = [line for line in lines if line.startswith("| autoencoder 784-16-4 |")]
    [pixels] = [line for line in lines if line.startswith("| raw pixels")]
    codes = float(re.findall(r"\| ([\d.]+)% \|", ae)[0])
    assert 20 < codes < 95  # four code units carry some of the digit, not all of it
    assert 90 < float(re.findall(r"\| ([\d.]+)% \|", pixels)[0]) < 95  # about 92%
