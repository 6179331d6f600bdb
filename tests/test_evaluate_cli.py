"""``python -m npvae.evaluate``: a saved run's numbers, eval.json, and its one-line errors.

Runs are trained on the tiny MNIST of ``train_support`` (a 784-32-2 model, a
second or two each); the evaluations use a few importance samples.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from train_support import (
    evaluations,
    one_line,
    read_metrics,
    run_main,
    train_run,
    use_tiny_mnist,
)
from train_support import (
    run_evaluate as evaluate,
)

import npvae.models
from npvae.app.runs import run_title
from npvae.models import VAE


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    return use_tiny_mnist(monkeypatch, tmp_path)


# ----- what it reports ---------------------------------------------------------------------


def test_a_vae_run_gets_the_elbo_its_terms_log_px_and_active_units(tiny, tmp_path, capsys):
    _, run = train_run(tiny, tmp_path / "runs", capsys, "--binarize", "dynamic")
    status, out, err = evaluate([run, "--k", "20"], capsys)
    assert status == 0, err
    assert "ELBO (one sample)" in out and "importance samples" in out and "active units" in out
    assert "binarised once with seed 1" in out and "most KL first" in out
    [(key, record)] = evaluations(run).items()
    assert key == "best@2 k=20 n_test=64 seed=1"
    test, ll = record["test"], record["log_likelihood"]
    assert test["elbo"] == pytest.approx(-(test["recon"] + test["kl"]), rel=1e-6)
    assert sum(record["kl_per_dim"]) == pytest.approx(test["kl"], rel=1e-3)
    assert len(record["kl_per_dim"]) == 2 and record["active_units"]["of"] == 2
    assert ll["k"] == 20 and ll["standard_error"] > 0 and ll["seconds"] >= 0
    assert ll["nats"] >= ll["elbo_same_samples"]
    assert record["n_test"] == 64 and record["binarize_seed"] == 1 and record["epoch"] == 2


def test_a_two_layer_iwae_run_trains_resumes_and_is_evaluated(tiny, tmp_path, capsys):
    layers = ["--model", "iwae2", "--activation", "tanh", "--hidden2", "8", "--latent2", "3"]
    stdout, run = train_run(tiny, tmp_path / "runs", capsys, *layers, "--k", "2", "--figures")
    assert "the negative k-sample bound" in stdout.strip().splitlines()[-1]
    saved = npvae.models.load(run / "checkpoints" / "last.npz")
    assert run_title(saved, "mnist", 2) == "two-layer IWAE 784-32-2-8-3 on MNIST, epoch 2"
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["loss"] == pytest.approx(-results["test"]["bound"])
    assert len(results["kl_per_dim"]) == 2 + 3
    assert sum(results["kl_per_dim"]) == pytest.approx(results["test"]["kl"], abs=1e-3)
    assert np.isfinite(results["log_likelihood"]["nats"])
    drawn = {path.name for path in (run / "figures").glob("*.png")}
    assert {"reconstructions.png", "samples.png", "latent.png", "interpolations.png"} <= drawn
    assert "kl.png" not in drawn  # z1's prior is p(z1|z2): no closed-form KL per unit
    row = read_metrics(run)[-1]
    assert float(row["test_kl"]) > 0

    status, _, err = run_main(["--resume", run, "--epochs", "3"], capsys)
    assert status == 0, err
    assert [int(row["epoch"]) for row in read_metrics(run)] == [1, 2, 3]

    status, out, err = evaluate([run, "--k", "20", "--checkpoint", "last"], capsys)
    assert status == 0, err
    [record] = evaluations(run).values()
    assert record["test"]["bound_k"] == 2 and "bound" in record["test"]
    units = record["active_units"]
    assert units["of"] == 5 and len(record["kl_per_dim"]) == 5
    active = np.array(units["variances"]) > units["threshold"]
    assert units["layers"] == {"z1": [int(active[:2].sum()), 2], "z2": [int(active[2:].sum()), 3]}
    assert re.search(rf"in z2 +{units['layers']['z2'][0]} of 3\n", out)
    ll = record["log_likelihood"]
    assert ll["k"] == 20 and ll["nats"] >= ll["elbo_same_samples"]


def test_a_two_layer_model_trained_on_the_mean_of_its_elbos_is_reported_as_such(
    tiny, tmp_path, capsys
):
    """--objective vae: the loss is the mean of k ELBOs, recon + KL, and no bound is claimed."""
    layers = ["--model", "iwae2", "--activation", "tanh", "--hidden2", "8", "--latent2", "3"]
    stdout, run = train_run(tiny, tmp_path / "runs", capsys, *layers, "--objective", "vae")
    assert "-ELBO, mean of k" in stdout and "-L_k" not in stdout
    closing = stdout.strip().splitlines()[-1]
    assert "bound" not in closing and "reconstruction" in closing
    results = json.loads((run / "results.json").read_text())
    assert "bound" not in results["test"]
    test = results["test"]
    assert test["loss"] == pytest.approx(test["recon"] + test["kl"], rel=1e-6)
    saved = npvae.models.load(run / "checkpoints" / "last.npz")
    assert saved.config["objective"] == "vae"
    assert run_title(saved, "mnist", 2) == "two-layer VAE 784-32-2-8-3 on MNIST, epoch 2"
    status, out, err = evaluate([run, "--k", "20"], capsys)
    assert status == 0, err
    assert "k-sample bound" not in out and "ELBO (one sample)" in out


def test_evaluations_are_kept_side_by_side_and_are_reproducible(tiny, tmp_path, capsys):
    _, run = train_run(tiny, tmp_path / "runs", capsys, "--binarize", "static")
    # One thread each time: --threads auto follows the load, and a product split between
    # two threads rounds its last bits differently from one on one.
    one = ["--threads", "1"]
    assert evaluate([run, "--k", "10", *one], capsys)[0] == 0
    first = evaluations(run)
    assert evaluate([run, "--k", "30", "--n-test", "16", "--seed", "9", *one], capsys)[0] == 0
    assert evaluate([run, "--k", "10", "--checkpoint", "last", *one], capsys)[0] == 0
    both = evaluations(run)
    assert set(both) == {
        "best@2 k=10 n_test=64 seed=1",
        "best@2 k=30 n_test=16 seed=9",
        "last@2 k=10 n_test=64 seed=1",
    }
    assert both["best@2 k=10 n_test=64 seed=1"] == first["best@2 k=10 n_test=64 seed=1"]
    # The same key again gives the same numbers: every draw comes from --seed.
    assert evaluate([run, "--k", "10", *one], capsys)[0] == 0
    again = evaluations(run)["best@2 k=10 n_test=64 seed=1"]
    for key in ("test", "log_likelihood", "kl_per_dim", "active_units"):
        if key == "log_likelihood":
            again[key].pop("seconds"), first["best@2 k=10 n_test=64 seed=1"][key].pop("seconds")
        assert again[key] == first["best@2 k=10 n_test=64 seed=1"][key], key
    # Another seed binarises the test set differently: another ELBO.
    other = evaluations(run)["best@2 k=30 n_test=16 seed=9"]
    assert other["binarize_seed"] == 9 and other["test"] != again["test"]


def test_the_training_runs_own_test_loss_is_the_evaluations_with_its_seed(tiny, tmp_path, capsys):
    """The run evaluates its test set binarised with the same seed as the CLI's default."""
    _, run = train_run(tiny, tmp_path / "runs", capsys, "--binarize", "static")
    assert evaluate([run, "--k", "0", "--checkpoint", "last"], capsys)[0] == 0
    [record] = evaluations(run).values()
    results = json.loads((run / "results.json").read_text())
    assert "log_likelihood" not in record
    assert results["evaluation"]["binarize_seed"] == record["binarize_seed"] == 1
    # Different noise draws (the run's own seeds), the same images and weights: close.
    assert record["test"]["elbo"] == pytest.approx(results["test"]["elbo"], rel=0.05)


def test_an_iwae_report_names_its_bound(tiny, tmp_path, capsys):
    stdout, run = train_run(tiny, tmp_path / "runs", capsys, "--model", "iwae", "--k", "3")
    closing = stdout.splitlines()[-1]
    assert "negative k-sample bound" in closing and "one-sample ELBO" in closing
    status, out, _ = evaluate([run, "--k", "10"], capsys)
    assert status == 0 and "k-sample bound L_3" in out
    [record] = evaluations(run).values()
    assert record["test"]["bound_k"] == 3
    assert record["test"]["bound"] >= record["test"]["elbo"] - 1.0


@pytest.mark.parametrize(
    "model, flags, keys",
    [
        ("ae", [], {"recon"}),
        ("denoising-ae", ["--noise", "mask", "--noise-level", "0.5"], {"recon", "recon_corrupted"}),
        ("contractive-ae", ["--hidden", "none"], {"recon", "jacobian_frobenius"}),
        ("sparse-ae", [], {"recon", "mean_activation", "target"}),
    ],
)
def test_autoencoders_get_their_own_measures(model, flags, keys, tiny, tmp_path, capsys):
    _, run = train_run(tiny, tmp_path / "runs", capsys, "--model", model, *flags)
    status, out, err = evaluate([run], capsys)
    assert status == 0, err
    [record] = evaluations(run).values()
    assert set(record["test"]) == {"loss", *keys} and "nats" in record["unit"]
    assert "reconstruction error" in out and "log p(x)" not in out
    if model == "denoising-ae":  # corrupting half the pixels makes reconstruction worse
        assert record["test"]["recon_corrupted"] > record["test"]["recon"]
    if model == "sparse-ae":
        assert len(record["test"]["mean_activation"]) == 2 and record["test"]["target"] == 0.05


def test_the_last_epochs_row_and_the_closing_line_agree(tiny, tmp_path, capsys):
    """One test loss per set of weights: metrics.csv's last row, results.json, the summary."""
    stdout, run = train_run(tiny, tmp_path / "runs", capsys)
    last_row = read_metrics(run)[-1]
    results = json.loads((run / "results.json").read_text())
    assert float(last_row["test_loss"]) == results["test"]["loss"]
    assert float(last_row["test_kl"]) == results["test"]["kl"]
    assert f"test loss {results['test']['loss']:.2f}" in stdout.splitlines()[-1]
    assert results["evaluation"]["weights"] == str(run / "checkpoints" / "last.npz")


def test_a_bare_model_file_names_its_data(tiny, tmp_path, capsys):
    model = VAE(input_dim=784, hidden=[16], latent_dim=2, seed=0)
    path = model.save(tmp_path / "model.npz")
    status, out, err = evaluate([path, "--data-dir", tiny, "--k", "5"], capsys)
    assert status == 0, err
    saved = json.loads((tmp_path / "model.eval.json").read_text())["evaluations"]
    assert list(saved) == ["file k=5 n_test=64 seed=0"]
    assert saved["file k=5 n_test=64 seed=0"]["binarize"] == "static"


# ----- mistakes: one line, exit 2, nothing written --------------------------------------------


def test_mistakes_are_one_line_and_status_2(tiny, tmp_path, capsys):
    _, run = train_run(tiny, tmp_path / "runs", capsys)
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    truncated = tmp_path / "truncated" / "checkpoints"
    truncated.mkdir(parents=True)
    best = (run / "checkpoints" / "best.npz").read_bytes()
    (truncated / "best.npz").write_bytes(best[: len(best) // 2])
    (truncated.parent / "config.json").write_text((run / "config.json").read_text())
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([tmp_path / "missing"], "no such run folder or file"),
        ([empty], "not a run folder"),
        ([text], "notes.txt"),
        ([truncated.parent], "damaged or truncated"),
        ([run, "--k", "-3"], "--k must be 0 or more"),
        ([run, "--k", "many"], "--k must be a whole number"),
        ([run, "--checkpoint", "first"], "invalid choice"),
        ([run, "--dataset", "mnist"], "leave out --dataset"),
        ([run, "--data-dir", tmp_path / "nowhere"], "is not a folder"),
    ]
    for argv, words in cases:
        status, out, err = evaluate(argv, capsys)
        assert status == 2, (argv, out, err)
        assert words in one_line(err), (argv, err)
    assert not (run / "eval.json").exists() and not (empty / "eval.json").exists()


def test_a_damaged_eval_json_is_refused_not_overwritten(tiny, tmp_path, capsys):
    _, run = train_run(tiny, tmp_path / "runs", capsys)
    (run / "eval.json").write_text('{"evaluations": [1, 2')
    status, _, err = evaluate([run, "--k", "5"], capsys)
    assert status == 2 and "eval.json is damaged" in one_line(err)
    assert (run / "eval.json").read_text() == '{"evaluations": [1, 2'


def test_as_a_command_it_exits_0_or_2(tmp_path):
    command = [sys.executable, "-m", "npvae.evaluate"]
    done = subprocess.run([*command, tmp_path / "nothing"], capture_output=True, text=True)
    assert done.returncode == 2 and "no such run folder" in one_line(done.stderr)
    assert done.stdout == ""
    model = VAE(input_dim=784, hidden=[8], latent_dim=2, seed=0)
    model.save(tmp_path / "m.npz")
    done = subprocess.run(
        [*command, tmp_path / "m.npz", "--dataset", "digits", "--k", "2", "--n-test", "50"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "log p(x), 2 importance samples" in done.stdout
    assert (tmp_path / "m.eval.json").is_file()
    assert np.isfinite(
        json.loads((tmp_path / "m.eval.json").read_text())["evaluations"][
            "file k=2 n_test=50 seed=0"
        ]["log_likelihood"]["nats"]
    )


def test_threads_are_chosen_and_recorded(tiny, tmp_path, capsys):
    _, run = train_run(tiny, tmp_path / "runs", capsys)
    status, out, _ = evaluate([run, "--k", "5", "--threads", "1"], capsys)
    assert status == 0 and "threads: 1 (as asked)" in out
    assert list(evaluations(run).values())[0]["threads"] == 1
    status, _, err = evaluate([run, "--k", "5", "--threads", "none"], capsys)
    assert status == 2 and "--threads must be auto or a whole number" in one_line(err)
