"""Files saved by an earlier npvae load, and give bit for bit the losses they gave then.

``tests/data/*-30aa56a.npz`` are a VAE, an IWAE, a two-layer IWAE and a
denoising autoencoder saved with ``Model.save``, and a training checkpoint,
all written by npvae at commit 30aa56a (before the application moved into
``npvae/app`` and the kernels into ``npvae/_compiled``).
``saved-30aa56a.json`` holds the loss that commit computed for each on the
same batch and noise.  Today's code must read them and agree to the last bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import npvae.models
from npvae.app.checkpoint import load_checkpoint
from npvae.app.config import from_dict

DATA = Path(__file__).parent / "data"
RECORD = json.loads((DATA / "saved-30aa56a.json").read_text())


def batch() -> np.ndarray:
    rng = np.random.default_rng(RECORD["batch_seed"])
    return (rng.random((6, 784)) < 0.3).astype(np.float32)


def loss_of(model) -> float:
    noise = np.random.default_rng(RECORD["noise_seed"])
    return model.loss(batch(), noise, grad=False)["loss"]


@pytest.mark.parametrize("kind", ["vae", "iwae", "iwae2", "denoising-ae"])
def test_a_model_saved_before_loads_and_gives_the_same_loss(kind):
    model = npvae.models.load(DATA / f"{kind}-30aa56a.npz")
    assert model.kind == kind
    assert loss_of(model) == RECORD["losses"][kind]  # to the last bit


def test_a_checkpoint_saved_before_loads_whole():
    saved = load_checkpoint(DATA / "checkpoint-30aa56a.npz")
    assert (saved.epoch, saved.step) == (RECORD["checkpoint_epoch"], RECORD["checkpoint_step"])
    assert loss_of(saved.model) == RECORD["losses"]["checkpoint"]
    moments = {f"{m}/{name}" for name in saved.model.params for m in ("m", "v")}
    assert moments <= set(saved.optimizer_state)  # Adam's state, checked as it loaded
    # Its run settings too, as a resume or an evaluation reads them: a setting added since
    # (npvae.app.config.ADDED_LATER) must not make the older file "damaged".
    config = from_dict(saved.config, "checkpoint-30aa56a.npz")
    assert config.model == saved.model.kind and config.objective == "iwae"
