"""The command line of ``python -m npvae.train``: its flags, a TOML file, and ``--resume``.

Every field of :class:`~npvae.app.config.Config` is a flag (``latent`` ->
``--latent``, ``batch_size`` -> ``--batch-size``) with its default and help
text taken from the field.  Precedence: defaults < ``--config FILE`` < flags
on the command line.  A flag that does not parse is a
:class:`~npvae.errors.ConfigError` with one line saying what to change, in
every npvae command (:class:`OneLineParser`, :func:`whole_number`).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from npvae import __version__
from npvae.app.config import FIELDS, Config, file_value, flag_name, parse_hidden, validate
from npvae.errors import ConfigError
from npvae.validate import KINDS, canonical


def _kind(name: str) -> type:
    default = FIELDS[name].default
    return str if default is None else type(default)


def _from_flag(name: str, text):
    """A flag's text converted to the field's type (switches arrive as bools already)."""
    if name in ("hidden", "hidden2"):
        return parse_hidden(text, flag_name(name))
    kind = _kind(name)
    if kind in (str, bool):
        return canonical(name, text)
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{flag_name(name)} must be {KINDS[kind]}, got {text!r}") from None


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
        values[name] = file_value(name, value, labels[name])
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
            parser.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction, help=text)
        else:
            parser.add_argument(flag_name(f.name), metavar=f.name.upper(), help=text)
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
        given.labels[name] = flag_name(name, value)
    request = ResumeRequest(resume, checkpoint) if resume is not None else None
    if request is not None:
        return Config(), given, request  # checked against the saved config by the resume
    return validate(Config(**given), given.labels), given, None
