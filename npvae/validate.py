"""The rules every setting obeys, written once: its type, and its range or its choices.

Two readers use them.  :mod:`npvae.app.config` checks the CLI's flags, a TOML file,
``config.json`` and a checkpoint's run config; :func:`npvae.models.base.rebuild`
checks the config of a saved model before building it.  A model's keyword
names differ from the CLI's (``latent_dim`` and ``code_dim`` are ``--latent``):
:data:`MODEL_NAMES` is the one map between the two vocabularies, so a value the
CLI would refuse is refused in a file too, in the same words.

A value is checked for its type first (a JSON ``"5"`` is no whole number, a
``true`` no number, ``1.5`` no whole number), then for its interval or choice.
NaN lies inside no interval, and inf inside none that ends at a number.
"""

from __future__ import annotations

import math
import numbers

from npvae.errors import ConfigError

MODELS = ("vae", "iwae", "iwae2", "ae", "sparse-ae", "denoising-ae", "contractive-ae")
#: The models with a latent prior: they sample, and have a KL and a log-likelihood.
GENERATIVE = ("vae", "iwae", "iwae2")
#: The models trained on the k-sample bound (``--k``); their loss is −L_k, not recon + KL.
K_SAMPLE = ("iwae", "iwae2")
DATASETS = ("auto", "mnist", "fashion-mnist", "digits")
ACTIVATIONS = ("relu", "leaky-relu", "tanh", "sigmoid", "softplus", "elu")

CHOICES = {
    "model": MODELS,
    "dataset": DATASETS,
    "binarize": ("none", "static", "dynamic"),
    "activation": ACTIVATIONS,
    "likelihood": ("bernoulli", "gaussian"),
    "init": ("glorot", "he"),
    "output_bias": ("zero", "data-mean"),
    "optimizer": ("adam", "sgd", "momentum", "nesterov"),
    "schedule": ("constant", "step", "exponential", "iwae", "iwae-fit"),
    "sparsity": ("kl", "l1"),
    "noise": ("mask", "gaussian", "salt-pepper"),  # salt-pepper: see ALIASES
    "dtype": ("float32", "float64"),
    "objective": ("iwae", "vae"),
    # a saved model's own settings
    "code_activation": ACTIVATIONS,
    "reconstruction": ("bernoulli", "squared"),
}

#: Other names a choice is given by, setting -> {alias: the choice}.  "salt-and-pepper" is
#: the name the README and the literature use; the choice itself stays "salt-pepper", the
#: name saved models, config.json files and TOML files already hold.
ALIASES = {"noise": {"salt-and-pepper": "salt-pepper"}}

#: The allowed values of every number, as intervals: "[" or "]" takes the end in, "(" or ")"
#: leaves it out.  They are what the models, optimizers and schedules accept (noise level:
#: also at most 1 unless the noise is gaussian, checked by the readers).
BOUNDS = {
    "val_size": "[0, inf)",
    "latent": "[1, inf)",
    "latent2": "[1, inf)",
    "epochs": "[1, inf)",
    "batch_size": "[1, inf)",
    "lr": "(0, inf)",
    "adam_eps": "(0, inf)",
    "lr_step": "[1, inf)",
    "lr_gamma": "(0, inf)",
    "clip": "[0, inf)",  # 0: off
    "beta": "[0, inf)",
    "warmup": "[0, inf)",
    "free_bits": "[0, inf)",
    "samples": "[1, inf)",
    "k": "[1, inf)",
    "sparsity_weight": "[0, inf)",
    "sparsity_target": "(0, 1)",
    "noise_level": "[0, inf)",
    "contraction": "[0, inf)",
    "ll_samples": "[0, inf)",
    "ll_examples": "[0, inf)",
    "seed": "[0, inf)",  # numpy's generators take any whole number >= 0
    # a saved model's own settings
    "input_dim": "[1, inf)",
    "init_log_var": "(-inf, inf)",
}

#: The one map between the two vocabularies: a model's keyword -> the setting it is (a
#: flag, a TOML key, a key of config.json).  Any other keyword is its setting's own name.
#: A keyword with choices of its own names the setting's choices in the same order: an
#: autoencoder's reconstruction "bernoulli", "squared" is the likelihood "bernoulli", "gaussian".
MODEL_NAMES = {
    "latent_dim": "latent",
    "code_dim": "latent",
    "hidden1": "hidden",  # the two-layer IWAE's: hidden1, latent1 are --hidden, --latent
    "latent1": "latent",
    "n_samples": "samples",
    "warmup_steps": "warmup",
    "learned_var": "learn_var",
    "target": "sparsity_target",
    "reconstruction": "likelihood",
}

#: The settings that are lists of layer widths.
WIDTHS = ("hidden", "hidden2")

#: The type of every setting a rule names that is not a choice (choices are text).
TYPES = {
    **{name: int for name in ("val_size", "latent", "latent2", "epochs", "batch_size")},
    "lr_step": int,
    **{name: int for name in ("warmup", "samples", "k", "ll_samples", "ll_examples", "seed")},
    **{name: float for name in ("lr", "lr_gamma", "clip", "beta", "free_bits", "contraction")},
    "adam_eps": float,
    **{name: float for name in ("sparsity_weight", "sparsity_target", "noise_level")},
    "input_dim": int,
    "init_log_var": float,
    "learn_var": bool,
    "figures": bool,
    "out": str,
    "data_dir": str,
    "threads": str,
}

KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def fits(kind: type, value) -> bool:
    """Whether a TOML or JSON value is of type ``kind`` (an int is a fine float; a bool no int)."""
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


def check_type(name: str, value, label: str):
    """``value`` as setting ``name``'s type (an int becomes a float), else a ConfigError."""
    kind = str if name in CHOICES else TYPES[name]
    if fits(kind, value):
        return float(value) if kind is float else value
    got = "a table" if isinstance(value, dict) else repr(value)[:60]
    raise ConfigError(f"{label} must be {KINDS[kind]}, got {got}")


def check_range(name: str, value, label: str) -> None:
    """Raise a ConfigError naming ``label`` unless ``value`` is inside ``BOUNDS[name]``."""
    interval = BOUNDS[name]
    low, high = (float(end) for end in interval[1:-1].split(","))
    above = low <= value if interval[0] == "[" else low < value
    below = value <= high if interval[-1] == "]" else value < high
    if above and below:
        return
    if high == math.inf and low == -math.inf:
        rule = "a finite number"
    elif high == math.inf:
        rule = f"{'at least' if interval[0] == '[' else 'more than'} {low:g}"
    else:
        rule = f"in {interval}"
    if isinstance(value, float) and not math.isfinite(value) and rule != "a finite number":
        rule = f"a finite number {rule}"
    raise ConfigError(f"{label} must be {rule}, got {value}")


def check_choice(name: str, value, label: str) -> None:
    """Raise a ConfigError naming ``label`` unless ``value`` is one of ``CHOICES[name]``."""
    if value not in CHOICES[name]:
        aliases = ALIASES.get(name, {})
        also = f" (or {', '.join(aliases)})" if aliases else ""
        raise ConfigError(f"{label} {value!r} is not one of: {', '.join(CHOICES[name])}{also}")


def canonical(name: str, value):
    """The choice ``value`` stands for: itself, or the choice an alias names (``ALIASES``)."""
    return ALIASES.get(name, {}).get(value, value)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 epoch"``, ``"3 epochs"``: a count and its noun, singular for exactly 1.

    ``plural`` is for nouns that do not just take an ``s``; every message that
    prints a count a user can set goes through it.
    """
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def check_widths(value, label: str, least: int = 0) -> list[int]:
    """Layer widths: a list of ``least`` or more whole numbers, each at least 1.

    The one rule for widths, wherever they enter: a TOML or JSON list, a flag's
    ``500,500``, a model's ``hidden`` and an ``MLP``'s sizes.  Returns the widths
    as a list, else raises a ConfigError naming ``label``.
    """
    if not isinstance(value, list | tuple) or not all(
        isinstance(width, numbers.Integral) and not isinstance(width, bool) for width in value
    ):
        raise ConfigError(f"{label} must be a list of whole numbers like [500, 500], got {value!r}")
    widths = [int(width) for width in value]
    if len(widths) < least or any(width < 1 for width in widths):
        how_many = {0: "", 1: "one or more ", 2: "two or more "}.get(least, f"{least} or more ")
        raise ConfigError(f"{label} must be {how_many}positive widths, got {widths}")
    return widths


def check_sizes(input_dim, hidden, latent_dim, names=("input_dim", "hidden", "latent_dim")):
    """The sizes of an encoder ``input_dim -> hidden -> latent_dim`` (and of its mirrored
    decoder): positive, with one hidden layer or more; else a ConfigError naming them by
    ``names``."""
    check_range("input_dim", input_dim, names[0])
    check_widths(list(hidden), names[1], least=1)
    check_range("latent", latent_dim, names[2])


def setting_of(keyword: str) -> str:
    """The setting a model's ``keyword`` is: ``"latent"`` for ``"code_dim"``."""
    return MODEL_NAMES.get(keyword, keyword)


def _same_choice(value, choices: tuple, into: tuple):
    return into[choices.index(value)] if value in choices else value


def as_setting(keyword: str, value):
    """A model keyword's ``value`` in its setting's words: ``"gaussian"`` for ``"squared"``."""
    setting = setting_of(keyword)
    if keyword == setting or keyword not in CHOICES:
        return value
    return _same_choice(value, CHOICES[keyword], CHOICES[setting])


def as_keyword(keyword: str, value):
    """A setting's ``value`` in the words of the model's ``keyword`` (undoes :func:`as_setting`)."""
    setting = setting_of(keyword)
    if keyword == setting or keyword not in CHOICES:
        return value
    return _same_choice(value, CHOICES[setting], CHOICES[keyword])


def model_setting(model_config: dict, setting: str):
    """The value of ``setting`` (a CLI name) in a model's config, in the CLI's words; None
    when the model has no such setting.  ``model_setting(ae.config, "likelihood")`` is
    ``"gaussian"`` for a squared-error autoencoder."""
    for keyword, value in model_config.items():
        if setting_of(keyword) == setting:
            return as_setting(keyword, value)
    return None


def _rule_of(name: str) -> str:
    """The setting whose rule ``name`` (a setting or a model's keyword) follows."""
    return name if name in {*WIDTHS, *CHOICES, *BOUNDS, *TYPES} else setting_of(name)


def check_value(name: str, value, label: str):
    """Type, then range or choice, of one setting (a CLI name or a saved model's keyword)."""
    name = _rule_of(name)
    if name in WIDTHS:
        return check_widths(value, label)
    value = check_type(name, value, label)
    if name in BOUNDS:
        check_range(name, value, label)
    elif name in CHOICES:
        check_choice(name, value, label)
    return value


def check_model_config(config, source) -> dict:
    """A saved model's config, each value checked by the CLI's rules; raises ConfigError.

    ``code_activation`` may be null (a linear code); every other key needs a value.
    Keys no rule names are left for the model's constructor to refuse.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: the model's config is not a table")
    checked = {}
    for key, value in config.items():
        rule = _rule_of(key)
        known = rule in {*WIDTHS, *CHOICES, *BOUNDS, *TYPES}
        if not known or (key == "code_activation" and value is None):
            checked[key] = value
            continue
        checked[key] = check_value(key, value, f"{source}: model setting {key}")
    noise = checked.get("noise", "gaussian")
    if noise != "gaussian" and checked.get("noise_level", 0) > 1:
        raise ConfigError(
            f"{source}: model setting noise_level must be in [0, 1] for {noise} noise, "
            f"got {checked['noise_level']}"
        )
    return checked
