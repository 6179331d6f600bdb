"""benchmarks/reproduce_iwae.py's bookkeeping: its table rows and its training minutes.

The script itself trains for an hour or more, so it is a benchmark, never run here;
these are the parts that decide what its table says.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce_iwae.py"


@pytest.fixture
def script(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("reproduce_iwae", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "README", tmp_path / "README.md")
    return module


def test_rows_go_under_the_last_row_of_the_table_and_the_rest_is_kept(script):
    script.README.write_text("# Benchmarks\n\nintro\n")
    script.record_row("| first |")
    text = script.README.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n" + script.TABLE_HEADING)
    script.README.write_text(text + "\n## Later section\n\n| other table |\n")
    script.record_row("| second |")
    lines = script.README.read_text().split("\n")
    assert lines.index("| second |") == lines.index("| first |") + 1
    assert lines.index("| other table |") > lines.index("| second |")


def test_training_minutes_sum_the_epochs_and_can_add_the_running_one(script, tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,seconds\n1,30.0\n2,90.0\n")
    assert script.training_minutes(tmp_path) == pytest.approx(2.0)
    written = time.time() - 60  # the last line came a minute ago: the epoch since is running
    os.utime(tmp_path / "metrics.csv", (written, written))
    assert script.training_minutes(tmp_path, running=True) == pytest.approx(3.0, abs=0.05)
