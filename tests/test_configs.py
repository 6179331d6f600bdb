"""configs/: the IWAE paper's protocol as TOML files, and the settings it needs.

Burda, Grosse & Salakhutdinov (2016): 784-200-200-50 tanh, Bernoulli decoder,
Glorot init with the output bias at the logit of the mean training image,
dynamic binarisation, Adam (ε = 1e-4), batch 20, 3,280 epochs in 8 stages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npvae.app.config import Config, validate
from npvae.app.flags import read_toml
from npvae.models import VAE, Autoencoder
from npvae.schedules import make_schedule

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PAPER = {"iwae-paper-vae.toml": ("vae", 1), "iwae-paper-iwae5.toml": ("iwae", 5)}
PAPER["iwae-paper-iwae50.toml"] = ("iwae", 50)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_each_config_is_the_papers_protocol(name):
    config = validate(Config(**read_toml(CONFIGS / name)))
    model, k = PAPER[name]
    assert config.model == model and (model == "vae" or config.k == k)
    assert config.resolved_hidden() == [200, 200] and config.latent == 50
    assert (config.activation, config.likelihood, config.init) == ("tanh", "bernoulli", "glorot")
    assert config.output_bias == "data-mean" and config.binarize == "dynamic"
    assert (config.optimizer, config.adam_eps, config.lr) == ("adam", 1e-4, 1e-3)
    assert (config.batch_size, config.schedule, config.epochs) == (20, "iwae", 3280)
    assert config.dataset == "mnist"


@pytest.mark.parametrize(
    "model, epochs",
    [("vae", 900), ("iwae5", 400), ("2layer-vae", 750), ("2layer-iwae5", 280)],
)
def test_an_hour_config_is_the_protocol_at_batch_100_with_a_smooth_decay(model, epochs):
    """The hour (benchmarks/README.md): batches of 100, 2e-3 falling to 2e-4 over the epochs
    one core trains in under an hour, everything else the protocol's."""
    hour = validate(Config(**read_toml(CONFIGS / f"iwae-paper-{model}-60min.toml")))
    paper = validate(Config(**read_toml(CONFIGS / f"iwae-paper-{model}.toml")))
    assert (hour.schedule, hour.epochs, hour.threads) == ("exponential", epochs, "1")
    assert (hour.batch_size, hour.lr) == (100, 2e-3)
    last = hour.lr * hour.lr_gamma ** (epochs - 1)
    assert last == pytest.approx(2e-3 * 10 ** (-(epochs - 1) / epochs), rel=1e-4)
    changed = {"schedule", "epochs", "threads", "lr_gamma", "batch_size", "lr"}
    assert {f: getattr(hour, f) for f in vars(hour) if f not in changed} == {
        f: getattr(paper, f) for f in vars(paper) if f not in changed
    }


def test_the_two_layer_config_is_the_one_layer_protocol_with_the_papers_second_layer():
    from npvae.app.build import model_recipe

    two = validate(Config(**read_toml(CONFIGS / "iwae-paper-2layer-iwae5.toml")))
    one = validate(Config(**read_toml(CONFIGS / "iwae-paper-iwae5.toml")))
    assert (two.model, two.k, two.resolved_hidden(), two.latent) == ("iwae2", 5, [200, 200], 100)
    assert (two.resolved_hidden2(), two.latent2) == ([100, 100], 50)
    changed = {"model", "latent", "hidden2", "latent2"}
    assert {f: getattr(two, f) for f in vars(two) if f not in changed} == {
        f: getattr(one, f) for f in vars(one) if f not in changed
    }
    cls, settings = model_recipe(two, 784)
    assert cls.parameter_count(settings) == 521_084  # nothing allocated


def test_the_two_layer_vae_is_the_two_layer_iwae_with_one_sample():
    vae = validate(Config(**read_toml(CONFIGS / "iwae-paper-2layer-vae.toml")))
    iwae = validate(Config(**read_toml(CONFIGS / "iwae-paper-2layer-iwae5.toml")))
    assert (vae.model, vae.k, iwae.k) == ("iwae2", 1, 5)
    assert {f: getattr(vae, f) for f in vars(vae) if f != "k"} == {
        f: getattr(iwae, f) for f in vars(iwae) if f != "k"
    }


def test_the_two_layer_vae_with_five_samples_is_the_two_layer_iwaes_hour_with_its_objective():
    """configs/iwae-paper-2layer-vae-l5-70min.toml: the paper's two-layer "VAE, k = 5", the
    k = 5 model of the two-layer hour trained on the mean of its ELBOs, over 350 epochs."""
    vae = validate(Config(**read_toml(CONFIGS / "iwae-paper-2layer-vae-l5-70min.toml")))
    hour = validate(Config(**read_toml(CONFIGS / "iwae-paper-2layer-iwae5-60min.toml")))
    assert (vae.model, vae.k, vae.objective, hour.objective) == ("iwae2", 5, "vae", "iwae")
    assert vae.lr * vae.lr_gamma ** (vae.epochs - 1) == pytest.approx(2e-4, rel=1e-2)
    changed = {"objective", "epochs", "lr_gamma"}
    assert {f: getattr(vae, f) for f in vars(vae) if f not in changed} == {
        f: getattr(hour, f) for f in vars(hour) if f not in changed
    }


def test_the_iwae_schedule_runs_3_to_the_i_epochs_at_each_stages_rate():
    schedule = make_schedule("iwae", 1e-3)
    rates = [schedule(epoch) for epoch in range(3280)]
    stages = [rates.count(rate) for rate in sorted(set(rates), reverse=True)]
    assert stages == [3**i for i in range(8)] and sum(stages) == 3280
    expected = [1e-3 * 10 ** (-i / 7) for i in range(8)]
    np.testing.assert_allclose(sorted(set(rates), reverse=True), expected, rtol=1e-12)
    assert rates[0] == 1e-3 and rates[1] == pytest.approx(1e-3 * 10 ** (-1 / 7))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_output_bias_starts_the_decoder_at_the_mean_image(likelihood):
    model = VAE(input_dim=6, hidden=[5], latent_dim=2, likelihood=likelihood, dtype="float64")
    mean = np.array([0.0, 0.2, 0.5, 0.9, 1.0, 0.0005])
    model.init_output_bias(mean)
    for layer in model.decoder.layers:  # with every weight at 0, z does not matter
        if "W" in layer.params:
            layer.params["W"][...] = 0
    decoded = model.decode(np.random.default_rng(0).standard_normal((3, 2)))
    if likelihood == "bernoulli":  # the logit of the mean, clipped to [0.001, 0.999]
        np.testing.assert_allclose(decoded, np.tile(np.clip(mean, 0.001, 0.999), (3, 1)))
    else:
        np.testing.assert_allclose(decoded, np.tile(mean, (3, 1)))


def test_the_output_bias_refuses_a_mean_of_the_wrong_shape_or_range():
    model = Autoencoder(input_dim=4, hidden=[3], code_dim=2)
    with pytest.raises(ValueError, match=r"pixel_mean must be \(4,\) in \[0, 1\]"):
        model.init_output_bias(np.full(5, 0.5))
    with pytest.raises(ValueError, match="in"):
        model.init_output_bias(np.array([0.1, 0.2, 1.5, 0.3]))


def test_training_applies_adams_epsilon_and_the_output_bias(monkeypatch, tmp_path):
    from npvae import train
    from npvae.data import datasets

    monkeypatch.setattr(datasets, "DIGITS_N_TRAIN", 64)
    monkeypatch.setattr(datasets, "DIGITS_N_TEST", 16)
    flags = dict(dataset="digits", hidden=[8], latent=2, out=str(tmp_path), figures=False)
    run = train.start(validate(Config(**flags, adam_eps=1e-4, output_bias="data-mean")))
    assert run.optimizer.eps == 1e-4
    mean = np.clip(run.data.x_train.mean(axis=0) / 255, 0.001, 0.999)
    bias = run.model.decoder.layers[-1].params["b"]
    np.testing.assert_allclose(bias, np.log(mean / (1 - mean)), rtol=1e-5)
    default = train.start(validate(Config(**flags)))
    assert default.optimizer.eps == 1e-8
    assert not default.model.decoder.layers[-1].params["b"].any()


def test_a_run_record_from_before_these_settings_still_loads():
    """config.json of an older npvae lacks adam_eps, output_bias, threads and objective: their
    defaults are what that npvae did, so the record loads; any other missing setting is damage."""
    from npvae.app.config import from_dict, record

    newer = ("adam_eps", "output_bias", "threads", "objective")
    # sgd: adam_eps acts on nothing; iwae2: objective acts, and its default is the bound
    for config in (Config(), Config(optimizer="sgd"), Config(model="iwae2", activation="tanh")):
        values = record(config)
        older = {k: v for k, v in values.items() if k not in newer}
        assert record(from_dict(older, "config.json")) == values
    damaged = {k: v for k, v in values.items() if k != "lr"}
    with pytest.raises(ValueError, match=r"setting \['lr'\] is missing"):
        from_dict(damaged, "config.json")
