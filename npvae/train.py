"""``python -m npvae.train``: train a model, and leave a run folder that tells the whole story.

Reading order, top to bottom: :func:`train` is the loop, an epoch at a time:
batches, ``model.loss`` (which fills ``model.grads``), the NaN guard, the
optimizer's step, then the epoch's evaluation and checkpoints.  :func:`main`
makes the run or resumes it (:mod:`npvae.app.run`), trains, and finishes it;
a user's mistake ends in one line on stderr (:mod:`npvae.app.cli`).

A run folder ``runs/<time>-<model>/`` holds ``config.json`` (the resolved
config, the data actually used, the versions), ``metrics.csv`` (one row per
epoch), ``checkpoints/last.npz`` and ``best.npz`` (model, optimizer, random
state, position), ``results.json`` and the figures.

A resumed run is bit-identical to one never stopped (:mod:`npvae.app.run`).
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import replace

import numpy as np

from npvae import estimators, kernels
from npvae.app import _warm, cli, runfolder
from npvae.app._threads import CpuWatch, parse_threads, use_threads
from npvae.app._tuner import ThreadTuner
from npvae.app.build import schedule_for
from npvae.app.flags import parse_args
from npvae.app.run import (
    Run,
    TrainingStopped,
    eval_arrays,
    finish,
    resume,
    save,
    start,
    summary,
    test_rng,
    without_training_images,
)
from npvae.data import Batches
from npvae.errors import ConfigError
from npvae.optim import clip_grad_norm
from npvae.validate import GENERATIVE, K_SAMPLE

# ----- the loop --------------------------------------------------------------------------


def train(run: Run, tuner: ThreadTuner | None = None) -> None:
    """Epochs from ``run.epoch`` to ``config.epochs``; checkpoints after each.

    Ctrl-C and SIGTERM stop it after the current batch; their previous
    handlers are back however it ends (``main`` may be called again).  A
    ``tuner`` (``--threads auto``) keeps the steps on the faster thread count.
    """
    stop = _StopFlag()
    try:
        # The NaN guard reports a divergence in one line; numpy's overflow
        # warnings on the way there would only bury it.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            _train_epochs(run, stop, tuner)
    finally:
        stop.restore()


def _train_epochs(run: Run, stop: _StopFlag, tuner: ThreadTuner | None) -> None:
    config, model = run.config, run.model
    schedule = schedule_for(config)
    batches = Batches(
        run.data.x_train,
        config.batch_size,
        run.rng,
        binarize=config.binarize,
        dtype=model.dtype,
        static_seed=config.seed,
    )
    x_val, x_test = eval_arrays(run)
    while run.epoch < config.epochs:
        epoch = run.epoch + 1
        run.optimizer.lr = schedule(run.epoch)
        partial = run.partial or {"order": batches.draw_order(), "batch": 0, "sums": {}, "n": 0}
        run.partial = {}
        started, resumed_at = time.perf_counter(), partial["n"]
        bar = _progress(len(batches), f"epoch {epoch}/{config.epochs}", partial["batch"])
        if tuner is not None:
            tuner.restart()  # the evaluation between epochs is not a step
        for index, x in batches.iter_from(partial["order"], partial["batch"]):
            report = model.loss(x, run.rng, step=run.step)
            _check_finite(run, report["loss"], epoch, index)
            if config.clip:
                clip_grad_norm(model.grads, config.clip)
            run.optimizer.step()  # one update of the packed parameters (optimizer_for's flat=)
            run.step += 1
            if tuner is not None:
                tuner.tick()
            for key in ("loss", "recon", "kl"):
                partial["sums"][key] = partial["sums"].get(key, 0.0) + report.get(key, 0.0) * len(x)
            partial["n"] += len(x)
            partial["batch"] = index + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{partial['sums']['loss'] / partial['n']:.2f}", refresh=False)
            if stop.signal:
                save(run, "last", partial=partial)
                raise TrainingStopped(
                    f"stopped by {stop.name} at epoch {epoch}, batch {index + 1}; checkpoint "
                    f"written; continue with: python -m npvae.train --resume {run.folder}",
                    cli.EXIT_INTERRUPTED,
                )
        if bar is not None:
            bar.close()
        seconds = max(time.perf_counter() - started, 1e-9)
        row = _epoch_row(run, epoch, partial, x_val, x_test)
        # Speed is this process's examples over this process's time: after a mid-epoch
        # resume, the batches before the interruption were timed by another process.
        examples = partial["n"] - resumed_at
        row.update(seconds=round(seconds, 3), examples_per_second=round(examples / seconds, 1))
        run.epoch = epoch
        runfolder.append_metrics(run.folder, row)
        selection = row["val_loss"] if x_val is not None else row["train_loss"]
        if selection < run.best:
            run.best = selection
            save(run, "best")
        save(run, "last")
        line = _epoch_line(row, config.epochs, config.model, config.objective)
        if tuner is not None:
            line += f", {tuner.most} threads for {tuner.share():.0%} of steps so far"
        print(line, flush=True)
        if stop.signal:  # it came during the evaluation or the checkpoint
            raise TrainingStopped(
                f"stopped by {stop.name} at the end of epoch {epoch}; checkpoint written; "
                f"continue with: python -m npvae.train --resume {run.folder}",
                cli.EXIT_INTERRUPTED,
            )


def _epoch_row(run: Run, epoch: int, partial: dict, x_val, x_test) -> dict:
    """metrics.csv's line but the timing: the epoch's running training averages and evaluations."""
    sums, n = partial["sums"], partial["n"]
    row = {
        "epoch": epoch,
        "lr": run.optimizer.lr,
        "train_loss": sums["loss"] / n,
        "train_recon": sums["recon"] / n,
        "train_kl": sums["kl"] / n if "kl" in sums and run.config.model in GENERATIVE else "",
        "val_loss": "",
    }
    if x_val is not None:
        val_rng = np.random.default_rng([run.config.seed, epoch, 0])
        row["val_loss"] = estimators.evaluate_loss(run.model, x_val, val_rng)["loss"]
    test = estimators.evaluate_loss(run.model, x_test, test_rng(run.config, epoch))
    row.update(test_loss=test["loss"], test_recon=test["recon"], test_kl=test.get("kl", ""))
    return row


def _check_finite(run: Run, loss: float, epoch: int, index: int) -> None:
    """The NaN guard: stop before a non-finite loss or gradient reaches the parameters."""
    # One compiled pass over the packed gradients: a third of the time of np.isfinite
    # on each array, every step.
    if math.isfinite(loss) and kernels.all_finite(run.model.flat_grads):
        return
    what = "loss" if not math.isfinite(loss) else "gradient"
    # start() wrote a checkpoint at step 0, so there is always one to go on from.
    raise TrainingStopped(
        f"the {what} became NaN or infinite at epoch {epoch}, batch {index + 1} "
        f"(learning rate {run.optimizer.lr:g}); go on from the last good checkpoint at a lower "
        f"rate: python -m npvae.train --resume {run.folder} --lr {run.config.lr / 10:g}, "
        "or clip gradients (--clip 1) in a new run",
        cli.EXIT_NAN,
    )


class _StopFlag:
    """Ctrl-C and SIGTERM ask the loop to stop after the current batch."""

    def __init__(self) -> None:
        self.signal = None
        self._previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _progress(total: int, description: str, initial: int):
    """A tqdm bar on a terminal; None otherwise (then one line per epoch is printed)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=description, leave=False, mininterval=0.5)


def _epoch_line(row: dict, epochs: int, model: str, objective: str | None = None) -> str:
    line = f"epoch {row['epoch']}/{epochs}  train {row['train_loss']:.2f}"
    if row["val_loss"] != "":
        line += f"  val {row['val_loss']:.2f}"
    line += f"  test {row['test_loss']:.2f}"
    if row["test_kl"] != "" and model in K_SAMPLE:  # loss -L_k; terms the ELBO's
        elbo_terms = row["test_recon"] + row["test_kl"]
        label = "-ELBO, mean of k" if objective == "vae" else "-L_k"
        line += f" ({label}; one-sample ELBO {elbo_terms:.2f}: recon {row['test_recon']:.2f}"
        line += f" + KL {row['test_kl']:.2f})"
    elif row["test_kl"] != "":
        line += f" (recon {row['test_recon']:.2f}, KL {row['test_kl']:.2f})"
    return line + f"  {row['seconds']:.1f} s, {row['examples_per_second']:.0f} ex/s"


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m npvae.train``; a user's mistake is one line on stderr, status 2."""
    held: list[Run] = []  # the run once made: named if its folder stops taking writes

    def body() -> int:
        try:
            return _command(argv, held)
        except TrainingStopped as stop:
            print(stop, file=sys.stderr if stop.status else sys.stdout)
            return stop.status
        except OSError as err:
            # The run folder stopped taking writes mid-run (a full disk, a folder made
            # read-only): every file is written atomically, so what is there is whole.
            where = held[0].folder if held else "the run folder"
            raise ConfigError(
                f"cannot write into {where}: {err.strerror}; the files there are whole: "
                "make room or make it writable, then resume"
            ) from None

    try:
        return cli.run(
            body,
            out_of_memory="a batch does not fit in memory; reduce --batch-size, --k, "
            "--samples, --ll-samples or --hidden",
            interrupted="interrupted; the last checkpoint, if any, is intact",
        )
    finally:
        if held and held[0].lock is not None:
            held[0].lock.release()


def _command(argv: list[str] | None, held: list) -> int:
    """The command's work: parse, make or resume the run, train, evaluate and draw."""
    config, given, resume_request = parse_args(argv)
    # A fresh checkout compiles the kernels in a child, whose memory is gone when it
    # exits; before the watch starts, so that its CPU does not count as other work.
    _warm.warm(config.dtype)
    watch = CpuWatch()  # what other work uses while we load, for --threads auto
    if resume_request:
        if given.get("data_dir") is not None:
            given["data_dir"] = runfolder.absolute(given["data_dir"])
        run = resume(resume_request, given)
        held.append(run)
    else:
        config = replace(config, out=runfolder.absolute(config.out))
        if config.data_dir is not None:
            config = replace(config, data_dir=runfolder.absolute(config.data_dir))
        run = start(config)
        held.append(run)
    print(f"run folder: {run.folder}", flush=True)
    print(f"data: {run.data.summary()}", flush=True)
    print(f"model: {run.model!r}", flush=True)
    count, reason = use_threads(run.config.threads, watch)
    tuner = None
    if count > 1 and parse_threads(run.config.threads) is None:
        tuner = ThreadTuner(count)
        reason += "; one when that is faster (npvae/app/_tuner.py)"
    print(f"threads: {count} ({reason})", flush=True)
    train(run, tuner)
    run.data = without_training_images(run.data)
    results = finish(run)
    print(f"done: {summary(results)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
