"""The run folder's one owner (``npvae.app.runfolder``) as train, evaluate and figures use it.

Paths a run records are absolute, so it resumes and evaluates from any
working directory; its figures go to one place; ``results.json`` and
``eval.json`` hold the same record with one standard error; ``evaluate
--out`` says what is true of the path it was given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_support import (
    LAUNCHER,
    one_line,
    run_main,
    train_run,
    use_tiny_mnist,
    write_tiny_mnist,
)
from train_support import (
    run_evaluate as evaluate,
)

from npvae import estimators
from npvae.data import sources
from npvae.figures.__main__ import main as figures_main
from npvae.models import VAE


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    return use_tiny_mnist(monkeypatch, tmp_path)


def train(tiny, out, capsys, *extra, data_dir=None) -> Path:
    """One epoch of a small model on the tiny MNIST (``--data-dir data_dir`` if given)."""
    extra = ("--data-dir", data_dir, *extra) if data_dir else extra
    return train_run(tiny, out, capsys, *extra, epochs=1)[1]


def test_the_standard_error_is_the_sample_sd_over_root_n():
    values = np.array([1.0, 2.0, 4.0, 7.0])
    assert estimators.standard_error(values) == pytest.approx(np.std(values, ddof=1) / 2)
    assert estimators.standard_error(values[:1]) is None  # one value has no spread


def test_results_and_eval_json_hold_one_record_with_one_standard_error(tiny, tmp_path, capsys):
    run = train(tiny, tmp_path / "runs", capsys)
    results = json.loads((run / "results.json").read_text())
    status, _, stderr = evaluate([run, "--checkpoint", "last", "--k", 10, "--n-test", 32], capsys)
    assert status == 0, stderr
    [record] = json.loads((run / "eval.json").read_text())["evaluations"].values()
    # The same schema: the numbers' keys agree, down to the log-likelihood's.
    for key in ("test", "kl_per_dim", "active_units", "log_likelihood"):
        assert key in results and key in record, key
    assert set(results["log_likelihood"]) == set(record["log_likelihood"])
    assert set(results["active_units"]) == set(record["active_units"])
    # One formula: s (ddof=1) / sqrt(n), in both.  The training run's 32 images give n - 1 = 31.
    for ll in (results["log_likelihood"], record["log_likelihood"]):
        assert ll["images"] == 32 and ll["standard_error"] > 0
    assert record["weights"] == str(run / "checkpoints" / "last.npz")


def test_a_relative_data_dir_is_recorded_absolute_and_resumes_from_anywhere(
    tiny, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tiny.parent)
    run = tmp_path / train(tiny, "runs", capsys, data_dir=tiny.name)  # --data-dir data, --out runs
    config = json.loads((run / "config.json").read_text())
    assert config["data_dir"] == str(tiny) and config["out"] == str(tmp_path / "runs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    status, _, stderr = run_main(["--resume", run, "--epochs", 2], capsys)
    assert status == 0, stderr
    status, _, stderr = evaluate([run, "--k", 5, "--n-test", 8], capsys)
    assert status == 0, stderr


def test_training_and_the_figures_command_draw_into_one_folder(tiny, tmp_path, capsys):
    run = train(tiny, tmp_path / "runs", capsys, "--figures")
    drawn = sorted(path.name for path in (run / "figures").iterdir())
    assert "samples.png" in drawn and not list(run.glob("*.png"))
    before = (run / "figures" / "samples.png").stat().st_mtime_ns
    assert figures_main(["samples", str(run), "--seed", "3"]) == 0
    assert sorted(path.name for path in (run / "figures").iterdir()) == drawn  # replaced
    assert (run / "figures" / "samples.png").stat().st_mtime_ns != before
    assert not list(run.glob("*.png"))


# ----- evaluate --out, and evaluate on an autoencoder ---------------------------------------


def test_evaluate_out_says_what_is_true_of_the_path(tiny, tmp_path, capsys):
    run = train(tiny, tmp_path / "runs", capsys)
    quick = ["--k", 2, "--n-test", 8]
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    status, _, stderr = evaluate([run, *quick, "--out", notes], capsys)
    assert status == 2
    assert one_line(stderr) == (
        f"error: --out {notes} holds something other than npvae's evaluations; give a new "
        "file, or one that python -m npvae.evaluate wrote"
    )
    assert notes.read_text() == "my notes\n"  # untouched
    status, _, stderr = evaluate([run, *quick, "--out", tmp_path], capsys)
    assert status == 2
    assert one_line(stderr) == (
        f"error: --out {tmp_path} is a folder; give a file name in it, such as "
        f"{tmp_path / 'eval.json'}"
    )
    status, _, stderr = evaluate([run, *quick, "--out", notes / "e.json"], capsys)
    assert status == 2
    assert one_line(stderr).endswith(f"{notes} is a file, not a folder; choose another path")
    # A missing folder is made, as figures makes its own.
    new = tmp_path / "new" / "deeper" / "e.json"
    status, stdout, stderr = evaluate([run, *quick, "--out", new], capsys)
    assert status == 0, stderr
    assert list(json.loads(new.read_text())["evaluations"]) == ["best@1 k=2 n_test=8 seed=1"]
    # The run's own eval.json, damaged: it names the file and is not overwritten.
    (run / "eval.json").write_text("{not json")
    status, _, stderr = evaluate([run, *quick], capsys)
    assert status == 2 and "eval.json is damaged" in one_line(stderr)
    assert (run / "eval.json").read_text() == "{not json"


def test_an_autoencoder_is_evaluated_once_with_no_k_in_its_key(tiny, tmp_path, capsys):
    run = train(tiny, tmp_path / "runs", capsys, "--model", "ae")
    status, _, stderr = evaluate([run, "--k", 50], capsys)
    assert status == 2
    assert one_line(stderr) == (
        "error: --k is for a VAE or IWAE; ae has no latent prior to sample, so leave it out"
    )
    assert not (run / "eval.json").exists()
    for _ in range(2):
        status, _, stderr = evaluate([run], capsys)
        assert status == 0, stderr
    keys = list(json.loads((run / "eval.json").read_text())["evaluations"])
    assert keys == ["best@1 n_test=64 seed=1"]  # one evaluation, one entry


def test_two_evaluations_at_once_both_land(tiny, tmp_path, capsys):
    run = train(tiny, tmp_path / "runs", capsys)
    checksums = json.dumps(write_tiny_mnist(tmp_path / "same-data"))  # the same files' sums
    launcher = LAUNCHER.replace(
        "from npvae.train import main", "from npvae.evaluate.__main__ import main"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", launcher, checksums, str(run), "--k", "2", "--n-test", str(n)],
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for n in (8, 9, 10, 11)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0] * 4, [p.stderr.read() for p in processes]
    keys = sorted(json.loads((run / "eval.json").read_text())["evaluations"])
    assert keys == sorted(f"best@1 k=2 n_test={n} seed=1" for n in (8, 9, 10, 11))


def test_figures_of_a_bare_model_file_never_draw_another_dataset_silently(
    tmp_path, monkeypatch, capsys
):
    use_tiny_mnist(monkeypatch, tmp_path)
    monkeypatch.setitem(sources.DATASETS, "mnist", sources.DATASETS["mnist"])
    path = VAE(input_dim=784, hidden=[8], latent_dim=2).save(tmp_path / "vae.npz")
    monkeypatch.chdir(tmp_path / "empty-cache")  # nowhere holds MNIST: no --data-dir given
    assert figures_main(["recon", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {path} is a model file, which does not record its data;")
    assert "give --dataset" in line and "training" not in line
    assert not list(tmp_path.glob("vae-*.png"))
