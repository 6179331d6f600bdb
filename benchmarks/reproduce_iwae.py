"""Reproduce a row of the IWAE paper's Table 1: train a config, evaluate it as the paper does.

Burda, Grosse & Salakhutdinov (2016) report MNIST test NLL from k = 5000
importance samples on all 10,000 test images: 86.76 nats for the VAE, 85.54
for the IWAE with k = 5 and 84.78 with k = 50 (one stochastic layer,
``configs/iwae-paper-*.toml``).  This script

1. trains (``python -m npvae.train --config CONFIG``), or goes on training a
   run (``--resume RUN``), for at most ``--minutes`` more of training if given
   (metrics.csv's per-epoch seconds, plus the time since its last line):
   then it stops the trainer with SIGINT, which writes a checkpoint, so the
   same command with ``--resume`` continues it later.  Flags this script does
   not know go to the trainer (``--threads 1 --schedule iwae-fit --epochs 820``).
   Every ``--snapshot-minutes`` of training it copies the last checkpoint to
   ``RUN/snapshots/``, and ``--curve RUN`` later evaluates those copies: the
   curve of test NLL against training minutes;
2. evaluates the last checkpoint (``python -m npvae.evaluate RUN --checkpoint
   last --k 5000``);
3. appends a row to the results table in ``benchmarks/iwae_paper.md`` (unless
   ``--no-record``): model, k, epochs and steps, training minutes (the sum
   of ``metrics.csv``'s per-epoch seconds, which leaves out an unfinished
   epoch; then this invocation's wall-clock minutes), test NLL ± standard error, the test
   ELBO, active units, the paper's figure, the load average, and the exact
   commands.  Every run gets its row, the ones that fall short too.

    python benchmarks/reproduce_iwae.py configs/iwae-paper-vae.toml \\
        --data-dir ../shared/data/mnist --minutes 60
    python benchmarks/reproduce_iwae.py --resume runs/reproduce/20261202-...-vae \\
        --data-dir ../shared/data/mnist --minutes 60
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from npvae.app import runfolder
from npvae.app.checkpoint import load_checkpoint
from npvae.validate import K_SAMPLE

RESULTS = Path(__file__).resolve().parent / "iwae_paper.md"
TABLE_HEADING = "## Reproducing the IWAE paper (reproduce_iwae.py)"
PAPER = {
    # The VAE's k is the samples its ELBO averages (``samples``, the paper's "VAE, k").
    ("vae", 1): 86.76,
    ("vae", 5): 86.47,
    ("vae", 50): 86.35,
    ("iwae", 1): 86.76,
    ("iwae", 5): 85.54,
    ("iwae", 50): 84.78,
    # Two stochastic layers: k = 1 is the paper's two-layer VAE.
    ("iwae2", 1): 85.33,
    ("iwae2", 5): 83.89,
    ("iwae2", 50): 82.90,
    # The two-layer model trained on the mean of k one-sample ELBOs (objective "vae").
    ("iwae2-vae", 1): 85.33,
    ("iwae2-vae", 5): 85.01,
    ("iwae2-vae", 50): 84.78,
}


def cell(config: dict) -> tuple[str, int]:
    """A run's cell of the paper's table from its config.json: ``("iwae2-vae", 5)`` for the
    two-layer model trained on the mean of 5 one-sample ELBOs."""
    model = config["model"]
    if model == "iwae2" and config.get("objective") == "vae":
        model = "iwae2-vae"
    k = config["k"] if config["model"] in K_SAMPLE else config.get("samples") or 1
    return model, k


def train(args, trainer_flags: list[str]) -> Path:
    """Run the trainer (for at most ``args.minutes`` of training); returns the run folder.

    Every ``args.snapshot_minutes`` of training it copies the last checkpoint into
    ``RUN/snapshots/`` for the curve of test NLL against training minutes.
    """
    out = Path(args.out)
    before = set(runfolder.find_runs(out))
    command = [sys.executable, "-m", "npvae.train"]
    if args.resume:
        command += ["--resume", args.resume]
    else:
        command += ["--config", args.config, "--out", str(out)]
        if args.data_dir:
            command += ["--data-dir", args.data_dir]
    command += trainer_flags
    print("$", shlex.join(command), flush=True)
    started, started_at = time.monotonic(), time.time()
    trainer = subprocess.Popen(command)
    run = Path(args.resume) if args.resume else None
    # The budget is this invocation's: a resumed run's earlier epochs do not count.
    spent = training_minutes(run) if run is not None else 0.0
    stopping, next_snapshot = False, args.snapshot_minutes
    while trainer.poll() is None:
        time.sleep(2)
        if run is None:
            new = sorted(set(runfolder.find_runs(out)) - before)
            run = new[0] if new else None
        if run is None or not (run / runfolder.METRICS_FILE).exists():
            continue
        minutes = training_minutes(run, running_since=started_at)
        if args.snapshot_minutes and minutes >= next_snapshot:
            snapshot(run)
            next_snapshot = (minutes // args.snapshot_minutes + 1) * args.snapshot_minutes
        if args.minutes and minutes - spent >= args.minutes and not stopping:
            trainer.send_signal(signal.SIGINT)  # a checkpoint, then exit 130
            stopping = True
    if trainer.returncode not in (0, 130):
        raise SystemExit(f"training ended with status {trainer.returncode}")
    args.wall_minutes = (time.monotonic() - started) / 60
    if run is None:
        [run] = sorted(set(runfolder.find_runs(out)) - before)
    if args.snapshot_minutes:
        snapshot(run)
    return run


def snapshot(run: Path) -> None:
    """Copy ``checkpoints/last.npz`` to ``snapshots/epoch-NNNN.npz``, named by the epochs
    the copy itself has finished (the trainer writes a metrics line before the checkpoint
    of its epoch); one stopped in mid-epoch is not kept.  The checkpoint is replaced
    atomically, so a copy is one whole version."""
    last = runfolder.checkpoint_path(run, "last")
    if not last.exists():
        return
    folder = run / runfolder.SNAPSHOTS
    folder.mkdir(exist_ok=True)
    copy = folder / "copying.npz"
    shutil.copyfile(last, copy)
    saved = load_checkpoint(copy)
    target = folder / f"epoch-{saved.epoch:04d}.npz"
    # Only whole epochs: the curve gives each its training minutes from metrics.csv.
    if saved.epoch == 0 or "partial" in saved.extra or target.exists():
        copy.unlink()
    else:
        copy.replace(target)


def evaluate(run: Path, args) -> dict:
    command = [sys.executable, "-m", "npvae.evaluate", str(run), "--checkpoint", "last"]
    command += ["--k", str(args.k), "--n-test", str(args.n_test)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, check=True)
    evaluations = runfolder.read_evaluations(runfolder.evaluations_path(run, run))
    return max(evaluations.values(), key=lambda record: (record["epoch"], record["n_test"]))


def training_minutes(run: Path, *, running_since: float | None = None) -> float:
    """The sum of the finished epochs' training seconds in metrics.csv, in minutes.

    ``running_since`` (a ``time.time()``, when the trainer started): add the time since
    metrics.csv was last written, or since then if later, an upper bound on the
    unfinished epoch's training (it holds that epoch's evaluation and saves too).
    """
    seconds = sum(float(row["seconds"]) for row in runfolder.read_metrics(run))
    if running_since is not None:
        last = max((run / runfolder.METRICS_FILE).stat().st_mtime, running_since)
        seconds += max(0.0, time.time() - last)
    return seconds / 60


def row(run: Path, record: dict, args, command: str) -> str:
    config = runfolder.read_config(run)
    model, k = cell(config)
    paper = PAPER.get((model, k))
    ll = record["log_likelihood"]
    units = record["active_units"]
    cells = [
        time.strftime("%Y-%m-%d"),
        f"{model.upper()} k={k}",
        f"{record['epoch']} of {config['epochs']} ({record['step']} steps)",
        f"{training_minutes(run):.0f} ({args.wall_minutes:.0f})",
        f"{-ll['nats']:.2f} ± {ll['standard_error']:.2f}",
        f"{-record['test']['elbo']:.2f}",
        f"{units['count']} of {units['of']}",
        "" if paper is None else f"{paper:.2f}",
        f"{os.getloadavg()[0]:.1f}",
        f"`{command}` at {checkout()}",
    ]
    return "| " + " | ".join(cells) + " |"


def checkout() -> str:
    """The commit this script runs from, and whether its checkout has been edited since."""
    here = Path(__file__).resolve().parent

    def git(*words: str) -> str:
        done = subprocess.run(["git", "-C", str(here), *words], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "an unknown commit"
    return commit + (" (edited)" if git("status", "--porcelain", "--untracked-files=no") else "")


TABLE_INTRO = """\
Test NLL from k = 5000 importance samples on all 10,000 MNIST test images (binarised once),
by `python -m npvae.evaluate`. Training minutes: the sum of the finished epochs' times in
metrics.csv, then in brackets this invocation's wall-clock minutes. −ELBO: the one-sample
test ELBO, for the IWAE too. Load: the 1-minute load average at the end. Every run has its
row, the ones that fell short too.

| date | model | epochs | train min | test NLL | −ELBO | active | paper | load | command |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
"""


def record_row(line: str) -> None:
    """Add ``line`` under the last row of the results table (made, at the end, if absent)."""
    lines = RESULTS.read_text().rstrip("\n").split("\n")
    if TABLE_HEADING not in lines:
        lines += ["", TABLE_HEADING, "", *TABLE_INTRO.rstrip("\n").split("\n")]
    at = lines.index(TABLE_HEADING) + 1
    while at < len(lines) and not lines[at].startswith("|"):
        at += 1  # the introduction, down to the table
    while at < len(lines) and lines[at].startswith("|"):
        at += 1  # the table, down to its last row
    lines.insert(at, line)
    RESULTS.write_text("\n".join(lines) + "\n")


def curve(run: Path, args) -> str:
    """Evaluate ``RUN/snapshots/*.npz``: a markdown table of test NLL against training minutes."""
    rows = {int(row["epoch"]): row for row in runfolder.read_metrics(run)}
    minutes, total = {}, 0.0
    for epoch in sorted(rows):
        total += float(rows[epoch]["seconds"])
        minutes[epoch] = total / 60
    out = run / runfolder.SNAPSHOTS / runfolder.EVALUATIONS
    lines = [
        f"Test NLL of {run.name}'s snapshots: k = {args.k}, the first {args.n_test or 'all'} "
        "test images (binarised once, as in training's evaluation)",
        "",
        "| train min | epoch | lr | test NLL | −ELBO | active |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path in sorted((run / runfolder.SNAPSHOTS).glob("epoch-*.npz")):
        command = [sys.executable, "-m", "npvae.evaluate", str(path), "--k", str(args.k)]
        command += ["--n-test", str(args.n_test), "--out", str(out)]
        if args.data_dir:
            command += ["--data-dir", args.data_dir]
        print("$", shlex.join(command), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        evaluations = runfolder.read_evaluations(out)
        epoch = int(path.stem.split("-")[1])
        record = [
            r
            for r in evaluations.values()
            if r["epoch"] == epoch and r["log_likelihood"]["k"] == args.k
        ][-1]
        ll = record["log_likelihood"]
        lines.append(
            f"| {minutes[epoch]:.1f} | {epoch} | {float(rows[epoch]['lr']):.3g} "
            f"| {-ll['nats']:.2f} ± {ll['standard_error']:.2f} | {-record['test']['elbo']:.2f} "
            f"| {record['active_units']['count']} |"
        )
    return "\n".join(lines)


def describe(run: Path) -> str:
    """A run's model, batch and schedule, from its config.json: "IWAE k=5, b100, exponential
    2e-3 to 2e-4 over 400"."""
    config = runfolder.read_config(run)
    model, k = cell(config)
    name = model.upper()
    if config["model"] in K_SAMPLE or k > 1:  # a VAE's k: the samples its ELBO averages
        name += f" k={k}"
    lr, epochs, schedule = config["lr"], config["epochs"], config["schedule"]
    if schedule == "exponential":
        last = lr * config["lr_gamma"] ** (epochs - 1)
        schedule = f"exponential {lr:.2g} to {last:.2g}"
    elif schedule == "constant":
        schedule = f"constant {lr:.2g}"
    seed = f", seed {config['seed']}" if config.get("seed") else ""
    return f"{name}, b{config['batch_size']}, {schedule}, {epochs} epochs{seed}"


def bounds(runs: list[Path], every: float) -> str:
    """The test loss training reported (metrics.csv's ``test_loss``: the one-sample
    −ELBO, or the IWAE's −L_k, on the whole test set) at every ``every`` training
    minutes, a column per run: the cheap curve, with no evaluation."""
    columns, marks = [], set()
    for run in runs:
        at, total = {}, 0.0
        for line in runfolder.read_metrics(run):
            total += float(line["seconds"]) / 60
            mark = int(total / every + 0.05) * every  # an epoch ending just short counts
            at.setdefault(mark, f"{float(line['test_loss']):.2f} ({line['epoch']})")
        at["last"] = f"{float(line['test_loss']):.2f} ({line['epoch']}, {total:.1f} min)"
        columns.append(at)
        marks.update(mark for mark in at if mark != "last" and mark > 0)
    header = ["train min", *(describe(run) for run in runs)]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---:"] * len(header)) + " |"]
    for mark in [*sorted(marks), "last"]:
        cells = [f"{mark:g}" if mark != "last" else "last (epoch, min)"]
        cells += [column.get(mark, "") for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The script's settings, and the flags it passes on to the trainer.

    The config, if any, comes first: after it, a word that is not this script's is the
    trainer's, a flag's value included (``--threads 1``), so a value is never taken for
    the config, with ``--resume`` or without.
    """
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        usage="%(prog)s [CONFIG | --resume RUN | --curve RUN | --bounds RUN ...] [options] "
        "[trainer flags]",
        epilog="CONFIG: a TOML config (configs/iwae-paper-*.toml), always the first argument.",
    )
    parser.add_argument("--resume", help="a run folder to go on training instead")
    parser.add_argument(
        "--curve", metavar="RUN", help="evaluate RUN's snapshots instead (with --k, --n-test)"
    )
    parser.add_argument(
        "--bounds",
        metavar="RUN",
        nargs="+",
        help="print the runs' test losses at every --snapshot-minutes of training instead",
    )
    parser.add_argument("--data-dir", help="MNIST's folder")
    parser.add_argument(
        "--minutes",
        type=float,
        default=0,
        help="train for at most this many more minutes (0: no budget)",
    )
    parser.add_argument(
        "--snapshot-minutes",
        type=float,
        default=10,
        help="copy the last checkpoint to RUN/snapshots every this many training minutes",
    )
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=0, help="test images (0: all)")
    parser.add_argument("--out", default="runs/reproduce")
    parser.add_argument(
        "--no-record", action="store_true", help="do not touch benchmarks/iwae_paper.md"
    )
    config = argv[0] if argv and not argv[0].startswith("-") else None
    args, trainer_flags = parser.parse_known_args(argv[1:] if config else argv)
    args.config = config
    args.error = parser.error
    return args, trainer_flags


def check_runs(args) -> None:
    """Refuse, in one line, a --resume, --curve or --bounds folder that is not a run."""
    given = [("--resume", args.resume), ("--curve", args.curve)]
    given += [("--bounds", run) for run in args.bounds or []]
    for flag, run in given:
        if run is None:
            continue
        if not Path(run).is_dir():
            args.error(f"{flag} {run}: no such folder; give a run folder (RUN/config.json)")
        needed = (runfolder.CONFIG, runfolder.METRICS_FILE)
        missing = [name for name in needed if not Path(run, name).is_file()]
        if missing:
            args.error(f"{flag} {run}: not a run folder, it has no {' or '.join(missing)}")


def main() -> None:
    args, trainer_flags = parse(sys.argv[1:])
    check_runs(args)
    if args.bounds:
        print(bounds([Path(run) for run in args.bounds], args.snapshot_minutes))
        return
    if args.curve:
        print(curve(Path(args.curve), args))
        return
    if bool(args.config) == bool(args.resume):
        args.error("give a config (the first argument) or --resume RUN")
    run = train(args, trainer_flags)
    record = evaluate(run, args)
    line = row(run, record, args, shlex.join(["python", *sys.argv]))
    print(line)
    if not args.no_record:
        record_row(line)


if __name__ == "__main__":
    main()
