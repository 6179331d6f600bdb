"""Time every compiled kernel in npvae.kernels against its NumPy reference.

Run from the repository root::

    python benchmarks/bench_kernels.py            # full table, about half a minute
    python benchmarks/bench_kernels.py --quick    # fewer repeats, float32 only

Shapes are MNIST's: a batch of 128 images of 784 pixels for the Bernoulli
likelihood and the binarisation, 5000 importance samples for log-sum-exp, a
784 x 400 weight matrix for Adam, a 400-unit hidden layer for the
activations, and the latent codes of the classic VAE (128 x 20) and of the IWAE
paper's net at k = 5 (500 x 50) for the KL and the sampler.  Each row is the median time
per call over interleaved blocks of calls, after a warm-up call that compiles
(or loads from numba's cache).  The compiled column times the public function,
argument checks included, since that is what callers pay.

The last lines time a fresh Python process: importing ``npvae.kernels`` and
the first call of every compiled kernel, with numba's on-disk cache warm (the
script runs the process twice and reports the second).

Paste the printed table into ``benchmarks/README.md`` with the date and a
machine note.  A kernel whose speedup drops below 1 has lost its place: its
public function should become the checked NumPy form.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numba
import numpy as np

from npvae import _jit, kernels


def time_per_call(func, args, repeats: int, block_seconds: float = 2e-3) -> float:
    """Median seconds per call of ``func(*args)`` over ``repeats`` blocks of calls."""
    func(*args)
    start = time.perf_counter()
    func(*args)
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(block_seconds / once))
    blocks = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            func(*args)
        blocks.append((time.perf_counter() - start) / number)
    return statistics.median(blocks)


def compare(ref, fast, args, repeats: int) -> tuple[float, float]:
    """Median microseconds per call of ``ref`` and ``fast``, timed in alternation.

    Alternating short runs of each spreads any slow spell of a shared machine
    over both columns instead of charging it to one.
    """
    ref_times, fast_times = [], []
    for _ in range(repeats):
        ref_times.append(time_per_call(ref, args, 1))
        fast_times.append(time_per_call(fast, args, 1))
    return statistics.median(ref_times) * 1e6, statistics.median(fast_times) * 1e6


def cases(dtype, rng):
    """``(name, shape, ref, fast, args)`` for every compiled kernel at MNIST shapes."""

    def normal(shape, scale=1.0):
        return (rng.normal(size=shape) * scale).astype(dtype)

    batch = (128, 784)
    pixels = (rng.random(batch) < 0.3).astype(dtype)
    logits = normal(batch, 3.0)
    yield (
        "bernoulli_log_prob",
        batch,
        kernels.bernoulli_log_prob_ref,
        kernels.bernoulli_log_prob,
        (pixels, logits),
    )
    yield (
        "bernoulli_log_prob_and_grad",
        batch,
        kernels.bernoulli_log_prob_and_grad_ref,
        kernels.bernoulli_log_prob_and_grad,
        (pixels, logits),
    )
    for weights in ((100, 5000), (128, 5000)):
        log_weights = normal(weights, 3.0)
        yield ("logsumexp", weights, kernels.logsumexp_ref, kernels.logsumexp, (log_weights,))
    param_shape = (784, 400)
    adam_args = (
        normal(param_shape, 0.05),
        normal(param_shape),
        np.zeros(param_shape, dtype),
        np.zeros(param_shape, dtype),
        1e-3,
        0.9,
        0.999,
        1e-8,
        10,
    )
    yield ("adam_update", param_shape, kernels.adam_update_ref, kernels.adam_update, adam_args)
    flat_grads = normal((1, 652_824))  # the classic VAE's gradients, as the NaN guard sees them
    yield (
        "all_finite",
        flat_grads.shape,
        kernels.all_finite_ref,
        kernels.all_finite,
        (flat_grads,),
    )
    hidden = (128, 400)
    pre_activation = normal(hidden, 2.0)
    relu_out = np.maximum(pre_activation, 0)
    for name in ("softplus", "sigmoid", "elu", "tanh", "relu_forward"):
        yield (
            name,
            hidden,
            getattr(kernels, name + "_ref"),
            getattr(kernels, name),
            (pre_activation,),
        )
    yield (
        "relu_backward",
        hidden,
        kernels.relu_backward_ref,
        kernels.relu_backward,
        (normal(hidden), relu_out),
    )
    tanh_out = np.tanh(pre_activation)
    yield (
        "tanh_backward",
        hidden,
        kernels.tanh_backward_ref,
        kernels.tanh_backward,
        (normal(hidden), tanh_out),
    )
    # What a layer would write without the kernel (it lets a NaN in out pass as 0).
    yield (
        "relu_backward vs dout*(out>0)",
        hidden,
        lambda dout, out: dout * (out > 0),
        kernels.relu_backward,
        (normal(hidden), relu_out),
    )
    for latent in ((128, 20), (500, 50)):
        mu, log_var, eps = normal(latent), normal(latent, 2.0), normal(latent)
        # In float64 the KL functions run their reference (kernels.COMPILED_KL_DTYPES): no row.
        for name in ("gaussian_kl_per_dim", "gaussian_kl_grad", "gaussian_kl"):
            ref, fast = getattr(kernels, name + "_ref"), getattr(kernels, name)
            if np.dtype(dtype) in kernels.COMPILED_KL_DTYPES:
                yield (name, latent, ref, fast, (mu, log_var))
        for name in ("reparameterize", "reparameterize_backward"):
            ref, fast = getattr(kernels, name + "_ref"), getattr(kernels, name)
            yield (name, latent, ref, fast, (mu, log_var, eps))
    grey = rng.integers(0, 256, batch).astype(np.uint8)
    yield (
        "binarize (uint8 in)",
        batch,
        kernels.binarize_ref,
        kernels.binarize,
        (grey, rng.random(batch).astype(dtype)),
    )


FRESH_PROCESS = """
import json, time
start = time.perf_counter()
import numpy as np
from npvae import kernels
imported = time.perf_counter()
rng = np.random.default_rng(0)
a = rng.normal(size=(4, 6)).astype(np.float32)
b = rng.random((4, 6)).astype(np.float32)
calls = {
    "bernoulli_log_prob": lambda: kernels.bernoulli_log_prob(b, a),
    "bernoulli_log_prob_and_grad": lambda: kernels.bernoulli_log_prob_and_grad(b, a),
    "logsumexp": lambda: kernels.logsumexp(a),
    "adam_update": lambda: kernels.adam_update(a.copy(), a, b.copy(), b.copy(),
                                               1e-3, 0.9, 0.999, 1e-8, 1),
    "all_finite": lambda: kernels.all_finite(a),
    "softplus": lambda: kernels.softplus(a),
    "sigmoid": lambda: kernels.sigmoid(a),
    "elu": lambda: kernels.elu(a),
    "tanh": lambda: kernels.tanh(a),
    "tanh_backward": lambda: kernels.tanh_backward(a, b),
    "relu_forward": lambda: kernels.relu_forward(a),
    "relu_backward": lambda: kernels.relu_backward(a, b),
    "gaussian_kl_per_dim": lambda: kernels.gaussian_kl_per_dim(a, b),
    "gaussian_kl_grad": lambda: kernels.gaussian_kl_grad(a, b),
    "reparameterize": lambda: kernels.reparameterize(a, b, a),
    "reparameterize_backward": lambda: kernels.reparameterize_backward(a, b, a),
    "binarize": lambda: kernels.binarize((b * 255).astype(np.uint8), b),
}
first_call = []
for name, call in calls.items():
    t = time.perf_counter()
    call()
    first_call.append((name, time.perf_counter() - t))
print(json.dumps({"import": imported - start, "first_call": first_call}))
"""


def fresh_process_times() -> dict:
    """Import and first-call times of a new interpreter whose numba cache is warm."""
    command = [sys.executable, "-c", FRESH_PROCESS]
    subprocess.run(command, check=True, capture_output=True)  # fills the cache if cold
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def machine_note() -> str:
    """One line: CPU, cores, versions, load average."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"numpy {np.__version__}, numba {numba.__version__} (serial kernels); "
        f"load average {load}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed blocks per row")
    parser.add_argument("--quick", action="store_true", help="5 repeats, float32 only")
    options = parser.parse_args(argv)
    if not _jit.USE_NUMBA:
        print("numba is off (NPVAE_USE_NUMBA=0): nothing compiled to time.", file=sys.stderr)
        return 2
    repeats = 5 if options.quick else options.repeats
    dtypes = (np.float32,) if options.quick else (np.float32, np.float64)

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    rows = []
    for dtype in dtypes:
        for name, shape, ref, fast, args in cases(dtype, np.random.default_rng(0)):
            ref_us, fast_us = compare(ref, fast, args, repeats)
            rows.append((name, shape, np.dtype(dtype).name, ref_us, fast_us))

    print(f"{datetime.date.today().isoformat()}: {machine_note()}")
    print()
    print("| kernel | shape | dtype | numpy us | numba us | speedup |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for name, shape, dtype_name, ref_us, fast_us in rows:
        flag = "" if fast_us < ref_us else " SLOWER"
        print(
            f"| {name} | {shape[0]}x{shape[1]} | {dtype_name} | {ref_us:.1f} | "
            f"{fast_us:.1f} | {ref_us / fast_us:.2f}x{flag} |"
        )

    if max(load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0) > 1.0:
        print()
        print("Warning: load average above 1, other processes shared the cores, so these")
        print("numbers are not the machine's; rerun when it is idle.")

    fresh = fresh_process_times()
    (first_name, first_seconds), *others = fresh["first_call"]
    print()
    print("Fresh process, numba cache warm (float32):")
    print(f"- import npvae.kernels, numpy and numba included: {fresh['import'] * 1e3:.0f} ms")
    print(
        f"- first call of the first kernel ({first_name}), numba's one-time start-up "
        f"included: {first_seconds * 1e3:.0f} ms"
    )
    print(
        f"- first calls of the other {len(others)} kernels: "
        f"{sum(seconds for _, seconds in others) * 1e3:.0f} ms in total, "
        f"slowest {max(seconds for _, seconds in others) * 1e3:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
