"""Models as a user meets them: training in float32, bad input, save and load.

* every kind overfits a batch of 32 (the loss at least halves);
* float32 training stays float32 (parameters, gradients, optimizer, reports);
* a float64 or wrongly shaped input is a ConfigError;
* ``save`` -> ``load`` gives bit-identical outputs, and every damaged, foreign
  or unwritable file is a one-line CheckpointError that names the file.
"""

import errno
import io
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from damage import (
    duplicate_first_member,
    edit_array,
    edit_header,
    members,
    npy_header_claiming,
    replace_member,
    rezip,
)

import npvae.models
import npvae.serialize
from npvae.errors import CheckpointError, ConfigError
from npvae.models import (
    IWAE,
    VAE,
    Autoencoder,
    ContractiveAutoencoder,
    DenoisingAutoencoder,
    SparseAutoencoder,
)
from npvae.optim import Adam
from npvae.serialize import HEADER_KEY, save_arrays

INPUT_DIM = 10

# kind -> (class, constructor arguments besides input_dim, dtype and seed)
KINDS = {
    "ae": (Autoencoder, {"hidden": [6], "code_dim": 3, "activation": "tanh"}),
    "sparse-ae": (SparseAutoencoder, {"hidden": [6], "code_dim": 3, "activation": "tanh"}),
    "denoising-ae": (DenoisingAutoencoder, {"hidden": [6], "code_dim": 3, "activation": "tanh"}),
    "contractive-ae": (ContractiveAutoencoder, {"hidden": (), "code_dim": 3}),
    "vae": (VAE, {"hidden": [6], "latent_dim": 3, "activation": "tanh"}),
    "iwae": (IWAE, {"hidden": [6], "latent_dim": 3, "activation": "tanh", "k": 3}),
}

# Variants with more moving parts, for the dtype and save/load tests.
VARIANTS = {
    **{kind: (kind, {}) for kind in KINDS},
    "sparse-ae-l1": ("sparse-ae", {"sparsity": "l1", "code_activation": "tanh"}),
    "denoising-ae-gaussian": ("denoising-ae", {"noise": "gaussian", "reconstruction": "squared"}),
    "denoising-ae-salt-pepper": ("denoising-ae", {"noise": "salt-pepper"}),
    "contractive-ae-tanh": ("contractive-ae", {"code_activation": "tanh"}),
    "vae-free-bits-warmup": ("vae", {"free_bits": 0.05, "warmup_steps": 10, "n_samples": 2}),
    "vae-gaussian-fixed": ("vae", {"likelihood": "gaussian", "init_log_var": -0.5}),
    "vae-gaussian-learned": ("vae", {"likelihood": "gaussian", "learned_var": True}),
    "iwae-gaussian-learned": ("iwae", {"likelihood": "gaussian", "learned_var": True}),
}


def _build(variant, dtype="float32", seed=0, input_dim=INPUT_DIM):
    kind, extra = VARIANTS[variant]
    cls, kwargs = KINDS[kind]
    return cls(input_dim=input_dim, dtype=dtype, seed=seed, **{**kwargs, **extra})


def _is_generative(model):
    return isinstance(model, VAE)


def _batch(model, n=4, seed=1):
    return (np.random.default_rng(seed).random((n, model.config["input_dim"])) < 0.4).astype(
        model.dtype
    )


def _report(model, x, seed=2, grad=False):
    """The training loss with the noise fixed by ``seed``."""
    if _is_generative(model):
        samples = model.config.get("k") or model.config["n_samples"]
        eps = np.random.default_rng(seed).standard_normal(
            (samples, len(x), model.latent_dim), dtype=model.dtype
        )
        return model.loss(x, eps=eps, step=3, grad=grad)
    return model.loss(x, np.random.default_rng(seed), grad=grad, corrupt=True)


def _moved_off_initialisation(model):
    """A few Adam steps, so that a loaded model matches only if the arrays were read."""
    optimizer = Adam(model.params, lr=0.05)
    x = _batch(model, n=8)
    for seed in range(3):
        _report(model, x, seed=seed, grad=True)
        optimizer.step(model.grads)
    return model


def _as_tuple(encoded):
    """``encode`` gives ``(mu, log_var)`` for the VAE and IWAE, the code for the others."""
    return encoded if isinstance(encoded, tuple) else (encoded,)


def _assert_names_the_file(err, path):
    message = str(err.value)
    assert str(path) in message, message
    assert "\n" not in message, message


# ----------------------------------------------------------------------------- overfitting


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_model_overfits_a_batch_of_32(kind):
    cls, kwargs = KINDS[kind]
    kwargs = {**kwargs, "hidden": [] if kind == "contractive-ae" else [64]}
    if cls in (VAE, IWAE):
        kwargs["latent_dim"] = 8
    else:
        kwargs["code_dim"] = 16
    model = cls(input_dim=64, seed=0, **kwargs)
    x = (np.random.default_rng(0).random((32, 64)) < 0.3).astype(np.float32)
    before = _report(model, x)["loss"]
    optimizer = Adam(model.params, lr=1e-2)
    rng = np.random.default_rng(1)
    for _ in range(300):
        model.loss(x, rng)
        optimizer.step(model.grads)
    after = _report(model, x)["loss"]
    # The VAE's KL stays (32 distinct examples need a few nats of code each) and
    # the contractive penalty too: those two end near a quarter, the others near 0.
    assert after < 0.5 * before, (before, after)


# ----------------------------------------------------------------------------- float32


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_float32_training_stays_float32(variant):
    model = _build(variant)
    x = _batch(model)
    optimizer = Adam(model.params, lr=1e-3)
    for seed in range(2):
        report = _report(model, x, seed=seed, grad=True)
        optimizer.step(model.grads)
    arrays = {**model.params, **{f"grad {k}": v for k, v in model.grads.items()}}
    arrays.update({f"report {k}": v for k, v in report.items() if isinstance(v, np.ndarray)})
    moments = {k: v for k, v in optimizer.state_dict().items() if "/" in k}  # "m/...", "v/..."
    assert len(moments) == 2 * len(model.params)
    arrays.update({f"adam {k}": v for k, v in moments.items()})
    encoded = model.encode(x)
    code = encoded[0] if _is_generative(model) else encoded
    arrays.update(code=code, decoded=model.decode(code), reconstruction=model.reconstruct(x))
    if _is_generative(model):
        arrays["log_var"] = encoded[1]
        arrays["sample"] = model.sample(3, np.random.default_rng(0))
        arrays["interpolation"] = model.interpolate(x[0], x[1], steps=4)
        eps = np.zeros((2, len(x), model.latent_dim), np.float32)
        arrays["log_importance_weights"] = model.log_importance_weights(x, eps)
    if isinstance(model, ContractiveAutoencoder):
        arrays["jacobian_norm"] = model.jacobian_norm(x)
    if isinstance(model, DenoisingAutoencoder):
        arrays["corrupted"] = model.corrupt(x, np.random.default_rng(0))
    leaks = {name: str(a.dtype) for name, a in arrays.items() if a.dtype != np.float32}
    assert not leaks, leaks
    scalars = {k: v for k, v in report.items() if not isinstance(v, np.ndarray)}
    assert all(type(v) is float and np.isfinite(v) for v in scalars.values()), scalars


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_params_and_grads_are_views_that_tile_two_flat_arrays(variant):
    """Every named array, in the model and in its layers, is a slice of flat_params/flat_grads."""
    model = _build(variant)
    offset = 0
    for name, param in model.params.items():
        size = param.size
        assert np.shares_memory(param, model.flat_params[offset : offset + size]), name
        assert np.shares_memory(model.grads[name], model.flat_grads[offset : offset + size]), name
        offset += size
    assert offset == model.flat_params.size == model.flat_grads.size
    # A layer sees the same arrays: writing through the flat array reaches it.
    first = model.encoder.layers[0].params["W"]
    model.flat_params[0] = 123.0
    assert first.flat[0] == 123.0
    # A loss fills the flat gradients, and zero_grad clears them all at once.
    model.loss(_batch(model), np.random.default_rng(0))
    assert model.flat_grads.any()
    model.zero_grad()
    assert not model.flat_grads.any() and not any(g.any() for g in model.grads.values())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_loss_writes_every_gradient_whatever_they_held(variant):
    """No loss reads the gradients it writes: every part writes its own once, so no
    zero_grad is needed first, and stale or NaN entries never leak into a step."""
    model = _build(variant, dtype="float64")
    x = _batch(model)
    model.zero_grad()
    _report(model, x, grad=True)
    clean = model.flat_grads.copy()
    model.flat_grads.fill(np.nan)
    _report(model, x, grad=True)
    assert np.isfinite(model.flat_grads).all()
    np.testing.assert_array_equal(model.flat_grads, clean)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_float64_input_to_a_float32_model_is_a_config_error(kind):
    model = _build(kind)
    x = _batch(model).astype(np.float64)
    for call in (
        lambda: model.loss(x, np.random.default_rng(0)),
        lambda: model.loss(x, np.random.default_rng(0), grad=False),
        lambda: model.encode(x),
        lambda: model.reconstruct(x),
    ):
        with pytest.raises(ConfigError, match="float64") as err:
            call()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_wrongly_shaped_input_is_a_config_error(kind):
    model = _build(kind)
    good = _batch(model)
    for bad in (
        np.zeros((4, INPUT_DIM + 1), np.float32),
        np.zeros(INPUT_DIM, np.float32),
        np.zeros((1, 4, INPUT_DIM), np.float32),
        good.tolist(),
    ):
        with pytest.raises(ConfigError, match=str(INPUT_DIM)):
            model.loss(bad, np.random.default_rng(0))
        with pytest.raises(ConfigError):
            model.encode(bad)


@pytest.mark.parametrize("kind", ["vae", "iwae"])
def test_noise_of_the_wrong_shape_or_dtype_is_a_config_error(kind):
    model = _build(kind)
    x = _batch(model)
    for eps in (np.zeros((1, 3, 3), np.float32), np.zeros((4, 3), np.float32)):
        with pytest.raises(ConfigError, match="eps"):
            model.loss(x, eps=eps)
    with pytest.raises(ConfigError, match="float64"):  # says what was wrong with it
        model.loss(x, eps=np.zeros((1, 4, 3)))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_decoding_codes_of_the_wrong_width_is_a_config_error(kind):
    model = _build(kind)
    with pytest.raises(ConfigError):
        model.decode(np.zeros((2, 5), np.float32))


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (Autoencoder, {"reconstruction": "poisson"}),
        (Autoencoder, {"code_dim": 0}),
        (Autoencoder, {"activation": "swish"}),
        (SparseAutoencoder, {"sparsity": "l2"}),
        (SparseAutoencoder, {"sparsity": "kl", "code_activation": "tanh"}),
        (SparseAutoencoder, {"target": 1.5}),
        (DenoisingAutoencoder, {"noise": "dropout"}),
        (DenoisingAutoencoder, {"noise": "mask", "noise_level": 1.5}),
        (ContractiveAutoencoder, {"hidden": [5]}),
        (ContractiveAutoencoder, {"hidden": (), "code_activation": "relu"}),
        (ContractiveAutoencoder, {"hidden": (), "contraction": -1.0}),
        (VAE, {"likelihood": "poisson"}),
        (VAE, {"beta": -1.0}),
        (VAE, {"n_samples": 0}),
        (VAE, {"hidden": []}),
        (VAE, {"dtype": "float16"}),
        (IWAE, {"k": 0}),
    ],
)
def test_bad_settings_are_config_errors(cls, kwargs):
    with pytest.raises(ConfigError) as err:
        cls(input_dim=INPUT_DIM, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_unknown_setting_is_refused(kind):
    """A misspelt or misplaced setting (``contraction`` on a plain AE) must not pass silently."""
    cls, kwargs = KINDS[kind]
    with pytest.raises((TypeError, ConfigError)):
        cls(input_dim=INPUT_DIM, **kwargs, contraction_weight=0.5)


def test_contractive_autoencoder_keeps_positional_sizes():
    model = ContractiveAutoencoder(INPUT_DIM, (), 3)
    assert model.config["code_dim"] == 3
    assert model.encode(np.zeros((2, INPUT_DIM), np.float32)).shape == (2, 3)


# ----------------------------------------------------------------------------- save and load


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_save_load_round_trip_is_bit_identical(variant, dtype, tmp_path):
    model = _moved_off_initialisation(_build(variant, dtype=dtype))
    path = tmp_path / "model.npz"
    assert model.save(path) == path
    x = _batch(model, n=5, seed=9)

    for loaded in (type(model).load(path), npvae.models.load(path), npvae.models.Model.load(path)):
        assert type(loaded) is type(model)
        assert loaded.config == model.config and loaded.dtype == model.dtype
        assert list(loaded.params) == list(model.params)
        for name in model.params:
            np.testing.assert_array_equal(loaded.params[name], model.params[name], err_msg=name)
            assert loaded.params[name].dtype == model.params[name].dtype
        before, after = _report(model, x), _report(loaded, x)
        assert after["loss"] == before["loss"]
        np.testing.assert_array_equal(after["recon_per_example"], before["recon_per_example"])
        for out_before, out_after in zip(_as_tuple(model.encode(x)), _as_tuple(loaded.encode(x))):
            np.testing.assert_array_equal(out_after, out_before)
        code_dim = model.config.get("latent_dim") or model.config["code_dim"]
        code = np.random.default_rng(3).normal(size=(3, code_dim)).astype(model.dtype)
        np.testing.assert_array_equal(loaded.decode(code), model.decode(code))
        if _is_generative(model):
            np.testing.assert_array_equal(
                loaded.sample(2, np.random.default_rng(4)),
                model.sample(2, np.random.default_rng(4)),
            )


def test_a_model_built_with_a_numpy_dtype_saves_and_loads(tmp_path):
    model = VAE(input_dim=INPUT_DIM, hidden=[6], latent_dim=2, dtype=np.float64)
    loaded = npvae.models.load(model.save(tmp_path / "model.npz"))
    assert loaded.dtype == np.float64


@pytest.fixture
def saved_vae(tmp_path):
    model = _moved_off_initialisation(
        VAE(input_dim=20, hidden=[16], latent_dim=3, activation="tanh", seed=5)
    )
    return model, model.save(tmp_path / "vae.npz")


def test_a_truncated_file_is_a_checkpoint_error(saved_vae, tmp_path):
    _, path = saved_vae
    raw = path.read_bytes()
    damaged = tmp_path / "truncated.npz"
    for length in (0, 1, 30, len(raw) // 3, len(raw) // 2, len(raw) - 22, len(raw) - 1):
        damaged.write_bytes(raw[:length])
        with pytest.raises(CheckpointError) as err:
            VAE.load(damaged)
        _assert_names_the_file(err, damaged)


def _zip_layout(raw: bytes) -> dict[str, int]:
    """Byte offsets of the parts of an uncompressed zip (an npz) worth damaging."""
    (directory,) = struct.unpack("<I", raw[-6:-2])  # end record: start of the central directory
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        members = {info.filename: info for info in archive.infolist()}
    weights = max((i for n, i in members.items() if "W" in n), key=lambda i: i.file_size)
    name_length, extra_length = struct.unpack(
        "<HH", raw[weights.header_offset + 26 : weights.header_offset + 30]
    )
    data = weights.header_offset + 30 + name_length + extra_length
    return {
        "local-header-signature": 0,
        "npy-header": data + 12,
        "array-data-middle": data + 128 + (weights.file_size - 128) // 2,
        "central-directory-signature": directory,
        "central-directory-flags": directory + 8,
        "central-directory-method": directory + 10,
        "central-directory-crc": directory + 16,
        "end-record-signature": len(raw) - 22,
        "end-record-directory-offset": len(raw) - 6,
    }


@pytest.mark.parametrize(
    "part",
    [
        "local-header-signature",
        "npy-header",
        "array-data-middle",
        "central-directory-signature",
        "central-directory-flags",
        "central-directory-method",
        "central-directory-crc",
        "end-record-signature",
        "end-record-directory-offset",
    ],
)
def test_flipped_bytes_are_a_checkpoint_error(part, saved_vae, tmp_path):
    _, path = saved_vae
    raw = bytearray(path.read_bytes())
    raw[_zip_layout(bytes(raw))[part]] ^= 0xFF
    damaged = tmp_path / "flipped.npz"
    damaged.write_bytes(raw)
    with pytest.raises(CheckpointError) as err:
        npvae.models.load(damaged)
    _assert_names_the_file(err, damaged)


@pytest.mark.slow
def test_any_flipped_byte_is_refused_or_harmless(saved_vae, tmp_path):
    """Bytes the zip format ignores (timestamps, ...) may change; nothing else may pass."""
    model, path = saved_vae
    raw = path.read_bytes()
    damaged = tmp_path / "flipped.npz"
    for position in range(0, len(raw), 11):
        flipped = bytearray(raw)
        flipped[position] ^= 0x5A
        damaged.write_bytes(flipped)
        try:
            loaded = npvae.models.load(damaged)
        except CheckpointError as err:
            assert str(damaged) in str(err) and "\n" not in str(err)
            continue
        assert loaded.config == model.config, position
        for name in model.params:
            np.testing.assert_array_equal(loaded.params[name], model.params[name], err_msg=name)


def test_loading_another_kind_of_model_is_a_checkpoint_error(tmp_path):
    paths = {}
    for kind in KINDS:
        paths[kind] = _build(kind).save(tmp_path / f"{kind}.npz")
    for kind, path in paths.items():
        assert npvae.models.load(path).kind == kind
        for other_kind, (other_cls, _) in KINDS.items():
            if other_kind == kind:
                continue
            with pytest.raises(CheckpointError) as err:
                other_cls.load(path)
            _assert_names_the_file(err, path)


def _doctored(model, path, **config_changes):
    """``model``'s arrays saved under a header whose config says something else."""
    header = {"format": "npvae-model", "kind": model.kind}
    header["config"] = {**model.config, **config_changes}
    return save_arrays(path, model.params, header)


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("ae", {"code_dim": 4}),
        ("ae", {"hidden": [6, 6]}),
        ("vae", {"latent_dim": 2}),
        ("vae", {"input_dim": INPUT_DIM + 1}),
        ("vae", {"dtype": "float64"}),
        ("vae", {"likelihood": "gaussian", "learned_var": True}),
        ("iwae", {"hidden": [7]}),
        ("contractive-ae", {"code_dim": 2}),
        ("vae", {"latent_dim": -1}),
        ("vae", {"activation": "nonsense"}),
        ("vae", {"unknown_setting": 1}),
    ],
)
def test_a_file_whose_arrays_do_not_fit_its_config_is_a_checkpoint_error(kind, changes, tmp_path):
    path = _doctored(_build(kind), tmp_path / "doctored.npz", **changes)
    with pytest.raises(CheckpointError) as err:
        npvae.models.load(path)
    _assert_names_the_file(err, path)


def test_missing_arrays_and_foreign_files_are_checkpoint_errors(tmp_path):
    model = _build("vae")
    header = {"format": "npvae-model", "kind": "vae", "config": model.config}
    cases = {
        "missing-array.npz": lambda p: save_arrays(
            p, {k: v for k, v in model.params.items() if k != "decoder.0.W"}, header
        ),
        "extra-array.npz": lambda p: save_arrays(
            p, {**model.params, "decoder.9.W": np.zeros(3, np.float32)}, header
        ),
        "unknown-kind.npz": lambda p: save_arrays(p, model.params, {**header, "kind": "gan"}),
        "no-format.npz": lambda p: save_arrays(p, model.params, {"kind": "vae"}),
        "plain.npz": lambda p: np.savez(p, **model.params),
        "text.npz": lambda p: p.write_text("not a model"),
        "empty.npz": lambda p: p.write_bytes(b""),
        "missing.npz": lambda p: None,
    }
    for name, make in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(CheckpointError) as err:
            npvae.models.load(path)
        _assert_names_the_file(err, path)


class _Tripwire:
    """Unpickling this creates a file: proof that a loader ran pickle."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_never_unpickles(tmp_path):
    model = _build("ae")
    tripwire = _Tripwire()
    tripwire.marker = tmp_path / "pickle-ran"
    header = {"format": "npvae-model", "kind": "ae", "config": model.config}
    path = tmp_path / "object.npz"
    arrays = {**model.params, "encoder.0.W": np.array([tripwire], dtype=object)}
    arrays[HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **arrays)  # numpy pickles the object array into the file
    with pytest.raises(CheckpointError) as err:
        npvae.models.load(path)
    _assert_names_the_file(err, path)
    assert not tripwire.marker.exists()


def test_saving_under_a_regular_file_is_a_checkpoint_error(tmp_path):
    model = _build("vae")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file, not a folder")
    before = sorted(os.listdir(tmp_path))
    for target in (blocker / "model.npz", blocker / "deeper" / "model.npz"):
        with pytest.raises(CheckpointError) as err:
            model.save(target)
        _assert_names_the_file(err, target)
    assert sorted(os.listdir(tmp_path)) == before
    assert blocker.read_text() == "a file, not a folder"


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    old = _build("vae", seed=1)
    path = old.save(tmp_path / "model.npz")
    old_bytes = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(npvae.serialize.np, "savez", disk_full)
    with pytest.raises((CheckpointError, OSError)):
        _build("vae", seed=2).save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.npz"]
    assert path.read_bytes() == old_bytes
    assert npvae.models.load(path).config == old.config


# ----- valid zips, wrong inside -----------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count_from_the_config_matches_the_built_model(variant):
    """rebuild() checks a file's config sizes with this before allocating anything."""
    model = _build(variant)
    assert type(model).parameter_count(model.config) == sum(p.size for p in model.params.values())


def _set(key, value):
    def edit(header):
        header["config"][key] = value

    return edit


# What the held-out fuzz of issue 10 found: each must be a CheckpointError naming the file.
INSIDE = {
    "text-not-zip": (lambda p: p.write_text("a text file\n" * 40), "not an npvae file"),
    "npy-declares-16GiB": (
        lambda p: replace_member(p, "decoder.0.W.npy", npy_header_claiming((2**17, 2**15))),
        "declares shape",
    ),
    "npy-declares-8TiB": (
        lambda p: replace_member(p, "decoder.0.W.npy", npy_header_claiming((2**21, 2**20))),
        "declares shape",
    ),
    "zip-bomb": (
        lambda p: rezip(
            p,
            [*members(p), ("bomb.npy", npy_header_claiming((2**24,)) + bytes(2**26))],
            zipfile.ZIP_DEFLATED,
        ),
        "compressed",
    ),
    "member-without-npy-magic": (
        lambda p: replace_member(p, "decoder.0.W.npy", b"no magic here" * 10),
        "not a readable array",
    ),
    "duplicate-member": (
        duplicate_first_member,
        "twice",
    ),
    "kind-a-list": (lambda p: edit_header(p, lambda h: h.update(kind=["vae"])), "kind"),
    "config-a-string": (lambda p: edit_header(p, lambda h: h.update(config="vae")), "config"),
    "input-dim-a-string": (lambda p: edit_header(p, _set("input_dim", "10")), "input_dim"),
    "beta-nan": (lambda p: edit_header(p, _set("beta", float("nan"))), "beta"),
    "free-bits-inf": (lambda p: edit_header(p, _set("free_bits", float("inf"))), "free_bits"),
    "n-samples-1.5": (lambda p: edit_header(p, _set("n_samples", 1.5)), "n_samples"),
    "learned-var-yes": (lambda p: edit_header(p, _set("learned_var", "yes")), "learned_var"),
    "absurd-sizes": (lambda p: edit_header(p, _set("hidden", [10**12])), "parameters"),
    "missing-setting": (
        lambda p: edit_header(p, lambda h: h["config"].pop("free_bits")),
        "lacks ['free_bits']",
    ),
    "nan-weight": (
        lambda p: edit_array(p, "decoder.0.W", lambda a: a.__setitem__((0, 0), np.nan)),
        "decoder.0.W holds nan",
    ),
    "inf-weight": (
        lambda p: edit_array(p, "encoder.0.b", lambda a: a.__setitem__(0, np.inf)),
        "encoder.0.b holds inf",
    ),
    "huge-weight": (
        lambda p: edit_array(p, "mu_head.W", lambda a: a.__setitem__((0, 0), 3e38)),
        "mu_head.W holds 3",
    ),
}


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile's, as the test writes the copy
@pytest.mark.parametrize("case", INSIDE)
def test_a_valid_zip_wrong_inside_is_a_checkpoint_error_naming_file_and_fault(case, tmp_path):
    damage, fault = INSIDE[case]
    path = _build("vae").save(tmp_path / "model.npz")
    damage(path)
    with pytest.raises(CheckpointError) as err:
        npvae.models.load(path)
    _assert_names_the_file(err, path)
    assert fault in str(err.value)
    assert "pickle" not in str(err.value) or "never" in str(err.value)
