"""``python -m npvae.tour``: one training step of the VAE, stop by stop.

For a student stepping through backprop.  The tour takes one batch through
``VAE.loss`` and ``Adam.step``: the model's own layers and kernels, called in the
order ``VAE.loss`` calls them, in float64.  It stops at each stage and prints
the formula, the line of npvae that computes it, and the arrays' shapes and
ranges.  Then it checks the stage in a way that could fail:

* a forward quantity against a second way to compute it (the sampler's variance
  is ``exp(log_var)``; the closed-form KL equals a Monte Carlo estimate);
* a backward one against centred finite differences of the loss.

The last checks are that the tour's gradients are, bit for bit, the ones
``VAE.loss`` writes, and that one Adam step lowers the loss on the batch.

    python -m npvae.tour                       # 8 embedded digits, the 784-400-20 ReLU VAE
    python -m npvae.tour --pause               # wait for Enter at every stop
    python -m npvae.tour --dataset mnist --data-dir ../shared/data/mnist

Each stop names the section of ``docs/`` that derives it; ``docs/tour.md`` reads
along.  Exit status 0 when every check passes, 1 when one fails (it prints
FAIL), 2 for a bad flag (one line on stderr), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from npvae import __version__, _warm
from npvae.config import OneLineParser, whole_number
from npvae.data import load_dataset, make_digits
from npvae.distributions import DiagonalGaussian
from npvae.errors import ConfigError, NpvaeError
from npvae.gradcheck import STEP, TOLERANCE, numerical_gradient, rel_error
from npvae.layers import ReLU
from npvae.models import VAE
from npvae.optim import Adam
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
#: Draws of z for the checks of the sampler and of the closed-form KL.
DRAWS = 100_000
#: Entries of each array whose gradient is checked by finite differences.
ENTRIES = 6
#: How far a Monte Carlo estimate may be from its exact value, in standard errors.
STANDARD_ERRORS = 5.0


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


def _clone(model: VAE) -> VAE:
    """A second model with the same weights: finite differences run through it, so the
    toured model's layers keep the inputs they cached for its backward pass."""
    clone = VAE(**model.config)
    clone.flat_params[...] = model.flat_params
    return clone


def _z_scores(samples: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> tuple:
    """How many standard errors the draws' mean and variance are from ``mean`` and
    ``variance``, per column of ``samples (M, d)``: ``(mean's (d,), variance's (d,))``."""
    m = len(samples)
    mean_error = (samples.mean(axis=0) - mean) / np.sqrt(variance / m)
    # The sample variance of M normals has a relative standard error of sqrt(2 / (M - 1)).
    variance_error = (samples.var(axis=0, ddof=1) / variance - 1) / np.sqrt(2 / (m - 1))
    return np.abs(mean_error), np.abs(variance_error)


def walk(model: VAE, x: np.ndarray, eps: np.ndarray, guide: Guide, rng) -> None:
    """One training step of ``model`` on ``x (N, D)`` with the noise ``eps (1, N, d)``.

    Writes ``model.grads`` and takes one Adam step, as ``VAE.loss`` and ``Adam.step`` do;
    ``rng`` draws what the checks need (which entries, the Monte Carlo draws).
    """
    n, d = len(x), model.latent_dim
    probe = _clone(model)
    encoder, decoder = model.encoder, model.decoder
    relus = [
        layer for layer in (*probe.encoder.layers, *probe.decoder.layers) if isinstance(layer, ReLU)
    ]

    def kinks() -> list[np.ndarray]:
        """Which of the probe's ReLU units passed their input in its last forward pass."""
        return [layer._out > 0 for layer in relus]

    guide.stop(
        "The batch",
        f"x: {counted(n, 'image')} of {x.shape[1]} pixels, grey levels scaled to [0, 1]",
        "for x in Batches(x_train, batch_size, rng): ...",
        "models.md#vae",
    )
    guide.show("x", x)

    # ----- forward ---------------------------------------------------------------------
    h = encoder.forward(x)
    mu, log_var = model.mu_head.forward(h), model.log_var_head.forward(h)
    guide.stop(
        "The encoder: q(z|x) = N(mu, diag(exp(log_var)))",
        "h = relu(x W1 + b1);  mu = h Wmu + bmu;  log_var = h Wlv + blv",
        "h = self.encoder.forward(x); mu, log_var = self.mu_head.forward(h), ...",
        "backprop.md#linear",
    )
    guide.show("h", h)
    guide.show("mu", mu)
    guide.show("log_var", log_var)
    guide.say(f"{np.mean(h > 0):.0%} of the {h.size} hidden values are positive (ReLU passes them)")
    first = encoder.layers[0].params
    direct = np.maximum(x @ first["W"] + first["b"], 0)
    guide.check(
        "h is relu(x W1 + b1) written out in NumPy",
        np.array_equal(h, direct),
        f"{np.count_nonzero(h != direct)} of {h.size} entries differ",
    )

    eps_rows = eps.reshape(n, d)
    z = DiagonalGaussian.sample(mu, log_var, eps_rows)
    guide.stop(
        "The reparameterisation: a draw from q(z|x) that gradients can pass through",
        "z = mu + exp(log_var / 2) * eps,  eps ~ N(0, I) drawn before the step",
        "z = DiagonalGaussian.sample(mu, log_var, eps)",
        "backprop.md#reparameterisation",
    )
    guide.show("eps", eps_rows)
    guide.show("z", z)
    many = rng.standard_normal((DRAWS, d))
    draws = DiagonalGaussian.sample(
        np.tile(mu[:1], (DRAWS, 1)), np.tile(log_var[:1], (DRAWS, 1)), many
    )
    mean_z, variance_z = _z_scores(draws, mu[0], np.exp(log_var[0]))
    worst = max(mean_z.max(), variance_z.max())
    guide.check(
        f"over {DRAWS:,} draws for image 0, z has mean mu and variance exp(log_var)",
        worst < STANDARD_ERRORS,
        f"worst of {2 * d} moments {worst:.1f} standard errors off (bar {STANDARD_ERRORS:g})",
    )

    logits = decoder.forward(z)
    log_px, dlogits = model.likelihood.log_prob_and_grad(x, logits)
    guide.stop(
        "The decoder and the reconstruction term: log p(x|z) for Bernoulli pixels",
        "logits = relu(z W3 + b3) W4 + b4;  log p(x|z) = sum_j x_j l_j - softplus(l_j)",
        "out = self.decoder.forward(z); log_px, dout = self.likelihood.log_prob_and_grad(x, out)",
        "backprop.md#bernoulli-log-likelihood",
    )
    guide.show("logits", logits)
    guide.show("log p(x|z)", log_px)
    guide.say(
        f"an untrained decoder's logits are near 0, every pixel a coin toss: "
        f"{x.shape[1]} log 2 = {x.shape[1] * np.log(2):.1f} nats an image"
    )
    p = 1 / (1 + np.exp(-logits))
    textbook = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=1)
    error = rel_error(log_px, textbook)
    guide.check(
        "it equals sum_j x log p + (1 - x) log(1 - p) with p = sigmoid(l)",
        error < 1e-12,
        f"relative error {error:.1e} (bar 1e-12)",
    )

    kl_dim = DiagonalGaussian.kl_per_dim(mu, log_var)
    kl = kl_dim.sum(axis=1)
    guide.stop(
        "The KL term, in closed form",
        "KL(q(z|x) || N(0, I)) = 0.5 sum_j (mu_j^2 + exp(log_var_j) - 1 - log_var_j)",
        "kl_dim = DiagonalGaussian.kl_per_dim(mu, log_var)",
        "backprop.md#gaussian-kl",
    )
    guide.show("KL", kl)
    # The KL is E_q[log q(z|x) - log p(z)]: estimate it from draws of z for every image.
    z_many = mu + np.exp(log_var / 2) * rng.standard_normal((DRAWS // n, n, d))
    log_ratio = DiagonalGaussian.log_prob(z_many, mu, log_var) - DiagonalGaussian.prior_log_prob(
        z_many
    )
    standard_error = log_ratio.std(axis=0, ddof=1) / np.sqrt(len(log_ratio))
    worst = np.max(np.abs(log_ratio.mean(axis=0) - kl) / standard_error)
    guide.check(
        f"a Monte Carlo estimate, E_q[log q(z|x) - log p(z)] over {DRAWS // n:,} draws an image",
        worst < STANDARD_ERRORS,
        f"worst of {counted(n, 'image')} {worst:.1f} standard errors off (bar {STANDARD_ERRORS:g})",
    )

    recon = -log_px
    kl_term = kl_dim.mean(axis=0).sum()
    loss = recon.mean() + kl_term
    guide.stop(
        "The loss: the negative ELBO, averaged over the batch",
        "loss = mean_n [ -log p(x_n|z_n) ] + sum_j mean_n KL_nj",
        "loss = recon_weight * recon.mean() + beta * kl_term   (both weights 1 here)",
        "models.md#vae",
    )
    guide.say(f"reconstruction {recon.mean():.3f} + KL {kl_term:.3f} = loss {loss:.3f} nats")
    reported = probe.loss(x, eps=eps, grad=False)["loss"]
    guide.check(
        "VAE.loss gives the same number",
        reported == loss,
        f"VAE.loss {reported:.17g}, the tour {loss:.17g}",
    )

    # ----- backward --------------------------------------------------------------------
    # The loss as a function of each array the backward pass meets, each built on the one
    # after it; the finite differences nudge an entry of that array and call these.
    def loss_from_logits(out: np.ndarray, kl_of: float = kl_term) -> float:
        return -model.likelihood.log_prob(x, out).mean() + kl_of

    def loss_from_z(z_of: np.ndarray, kl_of: float = kl_term) -> float:
        return loss_from_logits(probe.decoder.forward(z_of), kl_of)

    def loss_from_latents(mu_of: np.ndarray, log_var_of: np.ndarray) -> float:
        kl_of = DiagonalGaussian.kl_per_dim(mu_of, log_var_of).mean(axis=0).sum()
        return loss_from_z(DiagonalGaussian.sample(mu_of, log_var_of, eps_rows), kl_of)

    def loss_from_h(h_of: np.ndarray) -> float:
        return loss_from_latents(probe.mu_head.forward(h_of), probe.log_var_head.forward(h_of))

    dout = dlogits * np.full(n, -1.0 / n)[:, None]  # d loss / d log p(x_n|z_n) = -1/N
    guide.stop(
        "Backward starts at the output: d loss / d logits",
        "d log p(x|z) / d l = x - sigmoid(l);  each image's term is weighted -1/N",
        "dout *= per_row[:, None]   (per_row = -1/N; dout came with log_px from the kernel)",
        "backprop.md#bernoulli-log-likelihood",
    )
    guide.show("dout", dout)
    guide.gradient("logits", dout, lambda: loss_from_logits(logits), logits, rng, kinks)

    dz = decoder.backward(dout)
    guide.stop(
        "Back through the decoder: each Linear writes dW, db and returns dx",
        "dW = x.T dout;  db = sum_n dout;  dx = dout W.T;  relu: dx = dout where out > 0",
        "dz = self.decoder.backward(dout)",
        "backprop.md#linear",
    )
    guide.show("dz", dz)
    guide.show("dW4", model.grads["decoder.2.W"])
    guide.gradient("z", dz, lambda: loss_from_z(z), z, rng, kinks)

    dmu_z, dlog_var_z = DiagonalGaussian.sample_backward(dz, log_var, eps_rows)
    dmu_kl, dlog_var_kl = DiagonalGaussian.kl_grad(mu, log_var)
    kl_weight = np.full(d, 1.0 / n)  # d loss / d KL_nj = beta / N
    dmu = dmu_z + dmu_kl * kl_weight
    dlog_var = dlog_var_z + dlog_var_kl * kl_weight
    guide.stop(
        "Through the sampler, and the KL's own gradient",
        "dmu = dz + mu / N;  dlog_var = dz * eps * exp(log_var / 2) / 2 "
        "+ (exp(log_var) - 1) / (2 N)",
        "DiagonalGaussian.sample_backward(dz, log_var, eps); DiagonalGaussian.kl_grad(mu, log_var)",
        "backprop.md#reparameterisation",
    )
    guide.show("dmu", dmu)
    guide.show("dlog_var", dlog_var)
    guide.gradient("mu", dmu, lambda: loss_from_latents(mu, log_var), mu, rng, kinks)
    guide.gradient("log_var", dlog_var, lambda: loss_from_latents(mu, log_var), log_var, rng, kinks)

    dh = model.mu_head.backward(dmu)
    dh += model.log_var_head.backward(dlog_var)
    encoder.backward(dh)
    guide.stop(
        "Through the two heads, which share h, and the encoder",
        "dh = dmu Wmu.T + dlog_var Wlv.T   (h feeds both heads, so their gradients add)",
        "dh = self.mu_head.backward(dmu); dh += self.log_var_head.backward(dlog_var); ...",
        "backprop.md#linear",
    )
    guide.show("dh", dh)
    guide.show("dW1", model.grads["encoder.0.W"])
    guide.gradient("h", dh, lambda: loss_from_h(h), h, rng, kinks)

    # ----- every parameter ---------------------------------------------------------------
    guide.stop(
        "Every parameter's gradient, against the loss itself",
        "d loss / d theta for all 10 arrays (W and b of 5 Linear layers)",
        "self.grads, views into self.flat_grads, written once per step",
        "backprop.md#checking-gradients",
    )

    def whole_loss() -> float:
        return probe.loss(x, eps=eps, grad=False)["loss"]

    for name, param in probe.params.items():
        guide.gradient(name, model.grads[name], whole_loss, param, rng, kinks)
    probe.loss(x, eps=eps)  # the probe's own gradients; the toured model's stay as written
    differ = int(np.count_nonzero(probe.flat_grads != model.flat_grads))
    guide.check(
        "VAE.loss writes the same gradients",
        differ == 0,
        f"{differ} of {model.flat_grads.size:,} entries differ",
    )

    # ----- the update --------------------------------------------------------------------
    before = model.flat_params.copy()
    adam = Adam(model.params, lr=1e-3)
    adam.step(model.grads)
    guide.stop(
        "Adam's first step",
        "m = 0.1 g;  v = 0.001 g^2;  theta -= lr m_hat / (sqrt(v_hat) + eps), "
        "m_hat = m / 0.1, v_hat = v / 0.001",
        "adam = Adam(model.params, lr=1e-3); adam.step(model.grads)",
        "backprop.md#adam",
    )
    g = model.flat_grads
    moved = model.flat_params - before
    largest = int(np.argmax(np.abs(g)))
    guide.say(
        f"the largest gradient, {g[largest]:+.3e}, moved its weight by {moved[largest]:+.3e}: "
        "on the first step m_hat = g and v_hat = g^2"
    )
    expected = -adam.lr * g / (np.abs(g) + adam.eps)
    error = rel_error(moved, expected)
    guide.check(
        "so every parameter moved by -lr g / (|g| + eps), about lr against its gradient's sign",
        error < 1e-9,
        f"relative error {error:.1e} (bar 1e-9)",
    )
    after = model.loss(x, eps=eps, grad=False)["loss"]
    guide.check(
        "the loss on this batch and noise went down",
        after < loss,
        f"{loss:.6f} -> {after:.6f} nats",
    )


# ----- the command line ---------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m npvae.tour",
        description="One training step of the VAE, stop by stop: each stage's formula, "
        "code and arrays, each checked (forward by a second computation, backward by "
        "finite differences).",
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
    try:
        args = make_parser().parse_args(argv)
        x = _batch(args)
    except NpvaeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _warm.warm("float64")  # a fresh checkout compiles in a child (see python -m npvae.train)
    model = VAE(**ARCHITECTURE, dtype="float64", seed=args.seed)
    rng = np.random.default_rng(args.seed)
    eps = rng.standard_normal((1, len(x), model.latent_dim))
    guide = Guide(wait=_wait if args.pause else None)
    guide.write(
        f"One training step of {model!r} on {counted(len(x), 'image')} of "
        f"{DATASET_NAMES[args.dataset]}, float64, seed {args.seed}."
    )
    try:
        walk(model, x, eps, guide, rng)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
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
