"""``benchmarks/bench_step.py``: its timer of a step's parts counts each call once and
leaves every function as it found it; the script runs in small."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench_step(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports compare_peers beside it
    return importlib.import_module("bench_step")


class Owner:
    def outer(self, log):
        log.append("outer")
        return self.inner(log) + 1

    def inner(self, log):
        log.append("inner")
        return 41

    def fails(self):
        raise RuntimeError("inside")


def test_part_timer_counts_only_the_outermost_call_and_puts_the_functions_back(bench_step):
    originals = dict(vars(Owner))
    timer = bench_step.PartTimer()
    targets = [(Owner, "outer", "a"), (Owner, "inner", "b"), (Owner, "fails", "c")]
    log: list[str] = []
    with timer.timing(targets):
        assert Owner.__dict__["outer"] is not originals["outer"]
        assert Owner().outer(log) == 42 and log == ["outer", "inner"]
        with pytest.raises(RuntimeError, match="inside"):
            Owner().fails()
        assert Owner().inner(log) == 41
    assert set(timer.seconds) == {"a", "b", "c"}  # inner counted once, alone; fails despite raising
    assert all(seconds > 0 for seconds in timer.seconds.values())
    assert all(Owner.__dict__[name] is originals[name] for name in ("outer", "inner", "fails"))


def test_part_timer_puts_the_functions_back_when_the_block_raises(bench_step):
    original = Owner.__dict__["inner"]
    with pytest.raises(KeyError):
        with bench_step.PartTimer().timing([(Owner, "inner", "b")]):
            raise KeyError("in the block")
    assert Owner.__dict__["inner"] is original


@pytest.mark.parametrize("config", ["classic", "iwae-k5"])
def test_the_script_prints_each_part_and_they_add_up_to_the_step(config):
    command = [sys.executable, str(BENCHMARKS / "bench_step.py"), "--config", config]
    command += ["--parts", "--blocks", "2", "--calls", "2", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    parts = dict(re.findall(r"^\| (.+?) \| ([0-9.]+) \| [0-9.]+% \|$", done.stdout, re.M))
    step = float(parts.pop("step"))
    expected = {"Linear layers (products, biases)", "Adam.step", "noise draw"}
    expected |= {"kernels.bernoulli_log_prob_and_grad", "the rest: NumPy and Python in the loss"}
    expected |= {"kernels.logsumexp", "kernels.tanh"} if config == "iwae-k5" else set()
    assert expected <= parts.keys()
    # "The rest" is what the timed parts leave of the step: a call counted twice would make
    # it negative, and the pattern above would not find it.  The rows are rounded to 0.01 ms.
    assert sum(map(float, parts.values())) == pytest.approx(step, abs=0.01 * len(parts))
