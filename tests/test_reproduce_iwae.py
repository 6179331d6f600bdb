"""benchmarks/reproduce_iwae.py: its table rows, its training minutes, and the whole path.

The script's real runs train for an hour or more, so they are benchmarks, never run
here; the last test runs the same path on the embedded digits for a few seconds.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from npvae.app.runfolder import write_metrics

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce_iwae.py"


@pytest.fixture
def script(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("reproduce_iwae", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "iwae_paper.md")
    return module


def test_rows_go_under_the_last_row_of_the_table_and_the_rest_is_kept(script):
    script.RESULTS.write_text("# Benchmarks\n\nintro\n")
    script.record_row("| first |")
    text = script.RESULTS.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n" + script.TABLE_HEADING)
    script.RESULTS.write_text(text + "\n## Later section\n\n| other table |\n")
    script.record_row("| second |")
    lines = script.RESULTS.read_text().split("\n")
    assert lines.index("| second |") == lines.index("| first |") + 1
    assert lines.index("| other table |") > lines.index("| second |")


def test_training_minutes_sum_the_epochs_and_can_add_the_running_one(script, tmp_path):
    rows = [
        {"epoch": 1, "train_loss": 99.0, "seconds": 30.0},
        {"epoch": 2, "train_loss": 95.0, "seconds": 90.0},
    ]
    write_metrics(tmp_path, rows)
    assert script.training_minutes(tmp_path) == pytest.approx(2.0)
    written = time.time() - 60  # the last line came a minute ago: the epoch since is running
    os.utime(tmp_path / "metrics.csv", (written, written))
    assert script.training_minutes(tmp_path, running_since=0.0) == pytest.approx(3.0, abs=0.05)
    # Resumed a day later: the epoch running is this invocation's, not the day since.
    started = time.time() - 30
    os.utime(tmp_path / "metrics.csv", (written - 86400, written - 86400))
    minutes = script.training_minutes(tmp_path, running_since=started)
    assert minutes == pytest.approx(2.5, abs=0.05)


def test_bounds_put_each_runs_test_loss_at_every_ten_minutes_side_by_side(script, tmp_path):
    def rows(*lines):  # (test_loss, seconds) of epochs 1, 2, ...
        return [
            {"epoch": epoch, "train_loss": loss, "test_loss": loss, "seconds": seconds}
            for epoch, (loss, seconds) in enumerate(lines, 1)
        ]

    (tmp_path / "a").mkdir()
    write_metrics(tmp_path / "a", rows((99.0, 300), (95.0, 297), (94.0, 603)))
    (tmp_path / "b").mkdir()
    write_metrics(tmp_path / "b", rows((98.0, 420), (96.0, 420)))
    config = {"model": "iwae", "k": 5, "lr": 2e-3, "epochs": 400, "batch_size": 100}
    config.update(schedule="exponential", lr_gamma=0.1 ** (1 / 399), seed=0)
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    config.update(model="vae", k=None, lr=1e-3, schedule="iwae", batch_size=20, seed=2)
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    lines = script.bounds([tmp_path / "a", tmp_path / "b"], 10).split("\n")
    assert lines[0] == (
        "| train min | IWAE k=5, b100, exponential 0.002 to 0.0002, 400 epochs "
        "| VAE, b20, iwae, 400 epochs, seed 2 |"
    )
    # a's epoch 2 ends at 9.95 minutes: just short of 10 counts as 10.
    assert lines[2] == "| 10 | 95.00 (2) | 96.00 (2) |"
    assert lines[3] == "| 20 | 94.00 (3) |  |"
    assert lines[4] == "| last (epoch, min) | 94.00 (3, 20.0 min) | 96.00 (2, 14.0 min) |"


@pytest.mark.parametrize(
    "argv, config, trainer",
    [
        (["--resume", "RUN", "--minutes", "20", "--threads", "1"], None, ["--threads", "1"]),
        (
            ["c.toml", "--threads", "1", "--epochs", "620"],
            "c.toml",
            ["--threads", "1", "--epochs", "620"],
        ),
        (["c.toml", "--minutes", "60", "--seed", "2"], "c.toml", ["--seed", "2"]),
    ],
)
def test_a_trainer_flags_value_is_never_taken_for_the_config(script, argv, config, trainer):
    args, flags = script.parse(argv)
    assert (args.config, flags) == (config, trainer)


TINY = """\
model = "iwae"
k = 2
dataset = "digits"
hidden = [16]
latent = 2
epochs = 10000
batch_size = 256
ll_samples = 0
"""


def run_script(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_tiny_run_stops_on_its_budget_snapshots_evaluates_and_resumes(tmp_path):
    """The whole path on the embedded digits, in seconds: train until the budget, copy
    checkpoints, evaluate, print the row; resume for a budget of its own; the curve."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    common = ["--k", "8", "--n-test", "40", "--no-record", "--snapshot-minutes", "0.1"]
    # Budgets of 24 s, then 12 s: the second is less than the first run trained, so counting
    # the earlier minutes would stop the resumed run at once, and it leaves a loaded machine
    # time to start Python and numba and finish an epoch.
    out = run_script(str(config), "--minutes", "0.4", "--out", str(tmp_path), *common)
    [run] = [path for path in tmp_path.iterdir() if path.is_dir()]
    row = out.strip().split("\n")[-1]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "IWAE k=2"
    first = int(cells[2].split()[0])
    assert 0 < first < 10000  # stopped by the budget, long before its last epoch
    assert cells[4].count("±") == 1 and cells[9].startswith("`python ")

    def trained_minutes():
        with open(run / "metrics.csv", newline="") as file:
            return sum(float(line["seconds"]) for line in csv.DictReader(file)) / 60

    before = trained_minutes()
    # The budget counts the running epoch; the stopped one's minutes are not in metrics.csv.
    assert 0.2 < before < 0.4 + 0.1
    out = run_script("--resume", str(run), "--minutes", "0.2", *common, "--threads", "1")
    cells = [cell.strip() for cell in out.strip().split("\n")[-1].strip("|").split("|")]
    assert int(cells[2].split()[0]) > first  # the earlier minutes did not use up the budget
    assert 0.0 < trained_minutes() - before < 0.2 + 0.1

    snapshots = sorted((run / "snapshots").glob("epoch-*.npz"))
    assert len(snapshots) >= 2
    table = run_script("--curve", str(run), "--k", "8", "--n-test", "40").strip().split("\n")
    rows = [line for line in table if line.startswith("| ") and line[2].isdigit()]
    epochs = [int(line.split("|")[2]) for line in rows]
    assert epochs == [int(path.stem.split("-")[1]) for path in snapshots]


@pytest.mark.parametrize("flag", ["--resume", "--curve", "--bounds"])
def test_a_folder_that_is_not_a_run_is_refused_in_one_line(tmp_path, flag):
    """Before any training starts: no such folder, and a folder with no metrics.csv."""
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")
    for folder, words in [(tmp_path / "gone", "no such folder"), (half, "no metrics.csv")]:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), flag, str(folder)], capture_output=True, text=True
        )
        assert done.returncode == 2
        [last] = done.stderr.strip().split("\n")[-1:]
        assert words in last and "Traceback" not in done.stderr
        assert not (folder / "snapshots").exists()


@pytest.mark.parametrize(
    ("config", "label", "paper"),
    [
        ({"model": "vae", "samples": 50, "k": None}, "VAE k=50", "86.35"),
        ({"model": "vae", "samples": None, "k": None}, "VAE k=1", "86.76"),
        ({"model": "iwae2", "samples": None, "k": 5}, "IWAE2 k=5", "83.89"),
        ({"model": "iwae2", "k": 5, "objective": "iwae"}, "IWAE2 k=5", "83.89"),
        ({"model": "iwae2", "k": 5, "objective": "vae"}, "IWAE2-VAE k=5", "85.01"),
    ],
)
def test_a_row_names_the_papers_cell_and_the_commit(script, monkeypatch, config, label, paper):
    """The VAE's k is the samples its ELBO averages, as in the paper's "VAE, k" column."""
    monkeypatch.setattr(script.runfolder, "read_config", lambda run: {**config, "epochs": 9})
    monkeypatch.setattr(script, "training_minutes", lambda run: 12.0)
    record = {
        "epoch": 9,
        "step": 90,
        "log_likelihood": {"nats": -85.0, "standard_error": 0.2},
        "test": {"elbo": -90.0},
        "active_units": {"count": 20, "of": 50},
    }
    args = argparse.Namespace(wall_minutes=13.0)
    cells = [cell.strip() for cell in script.row(None, record, args, "cmd").strip("|").split("|")]
    assert cells[1] == label and cells[7] == paper
    commit = subprocess.run(
        ["git", "-C", str(SCRIPT.parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert cells[9].startswith(f"`cmd` at {commit}")


@pytest.mark.parametrize(
    ("config", "name"),
    [
        ({"model": "vae", "samples": 5}, "VAE k=5, b100"),
        ({"model": "vae", "samples": 1}, "VAE, b100"),
        ({"model": "iwae2", "k": 5, "objective": "vae"}, "IWAE2-VAE k=5, b100"),
        ({"model": "iwae", "k": 1}, "IWAE k=1, b100"),
    ],
)
def test_a_curves_column_names_the_papers_cell(script, monkeypatch, config, name):
    """--bounds and --curve head each column with the run's cell, as its row names it."""
    schedule = {"lr": 2e-3, "lr_gamma": 0.99, "epochs": 9, "schedule": "exponential"}
    settings = {**config, **schedule, "batch_size": 100}
    monkeypatch.setattr(script.runfolder, "read_config", lambda run: settings)
    assert script.describe(None).startswith(name + ", exponential 0.002 to ")
