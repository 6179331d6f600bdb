"""npvae.app._threads and --threads: the one place that sets the BLAS's threads."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from npvae.app import _threads
from npvae.app.flags import parse_args, read_toml
from npvae.errors import ConfigError


def blas_threads() -> list[int]:
    """The thread counts of NumPy's BLAS (another library's, loaded later, is not ours to set)."""
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


@pytest.mark.parametrize(("text", "count"), [("auto", None), ("AUTO", None), ("2", 2), (3, 3)])
def test_parse_threads_takes_auto_or_a_whole_number(text, count):
    assert _threads.parse_threads(text) == count


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "two", ""])
def test_parse_threads_refuses_anything_else(text):
    with pytest.raises(ConfigError, match="--threads must be auto or a whole number"):
        _threads.parse_threads(text)


@pytest.mark.parametrize(
    ("busy", "cores", "count"),
    [(0.0, 2, 2), (0.25, 2, 2), (0.4, 2, 1), (1.0, 2, 1), (1.9, 2, 1), (1.0, 4, 3), (None, 4, 4)],
)
def test_auto_takes_the_cores_other_work_leaves_idle(monkeypatch, busy, cores, count):
    monkeypatch.setattr(_threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(_threads.CpuWatch, "cores_busy_elsewhere", lambda self: busy)
    assert _threads.choose_threads("auto")[0] == count


def test_a_number_is_taken_as_asked(monkeypatch):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(_threads.CpuWatch, "cores_busy_elsewhere", lambda self: 9.0)
    assert _threads.choose_threads("3") == (3, "as asked")
    assert _threads.choose_threads("4") == (4, "as asked")


def test_more_threads_than_cores_are_clamped_with_a_note_on_stderr(monkeypatch, capsys):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 2)
    assert _threads.choose_threads("64") == (2, "64 asked, clamped to the 2 usable")
    assert capsys.readouterr().err == (
        "note: --threads 64 is more than the 2 cores this process may use; using 2\n"
    )
    monkeypatch.setattr(_threads, "usable_cores", lambda: 1)
    assert _threads.choose_threads(3)[0] == 1
    assert "more than the 1 core this" in capsys.readouterr().err


class FakeClock:
    """Stands in for the time module: ``process_time`` and ``monotonic`` read from lists."""

    def __init__(self, own: list[float], wall: list[float]) -> None:
        self.own, self.wall, self.slept = iter(own), iter(wall), []

    def process_time(self) -> float:
        return next(self.own)

    def monotonic(self) -> float:
        return next(self.wall)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_the_watch_counts_other_processes_and_not_this_one(monkeypatch):
    # Over 2 s the machine was busy for 5 CPU-seconds, 1 of them this process's: others
    # kept 2 cores busy.  Wall-clock reads: start, the wait check, the end.
    machine = iter([(100.0, 400.0), (105.0, 404.0)])
    monkeypatch.setattr(_threads, "_machine_cpu_seconds", lambda: next(machine))
    clock = FakeClock(own=[7.0, 8.0], wall=[50.0, 52.0, 52.0])
    monkeypatch.setattr(_threads, "time", clock)
    assert _threads.CpuWatch().cores_busy_elsewhere(at_least=0.15) == pytest.approx(2.0)
    assert clock.slept == [0.0]  # it had watched long enough already


def test_the_watch_sees_a_busy_process():
    if _threads.CpuWatch().cores_busy_elsewhere(0.0) is None:
        pytest.skip("no /proc/stat here (not Linux)")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # let it start
        others = _threads.CpuWatch().cores_busy_elsewhere(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert others >= 0.5  # the spinner's core, whatever else the machine is doing


def test_set_threads_limits_the_blas():
    before = blas_threads()
    try:
        _threads.set_threads(1)
        assert blas_threads() and set(blas_threads()) == {1}
    finally:
        threadpool_limits(limits=max(before), user_api="blas")


# A training step, an evaluation's kernels and set_threads, in a fresh process: the
# environment must be what it was, and numba must never have started a thread pool
# (a kernel compiled with parallel=True would start one on its first call).  threadpoolctl
# sets KMP_DUPLICATE_LIB_OK when it is imported, so it is imported first: it is not ours.
SERIAL_PROCESS = """
import json, os
import threadpoolctl
before = dict(os.environ)
import numpy as np
from npvae import kernels
from npvae._jit import USE_NUMBA
from npvae.app._threads import set_threads
from npvae.models import IWAE
from npvae.optim import Adam
set_threads(2)
rng = np.random.default_rng(0)
model = IWAE(input_dim=12, hidden=[8], latent_dim=3, k=3, dtype="float32")
x = (rng.random((5, 12)) < 0.5).astype(np.float32)
model.loss(x, rng)
Adam(model.params).step(model.grads)
kernels.bernoulli_log_prob(x, rng.standard_normal((10, 12)).astype(np.float32))
kernels.logsumexp(rng.standard_normal((4, 7)))
pool = None
if USE_NUMBA:
    import numba
    try:
        pool = numba.threading_layer()
    except ValueError:  # "Threading layer is not initialized"
        pool = None
print(json.dumps({"environ_unchanged": dict(os.environ) == before, "pool": pool}))
"""


def test_npvae_leaves_the_environment_alone_and_starts_no_numba_threads():
    done = subprocess.run(
        [sys.executable, "-c", SERIAL_PROCESS], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == {"environ_unchanged": True, "pool": None}


def test_threads_flag_and_toml_key():
    assert parse_args([])[0].threads == "auto"
    assert parse_args(["--threads", "1"])[0].threads == "1"


def test_threads_in_toml_may_be_a_number_or_auto(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("threads = 2\n")
    assert read_toml(path) == {"threads": "2"}
    path.write_text('threads = "auto"\n')
    assert read_toml(path) == {"threads": "auto"}


# What the training process itself reports, after main() has set its threads.
PROBE = """
import json, sys
from threadpoolctl import threadpool_info
from npvae.train import main
status = main(sys.argv[1:])
blas = [p["num_threads"] for p in threadpool_info() if "numpy" in p["filepath"]]
print(json.dumps({"status": status, "blas": blas}))
"""


@pytest.mark.slow
def test_threads_1_gives_the_training_process_one_blas_thread(tmp_path):
    argv = ["--dataset", "digits", "--epochs", "1", "--hidden", "16", "--latent", "2"]
    argv += ["--ll-samples", "0", "--no-figures", "--out", str(tmp_path), "--threads", "1"]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "threads: 1 (as asked)" in done.stdout
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 0 and report["blas"] and set(report["blas"]) == {1}


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_threads_value_is_one_line_and_exit_2(tmp_path, value):
    done = subprocess.run(
        [sys.executable, "-m", "npvae.train", "--threads", value, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    message = f"error: --threads must be auto or a whole number of at least 1, got {value!r}"
    assert done.stderr == message + "\n"
    assert not any(tmp_path.iterdir())
