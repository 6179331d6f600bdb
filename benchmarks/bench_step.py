"""One VAE training step against the matrix products it cannot avoid.

The road ahead asks for a training epoch close to the time the matrix products
alone need.  This times, for the classic VAE (784-400-20, ReLU, Bernoulli,
batch 128, float32):

* ``matmuls``: the 14 products of one step, with the step's shapes (5 forward;
  9 backward: each weight's gradient and each input gradient but the
  encoder's first, which nothing needs);
* ``loss + grads``: ``VAE.loss`` with gradients;
* ``Adam``: ``Adam.step`` on those gradients;
* ``step``: both, as the trainer runs them.

Each is the median over interleaved blocks, so machine load falls on all
alike.  The gap between ``step`` and ``matmuls`` is what the elementwise
kernels, the copies and Python cost.

    python benchmarks/bench_step.py
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from npvae._threads import use_threads
from npvae.models import VAE
from npvae.optim import Adam


def matmul_step(shapes: dict[str, np.ndarray]):
    """A function doing the 14 products of one step on arrays of the step's shapes."""
    x, w1, w_mu, w_lv, w3, w4 = (shapes[k] for k in ("x", "w1", "w_mu", "w_lv", "w3", "w4"))
    n = len(x)
    rng = np.random.default_rng(0)
    d_out = rng.standard_normal((n, w4.shape[1]), dtype=x.dtype)
    d_latent = rng.standard_normal((n, w_mu.shape[1]), dtype=x.dtype)

    def run():
        h = x @ w1  # encoder
        z = h @ w_mu  # the two heads (the sampler's elementwise work is not counted)
        h @ w_lv
        h3 = z @ w3  # decoder
        h3 @ w4
        h3.T @ d_out  # decoder backward: dW4, dh3, dW3, dz
        d_h3 = d_out @ w4.T
        z.T @ d_h3
        d_h3 @ w3.T
        h.T @ d_latent  # heads backward: dW_mu, dW_lv and their input gradients
        h.T @ d_latent
        d_h = d_latent @ w_mu.T
        d_h += d_latent @ w_lv.T
        x.T @ d_h  # encoder backward: dW1 (no input gradient)

    return run


def median_block_seconds(funcs: dict, blocks: int, calls: int) -> dict[str, float]:
    """Median seconds per call of each function, over interleaved blocks."""
    times: dict[str, list[float]] = {name: [] for name in funcs}
    for func in funcs.values():
        func()  # warm-up: numba's cache, BLAS's threads
    for _ in range(blocks):
        for name, func in funcs.items():
            start = time.perf_counter()
            for _ in range(calls):
                func()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: float(np.median(values)) for name, values in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=15, help="timed blocks per row")
    parser.add_argument("--calls", type=int, default=20, help="calls per block")
    parser.add_argument("--threads", default="auto", help="as python -m npvae.train's --threads")
    options = parser.parse_args(argv)
    threads, reason = use_threads(options.threads)

    rng = np.random.default_rng(0)
    vae = VAE(seed=0)
    optimizer = Adam(vae.params, lr=1e-3)
    x = (rng.random((options.batch_size, 784)) < 0.3).astype(np.float32)
    p = vae.params
    shapes = {
        "x": x,
        "w1": p["encoder.0.W"],
        "w_mu": p["mu_head.W"],
        "w_lv": p["log_var_head.W"],
        "w3": p["decoder.0.W"],
        "w4": p["decoder.2.W"],
    }

    def loss_and_grads():
        vae.loss(x, rng)

    def adam():
        optimizer.step(vae.grads)

    def step():
        vae.loss(x, rng)
        optimizer.step(vae.grads)

    funcs = {
        "matmuls": matmul_step(shapes),
        "loss + grads": loss_and_grads,
        "Adam": adam,
        "step": step,
    }
    seconds = median_block_seconds(funcs, options.blocks, options.calls)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    steps_per_epoch = -(-60_000 // options.batch_size)
    print(
        f"VAE 784-400-20, batch {options.batch_size}, float32; {threads} threads ({reason}); "
        f"load average {load:.2f}"
    )
    print()
    print("| part | ms per step | x matmuls | s per MNIST epoch |")
    print("| --- | ---: | ---: | ---: |")
    for name, value in seconds.items():
        print(
            f"| {name} | {value * 1e3:.2f} | {value / seconds['matmuls']:.2f} | "
            f"{value * steps_per_epoch:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
