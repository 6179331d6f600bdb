"""Is a two-thread training run steady?  Epoch seconds of whole runs, each in its own process.

On a 2-core VM the host places the two cores so that they share a last-level
cache, or so that they do not, and moves them every few seconds.  In the
second placement a step with two BLAS threads ran 1.9-2.2x slower (slower than
one thread), and ``python -m npvae.train --threads auto`` now keeps its steps
on the faster of two threads and one (``npvae/app/_tuner.py``).  This script runs
the trainer as a user would (classic VAE, all of MNIST, ``--epochs E``), with
``--threads 2``, ``1`` and ``auto`` in rotating order, and reads each epoch's
training seconds from the run's ``metrics.csv``.  Between runs it measures the
placement: the round trip of a cache line between the two cores
(``cache_latency.c``, compiled with ``cc`` if there is one).

    python benchmarks/bench_steady.py                      # 4 rounds of 3 variants, 4 epochs
    python benchmarks/bench_steady.py --rounds 10 --variants auto

The table: per variant, the epochs after the first of every run (the first
compiles and warms up), their median, fastest and slowest, and slowest/fastest.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
VARIANTS = ("2", "1", "auto")


def cache_latency(binary: Path | None) -> str:
    """The cores' cache-line round trips now (ns), or "" without a compiler."""
    if binary is None:
        return ""
    done = subprocess.run([str(binary), "3"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def compile_latency_probe(folder: Path) -> Path | None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    binary = folder / "cache_latency"
    command = [compiler, "-O2", "-pthread", "-o", str(binary), str(HERE / "cache_latency.c")]
    done = subprocess.run(command, capture_output=True, check=False)
    return binary if done.returncode == 0 else None


def train(threads: str, options, out: Path) -> list[float]:
    """Epoch seconds of one ``python -m npvae.train`` run."""
    command = [sys.executable, "-m", "npvae.train", "--dataset", "mnist", "--data-dir",
               options.data_dir, "--epochs", str(options.epochs), "--no-figures",
               "--threads", threads, "--out", str(out), "--seed", "0"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"--threads {threads} failed: {done.stderr.strip()}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("run folder: "))
    with open(Path(line.split(": ", 1)[1]) / "metrics.csv", newline="") as file:
        return [float(row["seconds"]) for row in csv.DictReader(file)]


def default_data_dir() -> str | None:
    for candidate in (os.environ.get("NPVAE_DATA"), HERE.parent.parent / "shared/data/mnist"):
        if candidate and Path(candidate, "train-images-idx3-ubyte.gz").is_file():
            return str(candidate)
    return None


def main(argv=None) -> int:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--data-dir", default=default_data_dir(), help="MNIST's folder")
    options = parser.parse_args(argv)
    if options.data_dir is None:
        parser.error("needs MNIST: give --data-dir DIR")
    print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
    epochs = {variant: [] for variant in options.variants}
    with tempfile.TemporaryDirectory() as scratch:
        probe = compile_latency_probe(Path(scratch))
        for round_ in range(options.rounds):
            for shift in range(len(options.variants)):  # rotating order
                variant = options.variants[(round_ + shift) % len(options.variants)]
                before = cache_latency(probe)
                seconds = train(variant, options, Path(scratch) / "runs")
                after = cache_latency(probe)
                epochs[variant] += seconds[1:]
                shown = " ".join(f"{s:.2f}" for s in seconds)
                trips = f"cache round trip before {before} ns, after {after} ns"
                print(f"round {round_ + 1} --threads {variant:<4} s/epoch {shown}   {trips}")
    print()
    print("| --threads | epochs | median s | fastest | slowest | slowest/fastest |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for variant, seconds in epochs.items():
        s = np.array(seconds)
        print(f"| {variant} | {len(s)} | {np.median(s):.2f} | {s.min():.2f} | {s.max():.2f} "
              f"| {s.max() / s.min():.2f} |")  # fmt: skip
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
