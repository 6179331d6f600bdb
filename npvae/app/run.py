"""A training run in memory: made new, rebuilt from its checkpoint, saved, and finished.

:func:`start` makes a new run (config, data, model, optimizer, and a run folder
with a checkpoint at step 0, so every run folder can resume); :func:`resume`
rebuilds one from a checkpoint (the checks it makes are in
:mod:`npvae.app.resume`); :func:`save` writes a checkpoint; :func:`finish`
evaluates the last epoch's weights into ``results.json`` and draws the figures.
The loop between them is ``python -m npvae.train``'s own (:mod:`npvae.train`).

Exactness: all training randomness (shuffling, dynamic binarisation, the VAE's
noise, the denoising AE's corruption) comes from one generator whose state is
in every checkpoint, and an interrupted epoch saves its batch order and
position, so a resumed run is bit-identical to an uninterrupted one.
Evaluation draws from generators seeded by (seed, epoch), apart from training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from npvae import __version__
from npvae.app import report, runfolder, runs
from npvae.app.build import build_model, model_recipe, optimizer_for
from npvae.app.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from npvae.app.config import Config, from_dict, record, validate
from npvae.app.flags import ResumeRequest
from npvae.app.memory import check_training
from npvae.app.resume import changes, check_epochs, check_flags, check_position, hint_best, locate
from npvae.errors import CheckpointError, ConfigError
from npvae.validate import counted


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
        "versions": versions(),
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
        save(run, "last")

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
        save(run, "last", partial=partial or None)  # the new settings, from here on
    return run


def save(run: Run, which: str, partial: dict | None = None) -> None:
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
    _, x_test = eval_arrays(run)
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
            test_rng(config, run.epoch),
            k=config.ll_samples or 0,
            ll_images=config.ll_examples or None,
            max_rows=report.TRAINING_CHUNK_ROWS,
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


def summary(results: dict) -> str:
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


def eval_arrays(run: Run):
    """Validation and test images as floats of the model's dtype, binarised once if asked."""
    seed = runs.test_binarize_seed(run.config)

    def prepare(images):
        if len(images) == 0:
            return None
        return runs.prepare_images(images, run.config.binarize, seed, run.model.dtype)

    return prepare(run.data.x_val), prepare(run.data.x_test)


def test_rng(config: Config, epoch: int) -> np.random.Generator:
    """The noise of the test loss after ``epoch``: the same for its row and for results.json."""
    return np.random.default_rng([config.seed, epoch, 1])


def without_training_images(data):
    """``data`` with empty training arrays: the final evaluation and figures use the test set.

    Letting the training images go (47 MB for MNIST) before the evaluation and matplotlib
    allocate theirs keeps the peak memory of a classic MNIST run under 300 MB.
    """
    return replace(
        data,
        x_train=np.empty((0, data.x_train.shape[1]), data.x_train.dtype),
        y_train=np.empty(0, data.y_train.dtype),
    )


def versions() -> dict:
    import numba

    return {"npvae": __version__, "numpy": np.__version__, "numba": numba.__version__}
