"""npvae against PyTorch, each in a process of its own: seconds per epoch, peak memory, test loss.

Each run of each tool is a fresh child process (this script started again with
``--worker npvae`` or ``--worker torch``), so neither shares the other's
libraries or thread settings, as a user runs them.  (An earlier npvae set
``OMP_WAIT_POLICY=passive`` for its own process, and PyTorch run inside it
obeyed that too: 4.0 s per epoch against 2.1 s alone.  npvae no longer sets
anything in the environment, and the PyTorch child never imports npvae.)

Both children read the same uint8 MNIST arrays (the IDX reader below, shared by
both), seed the same way, use the same number of threads, and time the same
thing: each epoch's training only (batching from the in-memory uint8 array,
forward, backward, Adam), not the test evaluation after it.  The runs alternate
npvae, torch, npvae, torch, ... so that a change in the machine's speed falls on
both; the figure per run is the median of epochs 2 and later, and the table
gives the median over runs and the spread.

``bound`` is what the model's matrix products alone take per epoch (every
forward product, each weight's gradient and each input gradient but the
first layer's, with the step's shapes), timed in the npvae child with the same
BLAS threads right after each epoch that counts.  ``x bound`` is, in each child,
the median of each such epoch over the bound timed right after it; the table
gives the median over runs and their spread.  The two are timed seconds apart in
one process, so the machine's drift between runs does not enter the ratio.

The configurations:

* ``classic``: PyTorch's example VAE, 784-400-20, ReLU, batch 128;
* ``iwae-net``: the IWAE paper's net 784-200-200-50, tanh, trained as a VAE, batch 100;
* ``iwae-k5``: the same net with the IWAE bound, k = 5, batch 100, on both sides;
* ``iwae-net-b20``: the same net as a VAE at the paper's batch of 20.

All use a Bernoulli decoder on the grey levels (BCE from logits, summed over
pixels), the closed-form KL (VAE) or the k-sample bound (IWAE), Adam at 1e-3, float32.

    python benchmarks/compare_pytorch.py --data-dir ../shared/data/mnist   # 7 pairs, 10,000 images
    python benchmarks/compare_pytorch.py --configs classic --runs 3 --epochs 4 --limit 0
    python benchmarks/compare_pytorch.py --accuracy   # 10 epochs of classic; test losses

PyTorch is a peer to measure against, not a dependency: ``pip install torch==2.13.0``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CONFIGS = {
    "classic": {"hidden": [400], "latent": 20, "activation": "relu", "batch": 128, "k": 0},
    "iwae-net": {"hidden": [200, 200], "latent": 50, "activation": "tanh", "batch": 100, "k": 0},
    "iwae-k5": {"hidden": [200, 200], "latent": 50, "activation": "tanh", "batch": 100, "k": 5},
    "iwae-net-b20": {"hidden": [200, 200], "latent": 50, "activation": "tanh", "batch": 20, "k": 0},
}
LABELS = {
    "classic": "classic 784-400-20 ReLU, batch 128",
    "iwae-net": "IWAE paper's net 784-200-200-50 tanh, VAE, batch 100",
    "iwae-k5": "same net, IWAE k = 5, batch 100",
    "iwae-net-b20": "same net, VAE, batch 20",
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as uint8 ``(N, 784)`` images."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        raw = bytearray(file.read())  # writable, so torch.from_numpy takes it without a copy
    count = int.from_bytes(raw[4:8], "big")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, -1)


def load_mnist(data_dir: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 training images (the first ``limit``, 0: all) and test images, ``(N, 784)``."""
    folder = Path(data_dir)

    def find(stem):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
        raise SystemExit(f"error: no {stem}[.gz] in {folder}; pass --data-dir")

    x_train = read_idx(find("train-images-idx3-ubyte"))
    x_test = read_idx(find("t10k-images-idx3-ubyte"))
    return (x_train[:limit] if limit else x_train), x_test


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----- the npvae child -------------------------------------------------------------------


def matmul_products(spec: dict):
    """A function doing one training step's matrix products for ``spec``, and nothing else.

    Float32, NumPy's BLAS.  Forward: every layer, the decoder's on ``k`` rows per
    example.  Backward: each weight's gradient, and each input gradient but the first
    layer's.  The arrays are made once, so that each call does only the products.
    """
    batch, rows_k = spec["batch"], spec["batch"] * max(spec["k"], 1)
    widths = [784, *spec["hidden"]]
    layers = [(batch, a, b) for a, b in zip(widths, widths[1:])]  # encoder
    layers += [(batch, widths[-1], spec["latent"])] * 2  # the mu and log-variance heads
    dec = [spec["latent"], *spec["hidden"][::-1], 784]
    layers += [(rows_k, a, b) for a, b in zip(dec, dec[1:])]  # decoder
    rng = np.random.default_rng(0)
    arrays = []
    for index, (rows, d_in, d_out) in enumerate(layers):
        x = rng.random((rows, d_in), dtype=np.float32)
        w = rng.random((d_in, d_out), dtype=np.float32)
        d_y = rng.random((rows, d_out), dtype=np.float32)
        arrays.append((x, w, d_y, index > 0))

    def step():
        for x, w, d_y, input_grad in arrays:
            x @ w
            x.T @ d_y
            if input_grad:
                d_y @ w.T

    return step


def matmul_bound(spec: dict, n_train: int, repeats: int = 15):
    """A function timing what the model's matrix products alone take per epoch, in seconds.

    The products are :func:`matmul_products`'s, one step's worth per batch of the epoch.
    """
    step = matmul_products(spec)
    batch = spec["batch"]

    def seconds_per_epoch() -> float:
        step()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(10):
                step()
            times.append((time.perf_counter() - started) / 10)
        return statistics.median(times) * -(-n_train // batch)

    return seconds_per_epoch


def npvae_model(spec: dict, seed: int):
    """npvae's model for ``spec``: the IWAE when ``spec["k"]`` is set, else the VAE (float32)."""
    from npvae.models import IWAE, VAE

    common = {"input_dim": 784, "hidden": spec["hidden"], "latent_dim": spec["latent"]}
    common.update(activation=spec["activation"], seed=seed)
    return IWAE(**common, k=spec["k"]) if spec["k"] else VAE(**common)


def npvae_worker(options, spec: dict) -> dict:
    from npvae._threads import CpuWatch, use_threads
    from npvae.data import Batches
    from npvae.evaluate import evaluate_loss
    from npvae.optim import Adam

    watch = CpuWatch()
    x_train, x_test = load_mnist(options.data_dir, options.limit)
    threads, _ = use_threads(options.threads or "auto", watch)  # as python -m npvae.train does
    model = npvae_model(spec, options.seed)
    adam = Adam(model.params, lr=1e-3)
    rng = np.random.default_rng(options.seed)
    batches = Batches(x_train, spec["batch"], rng)
    bound = None if options.no_bound else matmul_bound(spec, len(x_train))
    seconds, bounds = [], []
    for epoch in range(options.epochs):
        started = time.perf_counter()
        for x in batches:
            model.loss(x, rng)
            adam.step(model.grads)
        seconds.append(time.perf_counter() - started)
        if bound and (epoch > 0 or options.epochs == 1):  # beside each epoch that counts
            bounds.append(bound())
    result = {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "threads": threads}
    if options.test:
        test = (x_test / np.float32(255)).astype(np.float32)
        test_rng = np.random.default_rng(options.seed)
        result["test_loss"] = evaluate_loss(model, test, test_rng)["loss"]
    if bounds:
        result["bound"] = statistics.median(bounds)
        ratios = [e / b for e, b in zip(counted_epochs(seconds), bounds, strict=True)]
        result["over_bound"] = statistics.median(ratios)
    return result


# ----- the PyTorch child -----------------------------------------------------------------


def make_torch_model(torch, spec: dict):
    """PyTorch's version of the same model, and its loss on a batch (the negative bound, summed)."""
    nn, F = torch.nn, torch.nn.functional
    act = F.relu if spec["activation"] == "relu" else torch.tanh
    k, latent = spec["k"], spec["latent"]

    class TorchVAE(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [784, *spec["hidden"]]
            self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
            self.mu = nn.Linear(widths[-1], latent)
            self.log_var = nn.Linear(widths[-1], latent)
            dec = [latent, *spec["hidden"][::-1], 784]
            self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dec, dec[1:]))

        def decode(self, z):
            for layer in self.decoder[:-1]:
                z = act(layer(z))
            return self.decoder[-1](z)

        def forward(self, x):
            h = x
            for layer in self.encoder:
                h = act(layer(h))
            return self.mu(h), self.log_var(h)

    def vae_loss(model, x):
        mu, log_var = model(x)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        bce = F.binary_cross_entropy_with_logits(model.decode(z), x, reduction="sum")
        return bce - 0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())

    def iwae_loss(model, x):
        mu, log_var = model(x)  # (N, d)
        eps = torch.randn((k, *mu.shape))  # (k, N, d)
        z = mu + torch.exp(0.5 * log_var) * eps
        logits = model.decode(z.reshape(-1, latent)).reshape(k, len(x), 784)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, x.expand(k, -1, -1), reduction="none"
        ).sum(-1)
        log_pz = -0.5 * (z.pow(2)).sum(-1)  # the 2 pi terms cancel against log q's
        log_qz = -0.5 * (eps.pow(2) + log_var).sum(-1)
        log_w = log_px + log_pz - log_qz  # (k, N)
        return -(torch.logsumexp(log_w, 0) - np.log(k)).sum()

    return TorchVAE(), iwae_loss if k else vae_loss


def torch_worker(options, spec: dict) -> dict:
    import torch

    torch.set_num_threads(options.threads or os.cpu_count())
    torch.manual_seed(options.seed)
    x_train, x_test = load_mnist(options.data_dir, options.limit)
    model, loss_fn = make_torch_model(torch, spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(options.seed)
    data, batch = torch.from_numpy(x_train), spec["batch"]
    seconds = []
    for _ in range(options.epochs):
        started = time.perf_counter()
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(order), batch):
            x = data[order[start : start + batch]].float().div_(255)
            optimizer.zero_grad()
            loss = loss_fn(model, x)  # summed, as in PyTorch's example (Adam: same steps)
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - started)
    result = {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}
    if options.test:
        with torch.no_grad():
            test = torch.from_numpy(x_test)
            total = sum(
                loss_fn(model, test[i : i + 1000].float().div_(255)).item()
                for i in range(0, len(test), 1000)
            )
        result["test_loss"] = total / len(test)
    return result


# ----- the parent ------------------------------------------------------------------------


def run_child(tool: str, config: str, options) -> dict:
    command = [sys.executable, __file__, "--worker", tool, "--configs", config]
    command += ["--epochs", str(options.epochs), "--limit", str(options.limit)]
    command += ["--threads", str(options.threads), "--seed", str(options.seed)]
    command += ["--data-dir", options.data_dir] + (["--test"] if options.test else [])
    command += ["--no-bound"] if tool == "torch" else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"error: the {tool} child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def counted_epochs(seconds: list[float]) -> list[float]:
    """The epochs a run's figure counts: all but the first (warm-up) when there are more."""
    return seconds[1:] if len(seconds) > 1 else seconds


def epoch_figure(seconds: list[float]) -> float:
    """A run's figure: the median of its counted epochs."""
    return statistics.median(counted_epochs(seconds))


def median_and_spread(values: list[float]) -> str:
    """``"1.23"`` for one value, ``"1.23 (1.10–1.40)"`` for several."""
    text = f"{statistics.median(values):.2f}"
    return text if len(values) == 1 else f"{text} ({min(values):.2f}–{max(values):.2f})"


def load_text() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def compare(options) -> int:
    import torch  # only for its version; the children do the work

    print(
        f"{options.runs} runs per tool, alternating, {options.epochs} epochs each, "
        f"{options.limit or 60000} training images, {options.threads or 'default'} threads, "
        f"seed {options.seed}"
    )
    print(f"numpy {np.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}")
    print(f"start: {load_text()}", flush=True)
    rows, accuracy = [], []
    for config in options.configs:
        figures = {"npvae": [], "torch": []}
        rss = {"npvae": [], "torch": []}
        bounds, over_bound, ratios = [], [], []
        tests = {"npvae": [], "torch": []}
        for run in range(options.runs):
            order = ("npvae", "torch") if run % 2 == 0 else ("torch", "npvae")
            results = {tool: run_child(tool, config, options) for tool in order}
            for tool, result in results.items():
                figures[tool].append(epoch_figure(result["seconds"]))
                rss[tool].append(result["peak_rss_mb"])
                if "test_loss" in result:
                    tests[tool].append(result["test_loss"])
            bounds.append(results["npvae"]["bound"])
            over_bound.append(results["npvae"]["over_bound"])
            ratios.append(figures["npvae"][-1] / figures["torch"][-1])
            print(
                f"  {config} run {run + 1}: npvae {figures['npvae'][-1]:.2f} s "
                f"({results['npvae']['threads']} threads), "
                f"torch {figures['torch'][-1]:.2f} s, ratio {ratios[-1]:.2f}, "
                f"bound {bounds[-1]:.2f} s; {load_text()}",
                flush=True,
            )
        cells = [figures["npvae"], figures["torch"], ratios]
        rows.append(
            f"| {LABELS[config]} | {' | '.join(median_and_spread(cell) for cell in cells)} | "
            f"{statistics.median(bounds):.2f} | {median_and_spread(over_bound)} | "
            f"{max(rss['npvae']):.0f} / {max(rss['torch']):.0f} MB |"
        )
        if tests["npvae"]:
            accuracy.append((config, tests["npvae"], tests["torch"]))
    print(f"end: {load_text()}")
    print()
    print(
        "| configuration | npvae s/epoch | PyTorch s/epoch | ratio | bound s/epoch | "
        "npvae x bound | peak RSS npvae / PyTorch |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    status = 0
    for config, ours, theirs in accuracy:
        gap = statistics.median(ours) - statistics.median(theirs)
        listed = {
            tool: ", ".join(f"{v:.2f}" for v in values)
            for tool, values in zip(("npvae", "torch"), (ours, theirs))
        }
        print(
            f"\n{config}: test loss after {options.epochs} epochs: npvae {listed['npvae']}; "
            f"torch {listed['torch']}; gap {gap:+.2f} nats"
        )
        if options.accuracy and abs(gap) > 0.3:
            print("accuracy check FAILED: more than 0.3 nats from PyTorch")
            status = 1
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated, of: {', '.join(CONFIGS)}"
    )
    parser.add_argument(
        "--runs", type=int, default=7, help="runs per tool and configuration (default 7)"
    )
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs per run, the first left out (default 3)"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=10_000,
        help="train on the first N images (0: all; default 10000: more, shorter pairs)",
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="both tools (0: each tool's own choice)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", action="store_true", help="also report each run's test loss")
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help="10 epochs of classic on all images, one run each; fail beyond 0.3 nats",
    )
    parser.add_argument("--no-bound", action="store_true", help="skip the matmul bound")
    parser.add_argument("--worker", choices=("npvae", "torch"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.accuracy:
        options.configs, options.runs, options.epochs = "classic", 1, 10
        options.limit, options.test = 0, True
    options.configs = options.configs.split(",")
    unknown = set(options.configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations {sorted(unknown)}; known: {', '.join(CONFIGS)}")
    if options.worker:
        worker = npvae_worker if options.worker == "npvae" else torch_worker
        print(json.dumps(worker(options, CONFIGS[options.configs[0]])))
        return 0
    return compare(options)


if __name__ == "__main__":
    raise SystemExit(main())
