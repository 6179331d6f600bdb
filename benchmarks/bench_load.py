"""Training on a busy machine: seconds per epoch beside other work, against a quiet machine.

Four cases, for npvae and for PyTorch, each training in a process of its own
(``compare_peers.py``'s children, the classic VAE 784-400-20, batch 128):

* ``quiet``: nothing else of ours running;
* ``busy``: one single-threaded Python loop (``while True: pass``) beside it;
* ``mixed``: a process compressing data with gzip in a loop that also starts a
  short Python process every 2 seconds (a build, an editor, a test run);
* ``two``: two trainings of the same tool at once (the worse of the two is shown).

npvae runs with its own choice of threads (``--threads auto``, the default of
``python -m npvae.train``), PyTorch with its own (one per core).  A training's figure
is its median epoch of epochs 2 and later.  ``--rounds N`` goes through every case N
times; a case's figure is then the median over rounds (the spread in brackets), and
``x quiet`` the median over rounds of the case's figure divided by the same tool's
quiet figure of the same round, so that the machine's own drift between rounds
cancels.  A subset of MNIST (``--limit``) keeps a run to minutes: PyTorch under the
mixed load can be tens of times slower than quiet.

    python benchmarks/bench_load.py --data-dir ../shared/data/mnist --limit 10000

The machine's own load (other people's work) is printed as the load average
before and after each case; record it beside the table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_peers  # noqa: E402  (the training children)

CASES = ("quiet", "busy", "mixed", "two")

BUSY_LOOP = "while True: pass"


def mixed_load() -> None:
    """Compress in a loop; every 2 s start a short Python process (runs until killed)."""
    rng_bytes = os.urandom(1 << 18)
    data = (rng_bytes + bytes(1 << 18)) * 4  # half random, half zeros: gzip works at it
    last = 0.0
    children = []
    while True:
        gzip.compress(data, compresslevel=6)
        if time.monotonic() - last > 2.0:
            last = time.monotonic()
            script = "import json, sys; sum(i * i for i in range(300000))"
            children.append(subprocess.Popen([sys.executable, "-c", script]))
            children = [child for child in children if child.poll() is None]


def start_load(case: str) -> list[subprocess.Popen]:
    if case == "busy":
        return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP])]
    if case == "mixed":
        return [subprocess.Popen([sys.executable, __file__, "--mixed-load"])]
    return []


def stop_load(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def child_command(tool: str, options) -> tuple[list[str], dict]:
    command = [sys.executable, compare_peers.__file__, "--worker", tool, "--configs", "classic"]
    command += ["--epochs", str(options.epochs), "--limit", str(options.limit)]
    command += ["--data-dir", options.data_dir, "--seed", "0"]
    command += ["--threads", "0", "--no-bound"]  # each tool's own choice of threads
    env = dict(os.environ)
    if tool == "torch":
        for name in compare_peers.NPVAE_ONLY_ENV:
            env.pop(name, None)
    return command, env


def train_once(tool: str, case: str, options) -> tuple[float, list]:
    """Seconds per epoch (the worse child's, for ``two``) of one training under ``case``,
    and the thread counts the children chose (npvae reports its own)."""
    load = start_load(case)
    try:
        time.sleep(1.0 if load else 0.0)  # let the load get going
        command, env = child_command(tool, options)
        copies = 2 if case == "two" else 1
        children = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(copies)
        ]
        figures, threads = [], []
        for child in children:
            out, _ = child.communicate()
            if child.returncode:
                raise SystemExit(f"error: a {tool} training failed under the {case} load")
            result = json.loads(out.strip().splitlines()[-1])
            figures.append(compare_peers.epoch_figure(result["seconds"]))
            threads.append(result.get("threads", "default"))
        return max(figures), threads
    finally:
        stop_load(load)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    parser.add_argument("--limit", type=int, default=10000, help="training images (0: all)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training")
    parser.add_argument("--cases", default=",".join(CASES), help=f"of: {', '.join(CASES)}")
    parser.add_argument("--tools", default="npvae,torch")
    parser.add_argument("--rounds", type=int, default=1, help="times through every case")
    parser.add_argument("--mixed-load", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.mixed_load:
        mixed_load()
    cases, tools = options.cases.split(","), options.tools.split(",")
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")
    print(
        f"classic VAE, {options.limit or 60000} training images, {options.epochs} epochs "
        f"per training, {options.rounds} round(s); {os.cpu_count()} cores"
    )
    seconds: dict[tuple[str, str], list[float]] = {}
    for round_ in range(options.rounds):
        for case in cases:
            for tool in tools:  # alternate the tools within each case
                before = compare_peers.load_text()
                figure, threads = train_once(tool, case, options)
                seconds.setdefault((tool, case), []).append(figure)
                print(
                    f"  round {round_ + 1} {case:>5} {tool:>5}: {figure:.2f} s/epoch, threads "
                    f"{'/'.join(map(str, threads))} ({before} -> {compare_peers.load_text()})",
                    flush=True,
                )
    print()
    header = "| case |" + "".join(f" {tool} s/epoch | x quiet |" for tool in tools)
    print(header)
    print("| --- |" + " ---: | ---: |" * len(tools))
    for case in cases:
        cells = ""
        for tool in tools:
            figures, quiet = seconds[tool, case], seconds.get((tool, "quiet"))
            cells += f" {compare_peers.median_and_spread(figures)} |"
            if quiet:  # each round's figure against the same round's quiet one
                ratios = [value / base for value, base in zip(figures, quiet)]
                cells += f" {compare_peers.median_and_spread(ratios)} |"
            else:
                cells += " |"
        print(f"| {case} |{cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
