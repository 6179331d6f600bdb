"""The configuration of a training run: one dataclass, its rules, and its record.

Every field of :class:`Config` is a command-line flag of ``python -m
npvae.train`` (:mod:`npvae.app.flags` reads them), a TOML key, a key of
``config.json`` in the run folder and of the checkpoint: all speak the same
names.  An unknown key or a bad value is a :class:`~npvae.errors.ConfigError`
with one line saying what to change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from npvae.app._threads import parse_threads
from npvae.errors import ConfigError
from npvae.validate import (
    BOUNDS,
    CHOICES,
    GENERATIVE,
    K_SAMPLE,
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
    objective: str = field(
        default="iwae",
        metadata=_help(
            "iwae2: what the k samples train, iwae (the k-sample bound) or vae (the average "
            "of k one-sample ELBOs, the IWAE paper's VAE with k samples)"
        ),
    )
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
    **{
        name: ("--model iwae2", lambda c: c.model == "iwae2")
        for name in ("hidden2", "latent2", "objective")
    },
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


def flag_name(name: str, value=None) -> str:
    """The flag of field ``name`` as typed: ``--batch-size``; ``--no-figures`` for figures off."""
    flag = "--" + name.replace("_", "-")
    return flag.replace("--", "--no-", 1) if value is False else flag


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
    return check_widths(widths, label)


def file_value(name: str, value, label: str):
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
            check_choice(name, value, flag_name(name))
    for name in BOUNDS:
        if name in FIELDS:
            check_range(name, getattr(config, name), flag_name(name))
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


#: Settings newer than the first npvae: a file of an older one lacks them, and their
#: defaults are what that npvae did (Adam's 1e-8, a zero output bias, automatic threads;
#: hidden2 and latent2 act on the two-layer IWAE only, which no older npvae had, and its
#: objective was the bound until the setting came).
ADDED_LATER = ("adam_eps", "output_bias", "threads", "hidden2", "latent2", "objective")


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
        name: file_value(name, value, f"{source}: {name}")
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
