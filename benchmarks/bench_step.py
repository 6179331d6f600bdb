"""One training step against the matrix products it cannot avoid, and where the rest goes.

The road ahead asks for a training epoch close to the time the matrix products
alone need.  For one of ``compare_peers.py``'s configurations (``--config``,
default ``classic``: the VAE 784-400-20, ReLU, Bernoulli, batch 128, float32)
this times:

* ``matmuls``: the step's matrix products alone, on arrays of the step's shapes
  (``compare_peers.matmul_products``: every forward product, each weight's
  gradient, each input gradient but the first layer's; 14 for the classic VAE);
* ``loss + grads``: the model's ``loss`` with gradients;
* ``Adam``: ``Adam.step`` on those gradients;
* ``step``: both, as the trainer runs them.

Each is the median over interleaved blocks, so machine load falls on all
alike.  The gap between ``step`` and ``matmuls`` is what the elementwise
kernels, the copies and Python cost.

``--parts`` then says where that gap is, measured inside running steps: the
time spent in ``Linear.forward`` and ``Linear.backward`` (the products, the
bias additions and sums), in each of ``npvae.kernels``' functions, in the
noise draw and in ``Adam.step``, and the rest (NumPy and Python in the loss
itself), each as a share of the same steps.  A timer costs about 0.6 us per
call, so 10-20 us per step (a classic step makes 22 timed calls).  A layer's products run slower
inside the step than alone, where their arrays stay in cache, so
``Linear layers`` less ``matmuls`` is the bias work plus that difference.

    python benchmarks/bench_step.py
    python benchmarks/bench_step.py --config iwae-k5 --parts
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import time
from collections import defaultdict

import numpy as np
from compare_peers import CONFIGS, matmul_products, npvae_model

from npvae import kernels, layers
from npvae.app._threads import use_threads
from npvae.optim import Adam


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


class PartTimer:
    """Adds up the wall time spent in chosen functions, counting only outermost calls.

    :meth:`timing` replaces each function by a timed one while its block runs, and puts
    the originals back after.  A timed function called from inside another (a kernel
    inside ``Adam.step``) counts towards the outer one only.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._inside = False

    def _timed(self, function, part: str):
        def timed(*args, **kwargs):
            if self._inside:
                return function(*args, **kwargs)
            self._inside = True
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start
                self._inside = False

        return timed

    @contextlib.contextmanager
    def timing(self, targets: list[tuple[object, str, str]]):
        """Time ``owner.name`` as ``part`` for each ``(owner, name, part)`` in ``targets``."""
        originals = [(owner, name, owner.__dict__[name]) for owner, name, _ in targets]
        try:
            for owner, name, part in targets:
                setattr(owner, name, self._timed(owner.__dict__[name], part))
            yield self
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)


#: The part that holds the products: ``Linear.forward`` and ``Linear.backward``.
LINEAR = "Linear layers (products, biases)"


def _defining_class(cls: type, name: str) -> type:
    """The class in ``cls``'s method resolution order that defines ``name``."""
    return next(base for base in cls.__mro__ if name in base.__dict__)


def step_parts(model) -> list[tuple[object, str, str]]:
    """The ``(owner, name, part)`` of every function whose time ``--parts`` reports."""
    targets = [
        (layers.Linear, "forward", LINEAR),
        (layers.Linear, "backward", LINEAR),
        (_defining_class(Adam, "step"), "step", "Adam.step"),
        (_defining_class(type(model), "_noise"), "_noise", "noise draw"),
    ]
    for name, function in vars(kernels).items():
        public = not name.startswith("_") and not name.endswith("_ref")
        if public and inspect.isfunction(function) and function.__module__ == kernels.__name__:
            targets.append((kernels, name, f"kernels.{name}"))
    return targets


def print_parts(model, step, products, blocks: int, calls: int) -> None:
    """Time steps with :class:`PartTimer` on and print each part's share of them.

    ``blocks`` blocks of ``calls`` steps, each followed by ``calls`` calls of
    ``products`` (the step's products alone), so that both see the machine alike.
    """
    timer = PartTimer()
    total = alone = 0.0
    with timer.timing(step_parts(model)):
        step()  # warm-up through the wrappers
        timer.seconds.clear()
        for _ in range(blocks):
            start = time.perf_counter()
            for _ in range(calls):
                step()
            middle = time.perf_counter()
            for _ in range(calls):
                products()
            total += middle - start
            alone += time.perf_counter() - middle
    steps = blocks * calls
    rows = sorted(timer.seconds.items(), key=lambda item: -item[1])
    rows.append(("the rest: NumPy and Python in the loss", total - sum(timer.seconds.values())))
    linear = timer.seconds[LINEAR]
    print()
    print(
        f"Inside {steps} steps; the same products alone, timed between their blocks: "
        f"{alone / steps * 1e3:.2f} ms a step (Linear layers {linear / alone:.2f}x that)"
    )
    print()
    print("| part | ms per step | share of the step |")
    print("| --- | ---: | ---: |")
    for part, seconds in rows:
        print(f"| {part} | {seconds / steps * 1e3:.2f} | {seconds / total:.1%} |")
    print(f"| step | {total / steps * 1e3:.2f} | 100% |")


def settle_malloc_as_loading_does() -> None:
    """Leave glibc's malloc as a trainer's data loading leaves it.

    Freeing an array of a few tens of MB raises glibc's thresholds, after which it
    serves a step's MB-sized temporaries from memory it keeps.  The trainer and
    ``compare_peers.py``'s worker free such arrays while loading the data; a process
    that has not would map each temporary afresh and fault it in page by page, every
    step (about 1,000 faults a step at IWAE k = 5, ``benchmarks/README.md``, "Memory").
    """
    test_set = np.empty((10_000, 784), np.float32)  # 31 MB, the size of a float test set
    del test_set


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="classic")
    parser.add_argument("--batch-size", type=int, help="default: the configuration's")
    parser.add_argument("--blocks", type=int, default=15, help="timed blocks per row")
    parser.add_argument("--calls", type=int, default=20, help="calls per block")
    parser.add_argument("--threads", default="auto", help="as python -m npvae.train's --threads")
    parser.add_argument("--parts", action="store_true", help="also where a step's time goes")
    options = parser.parse_args(argv)
    threads, reason = use_threads(options.threads)
    settle_malloc_as_loading_does()
    spec = dict(CONFIGS[options.config])
    spec["batch"] = options.batch_size or spec["batch"]

    rng = np.random.default_rng(0)
    model = npvae_model(spec, seed=0)
    optimizer = Adam(
        model.params, lr=1e-3, flat=(model.flat_params, model.flat_grads)
    )  # as the trainer
    x = (rng.random((spec["batch"], 784)) < 0.3).astype(np.float32)

    def loss_and_grads():
        model.loss(x, rng)

    def adam():
        optimizer.step()

    def step():
        model.loss(x, rng)
        optimizer.step()

    funcs = {
        "matmuls": matmul_products(spec),
        "loss + grads": loss_and_grads,
        "Adam": adam,
        "step": step,
    }
    seconds = median_block_seconds(funcs, options.blocks, options.calls)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    steps_per_epoch = -(-60_000 // spec["batch"])
    print(
        f"{options.config}: {model!r}, batch {spec['batch']}; {threads} threads ({reason}); "
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
    if options.parts:
        print_parts(model, step, funcs["matmuls"], options.blocks, options.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
