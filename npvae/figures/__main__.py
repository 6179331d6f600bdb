"""``python -m npvae.figures SUBCOMMAND [RUN] [options]``: draw a figure as a PNG.

Subcommands drawing from a saved run (a run folder, its ``best.npz`` by
default, or a checkpoint or model file): ``recon``, ``samples``, ``latent``,
``manifold``, ``interpolate``, ``kl``, ``curves`` and ``encode``.  ``compare``
trains three small VAEs and needs no run.  Each subcommand takes only the
flags it uses (:data:`FLAGS`); any other is refused, as it would change
nothing.  A user's mistake (a missing or damaged run, a bad or unused flag,
an ``--out`` that cannot be written) is one line on stderr and exit status 2,
with no file written; Ctrl-C (or SIGTERM) is one line and status 130, with no
half-written file.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import numpy as np

from npvae import __version__
from npvae._files import check_output
from npvae.app import _warm, cli
from npvae.app._threads import CpuWatch, parse_threads, use_threads
from npvae.app.config import APPLIES, Config, applies
from npvae.app.flags import OneLineParser, whole_number
from npvae.errors import ConfigError

HELP = {
    "recon": "test images and their reconstructions (denoising AE: with the corrupted inputs)",
    "samples": "decoded draws from the prior (VAE, IWAE)",
    "latent": "test images' latent means by label (PCA or --projection kl above 2 dims)",
    "manifold": "the decoder over a grid of the prior's quantiles (2-d latent space)",
    "interpolate": "straight lines in latent space between pairs of test images",
    "kl": "KL per latent dimension as bars, active units coloured (VAE, IWAE)",
    "curves": "loss per epoch from the run's metrics.csv",
    "encode": "one test image encoded many times: the stochastic encoding (VAE, IWAE)",
    "filters": "the first layer's weights, one unit an image tile: what each unit looks for",
}

#: The flags each subcommand uses, besides RUN and --out.  The curves come from
#: metrics.csv: no weights, no data, no randomness, no matrix products.  Only the
#: subcommands that draw at random take --seed (recon: a denoising AE's noise).
_RUN_FLAGS = ("--checkpoint", "--dataset", "--data-dir", "--binarize", "--threads")
FLAGS = {
    "recon": (*_RUN_FLAGS, "--seed"),
    "samples": (*_RUN_FLAGS, "--seed"),
    "latent": (*_RUN_FLAGS, "--projection"),
    "manifold": _RUN_FLAGS,
    "interpolate": (*_RUN_FLAGS, "--seed"),
    "kl": _RUN_FLAGS,
    "curves": (),
    "filters": ("--checkpoint",),
    "encode": (*_RUN_FLAGS, "--seed", "--index", "--draws"),
    "compare": ("--epochs", "--dataset", "--data-dir", "--seed", "--threads"),
}

THREADS_HELP = (
    "threads for the matrix products: a number, or auto (default: the cores other work leaves idle)"
)


def _add_run_flag(sub: argparse.ArgumentParser, flag: str) -> None:
    """Add ``flag``, as the subcommands drawing from a saved run take it."""
    if flag == "--checkpoint":
        sub.add_argument(flag, default="best", help="best (default) or last")
    elif flag == "--dataset":
        sub.add_argument(flag, help="a bare model file's dataset")
    elif flag == "--data-dir":
        sub.add_argument(flag, metavar="DIR", help="folder holding the IDX files")
    elif flag == "--binarize":
        sub.add_argument(flag, help="a bare model file's binarisation (default: none)")
    elif flag == "--threads":
        sub.add_argument(flag, default="auto", help=THREADS_HELP)
    elif flag == "--seed":
        sub.add_argument(flag, type=whole_number("--seed"), help="seed of the draws (default 0)")
    elif flag == "--projection":
        sub.add_argument(
            flag, choices=("pca", "kl"), default="pca",
            help="above 2 dims: PCA, or the two dimensions with the most KL",
        )  # fmt: skip
    elif flag == "--index":
        sub.add_argument(flag, type=whole_number("--index"), default=0, help="which test image")
    elif flag == "--draws":
        sub.add_argument(
            flag, type=whole_number("--draws", 1), default=20, help="codes drawn for it"
        )


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m npvae.figures",
        description="Draw figures from a saved run, or compare three latent spaces.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"npvae {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name, text in HELP.items():
        sub = commands.add_parser(name, help=text, description=text, allow_abbrev=False)
        sub.add_argument("run", metavar="RUN", help="run folder, checkpoint or model file")
        sub.add_argument("--out", metavar="PATH", help="the PNG (default: RUN/figures/<name>.png)")
        for flag in FLAGS[name]:
            _add_run_flag(sub, flag)
    compare = commands.add_parser(
        "compare",
        help="train on reconstruction only, KL only, and both; draw the three latent spaces",
        description="Train three VAEs with a 2-d latent space on the same data (reconstruction "
        "only, KL only, both) and draw their test-set latent means side by side, with decoded "
        "prior samples under each; also draws the stochastic encoding beside it.",
        allow_abbrev=False,
    )
    compare.add_argument(
        "--epochs",
        type=whole_number("--epochs", 1),
        default=10,
        help="epochs per model (default 10)",
    )
    compare.add_argument("--dataset", default="auto", help="mnist, fashion-mnist, digits or auto")
    compare.add_argument("--data-dir", metavar="DIR", help="folder holding the IDX files")
    compare.add_argument(
        "--seed", type=whole_number("--seed"), default=0, help="seed of weights and shuffling"
    )
    compare.add_argument("--threads", default="auto", help=THREADS_HELP)
    compare.add_argument(
        "--out", metavar="PATH", default="compare.png",
        help="the PNG (default compare.png); stochastic.png goes beside it",
    )  # fmt: skip
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The parsed flags; a flag another subcommand takes but this one does not use is refused."""
    parser = make_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        flag = next((item.split("=")[0] for item in extra if item.startswith("--")), None)
        if flag is not None and any(flag in flags for flags in FLAGS.values()):
            uses = (
                ", ".join(("--out", *FLAGS[args.command])) if FLAGS[args.command] else "only --out"
            )
            raise ConfigError(
                f"{args.command} does not use {flag}; it takes {uses} "
                f"(see {parser.prog} {args.command} --help)"
            )
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _check_data_dir(args, saved) -> None:
    """Refuse --data-dir where the images come from no files (the embedded digits), as
    ``python -m npvae.train`` does."""
    if args.data_dir is None:
        return
    dataset = saved.config.dataset if saved.config is not None else args.dataset
    if not applies("data_dir", Config(dataset=dataset or "mnist")):
        raise ConfigError(
            f"--data-dir has no effect here: it applies to {APPLIES['data_dir'][0]} only "
            "(the embedded digits need no files); leave it out"
        )


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # the same way out as Ctrl-C: temporaries removed, one line


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m npvae.figures``; a user's mistake is one line on stderr, status 2."""
    written: list[Path] = []  # figures written so far, named if a signal stops the rest
    state: dict = {"destination": None}  # the figure being made, named if writing it fails

    def interrupted() -> str:
        done = f"{', '.join(map(str, written))} written, nothing else" if written else None
        return f"interrupted; {done or 'nothing was written'}"

    def draw() -> int:
        try:
            return _draw(argv, written, state)
        except OSError as err:
            # Every figure is written through a temporary beside it: say what happened to
            # the user's path, not to the temporary.
            if state["destination"] is None:
                raise ConfigError(str(err)) from None
            raise ConfigError(
                f"cannot write {state['destination']}: {err.strerror or err}"
            ) from None

    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        return cli.run(
            draw, out_of_memory="out of memory; draw from a smaller model", interrupted=interrupted
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


def _draw(argv: list[str] | None, written: list[Path], state: dict) -> int:
    """The command's work: parse, open the run, draw, and add each file to ``written``."""
    args = parse(argv)
    watch = CpuWatch()  # what other work uses while we load, for --threads auto
    if args.command == "compare":
        from npvae.figures import compare

        parse_threads(args.threads)
        _warm.warm()  # a fresh checkout compiles in a child (see python -m npvae.train)
        compare.run(args, watch=watch, written=written)
        return 0
    from npvae.figures import saved

    uses_model = args.command not in ("curves", "filters")  # these read no data, run no product
    if uses_model:
        parse_threads(args.threads)
        _warm.warm()
    if args.out is not None:
        check_output(args.out)  # refused before the data load, not after it
    opened = saved.open_run(
        args.run,
        getattr(args, "checkpoint", "best"),
        getattr(args, "dataset", None),
        getattr(args, "data_dir", None),
        getattr(args, "binarize", None),
        need_data=uses_model,
    )
    if uses_model:
        _check_data_dir(args, opened.saved)
    seed = getattr(args, "seed", None)
    if args.command == "recon" and seed is not None:
        model = opened.saved.model
        if not hasattr(model, "corrupt"):
            raise ConfigError(
                f"recon draws nothing at random for a {model.kind}: --seed is for a "
                "denoising AE's noise; leave it out"
            )
    state["destination"] = args.out or saved.default_path(opened.saved, args.command)
    destination = state["destination"]
    if args.out:
        path = check_output(destination)
    else:
        path = check_output(destination, "the figure", "give --out PATH to put it elsewhere")
    if uses_model:
        threads, why = use_threads(args.threads, watch)
        print(f"threads: {threads} ({why})")
    rng = np.random.default_rng(0 if seed is None else seed)
    written.append(saved.DRAWERS[args.command](opened, path, rng, args))
    print(f"wrote {written[-1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
