"""``python -m npvae.figures SUBCOMMAND [RUN] [options]``: draw a figure as a PNG.

Subcommands drawing from a saved run (a run folder, its ``best.npz`` by
default, or a checkpoint or model file): ``recon``, ``samples``, ``latent``,
``manifold``, ``interpolate``, ``kl``, ``curves`` and ``encode``.  ``compare``
trains three small VAEs and needs no run.  A user's mistake (a missing or
damaged run, a bad flag) is one line on stderr and exit status 2, with no
file written.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from npvae import _warm
from npvae.config import OneLineParser
from npvae.errors import NpvaeError

EXIT_USER_ERROR = 2

HELP = {
    "recon": "test images and their reconstructions (denoising AE: with the corrupted inputs)",
    "samples": "decoded draws from the prior (VAE, IWAE)",
    "latent": "test images' latent means by label (PCA or --projection kl above 2 dims)",
    "manifold": "the decoder over a grid of the prior's quantiles (2-d latent space)",
    "interpolate": "straight lines in latent space between pairs of test images",
    "kl": "KL per latent dimension as bars, active units coloured (VAE, IWAE)",
    "curves": "loss per epoch from the run's metrics.csv",
    "encode": "one test image encoded many times: the stochastic encoding (VAE, IWAE)",
}


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m npvae.figures",
        description="Draw figures from a saved run, or compare three latent spaces.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name, text in HELP.items():
        sub = commands.add_parser(name, help=text, description=text, allow_abbrev=False)
        sub.add_argument("run", metavar="RUN", help="run folder, checkpoint or model file")
        sub.add_argument("--checkpoint", default="best", help="best (default) or last")
        sub.add_argument("--out", metavar="PATH", help="the PNG (default: RUN/figures/<name>.png)")
        sub.add_argument("--dataset", help="a bare model file's dataset (default: auto)")
        sub.add_argument("--data-dir", metavar="DIR", help="folder holding the IDX files")
        sub.add_argument("--binarize", help="a bare model file's binarisation (default: none)")
        sub.add_argument("--seed", type=int, default=0, help="seed of samples, pairs, noise")
        if name == "latent":
            sub.add_argument(
                "--projection", choices=("pca", "kl"), default="pca",
                help="above 2 dims: PCA, or the two dimensions with the most KL",
            )  # fmt: skip
        if name == "encode":
            sub.add_argument("--index", type=int, default=0, help="which test image")
            sub.add_argument("--draws", type=int, default=20, help="codes drawn for it")
    compare = commands.add_parser(
        "compare",
        help="train on reconstruction only, KL only, and both; draw the three latent spaces",
        description="Train three VAEs with a 2-d latent space on the same data (reconstruction "
        "only, KL only, both) and draw their test-set latent means side by side, with decoded "
        "prior samples under each; also draws the stochastic encoding beside it.",
    )
    compare.add_argument("--epochs", type=int, default=10, help="epochs per model (default 10)")
    compare.add_argument("--dataset", default="auto", help="mnist, fashion-mnist, digits or auto")
    compare.add_argument("--data-dir", metavar="DIR", help="folder holding the IDX files")
    compare.add_argument("--seed", type=int, default=0, help="seed of weights and shuffling")
    compare.add_argument(
        "--out", metavar="PATH", default="compare.png",
        help="the PNG (default compare.png); stochastic.png goes beside it",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m npvae.figures``; a user's mistake is one line on stderr, status 2."""
    try:
        args = make_parser().parse_args(argv)
        _warm.warm()  # a fresh checkout compiles in a child (see python -m npvae.train)
        if args.command == "compare":
            from npvae.figures import compare

            compare.run(args)
            return 0
        from npvae.figures import saved

        opened = saved.open_run(
            args.run, args.checkpoint, args.dataset, args.data_dir, args.binarize,
            need_data=args.command != "curves",
        )  # fmt: skip
        path = args.out or saved.default_path(opened.saved, args.command)
        rng = np.random.default_rng(args.seed)
        written = saved.DRAWERS[args.command](opened, path, rng, args)
        print(f"wrote {written}")
        return 0
    except NpvaeError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
