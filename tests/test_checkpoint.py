"""npvae.app.checkpoint: model, optimizer, random state and position survive a save and load."""

from __future__ import annotations

import numpy as np
import pytest

from npvae import models
from npvae.app.checkpoint import (
    Checkpoint,
    check_optimizer_state,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from npvae.errors import CheckpointError
from npvae.models import IWAE, VAE, DenoisingAutoencoder
from npvae.optim import Adam, make_optimizer
from npvae.serialize import load_arrays, save_arrays

CONFIG = {"model": "vae", "latent": 3, "hidden": [16], "data_dir": None}


def trained(model, optimizer, rng, steps: int = 3):
    """Take a few optimizer steps on random binary data so every state is non-trivial."""
    x = (rng.random((8, model.config["input_dim"])) < 0.3).astype(model.dtype)
    for _ in range(steps):
        model.loss(x, rng)
        optimizer.step(model.grads)
    return x


@pytest.fixture
def saved(tmp_path):
    """A VAE after three Adam steps, saved mid-epoch; returns what went in and the path."""
    rng = np.random.default_rng(0)
    model = VAE(input_dim=12, hidden=[16], latent_dim=3, seed=1)
    optimizer = make_optimizer("adam", model.params, 1e-2)
    trained(model, optimizer, rng)
    order = np.random.default_rng(5).permutation(40)
    path = save_checkpoint(
        tmp_path / "checkpoints" / "last.npz",
        model,
        optimizer,
        rng,
        epoch=3,
        step=27,
        config=CONFIG,
        extra={"best": 81.5, "partial": {"batch": 2, "sums": {"loss": 1.25}, "n": 16}},
        run_arrays={"order": order},
    )
    return {"model": model, "optimizer": optimizer, "rng": rng, "order": order, "path": path}


def test_round_trip_restores_everything(saved):
    loaded = load_checkpoint(saved["path"])
    assert isinstance(loaded, Checkpoint)
    model = loaded.model
    assert type(model) is VAE and model.config == saved["model"].config
    assert sorted(model.params) == sorted(saved["model"].params)
    for name, value in saved["model"].params.items():
        assert np.array_equal(model.params[name], value) and model.params[name].dtype == value.dtype
    state = saved["optimizer"].state_dict()
    assert sorted(loaded.optimizer_state) == sorted(state)
    for name, value in state.items():
        assert np.array_equal(loaded.optimizer_state[name], value), name
    assert (loaded.epoch, loaded.step) == (3, 27)
    assert loaded.config == CONFIG
    assert loaded.extra == {"best": 81.5, "partial": {"batch": 2, "sums": {"loss": 1.25}, "n": 16}}
    assert list(loaded.run_arrays) == ["order"]
    assert np.array_equal(loaded.run_arrays["order"], saved["order"])
    assert not list(saved["path"].parent.glob(".*"))  # the temporary file was renamed


def test_restored_rng_continues_the_same_stream(saved):
    restored = restore_rng(load_checkpoint(saved["path"]).rng_state, saved["path"])
    assert np.array_equal(restored.standard_normal(50), saved["rng"].standard_normal(50))
    assert np.array_equal(restored.permutation(30), saved["rng"].permutation(30))


def test_training_continues_identically_after_loading(saved):
    """The loaded model, optimizer and generator take the same next steps as the originals."""
    loaded = load_checkpoint(saved["path"])
    optimizer = make_optimizer("adam", loaded.model.params, 1e-2)
    optimizer.load_state_dict(loaded.optimizer_state)
    rng = restore_rng(loaded.rng_state, saved["path"])
    trained(loaded.model, optimizer, rng, steps=2)
    trained(saved["model"], saved["optimizer"], saved["rng"], steps=2)
    for name, value in saved["model"].params.items():
        assert np.array_equal(loaded.model.params[name], value), name


@pytest.mark.parametrize(
    "model",
    [
        IWAE(input_dim=9, hidden=[7], latent_dim=2, k=3, dtype="float64", seed=2),
        DenoisingAutoencoder(input_dim=9, hidden=[7], code_dim=2, noise="gaussian", seed=3),
    ],
    ids=["iwae-float64", "denoising-ae"],
)
def test_other_models_and_sgd_state_round_trip(model, tmp_path):
    rng = np.random.default_rng(4)
    optimizer = make_optimizer("momentum", model.params, 1e-2)
    trained(model, optimizer, rng, steps=2)
    path = save_checkpoint(tmp_path / "c.npz", model, optimizer, rng, epoch=1, step=2, config={})
    loaded = load_checkpoint(path)
    assert type(loaded.model) is type(model) and loaded.model.config == model.config
    for name, value in model.params.items():
        assert np.array_equal(loaded.model.params[name], value)
    for name, value in optimizer.state_dict().items():
        assert np.array_equal(loaded.optimizer_state[name], value)
    assert loaded.run_arrays == {} and loaded.extra == {}


def test_models_load_reads_the_model_out_of_a_checkpoint(saved):
    model = models.load(saved["path"])
    assert type(model) is VAE
    for name, value in saved["model"].params.items():
        assert np.array_equal(model.params[name], value)
    assert VAE.load(saved["path"]).config == saved["model"].config
    with pytest.raises(CheckpointError, match="not 'iwae'"):
        IWAE.load(saved["path"])


def test_a_model_file_is_not_a_checkpoint(saved, tmp_path):
    path = saved["model"].save(tmp_path / "model.npz")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_checkpoint(path)


def _truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flipped(path):
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 3, len(data) // 3 + 64):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _garbage(path):
    path.write_bytes(b"this is not a zip file at all" * 10)


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncated, _flipped, _garbage, _empty])
def test_damaged_checkpoint_is_a_checkpoint_error(saved, damage):
    damage(saved["path"])
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(saved["path"])
    message = str(caught.value)
    assert message.startswith(str(saved["path"])) and "\n" not in message


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "absent.npz")


def test_damaged_rng_state_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="random-generator state"):
        restore_rng({"bit_generator": "NoSuchGenerator"}, "last.npz")
    with pytest.raises(CheckpointError, match="random-generator state"):
        restore_rng({"bit_generator": "PCG64", "state": "garbage"}, "last.npz")


# ----- a saved optimizer state, checked where it is read


def _params():
    return {"enc.0.W": np.zeros((2, 3)), "enc.0.b": np.zeros(4)}


def _mismatched_states():
    adam_state = make_optimizer("adam", _params(), 0.01).state_dict()
    missing = dict(adam_state)
    del missing["v/enc.0.b"]
    return {
        "missing key": missing,
        "extra key": {**adam_state, "m/dec.0.W": np.zeros(3)},
        "wrong shape": {**adam_state, "m/enc.0.W": np.zeros((3, 2))},
        "negative step": {**adam_state, "step": np.array(-1)},
        "float step": {**adam_state, "step": np.array(2.5)},
        "nan lr": {**adam_state, "lr": np.array(np.nan)},
        "text buffer": {**adam_state, "m/enc.0.b": np.array(["a", "b", "c", "d"])},
        "negative second moment": {**adam_state, "v/enc.0.W": np.full((2, 3), -1.0)},
        "nan first moment": {**adam_state, "m/enc.0.b": np.full(4, np.nan)},
        "other optimizer": make_optimizer("momentum", _params(), 0.01).state_dict(),
    }


@pytest.mark.parametrize("case", list(_mismatched_states()))
def test_mismatched_state_raises_checkpoint_error_and_changes_nothing(case):
    """Checked as a checkpoint's is, then loaded: refused in one line, the optimizer as it was."""
    state = _mismatched_states()[case]
    params = _params()
    optimizer = make_optimizer("adam", params, 0.01)
    optimizer.step({name: np.ones_like(param) for name, param in params.items()})
    before = optimizer.state_dict()
    with pytest.raises(CheckpointError) as raised:
        optimizer.load_state_dict(check_optimizer_state(state, params, "last.npz"))
    message = str(raised.value)
    assert message and "\n" not in message
    after = optimizer.state_dict()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value)


def test_adam_refuses_negative_or_nan_moments():
    model = VAE(input_dim=12, hidden=[16], latent_dim=3, seed=1)
    name = next(iter(model.params))
    for key, value, rule in (
        (f"v/{name}", -1.0, "finite and >= 0"),
        (f"m/{name}", np.nan, "finite"),
    ):
        state = Adam(model.params).state_dict()
        state[key].flat[0] = value
        with pytest.raises(CheckpointError, match=f"'{key}' must be {rule}"):
            check_optimizer_state(state, model.params, "last.npz")


def test_a_checkpoint_with_a_damaged_optimizer_state_does_not_load(saved):
    arrays, header = load_arrays(saved["path"])
    arrays["optim/v/encoder.0.W"][0, 0] = -1.0
    save_arrays(saved["path"], arrays, header)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(saved["path"])
    message = str(caught.value)
    assert message.startswith(str(saved["path"])) and "'v/encoder.0.W' must be finite" in message
