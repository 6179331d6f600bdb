"""``python -m npvae.figures`` through its command line: each mistake is one line, exit 2.

An ``--out`` that cannot be written says what is wrong with the user's path
(never the hidden temporary's name, never errno text); a flag the subcommand
does not use is refused; Ctrl-C or SIGTERM is one line and exit 130 with no
file or temporary left; ``--version`` and ``--threads`` behave as in
``python -m npvae.train``.  Each test runs the real command in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_support import SMALL, one_line, only_run

from npvae import __version__, _files
from npvae.app import _threads
from npvae.errors import ConfigError
from npvae.train import main as train_main


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 784-32-2 VAE trained for one epoch on the embedded digits (no data files needed)."""
    out = tmp_path_factory.mktemp("figures-errors")
    argv = ["--dataset", "digits", "--epochs", "1", *SMALL, "--threads", "1", "--out", out]
    assert train_main([str(arg) for arg in argv]) == 0
    return only_run(out)


def figures(*argv, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "npvae.figures", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def refusal(done: subprocess.CompletedProcess) -> str:
    """Assert exit 2 and exactly one line on stderr, with no traceback and no errno text."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    line = one_line(done.stderr)
    assert line.startswith("error: ") and "Errno" not in line, line
    return line


def files_in(folder: Path) -> list[str]:
    """Every name under ``folder``, hidden temporaries included."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


# ----- --version (item 17) ------------------------------------------------------------------


def test_version():
    done = figures("--version")
    assert done.returncode == 0 and done.stdout == f"npvae {__version__}\n" and done.stderr == ""


# ----- --out (item 8) -------------------------------------------------------------------------


def test_a_folder_given_as_out_is_refused_as_a_folder(run, tmp_path):
    folder = tmp_path / "figs"
    folder.mkdir()
    line = refusal(figures("samples", run, "--out", folder))
    assert line == f"error: --out {folder} is a folder; give a file name in it, such as " + str(
        folder / "figure.png"
    )
    assert files_in(tmp_path) == ["figs"]


def test_an_out_whose_parent_is_a_file_names_that_file(run, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    line = refusal(figures("samples", run, "--out", "afile/deeper/s.png", cwd=tmp_path))
    assert f"{blocker} is a file, not a folder" in line and "afile/deeper/s.png" in line
    assert files_in(tmp_path) == ["afile"] and blocker.read_text() == "not a folder"


def figures_in_read_only(folder: Path, *argv) -> tuple[subprocess.CompletedProcess, str]:
    """``python -m npvae.figures ARGV`` with ``folder`` read-only, and the reason to expect:
    a read-only bind mount in a mount namespace of its own as root (root writes through
    a chmod), a chmod otherwise."""
    command = [sys.executable, "-m", "npvae.figures", *map(str, argv)]
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return subprocess.run(command, capture_output=True, text=True), "no permission"
        finally:
            folder.chmod(0o755)
    if shutil.which("unshare") is None:
        pytest.skip("root needs unshare(1) to make a read-only folder; util-linux provides it")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"this sandbox forbids mount namespaces: {probe.stderr.decode().strip()}")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    wrapped = ["unshare", "-m", "sh", "-c", script, "sh", str(folder), *command]
    return subprocess.run(wrapped, capture_output=True, text=True), "a read-only file system"


def test_a_read_only_folder_is_refused_before_the_work(run, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    done, why = figures_in_read_only(folder, "samples", run, "--out", folder / "new" / "s.png")
    line = refusal(done)
    assert f"cannot write in {folder} ({why}" in line and "new/s.png" in line
    assert ".s.png." not in line and files_in(folder) == []


def test_the_read_only_message_tells_a_read_only_file_system(monkeypatch, tmp_path):
    """The check itself, where the test cannot make a read-only folder (running as root)."""
    monkeypatch.setattr(_files.os, "access", lambda path, mode: False)

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(_files.os, "statvfs", lambda path: ReadOnly)
    with pytest.raises(ConfigError) as caught:
        _files.check_output(tmp_path / "new" / "s.png")
    assert str(caught.value) == (
        f"--out {tmp_path / 'new' / 's.png'}: cannot write in {tmp_path} "
        "(a read-only file system); choose another path"
    )
    assert not (tmp_path / "new").exists()


def test_missing_folders_are_made_and_a_png_is_replaced(run, tmp_path):
    out = tmp_path / "made" / "for" / "it.png"
    done = figures("samples", run, "--out", out, "--threads", "1")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    first = out.read_bytes()
    assert first.startswith(_files.PNG_SIGNATURE)
    done = figures("samples", run, "--out", out, "--seed", "5", "--threads", "1")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert out.read_bytes() != first  # other draws: the figure was replaced
    assert files_in(tmp_path) == ["made", "made/for", "made/for/it.png"]


def test_a_file_that_is_not_a_png_is_never_replaced(run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    line = refusal(figures("samples", run, "--out", notes))
    assert (
        line == f"error: --out {notes} exists and is not a PNG, so it is kept; choose another path"
    )
    assert notes.read_text() == "mine" and files_in(tmp_path) == ["notes.txt"]


def test_compare_checks_its_out_before_training(tmp_path):
    (tmp_path / "afile").write_text("")
    started = time.monotonic()
    line = refusal(figures("compare", "--dataset", "digits", "--out", tmp_path / "afile" / "c.png"))
    assert "is a file, not a folder" in line
    assert time.monotonic() - started < 60  # no three trainings first
    line = refusal(figures("compare", "--dataset", "digits", "--out", tmp_path / "stochastic.png"))
    assert "give the comparison another name" in line
    assert files_in(tmp_path) == ["afile"]


# ----- flags a subcommand does not use (item 14) ----------------------------------------------


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("curves", ["--seed", "3"]),
        ("curves", ["--checkpoint", "last"]),
        ("curves", ["--data-dir", "/nonexistent"]),
        ("curves", ["--dataset", "digits"]),
        ("curves", ["--threads", "1"]),
        ("latent", ["--seed", "3"]),
        ("manifold", ["--seed", "3"]),
        ("kl", ["--index", "2"]),
        ("samples", ["--projection", "kl"]),
        ("compare", ["--checkpoint", "last"]),
    ],
)
def test_a_flag_the_subcommand_does_not_use_is_refused(run, tmp_path, command, flag):
    target = [] if command == "compare" else [run]
    done = figures(command, *target, *flag, "--out", tmp_path / "x.png")
    line = refusal(done)
    assert f"{command} does not use {flag[0]}" in line
    assert files_in(tmp_path) == []


def test_recon_takes_seed_only_for_a_denoising_ae(run, tmp_path):
    line = refusal(figures("recon", run, "--seed", "3", "--out", tmp_path / "r.png"))
    assert "--seed is for a denoising AE's noise" in line
    assert files_in(tmp_path) == []


def test_data_dir_with_the_embedded_digits_is_refused(run, tmp_path):
    line = refusal(figures("latent", run, "--data-dir", tmp_path, "--out", tmp_path / "l.png"))
    assert "--data-dir has no effect" in line
    line = refusal(figures("compare", "--dataset", "digits", "--data-dir", tmp_path))
    assert "--data-dir has no effect" in line
    assert files_in(tmp_path) == []


def test_an_unknown_flag_is_one_line(run):
    assert "unrecognized arguments: --wobble" in refusal(figures("samples", run, "--wobble"))


# ----- --threads (item 6) ---------------------------------------------------------------------


def test_threads_is_taken_and_reported(run, tmp_path):
    done = figures("latent", run, "--threads", "1", "--out", tmp_path / "l.png")
    assert done.returncode == 0, done.stderr
    assert "threads: 1 (as asked)" in done.stdout.splitlines()
    line = refusal(figures("kl", run, "--threads", "0", "--out", tmp_path / "k.png"))
    assert "--threads must be auto or a whole number" in line
    assert files_in(tmp_path) == ["l.png"]


@pytest.mark.skipif(_threads.usable_cores() >= 64, reason="64 threads fit this machine's cores")
def test_more_threads_than_cores_are_clamped_with_one_note(run, tmp_path):
    cores = _threads.usable_cores()
    done = figures("kl", run, "--threads", "64", "--out", tmp_path / "k.png")
    assert done.returncode == 0
    note = one_line(done.stderr)
    assert note.startswith("note: --threads 64 is more than") and f"using {cores}" in note
    assert f"threads: {cores} (64 asked, clamped to the {cores} usable)" in done.stdout


# ----- Ctrl-C and SIGTERM (item 10) -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_compare_is_one_line_exit_130_and_no_file(tmp_path, signum):
    out = tmp_path / "figs" / "c.png"
    argv = ["compare", "--dataset", "digits", "--epochs", "5", "--threads", "1", "--out", out]
    process = subprocess.Popen(
        [sys.executable, "-m", "npvae.figures", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = []
        for line in process.stdout:  # stdout is no terminal: a line names each model
            seen.append(line)
            if line.startswith("training:"):
                break
        assert seen and seen[-1].startswith("training:"), seen
        assert "threads: 1 (as asked)\n" in seen
        time.sleep(0.5)  # well inside the first model's training
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, (stdout, stderr)
    assert one_line(stderr) == "interrupted; nothing was written"
    assert files_in(tmp_path) == []  # no PNG, no temporary, not even the folder for them
