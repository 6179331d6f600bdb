"""npvae against its peers (PyTorch, JAX), each in its own process: s per epoch, memory, test loss.

Each run of each tool is a fresh child process (this script started again with
``--worker npvae``, ``--worker torch`` or ``--worker jax``), so none shares another's
libraries or thread settings, as a user runs them.  (An earlier npvae set
``OMP_WAIT_POLICY=passive`` for its own process, and PyTorch run inside it
obeyed that too: 4.0 s per epoch against 2.1 s alone.  npvae no longer sets
anything in the environment, and the peers' children never import npvae.)

All children read the same uint8 MNIST arrays (the IDX reader below, shared by
all), seed the same way, use the same number of threads, and time the same
thing: each epoch's training only (batching from the in-memory uint8 array,
forward, backward, Adam), not the test evaluation after it.  The runs rotate
through the tools (npvae, torch, jax; torch, jax, npvae; ...) so that a change in
the machine's speed falls on all; the figure per run is the median of epochs 2 and
later, and the table gives the median over runs and the spread.

The JAX child is written the usual JAX way: parameters as a pytree, one
``jax.jit``-ted step (the loss and its gradients by ``jax.value_and_grad``, then
optax's Adam), and a plain Python loop over the batches.  Its step is compiled for
each batch shape (the full batch and the last, shorter one) before the first epoch,
so no epoch's time includes compilation (reported apart as ``compile_seconds``).
XLA's CPU client sizes its thread pool by the cores the process may run on: at
``--threads`` equal to those cores (the default) it is left alone; fewer threads
narrow the child's CPU affinity to that many cores (XLA has no thread-count setting).

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
* ``iwae-k5``: the same net with the IWAE bound, k = 5, batch 100, on every side;
* ``iwae-net-b20``: the same net as a VAE at the paper's batch of 20.

All use a Bernoulli decoder on the grey levels (BCE from logits, summed over
pixels), the closed-form KL (VAE) or the k-sample bound (IWAE), Adam at 1e-3, float32.

    python benchmarks/compare_peers.py --data-dir ../shared/data/mnist   # 7 runs, 10,000 images
    python benchmarks/compare_peers.py --configs classic --runs 3 --epochs 4 --limit 0
    python benchmarks/compare_peers.py --peers jax --limit 2000 --runs 1 --epochs 2
    python benchmarks/compare_peers.py --accuracy   # 10 epochs of classic; test losses

The peers are there to measure against, not dependencies: ``pip install torch==2.13.0``,
``pip install jax optax``.  By default every peer that is installed runs.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import importlib.util
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
    "iwae-k50": {"hidden": [200, 200], "latent": 50, "activation": "tanh", "batch": 100, "k": 50},
}
#: What a run compares unless --configs says otherwise: iwae-k50's epoch alone is a minute.
DEFAULT_CONFIGS = ("classic", "iwae-net", "iwae-k5", "iwae-net-b20")
LABELS = {
    "classic": "classic 784-400-20 ReLU, batch 128",
    "iwae-net": "IWAE paper's net 784-200-200-50 tanh, VAE, batch 100",
    "iwae-k5": "same net, IWAE k = 5, batch 100",
    "iwae-net-b20": "same net, VAE, batch 20",
    "iwae-k50": "same net, IWAE k = 50, batch 100",
}


NAMES = {"npvae": "npvae", "torch": "PyTorch", "jax": "JAX"}
PEERS = ("torch", "jax")
PACKAGES_OF = {"npvae": ("numba",), "torch": ("torch",), "jax": ("jax", "jaxlib", "optax")}
INSTALL = {"torch": "pip install torch==2.13.0", "jax": "pip install jax optax"}


def installed(tool: str) -> bool:
    """Whether every module ``tool``'s child imports is there (without importing it)."""
    modules = {"torch": ("torch",), "jax": ("jax", "optax")}[tool]
    return all(importlib.util.find_spec(module) is not None for module in modules)


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


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


def describe_threads(result: dict) -> str:
    """``"2 threads"``, or under ``auto`` the share of steps the tuner left on them."""
    text = f"{result['threads']} threads"
    if "share" in result:
        text += f" for {result['share']:.0%} of the steps, else 1"
    return text


def npvae_worker(options, spec: dict) -> dict:
    from npvae.app._threads import CpuWatch, use_threads
    from npvae.data import Batches
    from npvae.evaluate import evaluate_loss
    from npvae.optim import Adam

    watch = CpuWatch()
    x_train, x_test = load_mnist(options.data_dir, options.limit)
    threads, _ = use_threads(options.threads or "auto", watch)  # as python -m npvae.train does
    tuner = None
    if not options.threads and threads > 1:  # auto, as the trainer: the faster of 2 and 1
        from npvae.app._tuner import ThreadTuner

        tuner = ThreadTuner(threads)
    model = npvae_model(spec, options.seed)
    adam = Adam(model.params, lr=1e-3, flat=(model.flat_params, model.flat_grads))  # as the trainer
    rng = np.random.default_rng(options.seed)
    batches = Batches(x_train, spec["batch"], rng)
    bound = None if options.no_bound else matmul_bound(spec, len(x_train))
    seconds, bounds = [], []
    for epoch in range(options.epochs):
        started = time.perf_counter()
        if tuner is not None:
            tuner.restart()
        for x in batches:
            model.loss(x, rng)
            adam.step()
            if tuner is not None:
                tuner.tick()
        seconds.append(time.perf_counter() - started)
        if bound and (epoch > 0 or options.epochs == 1):  # beside each epoch that counts
            bounds.append(bound())
    result = {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "threads": threads}
    if tuner is not None:  # how many of the steps kept all threads, for a run under load
        result["share"] = tuner.share()
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


# ----- the JAX child ---------------------------------------------------------------------


def make_jax_model(jax, spec: dict, key):
    """JAX's version of the same model: its parameters (a pytree) and its loss on a batch.

    The parameters are initialised as PyTorch's ``nn.Linear`` does (weights and biases
    uniform in +-1/sqrt(fan-in)), and the loss is the torch child's: the negative bound,
    summed over the batch.
    """
    jnp = jax.numpy
    act = jax.nn.relu if spec["activation"] == "relu" else jnp.tanh
    k, latent = spec["k"], spec["latent"]
    widths, dec = [784, *spec["hidden"]], [latent, *spec["hidden"][::-1], 784]
    shapes = {
        "encoder": list(zip(widths, widths[1:])),
        "heads": [(widths[-1], latent)] * 2,  # mu and log-variance
        "decoder": list(zip(dec, dec[1:])),
    }
    params = {}
    for part, pairs in shapes.items():
        params[part] = []
        for fan_in, fan_out in pairs:
            key, w_key, b_key = jax.random.split(key, 3)
            limit = 1 / np.sqrt(fan_in)
            w = jax.random.uniform(w_key, (fan_in, fan_out), jnp.float32, -limit, limit)
            b = jax.random.uniform(b_key, (fan_out,), jnp.float32, -limit, limit)
            params[part].append({"w": w, "b": b})

    def encode(params, x):
        h = x
        for layer in params["encoder"]:
            h = act(h @ layer["w"] + layer["b"])
        mu, log_var = (h @ head["w"] + head["b"] for head in params["heads"])
        return mu, log_var

    def decode(params, z):
        *hidden, last = params["decoder"]
        for layer in hidden:
            z = act(z @ layer["w"] + layer["b"])
        return z @ last["w"] + last["b"]  # logits

    def bce(logits, x):  # -log p(x | z) per pixel, from logits
        return jnp.logaddexp(0, logits) - x * logits

    def vae_loss(params, x, key):
        mu, log_var = encode(params, x)
        z = mu + jnp.exp(0.5 * log_var) * jax.random.normal(key, mu.shape)
        kl = -0.5 * jnp.sum(1 + log_var - mu**2 - jnp.exp(log_var))
        return jnp.sum(bce(decode(params, z), x)) + kl

    def iwae_loss(params, x, key):
        mu, log_var = encode(params, x)  # (N, d)
        eps = jax.random.normal(key, (k, *mu.shape))  # (k, N, d)
        z = mu + jnp.exp(0.5 * log_var) * eps
        logits = decode(params, z.reshape(-1, latent)).reshape(k, x.shape[0], 784)
        log_px = -bce(logits, x).sum(-1)
        log_pz = -0.5 * (z**2).sum(-1)  # the 2 pi terms cancel against log q's
        log_qz = -0.5 * (eps**2 + log_var).sum(-1)
        log_w = log_px + log_pz - log_qz  # (k, N)
        return -(jax.nn.logsumexp(log_w, axis=0) - np.log(k)).sum()

    return params, iwae_loss if k else vae_loss


def jax_threads(threads: int) -> str:
    """Give this process ``threads`` cores for XLA's pool, before JAX starts; say how.

    XLA's CPU client makes one pool thread per core the process may run on, and has no
    setting for another count; fewer threads than that are had by narrowing the process's
    CPU affinity to the first ``threads`` of its cores.
    """
    cores = sorted(os.sched_getaffinity(0))
    if not threads or threads >= len(cores):
        return f"XLA's default ({len(cores)} cores)"
    os.sched_setaffinity(0, cores[:threads])
    return f"affinity to {threads} of {len(cores)} cores"


def jax_worker(options, spec: dict) -> dict:
    threads = jax_threads(options.threads)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # this child's own; no probing for GPUs
    import jax
    import optax

    jnp = jax.numpy
    x_train, x_test = load_mnist(options.data_dir, options.limit)
    key, init_key = jax.random.split(jax.random.key(options.seed))
    params, loss_fn = make_jax_model(jax, spec, init_key)
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, key, x_uint8):
        key, sample_key = jax.random.split(key)
        x = x_uint8.astype(jnp.float32) / 255
        loss, grads = jax.value_and_grad(loss_fn)(params, x, sample_key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, loss

    batch = spec["batch"]
    rng = np.random.default_rng(options.seed)
    # Compile for each batch shape first (the outputs are dropped: nothing is updated),
    # so that no epoch below includes compilation.
    started = time.perf_counter()
    for rows in sorted({batch, len(x_train) % batch} - {0}):
        jax.block_until_ready(train_step(params, opt_state, key, x_train[:rows]))
    compile_seconds = time.perf_counter() - started
    seconds = []
    for _ in range(options.epochs):
        started = time.perf_counter()
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), batch):
            x = x_train[order[start : start + batch]]
            params, opt_state, key, _ = train_step(params, opt_state, key, x)
        jax.block_until_ready(params)  # the steps are dispatched asynchronously
        seconds.append(time.perf_counter() - started)
    result = {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "threads": threads}
    result["compile_seconds"] = compile_seconds
    if options.test:
        test_loss = jax.jit(loss_fn)
        total = 0.0
        for i in range(0, len(x_test), 1000):
            key, sample_key = jax.random.split(key)
            x = jnp.asarray(x_test[i : i + 1000], jnp.float32) / 255
            total += float(test_loss(params, x, sample_key))
        result["test_loss"] = total / len(x_test)
    return result


# ----- the parent ------------------------------------------------------------------------


def run_child(tool: str, config: str, options) -> dict:
    command = [sys.executable, __file__, "--worker", tool, "--configs", config]
    command += ["--epochs", str(options.epochs), "--limit", str(options.limit)]
    command += ["--threads", str(options.threads), "--seed", str(options.seed)]
    command += ["--data-dir", options.data_dir] + (["--test"] if options.test else [])
    command += [] if tool == "npvae" else ["--no-bound"]
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
    tools = ["npvae", *options.peers]
    print(
        f"{options.runs} runs per tool, rotating, {options.epochs} epochs each, "
        f"{options.limit or 60000} training images, {options.threads or 'default'} threads, "
        f"seed {options.seed}"
    )
    versions = ", ".join(f"{name} {version(name)}" for name in ("numpy", *PACKAGES_OF["npvae"]))
    for peer in options.peers:
        versions += "".join(f", {name} {version(name)}" for name in PACKAGES_OF[peer])
    print(f"{versions}, python {sys.version.split()[0]}")
    print(f"start: {load_text()}", flush=True)
    rows, accuracy = [], []
    for config in options.configs:
        figures = {tool: [] for tool in tools}
        rss = {tool: [] for tool in tools}
        tests = {tool: [] for tool in tools}
        ratios = {peer: [] for peer in options.peers}
        bounds, over_bound = [], []
        for run in range(options.runs):
            order = tools[run % len(tools) :] + tools[: run % len(tools)]
            results = {tool: run_child(tool, config, options) for tool in order}
            for tool, result in results.items():
                figures[tool].append(epoch_figure(result["seconds"]))
                rss[tool].append(result["peak_rss_mb"])
                if "test_loss" in result:
                    tests[tool].append(result["test_loss"])
            if "bound" in results["npvae"]:
                bounds.append(results["npvae"]["bound"])
                over_bound.append(results["npvae"]["over_bound"])
            line = (
                f"  {config} run {run + 1}: npvae {figures['npvae'][-1]:.2f} s "
                f"({describe_threads(results['npvae'])})"
            )
            for peer in options.peers:
                ratios[peer].append(figures["npvae"][-1] / figures[peer][-1])
                line += f", {peer} {figures[peer][-1]:.2f} s (ratio {ratios[peer][-1]:.2f})"
            line += f", bound {bounds[-1]:.2f} s" if bounds else ""
            print(f"{line}; {load_text()}", flush=True)
        cells = [figures[tool] for tool in tools] + [ratios[peer] for peer in options.peers]
        row = f"| {LABELS[config]} | {' | '.join(median_and_spread(cell) for cell in cells)} | "
        if bounds:
            row += f"{statistics.median(bounds):.2f} | {median_and_spread(over_bound)} | "
        rows.append(row + f"{' / '.join(f'{max(rss[tool]):.0f}' for tool in tools)} MB |")
        if tests["npvae"]:
            accuracy.append((config, tests))
    print(f"end: {load_text()}")
    print()
    names = [NAMES[tool] for tool in tools]
    header = [f"{name} s/epoch" for name in names]
    header += [f"npvae / {NAMES[peer]}" for peer in options.peers]
    header += [] if options.no_bound else ["bound s/epoch", "npvae x bound"]
    header += [f"peak RSS {' / '.join(names)}"]
    print(f"| configuration | {' | '.join(header)} |")
    print(f"| --- |{' ---: |' * (len(header) - 1)} --- |")
    print("\n".join(rows))
    status = 0
    for config, tests in accuracy:
        listed = "; ".join(
            f"{tool} {', '.join(f'{value:.2f}' for value in tests[tool])}" for tool in tools
        )
        print(f"\n{config}: test loss after {options.epochs} epochs: {listed}")
        for peer in options.peers:
            gap = statistics.median(tests["npvae"]) - statistics.median(tests[peer])
            print(f"  gap to {peer} {gap:+.2f} nats")
            if options.accuracy and abs(gap) > 0.3:
                print(f"accuracy check FAILED: more than 0.3 nats from {NAMES[peer]}")
                status = 1
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    parser.add_argument(
        "--configs",
        default=",".join(DEFAULT_CONFIGS),
        help=f"comma-separated, of: {', '.join(CONFIGS)}",
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
        "--threads", type=int, default=os.cpu_count(), help="every tool (0: each tool's own choice)"
    )
    parser.add_argument(
        "--peers",
        nargs="+",
        metavar="PEER",
        help=f"the peers to run, of: {', '.join(PEERS)} (default: every one installed; "
        "one not installed is skipped, saying how to install it)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", action="store_true", help="also report each run's test loss")
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help="10 epochs of classic on all images, one run each; fail beyond 0.3 nats of a peer",
    )
    parser.add_argument("--no-bound", action="store_true", help="skip the matmul bound")
    parser.add_argument("--worker", choices=("npvae", *PEERS), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.accuracy:
        options.configs, options.runs, options.epochs = "classic", 1, 10
        options.limit, options.test = 0, True
    options.configs = options.configs.split(",")
    unknown = set(options.configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations {sorted(unknown)}; known: {', '.join(CONFIGS)}")
    if options.worker:
        worker = {"npvae": npvae_worker, "torch": torch_worker, "jax": jax_worker}[options.worker]
        print(json.dumps(worker(options, CONFIGS[options.configs[0]])))
        return 0
    asked = [peer for item in options.peers or PEERS for peer in item.split(",") if peer]
    unknown = set(asked) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; known: {', '.join(PEERS)}")
    options.peers = []
    for peer in dict.fromkeys(asked):
        if installed(peer):
            options.peers.append(peer)
        else:
            print(f"skipping {peer}: not installed ({INSTALL[peer]})")
    if options.accuracy and not options.peers:
        raise SystemExit("error: --accuracy needs a peer to compare with, and none is installed")
    return compare(options)


if __name__ == "__main__":
    raise SystemExit(main())
