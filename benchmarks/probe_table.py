"""A linear probe on the codes of the four autoencoders and the VAE, at one code size.

Trains each model (``python -m npvae.train``, one process each, ``--threads
1``), then fits a linear probe to the codes of its training set (``python -m
npvae.evaluate RUN --checkpoint last --probe``, which also fits the same probe
to the pixels), and prints a markdown table: model, the training command, the
probe's test accuracy on the codes, and a row for the raw pixels.

    python benchmarks/probe_table.py --data-dir ../shared/data/mnist
    python benchmarks/probe_table.py --data-dir ../shared/data/mnist --epochs 10 --code 32

Every model has the same code size (``--code``) and trains for the same
epochs with Adam's defaults; all but the contractive AE have one hidden layer
of ``--hidden`` units (the contractive AE's penalty is written for a one-layer
encoder).  Runs go under ``--out`` (default ``runs/probe_table``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from npvae.app import runfolder

#: Each model and the flags that make it: the penalties and noise keep the trainer's defaults.
MODELS = {
    "ae": [],
    "sparse-ae": [],
    "denoising-ae": [],
    "contractive-ae": ["--hidden", "none"],
    "vae": ["--ll-samples", "0"],  # the probe needs no log-likelihood
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder of MNIST's IDX files")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per model (10)")
    parser.add_argument("--code", type=int, default=32, help="code size of every model (32)")
    parser.add_argument("--hidden", type=int, default=400, help="hidden units (400)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--out", default="runs/probe_table", help="folder for the runs")
    return parser.parse_args(argv)


def run(command: list[str]) -> float:
    """Run ``command``, echoing it; its wall-clock seconds.  Stops the script if it fails."""
    print("$", shlex.join(command), flush=True)
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed with status {done.returncode}:\n{done.stderr}")
    return time.monotonic() - started


def train_command(model: str, args) -> list[str]:
    command = ["python", "-m", "npvae.train", "--model", model, "--dataset", "mnist"]
    command += ["--data-dir", args.data_dir, "--latent", str(args.code)]
    if "--hidden" not in MODELS[model]:
        command += ["--hidden", str(args.hidden)]
    command += [*MODELS[model], "--epochs", str(args.epochs), "--threads", "1", "--no-figures"]
    return command


def train_and_probe(model: str, args) -> dict:
    """Train ``model``, probe its last weights; the probe's record, with the commands."""
    out = Path(args.out) / model
    before = set(runfolder.find_runs(out)) if out.exists() else set()
    command = train_command(model, args)
    run([sys.executable, *command[1:], "--out", str(out)])
    [folder] = sorted(set(runfolder.find_runs(out)) - before)
    with open(folder / runfolder.METRICS_FILE) as metrics:
        train_seconds = sum(float(row["seconds"]) for row in csv.DictReader(metrics))
    probe = ["python", "-m", "npvae.evaluate", "RUN", "--checkpoint", "last", "--probe"]
    probe += ["--threads", "1"]
    probe_seconds = run([sys.executable, *probe[1:3], str(folder), *probe[4:]])
    evaluations = runfolder.read_evaluations(runfolder.evaluations_path(folder, folder))
    [record] = [value for key, value in evaluations.items() if " probe " in key]
    record.update(command=command, train_seconds=train_seconds, probe_seconds=probe_seconds)
    return record


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def table(records: list[dict]) -> str:
    """The markdown table: one row per model, then the pixels' row."""
    lines = [
        "| model | training command | probe test accuracy | (train) | training s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for record in records:
        codes = record["probe"]["codes"]
        lines.append(
            f"| {record['model'].split(' on ')[0]} | `{shlex.join(record['command'])}` "
            f"| {codes['test_accuracy']:.2%} | {codes['train_accuracy']:.2%} "
            f"| {record['train_seconds']:.0f} |"
        )
    pixels = {f"{r['probe']['pixels']['test_accuracy']:.4f}" for r in records}
    assert len(pixels) == 1, f"the pixels' probe differs between runs: {pixels}"
    row = records[0]["probe"]["pixels"]
    lines.append(
        f"| raw pixels (784, grey levels) | the same probe on the images "
        f"| {row['test_accuracy']:.2%} | {row['train_accuracy']:.2%} | |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before, started = os.getloadavg(), time.monotonic()
    records = [train_and_probe(model, args) for model in args.models]
    load_after = os.getloadavg()
    minutes = (time.monotonic() - started) / 60
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    probe = records[0]["probe"]
    print()
    print(
        f"{now}; {machine()}; {minutes:.1f} min in all; load average "
        f"{', '.join(f'{x:.2f}' for x in load_before)} before and "
        f"{', '.join(f'{x:.2f}' for x in load_after)} after"
    )
    print(
        f"probe: softmax regression on standardised features, {probe['codes']['steps']} steps "
        f"of Adam (lr {probe['lr']:g}, batch {probe['batch_size']}, L2 {probe['l2']:g}), "
        f"{probe['train_images']} training and {records[0]['n_test']} test images\n"
    )
    print(table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
