"""The Python API as safe as the command lines: what a model takes, and npvae.threads.

A model's ``loss``, ``encode`` and ``log_importance_weights`` refuse integer
pixels with the cast that makes them its input, non-finite values always, and
values outside [0, 1] under a Bernoulli likelihood (there log p(x|z) means
nothing: 0..255 floats gave a "loss" of -12 million).  ``npvae.threads`` sets
the BLAS's threads as ``--threads`` does, for the process or for a block.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import npvae
from npvae.app import _threads
from npvae.data import load_dataset
from npvae.errors import ConfigError
from npvae.models import (
    IWAE,
    IWAE2,
    VAE,
    Autoencoder,
    ContractiveAutoencoder,
    DenoisingAutoencoder,
    SparseAutoencoder,
)

D = 16

#: A small model of every kind whose likelihood is Bernoulli.
BERNOULLI = {
    "vae": lambda: VAE(input_dim=D, hidden=[8], latent_dim=2),
    "iwae": lambda: IWAE(input_dim=D, hidden=[8], latent_dim=2, k=3),
    "iwae2": lambda: IWAE2(input_dim=D, hidden1=[8], latent1=3, hidden2=[4], latent2=2, k=2),
    "ae": lambda: Autoencoder(input_dim=D, hidden=[8], code_dim=2),
    "sparse-ae": lambda: SparseAutoencoder(input_dim=D, hidden=[8], code_dim=2),
    "denoising-ae": lambda: DenoisingAutoencoder(input_dim=D, hidden=[8], code_dim=2),
    "contractive-ae": lambda: ContractiveAutoencoder(input_dim=D, hidden=(), code_dim=2),
}

#: Models whose likelihood takes any real value.
UNBOUNDED = {
    "gaussian vae": lambda: VAE(input_dim=D, hidden=[8], latent_dim=2, likelihood="gaussian"),
    "squared-error ae": lambda: Autoencoder(
        input_dim=D, hidden=[8], code_dim=2, reconstruction="squared"
    ),
}

ALL = {**BERNOULLI, **UNBOUNDED}


def pixels(dtype=np.float32) -> np.ndarray:
    """``(4, D)`` values in [0, 1] that touch both ends exactly."""
    x = np.random.default_rng(0).random((4, D)).astype(dtype)
    x[0, 0], x[1, 1] = 0.0, 1.0
    return x


def refused(model, x) -> str:
    """The one-line message of the ConfigError ``loss(x)`` raises (asserted to be one line)."""
    with pytest.raises(ConfigError) as caught:
        model.loss(x, np.random.default_rng(0))
    message = str(caught.value)
    assert "\n" not in message
    return message


# ----- whole numbers: the hint says exactly what to do -----------------------------------


@pytest.mark.parametrize("kind", sorted(ALL))
def test_uint8_pixels_are_refused_with_the_exact_cast(kind):
    model = ALL[kind]()
    x = (pixels() * 255).astype(np.uint8)
    message = refused(model, x)
    assert "uint8" in message and "x.astype(np.float32) / 255" in message
    with pytest.raises(ConfigError, match=r"x\.astype\(np\.float32\) / 255"):
        model.encode(x)


def test_following_the_hint_literally_gives_a_loss():
    """The README's case: the datasets' uint8 test images, cast as the message says."""
    data = load_dataset("digits")
    model = VAE(input_dim=784, hidden=[16], latent_dim=2)
    x = data.x_test[:100]
    rng = np.random.default_rng(0)
    assert "x.astype(np.float32) / 255" in refused(model, x)
    # Cast without the division (what "x.astype(...)" used to invite): refused, not -12e6.
    message = refused(model, x.astype(np.float32))
    assert "[0, 1]" in message and "x / 255" in message and "from 0 to 255" in message
    report = model.loss(x.astype(np.float32) / 255, rng)
    assert 0 < report["loss"] < 1e4  # nats per image: positive, of order 100s


def test_a_float64_model_asks_for_float64():
    model = VAE(input_dim=D, hidden=[8], latent_dim=2, dtype="float64")
    assert "x.astype(np.float64) / 255" in refused(model, (pixels() * 255).astype(np.uint8))


def test_binary_whole_numbers_need_no_division():
    model = VAE(input_dim=D, hidden=[8], latent_dim=2)
    message = refused(model, (pixels() > 0.5).astype(np.int64))
    assert message.endswith("use x.astype(np.float32)")
    assert refused(model, pixels() > 0.5).endswith("use x.astype(np.float32)")  # bool


def test_another_float_type_is_told_its_cast():
    model = VAE(input_dim=D, hidden=[8], latent_dim=2)
    message = refused(model, pixels(np.float64))
    assert "float64" in message and message.endswith("use x.astype(np.float32)")


# ----- the likelihood's support ---------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BERNOULLI))
@pytest.mark.parametrize("value", [-0.01, 1.01, 255.0])
def test_a_bernoulli_model_refuses_values_outside_0_1(kind, value):
    model = BERNOULLI[kind]()
    x = pixels()
    x[2, 3] = value
    message = refused(model, x)
    assert "[0, 1]" in message and f"{value:g}" in message
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        model.encode(x)


@pytest.mark.parametrize("kind", sorted(ALL))
def test_exactly_0_and_1_are_accepted(kind):
    model = ALL[kind]()
    x = pixels()
    assert x.min() == 0 and x.max() == 1
    report = model.loss(x, np.random.default_rng(0))
    assert np.isfinite(report["loss"])
    model.encode(x)


@pytest.mark.parametrize("kind", sorted(UNBOUNDED))
def test_a_real_valued_likelihood_takes_any_finite_value(kind):
    model = UNBOUNDED[kind]()
    x = pixels() * 4 - 2  # from -2 to 2: standardised data, say
    assert np.isfinite(model.loss(x, np.random.default_rng(0))["loss"])


@pytest.mark.parametrize("kind", sorted(ALL))
@pytest.mark.parametrize(("value", "named"), [(np.nan, "NaN"), (np.inf, "infinite")])
def test_nan_and_infinity_are_refused_by_every_model(kind, value, named):
    model = ALL[kind]()
    x = pixels()
    x[3, 5] = value
    assert named in refused(model, x)
    with pytest.raises(ConfigError, match=named):
        model.encode(x)


def test_the_evaluation_checks_its_images_too():
    model = VAE(input_dim=D, hidden=[8], latent_dim=2)
    eps = np.zeros((5, 4, 2), np.float32)
    assert model.log_importance_weights(pixels(), eps).shape == (5, 4)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        model.log_importance_weights(pixels() * 255, eps)


def test_a_gaussian_noise_denoising_ae_encodes_its_corrupted_inputs():
    """Its encoder is trained on x + noise, outside [0, 1]; the evaluation encodes such inputs."""
    model = DenoisingAutoencoder(
        input_dim=D, hidden=[8], code_dim=2, noise="gaussian", noise_level=0.5
    )
    noisy = model.corrupt(pixels(), np.random.default_rng(1))
    assert noisy.min() < 0 or noisy.max() > 1
    assert model.reconstruct(noisy).shape == noisy.shape
    report = model.loss(pixels(), x_tilde=noisy, grad=False)
    assert np.isfinite(report["loss"])
    # Its target is still scored by a Bernoulli likelihood: that must lie in [0, 1].
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        model.loss(noisy, x_tilde=noisy, grad=False)
    noisy[0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        model.encode(noisy)


# ----- npvae.threads ----------------------------------------------------------------------


def blas_threads() -> set[int]:
    """The thread counts of NumPy's BLAS pools, as threadpoolctl reports them."""
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


@pytest.fixture
def restore_blas():
    """Put the BLAS's limits back as they were, whatever the test did."""
    before = max(blas_threads())
    yield before
    threadpool_limits(limits=before, user_api="blas")


def test_threads_as_a_call_sets_the_limit_for_the_process(restore_blas):
    assert npvae.threads(1).count == 1
    assert blas_threads() == {1}
    count, reason = npvae.threads(1)  # unpacks as (count, reason)
    assert (count, reason) == (1, "as asked")
    assert blas_threads() == {1}


def test_threads_as_a_block_restores_the_previous_limit(restore_blas, monkeypatch):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 2)
    threadpool_limits(limits=2, user_api="blas")
    with npvae.threads(1) as chosen:
        assert int(chosen) == 1 and blas_threads() == {1}
    assert blas_threads() == {2}
    threadpool_limits(limits=1, user_api="blas")
    with npvae.threads(2):
        assert blas_threads() == {2}
    assert blas_threads() == {1}


def test_threads_auto_decides_as_the_command_lines_do(restore_blas, monkeypatch):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(_threads.CpuWatch, "cores_busy_elsewhere", lambda self: 1.0)
    chosen = npvae.threads("auto")
    assert (chosen.count, chosen.reason) == _threads.choose_threads("auto")
    assert chosen.count == 1 and "other work is using 1.0 of 2 cores" in chosen.reason
    assert blas_threads() == {1}
    assert repr(chosen) == f"threads: 1 ({chosen.reason})"


def test_more_threads_than_cores_are_clamped_with_a_note(restore_blas, monkeypatch, capsys):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 2)
    chosen = npvae.threads(64)
    assert (chosen.count, chosen.reason) == (2, "64 asked, clamped to the 2 usable")
    assert blas_threads() == {2}
    err = capsys.readouterr().err
    assert err == "note: threads 64 is more than the 2 cores this process may use; using 2\n"


@pytest.mark.parametrize("value", [0, -1, "many", 1.5, ""])
def test_a_bad_thread_count_is_a_config_error_naming_the_call(value):
    before = blas_threads()
    with pytest.raises(ConfigError, match="^threads must be auto or a whole number"):
        npvae.threads(value)
    assert blas_threads() == before


IMPORT_PROBE = """
import json, sys
import numpy
from threadpoolctl import threadpool_info
def blas():
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
before = blas()
sys.modules.pop("threadpoolctl")
import npvae
cheap = "threadpoolctl" not in sys.modules and "npvae.models" not in sys.modules
import npvae.models, npvae.figures.compare
print(json.dumps({"before": before, "after": blas(), "cheap": cheap}))
"""


def test_importing_npvae_changes_no_thread_limit_and_loads_little():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True
    )
    report = json.loads(done.stdout)
    assert report["before"] and report["after"] == report["before"]
    assert report["cheap"]
