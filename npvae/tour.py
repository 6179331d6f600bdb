"""``python -m npvae.tour``: one training step of the VAE, stop by stop.

For a student stepping through backprop.  The tour takes one batch through
``VAE.loss`` and ``Adam.step``: the model's own layers and kernels, called in the
order ``VAE.loss`` calls them, in float64.  It stops at each stage and prints
the formula, the line of npvae that computes it, and the arrays' shapes and
ranges.  Then it checks the stage in a way that could fail:

* a forward quantity against a second way to compute it (the sampler's variance
  is ``exp(log_var)``; the closed-form KL equals a Monte Carlo estimate);
* a backward one against centred finite differences of the loss.

The VAE's last checks are that the tour's gradients are, bit for bit, the ones
``VAE.loss`` writes, and that one Adam step lowers the loss on the batch.  Then
the same network, from the same starting weights, is toured as an IWAE: its k
draws of z, their importance weights, the bound and its gradient, each draw's
gradient weighted by its normalised weight (``IWAE.loss``, no step).

    python -m npvae.tour                       # 8 embedded digits, the 784-400-20 ReLU VAE
    python -m npvae.tour --pause               # wait for Enter at every stop
    python -m npvae.tour --k 50                # 50 draws an image in the IWAE's stops
    python -m npvae.tour --dataset mnist --data-dir ../shared/data/mnist

Each stop is a function of ``npvae/tour_stops.py`` (the VAE's forward),
``npvae/tour_backward.py``, ``npvae/tour_iwae.py`` or ``npvae/tour_iwae_backward.py``;
:func:`walk` and :func:`walk_iwae` call them in order.  This module holds the
command line and the :class:`Guide` that prints the stops and scores their checks.
Each stop names the section of ``docs/`` that derives it; ``docs/tour.md`` reads along.
Exit status 0 when every check passes, 1 when one fails (it prints FAIL), 2 for a bad
flag (one line on stderr), 130 when interrupted.
"""

from __future__ import annotations

import argparse

import numpy as np

from npvae import __version__
from npvae import tour_backward as backward
from npvae import tour_iwae as iwae
from npvae import tour_iwae_backward as iwae_backward
from npvae import tour_stops as stops
from npvae.app import _warm, cli
from npvae.app.flags import OneLineParser, whole_number
from npvae.data import load_dataset, make_digits
from npvae.errors import ConfigError
from npvae.gradcheck import STEP, TOLERANCE, numerical_gradient
from npvae.models import IWAE, VAE
from npvae.validate import counted

#: The classic VAE of PyTorch's example and of ``python -m npvae.train``'s default.
ARCHITECTURE = {"input_dim": 784, "hidden": [400], "latent_dim": 20, "activation": "relu"}
#: The datasets the tour takes a batch from, and how its first line names them.
DATASET_NAMES = {
    "digits": "the embedded digits",
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
}
#: The largest batch the tour takes: it prints about arrays, it does not train.
MOST_IMAGES = 256
#: The most draws an image the IWAE's stops take: the IWAE paper's largest k.
MOST_DRAWS = 50
#: Entries of each array whose gradient is checked by finite differences.
ENTRIES = 6


class Guide:
    """Prints the stops, keeps the score of the checks, and waits at each stop if asked.

    ``write`` takes one line; ``wait`` (None: never) is called before every stop
    but the first, and returns False to end the waiting (end of input).
    """

    def __init__(self, write=print, wait=None) -> None:
        self.write, self.wait = write, wait
        self.stops, self.checks, self.failures = 0, 0, []

    def stop(self, title: str, formula: str, code: str, doc: str) -> None:
        """Begin the next stop: its number and title, formula, line of npvae, derivation."""
        if self.stops and self.wait is not None and not self.wait():
            self.wait = None
        self.stops += 1
        self.write("")
        self.write(f"{self.stops}. {title}")
        self.write(f"   {formula}")
        self.write(f"   npvae:   {code}")
        self.write(f"   derived: docs/{doc}")

    def say(self, text: str) -> None:
        self.write(f"   {text}")

    def show(self, name: str, array: np.ndarray) -> None:
        """One line: the array's shape and range."""
        self.say(
            f"{name:<10} {str(array.shape):<10} min {array.min():+.4f}  mean {array.mean():+.4f}  "
            f"max {array.max():+.4f}"
        )

    def check(self, claim: str, ok: bool, measured: str) -> None:
        """Count a check; ``measured`` says what was found, and against what bar."""
        self.checks += 1
        if not ok:
            self.failures.append(claim)
        self.say(f"check: {claim}: {measured}  {'ok' if ok else 'FAIL'}")

    def gradient(self, name: str, analytic: np.ndarray, f, array: np.ndarray, rng, kinks) -> None:
        """Check ``analytic``, the gradient of ``f()`` with respect to ``array``, at
        :data:`ENTRIES` random entries by centred differences (:func:`_differences`).

        The error is relative to the largest gradient in the whole array, as
        :func:`npvae.gradcheck.rel_error`'s is: an entry whose gradient is 0 (a pixel
        that is 0 in every image) then does not turn rounding into a large ratio.  The
        bar is 1e-7, or ten times what rounding alone can cause if that is more: a loss
        of ``|f|`` nats is computed to about ``eps |f|``, which the difference divides by
        ``h`` (for 550 nats and h = 1e-5, 1.2e-8 of every gradient).
        """
        loss, entries, numeric, set_aside = _differences(f, array, rng, kinks)
        claim = f"d loss / d {name} by finite differences, h = {STEP:g}"
        if not entries:
            tried = counted(set_aside, "entry", "entries")
            self.check(claim, False, f"all {tried} tried were at a kink")
            return
        ours = analytic[tuple(np.array(entries).T)]
        scale = max(float(np.abs(analytic).max()), float(np.abs(numeric).max()), 1e-8)
        error = float(np.abs(ours - numeric).max()) / scale
        bar = max(TOLERANCE, 10 * np.finfo(np.float64).eps * abs(loss) / (STEP * scale))
        aside = f", {set_aside} more set aside at a kink" if set_aside else ""
        self.check(
            claim,
            error < bar,
            f"relative error {error:.1e} over {counted(len(entries), 'entry', 'entries')}{aside} "
            f"(bar {bar:.1e})",
        )


def _differences(f, array: np.ndarray, rng, kinks) -> tuple[float, list, np.ndarray, int]:
    """Centred differences of ``f()`` at up to :data:`ENTRIES` random entries of ``array``.

    ``kinks()`` gives the network's ReLU pattern (which units passed their input) after
    a call of ``f``.  A difference across a kink measures neither side's slope, so an
    entry whose nudge of ``±h`` switches a unit on or off is set aside for another.

    Returns ``(f() unnudged, entries, numeric (len(entries),), how many were set aside)``.
    """
    loss = float(f())
    pattern = kinks()
    straddled = False

    def watched() -> float:
        nonlocal straddled
        value = f()
        straddled |= any(np.any(now != then) for now, then in zip(kinks(), pattern, strict=True))
        return value

    entries, numeric, set_aside = [], [], 0
    for flat in rng.permutation(array.size)[: 20 * ENTRIES]:
        entry = np.unravel_index(flat, array.shape)
        straddled = False
        value = numerical_gradient(watched, array, entries=[entry])[entry]
        if straddled:
            set_aside += 1
            continue
        entries.append(entry)
        numeric.append(value)
        if len(entries) == ENTRIES:
            break
    return loss, entries, np.array(numeric), set_aside


def walk(model: VAE, x: np.ndarray, eps: np.ndarray, guide: Guide, rng) -> None:
    """One training step of ``model`` on ``x (N, D)`` with the noise ``eps (1, N, d)``.

    Writes ``model.grads`` and takes one Adam step, as ``VAE.loss`` and ``Adam.step`` do;
    ``rng`` draws what the checks need (which entries, the Monte Carlo draws).
    """
    tour = stops.Tour(model, x, eps, guide, rng)
    stops.the_batch(tour)
    # Forward, in the order VAE.loss takes it.
    h, mu, log_var = stops.the_encoder(tour)
    z = stops.the_reparameterisation(tour, mu, log_var)
    logits, log_px, dlogits = stops.the_decoder(tour, z)
    kl_dim = stops.the_kl(tour, mu, log_var)
    loss, kl_term = stops.the_loss(tour, log_px, kl_dim)
    # Backward, along the same path in reverse.
    dout = backward.the_output_gradient(tour, logits, dlogits, kl_term)
    dz = backward.back_through_the_decoder(tour, dout, z, kl_term)
    dmu, dlog_var = backward.back_through_the_sampler(tour, dz, mu, log_var)
    backward.back_through_the_encoder(tour, dmu, dlog_var, h)
    # Every parameter, and the update.
    backward.every_parameter(tour)
    backward.adams_first_step(tour, loss)


def walk_iwae(model: IWAE, x: np.ndarray, eps: np.ndarray, guide: Guide, rng) -> None:
    """The k-sample bound of ``model`` on ``x (N, D)`` with the noise ``eps (k, N, d)``,
    and its gradient, which it writes into ``model.grads`` as ``IWAE.loss`` does (no step)."""
    tour = iwae.IwaeTour(model, x, eps, guide, rng)
    # Forward, in the order IWAE.loss takes it.
    mu, log_var, z = iwae.the_k_draws(tour)
    logits, dlogits, log_qz, log_w = iwae.the_log_weights(tour, mu, log_var, z)
    bound = iwae.the_bound(tour, log_w)
    w_tilde = iwae.the_normalised_weights(tour, log_w, bound)
    # Backward: each draw's path as in the VAE, weighted by its normalised weight.
    per_row, dout = iwae_backward.the_output_gradient(tour, log_w, logits, dlogits, z, log_qz)
    dz = iwae_backward.back_through_the_decoder(tour, dout, z, per_row, log_qz)
    dmu, dlog_var = iwae_backward.back_through_the_sampler(tour, dz, per_row, mu, log_var)
    iwae_backward.the_weighted_sum(tour, dmu, dlog_var, w_tilde)


# ----- the command line ---------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m npvae.tour",
        description="One training step of the VAE, then the IWAE's bound and gradient, "
        "stop by stop: each stage's formula, code and arrays, each checked (forward by a "
        "second computation, backward by finite differences).",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"npvae {__version__}")
    parser.add_argument(
        "--batch",
        type=whole_number("--batch", 1, MOST_IMAGES),
        default=8,
        help=f"images in the batch, up to {MOST_IMAGES} (default: 8)",
    )
    parser.add_argument(
        "--seed",
        type=whole_number("--seed"),
        default=0,
        help="seed of weights and noise (default: 0)",
    )
    parser.add_argument(
        "--k",
        type=whole_number("--k", 1, MOST_DRAWS),
        default=5,
        help=f"draws of z an image in the IWAE's stops, up to {MOST_DRAWS} (default: 5)",
    )
    parser.add_argument(
        "--dataset",
        choices=tuple(DATASET_NAMES),
        default="digits",
        help="where the batch comes from (default: digits, the embedded set, no files)",
    )
    parser.add_argument(
        "--data-dir",
        help="with --dataset mnist or fashion-mnist: the folder of its files "
        "(default: $NPVAE_DATA, ~/.cache/npvae, /usr/share/datasets; no download)",
    )
    parser.add_argument("--pause", action="store_true", help="wait for Enter before each stop")
    return parser


def _batch(args) -> np.ndarray:
    """The first ``args.batch`` training images, ``(B, 784)`` float64 in [0, 1]."""
    if args.data_dir is not None and args.dataset == "digits":
        # Ignoring it would tour the digits while the user believes it toured their files.
        raise ConfigError(
            "--data-dir has no effect on the embedded digits: it applies to --dataset mnist "
            "or fashion-mnist only; add one of them, or leave --data-dir out"
        )
    if args.dataset == "digits":
        images = make_digits(args.batch, 0, args.seed)[0].reshape(args.batch, -1)
    else:
        images = load_dataset(args.dataset, args.data_dir, download=False).x_train
        if len(images) < args.batch:
            raise ConfigError(
                f"--batch {args.batch} is more than the {counted(len(images), 'image')} "
                f"of {args.dataset}; give --batch {len(images)} or less"
            )
    return images[: args.batch] / 255.0


def _wait() -> bool:
    try:
        input("   [Enter: next stop] ")
    except EOFError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the tour; 0 if every check passes, 1 if one fails, 2 for a bad flag."""
    return cli.run(lambda: _tour(argv), out_of_memory="out of memory; give fewer --batch images",
                   interrupted="interrupted")  # fmt: skip


def _tour(argv: list[str] | None) -> int:
    args = make_parser().parse_args(argv)
    x = _batch(args)
    _warm.warm("float64")  # a fresh checkout compiles in a child (see python -m npvae.train)
    model = VAE(**ARCHITECTURE, dtype="float64", seed=args.seed)
    rng = np.random.default_rng(args.seed)
    eps = rng.standard_normal((1, len(x), model.latent_dim))
    guide = Guide(wait=_wait if args.pause else None)
    guide.write(
        f"One training step of {model!r} on {counted(len(x), 'image')} of "
        f"{DATASET_NAMES[args.dataset]}, float64, seed {args.seed}."
    )
    walk(model, x, eps, guide, rng)
    iwae_model = IWAE(**ARCHITECTURE, k=args.k, dtype="float64", seed=args.seed)
    guide.write("")
    guide.write(
        f"Then the same network, with the weights the VAE started from, as an IWAE with "
        f"k = {args.k}: the k-sample bound and its gradient, without a step."
    )
    walk_iwae(iwae_model, x, rng.standard_normal((args.k, len(x), model.latent_dim)), guide, rng)
    guide.write("")
    if guide.failures:
        guide.write(
            f"{len(guide.failures)} of {guide.checks} checks FAIL: " + "; ".join(guide.failures)
        )
        return 1
    guide.write(f"All {guide.checks} checks pass.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
