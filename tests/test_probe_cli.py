"""``python -m npvae.evaluate RUN --probe``: a linear probe on a saved model's codes.

Runs are trained on the tiny MNIST of ``train_support`` (256 training and 64
test images of embedded digits, a 784-32-2 model); each probe takes 2,000 steps.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from train_support import evaluations, one_line, train_run, use_tiny_mnist
from train_support import run_evaluate as evaluate

import npvae.app.runs
import npvae.models
from npvae.app.runs import prepare_images
from npvae.data import load_dataset
from npvae.evaluate.probing import PROBE_SETTINGS
from npvae.probe import LinearProbe


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    return use_tiny_mnist(monkeypatch, tmp_path)


def test_a_vae_runs_probe_is_fitted_on_the_codes_of_its_training_set(tiny, tmp_path, capsys):
    _, run = train_run(tiny, tmp_path / "runs", capsys, "--binarize", "dynamic")
    status, out, err = evaluate([run, "--probe"], capsys)
    assert status == 0, err
    assert "linear probe" in out and "256 training images and 64 test images" in out
    assert "binarised once with seed 1" in out
    [(key, record)] = evaluations(run).items()
    assert key == "best@2 probe n_test=64 seed=1"
    probe = record["probe"]
    assert probe["train_images"] == 256 and probe["seed"] == 1
    assert probe["codes"]["features"] == 2 and probe["pixels"]["features"] == 784
    assert probe["codes"]["steps"] == PROBE_SETTINGS["min_steps"]  # 256 images: 40 steps a pass
    assert record["binarize_seed"] == 1 and record["dataset"] == "mnist"

    # The same numbers by hand: q(z|x)'s means of the images binarised once with seed 1.
    data = load_dataset("mnist", tiny)
    model = npvae.models.load(run / "checkpoints" / "best.npz")
    train = model.codes(prepare_images(data.x_train, "static", 1, model.dtype))
    test = model.codes(prepare_images(data.x_test, "static", 1, model.dtype))
    by_hand = LinearProbe(2, 10, l2=PROBE_SETTINGS["l2"]).fit(
        train, data.y_train, steps=2000, batch_size=128, lr=PROBE_SETTINGS["lr"], seed=1
    )
    assert probe["codes"]["test_accuracy"] == by_hand.accuracy(test, data.y_test)
    assert probe["codes"]["train_accuracy"] == by_hand.accuracy(train, data.y_train)
    assert probe["codes"]["test_cross_entropy"] == by_hand.cross_entropy(test, data.y_test)
    assert f"{probe['codes']['test_accuracy']:.2%}" in out
    # The pixels are read well even from 256 images; chance is 10%.
    assert probe["pixels"]["test_accuracy"] > 0.6


@pytest.mark.parametrize("model", ["ae", "denoising-ae"])
def test_an_autoencoders_probe_reads_its_code(model, tiny, tmp_path, capsys):
    _, run = train_run(tiny, tmp_path / "runs", capsys, "--model", model, "--latent", "5")
    status, out, err = evaluate([run, "--probe", "--n-test", "50", "--seed", "3"], capsys)
    assert status == 0, err
    [(key, record)] = evaluations(run).items()
    assert key == "best@2 probe n_test=50 seed=3" and record["binarize"] == "none"
    assert record["probe"]["codes"]["features"] == 5 and "grey levels" in out
    for row in record["probe"].values():
        if isinstance(row, dict):
            assert 0.0 <= row["test_accuracy"] <= 1.0 and 0.0 <= row["train_accuracy"] <= 1.0


def test_a_probe_sits_beside_the_other_evaluations_and_is_reproducible(tiny, tmp_path, capsys):
    _, run = train_run(tiny, tmp_path / "runs", capsys)
    assert evaluate([run, "--k", "5"], capsys)[0] == 0
    assert evaluate([run, "--probe"], capsys)[0] == 0
    first = evaluations(run)
    assert sorted(first) == ["best@2 k=5 n_test=64 seed=1", "best@2 probe n_test=64 seed=1"]
    assert evaluate([run, "--probe"], capsys)[0] == 0
    again = evaluations(run)["best@2 probe n_test=64 seed=1"]["probe"]
    before = first["best@2 probe n_test=64 seed=1"]["probe"]
    assert again["codes"] == before["codes"] and again["pixels"] == before["pixels"]


def test_a_bare_model_file_is_probed_on_the_data_it_names(tiny, tmp_path, capsys):
    path = npvae.models.VAE(input_dim=784, hidden=[16], latent_dim=3, seed=0).save(
        tmp_path / "model.npz"
    )
    status, _, err = evaluate([path, "--data-dir", tiny, "--probe"], capsys)
    assert status == 0, err
    saved = json.loads((tmp_path / "model.eval.json").read_text())["evaluations"]
    assert saved["file probe n_test=64 seed=0"]["probe"]["codes"]["features"] == 3


def test_mistakes_are_one_line_and_status_2(tiny, tmp_path, capsys, monkeypatch):
    _, run = train_run(tiny, tmp_path / "runs", capsys)
    status, out, err = evaluate([run, "--probe", "--k", "5"], capsys)
    assert status == 2 and "leave out --k" in one_line(err) and out == ""

    def unlabelled(*args, **kwargs):
        data = load_dataset(*args, **kwargs)
        empty = np.zeros(0, dtype=np.uint8)
        return dataclasses.replace(data, y_train=empty, y_test=empty)

    with monkeypatch.context() as patch:
        patch.setattr(npvae.app.runs, "load_dataset", unlabelled)
        status, out, err = evaluate([run, "--probe"], capsys)
    assert status == 2 and "mnist has no labels" in one_line(err) and out == ""

    for name in tiny.iterdir():  # the run's dataset is gone
        name.unlink()
    status, out, err = evaluate([run, "--probe"], capsys)
    assert status == 2 and "cannot be loaded now" in one_line(err) and out == ""
    assert not (run / "eval.json").exists()
