"""npvae._threads and --threads: the one place that sets the BLAS's and numba's threads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from npvae import _threads
from npvae._jit import USE_NUMBA
from npvae.config import parse_args, read_toml
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
    monkeypatch.setattr(_threads.CpuWatch, "cores_busy_elsewhere", lambda self: 9.0)
    assert _threads.choose_threads("3") == (3, "as asked")


def test_the_watch_sees_a_busy_process_and_not_its_own_work():
    if _threads.CpuWatch().cores_busy_elsewhere(0.0) is None:
        pytest.skip("no /proc/stat here (not Linux)")
    own = _threads.CpuWatch()
    sum(i * i for i in range(2_000_000))  # this process's own work is not counted
    own_busy = own.cores_busy_elsewhere()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        watch = _threads.CpuWatch()
        others = watch.cores_busy_elsewhere(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    # Other people's work on a shared machine adds to both, so compare the two.
    assert others >= 0.5
    assert others > own_busy


def test_set_threads_limits_the_blas_and_numba():
    import numba

    before = blas_threads()
    try:
        _threads.set_threads(1)
        assert blas_threads() and set(blas_threads()) == {1}
        if USE_NUMBA:
            assert numba.get_num_threads() == 1
    finally:
        threadpool_limits(limits=max(before), user_api="blas")
        if USE_NUMBA:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


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
import numba
from threadpoolctl import threadpool_info
from npvae.train import main
status = main(sys.argv[1:])
blas = [p["num_threads"] for p in threadpool_info() if "numpy" in p["filepath"]]
print(json.dumps({"status": status, "blas": blas, "numba": numba.get_num_threads()}))
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
    if USE_NUMBA:
        assert report["numba"] == 1


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
