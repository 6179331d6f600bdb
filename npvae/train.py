"""``python -m npvae.train``: train a model, and leave a run folder that tells the whole story.

Reading order, top to bottom: :func:`main` turns user mistakes into one line
on stderr; :func:`start` makes a new run (config, data, model, optimizer, and
a checkpoint at step 0, so every run folder can resume) or :func:`resume`
rebuilds one from a checkpoint (the checks it makes are in :mod:`npvae.app.resume`);
:func:`train` is the loop; :func:`finish` evaluates and draws.

A run folder ``runs/<time>-<model>/`` holds ``config.json`` (the resolved
config, the data actually used, the versions), ``metrics.csv`` (one row per
epoch), ``checkpoints/last.npz`` and ``best.npz`` (model, optimizer, random
state, position), ``results.json`` and the figures.

Exactness: all training randomness (shuffling, dynamic binarisation, the
VAE's noise, the denoising AE's corruption) comes from one generator whose
state is in every checkpoint, and an interrupted epoch saves its batch order
and position, so a resumed run is bit-identical to an uninterrupted one.
Evaluation draws from generators seeded by (seed, epoch), apart from training.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from npvae import __version__, estimators, kernels
from npvae.app import _warm, cli, report, runfolder, runs
from npvae.app._threads import CpuWatch, parse_threads, use_threads
from npvae.app._tuner import ThreadTuner
from npvae.app.build import build_model, model_recipe, optimizer_for, schedule_for
from npvae.app.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from npvae.app.config import Config, ResumeRequest, from_dict, parse_args, record, validate
from npvae.app.memory import check_training
from npvae.app.resume import changes, check_epochs, check_flags, check_position, hint_best, locate
from npvae.data import Batches
from npvae.errors import CheckpointError, ConfigError
from npvae.optim import clip_grad_norm
from npvae.validate import GENERATIVE, K_SAMPLE, counted


class TrainingStopped(Exception):
    """Raised inside the loop to end the run with a message and an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Run:
    """Everything a training run holds in memory."""

    config: Config
    folder: Path
    data: object  # npvae.data.Dataset
    model: object
    optimizer: object
    rng: np.random.Generator
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best: float = math.inf  # best selection loss so far
    partial: dict = field(default_factory=dict)  # an interrupted epoch's order and sums
    lock: runfolder.RunLock | None = None  # held while this process trains the run


# ----- building a run (the objects themselves: npvae.app.build) -------------------------------


def start(config: Config) -> Run:
    """A new run: its folder, data, model and optimizer."""
    data = runs.load_data(config)
    check_training(config, data)  # before the model is built: a step too large for memory
    try:
        model = build_model(config, data.x_train.shape[1])
    except MemoryError:
        raise ConfigError(
            f"a {config.model} with hidden widths {config.resolved_hidden()} and latent size "
            f"{config.latent} does not fit in memory; reduce --hidden or --latent"
        ) from None
    details = {
        **record(config),
        "dataset_used": data.name,
        "data_source": data.source,
        "n_train": len(data.x_train),
        "n_val": len(data.x_val),
        "n_test": len(data.x_test),
        "versions": _versions(),
    }
    if config.output_bias == "data-mean":
        model.init_output_bias(data.x_train.mean(axis=0) / 255)
    optimizer = optimizer_for(config, model.params, flat=(model.flat_params, model.flat_grads))
    run = Run(config, Path(), data, model, optimizer, np.random.default_rng(config.seed))

    def fill(staging: Path) -> None:
        # The folder's first files: a run folder can always resume, even after a kill,
        # or a NaN, before the first epoch ends.
        run.folder = staging
        runfolder.write_config(staging, details)
        runfolder.write_metrics(staging, [])
        _save(run, "last")

    run.folder, run.lock = runfolder.create(config.out, config.model, fill)
    return run


def resume(request: ResumeRequest, given: dict) -> Run:
    """Rebuild a run from its last checkpoint (or best, or the one named) and go on.

    Only the settings of :data:`npvae.app.resume.RESUMABLE` may change; each change
    is recorded in ``config.json`` with the epoch (and batch) it takes effect
    from.  It trains on the dataset the run recorded as used.  Every field of
    the checkpoint is checked (:mod:`npvae.app.resume`) before anything is written.
    """
    place = locate(request)
    check_flags(given)
    # Locked before anything is read: a second --resume of the same run stops here.
    lock = runfolder.RunLock.acquire(place.folder)
    try:
        runfolder.check_writable(place.folder)
        run = _resume_locked(place, given)
    except BaseException:
        lock.release()
        raise
    run.lock = lock
    return run


def _resume_locked(place, given: dict) -> Run:
    folder, path = place.folder, place.checkpoint
    try:
        details = runfolder.read_config(folder)
    except ConfigError:
        raise ConfigError(f"{place.config_json} is damaged; this run cannot resume") from None
    try:
        saved = load_checkpoint(path)
    except CheckpointError as err:
        if hint_best(path):
            raise CheckpointError(f"{err}{hint_best(path)}") from None
        raise
    before = from_dict(saved.config, path)
    config = validate(replace(before, **given), given.labels if hasattr(given, "labels") else {})
    if check_epochs(config, saved, place, given):
        raise TrainingStopped(
            f"nothing to do: {folder} already has its {counted(saved.epoch, 'epoch')} and results; "
            f"to train on, give --epochs more than {saved.epoch}",
            0,
        )
    rows = runfolder.completed_metrics(folder, saved.epoch)
    data = runs.recorded_data(config, details)
    best, partial = check_position(saved, len(data.x_train), config.batch_size, path)
    cls, settings = model_recipe(config, data.x_train.shape[1])
    saved_settings = {name: saved.model.config.get(name) for name in settings}
    if saved.model.kind != cls.kind or saved_settings != settings:
        raise CheckpointError(
            f"{path}: its model is not the one its run settings describe; the checkpoint is "
            f"damaged{hint_best(path)}"
        )
    check_training(config, data)  # before anything is written; after the damage checks
    optimizer = optimizer_for(
        config, saved.model.params, flat=(saved.model.flat_params, saved.model.flat_grads)
    )
    optimizer.load_state_dict(saved.optimizer_state)
    run = Run(config, folder, data, saved.model, optimizer, restore_rng(saved.rng_state, path))
    run.epoch, run.step, run.best, run.partial = saved.epoch, saved.step, best, partial
    changed = changes(before, config)
    if path.name != "last.npz":
        changed["from"] = [path.name]
    details.update(record(config))
    if changed:
        entry = {"epoch": saved.epoch + 1, **({"batch": partial["batch"]} if partial else {})}
        details.setdefault("changes", []).append({**entry, **changed})
    for stale in (folder / runfolder.CHECKPOINTS).glob(".*.npz.*"):
        stale.unlink(missing_ok=True)  # a temporary file a kill -9 left mid-write
    runfolder.write_metrics(folder, rows)
    runfolder.write_config(folder, details)
    if changed:
        _save(run, "last", partial=partial or None)  # the new settings, from here on
    return run


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
    x_val, x_test = _eval_arrays(run)
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
                _save(run, "last", partial=partial)
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
            _save(run, "best")
        _save(run, "last")
        line = _epoch_line(row, config.epochs, config.model)
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
    test = estimators.evaluate_loss(run.model, x_test, _test_rng(run.config, epoch))
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


def _save(run: Run, which: str, partial: dict | None = None) -> None:
    extra = {"best": run.best}
    arrays = {}
    if partial is not None:
        extra["partial"] = {key: partial[key] for key in ("batch", "sums", "n")}
        arrays["order"] = partial["order"]
    save_checkpoint(
        runfolder.checkpoint_path(run.folder, which),
        run.model,
        run.optimizer,
        run.rng,
        epoch=run.epoch,
        step=run.step,
        config=record(run.config),
        extra=extra,
        run_arrays=arrays,
    )


# ----- the end ---------------------------------------------------------------------------


def finish(run: Run) -> dict:
    """Final evaluation on the test set, ``results.json`` and the figures.

    The weights are the last epoch's, and the test loss is drawn with the same
    noise as that epoch's row of ``metrics.csv``, so the two agree exactly.
    ``results.json`` says which evaluation it holds; ``python -m
    npvae.evaluate`` gives the literature's (k = 5000 on every image) in
    ``eval.json``.
    """
    config, model = run.config, run.model
    _, x_test = _eval_arrays(run)
    results = {
        "epochs": run.epoch,
        "evaluation": {
            "weights": str(runfolder.checkpoint_path(run.folder, "last")),
            "epoch": run.epoch,
            "test_images": len(x_test),
            "binarize_seed": runs.test_binarize_seed(config) if config.binarize != "none" else None,
            "noise_seed": [config.seed, run.epoch, 1],
        },
    }
    results.update(
        report.evaluate_model(
            model,
            x_test,
            _test_rng(config, run.epoch),
            k=config.ll_samples or 0,
            ll_images=config.ll_examples or None,
        )  # fmt: skip
    )
    runfolder.write_results(run.folder, results)
    if config.figures:
        # The figures are the run's memory peak (matplotlib's import and first savefig add
        # about 50 MB), and they draw only the first test images: keep those, let the rest
        # of the float test set go first (15 MB of MNIST's 31), and hand over the KL figure's
        # summary of all of them.
        shown, labels = x_test[: runs.FIGURE_IMAGES].copy(), run.data.y_test
        labels = None if labels is None else labels[: runs.FIGURE_IMAGES]
        posterior = None
        if "kl_per_dim" in results:
            variances = results["active_units"]["variances"]
            posterior = (np.array(results["kl_per_dim"]), np.array(variances))
        del x_test
        from npvae.app import plots  # matplotlib costs 30 MB; a run without figures never loads it

        title = runs.run_title(model, run.data.name, run.epoch)
        rng = np.random.default_rng([config.seed, run.epoch, 2])
        folder = runfolder.figures_folder(run.folder)
        plots.make_figures(model, shown, labels, folder, rng, title=title, posterior=posterior)
        rows = runfolder.read_metrics(run.folder)
        if rows:
            unit = plots.loss_unit(model)
            plots.plot_curves(runfolder.figure_path(run.folder, "curves"), rows, title, unit=unit)
    return results


def _summary(results: dict) -> str:
    """The closing line: the test loss with terms that add up to it, then the extras."""
    test = results["test"]
    if "bound" in test:  # the IWAE: its loss is the k-sample bound, not recon + KL
        parts = [
            f"test loss {test['loss']:.2f} (the negative k-sample bound; "
            f"one-sample ELBO {-test['elbo']:.2f} = reconstruction {test['recon']:.2f} "
            f"+ KL {test['kl']:.2f})"
        ]
    elif "kl" in test:
        weight = f"{test['beta']:g} x " if "beta" in test else ""
        parts = [
            f"test loss {test['loss']:.2f} (reconstruction {test['recon']:.2f} "
            f"+ {weight}KL {test['kl']:.2f})"
        ]
    else:
        parts = [f"test loss {test['loss']:.2f}"]
    if "log_likelihood" in results:
        ll = results["log_likelihood"]
        error = "" if ll["standard_error"] is None else f" ± {ll['standard_error']:.2f}"
        parts.append(
            f"log p(x) ≈ {ll['nats']:.2f}{error} "
            f"({counted(ll['k'], 'sample')}, {counted(ll['images'], 'image')})"
        )
    if "active_units" in results:
        parts.append(counted(results["active_units"]["count"], "active unit"))
    return ", ".join(parts)


# ----- helpers ---------------------------------------------------------------------------


def _eval_arrays(run: Run):
    """Validation and test images as floats of the model's dtype, binarised once if asked."""
    seed = runs.test_binarize_seed(run.config)

    def prepare(images):
        if len(images) == 0:
            return None
        return runs.prepare_images(images, run.config.binarize, seed, run.model.dtype)

    return prepare(run.data.x_val), prepare(run.data.x_test)


def _test_rng(config: Config, epoch: int) -> np.random.Generator:
    """The noise of the test loss after ``epoch``: the same for its row and for results.json."""
    return np.random.default_rng([config.seed, epoch, 1])


def _without_training_images(data):
    """``data`` with empty training arrays: the final evaluation and figures use the test set.

    Letting the training images go (47 MB for MNIST) before the evaluation and matplotlib
    allocate theirs keeps the peak memory of a classic MNIST run under 300 MB.
    """
    return replace(
        data,
        x_train=np.empty((0, data.x_train.shape[1]), data.x_train.dtype),
        y_train=np.empty(0, data.y_train.dtype),
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


def _epoch_line(row: dict, epochs: int, model: str) -> str:
    line = f"epoch {row['epoch']}/{epochs}  train {row['train_loss']:.2f}"
    if row["val_loss"] != "":
        line += f"  val {row['val_loss']:.2f}"
    line += f"  test {row['test_loss']:.2f}"
    if row["test_kl"] != "" and model in K_SAMPLE:  # loss -L_k; terms the ELBO's
        elbo_terms = row["test_recon"] + row["test_kl"]
        line += f" (-L_k; one-sample ELBO {elbo_terms:.2f}: recon {row['test_recon']:.2f}"
        line += f" + KL {row['test_kl']:.2f})"
    elif row["test_kl"] != "":
        line += f" (recon {row['test_recon']:.2f}, KL {row['test_kl']:.2f})"
    return line + f"  {row['seconds']:.1f} s, {row['examples_per_second']:.0f} ex/s"


def _versions() -> dict:
    import numba

    return {"npvae": __version__, "numpy": np.__version__, "numba": numba.__version__}


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
    run.data = _without_training_images(run.data)
    results = finish(run)
    print(f"done: {_summary(results)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
