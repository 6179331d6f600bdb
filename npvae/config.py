"""The configuration of a training run: one dataclass, read from flags and a TOML file.

Every field of :class:`Config` is a command-line flag of ``python -m
npvae.train`` (``latent`` -> ``--latent``, ``batch_size`` -> ``--batch-size``)
with its default and help text taken from here, so the flags, the TOML keys,
``config.json`` in the run folder and the checkpoint all speak the same
names.  Precedence: defaults < ``--config FILE`` < flags on the command line.
An unknown key, a bad value or a flag that does not parse is a
:class:`~npvae.errors.ConfigError` with one line saying what to change.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from npvae._threads import parse_threads
from npvae.errors import ConfigError

MODELS = ("vae", "iwae", "ae", "sparse-ae", "denoising-ae", "contractive-ae")
DATASETS = ("auto", "mnist", "fashion-mnist", "digits")


def _help(text: str, default: str | None = None) -> dict:
    """A field's help text, and its default as --help shows it when not the value itself."""
    return {"help": text} if default is None else {"help": text, "default": default}


@dataclass
class Config:
    """Everything a run depends on.  The defaults train the classic MNIST VAE (784-400-20)."""

    # --- what to train
    model: str = field(default="vae", metadata=_help(f"model: {', '.join(MODELS)}"))
    dataset: str = field(
        default="auto",
        metadata=_help(
            "mnist, fashion-mnist, or digits (embedded, no files needed); "
            "auto: MNIST if found or downloadable, else the embedded digits"
        ),
    )
    data_dir: str | None = field(
        default=None,
        metadata=_help(
            "folder holding the dataset's IDX files",
            default="$NPVAE_DATA, ~/.cache/npvae, /usr/share/datasets, else a download",
        ),
    )
    binarize: str = field(
        default="none",
        metadata=_help("none (grey levels in [0, 1]), static (one fixed draw) or dynamic"),
    )
    val_size: int = field(
        default=0, metadata=_help("examples held out of the training set for validation")
    )
    # --- architecture
    hidden: list[int] | None = field(
        default=None,
        metadata=_help(
            "hidden widths, e.g. 400 or 500,500; none: no hidden layer",
            default="400; none for contractive-ae",
        ),
    )
    latent: int = field(default=20, metadata=_help("size of the latent space (code size for AEs)"))
    activation: str = field(
        default="relu", metadata=_help("relu, leaky-relu, tanh, sigmoid, softplus or elu")
    )
    likelihood: str = field(
        default="bernoulli",
        metadata=_help("bernoulli or gaussian decoder (AEs: cross-entropy or squared error)"),
    )
    init: str = field(
        default="glorot", metadata=_help("initial weights: glorot (uniform) or he (normal)")
    )
    learn_var: bool = field(
        default=False, metadata=_help("gaussian decoder: learn a per-pixel variance")
    )
    # --- optimisation
    epochs: int = field(default=10, metadata=_help("epochs to train (in total, when resuming)"))
    batch_size: int = field(default=128, metadata=_help("examples per batch"))
    optimizer: str = field(default="adam", metadata=_help("adam, sgd, momentum or nesterov"))
    lr: float = field(default=1e-3, metadata=_help("learning rate"))
    schedule: str = field(
        default="constant",
        metadata=_help("learning-rate schedule: constant, step, exponential or iwae"),
    )
    lr_step: int = field(default=10, metadata=_help("step schedule: epochs between decays"))
    lr_gamma: float = field(default=0.5, metadata=_help("step/exponential schedule: decay factor"))
    clip: float = field(default=0.0, metadata=_help("clip the gradient's global norm (0: off)"))
    # --- the VAE's objective
    beta: float = field(default=1.0, metadata=_help("weight of the KL term"))
    warmup: int = field(default=0, metadata=_help("KL warm-up: steps for beta to rise from 0"))
    free_bits: float = field(default=0.0, metadata=_help("free bits: KL floor per dimension"))
    samples: int = field(default=1, metadata=_help("VAE: samples of z per example"))
    k: int = field(default=5, metadata=_help("IWAE: importance samples per example"))
    # --- the autoencoders' penalties
    sparsity: str = field(default="kl", metadata=_help("sparse-ae: kl or l1"))
    sparsity_weight: float = field(default=0.1, metadata=_help("sparse-ae: penalty weight"))
    sparsity_target: float = field(default=0.05, metadata=_help("sparse-ae: target activation"))
    noise: str = field(
        default="mask", metadata=_help("denoising-ae: mask, gaussian or salt-pepper")
    )
    noise_level: float = field(default=0.25, metadata=_help("denoising-ae: corruption level"))
    contraction: float = field(default=0.1, metadata=_help("contractive-ae: penalty weight"))
    # --- evaluation
    ll_samples: int = field(
        default=100,
        metadata=_help("importance samples for the test log-likelihood (0: skip; paper: 5000)"),
    )
    ll_examples: int = field(
        default=1000, metadata=_help("test images for the log-likelihood (0: all)")
    )
    figures: bool = field(default=True, metadata=_help("draw the figures at the end"))
    # --- the run
    dtype: str = field(default="float32", metadata=_help("float32 or float64"))
    seed: int = field(default=0, metadata=_help("seed of the weights, shuffling and noise"))
    threads: str = field(
        default="auto",
        metadata=_help(
            "threads for the matrix products and parallel kernels: a number, or auto "
            "(the cores other work leaves idle, measured at the start)"
        ),
    )
    out: str = field(default="runs", metadata=_help("folder for run folders"))

    def resolved_hidden(self) -> list[int]:
        """The hidden widths, with the model's default filled in."""
        if self.hidden is not None:
            return list(self.hidden)
        return [] if self.model == "contractive-ae" else [400]


FIELDS = {f.name: f for f in dataclasses.fields(Config)}

CHOICES = {
    "model": MODELS,
    "dataset": DATASETS,
    "binarize": ("none", "static", "dynamic"),
    "activation": ("relu", "leaky-relu", "tanh", "sigmoid", "softplus", "elu"),
    "likelihood": ("bernoulli", "gaussian"),
    "init": ("glorot", "he"),
    "optimizer": ("adam", "sgd", "momentum", "nesterov"),
    "schedule": ("constant", "step", "exponential", "iwae"),
    "sparsity": ("kl", "l1"),
    "noise": ("mask", "gaussian", "salt-pepper"),
    "dtype": ("float32", "float64"),
}

#: The allowed values of every number, as intervals: "[" or "]" takes the end in, "(" or ")"
#: leaves it out.  They are what the models, optimizers and schedules accept (noise level:
#: also at most 1 unless the noise is gaussian), so a bad value stops here, before a run
#: folder exists.  NaN is inside no interval, inf inside none of these.
BOUNDS = {
    "val_size": "[0, inf)",
    "latent": "[1, inf)",
    "epochs": "[1, inf)",
    "batch_size": "[1, inf)",
    "lr": "(0, inf)",
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
}

KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _kind(name: str) -> type:
    default = FIELDS[name].default
    return str if default is None else type(default)


def _fits(kind: type, value) -> bool:
    """Whether a TOML or JSON value is of type ``kind`` (an int is a fine float; a bool no int)."""
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


def parse_hidden(text, label: str = "--hidden") -> list[int]:
    """``"500,500"``, ``"400"``, ``""``/``"none"`` or a list -> widths."""
    if isinstance(text, list):
        items = text
    elif str(text).strip().lower() in ("", "none"):
        return []
    else:
        items = str(text).replace(" ", "").split(",")
    try:
        widths = [int(item) for item in items]
    except (TypeError, ValueError):
        raise ConfigError(f"{label} must be whole numbers like 500,500, got {text!r}") from None
    if any(width < 1 for width in widths):
        raise ConfigError(f"{label} must be positive widths, got {text!r}")
    return widths


def _from_flag(name: str, text):
    """A flag's text converted to the field's type (switches arrive as bools already)."""
    if name == "hidden":
        return parse_hidden(text)
    kind = _kind(name)
    if kind in (str, bool):
        return text
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{_flag(name)} must be {KINDS[kind]}, got {text!r}") from None


def _typed(name: str, value, label: str):
    """A TOML or JSON value, if its type is the field's; else a ConfigError naming ``label``."""
    if value is None and FIELDS[name].default is None:
        return None  # config.json and checkpoints store an unset field as null
    if name == "hidden":
        widths = isinstance(value, list) and all(_fits(int, width) for width in value)
        if widths or isinstance(value, str) or _fits(int, value):
            return parse_hidden(value, label)
        expected = "a list of whole numbers like [500, 500]"
    elif name == "threads" and _fits(int, value):
        return str(value)  # threads = 2 in TOML, as well as "auto"
    else:
        kind = _kind(name)
        if _fits(kind, value):
            return float(value) if kind is float else value
        expected = KINDS[kind]
    got = "a table" if isinstance(value, dict) else repr(value)
    raise ConfigError(f"{label} must be {expected}, got {got}")


def _check_range(name: str, value, label: str) -> None:
    """Raise a ConfigError naming ``label`` unless ``value`` is inside ``BOUNDS[name]``."""
    interval = BOUNDS[name]
    low, high = (float(end) for end in interval[1:-1].split(","))
    above = low <= value if interval[0] == "[" else low < value
    below = value <= high if interval[-1] == "]" else value < high
    if above and below:
        return
    if high == math.inf:
        rule = f"{'at least' if interval[0] == '[' else 'more than'} {low:g}"
    else:
        rule = f"in {interval}"
    if isinstance(value, float) and not math.isfinite(value):
        rule = f"a finite number {rule}"
    raise ConfigError(f"{label} must be {rule}, got {value}")


def validate(config: Config) -> Config:
    """Check every value's range and name; returns ``config`` or raises ConfigError."""
    for name, choices in CHOICES.items():
        if getattr(config, name) not in choices:
            raise ConfigError(
                f"{_flag(name)} {getattr(config, name)!r} is not one of: {', '.join(choices)}"
            )
    for name in BOUNDS:
        _check_range(name, getattr(config, name), _flag(name))
    if config.noise != "gaussian" and config.noise_level > 1:
        raise ConfigError(
            f"--noise-level must be in [0, 1] for --noise {config.noise}, got {config.noise_level}"
        )
    parse_threads(config.threads)
    if config.model == "contractive-ae" and config.resolved_hidden():
        raise ConfigError(
            "contractive-ae supports a one-layer encoder only: "
            "leave out --hidden or pass --hidden none"
        )
    if config.model in ("vae", "iwae") and not config.resolved_hidden():
        raise ConfigError(f"{config.model} needs at least one hidden layer (--hidden 400)")
    return config


def read_toml(path: str | Path) -> dict:
    """The keys of a TOML config file (dashes or underscores), checked against the fields."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise ConfigError(f"{path}: unknown key {key!r}; see python -m npvae.train --help")
        values[name] = _typed(name, value, f"{path}: {key}")
        if name in BOUNDS:
            _check_range(name, values[name], f"{path}: {key}")
    return values


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is a ConfigError (one line), not usage text and exit."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see python -m npvae.train --help)")


def make_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m npvae.train``, one per Config field, plus --config and --resume."""
    parser = _Parser(
        prog="python -m npvae.train",
        description="Train an autoencoder or VAE and write a run folder: config, metrics, "
        "checkpoints and figures.",
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings (flags win)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped"
    )
    for f in dataclasses.fields(Config):
        shown = f.metadata.get("default", "none" if f.default is None else f.default)
        text = f"{f.metadata['help']} (default: {shown})"
        if isinstance(f.default, bool):
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, help=text)
        else:
            parser.add_argument(_flag(f.name), metavar=f.name.upper(), help=text)
    return parser


def parse_args(argv: list[str] | None) -> tuple[Config, dict, str | None]:
    """``(config, explicitly given values, resume dir)`` from the command line.

    The config is defaults, then the TOML file, then the flags; the second
    item holds only what the command line and the file said (for --resume).
    """
    namespace = vars(make_parser().parse_args(argv))
    resume = namespace.pop("resume", None)
    given = read_toml(namespace.pop("config")) if "config" in namespace else {}
    given.update({name: _from_flag(name, value) for name, value in namespace.items()})
    return validate(Config(**given)), given, resume


def from_dict(values: dict, source) -> Config:
    """Rebuild a Config from ``config.json`` or a checkpoint (unknown keys are an error)."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{source}: unknown settings {unknown}; was it written by npvae?")
    typed = {name: _typed(name, value, f"{source}: {name}") for name, value in values.items()}
    return validate(Config(**typed))
