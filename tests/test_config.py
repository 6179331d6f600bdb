"""npvae.app.config: defaults < TOML file < flags, names with dashes or underscores, checked
values."""

from __future__ import annotations

import dataclasses

import pytest

from npvae.app.build import build_model
from npvae.app.config import (
    APPLIES,
    BOUNDS,
    FIELDS,
    Config,
    applies,
    from_dict,
    record,
    validate,
)
from npvae.app.flags import make_parser, parse_args, read_toml
from npvae.errors import ConfigError
from npvae.models import IWAE, IWAE2, VAE
from npvae.schedules import make_schedule
from npvae.train import main
from npvae.validate import CHOICES, MODELS, TYPES

FLOAT_FIELDS = [name for name, f in FIELDS.items() if isinstance(f.default, float)]


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
        ["--latent", "3", "--lr", "0.01", "--hidden", "500,300", "--no-figures", "--learn-var",
         "--likelihood", "gaussian"]
    )  # fmt: skip
    assert config.latent == 3 and isinstance(config.latent, int)
    assert config.lr == 0.01 and isinstance(config.lr, float)
    assert config.hidden == [500, 300]
    assert config.figures is False and config.learn_var is True
    assert given == {"latent": 3, "lr": 0.01, "hidden": [500, 300], "figures": False,
                     "learn_var": True, "likelihood": "gaussian"}  # fmt: skip
    assert given.labels["figures"] == "--no-figures" and given.labels["lr"] == "--lr"


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
    ],
)
def test_bad_toml_is_one_config_error_line(text, named, tmp_path):
    """A file that is not a config at all; a bad value has its exact message below."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        parse_args(["--config", str(path)])
    message = str(caught.value)
    assert named in message
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
    with pytest.raises(ConfigError, match=r"config.json: unknown setting \['latnet'\]"):
        from_dict({**dataclasses.asdict(config), "latnet": 3}, "config.json")
    with pytest.raises(ConfigError, match="^config.json: latent must be at least 1, got 0$"):
        from_dict({"latent": 0}, "config.json")
    with pytest.raises(ConfigError, match=r"config.json: settings \['beta', 'free_bits'"):
        from_dict({name: value for name, value in dataclasses.asdict(config).items()
                   if name not in ("beta", "free_bits")}, "config.json")  # fmt: skip


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
    assert texts["hidden"].endswith("(default: 400; none for contractive-ae)")
    for text in texts.values():
        assert text is None or text.count("default") <= 1, text


def test_bad_value_in_a_toml_file_names_the_file(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("epochs = 'many'\n")
    with pytest.raises(ConfigError, match=r"settings.toml: epochs must be a whole number"):
        read_toml(path)


def test_abbreviated_flags_are_refused():
    with pytest.raises(ConfigError, match="unrecognized arguments: --batch"):
        parse_args(["--batch", "64"])


def test_every_number_has_a_range():
    numbers = {n for n, f in FIELDS.items() if type(f.default) in (int, float)}
    assert numbers == set(BOUNDS) & set(FIELDS)
    assert set(BOUNDS) - set(FIELDS) == {"input_dim", "init_log_var"}  # a saved model's own


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_flag_refuses_nan_and_inf(name, value):
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ConfigError) as caught:
        parse_args([f"{flag}={value}"])
    message = str(caught.value)
    assert message.startswith(f"{flag} must be ") and message.endswith(f"got {float(value)}")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "-1"], "--seed must be at least 0, got -1"),
        (["--lr", "nan"], "--lr must be a finite number more than 0, got nan"),
        (["--clip", "inf"], "--clip must be a finite number at least 0, got inf"),
        (["--lr-gamma", "0"], "--lr-gamma must be more than 0, got 0.0"),
        (["--sparsity-target", "2"], "--sparsity-target must be in (0, 1), got 2.0"),
        (["--sparsity-target", "0"], "--sparsity-target must be in (0, 1), got 0.0"),
        (["--sparsity-target", "1"], "--sparsity-target must be in (0, 1), got 1.0"),
        (["--noise-level", "5"], "--noise-level must be in [0, 1] for --noise mask, got 5.0"),
        (
            ["--noise", "salt-pepper", "--noise-level", "1.5"],
            "--noise-level must be in [0, 1] for --noise salt-pepper, got 1.5",
        ),
        (
            ["--noise", "gaussian", "--noise-level=-0.1"],
            "--noise-level must be at least 0, got -0.1",
        ),
        (["--warmup=-5"], "--warmup must be at least 0, got -5"),
        (["--seed", "1e3"], "--seed must be a whole number, got '1e3'"),
    ],
)
def test_out_of_range_flags_name_the_flag(argv, message):
    with pytest.raises(ConfigError) as caught:
        parse_args(argv)
    assert str(caught.value) == message


def test_edges_of_the_ranges_are_accepted_by_config_and_by_the_models():
    edges = [
        Config(model="sparse-ae", sparsity_target=1e-6, sparsity_weight=0.0),
        Config(model="sparse-ae", sparsity_target=1 - 1e-6),
        Config(model="denoising-ae", noise_level=1.0),
        Config(model="denoising-ae", noise_level=0.0, noise="salt-pepper"),
        Config(model="denoising-ae", noise="gaussian", noise_level=5.0),
        Config(model="contractive-ae", contraction=0.0),
        Config(beta=0.0, free_bits=0.0, warmup=0, clip=0.0),
        Config(seed=2**64),  # numpy's generators take any whole number >= 0
    ]
    for config in edges:
        assert validate(config) is config
        build_model(config, input_dim=6)
    make_schedule("step", 1e-9, step_size=1, gamma=1e-9)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('out = ["a"]\n', "out must be text, got ['a']"),
        ('latent = "three"\n', "latent must be a whole number, got 'three'"),
        ("latent = 2.5\n", "latent must be a whole number, got 2.5"),
        ('figures = "maybe"\n', "figures must be true or false, got 'maybe'"),
        ("epochs = true\n", "epochs must be a whole number, got True"),
        ("batch_size = 1e2\n", "batch_size must be a whole number, got 100.0"),
        ("batch-size = 64.0\n", "batch-size must be a whole number, got 64.0"),
        ("lr = true\n", "lr must be a number, got True"),
        ('lr = "0.1"\n', "lr must be a number, got '0.1'"),
        ("figures = 1\n", "figures must be true or false, got 1"),
        ("model = 3\n", "model must be text, got 3"),
        ("data-dir = 0\n", "data-dir must be text, got 0"),
        ("hidden = [true]\n", "hidden must be a list of whole numbers like [500, 500], got [True]"),
        ("hidden = [1.5]\n", "hidden must be a list of whole numbers like [500, 500], got [1.5]"),
        ('hidden = ["5"]\n', "hidden must be a list of whole numbers like [500, 500], got ['5']"),
        ("hidden = [0]\n", "hidden must be positive widths, got [0]"),
        ('[model]\nname = "vae"\n', "model must be text, got a table"),
        ("latent = {size = 3}\n", "latent must be a whole number, got a table"),
        ("lr = nan\n", "lr must be a finite number more than 0, got nan"),
        ("clip = inf\n", "clip must be a finite number at least 0, got inf"),
        ("sparsity-target = 2\n", "sparsity-target must be in (0, 1), got 2.0"),
        ("seed = -1\n", "seed must be at least 0, got -1"),
    ],
)
def test_toml_values_of_the_wrong_type_or_range_name_the_file_and_key(text, message, tmp_path):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        parse_args(["--config", str(path)])
    assert str(caught.value) == f"{path}: {message}"


def test_toml_numbers_take_the_field_type(tmp_path):
    values = read_toml(write(tmp_path, "lr = 1\nbeta = 2\nepochs = 3\n"))
    assert values == {"lr": 1.0, "beta": 2.0, "epochs": 3}
    assert isinstance(values["lr"], float) and isinstance(values["beta"], float)


def test_from_dict_checks_types_and_names_the_source():
    with pytest.raises(ConfigError, match=r"^config.json: latent must be a whole number, got '3'$"):
        from_dict({"latent": "3"}, "config.json")


@pytest.mark.parametrize(
    "argv",
    [
        ["--seed", "-1"],
        ["--lr", "nan"],
        ["--clip", "inf"],
        ["--lr-gamma", "nan"],
        ["--beta", "inf"],
        ["--contraction", "nan"],
        ["--sparsity-weight", "inf"],
        ["--free-bits", "nan"],
        ["--model", "sparse-ae", "--sparsity-target", "2"],
        ["--model", "denoising-ae", "--noise-level", "5"],
        ["--model", "denoising-ae", "--noise-level", "nan"],
    ],
)
def test_a_bad_value_stops_the_cli_before_any_run_folder(argv, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["--out", str(out), "--dataset", "digits", *argv]) == 2
    lines = capsys.readouterr().err.splitlines()
    flag = next(arg for arg in reversed(argv) if arg.startswith("--"))
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag} must be "), lines
    assert not out.exists()


def test_a_bad_toml_value_stops_the_cli_before_any_run_folder(tmp_path, capsys):
    out = tmp_path / "runs"
    path = write(tmp_path, f'out = "{out}"\ndataset = "digits"\nbatch_size = 1e2\n')
    assert main(["--config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"error: {path}: batch_size must be a whole number, got 100.0"]
    assert not out.exists()


# ----- settings that act on some runs only (issue 10) -------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_record_holds_exactly_the_settings_that_act(model, likelihood):
    """config.json stores null for a setting with no effect, and a value for every other."""
    config = Config(model=model, likelihood=likelihood)
    recorded = record(config)
    assert set(recorded) == set(FIELDS)
    for name in APPLIES:
        if FIELDS[name].default is None:  # data_dir: null is also "not given, search"
            continue
        assert (recorded[name] is None) == (not applies(name, config)), name
    assert recorded["activation"] == ("sigmoid" if model == "contractive-ae" else "relu")
    assert from_dict(recorded, "config.json") == validate(replace_nulls(config, recorded))


def replace_nulls(config, recorded):
    """``config`` with its defaults resolved as from_dict resolves them."""
    return dataclasses.replace(
        config,
        hidden=recorded["hidden"],
        hidden2=recorded["hidden2"],
        activation=recorded["activation"],
    )


def test_every_setting_given_where_it_acts_is_accepted_and_elsewhere_refused():
    examples = {
        "learn_var": (["--model", "vae", "--likelihood", "gaussian"], ["--learn-var"]),
        "k": (["--model", "iwae"], ["--k", "3"]),
        "hidden2": (["--model", "iwae2"], ["--hidden2", "8,4"]),
        "latent2": (["--model", "iwae2"], ["--latent2", "3"]),
        "samples": (["--model", "vae"], ["--samples", "2"]),
        "noise": (["--model", "denoising-ae"], ["--noise", "gaussian"]),
        "contraction": (["--model", "contractive-ae"], ["--contraction", "0.2"]),
        "lr_step": (["--schedule", "step"], ["--lr-step", "3"]),
        "adam_eps": (["--optimizer", "adam"], ["--adam-eps", "1e-4"]),
    }
    for name, (where, flag) in examples.items():
        assert parse_args([*where, *flag])[0] is not None
        elsewhere = ["--model", "ae"] if name != "adam_eps" else ["--optimizer", "sgd"]
        with pytest.raises(ConfigError, match=f"^{flag[0]} has no effect on this run"):
            parse_args([*elsewhere, *flag])


def test_the_validators_types_are_the_config_fields_types():
    """One validator: its type of each setting is the type of the field's default."""
    for name, field in FIELDS.items():
        if name in ("hidden", "hidden2") or name in CHOICES:
            continue
        expected = str if field.default is None else type(field.default)
        assert TYPES[name] is expected, name


# ----- the two-layer IWAE's settings ------------------------------------------------------


def test_iwae2_takes_its_layers_from_hidden_latent_hidden2_latent2(tmp_path):
    flags = ["--model", "iwae2", "--hidden", "6,5", "--latent", "4", "--activation", "tanh"]
    config, _, _ = parse_args([*flags, "--hidden2", "5,3", "--latent2", "3", "--k", "2"])
    model = build_model(config, input_dim=8)
    assert model.kind == "iwae2"
    expected = {"hidden1": [6, 5], "latent1": 4, "hidden2": [5, 3], "latent2": 3, "k": 2}
    assert {name: model.config[name] for name in expected} == expected
    assert model.config["activation"] == "tanh"
    # The same from a TOML file, and the paper's upper layer by default.
    path = write(tmp_path, 'model = "iwae2"\nhidden = "6,5"\nhidden2 = 7\n')
    assert validate(Config(**read_toml(path))).resolved_hidden2() == [7]
    assert Config(model="iwae2").resolved_hidden2() == [100, 100]
    assert Config(model="iwae2").latent2 == 50
    # config.json keeps them, and reads them back.
    recorded = record(config)
    assert (recorded["hidden2"], recorded["latent2"]) == ([5, 3], 3)
    assert from_dict(recorded, "config.json") == config
    assert record(Config())["hidden2"] is None and record(Config())["latent2"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "iwae2", "--hidden2", "none"], "iwae2 needs at least one hidden layer"),
        (["--model", "iwae2", "--hidden2", "4,0"], "--hidden2 must be positive widths"),
        (["--model", "iwae2", "--latent2", "0"], "--latent2 must be at least 1"),
        (["--model", "iwae", "--latent2", "3"], "--latent2 has no effect on this run"),
    ],
)
def test_bad_iwae2_settings_are_one_line_errors(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_args(argv)


def test_a_saved_iwae2s_sizes_follow_the_clis_rules():
    from npvae.validate import check_model_config

    good = {"hidden1": [6, 5], "latent1": 4, "hidden2": [5], "latent2": 3}
    assert check_model_config(good, "model.npz") == good
    for key, bad in (("hidden1", [0]), ("latent1", 0), ("hidden2", "5"), ("latent2", 1.5)):
        with pytest.raises(ConfigError, match=f"model setting {key}"):
            check_model_config({**good, key: bad}, "model.npz")


def test_model_setting_reads_a_saved_model_in_the_clis_words():
    from npvae.models import VAE, Autoencoder
    from npvae.validate import model_setting

    squared = Autoencoder(input_dim=4, hidden=[3], code_dim=2, reconstruction="squared")
    assert model_setting(squared.config, "likelihood") == "gaussian"
    assert model_setting(squared.config, "latent") == 2
    gaussian = VAE(input_dim=4, hidden=[3], latent_dim=2, likelihood="gaussian")
    assert model_setting(gaussian.config, "likelihood") == "gaussian"
    assert model_setting(gaussian.config, "samples") == 1
    assert model_setting(gaussian.config, "sparsity") is None


@pytest.mark.parametrize("model", MODELS)
def test_every_keyword_of_a_recipe_is_its_settings_value_through_the_one_table(model):
    from npvae.app.build import model_recipe
    from npvae.validate import as_setting, setting_of

    config = validate(
        Config(model=model, likelihood="gaussian", hidden=[] if model == "contractive-ae" else None)
    )
    values = {
        **vars(config),
        "hidden": config.resolved_hidden(),
        "hidden2": config.resolved_hidden2(),
        "activation": config.resolved_activation(),
    }
    _, settings = model_recipe(config, 784)
    for keyword, value in settings.items():
        if setting_of(keyword) in values and keyword != "code_activation":
            assert as_setting(keyword, value) == values[setting_of(keyword)], keyword


@pytest.mark.parametrize(
    ("argv", "build", "cli_says", "model_says"),
    [
        (
            ["--model", "iwae", "--k", "0"],
            lambda: IWAE(k=0),
            "--k must be at least 1, got 0",
            "k must be at least 1, got 0",
        ),
        (
            ["--model", "iwae2", "--k", "0"],
            lambda: IWAE2(k=0),
            "--k must be at least 1, got 0",
            "k must be at least 1, got 0",
        ),
        (
            ["--samples", "0"],
            lambda: VAE(n_samples=0),
            "--samples must be at least 1, got 0",
            "n_samples must be at least 1, got 0",
        ),
        (
            ["--hidden", "4,0"],
            lambda: VAE(hidden=[4, 0]),
            "--hidden must be positive widths, got [4, 0]",
            "hidden must be one or more positive widths, got [4, 0]",
        ),
        (
            ["--model", "iwae2", "--hidden2", "0"],
            lambda: IWAE2(hidden2=[0]),
            "--hidden2 must be positive widths, got [0]",
            "hidden2 must be one or more positive widths, got [0]",
        ),
    ],
)
def test_the_cli_and_the_models_refuse_by_the_same_rule(argv, build, cli_says, model_says):
    with pytest.raises(ConfigError) as cli:
        parse_args(argv)
    with pytest.raises(ConfigError) as constructor:
        build()
    assert (str(cli.value), str(constructor.value)) == (cli_says, model_says)


def test_an_mlp_needs_two_or_more_positive_widths():
    import numpy as np

    from npvae.network import MLP

    for sizes in ([4], [4, 0]):
        with pytest.raises(ConfigError, match="^MLP sizes must be two or more positive widths"):
            MLP(sizes, rng=np.random.default_rng(0))
