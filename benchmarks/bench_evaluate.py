"""The importance-sampled log-likelihood at the paper's size, against its matrix products.

Burda et al. (2016) report log p(x) with k = 5000 samples on the 10,000 MNIST
test images, for a 784-200-200-50 tanh model.  The decoder then runs on 50
million latent codes; its three products (50-200, 200-200, 200-784) are the
work nothing can avoid.  This times:

* ``estimate``: ``npvae.evaluate.importance_sampled`` on the first ``--n-test``
  test images (binarised once, seed 0), streamed as the evaluation CLI runs it:
  ``--threads`` workers, each on a one-thread BLAS;
* ``one sampler``: the same on one worker with a ``--threads``-thread BLAS, as
  the CLI ran it before it had workers (the same estimates, bit for bit, when
  the BLAS gives the same products);
* ``matmuls``: the decoder's three products alone on a ``--threads``-thread
  BLAS, on the same number of rows, in chunks of the same size (the bound);

and prints images per second, the extrapolation to all 10,000 images, the
ratio to the bound, the process's peak RSS and the load average, which says
how busy the machine was.  The weights are the paper's initialisation, or a
saved model's (``--model``): the work per sample does not depend on them.

    python benchmarks/bench_evaluate.py --data-dir ../shared/data/mnist
    python benchmarks/bench_evaluate.py --n-test 10000          # the whole test set
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
from threadpoolctl import threadpool_limits

from npvae.app.report import CHUNK_ROWS
from npvae.data import binarize_static, load_dataset
from npvae.evaluate import importance_sampled
from npvae.models import VAE, load

ROWS_PER_CHUNK = CHUNK_ROWS  # as python -m npvae.evaluate runs it


def matmul_seconds(model, n_rows: int) -> float:
    """Seconds for the decoder's products alone on ``n_rows`` codes, chunk by chunk."""
    weights = [layer.params["W"] for layer in model.decoder.layers if "W" in layer.params]
    rng = np.random.default_rng(0)
    z = rng.standard_normal((ROWS_PER_CHUNK, weights[0].shape[0]), dtype=model.dtype)
    started = time.perf_counter()
    for start in range(0, n_rows, ROWS_PER_CHUNK):
        h = z[: min(ROWS_PER_CHUNK, n_rows - start)]
        for weight in weights:
            h = h @ weight
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="MNIST's folder (default: found)")
    parser.add_argument("--model", default=None, help="a saved VAE or IWAE (default: untrained)")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores to use")
    args = parser.parse_args()

    model = (
        load(args.model)
        if args.model
        else VAE(784, hidden=[200, 200], latent_dim=50, activation="tanh", seed=0)
    )
    data = load_dataset("mnist", args.data_dir, download=False)
    x = binarize_static(data.x_test[: args.n_test], 0).astype(model.dtype)
    load_before = os.getloadavg()[0]
    importance_sampled(model, x[:20], np.random.default_rng(1), n_samples=50)  # warm up

    with threadpool_limits(limits=args.threads, user_api="blas"):
        started = time.perf_counter()
        sampled = importance_sampled(
            model, x, np.random.default_rng(0), n_samples=args.k, max_rows=CHUNK_ROWS,
            workers=args.threads,
        )  # fmt: skip
        estimate = time.perf_counter() - started
        started = time.perf_counter()
        one = importance_sampled(
            model, x, np.random.default_rng(0), n_samples=args.k, max_rows=CHUNK_ROWS
        )
        one_sampler = time.perf_counter() - started
        bound = matmul_seconds(model, len(x) * args.k)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_after = os.getloadavg()[0]

    print(f"model {model!r}, k = {args.k}, {len(x)} test images, {args.threads} threads")
    print("| figure | value |")
    print("| --- | ---: |")
    print(f"| log p(x), mean over the images (nats) | {sampled.log_px.mean():.2f} |")
    print(f"| largest difference from one sampler's estimates (nats) | "
          f"{np.abs(sampled.log_px - one.log_px).max():.1e} |")  # fmt: skip
    print(f"| estimate: seconds | {estimate:.1f} |")
    print(f"| images per second | {len(x) / estimate:.1f} |")
    print(f"| extrapolated to 10,000 images (minutes) | {10_000 / len(x) * estimate / 60:.2f} |")
    print(f"| one sampler on a {args.threads}-thread BLAS: seconds | {one_sampler:.1f} |")
    print(f"| the decoder's products alone: seconds | {bound:.1f} |")
    print(f"| estimate / products | {estimate / bound:.2f} |")
    print(f"| one sampler / estimate | {one_sampler / estimate:.2f} |")
    print(f"| peak RSS (MB) | {peak_mb:.0f} |")
    print(f"| load average before / after | {load_before:.2f} / {load_after:.2f} |")


if __name__ == "__main__":
    main()
