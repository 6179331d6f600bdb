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
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from npvae import __version__
from npvae.app._threads import parse_threads
from npvae.errors import ConfigError
from npvae.validate import (
    BOUNDS,
    CHOICES,
    GENERATIVE,
    K_SAMPLE,
    KINDS,
    MODELS,
    canonical,
    check_choice,
    check_range,
    check_type,
    check_widths,
    fits,
)

CONTRACTIVE = ("sigmoid", "tanh")


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
    latent: int = field(
        default=20,
        metadata=_help(
            "size of the latent space (code size for AEs; iwae2: of z1, the lower layer)"
        ),
    )
    hidden2: list[int] | None = field(
        default=None,
        metadata=_help(
            "iwae2: hidden widths between z1 and z2 (--hidden: between x and z1)",
            default="100,100",
        ),
    )
    latent2: int = field(default=50, metadata=_help("iwae2: size of z2, the upper latent layer"))
    activation: str | None = field(
        default=None,
        metadata=_help(
            "relu, leaky-relu, tanh, sigmoid, softplus or elu (contractive-ae: sigmoid or tanh)",
            default="relu; sigmoid for contractive-ae",
        ),
    )
    likelihood: str = field(
        default="bernoulli",
        metadata=_help("bernoulli or gaussian decoder (AEs: cross-entropy or squared error)"),
    )
    init: str = field(
        default="glorot", metadata=_help("initial weights: glorot (uniform) or he (normal)")
    )
    output_bias: str = field(
        default="zero",
        metadata=_help(
            "the decoder's initial output bias: zero, or data-mean (the mean training "
            "image: its logit for a Bernoulli decoder, as in the IWAE paper)"
        ),
    )
    learn_var: bool = field(
        default=False, metadata=_help("gaussian decoder: learn a per-pixel variance")
    )
    # --- optimisation
    epochs: int = field(default=10, metadata=_help("epochs to train (in total, when resuming)"))
    batch_size: int = field(default=128, metadata=_help("examples per batch"))
    optimizer: str = field(default="adam", metadata=_help("adam, sgd, momentum or nesterov"))
    lr: float = field(default=1e-3, metadata=_help("learning rate"))
    adam_eps: float = field(
        default=1e-8, metadata=_help("adam: epsilon of the denominator (the IWAE paper: 1e-4)")
    )
    schedule: str = field(
        default="constant",
        metadata=_help(
            "learning-rate schedule: constant, step, exponential, iwae (the IWAE paper's 8 "
            "stages, 3280 epochs) or iwae-fit (those stages fitted to --epochs)"
        ),
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
        default="mask",
        metadata=_help(
            "denoising-ae: mask, gaussian or salt-and-pepper (salt-pepper, as config.json "
            "records it, is the same)"
        ),
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
            "threads for the matrix products: a number, or auto "
            "(the cores other work leaves idle, measured at the start)"
        ),
    )
    out: str = field(default="runs", metadata=_help("folder for run folders"))

    def resolved_hidden(self) -> list[int]:
        """The hidden widths, with the model's default filled in."""
        if self.hidden is not None:
            return list(self.hidden)
        return [] if self.model == "contractive-ae" else [400]

    def resolved_hidden2(self) -> list[int]:
        """The widths between z1 and z2 of the two-layer IWAE, with its default filled in."""
        return list(self.hidden2) if self.hidden2 is not None else [100, 100]

    def resolved_activation(self) -> str:
        """The activation, with the model's default filled in."""
        if self.activation is not None:
            return self.activation
        return "sigmoid" if self.model == "contractive-ae" else "relu"


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


#: The settings that act on some runs only: name -> (the runs they act on, in words; a test).
#: Given where it has no effect, a setting is refused; config.json records it as null there.
APPLIES = {
    "data_dir": ("--dataset mnist, fashion-mnist or auto", lambda c: c.dataset != "digits"),
    "activation": (
        "a model with hidden layers, or the contractive-ae",
        lambda c: c.model == "contractive-ae" or bool(c.resolved_hidden()),
    ),
    "learn_var": (
        "a vae, iwae or iwae2 with --likelihood gaussian",
        lambda c: c.model in GENERATIVE and c.likelihood == "gaussian",
    ),
    "lr_step": ("--schedule step", lambda c: c.schedule == "step"),
    "lr_gamma": (
        "--schedule step or exponential",
        lambda c: c.schedule in ("step", "exponential"),
    ),
    **{
        name: ("--model vae", lambda c: c.model == "vae")
        for name in ("beta", "warmup", "free_bits", "samples")
    },
    "k": ("--model iwae or iwae2", lambda c: c.model in K_SAMPLE),
    **{name: ("--model iwae2", lambda c: c.model == "iwae2") for name in ("hidden2", "latent2")},
    **{
        name: ("--model sparse-ae", lambda c: c.model == "sparse-ae")
        for name in ("sparsity", "sparsity_weight", "sparsity_target")
    },
    **{
        name: ("--model denoising-ae", lambda c: c.model == "denoising-ae")
        for name in ("noise", "noise_level")
    },
    "contraction": ("--model contractive-ae", lambda c: c.model == "contractive-ae"),
    "adam_eps": ("--optimizer adam", lambda c: c.optimizer == "adam"),
    "ll_samples": ("--model vae, iwae or iwae2", lambda c: c.model in GENERATIVE),
    "ll_examples": (
        "--model vae, iwae or iwae2 with --ll-samples above 0",
        lambda c: c.model in GENERATIVE and c.ll_samples > 0,
    ),
}


def applies(name: str, config: Config) -> bool:
    """Whether setting ``name`` has any effect on a run of ``config``."""
    return name not in APPLIES or APPLIES[name][1](config)


def _flag(name: str, value=None) -> str:
    """The flag of field ``name`` as typed: ``--batch-size``; ``--no-figures`` for figures off."""
    flag = "--" + name.replace("_", "-")
    return flag.replace("--", "--no-", 1) if value is False else flag


def _kind(name: str) -> type:
    default = FIELDS[name].default
    return str if default is None else type(default)


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
    if name in ("hidden", "hidden2"):
        return parse_hidden(text, _flag(name))
    kind = _kind(name)
    if kind in (str, bool):
        return canonical(name, text)
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{_flag(name)} must be {KINDS[kind]}, got {text!r}") from None


def _typed(name: str, value, label: str):
    """A TOML or JSON value checked by the one set of rules (:mod:`npvae.validate`)."""
    if value is None and FIELDS[name].default is None:
        return None  # config.json and checkpoints store an unset field as null
    if name in ("hidden", "hidden2") and (isinstance(value, str) or fits(int, value)):
        return parse_hidden(value, label)  # TOML may say "500,500" or 400, as the flag does
    if name == "threads" and fits(int, value):
        return str(value)  # threads = 2 in TOML, as well as "auto"
    if name in ("hidden", "hidden2"):
        return check_widths(value, label)
    if name in CHOICES:
        value = canonical(name, check_type(name, value, label))
        check_choice(name, value, label)
        return value
    value = check_type(name, value, label)
    if name in BOUNDS:
        check_range(name, value, label)
    return value


def validate(config: Config, given: dict | None = None) -> Config:
    """Check every value's range and name, and that each ``given`` setting acts on the run.

    ``given`` maps the names the user set (by flag or in a TOML file) to how
    they were set (``--no-figures``, ``run.toml: k``); one of them with no
    effect on this run is refused.  Returns ``config`` or raises ConfigError.
    """
    for name in CHOICES:
        value = getattr(config, name, None)
        if name in FIELDS and not (value is None and FIELDS[name].default is None):
            check_choice(name, value, _flag(name))
    for name in BOUNDS:
        if name in FIELDS:
            check_range(name, getattr(config, name), _flag(name))
    if config.noise != "gaussian" and config.noise_level > 1:
        raise ConfigError(
            f"--noise-level must be in [0, 1] for --noise {config.noise}, got {config.noise_level}"
        )
    if config.model == "contractive-ae" and config.resolved_hidden():
        raise ConfigError(
            "contractive-ae supports a one-layer encoder only: "
            "leave out --hidden or pass --hidden none"
        )
    if config.model in GENERATIVE and not config.resolved_hidden():
        raise ConfigError(f"{config.model} needs at least one hidden layer (--hidden 400)")
    if config.model == "iwae2" and not config.resolved_hidden2():
        raise ConfigError("iwae2 needs at least one hidden layer between z1 and z2 (--hidden2 100)")
    parse_threads(config.threads)
    if config.model == "contractive-ae" and config.resolved_activation() not in CONTRACTIVE:
        raise ConfigError(
            f"contractive-ae takes --activation sigmoid or tanh (its code's), "
            f"not {config.activation}"
        )
    for name, label in (given or {}).items():
        if not applies(name, config):
            where, _ = APPLIES[name]
            raise ConfigError(
                f"{label} has no effect on this run: it applies to {where} only; leave it out"
            )
    return config


def record(config: Config) -> dict:
    """The settings as ``config.json`` and checkpoints store them: defaults resolved, and
    a setting with no effect on this run stored as null, so the record claims nothing false."""
    values = dataclasses.asdict(config)
    values["hidden"] = config.resolved_hidden()
    values["hidden2"] = config.resolved_hidden2()  # null below unless the model is iwae2
    values["activation"] = config.resolved_activation() if applies("activation", config) else None
    for name in APPLIES:
        if not applies(name, config):
            values[name] = None
    return values


class Given(dict):
    """The settings the user gave (name -> value), with how each was given in ``labels``."""

    def __init__(self, values: dict, labels: dict) -> None:
        super().__init__(values)
        self.labels = labels


def read_toml(path: str | Path) -> Given:
    """The settings of a TOML file (keys with dashes or underscores), checked; ``.labels``
    holds ``"<path>: <key>"`` for each, as errors name them."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    values, labels = {}, {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise ConfigError(f"{path}: unknown key {key!r}; see python -m npvae.train --help")
        labels[name] = f"{path}: {key}"
        values[name] = _typed(name, value, labels[name])
    return Given(values, labels)


#: What argparse should read as a negative number, not a flag: ``-1``, ``-1.5``, ``-.5``,
#: ``-1e-3``, ``-2E+4``, ``-inf``.  argparse's own pattern leaves out exponents and inf.
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-inf(inity)?$", re.IGNORECASE)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is a ConfigError (one line), not usage text and exit.

    Every npvae command line uses it (``train``, ``evaluate``, ``figures``, ``tour``,
    ``gradcheck``).  A negative number after a flag that takes a value is that value
    (``--lr -1e-3``), so it meets the flag's own range check and its message, not
    argparse's "expected one argument".
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str):
        # A type's message names its flag already: "argument --k: --k must be ..." says it twice.
        flag = re.match(r"argument (\S+): (?=\1 )", message)
        if flag:
            message = message[flag.end() :]
        raise ConfigError(f"{message} (see {self.prog} --help)")


def whole_number(flag: str, least: int = 0, most: int | None = None):
    """An argparse ``type`` for a whole-number flag from ``least`` to ``most`` (None: no top).

    Its messages name the flag: ``--k must be a whole number, got 'x'``.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} must be a whole number, got {text!r}"
            ) from None
        if value < least or (most is not None and value > most):
            within = f"{least} or more" if most is None else f"{least} to {most}"
            raise argparse.ArgumentTypeError(f"{flag} must be {within}, got {value}")
        return value

    return parse


def make_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m npvae.train``, one per Config field, plus --config and --resume."""
    parser = OneLineParser(
        prog="python -m npvae.train",
        description="Train an autoencoder or VAE and write a run folder: config, metrics, "
        "checkpoints and figures.",
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"npvae {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings (flags win)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR where it stopped (or from a checkpoint file in it); "
        "the number of epochs, the learning rate and its schedule, and the evaluation and "
        "figure settings may change, and each change is recorded in config.json",
    )
    parser.add_argument(
        "--from",
        dest="from_",
        metavar="CHECKPOINT",
        help="with --resume: last or best (default: last)",
    )
    for f in dataclasses.fields(Config):
        shown = f.metadata.get("default", "none" if f.default is None else f.default)
        text = f"{f.metadata['help']} (default: {shown})"
        if isinstance(f.default, bool):
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, help=text)
        else:
            parser.add_argument(_flag(f.name), metavar=f.name.upper(), help=text)
    return parser


@dataclass(frozen=True)
class ResumeRequest:
    """``--resume PATH [--from last|best]``: a run folder, or a checkpoint file in one."""

    path: str
    checkpoint: str | None  # "last", "best", or None when not said


def parse_args(argv: list[str] | None) -> tuple[Config, Given, ResumeRequest | None]:
    """``(config, explicitly given values, resume request)`` from the command line.

    The config is defaults, then the TOML file, then the flags; the second
    item holds only what the command line and the file said (for --resume),
    with ``.labels`` saying how each was said.
    """
    namespace = vars(make_parser().parse_args(argv))
    resume = namespace.pop("resume", None)
    checkpoint = namespace.pop("from_", None)
    if checkpoint is not None and resume is None:
        raise ConfigError("--from picks the checkpoint of --resume RUN_DIR; give --resume too")
    if checkpoint is not None and checkpoint not in ("last", "best"):
        raise ConfigError(f"--from {checkpoint!r} is not one of: last, best")
    given = read_toml(namespace.pop("config")) if "config" in namespace else Given({}, {})
    for name, value in namespace.items():
        given[name] = _from_flag(name, value)
        given.labels[name] = _flag(name, value)
    request = ResumeRequest(resume, checkpoint) if resume is not None else None
    if request is not None:
        return Config(), given, request  # checked against the saved config by the resume
    return validate(Config(**given), given.labels), given, None


#: Settings newer than the first npvae: a file of an older one lacks them, and their
#: defaults are what that npvae did (Adam's 1e-8, a zero output bias, automatic threads;
#: hidden2 and latent2 act on the two-layer IWAE only, which no older npvae had).
ADDED_LATER = ("adam_eps", "output_bias", "threads", "hidden2", "latent2")


def from_dict(values: dict, source) -> Config:
    """Rebuild a Config from ``config.json`` or a checkpoint, checked as the CLI checks flags.

    Every setting must be there (unknown ones are an error).  A setting with no
    effect on the run is null (or, in files of older npvae, its default); any
    other value there is a claim the run never acted on, so the file is refused.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: the run's settings are not a table; was it written by npvae?")
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown setting{'s' if len(unknown) > 1 else ''} {unknown}; "
            "was it written by npvae?"
        )
    typed = {
        name: _typed(name, value, f"{source}: {name}")
        for name, value in values.items()
        if value is not None or FIELDS[name].default is None
    }
    missing = sorted(set(FIELDS) - set(values) - set(ADDED_LATER))
    if missing:
        raise ConfigError(
            f"{source}: {'setting' if len(missing) == 1 else 'settings'} {missing} "
            f"{'is' if len(missing) == 1 else 'are'} missing; was it written by npvae?"
        )
    config = Config(**typed)
    try:
        validate(config)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    for name in FIELDS:
        value, default = values.get(name, FIELDS[name].default), FIELDS[name].default
        if applies(name, config) and value is None and default is not None:
            raise ConfigError(f"{source}: {name} is null, but this run needs it")
        if not applies(name, config) and value is not None and typed.get(name, default) != default:
            raise ConfigError(
                f"{source}: {name} is {value!r}, but it has no effect on this run "
                f"(it applies to {APPLIES[name][0]} only); was the file edited?"
            )
    return config
