"""npvae.config: defaults < TOML file < flags, names with dashes or underscores, checked values."""

from __future__ import annotations

import dataclasses

import pytest

from npvae.config import FIELDS, Config, from_dict, make_parser, parse_args, read_toml, validate
from npvae.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_classic_mnist_vae():
    config, given, resume = parse_args([])
    assert config == Config()
    assert (config.model, config.resolved_hidden(), config.latent) == ("vae", [400], 20)
    assert given == {} and resume is None


def test_flags_set_values_of_the_right_type():
    config, given, _ = parse_args(
        ["--latent", "3", "--lr", "0.01", "--hidden", "500,300", "--no-figures", "--learn-var"]
    )
    assert config.latent == 3 and isinstance(config.latent, int)
    assert config.lr == 0.01 and isinstance(config.lr, float)
    assert config.hidden == [500, 300]
    assert config.figures is False and config.learn_var is True
    assert given == {"latent": 3, "lr": 0.01, "hidden": [500, 300], "figures": False,
                     "learn_var": True}  # fmt: skip


def test_toml_values_are_used_and_flags_override_them(tmp_path):
    text = 'model = "iwae"\nlatent = 7\nk = 10\nhidden = [64, 32]\nfigures = false\n'
    path = write(tmp_path, text)
    config, given, _ = parse_args(["--config", str(path)])
    assert (config.model, config.latent, config.k, config.hidden) == ("iwae", 7, 10, [64, 32])
    assert config.figures is False
    assert given == {"model": "iwae", "latent": 7, "k": 10, "hidden": [64, 32], "figures": False}

    config, given, _ = parse_args(["--latent", "2", "--config", str(path), "--figures"])
    assert (config.model, config.latent, config.k) == ("iwae", 2, 10)  # the flag wins
    assert config.figures is True
    assert given["latent"] == 2


def test_toml_keys_take_dashes_or_underscores(tmp_path):
    dashes = read_toml(write(tmp_path, "batch-size = 32\nll-samples = 0\nlr-gamma = 0.9\n"))
    underscores = read_toml(write(tmp_path, "batch_size = 32\nll_samples = 0\nlr_gamma = 0.9\n"))
    assert dashes == underscores == {"batch_size": 32, "ll_samples": 0, "lr_gamma": 0.9}


def test_hidden_accepts_text_lists_and_none(tmp_path):
    assert read_toml(write(tmp_path, 'hidden = "500,500"\n'))["hidden"] == [500, 500]
    assert read_toml(write(tmp_path, "hidden = 400\n"))["hidden"] == [400]
    config, _, _ = parse_args(["--model", "contractive-ae", "--hidden", "none"])
    assert config.resolved_hidden() == []
    with pytest.raises(ConfigError, match="whole numbers"):
        parse_args(["--hidden", "500,lots"])
    with pytest.raises(ConfigError, match="positive"):
        parse_args(["--hidden", "0"])


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("latnet = 3\n", "unknown key 'latnet'"),
        ("latent = \n", "not valid TOML"),
        ('latent = "three"\n', "--latent must be a whole number"),
        ("latent = 2.5\n", "--latent"),
        ('figures = "maybe"\n', "--figures"),
    ],
)
def test_bad_toml_is_one_config_error_line(text, named, tmp_path):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        parse_args(["--config", str(path)])
    message = str(caught.value)
    assert named in message
    if "key" in named or "TOML" in named:
        assert message.startswith(str(path))
    assert "\n" not in message


def test_missing_toml_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        read_toml(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--latent", "0"], "--latent must be at least 1"),
        (["--lr", "0"], "--lr must be more than 0"),
        (["--lr=-1e-3"], "--lr must be more than 0"),
        (["--clip", "-1"], "--clip"),
        (["--model", "gan"], "--model 'gan' is not one of"),
        (["--binarize", "sometimes"], "--binarize"),
        (["--batch-size", "12.5"], "--batch-size"),
        (["--figures", "yes"], "unrecognized arguments: yes"),  # a switch takes no value
        (["--unknown"], "--unknown"),
        (["--model", "vae", "--hidden", "none"], "needs at least one hidden layer"),
        (["--model", "contractive-ae", "--hidden", "100"], "one-layer encoder"),
    ],
)
def test_bad_flags_are_config_errors(argv, named):
    with pytest.raises(ConfigError) as caught:
        parse_args(argv)
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_from_dict_round_trips_and_refuses_unknown_keys():
    config = Config(model="iwae", latent=5, hidden=[50], k=3)
    assert from_dict(dataclasses.asdict(config), "config.json") == config
    assert from_dict(dataclasses.asdict(Config()), "config.json").data_dir is None
    with_folder = Config(data_dir="/data/mnist")
    assert from_dict(dataclasses.asdict(with_folder), "config.json") == with_folder
    with pytest.raises(ConfigError, match=r"config.json: unknown settings \['latnet'\]"):
        from_dict({**dataclasses.asdict(config), "latnet": 3}, "config.json")
    with pytest.raises(ConfigError, match="--latent"):
        from_dict({"latent": 0}, "config.json")


def test_validate_checks_every_bound_and_choice():
    assert validate(Config()) == Config()
    with pytest.raises(ConfigError, match="--k must be at least 1"):
        validate(Config(k=0))
    with pytest.raises(ConfigError, match="--dtype"):
        validate(Config(dtype="float16"))


def test_every_field_is_a_flag_with_help_and_its_default():
    parser = make_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    for name, field in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        assert flag in flags, flag
        assert field.metadata.get("help"), name
    texts = {action.dest: action.help for action in parser._actions}
    assert texts["batch_size"].endswith("(default: 128)")
    assert texts["hidden"].endswith("(default: none)")


def test_bad_value_in_a_toml_file_names_the_file(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("epochs = 'many'\n")
    with pytest.raises(ConfigError, match=r"settings.toml: --epochs must be a whole number"):
        read_toml(path)


def test_abbreviated_flags_are_refused():
    with pytest.raises(ConfigError, match="unrecognized arguments: --batch"):
        parse_args(["--batch", "64"])
