"""``python -m npvae.gradcheck``: one row per layer, kernel, loss and model, each proven.

Each row checks a hand-written gradient against centred finite differences in
float64 (:mod:`npvae.gradcheck`) and prints its relative error against the bar;
the exit status is 1 if a row fails.
"""

from __future__ import annotations

import numpy as np

from npvae.gradcheck import STEP, TOLERANCE, check_gradients, layer_problem

#: Tests set this to a row's name to corrupt that row's hand-written gradient by one
#: part in 10^4, proving that the table (and its exit status) can fail.
BREAK_VARIABLE = "NPVAE_GRADCHECK_BREAK"

# Each row is ``(kind, name, problem)``: ``problem(rng)`` returns ``(f, arrays, analytic)``,
# the scalar function, the arrays it reads and their hand-written gradients, for
# :func:`check_gradients`.


def _layer_rows():
    from npvae import layers
    from npvae.network import MLP

    def row(make):
        def run(rng):
            layer = make(rng)
            n_in = layer.params["W"].shape[0] if "W" in layer.params else 5
            if isinstance(layer, MLP):
                n_in = layer.sizes[0]
            x = rng.normal(size=(4, n_in))
            x = np.where(x >= 0, x + 0.05, x - 0.05)  # away from the ReLU family's kink
            return layer_problem(layer, x)

        return run

    yield "layer", "Linear", row(lambda rng: layers.Linear(5, 3, rng=rng))
    for name, cls in layers.ACTIVATIONS.items():
        yield "layer", cls.__name__ + f" ({name})", row(lambda rng, cls=cls: cls())
    yield "layer", "MLP 5-4-3 tanh", row(lambda rng: MLP([5, 4, 3], "tanh", rng=rng))


def _kernel_rows():
    from npvae import kernels

    def bernoulli(rng):
        x, logits, w = rng.random((4, 6)), rng.normal(scale=3, size=(4, 6)), rng.normal(size=4)
        _, dlogits = kernels.bernoulli_log_prob_and_grad(x, logits)
        return (
            lambda: kernels.bernoulli_log_prob(x, logits) @ w,
            {"logits": logits},
            {"logits": dlogits * w[:, None]},
        )

    def kl(rng):
        mu, log_var, w = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=4)
        dmu, dlog_var = kernels.gaussian_kl_grad(mu, log_var)
        return (
            lambda: kernels.gaussian_kl(mu, log_var) @ w,
            {"mu": mu, "log_var": log_var},
            {"mu": dmu * w[:, None], "log_var": dlog_var * w[:, None]},
        )

    def reparameterize(rng):
        mu, log_var, eps, dz = (rng.normal(size=(4, 3)) for _ in range(4))
        dmu, dlog_var = kernels.reparameterize_backward(dz, log_var, eps)
        return (
            lambda: np.sum(kernels.reparameterize(mu, log_var, eps) * dz),
            {"mu": mu, "log_var": log_var},
            {"mu": dmu, "log_var": dlog_var},
        )

    def logsumexp(rng):
        a, w = rng.normal(scale=3, size=(4, 7)), rng.normal(size=4)
        softmax = np.exp(a - kernels.logsumexp(a)[:, None])
        return (lambda: kernels.logsumexp(a) @ w, {"a": a}, {"a": softmax * w[:, None]})

    yield "kernel", "bernoulli_log_prob_and_grad", bernoulli
    yield "kernel", "gaussian_kl_grad", kl
    yield "kernel", "reparameterize_backward", reparameterize
    yield "kernel", "logsumexp (softmax)", logsumexp


def _model_rows():
    from npvae import models

    small = {"input_dim": 6, "dtype": "float64", "seed": 1}
    vae = {**small, "hidden": [5], "latent_dim": 3, "activation": "tanh"}
    ae = {**small, "hidden": [5], "code_dim": 2, "activation": "tanh"}
    cae = {**small, "hidden": [], "code_dim": 3, "contraction": 0.5}
    two_layer = {**small, "hidden1": [5, 4], "latent1": 3, "hidden2": [4, 3], "latent2": 2}
    cases = [
        ("loss", "VAE (Bernoulli)", models.VAE, vae, {}),
        ("loss", "VAE (L=3, beta=2, warm-up, free bits)", models.VAE,
         {**vae, "n_samples": 3, "beta": 2.0, "warmup_steps": 10, "free_bits": 0.1},
         {"step": 5}),
        ("loss", "VAE (Gaussian, learned variance)", models.VAE,
         {**vae, "likelihood": "gaussian", "learned_var": True}, {}),
        ("loss", "VAE (recon_weight=0.3)", models.VAE, {**vae, "recon_weight": 0.3}, {}),
        ("loss", "VAE (recon_weight=0: KL only)", models.VAE, {**vae, "recon_weight": 0.0}, {}),
        ("loss", "IWAE k=1", models.IWAE, {**vae, "k": 1}, {}),
        ("loss", "IWAE k=5", models.IWAE, {**vae, "k": 5}, {}),
        ("loss", "IWAE2 (two stochastic layers) k=1", models.IWAE2, {**two_layer, "k": 1}, {}),
        ("loss", "IWAE2 (two stochastic layers) k=5", models.IWAE2, {**two_layer, "k": 5}, {}),
        ("loss", "Autoencoder (Bernoulli)", models.Autoencoder, ae, {}),
        ("loss", "Autoencoder (squared error)", models.Autoencoder,
         {**ae, "reconstruction": "squared"}, {}),
        ("loss", "SparseAutoencoder (KL)", models.SparseAutoencoder, ae, {}),
        ("loss", "SparseAutoencoder (L1)", models.SparseAutoencoder,
         {**ae, "sparsity": "l1", "code_activation": "tanh"}, {}),
        ("loss", "DenoisingAutoencoder (mask)", models.DenoisingAutoencoder, ae,
         {"corrupt": True}),
        ("loss", "ContractiveAutoencoder (sigmoid)", models.ContractiveAutoencoder, cae, {}),
        ("loss", "ContractiveAutoencoder (tanh)", models.ContractiveAutoencoder,
         {**cae, "code_activation": "tanh"}, {}),
    ]  # fmt: skip
    for kind, name, cls, config, options in cases:

        def run(rng, cls=cls, config=config, options=options):
            x = rng.random((4, config["input_dim"]))
            seed = int(rng.integers(2**32))
            if config.get("free_bits"):
                config = {**config, "free_bits": _floor_between(cls, config, x, seed, options)}
            model = cls(**config)
            model.loss(x, np.random.default_rng(seed), **options)
            analytic = {name: grad.copy() for name, grad in model.grads.items()}
            return (
                lambda: model.loss(x, np.random.default_rng(seed), grad=False, **options)["loss"],
                model.params,
                analytic,
            )

        yield kind, name, run


def _probe_rows():
    from npvae.probe import LinearProbe

    def run(rng):
        probe = LinearProbe(n_features=5, n_classes=4, l2=0.1)
        for value in probe.params.values():
            value[...] = rng.normal(size=value.shape)
        probe.mean, probe.std = rng.normal(size=5), rng.uniform(0.5, 2.0, size=5)
        x, labels = rng.normal(size=(6, 5)), rng.integers(4, size=6)
        probe.loss(x, labels)
        analytic = {name: grad.copy() for name, grad in probe.grads.items()}
        return lambda: probe.loss(x, labels, grad=False), probe.params, analytic

    yield "loss", "LinearProbe (softmax cross-entropy, L2)", run


def _floor_between(cls, config, x, seed, options) -> float:
    """A free-bits floor in the widest gap between the dimensions' KLs for this draw.

    ``max(KL_j, floor)`` has a kink where a dimension's KL meets the floor; a
    floor half a gap away from every KL keeps the difference steps off it, with
    dimensions on both sides so that both branches are checked.
    """
    probe = cls(**{**config, "free_bits": 0.0})
    report = probe.loss(x, np.random.default_rng(seed), grad=False, **options)
    kl = np.sort(report["kl_per_dim"])
    widest = int(np.argmax(np.diff(kl)))
    return float(kl[widest : widest + 2].mean())


def main(argv: list[str] | None = None) -> int:
    """Print one row per layer, kernel and model loss; exit 1 if any is over the bar, 2 for a
    bad flag (one line on stderr)."""
    import os
    import sys

    from npvae import __version__
    from npvae.app.flags import OneLineParser, whole_number
    from npvae.errors import ConfigError
    from npvae.validate import counted

    parser = OneLineParser(
        prog="python -m npvae.gradcheck",
        description="Prove every hand-written gradient in npvae against finite differences.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"npvae {__version__}")
    parser.add_argument(
        "--seed", type=whole_number("--seed"), default=0, help="seed of the random inputs (0)"
    )
    parser.add_argument(
        "--only", default="", metavar="TEXT", help="check only the rules whose name contains TEXT"
    )
    try:
        args = parser.parse_args(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    broken_row = os.environ.get(BREAK_VARIABLE, "")
    rows = [*_layer_rows(), *_kernel_rows(), *_model_rows(), *_probe_rows()]
    rows = [row for row in rows if args.only.lower() in row[1].lower()]
    if not rows:
        print(
            f"error: no rule's name contains {args.only!r}; "
            "run python -m npvae.gradcheck without --only to see them all",
            file=sys.stderr,
        )
        return 2
    print(f"npvae gradient check: float64, centred differences, h = {STEP:g}, bar {TOLERANCE:g}")
    print("relative error = max|a - n| / max(|a| + |n|) over each array\n")
    print(f"{'kind':<7} {'rule':<40} {'worst array':<16} {'rel. error':>10}")
    failures = 0
    for kind, name, run in rows:
        f, arrays, analytic = run(np.random.default_rng(args.seed))
        if name == broken_row:
            analytic = {key: grad * (1 + 1e-4) for key, grad in analytic.items()}
        errors = check_gradients(f, arrays, analytic)
        worst = max(errors, key=errors.get)
        ok = errors[worst] < TOLERANCE
        failures += not ok
        print(f"{kind:<7} {name:<40} {worst:<16} {errors[worst]:>10.1e}  {'ok' if ok else 'FAIL'}")
    print()
    if failures:
        verb = "fails" if failures == 1 else "fail"
        print(f"{failures} of {counted(len(rows), 'rule')} {verb} the bar")
        return 1
    print("1 rule passes" if len(rows) == 1 else f"all {len(rows)} rules pass")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
