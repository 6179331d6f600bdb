"""``python -m npvae``: the version, and where the commands are.

``python -m npvae --version`` prints ``npvae <version>``; anything else prints
what the package's commands are, and a flag it does not know is one line on
stderr with status 2, as in ``python -m npvae.train``.
"""

from __future__ import annotations

import sys

from npvae import __version__

USAGE = """\
usage: python -m npvae [--version]

npvae {version}: autoencoders and VAEs from scratch in NumPy.  Its commands:
  python -m npvae.train --help     train a model and write a run folder
  python -m npvae.evaluate RUN     a saved run's test ELBO, log-likelihood and active units
  python -m npvae.figures --help   a saved run's figures, and three latent spaces compared
  python -m npvae.gradcheck        prove every gradient against finite differences
  python -m npvae.tour             one training step, stop by stop, each stage checked
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--version"]:
        print(f"npvae {__version__}")
        return 0
    if argv in ([], ["--help"], ["-h"]):
        print(USAGE.format(version=__version__), end="")
        return 0
    print(
        f"error: python -m npvae takes only --version or --help, got {' '.join(argv)}; "
        "to train, use python -m npvae.train",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
